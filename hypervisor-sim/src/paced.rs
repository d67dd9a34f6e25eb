//! Paced flows on the wall clock: the workload a VM's thread runs in a live `vnic-lab run`.
//!
//! Each VM's thread sends its outgoing flows at their offered rates (frames stamped with the
//! time each was *due*, so a sender held back shows up as latency rather than as a slower
//! clock) and receives its incoming ones, sleeping on its RX interrupt (ENA's moderation, 20 µs)
//! or polling. A flow that falls more than 5 ms behind its schedule (its TX ring full) drops that
//! backlog and counts it as `sender_drops`. A thread with nothing to do sleeps at least 60 µs,
//! so paced flows leave in bursts of what fell due meanwhile. The same flows in virtual time are
//! [`crate::sim::traffic`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::eni::EniId;
use crate::guest::GuestCtx;
use crate::traffic::{FlowFrame, TrafficClock, latency_histogram, read_stamp, source_port};

/// Frames a sender hands its driver per call at most.
const BURST: usize = 32;
/// A flow further behind than this drops its backlog.
const MAX_BACKLOG_NS: u64 = 5_000_000;
/// A VM thread with nothing to do sleeps at least this long (the timer slack of a Linux
/// thread is 50 µs anyway): a paced flow then sends what fell due in one burst.
const MIN_SLEEP_NS: u64 = 60_000;

/// A flow's counters, written by its sender's and receiver's threads.
#[derive(Debug)]
pub struct PacedCounters {
    /// Frames the sender's driver took.
    pub sent_frames: AtomicU64,
    /// Frames the sender dropped (more than 5 ms behind).
    pub sender_drops: AtomicU64,
    /// Frames received.
    pub recv_frames: AtomicU64,
    /// Bytes received.
    pub recv_bytes: AtomicU64,
    /// Sequence gaps seen by the receiver.
    pub gaps: AtomicU64,
    /// Received bytes per sample window.
    pub samples: Vec<AtomicU64>,
}

impl PacedCounters {
    /// Zeroed counters with `windows` sample windows.
    pub fn new(windows: usize) -> Arc<Self> {
        Arc::new(Self {
            sent_frames: AtomicU64::new(0),
            sender_drops: AtomicU64::new(0),
            recv_frames: AtomicU64::new(0),
            recv_bytes: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            samples: (0..windows).map(|_| AtomicU64::new(0)).collect(),
        })
    }
}

/// One flow as its sender drives it.
#[derive(Debug)]
pub struct PacedSend {
    /// The flow's index (its queue is this modulo the NIC's queue count).
    pub index: usize,
    /// The sending ENI.
    pub nic: EniId,
    /// The frame.
    pub frame: FlowFrame,
    /// Time between frames, ns.
    pub interval_ns: u64,
    /// First frame due, ns on the run's clock.
    pub start_ns: u64,
    /// No frame due at or after this.
    pub stop_ns: u64,
    /// Next frame due.
    pub next_due: u64,
    /// Next sequence number.
    pub seq: u64,
    /// The flow's counters.
    pub counters: Arc<PacedCounters>,
}

/// One flow as its receiver sees it.
#[derive(Debug, Clone)]
pub struct PacedRecv {
    /// Its latency histogram's index.
    pub path: usize,
    /// Next sequence number expected.
    pub next_seq: u64,
    /// The flow's counters.
    pub counters: Arc<PacedCounters>,
}

/// Where a VM's thread hands the frames its primary ENI sends and receives, with their time
/// (a pcap file, typically).
pub type CaptureFn = Box<dyn FnMut(u64, &[u8]) + Send>;

/// What every VM's thread of one run shares.
#[derive(Debug, Clone, Copy)]
pub struct PacedPlan {
    /// The run's clock (stamps and schedules).
    pub clock: TrafficClock,
    /// When the thread stops: the end of the traffic plus time for frames in flight, ns.
    pub drain_end_ns: u64,
    /// Width of a throughput sample, ns.
    pub sample_ns: u64,
    /// Sleep on the RX interrupt (else poll).
    pub interrupts: bool,
    /// Latency histograms to keep (one per path).
    pub paths: usize,
}

/// A VM's thread: sends its flows on schedule and receives its flows until `plan.drain_end_ns`
/// (or the VM is asked to stop); returns one-way latency per path.
pub fn run_paced(
    ctx: &mut GuestCtx,
    plan: &PacedPlan,
    mut sends: Vec<PacedSend>,
    mut recvs: BTreeMap<u16, PacedRecv>,
    mut capture: Option<CaptureFn>,
) -> Vec<Histogram<u64>> {
    let PacedPlan { clock, drain_end_ns: drain_end, sample_ns, interrupts, paths } = *plan;
    let mut latency: Vec<Histogram<u64>> = (0..paths).map(|_| latency_histogram()).collect();
    let stop = ctx.stop_flag();
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
                crate::traffic::stamp(buf, f.seq + k as u64, f.next_due + k as u64 * f.interval_ns);
            }
            let Some(nic) = ctx.nics.iter_mut().find(|n| n.eni == f.nic) else { continue };
            let refs: Vec<&[u8]> = batch[..want].iter().map(Vec::as_slice).collect();
            let n = nic.send(f.index, &refs);
            if let Some(c) = capture.as_mut().filter(|_| primary == Some(f.nic)) {
                for frame in &refs[..n] {
                    c(now, frame);
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
                    c(now, frame);
                }
                let Some(port) = source_port(frame) else { return };
                let Some(r) = recvs.get_mut(&port) else { return };
                if let Some((seq, t)) = read_stamp(frame) {
                    if let Some(h) = latency.get_mut(r.path) {
                        let _ = h.record(now.saturating_sub(t).max(1));
                    }
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
    drop(capture);
    latency
}
