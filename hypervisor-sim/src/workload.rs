//! The VM-to-VM workload: one VM sends stamped UDP frames to another for a while, over whatever
//! path their ENIs take, and the receiver measures what arrived.
//!
//! Reported per run: frames offered, sent and received (and lost), Mpps, Gbps of frame bytes,
//! CPU time per received frame — of the two guest threads, and of the whole process (device
//! engines and hypervisor threads included, busy-polling engines counted as the CPU they
//! burn) — and one-way latency percentiles from an HdrHistogram. With an offered rate, frames
//! are stamped with the time they were *due* to leave, so a stalled sender shows up as latency
//! (corrected for coordinated omission) instead of silently sending later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::cloud::{Cloud, CloudError, VmExit};
use crate::eni::VmId;
use crate::guest::GuestCtx;
use crate::traffic::{Endpoint, FlowFrame, TrafficClock, read_stamp};

/// How the sender behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairConfig {
    /// Frame length in bytes (60 to 9015).
    pub frame_len: usize,
    /// Frames per send call.
    pub burst: usize,
    /// How long the sender sends.
    pub duration: Duration,
    /// Frames per second to offer (`None`: as fast as the path takes them).
    pub offered_pps: Option<u64>,
    /// Distinct flows (UDP source ports), spread over the sender's queues.
    pub flows: u16,
    /// Most frames in flight (sent, not yet received): a receive window the receiver opens as
    /// it reads, so a sender faster than its receiver is held back instead of overrunning the
    /// receiver's ring (`None`: open loop, overruns are lost and counted).
    pub window: Option<u64>,
}

