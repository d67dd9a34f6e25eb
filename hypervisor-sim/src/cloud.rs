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

/// Where guest memory starts in the guest's physical address space (the IOVA its VFs use).
pub const GUEST_MEMORY_BASE: u64 = 0x1_0000_0000;
/// ENIs (device indices) one VM may have in this model.
pub const MAX_NICS_PER_VM: usize = 8;
/// Queue pairs per ENI at most (ENA: 32 per ENI on the largest instances).
pub const MAX_QUEUES_PER_NIC: u16 = 32;

/// One host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    /// Name.
    pub name: String,
    /// vCPUs it offers to VMs.
    pub cpus: u32,
    /// Physical functions.
    pub pfs: u16,
    /// VFs each PF enables.
    pub vfs_per_pf: u16,
    /// Region.
    pub region: String,
    /// Availability zone.
    pub az: String,
    /// Rack within the AZ.
    pub rack: u32,
}

impl HostSpec {
    /// A host with one PF of `vfs` VFs, in rack `rack` of `az` in region `region-1`.
    pub fn new(name: &str, az: &str, rack: u32, cpus: u32, vfs: u16) -> Self {
        Self {
            name: name.into(),
            cpus,
            pfs: 1,
            vfs_per_pf: vfs,
            region: "region-1".into(),
            az: az.into(),
            rack,
        }
    }
}

/// The whole cloud.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudSpec {
    /// Hosts.
    pub hosts: Vec<HostSpec>,
    /// Subnets (each in one AZ).
    pub subnets: Vec<Subnet>,
    /// Latencies and flow caps.
    pub network: NetworkModel,
    /// Rate of the fabric link between two hosts (each direction), Gbps.
    pub link_gbps: f64,
}

/// A VM to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    /// Name.
    pub name: String,
    /// Host index in [`CloudSpec::hosts`].
    pub host: usize,
    /// Instance type.
    pub instance_type: InstanceType,
    /// The primary ENI's subnet and addresses.
    pub primary: EniSpec,
    /// Its I/O path.
    pub path: IoPath,
    /// Secondary ENIs attached at launch (cold).
    pub secondary: Vec<EniId>,
    /// Cluster placement group, for the 10 Gbps per-flow cap between its members.
    pub cluster_group: Option<String>,
    /// Queue pairs per ENI.
    pub queues: u16,
    /// Ring depth.
    pub ring_depth: u32,
    /// MTU of its interfaces (1500, or 9001 for jumbo frames).
    pub mtu: u16,
    /// How long full burst credits last ("up to" instances).
    pub burst_duration: Duration,
    /// Packets per second each ENI may exchange.
    pub pps: u64,
    /// Connections each ENI may track.
    pub conntrack_max: usize,
    /// How RX completions reach the guest: busy polling (NAPI-style, the default) or a
    /// moderated interrupt the guest sleeps on (ENA's default is 20 µs / 32 packets).
    pub rx_notification: Notification,
    /// Guest memory is a file another process can map (process mode).
    pub shared_file: bool,
}

impl VmSpec {
    /// A VM of `instance_type` on host `host`, primary ENI in `subnet`, SR-IOV, one queue pair
    /// of 1024, MTU 1500.
    pub fn new(name: &str, host: usize, instance_type: InstanceType, subnet: &str) -> Self {
        Self {
            name: name.into(),
            host,
            instance_type,
            primary: EniSpec { subnet: subnet.into(), ..Default::default() },
            path: IoPath::SrIov,
            secondary: Vec::new(),
            cluster_group: None,
            queues: 1,
            ring_depth: 1024,
            mtu: 1500,
            burst_duration: Duration::from_secs(300),
            pps: 14_000_000,
            conntrack_max: 1_000_000,
            rx_notification: Notification::BusyPoll,
            shared_file: false,
        }
    }
}

