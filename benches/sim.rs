//! How fast the discrete-event simulation runs: events per wall second, simulated frames per wall
//! second, and simulated time over wall time, for
//!
//! * the two-node topology of the ns-3 comparison (two VMs on two PFs of one host: a 100 Gbps
//!   link with a 5 µs one-way latency), one frame size at a time — 64 B (2 Mpps over 8 flows,
//!   8 queues), 1500 B (10 Gbps, 8 flows), 9000 B (1.5 Gbps, one flow);
//! * the default scenario and `scenarios/fleet-200.toml` (200 VMs, 40 hosts, 2,000 flows) through
//!   the release binary, with their peak RSS.
//!
//! Every frame's bytes move through real rings and the real engine: the copies per frame are the
//! guest driver's into its TX buffer, the engine's gather into its scratch buffer and its copy
//! into the receiver's RX buffer, plus the fabric's copy into a frame of its own between hosts
//! (four in all across hosts; the receiving driver hands its buffer up in place).
//!
//! `cargo bench --bench sim` (`SIM_SECONDS` sets the simulated seconds of the two-node cases,
//! default 1).

use std::time::Instant;

use hypervisor_sim::cloud::{Cloud, CloudSpec, HostSpec, VmSpec};
use hypervisor_sim::eni::{EniId, Subnet, VmId};
use hypervisor_sim::guest::IoPath;
use hypervisor_sim::placement::{InstanceType, NetworkModel};
use hypervisor_sim::sim::traffic::{
    Arrivals, FlowSpec, NoObserver, Pattern, TrafficSpec, simulate,
};
use hypervisor_sim::sim::{CostModel, VirtualClock};
use hypervisor_sim::traffic::{Endpoint, FlowFrame};

/// One two-node case: frame length, aggregate Gbps, flows.
struct Case {
    frame: usize,
    gbps: f64,
    flows: usize,
}

/// What a two-node run did.
struct TwoNode {
    frames: u64,
    sent: u64,
    events: u64,
    wall_s: f64,
    simulated_s: f64,
}

fn two_node(case: &Case, seconds: f64) -> Result<TwoNode, String> {
    let ty = InstanceType::catalog()
        .into_iter()
        .find(|t| t.name == "c5n.18xlarge")
        .ok_or("c5n.18xlarge is missing from the catalog")?;
    let mut host = HostSpec::new("h0", "az-a", 0, 512, 4);
    host.pfs = 2;
    let spec = CloudSpec {
        hosts: vec![host],
        subnets: vec![Subnet {
            name: "a".into(),
            az: "az-a".into(),
            network: [10, 0, 0, 0].into(),
            prefix: 24,
        }],
        network: NetworkModel::default(),
        link_gbps: 100.0,
    };
    let mut cloud = Cloud::new_virtual(spec, VirtualClock::new()).map_err(|e| e.to_string())?;
    let mut launch = |name: &str, queues: u16| -> Result<(VmId, EniId), String> {
        let mut s = VmSpec::new(name, 0, ty.clone(), "a");
        s.path = IoPath::SrIov;
        s.queues = queues;
        s.mtu = if case.frame > 1514 { 9001 } else { 1500 };
        s.cluster_group = Some("bench".into());
        let vm = cloud.launch(s).map_err(|e| e.to_string())?;
        Ok((vm, cloud.enis().enis_of(vm)[0].id))
    };
    // The pool hands out PF 1's VFs first, then PF 0's: the two VMs land on different PFs.
    let a = launch("a", 8)?;
    for _ in 0..3 {
        launch("filler", 1)?;
    }
    let b = launch("b", 8)?;
    let end = |id: EniId, port: u16| {
        cloud.enis().eni(id).map(|e| Endpoint { mac: e.mac, ip: e.primary_ip, port })
    };
    let end_ns = (seconds * 1e9) as u64;
    let per_flow = case.gbps / case.flows as f64;
    let mut flows = Vec::new();
    for i in 0..case.flows {
        let src = end(a.1, 20_000 + i as u16).map_err(|e| e.to_string())?;
        let dst = end(b.1, 9_000).map_err(|e| e.to_string())?;
        flows.push(FlowSpec {
            from: a.0,
            to: b.0,
            src_eni: a.1,
            dst_eni: b.1,
            frame: FlowFrame::new(src, dst, case.frame),
            interval_ns: (case.frame as f64 * 8.0 / per_flow) as u64,
            start_ns: 0,
            stop_ns: end_ns,
            arrivals: Arrivals::Periodic,
            pattern: Pattern::Stream,
            path: 0,
            tcp: None,
        });
    }
    let spec = TrafficSpec {
        flows,
        failures: vec![],
        end_ns,
        drain_ns: 1_000_000,
        sample_ns: 100_000_000,
        paths: 1,
        seed: 1,
        costs: CostModel::default(),
        efa_flows: Vec::new(),
        efa_loss: 0.0,
        rule_changes: Vec::new(),
    };
    let out = simulate(&mut cloud, &spec, &mut NoObserver).map_err(|e| e.to_string())?;
    let frames: u64 = out.flows.iter().map(|f| f.recv_frames).sum();
    let sent: u64 = out.flows.iter().map(|f| f.sent_frames).sum();
    Ok(TwoNode {
        frames,
        sent,
        events: out.events,
        wall_s: out.wall.as_secs_f64(),
        simulated_s: out.simulated_ns as f64 / 1e9,
    })
}

