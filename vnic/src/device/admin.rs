//! ENA's control plane: the register space, the admin queue and the async event queue.
//!
//! A driver brings a function up the way it brings up an ENA: it lays out an admin submission
//! queue and an admin completion queue (64-byte entries, depth 32) and an async event queue
//! (64-byte entries, depth 16) in its memory, writes their addresses and sizes into the
//! registers (`AQ_BASE_LO/HI`, `AQ_CAPS`, `ACQ_…`, `AENQ_…`, at ENA's offsets), and rings
//! `AQ_DB` after posting commands. The device answers each command with a completion carrying the
//! command id, a status (ENA's codes) and the phase bit. Registers sit behind [`RegisterSpace`]
//! (`read32` / `write32`), so the same driver code can talk to a real VF's BAR0 through VFIO.
//!
//! Modelled commands: `CREATE_CQ`, `CREATE_SQ`, `DESTROY_SQ`, `DESTROY_CQ`, `GET_FEATURE` and
//! `SET_FEATURE` (MTU, MAC — for VFs the PF trusts, and never one another VF has —, RSS key, one
//! RSS indirection entry, interrupt moderation, queue limits) and `GET_STATS`. The common headers are ENA's; the payloads keep ENA's fields in a
//! simpler word layout, given per opcode in [`payload`]. Writing `DEV_CTL` bit 0 resets the
//! function: queues and admin rings go, counters stay, and `DEV_STS` reads ready again.

use bytemuck::{Pod, Zeroable};

use crate::ring::CompletionEntry;

/// ENA's register offsets (BAR0).
pub mod reg {
    /// ENA specification version.
    pub const VERSION: u32 = 0x00;
    /// Controller version.
    pub const CONTROLLER_VERSION: u32 = 0x04;
    /// Capabilities.
    pub const CAPS: u32 = 0x08;
    /// Admin queue base, low 32 bits.
    pub const AQ_BASE_LO: u32 = 0x10;
    /// Admin queue base, high 32 bits.
    pub const AQ_BASE_HI: u32 = 0x14;
    /// Admin queue depth (15:0) and entry size (31:16).
    pub const AQ_CAPS: u32 = 0x18;
    /// Admin completion queue base, low.
    pub const ACQ_BASE_LO: u32 = 0x20;
    /// Admin completion queue base, high.
    pub const ACQ_BASE_HI: u32 = 0x24;
    /// Admin completion queue depth and entry size.
    pub const ACQ_CAPS: u32 = 0x28;
    /// Admin queue doorbell: the driver's tail.
    pub const AQ_DB: u32 = 0x2c;
    /// Admin completion queue tail (completions written so far).
    pub const ACQ_TAIL: u32 = 0x30;
    /// Async event queue depth and entry size.
    pub const AENQ_CAPS: u32 = 0x34;
    /// Async event queue base, low.
    pub const AENQ_BASE_LO: u32 = 0x38;
    /// Async event queue base, high.
    pub const AENQ_BASE_HI: u32 = 0x3c;
    /// Async event queue head doorbell.
    pub const AENQ_HEAD_DB: u32 = 0x40;
    /// Interrupt mask.
    pub const INTR_MASK: u32 = 0x4c;
    /// Device control: bit 0 resets the function.
    pub const DEV_CTL: u32 = 0x54;
    /// Device status: bit 0 ready.
    pub const DEV_STS: u32 = 0x58;
    /// Bytes of register space modelled.
    pub const SIZE: u32 = 0x70;
}

/// Admin opcodes.
pub mod opcode {
    /// Create an IO submission queue.
    pub const CREATE_SQ: u8 = 1;
    /// Destroy an IO submission queue.
    pub const DESTROY_SQ: u8 = 2;
    /// Create an IO completion queue.
    pub const CREATE_CQ: u8 = 3;
    /// Destroy an IO completion queue.
    pub const DESTROY_CQ: u8 = 4;
    /// Read a feature.
    pub const GET_FEATURE: u8 = 8;
    /// Write a feature.
    pub const SET_FEATURE: u8 = 9;
    /// Read statistics.
    pub const GET_STATS: u8 = 11;
}

