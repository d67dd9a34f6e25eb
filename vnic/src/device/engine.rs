//! The device engine's hot loop, top to bottom: poll a TX queue, validate, gather, switch,
//! deliver, complete.
//!
//! One engine owns a whole PF (every VF's queues), so delivering into another VF's RX ring needs
//! no lock. Work per TX queue visit is one burst of at most [`BURST`] descriptors: one acquire
//! load of the tail, one release store of the head, one completion publication.
//!
//! **Arbitration between VFs** is deficit round robin in engine work: each round a VF earns its
//! weight ([`DEFAULT_ENGINE_WEIGHT`], 64, unless set from its ENI's allowances by
//! [`engine_weight`]) and the engine takes TX descriptors from its queues, in turn from where it
//! left off, while its balance is positive. Every descriptor taken is charged to the VF that
//! posted it, whether it makes a frame, is a bad descriptor, or is a frame the spoof check drops:
//! one unit, plus one per [`BYTES_PER_UNIT`] bytes the engine copied for it (the cost model's
//! 50 ns per packet against 80 ps per byte: a 64-byte frame costs 1, a 1500-byte one 3, a
//! 9000-byte one 18). A burst may overdraw the balance; the debt is paid from the next rounds
//! (skipped in one step when nobody else is served meanwhile) and survives the VF going idle,
//! while unused credit does not. So while several VFs have work the
//! engine's time splits in proportion to their weights, an idle VF's share goes to the busy ones
//! (polls get shorter), and how many queues a VF has does not change its share. A poll runs
//! rounds of turns until no VF has work or it has spent its budget ([`DEFAULT_POLL_BUDGET`],
//! 4096 units), so an engine with little contention does not poll once per weight. Counters:
//! `engine_descriptors`, `engine_units` (what it was charged) and `engine_share_exhausted`
//! (polls whose budget ran out with its descriptors still waiting).
//!
//! **Copy once.** A frame of at least [`COPY_ONCE_MIN`] (256) bytes in one TX buffer of a
//! host-memory ring is not gathered whole: the engine checks that the whole buffer lies in the
//! sender's window, copies its first [`HEADER_BYTES`] (128, past the deepest byte the parser
//! reads: 92) into its own buffer and decides on those (parse, MTU, source/destination check,
//! switch, security groups). When the frame goes to one port and no shaper may hold it, the
//! rest is moved straight from the TX buffer into the receiver's posted RX buffers, or into the
//! burst handed to the uplink: a 1500-byte frame costs 1,628 bytes of copying instead of 3,000.
//! A flood and a shaped VF get the tail copied into the engine's buffer first, as shorter
//! frames, chains and LLQ entries always are. A guest that rewrites its tail meanwhile changes only bytes nobody reads: the
//! decision was made on a copy it cannot touch. A frame of at most [`HEADER_BYTES`] in one
//! buffer is read into the engine's buffer as 128 fixed bytes, inline moves rather than a
//! `memmove` call, when that much of the window follows it (the bytes past the frame are
//! ignored).
//!
//! On the receive
//! side, RX descriptors are taken from the ring a burst at a time into a per-queue cache (as a
//! NIC's descriptor cache does), and RX completions are published once per poll, so a frame costs
//! no shared-index traffic of its own.

use super::llq::TxRing;
use super::stats::add;
use super::{
    DeviceQueue, DmaWindow, FRAME_OVERHEAD, PartialFrame, PhysicalFunction, VirtualFunction,
};
use crate::abi::io::{RxCompletion, RxDesc, TxCompletion, TxDesc, rx_cq_field, sq_phase};
use crate::abi::llq::{DESCS_BEFORE_HEADER, Entry128, Entry192, Entry256, LlqEntry};
use crate::frame::FrameInfo;
use crate::policy::Direction;
use crate::shaper::Clock;
use crate::switch::{Forward, FrameBatch, Port, SwitchDrop};

/// Descriptors taken from a TX queue per visit.
pub const BURST: usize = 32;

/// Engine units a VF earns per poll unless its weight is set: 64 small frames (two bursts), or
/// 21 of 1500 bytes.
pub const DEFAULT_ENGINE_WEIGHT: u32 = 64;
/// The largest weight a VF may have.
pub const MAX_ENGINE_WEIGHT: u32 = 4096;
/// Engine units a poll may spend in rounds of turns before it ends (unless set with
/// [`PhysicalFunction::set_poll_budget`]): 64 default weights, 227 jumbo frames.
pub const DEFAULT_POLL_BUDGET: u64 = 4096;
/// Bytes copied that cost as much engine time as one descriptor.
pub const BYTES_PER_UNIT: u64 = 512;
/// The packet rate that earns [`DEFAULT_ENGINE_WEIGHT`]: a large instance's 14 Mpps.
const DEFAULT_WEIGHT_PPS: u64 = 14_000_000;

/// A VF's engine weight from its ENI's allowances: in proportion to the packet rate it may
/// reach, the larger of its PPS allowance and its peak outbound bandwidth in standard frames
/// (1518 B), with 14 Mpps worth [`DEFAULT_ENGINE_WEIGHT`]; at least 1, at most
/// [`MAX_ENGINE_WEIGHT`].
pub fn engine_weight(config: &crate::shaper::ShaperConfig) -> u32 {
    let peak_bps = config.bw_out.burst_bps.max(config.bw_out.baseline_bps);
    let pps = config.pps.max(peak_bps / (8 * 1518));
    let weight =
        u128::from(pps) * u128::from(DEFAULT_ENGINE_WEIGHT) / u128::from(DEFAULT_WEIGHT_PPS);
    weight.clamp(1, u128::from(MAX_ENGINE_WEIGHT)) as u32
}

