//! The control plane with traffic running: ENI rules, an empty VF pool, VMs killed mid-traffic
//! while a neighbour loses nothing, and a VM in its own process.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hypervisor_sim::cloud::{Cloud, CloudError, CloudSpec, HostSpec, VmExit, VmSpec};
use hypervisor_sim::eni::{EniError, EniSpec, Subnet, VmId};
use hypervisor_sim::guest::{GuestCtx, IoPath};
use hypervisor_sim::placement::{InstanceType, NetworkModel};
use hypervisor_sim::process::{ProcessLauncher, ProcessWorkload, guest_main};
use hypervisor_sim::traffic::{Endpoint, FlowFrame, read_stamp};

fn instance() -> InstanceType {
    InstanceType::catalog().into_iter().find(|t| t.name == "c5n.large").unwrap()
}

fn cloud(vfs: u16) -> Cloud {
    let subnet = |name: &str, az: &str, third: u8| Subnet {
        name: name.into(),
        az: az.into(),
        network: Ipv4Addr::new(10, 0, third, 0),
        prefix: 24,
    };
    Cloud::new(CloudSpec {
        hosts: vec![HostSpec::new("h0", "az-a", 0, 64, vfs)],
        subnets: vec![subnet("a", "az-a", 0), subnet("b", "az-b", 1)],
        network: NetworkModel::default(),
        link_gbps: 100.0,
    })
    .unwrap()
}

fn launch(c: &mut Cloud, name: &str) -> VmId {
    let mut spec = VmSpec::new(name, 0, instance(), "a");
    spec.ring_depth = 256;
    c.launch(spec).unwrap()
}

fn endpoint(c: &Cloud, vm: VmId, port: u16) -> Endpoint {
    let e = &c.enis().enis_of(vm)[0];
    Endpoint { mac: e.mac, ip: e.primary_ip, port }
}

/// Waits until `done` or 10 s.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A receiving workload: counts frames (on any NIC, hot-plugged ones included) into `count`.
fn sink(count: Arc<AtomicU64>) -> impl FnOnce(&mut GuestCtx) + Send + 'static {
    move |ctx| {
        while !ctx.should_stop() {
            ctx.poll_hotplug();
            let mut n = 0;
            for nic in &mut ctx.nics {
                n += nic.recv(|_| {});
            }
            count.fetch_add(n as u64, Ordering::Relaxed);
            if n == 0 {
                std::thread::yield_now();
            }
        }
    }
}

/// A sending workload: `frames` copies of `frame` from its first NIC, then it returns.
fn source(frame: Vec<u8>, frames: u64) -> impl FnOnce(&mut GuestCtx) + Send + 'static {
    move |ctx| {
        let mut sent = 0;
        while sent < frames && !ctx.should_stop() {
            sent += ctx.nics[0].send(0, &[&frame]) as u64;
            std::thread::yield_now();
        }
        // Let the last completions come back.
        std::thread::sleep(Duration::from_millis(20));
        ctx.nics[0].send(0, &[]);
    }
}

fn reap_all(c: &mut Cloud, vms: &[VmId]) -> Vec<(VmId, VmExit)> {
    let mut ended = Vec::new();
    assert!(wait_until(|| {
        ended.extend(c.reap());
        vms.iter().all(|vm| ended.iter().any(|(v, _)| v == vm))
    }));
    ended
}

