//! EFA over SRD on a virtual clock: exactly-once delivery and completion under loss and
//! reordering, RDMA confined to registered memory, receiver-not-ready, and EC2's EFA rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vnic::device::{DmaWindow, Iova};
use vnic::efa::*;
use vnic::ring::SharedRegion;

const MB: u64 = 1 << 20;
const BASE: u64 = 0x1_0000_0000;
const SLOT: u64 = EFA_MTU as u64;

struct Vm {
    region: Arc<SharedRegion>,
    window: DmaWindow,
    dev: EfaDevice,
    ep: EfaEndpoint,
    mr: MemoryRegion,
}

impl Vm {
    fn new(fabric: &Arc<SrdFabric>, subnet: &str) -> Self {
        let region = Arc::new(SharedRegion::anonymous((16 * MB) as usize).unwrap());
        let window = DmaWindow::new(region.clone(), Iova(BASE));
        let group =
            SecurityGroup { id: "sg-efa".into(), self_inbound_all: true, self_outbound_all: true };
        let mut dev = EfaDevice::new(window.clone(), subnet, &group, fabric.clone()).unwrap();
        let pd = dev.alloc_pd();
        let ep = EfaEndpoint::create(&region, &mut dev, pd, QpKind::Srd, QpLayout::new(0, 1024))
            .unwrap();
        let rights = access::LOCAL_WRITE | access::REMOTE_WRITE | access::REMOTE_READ;
        let mr = dev.register(pd, BASE + MB, 12 * MB, rights).unwrap();
        Self { region, window, dev, ep, mr }
    }

    fn slot(&self, k: u64) -> Iova {
        Iova(BASE + MB + k * SLOT)
    }
}

/// `a` sends `n` messages of varied sizes to `b` over a fabric with `loss`; returns the
/// receiver's ids, the sender's completed ids, and both devices' stats and the fabric.
fn exchange(
    loss: f64,
    n: u32,
    seed: u64,
) -> (Vec<u32>, Vec<u32>, Arc<SrdFabric>, Arc<EfaStats>, u64) {
    // Four paths 5, 15, 25, 35 µs one way: packets of one flow overtake each other.
    let fabric = SrdFabric::new(4, 5_000, 10_000, loss, seed);
    let mut a = Vm::new(&fabric, "subnet-a");
    let mut b = Vm::new(&fabric, "subnet-a");
    let ah = a.dev.create_ah(0, b.dev.addr()).unwrap();
    // The receiver posts 512 buffers of 8 KiB (in the upper half of its region).
    for k in 0..512 {
        assert!(b.ep.post_recv(recv_wqe(k, &b.mr, b.slot(u64::from(k)), SLOT as u32)));
    }
    let mut delivered = Vec::new();
    let mut completed = Vec::new();
    let mut reordered = 0u64;
    let mut last = None;
    let (mut posted, mut now) = (0u32, 0u64);
    let mut cqes = [Cqe::default(); 64];
    let sizes = [8u32, 64, 1000, 4096, 8192];
    while (completed.len() < n as usize || delivered.len() < n as usize) && now < 60_000_000_000 {
        // Up to 256 messages outstanding; message `i` carries `i` in its first 4 bytes.
        while posted < n && posted - (completed.len() as u32) < 256 {
            let len = sizes[posted as usize % sizes.len()];
            let at = a.slot(1024 + u64::from(posted % 256));
            a.window.write(at.0, &posted.to_le_bytes()).unwrap();
            assert!(a.ep.post_send(send_wqe(posted, ah, b.ep.qpn, &a.mr, at, len)));
            posted += 1;
        }
        a.dev.poll(now);
        b.dev.poll(now);
        let k = a.ep.poll_cq(&mut cqes);
        for c in &cqes[..k] {
            assert_eq!(c.status, status::SUCCESS, "{c:?}");
            completed.push(c.wr_id);
        }
        let k = b.ep.poll_cq(&mut cqes);
        for c in &cqes[..k] {
            assert_eq!((c.status, c.opcode), (status::SUCCESS, opcode::RECV), "{c:?}");
            let mut id = [0u8; 4];
            b.window.read(b.slot(u64::from(c.wr_id)).0, &mut id).unwrap();
            let id = u32::from_le_bytes(id);
            if last.is_some_and(|l| id < l) {
                reordered += 1;
            }
            last = Some(id);
            delivered.push(id);
            assert!(b.ep.post_recv(recv_wqe(
                c.wr_id,
                &b.mr,
                b.slot(u64::from(c.wr_id)),
                SLOT as u32
            )));
        }
        now += 1_000;
    }
    let _ = &b.region;
    (delivered, completed, fabric, a.dev.stats(), reordered)
}

