//! A host: its physical functions, each driven by an engine thread, and the pool of VFs the
//! hypervisor hands to VMs.
//!
//! The engine thread owns its [`PhysicalFunction`] outright (the data path takes no lock). The
//! control plane reaches it through a mailbox: [`PfEngine::call`] sends a closure that the engine
//! runs between two polls and waits for its result, as a PF driver's mailbox to its firmware.
//! Between polls the engine also drains the fabric's frames for it that are due.
//!
//! An engine with nothing to do spins for 64 empty polls (busy polling, as DPDK does), then
//! sleeps on its [`EngineDoorbell`] for at most 50 µs (the timers it keeps — moderated
//! interrupts, shaped frames, frames in flight on the fabric — are late by no more than that).
//! Whoever gives a sleeping engine work kicks it: a guest driver after publishing a burst, the
//! fabric after queueing a frame for it, the emulated NIC model after feeding its backend VF.
//! The kick is a load of one flag while the engine is awake, an eventfd write when it sleeps
//! (the notification suppression of virtio, or NAPI's interrupt re-arming), so a small machine's
//! cores go to the VMs when the NIC has nothing to do, without a spinning thread per host.
//!
//! Under a discrete-event simulation the same PF runs *inline* ([`PfEngine::inline`]): no thread,
//! the control plane's closures run at once, and the scheduler steps the engine
//! ([`PfEngine::step`]) at the virtual times the cost model gives, asking it when its next timed
//! work falls due ([`PfEngine::next_timer_ns`]). Its doorbell is then a flag the scheduler reads
//! ([`EngineDoorbell::take`]) to learn that the fabric queued frames for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vnic::device::{InterruptLine, PhysicalFunction};

use crate::fabric::FabricPort;

/// A control-plane request to an engine.
type PfCommand = Box<dyn FnOnce(&mut PhysicalFunction) + Send>;

/// Empty polls before the engine sleeps.
const SPIN_POLLS: u32 = 64;
/// Longest sleep of an idle engine.
const IDLE_SLEEP: Duration = Duration::from_micros(50);

/// How work reaches a sleeping engine.
#[derive(Debug)]
pub struct EngineDoorbell {
    sleeping: AtomicBool,
    line: InterruptLine,
}

impl EngineDoorbell {
    /// A doorbell.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self { sleeping: AtomicBool::new(false), line: InterruptLine::new()? })
    }

    /// A doorbell for an inline engine: it always "sleeps", and a kick sets a flag.
    pub fn flag() -> Self {
        Self { sleeping: AtomicBool::new(true), line: InterruptLine::flag() }
    }

    /// Takes a kick without waiting; true if the engine was kicked since the last take.
    pub fn take(&self) -> bool {
        self.line.take()
    }

    /// Wakes the engine if it sleeps; call after publishing the work.
    #[inline]
    pub fn kick(&self) {
        // Orders the work's publication before the flag's load (the engine orders its flag
        // store before its last look for work): one of the two sees the other.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.line.raise();
        }
    }

    /// The engine's side: announce sleep, look for work once more with `poll`, and sleep up to
    /// `timeout` if there was none.
    fn sleep(&self, timeout: Duration, poll: impl FnOnce() -> usize) -> usize {
        self.sleeping.store(true, Ordering::SeqCst);
        let work = poll();
        if work == 0 {
            self.line.wait(timeout);
        }
        self.sleeping.store(false, Ordering::Relaxed);
        work
    }
}

