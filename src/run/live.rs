//! `run --live`: every VM a thread driving its ENIs on the wall clock (the paced-flow workload
//! of `hypervisor_sim::paced`), every PF engine and emulated NIC model a thread of its own. This
//! measures this software on this machine.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hypervisor_sim::cloud::Cloud;
use hypervisor_sim::paced::{
    CaptureFn, PacedCounters, PacedPlan, PacedRecv, PacedSend, Pacer, SeqCheck, run_paced,
};
use hypervisor_sim::sim::SplitMix64;
use hypervisor_sim::sim::traffic::{RuleUpdate, flow_connection};
use hypervisor_sim::traffic::{LatencyLog, TrafficClock};

use super::{
    Capture, DRAIN, FailureReport, FlowMeasure, Launched, Measured, PATHS, Simulation, Wired,
    path_index, progress_bar,
};
use crate::scenario::{self, Placed};

fn measure(c: &PacedCounters) -> FlowMeasure {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    FlowMeasure {
        sent_frames: load(&c.sent_frames),
        sender_drops: load(&c.sender_drops),
        recv_frames: load(&c.recv_frames),
        recv_bytes: load(&c.recv_bytes),
        gaps: load(&c.gaps),
        duplicates: 0,
        samples: c.samples.iter().map(load).collect(),
        tcp: c.tcp.lock().ok().and_then(|t| *t),
    }
}

/// Starts every VM's thread, injects failures on the wall clock, and collects what they saw.
pub(super) fn drive(
    wired: &Wired<'_>,
    cloud: &mut Cloud,
    mut captures: BTreeMap<usize, Capture>,
    progress: bool,
) -> Measured {
    let Wired { placed, launched, flows, .. } = *wired;
    let started = Instant::now();
    let sample_ns = placed.run.sample_ms * 1_000_000;
    let duration_ns = (placed.duration_s * 1e9) as u64;
    let windows = (duration_ns / sample_ns + 2) as usize;
    let vm_count = launched.vm_ids.len();
    let mut senders: Vec<Vec<PacedSend>> = (0..vm_count).map(|_| Vec::new()).collect();
    let mut receivers: Vec<BTreeMap<u16, PacedRecv>> =
        (0..vm_count).map(|_| BTreeMap::new()).collect();
    let mut counters = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        let c = PacedCounters::new(windows);
        let (client, server) = match f.tcp {
            Some(spec) => match flow_connection(spec, f.frame.bytes(), placed.seed, i) {
                Some((client, server)) => (Some(client), Some(server)),
                None => (None, None),
            },
            None => (None, None),
        };
        senders[f.from].push(PacedSend {
            index: i,
            nic: f.src_eni,
            frame: f.frame.clone(),
            pacer: Pacer::new(
                f.interval_ns,
                f.start_ns,
                f.stop_ns,
                f.arrivals,
                SplitMix64::new(placed.seed, i as u64),
            ),
            counters: c.clone(),
            tcp: client,
        });
        receivers[f.to].insert(
            f.port,
            PacedRecv {
                path: path_index(f.path),
                seq: SeqCheck::default(),
                counters: c.clone(),
                tcp: server,
            },
        );
        counters.push(c);
    }
    let clock = TrafficClock::new();
    let (results_tx, results_rx) = mpsc::channel::<Vec<LatencyLog>>();
    let mut started_vms = 0;
    let mut writers = Vec::new();
    for (i, &vm) in launched.vm_ids.iter().enumerate() {
        let sends = std::mem::take(&mut senders[i]);
        let recvs = std::mem::take(&mut receivers[i]);
        let capture = captures.remove(&i).map(|c| {
            let (feed, writer) = c.spawn_writer();
            writers.push(writer);
            Box::new(move |t: u64, frame: &[u8]| feed.offer(t, frame)) as CaptureFn
        });
        let results = results_tx.clone();
        let plan = PacedPlan {
            clock,
            drain_end_ns: duration_ns + DRAIN.as_nanos() as u64,
            sample_ns,
            interrupts: placed.vms[i].rx_interrupts,
            paths: PATHS.len(),
        };
        let ran = cloud.run(vm, move |ctx| {
            let _ = results.send(run_paced(ctx, &plan, sends, recvs, capture));
        });
        if ran.is_ok() {
            started_vms += 1;
        }
    }
    drop(results_tx);
    let failures =
        supervise(cloud, placed, launched, wired.rule_changes, clock, duration_ns, progress);
    let mut latency: Vec<LatencyLog> = PATHS
        .iter()
        .map(|_| LatencyLog::new(sample_ns, duration_ns + DRAIN.as_nanos() as u64))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = 0;
    while ended < started_vms && Instant::now() < deadline {
        match results_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => {
                for (mine, theirs) in latency.iter_mut().zip(&r) {
                    mine.merge(theirs);
                }
                ended += 1;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                cloud.reap();
            }
        }
    }
    for &vm in &launched.vm_ids {
        let _ = cloud.stop(vm);
    }
    // The VMs' threads are gone, and their ends of the capture queues with them.
    let captures = writers.into_iter().filter_map(|w| w.join().ok()).collect();
    Measured {
        flows: counters.iter().map(|c| measure(c)).collect(),
        latency,
        rtt: Vec::new(),
        failures,
        breakdown: Vec::new(),
        cpu: Vec::new(),
        hypervisor_cpu: Vec::new(),
        captures,
        simulation: Simulation {
            mode: "live",
            seed: placed.seed,
            events: 0,
            simulated_s: placed.duration_s + DRAIN.as_secs_f64(),
            costs: Vec::new(),
            wall_s: started.elapsed().as_secs_f64(),
        },
    }
}

/// Watches the run, injecting failures and rule changes when they fall due and showing
/// progress.
fn supervise(
    cloud: &mut Cloud,
    placed: &Placed,
    launched: &Launched,
    rule_changes: &[(u64, Vec<RuleUpdate>)],
    clock: TrafficClock,
    duration_ns: u64,
    progress: bool,
) -> Vec<FailureReport> {
    let total = Duration::from_nanos(duration_ns) + DRAIN;
    let bar = progress.then(|| progress_bar(total.as_secs_f64(), "running live"));
    let mut failures: Vec<FailureReport> = Vec::new();
    let mut pending: Vec<&scenario::RackFailure> = placed.failures.iter().collect();
    pending.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut changes = rule_changes.iter().peekable();
    let started = Instant::now();
    while started.elapsed() < total {
        while let Some((_, updates)) = changes.next_if(|(at, _)| *at <= clock.now_ns()) {
            for u in updates {
                let _ = cloud.update_eni_rules(u.eni, u.groups.clone(), u.nacl.clone());
            }
        }
        let now_s = clock.now_ns() as f64 / 1e9;
        while let Some(f) = pending.first().filter(|f| f.at_s <= now_s).copied() {
            pending.remove(0);
            let mut lost = Vec::new();
            for &v in &f.vms {
                if cloud.stop(launched.vm_ids[v]).is_ok() {
                    lost.push(placed.vms[v].name.clone());
                }
            }
            failures.push(FailureReport { at_s: f.at_s, rack: f.rack, vms: lost });
        }
        if let Some(bar) = &bar {
            bar.set_position((started.elapsed().as_secs_f64() * 10.0) as u64);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    failures
}
