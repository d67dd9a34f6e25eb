//! The three ways a VM reaches the network, measured with the same VM-to-VM workload: the
//! emulated (trap-and-copy) NIC and the SR-IOV VF with the ENA kernel-style driver (EFA bypass is
//! not built yet), at 64 and 1500 bytes.
//!
//! Two runs per cell: *throughput* (the sender offers as fast as its driver takes frames, bursts
//! of 32) reports Mpps, Gbps and CPU per frame; *latency* (a paced 50,000 frames/s, one flow,
//! stamps at the due time so stalls count) reports one-way p50 / p99 / p99.9 from an
//! HdrHistogram. Both VMs on one host, then on two hosts of one rack (every frame crosses the
//! fabric: the sender's PF uplink, the link's queue, the receiving host's engine), one queue
//! pair each, rings of 1024, c5n.18xlarge allowances (100 Gbps, so the shaper never holds a
//! frame; the per-flow cap would, so the sender spreads over 64 flows).
//!
//! `cargo bench --bench paths` (set `PATHS_SECONDS` to change the 2 s per run).

use std::time::Duration;

use hypervisor_sim::cloud::{Cloud, CloudSpec, HostSpec, VmSpec};
use hypervisor_sim::eni::Subnet;
use hypervisor_sim::guest::IoPath;
use hypervisor_sim::placement::{InstanceType, NetworkModel};
use hypervisor_sim::vnic::device::Notification;
use hypervisor_sim::workload::{PairConfig, PairReport, run_pair};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: f64 =
        std::env::var("PATHS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let ty = InstanceType::catalog().into_iter().find(|t| t.name == "c5n.18xlarge");
    let Some(ty) = ty else {
        eprintln!("paths: c5n.18xlarge is missing from the catalog");
        std::process::exit(1);
    };
    let subnet =
        Subnet { name: "a".into(), az: "az-a".into(), network: [10, 0, 0, 0].into(), prefix: 24 };
    let spec = CloudSpec {
        hosts: vec![
            HostSpec::new("host0", "az-a", 0, 512, 8),
            HostSpec::new("host1", "az-a", 0, 512, 8),
        ],
        subnets: vec![subnet],
        network: NetworkModel::default(),
        link_gbps: 100.0,
    };
    let mut cloud = match Cloud::new(spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("paths: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "| path | hosts | frame | Mpps | Gbps | guest CPU/frame | process CPU/frame | p50 | p99 | p99.9 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (path, hosts) in
        [(IoPath::Emulated, 1), (IoPath::SrIov, 1), (IoPath::Emulated, 2), (IoPath::SrIov, 2)]
    {
        for frame_len in [64usize, 1500] {
            let mut launch = |name: &str, rx: Notification| {
                let host = if name.starts_with("receiver") { hosts - 1 } else { 0 };
                let mut s = VmSpec::new(name, host, ty.clone(), "a");
                s.path = path;
                s.rx_notification = rx;
                cloud.launch(s)
            };
            // Throughput: both guests poll. Latency: the receiver sleeps on an RX interrupt
            // raised at once (no moderation delay), so that on a 2-core machine it does not
            // compete for a core with the device engine while it waits.
            let busy = Notification::BusyPoll;
            let irq = Notification::Moderated { delay_us: 0, packets: 1 };
            let vms = [
                launch("sender", busy),
                launch("receiver", busy),
                launch("sender-l", busy),
                launch("receiver-l", irq),
            ];
            let [Ok(a), Ok(b), Ok(al), Ok(bl)] = vms else {
                eprintln!("paths: could not launch the VMs: {vms:?}");
                std::process::exit(1);
            };
            let len = frame_len.max(60);
            let duration = Duration::from_secs_f64(seconds);
            let throughput = PairConfig {
                frame_len: len,
                burst: 32,
                duration,
                offered_pps: None,
                flows: 64,
                window: Some(512),
            };
            let latency = PairConfig {
                frame_len: len,
                burst: 32,
                duration,
                offered_pps: Some(50_000),
                flows: 1,
                window: None,
            };
            let t = run_pair(&mut cloud, a, b, throughput);
            let l = run_pair(&mut cloud, al, bl, latency);
            for vm in [a, b, al, bl] {
                if let Some(eni) = cloud.enis().enis_of(vm).first().map(|e| e.id)
                    && let Ok(c) = cloud.eni_counters(eni)
                {
                    eprintln!(
                        "  {path} {frame_len} B vm {}: {:?} {:?}",
                        vm.0, c.queues, c.allowance
                    );
                }
            }
            match (t, l) {
                (Ok(t), Ok(l)) => print_row(path, hosts, frame_len, &t, &l),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("paths: {path} {frame_len} B: {e}");
                    std::process::exit(1);
                }
            }
            for vm in [a, b, al, bl] {
                let _ = cloud.terminate(vm);
            }
        }
    }
    if let Some(traps) = cloud.emulated_traps(0) {
        println!("\nemulated NIC model: {traps} traps (doorbell wake-ups) in all");
    }
}

fn print_row(path: IoPath, hosts: usize, frame: usize, t: &PairReport, l: &PairReport) {
    let hosts = if hosts == 1 { "one" } else { "two, one rack" };
    println!(
        "| {path} | {hosts} | {frame} B | {:.2} | {:.2} | {:.0} ns | {:.0} ns | {:.1} µs | {:.1} µs | {:.1} µs |",
        t.mpps(),
        t.gbps(),
        t.guest_cpu_ns_per_frame(),
        t.process_cpu_ns_per_frame(),
        l.latency_us(50.0),
        l.latency_us(99.0),
        l.latency_us(99.9),
    );
    eprintln!(
        "  {path} {hosts} {frame} B: throughput run sent {} received {} lost {}; latency run sent {} \
         received {} lost {}",
        t.sent,
        t.received,
        t.lost(),
        l.sent,
        l.received,
        l.lost()
    );
}
