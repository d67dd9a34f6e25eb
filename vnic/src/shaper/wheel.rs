//! A timing wheel in the style of Carousel (Saeed et al., SIGCOMM 2017): packets that must wait
//! are filed under the tick of their departure time and released when the wheel's cursor passes
//! it, so any number of shaped flows costs O(1) per packet.
//!
//! `slots` ticks of `granularity` each make the horizon (by default 65,536 × 1 µs ≈ 65 ms); a
//! departure beyond it, or a wheel holding its packet limit already, is refused and the caller
//! drops the packet. A packet is filed under the first tick that starts at or after its departure
//! time, so it is never released early and at most one tick late.

/// Packets (any `T` that names one) waiting for their departure tick.
#[derive(Debug)]
pub struct TimingWheel<T> {
    granularity_ps: u64,
    /// Allocated at the first insertion (a wheel that never holds anything costs nothing: an
    /// ENI has three, most of them idle).
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
            slots: Vec::new(),
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

    /// The tick a departure at `depart_ps` is filed under: the first that starts at or after it
    /// (a departure in a tick already released leaves with the next one).
    #[inline(always)]
    fn tick_of(&self, depart_ps: u64) -> u64 {
        depart_ps.div_ceil(self.granularity_ps).max(self.cursor)
    }

    /// Files `item` to depart at `depart_ps`; false if beyond the horizon or full. It is released
    /// by the first [`TimingWheel::release`] at or after `depart_ps`, at most one tick late.
    #[inline]
    pub fn insert(&mut self, depart_ps: u64, item: T) -> bool {
        let tick = self.tick_of(depart_ps);
        if self.len >= self.limit || tick - self.cursor > self.mask {
            return false;
        }
        if self.slots.is_empty() {
            self.slots = (0..=self.mask).map(|_| Vec::new()).collect();
        }
        self.slots[(tick & self.mask) as usize].push(item);
        self.len += 1;
        true
    }

    /// Whether a packet departing at `depart_ps` would be accepted.
    #[inline]
    pub fn has_room_for(&self, depart_ps: u64) -> bool {
        let tick = self.tick_of(depart_ps);
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
        w.release(1_000_000, &mut out);
        assert!(out.is_empty(), "1.2 µs is not due at 1 µs");
        w.release(1_999_999, &mut out);
        assert!(out.is_empty(), "nor anywhere in the tick that holds it");
        w.release(2_000_000, &mut out);
        assert_eq!(out, vec![1], "due at the first tick that starts after its departure");
        w.release(5_999_999, &mut out);
        assert_eq!(out, vec![1], "5.5 µs and 5.9 µs leave at 6 µs");
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
        assert_eq!(w.next_release_ps(), Some(2_000_000), "1.2 µs is filed under tick 2");
        let mut out = Vec::new();
        w.release(w.next_release_ps().unwrap(), &mut out);
        assert_eq!(out, vec![1], "releasing at that time hands the packet out");
        assert_eq!(w.next_release_ps(), Some(6_000_000));
        w.release(6_000_000, &mut out);
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

    proptest::proptest! {
        /// Whatever the departures and however irregular the releases: nothing leaves before its
        /// departure time or more than a tick after the first release that could take it, and
        /// nothing is lost.
        #[test]
        fn never_early_at_most_a_tick_late(
            departures in proptest::collection::vec(0u64..40_000_000, 1..64),
            steps in proptest::collection::vec(1u64..3_000_000, 1..64),
        ) {
            let tick = 1_000_000; // ps
            let mut w = TimingWheel::new(1_000, 64, 1000);
            let mut filed = 0;
            for (i, &d) in departures.iter().enumerate() {
                if w.insert(d, (i, d)) {
                    filed += 1;
                }
            }
            let (mut now, mut out, mut got) = (0u64, Vec::new(), 0);
            for step in steps.iter().cycle().take(200) {
                let before = now;
                now += step;
                w.release(now, &mut out);
                for &(_, d) in &out {
                    proptest::prop_assert!(d <= now, "released at {now} ps, due at {d} ps");
                    // The release before this one did not take it: it was less than a tick
                    // overdue then.
                    proptest::prop_assert!(d + tick > before);
                    got += 1;
                }
                out.clear();
            }
            w.release(u64::MAX / 2, &mut out);
            proptest::prop_assert_eq!(got + out.len(), filed);
        }
    }
}
