//! Shared-memory descriptor rings in ENA's style: how a VM's driver and the device talk.
//!
//! Two protocols, both single-producer / single-consumer and lock-free:
//!
//! * A **submission ring** ([`SubmissionRing`]) carries fixed-size descriptors (ENA's TX and RX
//!   descriptors are 16 bytes) from a producer to a consumer. The producer publishes its tail once
//!   per burst (the doorbell); the consumer publishes its head once per burst. Each index sits on a
//!   128-byte line of its own, and each side caches the other's index and re-reads it only when it
//!   runs out of entries or space, so in steady state a burst of 32 costs one cache-line transfer
//!   each way, not 32.
//! * A **completion ring** ([`CompletionRing`]) uses ENA's phase bit instead of a shared index: the
//!   producer writes each entry's body, then its phase word with release ordering; the consumer
//!   accepts entries while their phase matches the one it expects (an acquire load before reading
//!   the body). Both sides flip their phase each time they wrap, so the zero-filled ring starts
//!   empty (phase 0, expected 1). The consumer publishes how far it got once per burst, which the
//!   producer reads only when it believes the ring is full, as ENA's completion-queue head
//!   doorbell does.
//!
//! Depths are powers of two from 16 to 16,384 ([`MIN_DEPTH`], [`MAX_DEPTH`]); indices are
//! free-running `u32`s masked on use. A ring lives at a 128-byte-aligned offset inside a
//! [`SharedRegion`] and starts with a header (magic `VNICRING`, layout version, kind, depth, entry
//! size) that every attaching side validates, so a second process can attach to the same file and
//! the same memory can be DMA-mapped for a real device. Each side *claims* its end of the ring in
//! the header with its process id: a second producer or consumer is refused, and after a peer dies
//! the survivor can [`reset`](SubmissionProducer::reset) the ring and accept a new peer.
//!
//! A peer is not trusted: an index it publishes that is impossible (more than `depth` ahead of or
//! behind the other) marks the endpoint *faulted*; it then reports an empty (or full) ring and never
//! reads or writes outside its own slots. Descriptors are copied out of shared memory exactly once,
//! so a peer cannot change one between its validation and its use.

mod completion;
mod layout;
mod mem;
mod region;
mod submission;
mod sync;

use std::marker::PhantomData;
#[cfg(not(loom))]
use std::sync::Arc;

pub use completion::{CompletionConsumer, CompletionEntry, CompletionProducer};
pub use layout::{
    INDEX_BLOCK_BYTES, MAX_DEPTH, MIN_DEPTH, RING_ALIGN, RingKind, depth_is_valid, ring_bytes,
};
pub use region::{RegionError, SharedRegion};
pub use submission::{Reservation, SubmissionConsumer, SubmissionProducer};

use bytemuck::Pod;
use layout::{LAYOUT_VERSION, RING_MAGIC, RingControl};
use mem::RingMemory;
use sync::{AtomicU32, Ordering};

/// Which end of a ring an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Writes entries.
    Producer,
    /// Reads entries.
    Consumer,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Producer => "producer",
            Side::Consumer => "consumer",
        })
    }
}

