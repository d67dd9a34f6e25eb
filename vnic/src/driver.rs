//! The guest's side of a queue pair, in the shape of ENA's kernel driver: it lays out the four
//! rings and the packet buffers in guest memory, keeps the TX request-id free list (completions
//! may come back out of order), copies frames into TX buffers and posts descriptors with one
//! doorbell per burst, keeps RX buffers posted, and reaps completions by their phase bit.
//!
//! Layout of one queue pair, from a 128-byte-aligned offset of the guest's memory:
//!
//! ```text
//! TX SQ ring | TX CQ ring | RX SQ ring | RX CQ ring | depth × TX buffer | depth × RX buffer
//! ```
//!
//! Buffers are [`buffer_stride`] apart, an odd number of cache lines (2,112 bytes for 2 KiB
//! buffers), so that they do not all start in the same cache sets.
//!
//! A TX buffer holds a whole frame (up to 9,024 bytes: a 9001-byte MTU plus headers); frames are
//! split into descriptors of at most [`TX_DESC_MAX`] bytes, so jumbo frames use a chain
//! (first … last). An RX buffer is `rx_buf` bytes (2 KiB by default); the device spreads a larger
//! frame over several buffers and the driver gathers them.
//!
//! With a low-latency queue ([`QueuePairDriver::use_llq`]) the TX ring is in the device's LLQ
//! BAR instead: each frame's descriptors and first 96 (or 224) bytes go into its entry, the rest
//! into the TX buffer. The admin path ([`AdminDriver`]) brings a function up as ENA's driver does
//! and creates queues, RSS and statistics through `crate::abi`, the only thing it shares with the
//! device.

use std::sync::Arc;

use crate::abi::io::{RxCompletion, RxDesc, TxCompletion, TxDesc, rx_cq_field, sq_phase};
use crate::abi::llq::{DESCS_BEFORE_HEADER, Entry128, Entry192, Entry256, LlqEntry, entries_for};
use crate::device::{DmaWindow, QueuePairSpec};
use crate::ring::{
    CompletionConsumer, CompletionRing, INDEX_BLOCK_BYTES, RingError, SharedRegion,
    SubmissionProducer, SubmissionRing,
};

/// Largest buffer one TX descriptor carries.
pub const TX_DESC_MAX: usize = 4096;
/// Bytes of one TX buffer (a whole jumbo frame).
pub const TX_BUF: usize = 9024;

fn align(n: usize) -> usize {
    n.div_ceil(128) * 128
}

/// The distance between two packet buffers of `size` bytes: whole cache lines, an odd number of
/// them. Buffers a power of two apart (2 KiB) start in the same few cache sets: a 48 KiB
/// 12-way L1 has 64 sets, so 2 KiB-apart buffers' first lines fall into 2 of them (room for 24
/// lines, fewer than a burst's 32 TX and 32 RX buffers), and of a 2 MiB 16-way L2's 2048 sets
/// they use 32, room for 512 of a 1024-deep queue pair's 2048 buffers. An odd number of lines apart, consecutive buffers start in consecutive sets, as DPDK's
/// mempool spaces its objects: a 2 KiB buffer takes 33 lines (2,112 bytes), 3% more memory.
/// For the model's device, which reaches guest memory through one contiguous mapping; a
/// driver for a device that DMAs page by page keeps each buffer inside a page (see
/// `igbvf::BUF_BYTES`: the lab's QEMU igb dropped frames from straddling buffers).
pub const fn buffer_stride(size: usize) -> usize {
    let lines = size.div_ceil(64);
    (lines | 1) * 64
}

/// Where a queue pair's rings and buffers sit in guest memory (offsets from the region start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePairLayout {
    /// Ring depth.
    pub depth: u32,
    /// TX buffer size (the largest frame the driver sends).
    pub tx_buf: usize,
    /// RX buffer size.
    pub rx_buf: usize,
    /// TX submission ring.
    pub tx_sq: usize,
    /// TX completion ring.
    pub tx_cq: usize,
    /// RX submission ring.
    pub rx_sq: usize,
    /// RX completion ring.
    pub rx_cq: usize,
    /// First TX buffer.
    pub tx_bufs: usize,
    /// First RX buffer.
    pub rx_bufs: usize,
    /// One past the last byte.
    pub end: usize,
}

impl QueuePairLayout {
    /// A layout starting at `offset` (rounded up to 128) with jumbo-sized TX buffers.
    pub fn new(offset: usize, depth: u32, rx_buf: usize) -> Self {
        Self::with_buffers(offset, depth, TX_BUF, rx_buf)
    }

    /// A layout with TX buffers of `tx_buf` bytes (at most [`TX_BUF`]): drivers for a 1500-byte
    /// MTU use 2 KiB, which keeps a 1024-deep ring's buffers in 2 MiB rather than 9 MiB.
    pub fn with_buffers(offset: usize, depth: u32, tx_buf: usize, rx_buf: usize) -> Self {
        let d = depth as usize;
        let tx_buf = tx_buf.clamp(64, TX_BUF);
        let tx_sq = align(offset);
        let tx_cq = tx_sq + SubmissionRing::<TxDesc>::bytes(depth);
        let rx_sq = tx_cq + CompletionRing::<TxCompletion>::bytes(depth);
        let rx_cq = rx_sq + SubmissionRing::<RxDesc>::bytes(depth);
        let tx_bufs = rx_cq + CompletionRing::<RxCompletion>::bytes(depth);
        let rx_bufs = align(tx_bufs + d * buffer_stride(tx_buf));
        let end = align(rx_bufs + d * buffer_stride(rx_buf));
        Self { depth, tx_buf, rx_buf, tx_sq, tx_cq, rx_sq, rx_cq, tx_bufs, rx_bufs, end }
    }

    /// Where TX buffer `id` starts (an offset in guest memory): [`buffer_stride`] apart.
    pub fn tx_buffer(&self, id: u16) -> usize {
        self.tx_bufs + usize::from(id) * buffer_stride(self.tx_buf)
    }

    /// Where RX buffer `id` starts (an offset in guest memory): [`buffer_stride`] apart.
    pub fn rx_buffer(&self, id: u16) -> usize {
        self.rx_bufs + usize::from(id) * buffer_stride(self.rx_buf)
    }

    /// The rings' addresses as the device sees them through `window`.
    pub fn spec(&self, window: &DmaWindow) -> QueuePairSpec {
        QueuePairSpec {
            depth: self.depth,
            tx_sq: window.iova(self.tx_sq),
            tx_cq: window.iova(self.tx_cq),
            rx_sq: window.iova(self.rx_sq),
            rx_cq: window.iova(self.rx_cq),
        }
    }
}

/// Why the driver could not set a queue pair up.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A ring could not be laid out.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The layout does not fit in guest memory.
    #[error("queue pair needs {needed} bytes of guest memory, the window has {have}")]
    TooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        have: u64,
    },
    /// The RX buffer size is not 64..=65536.
    #[error("RX buffer of {0} bytes: must be 64 to 65536")]
    RxBuffer(usize),
}

/// Where the driver posts TX descriptors: its own memory, or the device's LLQ BAR.
#[derive(Debug)]
enum TxProducer {
    Host(SubmissionProducer<TxDesc>),
    Llq128(SubmissionProducer<Entry128>),
    Llq192(SubmissionProducer<Entry192>),
    Llq256(SubmissionProducer<Entry256>),
}

