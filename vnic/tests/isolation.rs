//! Performance isolation between VFs, counted in engine units (no clock): a descriptor the engine
//! takes costs one unit plus one per `BYTES_PER_UNIT` bytes it copied, all charged to the VF that
//! posted it, and a VF that always has work earns its weight each poll and may overdraw by at
//! most one burst. The known answers follow from that rule: over `P` polls a VF of weight `w`
//! is charged `w × P` less what it has not yet spent (under `w`) plus its overdraft (at most one
//! burst of the costliest descriptor, 32 × (1 + 9216 / 512)); its share of the engine is
//! `w / Σw` over the busy VFs. A VF of 64-byte frames never overdraws (each costs exactly one
//! unit), so it is served exactly `w` descriptors per poll.

use vnic::device::neighbours::{HostileVf, StreamingPair};
use vnic::device::*;
use vnic::shaper::ShaperConfig;

const POLLS: u64 = 2_000;

/// A PF whose polls run one round of turns each: a ring (256 descriptors) holds more than a
/// round's share, so every VF that refills before each poll is saturated.
fn pf(vfs: u16) -> PhysicalFunction {
    let mut pf = PhysicalFunction::new(vfs).unwrap();
    pf.set_num_vfs(vfs).unwrap();
    pf.set_poll_budget(1);
    pf
}

/// Descriptors the engine took from `vf`.
fn charged(pf: &PhysicalFunction, vf: u16) -> u64 {
    pf.vf(vf).unwrap().totals().1.engine_descriptors
}

/// Engine units `vf` was charged.
fn units(pf: &PhysicalFunction, vf: u16) -> u64 {
    pf.vf(vf).unwrap().totals().1.engine_units
}

/// The most one turn may overdraw: a burst of descriptors each copying a whole gather buffer.
const OVERDRAFT: u64 = BURST as u64 * (1 + 9216 / BYTES_PER_UNIT);

/// The neighbours on one PF, kept saturated: before every poll each refills its rings.
#[derive(Default)]
struct Load {
    pairs: Vec<StreamingPair>,
    hostile: Vec<HostileVf>,
}

impl Load {
    fn poll(&mut self, pf: &mut PhysicalFunction, polls: u64) {
        for _ in 0..polls {
            for p in &mut self.pairs {
                p.top_up();
            }
            for h in &mut self.hostile {
                h.top_up();
            }
            pf.poll();
            for p in &mut self.pairs {
                p.drain();
            }
        }
    }
}

#[test]
fn busy_vfs_are_served_their_weights_whatever_they_post_and_however_many_queues() {
    // Weights 8, 16, 32, 64 and the default (64): a streaming pair with four queues at weight
    // 8, hostile VFs at 16 and 32, a streaming pair at 64, one more hostile VF at the default.
    let mut pf = pf(8);
    let mut load = Load::default();
    load.pairs.push(StreamingPair::new(&mut pf, 0, 1, 4, 64).unwrap());
    load.hostile.push(HostileVf::new(&mut pf, 2, 7).unwrap());
    load.hostile.push(HostileVf::new(&mut pf, 3, 11).unwrap());
    load.pairs.push(StreamingPair::new(&mut pf, 4, 5, 1, 1500).unwrap());
    load.hostile.push(HostileVf::new(&mut pf, 6, 13).unwrap());
    let weights = [(0u16, 8u32), (2, 16), (3, 32), (4, 64), (6, DEFAULT_ENGINE_WEIGHT)];
    for &(vf, w) in &weights[..4] {
        pf.set_engine_weight(vf, w).unwrap();
    }
    // The receivers post nothing; they cost nothing.
    load.poll(&mut pf, POLLS);
    let total: u64 = weights.iter().map(|&(vf, _)| units(&pf, vf)).sum();
    let weight_sum: u32 = weights.iter().map(|&(_, w)| w).sum();
    for &(vf, w) in &weights {
        let got = units(&pf, vf);
        let earned = u64::from(w) * POLLS;
        assert!(got + u64::from(w) > earned && got <= earned + OVERDRAFT, "VF {vf}: {got} units");
        let share = got as f64 / total as f64;
        let want = f64::from(w) / f64::from(weight_sum);
        assert!((share / want - 1.0).abs() <= 0.05, "VF {vf}: share {share:.4}, want {want:.4}");
        let exhausted = pf.vf(vf).unwrap().totals().1.engine_share_exhausted;
        assert_eq!(exhausted, POLLS, "VF {vf} had more waiting than its share every poll");
    }
    // 64-byte frames cost one unit each: exactly the weight in descriptors, every poll, across
    // four queues as across one.
    assert_eq!(charged(&pf, 0), 8 * POLLS);
    // 1500-byte frames cost 1 + 1500 / 512 = 3 units.
    assert_eq!(units(&pf, 4), 3 * charged(&pf, 4));
    for &vf in &[1u16, 5] {
        assert_eq!(charged(&pf, vf), 0, "a receiver posts no TX descriptor");
    }
    // The streaming pairs' frames all arrived: garbage beside them cost them nothing but time.
    for p in &mut load.pairs {
        p.drain();
        assert!(p.sent > 0);
    }
    assert_eq!(load.pairs[1].received, charged(&pf, 4), "one frame per descriptor, all delivered");
}

