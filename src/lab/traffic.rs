//! `vnic-lab lab traffic`: frames through real virtual functions. One end or both is an Intel
//! 82576 / I350 VF driven by `vnic::igbvf` through VFIO, or a kernel netdev through an
//! `AF_PACKET` socket; the workload is `hypervisor_sim::pair`'s, the one the simulated VFs run
//! (sequence numbers, stamps, byte-exact checks, HdrHistogram latency).
//!
//! `lab check-capture` reads a pcap of the wire (QEMU's `filter-dump`, tcpdump on a real
//! switch port) and checks the flow's frames in it against the same templates.

use std::path::{Path, PathBuf};

use clap::Args;
use hypervisor_sim::pair::{PairFlow, PairReport, Schedule, expected_frame, run_pair};
use hypervisor_sim::traffic::{Endpoint, FlowFrame, TrafficClock, read_stamp};
use serde::Serialize;
use vnic::abi::regs::RegisterSpace as _;
use vnic::frame::MacAddr;
use vnic::igbvf::vfio::VfioBar;
use vnic::igbvf::{IgbVf, IgbVfConfig, MacChoice};
use vnic::nic::QueuePair;
use vnic::vfio::LabRoots;

use super::packet::{PacketSocket, interface_mac, parse_mac};

/// The smallest and largest frame (without FCS) the lab sends.
pub const FRAME_BYTES: std::ops::RangeInclusive<usize> = 60..=1514;
/// The flow's UDP ports.
const PORTS: (u16, u16) = (40_000, 50_000);

/// `lab traffic`.
#[derive(Debug, Args)]
pub struct TrafficArgs {
    /// The sender: a VF's PCI address (bound to vfio-pci), or `netdev:IFNAME`.
    #[arg(long)]
    from: String,
    /// The receiver, likewise.
    #[arg(long)]
    to: String,
    /// The MAC the sending VF must have (default: the one its PF assigned, else 02:76 and
    /// its PCI address).
    #[arg(long)]
    from_mac: Option<String>,
    /// The MAC the receiving VF must have, likewise.
    #[arg(long)]
    to_mac: Option<String>,
    /// Frame sizes in bytes without FCS (60–1514), used in turn frame by frame.
    #[arg(long, value_delimiter = ',', default_value = "60,512,1514")]
    sizes: Vec<usize>,
    /// Frames to send (default 10,000, or all that fall due in `--duration`).
    #[arg(long)]
    frames: Option<u64>,
    /// Stop sending after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Frames per second; without it the sender floods, as fast as the receiver takes them.
    #[arg(long)]
    rate: Option<f64>,
    /// Frames per burst (one doorbell each) when flooding, 1–64.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Descriptors per VF ring (a multiple of 8 from 8 to 4096).
    #[arg(long, default_value_t = 256)]
    depth: u32,
    /// Frames in flight are written off as lost after this long with nothing received, ms.
    #[arg(long, default_value_t = 500)]
    stall_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Write every frame sent and received to this pcap.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Write the latency histogram as .hgrm percentiles here.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Fail unless every frame arrived once, byte for byte, in order.
    #[arg(long)]
    exact: bool,
}

/// `lab check-capture`.
#[derive(Debug, Args)]
pub struct CheckCaptureArgs {
    /// The pcap.
    pcap: PathBuf,
    /// The sender's MAC (a VF's is `lab traffic`'s: 02:76 then its PCI address).
    #[arg(long)]
    from_mac: String,
    /// The receiver's MAC.
    #[arg(long)]
    to_mac: String,
    /// The sizes `lab traffic` used.
    #[arg(long, value_delimiter = ',', default_value = "60,512,1514")]
    sizes: Vec<usize>,
    /// Frames `lab traffic` sent.
    #[arg(long)]
    frames: u64,
    /// Fail unless every frame is in the capture once, byte for byte.
    #[arg(long)]
    exact: bool,
}