#[test]
fn every_message_is_delivered_once_and_every_send_completes_under_loss_and_reordering() {
    for (loss, seed) in [(0.0, 1), (0.01, 2), (0.10, 3)] {
        let n = 3000;
        let (mut delivered, mut completed, fabric, stats, reordered) = exchange(loss, n, seed);
        delivered.sort_unstable();
        completed.sort_unstable();
        let all: Vec<u32> = (0..n).collect();
        assert_eq!(delivered, all, "loss {loss}: each message exactly once");
        assert_eq!(completed, all, "loss {loss}: each send completes once");
        let dropped = fabric.dropped.load(Ordering::Relaxed);
        let retransmits = stats.retransmits.load(Ordering::Relaxed);
        assert_eq!(retransmits, dropped, "loss {loss}: one retransmission per lost packet");
        if loss > 0.0 {
            let share = dropped as f64 / fabric.carried.load(Ordering::Relaxed) as f64;
            assert!((share - loss).abs() < loss / 2.0 + 0.005, "loss {loss}: {share}");
        } else {
            assert_eq!(dropped, 0);
        }
        assert!(reordered > 0, "loss {loss}: four paths reorder a flow");
        assert_eq!(fabric.in_flight(), 0);
    }
}

/// Runs both devices until `a` has `want` completions; returns them.
fn run_until(a: &mut Vm, b: &mut Vm, want: usize) -> Vec<Cqe> {
    let mut out = Vec::new();
    let mut cqes = [Cqe::default(); 16];
    let mut now = 0;
    while out.len() < want && now < 100_000_000 {
        a.dev.poll(now);
        b.dev.poll(now);
        let k = a.ep.poll_cq(&mut cqes);
        out.extend_from_slice(&cqes[..k]);
        now += 1_000;
    }
    out
}

