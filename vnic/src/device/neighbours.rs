//! Neighbours that load a PF's engine, for the isolation tests and `benches/isolation.rs`: a
//! streaming pair (one VF sending valid UDP frames to another, which receives them) and a
//! hostile VF (real rings, then garbage descriptors: random words, addresses in other windows
//! or past the end of its own, huge lengths, reused request ids, chains that never end).
//!
//! Each keeps its TX ring full ([`StreamingPair::top_up`], [`HostileVf::top_up`]) so that the
//! engine always finds more than a VF's share waiting; between polls the pair reaps its
//! completions and receives ([`StreamingPair::drain`]).

use std::sync::Arc;

use super::{DeviceError, DmaWindow, Iova, PhysicalFunction};
use crate::abi::io::{TxCompletion, TxDesc};
use crate::driver::{DriverError, QueuePairDriver, QueuePairLayout};
use crate::frame::build_udp_frame;
use crate::ring::{
    CompletionConsumer, CompletionRing, RegionError, RingError, SharedRegion, SubmissionProducer,
    SubmissionRing,
};

/// Ring depth of every neighbour's queues.
pub const DEPTH: u32 = 256;
/// Guest memory of a VF with one queue pair (rings and 2 KiB buffers, rounded to pages).
fn queue_bytes() -> usize {
    QueuePairLayout::new(0, DEPTH, 2048).end.next_multiple_of(4096)
}

/// Why a neighbour could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    /// The device refused a step.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The driver could not lay out its rings.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A ring could not be laid out or attached.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Guest memory could not be mapped.
    #[error(transparent)]
    Region(#[from] RegionError),
}

/// Gives `vf` guest memory for `queues` queue pairs at IOVA `(vf + 1) << 32`; returns its
/// window.
fn assign(pf: &mut PhysicalFunction, vf: u16, queues: usize) -> Result<DmaWindow, NeighbourError> {
    let region = Arc::new(SharedRegion::anonymous(queues.max(1) * queue_bytes())?);
    let window = DmaWindow::new(region, Iova((u64::from(vf) + 1) << 32));
    pf.assign(vf, window.clone())?;
    Ok(window)
}

/// A driver with `queues` queue pairs on `vf`.
fn drivers(
    pf: &mut PhysicalFunction,
    vf: u16,
    window: &DmaWindow,
    queues: usize,
) -> Result<Vec<QueuePairDriver>, NeighbourError> {
    let mut out = Vec::with_capacity(queues);
    let mut offset = 0;
    for _ in 0..queues {
        let layout = QueuePairLayout::new(offset, DEPTH, 2048);
        offset += queue_bytes();
        let mut driver = QueuePairDriver::create(window.clone(), layout)?;
        pf.create_queue_pair(vf, driver.spec())?;
        driver.refill_rx();
        out.push(driver);
    }
    Ok(out)
}

/// One VF streaming valid UDP frames of one size to another VF.
pub struct StreamingPair {
    tx: Vec<QueuePairDriver>,
    rx: QueuePairDriver,
    frames: Vec<Vec<u8>>,
    /// Frames posted.
    pub sent: u64,
    /// Frames received by the other VF.
    pub received: u64,
}

impl std::fmt::Debug for StreamingPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingPair")
            .field("queues", &self.tx.len())
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish()
    }
}

impl StreamingPair {
    /// `from` (with `queues` TX queue pairs) sends `frame_len`-byte frames to `to`; both VFs
    /// are assigned and given their queues here.
    pub fn new(
        pf: &mut PhysicalFunction,
        from: u16,
        to: u16,
        queues: usize,
        frame_len: usize,
    ) -> Result<Self, NeighbourError> {
        let (src, dst) = (pf.port(from)?.mac, pf.port(to)?.mac);
        let tx_window = assign(pf, from, queues)?;
        let rx_window = assign(pf, to, 1)?;
        let tx = drivers(pf, from, &tx_window, queues)?;
        let rx = drivers(pf, to, &rx_window, 1)?
            .pop()
            .ok_or(DeviceError::NoSuchQueue { vf: to, queue: 0 })?;
        let ips = ([10, 0, (from >> 8) as u8, from as u8], [10, 0, (to >> 8) as u8, to as u8]);
        // Different source ports so that a multi-queue receiver would spread them.
        let frames = (0..DEPTH as u16)
            .map(|i| {
                let mut buf = vec![0u8; frame_len.max(42)];
                build_udp_frame(&mut buf, frame_len, dst, src, ips, (10_000 + i, 9000));
                buf
            })
            .collect();
        Ok(Self { tx, rx, frames, sent: 0, received: 0 })
    }