/// A streaming pair's share of the engine's work over `POLLS` polls: solo, or beside a
/// neighbour (hostile, or a greedy benign one) of `neighbour_weight`.
fn streamer_share(neighbour: Option<bool>, streamer_weight: u32, neighbour_weight: u32) -> f64 {
    let mut pf = pf(4);
    let mut load = Load::default();
    load.pairs.push(StreamingPair::new(&mut pf, 0, 1, 1, 64).unwrap());
    pf.set_engine_weight(0, streamer_weight).unwrap();
    match neighbour {
        Some(true) => load.hostile.push(HostileVf::new(&mut pf, 2, 99).unwrap()),
        Some(false) => load.pairs.push(StreamingPair::new(&mut pf, 2, 3, 1, 64).unwrap()),
        None => {}
    }
    if neighbour.is_some() {
        pf.set_engine_weight(2, neighbour_weight).unwrap();
    }
    load.poll(&mut pf, POLLS);
    let total: u64 = (0..4).map(|vf| units(&pf, vf)).sum();
    units(&pf, 0) as f64 / total as f64
}

#[test]
fn a_neighbour_allowed_five_percent_costs_a_streamer_at_most_five_percent() {
    // The allowances: the streamer's ENI a large instance's 14 Mpps, the neighbour's 5% of the
    // engine, 14 Mpps × 5 / 95. Their weights come from those allowances.
    let streamer = engine_weight(&ShaperConfig::default());
    let small = ShaperConfig {
        pps: 14_000_000 * 5 / 95,
        bw_out: vnic::shaper::BandwidthAllowance::fixed(1_000_000_000),
        ..ShaperConfig::default()
    };
    let neighbour = engine_weight(&small);
    assert_eq!(streamer, DEFAULT_ENGINE_WEIGHT, "14 Mpps earns the default weight");
    // 64 × 736,842 / 14,000,000 = 3.37: three descriptors a poll.
    assert_eq!(neighbour, 3);
    let solo = streamer_share(None, streamer, neighbour);
    assert_eq!(solo, 1.0, "alone, the streamer has the engine to itself");
    for hostile in [true, false] {
        let beside = streamer_share(Some(hostile), streamer, neighbour);
        // Per poll the streamer earns 64 and the neighbour 3: 64 / 67 = 0.955, give or take the
        // neighbour's last overdraft.
        let want = 64.0 / 67.0;
        assert!((beside - want).abs() < 0.002, "hostile {hostile}: {beside:.4}, want {want:.4}");
        assert!(beside >= 0.95 * solo, "hostile {hostile}: {beside:.4} of the engine");
    }
    // At equal weights the neighbour takes half, hostile or benign: the weight is what isolates.
    let half = streamer_share(Some(true), 64, 64);
    assert!((half - 0.5).abs() < 0.005, "{half}");
}

#[test]
fn an_idle_neighbours_share_goes_to_the_busy_one() {
    let mut pf = pf(4);
    let mut load = Load::default();
    load.pairs.push(StreamingPair::new(&mut pf, 0, 1, 1, 64).unwrap());
    let mut idle = StreamingPair::new(&mut pf, 2, 3, 1, 64).unwrap();
    pf.set_engine_weight(2, 1024).unwrap();
    load.poll(&mut pf, POLLS);
    // The idle VF posted nothing and was charged nothing; the busy one got its full weight.
    assert_eq!(charged(&pf, 2), 0);
    assert_eq!(charged(&pf, 0), u64::from(DEFAULT_ENGINE_WEIGHT) * POLLS);
    assert_eq!(pf.vf(2).unwrap().totals().1.engine_share_exhausted, 0);
    // A neighbour with less waiting than its share is served all of it and never counted.
    idle.top_up();
    pf.poll();
    idle.drain();
    assert!(idle.sent > 0 && idle.sent <= 1024);
    assert_eq!(charged(&pf, 2), idle.sent, "one descriptor per 64-byte frame, all taken");
    assert_eq!(pf.vf(2).unwrap().totals().1.engine_share_exhausted, 0);
}

#[test]
fn garbage_is_charged_to_the_vf_that_posted_it() {
    let mut pf = pf(4);
    let mut load = Load::default();
    load.pairs.push(StreamingPair::new(&mut pf, 0, 1, 1, 64).unwrap());
    load.hostile.push(HostileVf::new(&mut pf, 2, 5).unwrap());
    load.poll(&mut pf, POLLS);
    // Poll until everything posted has been taken (the hostile VF pays its debts first).
    for _ in 0..POLLS {
        pf.poll();
        load.pairs[0].drain();
    }
    let (q0, v0) = pf.vf(0).unwrap().totals();
    let (q2, v2) = pf.vf(2).unwrap().totals();
    assert_eq!(v2.engine_descriptors, load.hostile[0].posted, "every garbage descriptor");
    assert!(v2.engine_units > v2.engine_descriptors, "and the copies its long ones cost");
    assert_eq!(v0.engine_units, v0.engine_descriptors, "64-byte frames cost one unit each");
    assert!(q2.tx_bad_desc > 0 && v2.engine_share_exhausted > 0, "{q2:?} {v2:?}");
    assert_eq!(v0.engine_descriptors, load.pairs[0].sent, "one descriptor per 64-byte frame");
    assert_eq!((q0.tx_bad_desc, q0.tx_errors), (0, 0), "nothing of the garbage is the streamer's");
    assert_eq!(load.pairs[0].received, load.pairs[0].sent);
}

