//! What lkvm's fuzz targets share: a reader for the input bytes, a guest
//! driver that lays out split rings in guest memory as the input says,
//! per-process temporary directories, and the 9p escape oracle.
//!
//! Every target is deterministic, synchronous (device code is called on
//! the fuzzing thread through lkvm's `cfg(fuzzing)` hooks, never through a
//! device thread) and bounded per input.

pub mod driver;
pub mod input;
pub mod kernels;
pub mod p9;
pub mod regs;

pub mod tempdir;