/// Feature ids.
pub mod feature {
    /// Device attributes (the MAC address).
    pub const DEVICE_ATTRIBUTES: u32 = 1;
    /// Queue limits.
    pub const MAX_QUEUES_NUM: u32 = 2;
    /// RSS hash function (the Toeplitz key).
    pub const RSS_HASH_FUNCTION: u32 = 10;
    /// RSS indirection table.
    pub const RSS_INDIRECTION_TABLE: u32 = 12;
    /// MTU.
    pub const MTU: u32 = 14;
    /// Interrupt moderation.
    pub const INTERRUPT_MODERATION: u32 = 20;
}

/// Completion status codes (ENA's `ena_admin_aq_completion_status`).
pub mod status {
    /// Done.
    pub const SUCCESS: u8 = 0;
    /// Out of resources.
    pub const RESOURCE_ALLOCATION_FAILURE: u8 = 1;
    /// Unknown opcode.
    pub const BAD_OPCODE: u8 = 2;
    /// Known but not supported.
    pub const UNSUPPORTED_OPCODE: u8 = 3;
    /// Malformed command.
    pub const MALFORMED_REQUEST: u8 = 4;
    /// A parameter out of range.
    pub const ILLEGAL_PARAMETER: u8 = 5;
}

/// Async event groups.
pub mod aenq_group {
    /// Link up or down.
    pub const LINK_CHANGE: u16 = 0;
    /// Fatal error.
    pub const FATAL_ERROR: u16 = 1;
    /// Warning.
    pub const WARNING: u16 = 2;
    /// Notification.
    pub const NOTIFICATION: u16 = 3;
    /// Keep-alive, with drop counters.
    pub const KEEP_ALIVE: u16 = 4;
}

/// Payload word layouts (`words[i]` of [`AdminCommand`] and [`AdminCompletion`]).
///
/// | opcode | command words | response words |
/// | --- | --- | --- |
/// | `CREATE_CQ` | 0: depth; 1, 2: ring address lo, hi | 0: CQ index |
/// | `CREATE_SQ` | 0: direction (1 TX, 2 RX) \| CQ index << 16; 1: depth; 2, 3: address | 0: SQ index (TX 2q, RX 2q+1) |
/// | `DESTROY_SQ` / `DESTROY_CQ` | 0: index | – |
/// | `GET_FEATURE` / `SET_FEATURE` | 0: feature id; 1…: value | 1…: value |
/// | `GET_STATS` | – | 0–9: tx_packets, tx_bytes, rx_packets, rx_bytes, rx_drops as lo, hi pairs |
///
/// Feature values: MTU in word 1; MAC in bytes of words 1–2; RSS key (40 bytes) in words 1–10;
/// one indirection entry as index in word 1, queue in word 2; interrupt moderation as TX and RX
/// delays in µs in words 1 and 2; queue limits (get only) as queue pairs and depth in words 1, 2.
pub mod payload {}

/// An admin command (64 bytes): ENA's common header, then 15 payload words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AdminCommand {
    /// Command id, bits 11:0.
    pub command_id: u16,
    /// Opcode.
    pub opcode: u8,
    /// Bit 0: phase.
    pub flags: u8,
    /// Payload.
    pub words: [u32; 15],
}

/// An admin completion (64 bytes): ENA's common header, then 14 response words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AdminCompletion {
    /// The command id it answers.
    pub command: u16,
    /// Status.
    pub status: u8,
    /// Bit 0: phase.
    pub flags: u8,
    /// Extended status.
    pub extended_status: u16,
    /// Admin queue head after this command.
    pub sq_head_indx: u16,
    /// Response.
    pub words: [u32; 14],
}

impl CompletionEntry for AdminCompletion {
    const PHASE_WORD: usize = 0;
    const PHASE_MASK: u32 = 1 << 24;
}

