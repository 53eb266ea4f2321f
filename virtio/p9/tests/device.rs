//! The device end to end: config space, and requests through a real split
//! ring in guest memory, including malformed chains and requests.

use std::sync::Arc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::super::super::chain::testing::*;
use super::super::super::device::{Activation, ActiveQueue, VirtioDevice};
use super::super::wire::{msg, Decoder, Encoder, NOFID, NONUNAME};
use super::super::{Error, ShareSpec, Virtio9p, VIRTIO_9P_MOUNT_TAG};
use super::*;
use crate::memory::GuestMemory;

#[test]
fn share_specs_parse_with_clear_errors() {
    let t = TempDir::new("spec");
    let dir = t.path().display().to_string();
    let s = ShareSpec::parse(&format!("{dir},hostshare")).unwrap();
    assert_eq!((s.dir.as_path(), s.tag.as_str()), (t.path(), "hostshare"));
    // The tag is after the last comma: directories may hold commas.
    std::fs::create_dir(t.path().join("a,b")).unwrap();
    let s = ShareSpec::parse(&format!("{dir}/a,b,tag")).unwrap();
    assert_eq!(s.dir, t.path().join("a,b"));

    // Without a tag, kvmtool's.
    let s = ShareSpec::parse(&dir).unwrap();
    assert_eq!((s.dir.as_path(), s.tag.as_str()), (t.path(), "kvm_9p"));

    let err = |arg: String| ShareSpec::parse(&arg).unwrap_err().to_string();
    assert!(err(",tag".into()).contains("expected DIR,TAG"));
    assert!(err(format!("{dir},")).contains("mount tag is empty"));
    let long = "t".repeat(65);
    let e = err(format!("{dir},{long}"));
    assert!(e.contains("65 bytes") && e.contains(&long), "{e}");
    assert!(ShareSpec::parse(&format!("{dir},{}", "t".repeat(64))).is_ok());
    let e = err(format!("{dir}/missing,tag"));
    assert!(e.contains("missing") && e.contains("No such file"), "{e}");
    std::fs::write(t.path().join("file"), b"").unwrap();
    let e = err(format!("{dir}/file,tag"));
    assert!(e.contains("file") && e.contains("not a directory"), "{e}");
    assert!(!e.contains('\n'));

    // new() opens the directory once and fails clearly.
    let gone = ShareSpec {
        read_only: false,
        dir: t.path().join("gone"),
        tag: "x".into(),
    };
    let e = Virtio9p::new(&gone).err().unwrap();
    assert!(matches!(e, Error::Open { .. }));
    assert!(e.to_string().contains("gone"));
    let bad_tag = ShareSpec {
        read_only: false,
        dir: t.path().into(),
        tag: long,
    };
    assert!(matches!(
        Virtio9p::new(&bad_tag),
        Err(Error::TagTooLong { .. })
    ));
}

#[test]
fn config_space_holds_the_tag() {
    let t = TempDir::new("config");
    let dev = Virtio9p::new(&ShareSpec {
        read_only: false,
        dir: t.path().into(),
        tag: "hostshare".into(),
    })
    .unwrap();
    assert_eq!(dev.device_type(), 9);
    assert_eq!(dev.features(), VIRTIO_9P_MOUNT_TAG);
    assert_eq!(dev.queue_max_sizes().len(), 1);
    let mut cfg = [0xffu8; 16];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..2], &9u16.to_le_bytes());
    assert_eq!(&cfg[2..11], b"hostshare");
    assert_eq!(&cfg[11..], &[0; 5]);
    let mut tail = [0u8; 4];
    dev.read_config(4, &mut tail);
    assert_eq!(&tail, b"stsh");
}

/// Places a request in guest memory at `at` and returns its length.
fn put(mem: &GuestMemory, at: u64, req: &[u8]) -> u32 {
    mem.write_slice(req, GuestAddress(at)).unwrap();
    req.len() as u32
}

fn reply(mem: &GuestMemory, at: u64, len: u32) -> Vec<u8> {
    let mut b = vec![0u8; len as usize];
    mem.read_slice(&mut b, GuestAddress(at)).unwrap();
    b
}

