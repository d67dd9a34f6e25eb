//! A polled userspace driver for Intel 82576 and I350 virtual functions ("igbvf"), the VFs a
//! lab is most likely to have, and the ones QEMU's `igb` model (8.0 and newer) emulates.
//!
//! The driver owns one queue pair of the VF (queue 0) and a DMA region laid out as
//! [`DmaLayout`]: a TX ring and an RX ring of 16-byte advanced descriptors (`depth` of each, a
//! multiple of 8 up to 4096, rings 128-byte aligned) and a 2 KiB buffer per descriptor. Bringing
//! a VF up is Linux's igbvf sequence:
//!
//! 1. mask the VF's interrupts (the driver polls), set CTRL.RST and wait while the mailbox shows
//!    RSTI (at most 1 ms on hardware; the PF sets RSTD only on its own resets);
//! 2. mailbox VF_RESET: the PF enables the VF's queues and answers ACK with the MAC an
//!    administrator gave the VF, or NACK if none (about 50 ms in QEMU under TCG);
//! 3. mailbox API_NEGOTIATE 2.0: Linux's igb answers NACK, which means API 1.0;
//! 4. SET_MAC_ADDR (unless the PF assigned one), which the PF refuses if the administrator fixed
//!    the VF's MAC; SET_LPE with the largest frame (1518 bytes with FCS for a 1500-byte MTU);
//! 5. the rings: base, length, head = tail = 0; SRRCTL one-buffer advanced descriptors of
//!    2 KiB with drop-when-full; enable the queues and wait until the enable bits read back;
//!    post every RX buffer but one (a ring with head = tail is empty).
//!
//! A frame is sent with one descriptor (EOP, IFCS, RS) and completed when the device writes DD
//! back into it; one TDT write per burst. A frame is received when its descriptor's DD is set;
//! its buffer goes back to the ring's free slot, and RDT moves once per burst. Every value the
//! device writes is checked before use: a length beyond the buffer, a frame without EOP, an
//! error bit, a reply to another mailbox request are counted and dropped, never trusted.
//! Releasing the driver disables both queues and resets the VF before the DMA region goes.

pub mod desc;
pub mod mailbox;
pub mod regs;
#[cfg(not(loom))]
pub mod vfio;

use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use bytemuck::Zeroable;

use crate::abi::regs::RegisterSpace;
use crate::device::{DmaError, DmaWindow};
use crate::frame::MacAddr;
use desc::{DESC_BYTES, RxDesc, RxWriteback, TxDesc, rx, status_at};
use mailbox::{Mailbox, MailboxError, api, msg};
use regs::*;

/// Bytes of every TX and RX buffer, and the distance between two: a 1518-byte frame fits, and
/// SRRCTL counts in KiB. Buffers stay 2 KiB apart, each inside one 4 KiB page (not
/// [`crate::driver::buffer_stride`]'s odd number of lines): a device reaches them by DMA, page
/// by page through the IOMMU. Spaced 2,112 bytes apart, so that some straddled two pages, the
/// lab's QEMU igb VF sent 2,579 of 3,000 frames (its VFGPTC) while the driver saw all 3,000
/// completed.
pub const BUF_BYTES: usize = 2048;
/// The largest frame without large frames (1514 bytes + the 4-byte FCS the device adds).
pub const DEFAULT_MAX_FRAME: u16 = 1518;
/// The FCS the device appends to each frame sent.
pub const FCS_BYTES: usize = 4;

/// Where the rings and buffers sit in the DMA region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaLayout {
    /// Descriptors per ring.
    pub depth: u32,
    /// TX ring offset.
    pub tx_ring: usize,
    /// RX ring offset.
    pub rx_ring: usize,
    /// First TX buffer.
    pub tx_bufs: usize,
    /// First RX buffer.
    pub rx_bufs: usize,
    /// Bytes in all.
    pub bytes: usize,
}

impl DmaLayout {
    /// The layout for rings of `depth` (a multiple of 8 from 8 to 4096).
    pub fn new(depth: u32) -> Result<Self, IgbVfError> {
        if !(8..=4096).contains(&depth) || !depth.is_multiple_of(8) {
            return Err(IgbVfError::BadDepth(depth));
        }
        let d = depth as usize;
        let ring = (d * DESC_BYTES).next_multiple_of(4096);
        let tx_ring = 0;
        let rx_ring = ring;
        let tx_bufs = 2 * ring;
        let rx_bufs = tx_bufs + d * BUF_BYTES;
        let bytes = (rx_bufs + d * BUF_BYTES).next_multiple_of(4096);
        Ok(Self { depth, tx_ring, rx_ring, tx_bufs, rx_bufs, bytes })
    }
}

