//! Where a ring's control block and slots live, and the only place that touches them through raw
//! pointers.
//!
//! In ordinary builds a ring sits at an offset inside a [`SharedRegion`]; the handle keeps the
//! region alive through an `Arc`, so the pointers below stay valid for as long as any endpoint
//! exists. Under `--cfg loom` the same API is backed by heap objects made of loom atomics and
//! `loom::cell::UnsafeCell`s, so the model checker sees every slot access and can prove that the
//! index and phase-bit protocols order them.

use bytemuck::Pod;

use super::layout::RingControl;
#[cfg(not(loom))]
use super::sync::Ordering;

#[cfg(not(loom))]
pub(crate) use shm::{RingMemory, control_at_checked};

#[cfg(loom)]
pub(crate) use heap::RingMemory;

impl<T: Pod> RingMemory<T> {
    /// Copies `src` into the slots from `start` on, wrapping at the ring's end.
    ///
    /// # Safety
    /// `start < depth`, `src.len() <= depth`, and the caller owns those slots.
    #[inline(always)]
    pub(crate) unsafe fn copy_in_wrapping(&self, start: usize, src: &[T]) {
        let room = self.depth() - start;
        if src.len() <= room {
            // SAFETY: start + src.len() <= depth; owned (caller's contract).
            unsafe { self.copy_in(start, src) };
        } else {
            let (a, b) = src.split_at(room);
            // SAFETY: the first run ends at the ring's end, the second starts at slot 0 and is
            // shorter than depth; all are owned (caller's contract).
            unsafe {
                self.copy_in(start, a);
                self.copy_in(0, b);
            }
        }
    }

    /// Copies the slots from `start` on, wrapping at the ring's end, into `dst`.
    ///
    /// # Safety
    /// `start < depth`, `dst.len() <= depth`, and the caller owns those slots.
    #[inline(always)]
    pub(crate) unsafe fn copy_out_wrapping(&self, start: usize, dst: &mut [T]) {
        let room = self.depth() - start;
        if dst.len() <= room {
            // SAFETY: start + dst.len() <= depth; owned (caller's contract).
            unsafe { self.copy_out(start, dst) };
        } else {
            let (a, b) = dst.split_at_mut(room);
            // SAFETY: as for copy_in_wrapping, in the other direction.
            unsafe {
                self.copy_out(start, a);
                self.copy_out(0, b);
            }
        }
    }
}

/// Copies `n` entries from `src` to `dst` (which do not overlap): entries of up to 16 bytes
/// (descriptors, completions) with [`copy_32_bytes_a_step`], larger ones (LLQ entries of 128 to
/// 256 bytes) with `memcpy`, whose 64-byte moves are the faster for kilobytes (32 LLQ entries in
/// 32-byte steps measured 35% slower at 1500 bytes).
///
/// # Safety
/// `src` is valid for reading and `dst` for writing `n` entries, and they do not overlap.
#[cfg(not(loom))]
#[inline(always)]
unsafe fn copy_slots<T: Pod>(src: *const T, dst: *mut T, n: usize) {
    if size_of::<T>() <= 16 {
        // SAFETY: n entries are n · size_of::<T>() bytes (caller's contract).
        unsafe { copy_32_bytes_a_step(src.cast(), dst.cast(), n * size_of::<T>()) }
    } else {
        // SAFETY: caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) }
    }
}