#[test]
fn serves_requests_through_a_ring() {
    let t = TempDir::new("ring");
    std::fs::write(t.path().join("f"), b"ring data!").unwrap();
    let mem = memory();
    let q = queue(&mem, 16);
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let irq = Arc::new(CountingIrq::default());
    let mut dev = Virtio9p::new(&ShareSpec {
        read_only: false,
        dir: t.path().into(),
        tag: "t".into(),
    })
    .unwrap();
    dev.activate(Activation {
        mem: mem.clone(),
        queues: vec![ActiveQueue {
            index: 0,
            queue: q,
            kick: kick.try_clone().unwrap(),
        }],
        irq: irq.clone(),
        features: VIRTIO_9P_MOUNT_TAG | 1 << 32,
    })
    .unwrap();

    let slot = |i: u64| DATA + i * 0x1000;
    let out = |i: u64| DATA + i * 0x1000 + 0x800;
    let mut e = Encoder::new(msg::TVERSION, 0xffff);
    e.u32(65536).string(b"9P2000.L").unwrap();
    let n = put(&mem, slot(0), &e.finish());
    desc(&mem, 0, slot(0), n, F_NEXT, 1);
    desc(&mem, 1, out(0), 0x100, F_WRITE, 0);
    offer(&mem, 0);

    let mut e = Encoder::new(msg::TATTACH, 1);
    e.u32(0)
        .u32(NOFID)
        .string(b"u")
        .unwrap()
        .string(b"")
        .unwrap()
        .u32(NONUNAME);
    let n = put(&mem, slot(1), &e.finish());
    desc(&mem, 2, slot(1), n, F_NEXT, 3);
    desc(&mem, 3, out(1), 0x100, F_WRITE, 0);
    offer(&mem, 2);

    let mut e = Encoder::new(msg::TWALK, 2);
    e.u32(0).u32(1).u16(1).string(b"f").unwrap();
    let n = put(&mem, slot(2), &e.finish());
    desc(&mem, 4, slot(2), n, F_NEXT, 5);
    desc(&mem, 5, out(2), 0x100, F_WRITE, 0);
    offer(&mem, 4);

    let mut e = Encoder::new(msg::TLOPEN, 3);
    e.u32(1).u32(0);
    let n = put(&mem, slot(3), &e.finish());
    desc(&mem, 6, slot(3), n, F_NEXT, 7);
    desc(&mem, 7, out(3), 0x100, F_WRITE, 0);
    offer(&mem, 6);

    // A read whose reply is split like Linux's zero-copy reads: an
    // 11-byte header buffer, then the data pages.
    let mut e = Encoder::new(msg::TREAD, 4);
    e.u32(1).u64(0).u32(4096);
    let n = put(&mem, slot(4), &e.finish());
    desc(&mem, 8, slot(4), n, F_NEXT, 9);
    desc(&mem, 9, out(4), 11, F_WRITE | F_NEXT, 10);
    desc(&mem, 10, slot(5), 6, F_WRITE, 0);
    offer(&mem, 8);

    // Garbage, a reply buffer too small for anything, a chain outside
    // guest RAM: each answered or returned, and serving goes on.
    let n = put(&mem, slot(6), &[1, 2, 3]);
    desc(&mem, 11, slot(6), n, F_NEXT, 12);
    desc(&mem, 12, out(6), 0x100, F_WRITE, 0);
    offer(&mem, 11);
    let mut e = Encoder::new(msg::TGETATTR, 7);
    e.u32(0).u64(0x7ff);
    let n = put(&mem, slot(7), &e.finish());
    desc(&mem, 13, slot(7), n, F_NEXT, 14);
    desc(&mem, 14, out(7), 5, F_WRITE, 0);
    offer(&mem, 13);
    desc(&mem, 15, 0xffff_0000, 16, 0, 0);
    offer(&mem, 15);
    kick.write(1).unwrap();
    let u = wait_used(&mem, 8);
    assert_eq!(u.len(), 8, "{u:?}");

    let (head, len) = u[0];
    assert_eq!(head, 0);
    let r = decode_reply(msg::TVERSION, 0xffff, &reply(&mem, out(0), len)).unwrap();
    let mut d = Decoder::new(&r);
    assert_eq!(d.u32().unwrap(), 65536);
    assert_eq!(d.string().unwrap(), b"9P2000.L");
    decode_reply(msg::TATTACH, 1, &reply(&mem, out(1), u[1].1)).unwrap();
    let r = decode_reply(msg::TWALK, 2, &reply(&mem, out(2), u[2].1)).unwrap();
    assert_eq!(&r[..2], &[1, 0]);
    decode_reply(msg::TLOPEN, 3, &reply(&mem, out(3), u[3].1)).unwrap();
    // Rread clamped to the 17 bytes of room: 6 bytes of data.
    assert_eq!(u[4], (8, 17));
    let hdr = reply(&mem, out(4), 11);
    assert_eq!(&hdr[..4], &17u32.to_le_bytes());
    assert_eq!(&hdr[7..11], &6u32.to_le_bytes());
    assert_eq!(reply(&mem, slot(5), 6), b"ring d");
    let r = reply(&mem, out(6), u[5].1);
    assert_eq!(decode_reply(0, 0xffff, &r), Err(nix::errno::Errno::EINVAL));
    assert_eq!(u[6], (13, 0), "no room for any reply");
    assert_eq!(u[7], (15, 0), "chain outside RAM returned unused");
    assert!(!irq.queues.lock().unwrap().is_empty());

    // A request larger than the negotiated msize, then still serving.
    let mut big = vec![0u8; 70_000];
    big[..4].copy_from_slice(&70_000u32.to_le_bytes());
    big[4] = msg::TWRITE;
    big[5] = 8;
    let n = put(&mem, 0x80000, &big);
    desc(&mem, 4, 0x80000, n, F_NEXT, 5);
    desc(&mem, 5, out(9), 0x100, F_WRITE, 0);
    offer(&mem, 4);
    let mut e = Encoder::new(msg::TGETATTR, 9);
    e.u32(1).u64(0x7ff);
    let n = put(&mem, slot(8), &e.finish());
    desc(&mem, 0, slot(8), n, F_NEXT, 1);
    desc(&mem, 1, out(8), 0x200, F_WRITE, 0);
    offer(&mem, 0);
    kick.write(1).unwrap();
    let u = wait_used(&mem, 10);
    assert_eq!(u.len(), 10);
    let r = reply(&mem, out(9), u[8].1);
    assert_eq!(
        decode_reply(msg::TWRITE, 8, &r),
        Err(nix::errno::Errno::EINVAL)
    );
    let r = decode_reply(msg::TGETATTR, 9, &reply(&mem, out(8), u[9].1)).unwrap();
    // size is at valid(8) qid(13) mode uid gid(12) nlink rdev(16).
    assert_eq!(&r[49..57], &10u64.to_le_bytes());

    // A reset ends the session and the worker.
    dev.reset();
    desc(&mem, 2, slot(8), n, F_NEXT, 3);
    desc(&mem, 3, out(8), 0x200, F_WRITE, 0);
    offer(&mem, 2);
    kick.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(used(&mem).len(), 10);
}
