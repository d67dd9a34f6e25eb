//! Bringing a VF up through its registers and admin queue, as ENA's driver does.

use std::sync::Arc;

use vnic::device::admin::{RegisterSpace, aenq_group, feature, opcode, reg, status};
use vnic::device::{DmaWindow, Iova, PhysicalFunction};
use vnic::driver::{AdminDriver, AdminError, QueuePairDriver, QueuePairLayout};
use vnic::frame::{MacAddr, build_udp_frame};
use vnic::ring::SharedRegion;

const MB: usize = 1 << 20;

fn setup() -> (PhysicalFunction, DmaWindow, DmaWindow) {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = DmaWindow::new(Arc::new(SharedRegion::anonymous(16 * MB).unwrap()), Iova(0x8000_0000));
    let w1 = DmaWindow::new(Arc::new(SharedRegion::anonymous(16 * MB).unwrap()), Iova(0x9000_0000));
    pf.assign(0, w0.clone()).unwrap();
    pf.assign(1, w1.clone()).unwrap();
    (pf, w0, w1)
}

/// The MAC `set_num_vfs` gives VF 1.
fn pf_mac_of_vf1() -> [u8; 6] {
    MacAddr::local(2).0
}

#[test]
fn a_driver_brings_a_vf_up_through_the_admin_queue() {
    let (mut pf, w0, w1) = setup();
    let mut regs = pf.registers(0).unwrap();
    assert_eq!(regs.read32(reg::VERSION), 0x200);
    assert_eq!((regs.read32(reg::CAPS) >> 8) & 0xff, 48, "48-bit DMA");
    assert_eq!(regs.read32(reg::DEV_STS) & 1, 1, "ready");
    assert_eq!(regs.read32(0x1000), u32::MAX, "outside the register space");
    let mut admin = AdminDriver::bring_up(w0.clone(), 12 * MB, &mut regs).unwrap();
    let events = admin.events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].group, events[0].payload[0]), (aenq_group::LINK_CHANGE, 1), "link up");

    let limits = admin.execute(&mut regs, opcode::GET_FEATURE, &[feature::MAX_QUEUES_NUM]).unwrap();
    assert_eq!((limits.words[1], limits.words[2]), (128, 16384));
    admin.execute(&mut regs, opcode::SET_FEATURE, &[feature::MTU, 9001]).unwrap();
    let mtu = admin.execute(&mut regs, opcode::GET_FEATURE, &[feature::MTU]).unwrap();
    assert_eq!(mtu.words[1], 9001);
    let mac = MacAddr([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]);
    let (a, b) = (u32::from_le_bytes([2, 0xaa, 0xbb, 0xcc]), u32::from_le_bytes([0xdd, 1, 0, 0]));
    let set_mac = [feature::DEVICE_ATTRIBUTES, a, b];
    assert!(admin.execute(&mut regs, opcode::SET_FEATURE, &set_mac).is_err(), "not trusted");
    let mut regs = {
        pf.set_trusted(0, true).unwrap();
        pf.registers(0).unwrap()
    };
    // Not even a trusted VF may take another VF's MAC.
    let [o0, o1, o2, o3, o4, o5] = pf_mac_of_vf1();
    let steal = [
        feature::DEVICE_ATTRIBUTES,
        u32::from_le_bytes([o0, o1, o2, o3]),
        u32::from_le_bytes([o4, o5, 0, 0]),
    ];
    assert!(admin.execute(&mut regs, opcode::SET_FEATURE, &steal).is_err(), "VF 1's MAC");
    admin.execute(&mut regs, opcode::SET_FEATURE, &set_mac).unwrap();
    let attrs =
        admin.execute(&mut regs, opcode::GET_FEATURE, &[feature::DEVICE_ATTRIBUTES]).unwrap();
    assert_eq!((attrs.words[1], attrs.words[2]), (a, b));
    admin
        .execute(&mut regs, opcode::SET_FEATURE, &[feature::INTERRUPT_MODERATION, 64, 20])
        .unwrap();

    let mut tx = QueuePairDriver::create(w0.clone(), QueuePairLayout::new(0, 256, 2048)).unwrap();
    let (txq, rxq) = admin.create_queue_pair(&mut regs, &tx).unwrap();
    assert_eq!((txq, rxq), (0, 1), "ENA numbers queue pair q as 2q and 2q + 1");
    assert_eq!(pf.vf(0).unwrap().mtu(), 9001);
    assert_eq!(pf.port(0).unwrap().mac, mac);
    assert_eq!(pf.vf(0).unwrap().queue_count(), 1);

    // Traffic through the queue pair the admin queue made.
    let mut rx = QueuePairDriver::create(w1.clone(), QueuePairLayout::new(0, 256, 2048)).unwrap();
    pf.create_queue_pair(1, rx.spec()).unwrap();
    rx.refill_rx();
    let mut buf = [0u8; 500];
    let frame = build_udp_frame(
        &mut buf,
        500,
        pf.port(1).unwrap().mac,
        mac,
        ([10, 0, 0, 1], [10, 0, 0, 2]),
        (1, 2),
    )
    .to_vec();
    assert_eq!(tx.send_burst(&[&frame, &frame, &frame]), 3);
    pf.poll();
    assert_eq!(rx.recv(|f, _| assert_eq!(f, &frame[..])), 3);

    let mut regs = pf.registers(0).unwrap();
    let stats = admin.execute(&mut regs, opcode::GET_STATS, &[]).unwrap();
    assert_eq!((stats.words[0], stats.words[2]), (3, 1500), "tx_packets, tx_bytes");
    assert!(pf.send_keep_alive(0).unwrap());
    let keep_alive = admin.events();
    assert_eq!(keep_alive[0].group, aenq_group::KEEP_ALIVE);

    // DEV_CTL reset: queues and admin rings gone, counters kept, ready again, brought up anew.
    let mut regs = pf.registers(0).unwrap();
    regs.write32(reg::DEV_CTL, 1);
    assert_eq!(regs.read32(reg::DEV_STS) & 1, 1);
    assert_eq!(pf.vf(0).unwrap().queue_count(), 0);
    assert_eq!(pf.vf(0).unwrap().totals().0.tx_packets, 3);
    drop(admin);
    let mut regs = pf.registers(0).unwrap();
    let mut admin = AdminDriver::bring_up(w0, 12 * MB, &mut regs).unwrap();
    assert!(admin.execute(&mut regs, opcode::GET_FEATURE, &[feature::MTU]).is_ok());
}

