//! Virtio transports and devices. Not implemented yet: `--disk`, `--rng`,
//! `--9p`, `--network`, `--balloon` and `--console virtio` are refused with
//! "not supported yet" until they land.
