//! The NIC end to end: VFs with guest memory, ENA-style drivers, the engine between them, and a
//! hostile guest.

use std::sync::Arc;

use vnic::abi::io::{RxCompletion, TxCompletion, TxDesc};
use vnic::device::*;
use vnic::driver::{QueuePairDriver, QueuePairLayout};
use vnic::frame::{MacAddr, build_udp_frame};
use vnic::ring::{
    CompletionConsumer, CompletionRing, SharedRegion, SubmissionProducer, SubmissionRing,
};
use vnic::rss::{MICROSOFT_RSS_KEY, Toeplitz};

const MB: usize = 1 << 20;

/// A guest: its memory, seen by its VF at `base`.
fn guest(pf: &mut PhysicalFunction, vf: u16, base: u64, bytes: usize) -> DmaWindow {
    let window = DmaWindow::new(Arc::new(SharedRegion::anonymous(bytes).unwrap()), Iova(base));
    pf.assign(vf, window.clone()).unwrap();
    window
}

fn queue(
    pf: &mut PhysicalFunction,
    vf: u16,
    window: &DmaWindow,
    offset: usize,
    depth: u32,
) -> QueuePairDriver {
    let layout = QueuePairLayout::new(offset, depth, 2048);
    let mut drv = QueuePairDriver::create(window.clone(), layout).unwrap();
    pf.create_queue_pair(vf, drv.spec()).unwrap();
    drv.refill_rx();
    drv
}

fn mac(vf: u16) -> MacAddr {
    MacAddr::local(u32::from(vf) + 1)
}

fn udp(len: usize, from: u16, to: u16, sport: u16, seq: u32) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let f = build_udp_frame(
        &mut buf,
        len,
        mac(to),
        mac(from),
        ([10, 0, 0, from as u8 + 1], [10, 0, 0, to as u8 + 1]),
        (sport, 9000),
    );
    let payload_at = 42;
    if f.len() >= payload_at + 4 {
        f[payload_at..payload_at + 4].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in f[payload_at + 4..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
    }
    buf
}

#[test]
fn sriov_numvfs_goes_through_zero() {
    assert!(PhysicalFunction::new(257).is_err());
    let mut pf = PhysicalFunction::new(8).unwrap();
    assert!(matches!(pf.set_num_vfs(9), Err(DeviceError::TooManyVfs { .. })));
    pf.set_num_vfs(4).unwrap();
    assert!(matches!(pf.set_num_vfs(2), Err(DeviceError::VfsEnabled { current: 4, requested: 2 })));
    let _w = guest(&mut pf, 1, 0, MB);
    assert!(matches!(pf.set_num_vfs(0), Err(DeviceError::VfInUse(1))));
    pf.release(1).unwrap();
    pf.set_num_vfs(0).unwrap();
    pf.set_num_vfs(8).unwrap();
    assert_eq!(pf.num_vfs(), 8);
    assert!(matches!(pf.vf(8), Err(DeviceError::NoSuchVf { vf: 8, enabled: 8 })));
    assert!(matches!(pf.set_mtu(0, 9002), Err(DeviceError::Mtu(9002))));
    pf.set_mtu(0, 9001).unwrap();
    assert_eq!(pf.port(3).unwrap().mac, mac(3));
}

#[test]
fn frames_cross_from_one_vf_to_another_intact() {
    let mut pf = PhysicalFunction::new(4).unwrap();
    pf.set_num_vfs(2).unwrap();
    pf.set_mtu(0, 9001).unwrap();
    pf.set_mtu(1, 9001).unwrap();
    let w0 = guest(&mut pf, 0, 0x10_0000_0000, 8 * MB);
    let w1 = guest(&mut pf, 1, 0x20_0000_0000, 8 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 256);
    let mut rx = queue(&mut pf, 1, &w1, 0, 256);
    let sizes = [60usize, 64, 1500, 2049, 4096, 4097, 9001 + 14, 777];
    let mut sent = Vec::new();
    let mut got = Vec::new();
    let toeplitz = Toeplitz::new(MICROSOFT_RSS_KEY);
    for seq in 0..2000u32 {
        let frame = udp(sizes[seq as usize % sizes.len()], 0, 1, 1000 + seq as u16 % 50, seq);
        while tx.send_burst(&[&frame]) == 0 {
            pf.poll();
            tx.reap_tx();
        }
        sent.push(frame);
        pf.poll();
        tx.reap_tx();
        rx.recv(|f, hash| {
            let sport = u16::from_be_bytes([f[34], f[35]]);
            assert_eq!(hash, toeplitz.hash_ipv4_ports([10, 0, 0, 1], [10, 0, 0, 2], sport, 9000));
            got.push(f.to_vec());
        });
    }
    for _ in 0..10 {
        pf.poll();
        tx.reap_tx();
        rx.recv(|f, _| got.push(f.to_vec()));
    }
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "every frame arrives once, in order, byte for byte");
    let d = tx.stats();
    assert_eq!((d.tx_completed, d.tx_errors, d.tx_bogus_completions), (2000, 0, 0));
    let (q0, _) = pf.vf(0).unwrap().totals();
    let (q1, _) = pf.vf(1).unwrap().totals();
    assert_eq!((q0.tx_packets, q0.tx_bad_desc), (2000, 0));
    assert_eq!((q1.rx_packets, q1.rx_drops), (2000, 0));
    assert_eq!(q0.tx_bytes, q1.rx_bytes);
}