/// An LLQ entry type and its producer in [`TxProducer`].
trait LlqRing: LlqEntry {
    fn producer(tx: &mut TxProducer) -> Option<&mut SubmissionProducer<Self>>;
}

impl LlqRing for Entry128 {
    fn producer(tx: &mut TxProducer) -> Option<&mut SubmissionProducer<Self>> {
        if let TxProducer::Llq128(p) = tx { Some(p) } else { None }
    }
}

impl LlqRing for Entry192 {
    fn producer(tx: &mut TxProducer) -> Option<&mut SubmissionProducer<Self>> {
        if let TxProducer::Llq192(p) = tx { Some(p) } else { None }
    }
}

impl LlqRing for Entry256 {
    fn producer(tx: &mut TxProducer) -> Option<&mut SubmissionProducer<Self>> {
        if let TxProducer::Llq256(p) = tx { Some(p) } else { None }
    }
}

/// Counters the driver keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames handed to the device.
    pub tx_posted: u64,
    /// TX completions reaped with success.
    pub tx_completed: u64,
    /// TX completions reaped with an error status.
    pub tx_errors: u64,
    /// TX completions naming a request id not in flight (ignored).
    pub tx_bogus_completions: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// RX buffers returned with a drop status or outside a frame.
    pub rx_errors: u64,
}

/// The driver's end of one queue pair.
#[derive(Debug)]
pub struct QueuePairDriver {
    window: DmaWindow,
    layout: QueuePairLayout,
    tx: TxProducer,
    tx_cq: CompletionConsumer<TxCompletion>,
    rx_sq: SubmissionProducer<RxDesc>,
    rx_cq: CompletionConsumer<RxCompletion>,
    tx_free: Vec<u16>,
    tx_in_flight: Vec<bool>,
    rx_posted: Vec<bool>,
    /// RX request ids whose buffers are back with the driver, to post again.
    rx_unposted: Vec<u16>,
    rx_frame: Vec<u8>,
    rx_in_frame: bool,
    stats: DriverStats,
}

impl QueuePairDriver {
    /// Lays out the rings of `layout` in the guest memory behind `window` and attaches to them.
    pub fn create(window: DmaWindow, layout: QueuePairLayout) -> Result<Self, DriverError> {
        Self::init_rings(&window, &layout)?;
        Self::attach(window, layout)
    }

    /// Lays out (initialises) the four rings of `layout` without attaching to them: a
    /// hypervisor does this before the device attaches, when the driver runs in another process.
    pub fn init_rings(window: &DmaWindow, layout: &QueuePairLayout) -> Result<(), DriverError> {
        Self::lay_out(window, layout, false)
    }

    fn lay_out(
        window: &DmaWindow,
        layout: &QueuePairLayout,
        owner: bool,
    ) -> Result<(), DriverError> {
        Self::check_layout(window, layout)?;
        let (r, d) = (window.region(), layout.depth);
        if owner {
            SubmissionRing::<TxDesc>::reinit(r, layout.tx_sq, d)?;
            CompletionRing::<TxCompletion>::reinit(r, layout.tx_cq, d)?;
            SubmissionRing::<RxDesc>::reinit(r, layout.rx_sq, d)?;
            CompletionRing::<RxCompletion>::reinit(r, layout.rx_cq, d)?;
        } else {
            SubmissionRing::<TxDesc>::init(r, layout.tx_sq, d)?;
            CompletionRing::<TxCompletion>::init(r, layout.tx_cq, d)?;
            SubmissionRing::<RxDesc>::init(r, layout.rx_sq, d)?;
            CompletionRing::<RxCompletion>::init(r, layout.rx_cq, d)?;
        }
        Ok(())
    }

    /// [`Self::init_rings`] as the memory's owner: a hypervisor (re)provisioning a stopped VM
    /// lays the rings out whatever the guest left in their headers (forged end claims
    /// included), so a guest can never make its VM unstartable.
    pub fn reinit_rings(window: &DmaWindow, layout: &QueuePairLayout) -> Result<(), DriverError> {
        Self::lay_out(window, layout, true)
    }

    /// [`Self::create`] as the memory's owner (see [`Self::reinit_rings`]).
    pub fn recreate(window: DmaWindow, layout: QueuePairLayout) -> Result<Self, DriverError> {
        Self::reinit_rings(&window, &layout)?;
        Self::attach(window, layout)
    }

    /// Where its rings and buffers are in the guest's memory.
    pub fn layout(&self) -> &QueuePairLayout {
        &self.layout
    }

    /// The guest memory it drives.
    pub fn window(&self) -> &DmaWindow {
        &self.window
    }

    fn check_layout(window: &DmaWindow, layout: &QueuePairLayout) -> Result<(), DriverError> {
        if layout.end as u64 > window.size() {
            return Err(DriverError::TooSmall { needed: layout.end, have: window.size() });
        }
        if !(64..=65536).contains(&layout.rx_buf) {
            return Err(DriverError::RxBuffer(layout.rx_buf));
        }
        Ok(())
    }

    /// Attaches to rings of `layout` laid out already (by [`Self::init_rings`], possibly in
    /// another process); every buffer starts free and no RX buffer is posted.
    pub fn attach(window: DmaWindow, layout: QueuePairLayout) -> Result<Self, DriverError> {
        Self::check_layout(&window, &layout)?;
        let r = window.region();
        let depth = layout.depth as usize;
        let d = layout.depth;
        Ok(Self {
            tx: TxProducer::Host(SubmissionProducer::attach(r.clone(), layout.tx_sq)?),
            tx_cq: CompletionConsumer::attach(r.clone(), layout.tx_cq)?,
            rx_sq: SubmissionProducer::attach(r.clone(), layout.rx_sq)?,
            rx_cq: CompletionConsumer::attach(r.clone(), layout.rx_cq)?,
            window,
            layout,
            tx_free: (0..d as u16).rev().collect(),
            tx_in_flight: vec![false; depth],
            rx_posted: vec![false; depth],
            rx_unposted: (0..d as u16).rev().collect(),
            rx_frame: Vec::with_capacity(TX_BUF),
            rx_in_frame: false,
            stats: DriverStats::default(),
        })
    }

    /// The rings' addresses, for the device's create-queue command.
    pub fn spec(&self) -> QueuePairSpec {
        self.layout.spec(&self.window)
    }

    /// Counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// TX request ids free.
    pub fn tx_free(&self) -> usize {
        self.tx_free.len()
    }

    /// Posts every RX buffer not posted yet, in place and with one doorbell; returns how many.
    pub fn refill_rx(&mut self) -> usize {
        let len = (self.layout.rx_buf % 65536) as u16; // ENA: 0 stands for 64 KiB
        let depth = self.layout.depth;
        let mut res = self.rx_sq.reserve_up_to(self.rx_unposted.len());
        let n = res.len();
        for i in 0..n {
            let Some(id) = self.rx_unposted.pop() else { break };
            let addr = self.window.iova(self.layout.rx_buffer(id));
            let phase = sq_phase(res.position(i), depth);
            res.set(i, RxDesc::new(addr.0, len, id).with_phase(phase));
            self.rx_posted[usize::from(id)] = true;
        }
        res.commit();
        n
    }