/// TX completion status: the frame was sent.
pub const TX_STATUS_OK: u8 = 0;
/// TX completion status: the frame's descriptors were invalid; its buffers are returned.
pub const TX_STATUS_BAD_DESC: u8 = 1;
/// TX completion status: the queue was reset before the frame was sent; its buffer is returned.
pub const TX_STATUS_RESET: u8 = 2;
/// RX completion status: the frame was dropped part-way; the buffer is returned empty.
pub const RX_STATUS_DROPPED: u32 = 1 << 30;

/// Bytes at the start of a frame the engine copies into its own buffer to decide on: the
/// longest headers it reads, 18 (Ethernet with a VLAN tag) + 60 (IPv4 with options) + 14 (TCP
/// up to its flags), rounded up to two cache lines. What follows is only ever moved, never read.
pub const HEADER_BYTES: usize = 128;
/// The shortest frame whose tail is copied once, from the sender's TX buffer straight into the
/// receiver's RX buffer (or the uplink's burst), rather than through the engine's buffer: a tail at least as long as the
/// header, so that the extra copy call pays for itself (a 1500-byte frame moves 1,628 bytes
/// instead of 3,000).
pub const COPY_ONCE_MIN: usize = 2 * HEADER_BYTES;

/// What became of one gathered frame.
enum Gathered {
    /// A whole, valid frame: all of it in the scratch buffer, or its first [`HEADER_BYTES`]
    /// there and the rest still in its one TX buffer, at `tail` (checked to lie inside the
    /// sender's window).
    Frame { req_id: u16, len: usize, tail: Option<u64> },
    /// A chain that had a bad descriptor; complete it with an error.
    Bad { req_id: u16 },
    /// Nothing to complete yet (middle of a chain), or a descriptor with no usable request id.
    Nothing,
}

impl PhysicalFunction {
    /// Polls every queue of every VF once and raises the interrupts that are due; returns the
    /// descriptors processed.
    pub fn poll(&mut self) -> usize {
        let mut work = 0;
        self.moderation_pending = false;
        // One clock reading for the whole poll: a frame that falls due is released before any
        // later frame of its flow can pass, so shaping never reorders a flow.
        self.poll_now = None;
        if !self.shaped.is_empty() {
            let now_ns = self.now_this_poll();
            self.release_shaped(now_ns);
        }
        work += self.serve_rounds();
        let armed = self
            .vfs
            .iter()
            .flat_map(|v| v.queues.iter())
            .any(|queue| queue.tx_irq.armed() || queue.rx_irq.armed());
        if armed {
            // Only moderated queues with completions waiting cost a clock read.
            let now = self.clock.now_ns();
            for queue in self.vfs.iter_mut().flat_map(|v| v.queues.iter_mut()) {
                queue.tx_irq.tick(now);
                queue.rx_irq.tick(now);
            }
        }
        // Queues still waiting, or armed by a completion published during this poll.
        self.moderation_pending |= armed;
        work
    }

