//! The cloud: hosts with their PFs and hypervisors, the fabric between them, the ENIs, and the
//! VMs' lifecycle.
//!
//! [`Cloud`] is the control plane. Launching a VM takes vCPUs from its host, creates its primary
//! ENI (and attaches secondary ones cold), gives it guest memory and *provisions* each ENI: on
//! the SR-IOV path a VF leaves the host's pool, gets the ENI's MAC, the VM's memory as its DMA
//! window, ENA queue pairs laid out by the guest's driver, the source/destination check with the
//! ENI's addresses, and a shaper with the instance type's allowances and EC2's per-flow caps (10
//! Gbps to members of the same cluster placement group, 5 Gbps otherwise, the region-egress cap
//! to other regions); on the emulated path the same happens on a port of the host's software
//! device, and the host's backend VF gets a MAC filter for the ENI. The fabric learns where the
//! MAC lives. An empty VF pool is an error, and a failed launch undoes everything it did.
//!
//! A VM runs a workload: a closure on its own thread ([`Cloud::run`]) or a built-in workload in
//! its own OS process attached to the same guest memory ([`Cloud::run_process`]). A workload
//! that panics, or a process that dies, is a crashed VM: [`Cloud::reap`] resets its VFs, returns
//! them to the pool and marks it stopped, while every other VM carries on. Stop, start and
//! terminate follow EC2 (terminate deletes the primary ENI and keeps the others).
//!
//! [`Cloud::new_virtual`] builds the same cloud for a discrete-event simulation: every PF and
//! emulated NIC model runs inline (no threads), reads one shared virtual clock, and signals
//! through flag lines; a workload is attached with [`Cloud::attach_guest`] and driven by the
//! scheduler in [`crate::sim`]. Provisioning, the rules and the device are the same code.
//!
//! By concern: `spec` (what is asked for, and the errors), `provision` (devices for ENIs, with
//! a guard that gives back whatever a failed step took), `lifecycle` (launch, workloads, stop,
//! start, terminate, attach), `policy` (flow caps and network classes); this file holds the
//! cloud's state and what reads it.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use placement::{InstanceType, NetworkClass, NetworkModel};
use vnic::device::stats::{QueueStatsSnapshot, VfStatsSnapshot};
use vnic::device::{
    DeviceError, DmaWindow, FlowCapPolicy, InterruptLine, Iova, Notification, PhysicalFunction,
    QueuePairSpec,
};
use vnic::driver::{DriverError, QueuePairDriver, QueuePairLayout};
use vnic::frame::MacAddr;
use vnic::ring::{RegionError, SharedRegion};
use vnic::shaper::{
    AllowanceCounters, AllowanceStats, BandwidthAllowance, DeviceClock, FlowKey, ShaperConfig,
    VirtualClock,
};
use vnic::switch::VfPort;

use crate::emulated::EmulatedDevice;
use crate::eni::{AttachKind, EniError, EniId, EniRegistry, EniSpec, Subnet, VmId, VmState};
use crate::fabric::{Fabric, LinkSpec};
use crate::guest::{GuestCtx, GuestNic, Hotplug, IoPath, NicSignals};
use crate::host::{EngineError, PfEngine};
use crate::process::{GuestProcessSpec, NicLayout, ProcessLauncher, ProcessWorkload};

mod lifecycle;
mod policy;
mod provision;
mod spec;

use policy::class_between;
pub use policy::flow_cap_gbps;
use provision::nic_slot_bytes;
use spec::check_spec;
pub use spec::{CloudError, CloudSpec, DEFAULT_CONNTRACK_MAX, HostSpec, VmExit, VmSpec};

/// Where guest memory starts in the guest's physical address space (the IOVA its VFs use).
pub const GUEST_MEMORY_BASE: u64 = 0x1_0000_0000;
/// ENIs (device indices) one VM may have in this model.
pub const MAX_NICS_PER_VM: usize = 8;
/// Queue pairs per ENI at most (ENA: 32 per ENI on the largest instances).
pub const MAX_QUEUES_PER_NIC: u16 = 32;