/// An async event (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AenqEntry {
    /// Event group.
    pub group: u16,
    /// Syndrome.
    pub syndrome: u16,
    /// Bit 0: phase.
    pub flags: u8,
    /// Reserved.
    pub reserved: [u8; 3],
    /// Timestamp, low word.
    pub timestamp_low: u32,
    /// Timestamp, high word.
    pub timestamp_high: u32,
    /// Payload (link change: word 0 bit 0 link up; keep-alive: rx drops lo, hi, tx drops lo, hi).
    pub payload: [u32; 12],
}

impl CompletionEntry for AenqEntry {
    const PHASE_WORD: usize = 1;
    const PHASE_MASK: u32 = 1;
}

/// Admin queue depth.
pub const AQ_DEPTH: u32 = 32;
/// Async event queue depth.
pub const AENQ_DEPTH: u32 = 16;

/// A function's registers: what a driver reads and writes through BAR0.
pub trait RegisterSpace {
    /// Reads the 32-bit register at `offset`.
    fn read32(&mut self, offset: u32) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&mut self, offset: u32, value: u32);
}

const _: () = {
    assert!(size_of::<AdminCommand>() == 64);
    assert!(size_of::<AdminCompletion>() == 64);
    assert!(size_of::<AenqEntry>() == 64);
};

// ---------------------------------------------------------------------------------------------
// The device's side.

use std::collections::BTreeMap;

use super::{DeviceError, Iova, PhysicalFunction, QueuePairSpec};
use crate::frame::MacAddr;
use crate::ring::{CompletionProducer, SubmissionConsumer};

/// ENA specification version reported (2.0).
const ENA_VERSION: u32 = 0x0000_0200;
/// Controller version reported.
const CONTROLLER_VERSION: u32 = 0x0001_0000;
/// CAPS: DMA address width 48 (bits 15:8), reset timeout 100 ms units (5:1).
const CAPS: u32 = (48 << 8) | (2 << 1);
/// DEV_STS: ready.
const DEV_STS_READY: u32 = 1;

/// A function's control-plane state on the device.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    regs: BTreeMap<u32, u32>,
    aq: Option<SubmissionConsumer<AdminCommand>>,
    acq: Option<CompletionProducer<AdminCompletion>>,
    aenq: Option<CompletionProducer<AenqEntry>>,
    acq_tail: u32,
    aq_head: u16,
    /// CQs created and not yet part of a queue pair: index → (address, depth).
    cqs: BTreeMap<u16, (u64, u32)>,
    next_cq: u16,
    /// The SQs of the queue pair being assembled: (TX: address, cq), (RX: address, cq), depth.
    pending_tx: Option<(u64, u16, u32)>,
    pending_rx: Option<(u64, u16, u32)>,
}

impl AdminState {
    fn reg(&self, offset: u32) -> u32 {
        self.regs.get(&offset).copied().unwrap_or(0)
    }

    fn base(&self, lo: u32, hi: u32) -> u64 {
        u64::from(self.reg(lo)) | u64::from(self.reg(hi)) << 32
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
    /// does every second; false if it has none configured.
    pub fn send_keep_alive(&mut self, vf: u16) -> Result<bool, DeviceError> {
        let i = self.check(vf)?;
        let (q, _) = self.vfs[i].totals();
        let drops = q.rx_drops;
        let tx_drops = q.tx_errors;
        let Some(aenq) = self.vfs[i].admin.aenq.as_mut() else { return Ok(false) };
        let event = AenqEntry {
            group: aenq_group::KEEP_ALIVE,
            payload: [
                drops as u32,
                (drops >> 32) as u32,
                tx_drops as u32,
                (tx_drops >> 32) as u32,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ],
            ..Default::default()
        };
        Ok(aenq.push(event))
    }
}

impl RegisterSpace for VfRegisters<'_> {
    fn read32(&mut self, offset: u32) -> u32 {
        let Ok(i) = self.pf.check(self.vf) else { return u32::MAX };
        let admin = &self.pf.vfs[i].admin;
        match offset {
            reg::VERSION => ENA_VERSION,
            reg::CONTROLLER_VERSION => CONTROLLER_VERSION,
            reg::CAPS => CAPS,
            reg::ACQ_TAIL => admin.acq_tail,
            reg::DEV_STS => DEV_STS_READY,
            o if o < reg::SIZE && o % 4 == 0 => admin.reg(o),
            // Outside the modelled space, or unaligned: reads as all ones, like a missing device.
            _ => u32::MAX,
        }
    }