/// Copies `len` bytes from `src` to `dst` (which do not overlap) 32 bytes a step, two 16-byte
/// loads then two 16-byte stores, as DPDK's `rte_ring` moves its 16-byte elements, and the last
/// `len % 32` bytes after. This is the hot copy of every burst between two cores, into slots the
/// peer's core read last (and out of slots it wrote). In a clone of the ring's two-core bulk-32
/// loop on an Intel host, glibc's `memmove` of a 512-byte burst (64-byte AVX-512 moves after a
/// call) measured 14.3–16.9 cycles per element, this loop 12.8–14.5, the same loop in C (gcc)
/// 13.4–14.6. Written in assembly because the compiler turns a loop of moves back into a
/// `memcpy` call, or unrolls it (14.0–15.0).
///
/// # Safety
/// `src` is valid for reading and `dst` for writing `len` bytes, and the ranges do not overlap.
#[cfg(not(loom))]
#[inline(always)]
unsafe fn copy_32_bytes_a_step(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    let done = {
        let steps = len / 32;
        if steps > 0 {
            // SAFETY: the loop reads [src, src + 32·steps) and writes [dst, dst + 32·steps),
            // inside both ranges (caller's contract); unaligned moves, so any alignment will do.
            // It touches only the named registers and the flags (no stack).
            unsafe {
                core::arch::asm!(
                    "2:",
                    "movdqu {a}, xmmword ptr [{s}]",
                    "movdqu {b}, xmmword ptr [{s} + 16]",
                    "add {s}, 32",
                    "movdqu xmmword ptr [{d}], {a}",
                    "movdqu xmmword ptr [{d} + 16], {b}",
                    "add {d}, 32",
                    "dec {n}",
                    "jnz 2b",
                    s = inout(reg) src => _,
                    d = inout(reg) dst => _,
                    n = inout(reg) steps => _,
                    a = out(xmm_reg) _,
                    b = out(xmm_reg) _,
                    options(nostack),
                );
            }
        }
        steps * 32
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    if done < len {
        // SAFETY: [done, len) of both ranges (caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done) };
    }
}

#[cfg(not(loom))]
mod shm {
    use std::marker::PhantomData;
    use std::ptr::NonNull;
    use std::sync::Arc;

    use super::*;
    use crate::ring::layout::{CONTROL_BYTES, RING_ALIGN, ring_bytes};
    use crate::ring::region::SharedRegion;
    use crate::ring::{RingError, sync::AtomicU32};

    /// A ring's memory inside a shared region.
    pub(crate) struct RingMemory<T> {
        region: Arc<SharedRegion>,
        control: NonNull<RingControl>,
        slots: NonNull<T>,
        depth: usize,
        _entries: PhantomData<T>,
    }

    // SAFETY: the memory is a MAP_SHARED mapping owned through an Arc; the pointers are plain
    // addresses into it, and every access through them is either atomic or covered by the ring
    // protocols (single producer, single consumer, ownership handed over by index or phase bit).
    unsafe impl<T: Send> Send for RingMemory<T> {}

    impl<T> std::fmt::Debug for RingMemory<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RingMemory")
                .field("region", &self.region.path())
                .field("depth", &self.depth)
                .finish()
        }
    }

    /// The control block at `offset`, after checking that it lies inside the region and is
    /// aligned.
    pub(crate) fn control_at(
        region: &SharedRegion,
        offset: usize,
    ) -> Result<NonNull<RingControl>, RingError> {
        if !offset.is_multiple_of(RING_ALIGN) {
            return Err(RingError::Misaligned { offset });
        }
        let end = offset.checked_add(CONTROL_BYTES);
        if end.is_none_or(|end| end > region.len()) {
            return Err(RingError::RegionTooSmall {
                offset,
                needed: CONTROL_BYTES,
                len: region.len(),
            });
        }
        // SAFETY: offset + CONTROL_BYTES <= len, so the result stays inside the mapping.
        let ptr = unsafe { region.as_ptr().add(offset) };
        NonNull::new(ptr.cast()).ok_or(RingError::Misaligned { offset })
    }

    /// [`control_at`] as a reference that lives as long as the region borrow.
    pub(crate) fn control_at_checked(
        region: &SharedRegion,
        offset: usize,
    ) -> Result<&RingControl, RingError> {
        let control = control_at(region, offset)?;
        // SAFETY: in bounds and 128-aligned (checked by control_at) inside a mapping that outlives
        // the borrow of `region`; RingControl is all atomics, valid for any bit pattern.
        Ok(unsafe { control.as_ref() })
    }

    impl<T: Pod> RingMemory<T> {
        /// Checks that a ring of `depth` entries fits at `offset` and returns its memory.
        pub(crate) fn new(
            region: Arc<SharedRegion>,
            offset: usize,
            depth: u32,
        ) -> Result<Self, RingError> {
            let control = control_at(&region, offset)?;
            let needed = ring_bytes(depth, size_of::<T>());
            if offset.checked_add(needed).is_none_or(|end| end > region.len()) {
                return Err(RingError::RegionTooSmall { offset, needed, len: region.len() });
            }
            // SAFETY: the whole ring, slots included, lies inside the mapping (checked above).
            let slots = unsafe { control.cast::<u8>().add(CONTROL_BYTES).cast::<T>() };
            Ok(Self { region, control, slots, depth: depth as usize, _entries: PhantomData })
        }

        #[inline(always)]
        pub(crate) fn depth(&self) -> usize {
            self.depth
        }

        #[inline(always)]
        pub(crate) fn control(&self) -> &RingControl {
            // SAFETY: `control` points at CONTROL_BYTES inside a live mapping (kept alive by
            // `region`), suitably aligned; RingControl is all atomics, valid for any bit pattern,
            // and is only ever accessed through shared references.
            unsafe { self.control.as_ref() }
        }

        #[inline(always)]
        fn slot(&self, idx: usize) -> *mut T {
            debug_assert!(idx < self.depth);
            // SAFETY: idx < depth, and depth slots lie inside the mapping.
            unsafe { self.slots.as_ptr().add(idx) }
        }

        /// Copies `src` into slots `idx..idx + src.len()`.
        ///
        /// # Safety
        /// `idx + src.len() <= depth`, and the caller owns those slots under the ring protocol.
        #[inline(always)]
        pub(crate) unsafe fn copy_in(&self, idx: usize, src: &[T]) {
            debug_assert!(idx + src.len() <= self.depth);
            // SAFETY: the range is inside the slots (caller's contract) and cannot overlap `src`,
            // which is caller memory, not ring memory owned by this side.
            unsafe { copy_slots(src.as_ptr(), self.slot(idx), src.len()) }
        }

        /// Copies slots `idx..idx + dst.len()` out into `dst`. Each slot is read exactly once, so
        /// a peer rewriting it afterwards cannot change what the caller validates.
        ///
        /// # Safety
        /// `idx + dst.len() <= depth`, and the caller owns those slots under the ring protocol.
        #[inline(always)]
        pub(crate) unsafe fn copy_out(&self, idx: usize, dst: &mut [T]) {
            debug_assert!(idx + dst.len() <= self.depth);
            // SAFETY: as for copy_in, in the other direction.
            unsafe { copy_slots(self.slot(idx), dst.as_mut_ptr(), dst.len()) }
        }

        /// The slots `idx..idx + len` as a mutable slice, for writing descriptors in place.
        ///
        /// # Safety
        /// `idx + len <= depth`; the caller owns those slots and keeps the slice no longer than it
        /// owns them.
        #[inline(always)]
        #[allow(clippy::mut_from_ref, reason = "shared-memory slots owned by ring protocol")]
        pub(crate) unsafe fn slots_mut(&self, idx: usize, len: usize) -> &mut [T] {
            debug_assert!(idx + len <= self.depth);
            // SAFETY: in bounds and owned (caller's contract); T is Pod, so every byte pattern the
            // memory holds is a valid T.
            unsafe { std::slice::from_raw_parts_mut(self.slot(idx), len) }
        }

        /// Reads one whole entry.
        ///
        /// # Safety
        /// `idx < depth` and the caller owns the slot.
        #[inline(always)]
        pub(crate) unsafe fn read_one(&self, idx: usize) -> T {
            // SAFETY: in bounds and owned; T is Pod. Slots are aligned for T because the ring
            // starts 128-byte aligned and size_of::<T>() is a multiple of its alignment.
            unsafe { self.slot(idx).read() }
        }

        #[inline(always)]
        fn word(&self, idx: usize, word: usize) -> *mut u32 {
            debug_assert!((word + 1) * 4 <= size_of::<T>());
            // SAFETY: word lies inside the entry (checked by CompletionEntry's const assertion).
            unsafe { self.slot(idx).cast::<u32>().add(word) }
        }

        /// Loads the 32-bit word `word` of entry `idx` with acquire ordering.
        ///
        /// # Safety
        /// `idx < depth`; `word` is inside the entry and 4-byte aligned.
        #[inline(always)]
        pub(crate) unsafe fn load_word_acquire(&self, idx: usize, word: usize) -> u32 {
            // SAFETY: the pointer is in bounds and 4-aligned; every access to a phase word made
            // while the peer may look at it is atomic.
            unsafe { AtomicU32::from_ptr(self.word(idx, word)) }.load(Ordering::Acquire)
        }

        /// Writes `entry` into slot `idx`, all but word `word` first, then `word_value` into word
        /// `word` with release ordering, so that a consumer that sees the word sees the whole
        /// entry.
        ///
        /// # Safety
        /// `idx < depth`, `word` inside the entry, and the caller owns the slot's body.
        #[inline(always)]
        pub(crate) unsafe fn publish_entry(&self, idx: usize, entry: &T, word: usize, value: u32) {
            let src = bytemuck::bytes_of(entry);
            let dst = self.slot(idx).cast::<u8>();
            let split = word * 4;
            // SAFETY: both copies stay inside the entry's bytes on each side and skip the phase
            // word, which only the atomic store below touches while the consumer may poll it.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), dst, split);
                std::ptr::copy_nonoverlapping(
                    src.as_ptr().add(split + 4),
                    dst.add(split + 4),
                    src.len() - split - 4,
                );
            }
            // SAFETY: in bounds and 4-aligned, as for load_word_acquire.
            unsafe { AtomicU32::from_ptr(self.word(idx, word)) }.store(value, Ordering::Release);
        }

        /// Zeroes every slot.
        ///
        /// # Safety
        /// No other party may access the slots meanwhile (the peer is gone or not yet attached).
        pub(crate) unsafe fn zero_slots(&self) {
            // SAFETY: depth slots are in bounds; exclusivity is the caller's contract.
            unsafe { std::ptr::write_bytes(self.slots.as_ptr(), 0, self.depth) }
        }
    }
}