#[test]
fn rdma_lands_exactly_in_registered_memory_and_outside_is_refused() {
    let fabric = SrdFabric::new(4, 5_000, 10_000, 0.05, 9);
    let mut a = Vm::new(&fabric, "s");
    let mut b = Vm::new(&fabric, "s");
    let ah = a.dev.create_ah(0, b.dev.addr()).unwrap();
    // B exposes 64 KiB for remote write and read; around it, canaries.
    let target = BASE + 14 * MB;
    let remote =
        b.dev.register(0, target, 64 * 1024, access::REMOTE_WRITE | access::REMOTE_READ).unwrap();
    let read_only = b.dev.register(0, target + MB / 2, 4096, access::REMOTE_READ).unwrap();
    b.window.write(target - 64, &[0xcc; 64]).unwrap();
    b.window.write(target + 64 * 1024, &[0xcc; 64]).unwrap();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let src = a.slot(0);
    a.window.write(src.0, &pattern).unwrap();
    let (a_mr, b_qpn) = (a.mr, b.ep.qpn);
    let write = move |wr_id, addr: u64, len, rkey| SendWqe {
        opcode: opcode::RDMA_WRITE,
        remote_addr: addr,
        rkey,
        ..send_wqe(wr_id, ah, b_qpn, &a_mr, src, len)
    };
    assert!(a.ep.post_send(write(1, target + 0x100, 4096, remote.rkey)));
    assert!(a.ep.post_send(write(2, target + 64 * 1024 - 10, 100, remote.rkey)));
    assert!(a.ep.post_send(write(3, target + 0x100, 16, remote.rkey ^ 1)));
    assert!(a.ep.post_send(write(4, read_only.iova, 16, read_only.rkey)));
    let mut done: HashMap<u32, u8> =
        run_until(&mut a, &mut b, 4).into_iter().map(|c| (c.wr_id, c.status)).collect();
    assert_eq!(done[&1], status::SUCCESS);
    assert_eq!(done[&2], status::REMOTE_ACCESS, "past the region's end");
    assert_eq!(done[&3], status::REMOTE_ACCESS, "wrong rkey");
    assert_eq!(done[&4], status::REMOTE_ACCESS, "no remote-write right");
    let mut landed = vec![0u8; 4096 + 0x200];
    b.window.read(target, &mut landed).unwrap();
    assert!(landed[..0x100].iter().all(|&x| x == 0), "nothing before");
    assert_eq!(&landed[0x100..0x100 + 4096], &pattern[..], "exactly the bytes");
    assert!(landed[0x100 + 4096..].iter().all(|&x| x == 0), "nothing after");
    let mut canary = [0u8; 64];
    for at in [target - 64, target + 64 * 1024] {
        b.window.read(at, &mut canary).unwrap();
        assert_eq!(canary, [0xcc; 64], "memory outside the region untouched");
    }
    assert_eq!(b.dev.stats().remote_access_errors.load(Ordering::Relaxed), 3);

    // Read it back into A, and a read outside the region is refused.
    let dst = a.slot(8);
    let read = move |wr_id, addr: u64, len| SendWqe {
        opcode: opcode::RDMA_READ,
        remote_addr: addr,
        rkey: remote.rkey,
        ..send_wqe(wr_id, ah, b_qpn, &a_mr, dst, len)
    };
    assert!(a.ep.post_send(read(5, target + 0x100, 4096)));
    assert!(a.ep.post_send(read(6, target + 64 * 1024, 8)));
    done = run_until(&mut a, &mut b, 2).into_iter().map(|c| (c.wr_id, c.status)).collect();
    assert_eq!((done[&5], done[&6]), (status::SUCCESS, status::REMOTE_ACCESS));
    let mut back = vec![0u8; 4096];
    a.window.read(dst.0, &mut back).unwrap();
    assert_eq!(back, pattern);

    // Write with immediate consumes a receive and reports the immediate.
    assert!(b.ep.post_recv(recv_wqe(77, &b.mr, b.slot(0), SLOT as u32)));
    let imm = SendWqe { imm: 0xfeed, flags: SendWqe::FLAG_IMM, ..write(7, target, 8, remote.rkey) };
    assert!(a.ep.post_send(imm));
    assert_eq!(run_until(&mut a, &mut b, 1)[0].status, status::SUCCESS);
    let mut cqes = [Cqe::default(); 4];
    assert_eq!(b.ep.poll_cq(&mut cqes), 1);
    assert_eq!(
        (cqes[0].wr_id, cqes[0].imm, cqes[0].flags & Cqe::FLAG_IMM),
        (77, 0xfeed, Cqe::FLAG_IMM)
    );

    // A local buffer outside the sender's own region never leaves.
    let outside = SendWqe { local_addr: BASE, ..send_wqe(8, ah, b_qpn, &a_mr, src, 64) };
    assert!(a.ep.post_send(outside));
    assert_eq!(run_until(&mut a, &mut b, 1)[0].status, status::LOCAL_PROTECTION);
}