/// What can go wrong talking to an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine thread is gone (it panicked or was stopped).
    #[error("the engine of PF {0} is not running")]
    Gone(String),
    /// The engine thread could not be started.
    #[error("could not start the engine of PF {name}: {source}")]
    Spawn {
        /// The PF.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A PF on its engine thread, or inline for a simulation's scheduler.
#[derive(Debug)]
pub struct PfEngine {
    name: String,
    endpoint: usize,
    total_vfs: u16,
    runner: Runner,
    doorbell: Arc<EngineDoorbell>,
}

#[derive(Debug)]
enum Runner {
    Thread {
        control: mpsc::Sender<PfCommand>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<PhysicalFunction>>,
    },
    Inline(Box<Mutex<InlineEngine>>),
}

#[derive(Debug)]
struct InlineEngine {
    pf: PhysicalFunction,
    port: FabricPort,
}

impl PfEngine {
    /// An engine with no thread: the scheduler calls [`PfEngine::step`].
    pub fn inline(name: String, pf: PhysicalFunction, port: FabricPort, endpoint: usize) -> Self {
        let doorbell = Arc::new(EngineDoorbell::flag());
        port.set_doorbell(doorbell.clone());
        let total_vfs = pf.total_vfs();
        let runner = Runner::Inline(Box::new(Mutex::new(InlineEngine { pf, port })));
        Self { name, endpoint, total_vfs, runner, doorbell }
    }

    /// Inline engines: one poll of every queue and the fabric's frames that are due; returns
    /// the work done (`None` for a threaded engine, which polls itself).
    pub fn step(&self) -> Option<usize> {
        let Runner::Inline(engine) = &self.runner else { return None };
        let mut guard = engine.lock().ok()?;
        let InlineEngine { pf, port } = &mut *guard;
        let work = pf.poll();
        Some(work + port.drain(|frame| pf.receive_from_uplink(frame)))
    }

    /// Inline engines: when timed work next falls due (a held frame, a moderated interrupt, a
    /// frame arriving from the fabric), ns on the shared clock.
    pub fn next_timer_ns(&self) -> Option<u64> {
        let Runner::Inline(engine) = &self.runner else { return None };
        let mut guard = engine.lock().ok()?;
        let InlineEngine { pf, port } = &mut *guard;
        match (pf.next_timer_ns(), port.next_due_ns()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts an engine thread for `pf`, which is fabric endpoint `port`.
    pub fn spawn(
        name: String,
        mut pf: PhysicalFunction,
        mut port: FabricPort,
        endpoint: usize,
    ) -> Result<Self, EngineError> {
        let doorbell = Arc::new(
            EngineDoorbell::new()
                .map_err(|source| EngineError::Spawn { name: name.clone(), source })?,
        );
        port.set_doorbell(doorbell.clone());
        let bell = doorbell.clone();
        let (control, mailbox) = mpsc::channel::<PfCommand>();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let total_vfs = pf.total_vfs();
        let thread = std::thread::Builder::new()
            .name(format!("engine {name}"))
            .spawn(move || {
                let mut idle = 0u32;
                let mut polls = 0u32;
                let mut last_keep_alive = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    let mut work = pf.poll();
                    work += port.drain(|frame| pf.receive_from_uplink(frame));
                    polls = polls.wrapping_add(1);
                    if work > 0 {
                        idle = 0;
                    } else {
                        idle = idle.saturating_add(1);
                    }
                    if polls.is_multiple_of(64) || idle > SPIN_POLLS {
                        while let Ok(command) = mailbox.try_recv() {
                            command(&mut pf);
                            idle = 0;
                        }
                    }
                    if polls.is_multiple_of(4096) && last_keep_alive.elapsed().as_secs() >= 1 {
                        last_keep_alive = Instant::now();
                        for vf in 0..pf.num_vfs() {
                            let _ = pf.send_keep_alive(vf);
                        }
                    }
                    if idle > SPIN_POLLS {
                        let found = bell.sleep(IDLE_SLEEP, || {
                            pf.poll() + port.drain(|frame| pf.receive_from_uplink(frame))
                        });
                        if found > 0 {
                            idle = 0;
                        }
                    } else if work == 0 {
                        std::hint::spin_loop();
                    }
                }
                pf
            })
            .map_err(|source| EngineError::Spawn { name: name.clone(), source })?;
        let runner = Runner::Thread { control, stop, thread: Some(thread) };
        Ok(Self { name, endpoint, total_vfs, runner, doorbell })
    }

    /// Takes a kick of this engine's doorbell (see [`EngineDoorbell::take`]).
    pub fn take_kick(&self) -> bool {
        self.doorbell.take()
    }

    /// The doorbell that wakes this engine when it sleeps.
    pub fn doorbell(&self) -> Arc<EngineDoorbell> {
        self.doorbell.clone()
    }

    /// The PF's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its fabric endpoint.
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// `sriov_totalvfs`.
    pub fn total_vfs(&self) -> u16 {
        self.total_vfs
    }

    /// Runs `f` on the PF between two polls of its engine and returns its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PhysicalFunction) -> R + Send + 'static,
    ) -> Result<R, EngineError> {
        let control = match &self.runner {
            Runner::Thread { control, .. } => control,
            Runner::Inline(engine) => {
                let mut guard = engine.lock().map_err(|_| EngineError::Gone(self.name.clone()))?;
                return Ok(f(&mut guard.pf));
            }
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let command: PfCommand = Box::new(move |pf| {
            let _ = tx.send(f(pf));
        });
        control.send(command).map_err(|_| EngineError::Gone(self.name.clone()))?;
        self.doorbell.kick();
        rx.recv().map_err(|_| EngineError::Gone(self.name.clone()))
    }

    /// Stops the engine and hands the PF back.
    pub fn shut_down(mut self) -> Result<PhysicalFunction, EngineError> {
        let gone = || EngineError::Gone(self.name.clone());
        let runner = std::mem::replace(
            &mut self.runner,
            Runner::Thread { control: mpsc::channel().0, stop: Arc::default(), thread: None },
        );
        match runner {
            Runner::Inline(engine) => Ok(engine.into_inner().map_err(|_| gone())?.pf),
            Runner::Thread { stop, thread, .. } => {
                stop.store(true, Ordering::Relaxed);
                self.doorbell.kick();
                thread.ok_or_else(gone)?.join().map_err(|_| gone())
            }
        }
    }
}

impl Drop for PfEngine {
    fn drop(&mut self) {
        if let Runner::Thread { stop, thread, .. } = &mut self.runner {
            stop.store(true, Ordering::Relaxed);
            self.doorbell.kick();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::{Fabric, LinkSpec};

    #[test]
    fn the_control_plane_reaches_a_running_engine() {
        let fabric = Fabric::new(1, |_, _| LinkSpec { latency_ns: 0, bits_per_second: 1 });
        let pf = PhysicalFunction::new(8).unwrap();
        let engine = PfEngine::spawn("pf0".into(), pf, fabric.port(0), 0).unwrap();
        assert!(engine.call(|pf| pf.set_num_vfs(4).is_ok()).unwrap());
        assert_eq!(engine.call(|pf| pf.num_vfs()).unwrap(), 4);
        assert!(engine.call(|pf| pf.set_num_vfs(2)).unwrap().is_err());
        let pf = engine.shut_down().unwrap();
        assert_eq!(pf.num_vfs(), 4);
    }

    #[test]
    fn an_inline_engine_runs_calls_at_once_and_steps_only_when_told() {
        let fabric = Fabric::new(1, |_, _| LinkSpec { latency_ns: 0, bits_per_second: 1 });
        let pf = PhysicalFunction::new(8).unwrap();
        let engine = PfEngine::inline("pf0".into(), pf, fabric.port(0), 0);
        assert!(engine.call(|pf| pf.set_num_vfs(2).is_ok()).unwrap());
        assert_eq!(engine.step(), Some(0), "nothing posted, nothing done");
        assert_eq!(engine.next_timer_ns(), None, "no timed work");
        assert!(!engine.doorbell().take());
        engine.doorbell().kick();
        assert!(engine.doorbell().take(), "a kick is a flag the scheduler reads");
        assert_eq!(engine.shut_down().unwrap().num_vfs(), 2);
    }
}
