//! The byte layout of one ring inside a shared region.
//!
//! ```text
//! offset 0    RingHeader   magic "VNICRING", layout version, kind, depth, entry size,
//!                          generation, producer / consumer claims          (128 bytes)
//! offset 128  producer line: the producer's published index                (128 bytes)
//! offset 256  consumer line: the consumer's published index                (128 bytes)
//! offset 384  depth × entry slots, padded to a multiple of 128 bytes
//! ```
//!
//! Each index has a 128-byte line of its own because x86 prefetches cache lines in pairs: two
//! indices 64 bytes apart still ping-pong between the producer's and the consumer's cores.

use super::sync::{AtomicU32, AtomicU64};

/// `b"VNICRING"` read as a little-endian u64.
pub(crate) const RING_MAGIC: u64 = u64::from_le_bytes(*b"VNICRING");
/// Bumped whenever the layout below changes.
pub(crate) const LAYOUT_VERSION: u32 = 1;
/// Alignment of a ring's start and of each of its lines.
pub const RING_ALIGN: usize = 128;
/// Bytes before the first slot.
pub(crate) const CONTROL_BYTES: usize = 3 * RING_ALIGN;
/// Bytes of a ring's index block, which sits just before its entry 0: an ENA-style queue's
/// base address (entry 0) minus this is where the ring starts.
pub const INDEX_BLOCK_BYTES: usize = CONTROL_BYTES;

/// Smallest ring depth: 16, ENA's async event queue (its admin queue has 32 entries, its TX
/// rings at least 256). Model checking under loom uses rings of 2–4 entries.
pub const MIN_DEPTH: u32 = if cfg!(loom) { 2 } else { 16 };
/// Largest ring depth (ENA allows RX rings up to 16K entries).
pub const MAX_DEPTH: u32 = 16384;

/// Which protocol a ring speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RingKind {
    /// Producer and consumer indices; see [`crate::ring::SubmissionRing`].
    Submission = 1,
    /// Phase-bit entries; see [`crate::ring::CompletionRing`].
    Completion = 2,
}

impl RingKind {
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Submission),
            2 => Some(Self::Completion),
            _ => None,
        }
    }
}

#[repr(C, align(128))]
#[derive(Default)]
pub(crate) struct RingHeader {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub kind: AtomicU32,
    pub depth: AtomicU32,
    pub entry_size: AtomicU32,
    pub generation: AtomicU32,
    pub producer_pid: AtomicU32,
    pub consumer_pid: AtomicU32,
}

#[repr(C, align(128))]
#[derive(Default)]
pub(crate) struct IndexLine {
    pub index: AtomicU32,
}

/// The control block at the start of every ring.
#[repr(C)]
#[derive(Default)]
pub(crate) struct RingControl {
    pub header: RingHeader,
    pub producer: IndexLine,
    pub consumer: IndexLine,
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<RingControl>() == CONTROL_BYTES);
    assert!(std::mem::offset_of!(RingControl, producer) == RING_ALIGN);
    assert!(std::mem::offset_of!(RingControl, consumer) == 2 * RING_ALIGN);
};

/// Bytes one ring of `depth` entries of `entry_size` bytes occupies, a multiple of 128.
pub const fn ring_bytes(depth: u32, entry_size: usize) -> usize {
    let slots = depth as usize * entry_size;
    CONTROL_BYTES + slots.div_ceil(RING_ALIGN) * RING_ALIGN
}

/// Whether `depth` is a power of two within [`MIN_DEPTH`]..=[`MAX_DEPTH`].
pub const fn depth_is_valid(depth: u32) -> bool {
    depth.is_power_of_two() && depth >= MIN_DEPTH && depth <= MAX_DEPTH
}