    fn write32(&mut self, offset: u32, value: u32) {
        let vf = self.vf;
        let Ok(i) = self.pf.check(vf) else { return };
        match offset {
            reg::AQ_DB => self.pf.admin_doorbell(vf),
            reg::AENQ_CAPS => {
                self.pf.vfs[i].admin.regs.insert(offset, value);
                self.pf.attach_aenq(vf);
            }
            reg::DEV_CTL if value & 1 != 0 => {
                let _ = self.pf.reset_vf(vf);
                self.pf.vfs[i].admin = AdminState::default();
            }
            o if o < reg::SIZE && o % 4 == 0 => {
                self.pf.vfs[i].admin.regs.insert(o, value);
            }
            _ => {}
        }
    }
}

impl PhysicalFunction {
    fn attach_aenq(&mut self, vf: u16) {
        let i = usize::from(vf);
        let Some(window) = self.vfs[i].window.clone() else { return };
        let admin = &mut self.vfs[i].admin;
        let base = admin.base(reg::AENQ_BASE_LO, reg::AENQ_BASE_HI);
        let Ok(off) =
            window.offset(base, crate::ring::CompletionRing::<AenqEntry>::bytes(AENQ_DEPTH) as u64)
        else {
            return;
        };
        if let Ok(mut aenq) = CompletionProducer::<AenqEntry>::attach(window.region().clone(), off)
        {
            let link_up = AenqEntry {
                group: aenq_group::LINK_CHANGE,
                payload: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ..Default::default()
            };
            let _ = aenq.push(link_up);
            admin.aenq = Some(aenq);
        }
    }

    /// The driver rang `AQ_DB`: attach the admin rings if needed and execute what is posted.
    fn admin_doorbell(&mut self, vf: u16) {
        let i = usize::from(vf);
        let Some(window) = self.vfs[i].window.clone() else { return };
        let admin = &mut self.vfs[i].admin;
        if admin.aq.is_none() || admin.acq.is_none() {
            let aq_at = admin.base(reg::AQ_BASE_LO, reg::AQ_BASE_HI);
            let acq_at = admin.base(reg::ACQ_BASE_LO, reg::ACQ_BASE_HI);
            let aq_bytes = crate::ring::SubmissionRing::<AdminCommand>::bytes(AQ_DEPTH) as u64;
            let acq_bytes = crate::ring::CompletionRing::<AdminCompletion>::bytes(AQ_DEPTH) as u64;
            let (Ok(aq_off), Ok(acq_off)) =
                (window.offset(aq_at, aq_bytes), window.offset(acq_at, acq_bytes))
            else {
                return;
            };
            let region = window.region().clone();
            match (
                SubmissionConsumer::attach(region.clone(), aq_off),
                CompletionProducer::attach(region, acq_off),
            ) {
                (Ok(aq), Ok(acq)) => {
                    admin.aq = Some(aq);
                    admin.acq = Some(acq);
                }
                _ => return,
            }
        }
        let mut commands = [AdminCommand::default(); AQ_DEPTH as usize];
        let n = match self.vfs[i].admin.aq.as_mut() {
            Some(aq) => aq.pop_burst(&mut commands),
            None => 0,
        };
        for cmd in &commands[..n] {
            let (st, words) = self.execute_admin(vf, cmd);
            let admin = &mut self.vfs[i].admin;
            admin.aq_head = admin.aq_head.wrapping_add(1);
            let completion = AdminCompletion {
                command: cmd.command_id & 0x0fff,
                status: st,
                sq_head_indx: admin.aq_head,
                words,
                ..Default::default()
            };
            if admin.acq.as_mut().is_some_and(|acq| acq.push(completion)) {
                admin.acq_tail = admin.acq_tail.wrapping_add(1);
            }
        }
    }