    /// Moves the TX queue into device memory: from now on frames are posted as low-latency
    /// queue entries into the ring at `entry0` (an offset in the LLQ BAR `bar`, as `CREATE_SQ`
    /// answered), with entries of `entry_bytes` (128, 192 or 256).
    pub fn use_llq(
        &mut self,
        bar: Arc<SharedRegion>,
        entry0: usize,
        entry_bytes: usize,
    ) -> Result<(), DriverError> {
        let at = entry0
            .checked_sub(INDEX_BLOCK_BYTES)
            .ok_or(RingError::Misaligned { offset: entry0 })?;
        self.tx = match entry_bytes {
            Entry256::BYTES => TxProducer::Llq256(SubmissionProducer::attach(bar, at)?),
            Entry192::BYTES => TxProducer::Llq192(SubmissionProducer::attach(bar, at)?),
            _ => TxProducer::Llq128(SubmissionProducer::attach(bar, at)?),
        };
        Ok(())
    }

    /// Whether frames go out through a low-latency queue.
    pub fn is_llq(&self) -> bool {
        !matches!(self.tx, TxProducer::Host(_))
    }

    /// Copies each frame into a TX buffer and posts them all in place with one doorbell; returns
    /// how many were taken (fewer if request ids or ring slots run out, or a frame is empty or
    /// larger than a TX buffer). Descriptors are ENA's driver's: each with the ring's phase, a
    /// chain's first one with `first`, `comp_req` and the request id, its last with `last`. On
    /// a low-latency queue a frame's first bytes go into its entry as the header and only the
    /// rest into the TX buffer.
    pub fn send_burst(&mut self, frames: &[&[u8]]) -> usize {
        let taken = match self.tx {
            TxProducer::Host(_) => self.send_host(frames),
            TxProducer::Llq128(_) => self.send_llq::<Entry128>(frames),
            TxProducer::Llq192(_) => self.send_llq::<Entry192>(frames),
            TxProducer::Llq256(_) => self.send_llq::<Entry256>(frames),
        };
        self.stats.tx_posted += taken as u64;
        taken
    }

    fn send_host(&mut self, frames: &[&[u8]]) -> usize {
        let TxProducer::Host(ring) = &mut self.tx else { return 0 };
        let want: usize = frames.iter().map(|f| f.len().div_ceil(TX_DESC_MAX)).sum();
        let mut res = ring.reserve_up_to(want);
        let room = res.len();
        let (mut used, mut taken) = (0, 0);
        for frame in frames {
            let chain = frame.len().div_ceil(TX_DESC_MAX);
            if frame.is_empty() || frame.len() > self.layout.tx_buf || used + chain > room {
                break;
            }
            let Some(req_id) = self.tx_free.pop() else { break };
            let base = self.window.iova(self.layout.tx_buffer(req_id)).0;
            if self.window.write(base, frame).is_err() {
                self.tx_free.push(req_id);
                break;
            }
            for (i, off) in (0..frame.len()).step_by(TX_DESC_MAX).enumerate() {
                let len = (frame.len() - off).min(TX_DESC_MAX);
                let first = i == 0;
                let desc =
                    TxDesc::new(base + off as u64, len as u16, if first { req_id } else { 0 })
                        .with_first(first)
                        .with_comp_req(first)
                        .with_last(i + 1 == chain)
                        .with_phase(sq_phase(res.position(used), self.layout.depth));
                res.set(used, desc);
                used += 1;
            }
            self.tx_in_flight[usize::from(req_id)] = true;
            taken += 1;
        }
        res.commit_first(used);
        taken
    }

    fn send_llq<E: LlqRing>(&mut self, frames: &[&[u8]]) -> usize {
        let Some(ring) = E::producer(&mut self.tx) else { return 0 };
        let header_room = E::header_room();
        // The first descriptor carries the header and the first buffer of the rest.
        let descs_of = |len: usize| len.saturating_sub(header_room).div_ceil(TX_DESC_MAX).max(1);
        let want: usize = frames.iter().map(|f| entries_for::<E>(descs_of(f.len()))).sum();
        let mut res = ring.reserve_up_to(want);
        let room = res.len();
        let depth = self.layout.depth;
        let (mut used, mut taken) = (0, 0);
        for frame in frames {
            let descs = descs_of(frame.len());
            let entries = entries_for::<E>(descs);
            if frame.is_empty() || frame.len() > self.layout.tx_buf || used + entries > room {
                break;
            }
            let Some(req_id) = self.tx_free.pop() else { break };
            let header = frame.len().min(header_room);
            let rest = &frame[header..];
            let base = self.window.iova(self.layout.tx_buffer(req_id)).0;
            if !rest.is_empty() && self.window.write(base, rest).is_err() {
                self.tx_free.push(req_id);
                break;
            }
            let mut entry = E::zeroed();
            entry.header_mut()[..header].copy_from_slice(&frame[..header]);
            let (mut e, mut slot) = (0, 0);
            for i in 0..descs {
                let cap = if e == 0 { DESCS_BEFORE_HEADER } else { E::descs_per_entry() };
                if slot == cap {
                    res.set(used + e, entry);
                    (entry, e, slot) = (E::zeroed(), e + 1, 0);
                }
                let off = i * TX_DESC_MAX;
                let len = rest.len().saturating_sub(off).min(TX_DESC_MAX);
                let addr = if len > 0 { base + off as u64 } else { 0 };
                let mut d = TxDesc::new(addr, len as u16, if i == 0 { req_id } else { 0 })
                    .with_last(i + 1 == descs)
                    .with_phase(sq_phase(res.position(used + e), depth));
                if i == 0 {
                    d = d.with_first(true).with_comp_req(true).with_header_len(header as u8);
                }
                entry.set_desc(slot, d);
                slot += 1;
            }
            res.set(used + e, entry);
            used += entries;
            self.tx_in_flight[usize::from(req_id)] = true;
            taken += 1;
        }
        res.commit_first(used);
        taken
    }

    /// Reaps TX completions, returning their request ids to the free list; returns how many.
    pub fn reap_tx(&mut self) -> usize {
        if !self.tx_cq.has_ready() {
            return 0;
        }
        let mut done = [TxCompletion::default(); 64];
        let n = self.tx_cq.pop_burst(&mut done);
        for c in &done[..n] {
            let id = usize::from(c.req_id);
            if id >= self.tx_in_flight.len() || !std::mem::take(&mut self.tx_in_flight[id]) {
                self.stats.tx_bogus_completions += 1;
                continue;
            }
            if c.status == 0 {
                self.stats.tx_completed += 1;
            } else {
                self.stats.tx_errors += 1;
            }
            self.tx_free.push(c.req_id);
        }
        n
    }

    /// Returns request ids the device handed back on a reset to the free list.
    pub fn reclaim_tx(&mut self, req_ids: &[u16]) {
        for &id in req_ids {
            if let Some(flag) = self.tx_in_flight.get_mut(usize::from(id))
                && std::mem::take(flag)
            {
                self.tx_free.push(id);
            }
        }
    }

