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
    /// Moves staged frames into the backend's TX ring; returns how many, and their bytes.
    fn flush(&self, backend: &mut QueuePairDriver) -> (usize, usize) {
        let Ok(mut s) = self.staging.lock() else { return (0, 0) };
        let (mut moved, mut bytes) = (0, 0);
        while !s.frames.is_empty() {
            backend.reap_tx();
            let n = s.frames.len().min(BACKEND_BURST);
            let refs: Vec<&[u8]> = s.frames.iter().take(n).map(Vec::as_slice).collect();
            let sent = backend.send_burst(&refs);
            for _ in 0..sent {
                if let Some(buf) = s.frames.pop_front() {
                    bytes += buf.len();
                    s.pool.push(buf);
                }
            }
            moved += sent;
            if sent < n {
                break;
            }
        }
        self.stats.to_backend.fetch_add(moved as u64, Ordering::Relaxed);
        (moved, bytes)
    }
}

/// The device model's state: the software PF, its backend driver and staging queue.
#[derive(Debug)]
struct SoftDevice {
    soft: PhysicalFunction,
    backend: QueuePairDriver,
    uplink: Arc<StagingUplink>,
    engine: Arc<EngineDoorbell>,
    stats: Arc<EmulatedStats>,
}

/// What one pass of the hypervisor's service loop moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Service {
    /// Descriptors the software device took from guests' TX rings.
    pub from_guests: usize,
    /// Frames copied into the backend VF's TX ring.
    pub to_backend: usize,
    /// Frames copied from the backend VF to guests.
    pub from_backend: usize,
    /// Bytes copied into the backend's TX buffers.
    pub to_backend_bytes: usize,
    /// Bytes copied from the backend to guests.
    pub from_backend_bytes: usize,
}

impl Service {
    /// Anything at all.
    pub fn any(&self) -> bool {
        self.from_guests + self.to_backend + self.from_backend > 0
    }
}

impl SoftDevice {
    /// One pass: guests' TX rings through the software switch into staging, staging into the
    /// backend's TX ring (kicking the PF's engine), the backend's RX ring into guests.
    fn serve_once(&mut self) -> Service {
        let from_guests = self.soft.poll();
        let (to_backend, to_backend_bytes) = self.uplink.flush(&mut self.backend);
        if to_backend > 0 {
            self.engine.kick();
        }
        self.backend.reap_tx();
        let soft = &mut self.soft;
        let mut from_backend_bytes = 0;
        let from_backend = self.backend.recv(|frame, _| {
            from_backend_bytes += frame.len();
            soft.receive_from_uplink(frame)
        });
        self.stats.from_backend.fetch_add(from_backend as u64, Ordering::Relaxed);
        Service { from_guests, to_backend, from_backend, to_backend_bytes, from_backend_bytes }
    }

    /// Serves until quiet, as a vhost worker does after a kick (bounded, so that commands and
    /// stop requests are seen); returns the sum of the passes.
    fn serve(&mut self) -> Service {
        let mut total = Service::default();
        for _ in 0..4096 {
            let pass = self.serve_once();
            total.from_guests += pass.from_guests;
            total.to_backend += pass.to_backend;
            total.from_backend += pass.from_backend;
            total.to_backend_bytes += pass.to_backend_bytes;
            total.from_backend_bytes += pass.from_backend_bytes;
            if !pass.any() {
                break;
            }
        }
        total
    }
}

/// A host's emulated NIC model on its hypervisor thread, or inline for a simulation.
#[derive(Debug)]
pub struct EmulatedDevice {
    runner: SoftRunner,
    line: Arc<InterruptLine>,
    stats: Arc<EmulatedStats>,
}

#[derive(Debug)]
enum SoftRunner {
    Thread {
        control: mpsc::Sender<SoftCommand>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    },
    Inline(Box<Mutex<SoftDevice>>),
}

impl EmulatedDevice {
    fn device(
        mut soft: PhysicalFunction,
        mut backend: QueuePairDriver,
        engine: Arc<EngineDoorbell>,
    ) -> SoftDevice {
        let stats = Arc::new(EmulatedStats::default());
        let uplink = Arc::new(StagingUplink { staging: Mutex::default(), stats: stats.clone() });
        soft.set_uplink(uplink.clone());
        backend.refill_rx();
        SoftDevice { soft, backend, uplink, engine, stats }
    }

    /// Starts the hypervisor thread with the software device `soft` and the backend driver;
    /// `line` is the eventfd that guests' doorbells and the backend's RX interrupt raise.
    pub(crate) fn spawn(
        name: &str,
        soft: PhysicalFunction,
        backend: QueuePairDriver,
        line: Arc<InterruptLine>,
        engine: Arc<EngineDoorbell>,
    ) -> std::io::Result<Self> {
        let mut device = Self::device(soft, backend, engine);
        let stats = device.stats.clone();
        let (control, mailbox) = mpsc::channel::<SoftCommand>();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, wake) = (stop.clone(), line.clone());
        let thread =
            std::thread::Builder::new().name(format!("hypervisor {name}")).spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if wake.wait(Duration::from_millis(1)) {
                        device.stats.traps.fetch_add(1, Ordering::Relaxed);
                    }
                    while let Ok(command) = mailbox.try_recv() {
                        command(&mut device.soft);
                    }
                    device.serve();
                }
            })?;
        let runner = SoftRunner::Thread { control, stop, thread: Some(thread) };
        Ok(Self { runner, line, stats })
    }

    /// The device model with no thread: the scheduler calls [`EmulatedDevice::trap`] when the
    /// line (a flag line, see [`InterruptLine::flag`]) is raised.
    pub(crate) fn inline(
        soft: PhysicalFunction,
        backend: QueuePairDriver,
        line: Arc<InterruptLine>,
        engine: Arc<EngineDoorbell>,
    ) -> Self {
        let device = Self::device(soft, backend, engine);
        let stats = device.stats.clone();
        Self { runner: SoftRunner::Inline(Box::new(Mutex::new(device))), line, stats }
    }

    /// Inline devices: the hypervisor wakes (a trap, or the backend's interrupt) and serves
    /// until quiet; `None` for a threaded device, which wakes itself.
    pub fn trap(&self) -> Option<Service> {
        let SoftRunner::Inline(device) = &self.runner else { return None };
        let mut device = device.lock().ok()?;
        device.stats.traps.fetch_add(1, Ordering::Relaxed);
        Some(device.serve())
    }

    /// Inline devices: when the software device's timed work (moderated interrupts towards
    /// guests) next falls due.
    pub fn next_timer_ns(&self) -> Option<u64> {
        let SoftRunner::Inline(device) = &self.runner else { return None };
        device.lock().ok()?.soft.next_timer_ns()
    }

    /// Inline devices: a poll of the software device alone, for its timers (no trap counted).
    pub fn tick(&self) -> Option<usize> {
        let SoftRunner::Inline(device) = &self.runner else { return None };
        Some(device.lock().ok()?.soft.poll())
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
        let control = match &self.runner {
            SoftRunner::Thread { control, .. } => control,
            SoftRunner::Inline(device) => return Some(f(&mut device.lock().ok()?.soft)),
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let command: SoftCommand = Box::new(move |pf| {
            let _ = tx.send(f(pf));
        });
        control.send(command).ok()?;
        self.line.raise();
        rx.recv().ok()
    }
}

impl Drop for EmulatedDevice {
    fn drop(&mut self) {
        if let SoftRunner::Thread { stop, thread, .. } = &mut self.runner {
            stop.store(true, Ordering::Relaxed);
            self.line.raise();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}
