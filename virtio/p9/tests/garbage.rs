//! Malformed, truncated, oversized and unknown requests: always a
//! well-formed error reply, and the server keeps serving.

use nix::errno::Errno;

use super::super::wire::{msg, Encoder, NOTAG};
use super::*;

fn lerror_of(reply: &[u8]) -> (u16, Errno) {
    assert_eq!(reply.len(), 11, "{reply:?}");
    assert_eq!(reply[4], msg::RLERROR);
    let code = u32::from_le_bytes(reply[7..11].try_into().unwrap());
    (
        u16::from_le_bytes([reply[5], reply[6]]),
        Errno::from_raw(code as i32),
    )
}

fn still_serving(c: &mut Client) {
    c.room = 8192;
    assert_eq!(c.getattr(0).unwrap().qid.kind, super::super::wire::qt::DIR);
}

#[test]
fn broken_frames_get_einval_or_eproto() {
    let t = TempDir::new("garbage");
    let mut c = Client::new(t.path());
    // Too short to carry a header: no tag to answer to.
    assert_eq!(lerror_of(&c.raw(&[1, 2, 3])), (NOTAG, Errno::EINVAL));
    assert_eq!(lerror_of(&c.raw(&[])), (NOTAG, Errno::EINVAL));
    // A size field below the header, beyond what arrived, beyond msize.
    assert_eq!(
        lerror_of(&c.raw(&[2, 0, 0, 0, msg::TCLUNK, 9, 0])),
        (9, Errno::EINVAL)
    );
    assert_eq!(
        lerror_of(&c.raw(&[40, 0, 0, 0, msg::TCLUNK, 9, 0, 0, 0, 0, 0])),
        (9, Errno::EPROTO)
    );
    let mut big = vec![0u8; 16];
    big[..4].copy_from_slice(&(c.s.msize() + 1).to_le_bytes());
    big[4] = msg::TWRITE;
    assert_eq!(lerror_of(&c.raw(&big)).1, Errno::EINVAL);
    // Bodies cut short inside a field.
    for (kind, body) in [
        (msg::TCLUNK, &[1u8, 0][..]),
        (msg::TWALK, &[0, 0, 0, 0, 1, 0, 0, 0, 3, 0, 1, 0, b'a']),
        (msg::TATTACH, &[5, 0, 0, 0]),
        (msg::TLCREATE, &[0, 0, 0, 0, 200, 0, b'x']),
        (msg::TSETATTR, &[0, 0, 0, 0, 1, 0, 0, 0]),
        (msg::TVERSION, &[0, 32, 0, 0, 9, 0]),
    ] {
        let mut e = Encoder::new(kind, 5);
        e.raw(body);
        assert_eq!(
            lerror_of(&c.raw(&e.finish())),
            (5, Errno::EPROTO),
            "type {kind}"
        );
    }
    // Twrite whose count claims more data than the message holds.
    let mut e = Encoder::new(msg::TWRITE, 6);
    e.u32(0).u64(0).u32(1000).raw(b"short");
    assert_eq!(lerror_of(&c.raw(&e.finish())), (6, Errno::EPROTO));
    // Unknown, legacy 9P2000 and reply types; Tauth.
    for kind in [
        0u8,
        1,
        112,
        114,
        124,
        126,
        200,
        255,
        msg::RLERROR,
        msg::TWALK + 1,
    ] {
        let mut e = Encoder::new(kind, 7);
        e.u32(0).u32(0);
        assert_eq!(
            lerror_of(&c.raw(&e.finish())),
            (7, Errno::EOPNOTSUPP),
            "type {kind}"
        );
    }
    let r = c.call(msg::TAUTH, |e| {
        e.u32(5).string(b"u").unwrap().string(b"").unwrap().u32(0);
    });
    assert_eq!(r, Err(Errno::EOPNOTSUPP));
    // Unknown fids, names with NUL bytes.
    assert_eq!(c.getattr(77).err(), Some(Errno::EBADF));
    assert_eq!(c.mkdir(0, "a\0b", 0o755, 0), Err(Errno::EINVAL));
    assert_eq!(c.symlink(0, "s", "to\0x", 0), Err(Errno::EINVAL));
    assert_eq!(c.lopen(0, 3), Err(Errno::EINVAL), "access mode 3");
    still_serving(&mut c);
}

#[test]
fn replies_fit_the_room_given() {
    let t = TempDir::new("room");
    let long = "x".repeat(200);
    std::os::unix::fs::symlink(&long, t.path().join("l")).unwrap();
    let mut c = Client::new(t.path());
    c.walk(0, 1, &["l"]).unwrap();
    // Rgetattr is 160 bytes: in 100 only an error fits.
    c.room = 100;
    assert_eq!(c.getattr(0).err(), Some(Errno::EMSGSIZE));
    assert_eq!(c.readlink(1).err(), Some(Errno::EMSGSIZE));
    c.room = 300;
    assert_eq!(c.readlink(1).unwrap(), long);
    // Not even an Rlerror fits: nothing is written.
    c.room = 10;
    assert!(c
        .s
        .handle(&Encoder::new(msg::TCLUNK, 1).finish(), 10)
        .is_empty());
    c.room = 0;
    assert!(c.raw(&[1, 2]).is_empty());
    still_serving(&mut c);
}

#[test]
fn random_requests_never_break_the_server() {
    let t = TempDir::new("fuzz");
    std::fs::create_dir(t.path().join("d")).unwrap();
    std::fs::write(t.path().join("d/f"), b"abc").unwrap();
    let mut c = Client::new(t.path());
    c.walk(0, 1, &["d"]).unwrap();
    c.walk(0, 2, &["d", "f"]).unwrap();
    c.lopen(2, 2).unwrap();
    let kinds = [
        msg::TSTATFS,
        msg::TLOPEN,
        msg::TLCREATE,
        msg::TSYMLINK,
        msg::TMKNOD,
        msg::TRENAME,
        msg::TREADLINK,
        msg::TGETATTR,
        msg::TSETATTR,
        msg::TXATTRWALK,
        msg::TREADDIR,
        msg::TFSYNC,
        msg::TLOCK,
        msg::TGETLOCK,
        msg::TLINK,
        msg::TMKDIR,
        msg::TRENAMEAT,
        msg::TUNLINKAT,
        msg::TATTACH,
        msg::TFLUSH,
        msg::TWALK,
        msg::TREAD,
        msg::TWRITE,
    ];
    // xorshift: reproducible without a dependency.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..5000 {
        let kind = kinds[(next() % kinds.len() as u64) as usize];
        let len = (next() % 48) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Keep fids small often enough to reach the operations.
        if body.len() >= 4 && next() % 2 == 0 {
            body[..4].copy_from_slice(&((next() % 3) as u32).to_le_bytes());
        }
        let mut e = Encoder::new(kind, i as u16);
        e.raw(&body);
        let mut req = e.finish();
        if next() % 8 == 0 {
            // A lying size field.
            let lie = (next() % 80) as u32;
            req[..4].copy_from_slice(&lie.to_le_bytes());
        }
        let room = (next() % 400) as usize;
        let reply = c.s.handle(&req, room);
        assert!(reply.len() <= room);
        if !reply.is_empty() {
            assert_eq!(
                u32::from_le_bytes(reply[..4].try_into().unwrap()) as usize,
                reply.len()
            );
        }
    }
    // Whatever was created or renamed, the share's root still answers.
    c.attach(1000, super::super::wire::NONUNAME).unwrap();
    c.room = 8192;
    assert!(c.getattr(1000).is_ok());
}
