//! What waits, and whose turn it is: one FIFO per flow and direction, served deficit round robin
//! (Shreedhar and Varghese, SIGCOMM 1995) whenever the ENI's allowances let a packet go, as
//! Linux's `fq` does under a rate limit.
//!
//! Deciding at dequeue, not at admission, is what makes flows that share a congested allowance
//! equal: a backlogged flow is served once per round whatever its arrivals look like, so 1,000
//! flows on a 10 Gbps ENI each get 10 Mbps within a packet or two per 100 ms (a round is 1.2 ms
//! at 1500 B), Poisson arrivals included. Timestamps fixed at admission (Carousel's FIFO order) give each flow its
//! backlog over the common delay instead, and a backlog refilled by random arrivals is random.
//!
//! * Each round a flow may send [`QUANTUM_BYTES`] (one standard frame); what it does not use
//!   carries to its next turn, and is forgotten when its queue empties.
//! * A flow over its own cap (5 Gbps, say) sits out in a timing wheel until its limiter lets its
//!   next packet go, then rejoins the end of the round.
//! * Queues exist only for flows that have packets waiting; a flow's entry in the flow table
//!   names its queue.

use std::collections::VecDeque;

use super::flow::{Direction, FlowKey, FlowState};
use super::wheel::TimingWheel;

/// Bytes a flow may send per turn: one standard Ethernet frame, so that flows of 1500-byte
/// packets take one packet each per round (a jumbo frame needs six turns' worth).
pub const QUANTUM_BYTES: u32 = 1518;

/// A packet waiting: the caller's name for it and its length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub handle: u64,
    pub len: u32,
}

/// What a flow has waiting in one direction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiting {
    /// Packets.
    pub packets: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The TAT of what the flow has offered while its packets wait (`None` with nothing
    /// waiting: then what left is what arrived, and the flow's own TAT says it).
    pub offered_tat_ps: Option<u64>,
}

/// One direction of one flow's queue.
#[derive(Debug, Default)]
struct Backlog {
    packets: VecDeque<Held>,
    bytes: u64,
    /// Bytes the flow may still send this turn.
    deficit: u32,
    /// Theoretical arrival time, ps, against the flow's own cap of the packets it has queued
    /// since its packets began to wait here (a dropped packet is not charged, as a policer does
    /// not charge what it refuses): the flow's own TAT is charged at departure, and while its
    /// packets wait behind the ENI's allowances it says nothing about whether the flow offers
    /// more than its cap.
    offered_tat_ps: u64,
}

/// The queue of a flow with packets waiting.
#[derive(Debug)]
struct FlowQueue {
    key: FlowKey,
    dirs: [Backlog; 2],
}

/// One direction's round: flows whose turn may come, and flows waiting for their own cap.
#[derive(Debug)]
struct Round {
    active: VecDeque<u32>,
    throttled: TimingWheel<u32>,
    /// Flows with packets waiting in this direction (active or throttled).
    backlogged: usize,
}

/// Every flow's queue (see the module docs).
#[derive(Debug)]
pub(crate) struct FairQueue {
    queues: Vec<FlowQueue>,
    free: Vec<u32>,
    rounds: [Round; 2],
    len: usize,
}

