//! The device's side of ENA's control plane: BAR0, the admin queue and the async event queue.
//!
//! A driver lays out an admin queue (32 entries of 64 bytes), an admin completion queue (32 ×
//! 64) and an async event queue (16 × 64) in its memory and writes the address of each one's
//! entry 0 and its depth and entry size into BAR0 ([`crate::abi::regs`]). It posts a command
//! by writing the entry with the queue's phase (1 on the first lap, flipped at every wrap) and
//! writing its running tail to `AQ_DB`; the device executes every entry from its head up to
//! that tail whose phase is right and writes one completion per command into the completion
//! queue, with the completion queue's phase, the command id and the admin queue's new head.
//! A command whose bytes do not decode gets ENA's status for it (unknown opcode, unsupported
//! feature, malformed) and nothing else happens; nothing a driver writes can make the device
//! read or write outside the function's DMA window.
//!
//! Registers are read directly ([`RegisterSpace::read32`]) or **readless**: a write of
//! `(offset << 16) | request id` to `MMIO_REG_READ` makes the device write the 8-byte response
//! to the address in `MMIO_RESP_LO/HI`. Holding `DEV_CTL` bit 0 resets the function (queues
//! and admin state go, counters stay, the readless address must be written again) and reads
//! as `RESET_IN_PROGRESS` in `DEV_STS` until the driver writes 0, when `READY` returns. Events
//! are written only after the driver opened the queue with its first `AENQ_HEAD_DB` write and
//! only while it has room (head doorbell − events written), and only for groups enabled by
//! `SET_FEATURE AENQ_CONFIG` (all supported groups until then): link up when it opens, a
//! keep-alive with the drop counters every second (`PhysicalFunction::run`).
//!
//! IO queues are created ENA's way (CQ, then SQ naming it), by the address of entry 0; the
//! ring's index block sits in the [`crate::ring::INDEX_BLOCK_BYTES`] before it. A VF's TX
//! and RX queue become queue pair `q` once both exist (SQ indices `2q` and `2q + 1`, as ENA's
//! driver numbers them); they are destroyed whole, in any order.

use std::collections::BTreeMap;

use super::{DeviceError, Iova, PhysicalFunction, QueuePairSpec};
use crate::abi::admin::{
    self, AenqConfig, BasicStats, Body, Command, Completion, CompletionPolicy, ControlBuffer,
    CreateCq, CreateCqResponse, CreateSq, CreateSqResponse, DeviceAttributes, Direction, EniStats,
    Entry, HwHints, MaxQueues, MaxQueuesExt, ModerationDelays, MtuInfo, Offload, Placement,
    ResponseBody, RssHashControl, RssHashFunctionInfo, RssHashInputInfo, RssHashKey,
    RssIndirectionInfo, SetFeature, SrdInfo, capability, feature, hash_field, hash_function,
    hash_proto, stats_type, status,
};
use crate::abi::aenq::{self, AenqEntry, Event};
use crate::abi::io::{RX_CQ_ENTRY_WORDS, TX_CQ_ENTRY_WORDS, sq_phase};
use crate::abi::llq;
use crate::abi::regs::{self, ReadlessResponse, RegisterSpace};
use crate::frame::MacAddr;
use crate::ring::INDEX_BLOCK_BYTES;
use crate::shaper::Clock;

/// `VERSION`: ENA specification 2.0.
const ENA_VERSION: u32 = 2 << regs::version::MAJOR_SHIFT;
/// `CONTROLLER_VERSION`: 1.0.0, implementation 0.
const CONTROLLER_VERSION: u32 = 1 << 16;
/// Reset timeout and admin command timeout, in 100 ms units.
const RESET_TIMEOUT_100MS: u32 = 2;
const ADMIN_TIMEOUT_100MS: u32 = 3;
/// DMA address width.
const DMA_ADDR_BITS: u32 = 48;
/// `CAPS`.
const CAPS: u32 = (DMA_ADDR_BITS << regs::caps::DMA_ADDR_WIDTH_SHIFT)
    | (RESET_TIMEOUT_100MS << regs::caps::RESET_TIMEOUT_SHIFT)
    | (ADMIN_TIMEOUT_100MS << regs::caps::ADMIN_CMD_TO_SHIFT);
/// Largest admin queue a driver may lay out.
const MAX_ADMIN_DEPTH: u32 = 4096;
/// The keep-alive watchdog ENA's driver should run, ms: six missed keep-alives.
pub const KEEP_ALIVE_TIMEOUT_MS: u16 = 6000;
/// The async event groups the device reports: link changes and keep-alives.
const AENQ_SUPPORTED: u32 = 1 << aenq::group::LINK_CHANGE | 1 << aenq::group::KEEP_ALIVE;
/// Customer metrics the device counts (ids 0–4, ENA's minimum set).
const CUSTOMER_METRICS_SUPPORTED: u64 = 0x1f;
/// Descriptors a TX frame may take, its meta descriptor included (ENA's `ENA_PKT_MAX_BUFS`).
const MAX_TX_DESCS_PER_PACKET: u16 = 19;
/// Buffers an RX frame may take.
const MAX_RX_DESCS_PER_PACKET: u16 = 64;

/// Where the IO doorbells sit in BAR0. The engine polls each ring's index block, so a
/// doorbell write is accepted and has nothing left to do; a driver written for ENA may still
/// ring it.
pub mod doorbell {
    /// First SQ doorbell (4 bytes per SQ index).
    pub const SQ_BASE: u32 = 0x1000;
    /// First CQ head doorbell (4 bytes per CQ index).
    pub const CQ_HEAD_BASE: u32 = 0x1800;
    /// First CQ interrupt-unmask register (4 bytes per CQ index).
    pub const CQ_UNMASK_BASE: u32 = 0x1c00;
    /// One past the last.
    pub const END: u32 = 0x2000;
}

