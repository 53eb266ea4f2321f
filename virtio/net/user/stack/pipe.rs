//! The smoltcp device of one card: IP packets from the guest in, one at a
//! time, and the packets smoltcp sends out, bounded.

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant as SmolInstant;

use super::super::wire;

/// smoltcp's view of the card: IP packets in (one at a time) and out.
pub(super) struct Pipe {
    pub(super) rx: Option<Vec<u8>>,
    pub(super) tx: Vec<Vec<u8>>,
    pub(super) room: usize,
}

pub(super) struct Rx(Vec<u8>);

pub(super) struct Tx<'a> {
    tx: &'a mut Vec<Vec<u8>>,
}

impl RxToken for Rx {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut p = vec![0u8; len];
        let r = f(&mut p);
        self.tx.push(p);
        r
    }
}

impl Device for Pipe {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.take()?;
        Some((Rx(p), Tx { tx: &mut self.tx }))
    }

    fn transmit(&mut self, _now: SmolInstant) -> Option<Tx<'_>> {
        if self.tx.len() >= self.room {
            return None;
        }
        Some(Tx { tx: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = wire::MTU;
        c
    }
}