    /// Reaps RX completions, gathering multi-buffer frames, calling `each(frame, rss_hash)` per
    /// whole frame, and reposting the buffers; returns the frames received.
    pub fn recv(&mut self, mut each: impl FnMut(&[u8], u32)) -> usize {
        if !self.rx_cq.has_ready() {
            return 0;
        }
        let mut done = [RxCompletion::default(); 64];
        let n = self.rx_cq.pop_burst(&mut done);
        let mut frames = 0;
        for c in &done[..n] {
            let id = c.req_id;
            if usize::from(id) >= self.rx_posted.len()
                || !std::mem::take(&mut self.rx_posted[usize::from(id)])
            {
                self.stats.rx_errors += 1;
                continue;
            }
            self.rx_unposted.push(id);
            let dropped = c.status & crate::device::RX_STATUS_DROPPED != 0;
            let buf = self.layout.rx_buffer(id);
            let whole = rx_cq_field::FIRST | rx_cq_field::LAST;
            if !dropped && c.status & whole == whole {
                // A frame in one buffer is handed over in place, as a NIC driver passes up the
                // page it DMA'd into.
                let len = usize::from(c.length).min(self.layout.rx_buf);
                // SAFETY: the device completed this buffer and it is not posted again until
                // `refill_rx` below, after `each` has returned; nothing else writes it.
                match unsafe { self.window.view(self.window.iova(buf).0, len) } {
                    Ok(frame) => {
                        self.stats.rx_frames += 1;
                        frames += 1;
                        each(frame, c.hash);
                    }
                    Err(_) => self.stats.rx_errors += 1,
                }
                self.rx_in_frame = false;
                continue;
            }
            if c.status & rx_cq_field::FIRST != 0 {
                self.rx_frame.clear();
                self.rx_in_frame = true;
            }
            let len = usize::from(c.length).min(self.layout.rx_buf);
            let start = self.rx_frame.len();
            self.rx_frame.resize(start + len, 0);
            let ok = !dropped
                && self.rx_in_frame
                && self.window.read(self.window.iova(buf).0, &mut self.rx_frame[start..]).is_ok();
            if !ok {
                self.stats.rx_errors += 1;
                self.rx_in_frame = false;
                continue;
            }
            if c.status & rx_cq_field::LAST != 0 {
                self.rx_in_frame = false;
                self.stats.rx_frames += 1;
                frames += 1;
                each(&self.rx_frame, c.hash);
            }
        }
        if n > 0 {
            self.refill_rx();
        }
        frames
    }
}

// ---------------------------------------------------------------------------------------------
// The admin path.

use crate::abi::admin::{
    self, AenqConfig, BasicStats, Command, Completion, CompletionPolicy, ControlBuffer, CreateCq,
    CreateCqResponse, CreateSq, CreateSqResponse, DeviceAttributes, Direction, EniStats, Entry,
    GetFeature, GetStats, HwHints, LlqInfo, MaxQueuesExt, Placement, ResponseBody, RssHashKey,
    SetFeature, SrdInfo, feature, stats_type,
};
use crate::abi::aenq::{self, AenqEntry, Event};
use crate::abi::regs::{self, ReadlessResponse, RegisterSpace, dev_ctl, dev_sts, reset_reason};

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The device answered with a non-zero status.
    #[error("admin command {opcode} failed with status {status}")]
    Status {
        /// The opcode.
        opcode: u8,
        /// ENA's status code.
        status: u8,
    },
    /// No completion came back.
    #[error("admin command {0} got no completion")]
    NoCompletion(u8),
    /// A completion answered another command.
    #[error("admin completion for command {got}, expected {expected}")]
    WrongCompletion {
        /// The command posted.
        expected: u16,
        /// The id in the completion.
        got: u16,
    },
    /// A readless register read got no answer.
    #[error("readless read of register {offset:#x} got no answer")]
    ReadlessTimeout {
        /// The register.
        offset: u32,
    },
    /// `DEV_STS` did not say ready.
    #[error("the device is not ready (DEV_STS {0:#x})")]
    NotReady(u32),
    /// The reset handshake did not complete.
    #[error("reset: {0}")]
    Reset(&'static str),
    /// The device does not offer a feature the driver needs.
    #[error("the device does not support feature {0}")]
    Unsupported(u8),
    /// No keep-alive event for longer than the watchdog allows: reset the function.
    #[error("no keep-alive for {elapsed_ms} ms (watchdog {timeout_ms} ms)")]
    KeepAliveTimeout {
        /// Since the last keep-alive.
        elapsed_ms: u64,
        /// The watchdog.
        timeout_ms: u64,
    },
    /// The admin memory is outside the window.
    #[error(transparent)]
    Dma(#[from] crate::device::DmaError),
    /// The low-latency queue the device answered with is not a ring in its BAR.
    #[error("the LLQ ring the device gave: {0}")]
    Llq(RingError),
}

/// What the driver learnt about the device at bring-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `VERSION`.
    pub version: u32,
    /// `CONTROLLER_VERSION`.
    pub controller_version: u32,
    /// DMA address width from `CAPS`.
    pub dma_width: u32,
    /// `DEVICE_ATTRIBUTES`.
    pub attributes: DeviceAttributes,
    /// `MAX_QUEUES_EXT`.
    pub max_queues: MaxQueuesExt,
    /// `HW_HINTS` (zeros if the device gives none).
    pub hints: HwHints,
    /// The async event groups enabled.
    pub aenq_groups: u32,
    /// `LLQ`, if the device offers low-latency queues.
    pub llq: Option<LlqInfo>,
}

impl DeviceInfo {
    /// Whether the device answers feature `id`.
    pub fn supports(&self, id: u8) -> bool {
        self.attributes.supported_features & (1 << id) != 0
    }
}

/// The device's queues of one queue pair, as admin commands created them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoQueues {
    /// TX SQ index (2q).
    pub tx_sq: u16,
    /// RX SQ index (2q + 1).
    pub rx_sq: u16,
    /// TX CQ index.
    pub tx_cq: u16,
    /// RX CQ index (what the indirection table names).
    pub rx_cq: u16,
    /// TX doorbell offset in BAR0.
    pub tx_doorbell: u32,
    /// RX doorbell offset in BAR0.
    pub rx_doorbell: u32,
}

impl IoQueues {
    fn of(
        (tx_cq, tx_sq): (CreateCqResponse, CreateSqResponse),
        (rx_cq, rx_sq): (CreateCqResponse, CreateSqResponse),
    ) -> Self {
        Self {
            tx_sq: tx_sq.sq_idx,
            rx_sq: rx_sq.sq_idx,
            tx_cq: tx_cq.cq_idx,
            rx_cq: rx_cq.cq_idx,
            tx_doorbell: tx_sq.sq_doorbell_offset,
            rx_doorbell: rx_sq.sq_doorbell_offset,
        }
    }
}

/// Where the admin memory sits in guest memory (offsets from the window's start).
#[derive(Debug, Clone, Copy)]
struct AdminLayout {
    aq: usize,
    acq: usize,
    aenq: usize,
    readless: usize,
    control: usize,
}

/// Bytes of the control buffer the driver keeps for RSS and statistics.
const CONTROL_BYTES: usize = 4096;
/// Polls of a completion, a readless answer or `DEV_STS` before giving up. The modelled device
/// answers on the register write; a real one within its timeout.
const POLLS: usize = 1000;
/// Async event groups the driver asks for (ENA's driver asks for all five).
const WANTED_AENQ_GROUPS: u32 = admin::AENQ_ALL_GROUPS;