    /// Busy-polls until `stop` is set, posting a keep-alive event (with drop counters) to every
    /// VF with an async event queue once a second, as ENA does.
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) {
        let mut last_keep_alive = std::time::Instant::now();
        let mut polls = 0u32;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if self.poll() == 0 {
                std::hint::spin_loop();
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(4096) && last_keep_alive.elapsed().as_secs() >= 1 {
                last_keep_alive = std::time::Instant::now();
                for vf in 0..self.num_vfs() {
                    let _ = self.send_keep_alive(vf);
                }
            }
        }
    }

    /// Rounds of turns: in each, every VF that still has TX descriptors waiting earns its weight
    /// and is served, until none has any left or the poll has done its budget of units (the
    /// first round always runs). VFs still waiting when the budget ran out count
    /// `engine_share_exhausted`. Returns the descriptors taken.
    fn serve_rounds(&mut self) -> usize {
        let (mut taken, mut units) = (0usize, 0u64);
        let mut first = true;
        loop {
            let (mut waiting, mut round_units) = (false, 0);
            for vf in 0..self.vfs.len() {
                let v = &self.vfs[vf];
                if v.queues.is_empty() || (!first && !v.engine.waiting) {
                    continue;
                }
                let (n, cost) = self.serve_vf(vf);
                taken += n;
                round_units += cost;
                waiting |= self.vfs[vf].engine.waiting;
            }
            first = false;
            units += round_units;
            if !waiting || units >= self.poll_budget {
                self.tx_backlog = waiting;
                break;
            }
            if round_units == 0 {
                self.skip_rounds_of_debt();
            }
        }
        if self.tx_backlog {
            for v in self.vfs.iter().filter(|v| v.engine.waiting) {
                add(&v.stats.engine_share_exhausted, 1);
            }
        }
        taken
    }

    /// A round served nothing: every VF still waiting is paying off an overdraft. Credits them
    /// the rounds until the first of them can be served again, at once rather than by turns
    /// that take nothing (a burst of jumbo frames overdraws a default weight for eight rounds).
    fn skip_rounds_of_debt(&mut self) {
        let waiting = || self.vfs.iter().filter(|v| v.engine.waiting).map(|v| v.engine);
        // A VF with balance b ≤ 0 and weight w is served in its k-th turn from now, the first
        // with b + k·w > 0: k = ⌊−b / w⌋ + 1. The rounds before the soonest one are skipped.
        let Some(k) = waiting().map(|e| (-e.balance).max(0) / i64::from(e.weight) + 1).min() else {
            return;
        };
        for v in self.vfs.iter_mut().filter(|v| v.engine.waiting) {
            v.engine.balance += (k - 1) * i64::from(v.engine.weight);
        }
    }

    /// VF `vf`'s turn: it earns its weight, and the engine takes its TX descriptors a burst at a
    /// time from each of its queues in turn, starting where its last turn stopped, while its
    /// balance is positive; returns the descriptors taken, all of them charged to it, and their
    /// units.
    fn serve_vf(&mut self, vf: usize) -> (usize, u64) {
        let queues = self.vfs[vf].queues.len();
        let share = self.vfs[vf].engine;
        let mut balance = share.balance + i64::from(share.weight);
        let mut q = share.next_queue % queues;
        let (mut taken, mut charged) = (0usize, 0u64);
        // Queues found empty in a row: a whole round of them means the VF has nothing left.
        let mut empty = 0;
        while balance > 0 && empty < queues {
            let want = (balance as usize).min(BURST);
            let (n, cost) = self.poll_tx(vf, q, want);
            balance -= cost as i64;
            taken += n;
            charged += cost;
            empty = if n == 0 { empty + 1 } else { 0 };
            if balance > 0 || n == BURST {
                q = (q + 1) % queues;
            }
        }
        let v = &mut self.vfs[vf];
        // Idle with credit left: the credit is not kept. Debt is.
        let idle = empty == queues;
        v.engine.balance = if idle { balance.min(0) } else { balance };
        v.engine.next_queue = q;
        add(&v.stats.engine_descriptors, taken as u64);
        add(&v.stats.engine_units, charged);
        v.engine.waiting =
            !idle && v.queues.iter_mut().any(|queue| !queue.stopped && !queue.tx.is_empty());
        (taken, charged)
    }

    /// One burst of at most `max` descriptors (or LLQ entries) from TX queue `q` of VF `vf`;
    /// returns the descriptors taken and the engine units they cost.
    fn poll_tx(&mut self, vf: usize, q: usize, max: usize) -> (usize, u64) {
        // The burst lands in scratch kept in the PF: nothing to zero on a poll that finds nothing.
        let queue = &mut self.vfs[vf].queues[q];
        if queue.stopped {
            return (0, 0);
        }
        let depth = queue.depth;
        let llq = &mut self.llq_burst;
        let (start, n) = match &mut queue.tx {
            TxRing::Host(ring) => (ring.head(), ring.pop_burst(&mut self.tx_descs[..max])),
            TxRing::Llq128 { ring, .. } => {
                (ring.head(), ring.pop_burst(bytemuck::cast_slice_mut(&mut llq[..max * 128])))
            }
            TxRing::Llq192 { ring, .. } => {
                (ring.head(), ring.pop_burst(bytemuck::cast_slice_mut(&mut llq[..max * 192])))
            }
            TxRing::Llq256 { ring, .. } => {
                (ring.head(), ring.pop_burst(bytemuck::cast_slice_mut(&mut llq[..max * 256])))
            }
        };
        if n == 0 {
            return (0, 0);
        }
        let may_split = matches!(queue.tx, TxRing::Host(_));
        let entry_bytes = match queue.tx {
            TxRing::Host(_) => 0,
            TxRing::Llq128 { .. } => Entry128::BYTES,
            TxRing::Llq192 { .. } => Entry192::BYTES,
            TxRing::Llq256 { .. } => Entry256::BYTES,
        };
        if let Some(window) = self.vfs[vf].window.as_ref().filter(|_| entry_bytes == 0) {
            for d in &self.tx_descs[..n] {
                window.prefetch(d.addr(), u64::from(d.len()));
            }
        }
        // A chain the last burst cut in two resumes with its bytes back in the gather buffer (a
        // copy, charged like any other).
        let mut cost = n as u64;
        let queue = &self.vfs[vf].queues[q];
        if let Some(p) = queue.partial.filter(|p| p.len > 0 && !p.bad) {
            self.scratch[..p.len].copy_from_slice(&queue.partial_bytes[..p.len]);
            cost += p.len as u64 / BYTES_PER_UNIT;
        }
        self.hold_window(vf);
        let mut k = 0;
        let (mut packets, mut bytes) = (0u64, 0u64);
        for i in 0..n {
            let phase = sq_phase(start.wrapping_add(i as u32), depth);
            let (v, scratch) = (&mut self.vfs[vf], &mut self.scratch);
            let entry = &self.llq_burst[i * entry_bytes..(i + 1) * entry_bytes];
            let gathered = match entry_bytes {
                0 => {
                    let d = self.tx_descs[i];
                    gather(v, q, &d, d.phase() == phase, may_split, scratch, &mut cost)
                }
                // In place: entries have byte alignment.
                Entry128::BYTES => {
                    let e: &Entry128 = bytemuck::from_bytes(entry);
                    gather_llq(v, q, e, phase, scratch, &mut cost)
                }
                Entry192::BYTES => {
                    let e: &Entry192 = bytemuck::from_bytes(entry);
                    gather_llq(v, q, e, phase, scratch, &mut cost)
                }
                _ => {
                    let e: &Entry256 = bytemuck::from_bytes(entry);
                    gather_llq(v, q, e, phase, scratch, &mut cost)
                }
            };
            let queue = &mut self.vfs[vf].queues[q];
            queue.tx_head = queue.tx_head.wrapping_add(1);
            if let Some(req_id) = queue.abandoned.take() {
                // Its buffers go back to the driver with an error status.
                queue.tx_in_flight[usize::from(req_id)] = false;
                self.tx_done[k] = TxCompletion {
                    req_id,
                    status: TX_STATUS_BAD_DESC,
                    sub_qid: q as u16,
                    sq_head_idx: queue.tx_head,
                    ..Default::default()
                };
                k += 1;
            }
            let (req_id, status) = match gathered {
                Gathered::Nothing => continue,
                Gathered::Bad { req_id } => (req_id, TX_STATUS_BAD_DESC),
                Gathered::Frame { req_id, len, tail } => {
                    self.switch_frame(vf, len, tail);
                    packets += 1;
                    bytes += len as u64;
                    (req_id, TX_STATUS_OK)
                }
            };
            let queue = &mut self.vfs[vf].queues[q];
            queue.tx_in_flight[usize::from(req_id)] = false;
            self.tx_done[k] = TxCompletion {
                req_id,
                status,
                sub_qid: q as u16,
                sq_head_idx: queue.tx_head,
                ..Default::default()
            };
            k += 1;
        }
        self.flush_deliveries();
        let queue = &mut self.vfs[vf].queues[q];
        if let Some(p) = queue.partial.filter(|p| p.len > 0 && !p.bad) {
            // Other queues will use the gather buffer before this chain resumes.
            queue.partial_bytes.clear();
            queue.partial_bytes.extend_from_slice(&self.scratch[..p.len]);
            cost += p.len as u64 / BYTES_PER_UNIT;
        }
        // The TX completion ring is as deep as the TX ring and completions never outnumber
        // frames in flight, so there is room unless the driver stopped reaping; then the
        // completions are lost to it and counted.
        let pushed = queue.tx_cq.push_burst(&self.tx_done[..k]);
        let clock = &self.clock;
        queue.tx_irq.completed(pushed, || clock.now_ns());
        self.moderation_pending |= queue.tx_irq.armed();
        add(&queue.stats.tx_errors, (k - pushed) as u64);
        add(&queue.stats.tx_packets, packets);
        add(&queue.stats.tx_bytes, bytes);
        (n, cost)
    }

    /// Forwards the frame of `len` bytes in the scratch buffer (its headers only, if its `tail`
    /// is still in the TX buffer), sent by `vf`: parse, MTU, source/destination check, the
    /// switch's decision (spoof check), then the VF's shaper, then delivery. A tail is copied
    /// straight into the receiver's RX buffer (or the uplink's burst) when the frame goes to one
    /// port unshaped, and into the scratch buffer first otherwise (a flood, or a shaper that may
    /// hold it).
    fn switch_frame(&mut self, vf: usize, len: usize, tail: Option<u64>) {
        let now_ns = self.now_this_poll();
        let head = if tail.is_some() { HEADER_BYTES } else { len };
        let stats = &self.vfs[vf].stats;
        let Ok(info) = FrameInfo::parse(&self.scratch[..head]) else {
            add(&stats.tx_malformed, 1);
            return;
        };
        if len > usize::from(self.vfs[vf].mtu()) + FRAME_OVERHEAD {
            add(&stats.tx_oversize, 1);
            return;
        }
        if let (Some(addresses), Some(ip)) = (&self.vfs[vf].addresses, &info.ipv4)
            && !addresses.contains(&ip.src)
        {
            add(&stats.tx_src_dst_check, 1);
            return;
        }
        let from = Port::Vf(vf as u16);
        let decision = self.switch.forward_memo(&mut self.forward_memo, from, &info);
        match decision {
            Forward::Drop(SwitchDrop::Spoofed) => return add(&stats.tx_spoofed, 1),
            Forward::Drop(_) => return add(&stats.tx_switch_drops, 1),
            _ => {}
        }
        let v = &mut self.vfs[vf];
        if let (Some(policy), Some(ip)) = (v.policy.as_deref_mut(), &info.ipv4)
            && let Err(refused) = policy.egress(now_ns, ip, len)
        {
            return count_refusal(&v.stats, refused, Direction::Outbound);
        }
        let one_port = matches!(decision, Forward::One(_));
        let held = self.held_windows.get(vf).and_then(Option::as_ref);
        let tail = match (tail, held) {
            (None, _) => None,
            (Some(at), Some(window)) if one_port && v.shaper.is_none() => Some((window, at)),
            // Checked when gathered; the window does not change during a burst.
            (Some(at), Some(window))
                if window.read(at, &mut self.scratch[HEADER_BYTES..len]).is_ok() =>
            {
                None
            }
            // Never left with only the header in hand: that would send stale bytes after it.
            (Some(_), _) => return add(&v.stats.tx_malformed, 1),
        };
        let frame = FrameBytes {
            head: &self.scratch[..if tail.is_some() { HEADER_BYTES } else { len }],
            tail,
            len,
        };
        if let (Some(shaper), Some(ip), Some(whole)) =
            (v.shaper.as_deref_mut(), &info.ipv4, frame.whole())
            && !shape(shaper, now_ns, whole, ip, &v.stats)
        {
            return;
        }
        // Field by field rather than `self.targets`: `frame` borrows the scratch buffer.
        let to = Targets {
            now_ns,
            switch: &self.switch,
            vfs: &mut self.vfs,
            dirty: &mut self.rx_dirty,
            uplink: self.uplink.is_some().then_some(&mut self.uplink_out),
        };
        to.dispatch(from, decision, frame, &info);
    }

    /// Makes `held_windows[vf]` VF `vf`'s window (or none), cloning it only if it is not the one
    /// held already.
    fn hold_window(&mut self, vf: usize) {
        if self.held_windows.len() <= vf {
            self.held_windows.resize(vf + 1, None);
        }
        let current = self.vfs[vf].window.as_ref();
        let held = &mut self.held_windows[vf];
        let same = match (current, held.as_ref()) {
            (Some(a), Some(b)) => a.same(b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            *held = current.cloned();
        }
    }

    /// Where this PF's switched frames go.
    fn targets(&mut self, now_ns: u64) -> Targets<'_> {
        Targets {
            now_ns,
            switch: &self.switch,
            vfs: &mut self.vfs,
            dirty: &mut self.rx_dirty,
            uplink: self.uplink.is_some().then_some(&mut self.uplink_out),
        }
    }

    /// The device's time for this poll: read once, when something first needs it.
    fn now_this_poll(&mut self) -> u64 {
        *self.poll_now.get_or_insert_with(|| self.clock.now_ns())
    }

    /// Sends a frame the shaper held, now that it is due.
    pub(crate) fn forward_released(&mut self, vf: usize, frame: &[u8]) {
        let Ok(info) = FrameInfo::parse(frame) else { return };
        let from = Port::Vf(vf as u16);
        let decision = self.switch.forward(from, &info);
        let now_ns = self.clock.now_ns();
        self.targets(now_ns).dispatch(from, decision, FrameBytes::whole_frame(frame), &info);
    }

    /// Sends every held frame that is due.
    fn release_shaped(&mut self, now: u64) {
        for k in 0..self.shaped.len() {
            let vf = usize::from(self.shaped[k]);
            let Some(shaper) = self.vfs[vf].shaper.as_deref_mut() else { continue };
            if shaper.shaper.queued() == 0 {
                continue;
            }
            let mut due = std::mem::take(&mut self.due);
            shaper.shaper.release(now, &mut due);
            for &handle in &due {
                let slot = handle as usize;
                let held = self.vfs[vf]
                    .shaper
                    .as_deref_mut()
                    .and_then(|s| s.held.get_mut(slot).and_then(Option::take));
                let Some(frame) = held else { continue };
                self.forward_released(vf, &frame);
                if let Some(s) = self.vfs[vf].shaper.as_deref_mut() {
                    s.free_slots.push(slot);
                    s.pool.push(frame);
                }
            }
            due.clear();
            self.due = due;
        }
        self.flush_deliveries();
    }

    /// A frame arriving from the uplink (the fabric).
    pub fn receive_from_uplink(&mut self, frame: &[u8]) {
        let Ok(info) = FrameInfo::parse(frame) else { return };
        let decision = self.switch.forward(Port::Uplink, &info);
        let now_ns = self.clock.now_ns();
        self.targets(now_ns).dispatch(
            Port::Uplink,
            decision,
            FrameBytes::whole_frame(frame),
            &info,
        );
        self.flush_deliveries();
    }

    /// Publishes the RX completions written since the last flush, one doorbell per queue, and
    /// hands the frames switched to the uplink over in one batch.
    pub(crate) fn flush_deliveries(&mut self) {
        if !self.uplink_out.is_empty() {
            if let Some(uplink) = &self.uplink {
                uplink.transmit_batch(&self.uplink_out);
            }
            self.uplink_out.clear();
        }
        for (vf, q) in self.rx_dirty.drain(..) {
            let Some(queue) =
                self.vfs.get_mut(usize::from(vf)).and_then(|v| v.queues.get_mut(usize::from(q)))
            else {
                continue;
            };
            // Room was reserved when the RX descriptors were taken, so this takes them all
            // unless the guest rewrote its ring's indices; what does not fit is counted.
            let pushed = queue.rx_cq.push_burst(&queue.rx_done);
            let clock = &self.clock;
            queue.rx_irq.completed(pushed, || clock.now_ns());
            self.moderation_pending |= queue.rx_irq.armed();
            add(&queue.stats.rx_drops, (queue.rx_done.len() - pushed) as u64);
            queue.rx_done.clear();
        }
    }
}