#[test]
fn rss_spreads_flows_over_queues_as_the_indirection_table_says() {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = guest(&mut pf, 0, 0, 8 * MB);
    let w1 = guest(&mut pf, 1, 0, 16 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 256);
    let mut rxq: Vec<QueuePairDriver> =
        (0..4).map(|q| queue(&mut pf, 1, &w1, q * 3 * MB, 128)).collect();
    let toeplitz = Toeplitz::new(MICROSOFT_RSS_KEY);
    let mut per_queue = [0usize; 4];
    for sport in 0..400u16 {
        let frame = udp(128, 0, 1, sport, u32::from(sport));
        assert_eq!(tx.send_burst(&[&frame]), 1);
        pf.poll();
        tx.reap_tx();
        let want = (toeplitz.hash_ipv4_ports([10, 0, 0, 1], [10, 0, 0, 2], sport, 9000) % 128 % 4)
            as usize;
        for (q, drv) in rxq.iter_mut().enumerate() {
            let n = drv.recv(|_, _| {});
            if n > 0 {
                assert_eq!(q, want, "source port {sport}");
                per_queue[q] += n;
            }
        }
    }
    assert_eq!(per_queue.iter().sum::<usize>(), 400);
    assert!(per_queue.iter().all(|&n| n > 60), "{per_queue:?}");
}

#[test]
fn a_reset_returns_in_flight_buffers_and_keeps_counters() {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = guest(&mut pf, 0, 0, 8 * MB);
    let w1 = guest(&mut pf, 1, 0, 8 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 64);
    let mut rx = queue(&mut pf, 1, &w1, 0, 64);
    let frame = udp(1000, 0, 1, 7, 1);
    assert_eq!(tx.send_burst(&[&frame, &frame]), 2);
    pf.poll();
    assert_eq!(tx.reap_tx(), 2);
    assert_eq!(rx.recv(|_, _| {}), 2);
    // A jumbo chain of three descriptors, only the first two posted, then a reset.
    let w = w0.clone();
    let region = w.region().clone();
    drop(tx);
    let layout = QueuePairLayout::new(0, 64, 2048);
    let mut raw = SubmissionProducer::<TxDesc>::attach(region, layout.tx_sq).unwrap();
    assert!(raw.push_bulk(&[
        TxDesc::new(layout.tx_bufs as u64, 4096, 5).with_first(true).with_phase(true),
        TxDesc::new(layout.tx_bufs as u64 + 4096, 4096, 0).with_phase(true),
    ]));
    pf.poll();
    // One more frame posted but never consumed by the device.
    let whole = TxDesc::new(layout.tx_bufs as u64, 100, 9).with_first(true).with_last(true);
    assert!(raw.push(whole.with_phase(true)));
    let report = pf.reset_vf(0).unwrap();
    assert_eq!(report.tx_in_flight, vec![(0, vec![5, 9])]);
    // Both also come back to the driver as TX completions marked reset.
    let mut cq =
        CompletionConsumer::<TxCompletion>::attach(w.region().clone(), layout.tx_cq).unwrap();
    let mut back = [TxCompletion::default(); 8];
    let n = cq.pop_burst(&mut back);
    let got: Vec<(u16, u8)> = back[..n].iter().map(|c| (c.req_id, c.status)).collect();
    assert_eq!(
        got,
        vec![(5, TX_STATUS_RESET), (9, TX_STATUS_RESET)],
        "resuming after the two frames reaped earlier"
    );
    drop(cq);
    let (totals, _) = pf.vf(0).unwrap().totals();
    assert_eq!(totals.tx_packets, 2, "counters survive the reset");
    assert_eq!(pf.vf(0).unwrap().queue_count(), 0);
    drop(raw);
    // The driver lays the queue out again and traffic resumes.
    let mut tx = queue(&mut pf, 0, &w0, 0, 64);
    assert_eq!(tx.send_burst(&[&frame]), 1);
    pf.poll();
    assert_eq!(rx.recv(|_, _| {}), 1);
    assert_eq!(pf.vf(0).unwrap().totals().0.tx_packets, 3);
}

#[test]
fn spoofed_sources_are_dropped_and_broadcast_reaches_everyone() {
    let mut pf = PhysicalFunction::new(3).unwrap();
    pf.set_num_vfs(3).unwrap();
    let ws: Vec<DmaWindow> = (0..3).map(|v| guest(&mut pf, v, 0, 8 * MB)).collect();
    let mut d: Vec<QueuePairDriver> =
        (0..3).map(|v| queue(&mut pf, v, &ws[usize::from(v)], 0, 64)).collect();
    let mut spoof = udp(200, 0, 1, 1, 1);
    spoof[6..12].copy_from_slice(&mac(2).0);
    assert_eq!(d[0].send_burst(&[&spoof]), 1);
    let mut bcast = udp(200, 0, 1, 1, 2);
    bcast[..6].copy_from_slice(&MacAddr::BROADCAST.0);
    assert_eq!(d[0].send_burst(&[&bcast]), 1);
    pf.poll();
    assert_eq!(pf.vf(0).unwrap().totals().1.tx_spoofed, 1);
    assert_eq!(d[1].recv(|f, _| assert_eq!(f[..6], [0xff; 6])), 1);
    assert_eq!(d[2].recv(|_, _| {}), 1);
    assert_eq!(d[0].recv(|_, _| {}), 0, "not back to the sender");
}

#[test]
fn rx_without_buffers_drops_and_jumbo_frames_span_buffers() {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    pf.set_mtu(0, 9001).unwrap();
    pf.set_mtu(1, 9001).unwrap();
    let w0 = guest(&mut pf, 0, 0, 8 * MB);
    let w1 = guest(&mut pf, 1, 0, 8 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 64);
    // The receiver lays out its rings but posts only three 2 KiB buffers.
    let layout = QueuePairLayout::new(0, 64, 2048);
    let mut rx = QueuePairDriver::create(w1.clone(), layout).unwrap();
    pf.create_queue_pair(1, rx.spec()).unwrap();
    let jumbo = udp(9015, 0, 1, 5, 9);
    // Before any buffer is posted: dropped and counted.
    assert_eq!(tx.send_burst(&[&jumbo]), 1);
    pf.poll();
    assert_eq!(pf.vf(1).unwrap().totals().0.rx_drops, 1);
    rx.refill_rx();
    assert_eq!(tx.send_burst(&[&jumbo]), 1);
    pf.poll();
    let mut got = Vec::new();
    assert_eq!(rx.recv(|f, _| got = f.to_vec()), 1);
    assert!(got == jumbo, "a 9015-byte frame in five 2 KiB buffers");
    // A frame above the receiver's MTU is dropped.
    pf.set_mtu(1, 1500).unwrap();
    assert_eq!(tx.send_burst(&[&jumbo]), 1);
    pf.poll();
    assert_eq!(pf.vf(1).unwrap().totals().0.rx_drops, 2);
}

