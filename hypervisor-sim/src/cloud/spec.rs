//! What the cloud is asked for (hosts, the cloud, a VM) and what goes wrong, with EC2's error
//! names where EC2 has one.

use super::*;

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

/// Connections an ENI tracks at most unless its VM says otherwise (the conntrack allowance).
pub const DEFAULT_CONNTRACK_MAX: usize = 1_000_000;

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
            conntrack_max: DEFAULT_CONNTRACK_MAX,
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

pub(super) fn check_spec(spec: &VmSpec) -> Result<(), CloudError> {
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