/// A frame on its way: all of it in `head`, or its first [`HEADER_BYTES`] there and the rest
/// at an address in the sender's window (checked), to be copied once into an RX buffer or the
/// uplink's burst.
#[derive(Clone, Copy)]
struct FrameBytes<'a> {
    head: &'a [u8],
    tail: Option<(&'a DmaWindow, u64)>,
    len: usize,
}

impl<'a> FrameBytes<'a> {
    fn whole_frame(frame: &'a [u8]) -> Self {
        Self { head: frame, tail: None, len: frame.len() }
    }

    /// All the frame's bytes, if they are in one place.
    fn whole(&self) -> Option<&'a [u8]> {
        self.tail.is_none().then_some(self.head)
    }

    /// Appends the whole frame to `out` (its tail read from the sender's window).
    fn push_to(&self, out: &mut FrameBatch) -> Result<(), ()> {
        let Some((window, at)) = self.tail else {
            out.push(self.head);
            return Ok(());
        };
        out.push_with(self.len, |buf| {
            let (head, rest) = buf.split_at_mut(self.head.len());
            head.copy_from_slice(self.head);
            window.read(at, rest).map_err(drop)
        })
    }

    /// Writes bytes `[from, to)` of the frame at `iova` in `dst`.
    fn write_range(&self, dst: &DmaWindow, iova: u64, from: usize, to: usize) -> Result<(), ()> {
        let head_end = self.head.len();
        if from < head_end {
            dst.write(iova, &self.head[from..to.min(head_end)]).map_err(drop)?;
        }
        if let (Some((window, at)), true) = (self.tail, to > head_end) {
            let start = from.max(head_end);
            let dst_iova = iova + (start - from) as u64;
            let src_iova = at + (start - head_end) as u64;
            window.copy_to(src_iova, dst, dst_iova, to - start).map_err(drop)?;
        }
        Ok(())
    }
}

