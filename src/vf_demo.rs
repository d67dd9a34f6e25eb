//! The VF-to-VF demo: two virtual functions of one PF, each assigned guest memory with an
//! ENA-style queue pair, and the device engine on its own thread between them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use vnic::affinity::{allowed_cpus, pin_current_thread as pin_to};
use vnic::device::stats::{QueueStatsSnapshot, VfStatsSnapshot};
use vnic::device::{DeviceError, DmaWindow, Iova, PhysicalFunction};
use vnic::driver::{
    AdminDriver, AdminError, DriverError, QueuePairDriver, QueuePairLayout, ethtool_stats,
    format_ethtool,
};
use vnic::frame::build_udp_frame;
use vnic::ring::{RegionError, SharedRegion};

/// Options of the VF-to-VF demo.
#[derive(Debug, Clone, Copy, Args)]
pub struct VfDemoArgs {
    /// Frames to deliver.
    #[arg(long, default_value_t = 5_000_000)]
    pub frames: u64,
    /// Frame length in bytes (60 to 9015).
    #[arg(long, default_value_t = 64)]
    pub frame: usize,
    /// Frames per doorbell.
    #[arg(long, default_value_t = 32)]
    pub burst: usize,
    /// Entries in each ring (a power of two, 256 to 16384, as ENA allows), and as many buffers.
    #[arg(long, default_value_t = 1024)]
    pub depth: u32,
    /// Place VF 0's TX queue in device memory: a low-latency queue (ENA's default layout,
    /// 128-byte entries with the first 96 bytes of each frame inline).
    #[arg(long)]
    pub llq: bool,
    /// Print both VFs' counters as `ethtool -S` lists them for ENA, read through the admin
    /// queue.
    #[arg(long)]
    pub stats: bool,
    /// Pin the guest thread and the engine thread to these two CPUs, `GUEST,ENGINE` (as DPDK's
    /// `-l` pins its lcores); unpinned by default.
    #[arg(long, value_name = "GUEST,ENGINE", value_parser = parse_cpus)]
    pub cpus: Option<(usize, usize)>,
    /// Read every byte of each frame received, as an application would, and compare it with the
    /// frame sent (mismatches are counted): the frames' lines then move from the engine's CPU
    /// to the guest's. By default the receiver takes each frame without touching its bytes, as
    /// testpmd's `rxonly` does.
    #[arg(long)]
    pub read: bool,
}

/// `GUEST,ENGINE`: two CPU numbers.
fn parse_cpus(text: &str) -> Result<(usize, usize), String> {
    let cpu = |s: &str| {
        s.trim().parse::<usize>().map_err(|_| format!("{s:?} is not a CPU number (GUEST,ENGINE)"))
    };
    match text.split_once(',') {
        Some((guest, engine)) => Ok((cpu(guest)?, cpu(engine)?)),
        None => Err(format!("{text:?}: two CPUs, GUEST,ENGINE")),
    }
}

impl Default for VfDemoArgs {
    fn default() -> Self {
        Self {
            frames: 5_000_000,
            frame: 64,
            burst: 32,
            depth: 1024,
            llq: false,
            stats: false,
            cpus: None,
            read: false,
        }
    }
}