/// A VF (PF index within the host, VF index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VfRef {
    pf: usize,
    vf: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NicDevice {
    Vf(VfRef),
    SoftPort(u16),
}

/// An ENI provisioned on a device for a VM.
#[derive(Debug)]
struct ProvisionedNic {
    eni: EniId,
    mac: MacAddr,
    device: NicDevice,
    layouts: Vec<QueuePairLayout>,
    counters: Option<Arc<AllowanceCounters>>,
}

#[derive(Debug)]
enum Workload {
    Thread(JoinHandle<()>),
    Process(Child),
    /// Driven by a simulation's scheduler on the caller's thread.
    Inline,
}

/// Which device serves an ENI: a VF of one of the host's PFs, or a port of the host's emulated
/// NIC model (whose backend VF is on PF `backend_pf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicHome {
    /// An SR-IOV (or EFA) VF.
    Vf {
        /// Host index.
        host: usize,
        /// PF index within the host.
        pf: usize,
    },
    /// A port of the emulated NIC model.
    Emulated {
        /// Host index.
        host: usize,
        /// The PF of the model's backend VF.
        backend_pf: usize,
    },
}

#[derive(Debug)]
struct Running {
    stop: Arc<AtomicBool>,
    hotplug: mpsc::Sender<Hotplug>,
    workload: Workload,
}

#[derive(Debug)]
struct Vm {
    name: String,
    spec: VmSpec,
    memory: Arc<SharedRegion>,
    memory_file: Option<PathBuf>,
    nics: Vec<ProvisionedNic>,
    /// Guest NICs made at provisioning, waiting for the workload.
    pending: Vec<GuestNic>,
    running: Option<Running>,
}

/// What the shapers need to know of each address: who owns it.
#[derive(Debug, Clone)]
struct Peer {
    host: usize,
    cluster_group: Option<String>,
}

type Directory = Arc<RwLock<HashMap<Ipv4Addr, Peer>>>;

struct Host {
    spec: HostSpec,
    pfs: Vec<PfEngine>,
    free_vfs: Vec<VfRef>,
    used_cpus: u32,
    emulated: Option<EmulatedHost>,
}

struct EmulatedHost {
    device: EmulatedDevice,
    backend: VfRef,
    free_ports: Vec<u16>,
    _memory: Arc<SharedRegion>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.spec.name)
            .field("free_vfs", &self.free_vfs.len())
            .finish()
    }
}

/// Counters of one ENI over its life (every device it has had): its allowances (ENA's names),
/// its queues and its switch port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EniCounters {
    /// Allowance counters.
    pub allowance: AllowanceStats,
    /// Queue counters (packets, bytes, drops).
    pub queues: QueueStatsSnapshot,
    /// Switch counters (spoofed, source/destination check, shaper drops).
    pub port: VfStatsSnapshot,
}

/// The cloud (see the module docs).
#[derive(Debug)]
pub struct Cloud {
    hosts: Vec<Host>,
    fabric: Arc<Fabric>,
    registry: EniRegistry,
    network: NetworkModel,
    vms: BTreeMap<VmId, Vm>,
    eni_paths: HashMap<EniId, IoPath>,
    retired: HashMap<EniId, EniCounters>,
    directory: Directory,
    launcher: Option<ProcessLauncher>,
    /// Set for a simulation: the clock every device reads.
    clock: Option<VirtualClock>,
}

fn gbps(g: f64) -> u64 {
    (g * 1e9) as u64
}

impl Cloud {
    /// Builds the hosts (enabling their VFs), the fabric and the subnets.
    pub fn new(spec: CloudSpec) -> Result<Self, CloudError> {
        Self::build(spec, None)
    }

    /// Builds the same cloud for a discrete-event simulation on `clock`: PF engines and emulated
    /// NIC models inline, flag lines for interrupts, the fabric on the virtual clock.
    pub fn new_virtual(spec: CloudSpec, clock: VirtualClock) -> Result<Self, CloudError> {
        Self::build(spec, Some(clock))
    }