/// Where a switched frame may go: the VFs' RX queues and the uplink.
struct Targets<'a> {
    now_ns: u64,
    switch: &'a crate::switch::EmbeddedSwitch,
    vfs: &'a mut [VirtualFunction],
    dirty: &'a mut Vec<(u16, u16)>,
    /// The frames for the uplink this burst, if the PF has one.
    uplink: Option<&'a mut FrameBatch>,
}

impl Targets<'_> {
    /// Carries out the switch's decision for a frame from `from`.
    fn dispatch(mut self, from: Port, decision: Forward, frame: FrameBytes<'_>, info: &FrameInfo) {
        let mut send = |port: Port| match port {
            Port::Vf(dst) => {
                if let Some(vf) = self.vfs.get_mut(usize::from(dst)) {
                    deliver(vf, self.dirty, frame, info, self.now_ns);
                }
            }
            Port::Uplink => {
                if let Some(out) = self.uplink.as_deref_mut() {
                    // The tail's range was checked when gathered and the window does not change
                    // during a burst, so this does not fail.
                    let _ = frame.push_to(out);
                }
            }
        };
        match decision {
            Forward::One(port) => send(port),
            Forward::Flood { vlan } => self.switch.flood(from, vlan).for_each(send),
            Forward::Drop(_) => {}
        }
    }
}