/// The features `DEVICE_ATTRIBUTES` lists.
const SUPPORTED_FEATURES: u32 = admin::feature_bits(&[
    feature::DEVICE_ATTRIBUTES,
    feature::MAX_QUEUES_NUM,
    feature::HW_HINTS,
    feature::MAX_QUEUES_EXT,
    feature::RSS_HASH_FUNCTION,
    feature::STATELESS_OFFLOAD_CONFIG,
    feature::RSS_INDIRECTION_TABLE_CONFIG,
    feature::MTU,
    feature::RSS_HASH_INPUT,
    feature::INTERRUPT_MODERATION,
    feature::AENQ_CONFIG,
    feature::LLQ,
]);

/// What the device hashes per protocol: TCP and UDP over IPv4 by addresses and ports, other
/// IPv4 by addresses; anything else goes to the first entry's queue.
fn hash_control() -> RssHashControl {
    use hash_field::*;
    let mut c = RssHashControl::default();
    let four = L3_SA | L3_DA | L4_SP | L4_DP;
    c.supported[hash_proto::TCP4] = four;
    c.supported[hash_proto::UDP4] = four;
    c.supported[hash_proto::IP4] = L3_SA | L3_DA;
    c.selected = c.supported;
    c
}

/// One driver-memory queue of 64-byte entries: entry 0's address and the depth.
#[derive(Debug, Clone, Copy)]
struct EntryQueue {
    base: u64,
    depth: u32,
}

impl EntryQueue {
    /// The queue `BASE_LO/HI` and `CAPS` describe, if they describe one the device accepts.
    fn from_registers(lo: u32, hi: u32, caps: u32, entry_bytes: usize) -> Option<Self> {
        let depth = caps & regs::queue_caps::DEPTH_MASK;
        let size = caps >> regs::queue_caps::ENTRY_SIZE_SHIFT;
        let ok =
            depth.is_power_of_two() && depth <= MAX_ADMIN_DEPTH && size as usize == entry_bytes;
        ok.then(|| Self { base: u64::from(lo) | u64::from(hi) << 32, depth })
    }

    /// Entry `position`'s address and the phase it carries.
    fn slot(&self, position: u32) -> (u64, bool) {
        let index = u64::from(position & (self.depth - 1));
        (self.base + index * 64, sq_phase(position, self.depth))
    }
}

/// An IO completion queue created and not yet part of a queue pair.
#[derive(Debug, Clone, Copy)]
struct IoCq {
    ring: Iova,
    depth: u32,
    entry_words: u8,
}

/// An IO submission queue created and waiting for its pair.
#[derive(Debug, Clone, Copy)]
struct IoSq {
    ring: Iova,
    depth: u32,
    cq_idx: u16,
    /// A low-latency queue's slot in the LLQ BAR.
    llq: Option<usize>,
}

/// A function's control-plane state on the device.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    regs: Vec<u32>,
    aq: Option<EntryQueue>,
    acq: Option<EntryQueue>,
    aenq: Option<EntryQueue>,
    /// Running admin queue head and completion tail.
    aq_head: u32,
    acq_tail: u32,
    /// Events written, and the driver's head doorbell (consumed + depth); `None` until the
    /// driver opens the queue.
    aenq_tail: u32,
    aenq_head_db: Option<u32>,
    /// Groups enabled (`None`: all supported).
    aenq_enabled: Option<u32>,
    /// `DEV_CTL` holds the reset bit.
    resetting: bool,
    cqs: BTreeMap<u16, IoCq>,
    next_cq: u16,
    pending_tx: Option<IoSq>,
    pending_rx: Option<IoSq>,
    /// The TX and RX CQ indices of each queue pair (the RX one names it in the indirection
    /// table).
    cqs_of_queue: Vec<(u16, u16)>,
    /// Queues of destroyed pairs the driver has yet to destroy itself (a pair goes whole).
    retired_sqs: Vec<u16>,
    retired_cqs: Vec<u16>,
}

impl AdminState {
    fn reg(&self, offset: u32) -> u32 {
        self.regs.get(offset as usize / 4).copied().unwrap_or(0)
    }

    fn set_reg(&mut self, offset: u32, value: u32) {
        let i = offset as usize / 4;
        if self.regs.len() <= i {
            self.regs.resize(regs::SIZE as usize / 4, 0);
        }
        if let Some(r) = self.regs.get_mut(i) {
            *r = value;
        }
    }

    fn addr(&self, lo: u32, hi: u32) -> u64 {
        u64::from(self.reg(lo)) | u64::from(self.reg(hi)) << 32
    }

    fn dev_sts(&self) -> u32 {
        if self.resetting { regs::dev_sts::RESET_IN_PROGRESS } else { regs::dev_sts::READY }
    }

    /// The function's queues are gone (a reset): so are their admin records.
    pub(crate) fn forget_queues(&mut self) {
        self.cqs.clear();
        self.pending_tx = None;
        self.pending_rx = None;
        self.cqs_of_queue.clear();
        self.retired_sqs.clear();
        self.retired_cqs.clear();
    }

    fn queue_of_rx_cq(&self, cq: u16) -> Option<u16> {
        self.cqs_of_queue.iter().position(|&(_, rx)| rx == cq).map(|q| q as u16)
    }
}

/// A VF's registers as its driver sees them (its BAR0).
#[derive(Debug)]
pub struct VfRegisters<'a> {
    pf: &'a mut PhysicalFunction,
    vf: u16,
}

