//! EFA's OS bypass against the ENA kernel path, message sizes 8 B to 8 KiB, two VMs.
//!
//! EFA: each VM's application posts SRD sends and receives straight to its queue pair's rings
//! and polls its completion queue; one device engine thread serves both EFA devices (a lossless
//! single-path fabric, no added delay). ENA: the same two VMs' kernel-style drivers over SR-IOV
//! VFs of one PF (`hypervisor_sim::workload::run_pair`), each message one UDP frame (42 bytes of
//! headers, 60 at least). Both: three threads (sender, receiver, engine) on whatever cores the
//! machine has. Throughput: as fast as a 256-message window allows. Latency: 20,000 messages/s
//! paced, stamped with their due time (corrected for coordinated omission), one way.
//!
//! `cargo bench --bench efa` (`EFA_SECONDS` sets the 1 s per run).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hypervisor_sim::cloud::{Cloud, CloudSpec, HostSpec, VmSpec};
use hypervisor_sim::eni::Subnet;
use hypervisor_sim::placement::{InstanceType, NetworkModel};
use hypervisor_sim::traffic::TrafficClock;
use hypervisor_sim::vnic::device::{DmaWindow, Iova};
use hypervisor_sim::vnic::efa::*;
use hypervisor_sim::vnic::ring::SharedRegion;
use hypervisor_sim::workload::{PairConfig, run_pair};

const MB: u64 = 1 << 20;
const BASE: u64 = 0x1_0000_0000;
const SLOT: u64 = EFA_MTU as u64;
const WINDOW: u32 = 256;

struct Side {
    window: DmaWindow,
    ep: EfaEndpoint,
    mr: MemoryRegion,
}

struct EfaResult {
    msgs: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    hypervisor_sim::traffic::latency_histogram()
}

