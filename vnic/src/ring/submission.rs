//! The submission ring's two endpoints.

#[cfg(not(loom))]
use std::sync::Arc;

use bytemuck::Pod;

#[cfg(not(loom))]
use super::SharedRegion;
use super::sync::Ordering;
use super::{Attachment, ProducerCursor, RingError};
#[cfg(not(loom))]
use super::{RingKind, Side};

/// The producing end of a [`SubmissionRing`](super::SubmissionRing) (a driver posting
/// descriptors, or the device posting to a peer).
#[derive(Debug)]
pub struct SubmissionProducer<T: Pod> {
    ring: Attachment<T>,
    /// The tail (equal to the published one outside a reservation) and the cached head.
    cursor: ProducerCursor,
}

/// The consuming end of a [`SubmissionRing`](super::SubmissionRing) (the device engine polling a
/// queue).
#[derive(Debug)]
pub struct SubmissionConsumer<T: Pod> {
    ring: Attachment<T>,
    /// Next index to read; equals the published head.
    head: u32,
    /// Last producer tail seen; refreshed only when the ring looks empty.
    cached_tail: u32,
    faulted: bool,
}

impl<T: Pod> SubmissionProducer<T> {
    /// Attaches as the producer of the submission ring at `offset` in `region`.
    #[cfg(not(loom))]
    pub fn attach(region: Arc<SharedRegion>, offset: usize) -> Result<Self, RingError> {
        Attachment::attach(region, offset, RingKind::Submission, Side::Producer)
            .map(Self::from_attachment)
    }

    pub(crate) fn from_attachment(ring: Attachment<T>) -> Self {
        let cursor = ProducerCursor::load(&ring);
        Self { ring, cursor }
    }

    /// Number of entries the ring holds.
    pub fn depth(&self) -> u32 {
        self.ring.depth
    }

    /// True once the consumer published an impossible head; the ring then looks full.
    pub fn is_faulted(&self) -> bool {
        self.cursor.is_faulted()
    }

    /// The position the next descriptor goes to, counted from the ring's creation (wrapping).
    #[inline(always)]
    pub fn tail(&self) -> u32 {
        self.cursor.tail
    }

    #[inline(always)]
    fn free(&mut self, want: u32) -> u32 {
        self.cursor.free(&self.ring, want)
    }

    /// Free slots right now (re-reads the consumer's head).
    pub fn free_slots(&mut self) -> usize {
        self.free(self.ring.depth) as usize
    }

    /// Writes `src` into the slots from the tail on, wrapping, without publishing.
    #[inline(always)]
    fn write(&mut self, src: &[T]) {
        let start = (self.cursor.tail & self.ring.mask) as usize;
        // SAFETY: start < depth, and the caller checked that src.len() (<= depth) slots are free,
        // so the producer owns them.
        unsafe { self.ring.mem.copy_in_wrapping(start, src) };
        self.cursor.tail = self.cursor.tail.wrapping_add(src.len() as u32);
    }

    /// Publishes the tail: the doorbell. One release store per burst.
    #[inline(always)]
    fn publish(&self) {
        self.ring.control().producer.index.store(self.cursor.tail, Ordering::Release);
    }

    /// Enqueues one descriptor; false if the ring is full.
    #[inline]
    #[must_use = "a full ring drops the descriptor"]
    pub fn push(&mut self, desc: T) -> bool {
        self.push_bulk(std::slice::from_ref(&desc))
    }

    /// Enqueues all of `src` and rings the doorbell once, or nothing if they do not all fit.
    #[inline]
    #[must_use = "a full ring enqueues nothing"]
    pub fn push_bulk(&mut self, src: &[T]) -> bool {
        let Ok(n) = u32::try_from(src.len()) else { return false };
        if n == 0 || self.free(n) < n {
            return n == 0;
        }
        self.write(src);
        self.publish();
        true
    }

