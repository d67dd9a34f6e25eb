//! `vnic-lab`: the command line of the vnic-lab workspace.
//!
//! Until the scenario runner exists, running it with no arguments runs the queue-pair demo: a
//! guest driver thread and a device thread exchange ENA TX descriptors and TX completions through
//! a submission ring and a completion ring in one shared-memory region, and the demo reports
//! descriptors per second and submit-to-completion latency percentiles (hdrhistogram).

mod demo;

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
    /// thread and report throughput and latency. This is what runs with no arguments.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Demo(args)) => demo::run(&args),
        None => demo::run(&demo::DemoArgs::default()),
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