/// Counts a frame the VF's security groups or its subnet's NACL refused.
fn count_refusal(stats: &super::stats::VfStats, refused: super::Refusal, dir: Direction) {
    use super::Refusal;
    let counter = match (refused, dir) {
        (Refusal::SecurityGroup, Direction::Outbound) => &stats.tx_security_group_drops,
        (Refusal::SecurityGroup, Direction::Inbound) => &stats.rx_security_group_drops,
        (Refusal::Conntrack, _) => &stats.conntrack_allowance_exceeded,
        (Refusal::Nacl, Direction::Outbound) => &stats.tx_nacl_drops,
        (Refusal::Nacl, Direction::Inbound) => &stats.rx_nacl_drops,
    };
    add(counter, 1);
}

/// Offers a frame to the VF's shaper: true to send it now; false if it is held (it leaves from
/// [`PhysicalFunction::release_shaped`]) or dropped.
fn shape(
    shaper: &mut super::EgressShaper,
    now_ns: u64,
    frame: &[u8],
    ip: &crate::frame::Ipv4Info,
    stats: &super::stats::VfStats,
) -> bool {
    use crate::shaper::{Direction, FlowKey, Packet, Verdict};
    let (sport, dport) = ip.ports.unwrap_or((0, 0));
    let key = FlowKey::of_packet(
        Direction::Out,
        std::net::Ipv4Addr::from(ip.src).into(),
        std::net::Ipv4Addr::from(ip.dst).into(),
        ip.protocol,
        sport,
        dport,
    );
    let slot = shaper.free_slots.last().copied().unwrap_or(shaper.held.len());
    let packet = Packet { key, len: frame.len() as u32, dir: Direction::Out, handle: slot as u64 };
    match shaper.shaper.admit(now_ns, &packet) {
        Verdict::Pass => true,
        Verdict::Queued { .. } => {
            let mut buf = shaper.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(frame);
            if slot == shaper.held.len() {
                shaper.held.push(Some(buf));
            } else {
                shaper.free_slots.pop();
                shaper.held[slot] = Some(buf);
            }
            false
        }
        Verdict::Drop(_) => {
            add(&stats.tx_shaper_drops, 1);
            false
        }
    }
}

/// Validates one TX descriptor and copies its buffer into `scratch`, adding the engine units
/// the copy costs (one per [`BYTES_PER_UNIT`] bytes of this descriptor) to `cost`. ENA's rule:
/// a chain's request id is on its first descriptor; a descriptor whose phase is not this lap's
/// (`fresh` false) is not the driver's, and spoils its chain.
fn gather(
    vf: &mut VirtualFunction,
    q: usize,
    d: &TxDesc,
    fresh: bool,
    may_split: bool,
    scratch: &mut [u8],
    cost: &mut u64,
) -> Gathered {
    let window = vf.window.as_ref();
    let queue: &mut DeviceQueue = &mut vf.queues[q];
    if d.is_first() && !start_chain(queue, d) {
        return Gathered::Nothing;
    }
    let len = usize::from(d.len());
    if fresh
        && d.is_first()
        && d.is_last()
        && let Some(window) = window
    {
        if may_split && (COPY_ONCE_MIN..=scratch.len()).contains(&len) {
            return gather_header(window, queue, d, scratch, cost);
        }
        if (1..=HEADER_BYTES).contains(&len)
            && let Some(head) = scratch.first_chunk_mut::<HEADER_BYTES>()
            && window.read_array(d.addr(), head).is_ok()
        {
            return gather_short(queue, len);
        }
    }
    add_buffer(window, queue, d, fresh, false, scratch, cost)
}