    /// Executes one admin command; returns its status and response words.
    fn execute_admin(&mut self, vf: u16, cmd: &AdminCommand) -> (u8, [u32; 14]) {
        let i = usize::from(vf);
        let w = cmd.words;
        let mut out = [0u32; 14];
        let addr = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
        let st = match cmd.opcode {
            opcode::CREATE_CQ => {
                let admin = &mut self.vfs[i].admin;
                let idx = admin.next_cq;
                admin.next_cq = admin.next_cq.wrapping_add(1);
                admin.cqs.insert(idx, (addr(w[1], w[2]), w[0]));
                out[0] = u32::from(idx);
                status::SUCCESS
            }
            opcode::CREATE_SQ => self.create_sq(vf, w, &mut out),
            opcode::DESTROY_SQ | opcode::DESTROY_CQ => {
                // Queue pairs are destroyed whole, the last one first (indices stay stable).
                let pairs = self.vfs[i].queues.len() as u32;
                let idx = w[0];
                let last = pairs.checked_sub(1);
                let ok = match cmd.opcode {
                    opcode::DESTROY_SQ => last.is_some_and(|q| idx / 2 == q),
                    _ => {
                        self.vfs[i].admin.cqs.remove(&(idx as u16)).is_some()
                            || last.is_some_and(|q| idx / 2 == q)
                    }
                };
                if ok && cmd.opcode == opcode::DESTROY_SQ {
                    self.vfs[i].queues.pop();
                }
                if ok { status::SUCCESS } else { status::ILLEGAL_PARAMETER }
            }
            opcode::GET_FEATURE => self.get_feature(vf, w[0], &mut out),
            opcode::SET_FEATURE => self.set_feature(vf, w),
            opcode::GET_STATS => {
                let (q, _) = self.vfs[i].totals();
                for (k, v) in [q.tx_packets, q.tx_bytes, q.rx_packets, q.rx_bytes, q.rx_drops]
                    .into_iter()
                    .enumerate()
                {
                    out[2 * k] = v as u32;
                    out[2 * k + 1] = (v >> 32) as u32;
                }
                status::SUCCESS
            }
            _ => status::BAD_OPCODE,
        };
        (st, out)
    }

    fn create_sq(&mut self, vf: u16, w: [u32; 15], out: &mut [u32; 14]) -> u8 {
        let i = usize::from(vf);
        let direction = w[0] & 0xff;
        let cq = (w[0] >> 16) as u16;
        let depth = w[1];
        let at = u64::from(w[2]) | u64::from(w[3]) << 32;
        let q = self.vfs[i].queues.len() as u32;
        let admin = &mut self.vfs[i].admin;
        if !admin.cqs.contains_key(&cq) {
            return status::ILLEGAL_PARAMETER;
        }
        match direction {
            1 if admin.pending_tx.is_none() => admin.pending_tx = Some((at, cq, depth)),
            2 if admin.pending_rx.is_none() => admin.pending_rx = Some((at, cq, depth)),
            1 | 2 => return status::ILLEGAL_PARAMETER,
            _ => return status::MALFORMED_REQUEST,
        }
        out[0] = 2 * q + u32::from(direction == 2);
        // A queue pair exists once both of its SQs (and their CQs) do.
        let (Some(tx), Some(rx)) = (admin.pending_tx, admin.pending_rx) else {
            return status::SUCCESS;
        };
        let (Some(&(tx_cq, _)), Some(&(rx_cq, _))) = (admin.cqs.get(&tx.1), admin.cqs.get(&rx.1))
        else {
            return status::ILLEGAL_PARAMETER;
        };
        admin.pending_tx = None;
        admin.pending_rx = None;
        admin.cqs.remove(&tx.1);
        admin.cqs.remove(&rx.1);
        let spec = QueuePairSpec {
            depth: tx.2,
            tx_sq: Iova(tx.0),
            tx_cq: Iova(tx_cq),
            rx_sq: Iova(rx.0),
            rx_cq: Iova(rx_cq),
        };
        match self.create_queue_pair(vf, spec) {
            Ok(_) => status::SUCCESS,
            Err(DeviceError::TooManyQueues { .. }) => status::RESOURCE_ALLOCATION_FAILURE,
            Err(_) => status::ILLEGAL_PARAMETER,
        }
    }