    /// Fills every TX ring; returns the frames posted.
    pub fn top_up(&mut self) -> usize {
        let frames: Vec<&[u8]> = self.frames.iter().map(Vec::as_slice).collect();
        let mut posted = 0;
        for tx in &mut self.tx {
            posted += tx.send_burst(&frames);
        }
        self.sent += posted as u64;
        posted
    }

    /// Reaps TX completions and receives what arrived; returns the frames received.
    pub fn drain(&mut self) -> usize {
        for tx in &mut self.tx {
            while tx.reap_tx() > 0 {}
        }
        let mut got = 0;
        loop {
            let n = self.rx.recv(|_, _| {});
            if n == 0 {
                break;
            }
            got += n;
        }
        self.received += got as u64;
        got
    }
}

/// xorshift64*: a seeded source of hostile bits.
struct Bits(u64);

impl Bits {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A VF that lays out real rings (so the device attaches them) and then posts garbage.
pub struct HostileVf {
    producer: SubmissionProducer<TxDesc>,
    completions: CompletionConsumer<TxCompletion>,
    garbage: Vec<TxDesc>,
    next: usize,
    /// Descriptors posted.
    pub posted: u64,
}

impl std::fmt::Debug for HostileVf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileVf").field("posted", &self.posted).finish()
    }
}

impl HostileVf {
    /// Assigns `vf`, gives it one queue pair and a stock of garbage from `seed`.
    pub fn new(pf: &mut PhysicalFunction, vf: u16, seed: u64) -> Result<Self, NeighbourError> {
        let window = assign(pf, vf, 1)?;
        let layout = QueuePairLayout::new(0, DEPTH, 2048);
        let region = window.region().clone();
        SubmissionRing::<TxDesc>::init(&region, layout.tx_sq, DEPTH)?;
        CompletionRing::<TxCompletion>::init(&region, layout.tx_cq, DEPTH)?;
        SubmissionRing::<crate::abi::io::RxDesc>::init(&region, layout.rx_sq, DEPTH)?;
        CompletionRing::<crate::abi::io::RxCompletion>::init(&region, layout.rx_cq, DEPTH)?;
        pf.create_queue_pair(vf, layout.spec(&window))?;
        let base = window.iova(0).0;
        let bytes = queue_bytes() as u64;
        let targets = [0, base, base + bytes - 8, base + (1 << 32), u64::MAX - 100];
        let mut bits = Bits(seed | 1);
        let garbage = (0..4 * DEPTH as usize)
            .map(|_| {
                let r = bits.next();
                match r % 4 {
                    0 => bytemuck::cast([bits.next(), bits.next()]),
                    1 => TxDesc::new(
                        targets[(r >> 8) as usize % targets.len()] + (r >> 40) % 64,
                        (r >> 16) as u16,
                        (r >> 32) as u16,
                    )
                    .with_first(r & 0x100 != 0)
                    .with_last(r & 0x200 != 0),
                    2 => TxDesc::new(base + layout.tx_bufs as u64, 64, 7)
                        .with_first(true)
                        .with_last(true)
                        .with_phase(r & 0x400 != 0),
                    _ => TxDesc::new(base + r % bytes, 9000, (r % 256) as u16).with_first(true),
                }
            })
            .collect();
        Ok(Self {
            producer: SubmissionProducer::attach(region.clone(), layout.tx_sq)?,
            completions: CompletionConsumer::attach(region, layout.tx_cq)?,
            garbage,
            next: 0,
            posted: 0,
        })
    }

    /// Fills the TX ring with garbage (and takes whatever completions came back); returns the
    /// descriptors posted.
    pub fn top_up(&mut self) -> usize {
        let mut done = [TxCompletion::default(); 64];
        while self.completions.pop_burst(&mut done) > 0 {}
        let mut posted = 0;
        loop {
            let chunk = &self.garbage[self.next..(self.next + 64).min(self.garbage.len())];
            let n = self.producer.push_burst(chunk);
            posted += n;
            self.next = (self.next + n) % self.garbage.len();
            if n < chunk.len() || n == 0 {
                break;
            }
        }
        self.posted += posted as u64;
        posted
    }
}