/// [`gather`] for a frame of at most [`HEADER_BYTES`] in one buffer, whose buffer's first
/// `HEADER_BYTES` lie in the window and are already in the scratch buffer (the frame's `len`
/// and what follows it, ignored): ends the chain `start_chain` opened. A buffer closer than
/// that to the window's end goes through [`add_buffer`] instead, which copies `len` bytes.
fn gather_short(queue: &mut DeviceQueue, len: usize) -> Gathered {
    match end_one_buffer_chain(queue) {
        Some(req_id) => Gathered::Frame { req_id, len, tail: None },
        None => Gathered::Nothing,
    }
}

/// Ends the chain `start_chain` opened for a frame's only descriptor; its request id.
fn end_one_buffer_chain(queue: &mut DeviceQueue) -> Option<u16> {
    queue.partial.take().map(|PartialFrame { req_id, .. }| req_id)
}

/// [`gather`] for a frame in one buffer long enough to copy once: checks the whole buffer lies
/// in the window and copies only its first [`HEADER_BYTES`]; the rest stays where it is.
fn gather_header(
    window: &DmaWindow,
    queue: &mut DeviceQueue,
    d: &TxDesc,
    scratch: &mut [u8],
    cost: &mut u64,
) -> Gathered {
    let len = usize::from(d.len());
    let Some(req_id) = end_one_buffer_chain(queue) else { return Gathered::Nothing };
    let inside = window.offset(d.addr(), len as u64).is_ok()
        && window.read(d.addr(), &mut scratch[..HEADER_BYTES]).is_ok();
    if !inside {
        add(&queue.stats.tx_bad_desc, 1);
        return Gathered::Bad { req_id };
    }
    *cost += len as u64 / BYTES_PER_UNIT;
    Gathered::Frame { req_id, len, tail: Some(d.addr() + HEADER_BYTES as u64) }
}

/// [`gather`] for one LLQ entry: a packet's first entry (its first descriptor says so) starts
/// the chain with the header written inline after its two descriptor slots, then its
/// descriptors' buffers follow; a continuation entry holds only descriptors. Every descriptor
/// must carry the entry's `phase`.
fn gather_llq<E: LlqEntry>(
    vf: &mut VirtualFunction,
    q: usize,
    e: &E,
    phase: bool,
    scratch: &mut [u8],
    cost: &mut u64,
) -> Gathered {
    let window = vf.window.as_ref();
    let queue: &mut DeviceQueue = &mut vf.queues[q];
    let d0 = e.desc(0);
    let first_entry = queue.partial.is_none() || d0.is_first();
    let slots = if first_entry {
        if !d0.is_first() {
            // Not a packet's start, and no packet to continue.
            add(&queue.stats.tx_bad_desc, 1);
            return Gathered::Nothing;
        }
        if !start_chain(queue, &d0) {
            return Gathered::Nothing;
        }
        let header = usize::from(d0.header_len());
        let Some(p) = queue.partial.as_mut() else { return Gathered::Nothing };
        if header > E::header_room() || d0.phase() != phase {
            add(&queue.stats.tx_bad_desc, 1);
            p.bad = true;
        } else {
            scratch[..header].copy_from_slice(&e.header()[..header]);
            *cost += header as u64 / BYTES_PER_UNIT;
            p.len = header;
        }
        DESCS_BEFORE_HEADER
    } else {
        E::descs_per_entry()
    };
    let mut gathered = Gathered::Nothing;
    for i in 0..slots {
        let d = e.desc(i);
        // A packet that is all header has no buffer on its first descriptor.
        let header_only = first_entry && i == 0 && d.header_len() > 0;
        gathered = add_buffer(window, queue, &d, d.phase() == phase, header_only, scratch, cost);
        if queue.partial.is_none() {
            break;
        }
    }
    gathered
}

/// Starts a chain at its first descriptor `d` (a chain left unfinished is abandoned: it will
/// be completed as bad); false if `d` has no usable request id.
fn start_chain(queue: &mut DeviceQueue, d: &TxDesc) -> bool {
    let req_id = d.req_id();
    if let Some(p) = queue.partial.take() {
        // A chain that never ended: the engine completes it as bad before this one.
        add(&queue.stats.tx_bad_desc, 1);
        queue.abandoned = Some(p.req_id);
    }
    if u32::from(req_id) >= queue.depth || queue.tx_in_flight[usize::from(req_id)] {
        // No request id to complete: the chain is lost to a driver that wrote it.
        add(&queue.stats.tx_bad_desc, 1);
        return false;
    }
    queue.tx_in_flight[usize::from(req_id)] = true;
    queue.partial = Some(PartialFrame { req_id, len: 0, bad: false });
    true
}