/// `--case FRAME GBPS FLOWS SECONDS`: one two-node run, printed as `scripts/bench-ns3.sh`
/// reads it (the same line its ns-3 program prints).
fn one_case(args: &[String]) -> Result<(), String> {
    let num = |i: usize| -> Result<f64, String> {
        args.get(i).and_then(|a| a.parse().ok()).ok_or(format!("--case argument {i} missing"))
    };
    let case = Case { frame: num(0)? as usize, gbps: num(1)?, flows: num(2)? as usize };
    let r = two_node(&case, num(3)?)?;
    println!("frames={} wall_s={:.6} sim_s={:.6}", r.frames, r.wall_s, r.simulated_s);
    Ok(())
}

/// Runs the release binary on a scenario; (wall s, peak RSS MiB, the report's last line).
fn scenario(args: &[&str]) -> Result<(f64, f64, String), String> {
    let started = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vnic-lab"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.ok_or("no stdout")?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut text).map_err(|e| e.to_string())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with live pointers to a status and an rusage.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if waited != pid || status != 0 {
        return Err(format!("{args:?}: exit status {status}"));
    }
    let wall = started.elapsed().as_secs_f64();
    let last = text.lines().last().unwrap_or_default().to_string();
    Ok((wall, usage.ru_maxrss as f64 / 1024.0, last))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(k) = args.iter().position(|a| a == "--case") {
        if let Err(e) = one_case(&args[k + 1..]) {
            eprintln!("sim: {e}");
            std::process::exit(2);
        }
        return;
    }
    let seconds: f64 =
        std::env::var("SIM_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    println!(
        "| case | frame | offered | frames received / sent | events | events per wall s | \
         frames per wall s | simulated / wall |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let cases = [
        Case { frame: 64, gbps: 2e6 * 64.0 * 8.0 / 1e9, flows: 8 },
        Case { frame: 1500, gbps: 10.0, flows: 8 },
        Case { frame: 9000, gbps: 1.5, flows: 1 },
    ];
    for case in &cases {
        match two_node(case, seconds) {
            Ok(r) => println!(
                "| two nodes | {} B | {:.2} Gbps | {} / {} | {:.2} M | {:.2} M | {:.0} k | {:.3} |",
                case.frame,
                case.gbps,
                r.frames,
                r.sent,
                r.events as f64 / 1e6,
                r.events as f64 / r.wall_s / 1e6,
                r.frames as f64 / r.wall_s / 1e3,
                r.simulated_s / r.wall_s
            ),
            Err(e) => {
                eprintln!("sim: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("\n| scenario | wall | peak RSS | the report's last line |");
    println!("|---|---:|---:|---|");
    let root = env!("CARGO_MANIFEST_DIR");
    let fleet = format!("{root}/scenarios/fleet-200.toml");
    for (name, args) in [("default", vec!["run"]), ("fleet-200", vec!["run", fleet.as_str()])] {
        match scenario(&args) {
            Ok((wall, rss, last)) => println!("| {name} | {wall:.2} s | {rss:.0} MiB | {last} |"),
            Err(e) => {
                eprintln!("sim: {e}");
                std::process::exit(1);
            }
        }
    }
}
