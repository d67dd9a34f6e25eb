//! `vnic-lab run`: a scenario simulated live — its fleet placed by `placement`, the hosts it
//! landed on built by `hypervisor-sim` (a PF engine each, the fabric between them, emulated NIC
//! models where VMs ask for them), every VM a thread driving its ENIs, every flow stamped UDP
//! frames at its offered rate — then a report.
//!
//! Each VM's thread sends its outgoing flows at their offered rates (frames stamped with the
//! time each was *due*, so a sender held back shows up as latency rather than as a slower
//! clock) and receives its incoming ones, sleeping on its RX interrupt (ENA's moderation, 20 µs)
//! or polling, as its scenario says. A flow that falls more than 5 ms behind its schedule (its
//! TX ring full) drops that backlog and counts it as `sender_drops`. A thread with nothing to do
//! sleeps at least 60 µs, so paced flows leave in bursts of what fell due meanwhile. Receivers record per flow
//! the frames, bytes per sample window and sequence gaps, and per path one-way latency in an
//! HdrHistogram. At the end each ENI's counters (ENA's allowance names, queue and switch
//! counters) are read from its devices.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hypervisor_sim::cloud::{Cloud, CloudSpec, HostSpec, VmSpec};
use hypervisor_sim::eni::{EniId, EniSpec, Subnet, VmId};
use hypervisor_sim::guest::GuestCtx;
use hypervisor_sim::traffic::{Endpoint, FlowFrame, TrafficClock, read_stamp, source_port};
use hypervisor_sim::vnic::device::Notification;
use placement::NetworkClass;
use serde::Serialize;

use crate::scenario::{self, PathName, Placed};

/// Frames a sender hands its driver per call at most.
const BURST: usize = 32;
/// A flow further behind than this drops its backlog.
const MAX_BACKLOG_NS: u64 = 5_000_000;
/// A VM thread with nothing to do sleeps at least this long (the timer slack of a Linux
/// thread is 50 µs anyway): a paced flow then sends what fell due in one burst.
const MIN_SLEEP_NS: u64 = 60_000;
/// Time after the last send for frames in flight to arrive.
const DRAIN: Duration = Duration::from_millis(200);
/// First UDP source port; flow `i` sends from `FLOW_PORT_BASE + i`.
const FLOW_PORT_BASE: u16 = 20_000;

/// Options of a run.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Capture what a VM's primary ENI sends and receives: (VM name, pcap file).
    pub pcap: Vec<(String, PathBuf)>,
}