impl FairQueue {
    /// Queues for flows whose cap-waits are filed in ticks of `tick_ns` over `slots` ticks.
    pub fn new(tick_ns: u64, slots: usize) -> Self {
        let round = || Round {
            active: VecDeque::new(),
            throttled: TimingWheel::new(tick_ns, slots, usize::MAX),
            backlogged: 0,
        };
        Self { queues: Vec::new(), free: Vec::new(), rounds: [round(), round()], len: 0 }
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Flows with packets waiting in `dir`.
    pub fn backlogged(&self, dir: Direction) -> usize {
        self.rounds[dir as usize].backlogged
    }

    /// True if some flow is waiting for its turn in `dir` (not counting flows waiting out their
    /// own cap).
    pub fn has_turns(&self, dir: Direction) -> bool {
        !self.rounds[dir as usize].active.is_empty()
    }

    /// What `flow` has waiting in `dir`.
    pub fn waiting(&self, flow: &FlowState, dir: Direction) -> Waiting {
        match flow.queue().and_then(|q| self.queues.get(q as usize)) {
            Some(q) => {
                let b = &q.dirs[dir as usize];
                Waiting {
                    packets: b.packets.len(),
                    bytes: b.bytes,
                    offered_tat_ps: (!b.packets.is_empty()).then_some(b.offered_tat_ps),
                }
            }
            None => Waiting { packets: 0, bytes: 0, offered_tat_ps: None },
        }
    }

    /// Files a packet of `flow` (keyed `key`) at the back of its queue in `dir`, with the TAT
    /// of what the flow has offered once it is counted; a flow that had nothing waiting there
    /// joins the end of the round.
    pub fn enqueue(
        &mut self,
        flow: &mut FlowState,
        key: FlowKey,
        dir: Direction,
        held: Held,
        offered_tat_ps: u64,
    ) {
        let q = match flow.queue() {
            Some(q) => q,
            None => {
                let q = self.allocate(key);
                flow.set_queue(Some(q));
                q
            }
        };
        let backlog = &mut self.queues[q as usize].dirs[dir as usize];
        if backlog.packets.is_empty() {
            let round = &mut self.rounds[dir as usize];
            round.active.push_back(q);
            round.backlogged += 1;
        }
        backlog.packets.push_back(held);
        backlog.bytes += u64::from(held.len);
        backlog.offered_tat_ps = offered_tat_ps;
        self.len += 1;
    }

    fn allocate(&mut self, key: FlowKey) -> u32 {
        if let Some(q) = self.free.pop() {
            self.queues[q as usize].key = key;
            return q;
        }
        self.queues.push(FlowQueue { key, dirs: Default::default() });
        (self.queues.len() - 1) as u32
    }

    /// Brings flows whose own cap lets them go by `now_ps` back into the round.
    pub fn wake(&mut self, dir: Direction, now_ps: u64, scratch: &mut Vec<u32>) {
        let round = &mut self.rounds[dir as usize];
        if round.throttled.is_empty() {
            return;
        }
        round.throttled.release(now_ps, scratch);
        round.active.extend(scratch.drain(..));
    }

    /// The flow whose head packet is next in `dir` (if its own limiter lets it go), after
    /// handing out turns: a flow whose turn has not enough left for its head packet gets its
    /// next quantum and goes to the back. `None` when nobody is waiting for a turn.
    pub fn next(&mut self, dir: Direction) -> Option<FlowKey> {
        let round = &mut self.rounds[dir as usize];
        loop {
            let &q = round.active.front()?;
            let queue = &mut self.queues[q as usize];
            let backlog = &mut queue.dirs[dir as usize];
            let Some(head) = backlog.packets.front() else {
                // Cannot happen (an empty backlog leaves the round); drop the stale entry.
                round.active.pop_front();
                continue;
            };
            // A packet longer than a jumbo frame costs a jumbo frame's turns (the device never
            // shapes one; the bound keeps a caller's oversized length from spinning here).
            let cost = head.len.min(6 * QUANTUM_BYTES);
            if backlog.deficit >= cost {
                return Some(queue.key);
            }
            backlog.deficit += QUANTUM_BYTES;
            round.active.rotate_left(1);
        }
    }

    /// The head flow of the round must wait for its own cap until `at_ps`: it leaves the round
    /// until then (or until the wheel's horizon, when it looks again).
    pub fn throttle(&mut self, dir: Direction, now_ps: u64, at_ps: u64) {
        let round = &mut self.rounds[dir as usize];
        let Some(q) = round.active.pop_front() else { return };
        let at = at_ps.min(now_ps + round.throttled.horizon_ps());
        round.throttled.catch_up(now_ps);
        if !round.throttled.insert(at, q) {
            // Only a wheel behind the clock refuses; then the flow simply keeps its place.
            round.active.push_front(q);
        }
    }

    /// Takes the head packet of the head flow (as [`FairQueue::next`] returned it); a flow whose
    /// queue empties leaves the round, and `flow` loses its queue once both directions are empty.
    pub fn dequeue(&mut self, dir: Direction, flow: Option<&mut FlowState>) -> Option<Held> {
        let round = &mut self.rounds[dir as usize];
        let &q = round.active.front()?;
        let queue = &mut self.queues[q as usize];
        let backlog = &mut queue.dirs[dir as usize];
        let held = backlog.packets.pop_front()?;
        backlog.bytes -= u64::from(held.len);
        backlog.deficit = backlog.deficit.saturating_sub(held.len.min(6 * QUANTUM_BYTES));
        self.len -= 1;
        if backlog.packets.is_empty() {
            backlog.deficit = 0;
            round.active.pop_front();
            round.backlogged -= 1;
            if queue.dirs.iter().all(|d| d.packets.is_empty()) {
                self.free.push(q);
                if let Some(flow) = flow {
                    flow.set_queue(None);
                }
            }
        }
        Some(held)
    }

    /// When a flow waiting out its own cap in `dir` may go next, ps.
    pub fn next_wake_ps(&self, dir: Direction) -> Option<u64> {
        self.rounds[dir as usize].throttled.next_release_ps()
    }
}