impl PhysicalFunction {
    /// VF `vf`'s register space.
    pub fn registers(&mut self, vf: u16) -> Result<VfRegisters<'_>, DeviceError> {
        self.check(vf)?;
        Ok(VfRegisters { pf: self, vf })
    }

    /// Posts a keep-alive event with the VF's drop counters on its async event queue, as ENA
    /// does every second; false if it has no open queue, keep-alives are disabled, or the
    /// queue is full.
    pub fn send_keep_alive(&mut self, vf: u16) -> Result<bool, DeviceError> {
        let i = self.check(vf)?;
        let (q, _) = self.vfs[i].totals();
        let event = Event::KeepAlive { rx_drops: q.rx_drops, tx_drops: q.tx_errors };
        Ok(self.post_event(i, event))
    }

    /// Writes one event into VF `i`'s async event queue if it is open, has room, and the
    /// event's group is enabled.
    fn post_event(&mut self, i: usize, event: Event) -> bool {
        let now = self.clock.now_ns();
        let Some(window) = self.vfs[i].window.clone() else { return false };
        let admin = &mut self.vfs[i].admin;
        let (Some(q), Some(head_db)) = (admin.aenq, admin.aenq_head_db) else { return false };
        let enabled = admin.aenq_enabled.unwrap_or(AENQ_SUPPORTED);
        let room = head_db.wrapping_sub(admin.aenq_tail);
        if enabled & (1 << event.group()) == 0 || room == 0 || room > q.depth {
            return false;
        }
        let (at, phase) = q.slot(admin.aenq_tail);
        let entry = AenqEntry { event, phase, timestamp: now }.encode();
        if write_entry(&window, at, &entry).is_err() {
            return false;
        }
        admin.aenq_tail = admin.aenq_tail.wrapping_add(1);
        true
    }
}

/// Writes a 64-byte entry with its first word (where the phase is) last.
fn write_entry(
    window: &super::DmaWindow,
    at: u64,
    entry: &[u8; 64],
) -> Result<(), super::DmaError> {
    window.write(at + 4, &entry[4..])?;
    window.write(at, &entry[..4])
}

impl RegisterSpace for VfRegisters<'_> {
    fn read32(&mut self, offset: u32) -> u32 {
        let Ok(i) = self.pf.check(self.vf) else { return u32::MAX };
        read_register(&self.pf.vfs[i].admin, offset)
    }

    fn write32(&mut self, offset: u32, value: u32) {
        let vf = self.vf;
        let Ok(i) = self.pf.check(vf) else { return };
        let admin = &mut self.pf.vfs[i].admin;
        let during_reset =
            [regs::DEV_CTL, regs::MMIO_RESP_LO, regs::MMIO_RESP_HI, regs::MMIO_REG_READ];
        if admin.resetting && !during_reset.contains(&offset) {
            // A function in reset takes only what ENA's driver writes while it waits.
            return;
        }
        match offset {
            regs::AQ_DB => {
                admin.set_reg(offset, value);
                self.pf.admin_doorbell(vf, value);
            }
            regs::AENQ_CAPS => {
                admin.set_reg(offset, value);
                admin.aenq = EntryQueue::from_registers(
                    admin.reg(regs::AENQ_BASE_LO),
                    admin.reg(regs::AENQ_BASE_HI),
                    value,
                    aenq::ENTRY_BYTES,
                );
                admin.aenq_tail = 0;
                admin.aenq_head_db = None;
            }
            regs::AENQ_HEAD_DB => {
                let opening = admin.aenq_head_db.is_none() && admin.aenq.is_some();
                admin.aenq_head_db = Some(value);
                if opening {
                    self.pf.post_event(i, Event::LinkChange { up: true });
                }
            }
            regs::DEV_CTL => self.pf.device_control(vf, value),
            regs::MMIO_REG_READ => self.pf.readless_read(i, value),
            regs::RSS_IND_ENTRY_UPDATE => {
                let index = (value & regs::pair16::LO_MASK) as usize;
                let cq = (value >> regs::pair16::HI_SHIFT) as u16;
                if let Some(q) = admin.queue_of_rx_cq(cq) {
                    let _ = self.pf.vfs[i].indirection.set(index, q);
                }
            }
            o if o < regs::SIZE && o % 4 == 0 => admin.set_reg(o, value),
            // IO doorbells: accepted, nothing to do (the engine polls).
            _ => {}
        }
    }
}

/// A register's value (what a direct or readless read returns).
fn read_register(admin: &AdminState, offset: u32) -> u32 {
    match offset {
        regs::VERSION => ENA_VERSION,
        regs::CONTROLLER_VERSION => CONTROLLER_VERSION,
        regs::CAPS => CAPS,
        regs::ACQ_TAIL => admin.acq_tail,
        regs::AENQ_TAIL => admin.aenq_tail,
        regs::DEV_STS => admin.dev_sts(),
        o if o < regs::SIZE && o % 4 == 0 => admin.reg(o),
        o if (doorbell::SQ_BASE..doorbell::END).contains(&o) && o % 4 == 0 => 0,
        // Outside the register space, or unaligned: all ones, like a missing device.
        _ => u32::MAX,
    }
}

impl PhysicalFunction {
    /// `DEV_CTL`: the reset bit resets the function and holds it in reset until cleared.
    fn device_control(&mut self, vf: u16, value: u32) {
        let i = usize::from(vf);
        let reset = value & regs::dev_ctl::DEV_RESET != 0;
        if reset && !self.vfs[i].admin.resetting {
            let _ = self.reset_vf(vf);
            // Queues, admin queues, events, the readless address and the LLQ layout go;
            // counters stay.
            self.vfs[i].admin = AdminState { resetting: true, ..AdminState::default() };
            self.vfs[i].llq = super::llq::LlqChoice::default();
        } else if !reset {
            self.vfs[i].admin.resetting = false;
        }
        self.vfs[i].admin.set_reg(regs::DEV_CTL, value);
    }

    /// `MMIO_REG_READ`: writes the register's value and the request id where the driver asked.
    fn readless_read(&mut self, i: usize, request: u32) {
        let Some(window) = self.vfs[i].window.as_ref() else { return };
        let admin = &self.vfs[i].admin;
        let at = admin.addr(regs::MMIO_RESP_LO, regs::MMIO_RESP_HI);
        let offset = request >> regs::pair16::HI_SHIFT;
        let response = ReadlessResponse {
            req_id: (request & regs::pair16::LO_MASK) as u16,
            reg_off: offset as u16,
            reg_val: read_register(admin, offset),
        };
        // Value first, request id last: the driver polls the id.
        let bytes = response.encode();
        if window.write(at + 2, &bytes[2..]).is_ok() {
            let _ = window.write(at, &bytes[..2]);
        }
    }