/// Copies `d`'s buffer into the chain being gathered (none if it is empty and `may_be_empty`)
/// and ends the chain at `d`'s last flag.
fn add_buffer(
    window: Option<&DmaWindow>,
    queue: &mut DeviceQueue,
    d: &TxDesc,
    fresh: bool,
    may_be_empty: bool,
    scratch: &mut [u8],
    cost: &mut u64,
) -> Gathered {
    let Some(mut p) = queue.partial else {
        // A continuation that belongs to no chain.
        add(&queue.stats.tx_bad_desc, 1);
        return Gathered::Nothing;
    };
    let len = usize::from(d.len());
    let end = p.len + len;
    let ok = fresh
        && !p.bad
        && if len == 0 {
            may_be_empty
        } else {
            end <= scratch.len()
                && window.is_some_and(|w| w.read(d.addr(), &mut scratch[p.len..end]).is_ok())
        };
    if ok {
        *cost += len as u64 / BYTES_PER_UNIT;
        p.len = end;
    } else {
        if !p.bad {
            add(&queue.stats.tx_bad_desc, 1);
        }
        p.bad = true;
    }
    if !d.is_last() {
        queue.partial = Some(p);
        return Gathered::Nothing;
    }
    queue.partial = None;
    let req_id = p.req_id;
    if p.bad {
        Gathered::Bad { req_id }
    } else {
        Gathered::Frame { req_id, len: p.len, tail: None }
    }
}

/// The next posted RX buffer of `queue`, refilling the descriptor cache a burst at a time, and
/// only with as many as the RX completion ring has room to complete.
#[inline]
fn next_rx(queue: &mut DeviceQueue, window: &DmaWindow) -> Option<(RxDesc, bool)> {
    if queue.rx_cache_next == queue.rx_cache.len() {
        let room = queue.rx_cq.free_slots().saturating_sub(queue.rx_done.len()).min(BURST);
        queue.rx_cache.resize(room, RxDesc::default());
        queue.rx_cache_start = queue.rx_sq.head();
        let n = queue.rx_sq.pop_burst(&mut queue.rx_cache);
        queue.rx_cache.truncate(n);
        queue.rx_cache_next = 0;
        if n == 0 {
            return None;
        }
        for rx in &queue.rx_cache {
            window.prefetch(rx.addr(), 64);
        }
    }
    let rx = queue.rx_cache[queue.rx_cache_next];
    let position = queue.rx_cache_start.wrapping_add(queue.rx_cache_next as u32);
    queue.rx_cache_next += 1;
    Some((rx, rx.phase() == sq_phase(position, queue.depth)))
}

/// Puts a frame into one of `vf`'s RX queues (chosen by RSS), using as many posted buffers as
/// it needs; the completions wait in the queue until [`PhysicalFunction::flush_deliveries`].
fn deliver(
    vf: &mut VirtualFunction,
    dirty: &mut Vec<(u16, u16)>,
    frame: FrameBytes<'_>,
    info: &FrameInfo,
    now_ns: u64,
) {
    if vf.queues.is_empty() {
        return;
    }
    if let (Some(addresses), Some(ip)) = (&vf.addresses, &info.ipv4)
        && !info.dst.is_group()
        && !addresses.contains(&ip.dst)
    {
        add(&vf.stats.rx_src_dst_check, 1);
        return;
    }
    if let (Some(policy), Some(ip)) = (vf.policy.as_deref_mut(), &info.ipv4)
        && let Err(refused) = policy.ingress(now_ns, ip, frame.len)
    {
        return count_refusal(&vf.stats, refused, Direction::Inbound);
    }
    let hash = match info.ipv4 {
        Some(ip) => match ip.ports {
            Some((sport, dport)) => vf.rss.hash_ipv4_ports(ip.src, ip.dst, sport, dport),
            None => vf.rss.hash_ipv4(ip.src, ip.dst),
        },
        None => 0,
    };
    let q = usize::from(vf.indirection.queue(hash)) % vf.queues.len();
    let too_big = frame.len > usize::from(vf.mtu()) + FRAME_OVERHEAD;
    let id = vf.id();
    let Some(window) = vf.window.as_ref() else { return };
    let queue = &mut vf.queues[q];
    if too_big || queue.stopped {
        add(&queue.stats.rx_drops, 1);
        return;
    }
    let mut sent = 0;
    let mut first = true;
    while sent < frame.len {
        let Some((rx, fresh)) = next_rx(queue, window) else {
            // No buffer posted: the rest of the frame is dropped (buffers already used come back
            // with their completions; the frame is incomplete without a last one).
            add(&queue.stats.rx_drops, 1);
            return;
        };
        if !fresh || !rx_desc_ok(&rx, queue.depth) {
            add(&queue.stats.rx_bad_desc, 1);
            continue;
        }
        let chunk = (frame.len - sent).min(rx.buffer_len() as usize);
        let last = sent + chunk == frame.len;
        let mut status = 0;
        if frame.write_range(window, rx.addr(), sent, sent + chunk).is_err() {
            add(&queue.stats.rx_bad_desc, 1);
            status |= RX_STATUS_DROPPED;
        }
        if first {
            status |= rx_cq_field::FIRST;
        }
        if last {
            status |= rx_cq_field::LAST;
        }
        if queue.rx_done.is_empty() {
            dirty.push((id, q as u16));
        }
        queue.rx_done.push(RxCompletion {
            status,
            length: chunk as u16,
            req_id: rx.req_id,
            hash,
            sub_qid: q as u16,
            ..Default::default()
        });
        if status & RX_STATUS_DROPPED != 0 {
            add(&queue.stats.rx_drops, 1);
            return;
        }
        sent += chunk;
        first = false;
    }
    add(&queue.stats.rx_packets, 1);
    add(&queue.stats.rx_bytes, frame.len as u64);
}

fn rx_desc_ok(rx: &RxDesc, depth: u32) -> bool {
    u32::from(rx.req_id) < depth
}