/// The driver's admin queue, admin completion queue and async event queue, used as ENA's
/// driver uses them.
#[derive(Debug)]
pub struct AdminDriver {
    window: DmaWindow,
    layout: AdminLayout,
    /// Running admin queue tail and completion head, and events consumed.
    aq_tail: u32,
    acq_head: u32,
    aenq_head: u32,
    next_id: u16,
    readless_seq: u16,
    info: Option<DeviceInfo>,
    last_keep_alive_ns: Option<u64>,
}

fn slot(base: usize, depth: u16, position: u32) -> (usize, bool) {
    let depth = u32::from(depth);
    (base + (position % depth) as usize * 64, sq_phase(position, depth))
}

impl AdminDriver {
    /// Bytes the admin memory takes in guest memory.
    pub const BYTES: usize = (admin::AQ_DEPTH as usize + admin::AQ_DEPTH as usize) * 64
        + admin::AENQ_DEPTH as usize * 64
        + 64
        + CONTROL_BYTES;

    /// Brings the function up as ENA's driver does at probe (`ena_device_init`): the readless
    /// address, a reset (`DEV_CTL` held until `DEV_STS` says reset in progress, then released
    /// until it says ready), the versions and DMA width, the admin and event queues, the
    /// device attributes, queue limits and hints, the event groups, and the event queue opened.
    /// The admin memory is laid out at `offset` (rounded up to 128) of guest memory.
    pub fn bring_up(
        window: DmaWindow,
        offset: usize,
        regs: &mut impl RegisterSpace,
    ) -> Result<Self, AdminError> {
        let aq = align(offset);
        let acq = aq + usize::from(admin::AQ_DEPTH) * 64;
        let aenq = acq + usize::from(admin::AQ_DEPTH) * 64;
        let readless = aenq + usize::from(admin::AENQ_DEPTH) * 64;
        let control = readless + 64;
        if (control + CONTROL_BYTES) as u64 > window.size() {
            return Err(AdminError::Dma(crate::device::DmaError {
                iova: window.iova(aq).0,
                len: Self::BYTES as u64,
                base: window.base().0,
                size: window.size(),
            }));
        }
        let mut driver = Self {
            window,
            layout: AdminLayout { aq, acq, aenq, readless, control },
            aq_tail: 0,
            acq_head: 0,
            aenq_head: 0,
            next_id: 0,
            readless_seq: 0,
            info: None,
            last_keep_alive_ns: None,
        };
        driver.write_readless_address(regs);
        driver.reset(regs, reset_reason::NORMAL)?;
        let version = driver.read_register(regs, regs::VERSION)?;
        let controller_version = driver.read_register(regs, regs::CONTROLLER_VERSION)?;
        let caps = driver.read_register(regs, regs::CAPS)?;
        let dma_width =
            (caps & regs::caps::DMA_ADDR_WIDTH_MASK) >> regs::caps::DMA_ADDR_WIDTH_SHIFT;
        let attributes: DeviceAttributes = driver.get_feature(regs, feature::DEVICE_ATTRIBUTES)?;
        let supports = |id: u8| attributes.supported_features & (1 << id) != 0;
        if !supports(feature::MAX_QUEUES_EXT) {
            return Err(AdminError::Unsupported(feature::MAX_QUEUES_EXT));
        }
        let max_queues: MaxQueuesExt = driver.get_feature(regs, feature::MAX_QUEUES_EXT)?;
        let hints: HwHints = if supports(feature::HW_HINTS) {
            driver.get_feature(regs, feature::HW_HINTS)?
        } else {
            HwHints::default()
        };
        let llq = if supports(feature::LLQ) {
            Some(driver.get_feature::<LlqInfo>(regs, feature::LLQ)?)
        } else {
            None
        };
        let aenq_config: AenqConfig = driver.get_feature(regs, feature::AENQ_CONFIG)?;
        let aenq_groups = aenq_config.supported_groups & WANTED_AENQ_GROUPS;
        driver.set_feature(regs, SetFeature::AenqConfig { enabled_groups: aenq_groups })?;
        driver.info = Some(DeviceInfo {
            version,
            controller_version,
            dma_width,
            attributes,
            max_queues,
            hints,
            aenq_groups,
            llq,
        });
        // Open the event queue: every entry is the device's to write.
        regs.write32(regs::AENQ_HEAD_DB, u32::from(admin::AENQ_DEPTH));
        Ok(driver)
    }

    /// What bring-up learnt.
    pub fn info(&self) -> Option<&DeviceInfo> {
        self.info.as_ref()
    }

    fn write_readless_address(&self, regs: &mut impl RegisterSpace) {
        let at = self.window.iova(self.layout.readless).0;
        regs.write32(regs::MMIO_RESP_LO, at as u32);
        regs.write32(regs::MMIO_RESP_HI, (at >> 32) as u32);
    }

    /// Reads a register readless: the request goes to `MMIO_REG_READ`, the answer comes back
    /// in guest memory with the request id.
    pub fn read_register(
        &mut self,
        regs: &mut impl RegisterSpace,
        offset: u32,
    ) -> Result<u32, AdminError> {
        self.readless_seq = self.readless_seq.wrapping_add(1);
        let seq = self.readless_seq;
        let at = self.window.iova(self.layout.readless).0;
        // A stale id, so that an answer is seen only once it is written.
        let stale = ReadlessResponse { req_id: seq.wrapping_add(0xdead), ..Default::default() };
        self.window.write(at, &stale.encode())?;
        regs.write32(regs::MMIO_REG_READ, regs::readless_request(offset, seq));
        for _ in 0..POLLS {
            let mut bytes = [0u8; ReadlessResponse::BYTES];
            self.window.read(at, &mut bytes)?;
            let answer = ReadlessResponse::decode(&bytes);
            if answer.req_id == seq {
                if u32::from(answer.reg_off) != offset {
                    return Err(AdminError::ReadlessTimeout { offset });
                }
                return Ok(answer.reg_val);
            }
            std::hint::spin_loop();
        }
        Err(AdminError::ReadlessTimeout { offset })
    }

    fn wait_for_reset_state(
        &mut self,
        regs: &mut impl RegisterSpace,
        in_progress: bool,
    ) -> Result<u32, AdminError> {
        for _ in 0..POLLS {
            let sts = self.read_register(regs, regs::DEV_STS)?;
            if (sts & dev_sts::RESET_IN_PROGRESS != 0) == in_progress {
                return Ok(sts);
            }
        }
        Err(AdminError::Reset(if in_progress {
            "the reset indication did not turn on"
        } else {
            "the reset indication did not turn off"
        }))
    }

    /// Resets the function (`ena_com_dev_reset`) and sets the admin queues up again; every IO
    /// queue is gone after it. `reason` goes into `DEV_CTL` 31:28 ([`reset_reason`]).
    pub fn reset(&mut self, regs: &mut impl RegisterSpace, reason: u32) -> Result<(), AdminError> {
        // The function may have been reset under the driver (which forgets the address).
        self.write_readless_address(regs);
        let sts = self.read_register(regs, regs::DEV_STS)?;
        if sts & dev_sts::READY == 0 {
            return Err(AdminError::NotReady(sts));
        }
        regs.write32(regs::DEV_CTL, dev_ctl::DEV_RESET | reason << dev_ctl::RESET_REASON_SHIFT);
        // The reset forgot the readless address.
        self.write_readless_address(regs);
        self.wait_for_reset_state(regs, true)?;
        regs.write32(regs::DEV_CTL, 0);
        let sts = self.wait_for_reset_state(regs, false)?;
        if sts & dev_sts::READY == 0 {
            return Err(AdminError::NotReady(sts));
        }
        self.init_queues(regs)?;
        if self.info.is_some() {
            regs.write32(regs::AENQ_HEAD_DB, u32::from(admin::AENQ_DEPTH));
        }
        Ok(())
    }