    /// The driver wrote `tail` to `AQ_DB`: execute every posted command up to it.
    fn admin_doorbell(&mut self, vf: u16, tail: u32) {
        let i = usize::from(vf);
        let Some(window) = self.vfs[i].window.clone() else { return };
        let admin = &mut self.vfs[i].admin;
        if admin.aq.is_none() || admin.acq.is_none() {
            admin.aq = EntryQueue::from_registers(
                admin.reg(regs::AQ_BASE_LO),
                admin.reg(regs::AQ_BASE_HI),
                admin.reg(regs::AQ_CAPS),
                admin::ENTRY_BYTES,
            );
            admin.acq = EntryQueue::from_registers(
                admin.reg(regs::ACQ_BASE_LO),
                admin.reg(regs::ACQ_BASE_HI),
                admin.reg(regs::ACQ_CAPS),
                admin::ENTRY_BYTES,
            );
        }
        let (Some(aq), Some(acq)) = (admin.aq, admin.acq) else { return };
        // The doorbell is the driver's running 16-bit tail; more than a queue's worth ahead of
        // the head is a driver bug, and only a queue's worth is looked at.
        let pending = (tail as u16).wrapping_sub(admin.aq_head as u16);
        for _ in 0..u32::from(pending).min(aq.depth) {
            let admin = &self.vfs[i].admin;
            let (at, phase) = aq.slot(admin.aq_head);
            let mut entry: Entry = [0; admin::ENTRY_BYTES];
            if window.read(at, &mut entry).is_err() {
                return;
            }
            let header = admin::CommandHeader::decode(&entry);
            if header.phase != phase {
                // Not written on this lap: wait for the driver.
                return;
            }
            let (st, body) = match Command::decode(&entry) {
                Ok(cmd) => self.execute_admin(vf, &cmd, &window),
                Err(e) => (e.status(), [0; admin::BODY_BYTES]),
            };
            let admin = &mut self.vfs[i].admin;
            admin.aq_head = admin.aq_head.wrapping_add(1);
            let (at, phase) = acq.slot(admin.acq_tail);
            let completion = Completion {
                command_id: header.command_id,
                status: st,
                phase,
                extended_status: 0,
                sq_head: admin.aq_head as u16,
                body,
            };
            if write_entry(&window, at, &completion.encode()).is_ok() {
                admin.acq_tail = admin.acq_tail.wrapping_add(1);
            }
        }
    }

    /// Executes one decoded command; returns its status and response.
    fn execute_admin(&mut self, vf: u16, cmd: &Command, window: &super::DmaWindow) -> (u8, Body) {
        let none = [0u8; admin::BODY_BYTES];
        match *cmd {
            Command::CreateCq(c) => self.create_cq(vf, c),
            Command::CreateSq(c) => self.create_sq(vf, c),
            Command::DestroySq { sq_idx, .. } => (self.destroy_sq(vf, sq_idx), none),
            Command::DestroyCq { cq_idx } => (self.destroy_cq(vf, cq_idx), none),
            Command::GetFeature(g) => self.get_feature(vf, g.feature, g.control, window),
            Command::SetFeature(s) => (self.set_feature(vf, s, window), none),
            Command::GetStats(s) => {
                self.get_stats(vf, s.stats_type, s.requested_metrics, s.control, window)
            }
        }
    }

    fn create_cq(&mut self, vf: u16, c: CreateCq) -> (u8, Body) {
        let words_ok = [TX_CQ_ENTRY_WORDS, RX_CQ_ENTRY_WORDS].contains(&c.entry_words);
        let depth = u32::from(c.depth);
        let ring = c.ring_base.checked_sub(INDEX_BLOCK_BYTES as u64);
        let admin = &mut self.vfs[usize::from(vf)].admin;
        let (true, true, Some(ring)) = (words_ok, crate::ring::depth_is_valid(depth), ring) else {
            return (status::ILLEGAL_PARAMETER, [0; admin::BODY_BYTES]);
        };
        if admin.cqs.len() >= 2 * super::MAX_QUEUE_PAIRS {
            return (status::RESOURCE_ALLOCATION_FAILURE, [0; admin::BODY_BYTES]);
        }
        let idx = admin.next_cq;
        admin.next_cq = admin.next_cq.wrapping_add(1);
        admin.cqs.insert(idx, IoCq { ring: Iova(ring), depth, entry_words: c.entry_words });
        let response = CreateCqResponse {
            cq_idx: idx,
            cq_actual_depth: c.depth,
            numa_node_register_offset: 0,
            cq_head_db_register_offset: doorbell::CQ_HEAD_BASE + 4 * u32::from(idx % 256),
            cq_interrupt_unmask_register_offset: doorbell::CQ_UNMASK_BASE
                + 4 * u32::from(idx % 256),
        };
        (status::SUCCESS, response.body())
    }

