//! `run --live`: every VM a thread driving its ENIs on the wall clock, every PF engine and
//! emulated NIC model a thread of its own. This measures this software on this machine.
//!
//! Each VM's thread sends its outgoing flows at their offered rates (frames stamped with the
//! time each was *due*, so a sender held back shows up as latency rather than as a slower
//! clock) and receives its incoming ones, sleeping on its RX interrupt (ENA's moderation, 20 µs)
//! or polling, as its scenario says. A flow that falls more than 5 ms behind its schedule (its
//! TX ring full) drops that backlog and counts it as `sender_drops`. A thread with nothing to do
//! sleeps at least 60 µs, so paced flows leave in bursts of what fell due meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hypervisor_sim::cloud::Cloud;
use hypervisor_sim::eni::EniId;
use hypervisor_sim::guest::GuestCtx;
use hypervisor_sim::traffic::{
    FlowFrame, TrafficClock, latency_histogram, read_stamp, source_port,
};

use super::{
    Capture, DRAIN, FailureReport, FlowMeasure, Launched, Measured, PATHS, Simulation, Wired,
    path_index, progress_bar,
};
use crate::scenario::{self, Placed};

/// Frames a sender hands its driver per call at most.
const BURST: usize = 32;
/// A flow further behind than this drops its backlog.
const MAX_BACKLOG_NS: u64 = 5_000_000;
/// A VM thread with nothing to do sleeps at least this long (the timer slack of a Linux
/// thread is 50 µs anyway): a paced flow then sends what fell due in one burst.
const MIN_SLEEP_NS: u64 = 60_000;

/// A flow's counters, written by its sender's and receiver's threads.
#[derive(Debug)]
struct FlowCounters {
    sent_frames: AtomicU64,
    sender_drops: AtomicU64,
    recv_frames: AtomicU64,
    recv_bytes: AtomicU64,
    gaps: AtomicU64,
    /// Received bytes per sample window.
    samples: Vec<AtomicU64>,
}

impl FlowCounters {
    fn measure(&self) -> FlowMeasure {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FlowMeasure {
            sent_frames: load(&self.sent_frames),
            sender_drops: load(&self.sender_drops),
            recv_frames: load(&self.recv_frames),
            recv_bytes: load(&self.recv_bytes),
            gaps: load(&self.gaps),
            duplicates: 0,
            samples: self.samples.iter().map(load).collect(),
        }
    }
}

/// One flow as its sender drives it.
struct FlowSender {
    index: usize,
    nic: EniId,
    frame: FlowFrame,
    interval_ns: u64,
    start_ns: u64,
    stop_ns: u64,
    next_due: u64,
    seq: u64,
    counters: Arc<FlowCounters>,
}

/// One flow as its receiver sees it.
#[derive(Clone)]
struct FlowReceiver {
    path: usize,
    next_seq: u64,
    counters: Arc<FlowCounters>,
}