    fn build(spec: CloudSpec, clock: Option<VirtualClock>) -> Result<Self, CloudError> {
        let device_clock = clock.clone().map_or_else(DeviceClock::default, DeviceClock::Virtual);
        let endpoints: Vec<usize> = spec
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(h, host)| std::iter::repeat_n(h, usize::from(host.pfs)))
            .collect();
        let classes: Vec<NetworkClass> = endpoints
            .iter()
            .flat_map(|&a| endpoints.iter().map(move |&b| (a, b)))
            .map(|(a, b)| class_between(&spec.hosts[a], &spec.hosts[b], a == b))
            .collect();
        let n = endpoints.len();
        let network = spec.network.clone();
        let link_bps = gbps(spec.link_gbps);
        let fabric = Fabric::with_clock(
            n,
            |src, dst| LinkSpec {
                latency_ns: (network.latency_us(classes[src * n + dst]) * 500.0) as u64,
                bits_per_second: link_bps,
            },
            device_clock.clone(),
        );
        let mut hosts = Vec::new();
        let mut endpoint = 0;
        for host in &spec.hosts {
            let mut pfs = Vec::new();
            let mut free_vfs = Vec::new();
            for p in 0..usize::from(host.pfs) {
                let device = |source| CloudError::Device { host: host.name.clone(), source };
                let mut pf = PhysicalFunction::new(host.vfs_per_pf).map_err(device)?;
                pf.set_num_vfs(host.vfs_per_pf).map_err(device)?;
                pf.set_uplink(fabric.uplink(endpoint));
                pf.set_clock(device_clock.clone());
                let name = format!("{}/pf{p}", host.name);
                let port = fabric.port(endpoint);
                pfs.push(if clock.is_some() {
                    PfEngine::inline(name, pf, port, endpoint)
                } else {
                    PfEngine::spawn(name, pf, port, endpoint)?
                });
                free_vfs.extend((0..host.vfs_per_pf).rev().map(|vf| VfRef { pf: p, vf }));
                endpoint += 1;
            }
            hosts.push(Host { spec: host.clone(), pfs, free_vfs, used_cpus: 0, emulated: None });
        }
        let mut registry = EniRegistry::new();
        for subnet in spec.subnets {
            registry.add_subnet(subnet);
        }
        Ok(Self {
            hosts,
            fabric,
            registry,
            network: spec.network,
            vms: BTreeMap::new(),
            eni_paths: HashMap::new(),
            retired: HashMap::new(),
            directory: Directory::default(),
            launcher: None,
            clock,
        })
    }

    /// Latencies and flow caps (the scenario's network model).
    pub fn network(&self) -> &NetworkModel {
        &self.network
    }

    /// The simulation's clock (`None` for a live cloud).
    pub fn virtual_clock(&self) -> Option<&VirtualClock> {
        self.clock.as_ref()
    }

    /// An interrupt line: an eventfd live, a flag under a simulation.
    fn line(&self, vm: u32) -> Result<Arc<InterruptLine>, CloudError> {
        if self.clock.is_some() {
            return Ok(Arc::new(InterruptLine::flag()));
        }
        InterruptLine::new().map(Arc::new).map_err(|source| CloudError::Spawn { vm, source })
    }

    /// Hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// PF `pf` of host `host` on its engine.
    pub fn engine(&self, host: usize, pf: usize) -> Option<&PfEngine> {
        self.hosts.get(host)?.pfs.get(pf)
    }

    /// The engines of every host, with (host, PF) indices.
    pub fn engines(&self) -> impl Iterator<Item = (usize, usize, &PfEngine)> {
        self.hosts
            .iter()
            .enumerate()
            .flat_map(|(h, host)| host.pfs.iter().enumerate().map(move |(p, e)| (h, p, e)))
    }

    /// Host `host`'s emulated NIC model, if it has one.
    pub fn emulated(&self, host: usize) -> Option<&EmulatedDevice> {
        Some(&self.hosts.get(host)?.emulated.as_ref()?.device)
    }

    /// The device serving ENI `eni` now (`None` if it has none).
    pub fn nic_home(&self, eni: EniId) -> Option<NicHome> {
        let a = self.registry.eni(eni).ok()?.attachment?;
        let record = self.vms.get(&a.vm)?;
        let host = record.spec.host;
        let nic = record.nics.iter().find(|n| n.eni == eni)?;
        Some(match nic.device {
            NicDevice::Vf(vf) => NicHome::Vf { host, pf: vf.pf },
            NicDevice::SoftPort(_) => NicHome::Emulated {
                host,
                backend_pf: self.hosts[host].emulated.as_ref()?.backend.pf,
            },
        })
    }

    /// What moderation has added to ENI `eni`'s receive latency so far, completion-ns (its
    /// device's [`PhysicalFunction::rx_moderation_waited_ns`]).
    pub fn rx_moderation_waited_ns(&self, eni: EniId) -> Option<u64> {
        let a = self.registry.eni(eni).ok()?.attachment?;
        let record = self.vms.get(&a.vm)?;
        let host = &self.hosts[record.spec.host];
        match record.nics.iter().find(|n| n.eni == eni)?.device {
            NicDevice::Vf(vf) => {
                host.pfs[vf.pf].call(move |pf| pf.rx_moderation_waited_ns(vf.vf)).ok()?.ok()
            }
            NicDevice::SoftPort(port) => host
                .emulated
                .as_ref()?
                .device
                .call(move |pf| pf.rx_moderation_waited_ns(port))?
                .ok(),
        }
    }

    /// The launch spec of a VM.
    pub fn vm_spec(&self, vm: VmId) -> Option<&VmSpec> {
        self.vms.get(&vm).map(|v| &v.spec)
    }

    /// The fabric.
    pub fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    /// The ENI registry.
    pub fn enis(&self) -> &EniRegistry {
        &self.registry
    }

    /// Free VFs on host `host`.
    pub fn free_vfs(&self, host: usize) -> Result<usize, CloudError> {
        Ok(self.host(host)?.free_vfs.len())
    }

    /// The program and arguments that run a guest process ([`crate::process::guest_main`]
    /// must be the first thing it does).
    pub fn set_process_launcher(&mut self, launcher: ProcessLauncher) {
        self.launcher = Some(launcher);
    }

    fn host(&self, host: usize) -> Result<&Host, CloudError> {
        self.hosts.get(host).ok_or(CloudError::NoSuchHost(host))
    }

    fn vm(&self, vm: VmId) -> Result<&Vm, CloudError> {
        self.vms.get(&vm).ok_or(CloudError::NoSuchVm(vm.0))
    }

    /// An ENI's counters (allowances under ENA's names, its device's queues and port).
    pub fn eni_counters(&self, eni: EniId) -> Result<EniCounters, CloudError> {
        let e = self.registry.eni(eni)?;
        let mut out = self.retired.get(&eni).copied().unwrap_or_default();
        let nic = e.attachment.and_then(|a| {
            let record = self.vms.get(&a.vm)?;
            Some((record.spec.host, record.nics.iter().find(|n| n.eni == eni)?))
        });
        let Some((h, nic)) = nic else { return Ok(out) };
        if let Some(c) = &nic.counters {
            out.allowance += c.snapshot();
        }
        let host = &self.hosts[h];
        let totals = match nic.device {
            NicDevice::Vf(vf) => {
                host.pfs[vf.pf].call(move |pf| pf.vf(vf.vf).map(|v| v.totals()))?
            }
            NicDevice::SoftPort(port) => match host.emulated.as_ref() {
                Some(em) => em
                    .device
                    .call(move |pf| pf.vf(port).map(|v| v.totals()))
                    .unwrap_or(Ok(Default::default())),
                None => Ok(Default::default()),
            },
        };
        let (queues, port) =
            totals.map_err(|source| CloudError::Device { host: host.spec.name.clone(), source })?;
        out.queues += queues;
        out.port += port;
        Ok(out)
    }

    /// Trap counters of a host's emulated NIC model (`None` if it has none).
    pub fn emulated_traps(&self, host: usize) -> Option<u64> {
        let em = self.hosts.get(host)?.emulated.as_ref()?;
        Some(em.device.stats().traps.load(Ordering::Relaxed))
    }

    /// The name of a VM.
    pub fn vm_name(&self, vm: VmId) -> Option<&str> {
        self.vms.get(&vm).map(|v| v.name.as_str())
    }

    /// Whether a VM's workload is running.
    pub fn is_running(&self, vm: VmId) -> bool {
        self.vms.get(&vm).is_some_and(|v| v.running.is_some())
    }

    /// The VMs.
    pub fn vm_ids(&self) -> Vec<VmId> {
        self.vms.keys().copied().collect()
    }

    /// Stops every workload and engine.
    pub fn shut_down(mut self) {
        let ids: Vec<VmId> = self.vms.keys().copied().collect();
        for vm in ids {
            let _ = self.halt(vm);
        }
        for record in self.vms.values() {
            if let Some(path) = &record.memory_file {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        for record in self.vms.values_mut() {
            if let Some(running) = record.running.take() {
                running.stop.store(true, Ordering::Relaxed);
                if let Workload::Process(mut child) = running.workload {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            if let Some(path) = &record.memory_file {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnic::shaper::{Direction, PROTO_UDP};

    #[test]
    fn flow_caps_follow_cluster_groups_and_regions() {
        let subnet = |name: &str, az: &str, third: u8| Subnet {
            name: name.into(),
            az: az.into(),
            network: Ipv4Addr::new(10, 0, third, 0),
            prefix: 24,
        };
        let mut far = HostSpec::new("far", "az-c", 0, 64, 4);
        far.region = "region-2".into();
        let mut cloud = Cloud::new(CloudSpec {
            hosts: vec![HostSpec::new("h0", "az-a", 0, 64, 4), far],
            subnets: vec![subnet("a", "az-a", 0), subnet("c", "az-c", 2)],
            network: NetworkModel::default(),
            link_gbps: 100.0,
        })
        .unwrap();
        let ty = InstanceType::catalog().into_iter().find(|t| t.name == "c5n.large").unwrap();
        let spec_ty = ty.clone();
        let mut launch = |name: &str, host, subnet: &str, group: Option<&str>| {
            let mut spec = VmSpec::new(name, host, spec_ty.clone(), subnet);
            spec.cluster_group = group.map(str::to_string);
            spec.ring_depth = 256;
            let vm = cloud.launch(spec).unwrap();
            cloud.enis().enis_of(vm)[0].primary_ip
        };
        let me = launch("me", 0, "a", Some("hpc"));
        let peer = launch("peer", 0, "a", Some("hpc"));
        let stranger = launch("stranger", 0, "a", None);
        let remote = launch("remote", 1, "c", None);
        let policy = cloud.flow_policy(0, Some("hpc".into()), &ty);
        let big = InstanceType::catalog().into_iter().find(|t| t.vcpus >= 32).unwrap();
        let big_policy = cloud.flow_policy(0, None, &big);
        let cap = |to: Ipv4Addr| {
            policy(&FlowKey::of_packet(Direction::Out, me.into(), to.into(), PROTO_UDP, 1, 2))
        };
        assert_eq!(cap(peer), 10_000_000_000, "cluster group peers: 10 Gbps");
        assert_eq!(cap(stranger), 5_000_000_000, "outside the group: 5 Gbps");
        assert_eq!(cap(remote), 3_000_000_000, "another region: egress, at most the baseline");
        let key = FlowKey::of_packet(Direction::Out, me.into(), remote.into(), PROTO_UDP, 1, 2);
        assert_eq!(big_policy(&key), gbps(big.baseline_gbps / 2.0), "32+ vCPUs: half");
        assert_eq!(cap(Ipv4Addr::new(8, 8, 8, 8)), 5_000_000_000, "unknown peers: 5 Gbps");
        // Latency on the fabric follows the class: same host 5 µs one way, other region 15 ms.
        let fabric = cloud.fabric();
        assert_eq!(fabric.link(0, 0).map(|l| l.latency_ns), Some(5_000));
        assert_eq!(fabric.link(0, 1).map(|l| l.latency_ns), Some(15_000_000));
    }
}