    fn create_sq(&mut self, vf: u16, c: CreateSq) -> (u8, Body) {
        let none = [0u8; admin::BODY_BYTES];
        let i = usize::from(vf);
        let q = self.vfs[i].queues.len() as u32;
        let llq_depth = self.vfs[i].llq.max_depth();
        let admin = &mut self.vfs[i].admin;
        let Some(cq) = admin.cqs.get(&c.cq_idx).copied() else {
            return (status::ILLEGAL_PARAMETER, none);
        };
        let entry_words = match c.direction {
            Direction::Tx => TX_CQ_ENTRY_WORDS,
            Direction::Rx => RX_CQ_ENTRY_WORDS,
        };
        // A completion per descriptor that asks for one is what the device models; TX queues
        // may be placed in host memory or in the LLQ BAR, RX queues in host memory.
        let llq = c.placement == Placement::Device;
        let fits = if llq {
            c.direction == Direction::Tx && u32::from(c.depth) <= llq_depth
        } else {
            c.ring_base >= INDEX_BLOCK_BYTES as u64
        };
        let supported = fits
            && c.completion_policy == CompletionPolicy::DescOnDemand
            && cq.entry_words == entry_words
            && u32::from(c.depth) == cq.depth;
        let slot = match c.direction {
            Direction::Tx => admin.pending_tx,
            Direction::Rx => admin.pending_rx,
        };
        if !supported || slot.is_some() {
            return (status::ILLEGAL_PARAMETER, none);
        }
        let ring = Iova(c.ring_base.saturating_sub(INDEX_BLOCK_BYTES as u64));
        let mut sq = IoSq { ring, depth: u32::from(c.depth), cq_idx: c.cq_idx, llq: None };
        let mut llq_descriptors_offset = 0;
        if llq {
            match self.lay_out_llq(vf, sq.depth, None) {
                Ok(k) => {
                    sq.llq = Some(k);
                    llq_descriptors_offset = (k * super::LLQ_SLOT_BYTES + INDEX_BLOCK_BYTES) as u32;
                }
                Err(DeviceError::TooManyQueues { .. }) => {
                    return (status::RESOURCE_ALLOCATION_FAILURE, none);
                }
                Err(_) => return (status::ILLEGAL_PARAMETER, none),
            }
        }
        let admin = &mut self.vfs[i].admin;
        match c.direction {
            Direction::Tx => admin.pending_tx = Some(sq),
            Direction::Rx => admin.pending_rx = Some(sq),
        }
        let sq_idx = 2 * q + u32::from(c.direction == Direction::Rx);
        let response = CreateSqResponse {
            sq_idx: sq_idx as u16,
            sq_doorbell_offset: doorbell::SQ_BASE + 4 * (sq_idx % 512),
            llq_descriptors_offset,
            llq_headers_offset: 0,
        };
        let st = self.complete_pair(vf);
        (st, if st == status::SUCCESS { response.body() } else { none })
    }

    /// Makes a queue pair of the pending TX and RX queues once both exist.
    fn complete_pair(&mut self, vf: u16) -> u8 {
        let i = usize::from(vf);
        let admin = &mut self.vfs[i].admin;
        let (Some(tx), Some(rx)) = (admin.pending_tx, admin.pending_rx) else {
            return status::SUCCESS;
        };
        let (Some(tx_cq), Some(rx_cq)) = (admin.cqs.get(&tx.cq_idx), admin.cqs.get(&rx.cq_idx))
        else {
            return status::ILLEGAL_PARAMETER;
        };
        let spec = QueuePairSpec {
            depth: tx.depth,
            tx_sq: tx.ring,
            tx_cq: tx_cq.ring,
            rx_sq: rx.ring,
            rx_cq: rx_cq.ring,
        };
        admin.pending_tx = None;
        admin.pending_rx = None;
        admin.cqs.remove(&tx.cq_idx);
        admin.cqs.remove(&rx.cq_idx);
        let llq = match tx.llq.map(|slot| self.attach_llq(vf, slot)).transpose() {
            Ok(llq) => llq,
            Err(_) => return status::ILLEGAL_PARAMETER,
        };
        match self.attach_queue_pair(vf, spec, llq) {
            Ok(_) => {
                self.vfs[i].admin.cqs_of_queue.push((tx.cq_idx, rx.cq_idx));
                status::SUCCESS
            }
            Err(DeviceError::TooManyQueues { .. }) => status::RESOURCE_ALLOCATION_FAILURE,
            Err(_) => status::ILLEGAL_PARAMETER,
        }
    }

    /// Destroys a queue pair by either of its SQ indices (the other SQ and both CQs are then
    /// destroyed already, and their own destroy commands succeed); a pending SQ by its own. A
    /// pair below the last one stops (the engine leaves it alone, frames RSS would give it are
    /// dropped) and goes once every pair above it has gone, so queue indices never shift.
    fn destroy_sq(&mut self, vf: u16, sq_idx: u16) -> u8 {
        let i = usize::from(vf);
        let v = &mut self.vfs[i];
        let q = usize::from(sq_idx / 2);
        if let Some(queue) = v.queues.get_mut(q).filter(|queue| !queue.stopped) {
            queue.stopped = true;
            let admin = &mut v.admin;
            if let Some(&(tx_cq, rx_cq)) = admin.cqs_of_queue.get(q) {
                admin.retired_cqs.extend([tx_cq, rx_cq]);
            }
            admin.retired_sqs.push(sq_idx ^ 1);
            while v.queues.last().is_some_and(|queue| queue.stopped) {
                if let Some(queue) = v.queues.pop() {
                    // Counters survive their queue.
                    v.retired += queue.stats.snapshot();
                }
                v.admin.cqs_of_queue.pop();
            }
            return status::SUCCESS;
        }
        let pairs = v.queues.len();
        let admin = &mut v.admin;
        if let Some(k) = admin.retired_sqs.iter().position(|&s| s == sq_idx) {
            admin.retired_sqs.swap_remove(k);
            return status::SUCCESS;
        }
        let pending =
            if sq_idx.is_multiple_of(2) { &mut admin.pending_tx } else { &mut admin.pending_rx };
        if q == pairs && pending.take().is_some() {
            return status::SUCCESS;
        }
        status::ILLEGAL_PARAMETER
    }

    /// Destroys a CQ that no pending SQ uses, or one of a destroyed pair.
    fn destroy_cq(&mut self, vf: u16, cq_idx: u16) -> u8 {
        let admin = &mut self.vfs[usize::from(vf)].admin;
        let in_use =
            [admin.pending_tx, admin.pending_rx].iter().flatten().any(|s| s.cq_idx == cq_idx);
        if !in_use && admin.cqs.remove(&cq_idx).is_some() {
            return status::SUCCESS;
        }
        if let Some(k) = admin.retired_cqs.iter().position(|&c| c == cq_idx) {
            admin.retired_cqs.swap_remove(k);
            return status::SUCCESS;
        }
        status::ILLEGAL_PARAMETER
    }

