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
//! A TX buffer holds a whole frame (up to 9,024 bytes: a 9001-byte MTU plus headers); frames are
//! split into descriptors of at most [`TX_DESC_MAX`] bytes, so jumbo frames use a chain
//! (first … last). An RX buffer is `rx_buf` bytes (2 KiB by default); the device spreads a larger
//! frame over several buffers and the driver gathers them.

use crate::desc::{RxCompletion, RxDesc, TxCompletion, TxDesc, rx_cq_field};
use crate::device::{DmaWindow, QueuePairSpec};
use crate::ring::{
    CompletionConsumer, CompletionRing, RingError, SubmissionProducer, SubmissionRing,
};

/// Largest buffer one TX descriptor carries.
pub const TX_DESC_MAX: usize = 4096;
/// Bytes of one TX buffer (a whole jumbo frame).
pub const TX_BUF: usize = 9024;

fn align(n: usize) -> usize {
    n.div_ceil(128) * 128
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
        let rx_bufs = align(tx_bufs + d * tx_buf);
        let end = align(rx_bufs + d * rx_buf);
        Self { depth, tx_buf, rx_buf, tx_sq, tx_cq, rx_sq, rx_cq, tx_bufs, rx_bufs, end }
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
    tx_sq: SubmissionProducer<TxDesc>,
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
            tx_sq: SubmissionProducer::attach(r.clone(), layout.tx_sq)?,
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
        let mut res = self.rx_sq.reserve_up_to(self.rx_unposted.len());
        let n = res.len();
        for i in 0..n {
            let Some(id) = self.rx_unposted.pop() else { break };
            let addr = self.window.iova(self.layout.rx_bufs + usize::from(id) * self.layout.rx_buf);
            res.set(i, RxDesc::new(addr.0, len, id));
            self.rx_posted[usize::from(id)] = true;
        }
        res.commit();
        n
    }

    /// Copies each frame into a TX buffer and posts them all in place with one doorbell; returns
    /// how many were taken (fewer if request ids or ring slots run out, or a frame is empty or
    /// larger than a TX buffer).
    pub fn send_burst(&mut self, frames: &[&[u8]]) -> usize {
        let want: usize = frames.iter().map(|f| f.len().div_ceil(TX_DESC_MAX)).sum();
        let mut res = self.tx_sq.reserve_up_to(want);
        let room = res.len();
        let (mut used, mut taken) = (0, 0);
        for frame in frames {
            let chain = frame.len().div_ceil(TX_DESC_MAX);
            if frame.is_empty() || frame.len() > self.layout.tx_buf || used + chain > room {
                break;
            }
            let Some(req_id) = self.tx_free.pop() else { break };
            let base =
                self.window.iova(self.layout.tx_bufs + usize::from(req_id) * self.layout.tx_buf);
            if self.window.write(base.0, frame).is_err() {
                self.tx_free.push(req_id);
                break;
            }
            for (i, off) in (0..frame.len()).step_by(TX_DESC_MAX).enumerate() {
                let len = (frame.len() - off).min(TX_DESC_MAX);
                let last = i + 1 == chain;
                let desc = TxDesc::new(base.0 + off as u64, len as u16, req_id)
                    .with_first(i == 0)
                    .with_last(last)
                    .with_comp_req(last);
                res.set(used, desc);
                used += 1;
            }
            self.tx_in_flight[usize::from(req_id)] = true;
            taken += 1;
        }
        res.commit_first(used);
        self.stats.tx_posted += taken as u64;
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
            let buf = self.layout.rx_bufs + usize::from(id) * self.layout.rx_buf;
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

use crate::device::admin::{
    self, AENQ_DEPTH, AQ_DEPTH, AdminCommand, AdminCompletion, AenqEntry, RegisterSpace, opcode,
    reg,
};

/// Why an admin command failed.
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
    /// The admin queue was full.
    #[error("the admin queue is full")]
    QueueFull,
    /// No completion came back.
    #[error("admin command {0} got no completion")]
    NoCompletion(u8),
    /// The rings could not be laid out.
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// The driver's admin queue, admin completion queue and async event queue.
#[derive(Debug)]
pub struct AdminDriver {
    window: DmaWindow,
    aq: SubmissionProducer<AdminCommand>,
    acq: CompletionConsumer<AdminCompletion>,
    aenq: CompletionConsumer<AenqEntry>,
    next_id: u16,
}

impl AdminDriver {
    /// Bytes the admin rings take in guest memory.
    pub const BYTES: usize = SubmissionRing::<AdminCommand>::bytes(AQ_DEPTH)
        + CompletionRing::<AdminCompletion>::bytes(AQ_DEPTH)
        + CompletionRing::<AenqEntry>::bytes(AENQ_DEPTH);

    /// Lays out the admin rings at `offset` of guest memory and programs the function's
    /// registers with their addresses, as ENA's driver does at probe time.
    pub fn bring_up(
        window: DmaWindow,
        offset: usize,
        regs: &mut impl RegisterSpace,
    ) -> Result<Self, AdminError> {
        let r = window.region();
        let aq_at = align(offset);
        let acq_at = aq_at + SubmissionRing::<AdminCommand>::bytes(AQ_DEPTH);
        let aenq_at = acq_at + CompletionRing::<AdminCompletion>::bytes(AQ_DEPTH);
        SubmissionRing::<AdminCommand>::init(r, aq_at, AQ_DEPTH)?;
        CompletionRing::<AdminCompletion>::init(r, acq_at, AQ_DEPTH)?;
        CompletionRing::<AenqEntry>::init(r, aenq_at, AENQ_DEPTH)?;
        let driver = Self {
            aq: SubmissionProducer::attach(r.clone(), aq_at)?,
            acq: CompletionConsumer::attach(r.clone(), acq_at)?,
            aenq: CompletionConsumer::attach(r.clone(), aenq_at)?,
            next_id: 0,
            window,
        };
        let caps = |depth: u32| depth | (64 << 16);
        for (lo, hi, at) in [
            (reg::AQ_BASE_LO, reg::AQ_BASE_HI, aq_at),
            (reg::ACQ_BASE_LO, reg::ACQ_BASE_HI, acq_at),
            (reg::AENQ_BASE_LO, reg::AENQ_BASE_HI, aenq_at),
        ] {
            let iova = driver.window.iova(at).0;
            regs.write32(lo, iova as u32);
            regs.write32(hi, (iova >> 32) as u32);
        }
        regs.write32(reg::AQ_CAPS, caps(AQ_DEPTH));
        regs.write32(reg::ACQ_CAPS, caps(AQ_DEPTH));
        regs.write32(reg::AENQ_CAPS, caps(AENQ_DEPTH));
        Ok(driver)
    }

    /// Posts one command, rings the doorbell and waits for its completion.
    pub fn execute(
        &mut self,
        regs: &mut impl RegisterSpace,
        opcode: u8,
        words: &[u32],
    ) -> Result<AdminCompletion, AdminError> {
        let mut cmd =
            AdminCommand { command_id: self.next_id & 0x0fff, opcode, ..Default::default() };
        self.next_id = self.next_id.wrapping_add(1);
        let n = words.len().min(cmd.words.len());
        cmd.words[..n].copy_from_slice(&words[..n]);
        if !self.aq.push(cmd) {
            return Err(AdminError::QueueFull);
        }
        regs.write32(reg::AQ_DB, 1);
        // The modelled device executes on the doorbell; a real one is polled for a while.
        for _ in 0..1000 {
            if let Some(c) = self.acq.pop() {
                if c.status != admin::status::SUCCESS {
                    return Err(AdminError::Status { opcode, status: c.status });
                }
                return Ok(c);
            }
            std::hint::spin_loop();
        }
        Err(AdminError::NoCompletion(opcode))
    }

    /// Creates the device's end of `queue` through admin commands: two CQs, then the TX and RX
    /// SQs; returns the TX and RX queue indices (2q, 2q + 1).
    pub fn create_queue_pair(
        &mut self,
        regs: &mut impl RegisterSpace,
        queue: &QueuePairDriver,
    ) -> Result<(u32, u32), AdminError> {
        let spec = queue.spec();
        let lo_hi = |iova: crate::device::Iova| [iova.0 as u32, (iova.0 >> 32) as u32];
        let [tl, th] = lo_hi(spec.tx_cq);
        let tx_cq = self.execute(regs, opcode::CREATE_CQ, &[spec.depth, tl, th])?.words[0];
        let [rl, rh] = lo_hi(spec.rx_cq);
        let rx_cq = self.execute(regs, opcode::CREATE_CQ, &[spec.depth, rl, rh])?.words[0];
        let [a, b] = lo_hi(spec.tx_sq);
        let tx =
            self.execute(regs, opcode::CREATE_SQ, &[1 | tx_cq << 16, spec.depth, a, b])?.words[0];
        let [a, b] = lo_hi(spec.rx_sq);
        let rx =
            self.execute(regs, opcode::CREATE_SQ, &[2 | rx_cq << 16, spec.depth, a, b])?.words[0];
        Ok((tx, rx))
    }

    /// Async events received since the last call.
    pub fn events(&mut self) -> Vec<AenqEntry> {
        let mut out = Vec::new();
        while let Some(e) = self.aenq.pop() {
            out.push(e);
        }
        out
    }
}