    /// Zeroes the admin memory and writes the queues' addresses and sizes (`ena_com_admin_init`).
    fn init_queues(&mut self, regs: &mut impl RegisterSpace) -> Result<(), AdminError> {
        let l = self.layout;
        let zeros = vec![0u8; l.readless - l.aq];
        self.window.write(self.window.iova(l.aq).0, &zeros)?;
        (self.aq_tail, self.acq_head, self.aenq_head) = (0, 0, 0);
        self.last_keep_alive_ns = None;
        let caps = |depth: u16| u32::from(depth) | 64 << regs::queue_caps::ENTRY_SIZE_SHIFT;
        for (lo, hi, at) in [
            (regs::AQ_BASE_LO, regs::AQ_BASE_HI, l.aq),
            (regs::ACQ_BASE_LO, regs::ACQ_BASE_HI, l.acq),
            (regs::AENQ_BASE_LO, regs::AENQ_BASE_HI, l.aenq),
        ] {
            let iova = self.window.iova(at).0;
            regs.write32(lo, iova as u32);
            regs.write32(hi, (iova >> 32) as u32);
        }
        regs.write32(regs::AQ_CAPS, caps(admin::AQ_DEPTH));
        regs.write32(regs::ACQ_CAPS, caps(admin::AQ_DEPTH));
        regs.write32(regs::AENQ_CAPS, caps(admin::AENQ_DEPTH));
        Ok(())
    }

    /// Posts one command, rings the doorbell with the running tail, and waits for its
    /// completion; a non-zero status is an error.
    pub fn execute(
        &mut self,
        regs: &mut impl RegisterSpace,
        command: &Command,
    ) -> Result<Completion, AdminError> {
        let opcode = command.opcode();
        let c = self.post(regs, |id, phase| command.encode(id, phase))?;
        if c.status != admin::status::SUCCESS {
            return Err(AdminError::Status { opcode, status: c.status });
        }
        Ok(c)
    }

    /// Posts an entry of arbitrary bytes (its command id and phase set by the driver) and
    /// returns the completion whatever its status: how a test plays a buggy or hostile driver.
    pub fn execute_raw(
        &mut self,
        regs: &mut impl RegisterSpace,
        mut entry: Entry,
    ) -> Result<Completion, AdminError> {
        self.post(regs, |id, phase| {
            entry[0..2].copy_from_slice(&id.to_le_bytes());
            entry[3] = (entry[3] & !admin::flags::PHASE) | u8::from(phase);
            entry
        })
    }

    fn post(
        &mut self,
        regs: &mut impl RegisterSpace,
        encode: impl FnOnce(u16, bool) -> Entry,
    ) -> Result<Completion, AdminError> {
        let id = self.next_id & admin::COMMAND_ID_MASK;
        self.next_id = self.next_id.wrapping_add(1);
        let (at, phase) = slot(self.layout.aq, admin::AQ_DEPTH, self.aq_tail);
        let entry = encode(id, phase);
        let opcode = entry[2];
        self.window.write(self.window.iova(at).0, &entry)?;
        self.aq_tail = self.aq_tail.wrapping_add(1);
        regs.write32(regs::AQ_DB, self.aq_tail & 0xffff);
        for _ in 0..POLLS {
            let (at, phase) = slot(self.layout.acq, admin::AQ_DEPTH, self.acq_head);
            let mut e = [0u8; admin::ENTRY_BYTES];
            self.window.read(self.window.iova(at).0, &mut e)?;
            let c = Completion::decode(&e);
            if c.phase == phase {
                self.acq_head = self.acq_head.wrapping_add(1);
                if c.command_id != id {
                    return Err(AdminError::WrongCompletion { expected: id, got: c.command_id });
                }
                return Ok(c);
            }
            std::hint::spin_loop();
        }
        Err(AdminError::NoCompletion(opcode))
    }

    /// Reads a feature.
    pub fn get_feature<R: ResponseBody>(
        &mut self,
        regs: &mut impl RegisterSpace,
        id: u8,
    ) -> Result<R, AdminError> {
        let cmd = Command::GetFeature(GetFeature { feature: id, version: 1, control: None });
        Ok(self.execute(regs, &cmd)?.response())
    }

    /// Reads a feature whose value comes in a control buffer of `len` bytes too.
    pub fn get_feature_with_buffer<R: ResponseBody>(
        &mut self,
        regs: &mut impl RegisterSpace,
        id: u8,
        len: usize,
    ) -> Result<(R, Vec<u8>), AdminError> {
        let control = self.control(&[], len)?;
        let cmd =
            Command::GetFeature(GetFeature { feature: id, version: 1, control: Some(control) });
        let response = self.execute(regs, &cmd)?.response();
        let mut bytes = vec![0u8; len];
        self.window.read(control.address, &mut bytes)?;
        Ok((response, bytes))
    }

    /// Writes a feature.
    pub fn set_feature(
        &mut self,
        regs: &mut impl RegisterSpace,
        value: SetFeature,
    ) -> Result<(), AdminError> {
        self.execute(regs, &Command::SetFeature(value)).map(|_| ())
    }

    /// The control buffer holding `data`, `len` bytes long.
    fn control(&self, data: &[u8], len: usize) -> Result<ControlBuffer, AdminError> {
        let at = self.window.iova(self.layout.control).0;
        let len = len.clamp(data.len(), CONTROL_BYTES);
        self.window.write(at, &vec![0u8; len])?;
        self.window.write(at, data)?;
        Ok(ControlBuffer { length: len as u32, address: at })
    }

    /// Sets the Toeplitz key through a control buffer, as `ena_com_set_hash_function` does.
    pub fn set_rss_key(
        &mut self,
        regs: &mut impl RegisterSpace,
        key: [u8; 40],
    ) -> Result<(), AdminError> {
        let bytes = RssHashKey { key }.encode();
        let key = self.control(&bytes, bytes.len())?;
        let value = SetFeature::RssHashFunction {
            selected: admin::hash_function::TOEPLITZ,
            init_val: 0,
            key,
        };
        self.set_feature(regs, value)
    }

    /// Sets the whole indirection table (RX CQ indices) through a control buffer, as
    /// `ena_com_indirect_table_set` does.
    pub fn set_indirection_table(
        &mut self,
        regs: &mut impl RegisterSpace,
        rx_cqs: &[u16],
    ) -> Result<(), AdminError> {
        let bytes = admin::encode_indirection(rx_cqs);
        let table = self.control(&bytes, bytes.len())?;
        let log_size = rx_cqs.len().max(1).ilog2() as u16;
        self.set_feature(
            regs,
            SetFeature::RssIndirectionTable { log_size, inline: None, table: Some(table) },
        )
    }

    /// `GET_STATS` of `kind` for this function's Ethernet traffic, as ENA's driver asks.
    fn stats_command(kind: u8, requested_metrics: u64, control: Option<ControlBuffer>) -> Command {
        Command::GetStats(GetStats {
            stats_type: kind,
            scope: 1,
            queue_idx: 0,
            device_id: 0xffff,
            requested_metrics,
            control,
        })
    }