    fn get_feature(
        &mut self,
        vf: u16,
        id: u8,
        control: Option<ControlBuffer>,
        window: &super::DmaWindow,
    ) -> (u8, Body) {
        let i = usize::from(vf);
        let v = &self.vfs[i];
        let body = match id {
            feature::DEVICE_ATTRIBUTES => {
                let Ok(port) = self.port(vf) else {
                    return (status::ILLEGAL_PARAMETER, [0; admin::BODY_BYTES]);
                };
                DeviceAttributes {
                    impl_id: 0,
                    device_version: CONTROLLER_VERSION,
                    supported_features: SUPPORTED_FEATURES,
                    capabilities: 1 << capability::ENI_STATS
                        | 1 << capability::ENA_SRD_INFO
                        | 1 << capability::CUSTOMER_METRICS,
                    phys_addr_width: DMA_ADDR_BITS,
                    virt_addr_width: DMA_ADDR_BITS,
                    mac: port.mac,
                    max_mtu: u32::from(super::MAX_MTU),
                }
                .body()
            }
            feature::MAX_QUEUES_EXT => {
                let queues = super::MAX_QUEUE_PAIRS as u32;
                let depth = crate::ring::MAX_DEPTH;
                MaxQueuesExt {
                    version: 1,
                    max_tx_sq_num: queues,
                    max_tx_cq_num: queues,
                    max_rx_sq_num: queues,
                    max_rx_cq_num: queues,
                    max_tx_sq_depth: depth,
                    max_tx_cq_depth: depth,
                    max_rx_sq_depth: depth,
                    max_rx_cq_depth: depth,
                    max_tx_header_size: 0,
                    max_per_packet_tx_descs: MAX_TX_DESCS_PER_PACKET,
                    max_per_packet_rx_descs: MAX_RX_DESCS_PER_PACKET,
                }
                .body()
            }
            feature::MAX_QUEUES_NUM => MaxQueues {
                max_sq_num: 2 * super::MAX_QUEUE_PAIRS as u32,
                max_sq_depth: crate::ring::MAX_DEPTH,
                max_cq_num: 2 * super::MAX_QUEUE_PAIRS as u32,
                max_cq_depth: crate::ring::MAX_DEPTH,
                max_legacy_llq_num: 0,
                max_legacy_llq_depth: 0,
                max_header_size: 0,
                max_packet_tx_descs: MAX_TX_DESCS_PER_PACKET,
                max_packet_rx_descs: MAX_RX_DESCS_PER_PACKET,
            }
            .body(),
            feature::HW_HINTS => HwHints {
                driver_watchdog_timeout: KEEP_ALIVE_TIMEOUT_MS,
                admin_completion_tx_timeout: (ADMIN_TIMEOUT_100MS * 100) as u16,
                ..HwHints::default()
            }
            .body(),
            feature::AENQ_CONFIG => AenqConfig {
                supported_groups: AENQ_SUPPORTED,
                enabled_groups: v.admin.aenq_enabled.unwrap_or(AENQ_SUPPORTED),
            }
            .body(),
            feature::STATELESS_OFFLOAD_CONFIG => {
                // No checksum or segmentation offload; the RX hash is given.
                const RX_HASH: u32 = 1 << 3;
                Offload { tx: 0, rx_supported: RX_HASH, rx_enabled: RX_HASH }.body()
            }
            feature::RSS_HASH_FUNCTION => {
                if let Some(c) = control {
                    let key = RssHashKey { key: *v.rss.key() }.encode();
                    if !write_control(window, c, &key) {
                        return (status::MALFORMED_REQUEST, [0; admin::BODY_BYTES]);
                    }
                }
                RssHashFunctionInfo {
                    supported_func: hash_function::TOEPLITZ,
                    selected_func: hash_function::TOEPLITZ,
                    init_val: 0,
                }
                .body()
            }
            feature::RSS_HASH_INPUT => {
                if let Some(c) = control
                    && !write_control(window, c, &hash_control().encode())
                {
                    return (status::MALFORMED_REQUEST, [0; admin::BODY_BYTES]);
                }
                RssHashInputInfo::default().body()
            }
            feature::RSS_INDIRECTION_TABLE_CONFIG => {
                if let Some(c) = control {
                    let cqs: Vec<u16> = v
                        .indirection
                        .entries()
                        .iter()
                        .map(|&q| v.admin.cqs_of_queue.get(usize::from(q)).map_or(0, |&(_, rx)| rx))
                        .collect();
                    if !write_control(window, c, &admin::encode_indirection(&cqs)) {
                        return (status::MALFORMED_REQUEST, [0; admin::BODY_BYTES]);
                    }
                }
                let log = INDIRECTION_LOG_SIZE;
                RssIndirectionInfo {
                    min_size: log,
                    max_size: log,
                    size: log,
                    inline_index: 0xFFFF_FFFF,
                    inline_cq_idx: 0,
                }
                .body()
            }
            feature::MTU => MtuInfo { mtu: u32::from(v.mtu()) }.body(),
            feature::LLQ => llq_info(v.llq).body(),
            feature::INTERRUPT_MODERATION => ModerationDelays {
                intr_delay_resolution: 1,
                tx_us: v.moderation_us.0,
                rx_us: v.moderation_us.1,
            }
            .body(),
            _ => return (status::UNSUPPORTED_OPCODE, [0; admin::BODY_BYTES]),
        };
        (status::SUCCESS, body)
    }