/// Which MAC the VF takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacChoice {
    /// The MAC the PF assigned on reset (an administrator's `ip link set <pf> vf <n> mac`),
    /// else this one, asked for with SET_MAC_ADDR.
    PfOr(MacAddr),
    /// Exactly this one; the PF refuses it if an administrator fixed another.
    Exactly(MacAddr),
}

/// How to bring the VF up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IgbVfConfig {
    /// Descriptors per ring.
    pub depth: u32,
    /// The MAC to take.
    pub mac: MacChoice,
    /// The largest frame to receive, with FCS (1518 for a 1500-byte MTU; more asks the PF
    /// for large frames, up to what a 2 KiB buffer holds).
    pub max_frame: u16,
    /// How long each mailbox step may take.
    pub mailbox_timeout: Duration,
}

impl IgbVfConfig {
    /// Rings of 256, a 1500-byte MTU, Linux's 1 s mailbox timeout.
    pub fn new(mac: MacChoice) -> Self {
        Self {
            depth: 256,
            mac,
            max_frame: DEFAULT_MAX_FRAME,
            mailbox_timeout: Duration::from_secs(1),
        }
    }
}

/// What the driver refuses or the device got wrong, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum IgbVfError {
    /// Ring depth.
    #[error("ring depth {0} is not a multiple of 8 from 8 to 4096")]
    BadDepth(u32),
    /// A BAR too small for the VF's registers.
    #[error("BAR0 is {0} bytes; an 82576 / I350 VF has 16 KiB of registers")]
    SmallBar(u64),
    /// The DMA region is smaller than the layout.
    #[error("the DMA region is {have} bytes; rings of {depth} need {need}")]
    SmallDma {
        /// Depth asked for.
        depth: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: u64,
    },
    /// The DMA window is not 128-byte aligned (the rings must be).
    #[error("the DMA window's base {0:#x} is not 128-byte aligned")]
    Misaligned(u64),
    /// The VF stayed in reset.
    #[error(
        "the PF held the VF in reset (mailbox RSTI) for {0:?}: the PF's interface is down or its \
         driver is resetting: `ip link set <pf-netdev> up` (`lab list` shows the PF), then retry"
    )]
    StuckInReset(Duration),
    /// The PF did not answer the mailbox.
    #[error(
        "{step}: {source}. Is the PF's interface up? Its driver answers VFs only while it is \
         (`ip link set <pf-netdev> up`; `lab list` shows the PF)"
    )]
    Mailbox {
        /// What the driver was doing.
        step: &'static str,
        /// What went wrong.
        source: MailboxError,
    },
    /// The PF refused the MAC.
    #[error(
        "the PF refused MAC {asked} for this VF{}: an administrator fixed another (`ip link set <pf> vf <n> mac {asked}` \
         changes it); or let the VF keep its own", assigned.map(|m| format!(" (it assigned {m})")).unwrap_or_default()
    )]
    MacRefused {
        /// What the driver asked for.
        asked: MacAddr,
        /// What the PF assigned, if anything.
        assigned: Option<MacAddr>,
    },
    /// The PF refused large frames.
    #[error("the PF refused frames of {0} bytes (SET_LPE)")]
    LargeFramesRefused(u16),
    /// Large frames beyond a buffer.
    #[error("a {0}-byte frame does not fit a {BUF_BYTES}-byte buffer")]
    FrameTooLarge(u16),
    /// A queue did not enable.
    #[error(
        "the VF's {0} queue did not enable (its enable bit never read back): is the VF reset by the PF?"
    )]
    QueueNotEnabled(&'static str),
    /// DMA outside the region (a bug).
    #[error(transparent)]
    Dma(#[from] DmaError),
    /// VFIO.
    #[error("{0}")]
    Vfio(String),
}

/// The link as the VF sees it (VTSTATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Link up.
    pub up: bool,
    /// Mb/s: 10, 100 or 1000.
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

impl Link {
    /// Decodes STATUS.
    pub fn from_status(status: u32) -> Self {
        let speed_mbps = if status & STATUS_SPEED_1000 != 0 {
            1000
        } else if status & STATUS_SPEED_100 != 0 {
            100
        } else {
            10
        };
        Self { up: status & STATUS_LU != 0, speed_mbps, full_duplex: status & STATUS_FD != 0 }
    }
}

/// The driver's counters of its queue pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Frames posted for transmit.
    pub tx_frames: u64,
    /// Bytes posted for transmit (without FCS).
    pub tx_bytes: u64,
    /// Transmit descriptors the device completed.
    pub tx_completed: u64,
    /// Frames refused by `send_burst` (ring full, empty or too large).
    pub tx_refused: u64,
    /// Frames received and handed up.
    pub rx_frames: u64,
    /// Bytes received and handed up.
    pub rx_bytes: u64,
    /// Frames the device flagged with an error (CRC, symbol, RX data error).
    pub rx_errors: u64,
    /// Descriptors with values no well-behaved device writes (a length beyond the buffer or
    /// zero, a frame without EOP): dropped.
    pub rx_malformed: u64,
}