    /// Enqueues as many of `src` as fit, rings the doorbell once, and returns how many.
    #[inline]
    pub fn push_burst(&mut self, src: &[T]) -> usize {
        let want = u32::try_from(src.len()).unwrap_or(u32::MAX);
        let n = self.free(want).min(want) as usize;
        if n == 0 {
            return 0;
        }
        self.write(&src[..n]);
        self.publish();
        n
    }

    /// Reserves exactly `n` slots to fill in place, or `None` if fewer are free.
    #[inline]
    pub fn reserve(&mut self, n: usize) -> Option<Reservation<'_, T>> {
        let want = u32::try_from(n).ok()?;
        if self.free(want) < want {
            return None;
        }
        Some(Reservation { len: n, producer: self })
    }

    /// Reserves up to `n` slots (possibly none) to fill in place.
    #[inline]
    pub fn reserve_up_to(&mut self, n: usize) -> Reservation<'_, T> {
        let want = u32::try_from(n).unwrap_or(u32::MAX);
        let len = self.free(want).min(want) as usize;
        Reservation { len, producer: self }
    }

    /// Returns the ring to empty after the consumer has gone (its process exited or its endpoint
    /// was dropped), so that a new consumer can attach. Refused while the consumer is alive.
    pub fn reset(&mut self) -> Result<(), RingError> {
        self.ring.reset()?;
        self.cursor = ProducerCursor::empty();
        Ok(())
    }

    /// Generation of the ring (bumped by every init and reset).
    pub fn generation(&self) -> u32 {
        self.ring.generation()
    }
}

/// Slots reserved in a submission ring, written in place and published with one doorbell.
///
/// Dropping a reservation without [`commit`](Reservation::commit) publishes nothing.
#[derive(Debug)]
pub struct Reservation<'a, T: Pod> {
    producer: &'a mut SubmissionProducer<T>,
    len: usize,
}

impl<T: Pod> Reservation<'_, T> {
    /// Number of reserved slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing was reserved.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`-th reserved slot's position in the ring.
    #[inline(always)]
    fn slot(&self, i: usize) -> usize {
        (self.producer.cursor.tail.wrapping_add(i as u32) & self.producer.ring.mask) as usize
    }

    /// The `i`-th reserved slot's position counted from the ring's creation (wrapping): what
    /// an ENA-style phase bit is computed from.
    #[inline(always)]
    pub fn position(&self, i: usize) -> u32 {
        self.producer.cursor.tail.wrapping_add(i as u32)
    }

    /// Writes `desc` into the `i`-th reserved slot. Panics if `i >= len()`, a caller bug.
    #[inline(always)]
    pub fn set(&mut self, i: usize, desc: T) {
        assert!(i < self.len, "reservation index {i} out of {}", self.len);
        let slot = self.slot(i);
        // SAFETY: the slot is one of the reserved, free ones, which the producer owns.
        unsafe { self.producer.ring.mem.copy_in(slot, std::slice::from_ref(&desc)) };
    }

    /// The reserved slots as (up to) two slices: the run up to the ring's end, and the wrapped
    /// rest.
    #[cfg(not(loom))]
    #[inline]
    pub fn as_mut_slices(&mut self) -> (&mut [T], &mut [T]) {
        let start = self.slot(0);
        let first = self.len.min(self.producer.ring.depth as usize - start);
        let mem = &self.producer.ring.mem;
        // SAFETY: the two ranges are disjoint, in bounds, reserved (owned by the producer), and
        // borrowed no longer than `self`, which holds the producer mutably.
        unsafe { (mem.slots_mut(start, first), mem.slots_mut(0, self.len - first)) }
    }

    /// Publishes all reserved slots (one doorbell).
    #[inline]
    pub fn commit(self) {
        let n = self.len;
        self.commit_first(n);
    }

    /// Publishes the first `n` reserved slots (clamped to `len()`); the rest stay unpublished.
    #[inline]
    pub fn commit_first(self, n: usize) {
        let n = n.min(self.len);
        if n > 0 {
            self.producer.cursor.tail = self.producer.cursor.tail.wrapping_add(n as u32);
            self.producer.publish();
        }
    }
}