    fn set_feature(&mut self, vf: u16, s: SetFeature, window: &super::DmaWindow) -> u8 {
        let i = usize::from(vf);
        match s {
            SetFeature::Mtu(mtu) => match u16::try_from(mtu).ok().map(|m| self.set_mtu(vf, m)) {
                Some(Ok(())) => status::SUCCESS,
                _ => status::ILLEGAL_PARAMETER,
            },
            SetFeature::AenqConfig { enabled_groups } => {
                if enabled_groups & !AENQ_SUPPORTED != 0 {
                    return status::ILLEGAL_PARAMETER;
                }
                self.vfs[i].admin.aenq_enabled = Some(enabled_groups);
                status::SUCCESS
            }
            SetFeature::RssHashFunction { selected, key, .. } => {
                if selected != hash_function::TOEPLITZ {
                    return status::ILLEGAL_PARAMETER;
                }
                let mut bytes = [0u8; RssHashKey::BYTES];
                if !read_control(window, key, &mut bytes) {
                    return status::MALFORMED_REQUEST;
                }
                let Some(key) = RssHashKey::decode(&bytes) else {
                    return status::MALFORMED_REQUEST;
                };
                let table = self.vfs[i].indirection.clone();
                let _ = self.set_rss(vf, key.key, table);
                status::SUCCESS
            }
            SetFeature::RssHashInput { enabled_sort, fields } => {
                if enabled_sort != 0 {
                    return status::ILLEGAL_PARAMETER;
                }
                let Some(c) = fields else { return status::SUCCESS };
                let mut bytes = [0u8; RssHashControl::BYTES];
                if !read_control(window, c, &mut bytes) {
                    return status::MALFORMED_REQUEST;
                }
                // Only the hashing the device does can be selected.
                let wanted = RssHashControl::decode(&bytes).selected;
                if wanted == hash_control().selected {
                    status::SUCCESS
                } else {
                    status::ILLEGAL_PARAMETER
                }
            }
            SetFeature::RssIndirectionTable { log_size, inline, table } => {
                self.set_indirection(i, log_size, inline, table, window)
            }
            SetFeature::InterruptModeration { tx_us, rx_us } => {
                self.vfs[i].moderation_us = (tx_us, rx_us);
                for queue in &mut self.vfs[i].queues {
                    queue.tx_irq.set_delay(tx_us);
                    queue.rx_irq.set_delay(rx_us);
                }
                status::SUCCESS
            }
            SetFeature::Mac(mac) => self.set_mac_from_guest(vf, mac),
            SetFeature::Llq(chosen) => {
                let entry_bytes = match chosen.entry_size_ctrl_enabled {
                    llq::entry_size::B128 => 128,
                    llq::entry_size::B192 => 192,
                    llq::entry_size::B256 => 256,
                    _ => return status::ILLEGAL_PARAMETER,
                };
                let layout_ok = chosen.header_location_ctrl_enabled == llq::header_location::INLINE
                    && chosen.desc_num_before_header_enabled == llq::descs_before_header::TWO
                    && chosen.descriptors_stride_ctrl_enabled
                        == llq::stride::MULTIPLE_DESCS_PER_ENTRY
                    && chosen.accel_flags == 0;
                // The layout may change only while no low-latency queue uses it.
                let in_use = self.vfs[i].queues.iter().any(|q| q.tx.llq_slot().is_some())
                    || self.vfs[i].admin.pending_tx.is_some_and(|t| t.llq.is_some());
                if !layout_ok || in_use {
                    return status::ILLEGAL_PARAMETER;
                }
                self.vfs[i].llq = super::llq::LlqChoice { entry_bytes };
                status::SUCCESS
            }
        }
    }

    fn set_indirection(
        &mut self,
        i: usize,
        log_size: u16,
        inline: Option<(u32, u16)>,
        table: Option<ControlBuffer>,
        window: &super::DmaWindow,
    ) -> u8 {
        if log_size != INDIRECTION_LOG_SIZE {
            return status::ILLEGAL_PARAMETER;
        }
        let admin = &self.vfs[i].admin;
        if let Some((index, cq)) = inline {
            let Some(q) = admin.queue_of_rx_cq(cq) else { return status::ILLEGAL_PARAMETER };
            return match self.vfs[i].indirection.set(index as usize, q) {
                Some(()) => status::SUCCESS,
                None => status::ILLEGAL_PARAMETER,
            };
        }
        let Some(c) = table else { return status::MALFORMED_REQUEST };
        let mut bytes = vec![0u8; crate::rss::RSS_TABLE_LEN * admin::RSS_INDIRECTION_ENTRY_BYTES];
        if !read_control(window, c, &mut bytes) {
            return status::MALFORMED_REQUEST;
        }
        let mut entries = [0u16; crate::rss::RSS_TABLE_LEN];
        for (slot, cq) in entries.iter_mut().zip(admin::decode_indirection(&bytes)) {
            let Some(q) = admin.queue_of_rx_cq(cq) else { return status::ILLEGAL_PARAMETER };
            *slot = q;
        }
        self.vfs[i].indirection = crate::rss::IndirectionTable::from_entries(entries);
        status::SUCCESS
    }

    /// A trusted VF sets its own MAC, never to a group address or one another VF of this PF
    /// has: that would steal its traffic.
    fn set_mac_from_guest(&mut self, vf: u16, mac: MacAddr) -> u8 {
        let taken = (0..self.num_vfs())
            .filter(|&other| other != vf)
            .any(|other| self.port(other).is_ok_and(|p| p.mac == mac));
        if !self.vfs[usize::from(vf)].trusted || mac.is_group() || taken {
            return status::ILLEGAL_PARAMETER;
        }
        let Ok(mut port) = self.port(vf) else { return status::ILLEGAL_PARAMETER };
        port.mac = mac;
        match self.set_port(vf, port) {
            Ok(()) => status::SUCCESS,
            Err(_) => status::ILLEGAL_PARAMETER,
        }
    }