#[cfg(loom)]
mod heap {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    use super::*;
    use crate::ring::sync::{AtomicU32, Ordering};

    struct Slot<T> {
        /// Stands for the entry's phase word: loom cannot make part of a cell atomic.
        phase: AtomicU32,
        body: UnsafeCell<T>,
    }

    struct Backing<T> {
        control: RingControl,
        slots: Box<[Slot<T>]>,
    }

    /// A ring's memory on the heap, visible to the loom model checker.
    pub(crate) struct RingMemory<T> {
        inner: Arc<Backing<T>>,
    }

    impl<T> std::fmt::Debug for RingMemory<T> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RingMemory").field("depth", &self.inner.slots.len()).finish()
        }
    }

    impl<T> Clone for RingMemory<T> {
        fn clone(&self) -> Self {
            Self { inner: self.inner.clone() }
        }
    }

    impl<T: Pod> RingMemory<T> {
        pub(crate) fn new_heap(depth: u32) -> Self {
            let slots = (0..depth)
                .map(|_| Slot { phase: AtomicU32::new(0), body: UnsafeCell::new(T::zeroed()) })
                .collect();
            Self { inner: Arc::new(Backing { control: RingControl::default(), slots }) }
        }

        pub(crate) fn control(&self) -> &RingControl {
            &self.inner.control
        }

        pub(crate) fn depth(&self) -> usize {
            self.inner.slots.len()
        }

        pub(crate) unsafe fn copy_in(&self, idx: usize, src: &[T]) {
            for (i, v) in src.iter().enumerate() {
                // SAFETY: loom checks that no other access to this cell races with the write.
                self.inner.slots[idx + i].body.with_mut(|p| unsafe { p.write(*v) });
            }
        }

        pub(crate) unsafe fn copy_out(&self, idx: usize, dst: &mut [T]) {
            for (i, v) in dst.iter_mut().enumerate() {
                // SAFETY: loom checks that no write to this cell races with the read.
                *v = self.inner.slots[idx + i].body.with(|p| unsafe { p.read() });
            }
        }

        pub(crate) unsafe fn read_one(&self, idx: usize) -> T {
            // SAFETY: loom checks that no write to this cell races with the read.
            self.inner.slots[idx].body.with(|p| unsafe { p.read() })
        }

        pub(crate) unsafe fn load_word_acquire(&self, idx: usize, _word: usize) -> u32 {
            self.inner.slots[idx].phase.load(Ordering::Acquire)
        }

        pub(crate) unsafe fn publish_entry(&self, idx: usize, entry: &T, word: usize, value: u32) {
            let mut body = *entry;
            bytemuck::bytes_of_mut(&mut body)[word * 4..word * 4 + 4]
                .copy_from_slice(&value.to_ne_bytes());
            let slot = &self.inner.slots[idx];
            // SAFETY: loom checks that no other access to this cell races with the write.
            slot.body.with_mut(|p| unsafe { p.write(body) });
            slot.phase.store(value, Ordering::Release);
        }

        pub(crate) unsafe fn zero_slots(&self) {
            for slot in self.inner.slots.iter() {
                // SAFETY: loom checks exclusivity.
                slot.body.with_mut(|p| unsafe { p.write(T::zeroed()) });
                slot.phase.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_stepped_copy_moves_exactly_the_bytes_asked_at_any_alignment() {
        // Lengths around the 32-byte step (none, a part, whole steps and a tail), from and to
        // offsets across a line; the bytes either side of the destination stay as they were.
        let source: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 48, 64, 100, 127, 128, 129] {
            for from in [0, 1, 8, 16, 31] {
                for to in [0, 3, 16, 33] {
                    let mut dst = vec![0xEEu8; 200];
                    // SAFETY: from + len <= 160 < 200 and to + len <= 162 < 200; two vectors.
                    unsafe {
                        copy_32_bytes_a_step(
                            source.as_ptr().add(from),
                            dst.as_mut_ptr().add(to),
                            len,
                        )
                    };
                    assert_eq!(&dst[to..to + len], &source[from..from + len], "{len} {from} {to}");
                    assert!(dst[..to].iter().all(|&b| b == 0xEE), "{len} {from} {to}: before");
                    assert!(dst[to + len..].iter().all(|&b| b == 0xEE), "{len} {from} {to}: after");
                }
            }
        }
    }

    #[test]
    fn slots_of_every_size_copy_whole_entries() {
        // 8-byte (TX completion), 16-byte (descriptors) and 128-byte (LLQ) entries, odd counts.
        fn check<T: Pod + PartialEq + std::fmt::Debug>(make: impl Fn(usize) -> T) {
            for n in [0, 1, 2, 3, 31, 32, 33] {
                let src: Vec<T> = (0..n).map(&make).collect();
                let mut dst: Vec<T> = (0..n + 1).map(|_| T::zeroed()).collect();
                // SAFETY: n entries each side, two vectors.
                unsafe { copy_slots(src.as_ptr(), dst.as_mut_ptr(), n) };
                assert_eq!(&dst[..n], &src[..]);
                assert_eq!(dst[n], T::zeroed(), "one past the end untouched");
            }
        }
        check(|i| i as u64 * 0x0101_0101_0101_0101);
        check(|i| [i as u64, !(i as u64)]);
        check(|i| [i as u8; 128]);
    }
}
