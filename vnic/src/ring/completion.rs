//! The completion ring's two endpoints and the phase-bit protocol.

#[cfg(not(loom))]
use std::sync::Arc;

use bytemuck::Pod;

#[cfg(not(loom))]
use super::SharedRegion;
use super::sync::Ordering;
use super::{Attachment, ProducerCursor, RingError};
#[cfg(not(loom))]
use super::{RingKind, Side};

/// An entry of a completion ring: plain old data with a phase bit in one of its 32-bit words.
///
/// ENA's TX completion (8 bytes) keeps its phase in bit 0 of the flags byte, which is bit 24 of
/// word 0; its RX completion (16 bytes) keeps it in bit 24 of the status word, word 0 as well.
pub trait CompletionEntry: Pod {
    /// Index of the native-endian `u32` word that holds the phase bit.
    const PHASE_WORD: usize;
    /// The phase bit within that word.
    const PHASE_MASK: u32;
}

/// Compile-time checks of a [`CompletionEntry`] implementation.
struct EntryShape<T>(std::marker::PhantomData<T>);

impl<T: CompletionEntry> EntryShape<T> {
    const VALID: () = {
        assert!(size_of::<T>().is_multiple_of(4), "completion entries are whole 32-bit words");
        assert!((T::PHASE_WORD + 1) * 4 <= size_of::<T>(), "phase word outside the entry");
        assert!(T::PHASE_MASK.count_ones() == 1, "the phase is a single bit");
        assert!(align_of::<T>() <= 128, "entries must not need more than the ring's alignment");
    };
}