impl Default for PairConfig {
    fn default() -> Self {
        Self {
            frame_len: 64,
            burst: 32,
            duration: Duration::from_secs(1),
            offered_pps: None,
            flows: 1,
            window: None,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct PairReport {
    /// Frames the sender's driver took.
    pub sent: u64,
    /// Frames the receiver got.
    pub received: u64,
    /// Frames that arrived out of sequence order within their flow.
    pub reordered: u64,
    /// Frame length.
    pub frame_len: usize,
    /// From the first send to the last receive.
    pub elapsed: Duration,
    /// CPU time of the sender's and receiver's threads.
    pub guest_cpu: Duration,
    /// CPU time of the whole process over the run.
    pub process_cpu: Duration,
    /// One-way latency, ns.
    pub latency_ns: Histogram<u64>,
}

impl PairReport {
    /// Millions of frames received per second.
    pub fn mpps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    /// Gbit/s of frame bytes received.
    pub fn gbps(&self) -> f64 {
        self.received as f64 * self.frame_len as f64 * 8.0
            / self.elapsed.as_secs_f64().max(1e-9)
            / 1e9
    }

    /// Frames lost (sent, never received).
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// Guest CPU per received frame, ns.
    pub fn guest_cpu_ns_per_frame(&self) -> f64 {
        self.guest_cpu.as_nanos() as f64 / self.received.max(1) as f64
    }

    /// Process CPU per received frame, ns.
    pub fn process_cpu_ns_per_frame(&self) -> f64 {
        self.process_cpu.as_nanos() as f64 / self.received.max(1) as f64
    }

    /// A latency percentile, µs.
    pub fn latency_us(&self, percentile: f64) -> f64 {
        self.latency_ns.value_at_percentile(percentile) as f64 / 1e3
    }
}

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The cloud refused.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// A VM has no NIC to use.
    #[error("i-{0} has no network interface")]
    NoNic(u32),
    /// A VM's workload crashed.
    #[error("i-{vm} crashed: {why}")]
    Crashed {
        /// The VM.
        vm: u32,
        /// Its panic message.
        why: String,
    },
    /// The receiver never reported.
    #[error("the receiver did not report within 30 s")]
    Timeout,
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process.
pub fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec the call writes; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct ReceiverResult {
    received: u64,
    reordered: u64,
    last_rx: Instant,
    cpu: Duration,
    latency: Histogram<u64>,
}

/// Runs the workload from `tx` (its first NIC) to `rx` (its first NIC) and waits for it.
pub fn run_pair(
    cloud: &mut Cloud,
    tx: VmId,
    rx: VmId,
    config: PairConfig,
) -> Result<PairReport, WorkloadError> {
    if !(60..=9015).contains(&config.frame_len) {
        return Err(WorkloadError::Config(format!(
            "frame length {} is outside 60..=9015",
            config.frame_len
        )));
    }
    if !(1..=256).contains(&config.burst) || config.flows == 0 {
        return Err(WorkloadError::Config("burst must be 1..=256 and flows at least 1".into()));
    }
    let dst = cloud.enis().enis_of(rx).first().map(|e| (e.mac, e.primary_ip));
    let src = cloud.enis().enis_of(tx).first().map(|e| (e.mac, e.primary_ip));
    let (Some(dst), Some(src)) = (dst, src) else {
        return Err(WorkloadError::NoNic(if dst.is_none() { rx.0 } else { tx.0 }));
    };
    let clock = TrafficClock::new();
    let sent = Arc::new(AtomicU64::new(0));
    let received_so_far = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (report_tx, report_rx) = mpsc::channel::<ReceiverResult>();
    let (cpu_tx, cpu_rx) = mpsc::channel::<(Duration, Instant)>();
    let flows = config.flows;
    let (sent_rx, done_rx, progress) = (sent.clone(), done.clone(), received_so_far.clone());
    let mut latency = crate::traffic::latency_histogram();
    cloud.run(rx, move |ctx: &mut GuestCtx| {
        let cpu0 = thread_cpu();
        let mut next_seq = vec![0u64; usize::from(flows)];
        let (mut received, mut reordered) = (0u64, 0u64);
        let mut last_rx = Instant::now();
        let mut idle = 0u32;
        let stop = ctx.stop_flag();
        let Some(nic) = ctx.nics.first_mut() else { return };
        loop {
            let now = clock.now_ns();
            let n = nic.recv(|frame| {
                if let Some((seq, t)) = read_stamp(frame) {
                    let _ = latency.record(now.saturating_sub(t).max(1));
                    let flow = crate::traffic::source_port(frame)
                        .map_or(0, |p| usize::from(p.wrapping_sub(10_000)) % next_seq.len());
                    if seq < next_seq[flow] {
                        reordered += 1;
                    }
                    next_seq[flow] = seq + 1;
                }
            });
            received += n as u64;
            if n > 0 {
                last_rx = Instant::now();
                idle = 0;
                progress.store(received, Ordering::Release);
            } else {
                let finished = done_rx.load(Ordering::Acquire);
                if finished && received >= sent_rx.load(Ordering::Acquire) {
                    break;
                }
                if finished && last_rx.elapsed() > Duration::from_millis(300) {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                idle += 1;
                if nic.wait_rx(Duration::from_millis(1)) {
                    // Woken by the RX interrupt.
                } else if idle > 64 {
                    // NAPI-style: poll a while, then let the other threads of a small
                    // machine run.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        let cpu = thread_cpu().saturating_sub(cpu0);
        let _ = report_tx.send(ReceiverResult { received, reordered, last_rx, cpu, latency });
    })?;
    let (sent_tx, done_tx, window_progress) = (sent.clone(), done.clone(), received_so_far.clone());
    let process0 = process_cpu();
    let start = Instant::now();
    let run = cloud.run(tx, move |ctx: &mut GuestCtx| {
        let cpu0 = thread_cpu();
        let stop = ctx.stop_flag();
        let Some(nic) = ctx.nics.first_mut() else {
            done_tx.store(true, Ordering::Release);
            return;
        };
        let queues = nic.queue_count().max(1);
        let frames: Vec<FlowFrame> = (0..flows)
            .map(|f| {
                let s = Endpoint { mac: src.0, ip: src.1, port: 10_000 + f };
                let d = Endpoint { mac: dst.0, ip: dst.1, port: 9000 };
                FlowFrame::new(s, d, config.frame_len)
            })
            .collect();
        let mut seqs = vec![0u64; usize::from(flows)];
        // The application's buffers: the driver copies them into its TX buffers.
        let mut batch: Vec<Vec<u8>> = vec![Vec::with_capacity(config.frame_len); config.burst];
        let interval_ns = config.offered_pps.map(|pps| 1_000_000_000 / pps.max(1));
        let mut next_due = clock.now_ns();
        let mut total = 0u64;
        let (mut written_off, mut shut_since) = (0u64, None::<Instant>);
        let mut flow = 0usize;
        let until = Instant::now() + config.duration;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            if let Some(window) = config.window
                && total >= window_progress.load(Ordering::Acquire) + written_off + window
            {
                // The receiver's window is shut: wait for it to read. Shut for 5 ms, the
                // frames in flight are written off as lost (a retransmission timeout would).
                let since = *shut_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(5) {
                    written_off = total - window_progress.load(Ordering::Acquire);
                    shut_since = None;
                }
                std::thread::yield_now();
                continue;
            }
            shut_since = None;
            let now = clock.now_ns();
            let want = match interval_ns {
                Some(_) if now + 100_000 < next_due => {
                    std::thread::sleep(Duration::from_nanos(next_due - now - 80_000));
                    continue;
                }
                Some(_) if now < next_due => {
                    std::thread::yield_now();
                    continue;
                }
                Some(iv) => (((now - next_due) / iv.max(1)) as usize + 1).min(config.burst),
                None => config.burst,
            };
            // One flow per burst, flows taking turns; each flow on its queue.
            let f = flow % frames.len();
            for (k, buf) in batch.iter_mut().take(want).enumerate() {
                let t = match interval_ns {
                    Some(iv) => next_due + k as u64 * iv,
                    None => now,
                };
                buf.clear();
                buf.extend_from_slice(frames[f].bytes());
                crate::traffic::stamp(buf, seqs[f] + k as u64, t);
            }
            let refs: Vec<&[u8]> = batch[..want].iter().map(Vec::as_slice).collect();
            let n = nic.send(f % queues, &refs);
            seqs[f] += n as u64;
            total += n as u64;
            sent_tx.store(total, Ordering::Release);
            if let Some(iv) = interval_ns {
                next_due += n as u64 * iv;
            }
            if n > 0 {
                flow += 1;
            } else {
                // The TX ring is full: let the device catch up.
                std::thread::yield_now();
            }
        }
        done_tx.store(true, Ordering::Release);
        let _ = cpu_tx.send((thread_cpu().saturating_sub(cpu0), Instant::now()));
    });
    if let Err(e) = run {
        let _ = cloud.kill(rx);
        return Err(e.into());
    }
    let result = report_rx.recv_timeout(config.duration + Duration::from_secs(30));
    let process = process_cpu().saturating_sub(process0);
    let sender_cpu = cpu_rx.recv_timeout(Duration::from_secs(5)).map(|c| c.0).unwrap_or_default();
    // Collect both workloads; a crash is reported as such.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = Vec::new();
    while ended.len() < 2 && Instant::now() < deadline {
        ended.extend(cloud.reap().into_iter().filter(|(vm, _)| *vm == tx || *vm == rx));
        if ended.len() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if let Some((vm, VmExit::Crashed(why))) =
        ended.iter().find(|(_, e)| matches!(e, VmExit::Crashed(_)))
    {
        return Err(WorkloadError::Crashed { vm: vm.0, why: why.clone() });
    }
    let r = result.map_err(|_| WorkloadError::Timeout)?;
    Ok(PairReport {
        sent: sent.load(Ordering::Acquire),
        received: r.received,
        reordered: r.reordered,
        frame_len: config.frame_len,
        elapsed: r.last_rx.saturating_duration_since(start).max(Duration::from_micros(1)),
        guest_cpu: r.cpu + sender_cpu,
        process_cpu: process,
        latency_ns: r.latency,
    })
}