/// The VF's own counters (its pool's statistics registers, 32 bits, wrapping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// VFGPRC.
    pub rx_packets: u32,
    /// VFGPTC.
    pub tx_packets: u32,
    /// VFGORC.
    pub rx_octets: u32,
    /// VFGOTC.
    pub tx_octets: u32,
    /// VFMPRC.
    pub rx_multicast: u32,
}

/// What the bring-up learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BringUp {
    /// The MAC the PF assigned on reset (None: the driver chose its own).
    pub assigned_mac: Option<MacAddr>,
    /// The mailbox API in use.
    pub api: u32,
    /// Mailbox messages exchanged.
    pub messages: u64,
}

/// An 82576 / I350 VF's queue pair 0, polled.
#[derive(Debug)]
pub struct IgbVf<R: RegisterSpace> {
    regs: R,
    dma: DmaWindow,
    layout: DmaLayout,
    mailbox: Mailbox,
    mac: MacAddr,
    max_frame: u16,
    bring_up: BringUp,
    /// Next TX descriptor to fill.
    tx_next: u32,
    /// Oldest TX descriptor not completed.
    tx_clean: u32,
    /// Next RX descriptor the device fills.
    rx_next: u32,
    /// The RX ring's free slot (RDT): where the next buffer is posted.
    rx_tail: u32,
    /// Which buffer each RX slot holds.
    rx_buffer_of: Vec<u32>,
    /// Discarding the rest of a frame that came without EOP.
    rx_discarding: bool,
    counters: QueueCounters,
}

/// Ring index `i` wrapped to a ring of `depth`.
fn wrap(depth: u32, i: u32) -> u32 {
    i % depth
}

impl<R: RegisterSpace> IgbVf<R> {
    /// Brings the VF behind `regs` up with its rings and buffers in `dma` (at least
    /// [`DmaLayout::new`]`(config.depth).bytes`, the device's view of it already mapped).
    pub fn open(mut regs: R, dma: DmaWindow, config: IgbVfConfig) -> Result<Self, IgbVfError> {
        let layout = DmaLayout::new(config.depth)?;
        if dma.size() < layout.bytes as u64 {
            return Err(IgbVfError::SmallDma {
                depth: config.depth,
                need: layout.bytes,
                have: dma.size(),
            });
        }
        if !dma.base().0.is_multiple_of(128) {
            return Err(IgbVfError::Misaligned(dma.base().0));
        }
        if usize::from(config.max_frame) > BUF_BYTES {
            return Err(IgbVfError::FrameTooLarge(config.max_frame));
        }
        let mut mailbox = Mailbox::new(config.mailbox_timeout, Duration::from_micros(50));
        regs.write32(EIMC, EIMC_ALL);
        let assigned_mac = reset(&mut regs, &mut mailbox, config.mailbox_timeout)?;
        let api = negotiate_api(&mut regs, &mut mailbox)?;
        let mac = match (config.mac, assigned_mac) {
            (MacChoice::PfOr(_), Some(m)) => m,
            (MacChoice::Exactly(m), Some(a)) if m == a => m,
            (MacChoice::PfOr(m) | MacChoice::Exactly(m), _) => {
                set_mac(&mut regs, &mut mailbox, m, assigned_mac)?;
                m
            }
        };
        let lpe = mailbox
            .request(&mut regs, &[msg::SET_LPE, u32::from(config.max_frame)])
            .map_err(|source| IgbVfError::Mailbox { step: "SET_LPE", source })?;
        if !lpe.acked {
            return Err(IgbVfError::LargeFramesRefused(config.max_frame));
        }
        let bring_up = BringUp { assigned_mac, api, messages: mailbox.sent + mailbox.received };
        let mut vf = Self {
            regs,
            dma,
            layout,
            mailbox,
            mac,
            max_frame: config.max_frame,
            bring_up,
            tx_next: 0,
            tx_clean: 0,
            rx_next: 0,
            rx_tail: 0,
            rx_buffer_of: (0..config.depth).collect(),
            rx_discarding: false,
            counters: QueueCounters::default(),
        };
        vf.start_tx()?;
        vf.start_rx()?;
        Ok(vf)
    }