/// Why a ring could not be created, attached or reset.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The backing region could not be made.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The ring would not fit inside the region.
    #[error("ring at offset {offset} needs {needed} bytes but the region holds {len}")]
    RegionTooSmall {
        /// Ring start.
        offset: usize,
        /// Bytes the ring needs from `offset`.
        needed: usize,
        /// Region size.
        len: usize,
    },
    /// A ring must start on a 128-byte boundary.
    #[error("ring offset {offset} is not a multiple of {RING_ALIGN}")]
    Misaligned {
        /// The offending offset.
        offset: usize,
    },
    /// The memory does not hold an initialised ring.
    #[error("no ring here: magic is {found:#018x}, expected {RING_MAGIC:#018x} (\"VNICRING\")")]
    BadMagic {
        /// What the header holds.
        found: u64,
    },
    /// The ring was laid out by an incompatible version.
    #[error("ring layout version {found} is not supported (this build speaks {LAYOUT_VERSION})")]
    UnsupportedVersion {
        /// What the header holds.
        found: u32,
    },
    /// A submission ring was attached as a completion ring or the other way round.
    #[error("ring kind {found} does not match the expected {expected:?}")]
    WrongKind {
        /// What the header holds.
        found: u32,
        /// What the caller asked for.
        expected: RingKind,
    },
    /// Depth is not a power of two in range.
    #[error("ring depth {depth} is not a power of two between {MIN_DEPTH} and {MAX_DEPTH}")]
    BadDepth {
        /// The offending depth.
        depth: u32,
    },
    /// The ring holds entries of another size than the caller's type.
    #[error("ring entries are {found} bytes, the caller's type is {expected}")]
    EntrySizeMismatch {
        /// What the header holds.
        found: u32,
        /// `size_of` the caller's type.
        expected: usize,
    },
    /// Someone already holds that end of the ring.
    #[error("the ring's {side} end is already claimed by process {pid}")]
    AlreadyClaimed {
        /// Which end.
        side: Side,
        /// Who holds it.
        pid: u32,
    },
    /// Reset or re-initialisation refused while the peer is still attached.
    #[error("the ring's {side} end is still held by live process {pid}")]
    PeerAlive {
        /// The peer's end.
        side: Side,
        /// The peer's process id.
        pid: u32,
    },
}

/// A submission ring: descriptors from one producer to one consumer (see the module docs).
///
/// This type only names the protocol; the endpoints are [`SubmissionProducer`] and
/// [`SubmissionConsumer`].
#[derive(Debug)]
pub struct SubmissionRing<T>(PhantomData<T>);

/// A completion ring: phase-bit entries from one producer to one consumer (see the module docs).
///
/// The endpoints are [`CompletionProducer`] and [`CompletionConsumer`].
#[derive(Debug)]
pub struct CompletionRing<T>(PhantomData<T>);

macro_rules! ring_constructors {
    ($ring:ident, $bound:path, $kind:expr, $producer:ident, $consumer:ident) => {
        impl<T: $bound> $ring<T> {
            /// Bytes a ring of `depth` entries occupies in a region (a multiple of 128).
            pub const fn bytes(depth: u32) -> usize {
                ring_bytes(depth, size_of::<T>())
            }

            /// Lays out an empty ring of `depth` entries at `offset` in `region`.
            ///
            /// Refused while a live process holds either end of a ring already there.
            #[cfg(not(loom))]
            pub fn init(
                region: &Arc<SharedRegion>,
                offset: usize,
                depth: u32,
            ) -> Result<(), RingError> {
                Self::lay_out(region, offset, depth, Claims::Respect)
            }

            /// Lays out an empty ring of `depth` entries at `offset` as the memory's owner: a
            /// hypervisor provisioning a stopped VM's rings, whatever the header holds — claims
            /// a guest may have forged included. For memory none of whose ring ends is attached
            /// (the VM's driver gone, the device's queues destroyed).
            #[cfg(not(loom))]
            pub fn reinit(
                region: &Arc<SharedRegion>,
                offset: usize,
                depth: u32,
            ) -> Result<(), RingError> {
                Self::lay_out(region, offset, depth, Claims::Override)
            }

            #[cfg(not(loom))]
            fn lay_out(
                region: &Arc<SharedRegion>,
                offset: usize,
                depth: u32,
                claims: Claims,
            ) -> Result<(), RingError> {
                if !depth_is_valid(depth) {
                    return Err(RingError::BadDepth { depth });
                }
                let mem = RingMemory::<T>::new(region.clone(), offset, depth)?;
                init_control(&mem, $kind, depth, claims)
            }

            /// A ring in its own anonymous region, both endpoints in this process (typically one
            /// per thread).
            pub fn in_process(depth: u32) -> Result<($producer<T>, $consumer<T>), RingError> {
                if !depth_is_valid(depth) {
                    return Err(RingError::BadDepth { depth });
                }
                #[cfg(not(loom))]
                {
                    let region = Arc::new(SharedRegion::anonymous(Self::bytes(depth))?);
                    Self::init(&region, 0, depth)?;
                    Ok(($producer::attach(region.clone(), 0)?, $consumer::attach(region, 0)?))
                }
                #[cfg(loom)]
                {
                    let mem = RingMemory::<T>::new_heap(depth);
                    init_control(&mem, $kind, depth, Claims::Respect)?;
                    let producer = Attachment::from_memory(mem.clone(), $kind, Side::Producer)?;
                    let consumer = Attachment::from_memory(mem, $kind, Side::Consumer)?;
                    Ok(($producer::from_attachment(producer), $consumer::from_attachment(consumer)))
                }
            }
        }
    };
}