    fn get_feature(&mut self, vf: u16, id: u32, out: &mut [u32; 14]) -> u8 {
        let i = usize::from(vf);
        match id {
            feature::MTU => out[1] = u32::from(self.vfs[i].mtu()),
            feature::DEVICE_ATTRIBUTES => {
                let Ok(port) = self.port(vf) else { return status::ILLEGAL_PARAMETER };
                let m = port.mac.0;
                out[1] = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
                out[2] = u32::from_le_bytes([m[4], m[5], 0, 0]);
            }
            feature::MAX_QUEUES_NUM => {
                out[1] = super::MAX_QUEUE_PAIRS as u32;
                out[2] = crate::ring::MAX_DEPTH;
            }
            feature::INTERRUPT_MODERATION => {
                (out[1], out[2]) = self.vfs[i].moderation_us;
            }
            feature::RSS_HASH_FUNCTION => {
                for (k, chunk) in self.vfs[i].rss.key().chunks(4).enumerate() {
                    out[1 + k] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                }
            }
            _ => return status::UNSUPPORTED_OPCODE,
        }
        out[0] = id;
        status::SUCCESS
    }

    fn set_feature(&mut self, vf: u16, w: [u32; 15]) -> u8 {
        let i = usize::from(vf);
        match w[0] {
            feature::MTU => match u16::try_from(w[1]).ok().map(|mtu| self.set_mtu(vf, mtu)) {
                Some(Ok(())) => status::SUCCESS,
                _ => status::ILLEGAL_PARAMETER,
            },
            feature::DEVICE_ATTRIBUTES => {
                let (a, b) = (w[1].to_le_bytes(), w[2].to_le_bytes());
                let mac = MacAddr([a[0], a[1], a[2], a[3], b[0], b[1]]);
                // Only a trusted VF may change its MAC, never to a group address or to a MAC
                // another VF of this PF has: that would steal its traffic.
                let taken = (0..self.num_vfs())
                    .filter(|&other| other != vf)
                    .any(|other| self.port(other).is_ok_and(|p| p.mac == mac));
                if !self.vfs[i].trusted || mac.is_group() || taken {
                    return status::ILLEGAL_PARAMETER;
                }
                let Ok(mut port) = self.port(vf) else { return status::ILLEGAL_PARAMETER };
                port.mac = mac;
                let _ = self.set_port(vf, port);
                status::SUCCESS
            }
            feature::RSS_HASH_FUNCTION => {
                let mut key = [0u8; crate::rss::RSS_KEY_LEN];
                for (k, chunk) in key.chunks_mut(4).enumerate() {
                    chunk.copy_from_slice(&w[1 + k].to_le_bytes());
                }
                let table = self.vfs[i].indirection.clone();
                let _ = self.set_rss(vf, key, table);
                status::SUCCESS
            }
            feature::RSS_INDIRECTION_TABLE => {
                let queues = self.vfs[i].queues.len().max(1) as u32;
                if w[2] >= queues {
                    return status::ILLEGAL_PARAMETER;
                }
                match self.vfs[i].indirection.set(w[1] as usize, w[2] as u16) {
                    Some(()) => status::SUCCESS,
                    None => status::ILLEGAL_PARAMETER,
                }
            }
            feature::INTERRUPT_MODERATION => {
                self.vfs[i].moderation_us = (w[1], w[2]);
                for queue in &mut self.vfs[i].queues {
                    queue.tx_irq.set_delay(w[1]);
                    queue.rx_irq.set_delay(w[2]);
                }
                status::SUCCESS
            }
            _ => status::UNSUPPORTED_OPCODE,
        }
    }
}