    fn get_stats(
        &mut self,
        vf: u16,
        kind: u8,
        requested: u64,
        control: Option<ControlBuffer>,
        window: &super::DmaWindow,
    ) -> (u8, Body) {
        let i = usize::from(vf);
        let (q, v) = self.vfs[i].totals();
        let eni =
            self.vfs[i].shaper.as_ref().map(|s| s.shaper.counters().snapshot()).unwrap_or_default();
        let conntrack = eni.conntrack_allowance_exceeded + v.conntrack_allowance_exceeded;
        let body = match kind {
            stats_type::BASIC => BasicStats {
                tx_bytes: q.tx_bytes,
                tx_pkts: q.tx_packets,
                rx_bytes: q.rx_bytes,
                rx_pkts: q.rx_packets,
                rx_drops: q.rx_drops,
                tx_drops: q.tx_errors + v.tx_shaper_drops,
            }
            .body(),
            stats_type::ENI => EniStats {
                bw_in_allowance_exceeded: eni.bw_in_allowance_exceeded,
                bw_out_allowance_exceeded: eni.bw_out_allowance_exceeded,
                pps_allowance_exceeded: eni.pps_allowance_exceeded,
                conntrack_allowance_exceeded: conntrack,
                linklocal_allowance_exceeded: eni.linklocal_allowance_exceeded,
            }
            .body(),
            // ENA Express is not modelled on the ENA path (SRD is EFA's, `crate::efa`): off.
            stats_type::ENA_SRD => SrdInfo::default().body(),
            stats_type::EXTENDED => {
                // ENA leaves the string's contents to the device: here "name: value" lines of
                // the VF's counters, NUL-terminated, cut to the buffer.
                let Some(c) = control.filter(|c| c.length > 0) else {
                    return (status::MALFORMED_REQUEST, [0; admin::BODY_BYTES]);
                };
                let mut text = extended_stats(&q, &v).into_bytes();
                text.truncate(c.length as usize - 1);
                text.push(0);
                if !write_control(window, c, &text) {
                    return (status::MALFORMED_REQUEST, [0; admin::BODY_BYTES]);
                }
                [0; admin::BODY_BYTES]
            }
            stats_type::CUSTOMER_METRICS => {
                let values = [
                    eni.bw_in_allowance_exceeded,
                    eni.bw_out_allowance_exceeded,
                    eni.pps_allowance_exceeded,
                    conntrack,
                    eni.linklocal_allowance_exceeded,
                ];
                let reported = requested & CUSTOMER_METRICS_SUPPORTED;
                let out: Vec<u8> = values
                    .iter()
                    .enumerate()
                    .filter(|(id, _)| reported & (1 << id) != 0)
                    .flat_map(|(_, v)| v.to_le_bytes())
                    .collect();
                let Some(c) = control.filter(|_| !out.is_empty() || requested == 0) else {
                    return (status::MALFORMED_REQUEST, [0; admin::BODY_BYTES]);
                };
                if !write_control(window, c, &out) {
                    return (status::MALFORMED_REQUEST, [0; admin::BODY_BYTES]);
                }
                let mut body = [0u8; admin::BODY_BYTES];
                body[..8].copy_from_slice(&reported.to_le_bytes());
                body
            }
            _ => return (status::UNSUPPORTED_OPCODE, [0; admin::BODY_BYTES]),
        };
        (status::SUCCESS, body)
    }
}

/// What `GET_FEATURE LLQ` answers: inline headers, 128-, 192- or 256-byte entries, two descriptors
/// before the header, several per continuation entry; the layout chosen.
fn llq_info(chosen: super::llq::LlqChoice) -> admin::LlqInfo {
    admin::LlqInfo {
        max_llq_num: super::LLQ_QUEUES as u32,
        max_llq_depth: super::LLQ_MAX_DEPTH,
        header_location_ctrl_supported: llq::header_location::INLINE,
        header_location_ctrl_enabled: llq::header_location::INLINE,
        entry_size_ctrl_supported: llq::entry_size::B128
            | llq::entry_size::B192
            | llq::entry_size::B256,
        entry_size_ctrl_enabled: match chosen.entry_bytes {
            256 => llq::entry_size::B256,
            192 => llq::entry_size::B192,
            _ => llq::entry_size::B128,
        },
        desc_num_before_header_supported: llq::descs_before_header::TWO,
        desc_num_before_header_enabled: llq::descs_before_header::TWO,
        descriptors_stride_ctrl_supported: llq::stride::MULTIPLE_DESCS_PER_ENTRY,
        descriptors_stride_ctrl_enabled: llq::stride::MULTIPLE_DESCS_PER_ENTRY,
        accel_flags: 0,
        max_tx_burst_size: 0,
    }
}

/// `GET_STATS` EXTENDED's text: the queue counters summed over the VF's queues, then the VF's.
fn extended_stats(
    q: &super::stats::QueueStatsSnapshot,
    v: &super::stats::VfStatsSnapshot,
) -> String {
    let lines = [
        ("tx_packets", q.tx_packets),
        ("tx_bytes", q.tx_bytes),
        ("tx_bad_desc", q.tx_bad_desc),
        ("tx_errors", q.tx_errors),
        ("rx_packets", q.rx_packets),
        ("rx_bytes", q.rx_bytes),
        ("rx_drops", q.rx_drops),
        ("rx_bad_desc", q.rx_bad_desc),
        ("tx_spoofed", v.tx_spoofed),
        ("tx_malformed", v.tx_malformed),
        ("tx_oversize", v.tx_oversize),
        ("tx_shaper_drops", v.tx_shaper_drops),
        ("engine_descriptors", v.engine_descriptors),
        ("engine_units", v.engine_units),
    ];
    lines.iter().map(|(name, value)| format!("{name}: {value}\n")).collect()
}

/// log2 of the indirection table's size.
const INDIRECTION_LOG_SIZE: u16 = crate::rss::RSS_TABLE_LEN.trailing_zeros() as u16;

/// Reads `dst.len()` bytes of a control buffer; false if it is shorter or outside the window.
fn read_control(window: &super::DmaWindow, c: ControlBuffer, dst: &mut [u8]) -> bool {
    (c.length as usize) >= dst.len() && window.read(c.address, dst).is_ok()
}

/// Writes `src` into a control buffer; false if it is shorter or outside the window.
fn write_control(window: &super::DmaWindow, c: ControlBuffer, src: &[u8]) -> bool {
    (c.length as usize) >= src.len() && window.write(c.address, src).is_ok()
}