ring_constructors!(
    SubmissionRing,
    Pod,
    RingKind::Submission,
    SubmissionProducer,
    SubmissionConsumer
);
ring_constructors!(
    CompletionRing,
    CompletionEntry,
    RingKind::Completion,
    CompletionProducer,
    CompletionConsumer
);

/// Whether an init defers to the claims in a ring's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claims {
    /// Refuse while a live process holds an end.
    Respect,
    /// The memory's owner lays the ring out whatever the header says.
    #[cfg_attr(loom, allow(dead_code))]
    Override,
}

/// Writes a fresh control block (and zeroes the slots) for a ring of `depth` entries.
fn init_control<T: Pod>(
    mem: &RingMemory<T>,
    kind: RingKind,
    depth: u32,
    claims: Claims,
) -> Result<(), RingError> {
    let header = &mem.control().header;
    if claims == Claims::Respect && header.magic.load(Ordering::Acquire) == RING_MAGIC {
        for side in [Side::Producer, Side::Consumer] {
            let pid = claim_word(mem.control(), side).load(Ordering::Acquire);
            if pid != 0 && process_is_alive(pid) {
                return Err(RingError::PeerAlive { side, pid });
            }
        }
    }
    header.magic.store(0, Ordering::Relaxed);
    // SAFETY: nobody holds either end — checked above, or promised by the memory's owner
    // (`reinit`) — so nobody else touches the slots.
    unsafe { mem.zero_slots() };
    let ctl = mem.control();
    ctl.producer.index.store(0, Ordering::Relaxed);
    ctl.consumer.index.store(0, Ordering::Relaxed);
    header.version.store(LAYOUT_VERSION, Ordering::Relaxed);
    header.kind.store(kind as u32, Ordering::Relaxed);
    header.depth.store(depth, Ordering::Relaxed);
    header.entry_size.store(size_of::<T>() as u32, Ordering::Relaxed);
    header.generation.fetch_add(1, Ordering::Relaxed);
    header.producer_pid.store(0, Ordering::Relaxed);
    header.consumer_pid.store(0, Ordering::Relaxed);
    header.magic.store(RING_MAGIC, Ordering::Release);
    Ok(())
}

fn claim_word(control: &RingControl, side: Side) -> &AtomicU32 {
    match side {
        Side::Producer => &control.header.producer_pid,
        Side::Consumer => &control.header.consumer_pid,
    }
}

/// Whether `pid` names a live (or unreapable, not ours to signal) process.
fn process_is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 performs only the existence and permission checks, delivering nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// One attached end of a ring: the memory, the validated geometry, and this side's claim.
#[derive(Debug)]
pub(crate) struct Attachment<T: Pod> {
    pub(crate) mem: RingMemory<T>,
    pub(crate) depth: u32,
    pub(crate) mask: u32,
    side: Side,
    pid: u32,
}

impl<T: Pod> Attachment<T> {
    #[cfg(not(loom))]
    pub(crate) fn attach(
        region: Arc<SharedRegion>,
        offset: usize,
        kind: RingKind,
        side: Side,
    ) -> Result<Self, RingError> {
        let control = mem::control_at_checked(&region, offset)?;
        let depth = validate_header(control, kind, size_of::<T>())?;
        Self::from_memory(RingMemory::new(region, offset, depth)?, kind, side)
    }

