//! The sPAPR hypervisor console (hvterm, `hvc0`): output is written at once,
//! input waits in a queue the guest polls with `H_GET_TERM_CHAR`.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::bus::lock;
use crate::term::ConsoleSink;

/// Input beyond this is dropped: a guest that never reads must not make
/// lkvm buffer without bound.
const MAX_PENDING: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct HvTerm {
    input: Mutex<VecDeque<u8>>,
}

impl HvTerm {
    /// Takes up to `max` bytes of input.
    pub fn read(&self, max: usize) -> Vec<u8> {
        let mut q = lock(&self.input);
        let n = q.len().min(max);
        q.drain(..n).collect()
    }
}

impl ConsoleSink for HvTerm {
    fn sysrq(&self, key: u8) -> bool {
        self.queue_input(&[crate::term::HVC_SYSRQ, key]);
        true
    }

    fn queue_input(&self, bytes: &[u8]) {
        let mut q = lock(&self.input);
        let room = MAX_PENDING.saturating_sub(q.len());
        if bytes.len() > room {
            log::debug!(
                "hvterm: guest is not reading; dropping {} input bytes",
                bytes.len() - room
            );
        }
        q.extend(&bytes[..bytes.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_read_in_order_and_bounded() {
        let t = HvTerm::default();
        assert!(t.read(16).is_empty());
        t.queue_input(b"hello world, this is long input");
        assert_eq!(t.read(16), b"hello world, thi");
        assert_eq!(t.read(16), b"s is long input");
        t.queue_input(&vec![0u8; MAX_PENDING + 10]);
        assert_eq!(lock(&t.input).len(), MAX_PENDING);
    }
}
