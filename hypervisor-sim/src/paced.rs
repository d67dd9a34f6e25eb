//! Paced flows on the wall clock: the workload a VM's thread runs in a live `vnic-lab run`.
//!
//! Each VM's thread sends its outgoing flows at their offered rates (frames stamped with the
//! time each was *due*, so a sender held back shows up as latency rather than as a slower
//! clock) and receives its incoming ones, sleeping on its RX interrupt (ENA's moderation, 20 µs)
//! or polling. A flow that falls more than 5 ms behind its schedule (its TX ring full) drops that
//! backlog and counts it as `sender_drops`. A thread with nothing to do sleeps at least 60 µs,
//! so paced flows leave in bursts of what fell due meanwhile. The same flows in virtual time are
//! [`crate::sim::traffic`].
//!
//! A TCP flow ([`crate::sim::traffic::TcpSpec`]) runs the same connection as in virtual time:
//! the client's thread sends its SYN when the flow starts (again after 1 s, 2 s, ... of the wall
//! clock while unanswered), starts its pacer when the SYN-ACK arrives and sends its FIN when the
//! flow stops; the server's thread answers SYNs, acknowledges every second segment and answers
//! the FIN.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::eni::EniId;
use crate::guest::GuestCtx;
use crate::sim::SplitMix64;
use crate::sim::traffic::tcp::{ClientStep, Segment};
use crate::sim::traffic::{TcpClient, TcpOutcome, TcpServer};
use crate::traffic::{FlowFrame, LatencyLog, TrafficClock, dest_port, read_stamp, source_port};

/// Frames a sender hands its driver per burst at most.
pub const BURST: usize = 32;
/// A flow further behind its schedule than this drops its backlog.
pub const MAX_BACKLOG_NS: u64 = 5_000_000;

/// How a flow's frames fall due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Every `interval` exactly.
    Periodic,
    /// Exponential gaps with mean `interval` (a Poisson process), from the flow's own stream.
    Poisson,
}

/// A flow's schedule, in both modes: when each frame falls due, the burst a sender takes at a
/// time (every frame due by then, at most [`BURST`]) and the backlog rule (frames more than
/// [`MAX_BACKLOG_NS`] late are dropped before a burst is taken). Every frame taken, sent or
/// dropped, has the next sequence number.
#[derive(Debug, Clone)]
pub struct Pacer {
    interval_ns: u64,
    arrivals: Arrivals,
    rng: SplitMix64,
    next_due: u64,
    stop_ns: u64,
    seq: u64,
}

/// What [`Pacer::take_due`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The sequence number of the burst's first frame.
    pub first_seq: u64,
    /// Frames dropped first, for being too far behind.
    pub dropped: u64,
}

impl Pacer {
    /// Frames every `interval_ns` (the mean, for Poisson arrivals drawn from `rng`) from
    /// `start_ns`, none due at or after `stop_ns`.
    pub fn new(
        interval_ns: u64,
        start_ns: u64,
        stop_ns: u64,
        arrivals: Arrivals,
        rng: SplitMix64,
    ) -> Self {
        Self { interval_ns: interval_ns.max(1), arrivals, rng, next_due: start_ns, stop_ns, seq: 0 }
    }

    /// Nothing falls due before `t` (a TCP flow's data waits for its handshake): the schedule
    /// starts at `t` if it had not started yet.
    pub fn start_at(&mut self, t: u64) {
        if self.seq == 0 {
            self.next_due = self.next_due.max(t);
        }
    }

    /// Sequence numbers handed out so far (the next frame's).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When the next frame falls due (`None` once the flow has stopped).
    pub fn next_due(&self) -> Option<u64> {
        (self.next_due < self.stop_ns).then_some(self.next_due)
    }

    fn advance(&mut self) {
        self.seq += 1;
        self.next_due += match self.arrivals {
            Arrivals::Periodic => self.interval_ns,
            Arrivals::Poisson => self.rng.exponential_ns(self.interval_ns),
        };
    }

