//! `vnic-lab`: the command line of the vnic-lab workspace.
//!
//! With no arguments it runs the embedded default scenario (`scenarios/default.toml`: two hosts,
//! six VMs in a cluster and a spread group, flows over the SR-IOV and emulated paths) for a few
//! seconds and prints the report. `run FILE` simulates any scenario, `plan FILE` plans one
//! analytically; `demo` and `vf-demo` drive one queue pair and one VF pair directly; `schema`
//! prints the JSON Schema of the reports.
//! Bad input (a scenario, an option) exits with status 2 and one message naming the file, line
//! and column, or the entity.

mod demo;
mod lab;
mod plan;
mod reach;
mod report;
mod run;
mod scenario;
mod sweep;
mod vf_demo;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The scenario `cargo run --release` runs.
const DEFAULT_SCENARIO: &str = include_str!("../scenarios/default.toml");

/// A software SR-IOV / ENA-style virtual NIC, the VMs that drive it, and the benchmarks that
/// measure it.
#[derive(Debug, Parser)]
#[command(
    name = "vnic-lab",
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "With no command, vnic-lab runs the embedded default scenario in virtual time \
                  (or FILE, if given) and takes run's options: `vnic-lab --json`, \
                  `vnic-lab --out DIR`, `vnic-lab --live`, `vnic-lab --print-default`."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command: `run`'s options.
    #[command(flatten)]
    run: RunArgs,
}

/// Options of `run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The scenario (TOML); without it, the embedded default scenario.
    file: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write report.json, report.html, `latency-<path>.hgrm` and .hlog, and SVG plots into this
    /// directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Capture what a VM's primary ENI sends and receives into a pcap file (repeatable).
    #[arg(long, value_name = "VM=FILE", value_parser = parse_pcap)]
    pcap: Vec<(String, PathBuf)>,
    /// Print the embedded default scenario and exit.
    #[arg(long)]
    print_default: bool,
    /// Run live on threads and the wall clock (measures this machine) instead of the
    /// deterministic simulation in virtual time.
    #[arg(long)]
    live: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

/// How large a scenario may grow.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct LimitArgs {
    /// Most flows the scenario's `[[flows]]` may expand to.
    #[arg(long, value_name = "N", default_value_t = scenario::DEFAULT_MAX_FLOWS)]
    max_flows: u64,
    /// Most instances its `[[vms]]` may launch.
    #[arg(long, value_name = "N", default_value_t = scenario::DEFAULT_MAX_INSTANCES)]
    max_instances: u64,
}

impl LimitArgs {
    pub(crate) fn limits(self) -> scenario::Limits {
        scenario::Limits { max_flows: self.max_flows, max_instances: self.max_instances }
    }
}