/// What can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum VfDemoError {
    /// The device refused a step.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A driver could not be set up.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Guest memory could not be made.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The admin queue refused a step of the bring-up.
    #[error("admin queue: {0}")]
    Admin(#[from] AdminError),
    /// An option is out of range.
    #[error("--{0}")]
    BadOption(&'static str),
    /// Nothing arrived for too long.
    #[error("no frame arrived for 10 s")]
    Stalled,
    /// The engine thread died.
    #[error("the engine thread panicked")]
    EnginePanicked,
    /// `--cpus` named a CPU this process may not run on.
    #[error("--cpus: CPU {cpu} is not one this process may run on (allowed: {allowed:?})")]
    CpuNotAllowed {
        /// The CPU asked for.
        cpu: usize,
        /// The CPUs the process may run on.
        allowed: Vec<usize>,
    },
    /// A thread could not be pinned.
    #[error("pinning a thread to CPU {cpu}: {source}")]
    Pin {
        /// The CPU.
        cpu: usize,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// What the demo measured.
#[derive(Debug)]
pub struct VfDemoReport {
    args: VfDemoArgs,
    elapsed: Duration,
    received: u64,
    /// Frames received whose bytes differ from the frame sent (counted with `--read` only).
    mismatched: u64,
    sender: (QueueStatsSnapshot, VfStatsSnapshot),
    receiver: (QueueStatsSnapshot, VfStatsSnapshot),
    /// Each VF's `ethtool -S` lines, if asked for.
    ethtool: Vec<Vec<(String, u64)>>,
}

impl fmt::Display for VfDemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let mpps = self.received as f64 / secs / 1e6;
        let gbps = self.received as f64 * self.args.frame as f64 * 8.0 / secs / 1e9;
        let (tx, txv) = self.sender;
        let (rx, _) = self.receiver;
        writeln!(
            f,
            "vnic-lab SR-IOV demo (VF 0 -> embedded switch -> VF 1, device engine on its own thread)"
        )?;
        let tx_ring = if self.args.llq { "VF 0 TX in device memory (LLQ)" } else { "host-placed" };
        writeln!(
            f,
            "  {}-byte frames, burst {}, rings of {}, {tx_ring}",
            self.args.frame, self.args.burst, self.args.depth
        )?;
        if let Some((guest, engine)) = self.args.cpus {
            writeln!(f, "  guest thread on CPU {guest}, engine thread on CPU {engine}")?;
        }
        if self.args.read {
            writeln!(
                f,
                "  the receiver reads every byte of each frame: {} differ from the frame sent",
                self.mismatched
            )?;
        }
        writeln!(f, "  received {} frames: {mpps:.2} Mpps, {gbps:.2} Gbps", self.received)?;
        writeln!(
            f,
            "  VF 0: tx_packets {} tx_bytes {} tx_bad_desc {} tx_spoofed {}",
            tx.tx_packets, tx.tx_bytes, tx.tx_bad_desc, txv.tx_spoofed
        )?;
        writeln!(
            f,
            "  VF 1: rx_packets {} rx_bytes {} rx_drops {}",
            rx.rx_packets, rx.rx_bytes, rx.rx_drops
        )?;
        for (vf, lines) in self.ethtool.iter().enumerate() {
            write!(f, "\nethtool -S (VF {vf})\n{}", format_ethtool(lines))?;
        }
        Ok(())
    }
}

/// Runs the demo.
pub fn run(args: &VfDemoArgs) -> Result<VfDemoReport, VfDemoError> {
    if !(60..=9015).contains(&args.frame) {
        return Err(VfDemoError::BadOption("frame must be 60 to 9015 bytes"));
    }
    if !(1..=128).contains(&args.burst) {
        return Err(VfDemoError::BadOption("burst must be 1 to 128"));
    }
    if !args.depth.is_power_of_two() || !(256..=16384).contains(&args.depth) {
        return Err(VfDemoError::BadOption("depth must be a power of two, 256 to 16384"));
    }
    if let Some((guest, engine)) = args.cpus {
        let allowed = allowed_cpus().map_err(|source| VfDemoError::Pin { cpu: guest, source })?;
        if let Some(&cpu) = [guest, engine].iter().find(|c| !allowed.contains(c)) {
            return Err(VfDemoError::CpuNotAllowed { cpu, allowed });
        }
    }
    let mut pf = PhysicalFunction::new(8)?;
    pf.set_num_vfs(2)?;
    let buf = if args.frame > 2048 { 9216 } else { 2048 };
    let layout = QueuePairLayout::with_buffers(0, args.depth, buf, buf);
    let mut drivers = Vec::new();
    let mut admins = Vec::new();
    for vf in 0..2u16 {
        // Each VF is brought up as ENA's driver brings one up: through its registers and admin
        // queue (the admin memory after the queue pair's).
        let memory = Arc::new(SharedRegion::anonymous(layout.end + AdminDriver::BYTES + 128)?);
        let window = DmaWindow::new(memory, Iova(0x1_0000_0000 * u64::from(vf + 1)));
        pf.assign(vf, window.clone())?;
        let mut regs = pf.registers(vf)?;
        let mut admin = AdminDriver::bring_up(window.clone(), layout.end, &mut regs)?;
        admin.set_feature(&mut regs, vnic::abi::admin::SetFeature::Mtu(9001))?;
        let mut driver = QueuePairDriver::create(window, layout)?;
        if args.llq && vf == 0 {
            admin.configure_llq(&mut regs, 128)?;
            let bar = pf.llq_bar(vf)?;
            let mut regs = pf.registers(vf)?;
            admin.create_queue_pair_llq(&mut regs, &mut driver, bar, 128)?;
        } else {
            admin.create_queue_pair(&mut regs, &driver)?;
        }
        driver.refill_rx();
        drivers.push(driver);
        admins.push(admin);
    }
    let (dst, src) = (pf.port(1)?.mac, pf.port(0)?.mac);
    let mut frame = vec![0u8; args.frame];
    build_udp_frame(
        &mut frame,
        args.frame,
        dst,
        src,
        ([10, 0, 0, 1], [10, 0, 0, 2]),
        (40000, 9000),
    );
    let stats = |pf: &PhysicalFunction, vf| pf.vf(vf).map(|v| v.totals());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let engine_cpu = args.cpus.map(|(_, engine)| engine);
    let engine = std::thread::spawn(move || {
        let pinned = engine_cpu.map(|cpu| pin_to(cpu).map_err(|e| (cpu, e))).transpose();
        if pinned.is_ok() {
            pf.run(&flag);
        }
        (pf, pinned)
    });
    if let Some((guest, _)) = args.cpus
        && let Err(source) = pin_to(guest)
    {
        stop.store(true, Ordering::Relaxed);
        let _ = engine.join();
        return Err(VfDemoError::Pin { cpu: guest, source });
    }
    let mut rx = drivers.pop().ok_or(VfDemoError::BadOption("no receiver"))?;
    let mut tx = drivers.pop().ok_or(VfDemoError::BadOption("no sender"))?;
    let frames = vec![frame.as_slice(); args.burst];
    let start = Instant::now();
    let mut received = 0u64;
    let mut mismatched = 0u64;
    let mut last = Instant::now();
    let mut idle = 0u32;
    let mut result = Ok(());
    while received < args.frames {
        tx.reap_tx();
        tx.send_burst(&frames);
        let n = if args.read {
            rx.recv(|got, _| mismatched += u64::from(got != frame.as_slice()))
        } else {
            rx.recv(|_, _| {})
        } as u64;
        received += n;
        if n > 0 {
            idle = 0;
        } else {
            if idle == 0 {
                last = Instant::now();
            }
            idle += 1;
            if idle.is_multiple_of(1 << 16) && last.elapsed() > Duration::from_secs(10) {
                result = Err(VfDemoError::Stalled);
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut pf, pinned) = engine.join().map_err(|_| VfDemoError::EnginePanicked)?;
    pinned.map_err(|(cpu, source)| VfDemoError::Pin { cpu, source })?;
    result?;
    let mut ethtool = Vec::new();
    if args.stats {
        for (vf, admin) in admins.iter_mut().enumerate() {
            let vf = vf as u16;
            let queues: Vec<QueueStatsSnapshot> = {
                let v = pf.vf(vf)?;
                (0..v.queue_count())
                    .filter_map(|q| v.queue_stats(q))
                    .map(|s| s.snapshot())
                    .collect()
            };
            let mut regs = pf.registers(vf)?;
            let basic = admin.basic_stats(&mut regs)?;
            let eni = admin.eni_stats(&mut regs)?;
            ethtool.push(ethtool_stats(&basic, &eni, &queues));
        }
    }
    Ok(VfDemoReport {
        args: *args,
        elapsed,
        received,
        mismatched,
        sender: stats(&pf, 0)?,
        receiver: stats(&pf, 1)?,
        ethtool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_flow_from_vf_to_vf_and_are_counted() {
        let args = VfDemoArgs { frames: 20_000, frame: 1500, burst: 8, ..Default::default() };
        let report = run(&args).unwrap();
        assert!(report.received >= 20_000);
        assert!(
            report.receiver.0.rx_packets >= report.received,
            "the engine counts what it delivered"
        );
        assert_eq!(report.sender.0.tx_bad_desc, 0);
        assert!(report.to_string().contains("Mpps"));
        assert!(run(&VfDemoArgs { frame: 10, ..Default::default() }).is_err());
    }

    #[test]
    fn rings_of_any_depth_ena_allows_carry_frames_and_others_are_refused() {
        for depth in [256, 4096] {
            let args = VfDemoArgs { frames: 10_000, depth, ..Default::default() };
            let report = run(&args).unwrap();
            assert!(report.received >= 10_000);
            assert!(report.to_string().contains(&format!("rings of {depth}")));
        }
        for depth in [0, 128, 1000, 32768] {
            match run(&VfDemoArgs { depth, ..Default::default() }) {
                Err(VfDemoError::BadOption(why)) => assert!(why.contains("depth"), "{why}"),
                other => panic!("depth {depth}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_reading_receiver_gets_every_frame_byte_for_byte() {
        for frame in [64, 1500, 9000] {
            let args = VfDemoArgs { frames: 5_000, frame, read: true, ..Default::default() };
            let report = run(&args).unwrap();
            assert!(report.received >= 5_000);
            assert_eq!(report.mismatched, 0, "{frame} B");
            assert!(report.to_string().contains("0 differ from the frame sent"));
        }
    }

    #[test]
    fn an_llq_sender_delivers_and_its_counters_read_as_ethtool_lists_them() {
        let args = VfDemoArgs { frames: 20_000, llq: true, stats: true, ..Default::default() };
        let report = run(&args).unwrap();
        assert!(report.received >= 20_000);
        assert_eq!(report.sender.0.tx_bad_desc, 0);
        let text = report.to_string();
        assert!(text.contains("LLQ"));
        let count = |vf: usize, name: &str| {
            report.ethtool[vf].iter().find(|(n, _)| n == name).map(|(_, v)| *v)
        };
        // What the sender's queue 0 counted, in ethtool's name, equals the device's total.
        assert_eq!(count(0, "queue_0_tx_cnt"), Some(report.sender.0.tx_packets));
        assert_eq!(count(0, "queue_0_tx_bytes"), Some(64 * report.sender.0.tx_packets));
        assert_eq!(count(1, "queue_0_rx_cnt"), Some(report.receiver.0.rx_packets));
        assert_eq!(count(0, "bw_out_allowance_exceeded"), Some(0));
        assert!(text.contains("NIC statistics:\n     rx_drops: "));
    }

    #[test]
    fn cpus_are_two_numbers_the_process_may_run_on() {
        assert_eq!(parse_cpus("0,1"), Ok((0, 1)));
        assert_eq!(parse_cpus(" 3 , 2"), Ok((3, 2)));
        assert!(parse_cpus("0").unwrap_err().contains("GUEST,ENGINE"));
        assert!(parse_cpus("0,x").unwrap_err().contains("\"x\" is not a CPU number"));
        let far = libc::CPU_SETSIZE as usize - 1;
        let args = VfDemoArgs { frames: 1000, cpus: Some((0, far)), ..Default::default() };
        match run(&args) {
            Err(VfDemoError::CpuNotAllowed { cpu, .. }) if cpu == far => {}
            other => panic!("expected CpuNotAllowed for CPU {far}, got {other:?}"),
        }
    }

    #[test]
    fn a_pinned_run_says_where_its_threads_ran() {
        // In a thread of its own: pinning is the calling thread's.
        let allowed = allowed_cpus().unwrap();
        let cpus = (allowed[0], allowed[allowed.len() - 1]);
        let args = VfDemoArgs { frames: 20_000, cpus: Some(cpus), ..Default::default() };
        let report = std::thread::spawn(move || run(&args)).join().unwrap().unwrap();
        assert!(report.received >= 20_000);
        let line = format!("guest thread on CPU {}, engine thread on CPU {}", cpus.0, cpus.1);
        assert!(report.to_string().contains(&line));
    }
}