fn efa_run(size: usize, duration: Duration, pps: Option<u64>) -> Result<EfaResult, String> {
    let fabric = SrdFabric::new(1, 0, 0, 0.0, 1);
    let group = SecurityGroup { id: "sg".into(), self_inbound_all: true, self_outbound_all: true };
    let make = || -> Result<(EfaDevice, Side), String> {
        let region =
            Arc::new(SharedRegion::anonymous((8 * MB) as usize).map_err(|e| e.to_string())?);
        let window = DmaWindow::new(region.clone(), Iova(BASE));
        let mut dev = EfaDevice::new(window.clone(), "a", &group, fabric.clone())
            .map_err(|e| e.to_string())?;
        let pd = dev.alloc_pd();
        let ep = EfaEndpoint::create(&region, &mut dev, pd, QpKind::Srd, QpLayout::new(0, 1024))
            .map_err(|e| e.to_string())?;
        let mr =
            dev.register(pd, BASE + MB, 6 * MB, access::LOCAL_WRITE).map_err(|e| e.to_string())?;
        Ok((dev, Side { window, ep, mr }))
    };
    let (mut dev_a, mut a) = make()?;
    let (mut dev_b, mut b) = make()?;
    let ah = dev_a.create_ah(0, dev_b.addr()).map_err(|e| e.to_string())?;
    let b_qpn = b.ep.qpn;
    let clock = TrafficClock::new();
    let stop = Arc::new(AtomicBool::new(false));
    let engine_stop = stop.clone();
    let engine = std::thread::spawn(move || {
        let mut idle = 0u32;
        while !engine_stop.load(Ordering::Relaxed) {
            let now = clock.now_ns();
            let work = dev_a.poll(now) + dev_b.poll(now);
            idle = if work == 0 { idle + 1 } else { 0 };
            if idle > 64 {
                std::thread::yield_now();
            }
        }
    });
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (rx_count, rx_done) = (received.clone(), done.clone());
    let receiver = std::thread::spawn(move || {
        let mut latency = histogram();
        for k in 0..512u32 {
            b.ep.post_recv(recv_wqe(k, &b.mr, Iova(BASE + MB + u64::from(k) * SLOT), SLOT as u32));
        }
        let mut cqes = [Cqe::default(); 64];
        let mut last = Instant::now();
        loop {
            let n = b.ep.poll_cq(&mut cqes);
            let now = clock.now_ns();
            for c in &cqes[..n] {
                let at = BASE + MB + u64::from(c.wr_id) * SLOT;
                let mut stamp = [0u8; 8];
                if b.window.read(at, &mut stamp).is_ok() {
                    let _ = latency.record(now.saturating_sub(u64::from_le_bytes(stamp)).max(1));
                }
                b.ep.post_recv(recv_wqe(c.wr_id, &b.mr, Iova(at), SLOT as u32));
            }
            if n > 0 {
                rx_count.fetch_add(n as u64, Ordering::Release);
                last = Instant::now();
            } else if rx_done.load(Ordering::Acquire) && last.elapsed() > Duration::from_millis(200)
            {
                break;
            } else {
                std::thread::yield_now();
            }
        }
        (latency, last)
    });
    // The sender: a free list of 256 buffers, each reused once its send completed.
    let mut free: Vec<u32> = (0..WINDOW).collect();
    let mut cqes = [Cqe::default(); 64];
    let (mut sent, start) = (0u64, Instant::now());
    let interval = pps.map(|p| 1_000_000_000 / p.max(1));
    let mut next_due = clock.now_ns();
    let len = size.max(8) as u32;
    while start.elapsed() < duration {
        let n = a.ep.poll_cq(&mut cqes);
        for c in &cqes[..n] {
            free.push(c.wr_id);
        }
        let now = clock.now_ns();
        if interval.is_some_and(|_| now < next_due) {
            std::thread::yield_now();
            continue;
        }
        let Some(slot) = free.pop() else {
            std::thread::yield_now();
            continue;
        };
        let at = Iova(BASE + MB + u64::from(slot) * SLOT);
        let stamp = if interval.is_some() { next_due } else { now };
        let _ = a.window.write(at.0, &stamp.to_le_bytes());
        if a.ep.post_send(send_wqe(slot, ah, b_qpn, &a.mr, at, len)) {
            sent += 1;
            if let Some(iv) = interval {
                next_due += iv;
            }
        } else {
            free.push(slot);
        }
    }
    done.store(true, Ordering::Release);
    let (latency, last) = receiver.join().map_err(|_| "receiver panicked".to_string())?;
    stop.store(true, Ordering::Relaxed);
    engine.join().map_err(|_| "engine panicked".to_string())?;
    let msgs = received.load(Ordering::Acquire);
    if msgs < sent {
        return Err(format!("EFA lost messages: sent {sent}, received {msgs}"));
    }
    Ok(EfaResult { msgs, elapsed: last.saturating_duration_since(start), latency })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: f64 =
        std::env::var("EFA_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let duration = Duration::from_secs_f64(seconds);
    let Some(ty) = InstanceType::catalog().into_iter().find(|t| t.name == "c5n.18xlarge") else {
        eprintln!("efa: c5n.18xlarge is missing from the catalog");
        std::process::exit(1);
    };
    let spec = CloudSpec {
        hosts: vec![HostSpec::new("host0", "az-a", 0, 512, 8)],
        subnets: vec![Subnet {
            name: "a".into(),
            az: "az-a".into(),
            network: [10, 0, 0, 0].into(),
            prefix: 24,
        }],
        network: NetworkModel::default(),
        link_gbps: 100.0,
    };
    let mut cloud = match Cloud::new(spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("efa: {e}");
            std::process::exit(1);
        }
    };
    let mut launch = |name: &str| {
        let mut s = VmSpec::new(name, 0, ty.clone(), "a");
        s.mtu = 9001;
        cloud.launch(s)
    };
    let (Ok(a), Ok(b)) = (launch("a"), launch("b")) else {
        eprintln!("efa: could not launch the VMs");
        std::process::exit(1);
    };
    println!(
        "| message | EFA msgs/s | ENA msgs/s | EFA p50 | EFA p99 | EFA p99.9 | ENA p50 | ENA p99 | ENA p99.9 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for size in [8usize, 64, 512, 1024, 4096, 8192] {
        let efa_t = efa_run(size, duration, None);
        let efa_l = efa_run(size, duration, Some(20_000));
        let frame = (size + 42).max(60);
        let throughput = PairConfig {
            frame_len: frame,
            burst: 32,
            duration,
            offered_pps: None,
            flows: 1,
            window: Some(u64::from(WINDOW)),
        };
        let latency = PairConfig { offered_pps: Some(20_000), window: None, ..throughput };
        let ena_t = run_pair(&mut cloud, a, b, throughput);
        let ena_l = run_pair(&mut cloud, a, b, latency);
        match (efa_t, efa_l, ena_t, ena_l) {
            (Ok(et), Ok(el), Ok(nt), Ok(nl)) => {
                let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
                println!(
                    "| {size} B | {:.0} | {:.0} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
                    et.msgs as f64 / et.elapsed.as_secs_f64().max(1e-9),
                    nt.mpps() * 1e6,
                    us(&el.latency, 0.5),
                    us(&el.latency, 0.99),
                    us(&el.latency, 0.999),
                    nl.latency_us(50.0),
                    nl.latency_us(99.0),
                    nl.latency_us(99.9),
                );
            }
            (e1, e2, e3, e4) => {
                eprintln!(
                    "efa: {size} B: {:?} {:?} {:?} {:?}",
                    e1.err(),
                    e2.err(),
                    e3.err().map(|e| e.to_string()),
                    e4.err().map(|e| e.to_string())
                );
                std::process::exit(1);
            }
        }
    }
}