/// The MAC `lab traffic` gives a VF: locally administered, from its PCI address, so VFs of
/// different NICs never share one (a stale receive-address entry on one NIC would swallow
/// frames meant for another).
pub fn vf_mac(bdf: &str) -> Result<MacAddr, String> {
    vnic::vfio::check_bdf(bdf).map_err(|e| e.to_string())?;
    let hex = |s: &str| u8::from_str_radix(s, 16).map_err(|e| format!("{bdf}: {e}"));
    let (domain, rest) = bdf.split_once(':').ok_or_else(|| format!("{bdf}: no domain"))?;
    let (bus, rest) = rest.split_once(':').ok_or_else(|| format!("{bdf}: no bus"))?;
    let (dev, func) = rest.split_once('.').ok_or_else(|| format!("{bdf}: no function"))?;
    let domain = u16::from_str_radix(domain, 16).map_err(|e| format!("{bdf}: {e}"))?;
    Ok(MacAddr([0x02, 0x76, domain as u8, hex(bus)?, hex(dev)?, hex(func)?]))
}

/// The flow's frames from `src` to `dst`, one template per size; addresses from the MACs.
pub fn templates(src: MacAddr, dst: MacAddr, sizes: &[usize]) -> Result<Vec<FlowFrame>, String> {
    if sizes.is_empty() {
        return Err("--sizes: give at least one frame size".into());
    }
    if let Some(bad) = sizes.iter().find(|s| !FRAME_BYTES.contains(s)) {
        return Err(format!(
            "--sizes: {bad} bytes is outside {}–{} (Ethernet without FCS at a 1500-byte MTU)",
            FRAME_BYTES.start(),
            FRAME_BYTES.end()
        ));
    }
    let ip = |m: MacAddr| std::net::Ipv4Addr::new(10, m.0[3], m.0[4], m.0[5]);
    let a = Endpoint { mac: src, ip: ip(src), port: PORTS.0 };
    let b = Endpoint { mac: dst, ip: ip(dst), port: PORTS.1 };
    Ok(sizes.iter().map(|&n| FlowFrame::new(a, b, n)).collect())
}

/// One end of the flow, opened.
enum End {
    Vf(Box<IgbVf<VfioBar>>),
    Netdev(PacketSocket),
}

impl End {
    fn queue(&mut self) -> &mut dyn QueuePair {
        match self {
            End::Vf(vf) => vf.as_mut(),
            End::Netdev(s) => s,
        }
    }
}

/// What the report says of one end.
#[derive(Debug, Clone, Serialize)]
pub struct EndReport {
    /// As given.
    pub endpoint: String,
    /// `igbvf` or `netdev`.
    pub kind: &'static str,
    /// Its MAC.
    pub mac: String,
    /// Link as the VF sees it.
    pub link: Option<String>,
    /// Mailbox API version (VFs).
    pub mailbox_api: Option<String>,
    /// Whether the PF assigned the MAC (else the driver asked for it).
    pub mac_assigned_by_pf: Option<bool>,
    /// The driver's queue counters (VFs).
    pub counters: Option<Counters>,
    /// The VF's statistics registers after the run.
    pub device_counters: Option<Counters>,
}

/// Counters by name.
pub type Counters = std::collections::BTreeMap<&'static str, u64>;

fn queue_counters(c: vnic::igbvf::QueueCounters) -> Counters {
    Counters::from([
        ("tx_frames", c.tx_frames),
        ("tx_bytes", c.tx_bytes),
        ("tx_completed", c.tx_completed),
        ("tx_refused", c.tx_refused),
        ("rx_frames", c.rx_frames),
        ("rx_bytes", c.rx_bytes),
        ("rx_errors", c.rx_errors),
        ("rx_malformed", c.rx_malformed),
    ])
}

fn device_counters(d: vnic::igbvf::DeviceCounters) -> Counters {
    Counters::from([
        ("vfgptc", u64::from(d.tx_packets)),
        ("vfgotc", u64::from(d.tx_octets)),
        ("vfgprc", u64::from(d.rx_packets)),
        ("vfgorc", u64::from(d.rx_octets)),
        ("vfmprc", u64::from(d.rx_multicast)),
    ])
}

