//! The guest's side: its network interfaces as its kernel driver sees them, and what a VM's
//! workload is handed when it runs.
//!
//! A [`GuestNic`] is one ENI as the guest sees it: ENA-style queue pairs in the VM's own memory,
//! driven by [`QueuePairDriver`]. The path decides who serves the rings:
//!
//! * [`IoPath::SrIov`]: a VF of the host's PF owns the device ends and its engine polls them; a
//!   send is a copy into the driver's TX buffer and a doorbell (one store), a receive is a copy
//!   up to the application.
//! * [`IoPath::Emulated`]: a software device in the hypervisor owns them. Each burst ends with a
//!   *trap*: the driver writes the doorbell eventfd, as an MMIO write to an emulated register
//!   exits to the hypervisor, whose thread wakes, copies the frames through its software switch
//!   and into its own VF. Every frame crosses one more copy and one more hand-off.
//!
//! Receive works by NAPI-style polling ([`GuestNic::recv`]) or by sleeping on the RX interrupt
//! line with the device's moderation ([`GuestNic::wait_rx`]).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use vnic::device::InterruptLine;
use vnic::driver::QueuePairDriver;
use vnic::frame::MacAddr;

use crate::eni::{EniId, VmId};
use crate::host::EngineDoorbell;

/// How a VM's network interface reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IoPath {
    /// A hypervisor-mediated (trap-and-copy) NIC.
    Emulated,
    /// An SR-IOV virtual function with the ENA kernel driver.
    SrIov,
    /// An Elastic Fabric Adapter: an SR-IOV VF whose ENA interface carries IP traffic as
    /// `SrIov` does, plus OS-bypass SRD queue pairs (`vnic::efa`). EC2 attaches one only at
    /// launch or to a stopped instance.
    Efa,
}

impl IoPath {
    /// Its name in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            IoPath::Emulated => "emulated",
            IoPath::SrIov => "sriov",
            IoPath::Efa => "efa",
        }
    }
}

impl std::fmt::Display for IoPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One ENI as the guest's driver sees it.
#[derive(Debug)]
pub struct GuestNic {
    /// The ENI.
    pub eni: EniId,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its primary address.
    pub ip: Ipv4Addr,
    /// How it reaches the network.
    pub path: IoPath,
    queues: Vec<QueuePairDriver>,
    /// Emulated path: the doorbell that traps to the hypervisor.
    doorbell: Option<Arc<InterruptLine>>,
    /// The RX interrupt line (moderated), if the guest sleeps on interrupts.
    rx_line: Option<Arc<InterruptLine>>,
    /// SR-IOV path: the doorbell of the engine serving the VF, kicked if it sleeps.
    engine: Option<Arc<EngineDoorbell>>,
}

/// How a NIC's driver and its device signal each other.
#[derive(Debug, Default)]
pub(crate) struct NicSignals {
    /// Emulated path: the doorbell that traps to the hypervisor.
    pub(crate) trap: Option<Arc<InterruptLine>>,
    /// The RX interrupt line, if the guest sleeps on interrupts.
    pub(crate) rx_line: Option<Arc<InterruptLine>>,
    /// SR-IOV path: the engine's doorbell, kicked if it sleeps.
    pub(crate) engine: Option<Arc<EngineDoorbell>>,
}

impl GuestNic {
    pub(crate) fn new(
        eni: EniId,
        (mac, ip): (MacAddr, Ipv4Addr),
        path: IoPath,
        queues: Vec<QueuePairDriver>,
        signals: NicSignals,
    ) -> Self {
        let NicSignals { trap: doorbell, rx_line, engine } = signals;
        let mut queues = queues;
        for queue in &mut queues {
            // The driver posts its receive buffers once the device has attached.
            queue.refill_rx();
        }
        Self { eni, mac, ip, path, queues, doorbell, rx_line, engine }
    }