#[inline(always)]
fn phase_of<T: CompletionEntry>(entry: &T) -> u32 {
    let bytes = bytemuck::bytes_of(entry);
    let at = T::PHASE_WORD * 4;
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The producing end of a [`CompletionRing`](super::CompletionRing) (the device reporting
/// finished work).
#[derive(Debug)]
pub struct CompletionProducer<T: CompletionEntry> {
    ring: Attachment<T>,
    /// The tail and the cached consumer head.
    cursor: ProducerCursor,
    /// The phase written into entries of the current lap; flips on wrap.
    phase: bool,
}

/// The consuming end of a [`CompletionRing`](super::CompletionRing) (a driver reaping
/// completions).
#[derive(Debug)]
pub struct CompletionConsumer<T: CompletionEntry> {
    ring: Attachment<T>,
    head: u32,
    /// The phase an entry must carry to be new; flips on wrap.
    phase: bool,
}

/// The phase of lap `index / depth`: 1 on even laps (the zeroed ring reads as phase 0, empty).
#[inline(always)]
fn lap_phase(index: u32, depth: u32) -> bool {
    (index / depth).is_multiple_of(2)
}

impl<T: CompletionEntry> CompletionProducer<T> {
    /// Attaches as the producer of the completion ring at `offset` in `region`.
    #[cfg(not(loom))]
    pub fn attach(region: Arc<SharedRegion>, offset: usize) -> Result<Self, RingError> {
        Attachment::attach(region, offset, RingKind::Completion, Side::Producer)
            .map(Self::from_attachment)
    }

    pub(crate) fn from_attachment(ring: Attachment<T>) -> Self {
        let () = EntryShape::<T>::VALID;
        let cursor = ProducerCursor::load(&ring);
        let phase = lap_phase(cursor.tail, ring.depth);
        Self { ring, cursor, phase }
    }

    /// Number of entries the ring holds.
    pub fn depth(&self) -> u32 {
        self.ring.depth
    }

    /// True once the consumer published an impossible head; the ring then looks full.
    pub fn is_faulted(&self) -> bool {
        self.cursor.is_faulted()
    }

    #[inline(always)]
    fn free(&mut self, want: u32) -> u32 {
        self.cursor.free(&self.ring, want)
    }

    /// Free entries right now (re-reads the consumer's published head).
    pub fn free_slots(&mut self) -> usize {
        self.free(self.ring.depth) as usize
    }

    /// Writes entries with the current phase, as many of `src` as fit, and returns how many.
    #[inline]
    pub fn push_burst(&mut self, src: &[T]) -> usize {
        let want = u32::try_from(src.len()).unwrap_or(u32::MAX);
        let n = self.free(want).min(want) as usize;
        for entry in &src[..n] {
            let idx = (self.cursor.tail & self.ring.mask) as usize;
            let word = phase_of(entry);
            let word = if self.phase { word | T::PHASE_MASK } else { word & !T::PHASE_MASK };
            // SAFETY: idx < depth; the slot is free (counted above), so the producer owns its
            // body, and the phase word is written last, atomically, with release ordering.
            unsafe { self.ring.mem.publish_entry(idx, entry, T::PHASE_WORD, word) };
            self.cursor.tail = self.cursor.tail.wrapping_add(1);
            if self.cursor.tail & self.ring.mask == 0 {
                self.phase = !self.phase;
            }
        }
        if n > 0 {
            // For diagnostics and re-attachment only: the consumer never reads it.
            self.ring.control().producer.index.store(self.cursor.tail, Ordering::Release);
        }
        n
    }

    /// Writes one entry; false if the ring is full.
    #[inline]
    #[must_use = "a full ring drops the completion"]
    pub fn push(&mut self, entry: T) -> bool {
        self.push_burst(std::slice::from_ref(&entry)) == 1
    }

    /// Writes all of `src`, or nothing if they do not all fit.
    #[inline]
    #[must_use = "a full ring writes nothing"]
    pub fn push_bulk(&mut self, src: &[T]) -> bool {
        let Ok(n) = u32::try_from(src.len()) else { return false };
        if self.free(n) < n {
            return false;
        }
        self.push_burst(src);
        true
    }

    /// Returns the ring to empty after the consumer has gone. Refused while it is alive.
    pub fn reset(&mut self) -> Result<(), RingError> {
        self.ring.reset()?;
        self.cursor = ProducerCursor::empty();
        self.phase = true;
        Ok(())
    }

    /// Generation of the ring (bumped by every init and reset).
    pub fn generation(&self) -> u32 {
        self.ring.generation()
    }
}

impl<T: CompletionEntry> CompletionConsumer<T> {
    /// Attaches as the consumer of the completion ring at `offset` in `region`.
    #[cfg(not(loom))]
    pub fn attach(region: Arc<SharedRegion>, offset: usize) -> Result<Self, RingError> {
        Attachment::attach(region, offset, RingKind::Completion, Side::Consumer)
            .map(Self::from_attachment)
    }

    pub(crate) fn from_attachment(ring: Attachment<T>) -> Self {
        let () = EntryShape::<T>::VALID;
        let head = ring.control().consumer.index.load(Ordering::Acquire);
        let phase = lap_phase(head, ring.depth);
        Self { ring, head, phase }
    }

    /// Number of entries the ring holds.
    pub fn depth(&self) -> u32 {
        self.ring.depth
    }

    /// The phase that marks the next entry as new.
    pub fn expected_phase(&self) -> bool {
        self.phase
    }

    /// True if the next entry carries the expected phase (nothing is consumed).
    #[inline]
    pub fn has_ready(&self) -> bool {
        let idx = (self.head & self.ring.mask) as usize;
        // SAFETY: idx < depth; the phase word is only ever read atomically here.
        let word = unsafe { self.ring.mem.load_word_acquire(idx, T::PHASE_WORD) };
        (word & T::PHASE_MASK != 0) == self.phase
    }

    /// Reads new entries into `dst`, as many as are ready, and returns how many. Publishes the
    /// consumer's head once if it took any.
    ///
    /// When the whole burst has landed, one acquire load of the last entry's phase word covers
    /// every entry before it (the producer writes in order, each phase word with release), and the
    /// burst is copied in one or two runs; otherwise entries are taken one by one while their
    /// phase matches.
    #[inline]
    pub fn pop_burst(&mut self, dst: &mut [T]) -> usize {
        let want = dst.len().min(self.ring.depth as usize);
        let n = if want > 1 && self.burst_has_landed(want) {
            self.take_landed(&mut dst[..want]);
            want
        } else {
            self.take_while_ready(dst)
        };
        if n > 0 {
            self.ring.control().consumer.index.store(self.head, Ordering::Release);
        }
        n
    }

    /// True if the `n`-th entry from the head (and therefore every one before it) is new.
    #[inline(always)]
    fn burst_has_landed(&self, n: usize) -> bool {
        let start = (self.head & self.ring.mask) as usize;
        let last = (start + n - 1) & self.ring.mask as usize;
        // The last entry sits in the next lap, with the other phase, if the burst wraps.
        let expected = self.phase ^ (start + n > self.ring.depth as usize);
        // SAFETY: last < depth; phase words are only read atomically while the producer may
        // write them.
        let word = unsafe { self.ring.mem.load_word_acquire(last, T::PHASE_WORD) };
        (word & T::PHASE_MASK != 0) == expected
    }

    /// Copies out `dst.len()` entries known to have landed and advances the head past them.
    #[inline(always)]
    fn take_landed(&mut self, dst: &mut [T]) {
        let start = (self.head & self.ring.mask) as usize;
        // SAFETY: start < depth and dst.len() <= depth; the acquire load in burst_has_landed made
        // every entry up to the last visible, and the producer will not rewrite them until the
        // head published by pop_burst has passed them.
        unsafe { self.ring.mem.copy_out_wrapping(start, dst) };
        if start + dst.len() >= self.ring.depth as usize {
            self.phase = !self.phase;
        }
        self.head = self.head.wrapping_add(dst.len() as u32);
    }

    /// Takes entries one at a time while their phase matches.
    #[inline(always)]
    fn take_while_ready(&mut self, dst: &mut [T]) -> usize {
        let mut n = 0;
        while n < dst.len() {
            let idx = (self.head & self.ring.mask) as usize;
            // SAFETY: idx < depth; the acquire load pairs with the producer's release store of
            // the same word, so the body read below sees everything written before it.
            let word = unsafe { self.ring.mem.load_word_acquire(idx, T::PHASE_WORD) };
            if (word & T::PHASE_MASK != 0) != self.phase {
                break;
            }
            // SAFETY: the phase matched, so the producer has finished this slot and will not
            // touch it again until the head published by pop_burst has passed it.
            dst[n] = unsafe { self.ring.mem.read_one(idx) };
            n += 1;
            self.head = self.head.wrapping_add(1);
            if self.head & self.ring.mask == 0 {
                self.phase = !self.phase;
            }
        }
        n
    }

    /// Reads one new entry.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let mut one = [T::zeroed()];
        (self.pop_burst(&mut one) == 1).then_some(one[0])
    }

    /// Returns the ring to empty after the producer has gone. Refused while it is alive.
    pub fn reset(&mut self) -> Result<(), RingError> {
        self.ring.reset()?;
        self.head = 0;
        self.phase = true;
        Ok(())
    }

    /// Generation of the ring (bumped by every init and reset).
    pub fn generation(&self) -> u32 {
        self.ring.generation()
    }
}
