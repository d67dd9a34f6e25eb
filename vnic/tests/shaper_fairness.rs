//! Fairness between the flows of one ENI, on a virtual clock: 1,000 flows of 1500-byte packets,
//! each offered 20 Mbps, share a 10 Gbps ENI. The fair share is 10 Gbps / 1,000 = 10 Mbps, and
//! every flow must get it in every 100 ms window once the queues have filled (the first window),
//! whether the flows send in phase, with random phases, or as Poisson processes; and no packet the
//! shaper queued may leave before the departure time it was given.
//!
//! The simulation is event-driven: the next instant is the earliest of the next arrival and the
//! shaper's next release, so a second of traffic is 1.7 million admissions, not a billion steps.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;

use vnic::shaper::*;

const FLOWS: usize = 1000;
const PACKET: u32 = 1500;
const ENI_BPS: u64 = 10_000_000_000;
const OFFERED_BPS: u64 = 20_000_000;
const WINDOW_NS: u64 = 100_000_000;
const WINDOWS: usize = 8;
/// Each flow's fair share: the ENI's rate over the flows (none is offered less than that).
const FAIR_BPS: f64 = ENI_BPS as f64 / FLOWS as f64;

/// Mean gap between one flow's packets at the offered rate: 1500 B × 8 / 20 Mbps = 600 µs.
const GAP_NS: u64 = PACKET as u64 * 8 * 1_000_000_000 / OFFERED_BPS;

#[derive(Clone, Copy, Debug)]
enum Arrivals {
    /// Every flow sends at the same instants.
    InPhase,
    /// Every flow is periodic, each with its own random phase.
    RandomPhase,
    /// Every flow is a Poisson process.
    Poisson,
}

/// A small deterministic generator (SplitMix64) for phases and exponential gaps.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn exponential_ns(&mut self, mean_ns: u64) -> u64 {
        (-(self.unit().ln()) * mean_ns as f64).round().max(1.0) as u64
    }
}

fn flow_key(flow: usize) -> FlowKey {
    let src: IpAddr = "10.0.0.1".parse().unwrap();
    let dst: IpAddr = "10.0.9.9".parse().unwrap();
    FlowKey::of_packet(Direction::Out, src, dst, PROTO_UDP, 10_000 + flow as u16, 4791)
}

/// What the run saw: bytes that left per flow per window, and every early release.
struct Outcome {
    sent: Vec<[u64; WINDOWS]>,
    early: Vec<(u64, u64)>,
}

/// Runs the flows through a 10 Gbps ENI's shaper for `WINDOWS` windows.
fn run(arrivals: Arrivals, config: ShaperConfig) -> Outcome {
    let mut shaper = Shaper::new(config, DefaultFlowPolicy);
    let mut rng = Rng(0x5EED ^ arrivals as u64);
    let mut next: BinaryHeap<Reverse<(u64, usize)>> = (0..FLOWS)
        .map(|f| {
            let first = match arrivals {
                Arrivals::InPhase => 0,
                Arrivals::RandomPhase => rng.next_u64() % GAP_NS,
                Arrivals::Poisson => rng.exponential_ns(GAP_NS),
            };
            Reverse((first, f))
        })
        .collect();
    let end_ns = WINDOW_NS * WINDOWS as u64;
    let mut out = Outcome { sent: vec![[0; WINDOWS]; FLOWS], early: Vec::new() };
    // handle → (flow, promised departure)
    let mut waiting: HashMap<u64, (usize, u64)> = HashMap::new();
    let mut released = Vec::new();
    let mut handle = 0u64;
    loop {
        let arrival = next.peek().map(|Reverse((t, _))| *t).unwrap_or(u64::MAX);
        let now = arrival.min(shaper.next_release_ns().unwrap_or(u64::MAX));
        if now >= end_ns {
            break;
        }
        let window = (now / WINDOW_NS) as usize;
        released.clear();
        shaper.release(now, &mut released);
        for h in &released {
            let (flow, depart_ns) = waiting.remove(h).expect("a released handle was queued");
            if now < depart_ns {
                out.early.push((now, depart_ns));
            }
            out.sent[flow][window] += u64::from(PACKET);
        }
        while let Some(&Reverse((t, flow))) = next.peek() {
            if t != now {
                break;
            }
            next.pop();
            let packet = Packet { key: flow_key(flow), len: PACKET, dir: Direction::Out, handle };
            match shaper.admit(now, &packet) {
                Verdict::Pass => out.sent[flow][window] += u64::from(PACKET),
                Verdict::Queued { depart_ns } => {
                    waiting.insert(handle, (flow, depart_ns));
                }
                Verdict::Drop(_) => {}
            }
            handle += 1;
            let gap = match arrivals {
                Arrivals::InPhase | Arrivals::RandomPhase => GAP_NS,
                Arrivals::Poisson => rng.exponential_ns(GAP_NS),
            };
            next.push(Reverse((now + gap, flow)));
        }
    }
    out
}

