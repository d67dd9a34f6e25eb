//! A timing wheel in the style of Carousel (Saeed et al., SIGCOMM 2017): packets that must wait
//! are filed under the tick of their departure time and released when the wheel's cursor passes
//! it, so any number of shaped flows costs O(1) per packet.
//!
//! `slots` ticks of `granularity` each make the horizon (by default 65,536 × 1 µs ≈ 65 ms); a
//! departure beyond it, or a wheel holding its packet limit already, is refused and the caller
//! drops the packet.

/// Packets (any `T` that names one) waiting for their departure tick.
#[derive(Debug)]
pub struct TimingWheel<T> {
    granularity_ps: u64,
    slots: Vec<Vec<T>>,
    mask: u64,
    /// The next tick to release.
    cursor: u64,
    len: usize,
    limit: usize,
}

impl<T> TimingWheel<T> {
    /// A wheel of `slots` (rounded up to a power of two) ticks of `granularity_ns`, holding at
    /// most `limit` packets.
    pub fn new(granularity_ns: u64, slots: usize, limit: usize) -> Self {
        let n = slots.max(2).next_power_of_two();
        Self {
            granularity_ps: granularity_ns.max(1) * 1000,
            slots: (0..n).map(|_| Vec::new()).collect(),
            mask: n as u64 - 1,
            cursor: 0,
            len: 0,
            limit,
        }
    }

    /// How far ahead a departure may be, ps.
    pub fn horizon_ps(&self) -> u64 {
        self.granularity_ps * self.mask
    }

    /// Files `item` to depart at `depart_ps`; false if beyond the horizon or full. A departure
    /// in a tick already released leaves with the next one (at most one tick late).
    #[inline]
    pub fn insert(&mut self, depart_ps: u64, item: T) -> bool {
        let tick = (depart_ps / self.granularity_ps).max(self.cursor);
        if self.len >= self.limit || tick - self.cursor > self.mask {
            return false;
        }
        self.slots[(tick & self.mask) as usize].push(item);
        self.len += 1;
        true
    }

    /// Whether a packet departing at `depart_ps` would be accepted.
    #[inline]
    pub fn has_room_for(&self, depart_ps: u64) -> bool {
        let tick = (depart_ps / self.granularity_ps).max(self.cursor);
        self.len < self.limit && tick - self.cursor <= self.mask
    }

    /// Appends to `out` every item due at or before `now_ps`, in departure order.
    pub fn release(&mut self, now_ps: u64, out: &mut Vec<T>) {
        let now_tick = now_ps / self.granularity_ps;
        if self.len == 0 {
            self.cursor = self.cursor.max(now_tick + 1);
            return;
        }
        let last = now_tick.min(self.cursor + self.mask);
        while self.cursor <= last {
            let slot = &mut self.slots[(self.cursor & self.mask) as usize];
            self.len -= slot.len();
            out.append(slot);
            self.cursor += 1;
            if self.len == 0 {
                break;
            }
        }
        // Every tick up to now is drained (a longer gap than a lap visits each slot once).
        self.cursor = self.cursor.max(now_tick + 1);
    }

    /// Brings an idle wheel's cursor up to `now_ps`, so that the horizon counts from now: a
    /// wheel nobody released for a while would otherwise refuse departures that are near.
    #[inline]
    pub fn catch_up(&mut self, now_ps: u64) {
        if self.len == 0 {
            self.cursor = self.cursor.max(now_ps / self.granularity_ps);
        }
    }

    /// The earliest time, ps, at which [`TimingWheel::release`] hands out something (`None`
    /// when empty): the start of the first occupied tick at or after the cursor.
    pub fn next_release_ps(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        (self.cursor..=self.cursor + self.mask)
            .find(|&tick| !self.slots[(tick & self.mask) as usize].is_empty())
            .map(|tick| tick * self.granularity_ps)
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True with nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_leave_in_departure_order_and_never_early() {
        let mut w = TimingWheel::new(1_000, 16, 100); // 1 µs ticks, 16 µs horizon
        assert!(w.insert(5_500_000, 2));
        assert!(w.insert(1_200_000, 1));
        assert!(w.insert(5_900_000, 3));
        assert!(!w.insert(40_000_000, 9), "beyond the horizon");
        let mut out = Vec::new();
        w.release(999_999, &mut out);
        assert!(out.is_empty());
        w.release(1_000_000, &mut out);
        assert_eq!(out, vec![1]);
        w.release(6_000_000, &mut out);
        assert_eq!(out, vec![1, 2, 3]);
        assert!(w.is_empty());
        // A departure at or before a tick already released leaves with the next tick.
        assert!(w.insert(0, 4));
        w.release(6_000_000, &mut out);
        assert_eq!(out.len(), 3);
        w.release(7_000_000, &mut out);
        assert_eq!(out.last(), Some(&4));
    }

    #[test]
    fn the_next_release_is_the_start_of_the_first_occupied_tick() {
        let mut w = TimingWheel::new(1_000, 16, 100); // ticks of 1,000,000 ps
        assert_eq!(w.next_release_ps(), None);
        assert!(w.insert(5_500_000, 2));
        assert!(w.insert(1_200_000, 1));
        assert_eq!(w.next_release_ps(), Some(1_000_000), "tick 1 starts at 1 µs");
        let mut out = Vec::new();
        w.release(w.next_release_ps().unwrap(), &mut out);
        assert_eq!(out, vec![1], "releasing at that time hands the packet out");
        assert_eq!(w.next_release_ps(), Some(5_000_000));
        w.release(5_000_000, &mut out);
        assert_eq!(w.next_release_ps(), None);
    }

    #[test]
    fn an_idle_wheel_catches_up_with_the_clock() {
        let mut w = TimingWheel::new(1_000, 16, 100);
        // Ten seconds without a release: the cursor is far behind.
        assert!(!w.has_room_for(10_000_000_000_000), "stale cursor: beyond the horizon");
        w.catch_up(10_000_000_000_000);
        assert!(w.insert(10_000_005_000_000, 1), "5 µs ahead of now is within 16 µs");
        assert!(!w.insert(10_000_040_000_000, 2), "40 µs ahead is not");
        let mut out = Vec::new();
        w.release(10_000_004_000_000, &mut out);
        assert!(out.is_empty(), "never early");
        w.release(10_000_005_000_000, &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn the_wheel_is_bounded() {
        let mut w = TimingWheel::new(1_000, 1024, 2);
        assert!(w.insert(10_000, 1) && w.insert(10_000, 2));
        assert!(!w.has_room_for(10_000) && !w.insert(10_000, 3));
        let mut out = Vec::new();
        w.release(1_000_000_000, &mut out);
        assert_eq!(out, vec![1, 2]);
        assert!(w.insert(1_000_000_000 + 5_000, 3), "the cursor moved with time");
    }
}
