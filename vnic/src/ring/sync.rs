//! The atomics the rings use: std's in ordinary builds, loom's under `--cfg loom` so that the
//! model checker can explore every interleaving of the ring protocols.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