    pub(crate) fn from_memory(
        mem: RingMemory<T>,
        kind: RingKind,
        side: Side,
    ) -> Result<Self, RingError> {
        let depth = validate_header(mem.control(), kind, size_of::<T>())?;
        let pid = std::process::id();
        let claim = claim_word(mem.control(), side);
        if let Err(holder) = claim.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire) {
            return Err(RingError::AlreadyClaimed { side, pid: holder });
        }
        Ok(Self { mem, depth, mask: depth - 1, side, pid })
    }

    #[inline(always)]
    pub(crate) fn control(&self) -> &RingControl {
        self.mem.control()
    }

    fn peer(&self) -> Side {
        match self.side {
            Side::Producer => Side::Consumer,
            Side::Consumer => Side::Producer,
        }
    }

    /// Empties the ring after its peer has gone: both indices to zero, slots zeroed, the peer's
    /// claim released, the generation bumped. Refused while the peer is alive.
    pub(crate) fn reset(&mut self) -> Result<(), RingError> {
        let peer = self.peer();
        let claim = claim_word(self.mem.control(), peer);
        let holder = claim.load(Ordering::Acquire);
        if holder != 0 && (holder == self.pid || process_is_alive(holder)) {
            return Err(RingError::PeerAlive { side: peer, pid: holder });
        }
        // SAFETY: the peer is gone, so nobody else touches the slots; no new peer can attach
        // while the dead one's claim is still set, and that claim is released only below.
        unsafe { self.mem.zero_slots() };
        let ctl = self.mem.control();
        ctl.producer.index.store(0, Ordering::Release);
        ctl.consumer.index.store(0, Ordering::Release);
        ctl.header.generation.fetch_add(1, Ordering::AcqRel);
        // Release the claim we saw, and only that one.
        let _ = claim.compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Acquire);
        Ok(())
    }

    /// The generation counter in the header, bumped by every init and reset.
    pub(crate) fn generation(&self) -> u32 {
        self.mem.control().header.generation.load(Ordering::Acquire)
    }
}