/// What a VM's thread hands back.
struct VmResult {
    latency: Vec<Histogram<u64>>,
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
    let mut senders: Vec<Vec<FlowSender>> = (0..vm_count).map(|_| Vec::new()).collect();
    let mut receivers: Vec<BTreeMap<u16, FlowReceiver>> =
        (0..vm_count).map(|_| BTreeMap::new()).collect();
    let mut counters = Vec::new();
    for (i, f) in flows.iter().enumerate() {
        let c = Arc::new(FlowCounters {
            sent_frames: AtomicU64::new(0),
            sender_drops: AtomicU64::new(0),
            recv_frames: AtomicU64::new(0),
            recv_bytes: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            samples: (0..windows).map(|_| AtomicU64::new(0)).collect(),
        });
        senders[f.from].push(FlowSender {
            index: i,
            nic: f.src_eni,
            frame: f.frame.clone(),
            interval_ns: f.interval_ns,
            start_ns: f.start_ns,
            stop_ns: f.stop_ns,
            next_due: f.start_ns,
            seq: 0,
            counters: c.clone(),
        });
        receivers[f.to].insert(
            f.port,
            FlowReceiver { path: path_index(f.path), next_seq: 0, counters: c.clone() },
        );
        counters.push(c);
    }
    let clock = TrafficClock::new();
    let (results_tx, results_rx) = mpsc::channel::<VmResult>();
    let mut started_vms = 0;
    for (i, &vm) in launched.vm_ids.iter().enumerate() {
        let sends = std::mem::take(&mut senders[i]);
        let recvs = std::mem::take(&mut receivers[i]);
        let capture = captures.remove(&i);
        let results = results_tx.clone();
        let interrupts = placed.vms[i].rx_interrupts;
        let ran = cloud.run(vm, move |ctx| {
            vm_workload(
                ctx,
                clock,
                duration_ns,
                sample_ns,
                sends,
                recvs,
                capture,
                interrupts,
                &results,
            )
        });
        if ran.is_ok() {
            started_vms += 1;
        }
    }
    drop(results_tx);
    let failures = supervise(cloud, placed, launched, clock, duration_ns, progress);
    let mut latency: Vec<Histogram<u64>> = PATHS.iter().map(|_| latency_histogram()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = 0;
    while ended < started_vms && Instant::now() < deadline {
        match results_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => {
                for (k, h) in r.latency.iter().enumerate() {
                    let _ = latency[k].add(h);
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
    Measured {
        flows: counters.iter().map(|c| c.measure()).collect(),
        latency,
        rtt: Vec::new(),
        failures,
        breakdown: Vec::new(),
        cpu: Vec::new(),
        hypervisor_cpu: Vec::new(),
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

/// Watches the run, injecting failures when they fall due and showing progress.
fn supervise(
    cloud: &mut Cloud,
    placed: &Placed,
    launched: &Launched,
    clock: TrafficClock,
    duration_ns: u64,
    progress: bool,
) -> Vec<FailureReport> {
    let total = Duration::from_nanos(duration_ns) + DRAIN;
    let bar = progress.then(|| progress_bar(total.as_secs_f64(), "running live"));
    let mut failures: Vec<FailureReport> = Vec::new();
    let mut pending: Vec<&scenario::FailurePlan> = placed.failures.iter().collect();
    pending.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let started = Instant::now();
    while started.elapsed() < total {
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

/// A VM's thread: send its flows on schedule, receive its flows, until the end of the run.
#[allow(clippy::too_many_arguments)]
fn vm_workload(
    ctx: &mut GuestCtx,
    clock: TrafficClock,
    end_ns: u64,
    sample_ns: u64,
    mut sends: Vec<FlowSender>,
    mut recvs: BTreeMap<u16, FlowReceiver>,
    mut capture: Option<Capture>,
    interrupts: bool,
    results: &mpsc::Sender<VmResult>,
) {
    let mut latency: Vec<Histogram<u64>> = PATHS.iter().map(|_| latency_histogram()).collect();
    let stop = ctx.stop_flag();
    let drain_end = end_ns + DRAIN.as_nanos() as u64;
    let mut batch: Vec<Vec<u8>> = vec![Vec::new(); BURST];
    let primary = ctx.nics.first().map(|n| n.eni);
    loop {
        let now = clock.now_ns();
        if now >= drain_end || stop.load(Ordering::Relaxed) {
            break;
        }
        let mut next_wake = drain_end;
        let mut busy = false;
        for f in &mut sends {
            if now < f.start_ns {
                next_wake = next_wake.min(f.start_ns);
                continue;
            }
            if now >= f.stop_ns {
                continue;
            }
            if f.next_due > now {
                next_wake = next_wake.min(f.next_due);
                continue;
            }
            if now - f.next_due > MAX_BACKLOG_NS {
                let behind = (now - f.next_due) / f.interval_ns.max(1);
                f.counters.sender_drops.fetch_add(behind, Ordering::Relaxed);
                f.seq += behind;
                f.next_due += behind * f.interval_ns;
            }
            let want = (((now - f.next_due) / f.interval_ns.max(1)) as usize + 1).min(BURST);
            for (k, buf) in batch.iter_mut().take(want).enumerate() {
                buf.clear();
                buf.extend_from_slice(f.frame.bytes());
                hypervisor_sim::traffic::stamp(
                    buf,
                    f.seq + k as u64,
                    f.next_due + k as u64 * f.interval_ns,
                );
            }
            let Some(nic) = ctx.nics.iter_mut().find(|n| n.eni == f.nic) else { continue };
            let refs: Vec<&[u8]> = batch[..want].iter().map(Vec::as_slice).collect();
            let n = nic.send(f.index, &refs);
            if let Some(c) = capture.as_mut().filter(|_| primary == Some(f.nic)) {
                for frame in &refs[..n] {
                    c.write(now, frame);
                }
            }
            f.seq += n as u64;
            f.next_due += n as u64 * f.interval_ns;
            f.counters.sent_frames.fetch_add(n as u64, Ordering::Relaxed);
            busy |= n < want || f.next_due <= now;
            next_wake = next_wake.min(f.next_due);
        }
        let mut received = 0;
        let window = (now / sample_ns.max(1)) as usize;
        for nic in &mut ctx.nics {
            let is_primary = Some(nic.eni) == primary;
            received += nic.recv(|frame| {
                if let Some(c) = capture.as_mut().filter(|_| is_primary) {
                    c.write(now, frame);
                }
                let Some(port) = source_port(frame) else { return };
                let Some(r) = recvs.get_mut(&port) else { return };
                if let Some((seq, t)) = read_stamp(frame) {
                    let _ = latency[r.path].record(now.saturating_sub(t).max(1));
                    if seq != r.next_seq {
                        r.counters.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                    r.next_seq = seq + 1;
                }
                r.counters.recv_frames.fetch_add(1, Ordering::Relaxed);
                r.counters.recv_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                if let Some(s) = r.counters.samples.get(window) {
                    s.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
            });
        }
        if received > 0 || busy {
            continue;
        }
        let now = clock.now_ns();
        let wait = next_wake.saturating_sub(now).clamp(MIN_SLEEP_NS, 1_000_000);
        if interrupts && let Some(nic) = ctx.nics.first() {
            nic.wait_rx(Duration::from_nanos(wait));
        } else if interrupts {
            std::thread::sleep(Duration::from_nanos(wait));
        } else {
            // Polling: a short nap between polls, so a small machine's other threads run.
            std::thread::sleep(Duration::from_nanos(wait.min(MIN_SLEEP_NS)));
        }
    }
    if let Some(c) = capture {
        c.finish();
    }
    let _ = results.send(VmResult { latency });
}
