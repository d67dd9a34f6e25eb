//! Performance isolation on the wall clock: a streaming pair's frame rate solo, beside a hostile
//! VF (garbage descriptors) and beside a greedy benign VF (valid 64-byte frames to a VF of its
//! own), at 64 B and 1500 B, with the neighbour at the streamer's weight and at 5% of the engine
//! (weight 3 against 64: what `engine_weight` gives an ENI allowed 14 Mpps × 5 / 95).
//!
//! The rate is frames per second of *engine* time (the time spent in `PhysicalFunction::poll`):
//! every VF keeps its rings full before each poll, so the engine is the bottleneck and what a
//! neighbour costs the streamer is the engine time its descriptors take. The guests' own work
//! (filling rings, receiving) runs between polls on the same thread and is not counted: on
//! hardware it would be other cores. Cases are interleaved round by round so that a change in
//! the machine's speed affects them alike; the table is the median of the rounds and its ratio to
//! the solo median of the same frame size.
//!
//! `cargo bench --bench isolation` (`ISOLATION_ROUNDS`, default 7; `ISOLATION_MS` per case and
//! round, default 200).

use std::time::{Duration, Instant};

use vnic::device::PhysicalFunction;
use vnic::device::neighbours::{HostileVf, NeighbourError, StreamingPair};

#[derive(Clone, Copy, PartialEq)]
enum Neighbour {
    None,
    Hostile,
    Greedy,
}

impl Neighbour {
    fn name(self) -> &'static str {
        match self {
            Neighbour::None => "solo",
            Neighbour::Hostile => "hostile",
            Neighbour::Greedy => "greedy",
        }
    }
}

/// One case: the streamer's frames per engine-second over `window`.
fn measure(
    frame: usize,
    neighbour: Neighbour,
    weight: u32,
    window: Duration,
) -> Result<f64, NeighbourError> {
    let mut pf = PhysicalFunction::new(4)?;
    pf.set_num_vfs(4)?;
    // One round of turns per poll: the rings (refilled between polls) then always hold more
    // than a round's share, which is what a saturated engine sees.
    pf.set_poll_budget(1);
    let mut streamer = StreamingPair::new(&mut pf, 0, 1, 1, frame)?;
    let mut hostile = None;
    let mut greedy = None;
    match neighbour {
        Neighbour::None => {}
        Neighbour::Hostile => hostile = Some(HostileVf::new(&mut pf, 2, 0x5EED)?),
        Neighbour::Greedy => greedy = Some(StreamingPair::new(&mut pf, 2, 3, 1, 64)?),
    }
    if neighbour != Neighbour::None {
        pf.set_engine_weight(2, weight)?;
    }
    let mut engine = Duration::ZERO;
    let wall = Instant::now();
    let mut polls = 0u64;
    let received_before = streamer.received;
    while wall.elapsed() < window {
        streamer.top_up();
        if let Some(h) = hostile.as_mut() {
            h.top_up();
        }
        if let Some(g) = greedy.as_mut() {
            g.top_up();
        }
        let t = Instant::now();
        pf.poll();
        engine += t.elapsed();
        polls += 1;
        streamer.drain();
        if let Some(g) = greedy.as_mut() {
            g.drain();
        }
    }
    let frames = streamer.received - received_before;
    if polls == 0 || engine.is_zero() {
        return Ok(0.0);
    }
    Ok(frames as f64 / engine.as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), NeighbourError> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let env = |name: &str, default: u64| {
        std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let rounds = env("ISOLATION_ROUNDS", 7).max(1) as usize;
    let window = Duration::from_millis(env("ISOLATION_MS", 200).max(10));
    let cases: Vec<(usize, Neighbour, u32)> = [64usize, 1500]
        .into_iter()
        .flat_map(|frame| {
            [
                (frame, Neighbour::None, 64),
                (frame, Neighbour::Hostile, 64),
                (frame, Neighbour::Hostile, 3),
                (frame, Neighbour::Greedy, 64),
                (frame, Neighbour::Greedy, 3),
            ]
        })
        .collect();
    let mut rates = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for (i, &(frame, neighbour, weight)) in cases.iter().enumerate() {
            rates[i].push(measure(frame, neighbour, weight, window)?);
        }
    }
    println!(
        "isolation: {rounds} interleaved rounds of {} ms per case; streamer weight 64",
        window.as_millis()
    );
    println!(
        "{:>6}  {:<8} {:>16} {:>10} {:>8}",
        "frame", "beside", "neighbour weight", "Mfps", "ratio"
    );
    let mut solo = 0.0;
    for (i, &(frame, neighbour, weight)) in cases.iter().enumerate() {
        let m = median(&mut rates[i]);
        if neighbour == Neighbour::None {
            solo = m;
        }
        let w = if neighbour == Neighbour::None { "-".to_string() } else { weight.to_string() };
        println!(
            "{frame:>6}  {:<8} {w:>16} {:>10.3} {:>8.3}",
            neighbour.name(),
            m / 1e6,
            if solo > 0.0 { m / solo } else { 0.0 }
        );
    }
    Ok(())
}