    /// Drops what is too far behind, then puts the due times of the frames due by `now` (at most
    /// [`BURST`]) in `burst`.
    pub fn take_due(&mut self, now: u64, burst: &mut Vec<u64>) -> Taken {
        let mut dropped = 0;
        while self.next_due().is_some_and(|d| now.saturating_sub(d) > MAX_BACKLOG_NS) {
            self.advance();
            dropped += 1;
        }
        burst.clear();
        let first_seq = self.seq;
        while let Some(due) = self.next_due().filter(|&d| d <= now && burst.len() < BURST) {
            burst.push(due);
            self.advance();
        }
        Taken { first_seq, dropped }
    }
}

/// A receiver's view of one flow's sequence numbers: a gap is a frame that is not the one after
/// the last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqCheck {
    next: u64,
}

impl SeqCheck {
    /// Notes `seq`; true if it is not the one expected.
    pub fn gap(&mut self, seq: u64) -> bool {
        let gap = seq != self.next;
        self.next = seq + 1;
        gap
    }
}
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
    /// A TCP flow's connection as its client saw it, when its thread ended.
    pub tcp: Mutex<Option<TcpOutcome>>,
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
            tcp: Mutex::new(None),
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
    /// Its schedule, ns on the run's clock.
    pub pacer: Pacer,
    /// The flow's counters.
    pub counters: Arc<PacedCounters>,
    /// A TCP flow's client end: it connects before its pacer starts, and closes after.
    pub tcp: Option<TcpClient>,
}