#[test]
fn a_receiver_that_is_not_ready_is_retried_until_it_is() {
    let fabric = SrdFabric::new(2, 5_000, 5_000, 0.0, 4);
    let mut a = Vm::new(&fabric, "s");
    let mut b = Vm::new(&fabric, "s");
    let ah = a.dev.create_ah(0, b.dev.addr()).unwrap();
    for k in 0..10 {
        assert!(a.ep.post_send(send_wqe(k, ah, b.ep.qpn, &a.mr, a.slot(0), 64)));
    }
    let mut cqes = [Cqe::default(); 16];
    let mut done = 0;
    for step in 0..20_000u64 {
        let now = step * 1_000;
        if step == 500 {
            for k in 0..10 {
                assert!(b.ep.post_recv(recv_wqe(k, &b.mr, b.slot(u64::from(k)), SLOT as u32)));
            }
        }
        a.dev.poll(now);
        b.dev.poll(now);
        done += a.ep.poll_cq(&mut cqes);
        assert!(cqes[..0].is_empty());
    }
    assert_eq!(done, 10, "every send completed once the receives were posted");
    assert_eq!(b.ep.poll_cq(&mut cqes), 10);
    let stats = a.dev.stats();
    assert!(stats.rnr_retries.load(Ordering::Relaxed) >= 10);
    assert_eq!(stats.retransmits.load(Ordering::Relaxed), 0, "not-ready is not a loss");
}

#[test]
fn ec2s_efa_rules_hold() {
    let fabric = SrdFabric::new(1, 1_000, 0, 0.0, 5);
    let a = Vm::new(&fabric, "subnet-a");
    let b = Vm::new(&fabric, "subnet-b");
    let mut a_dev = a.dev;
    match a_dev.create_ah(0, b.dev.addr()) {
        Err(EfaError::OtherSubnet { .. }) => {}
        other => panic!("an AH to another subnet: {other:?}"),
    }
    assert!(matches!(a_dev.create_ah(0, 999), Err(EfaError::NoSuchDevice(999))));
    assert!(matches!(a_dev.create_ah(7, b.dev.addr()), Err(EfaError::NoSuchPd(7))));
    let region = Arc::new(SharedRegion::anonymous(MB as usize).unwrap());
    let window = DmaWindow::new(region, Iova(BASE));
    let open =
        SecurityGroup { id: "sg-1".into(), self_inbound_all: true, self_outbound_all: false };
    let err = EfaDevice::new(window.clone(), "subnet-a", &open, fabric.clone()).unwrap_err();
    assert!(err.to_string().contains("must allow all traffic to and from itself"), "{err}");
    // A region outside the VM's memory is refused.
    let ok = SecurityGroup { id: "sg-2".into(), self_inbound_all: true, self_outbound_all: true };
    let mut dev = EfaDevice::new(window, "subnet-a", &ok, fabric).unwrap();
    let pd = dev.alloc_pd();
    assert!(matches!(
        dev.register(pd, BASE + MB - 10, 100, access::LOCAL_WRITE),
        Err(EfaError::OutsideMemory { .. })
    ));
}

#[test]
fn protection_domains_keep_regions_and_handles_apart() {
    let fabric = SrdFabric::new(1, 1_000, 0, 0.0, 6);
    let mut a = Vm::new(&fabric, "s");
    let mut b = Vm::new(&fabric, "s");
    // A second domain on each side, with its own region.
    let (pd_a, pd_b) = (a.dev.alloc_pd(), b.dev.alloc_pd());
    let other_a = a.dev.register(pd_a, BASE + 14 * MB, MB, access::LOCAL_WRITE).unwrap();
    let other_b = b
        .dev
        .register(pd_b, BASE + 14 * MB, MB, access::REMOTE_WRITE | access::REMOTE_READ)
        .unwrap();
    let ah = a.dev.create_ah(0, b.dev.addr()).unwrap();
    let foreign_ah = a.dev.create_ah(pd_a, b.dev.addr()).unwrap();
    let src = a.slot(0);
    // A region of another domain, an AH of another domain, an rkey of another domain.
    assert!(a.ep.post_send(send_wqe(1, ah, b.ep.qpn, &other_a, Iova(other_a.iova), 64)));
    assert!(a.ep.post_send(send_wqe(2, foreign_ah, b.ep.qpn, &a.mr, src, 64)));
    let write = SendWqe {
        opcode: opcode::RDMA_WRITE,
        remote_addr: other_b.iova,
        rkey: other_b.rkey,
        ..send_wqe(3, ah, b.ep.qpn, &a.mr, src, 64)
    };
    assert!(a.ep.post_send(write));
    let done: HashMap<u32, u8> =
        run_until(&mut a, &mut b, 3).into_iter().map(|c| (c.wr_id, c.status)).collect();
    assert_eq!(done[&1], status::LOCAL_PROTECTION);
    assert_eq!(done[&2], status::BAD_AH);
    assert_eq!(done[&3], status::REMOTE_ACCESS, "an rkey of another domain than the QP's");
}

