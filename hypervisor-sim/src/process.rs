//! Process mode: a VM as its own OS process, attached to the same guest memory.
//!
//! The hypervisor launches the VM with its guest memory in a file (`VmSpec::shared_file`), lays
//! out every queue pair's rings and lets the device attach to them, then starts a process (the
//! [`ProcessLauncher`]'s program, usually the running binary) with a [`GuestProcessSpec`] in the
//! `VNIC_LAB_GUEST` environment variable. That program calls [`guest_main`] first thing: it maps
//! the file, attaches the guest driver's ends of the rings (the rings are process-shared, with
//! offsets rather than pointers), runs the built-in [`ProcessWorkload`] and exits. Killing the
//! process is a VM crash: the hypervisor notices on its next reap and resets the VFs.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vnic::device::{DmaWindow, Iova};
use vnic::driver::{QueuePairDriver, QueuePairLayout};
use vnic::frame::MacAddr;
use vnic::ring::SharedRegion;

use crate::traffic::{Endpoint, FlowFrame, TrafficClock, reflect};

/// The environment variable that carries a guest process's spec.
pub const GUEST_ENV: &str = "VNIC_LAB_GUEST";

/// What a guest process runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessWorkload {
    /// Sends every frame it receives back to its sender, for `seconds`.
    Echo {
        /// How long.
        seconds: f64,
    },
    /// Sends `frames` stamped frames of `len` bytes to `dst_mac`/`dst_ip`, then exits.
    Source {
        /// Destination MAC.
        dst_mac: [u8; 6],
        /// Destination address.
        dst_ip: Ipv4Addr,
        /// Frames.
        frames: u64,
        /// Frame length.
        len: usize,
    },
}

/// One NIC as the guest process attaches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicLayout {
    /// MAC.
    pub mac: [u8; 6],
    /// Primary address.
    pub ip: Ipv4Addr,
    /// Per queue pair: (offset, depth, TX buffer, RX buffer).
    pub queues: Vec<(usize, u32, usize, usize)>,
}

/// Everything a guest process needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestProcessSpec {
    /// The guest memory file.
    pub memory: PathBuf,
    /// Guest-physical address of its first byte.
    pub base: u64,
    /// NICs by device index.
    pub nics: Vec<NicLayout>,
    /// What to run.
    pub workload: ProcessWorkload,
}

/// How to start a guest process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessLauncher {
    /// The program (it must call [`guest_main`] first).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl ProcessLauncher {
    /// The running binary, with `args`.
    pub fn current_exe(args: &[&str]) -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            args: args.iter().map(|a| a.to_string()).collect(),
        })
    }

    /// Starts a guest process.
    pub fn spawn(&self, spec: &GuestProcessSpec) -> std::io::Result<Child> {
        let json = serde_json::to_string(spec).map_err(std::io::Error::other)?;
        Command::new(&self.program)
            .args(&self.args)
            .env(GUEST_ENV, json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
    }
}

/// If this process was started as a guest, runs it and exits (status 0 when the workload
/// finished, 2 when its spec or memory was unusable); otherwise returns at once.
pub fn guest_main() {
    let Ok(json) = std::env::var(GUEST_ENV) else { return };
    let code = match run_guest(&json) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vnic-lab guest: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn run_guest(json: &str) -> Result<(), String> {
    let spec: GuestProcessSpec =
        serde_json::from_str(json).map_err(|e| format!("bad {GUEST_ENV}: {e}"))?;
    let region = SharedRegion::open(&spec.memory)
        .map_err(|e| format!("guest memory {}: {e}", spec.memory.display()))?;
    let window = DmaWindow::new(Arc::new(region), Iova(spec.base));
    let nic = spec.nics.first().ok_or("the VM has no NIC")?;
    let &(offset, depth, tx_buf, rx_buf) = nic.queues.first().ok_or("the NIC has no queue")?;
    let layout = QueuePairLayout::with_buffers(offset, depth, tx_buf, rx_buf);
    let mut driver = QueuePairDriver::attach(window, layout).map_err(|e| e.to_string())?;
    driver.refill_rx();
    match spec.workload {
        ProcessWorkload::Echo { seconds } => {
            let until = Instant::now() + Duration::from_secs_f64(seconds.max(0.0));
            let mut frames: Vec<Vec<u8>> = Vec::new();
            while Instant::now() < until {
                frames.clear();
                driver.recv(|frame, _| {
                    let mut f = frame.to_vec();
                    reflect(&mut f);
                    frames.push(f);
                });
                let mut sent = 0;
                while sent < frames.len() && Instant::now() < until {
                    driver.reap_tx();
                    let refs: Vec<&[u8]> = frames[sent..].iter().map(Vec::as_slice).collect();
                    sent += driver.send_burst(&refs);
                }
                if frames.is_empty() {
                    std::thread::yield_now();
                }
            }
        }
        ProcessWorkload::Source { dst_mac, dst_ip, frames, len } => {
            let clock = TrafficClock::new();
            let src = Endpoint { mac: MacAddr(nic.mac), ip: nic.ip, port: 7000 };
            let dst = Endpoint { mac: MacAddr(dst_mac), ip: dst_ip, port: 7000 };
            let mut frame = FlowFrame::new(src, dst, len);
            let mut seq = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            while seq < frames && Instant::now() < deadline {
                driver.reap_tx();
                if driver.send_burst(&[frame.stamped(seq, clock.now_ns())]) == 1 {
                    seq += 1;
                }
            }
        }
    }
    Ok(())
}