/// xorshift64*: a seeded source of hostile bits.
struct Hostile(u64);
impl Hostile {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn a_hostile_guest_cannot_hurt_the_engine_or_its_neighbours() {
    let mut pf = PhysicalFunction::new(4).unwrap();
    pf.set_num_vfs(4).unwrap();
    // VF 0 is hostile; VF 1 sends to VF 2; VF 3's memory is a canary nobody may touch.
    let w0 = guest(&mut pf, 0, 0x1000_0000, 4 * MB);
    let w1 = guest(&mut pf, 1, 0x2000_0000, 8 * MB);
    let w2 = guest(&mut pf, 2, 0x3000_0000, 8 * MB);
    let w3 = guest(&mut pf, 3, 0x4000_0000, MB);
    let mut a = queue(&mut pf, 1, &w1, 0, 256);
    let mut b = queue(&mut pf, 2, &w2, 0, 256);
    // The hostile guest lays out real rings (so the device attaches), then writes garbage.
    let layout = QueuePairLayout::new(0, 256, 2048);
    let r0 = w0.region().clone();
    SubmissionRing::<TxDesc>::init(&r0, layout.tx_sq, 256).unwrap();
    CompletionRing::<TxCompletion>::init(&r0, layout.tx_cq, 256).unwrap();
    SubmissionRing::<vnic::abi::io::RxDesc>::init(&r0, layout.rx_sq, 256).unwrap();
    CompletionRing::<RxCompletion>::init(&r0, layout.rx_cq, 256).unwrap();
    // It also has an admin queue, into which it posts random commands (brought up first: the
    // bring-up resets the function, as ENA's driver does).
    let mut admin =
        vnic::driver::AdminDriver::bring_up(w0.clone(), 3 * MB, &mut pf.registers(0).unwrap())
            .unwrap();
    pf.create_queue_pair(0, layout.spec(&w0)).unwrap();
    // As much of the engine as it can use: this test is about what garbage can do, not how
    // much of it the engine takes (tests/isolation.rs).
    pf.set_engine_weight(0, MAX_ENGINE_WEIGHT).unwrap();
    let mut evil = SubmissionProducer::<TxDesc>::attach(r0.clone(), layout.tx_sq).unwrap();
    let mut evil_cq = CompletionConsumer::<TxCompletion>::attach(r0.clone(), layout.tx_cq).unwrap();
    let mut rng = Hostile(0x9E37_79B9_7F4A_7C15);
    let mut admin_sent = 0u64;
    let targets = [
        0u64,
        0x1000_0000,
        0x1000_0000 + 4 * MB as u64 - 8,
        0x2000_0000,
        0x4000_0000,
        u64::MAX - 100,
    ];
    let mut hostile_sent = 0u64;
    let mut good_frames = 0u64;
    let mut received = 0u64;
    let mut completions = [TxCompletion::default(); 64];
    for round in 0..20_000u32 {
        // 64 hostile descriptors a round: random words, or aimed at other windows, huge lengths,
        // reused request ids, broken chains.
        let mut burst = [TxDesc::default(); 64];
        for d in burst.iter_mut() {
            let r = rng.next();
            *d = match r % 4 {
                0 => bytemuck::cast([rng.next(), rng.next()]),
                1 => TxDesc::new(
                    targets[(r >> 8) as usize % targets.len()] + (r >> 40) % 64,
                    (r >> 16) as u16,
                    (r >> 32) as u16 % 300,
                )
                .with_first(r & 0x100 != 0)
                .with_last(r & 0x200 != 0),
                2 => TxDesc::new(0x1000_0000 + layout.tx_bufs as u64, 64, 7)
                    .with_first(true)
                    .with_last(true)
                    .with_phase(r & 0x400 != 0),
                _ => TxDesc::new(0x1000_0000 + (r % (4 * MB as u64)), 9000, (r % 256) as u16)
                    .with_first(true),
            };
        }
        hostile_sent += evil.push_burst(&burst) as u64;
        evil_cq.pop_burst(&mut completions);
        if round % 4 == 0 {
            // Random admin commands, except the two that would end the experiment early (a reset
            // of the hostile queue, or a queue pair built from its own live rings).
            let mut entry = [0u8; 64];
            for chunk in entry.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            entry[2] = [3u8, 8, 9, 11, 4, 99][(rng.next() % 6) as usize];
            let _ = admin.execute_raw(&mut pf.registers(0).unwrap(), entry);
            admin_sent += 1;
        }
        // The neighbours carry on.
        let frame = udp(256, 1, 2, (round % 300) as u16, round);
        good_frames += a.send_burst(&[&frame]) as u64;
        pf.poll();
        pf.poll();
        a.reap_tx();
        received += b.recv(|f, _| {
            assert_eq!(f.len(), 256);
        }) as u64;
    }
    // Last, a hostile doorbell: the guest scribbles an impossible tail over its TX ring's
    // producer index, then keeps ringing.
    for _ in 0..100 {
        let tail = (rng.next() as u32).to_ne_bytes();
        w0.write(w0.iova(layout.tx_sq + 128).0, &tail).unwrap();
        let frame = udp(256, 1, 2, 1, 0);
        good_frames += a.send_burst(&[&frame]) as u64;
        pf.poll();
        a.reap_tx();
        received += b.recv(|_, _| {}) as u64;
    }
    for _ in 0..4 {
        pf.poll();
        a.reap_tx();
        received += b.recv(|_, _| {}) as u64;
    }
    assert!(hostile_sent > 1_000_000, "{hostile_sent} hostile descriptors");
    assert_eq!(admin_sent, 5_000);
    assert_eq!(received, good_frames, "the neighbours lost nothing");
    assert_eq!(good_frames, 20_100);
    let (q0, v0) = pf.vf(0).unwrap().totals();
    assert!(q0.tx_bad_desc > 100_000, "{q0:?}");
    assert!(v0.tx_malformed + v0.tx_spoofed + q0.tx_bad_desc > 0);
    // Nothing outside a window was touched: the canary is still all zeros.
    let mut canary = vec![0u8; MB];
    w3.read(0x4000_0000, &mut canary).unwrap();
    assert!(canary.iter().all(|&b| b == 0), "VF 3's memory was written");
}

#[test]
fn moderated_interrupts_wake_a_sleeping_receiver() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = guest(&mut pf, 0, 0, 8 * MB);
    let w1 = guest(&mut pf, 1, 0, 8 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 256);
    let mut rx = queue(&mut pf, 1, &w1, 0, 256);
    let rx_line = Arc::new(InterruptLine::new().unwrap());
    let tx_line = Arc::new(InterruptLine::new().unwrap());
    let moderated = Notification::Moderated { delay_us: 20, packets: 32 };
    pf.set_notification(1, 0, (Notification::BusyPoll, None), (moderated, Some(rx_line.clone())))
        .unwrap();
    pf.set_notification(
        0,
        0,
        (Notification::ENA_TX, Some(tx_line.clone())),
        (Notification::BusyPoll, None),
    )
    .unwrap();
    assert!(matches!(
        pf.set_notification(1, 3, (Notification::BusyPoll, None), (Notification::BusyPoll, None)),
        Err(DeviceError::NoSuchQueue { .. })
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let engine = std::thread::spawn(move || {
        pf.run(&flag);
        pf
    });
    // The receiver's progress, so the sender never has more than 128 frames outstanding: a
    // receiver descheduled on a busy machine must not lose frames to a full ring.
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = progress.clone();
    let receiver = std::thread::spawn(move || {
        let (mut got, mut wakeups, mut sleeps) = (0u64, 0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(30);
        while got < 5000 && Instant::now() < deadline {
            let n = rx.recv(|f, _| assert_eq!(f.len(), 100)) as u64;
            got += n;
            seen.store(got, Ordering::Release);
            if n == 0 {
                sleeps += 1;
                wakeups += u64::from(rx_line.wait(Duration::from_millis(50)));
            }
        }
        (got, wakeups, sleeps)
    });
    let frame = udp(100, 0, 1, 3, 0);
    let mut sent = 0;
    while sent < 5000 {
        if sent as u64 >= progress.load(Ordering::Acquire) + 128 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let burst = [frame.as_slice(); 8];
        sent += tx.send_burst(&burst[..8.min(5000 - sent)]);
        if tx.reap_tx() == 0 && tx.tx_free() == 0 {
            tx_line.wait(Duration::from_millis(10));
        }
        // Pace the sender so the receiver runs dry and has to sleep.
        std::thread::sleep(Duration::from_micros(50));
    }
    let (got, wakeups, sleeps) = receiver.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let pf = engine.join().unwrap();
    assert_eq!(got, 5000, "every frame arrives");
    assert!(sleeps > 0 && wakeups > 0, "the receiver slept and was woken ({sleeps} sleeps)");
    let (_, rx_irqs) = pf.interrupts(1, 0).unwrap();
    let (tx_irqs, _) = pf.interrupts(0, 0).unwrap();
    assert!(rx_irqs > 0 && rx_irqs < 5000, "moderated: {rx_irqs} interrupts for 5000 frames");
    assert!(tx_irqs > 0);
    assert_eq!(pf.interrupts(0, 0).unwrap().1, 0, "busy-polled RX never interrupts");
}

/// VF `vf`'s queue pair of 64 with its TX ring driven by hand (the test writes descriptors and
/// reads completions itself, as a buggy or hostile driver would).
fn raw_tx(
    pf: &mut PhysicalFunction,
    vf: u16,
    window: &DmaWindow,
) -> (QueuePairLayout, SubmissionProducer<TxDesc>, CompletionConsumer<TxCompletion>) {
    let layout = QueuePairLayout::new(0, 64, 2048);
    let r = window.region().clone();
    SubmissionRing::<TxDesc>::init(&r, layout.tx_sq, 64).unwrap();
    CompletionRing::<TxCompletion>::init(&r, layout.tx_cq, 64).unwrap();
    SubmissionRing::<vnic::abi::io::RxDesc>::init(&r, layout.rx_sq, 64).unwrap();
    CompletionRing::<RxCompletion>::init(&r, layout.rx_cq, 64).unwrap();
    pf.create_queue_pair(vf, layout.spec(window)).unwrap();
    let sq = SubmissionProducer::<TxDesc>::attach(r.clone(), layout.tx_sq).unwrap();
    let cq = CompletionConsumer::<TxCompletion>::attach(r, layout.tx_cq).unwrap();
    (layout, sq, cq)
}

#[test]
fn a_chain_cut_short_comes_back_to_the_driver_as_bad() {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = guest(&mut pf, 0, 0, 8 * MB);
    let w1 = guest(&mut pf, 1, 0, 8 * MB);
    let mut rx = queue(&mut pf, 1, &w1, 0, 64);
    let (layout, mut sq, mut cq) = raw_tx(&mut pf, 0, &w0);
    let frame = udp(100, 0, 1, 1, 1);
    let buf = layout.tx_bufs as u64;
    w0.write(buf, &frame).unwrap();
    // Request 3 starts a chain that never ends; request 4 is a whole frame.
    // First lap: phase 1.
    assert!(sq.push(TxDesc::new(buf, 50, 3).with_first(true).with_phase(true)));
    pf.poll();
    assert!(sq.push(TxDesc::new(buf, 100, 4).with_first(true).with_last(true).with_phase(true)));
    pf.poll();
    let mut done = [TxCompletion::default(); 4];
    let n = cq.pop_burst(&mut done);
    let got: Vec<(u16, u8)> = done[..n].iter().map(|c| (c.req_id, c.status)).collect();
    assert_eq!(got, vec![(3, TX_STATUS_BAD_DESC), (4, TX_STATUS_OK)]);
    assert_eq!(rx.recv(|f, _| assert_eq!(f, &frame[..])), 1);
    assert_eq!(pf.vf(0).unwrap().totals().0.tx_bad_desc, 1);
}

#[test]
fn source_destination_check_drops_spoofed_addresses_only_while_on() {
    let mut pf = PhysicalFunction::new(4).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = guest(&mut pf, 0, 0x10_0000_0000, 4 * MB);
    let w1 = guest(&mut pf, 1, 0x20_0000_0000, 4 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 64);
    let mut rx = queue(&mut pf, 1, &w1, 0, 64);
    // VF 0 owns 10.0.0.1, VF 1 owns 10.0.0.2: `udp` sends 10.0.0.1 -> 10.0.0.2.
    pf.set_address_check(0, Some(&["10.0.0.1".parse().unwrap()])).unwrap();
    pf.set_address_check(1, Some(&["10.0.0.2".parse().unwrap()])).unwrap();
    let mut spoofed = udp(128, 0, 1, 7, 0);
    spoofed[26..30].copy_from_slice(&[10, 0, 0, 99]); // source IP not VF 0's
    let mut elsewhere = udp(128, 0, 1, 7, 1);
    elsewhere[30..34].copy_from_slice(&[10, 0, 0, 77]); // destination IP not VF 1's
    let good = udp(128, 0, 1, 7, 2);
    let mut round = |pf: &mut PhysicalFunction, frames: &[&[u8]]| {
        assert_eq!(tx.send_burst(frames), frames.len());
        pf.poll();
        tx.reap_tx();
        rx.recv(|_, _| {})
    };
    assert_eq!(round(&mut pf, &[&spoofed, &elsewhere, &good]), 1);
    let (_, v0) = pf.vf(0).unwrap().totals();
    let (_, v1) = pf.vf(1).unwrap().totals();
    assert_eq!((v0.tx_src_dst_check, v1.rx_src_dst_check), (1, 1));
    // With the check off (a NAT instance), both pass.
    pf.set_address_check(0, None).unwrap();
    pf.set_address_check(1, None).unwrap();
    assert_eq!(round(&mut pf, &[&spoofed, &elsewhere, &good]), 3);
}

#[test]
fn an_eni_shaper_in_the_device_holds_frames_to_the_flow_cap() {
    use vnic::shaper::{Clock, FlowKey, ShaperConfig};
    let mut pf = PhysicalFunction::new(4).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = guest(&mut pf, 0, 0x10_0000_0000, 8 * MB);
    let w1 = guest(&mut pf, 1, 0x20_0000_0000, 8 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 256);
    let mut rx = queue(&mut pf, 1, &w1, 0, 256);
    // 100 Mbit/s per flow: 1500-byte frames leave one every 120 µs.
    let cap = |_: &FlowKey| 100_000_000u64;
    let counters =
        pf.set_shaper(0, Some((ShaperConfig::default(), Box::new(cap)))).unwrap().unwrap();
    let frame = udp(1500, 0, 1, 7, 0);
    let drops = pf.vf(0).unwrap().vf_stats();
    let dropped = || drops.tx_shaper_drops.load(std::sync::atomic::Ordering::Relaxed);
    // The device's time is a virtual clock moved 10 µs per round, so what the shaper does
    // depends on the frames alone, never on how busy the machine is.
    let clock = vnic::shaper::VirtualClock::new();
    pf.set_clock(vnic::shaper::DeviceClock::Virtual(clock.clone()));
    const STEP_NS: u64 = 10_000;
    // Sends `n` frames as fast as the ring takes them (8 per round); returns when each has
    // arrived or been dropped, and how much device time that took, ns.
    let mut burst = |pf: &mut PhysicalFunction, n: u64, got: &mut u64| {
        let start = clock.now_ns();
        let (mut posted, before) = (0, *got + dropped());
        let mut rounds = 0;
        while *got + dropped() < before + n {
            assert!(rounds < 1_000_000, "frames stuck in the shaper");
            rounds += 1;
            if posted < n {
                let k = (n - posted).min(8) as usize;
                posted += tx.send_burst(&[frame.as_slice(); 8][..k]) as u64;
            }
            pf.poll();
            tx.reap_tx();
            *got += rx.recv(|f, _| assert_eq!(f.len(), 1500)) as u64;
            clock.advance(STEP_NS);
        }
        clock.now_ns() - start
    };
    let mut got = 0;
    // 100 frames fit the flow's queue (128): all arrive, at the cap. At 100 Mbit/s a 1500-byte
    // frame takes 120 µs; the limiter tolerates a burst of two jumbo frames, 2 × 9,019 B =
    // 1,443.04 µs. So frame k (from 0) may leave at k × 120 µs − 1,443.04 µs, and the last,
    // k = 99, at 10,436.96 µs: it arrives in the round after (rounds are 10 µs).
    let elapsed_ns = burst(&mut pf, 100, &mut got);
    assert_eq!((got, dropped()), (100, 0), "held frames all leave");
    let last_ns = 99 * 120_000 - 2 * 9_019 * 80;
    assert!(
        (last_ns..=last_ns + 2 * STEP_NS).contains(&elapsed_ns),
        "the last frame left at its time under the cap: {elapsed_ns} ns, due {last_ns} ns"
    );
    // Frames 0 to 12 fit the burst (12 × 120 µs ≤ 1,443.04 µs) and pass; the other 87 wait.
    let stats = counters.snapshot();
    assert_eq!(stats.flow_cap_exceeded, 87, "{stats:?}");
    // 400 at once overflow it: the excess is dropped and counted in both places.
    burst(&mut pf, 400, &mut got);
    let stats = counters.snapshot();
    assert!(dropped() > 0 && got + dropped() == 500, "got {got}, dropped {}", dropped());
    assert_eq!(stats.shaper_drops, dropped());
    assert_eq!(tx.stats().tx_completed, 500, "the sender's completions do not wait");
    // Taking the shaper away releases nothing twice and traffic flows unshaped.
    pf.set_shaper(0, None).unwrap();
    assert_eq!(tx.send_burst(&[frame.as_slice(); 8]), 8);
    pf.poll();
    assert_eq!(rx.recv(|_, _| {}), 8);
}

#[test]
fn a_chain_split_across_two_polls_keeps_its_bytes_while_other_vfs_send() {
    // Found by `vnic-lab run`: a jumbo frame's chain (3 descriptors) that a 32-descriptor burst
    // cut in two was finished in a later poll, after other VFs' frames had gone through the
    // engine's gather buffer, and left with their header bytes.
    let mut pf = PhysicalFunction::new(4).unwrap();
    pf.set_num_vfs(3).unwrap();
    for vf in 0..3 {
        pf.set_mtu(vf, 9001).unwrap();
    }
    let w0 = guest(&mut pf, 0, 0x10_0000_0000, 16 * MB);
    let w1 = guest(&mut pf, 1, 0x20_0000_0000, 16 * MB);
    let w2 = guest(&mut pf, 2, 0x30_0000_0000, 16 * MB);
    let mut a = queue(&mut pf, 0, &w0, 0, 256);
    let mut b = queue(&mut pf, 1, &w1, 0, 256);
    let mut rx = queue(&mut pf, 2, &w2, 0, 256);
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for round in 0..40u32 {
        // 11 jumbo frames from A are 33 descriptors: the last chain straddles two polls.
        let fa: Vec<Vec<u8>> = (0..11).map(|k| udp(9015, 0, 2, 1, round * 100 + k)).collect();
        let fb: Vec<Vec<u8>> = (0..3).map(|k| udp(9015, 1, 2, 2, round * 100 + 50 + k)).collect();
        let refs: Vec<&[u8]> = fa.iter().map(Vec::as_slice).collect();
        assert_eq!(a.send_burst(&refs), 11);
        let refs: Vec<&[u8]> = fb.iter().map(Vec::as_slice).collect();
        assert_eq!(b.send_burst(&refs), 3);
        sent.extend(fa);
        sent.extend(fb);
        for _ in 0..4 {
            pf.poll();
            a.reap_tx();
            b.reap_tx();
            rx.recv(|f, _| got.push(f.to_vec()));
        }
    }
    assert_eq!(got.len(), sent.len());
    got.sort();
    sent.sort();
    assert!(got == sent, "every frame arrives byte for byte");
}

/// The ENI's security groups and its subnet's NACL in the device: a frame their rules refuse
/// is dropped and counted on the side that refused it; a NACL applies only to frames that
/// cross the subnet's boundary; a new connection beyond the conntrack allowance is refused.
#[test]
fn security_groups_and_nacls_filter_every_frame_in_the_device() {
    use vnic::policy::conntrack::{EniFilter, Timeouts};
    use vnic::policy::nacl::Nacl;
    use vnic::policy::sg::{CompiledGroups, Peer, SecurityGroup, SgRule};
    use vnic::policy::{Cidr, Direction, Ports, Protocol, Quotas};
    let q = Quotas::default();
    let compile = |g: &SecurityGroup| {
        CompiledGroups::compile(&[g], &std::collections::BTreeMap::new(), &q).unwrap()
    };
    let udp_from = |cidr: &str, port: u16| {
        SgRule::new(Protocol::Number(17), Ports::port(port), Peer::Cidr(cidr.parse().unwrap()))
    };
    let policy = |g: &SecurityGroup, subnet: &str, nacl: Nacl, max: usize| VfPolicy {
        filter: EniFilter::new(compile(g), max, Timeouts::default()),
        subnet: subnet.parse::<Cidr>().unwrap(),
        nacl: Arc::new(nacl),
        flow_log: None,
    };
    let mut pf = PhysicalFunction::new(4).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = guest(&mut pf, 0, 0x10_0000_0000, 4 * MB);
    let w1 = guest(&mut pf, 1, 0x20_0000_0000, 4 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 64);
    let mut rx = queue(&mut pf, 1, &w1, 0, 64);
    let mut round = |pf: &mut PhysicalFunction, frames: &[Vec<u8>]| {
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert_eq!(tx.send_burst(&refs), refs.len());
        pf.poll();
        tx.reap_tx();
        rx.recv(|_, _| {})
    };
    // `udp` sends 10.0.0.1:sport -> 10.0.0.2:9000 from VF 0 to VF 1.
    let frames = |n: u16| (0..n).map(|k| udp(128, 0, 1, 40_000 + k, 0)).collect::<Vec<_>>();
    let mut server = SecurityGroup::empty("sg-server", "vpc");
    server.authorize(Direction::Inbound, udp_from("10.0.0.1/32", 9000), &q).unwrap();
    let client = SecurityGroup::new("sg-client", "vpc");
    pf.set_policy(0, Some(policy(&client, "10.0.0.0/24", Nacl::vpc_default("acl"), 100))).unwrap();
    pf.set_policy(1, Some(policy(&server, "10.0.0.0/24", Nacl::vpc_default("acl"), 100))).unwrap();
    assert_eq!(round(&mut pf, &frames(3)), 3, "allowed both ways");
    // A server that allows only 8000: refused on arrival.
    let mut other = SecurityGroup::empty("sg-server", "vpc");
    other.authorize(Direction::Inbound, udp_from("10.0.0.1/32", 8000), &q).unwrap();
    pf.set_policy(1, Some(policy(&other, "10.0.0.0/24", Nacl::vpc_default("acl"), 100))).unwrap();
    assert_eq!(round(&mut pf, &frames(2)), 0);
    assert_eq!(pf.vf(1).unwrap().totals().1.rx_security_group_drops, 2);
    // A NACL that denies everything does not apply inside the subnet ...
    pf.set_policy(1, Some(policy(&server, "10.0.0.0/24", Nacl::new("acl-deny"), 100))).unwrap();
    assert_eq!(round(&mut pf, &frames(2)), 2);
    // ... but does to a sender outside it (the server's subnet is now 10.0.0.2/31).
    pf.set_policy(1, Some(policy(&server, "10.0.0.2/31", Nacl::new("acl-deny"), 100))).unwrap();
    assert_eq!(round(&mut pf, &frames(2)), 0);
    assert_eq!(pf.vf(1).unwrap().totals().1.rx_nacl_drops, 2);
    // A client whose group allows nothing out.
    pf.set_policy(1, Some(policy(&server, "10.0.0.0/24", Nacl::vpc_default("acl"), 100))).unwrap();
    let mute = SecurityGroup::empty("sg-mute", "vpc");
    pf.set_policy(0, Some(policy(&mute, "10.0.0.0/24", Nacl::vpc_default("acl"), 100))).unwrap();
    assert_eq!(round(&mut pf, &frames(2)), 0);
    assert_eq!(pf.vf(0).unwrap().totals().1.tx_security_group_drops, 2);
    // The server tracks one connection at most: the second flow is refused.
    pf.set_policy(0, Some(policy(&client, "10.0.0.0/24", Nacl::vpc_default("acl"), 100))).unwrap();
    pf.set_policy(1, Some(policy(&server, "10.0.0.0/24", Nacl::vpc_default("acl"), 1))).unwrap();
    assert_eq!(round(&mut pf, &frames(2)), 1);
    assert_eq!(pf.vf(1).unwrap().totals().1.conntrack_allowance_exceeded, 1);
    assert_eq!(pf.policy(1).unwrap().unwrap().filter.conntrack().len(), 1);
    // Without a policy nothing is filtered.
    pf.set_policy(1, None).unwrap();
    assert_eq!(round(&mut pf, &frames(2)), 2);
}

/// An uplink that keeps what it is given, and the size of each batch.
#[derive(Default)]
struct Wire(std::sync::Mutex<Vec<Vec<u8>>>, std::sync::Mutex<Vec<usize>>);
impl vnic::switch::Uplink for Wire {
    fn transmit(&self, frame: &[u8]) {
        self.0.lock().unwrap().push(frame.to_vec());
    }

    fn transmit_batch(&self, batch: &vnic::switch::FrameBatch) {
        self.1.lock().unwrap().push(batch.len());
        batch.iter().for_each(|f| self.transmit(f));
    }
}

#[test]
fn frames_for_the_uplink_leave_in_one_batch_per_burst_in_order() {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let wire = Arc::new(Wire::default());
    pf.set_uplink(wire.clone());
    let w0 = guest(&mut pf, 0, 0, 8 * MB);
    let w1 = guest(&mut pf, 1, 0, 8 * MB);
    let mut tx = queue(&mut pf, 0, &w0, 0, 256);
    let mut rx = queue(&mut pf, 1, &w1, 0, 256);
    // A burst of BURST frames, every fourth to VF 1 and the rest to MACs no VF has, short and
    // long (copied once); then BURST / 2 more.
    let frames: Vec<Vec<u8>> = (0..BURST as u32 + BURST as u32 / 2)
        .map(|i| {
            let mut f = udp(if i % 2 == 0 { 64 } else { 1500 }, 0, 1, 1, i);
            if i % 4 != 0 {
                f[..6].copy_from_slice(&MacAddr::local(100 + i).0);
            }
            f
        })
        .collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert_eq!(tx.send_burst(&refs[..BURST]), BURST);
    pf.poll();
    assert_eq!(tx.send_burst(&refs[BURST..]), BURST / 2);
    pf.poll();
    let out: Vec<Vec<u8>> =
        frames.iter().enumerate().filter(|(i, _)| i % 4 != 0).map(|(_, f)| f.clone()).collect();
    assert!(*wire.0.lock().unwrap() == out, "every frame for the uplink, whole and in order");
    assert_eq!(*wire.1.lock().unwrap(), vec![BURST * 3 / 4, BURST / 2 * 3 / 4]);
    assert_eq!(rx.recv(|_, _| {}), frames.len() / 4);
}

#[test]
fn frames_copied_once_arrive_whole_on_every_route() {
    // Either side of the threshold, a tail one byte long, and frames that span RX buffers.
    let sizes = [
        COPY_ONCE_MIN - 1,
        COPY_ONCE_MIN,
        COPY_ONCE_MIN + 1,
        HEADER_BYTES + 2049,
        1514,
        4097,
        9015,
    ];
    let mut pf = PhysicalFunction::new(3).unwrap();
    pf.set_num_vfs(3).unwrap();
    let wire = Arc::new(Wire::default());
    pf.set_uplink(wire.clone());
    let ws: Vec<DmaWindow> =
        (0..3).map(|v| guest(&mut pf, v, 0x10_0000_0000 * (u64::from(v) + 1), 8 * MB)).collect();
    for v in 0..3 {
        pf.set_mtu(v, 9001).unwrap();
    }
    let mut d: Vec<QueuePairDriver> =
        (0..3).map(|v| queue(&mut pf, v, &ws[usize::from(v)], 0, 256)).collect();
    let mut seq = 0;
    let mut next = |len: usize, to: [u8; 6]| {
        seq += 1;
        let mut f = udp(len, 0, 1, 77, seq);
        f[..6].copy_from_slice(&to);
        f
    };
    let sent = |d: &mut Vec<QueuePairDriver>, pf: &mut PhysicalFunction, f: &[u8]| {
        assert_eq!(d[0].send_burst(&[f]), 1);
        pf.poll();
        d[0].reap_tx();
    };
    let received = |d: &mut QueuePairDriver| {
        let mut got = Vec::new();
        d.recv(|f, _| got.push(f.to_vec()));
        got
    };
    // To one VF (the tail goes straight from VF 0's TX buffer into VF 1's RX buffers).
    for &len in &sizes {
        let f = next(len, mac(1).0);
        sent(&mut d, &mut pf, &f);
        assert!(received(&mut d[1]) == vec![f], "{len} bytes to one VF");
    }
    // Broadcast: both other VFs and the wire get every byte.
    for &len in &sizes {
        let f = next(len, MacAddr::BROADCAST.0);
        sent(&mut d, &mut pf, &f);
        assert!(received(&mut d[1]) == vec![f.clone()], "{len} bytes flooded, VF 1");
        assert!(received(&mut d[2]) == vec![f.clone()], "{len} bytes flooded, VF 2");
        assert!(wire.0.lock().unwrap().pop() == Some(f), "{len} bytes flooded, the wire");
    }
    // To a MAC no VF has: out through the uplink, whole.
    for &len in &sizes {
        let f = next(len, MacAddr::local(99).0);
        sent(&mut d, &mut pf, &f);
        assert!(wire.0.lock().unwrap().pop() == Some(f), "{len} bytes to the uplink");
    }
    // Through a shaper, which may hold a frame after its TX buffer is reused.
    use vnic::shaper::{FlowKey, ShaperConfig};
    let cap = |_: &FlowKey| 1_000_000_000_000u64;
    pf.set_shaper(0, Some((ShaperConfig::default(), Box::new(cap)))).unwrap();
    for &len in &sizes {
        let f = next(len, mac(1).0);
        sent(&mut d, &mut pf, &f);
        pf.poll();
        assert!(received(&mut d[1]) == vec![f], "{len} bytes shaped");
    }
    let (q0, v0) = pf.vf(0).unwrap().totals();
    assert_eq!((q0.tx_packets, q0.tx_bad_desc, v0.tx_malformed), (4 * sizes.len() as u64, 0, 0));
    assert_eq!(d[0].stats().tx_errors, 0);
}

/// VF 0 with 1 MiB of memory and its TX ring driven by hand ([`raw_tx`]), sending to VF 1's
/// driver (8 MiB, a queue pair of 64).
struct HandDriven {
    pf: PhysicalFunction,
    w0: DmaWindow,
    rx: QueuePairDriver,
    layout: QueuePairLayout,
    sq: SubmissionProducer<TxDesc>,
    cq: CompletionConsumer<TxCompletion>,
}

fn hand_driven_sender() -> HandDriven {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = guest(&mut pf, 0, 0, MB);
    let w1 = guest(&mut pf, 1, 0x100_0000, 8 * MB);
    let rx = queue(&mut pf, 1, &w1, 0, 64);
    let (layout, sq, cq) = raw_tx(&mut pf, 0, &w0);
    HandDriven { pf, w0, rx, layout, sq, cq }
}

#[test]
fn a_frame_copied_once_is_checked_whole_before_any_byte_moves() {
    let HandDriven { mut pf, w0, mut rx, layout, mut sq, mut cq } = hand_driven_sender();
    // A well-formed 1000-byte frame whose header lies inside VF 0's window and whose tail
    // runs 400 bytes past its end; then one whose address wraps; then a good one.
    let frame = udp(1000, 0, 1, 1, 1);
    let end = MB as u64;
    w0.write(end - 600, &frame[..600]).unwrap();
    let good_at = layout.tx_bufs as u64;
    w0.write(good_at, &frame).unwrap();
    let desc = |addr, id| TxDesc::new(addr, 1000, id).with_first(true).with_last(true);
    assert!(sq.push(desc(end - 600, 1).with_phase(true)));
    assert!(sq.push(desc(u64::MAX - 100, 2).with_phase(true)));
    assert!(sq.push(desc(good_at, 3).with_phase(true)));
    pf.poll();
    let mut done = [TxCompletion::default(); 4];
    let n = cq.pop_burst(&mut done);
    let got: Vec<(u16, u8)> = done[..n].iter().map(|c| (c.req_id, c.status)).collect();
    assert_eq!(got, vec![(1, TX_STATUS_BAD_DESC), (2, TX_STATUS_BAD_DESC), (3, TX_STATUS_OK)]);
    let mut frames = Vec::new();
    rx.recv(|f, _| frames.push(f.to_vec()));
    assert!(frames == vec![frame], "only the good frame arrives, whole");
    let (q0, v0) = pf.vf(0).unwrap().totals();
    assert_eq!((q0.tx_bad_desc, q0.tx_packets, v0.tx_malformed), (2, 1, 0));
}

#[test]
fn short_frames_arrive_exact_wherever_their_buffer_sits_in_the_window() {
    // A frame of at most 128 bytes in one buffer is read 128 bytes at a time when that much of
    // the window follows its address (the bytes past the frame are ignored), and exactly
    // otherwise: at the window's very end, and one byte short of fitting, both deliver the
    // frame byte for byte; one byte past the end is refused. One frame a poll: some buffers
    // overlap.
    let HandDriven { mut pf, w0, mut rx, layout, mut sq, mut cq } = hand_driven_sender();
    let end = MB as u64;
    let buf = layout.tx_bufs as u64;
    let cases = [(60, buf), (128, buf), (60, end - 60), (128, end - 128), (100, end - 127)];
    for (id, (len, at)) in cases.into_iter().enumerate() {
        let frame = udp(len, 0, 1, 1, id as u32);
        w0.write(at, &frame).unwrap();
        // Whatever follows a short frame in its buffer is not part of it.
        if at + 128 <= end {
            w0.write(at + len as u64, &vec![0xee; 128 - len]).unwrap();
        }
        let desc = TxDesc::new(at, len as u16, id as u16).with_first(true).with_last(true);
        assert!(sq.push(desc.with_phase(true)));
        pf.poll();
        let done = cq.pop().expect("a completion");
        assert_eq!((done.req_id, done.status), (id as u16, TX_STATUS_OK), "{len} B at {at:#x}");
        let mut frames = Vec::new();
        rx.recv(|f, _| frames.push(f.to_vec()));
        assert!(frames == vec![frame], "{len} B at {at:#x}: whole and nothing after it");
    }
    let past = TxDesc::new(end - 63, 64, 9).with_first(true).with_last(true);
    assert!(sq.push(past.with_phase(true)));
    pf.poll();
    let done = cq.pop().expect("a completion");
    assert_eq!((done.req_id, done.status), (9, TX_STATUS_BAD_DESC));
    assert_eq!(rx.recv(|_, _| {}), 0);
    let (q0, _) = pf.vf(0).unwrap().totals();
    assert_eq!((q0.tx_bad_desc, q0.tx_packets), (1, cases.len() as u64));
}
