//! Paired ring comparison for noisy machines: `cargo bench --bench ring_paired`.
//!
//! Criterion measures one implementation after another, so on a shared 2-vCPU VM a burst of
//! noise can land on one of them only. This harness interleaves them instead: each round moves
//! [`COUNT`] descriptors through every implementation in a rotating order, and a ratio is the
//! median over rounds of the per-round ratio. It prints the README's Markdown tables: throughput
//! per burst size, and round-trip latency percentiles (hdrhistogram, every round trip recorded).

#[path = "common/ring_peers.rs"]
mod ring_peers;

use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use ring_peers::{Crossbeam, DEPTH, ping_pong, transfer, tx_completion, tx_desc};
use vnic::abi::io::{TxCompletion, TxDesc};
use vnic::ring::{CompletionRing, SubmissionRing};

/// Descriptors per implementation per round.
const COUNT: u64 = 1 << 21;
/// Rounds per burst size.
const ROUNDS: usize = 15;
/// Round trips per implementation per round.
const ROUND_TRIPS: u64 = 50_000;
const BURSTS: [usize; 4] = [1, 8, 32, 128];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ring {
    VnicSubmission,
    VnicCompletion,
    Rtrb,
    ArrayQueue,
}

const RINGS: [Ring; 4] = [Ring::VnicSubmission, Ring::VnicCompletion, Ring::Rtrb, Ring::ArrayQueue];

fn ns_per_descriptor(ring: Ring, burst: usize) -> f64 {
    let elapsed: Duration = match ring {
        Ring::VnicSubmission => {
            let (p, c) = SubmissionRing::<TxDesc>::in_process(DEPTH).expect("ring");
            transfer(p, c, COUNT, burst, tx_desc)
        }
        Ring::VnicCompletion => {
            let (p, c) = CompletionRing::<TxCompletion>::in_process(DEPTH).expect("ring");
            transfer(p, c, COUNT, burst, tx_completion)
        }
        Ring::Rtrb => {
            let (p, c) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
            transfer(p, c, COUNT, burst, tx_desc)
        }
        Ring::ArrayQueue => {
            let q = Arc::new(ArrayQueue::<TxDesc>::new(DEPTH as usize));
            transfer(Crossbeam(q.clone()), Crossbeam(q), COUNT, burst, tx_desc)
        }
    };
    elapsed.as_nanos() as f64 / COUNT as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!("ring_paired: {ROUNDS} interleaved rounds of {COUNT} descriptors, ring depth {DEPTH}");
    println!();
    println!(
        "| burst | vnic submission ring | vnic completion ring | rtrb | crossbeam `ArrayQueue` \
         | vnic / rtrb | vnic / ArrayQueue |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for burst in BURSTS {
        let mut ns: Vec<Vec<f64>> = vec![Vec::new(); RINGS.len()];
        for round in 0..ROUNDS {
            for k in 0..RINGS.len() {
                let i = (k + round) % RINGS.len();
                ns[i].push(ns_per_descriptor(RINGS[i], burst));
            }
        }
        let ratio = |peer: usize| median((0..ROUNDS).map(|r| ns[peer][r] / ns[0][r]).collect());
        let cell = |i: usize| {
            let m = median(ns[i].clone());
            format!("{:.0} M/s ({m:.2} ns)", 1e3 / m)
        };
        println!(
            "| {burst} | {} | {} | {} | {} | {:.2}× | {:.2}× |",
            cell(0),
            cell(1),
            cell(2),
            cell(3),
            ratio(2),
            ratio(3)
        );
    }

    println!();
    println!("Round trip, one descriptor each way, {ROUNDS} × {ROUND_TRIPS} per ring (ns):");
    println!();
    println!("| ring | p50 | p99 | p99.9 | max | mean |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut hist = [new_histogram(), new_histogram()];
    for round in 0..ROUNDS {
        for k in 0..2 {
            let i = (k + round) % 2;
            let h = &mut hist[i];
            let mut record = |ns: u64| h.saturating_record(ns.max(1));
            if i == 0 {
                let (a_tx, a_rx) = SubmissionRing::<TxDesc>::in_process(DEPTH).expect("ring");
                let (b_tx, b_rx) = SubmissionRing::<TxDesc>::in_process(DEPTH).expect("ring");
                ping_pong(a_tx, b_rx, (a_rx, b_tx), ROUND_TRIPS, Some(&mut record));
            } else {
                let (a_tx, a_rx) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
                let (b_tx, b_rx) = rtrb::RingBuffer::<TxDesc>::new(DEPTH as usize);
                ping_pong(a_tx, b_rx, (a_rx, b_tx), ROUND_TRIPS, Some(&mut record));
            }
        }
    }
    for (name, h) in ["vnic submission ring", "rtrb"].iter().zip(&hist) {
        println!(
            "| {name} | {} | {} | {} | {} | {:.0} |",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.mean()
        );
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}