fn ten_gbps_eni() -> ShaperConfig {
    ShaperConfig {
        bw_out: BandwidthAllowance::fixed(ENI_BPS),
        bw_in: BandwidthAllowance::fixed(ENI_BPS),
        ..ShaperConfig::default()
    }
}

fn jain(rates: &[f64]) -> f64 {
    let sum: f64 = rates.iter().sum();
    let squares: f64 = rates.iter().map(|r| r * r).sum();
    sum * sum / (rates.len() as f64 * squares)
}

fn assert_fair(arrivals: Arrivals) {
    let out = run(arrivals, ten_gbps_eni());
    assert!(out.early.is_empty(), "{arrivals:?}: released before departure: {:?}", &out.early[..1]);
    let bps = |bytes: u64| bytes as f64 * 8.0 * 1e9 / WINDOW_NS as f64;
    let mut worst = (1.0f64, 0, 0);
    for (flow, windows) in out.sent.iter().enumerate() {
        for (w, &bytes) in windows.iter().enumerate().skip(1) {
            let ratio = bps(bytes) / FAIR_BPS;
            if (ratio - 1.0).abs() > (worst.0 - 1.0).abs() {
                worst = (ratio, flow, w);
            }
        }
    }
    let (ratio, flow, w) = worst;
    let totals: Vec<f64> = out.sent.iter().map(|w| w[1..].iter().sum::<u64>() as f64).collect();
    let index = jain(&totals);
    println!(
        "{arrivals:?}: worst window {:+.2}% of the fair share (flow {flow}, window {w}); \
         Jain's index {index:.6}",
        (ratio - 1.0) * 100.0
    );
    assert!(
        (ratio - 1.0).abs() <= 0.02,
        "{arrivals:?}: flow {flow} got {:.2} Mbps in window {w}, fair share {:.2} Mbps",
        ratio * FAIR_BPS / 1e6,
        FAIR_BPS / 1e6
    );
    assert!(index >= 0.99, "{arrivals:?}: Jain's index {index:.5}");
    let aggregate =
        totals.iter().sum::<f64>() * 8.0 * 1e9 / (WINDOW_NS * (WINDOWS as u64 - 1)) as f64;
    assert!(
        (aggregate / ENI_BPS as f64 - 1.0).abs() <= 0.01,
        "{arrivals:?}: the ENI carried {:.3} Gbps",
        aggregate / 1e9
    );
}

#[test]
fn in_phase_flows_each_get_their_fair_share_in_every_window() {
    assert_fair(Arrivals::InPhase);
}

#[test]
fn random_phase_flows_each_get_their_fair_share_in_every_window() {
    assert_fair(Arrivals::RandomPhase);
}

#[test]
fn poisson_flows_each_get_their_fair_share_in_every_window() {
    assert_fair(Arrivals::Poisson);
}