    fn ring_base(&self, offset: usize) -> u64 {
        self.dma.iova(offset).0
    }

    fn wait_enabled(&mut self, reg: u32, what: &'static str) -> Result<(), IgbVfError> {
        for _ in 0..100 {
            if self.regs.read32(reg) & QUEUE_ENABLE != 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Err(IgbVfError::QueueNotEnabled(what))
    }

    fn start_tx(&mut self) -> Result<(), IgbVfError> {
        let d = self.layout.depth;
        for i in 0..d {
            self.write_tx_desc(i, TxDesc::zeroed())?;
        }
        let base = self.ring_base(self.layout.tx_ring);
        self.regs.write32(txdctl(0), 0);
        self.regs.write32(tdbal(0), base as u32);
        self.regs.write32(tdbah(0), (base >> 32) as u32);
        self.regs.write32(tdlen(0), d * DESC_BYTES as u32);
        self.regs.write32(tdh(0), 0);
        self.regs.write32(tdt(0), 0);
        self.regs.write32(txdctl(0), QUEUE_ENABLE);
        self.wait_enabled(txdctl(0), "TX")
    }

    fn start_rx(&mut self) -> Result<(), IgbVfError> {
        let d = self.layout.depth;
        let base = self.ring_base(self.layout.rx_ring);
        self.regs.write32(rxdctl(0), 0);
        self.regs.write32(rdbal(0), base as u32);
        self.regs.write32(rdbah(0), (base >> 32) as u32);
        self.regs.write32(rdlen(0), d * DESC_BYTES as u32);
        let kib = (BUF_BYTES as u32 >> SRRCTL_BSIZEPKT_SHIFT) & SRRCTL_BSIZEPKT_MASK;
        self.regs.write32(srrctl(0), kib | SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN);
        self.regs.write32(rdh(0), 0);
        self.regs.write32(rdt(0), 0);
        self.regs.write32(rxdctl(0), QUEUE_ENABLE);
        self.wait_enabled(rxdctl(0), "RX")?;
        for slot in 0..d - 1 {
            self.rx_buffer_of[slot as usize] = slot;
            self.write_rx_desc(slot, RxDesc::post(self.rx_buffer_iova(slot)))?;
        }
        self.rx_tail = d - 1;
        fence(Ordering::Release);
        self.regs.write32(rdt(0), self.rx_tail);
        Ok(())
    }

    fn tx_desc_iova(&self, i: u32) -> u64 {
        self.dma.iova(self.layout.tx_ring + i as usize * DESC_BYTES).0
    }

    fn rx_desc_iova(&self, i: u32) -> u64 {
        self.dma.iova(self.layout.rx_ring + i as usize * DESC_BYTES).0
    }

    fn tx_buffer_iova(&self, i: u32) -> u64 {
        self.dma.iova(self.layout.tx_bufs + i as usize * BUF_BYTES).0
    }

    fn rx_buffer_iova(&self, buffer: u32) -> u64 {
        self.dma.iova(self.layout.rx_bufs + buffer as usize * BUF_BYTES).0
    }

    fn write_tx_desc(&self, i: u32, d: TxDesc) -> Result<(), DmaError> {
        self.dma.write(self.tx_desc_iova(i), bytemuck::bytes_of(&d))
    }

    fn write_rx_desc(&self, i: u32, d: RxDesc) -> Result<(), DmaError> {
        self.dma.write(self.rx_desc_iova(i), bytemuck::bytes_of(&d))
    }

    /// The MAC the VF receives on.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// What the bring-up learned from the PF.
    pub fn bring_up(&self) -> BringUp {
        self.bring_up
    }

    /// The largest frame the VF receives, with FCS.
    pub fn max_frame(&self) -> u16 {
        self.max_frame
    }

    /// Descriptors per ring.
    pub fn depth(&self) -> u32 {
        self.layout.depth
    }

    /// The link as VTSTATUS has it.
    pub fn link(&mut self) -> Link {
        Link::from_status(self.regs.read32(STATUS))
    }

    /// Whether the PF has reset the VF since the last look (mailbox RSTI / RSTD): its queues
    /// are then disabled and the VF must be opened again.
    pub fn reset_by_pf(&mut self) -> bool {
        self.mailbox.reset_pending(&mut self.regs)
    }

    /// The driver's counters.
    pub fn counters(&self) -> QueueCounters {
        self.counters
    }

    /// The VF's statistics registers.
    pub fn device_counters(&mut self) -> DeviceCounters {
        DeviceCounters {
            rx_packets: self.regs.read32(VFGPRC),
            tx_packets: self.regs.read32(VFGPTC),
            rx_octets: self.regs.read32(VFGORC),
            tx_octets: self.regs.read32(VFGOTC),
            rx_multicast: self.regs.read32(VFMPRC),
        }
    }

    /// TX descriptors posted and not yet completed.
    pub fn tx_in_flight(&self) -> u32 {
        self.tx_next.wrapping_sub(self.tx_clean) % self.layout.depth
    }

    /// The registers (for tests and diagnostics).
    pub fn registers(&mut self) -> &mut R {
        &mut self.regs
    }

    /// Copies frames into TX buffers and posts one descriptor each, then rings TDT once;
    /// returns how many were taken (a prefix: it stops at a full ring or at a frame that is
    /// empty or larger than a buffer).
    pub fn send_burst(&mut self, frames: &[&[u8]]) -> usize {
        let d = self.layout.depth;
        let mut taken = 0;
        for frame in frames {
            if self.tx_in_flight() + 1 >= d
                || frame.is_empty()
                || frame.len() > BUF_BYTES - FCS_BYTES
            {
                break;
            }
            let i = self.tx_next;
            let addr = self.tx_buffer_iova(i);
            if self.dma.write(addr, frame).is_err()
                || self.write_tx_desc(i, TxDesc::frame(addr, frame.len() as u16)).is_err()
            {
                break;
            }
            self.tx_next = wrap(d, i + 1);
            self.counters.tx_frames += 1;
            self.counters.tx_bytes += frame.len() as u64;
            taken += 1;
        }
        self.counters.tx_refused += (frames.len() - taken) as u64;
        if taken > 0 {
            // The descriptors are in memory before the device is told of them.
            fence(Ordering::Release);
            self.regs.write32(tdt(0), self.tx_next);
        }
        taken
    }

    /// Reaps completed TX descriptors (DD written back, in ring order); returns how many.
    pub fn reap_tx(&mut self) -> usize {
        let mut n = 0;
        while self.tx_clean != self.tx_next {
            let at = self.tx_desc_iova(self.tx_clean) + status_at::TX as u64;
            match self.dma.load_u32_acquire(at) {
                Ok(status) if status & desc::tx::STATUS_DD != 0 => {}
                _ => break,
            }
            self.tx_clean = wrap(self.layout.depth, self.tx_clean + 1);
            n += 1;
        }
        self.counters.tx_completed += n as u64;
        n
    }

    /// Takes received frames (DD set, in ring order), calling `each` with each whole frame,
    /// and reposts their buffers with one RDT write; returns how many frames were handed up.
    pub fn recv(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let d = self.layout.depth;
        let (mut frames, mut reposted) = (0, 0);
        while self.rx_next != self.rx_tail {
            let slot = self.rx_next;
            let at = self.rx_desc_iova(slot);
            match self.dma.load_u32_acquire(at + status_at::RX as u64) {
                Ok(status) if status & rx::STAT_DD != 0 => {}
                _ => break,
            }
            let mut wb = RxWriteback::zeroed();
            if self.dma.read(at, bytemuck::bytes_of_mut(&mut wb)).is_err() {
                break;
            }
            let buffer = self.rx_buffer_of[slot as usize];
            let len = usize::from(wb.length);
            let eop = wb.status_error & rx::STAT_EOP != 0;
            if std::mem::take(&mut self.rx_discarding) || !eop || len == 0 || len > BUF_BYTES {
                // The rest of a chained frame, a frame that chains, or a length no buffer has.
                self.counters.rx_malformed += 1;
                self.rx_discarding = !eop;
            } else if wb.status_error & rx::ERR_FRAME != 0 {
                self.counters.rx_errors += 1;
            } else {
                // SAFETY: the buffer is the driver's: the device completed it (DD) and it is
                // not posted again until after this view ends.
                if let Ok(bytes) = unsafe { self.dma.view(self.rx_buffer_iova(buffer), len) } {
                    each(bytes);
                    self.counters.rx_frames += 1;
                    self.counters.rx_bytes += len as u64;
                    frames += 1;
                }
            }
            // The buffer goes to the free slot; the consumed slot becomes the next free one.
            let tail = self.rx_tail;
            self.rx_buffer_of[tail as usize] = buffer;
            if self.write_rx_desc(tail, RxDesc::post(self.rx_buffer_iova(buffer))).is_err() {
                break;
            }
            self.rx_tail = wrap(d, tail + 1);
            self.rx_next = wrap(d, slot + 1);
            reposted += 1;
        }
        if reposted > 0 {
            fence(Ordering::Release);
            self.regs.write32(rdt(0), self.rx_tail);
        }
        frames
    }

    /// Stops both queues and resets the VF, so the device touches the DMA region no more.
    pub fn stop(&mut self) {
        self.regs.write32(rxdctl(0), 0);
        self.regs.write32(txdctl(0), 0);
        let ctrl = self.regs.read32(CTRL);
        self.regs.write32(CTRL, ctrl | CTRL_RST);
    }
}

impl<R: RegisterSpace> Drop for IgbVf<R> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<R: RegisterSpace> crate::nic::QueuePair for IgbVf<R> {
    fn send_burst(&mut self, frames: &[&[u8]]) -> usize {
        IgbVf::send_burst(self, frames)
    }