/// One flow as its receiver sees it.
#[derive(Debug, Clone)]
pub struct PacedRecv {
    /// Its latency histogram's index.
    pub path: usize,
    /// Its sequence numbers so far.
    pub seq: SeqCheck,
    /// The flow's counters.
    pub counters: Arc<PacedCounters>,
    /// A TCP flow's server end.
    pub tcp: Option<TcpServer>,
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
/// (or the VM is asked to stop); returns one-way latency per path and sample window.
pub fn run_paced(
    ctx: &mut GuestCtx,
    plan: &PacedPlan,
    mut sends: Vec<PacedSend>,
    mut recvs: BTreeMap<u16, PacedRecv>,
    mut capture: Option<CaptureFn>,
) -> Vec<LatencyLog> {
    let PacedPlan { clock, drain_end_ns: drain_end, sample_ns, interrupts, paths } = *plan;
    let mut latency: Vec<LatencyLog> =
        (0..paths).map(|_| LatencyLog::new(sample_ns, drain_end)).collect();
    let stop = ctx.stop_flag();
    let mut batch: Vec<Vec<u8>> = vec![Vec::new(); BURST];
    let mut dues = Vec::with_capacity(BURST);
    let primary = ctx.nics.first().map(|n| n.eni);
    // TCP clients by the (source, destination) ports of what they receive; their SYN timers.
    let clients: BTreeMap<(u16, u16), usize> = sends
        .iter()
        .enumerate()
        .filter_map(|(k, f)| Some((f.tcp.as_ref()?.ports_in(), k)))
        .collect();
    let mut syn_timers: Vec<Option<u64>> = vec![None; sends.len()];
    // Segments the ends answer with, sent after each receive pass: (NIC, queue, frame); their
    // buffers come back to `spare` (no allocation per ACK).
    let mut answers: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    loop {
        let now = clock.now_ns();
        if now >= drain_end || stop.load(Ordering::Relaxed) {
            break;
        }
        let mut next_wake = drain_end;
        let mut busy = false;
        for (k, f) in sends.iter_mut().enumerate() {
            if let Some(client) = f.tcp.as_mut() {
                let nic = ctx.nics.iter().position(|n| n.eni == f.nic);
                let wake = tcp_client_turn(client, &mut f.pacer, &mut syn_timers[k], now);
                if let Some(wake) = wake.next {
                    next_wake = next_wake.min(wake);
                }
                if let (Some(frame), Some(n)) = (wake.send, nic) {
                    let sent = ctx.nics[n].send(f.index, &[&frame]);
                    if let Some(c) = capture.as_mut().filter(|_| primary == Some(f.nic) && sent > 0)
                    {
                        c(now, &frame);
                    }
                }
                if !client.established() {
                    continue;
                }
            }
            match f.pacer.next_due() {
                None => continue,
                Some(due) if due > now => {
                    next_wake = next_wake.min(due);
                    continue;
                }
                Some(_) => {}
            }
            let taken = f.pacer.take_due(now, &mut dues);
            let want = dues.len();
            for (k, buf) in batch.iter_mut().take(want).enumerate() {
                buf.clear();
                buf.extend_from_slice(f.frame.bytes());
                crate::traffic::stamp(buf, taken.first_seq + k as u64, dues[k]);
                if let Some(client) = &f.tcp {
                    client.number(buf, taken.first_seq + k as u64);
                }
            }
            let Some(nic) = ctx.nics.iter_mut().find(|n| n.eni == f.nic) else { continue };
            let refs: Vec<&[u8]> = batch[..want].iter().map(Vec::as_slice).collect();
            let n = nic.send(f.index, &refs);
            if let Some(c) = capture.as_mut().filter(|_| primary == Some(f.nic)) {
                for frame in &refs[..n] {
                    c(now, frame);
                }
            }
            f.counters.sent_frames.fetch_add(n as u64, Ordering::Relaxed);
            // What the driver refused (its ring full) is dropped, as in virtual time.
            let dropped = taken.dropped + (want - n) as u64;
            f.counters.sender_drops.fetch_add(dropped, Ordering::Relaxed);
            if let Some(due) = f.pacer.next_due() {
                busy |= due <= now;
                next_wake = next_wake.min(due);
            }
        }
        let mut received = 0;
        for (nic_index, nic) in ctx.nics.iter_mut().enumerate() {
            let is_primary = Some(nic.eni) == primary;
            received += nic.recv(|frame| {
                // Each frame's own receive time: a clock read before this loop's send phase
                // is older than frames other VMs sent meanwhile (they came out 0 ns late).
                let now = clock.now_ns();
                let window = (now / sample_ns.max(1)) as usize;
                if let Some(c) = capture.as_mut().filter(|_| is_primary) {
                    c(now, frame);
                }
                let Some(port) = source_port(frame) else { return };
                let segment = Segment::of(frame);
                if let Some(seg) = segment
                    && let Some(&k) = dest_port(frame).and_then(|d| clients.get(&(port, d)))
                {
                    let f = &mut sends[k];
                    let Some(client) = f.tcp.as_mut() else { return };
                    let mut answer = spare.pop().unwrap_or_default();
                    match client.rx(now, seg, &mut answer) {
                        ClientStep::Quiet => spare.push(answer),
                        ClientStep::Established => {
                            f.pacer.start_at(now);
                            answers.push((nic_index, f.index, answer));
                        }
                        ClientStep::Send => answers.push((nic_index, f.index, answer)),
                    }
                    return;
                }
                let Some(r) = recvs.get_mut(&port) else { return };
                if let (Some(seg), Some(server)) = (segment, r.tcp.as_mut()) {
                    let mut answer = spare.pop().unwrap_or_default();
                    if server.rx(seg, &mut answer) {
                        answers.push((nic_index, 0, answer));
                    } else {
                        spare.push(answer);
                    }
                    if seg.payload == 0 || !server.listening() {
                        return;
                    }
                }
                if let Some((seq, t)) = read_stamp(frame) {
                    if let Some(log) = latency.get_mut(r.path) {
                        log.record(now, now.saturating_sub(t));
                    }
                    if r.seq.gap(seq) {
                        r.counters.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
                r.counters.recv_frames.fetch_add(1, Ordering::Relaxed);
                r.counters.recv_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                if let Some(s) = r.counters.samples.get(window) {
                    s.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
            });
        }
        for (n, q, frame) in answers.drain(..) {
            if let Some(nic) = ctx.nics.get_mut(n) {
                let sent = nic.send(q, &[&frame]);
                if let Some(c) = capture.as_mut().filter(|_| primary == Some(nic.eni) && sent > 0) {
                    c(clock.now_ns(), &frame);
                }
            }
            spare.push(frame);
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
    for f in &sends {
        if let (Some(client), Ok(mut out)) = (&f.tcp, f.counters.tcp.lock()) {
            *out = Some(client.outcome());
        }
    }
    latency
}

/// What a TCP client's turn asks of its thread: a segment to send, and when to look again.
struct ClientTurn {
    send: Option<Vec<u8>>,
    next: Option<u64>,
}

/// A TCP client's turn at `now`: its first SYN when the flow starts, a retransmission when its
/// timer fires (or giving up), its FIN once the pacer has stopped.
fn tcp_client_turn(
    client: &mut TcpClient,
    pacer: &mut Pacer,
    syn_timer: &mut Option<u64>,
    now: u64,
) -> ClientTurn {
    use crate::sim::traffic::Connect;
    let mut buf = Vec::new();
    let outcome = client.outcome();
    match outcome.connect {
        Connect::NotTried => match pacer.next_due() {
            Some(start) if start <= now => {
                *syn_timer = Some(client.syn(now, &mut buf));
                ClientTurn { send: Some(buf), next: *syn_timer }
            }
            start => ClientTurn { send: None, next: start },
        },
        Connect::Connecting => match *syn_timer {
            Some(at) if at <= now => {
                if client.syn_timer(now, outcome.syns) {
                    *syn_timer = Some(client.syn(now, &mut buf));
                    ClientTurn { send: Some(buf), next: *syn_timer }
                } else {
                    *syn_timer = None;
                    ClientTurn { send: None, next: None }
                }
            }
            at => ClientTurn { send: None, next: at },
        },
        Connect::Connected if client.established() && pacer.next_due().is_none() => {
            let sent = client.fin(&mut buf, pacer.seq());
            ClientTurn { send: sent.then_some(buf), next: None }
        }
        _ => ClientTurn { send: None, next: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pacer_takes_what_fell_due_in_bursts_and_drops_a_stale_backlog() {
        let mut p =
            Pacer::new(1_000, 5_000, 100_000_000, Arrivals::Periodic, SplitMix64::new(1, 0));
        let mut burst = Vec::new();
        assert_eq!(p.take_due(4_999, &mut burst), Taken { first_seq: 0, dropped: 0 });
        assert!(burst.is_empty(), "nothing due yet");
        p.take_due(7_500, &mut burst);
        assert_eq!(burst, [5_000, 6_000, 7_000]);
        assert_eq!(p.next_due(), Some(8_000));
        p.take_due(1_000_000, &mut burst);
        assert_eq!(burst.len(), BURST, "at most a burst");
        assert_eq!(burst[0], 8_000);
        // 10 ms later: everything more than 5 ms behind goes first.
        let t = p.take_due(11_000_000, &mut burst);
        let behind = (11_000_000 - MAX_BACKLOG_NS - 40_000) / 1_000;
        assert_eq!(t.dropped, behind, "{t:?}");
        assert_eq!(t.first_seq, 3 + BURST as u64 + behind);
        assert!(burst[0] >= 11_000_000 - MAX_BACKLOG_NS);
        let mut q = Pacer::new(1_000, 0, 10_000, Arrivals::Periodic, SplitMix64::new(1, 0));
        q.take_due(u64::MAX / 2, &mut burst);
        assert_eq!(q.next_due(), None, "stopped");
    }

    #[test]
    fn poisson_pacing_is_seeded_and_a_seq_check_counts_gaps() {
        let take = |seed| {
            let mut p = Pacer::new(1_000, 0, u64::MAX, Arrivals::Poisson, SplitMix64::new(seed, 3));
            let mut burst = Vec::new();
            p.take_due(20_000, &mut burst);
            burst
        };
        assert_eq!(take(9), take(9));
        assert_ne!(take(9), take(10));
        let mut s = SeqCheck::default();
        assert!(!s.gap(0) && !s.gap(1) && s.gap(3) && !s.gap(4) && s.gap(2));
    }
}