    fn stats<R: ResponseBody>(
        &mut self,
        regs: &mut impl RegisterSpace,
        kind: u8,
    ) -> Result<R, AdminError> {
        Ok(self.execute(regs, &Self::stats_command(kind, 0, None))?.response())
    }

    /// `GET_STATS` BASIC.
    pub fn basic_stats(&mut self, regs: &mut impl RegisterSpace) -> Result<BasicStats, AdminError> {
        self.stats(regs, stats_type::BASIC)
    }

    /// `GET_STATS` ENI: the allowance counters.
    pub fn eni_stats(&mut self, regs: &mut impl RegisterSpace) -> Result<EniStats, AdminError> {
        self.stats(regs, stats_type::ENI)
    }

    /// `GET_STATS` EXTENDED: the device's text of further counters, through a control buffer of
    /// `len` bytes (the text is cut to fit).
    pub fn extended_stats(
        &mut self,
        regs: &mut impl RegisterSpace,
        len: usize,
    ) -> Result<String, AdminError> {
        let control = self.control(&[], len)?;
        let cmd = Self::stats_command(stats_type::EXTENDED, 0, Some(control));
        self.execute(regs, &cmd)?;
        let mut bytes = vec![0u8; control.length as usize];
        self.window.read(control.address, &mut bytes)?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }

    /// `GET_STATS` ENA_SRD.
    pub fn srd_info(&mut self, regs: &mut impl RegisterSpace) -> Result<SrdInfo, AdminError> {
        self.stats(regs, stats_type::ENA_SRD)
    }

    /// `GET_STATS` CUSTOMER_METRICS: the metrics the device reports of `requested` (a bitmap of
    /// [`admin::customer_metric`] ids), as `(bitmap reported, values in id order)`.
    pub fn customer_metrics(
        &mut self,
        regs: &mut impl RegisterSpace,
        requested: u64,
    ) -> Result<(u64, Vec<u64>), AdminError> {
        let len = 8 * requested.count_ones() as usize;
        let control = self.control(&[], len)?;
        let cmd = Self::stats_command(stats_type::CUSTOMER_METRICS, requested, Some(control));
        let c = self.execute(regs, &cmd)?;
        let reported = u64::from_le_bytes(c.body[..8].try_into().unwrap_or([0; 8]));
        let mut bytes = vec![0u8; 8 * reported.count_ones() as usize];
        self.window.read(control.address, &mut bytes)?;
        let values = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        Ok((reported, values))
    }

    /// Chooses the low-latency queue layout as ENA's driver does (`ena_com_config_llq_info`):
    /// inline headers, two descriptors before the header, several per continuation entry, and
    /// entries of `entry_bytes`: 128 (ENA's default, 96 header bytes), 192 (160) or 256 (the
    /// large-header option, 224 bytes, half the depth).
    pub fn configure_llq(
        &mut self,
        regs: &mut impl RegisterSpace,
        entry_bytes: usize,
    ) -> Result<LlqInfo, AdminError> {
        use crate::abi::llq::{descs_before_header, entry_size, header_location, stride};
        let offered = self.info.and_then(|i| i.llq).ok_or(AdminError::Unsupported(feature::LLQ))?;
        let size = match entry_bytes {
            128 => entry_size::B128,
            192 => entry_size::B192,
            256 => entry_size::B256,
            _ => return Err(AdminError::Unsupported(feature::LLQ)),
        };
        if offered.entry_size_ctrl_supported & size == 0
            || offered.header_location_ctrl_supported & header_location::INLINE == 0
        {
            return Err(AdminError::Unsupported(feature::LLQ));
        }
        let chosen = LlqInfo {
            header_location_ctrl_enabled: header_location::INLINE,
            entry_size_ctrl_enabled: size,
            desc_num_before_header_enabled: descs_before_header::TWO,
            descriptors_stride_ctrl_enabled: stride::MULTIPLE_DESCS_PER_ENTRY,
            accel_flags: 0,
            ..offered
        };
        self.set_feature(regs, SetFeature::Llq(chosen))?;
        Ok(chosen)
    }

    /// Creates the device's end of `queue` as ENA's driver creates an IO queue: for TX, then
    /// RX, a completion queue and then the submission queue naming it, by the address of each
    /// ring's entry 0, host placement, a completion per descriptor that asks for one.
    pub fn create_queue_pair(
        &mut self,
        regs: &mut impl RegisterSpace,
        queue: &QueuePairDriver,
    ) -> Result<IoQueues, AdminError> {
        let spec = queue.spec();
        let tx =
            self.create_io_queue(regs, spec.depth, spec.tx_cq, Some(spec.tx_sq), Direction::Tx)?;
        let rx =
            self.create_io_queue(regs, spec.depth, spec.rx_cq, Some(spec.rx_sq), Direction::Rx)?;
        Ok(IoQueues::of(tx, rx))
    }

    /// [`Self::create_queue_pair`] with the TX queue placed in device memory (a low-latency
    /// queue in the layout [`Self::configure_llq`] chose): the driver then writes its entries
    /// into `bar`, the VF's LLQ BAR, at the offset `CREATE_SQ` answered.
    pub fn create_queue_pair_llq(
        &mut self,
        regs: &mut impl RegisterSpace,
        queue: &mut QueuePairDriver,
        bar: Arc<SharedRegion>,
        entry_bytes: usize,
    ) -> Result<IoQueues, AdminError> {
        let spec = queue.spec();
        let tx = self.create_io_queue(regs, spec.depth, spec.tx_cq, None, Direction::Tx)?;
        let entry0 = tx.1.llq_descriptors_offset as usize;
        queue.use_llq(bar, entry0, entry_bytes).map_err(|e| match e {
            DriverError::Ring(r) => AdminError::Llq(r),
            _ => AdminError::Llq(RingError::Misaligned { offset: entry0 }),
        })?;
        let rx =
            self.create_io_queue(regs, spec.depth, spec.rx_cq, Some(spec.rx_sq), Direction::Rx)?;
        Ok(IoQueues::of(tx, rx))
    }

    /// One IO queue: its CQ, then its SQ (in host memory at `sq_ring`, or in device memory).
    fn create_io_queue(
        &mut self,
        regs: &mut impl RegisterSpace,
        depth: u32,
        cq_ring: crate::device::Iova,
        sq_ring: Option<crate::device::Iova>,
        direction: Direction,
    ) -> Result<(CreateCqResponse, CreateSqResponse), AdminError> {
        let entry0 = |iova: crate::device::Iova| iova.0 + INDEX_BLOCK_BYTES as u64;
        let entry_words = match direction {
            Direction::Tx => crate::abi::io::TX_CQ_ENTRY_WORDS,
            Direction::Rx => crate::abi::io::RX_CQ_ENTRY_WORDS,
        };
        let create_cq = Command::CreateCq(CreateCq {
            interrupt_mode: true,
            entry_words,
            depth: depth as u16,
            msix_vector: 0,
            ring_base: entry0(cq_ring),
        });
        let cq: CreateCqResponse = self.execute(regs, &create_cq)?.response();
        let create_sq = Command::CreateSq(CreateSq {
            direction,
            placement: if sq_ring.is_some() { Placement::Host } else { Placement::Device },
            completion_policy: CompletionPolicy::DescOnDemand,
            physically_contiguous: true,
            cq_idx: cq.cq_idx,
            depth: depth as u16,
            ring_base: sq_ring.map_or(0, entry0),
            head_writeback: 0,
        });
        let sq: CreateSqResponse = self.execute(regs, &create_sq)?.response();
        Ok((cq, sq))
    }