    fn reap_tx(&mut self) -> usize {
        IgbVf::reap_tx(self)
    }

    fn recv_each(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        self.recv(each)
    }

    fn refill_rx(&mut self) -> usize {
        // Every buffer goes back to the ring as its frame is taken.
        0
    }

    fn rx_capacity(&self) -> usize {
        self.layout.depth as usize - 1
    }

    fn max_frame(&self) -> usize {
        usize::from(self.max_frame) - FCS_BYTES
    }
}

/// CTRL.RST, then VF_RESET through the mailbox; returns the MAC the PF assigned, if any.
fn reset(
    regs: &mut impl RegisterSpace,
    mailbox: &mut Mailbox,
    timeout: Duration,
) -> Result<Option<MacAddr>, IgbVfError> {
    let ctrl = regs.read32(CTRL);
    regs.write32(CTRL, ctrl | CTRL_RST);
    let start = std::time::Instant::now();
    while mailbox.reset_pending(regs) {
        if start.elapsed() >= timeout {
            return Err(IgbVfError::StuckInReset(start.elapsed()));
        }
        std::thread::sleep(Duration::from_micros(5));
    }
    let reply = mailbox
        .request(regs, &[msg::RESET])
        .map_err(|source| IgbVfError::Mailbox { step: "VF_RESET", source })?;
    let mac = mac_from_words(reply.words[1], reply.words[2]);
    Ok((reply.acked && mac.is_unicast_assigned()).then_some(mac))
}

/// API_NEGOTIATE 2.0; a NACK means the PF speaks 1.0.
fn negotiate_api(regs: &mut impl RegisterSpace, mailbox: &mut Mailbox) -> Result<u32, IgbVfError> {
    let reply = mailbox
        .request(regs, &[msg::API_NEGOTIATE, api::V2_0])
        .map_err(|source| IgbVfError::Mailbox { step: "API_NEGOTIATE", source })?;
    Ok(if reply.acked { api::V2_0 } else { api::V1_0 })
}

fn set_mac(
    regs: &mut impl RegisterSpace,
    mailbox: &mut Mailbox,
    mac: MacAddr,
    assigned: Option<MacAddr>,
) -> Result<(), IgbVfError> {
    let (w1, w2) = mac_words(mac);
    let reply = mailbox
        .request(regs, &[msg::SET_MAC_ADDR, w1, w2])
        .map_err(|source| IgbVfError::Mailbox { step: "SET_MAC_ADDR", source })?;
    if reply.acked { Ok(()) } else { Err(IgbVfError::MacRefused { asked: mac, assigned }) }
}

/// A MAC as the mailbox carries it: bytes 0–3 in word 1, 4–5 in word 2, little-endian.
pub fn mac_words(mac: MacAddr) -> (u32, u32) {
    let m = mac.0;
    (u32::from_le_bytes([m[0], m[1], m[2], m[3]]), u32::from(u16::from_le_bytes([m[4], m[5]])))
}

/// The inverse of [`mac_words`].
pub fn mac_from_words(w1: u32, w2: u32) -> MacAddr {
    let a = w1.to_le_bytes();
    let b = w2.to_le_bytes();
    MacAddr([a[0], a[1], a[2], a[3], b[0], b[1]])
}