/// Latency percentiles, ns.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// Median.
    pub p50: u64,
    /// 90th.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// `lab traffic`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficReport {
    /// Sender.
    pub from: EndReport,
    /// Receiver.
    pub to: EndReport,
    /// Sizes used in turn.
    pub sizes: Vec<usize>,
    /// Frames asked for (at most).
    pub frames: u64,
    /// Seconds of sending asked for.
    pub duration_s: Option<f64>,
    /// Frames per second asked for (none: flood).
    pub rate: Option<f64>,
    /// Burst.
    pub burst: usize,
    /// Frames sent.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
    /// Frames lost.
    pub lost: u64,
    /// Frames whose bytes differ.
    pub corrupt: u64,
    /// Frames after a later one.
    pub reordered: u64,
    /// Frames received twice.
    pub duplicates: u64,
    /// Frames on the receiver that were not the flow's.
    pub foreign: u64,
    /// Paced frames dropped behind schedule.
    pub sender_drops: u64,
    /// First frame sent to last received, s.
    pub seconds: f64,
    /// Received frames per second, millions.
    pub mpps: f64,
    /// Received bits per second (frames without FCS), billions.
    pub gbps: f64,
    /// One-way latency.
    pub latency_ns: LatencyReport,
}

fn open_end(
    roots: &LabRoots,
    spec: &str,
    mac: Option<MacAddr>,
    depth: u32,
) -> Result<(End, MacAddr), String> {
    if let Some(ifname) = spec.strip_prefix("netdev:") {
        let mac = interface_mac(&roots.sysfs, ifname).map_err(|e| e.to_string())?;
        let sock = PacketSocket::open(&roots.sysfs, ifname).map_err(|e| e.to_string())?;
        return Ok((End::Netdev(sock), mac));
    }
    let mac = match mac {
        Some(m) => MacChoice::Exactly(m),
        None => MacChoice::PfOr(vf_mac(spec)?),
    };
    let config = IgbVfConfig { depth, ..IgbVfConfig::new(mac) };
    let mut vf =
        vnic::igbvf::vfio::open(roots, spec, config).map_err(|e| format!("{spec}: {e}"))?;
    let link = wait_for_link(&mut vf);
    if !link.up {
        return Err(format!(
            "{spec}: link down (VTSTATUS {:#x}): the PF's port has no link; check its cable or \
             switch port and `ip link show` of the PF's netdev",
            vf.registers().read32(vnic::igbvf::regs::STATUS)
        ));
    }
    let mac = vf.mac();
    Ok((End::Vf(Box::new(vf)), mac))
}