#[test]
fn bad_admin_commands_get_error_statuses_not_panics() {
    let (mut pf, w0, _) = setup();
    let mut regs = pf.registers(0).unwrap();
    let mut admin = AdminDriver::bring_up(w0.clone(), 12 * MB, &mut regs).unwrap();
    let fails = |r: Result<_, AdminError>, want: u8| match r {
        Err(AdminError::Status { status, .. }) => assert_eq!(status, want),
        other => panic!("expected status {want}, got {other:?}"),
    };
    fails(admin.execute(&mut regs, 99, &[]), status::BAD_OPCODE);
    fails(
        admin.execute(&mut regs, opcode::SET_FEATURE, &[feature::MTU, 70_000]),
        status::ILLEGAL_PARAMETER,
    );
    fails(
        admin.execute(&mut regs, opcode::SET_FEATURE, &[feature::MTU, 9002]),
        status::ILLEGAL_PARAMETER,
    );
    fails(
        admin.execute(&mut regs, opcode::CREATE_SQ, &[1 | 7 << 16, 256, 0, 0]),
        status::ILLEGAL_PARAMETER,
    );
    fails(
        admin.execute(&mut regs, opcode::SET_FEATURE, &[feature::RSS_INDIRECTION_TABLE, 3, 5]),
        status::ILLEGAL_PARAMETER,
    );
    fails(
        admin.execute(
            &mut regs,
            opcode::SET_FEATURE,
            &[feature::DEVICE_ATTRIBUTES, 0xffff_ffff, 0xffff],
        ),
        status::ILLEGAL_PARAMETER,
    );
    fails(admin.execute(&mut regs, opcode::DESTROY_SQ, &[0]), status::ILLEGAL_PARAMETER);
    fails(admin.execute(&mut regs, opcode::GET_FEATURE, &[77]), status::UNSUPPORTED_OPCODE);
    // A queue whose rings point outside the window, or at memory holding no ring.
    let cq = admin.execute(&mut regs, opcode::CREATE_CQ, &[256, 0xdead_0000, 0]).unwrap().words[0];
    admin.execute(&mut regs, opcode::CREATE_SQ, &[1 | cq << 16, 256, 0, 0]).unwrap();
    let cq2 = admin.execute(&mut regs, opcode::CREATE_CQ, &[256, 0x8000_0000, 0]).unwrap().words[0];
    fails(
        admin.execute(&mut regs, opcode::CREATE_SQ, &[2 | cq2 << 16, 256, 0x8000_1000, 0]),
        status::ILLEGAL_PARAMETER,
    );
    // Random commands.
    let mut x = 0x1234_5678_9abc_def1u64;
    for _ in 0..5_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let words: Vec<u32> = (0..15).map(|k| (x.rotate_left(k * 7) >> 3) as u32).collect();
        let _ = admin.execute(&mut regs, (x % 14) as u8, &words);
    }
    // Registers written with nonsense: the admin queue moved outside the window answers nothing.
    regs.write32(reg::AQ_BASE_LO, 0x10);
    regs.write32(0x3, 0xffff_ffff);
    regs.write32(0x9999, 1);
    assert!(pf.vf(0).unwrap().queue_count() <= 1);
}