    /// Queue pairs.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Sends `frames` on queue `q` (modulo the queue count): reaps completions, copies the frames
    /// into TX buffers and rings the doorbell once (trapping on the emulated path); returns how
    /// many were taken.
    pub fn send(&mut self, q: usize, frames: &[&[u8]]) -> usize {
        let n = self.queues.len();
        let Some(queue) = self.queues.get_mut(q % n.max(1)) else { return 0 };
        queue.reap_tx();
        let sent = queue.send_burst(frames);
        if sent > 0 {
            if let Some(doorbell) = &self.doorbell {
                doorbell.raise();
            }
            if let Some(engine) = &self.engine {
                engine.kick();
            }
        }
        sent
    }

    /// Polls every queue once, calling `each(frame)` per frame received; returns how many.
    pub fn recv(&mut self, mut each: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        for queue in &mut self.queues {
            n += queue.recv(|frame, _| each(frame));
        }
        n
    }

    /// Polls queue `q` once (`each(frame)` per frame); returns how many (0 for no such queue).
    pub fn recv_queue(&mut self, q: usize, mut each: impl FnMut(&[u8])) -> usize {
        self.queues.get_mut(q).map_or(0, |queue| queue.recv(|frame, _| each(frame)))
    }

    /// Sleeps until the RX interrupt fires or `timeout` passes (at once if the NIC has no RX
    /// interrupt); true if it fired.
    pub fn wait_rx(&self, timeout: Duration) -> bool {
        match &self.rx_line {
            Some(line) => line.wait(timeout),
            None => false,
        }
    }

    /// The RX interrupt line, if the device signals this NIC's receive queues.
    pub fn rx_line(&self) -> Option<&Arc<InterruptLine>> {
        self.rx_line.as_ref()
    }

    /// The emulated path's trap line (`None` on the SR-IOV path).
    pub fn trap_line(&self) -> Option<&Arc<InterruptLine>> {
        self.doorbell.as_ref()
    }

    /// Its queue pairs' drivers (where their rings are; the guest's own memory).
    pub fn queues(&self) -> &[QueuePairDriver] {
        &self.queues
    }

    /// Frames sent and completed, summed over the queues.
    pub fn tx_completed(&self) -> u64 {
        self.queues.iter().map(|q| q.stats().tx_completed).sum()
    }
}

/// A hot-plug event for a running guest.
#[derive(Debug)]
pub enum Hotplug {
    /// An ENI was attached (hot): here is its NIC.
    Added(GuestNic),
    /// An ENI was detached: forget its NIC.
    Removed(EniId),
}

/// What a VM's workload runs with.
#[derive(Debug)]
pub struct GuestCtx {
    /// The VM.
    pub vm: VmId,
    /// Its NICs, by device index.
    pub nics: Vec<GuestNic>,
    stop: Arc<AtomicBool>,
    hotplug: mpsc::Receiver<Hotplug>,
}

impl GuestCtx {
    pub(crate) fn new(
        vm: VmId,
        nics: Vec<GuestNic>,
        stop: Arc<AtomicBool>,
        hotplug: mpsc::Receiver<Hotplug>,
    ) -> Self {
        Self { vm, nics, stop, hotplug }
    }

    /// Whether the hypervisor asked the VM to stop (a workload should return soon after).
    pub fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The stop request as a flag of its own, to check while a NIC is borrowed.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Applies pending hot-plug events; returns how many.
    pub fn poll_hotplug(&mut self) -> usize {
        let mut n = 0;
        while let Ok(event) = self.hotplug.try_recv() {
            match event {
                Hotplug::Added(nic) => self.nics.push(nic),
                Hotplug::Removed(eni) => self.nics.retain(|n| n.eni != eni),
            }
            n += 1;
        }
        n
    }

    /// The NIC of an ENI.
    pub fn nic(&mut self, eni: EniId) -> Option<&mut GuestNic> {
        self.nics.iter_mut().find(|n| n.eni == eni)
    }
}