#[test]
fn weights_out_of_range_are_refused() {
    let mut pf = pf(2);
    assert!(matches!(pf.set_engine_weight(0, 0), Err(DeviceError::EngineWeight(0))));
    assert!(matches!(
        pf.set_engine_weight(0, MAX_ENGINE_WEIGHT + 1),
        Err(DeviceError::EngineWeight(_))
    ));
    assert!(matches!(pf.set_engine_weight(5, 8), Err(DeviceError::NoSuchVf { .. })));
    pf.set_engine_weight(1, MAX_ENGINE_WEIGHT).unwrap();
    assert_eq!(pf.engine_weight(1).unwrap(), MAX_ENGINE_WEIGHT);
}

#[test]
fn a_poll_that_leaves_work_behind_asks_for_the_next_poll_now() {
    // A discrete-event scheduler polls when `next_timer_ns` says: work left behind by a share
    // that ran out must not wait for the next doorbell.
    let mut pf = pf(2);
    let clock = vnic::shaper::VirtualClock::new();
    clock.set(5_000);
    pf.set_clock(vnic::shaper::DeviceClock::Virtual(clock.clone()));
    let mut pair = StreamingPair::new(&mut pf, 0, 1, 1, 64).unwrap();
    pf.set_engine_weight(0, 8).unwrap();
    assert_eq!(pf.next_timer_ns(), None, "nothing posted");
    let posted = pair.top_up() as u64;
    let mut polls = 0;
    while pf.poll() > 0 {
        polls += 1;
        if charged(&pf, 0) < posted {
            assert_eq!(pf.next_timer_ns(), Some(5_000), "after poll {polls}");
        }
    }
    assert_eq!(polls, posted.div_ceil(8));
    assert_eq!(pf.next_timer_ns(), None, "all taken");
    pair.drain();
    assert_eq!(pair.received, posted);
}

#[test]
fn a_poll_runs_rounds_of_turns_until_its_budget() {
    // Alone, a VF is served round after round until its ring is empty: with the default budget
    // one poll takes all it posted (256 frames of 64 B: four rounds of 64 units).
    let mut pf = PhysicalFunction::new(4).unwrap();
    pf.set_num_vfs(4).unwrap();
    let mut a = StreamingPair::new(&mut pf, 0, 1, 1, 64).unwrap();
    let posted = a.top_up() as u64;
    pf.poll();
    assert_eq!(charged(&pf, 0), posted);
    assert_eq!(pf.vf(0).unwrap().totals().1.engine_share_exhausted, 0, "nobody waited");
    a.drain();
    // Two saturated VFs of 64-byte frames (one unit each, no overdraft) at weights 64 and 32,
    // and a budget two rounds fill: 96 units after the first, 192 after the second.
    let mut b = StreamingPair::new(&mut pf, 2, 3, 1, 64).unwrap();
    pf.set_engine_weight(2, 32).unwrap();
    pf.set_poll_budget(2 * (64 + 32) - 1);
    a.top_up();
    b.top_up();
    let (before_a, before_b) = (charged(&pf, 0), charged(&pf, 2));
    pf.poll();
    assert_eq!(charged(&pf, 0) - before_a, 2 * 64, "two rounds of the streamer's weight");
    assert_eq!(charged(&pf, 2) - before_b, 2 * 32, "and of the neighbour's");
    let exhausted = |vf| pf.vf(vf).unwrap().totals().1.engine_share_exhausted;
    assert_eq!((exhausted(0), exhausted(2)), (1, 1), "the budget ran out on both");
    assert_eq!(DEFAULT_POLL_BUDGET, 4096);
}

#[test]
fn an_overdrawn_vf_alone_is_served_again_in_the_same_poll() {
    // A burst of 32 frames of 1500 B costs 96 units against a weight of 64: the VF owes 32 and
    // sits out turns until its balance is positive again. With nobody else waiting those turns
    // are skipped at once, and one poll takes everything it posted.
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let mut pair = StreamingPair::new(&mut pf, 0, 1, 1, 1500).unwrap();
    let posted = pair.top_up() as u64;
    pf.poll();
    assert_eq!(charged(&pf, 0), posted);
    assert_eq!(units(&pf, 0), 3 * posted, "1 + 1500 / 512 = 3 units a frame");
    pair.drain();
    assert_eq!(pair.received, posted);
}