/// What the cloud refuses.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// An ENI rule.
    #[error(transparent)]
    Eni(#[from] EniError),
    /// The device refused a step.
    #[error("{host}: {source}")]
    Device {
        /// The host.
        host: String,
        /// What the device said.
        #[source]
        source: DeviceError,
    },
    /// An engine is gone.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A guest driver could not be set up.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Guest memory could not be made.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// No such host.
    #[error("there is no host {0}")]
    NoSuchHost(usize),
    /// No such VM.
    #[error("InvalidInstanceID.NotFound: i-{0}")]
    NoSuchVm(u32),
    /// The host's VF pool is empty.
    #[error(
        "host {host} has no free VF: all {total} VFs of its {pfs} PF(s) are assigned \
         (stop or terminate a VM, or enable more VFs)"
    )]
    NoFreeVf {
        /// The host.
        host: String,
        /// VFs it has.
        total: usize,
        /// PFs it has.
        pfs: usize,
    },
    /// The host's software device has no free port.
    #[error("host {0}: the emulated NIC model has no free port")]
    NoFreePort(String),
    /// Not enough vCPUs on the host.
    #[error("InsufficientInstanceCapacity: host {host} has {free} free vCPUs, {ty} needs {need}")]
    NoCapacity {
        /// The host.
        host: String,
        /// vCPUs free.
        free: u32,
        /// The type.
        ty: String,
        /// vCPUs needed.
        need: u32,
    },
    /// The VM is not in a state that allows the request.
    #[error("IncorrectInstanceState: i-{vm} is {state}")]
    State {
        /// The VM.
        vm: u32,
        /// Its state.
        state: &'static str,
    },
    /// A spec value out of range.
    #[error("invalid VM spec: {0}")]
    Spec(String),
    /// An EFA attached to a running instance.
    #[error(
        "InvalidParameterCombination: eni-{eni} is an EFA, which attaches only at launch or to a \
         stopped instance (i-{vm} is running)"
    )]
    EfaHotAttach {
        /// The ENI.
        eni: u32,
        /// The VM.
        vm: u32,
    },
    /// A VM did not stop when asked.
    #[error("i-{0} did not stop within 10 s")]
    StopTimeout(u32),
    /// A thread or process could not be started.
    #[error("could not start i-{vm}: {source}")]
    Spawn {
        /// The VM.
        vm: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How a VM's workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// It returned (or the process exited with status 0).
    Finished,
    /// It panicked or was killed: its devices were reset and returned.
    Crashed(String),
}

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

    /// Creates a detached ENI that will use `path` wherever it is attached.
    pub fn create_eni(&mut self, spec: &EniSpec, path: IoPath) -> Result<EniId, CloudError> {
        let id = self.registry.create_eni(spec)?;
        self.eni_paths.insert(id, path);
        Ok(id)
    }

    /// Launches a VM: vCPUs, primary ENI, secondary ENIs (cold), guest memory, a device for
    /// every ENI. Nothing is left behind if any step fails.
    pub fn launch(&mut self, spec: VmSpec) -> Result<VmId, CloudError> {
        let host = self.host(spec.host)?;
        check_spec(&spec)?;
        let free = host.spec.cpus - host.used_cpus;
        if spec.instance_type.vcpus > free {
            return Err(CloudError::NoCapacity {
                host: host.spec.name.clone(),
                free,
                ty: spec.instance_type.name.clone(),
                need: spec.instance_type.vcpus,
            });
        }
        let az = host.spec.az.clone();
        let (vm, primary) = self.registry.launch(&az, &spec.primary, &spec.secondary)?;
        self.eni_paths.insert(primary, spec.path);
        let bytes = MAX_NICS_PER_VM * nic_slot_bytes(&spec);
        let (memory, memory_file) = if spec.shared_file {
            let path = std::env::temp_dir().join(format!(
                "vnic-lab-{}-vm{}.mem",
                std::process::id(),
                vm.0
            ));
            match SharedRegion::create(&path, bytes) {
                Ok(region) => (Arc::new(region), Some(path)),
                Err(e) => {
                    let _ = self.registry.set_state(vm, VmState::Terminated);
                    return Err(e.into());
                }
            }
        } else {
            match SharedRegion::anonymous(bytes) {
                Ok(region) => (Arc::new(region), None),
                Err(e) => {
                    let _ = self.registry.set_state(vm, VmState::Terminated);
                    return Err(e.into());
                }
            }
        };
        self.hosts[spec.host].used_cpus += spec.instance_type.vcpus;
        let record = Vm {
            name: spec.name.clone(),
            spec,
            memory,
            memory_file,
            nics: Vec::new(),
            pending: Vec::new(),
            running: None,
        };
        self.vms.insert(vm, record);
        if let Err(e) = self.provision_all(vm) {
            let _ = self.terminate(vm);
            return Err(e);
        }
        Ok(vm)
    }

    /// Provisions every ENI attached to a VM that has no device yet.
    fn provision_all(&mut self, vm: VmId) -> Result<(), CloudError> {
        let enis: Vec<(EniId, u8)> = self
            .registry
            .enis_of(vm)
            .iter()
            .filter_map(|e| e.attachment.map(|a| (e.id, a.device_index)))
            .collect();
        for (eni, index) in enis {
            if self.vm(vm)?.nics.iter().any(|n| n.eni == eni) {
                continue;
            }
            let nic = self.provision(vm, eni, index)?;
            if let Some(record) = self.vms.get_mut(&vm) {
                record.pending.push(nic);
            }
        }
        Ok(())
    }

    /// Gives ENI `eni` (device index `index`) of `vm` a device; returns the guest's NIC.
    fn provision(&mut self, vm: VmId, eni: EniId, index: u8) -> Result<GuestNic, CloudError> {
        let e = self.registry.eni(eni)?.clone();
        let path = self.eni_paths.get(&eni).copied().unwrap_or(IoPath::SrIov);
        let record = self.vm(vm)?;
        let spec = record.spec.clone();
        let window = DmaWindow::new(record.memory.clone(), Iova(GUEST_MEMORY_BASE));
        let slot = usize::from(index) % MAX_NICS_PER_VM;
        let layouts = nic_layouts(&spec, slot);
        // The guest's driver lays its rings out first; the device attaches to them.
        let mut drivers = Vec::new();
        for layout in &layouts {
            if spec.shared_file {
                QueuePairDriver::init_rings(&window, layout)?;
            } else {
                drivers.push(QueuePairDriver::create(window.clone(), *layout)?);
            }
        }
        let specs: Vec<QueuePairSpec> = layouts.iter().map(|l| l.spec(&window)).collect();
        // Under a simulation a busy-polling guest is told of every completion at once (its
        // poll loop would find it; the scheduler charges what the poll costs).
        let rx_notification = match spec.rx_notification {
            Notification::BusyPoll if self.clock.is_some() => {
                Notification::Moderated { delay_us: 0, packets: 1 }
            }
            other => other,
        };
        let rx_line =
            if rx_notification != Notification::BusyPoll { Some(self.line(vm.0)?) } else { None };
        let addresses: Vec<Ipv4Addr> =
            std::iter::once(e.primary_ip).chain(e.secondary_ips.iter().copied()).collect();
        let check = e.src_dst_check.then(|| addresses.clone());
        let config = shaper_config(&spec);
        let policy = self.flow_policy(spec.host, spec.cluster_group.clone(), &spec.instance_type);
        let setup = DeviceSetup {
            mac: e.mac,
            mtu: spec.mtu,
            window,
            specs,
            check,
            shaper: (config, policy),
            rx_line: rx_line.clone(),
            rx_notification,
        };
        let host_name = self.hosts[spec.host].spec.name.clone();
        let device_err = |source| CloudError::Device { host: host_name.clone(), source };
        let (device, counters, doorbell, endpoint, engine_bell) = match path {
            IoPath::SrIov | IoPath::Efa => {
                let host = &mut self.hosts[spec.host];
                let Some(vf) = host.free_vfs.pop() else {
                    return Err(CloudError::NoFreeVf {
                        host: host.spec.name.clone(),
                        total: host.pfs.iter().map(|p| usize::from(p.total_vfs())).sum(),
                        pfs: host.pfs.len(),
                    });
                };
                let engine = &host.pfs[vf.pf];
                match engine.call(move |pf| setup.apply(pf, vf.vf)) {
                    Ok(Ok(counters)) => (
                        NicDevice::Vf(vf),
                        counters,
                        None,
                        engine.endpoint(),
                        Some(engine.doorbell()),
                    ),
                    Ok(Err(e)) => {
                        let _ = engine.call(move |pf| pf.release(vf.vf));
                        host.free_vfs.push(vf);
                        return Err(device_err(e));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            IoPath::Emulated => {
                self.ensure_emulated(spec.host)?;
                let host = &mut self.hosts[spec.host];
                let Some(em) = host.emulated.as_mut() else {
                    return Err(CloudError::NoFreePort(host.spec.name.clone()));
                };
                let Some(port) = em.free_ports.pop() else {
                    return Err(CloudError::NoFreePort(host.spec.name.clone()));
                };
                let backend = em.backend;
                let mac = e.mac;
                let engine = &host.pfs[backend.pf];
                let filtered = engine.call(move |pf| pf.add_mac_filter(backend.vf, mac))?;
                if let Err(err) = filtered {
                    em.free_ports.push(port);
                    return Err(device_err(err));
                }
                match em.device.call(move |pf| setup.apply(pf, port)) {
                    Some(Ok(counters)) => (
                        NicDevice::SoftPort(port),
                        counters,
                        Some(em.device.doorbell()),
                        engine.endpoint(),
                        None,
                    ),
                    other => {
                        let _ = em.device.call(move |pf| pf.release(port));
                        let _ = engine.call(move |pf| pf.remove_mac_filter(backend.vf, mac));
                        em.free_ports.push(port);
                        return Err(match other {
                            Some(Err(err)) => device_err(err),
                            _ => CloudError::NoFreePort(host.spec.name.clone()),
                        });
                    }
                }
            }
        };
        self.fabric.route(e.mac, endpoint);
        if let Ok(mut dir) = self.directory.write() {
            for ip in &addresses {
                dir.insert(
                    *ip,
                    Peer { host: spec.host, cluster_group: spec.cluster_group.clone() },
                );
            }
        }
        if let Some(record) = self.vms.get_mut(&vm) {
            record.nics.push(ProvisionedNic { eni, mac: e.mac, device, layouts, counters });
        }
        let signals = NicSignals { trap: doorbell, rx_line, engine: engine_bell };
        Ok(GuestNic::new(eni, (e.mac, e.primary_ip), path, drivers, signals))
    }

    /// Starts the host's emulated NIC model if it has none: a backend VF from the pool with
    /// hypervisor memory, and the hypervisor thread.
    fn ensure_emulated(&mut self, h: usize) -> Result<(), CloudError> {
        let host = &mut self.hosts[h];
        if host.emulated.is_some() {
            return Ok(());
        }
        let Some(vf) = host.free_vfs.pop() else {
            return Err(CloudError::NoFreeVf {
                host: host.spec.name.clone(),
                total: host.pfs.iter().map(|p| usize::from(p.total_vfs())).sum(),
                pfs: host.pfs.len(),
            });
        };
        let layout = QueuePairLayout::with_buffers(0, 1024, 9216, 2048);
        let memory = Arc::new(SharedRegion::anonymous(layout.end)?);
        let window = DmaWindow::new(memory.clone(), Iova(0x7f_0000_0000));
        let backend = QueuePairDriver::create(window.clone(), layout)?;
        let line = self.line(0)?;
        let host = &mut self.hosts[h];
        let spec = layout.spec(&window);
        let rx_line = line.clone();
        let name = host.spec.name.clone();
        let engine = &host.pfs[vf.pf];
        let set_up = engine.call(move |pf| -> Result<(), DeviceError> {
            pf.set_mtu(vf.vf, 9001)?;
            pf.assign(vf.vf, window)?;
            let q = pf.create_queue_pair(vf.vf, spec)?;
            let rx = (Notification::Moderated { delay_us: 0, packets: 1 }, Some(rx_line));
            pf.set_notification(vf.vf, q, (Notification::BusyPoll, None), rx)
        })?;
        if let Err(source) = set_up {
            let _ = engine.call(move |pf| pf.release(vf.vf));
            host.free_vfs.push(vf);
            return Err(CloudError::Device { host: name, source });
        }
        let device_err = |source| CloudError::Device { host: name.clone(), source };
        let mut soft = PhysicalFunction::new(64).map_err(device_err)?;
        soft.set_num_vfs(64).map_err(device_err)?;
        // Every frame goes through the PF, even between two emulated NICs of this host: the
        // PF relays it back to the backend VF.
        soft.set_vepa(true);
        let device = match &self.clock {
            Some(clock) => {
                soft.set_clock(DeviceClock::Virtual(clock.clone()));
                EmulatedDevice::inline(soft, backend, line, engine.doorbell())
            }
            None => EmulatedDevice::spawn(&name, soft, backend, line, engine.doorbell())
                .map_err(|source| CloudError::Spawn { vm: 0, source })?,
        };
        host.emulated = Some(EmulatedHost {
            device,
            backend: vf,
            free_ports: (0..64).rev().collect(),
            _memory: memory,
        });
        Ok(())
    }

    /// The per-flow caps of a VM's ENIs: 10 Gbps to members of its cluster group, the
    /// region-egress cap to other regions (5 Gbps, or half the instance's bandwidth from 32
    /// vCPUs; applied per flow here, where EC2 caps the instance's total), 5 Gbps otherwise.
    fn flow_policy(&self, host: usize, group: Option<String>, ty: &InstanceType) -> FlowCapPolicy {
        let directory = self.directory.clone();
        let model = self.network.clone();
        let ty = ty.clone();
        let regions: Vec<String> = self.hosts.iter().map(|h| h.spec.region.clone()).collect();
        Box::new(move |key: &FlowKey| {
            let peer = match key.remote_ip() {
                std::net::IpAddr::V4(ip) => directory.read().ok().and_then(|d| d.get(&ip).cloned()),
                std::net::IpAddr::V6(_) => None,
            };
            let (other_region, same_cluster) = match peer {
                Some(p) => (
                    regions.get(p.host) != regions.get(host),
                    group.is_some() && p.cluster_group == group,
                ),
                None => (false, false),
            };
            gbps(flow_cap_gbps(&model, &ty, other_region, same_cluster))
        })
    }

    /// Takes a provisioned ENI's device away: queues reset, VF back in the pool (or the
    /// emulated port freed), routes removed. Its allowance counters are kept for the ENI.
    fn deprovision(&mut self, vm: VmId, eni: EniId) -> Result<(), CloudError> {
        let Some(record) = self.vms.get_mut(&vm) else { return Ok(()) };
        let Some(k) = record.nics.iter().position(|n| n.eni == eni) else { return Ok(()) };
        let nic = record.nics.remove(k);
        record.pending.retain(|n| n.eni != eni);
        let host = &mut self.hosts[record.spec.host];
        let retired = self.retired.entry(eni).or_default();
        if let Some(c) = &nic.counters {
            retired.allowance += c.snapshot();
        }
        self.fabric.unroute(nic.mac);
        if let Ok(e) = self.registry.eni(eni)
            && let Ok(mut dir) = self.directory.write()
        {
            dir.remove(&e.primary_ip);
            for ip in &e.secondary_ips {
                dir.remove(ip);
            }
        }
        match nic.device {
            NicDevice::Vf(vf) => {
                let (totals, released) = host.pfs[vf.pf].call(move |pf| {
                    let totals = pf.vf(vf.vf).map(|v| v.totals());
                    (totals, pf.release(vf.vf))
                })?;
                host.free_vfs.push(vf);
                if let Ok((queues, port)) = totals {
                    retired.queues += queues;
                    retired.port += port;
                }
                released.map_err(|source| CloudError::Device {
                    host: host.spec.name.clone(),
                    source,
                })?;
            }
            NicDevice::SoftPort(port) => {
                if let Some(em) = host.emulated.as_mut() {
                    let totals = em.device.call(move |pf| {
                        let totals = pf.vf(port).map(|v| v.totals());
                        let _ = pf.release(port);
                        totals
                    });
                    if let Some(Ok((queues, port))) = totals {
                        retired.queues += queues;
                        retired.port += port;
                    }
                    em.free_ports.push(port);
                    let (backend, mac) = (em.backend, nic.mac);
                    host.pfs[backend.pf]
                        .call(move |pf| pf.remove_mac_filter(backend.vf, mac))?
                        .ok();
                }
            }
        }
        Ok(())
    }

    fn deprovision_all(&mut self, vm: VmId) -> Result<(), CloudError> {
        let enis: Vec<EniId> = self.vm(vm)?.nics.iter().map(|n| n.eni).collect();
        for eni in enis {
            self.deprovision(vm, eni)?;
        }
        Ok(())
    }

    /// Runs `workload` as the VM on its own thread, with its NICs.
    pub fn run(
        &mut self,
        vm: VmId,
        workload: impl FnOnce(&mut GuestCtx) + Send + 'static,
    ) -> Result<(), CloudError> {
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        if record.running.is_some() {
            return Err(CloudError::State { vm: vm.0, state: "already running a workload" });
        }
        if record.spec.shared_file {
            return Err(CloudError::State { vm: vm.0, state: "set up for process mode" });
        }
        if self.registry.vm_state(vm)? != VmState::Running {
            return Err(CloudError::State { vm: vm.0, state: "stopped" });
        }
        let nics = std::mem::take(&mut record.pending);
        let stop = Arc::new(AtomicBool::new(false));
        let (hotplug, events) = mpsc::channel();
        let mut ctx = GuestCtx::new(vm, nics, stop.clone(), events);
        let thread = std::thread::Builder::new()
            .name(format!("vm {}", record.name))
            .spawn(move || workload(&mut ctx))
            .map_err(|source| CloudError::Spawn { vm: vm.0, source })?;
        record.running = Some(Running { stop, hotplug, workload: Workload::Thread(thread) });
        Ok(())
    }

    /// Hands the VM's NICs to the caller, who drives them on its own thread (a simulation's
    /// scheduler); [`Cloud::stop`] and the rest of the lifecycle work as for a thread.
    pub fn attach_guest(&mut self, vm: VmId) -> Result<GuestCtx, CloudError> {
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        if record.running.is_some() {
            return Err(CloudError::State { vm: vm.0, state: "already running a workload" });
        }
        if self.registry.vm_state(vm)? != VmState::Running {
            return Err(CloudError::State { vm: vm.0, state: "stopped" });
        }
        let nics = std::mem::take(&mut record.pending);
        let stop = Arc::new(AtomicBool::new(false));
        let (hotplug, events) = mpsc::channel();
        let ctx = GuestCtx::new(vm, nics, stop.clone(), events);
        record.running = Some(Running { stop, hotplug, workload: Workload::Inline });
        Ok(ctx)
    }

    /// Runs a built-in workload as the VM in its own OS process, attached to the VM's guest
    /// memory (the VM must have been launched with `shared_file`).
    pub fn run_process(&mut self, vm: VmId, workload: ProcessWorkload) -> Result<(), CloudError> {
        let launcher = self.launcher.clone().ok_or(CloudError::Spec(
            "no process launcher set (Cloud::set_process_launcher)".into(),
        ))?;
        let enis: Vec<(EniId, Ipv4Addr)> =
            self.registry.enis_of(vm).iter().map(|e| (e.id, e.primary_ip)).collect();
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        if record.running.is_some() {
            return Err(CloudError::State { vm: vm.0, state: "already running a workload" });
        }
        let Some(memory) = record.memory_file.clone() else {
            return Err(CloudError::State { vm: vm.0, state: "not set up for process mode" });
        };
        let nics = record
            .nics
            .iter()
            .map(|n| NicLayout {
                mac: n.mac.0,
                ip: enis.iter().find(|e| e.0 == n.eni).map_or(Ipv4Addr::UNSPECIFIED, |e| e.1),
                queues: n.layouts.iter().map(|l| (l.tx_sq, l.depth, l.tx_buf, l.rx_buf)).collect(),
            })
            .collect();
        let spec = GuestProcessSpec { memory, base: GUEST_MEMORY_BASE, nics, workload };
        let child =
            launcher.spawn(&spec).map_err(|source| CloudError::Spawn { vm: vm.0, source })?;
        record.pending.clear();
        let (hotplug, _) = mpsc::channel();
        record.running = Some(Running {
            stop: Arc::new(AtomicBool::new(false)),
            hotplug,
            workload: Workload::Process(child),
        });
        Ok(())
    }

    /// Looks at every running workload; those that ended are reaped. A crashed VM (a panic, a
    /// killed process) has its devices reset and returned to the pool and is stopped; the
    /// others carry on. Returns what ended.
    pub fn reap(&mut self) -> Vec<(VmId, VmExit)> {
        let mut ended = Vec::new();
        for (&id, vm) in &mut self.vms {
            let Some(running) = vm.running.as_mut() else { continue };
            let exit = match &mut running.workload {
                Workload::Thread(t) if t.is_finished() => Some(None),
                Workload::Thread(_) | Workload::Inline => None,
                Workload::Process(child) => match child.try_wait() {
                    Ok(Some(status)) if status.success() => Some(Some(VmExit::Finished)),
                    Ok(Some(status)) => Some(Some(VmExit::Crashed(format!("process {status}")))),
                    Ok(None) => None,
                    Err(e) => Some(Some(VmExit::Crashed(format!("process lost: {e}")))),
                },
            };
            let Some(exit) = exit else { continue };
            let exit = match (exit, vm.running.take()) {
                (Some(exit), _) => exit,
                (None, Some(Running { workload: Workload::Thread(t), .. })) => match t.join() {
                    Ok(()) => VmExit::Finished,
                    Err(panic) => VmExit::Crashed(panic_message(&panic)),
                },
                _ => VmExit::Finished,
            };
            vm.running = None;
            ended.push((id, exit));
        }
        for (vm, exit) in &ended {
            // The guest's drivers are gone with it: its devices are reset either way, so the
            // VM's next run starts from fresh rings.
            let _ = self.deprovision_all(*vm);
            if matches!(exit, VmExit::Crashed(_)) {
                let _ = self.registry.set_state(*vm, VmState::Stopped);
            } else {
                let _ = self.provision_all(*vm);
            }
        }
        ended
    }

    /// Kills a VM's process (process mode) or marks its thread for stopping (thread mode);
    /// [`Cloud::reap`] then cleans up.
    pub fn kill(&mut self, vm: VmId) -> Result<(), CloudError> {
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        match record.running.as_mut() {
            Some(Running { workload: Workload::Process(child), .. }) => {
                let _ = child.kill();
            }
            Some(running) => running.stop.store(true, Ordering::Relaxed),
            None => {}
        }
        Ok(())
    }

    /// Stops a VM: its workload is asked to return (and waited for, up to 10 s), its devices
    /// are reset and returned, its ENIs stay attached.
    pub fn stop(&mut self, vm: VmId) -> Result<(), CloudError> {
        self.halt(vm)?;
        self.deprovision_all(vm)?;
        self.registry.set_state(vm, VmState::Stopped)?;
        Ok(())
    }

    fn halt(&mut self, vm: VmId) -> Result<(), CloudError> {
        let record = self.vms.get_mut(&vm).ok_or(CloudError::NoSuchVm(vm.0))?;
        let Some(running) = record.running.take() else { return Ok(()) };
        running.stop.store(true, Ordering::Relaxed);
        match running.workload {
            Workload::Thread(t) => {
                let start = Instant::now();
                while !t.is_finished() {
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err(CloudError::StopTimeout(vm.0));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = t.join();
            }
            Workload::Process(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Workload::Inline => {}
        }
        Ok(())
    }

    /// Starts a stopped VM: devices for each attached ENI again.
    pub fn start(&mut self, vm: VmId) -> Result<(), CloudError> {
        if self.registry.vm_state(vm)? == VmState::Running {
            return Ok(());
        }
        self.vm(vm)?;
        self.registry.set_state(vm, VmState::Running)?;
        if let Err(e) = self.provision_all(vm) {
            let _ = self.deprovision_all(vm);
            let _ = self.registry.set_state(vm, VmState::Stopped);
            return Err(e);
        }
        Ok(())
    }

    /// Terminates a VM: its primary ENI is deleted, the others detached and kept.
    pub fn terminate(&mut self, vm: VmId) -> Result<(), CloudError> {
        self.halt(vm)?;
        self.deprovision_all(vm)?;
        self.registry.set_state(vm, VmState::Terminated)?;
        if let Some(record) = self.vms.remove(&vm) {
            let host = &mut self.hosts[record.spec.host];
            host.used_cpus = host.used_cpus.saturating_sub(record.spec.instance_type.vcpus);
            if let Some(path) = record.memory_file {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Attaches ENI `eni` to `vm` at `device_index`: hot (the running guest gets a
    /// [`Hotplug::Added`] NIC) or warm (a device at the next start).
    pub fn attach_eni(
        &mut self,
        eni: EniId,
        vm: VmId,
        device_index: u8,
    ) -> Result<AttachKind, CloudError> {
        self.vm(vm)?;
        let efa = self.eni_paths.get(&eni) == Some(&IoPath::Efa);
        if efa && self.registry.vm_state(vm)? == VmState::Running {
            self.registry.eni(eni)?;
            return Err(CloudError::EfaHotAttach { eni: eni.0, vm: vm.0 });
        }
        let kind = self.registry.attach(eni, vm, device_index)?;
        if kind == AttachKind::Hot {
            match self.provision(vm, eni, device_index) {
                Ok(nic) => {
                    if let Some(record) = self.vms.get_mut(&vm) {
                        match &record.running {
                            Some(running) => {
                                let _ = running.hotplug.send(Hotplug::Added(nic));
                            }
                            None => record.pending.push(nic),
                        }
                    }
                }
                Err(e) => {
                    let _ = self.registry.detach(eni);
                    return Err(e);
                }
            }
        }
        Ok(kind)
    }

    /// Detaches a secondary ENI (its MAC and addresses stay with it).
    pub fn detach_eni(&mut self, eni: EniId) -> Result<VmId, CloudError> {
        let vm = self.registry.detach(eni)?;
        if let Some(running) = self.vms.get(&vm).and_then(|r| r.running.as_ref()) {
            let _ = running.hotplug.send(Hotplug::Removed(eni));
        }
        self.deprovision(vm, eni)?;
        Ok(vm)
    }

    /// Turns an ENI's source/destination check on or off, on its device too.
    pub fn set_src_dst_check(&mut self, eni: EniId, on: bool) -> Result<(), CloudError> {
        self.registry.set_src_dst_check(eni, on)?;
        let e = self.registry.eni(eni)?.clone();
        let addresses: Vec<Ipv4Addr> =
            std::iter::once(e.primary_ip).chain(e.secondary_ips.iter().copied()).collect();
        let Some(a) = e.attachment else { return Ok(()) };
        let Some(record) = self.vms.get(&a.vm) else { return Ok(()) };
        let Some(nic) = record.nics.iter().find(|n| n.eni == eni) else { return Ok(()) };
        let host = &self.hosts[record.spec.host];
        let check = on.then_some(addresses);
        let result = match nic.device {
            NicDevice::Vf(vf) => {
                host.pfs[vf.pf].call(move |pf| pf.set_address_check(vf.vf, check.as_deref()))?
            }
            NicDevice::SoftPort(port) => match host.emulated.as_ref() {
                Some(em) => em
                    .device
                    .call(move |pf| pf.set_address_check(port, check.as_deref()))
                    .unwrap_or(Ok(())),
                None => Ok(()),
            },
        };
        result.map_err(|source| CloudError::Device { host: host.spec.name.clone(), source })
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

/// What the hypervisor programs into a VF (or a software port) for one ENI.
struct DeviceSetup {
    mac: MacAddr,
    mtu: u16,
    window: DmaWindow,
    specs: Vec<QueuePairSpec>,
    check: Option<Vec<Ipv4Addr>>,
    shaper: (ShaperConfig, FlowCapPolicy),
    rx_line: Option<Arc<InterruptLine>>,
    rx_notification: Notification,
}

impl DeviceSetup {
    fn apply(
        self,
        pf: &mut PhysicalFunction,
        vf: u16,
    ) -> Result<Option<Arc<AllowanceCounters>>, DeviceError> {
        pf.set_port(vf, VfPort { mac: self.mac, vlan: None, spoof_check: true })?;
        pf.set_mtu(vf, self.mtu)?;
        pf.assign(vf, self.window)?;
        for spec in self.specs {
            let q = pf.create_queue_pair(vf, spec)?;
            if let Some(line) = &self.rx_line {
                let rx = (self.rx_notification, Some(line.clone()));
                pf.set_notification(vf, q, (Notification::BusyPoll, None), rx)?;
            }
        }
        pf.set_address_check(vf, self.check.as_deref())?;
        pf.set_shaper(vf, Some(self.shaper))
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

/// The single-flow cap the device applies to a flow of an instance of type `ty`, Gbps: the
/// region-egress allowance to another region (applied per flow here, where EC2 caps the
/// instance's total), 10 Gbps between members of one cluster group, 5 Gbps otherwise.
pub fn flow_cap_gbps(
    model: &NetworkModel,
    ty: &InstanceType,
    other_region: bool,
    same_cluster: bool,
) -> f64 {
    if other_region {
        model.region_egress_of(ty)
    } else if same_cluster {
        model.cluster_flow_cap_gbps
    } else {
        model.flow_cap_gbps
    }
}

fn class_between(a: &HostSpec, b: &HostSpec, same: bool) -> NetworkClass {
    let (region, az) = (a.region == b.region, a.region == b.region && a.az == b.az);
    NetworkClass::between(same, az && a.rack == b.rack, az, region)
}

fn check_spec(spec: &VmSpec) -> Result<(), CloudError> {
    if !(1..=MAX_QUEUES_PER_NIC).contains(&spec.queues) {
        return Err(CloudError::Spec(format!(
            "{}: queues {} is outside 1..={MAX_QUEUES_PER_NIC}",
            spec.name, spec.queues
        )));
    }
    if !(256..=16384).contains(&spec.ring_depth) || !spec.ring_depth.is_power_of_two() {
        return Err(CloudError::Spec(format!(
            "{}: ring depth {} is not a power of two in 256..=16384",
            spec.name, spec.ring_depth
        )));
    }
    if !(68..=9001).contains(&spec.mtu) {
        return Err(CloudError::Spec(format!(
            "{}: MTU {} is outside 68..=9001",
            spec.name, spec.mtu
        )));
    }
    Ok(())
}

/// TX and RX buffer sizes for an MTU: 2 KiB up to a 1500-byte MTU, else 9 KiB, so that a jumbo
/// frame is one buffer each way (chained 2 KiB RX buffers cost the driver a copy to gather).
fn buffers(mtu: u16) -> (usize, usize) {
    if mtu <= 1500 { (2048, 2048) } else { (9216, 9216) }
}

fn qp_bytes(spec: &VmSpec) -> usize {
    let (tx, rx) = buffers(spec.mtu);
    QueuePairLayout::with_buffers(0, spec.ring_depth, tx, rx).end.next_multiple_of(4096)
}

fn nic_slot_bytes(spec: &VmSpec) -> usize {
    usize::from(spec.queues) * qp_bytes(spec)
}

fn nic_layouts(spec: &VmSpec, slot: usize) -> Vec<QueuePairLayout> {
    let (tx, rx) = buffers(spec.mtu);
    let base = slot * nic_slot_bytes(spec);
    (0..usize::from(spec.queues))
        .map(|q| QueuePairLayout::with_buffers(base + q * qp_bytes(spec), spec.ring_depth, tx, rx))
        .collect()
}

fn shaper_config(spec: &VmSpec) -> ShaperConfig {
    let ty = &spec.instance_type;
    let bw = BandwidthAllowance::burstable(
        gbps(ty.baseline_gbps),
        gbps(ty.burst_gbps),
        spec.burst_duration,
    );
    ShaperConfig {
        bw_out: bw,
        bw_in: bw,
        pps: spec.pps,
        conntrack_max: spec.conntrack_max,
        ..ShaperConfig::default()
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