#[test]
fn eni_rules_hold_with_devices_behind_them() {
    let mut c = cloud(8);
    let a = launch(&mut c, "a");
    let b = launch(&mut c, "b");
    let primary = c.enis().enis_of(a)[0].id;
    assert!(matches!(c.detach_eni(primary), Err(CloudError::Eni(EniError::PrimaryDetach(_)))));
    let other_az =
        c.create_eni(&EniSpec { subnet: "b".into(), ..Default::default() }, IoPath::SrIov);
    let other_az = other_az.unwrap();
    assert!(matches!(c.attach_eni(other_az, a, 1), Err(CloudError::Eni(EniError::OtherAz { .. }))));

    // A secondary ENI moves from a to b, keeping MAC and address; traffic follows it.
    let spec = EniSpec { subnet: "a".into(), ..Default::default() };
    let moving = c.create_eni(&spec, IoPath::SrIov).unwrap();
    let (mac, ip) = {
        let e = c.enis().eni(moving).unwrap();
        (e.mac, e.primary_ip)
    };
    let free = c.free_vfs(0).unwrap();
    c.attach_eni(moving, a, 1).unwrap();
    assert_eq!(c.free_vfs(0).unwrap(), free - 1, "attaching takes a VF");
    assert_eq!(c.detach_eni(moving).unwrap(), a);
    assert_eq!(c.free_vfs(0).unwrap(), free, "detaching gives it back");
    let got = Arc::new(AtomicU64::new(0));
    c.run(b, sink(got.clone())).unwrap();
    c.attach_eni(moving, b, 1).unwrap(); // hot: the running guest gets the NIC
    let e = c.enis().eni(moving).unwrap();
    assert_eq!((e.mac, e.primary_ip), (mac, ip));
    let sender = launch(&mut c, "sender");
    let frame = FlowFrame::new(endpoint(&c, sender, 1), Endpoint { mac, ip, port: 2 }, 200);
    c.run(sender, source(frame.bytes().to_vec(), 100)).unwrap();
    assert!(wait_until(|| got.load(Ordering::Relaxed) == 100), "{got:?}");
    reap_all(&mut c, &[sender]);

    // The source/destination check: a spoofed source is dropped and counted while it is on.
    let mut spoofed = frame.bytes().to_vec();
    spoofed[26..30].copy_from_slice(&[10, 0, 0, 250]);
    let sender_eni = c.enis().enis_of(sender)[0].id;
    c.run(sender, source(spoofed.clone(), 50)).unwrap();
    reap_all(&mut c, &[sender]);
    assert_eq!(got.load(Ordering::Relaxed), 100, "nothing spoofed arrived");
    assert_eq!(c.eni_counters(sender_eni).unwrap().port.tx_src_dst_check, 50);
    c.set_src_dst_check(sender_eni, false).unwrap();
    c.run(sender, source(spoofed, 50)).unwrap();
    assert!(wait_until(|| got.load(Ordering::Relaxed) == 150), "{got:?}");
    reap_all(&mut c, &[sender]);
    assert_eq!(c.eni_counters(sender_eni).unwrap().port.tx_src_dst_check, 50);
}

#[test]
fn an_efa_attaches_only_at_launch_or_to_a_stopped_vm() {
    let mut c = cloud(8);
    let vm = launch(&mut c, "hpc");
    let spec = EniSpec { subnet: "a".into(), ..Default::default() };
    let efa = c.create_eni(&spec, IoPath::Efa).unwrap();
    let err = c.attach_eni(efa, vm, 1).unwrap_err();
    assert!(matches!(err, CloudError::EfaHotAttach { .. }), "{err}");
    assert!(c.enis().eni(efa).unwrap().attachment.is_none(), "nothing half done");
    c.stop(vm).unwrap();
    assert_eq!(c.attach_eni(efa, vm, 1).unwrap(), hypervisor_sim::eni::AttachKind::Warm);
    c.start(vm).unwrap();
    // And at launch (cold).
    let efa2 = c.create_eni(&spec, IoPath::Efa).unwrap();
    let mut with = VmSpec::new("hpc2", 0, instance(), "a");
    with.secondary = vec![efa2];
    with.ring_depth = 256;
    let vm2 = c.launch(with).unwrap();
    assert_eq!(c.enis().enis_of(vm2).len(), 2);
}

#[test]
fn an_empty_vf_pool_is_a_clear_error_and_a_failed_launch_leaves_nothing() {
    let mut c = cloud(2);
    let a = launch(&mut c, "a");
    launch(&mut c, "b");
    let enis_before = c.enis().enis_of(a).len();
    let err = c.launch(VmSpec::new("c", 0, instance(), "a")).unwrap_err();
    assert!(matches!(err, CloudError::NoFreeVf { total: 2, .. }), "{err}");
    assert!(err.to_string().contains("no free VF"), "{err}");
    assert_eq!(c.vm_ids().len(), 2, "the failed VM is gone");
    assert_eq!(c.enis().enis_of(a).len(), enis_before);
    c.terminate(a).unwrap();
    assert_eq!(c.free_vfs(0).unwrap(), 1);
    launch(&mut c, "c");
}

