//! The emulated NIC: a software device in the hypervisor, one per host, serving the queue pairs
//! of every VM whose ENI takes the emulated path.
//!
//! The device model is a software [`PhysicalFunction`] (the same validation as the hardware, so a
//! hostile guest gains nothing by choosing this path) whose ports are the VMs' emulated NICs and
//! whose embedded switch is the hypervisor's software switch (a bridge). Nobody polls it: it
//! runs only when a guest's doorbell *traps* — the guest writes an eventfd, the hypervisor
//! thread sleeping on it wakes, as a vCPU's MMIO write exits to the VMM — or when its backend
//! raises an interrupt. Once awake it serves until there is no work left, then sleeps again.
//!
//! The software switch runs in VEPA mode: every frame is copied into a staging queue (the
//! hypervisor's socket buffer) and from there into the TX buffers of the hypervisor's own VF on
//! the host's PF (its backend, holding an extra MAC filter per emulated NIC), one doorbell per
//! burst; the PF relays frames between two emulated NICs of one host back to the backend VF. Frames the backend receives are copied into the guests' RX
//! buffers. Against the SR-IOV path each frame costs one more copy each way, a hand-off between
//! threads and, per burst, an eventfd write, a wake-up and a read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vnic::device::{InterruptLine, PhysicalFunction};
use vnic::driver::QueuePairDriver;
use vnic::switch::Uplink;

use crate::host::EngineDoorbell;

/// Frames the staging queue holds before it drops.
const STAGING_FRAMES: usize = 8192;
/// Frames handed to the backend per doorbell.
const BACKEND_BURST: usize = 32;

/// A control-plane request to the device model.
pub(crate) type SoftCommand = Box<dyn FnOnce(&mut PhysicalFunction) + Send>;

/// Counters of an emulated NIC model.
#[derive(Debug, Default)]
pub struct EmulatedStats {
    /// Wake-ups of the hypervisor thread by a doorbell or the backend's interrupt.
    pub traps: AtomicU64,
    /// Frames copied out through the backend VF.
    pub to_backend: AtomicU64,
    /// Frames copied in from the backend VF.
    pub from_backend: AtomicU64,
    /// Frames dropped because the staging queue was full.
    pub staging_drops: AtomicU64,
}

#[derive(Debug, Default)]
struct Staging {
    frames: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
}

/// The software switch's uplink: a staging queue in front of the backend VF.
#[derive(Debug)]
struct StagingUplink {
    staging: Mutex<Staging>,
    stats: Arc<EmulatedStats>,
}

impl Uplink for StagingUplink {
    fn transmit(&self, frame: &[u8]) {
        let Ok(mut s) = self.staging.lock() else { return };
        if s.frames.len() >= STAGING_FRAMES {
            self.stats.staging_drops.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut buf = s.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        s.frames.push_back(buf);
    }
}

impl StagingUplink {
    /// Moves staged frames into the backend's TX ring; returns how many.
    fn flush(&self, backend: &mut QueuePairDriver) -> usize {
        let Ok(mut s) = self.staging.lock() else { return 0 };
        let mut moved = 0;
        while !s.frames.is_empty() {
            backend.reap_tx();
            let n = s.frames.len().min(BACKEND_BURST);
            let refs: Vec<&[u8]> = s.frames.iter().take(n).map(Vec::as_slice).collect();
            let sent = backend.send_burst(&refs);
            for _ in 0..sent {
                if let Some(buf) = s.frames.pop_front() {
                    s.pool.push(buf);
                }
            }
            moved += sent;
            if sent < n {
                break;
            }
        }
        self.stats.to_backend.fetch_add(moved as u64, Ordering::Relaxed);
        moved
    }
}

/// A host's emulated NIC model on its hypervisor thread.
#[derive(Debug)]
pub struct EmulatedDevice {
    control: mpsc::Sender<SoftCommand>,
    line: Arc<InterruptLine>,
    stop: Arc<AtomicBool>,
    stats: Arc<EmulatedStats>,
    thread: Option<JoinHandle<()>>,
}

impl EmulatedDevice {
    /// Starts the hypervisor thread with the software device `soft` and the backend driver;
    /// `line` is the eventfd that guests' doorbells and the backend's RX interrupt raise.
    pub(crate) fn spawn(
        name: &str,
        mut soft: PhysicalFunction,
        mut backend: QueuePairDriver,
        line: Arc<InterruptLine>,
        engine: Arc<EngineDoorbell>,
    ) -> std::io::Result<Self> {
        let stats = Arc::new(EmulatedStats::default());
        let uplink = Arc::new(StagingUplink { staging: Mutex::default(), stats: stats.clone() });
        soft.set_uplink(uplink.clone());
        let (control, mailbox) = mpsc::channel::<SoftCommand>();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, wake, counters) = (stop.clone(), line.clone(), stats.clone());
        backend.refill_rx();
        let thread =
            std::thread::Builder::new().name(format!("hypervisor {name}")).spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if wake.wait(Duration::from_millis(1)) {
                        counters.traps.fetch_add(1, Ordering::Relaxed);
                    }
                    while let Ok(command) = mailbox.try_recv() {
                        command(&mut soft);
                    }
                    // Serve until quiet, as a vhost worker does after a kick (bounded, so that
                    // commands and stop requests are seen).
                    for _ in 0..4096 {
                        let mut work = soft.poll();
                        let moved = uplink.flush(&mut backend);
                        if moved > 0 {
                            engine.kick();
                        }
                        work += moved;
                        backend.reap_tx();
                        let received = backend.recv(|frame, _| soft.receive_from_uplink(frame));
                        counters.from_backend.fetch_add(received as u64, Ordering::Relaxed);
                        work += received;
                        if work == 0 {
                            break;
                        }
                    }
                }
            })?;
        Ok(Self { control, line, stop, stats, thread: Some(thread) })
    }

    /// The doorbell line guests trap through.
    pub fn doorbell(&self) -> Arc<InterruptLine> {
        self.line.clone()
    }

    /// Counters.
    pub fn stats(&self) -> &EmulatedStats {
        &self.stats
    }

    /// Runs `f` on the software device between two services and returns its result.
    pub(crate) fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PhysicalFunction) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        let command: SoftCommand = Box::new(move |pf| {
            let _ = tx.send(f(pf));
        });
        self.control.send(command).ok()?;
        self.line.raise();
        rx.recv().ok()
    }
}

impl Drop for EmulatedDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.line.raise();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