/// What stops a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The scenario cannot be simulated.
    #[error("{file}: {message}")]
    Scenario {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// Building or driving the simulated cloud failed.
    #[error("{what}: {source}")]
    Cloud {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: hypervisor_sim::cloud::CloudError,
    },
    /// A capture file.
    #[error("--pcap {vm}={file}: {message}")]
    Pcap {
        /// The VM.
        vm: String,
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
}

/// A flow's counters, written by its sender's and receiver's threads.
#[derive(Debug)]
struct FlowCounters {
    sent_frames: AtomicU64,
    sent_bytes: AtomicU64,
    sender_drops: AtomicU64,
    recv_frames: AtomicU64,
    recv_bytes: AtomicU64,
    gaps: AtomicU64,
    /// Received bytes per sample window.
    samples: Vec<AtomicU64>,
}

/// One flow as its sender drives it.
struct FlowSender {
    index: usize,
    nic: EniId,
    frame: FlowFrame,
    interval_ns: u64,
    start_ns: u64,
    stop_ns: u64,
    next_due: u64,
    seq: u64,
    counters: Arc<FlowCounters>,
}

/// One flow as its receiver sees it.
#[derive(Clone)]
struct FlowReceiver {
    path: usize,
    next_seq: u64,
    counters: Arc<FlowCounters>,
}

/// What a VM's thread hands back.
struct VmResult {
    latency: Vec<Histogram<u64>>,
}

/// A flow in the report.
#[derive(Debug, Serialize)]
pub struct FlowReport {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// I/O path.
    pub path: PathName,
    /// Frame length, bytes.
    pub frame_bytes: usize,
    /// Network class between the two.
    pub class: NetworkClass,
    /// Offered rate, Gbps.
    pub offered_gbps: f64,
    /// The single-flow cap the device applies, Gbps.
    pub cap_gbps: f64,
    /// What the receiver got, Gbps (frame bytes over the flow's active time).
    pub achieved_gbps: f64,
    /// Millions of frames per second received.
    pub achieved_mpps: f64,
    /// Frames the sender's driver took.
    pub sent_frames: u64,
    /// Frames received.
    pub received_frames: u64,
    /// Frames sent and never received (held by a limit and dropped, or lost to a failure).
    pub lost_frames: u64,
    /// Frames the sender dropped because its TX ring stayed full (5 ms behind schedule).
    pub sender_drops: u64,
    /// Sequence gaps seen by the receiver.
    pub gaps: u64,
    /// Received Gbps per sample window.
    pub throughput_gbps: Vec<f64>,
    /// The `[[flows]]` entry (0-based) it comes from.
    pub entry: usize,
}

/// An ENI in the report.
#[derive(Debug, Serialize)]
pub struct EniReport {
    /// `eni-N`, or its scenario name.
    pub name: String,
    /// MAC.
    pub mac: String,
    /// Primary address.
    pub ip: String,
    /// I/O path.
    pub path: PathName,
    /// ENA's allowance counters.
    pub bw_in_allowance_exceeded: u64,
    /// See ENA.
    pub bw_out_allowance_exceeded: u64,
    /// See ENA.
    pub pps_allowance_exceeded: u64,
    /// See ENA.
    pub conntrack_allowance_exceeded: u64,
    /// See ENA.
    pub linklocal_allowance_exceeded: u64,
    /// Packets held or dropped over a single-flow cap.
    pub flow_cap_exceeded: u64,
    /// Packets the shaper dropped.
    pub shaper_drops: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames dropped on receive (no buffer posted).
    pub rx_drops: u64,
    /// Frames dropped by the source/destination check.
    pub src_dst_check_drops: u64,
}

/// A VM in the report.
#[derive(Debug, Serialize)]
pub struct VmReport {
    /// Where it runs (name, type, AZ, rack, host, group, partition).
    #[serde(flatten)]
    pub placement: crate::plan::VmPlacement,
    /// Its ENIs, primary first.
    pub enis: Vec<EniReport>,
}

/// Latency of one path.
#[derive(Debug, Serialize)]
pub struct PathLatency {
    /// The path.
    pub path: PathName,
    /// Frames measured.
    pub frames: u64,
    /// Median one-way latency, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest, µs.
    pub max_us: f64,
    /// The histogram, for `.hgrm` files and plots.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// A failure in the report.
#[derive(Debug, Serialize)]
pub struct FailureReport {
    /// When, s.
    pub at_s: f64,
    /// The rack that failed.
    pub rack: u32,
    /// The VMs lost.
    pub vms: Vec<String>,
}

/// The run's report (the `--json` fields are these names).
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seconds of traffic.
    pub duration_s: f64,
    /// Throughput sample width, s.
    pub sample_s: f64,
    /// Hosts simulated.
    pub hosts: usize,
    /// VMs.
    pub vms: Vec<VmReport>,
    /// Flows.
    pub flows: Vec<FlowReport>,
    /// Latency per path.
    pub latency: Vec<PathLatency>,
    /// Failures injected.
    pub failures: Vec<FailureReport>,
    /// Frames the fabric carried between hosts.
    pub fabric_frames: u64,
    /// Frames the fabric dropped (a full link queue).
    pub fabric_drops: u64,
    /// Doorbell traps of the emulated NIC models.
    pub emulated_traps: u64,
}

fn cloud_err(
    what: impl Into<String>,
) -> impl FnOnce(hypervisor_sim::cloud::CloudError) -> RunError {
    let what = what.into();
    move |source| RunError::Cloud { what, source }
}

const PATHS: [PathName; 2] = [PathName::Sriov, PathName::Emulated];

fn path_index(p: PathName) -> usize {
    PATHS.iter().position(|&x| x == p).unwrap_or(0)
}

/// Simulates a placed scenario.
pub fn run(file: &str, placed: &Placed, options: &RunOptions) -> Result<RunReport, RunError> {
    scenario::check_runnable(placed)
        .map_err(|message| RunError::Scenario { file: file.into(), message })?;
    if let Some(f) = placed.flows.iter().find(|f| f.srd) {
        return Err(RunError::Scenario {
            file: file.into(),
            message: format!(
                "flow {} -> {} asks for ENA Express (srd): the SRD path is not simulated yet \
                 (`plan` models its 25 Gbps cap)",
                placed.vms[f.from].name, placed.vms[f.to].name
            ),
        });
    }
    let fleet = &placed.fleet;
    let t = fleet.topology();
    // One simulated host per placement host used.
    let mut host_of: BTreeMap<u32, usize> = BTreeMap::new();
    let mut hosts = Vec::new();
    for v in &placed.vms {
        let inst = fleet
            .instance(v.id)
            .map_err(|e| RunError::Scenario { file: file.into(), message: e.to_string() })?;
        if host_of.contains_key(&inst.host.0) {
            continue;
        }
        host_of.insert(inst.host.0, hosts.len());
        let az = t.az_of(inst.host);
        hosts.push(HostSpec {
            name: format!("host{}", inst.host.0),
            cpus: 1 << 16,
            pfs: placed.run.pfs_per_host,
            vfs_per_pf: placed.run.vfs_per_pf,
            region: t.regions[t.region_of(az).index()].name.clone(),
            az: t.azs[az.index()].name.clone(),
            rack: t.rack_of(inst.host).0,
        });
    }
    let subnets = placed
        .subnets
        .iter()
        .map(|s| Subnet {
            name: s.name.clone(),
            az: s.az.clone(),
            network: s.network,
            prefix: s.prefix,
        })
        .collect();
    let n_hosts = hosts.len();
    let mut cloud = Cloud::new(CloudSpec {
        hosts,
        subnets,
        network: placed.network.clone(),
        link_gbps: placed.run.link_gbps,
    })
    .map_err(cloud_err("building the hosts"))?;

    // Launch: secondary ENIs first (attached cold), then the VM.
    let mut vm_ids: Vec<VmId> = Vec::new();
    let mut eni_names: BTreeMap<EniId, (String, PathName)> = BTreeMap::new();
    for (i, v) in placed.vms.iter().enumerate() {
        let mut secondary = Vec::new();
        for e in placed.enis.iter().filter(|e| e.vm == i) {
            let spec = EniSpec {
                subnet: e.subnet.clone(),
                secondary_ips: e.ips.clone(),
                ..Default::default()
            };
            let id = cloud
                .create_eni(&spec, e.path.io_path())
                .map_err(cloud_err(format!("eni {}", e.name)))?;
            if !e.src_dst_check {
                cloud.set_src_dst_check(id, false).map_err(cloud_err(format!("eni {}", e.name)))?;
            }
            eni_names.insert(id, (e.name.clone(), e.path));
            secondary.push(id);
        }
        let inst = fleet
            .instance(v.id)
            .map_err(|e| RunError::Scenario { file: file.into(), message: e.to_string() })?;
        let mut spec =
            VmSpec::new(&v.name, host_of[&inst.host.0], v.instance_type.clone(), &v.subnet);
        spec.path = v.path.io_path();
        spec.secondary = secondary;
        spec.cluster_group = v.cluster_group.clone();
        spec.queues = v.queues;
        spec.mtu = v.mtu;
        spec.burst_duration = Duration::from_secs_f64(v.burst_s);
        spec.rx_notification =
            if v.rx_interrupts { Notification::ENA_RX } else { Notification::BusyPoll };
        let id = cloud.launch(spec).map_err(cloud_err(format!("vm {}", v.name)))?;
        let primary = cloud.enis().enis_of(id)[0].id;
        eni_names.insert(primary, (format!("{}/eni0", v.name), v.path));
        if !v.src_dst_check {
            cloud.set_src_dst_check(primary, false).map_err(cloud_err(format!("vm {}", v.name)))?;
        }
        vm_ids.push(id);
    }

    // Flows: which ENI each end uses, the frame, the counters.
    let sample_ns = placed.run.sample_ms * 1_000_000;
    let duration_ns = (placed.duration_s * 1e9) as u64;
    let windows = (duration_ns / sample_ns + 2) as usize;
    let eni_on = |vm: usize, path: Option<PathName>| -> Option<(EniId, PathName)> {
        let enis = cloud.enis().enis_of(vm_ids[vm]);
        match path {
            None => enis.first().map(|e| (e.id, placed.vms[vm].path)),
            Some(p) => enis
                .iter()
                .find(|e| eni_names.get(&e.id).is_some_and(|(_, q)| *q == p))
                .map(|e| (e.id, p)),
        }
    };
    let mut senders: Vec<Vec<FlowSender>> = (0..vm_ids.len()).map(|_| Vec::new()).collect();
    let mut receivers: Vec<BTreeMap<u16, FlowReceiver>> =
        (0..vm_ids.len()).map(|_| BTreeMap::new()).collect();
    let mut flow_meta = Vec::new();
    for (i, f) in placed.flows.iter().enumerate() {
        let (Some((src_eni, path)), Some((dst_eni, _))) =
            (eni_on(f.from, f.path), eni_on(f.to, f.path))
        else {
            return Err(RunError::Scenario {
                file: file.into(),
                message: format!("flow {i}: an end has no ENI on its path"),
            });
        };
        let end = |id: EniId, port: u16| {
            cloud.enis().eni(id).map(|e| Endpoint { mac: e.mac, ip: e.primary_ip, port })
        };
        let port = FLOW_PORT_BASE.wrapping_add(i as u16);
        let (Ok(src), Ok(dst)) = (end(src_eni, port), end(dst_eni, f.dst_port)) else {
            return Err(RunError::Scenario {
                file: file.into(),
                message: format!("flow {i}: no ENI"),
            });
        };
        let cap = flow_cap_gbps(placed, f.from, f.to);
        let offered = f.gbps.unwrap_or(cap);
        let pps = offered * 1e9 / (8.0 * f.frame as f64);
        let counters = Arc::new(FlowCounters {
            sent_frames: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            sender_drops: AtomicU64::new(0),
            recv_frames: AtomicU64::new(0),
            recv_bytes: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            samples: (0..windows).map(|_| AtomicU64::new(0)).collect(),
        });
        let start_ns = (f.start_s * 1e9) as u64;
        let stop_ns = f.stop_s.map_or(duration_ns, |s| ((s * 1e9) as u64).min(duration_ns));
        senders[f.from].push(FlowSender {
            index: i,
            nic: src_eni,
            frame: FlowFrame::new(src, dst, f.frame),
            interval_ns: (1e9 / pps.max(1.0)) as u64,
            start_ns,
            stop_ns,
            next_due: start_ns,
            seq: 0,
            counters: counters.clone(),
        });
        receivers[f.to].insert(
            port,
            FlowReceiver { path: path_index(path), next_seq: 0, counters: counters.clone() },
        );
        flow_meta.push((path, offered, cap, start_ns, stop_ns, counters));
    }

    // Captures.
    let mut captures: BTreeMap<usize, Capture> = BTreeMap::new();
    for (vm, path) in &options.pcap {
        let Some(i) = placed.vm_index(vm) else {
            return Err(RunError::Pcap {
                vm: vm.clone(),
                file: path.display().to_string(),
                message: "no VM of that name in the scenario".into(),
            });
        };
        let capture = Capture::create(path).map_err(|message| RunError::Pcap {
            vm: vm.clone(),
            file: path.display().to_string(),
            message,
        })?;
        captures.insert(i, capture);
    }

    // Start every VM.
    let clock = TrafficClock::new();
    let (results_tx, results_rx) = mpsc::channel::<VmResult>();
    let end_ns = duration_ns;
    for (i, &vm) in vm_ids.iter().enumerate() {
        let sends = std::mem::take(&mut senders[i]);
        let recvs = std::mem::take(&mut receivers[i]);
        let capture = captures.remove(&i);
        let results = results_tx.clone();
        let interrupts = placed.vms[i].rx_interrupts;
        cloud
            .run(vm, move |ctx| {
                vm_workload(
                    ctx, clock, end_ns, sample_ns, sends, recvs, capture, interrupts, &results,
                )
            })
            .map_err(cloud_err(format!("starting vm {}", placed.vms[i].name)))?;
    }
    drop(results_tx);

    // Watch, inject failures, show progress.
    let bar = options.progress.then(|| progress_bar(placed.duration_s));
    let mut failures: Vec<FailureReport> = Vec::new();
    let mut pending: Vec<&scenario::FailurePlan> = placed.failures.iter().collect();
    pending.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let started = Instant::now();
    let total = Duration::from_nanos(duration_ns) + DRAIN;
    while started.elapsed() < total {
        let now_s = clock.now_ns() as f64 / 1e9;
        while let Some(f) = pending.first().filter(|f| f.at_s <= now_s).copied() {
            pending.remove(0);
            let mut lost = Vec::new();
            for &v in &f.vms {
                if cloud.stop(vm_ids[v]).is_ok() {
                    lost.push(placed.vms[v].name.clone());
                }
            }
            failures.push(FailureReport { at_s: f.at_s, rack: f.rack, vms: lost });
        }
        if let Some(bar) = &bar {
            bar.set_position((started.elapsed().as_secs_f64() * 10.0) as u64);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    // Collect the workloads.
    let mut latency: Vec<Histogram<u64>> = PATHS.iter().map(|_| new_histogram()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = 0;
    while ended < vm_ids.len() && Instant::now() < deadline {
        match results_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => {
                for (k, h) in r.latency.iter().enumerate() {
                    let _ = latency[k].add(h);
                }
                ended += 1;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                cloud.reap();
            }
        }
    }
    for &vm in &vm_ids {
        let _ = cloud.stop(vm);
    }

    // The report.
    let sample_s = sample_ns as f64 / 1e9;
    let flows = placed
        .flows
        .iter()
        .zip(&flow_meta)
        .map(|(f, (path, offered, cap, start_ns, stop_ns, c))| {
            let active = (stop_ns.saturating_sub(*start_ns)) as f64 / 1e9;
            let recv_frames = c.recv_frames.load(Ordering::Relaxed);
            let recv_bytes = c.recv_bytes.load(Ordering::Relaxed);
            let sent = c.sent_frames.load(Ordering::Relaxed);
            let class = fleet
                .network_class(placed.vms[f.from].id, placed.vms[f.to].id)
                .unwrap_or(NetworkClass::SameAz);
            let windows_used = ((*stop_ns as f64 / 1e9) / sample_s).ceil() as usize;
            FlowReport {
                from: placed.vms[f.from].name.clone(),
                to: placed.vms[f.to].name.clone(),
                path: *path,
                frame_bytes: f.frame,
                class,
                offered_gbps: *offered,
                cap_gbps: *cap,
                achieved_gbps: recv_bytes as f64 * 8.0 / active.max(1e-9) / 1e9,
                achieved_mpps: recv_frames as f64 / active.max(1e-9) / 1e6,
                sent_frames: sent,
                received_frames: recv_frames,
                lost_frames: sent.saturating_sub(recv_frames),
                sender_drops: c.sender_drops.load(Ordering::Relaxed),
                gaps: c.gaps.load(Ordering::Relaxed),
                throughput_gbps: c
                    .samples
                    .iter()
                    .take(windows_used.min(c.samples.len()))
                    .map(|b| b.load(Ordering::Relaxed) as f64 * 8.0 / sample_s / 1e9)
                    .collect(),
                entry: f.decl,
            }
        })
        .collect();
    let mut vms = Vec::new();
    for (i, v) in placed.vms.iter().enumerate() {
        let inst = fleet
            .instance(v.id)
            .map_err(|e| RunError::Scenario { file: file.into(), message: e.to_string() })?;
        let mut enis = Vec::new();
        let ids: Vec<(EniId, String, String)> = cloud
            .enis()
            .enis_of(vm_ids[i])
            .iter()
            .map(|e| (e.id, e.mac.to_string(), e.primary_ip.to_string()))
            .collect();
        for (id, mac, ip) in ids {
            let c = cloud.eni_counters(id).map_err(cloud_err(format!("counters of {}", v.name)))?;
            let (name, path) =
                eni_names.get(&id).cloned().unwrap_or((format!("eni-{}", id.0), v.path));
            enis.push(EniReport {
                name,
                mac,
                ip,
                path,
                bw_in_allowance_exceeded: c.allowance.bw_in_allowance_exceeded,
                bw_out_allowance_exceeded: c.allowance.bw_out_allowance_exceeded,
                pps_allowance_exceeded: c.allowance.pps_allowance_exceeded,
                conntrack_allowance_exceeded: c.allowance.conntrack_allowance_exceeded,
                linklocal_allowance_exceeded: c.allowance.linklocal_allowance_exceeded,
                flow_cap_exceeded: c.allowance.flow_cap_exceeded,
                shaper_drops: c.allowance.shaper_drops,
                tx_packets: c.queues.tx_packets,
                tx_bytes: c.queues.tx_bytes,
                rx_packets: c.queues.rx_packets,
                rx_bytes: c.queues.rx_bytes,
                rx_drops: c.queues.rx_drops,
                src_dst_check_drops: c.port.tx_src_dst_check + c.port.rx_src_dst_check,
            });
        }
        let placement = crate::plan::VmPlacement {
            name: v.name.clone(),
            instance_type: v.instance_type.name.clone(),
            az: t.azs[t.az_of(inst.host).index()].name.clone(),
            rack: t.rack_of(inst.host).0,
            host: inst.host.0,
            group: inst.group.map(|g| fleet.group(g).name.clone()),
            partition: inst.partition,
        };
        vms.push(VmReport { placement, enis });
    }
    let latency = PATHS
        .iter()
        .zip(latency)
        .filter(|(_, h)| !h.is_empty())
        .map(|(&path, h)| PathLatency {
            path,
            frames: h.len(),
            p50_us: h.value_at_quantile(0.50) as f64 / 1e3,
            p90_us: h.value_at_quantile(0.90) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
            p999_us: h.value_at_quantile(0.999) as f64 / 1e3,
            max_us: h.max() as f64 / 1e3,
            histogram: h,
        })
        .collect();
    let fabric = cloud.fabric().stats();
    let traps = (0..n_hosts).filter_map(|h| cloud.emulated_traps(h)).sum();
    let report = RunReport {
        scenario: placed.name.clone(),
        duration_s: placed.duration_s,
        sample_s,
        hosts: n_hosts,
        vms,
        flows,
        latency,
        failures,
        fabric_frames: fabric.frames.load(Ordering::Relaxed),
        fabric_drops: fabric.fabric_drops.load(Ordering::Relaxed),
        emulated_traps: traps,
    };
    cloud.shut_down();
    Ok(report)
}

/// The single-flow cap the device applies between two VMs, Gbps (as the hypervisor's policy).
fn flow_cap_gbps(placed: &Placed, from: usize, to: usize) -> f64 {
    let (a, b) = (&placed.vms[from], &placed.vms[to]);
    let model = &placed.network;
    let class = placed.fleet.network_class(a.id, b.id).unwrap_or(NetworkClass::SameAz);
    let same_cluster = a.cluster_group.is_some() && a.cluster_group == b.cluster_group;
    hypervisor_sim::cloud::flow_cap_gbps(
        model,
        &a.instance_type,
        class == NetworkClass::OtherRegion,
        same_cluster,
    )
}

fn new_histogram() -> Histogram<u64> {
    hypervisor_sim::traffic::latency_histogram()
}

fn progress_bar(duration_s: f64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(((duration_s + DRAIN.as_secs_f64()) * 10.0) as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} simulating {bar:40} {elapsed}/{len} ")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A pcap capture of one VM's primary ENI.
struct Capture {
    writer: pcap_file::pcap::PcapWriter<BufWriter<File>>,
    epoch: std::time::SystemTime,
}

impl Capture {
    fn create(path: &std::path::Path) -> Result<Self, String> {
        let file = File::create(path).map_err(|e| e.to_string())?;
        let writer =
            pcap_file::pcap::PcapWriter::new(BufWriter::new(file)).map_err(|e| e.to_string())?;
        Ok(Self { writer, epoch: std::time::SystemTime::now() })
    }

    fn write(&mut self, t_ns: u64, frame: &[u8]) {
        let at = self.epoch.duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
            + Duration::from_nanos(t_ns);
        let packet = pcap_file::pcap::PcapPacket::new(at, frame.len() as u32, frame);
        let _ = self.writer.write_packet(&packet);
    }
}

/// A VM's thread: send its flows on schedule, receive its flows, until the end of the run.
#[allow(clippy::too_many_arguments)]
fn vm_workload(
    ctx: &mut GuestCtx,
    clock: TrafficClock,
    end_ns: u64,
    sample_ns: u64,
    mut sends: Vec<FlowSender>,
    mut recvs: BTreeMap<u16, FlowReceiver>,
    mut capture: Option<Capture>,
    interrupts: bool,
    results: &mpsc::Sender<VmResult>,
) {
    let mut latency: Vec<Histogram<u64>> = PATHS.iter().map(|_| new_histogram()).collect();
    let stop = ctx.stop_flag();
    let drain_end = end_ns + DRAIN.as_nanos() as u64;
    let mut batch: Vec<Vec<u8>> = vec![Vec::new(); BURST];
    let primary = ctx.nics.first().map(|n| n.eni);
    loop {
        let now = clock.now_ns();
        if now >= drain_end || stop.load(Ordering::Relaxed) {
            break;
        }
        let mut next_wake = drain_end;
        let mut busy = false;
        for f in &mut sends {
            if now < f.start_ns {
                next_wake = next_wake.min(f.start_ns);
                continue;
            }
            if now >= f.stop_ns {
                continue;
            }
            if f.next_due > now {
                next_wake = next_wake.min(f.next_due);
                continue;
            }
            if now - f.next_due > MAX_BACKLOG_NS {
                let behind = (now - f.next_due) / f.interval_ns.max(1);
                f.counters.sender_drops.fetch_add(behind, Ordering::Relaxed);
                f.seq += behind;
                f.next_due += behind * f.interval_ns;
            }
            let want = (((now - f.next_due) / f.interval_ns.max(1)) as usize + 1).min(BURST);
            for (k, buf) in batch.iter_mut().take(want).enumerate() {
                buf.clear();
                buf.extend_from_slice(f.frame.bytes());
                hypervisor_sim::traffic::stamp(
                    buf,
                    f.seq + k as u64,
                    f.next_due + k as u64 * f.interval_ns,
                );
            }
            let Some(nic) = ctx.nics.iter_mut().find(|n| n.eni == f.nic) else { continue };
            let refs: Vec<&[u8]> = batch[..want].iter().map(Vec::as_slice).collect();
            let n = nic.send(f.index, &refs);
            if let Some(c) = capture.as_mut().filter(|_| primary == Some(f.nic)) {
                for frame in &refs[..n] {
                    c.write(now, frame);
                }
            }
            f.seq += n as u64;
            f.next_due += n as u64 * f.interval_ns;
            f.counters.sent_frames.fetch_add(n as u64, Ordering::Relaxed);
            f.counters.sent_bytes.fetch_add((n * f.frame.bytes().len()) as u64, Ordering::Relaxed);
            busy |= n < want || f.next_due <= now;
            next_wake = next_wake.min(f.next_due);
        }
        let mut received = 0;
        let window = (now / sample_ns.max(1)) as usize;
        for nic in &mut ctx.nics {
            let is_primary = Some(nic.eni) == primary;
            received += nic.recv(|frame| {
                if let Some(c) = capture.as_mut().filter(|_| is_primary) {
                    c.write(now, frame);
                }
                let Some(port) = source_port(frame) else { return };
                let Some(r) = recvs.get_mut(&port) else { return };
                if let Some((seq, t)) = read_stamp(frame) {
                    let _ = latency[r.path].record(now.saturating_sub(t).max(1));
                    if seq != r.next_seq {
                        r.counters.gaps.fetch_add(1, Ordering::Relaxed);
                    }
                    r.next_seq = seq + 1;
                }
                r.counters.recv_frames.fetch_add(1, Ordering::Relaxed);
                r.counters.recv_bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                if let Some(s) = r.counters.samples.get(window) {
                    s.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
            });
        }
        if received > 0 || busy {
            continue;
        }
        let now = clock.now_ns();
        let wait = next_wake.saturating_sub(now).clamp(MIN_SLEEP_NS, 1_000_000);
        if interrupts && let Some(nic) = ctx.nics.first() {
            nic.wait_rx(Duration::from_nanos(wait));
        } else if interrupts {
            std::thread::sleep(Duration::from_nanos(wait));
        } else {
            // Polling: a short nap between polls, so a small machine's other threads run.
            std::thread::sleep(Duration::from_nanos(wait.min(MIN_SLEEP_NS)));
        }
    }
    if let Some(c) = capture {
        let _ = std::io::Write::flush(&mut c.writer.into_writer());
    }
    let _ = results.send(VmResult { latency });
}