/// Polls VTSTATUS for up to 3 s (a PF brought up just now negotiates its link first).
fn wait_for_link(vf: &mut IgbVf<VfioBar>) -> vnic::igbvf::Link {
    let start = std::time::Instant::now();
    loop {
        let link = vf.link();
        if link.up || start.elapsed() > std::time::Duration::from_secs(3) {
            return link;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn end_report(end: &mut End, spec: &str, mac: MacAddr) -> EndReport {
    match end {
        End::Vf(vf) => {
            let link = vf.link();
            let b = vf.bring_up();
            EndReport {
                endpoint: spec.to_string(),
                kind: "igbvf",
                mac: mac.to_string(),
                link: Some(if link.up {
                    format!(
                        "up {} Mb/s {} duplex",
                        link.speed_mbps,
                        if link.full_duplex { "full" } else { "half" }
                    )
                } else {
                    "down".into()
                }),
                mailbox_api: Some(
                    if b.api == vnic::igbvf::mailbox::api::V2_0 { "2.0" } else { "1.0" }.into(),
                ),
                mac_assigned_by_pf: Some(b.assigned_mac.is_some()),
                counters: Some(queue_counters(vf.counters())),
                device_counters: Some(device_counters(vf.device_counters())),
            }
        }
        End::Netdev(s) => EndReport {
            endpoint: spec.to_string(),
            kind: "netdev",
            mac: mac.to_string(),
            link: None,
            mailbox_api: None,
            mac_assigned_by_pf: None,
            counters: None,
            device_counters: None,
        }
        .with_ifname(s.ifname()),
    }
}

impl EndReport {
    fn with_ifname(mut self, ifname: &str) -> Self {
        self.endpoint = format!("netdev:{ifname}");
        self
    }
}

/// Runs `lab traffic`.
pub fn traffic(roots: &LabRoots, args: &TrafficArgs) -> Result<String, String> {
    if args.from == args.to {
        return Err(format!("--from and --to are both {}: give two different ends", args.from));
    }
    if !(1..=hypervisor_sim::pair::MAX_BURST).contains(&args.burst) {
        return Err(format!(
            "--burst {}: give 1 to {}",
            args.burst,
            hypervisor_sim::pair::MAX_BURST
        ));
    }
    if args.frames == Some(0) {
        return Err("--frames 0: give at least one".into());
    }
    if let Some(d) = args.duration.filter(|d| !(d.is_finite() && *d > 0.0)) {
        return Err(format!("--duration {d}: give seconds above 0"));
    }
    // Check everything the user typed before touching a device.
    if let Some(r) = args.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        return Err(format!("--rate {r}: give frames per second above 0"));
    }
    let frames = match (args.frames, args.duration, args.rate) {
        (Some(n), _, _) => n,
        (None, Some(d), Some(rate)) => (d * rate).ceil().max(1.0) as u64,
        (None, Some(_), None) => u64::MAX,
        (None, None, _) => 10_000,
    };
    for spec in [&args.from, &args.to] {
        if !spec.starts_with("netdev:") {
            vf_mac(spec)?;
        }
    }
    templates(MacAddr::local(0), MacAddr::local(1), &args.sizes)?;
    let mac = |flag: &str, m: &Option<String>| {
        m.as_deref()
            .map(|s| {
                parse_mac(s)
                    .filter(MacAddr::is_unicast_assigned)
                    .ok_or_else(|| format!("{flag} {s}: not a unicast MAC"))
            })
            .transpose()
    };
    let (from_mac, to_mac) = (mac("--from-mac", &args.from_mac)?, mac("--to-mac", &args.to_mac)?);
    let mut capture = match &args.pcap {
        Some(path) => Some(crate::run::Capture::create("lab", path, false)?),
        None => None,
    };
    let (mut tx, src) = open_end(roots, &args.from, from_mac, args.depth)?;
    let (mut rx, dst) = open_end(roots, &args.to, to_mac, args.depth)?;
    let templates = templates(src, dst, &args.sizes)?;
    let clock = TrafficClock::new();
    let schedule = match args.rate {
        None => Schedule::Flood,
        Some(rate) => {
            let interval = (1e9 / rate).max(1.0) as u64;
            let start = clock.now_ns();
            Schedule::Paced(hypervisor_sim::paced::Pacer::new(
                interval,
                start,
                start.saturating_add(interval.saturating_mul(frames)),
                hypervisor_sim::paced::Arrivals::Periodic,
                hypervisor_sim::sim::SplitMix64::new(1, 0),
            ))
        }
    };
    let send_until_ns =
        args.duration.map_or(u64::MAX, |d| clock.now_ns().saturating_add((d * 1e9) as u64));
    let flow = PairFlow {
        templates,
        frames,
        send_until_ns,
        burst: args.burst,
        schedule,
        stall_ns: args.stall_ms.saturating_mul(1_000_000),
    };
    let mut write = |t: u64, f: &[u8]| {
        if let Some(c) = capture.as_mut() {
            c.write(t, f);
        }
    };
    let report = run_pair(tx.queue(), rx.queue(), flow, &clock, Some(&mut write));
    if let Some(c) = capture {
        c.finish();
    }
    let out = summarize(
        args,
        frames,
        end_report(&mut tx, &args.from, src),
        end_report(&mut rx, &args.to, dst),
        &report,
    );
    if let Some(path) = &args.hgrm {
        std::fs::write(path, crate::report::hdr::hgrm(&report.latency))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let text = if args.json {
        serde_json::to_string_pretty(&out).map_err(|e| e.to_string())? + "\n"
    } else {
        render(&out)
    };
    if args.exact && (out.lost > 0 || out.corrupt > 0 || out.duplicates > 0 || out.reordered > 0) {
        return Err(format!(
            "{text}not every frame arrived once, byte for byte, in order (--exact)"
        ));
    }
    Ok(text)
}

fn summarize(
    args: &TrafficArgs,
    frames: u64,
    from: EndReport,
    to: EndReport,
    r: &PairReport,
) -> TrafficReport {
    let secs = r.seconds();
    let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    let h = &r.latency;
    let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
    TrafficReport {
        from,
        to,
        sizes: args.sizes.clone(),
        frames,
        duration_s: args.duration,
        rate: args.rate,
        burst: args.burst,
        sent: r.sent,
        received: r.received,
        lost: r.lost(),
        corrupt: r.corrupt,
        reordered: r.reordered,
        duplicates: r.duplicates,
        foreign: r.foreign,
        sender_drops: r.sender_drops,
        seconds: secs,
        mpps: per_s(r.received as f64) / 1e6,
        gbps: per_s(r.received_bytes as f64 * 8.0) / 1e9,
        latency_ns: LatencyReport {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: if h.is_empty() { 0 } else { h.max() },
            mean: if h.is_empty() { 0.0 } else { h.mean() },
        },
    }
}

fn render(r: &TrafficReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let pace = r.rate.map_or("flood".to_string(), |x| format!("{x} frames/s"));
    let sizes: Vec<String> = r.sizes.iter().map(usize::to_string).collect();
    let _ = writeln!(
        out,
        "lab traffic: {} ({}) -> {} ({}): {} of {} B, burst {}, {pace}",
        r.from.endpoint,
        r.from.mac,
        r.to.endpoint,
        r.to.mac,
        match (r.frames, r.duration_s) {
            (u64::MAX, Some(d)) => format!("frames for {d} s"),
            (n, Some(d)) => format!("{n} frames in at most {d} s"),
            (n, None) => format!("{n} frames"),
        },
        sizes.join("/"),
        r.burst
    );
    for end in [&r.from, &r.to] {
        if let (Some(link), Some(api)) = (&end.link, &end.mailbox_api) {
            let who = if end.mac_assigned_by_pf == Some(true) { "the PF" } else { "the driver" };
            let _ = writeln!(
                out,
                "  {} (igbvf): link {link}, mailbox API {api}, MAC {} chosen by {who}",
                end.endpoint, end.mac
            );
        }
    }
    let _ = writeln!(
        out,
        "  sent {}, received {} in {:.3} s: {:.4} Mpps, {:.4} Gbps",
        r.sent, r.received, r.seconds, r.mpps, r.gbps
    );
    let _ = writeln!(
        out,
        "  lost {}, corrupt {}, reordered {}, duplicates {}, foreign {}, sender drops {}",
        r.lost, r.corrupt, r.reordered, r.duplicates, r.foreign, r.sender_drops
    );
    let l = &r.latency_ns;
    let us = |ns: u64| ns as f64 / 1e3;
    let _ = writeln!(
        out,
        "  one-way latency: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        us(l.p50),
        us(l.p90),
        us(l.p99),
        us(l.p999),
        us(l.max)
    );
    for end in [&r.from, &r.to] {
        if let (Some(c), Some(d)) = (&end.counters, &end.device_counters) {
            let list = |m: &Counters| {
                m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            };
            let _ = writeln!(out, "  {} driver: {}", end.endpoint, list(c));
            let _ = writeln!(out, "  {} VF registers: {}", end.endpoint, list(d));
        }
    }
    out
}

/// What `lab check-capture` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CaptureCheck {
    /// Frames in the capture.
    pub frames: u64,
    /// Frames from the sender to the receiver.
    pub flow_frames: u64,
    /// Of those, byte-exact.
    pub exact: u64,
    /// Of those, with different bytes.
    pub corrupt: u64,
    /// Distinct sequence numbers seen.
    pub distinct: u64,
    /// Frames seen more than once.
    pub duplicates: u64,
}

/// Checks the flow's frames in the pcap at `path`.
pub fn check_capture(
    path: &Path,
    src: MacAddr,
    dst: MacAddr,
    sizes: &[usize],
    frames: u64,
) -> Result<CaptureCheck, String> {
    let templates = templates(src, dst, sizes)?;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{}: not a pcap file: {e}", path.display()))?;
    let mut seen = vec![false; frames as usize];
    let mut check = CaptureCheck::default();
    let mut want = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|e| format!("{}: {e}", path.display()))?;
        let f = &packet.data;
        check.frames += 1;
        if f.len() < 12 || f[..6] != dst.0 || f[6..12] != src.0 {
            continue;
        }
        check.flow_frames += 1;
        let Some((seq, t)) = read_stamp(f).filter(|(s, _)| *s < frames) else {
            check.corrupt += 1;
            continue;
        };
        if expected_frame(&templates, seq, t, &mut want) && want.as_slice() == f.as_ref() {
            check.exact += 1;
        } else {
            check.corrupt += 1;
        }
        if std::mem::replace(&mut seen[seq as usize], true) {
            check.duplicates += 1;
        } else {
            check.distinct += 1;
        }
    }
    Ok(check)
}