#[test]
fn a_vm_killed_twenty_times_costs_its_neighbour_nothing() {
    let mut c = cloud(8);
    let (victim, victim_sink) = (launch(&mut c, "victim"), launch(&mut c, "victim-sink"));
    let (neighbour, receiver) = (launch(&mut c, "neighbour"), launch(&mut c, "receiver"));
    c.run(victim_sink, sink(Arc::new(AtomicU64::new(0)))).unwrap();

    // The neighbour's flow: stamped frames, at most 128 in flight, checked for gaps.
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (report, reports) = mpsc::channel();
    let progress = received.clone();
    c.run(receiver, move |ctx| {
        let (mut next, mut gaps) = (0u64, 0u64);
        while !ctx.should_stop() {
            let n = ctx.nics[0].recv(|f| {
                if let Some((seq, _)) = read_stamp(f) {
                    gaps += u64::from(seq != next);
                    next = seq + 1;
                }
            });
            progress.fetch_add(n as u64, Ordering::Release);
            if n == 0 {
                std::thread::yield_now();
            }
        }
        let _ = report.send((next, gaps));
    })
    .unwrap();
    let (src, dst) = (endpoint(&c, neighbour, 5), endpoint(&c, receiver, 6));
    let (window, halt) = (received.clone(), stop.clone());
    let (sent_tx, sent_rx) = mpsc::channel();
    c.run(neighbour, move |ctx| {
        let mut frame = FlowFrame::new(src, dst, 512);
        let mut seq = 0u64;
        while !halt.load(Ordering::Relaxed) {
            if seq >= window.load(Ordering::Acquire) + 128 {
                std::thread::yield_now();
                continue;
            }
            seq += ctx.nics[0].send(0, &[frame.stamped(seq, 0)]) as u64;
        }
        let _ = sent_tx.send(seq);
    })
    .unwrap();

    let target = endpoint(&c, victim_sink, 7);
    for round in 0..20 {
        let die = Arc::new(AtomicBool::new(false));
        let flag = die.clone();
        let me = endpoint(&c, victim, 8);
        c.run(victim, move |ctx| {
            let frame = FlowFrame::new(me, target, 1024);
            let mut sent = 0u64;
            loop {
                sent += ctx.nics[0].send(0, &[frame.bytes(); 8]) as u64;
                if flag.load(Ordering::Relaxed) && sent > 0 {
                    panic!("victim killed in round {round} after {sent} frames");
                }
                std::thread::yield_now();
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        die.store(true, Ordering::Relaxed);
        let ended = reap_all(&mut c, &[victim]);
        assert!(matches!(ended[0].1, VmExit::Crashed(_)), "{ended:?}");
        assert!(!c.is_running(victim));
        c.start(victim).unwrap();
    }
    let before = received.load(Ordering::Relaxed);
    assert!(wait_until(|| received.load(Ordering::Relaxed) > before + 1000));
    stop.store(true, Ordering::Relaxed);
    let sent = sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(wait_until(|| received.load(Ordering::Relaxed) == sent), "sent {sent}, {received:?}");
    c.stop(receiver).unwrap();
    let (next, gaps) = reports.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((next, gaps), (sent, 0), "every frame of the neighbour's flow, in order");
    assert!(sent > 1000);
}

#[test]
fn a_vm_in_its_own_process_exchanges_traffic_with_a_thread_vm() {
    guest_main(); // in the child: runs the guest and exits
    let mut c = cloud(8);
    c.set_process_launcher(
        ProcessLauncher::current_exe(&[
            "--exact",
            "a_vm_in_its_own_process_exchanges_traffic_with_a_thread_vm",
            "--nocapture",
        ])
        .unwrap(),
    );
    let mut spec = VmSpec::new("echo", 0, instance(), "a");
    spec.ring_depth = 256;
    spec.shared_file = true;
    let echo = c.launch(spec).unwrap();
    let client = launch(&mut c, "client");
    let free = c.free_vfs(0).unwrap();
    c.run_process(echo, ProcessWorkload::Echo { seconds: 30.0 }).unwrap();
    let (src, dst) = (endpoint(&c, client, 1), endpoint(&c, echo, 2));
    let (tx, rx) = mpsc::channel();
    c.run(client, move |ctx| {
        let mut frame = FlowFrame::new(src, dst, 300);
        let (mut seq, mut back) = (0u64, 0u64);
        let (start, mut progress) = (Instant::now(), Instant::now());
        while back < 1000 && start.elapsed() < Duration::from_secs(20) {
            if seq < back + 32 {
                seq += ctx.nics[0].send(0, &[frame.stamped(seq, 0)]) as u64;
            } else if progress.elapsed() > Duration::from_millis(20) {
                // Nothing back for a while (the process is still starting, its receive
                // buffers not yet posted): send again, as ping would.
                seq = back;
                progress = Instant::now();
            }
            let n = ctx.nics[0].recv(|f| assert_eq!(&f[..6], &src.mac.0)) as u64;
            if n > 0 {
                back += n;
                progress = Instant::now();
            }
        }
        let _ = tx.send(back);
    })
    .unwrap();
    let back = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(back >= 1000, "frames went to the process VM and came back: {back}");
    // Killing the process is a crash: its VF is reset and back in the pool.
    c.kill(echo).unwrap();
    let ended = reap_all(&mut c, &[echo, client]);
    let exit = ended.iter().find(|(vm, _)| *vm == echo).map(|(_, e)| e.clone());
    assert!(matches!(exit, Some(VmExit::Crashed(_))), "{ended:?}");
    assert_eq!(c.free_vfs(0).unwrap(), free + 1);
}