impl<T: Pod> Drop for Attachment<T> {
    fn drop(&mut self) {
        let claim = claim_word(self.mem.control(), self.side);
        let _ = claim.compare_exchange(self.pid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// What a producer knows of its ring: its own tail, and the consumer's head as last read.
///
/// The head is re-read (one acquire load of the consumer's line) only when the cached one shows
/// too little room. A head that is impossible (the tail more than `depth` ahead of it) faults the
/// cursor: the ring then stays full, so a hostile consumer cannot make the producer overwrite
/// entries it has not released.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProducerCursor {
    /// Next index to write.
    pub(crate) tail: u32,
    cached_head: u32,
    faulted: bool,
}

impl ProducerCursor {
    /// The cursor of a producer attaching to `ring` as it stands.
    pub(crate) fn load<T: Pod>(ring: &Attachment<T>) -> Self {
        let ctl = ring.control();
        let tail = ctl.producer.index.load(Ordering::Acquire);
        let cached_head = ctl.consumer.index.load(Ordering::Acquire);
        let faulted = tail.wrapping_sub(cached_head) > ring.depth;
        Self { tail, cached_head, faulted }
    }

    /// The cursor of an empty ring.
    pub(crate) fn empty() -> Self {
        Self { tail: 0, cached_head: 0, faulted: false }
    }

    /// Free slots, re-reading the consumer's head only if fewer than `want` are known free.
    #[inline(always)]
    pub(crate) fn free<T: Pod>(&mut self, ring: &Attachment<T>, want: u32) -> u32 {
        if self.faulted {
            return 0;
        }
        let free = ring.depth - self.tail.wrapping_sub(self.cached_head);
        if free >= want {
            return free;
        }
        let head = ring.control().consumer.index.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > ring.depth {
            self.faulted = true;
            return 0;
        }
        self.cached_head = head;
        ring.depth - used
    }

    /// True once the consumer published an impossible head.
    pub(crate) fn is_faulted(&self) -> bool {
        self.faulted
    }
}

/// Checks a ring header against what the caller expects and returns its depth.
fn validate_header(
    control: &RingControl,
    kind: RingKind,
    entry_size: usize,
) -> Result<u32, RingError> {
    let header = &control.header;
    let magic = header.magic.load(Ordering::Acquire);
    if magic != RING_MAGIC {
        return Err(RingError::BadMagic { found: magic });
    }
    let version = header.version.load(Ordering::Relaxed);
    if version != LAYOUT_VERSION {
        return Err(RingError::UnsupportedVersion { found: version });
    }
    let found = header.kind.load(Ordering::Relaxed);
    if RingKind::from_raw(found) != Some(kind) {
        return Err(RingError::WrongKind { found, expected: kind });
    }
    let depth = header.depth.load(Ordering::Relaxed);
    if !depth_is_valid(depth) {
        return Err(RingError::BadDepth { depth });
    }
    let found = header.entry_size.load(Ordering::Relaxed);
    if found as usize != entry_size {
        return Err(RingError::EntrySizeMismatch { found, expected: entry_size });
    }
    Ok(depth)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::abi::io::{TxCompletion, TxDesc};

    fn region(len: usize) -> Arc<SharedRegion> {
        Arc::new(SharedRegion::anonymous(len).unwrap())
    }

    fn desc(i: u32) -> TxDesc {
        TxDesc::new(u64::from(i) * 64, (i % 9001) as u16, i as u16)
    }

    #[test]
    fn layout_is_a_multiple_of_128_and_depth_bounds_hold() {
        assert_eq!(SubmissionRing::<TxDesc>::bytes(64), 384 + 1024);
        assert_eq!(CompletionRing::<TxCompletion>::bytes(64), 384 + 512);
        assert_eq!(SubmissionRing::<[u8; 3]>::bytes(64), 384 + 256);
        for depth in [0, 1, 8, 15, 63, 100, 32768] {
            assert!(
                matches!(
                    SubmissionRing::<TxDesc>::in_process(depth),
                    Err(RingError::BadDepth { .. })
                ),
                "{depth}"
            );
        }
        for depth in [16, 32, 64, 1024, 16384] {
            SubmissionRing::<TxDesc>::in_process(depth).unwrap();
        }
    }

    #[test]
    fn attaching_to_bad_memory_is_an_error_not_ub() {
        let r = region(4096);
        let err = SubmissionConsumer::<TxDesc>::attach(r.clone(), 0).unwrap_err();
        assert!(matches!(err, RingError::BadMagic { found: 0 }), "{err}");
        assert!(matches!(
            SubmissionRing::<TxDesc>::init(&r, 64, 64),
            Err(RingError::Misaligned { offset: 64 })
        ));
        let err = SubmissionRing::<TxDesc>::init(&r, 0, 1024).unwrap_err();
        assert!(matches!(err, RingError::RegionTooSmall { needed: 16768, len: 4096, .. }), "{err}");
        assert!(matches!(
            SubmissionConsumer::<TxDesc>::attach(r.clone(), 4096),
            Err(RingError::RegionTooSmall { .. })
        ));
        assert!(matches!(
            SubmissionConsumer::<TxDesc>::attach(r.clone(), usize::MAX - 127),
            Err(RingError::RegionTooSmall { .. })
        ));

        SubmissionRing::<TxDesc>::init(&r, 0, 64).unwrap();
        assert!(matches!(
            CompletionConsumer::<TxCompletion>::attach(r.clone(), 0),
            Err(RingError::WrongKind { found: 1, expected: RingKind::Completion })
        ));
        assert!(matches!(
            SubmissionConsumer::<u64>::attach(r.clone(), 0),
            Err(RingError::EntrySizeMismatch { found: 16, expected: 8 })
        ));
        let ctl = mem::control_at_checked(&r, 0).unwrap();
        ctl.header.depth.store(96, Ordering::Relaxed);
        assert!(matches!(
            SubmissionConsumer::<TxDesc>::attach(r.clone(), 0),
            Err(RingError::BadDepth { depth: 96 })
        ));
        ctl.header.depth.store(1024, Ordering::Relaxed);
        assert!(matches!(
            SubmissionConsumer::<TxDesc>::attach(r.clone(), 0),
            Err(RingError::RegionTooSmall { .. })
        ));
        ctl.header.depth.store(64, Ordering::Relaxed);
        ctl.header.version.store(9, Ordering::Relaxed);
        let err = SubmissionConsumer::<TxDesc>::attach(r.clone(), 0).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        ctl.header.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        SubmissionConsumer::<TxDesc>::attach(r, 0).unwrap();
    }

    #[test]
    fn each_end_can_be_claimed_once() {
        let r = region(SubmissionRing::<TxDesc>::bytes(64));
        SubmissionRing::<TxDesc>::init(&r, 0, 64).unwrap();
        let p = SubmissionProducer::<TxDesc>::attach(r.clone(), 0).unwrap();
        let err = SubmissionProducer::<TxDesc>::attach(r.clone(), 0).unwrap_err();
        assert!(matches!(err, RingError::AlreadyClaimed { side: Side::Producer, .. }), "{err}");
        let c = SubmissionConsumer::<TxDesc>::attach(r.clone(), 0).unwrap();
        assert!(matches!(
            SubmissionRing::<TxDesc>::init(&r, 0, 64),
            Err(RingError::PeerAlive { .. })
        ));
        drop(p);
        SubmissionProducer::<TxDesc>::attach(r.clone(), 0).unwrap();
        drop(c);
    }

    #[test]
    fn the_memorys_owner_lays_a_ring_out_whatever_claims_its_header_forges() {
        let r = region(SubmissionRing::<TxDesc>::bytes(64));
        SubmissionRing::<TxDesc>::init(&r, 0, 64).unwrap();
        // A guest forges both claims with pid 1, which is alive as long as the machine is.
        let header = &mem::control_at_checked(&r, 0).unwrap().header;
        header.producer_pid.store(1, Ordering::Relaxed);
        header.consumer_pid.store(1, Ordering::Relaxed);
        assert!(matches!(
            SubmissionRing::<TxDesc>::init(&r, 0, 64),
            Err(RingError::PeerAlive { pid: 1, .. })
        ));
        SubmissionRing::<TxDesc>::reinit(&r, 0, 64).unwrap();
        let mut p = SubmissionProducer::<TxDesc>::attach(r.clone(), 0).unwrap();
        let mut c = SubmissionConsumer::<TxDesc>::attach(r.clone(), 0).unwrap();
        assert!(p.push(TxDesc::default()));
        assert!(c.pop().is_some(), "a working ring again");
    }

    #[test]
    fn a_queue_pair_shares_one_region() {
        let sq = SubmissionRing::<TxDesc>::bytes(256);
        let cq = CompletionRing::<TxCompletion>::bytes(256);
        let r = region(sq + cq);
        SubmissionRing::<TxDesc>::init(&r, 0, 256).unwrap();
        CompletionRing::<TxCompletion>::init(&r, sq, 256).unwrap();
        let mut sp = SubmissionProducer::<TxDesc>::attach(r.clone(), 0).unwrap();
        let mut sc = SubmissionConsumer::<TxDesc>::attach(r.clone(), 0).unwrap();
        let mut cp = CompletionProducer::<TxCompletion>::attach(r.clone(), sq).unwrap();
        let mut cc = CompletionConsumer::<TxCompletion>::attach(r, sq).unwrap();
        for i in 0..1000u32 {
            assert!(sp.push(desc(i)));
            let d = sc.pop().unwrap();
            assert!(cp.push(TxCompletion { req_id: d.req_id(), ..Default::default() }));
            assert_eq!(cc.pop().unwrap().req_id, i as u16);
        }
    }

    #[test]
    fn bursts_wrap_in_fifo_order_and_bulk_is_all_or_nothing() {
        let (mut p, mut c) = SubmissionRing::<TxDesc>::in_process(64).unwrap();
        let src: Vec<TxDesc> = (0..200).map(desc).collect();
        assert!(!p.push_bulk(&src[..65]), "65 never fit in 64");
        assert_eq!(p.push_burst(&src[..65]), 64);
        assert!(!p.push(desc(999)));
        let mut dst = [TxDesc::default(); 40];
        assert_eq!(c.pop_burst(&mut dst), 40);
        assert_eq!(dst.to_vec(), src[..40].to_vec());
        let mut big = [TxDesc::default(); 25];
        assert!(!c.pop_bulk(&mut big), "only 24 are ready");
        assert!(c.pop_bulk(&mut big[..24]));
        assert_eq!(big[..24].to_vec(), src[40..64].to_vec());
        assert!(c.is_empty());

        // Many laps with odd burst sizes.
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        for round in 0..5000u32 {
            let want = (round * 7 + 3) % 50;
            let batch: Vec<TxDesc> = (next_in..next_in + want).map(desc).collect();
            next_in += p.push_burst(&batch) as u32;
            let mut out = vec![TxDesc::default(); ((round * 13) % 47) as usize];
            let n = c.pop_burst(&mut out);
            for d in &out[..n] {
                assert_eq!(*d, desc(next_out));
                next_out += 1;
            }
        }
        assert!(next_out > 50_000, "{next_out}");
    }

    #[test]
    fn reservations_write_in_place_and_publish_once() {
        let (mut p, mut c) = SubmissionRing::<TxDesc>::in_process(64).unwrap();
        assert_eq!(p.push_burst(&(0..60).map(desc).collect::<Vec<_>>()), 60);
        let mut out = [TxDesc::default(); 60];
        assert!(c.pop_bulk(&mut out));
        // Tail is at 60: a reservation of 10 wraps after 4 slots.
        let mut res = p.reserve(10).unwrap();
        let (a, b) = res.as_mut_slices();
        assert_eq!((a.len(), b.len()), (4, 6));
        for (i, slot) in a.iter_mut().chain(b.iter_mut()).enumerate() {
            *slot = desc(100 + i as u32);
        }
        assert!(c.is_empty(), "nothing is visible before commit");
        res.commit_first(7);
        assert_eq!(c.len(), 7);
        let mut res = p.reserve_up_to(1000);
        assert_eq!(res.len(), 57);
        res.set(0, desc(500));
        let _ = res;
        assert_eq!(c.len(), 7, "an uncommitted reservation publishes nothing");
        assert!(p.reserve(58).is_none());
        let mut seven = [TxDesc::default(); 7];
        assert!(c.pop_bulk(&mut seven));
        assert_eq!(seven.to_vec(), (100..107).map(desc).collect::<Vec<_>>());
    }

    #[test]
    fn hostile_indices_fault_the_endpoint_instead_of_reading_out_of_bounds() {
        let r = region(SubmissionRing::<TxDesc>::bytes(64));
        SubmissionRing::<TxDesc>::init(&r, 0, 64).unwrap();
        let mut c = SubmissionConsumer::<TxDesc>::attach(r.clone(), 0).unwrap();
        let mut p = SubmissionProducer::<TxDesc>::attach(r.clone(), 0).unwrap();
        let ctl = mem::control_at_checked(&r, 0).unwrap();
        ctl.producer.index.store(65, Ordering::Release);
        let mut dst = [TxDesc::default(); 128];
        assert_eq!(c.pop_burst(&mut dst), 0);
        assert!(c.is_faulted());
        ctl.consumer.index.store(u32::MAX - 5, Ordering::Release);
        assert_eq!(p.free_slots(), 64, "cached head is still good");
        assert_eq!(p.push_burst(&[desc(0); 64]), 64);
        assert!(!p.push(desc(1)));
        assert!(p.is_faulted());

        let (mut cp, _cc) = CompletionRing::<TxCompletion>::in_process(64).unwrap();
        assert_eq!(cp.push_burst(&[TxCompletion::default(); 64]), 64);
        // The consumer has not published anything: the producer must stop.
        assert_eq!(cp.push_burst(&[TxCompletion::default(); 1]), 0);
        assert!(!cp.is_faulted());
    }

    #[test]
    fn completion_phase_flips_each_lap() {
        let (mut p, mut c) = CompletionRing::<TxCompletion>::in_process(64).unwrap();
        assert!(c.expected_phase());
        assert!(!c.has_ready());
        let mut out = [TxCompletion::default(); 64];
        for lap in 0..6u16 {
            let entries: Vec<_> = (0..64)
                .map(|i| TxCompletion { req_id: lap * 64 + i, ..Default::default() })
                .collect();
            assert!(p.push_bulk(&entries));
            assert!(!p.push(TxCompletion::default()), "full until the consumer publishes");
            assert!(c.has_ready());
            assert_eq!(c.pop_burst(&mut out), 64);
            for (i, e) in out.iter().enumerate() {
                assert_eq!(e.req_id, lap * 64 + i as u16);
                assert_eq!(e.flags & 1 == 1, lap % 2 == 0, "phase of lap {lap}");
            }
            assert_eq!(c.pop_burst(&mut out), 0);
            assert_eq!(c.expected_phase(), lap % 2 == 1);
        }
    }

    #[test]
    fn reset_is_refused_while_the_peer_lives_and_allows_reuse_after() {
        let r = region(CompletionRing::<TxCompletion>::bytes(64));
        CompletionRing::<TxCompletion>::init(&r, 0, 64).unwrap();
        let mut c = CompletionConsumer::<TxCompletion>::attach(r.clone(), 0).unwrap();
        let mut p = CompletionProducer::<TxCompletion>::attach(r.clone(), 0).unwrap();
        assert_eq!(p.push_burst(&[TxCompletion { req_id: 1, ..Default::default() }; 40]), 40);
        assert!(matches!(c.reset(), Err(RingError::PeerAlive { side: Side::Producer, .. })));
        drop(p);
        let generation = c.generation();
        c.reset().unwrap();
        assert_eq!(c.generation(), generation + 1);
        assert!(!c.has_ready(), "stale entries are gone");
        let mut p = CompletionProducer::<TxCompletion>::attach(r, 0).unwrap();
        assert!(p.push(TxCompletion { req_id: 7, ..Default::default() }));
        assert_eq!(c.pop().unwrap().req_id, 7);
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn reattaching_resumes_where_the_ring_stands() {
        let r = region(CompletionRing::<TxCompletion>::bytes(64));
        CompletionRing::<TxCompletion>::init(&r, 0, 64).unwrap();
        let mut c = CompletionConsumer::<TxCompletion>::attach(r.clone(), 0).unwrap();
        {
            let mut p = CompletionProducer::<TxCompletion>::attach(r.clone(), 0).unwrap();
            for i in 0..100u16 {
                assert!(p.push(TxCompletion { req_id: i, ..Default::default() }));
                assert_eq!(c.pop().unwrap().req_id, i);
            }
        }
        let mut p = CompletionProducer::<TxCompletion>::attach(r, 0).unwrap();
        assert!(p.push(TxCompletion { req_id: 100, ..Default::default() }));
        assert_eq!(c.pop().unwrap().req_id, 100, "the new producer writes lap 1's phase");
    }

    #[test]
    fn cross_thread_transfer_keeps_order() {
        let (mut p, mut c) = SubmissionRing::<TxDesc>::in_process(256).unwrap();
        const N: u32 = 200_000;
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                let batch: Vec<_> = (i..(i + 32).min(N)).map(desc).collect();
                i += p.push_burst(&batch) as u32;
                std::hint::spin_loop();
            }
        });
        let mut next = 0;
        let mut buf = [TxDesc::default(); 32];
        while next < N {
            let n = c.pop_burst(&mut buf);
            for d in &buf[..n] {
                assert_eq!(*d, desc(next));
                next += 1;
            }
        }
        producer.join().unwrap();
    }
}