fn parse_pcap(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((vm, file)) if !vm.is_empty() && !file.is_empty() => {
            Ok((vm.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("`{s}` is not VM=FILE")),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a scenario (in virtual time: deterministic; `--live`: threads on this machine):
    /// per-flow achieved rates against their caps, per-ENI counters, latency percentiles and
    /// their breakdown per path, CPU per VM, placement of every VM.
    Run(RunArgs),
    /// The analytic capacity plan of a scenario: placement, max-min rates with bottlenecks,
    /// busiest links, blast radius. No packets.
    Plan {
        /// The scenario (TOML).
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Write plan.json and report.html (placement, bottlenecks, blast radius) into this
        /// directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Plan every variant of a scenario (`--vary KEY=V1,V2,...`, or its `[sweep]` table) and
    /// tabulate the headline of each: here on every core, as shards (`--shard K/N`), or as a
    /// Slurm job array (`--slurm DIR`) or Kubernetes Indexed Job (`--k8s DIR`) whose parts
    /// `--merge DIR` joins.
    Sweep(sweep::SweepArgs),
    /// Real SR-IOV hardware: list PFs, VFs and IOMMU groups, enable VFs, bind to vfio-pci.
    Lab(lab::LabArgs),
    /// Drive one TX queue pair (submission + completion ring) from a guest thread to a device
    /// thread and report throughput and latency.
    Demo(demo::DemoArgs),
    /// Send frames from one VF to another through the device engine.
    VfDemo(vf_demo::VfDemoArgs),
    /// Why a packet from one VM to another passes the VPC's security groups and network ACLs
    /// or not: the request and its reply through every filter, each with its rule (or the
    /// missing one).
    Why {
        /// The scenario (TOML).
        file: PathBuf,
        /// The sending VM.
        from: String,
        /// The receiving VM.
        to: String,
        /// The destination port.
        port: u16,
        /// `tcp` or `udp`.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// The JSON Schema of a report: `run --json` (and `report.json`), `plan --json` or
    /// `sweep --json` (and `sweep.json`).
    Schema {
        /// Which report.
        #[arg(value_enum)]
        report: SchemaOf,
    },
}

/// The reports that have a schema.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SchemaOf {
    /// `run --json` and `report.json`.
    Run,
    /// `plan --json`.
    Plan,
    /// `sweep --json` and `sweep.json`.
    Sweep,
}

/// The JSON Schema (draft 2020-12) of a report, pretty-printed.
fn schema(of: SchemaOf) -> Result<String, String> {
    let schema = match of {
        SchemaOf::Run => schemars::schema_for!(run::RunReport),
        SchemaOf::Plan => schemars::schema_for!(plan::PlanReport),
        SchemaOf::Sweep => schemars::schema_for!(sweep::SweepTable),
    };
    serde_json::to_string_pretty(&schema).map(|s| s + "\n").map_err(|e| e.to_string())
}

fn run_command(args: &RunArgs) -> Result<String, String> {
    if args.print_default {
        return Ok(DEFAULT_SCENARIO.to_string());
    }
    let (file, placed) = match &args.file {
        Some(path) => (
            path.display().to_string(),
            scenario::load_file_with(path, &args.limits.limits()).map_err(|e| e.to_string())?,
        ),
        None => (
            "scenarios/default.toml (embedded)".to_string(),
            scenario::load("scenarios/default.toml", DEFAULT_SCENARIO)
                .map_err(|e| e.to_string())?,
        ),
    };
    let options =
        run::RunOptions { progress: !args.json, pcap: args.pcap.clone(), live: args.live };
    let report = run::run(&file, &placed, &options).map_err(|e| e.to_string())?;
    let mut out = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n"
    } else {
        report.to_string()
    };
    if let Some(dir) = &args.out {
        let written = report::write_out(dir, &report)?;
        if !args.json {
            out.push_str(&format!("\nwrote {}\n", written.join(", ")));
        }
    }
    Ok(out)
}

fn why(
    file: &Path,
    (from, to, port): (&str, &str, u16),
    protocol: &str,
    limits: &scenario::Limits,
) -> Result<String, String> {
    let proto = match protocol {
        "tcp" => vnic::policy::PROTO_TCP,
        "udp" => vnic::policy::PROTO_UDP,
        other => return Err(format!("--protocol {other}: expected tcp or udp")),
    };
    let placed = scenario::load_file_with(file, limits).map_err(|e| e.to_string())?;
    reach::explain(&placed, from, to, proto, port)
}

/// Plans `file` and writes the report to standard output as it is formatted (a region's JSON
/// is hundreds of MB: it is never held as one string).
fn plan_command(
    file: &Path,
    json: bool,
    out: Option<&Path>,
    limits: &scenario::Limits,
) -> Result<String, String> {
    use std::io::Write as _;
    let r = plan::run_file(file, limits).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let printed = if json {
        serde_json::to_writer_pretty(&mut w, &r)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(w))
    } else {
        write!(w, "{r}")
    };
    printed.and_then(|()| w.flush()).map_err(|e| format!("writing the plan: {e}"))?;
    let mut tail = String::new();
    if let Some(dir) = out {
        let written = report::write_plan_out(dir, &r.scenario, &r)?;
        if !json {
            tail = format!("\nwrote {}\n", written.join(", "));
        }
    }
    Ok(tail)
}

fn main() -> ExitCode {
    hypervisor_sim::process::guest_main();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run(args)) => run_command(&args),
        None => run_command(&cli.run),
        Some(Command::Plan { file, json, out, limits }) => {
            plan_command(&file, json, out.as_deref(), &limits.limits())
        }
        Some(Command::Sweep(args)) => sweep::run(&args),
        Some(Command::Lab(args)) => lab::run(&args),
        Some(Command::Demo(args)) => {
            demo::run(&args).map(|r| r.to_string()).map_err(|e| e.to_string())
        }
        Some(Command::VfDemo(args)) => {
            vf_demo::run(&args).map(|r| r.to_string()).map_err(|e| e.to_string())
        }
        Some(Command::Schema { report }) => schema(report),
        Some(Command::Why { file, from, to, port, protocol, limits }) => {
            why(&file, (&from, &to, port), &protocol, &limits.limits())
        }
    };
    match result {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