impl<T: Pod> SubmissionConsumer<T> {
    /// Attaches as the consumer of the submission ring at `offset` in `region`.
    #[cfg(not(loom))]
    pub fn attach(region: Arc<SharedRegion>, offset: usize) -> Result<Self, RingError> {
        Attachment::attach(region, offset, RingKind::Submission, Side::Consumer)
            .map(Self::from_attachment)
    }

    pub(crate) fn from_attachment(ring: Attachment<T>) -> Self {
        let ctl = ring.control();
        let head = ctl.consumer.index.load(Ordering::Acquire);
        let cached_tail = ctl.producer.index.load(Ordering::Acquire);
        let faulted = cached_tail.wrapping_sub(head) > ring.depth;
        let cached_tail = if faulted { head } else { cached_tail };
        Self { ring, head, cached_tail, faulted }
    }

    /// Number of entries the ring holds.
    pub fn depth(&self) -> u32 {
        self.ring.depth
    }

    /// True once the producer published an impossible tail; the ring then looks empty.
    pub fn is_faulted(&self) -> bool {
        self.faulted
    }

    /// Entries ready, re-reading the producer's tail only if fewer than `want` are known.
    #[inline(always)]
    fn ready(&mut self, want: u32) -> u32 {
        let ready = self.cached_tail.wrapping_sub(self.head);
        if ready >= want || self.faulted {
            return ready;
        }
        let tail = self.ring.control().producer.index.load(Ordering::Acquire);
        let ready = tail.wrapping_sub(self.head);
        if ready > self.ring.depth {
            self.faulted = true;
            return 0;
        }
        self.cached_tail = tail;
        ready
    }

    /// The position of the next entry to read, counted from the ring's creation (wrapping).
    #[inline(always)]
    pub fn head(&self) -> u32 {
        self.head
    }

    /// Entries ready right now (re-reads the producer's tail).
    pub fn len(&mut self) -> usize {
        self.ready(self.ring.depth) as usize
    }

    /// True if no entry is ready.
    pub fn is_empty(&mut self) -> bool {
        self.ready(1) == 0
    }

    /// Copies `dst.len()` entries out and releases their slots.
    #[inline(always)]
    fn read(&mut self, dst: &mut [T]) {
        let start = (self.head & self.ring.mask) as usize;
        // SAFETY: start < depth, and the producer published these entries (the caller checked
        // that dst.len() are ready), so the consumer owns them until it publishes its head below.
        unsafe { self.ring.mem.copy_out_wrapping(start, dst) };
        self.head = self.head.wrapping_add(dst.len() as u32);
        self.ring.control().consumer.index.store(self.head, Ordering::Release);
    }

    /// Dequeues one descriptor.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let mut one = [T::zeroed()];
        self.pop_bulk(&mut one).then_some(one[0])
    }

    /// Fills all of `dst`, or takes nothing if fewer entries are ready.
    #[inline]
    #[must_use = "false means nothing was dequeued"]
    pub fn pop_bulk(&mut self, dst: &mut [T]) -> bool {
        let Ok(n) = u32::try_from(dst.len()) else { return false };
        if n == 0 || self.ready(n) < n {
            return n == 0;
        }
        self.read(dst);
        true
    }

    /// Dequeues as many as are ready, up to `dst.len()`, and returns how many.
    #[inline]
    pub fn pop_burst(&mut self, dst: &mut [T]) -> usize {
        let want = u32::try_from(dst.len()).unwrap_or(u32::MAX);
        let n = self.ready(want).min(want) as usize;
        if n > 0 {
            self.read(&mut dst[..n]);
        }
        n
    }

    /// Returns the ring to empty after the producer has gone, so that a new producer can attach.
    /// Refused while the producer is alive.
    pub fn reset(&mut self) -> Result<(), RingError> {
        self.ring.reset()?;
        self.head = 0;
        self.cached_tail = 0;
        self.faulted = false;
        Ok(())
    }

    /// Generation of the ring (bumped by every init and reset).
    pub fn generation(&self) -> u32 {
        self.ring.generation()
    }
}