/// Runs `lab check-capture`.
pub fn check_capture_command(args: &CheckCaptureArgs) -> Result<String, String> {
    let src = parse_mac(&args.from_mac)
        .ok_or_else(|| format!("--from-mac {}: not a MAC", args.from_mac))?;
    let dst =
        parse_mac(&args.to_mac).ok_or_else(|| format!("--to-mac {}: not a MAC", args.to_mac))?;
    let c = check_capture(&args.pcap, src, dst, &args.sizes, args.frames)?;
    let text = format!(
        "{}: {} frames, {} from {src} to {dst}: {} byte-exact, {} corrupt, {} of {} sequence numbers, {} duplicates\n",
        args.pcap.display(),
        c.frames,
        c.flow_frames,
        c.exact,
        c.corrupt,
        c.distinct,
        args.frames,
        c.duplicates
    );
    if args.exact && (c.distinct != args.frames || c.corrupt > 0 || c.duplicates > 0) {
        return Err(format!(
            "{text}the capture does not hold every frame once, byte for byte (--exact)"
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vf_mac_comes_from_its_pci_address() {
        assert_eq!(vf_mac("0000:01:10.2").unwrap(), MacAddr([0x02, 0x76, 0, 0x01, 0x10, 0x02]));
        assert_ne!(vf_mac("0000:01:10.0").unwrap(), vf_mac("0000:02:10.0").unwrap());
        assert!(vf_mac("01:10.2").is_err());
    }

    #[test]
    fn a_capture_check_counts_exact_corrupt_duplicate_missing_and_foreign_frames() {
        let (a, b) = (vf_mac("0000:01:10.0").unwrap(), vf_mac("0000:02:10.0").unwrap());
        let sizes = [60, 1514];
        let t = templates(a, b, &sizes).unwrap();
        let path = std::env::temp_dir().join(format!("vnic-lab-check-{}.pcap", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let mut w = pcap_file::pcap::PcapWriter::new(file).unwrap();
        let mut put = |f: &[u8]| {
            let p = pcap_file::pcap::PcapPacket::new(std::time::Duration::ZERO, f.len() as u32, f);
            w.write_packet(&p).unwrap();
        };
        let mut f = Vec::new();
        // Frames 0..10 but 4; 7 twice; 9 with a flipped payload byte; one foreign frame.
        for seq in (0..10u64).filter(|&s| s != 4) {
            assert!(expected_frame(&t, seq, 1_000 + seq, &mut f));
            if seq == 9 {
                let last = f.len() - 1;
                f[last] ^= 0x80;
            }
            put(&f);
            if seq == 7 {
                put(&f);
            }
        }
        let other = templates(b, a, &sizes).unwrap();
        put(other[0].bytes());
        drop(w);
        let c = check_capture(&path, a, b, &sizes, 10).unwrap();
        assert_eq!(
            c,
            CaptureCheck {
                frames: 11,
                flow_frames: 10,
                exact: 9,
                corrupt: 1,
                distinct: 9,
                duplicates: 1
            }
        );
        let args = CheckCaptureArgs {
            pcap: path.clone(),
            from_mac: a.to_string(),
            to_mac: b.to_string(),
            sizes: sizes.to_vec(),
            frames: 10,
            exact: true,
        };
        let e = check_capture_command(&args).unwrap_err();
        assert!(e.contains("9 of 10 sequence numbers") && e.contains("--exact"), "{e}");
        std::fs::write(&path, b"not a pcap").unwrap();
        assert!(check_capture(&path, a, b, &sizes, 10).unwrap_err().contains("not a pcap file"));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn sizes_outside_ethernet_are_refused_by_name() {
        let m = MacAddr::local(1);
        assert!(templates(m, m, &[59]).unwrap_err().contains("59 bytes"));
        assert!(templates(m, m, &[1515]).unwrap_err().contains("1515 bytes"));
        assert!(templates(m, m, &[]).is_err());
        let t = templates(m, MacAddr::local(2), &[60, 1514]).unwrap();
        assert_eq!(t.iter().map(|f| f.bytes().len()).collect::<Vec<_>>(), [60, 1514]);
    }
}
