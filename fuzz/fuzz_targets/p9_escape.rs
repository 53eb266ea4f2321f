//! 9P2000.L requests straight into the server, with the escape oracle
//! (`lkvm_fuzz::p9`): nothing outside the shared directory may be read,
//! created or changed, through symlinks, `..`, absolute names, renames,
//! links or anything else.
//!
//! Input: `flags` (bit 0 read-only share, bit 1 resolve without openat2
//! as on hosts before Linux 5.6, bit 2 no automatic Tversion/Tattach),
//! then requests, each `room u16, type u8, tag u16, len u16, body`: the
//! harness writes the size field, so the fuzzer spends its effort on the
//! bodies (malformed framing is `virtio_9p`'s business). `room` is the
//! reply buffer the guest leaves. Unless bit 2 is set the session starts
//! with Tversion(8192, "9P2000.L") and Tattach(fid 0).
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use lkvm::virtio::p9::fuzzing::Session;
use lkvm_fuzz::input::Input;
use lkvm_fuzz::p9::Sandbox;

const NOFID: u32 = u32::MAX;

fn sandbox() -> &'static Mutex<Sandbox> {
    static S: OnceLock<Mutex<Sandbox>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Sandbox::new()))
}

fn message(kind: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut m = ((7 + body.len()) as u32).to_le_bytes().to_vec();
    m.push(kind);
    m.extend_from_slice(&tag.to_le_bytes());
    m.extend_from_slice(body);
    m
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// Whatever the request, the reply is one well-formed R-message for its
/// tag that fits the room (or nothing, when not even an Rlerror fits).
fn check_framing(reply: &[u8], tag: u16, room: usize) {
    assert!(
        reply.len() <= room,
        "a reply of {} bytes in a room of {room}",
        reply.len()
    );
    if reply.is_empty() {
        assert!(
            room < 11,
            "an empty reply although an Rlerror fits in {room}"
        );
        return;
    }
    assert!(reply.len() >= 7, "a reply of {} bytes", reply.len());
    let size = u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]);
    assert_eq!(size as usize, reply.len(), "the size field of a reply");
    assert_eq!(
        u16::from_le_bytes([reply[5], reply[6]]),
        tag,
        "the tag of a reply"
    );
    assert!(reply[4] % 2 == 1, "a reply of type {}", reply[4]);
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let Some(flags) = inp.u8() else { return };
    let mut sb = match sandbox().lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    sb.reset();
    let Ok(mut s) = Session::new(&sb.share, flags & 1 != 0, flags & 2 == 0) else {
        return;
    };
    if flags & 4 == 0 {
        let mut v = 8192u32.to_le_bytes().to_vec();
        v.extend(string(b"9P2000.L"));
        sb.check_reply(&s.handle(&message(100, 0xffff, &v), 8192));
        let mut a = 0u32.to_le_bytes().to_vec();
        a.extend(NOFID.to_le_bytes());
        a.extend(string(b"fuzz"));
        a.extend(string(b""));
        a.extend(0u32.to_le_bytes());
        sb.check_reply(&s.handle(&message(104, 1, &a), 8192));
    }
    while let (Some(room), Some(kind), Some(tag), Some(len)) =
        (inp.u16(), inp.u8(), inp.u16(), inp.u16())
    {
        let body = inp.up_to(usize::from(len));
        let reply = s.handle(&message(kind, tag, body), usize::from(room));
        check_framing(&reply, tag, usize::from(room));
        sb.check_reply(&reply);
    }
    drop(s);
    sb.check_fs(data);
});
