//! `vnic-lab`: the command line of the vnic-lab workspace.
//!
//! Until the scenario runner exists, running it with no arguments runs two demos: the queue-pair
//! demo (a guest driver thread and a device thread exchange ENA TX descriptors and TX completions
//! through a submission ring and a completion ring in one shared-memory region; descriptors per
//! second and submit-to-completion latency percentiles from hdrhistogram), then the SR-IOV demo
//! (frames from VF 0 to VF 1 through the embedded switch and the device engine; frames per
//! second and the VFs' counters).

mod demo;
mod plan;
mod vf_demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A software SR-IOV / ENA-style virtual NIC, the VMs that drive it, and the benchmarks that
/// measure it.
#[derive(Debug, Parser)]
#[command(name = "vnic-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive one TX queue pair (submission + completion ring) from a guest thread to a device
    /// thread and report throughput and latency. Runs first with no arguments.
    Demo(demo::DemoArgs),
    /// Send frames from one VF to another through the device engine. Runs second with no
    /// arguments.
    VfDemo(vf_demo::VfDemoArgs),
    /// The analytic capacity plan of a scenario: placement, max-min rates with bottlenecks,
    /// busiest links, blast radius. No packets.
    Plan {
        /// The scenario (TOML).
        file: std::path::PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Demo(args)) => {
            demo::run(&args).map(|r| r.to_string()).map_err(|e| e.to_string())
        }
        Some(Command::VfDemo(args)) => {
            vf_demo::run(&args).map(|r| r.to_string()).map_err(|e| e.to_string())
        }
        Some(Command::Plan { file, json }) => {
            plan::run_file(&file).map_err(|e| e.to_string()).and_then(|r| {
                if json {
                    serde_json::to_string_pretty(&r).map(|s| s + "\n").map_err(|e| e.to_string())
                } else {
                    Ok(r.to_string())
                }
            })
        }
        None => demo::run(&demo::DemoArgs::default()).map_err(|e| e.to_string()).and_then(|ring| {
            let vf = vf_demo::run(&vf_demo::VfDemoArgs::default()).map_err(|e| e.to_string())?;
            Ok(format!("{ring}\n{vf}"))
        }),
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