#[test]
fn unreliable_datagrams_are_lost_when_the_fabric_loses_them() {
    let fabric = SrdFabric::new(2, 5_000, 5_000, 0.2, 8);
    let group = SecurityGroup { id: "sg".into(), self_inbound_all: true, self_outbound_all: true };
    let ud = |subnet| {
        let region = Arc::new(SharedRegion::anonymous((16 * MB) as usize).unwrap());
        let window = DmaWindow::new(region.clone(), Iova(BASE));
        let mut dev = EfaDevice::new(window.clone(), subnet, &group, fabric.clone()).unwrap();
        let pd = dev.alloc_pd();
        let ep =
            EfaEndpoint::create(&region, &mut dev, pd, QpKind::Ud, QpLayout::new(0, 1024)).unwrap();
        let mr = dev.register(pd, BASE + MB, 12 * MB, access::LOCAL_WRITE).unwrap();
        Vm { region, window, dev, ep, mr }
    };
    let (mut a, mut b) = (ud("s"), ud("s"));
    let ah = a.dev.create_ah(0, b.dev.addr()).unwrap();
    for k in 0..1000 {
        assert!(b.ep.post_recv(recv_wqe(k, &b.mr, b.slot(u64::from(k)), SLOT as u32)));
    }
    for k in 0..1000 {
        assert!(a.ep.post_send(send_wqe(k, ah, b.ep.qpn, &a.mr, a.slot(0), 256)));
    }
    let rdma =
        SendWqe { opcode: opcode::RDMA_WRITE, ..send_wqe(9999, ah, b.ep.qpn, &a.mr, a.slot(0), 8) };
    assert!(a.ep.post_send(rdma));
    let sent = run_until(&mut a, &mut b, 1001);
    assert_eq!(sent.iter().filter(|c| c.status == status::SUCCESS).count(), 1000);
    assert_eq!(sent.iter().find(|c| c.wr_id == 9999).map(|c| c.status), Some(status::BAD_OPCODE));
    let mut cqes = [Cqe::default(); 1024];
    let got = b.ep.poll_cq(&mut cqes) as u64;
    let lost = fabric.dropped.load(Ordering::Relaxed);
    assert_eq!(got + lost, 1000, "what the fabric lost is lost");
    assert!(lost > 100, "{lost}");
    assert_eq!(a.dev.stats().retransmits.load(Ordering::Relaxed), 0, "UD never retransmits");
}

#[test]
fn srd_traffic_to_one_destination_is_held_to_25_gbps() {
    let fabric = SrdFabric::new(1, 1_000, 0, 0.0, 7);
    let mut a = Vm::new(&fabric, "s");
    let mut b = Vm::new(&fabric, "s");
    let ah = a.dev.create_ah(0, b.dev.addr()).unwrap();
    for k in 0..200 {
        assert!(b.ep.post_recv(recv_wqe(k, &b.mr, b.slot(u64::from(k)), SLOT as u32)));
        assert!(a.ep.post_send(send_wqe(k, ah, b.ep.qpn, &a.mr, a.slot(0), 8192)));
    }
    // 200 × 8 KiB at 25 Gbps take 524 µs; the first two fit the limiter's burst.
    let (mut now, mut done) = (0u64, 0);
    let mut cqes = [Cqe::default(); 64];
    while done < 200 && now < 10_000_000 {
        a.dev.poll(now);
        b.dev.poll(now);
        done += a.ep.poll_cq(&mut cqes);
        now += 1_000;
    }
    assert_eq!(done, 200);
    assert!((500_000..700_000).contains(&now), "took {now} ns");
    assert!(a.dev.stats().flow_cap_held.load(Ordering::Relaxed) >= 190);
    assert_eq!(a.dev.stats().retransmits.load(Ordering::Relaxed), 0);
}