    /// Destroys a queue pair's queues as ENA's driver does: each SQ, then its CQ.
    pub fn destroy_queue_pair(
        &mut self,
        regs: &mut impl RegisterSpace,
        queues: &IoQueues,
    ) -> Result<(), AdminError> {
        for (sq_idx, direction, cq_idx) in [
            (queues.tx_sq, Direction::Tx, queues.tx_cq),
            (queues.rx_sq, Direction::Rx, queues.rx_cq),
        ] {
            self.execute(regs, &Command::DestroySq { sq_idx, direction })?;
            self.execute(regs, &Command::DestroyCq { cq_idx })?;
        }
        Ok(())
    }

    /// Async events received since the last call; the consumed entries go back to the device
    /// through `AENQ_HEAD_DB` (events consumed + depth).
    pub fn events(&mut self, regs: &mut impl RegisterSpace) -> Result<Vec<AenqEntry>, AdminError> {
        let mut out = Vec::new();
        loop {
            let (at, phase) = slot(self.layout.aenq, admin::AENQ_DEPTH, self.aenq_head);
            let mut e = [0u8; aenq::ENTRY_BYTES];
            self.window.read(self.window.iova(at).0, &mut e)?;
            let event = AenqEntry::decode(&e);
            if event.phase != phase || out.len() == usize::from(admin::AENQ_DEPTH) {
                break;
            }
            self.aenq_head = self.aenq_head.wrapping_add(1);
            out.push(event);
        }
        if !out.is_empty() {
            regs.write32(
                regs::AENQ_HEAD_DB,
                self.aenq_head.wrapping_add(u32::from(admin::AENQ_DEPTH)),
            );
        }
        Ok(out)
    }

    /// The keep-alive watchdog ENA's driver runs from its timer: takes the events that came in
    /// (returning them), notes a keep-alive at `now_ns`, and fails once none came for longer
    /// than the device's hinted timeout (6 s if it gives none). The caller then resets with
    /// [`reset_reason::KEEP_ALIVE_TO`].
    pub fn watchdog(
        &mut self,
        regs: &mut impl RegisterSpace,
        now_ns: u64,
    ) -> Result<Vec<AenqEntry>, AdminError> {
        let events = self.events(regs)?;
        let last = self.last_keep_alive_ns.get_or_insert(now_ns);
        if events.iter().any(|e| matches!(e.event, Event::KeepAlive { .. })) {
            *last = now_ns;
        }
        let hinted = self.info.map_or(0, |i| i.hints.driver_watchdog_timeout);
        let timeout_ms = if hinted == 0 { 6000 } else { u64::from(hinted) };
        let elapsed_ms = now_ns.saturating_sub(*last) / 1_000_000;
        if elapsed_ms > timeout_ms {
            return Err(AdminError::KeepAliveTimeout { elapsed_ms, timeout_ms });
        }
        Ok(events)
    }
}

/// A VF's counters as `ethtool -S` lists them for ENA's Linux driver, with its names: the
/// device's drops (`GET_STATS` BASIC), the ENI's allowance counters (`GET_STATS` ENI), then per
/// queue `queue_N_tx_cnt`, `queue_N_tx_bytes`, `queue_N_rx_cnt`, `queue_N_rx_bytes` and
/// `queue_N_rx_bad_desc_num`. Counters ENA's driver keeps that this model has no source for
/// (`tx_timeout`, `queue_N_tx_queue_stop`, ...) are left out rather than shown as zero.
pub fn ethtool_stats(
    basic: &BasicStats,
    eni: &EniStats,
    queues: &[crate::device::stats::QueueStatsSnapshot],
) -> Vec<(String, u64)> {
    let mut out = vec![
        ("rx_drops".to_string(), basic.rx_drops),
        ("tx_drops".to_string(), basic.tx_drops),
        ("bw_in_allowance_exceeded".to_string(), eni.bw_in_allowance_exceeded),
        ("bw_out_allowance_exceeded".to_string(), eni.bw_out_allowance_exceeded),
        ("pps_allowance_exceeded".to_string(), eni.pps_allowance_exceeded),
        ("conntrack_allowance_exceeded".to_string(), eni.conntrack_allowance_exceeded),
        ("linklocal_allowance_exceeded".to_string(), eni.linklocal_allowance_exceeded),
    ];
    for (q, s) in queues.iter().enumerate() {
        out.push((format!("queue_{q}_tx_cnt"), s.tx_packets));
        out.push((format!("queue_{q}_tx_bytes"), s.tx_bytes));
        out.push((format!("queue_{q}_rx_cnt"), s.rx_packets));
        out.push((format!("queue_{q}_rx_bytes"), s.rx_bytes));
        out.push((format!("queue_{q}_rx_bad_desc_num"), s.rx_bad_desc));
    }
    out
}

/// [`ethtool_stats`] laid out as `ethtool -S` prints it.
pub fn format_ethtool(stats: &[(String, u64)]) -> String {
    let mut s = String::from("NIC statistics:\n");
    for (name, value) in stats {
        s.push_str(&format!("     {name}: {value}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_an_odd_number_of_whole_lines_apart() {
        for size in [64, 65, 1500, 2048, 4096, 9024] {
            let stride = buffer_stride(size);
            assert!(stride >= size, "{size}");
            assert_eq!(stride % 64, 0, "{size}");
            assert_eq!((stride / 64) % 2, 1, "{size}: {stride}");
            assert!(stride - size < 128, "{size}: at most a line and a bit more");
        }
        // 2 KiB is 32 lines; the next odd number is 33.
        assert_eq!(buffer_stride(2048), 33 * 64);
        // 9,024 bytes is 141 lines, odd already.
        assert_eq!(buffer_stride(TX_BUF), 141 * 64);
    }

    #[test]
    fn a_bursts_buffers_start_in_distinct_cache_sets_and_never_overlap() {
        let layout = QueuePairLayout::with_buffers(0, 1024, 2048, 2048);
        // A 64-set L1 (48 KiB, 12 ways, 64-byte lines): any 64 consecutive buffers' first lines
        // take every set once, where 2 KiB apart they took 2.
        for first in [0u16, 5, 960] {
            for buffer in [QueuePairLayout::tx_buffer, QueuePairLayout::rx_buffer] {
                let mut sets: Vec<usize> =
                    (first..first + 64).map(|id| buffer(&layout, id) / 64 % 64).collect();
                sets.sort_unstable();
                sets.dedup();
                assert_eq!(sets.len(), 64);
            }
        }
        assert!(layout.tx_bufs >= layout.rx_cq + CompletionRing::<RxCompletion>::bytes(1024));
        assert!(layout.tx_buffer(1023) + layout.tx_buf <= layout.rx_bufs);
        assert!(layout.rx_buffer(1023) + layout.rx_buf <= layout.end);
        for id in [0u16, 1, 511, 1022] {
            assert!(layout.tx_buffer(id) + layout.tx_buf <= layout.tx_buffer(id + 1));
            assert!(layout.rx_buffer(id) + layout.rx_buf <= layout.rx_buffer(id + 1));
        }
    }
}
