//! Bringing a VF up through its registers and admin queue exactly as ENA's driver does, and
//! what a buggy or hostile driver gets for commands ENA would refuse.

use std::sync::Arc;

use vnic::abi::admin::{
    self, Command, ControlBuffer, CreateCq, CreateSq, Direction, Entry, GetFeature, GetStats,
    MtuInfo, RssHashFunctionInfo, RssIndirectionInfo, SetFeature, capability, feature, status,
};
use vnic::abi::aenq::Event;
use vnic::abi::regs::{self, RegisterSpace, dev_ctl, dev_sts, reset_reason};
use vnic::device::{DmaWindow, Iova, PhysicalFunction};
use vnic::driver::{AdminDriver, AdminError, QueuePairDriver, QueuePairLayout};
use vnic::frame::{MacAddr, build_udp_frame};
use vnic::ring::{INDEX_BLOCK_BYTES, SharedRegion};

const MB: usize = 1 << 20;
const W0: u64 = 0x8000_0000;

fn setup() -> (PhysicalFunction, DmaWindow, DmaWindow) {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = DmaWindow::new(Arc::new(SharedRegion::anonymous(16 * MB).unwrap()), Iova(W0));
    let w1 = DmaWindow::new(Arc::new(SharedRegion::anonymous(16 * MB).unwrap()), Iova(0x9000_0000));
    pf.assign(0, w0.clone()).unwrap();
    pf.assign(1, w1.clone()).unwrap();
    (pf, w0, w1)
}

fn status_of(r: Result<impl std::fmt::Debug, AdminError>) -> u8 {
    match r {
        Err(AdminError::Status { status, .. }) => status,
        Ok(_) => status::SUCCESS,
        other => panic!("expected a completion, got {other:?}"),
    }
}

#[test]
fn a_driver_brings_a_vf_up_as_enas_driver_does_and_traffic_flows() {
    let (mut pf, w0, w1) = setup();
    let mut regs = pf.registers(0).unwrap();
    // ENA spec 2.0 in VERSION (major 15:8); 48-bit DMA in CAPS 15:8; ready in DEV_STS bit 0.
    assert_eq!(regs.read32(regs::VERSION), 2 << 8);
    assert_eq!((regs.read32(regs::CAPS) >> 8) & 0xff, 48);
    assert_eq!(regs.read32(regs::DEV_STS) & 1, 1);
    assert_eq!(regs.read32(0x2000), u32::MAX, "outside the register space");
    let mut admin = AdminDriver::bring_up(w0.clone(), 12 * MB, &mut regs).unwrap();
    let info = *admin.info().unwrap();
    assert_eq!(info.version, 2 << 8, "read readless");
    assert_eq!(info.dma_width, 48);
    assert_eq!(info.attributes.mac, pf.port(0).unwrap().mac);
    assert_eq!(info.attributes.max_mtu, 9001);
    assert!(info.supports(feature::MAX_QUEUES_EXT) && info.supports(feature::RSS_HASH_FUNCTION));
    assert!(info.supports(feature::LLQ), "low-latency queues are offered");
    assert_eq!(info.llq.map(|l| (l.max_llq_num, l.max_llq_depth)), Some((8, 1024)));
    assert_ne!(info.attributes.capabilities & 1 << capability::ENI_STATS, 0);
    assert_eq!((info.max_queues.max_tx_sq_num, info.max_queues.max_rx_sq_depth), (128, 16384));
    assert_eq!(info.hints.driver_watchdog_timeout, 6000);
    let mut regs = pf.registers(0).unwrap();
    let events = admin.events(&mut regs).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, Event::LinkChange { up: true });

    admin.set_feature(&mut regs, SetFeature::Mtu(9001)).unwrap();
    let mtu: MtuInfo = admin.get_feature(&mut regs, feature::MTU).unwrap();
    assert_eq!(mtu.mtu, 9001);
    let mac = MacAddr([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]);
    let refused = admin.set_feature(&mut regs, SetFeature::Mac(mac));
    assert_eq!(status_of(refused), status::ILLEGAL_PARAMETER, "not trusted");
    pf.set_trusted(0, true).unwrap();
    let mut regs = pf.registers(0).unwrap();
    // Not even a trusted VF may take another VF's MAC.
    let vf1 = MacAddr::local(2);
    assert_eq!(status_of(admin.set_feature(&mut regs, SetFeature::Mac(vf1))), 5);
    admin.set_feature(&mut regs, SetFeature::Mac(mac)).unwrap();
    let attrs: admin::DeviceAttributes =
        admin.get_feature(&mut regs, feature::DEVICE_ATTRIBUTES).unwrap();
    assert_eq!(attrs.mac, mac);

    let mut tx = QueuePairDriver::create(w0.clone(), QueuePairLayout::new(0, 256, 2048)).unwrap();
    let queues = admin.create_queue_pair(&mut regs, &tx).unwrap();
    assert_eq!((queues.tx_sq, queues.rx_sq), (0, 1), "ENA numbers queue pair q as 2q, 2q + 1");
    assert_ne!(queues.tx_cq, queues.rx_cq);
    // RSS as ENA's driver sets it: the key and the table (RX CQ indices) in control buffers.
    let key: [u8; 40] = std::array::from_fn(|i| (i * 7 + 1) as u8);
    admin.set_rss_key(&mut regs, key).unwrap();
    let (func, bytes): (RssHashFunctionInfo, _) =
        admin.get_feature_with_buffer(&mut regs, feature::RSS_HASH_FUNCTION, 48).unwrap();
    assert_eq!(func.selected_func, admin::hash_function::TOEPLITZ);
    assert_eq!(&bytes[8..48], &key, "key_parts, reserved, then the key");
    admin.set_indirection_table(&mut regs, &[queues.rx_cq; 128]).unwrap();
    let (table, bytes): (RssIndirectionInfo, _) = admin
        .get_feature_with_buffer(&mut regs, feature::RSS_INDIRECTION_TABLE_CONFIG, 512)
        .unwrap();
    assert_eq!(table.size, 7, "128 entries");
    assert!(bytes.chunks(4).all(|e| u16::from_le_bytes([e[0], e[1]]) == queues.rx_cq));
    assert_eq!(pf.vf(0).unwrap().mtu(), 9001);
    assert_eq!(pf.port(0).unwrap().mac, mac);
    assert_eq!(pf.vf(0).unwrap().queue_count(), 1);

    // Traffic through the queue pair the admin queue made, posted with ENA's phase bits.
    let mut rx = QueuePairDriver::create(w1.clone(), QueuePairLayout::new(0, 256, 2048)).unwrap();
    pf.create_queue_pair(1, rx.spec()).unwrap();
    rx.refill_rx();
    let mut buf = [0u8; 500];
    let to = pf.port(1).unwrap().mac;
    let frame =
        build_udp_frame(&mut buf, 500, to, mac, ([10, 0, 0, 1], [10, 0, 0, 2]), (1, 2)).to_vec();
    // More than a ring's worth, so the phase flips on both rings.
    for _ in 0..100 {
        assert_eq!(tx.send_burst(&[&frame, &frame, &frame]), 3);
        pf.poll();
        assert_eq!(rx.recv(|f, _| assert_eq!(f, &frame[..])), 3);
        tx.reap_tx();
    }
    let mut regs = pf.registers(0).unwrap();
    let stats = admin.basic_stats(&mut regs).unwrap();
    assert_eq!((stats.tx_pkts, stats.tx_bytes), (300, 150_000));
    assert_eq!(admin.eni_stats(&mut regs).unwrap(), admin::EniStats::default(), "no shaper");
    let (reported, values) = admin.customer_metrics(&mut regs, 0b11_1111).unwrap();
    assert_eq!((reported, values), (0b1_1111, vec![0; 5]), "ids 0-4 counted, 5 not");
    let text = admin.extended_stats(&mut regs, 4096).unwrap();
    assert!(text.starts_with("tx_packets: 300\ntx_bytes: 150000\n"), "{text}");
    assert_eq!(admin.extended_stats(&mut regs, 11).unwrap(), "tx_packets", "cut to the buffer");
    assert!(pf.send_keep_alive(0).unwrap());
    let mut regs = pf.registers(0).unwrap();
    let keep_alive = admin.events(&mut regs).unwrap();
    assert_eq!(keep_alive[0].event, Event::KeepAlive { rx_drops: 0, tx_drops: 0 });

    admin.destroy_queue_pair(&mut regs, &queues).unwrap();
    assert_eq!(pf.vf(0).unwrap().queue_count(), 0);
    // A reset and a bring-up anew: counters kept.
    let mut regs = pf.registers(0).unwrap();
    admin.reset(&mut regs, reset_reason::NORMAL).unwrap();
    assert_eq!(pf.vf(0).unwrap().totals().0.tx_packets, 300);
    let mut regs = pf.registers(0).unwrap();
    let mut admin = AdminDriver::bring_up(w0, 12 * MB, &mut regs).unwrap();
    assert!(admin.get_feature::<MtuInfo>(&mut regs, feature::MTU).is_ok());
}

#[test]
fn readless_reads_land_in_memory_as_the_response_struct_lays_them_out() {
    let (mut pf, w0, _) = setup();
    let mut regs = pf.registers(0).unwrap();
    let resp = W0 + 0x1000;
    regs.write32(regs::MMIO_RESP_LO, resp as u32);
    regs.write32(regs::MMIO_RESP_HI, (resp >> 32) as u32);
    // Request id 15:0, register offset 31:16.
    regs.write32(regs::MMIO_REG_READ, (regs::CAPS << 16) | 0x4242);
    let mut b = [0u8; 8];
    w0.read(resp, &mut b).unwrap();
    // ena_admin_ena_mmio_req_read_less_resp: u16 req_id, u16 reg_off, u32 reg_val.
    let caps = regs.read32(regs::CAPS);
    assert_eq!(b[0..2], 0x4242u16.to_le_bytes());
    assert_eq!(b[2..4], (regs::CAPS as u16).to_le_bytes());
    assert_eq!(b[4..8], caps.to_le_bytes());
    // Outside the window: nothing is written, nothing breaks.
    regs.write32(regs::MMIO_RESP_LO, 0x10);
    regs.write32(regs::MMIO_RESP_HI, 0);
    regs.write32(regs::MMIO_REG_READ, 0x1);
}

#[test]
fn the_reset_handshake_shows_in_dev_sts_as_enas_driver_polls_it() {
    let (mut pf, w0, _) = setup();
    let mut admin = AdminDriver::bring_up(w0, 12 * MB, &mut pf.registers(0).unwrap()).unwrap();
    let mut regs = pf.registers(0).unwrap();
    regs.write32(regs::DEV_CTL, dev_ctl::DEV_RESET | reset_reason::ADMIN_TO << 28);
    let sts = regs.read32(regs::DEV_STS);
    assert_eq!(sts & dev_sts::RESET_IN_PROGRESS, 1 << 3);
    assert_eq!(sts & dev_sts::READY, 0);
    // A function in reset takes no admin work.
    regs.write32(regs::AQ_DB, 1);
    regs.write32(regs::DEV_CTL, 0);
    assert_eq!(regs.read32(regs::DEV_STS), dev_sts::READY);
    // Its admin queue is gone: the driver must set it up again (reset does).
    assert!(matches!(
        admin.get_feature::<MtuInfo>(&mut regs, feature::MTU),
        Err(AdminError::NoCompletion(_))
    ));
    admin.reset(&mut regs, reset_reason::NORMAL).unwrap();
    assert!(admin.get_feature::<MtuInfo>(&mut regs, feature::MTU).is_ok());
}

#[test]
fn the_keep_alive_watchdog_trips_when_keep_alives_stop() {
    let (mut pf, w0, _) = setup();
    let mut admin = AdminDriver::bring_up(w0, 12 * MB, &mut pf.registers(0).unwrap()).unwrap();
    let s = 1_000_000_000u64;
    admin.watchdog(&mut pf.registers(0).unwrap(), 0).unwrap();
    for t in 1..=5 {
        assert!(pf.send_keep_alive(0).unwrap());
        let events = admin.watchdog(&mut pf.registers(0).unwrap(), t * s).unwrap();
        assert!(events.iter().any(|e| matches!(e.event, Event::KeepAlive { .. })));
    }
    // Silence: within the device's hinted 6 s the watchdog holds, past it, it trips.
    admin.watchdog(&mut pf.registers(0).unwrap(), 11 * s).unwrap();
    let tripped = admin.watchdog(&mut pf.registers(0).unwrap(), 11 * s + 1_000_000);
    assert!(matches!(tripped, Err(AdminError::KeepAliveTimeout { timeout_ms: 6000, .. })));
    let mut regs = pf.registers(0).unwrap();
    admin.reset(&mut regs, reset_reason::KEEP_ALIVE_TO).unwrap();
    assert_eq!(regs.read32(regs::DEV_CTL) >> 28, 0, "released");
}

/// A raw command entry: opcode at byte 2, the payload from byte 4.
fn raw(opcode: u8, payload: &[(usize, &[u8])]) -> Entry {
    let mut e = [0u8; 64];
    e[2] = opcode;
    for &(at, bytes) in payload {
        e[at..at + bytes.len()].copy_from_slice(bytes);
    }
    e
}

#[test]
fn bad_admin_commands_get_enas_error_statuses_not_panics() {
    let (mut pf, w0, _) = setup();
    let mut regs = pf.registers(0).unwrap();
    let mut admin = AdminDriver::bring_up(w0.clone(), 12 * MB, &mut regs).unwrap();
    let mut send = |cmd: Command| status_of(admin.execute(&mut regs, &cmd));
    let set = |v| Command::SetFeature(v);
    assert_eq!(send(set(SetFeature::Mtu(70_000))), status::ILLEGAL_PARAMETER);
    assert_eq!(send(set(SetFeature::Mtu(9002))), status::ILLEGAL_PARAMETER);
    assert_eq!(send(set(SetFeature::Mac(MacAddr([0xff; 6])))), status::ILLEGAL_PARAMETER);
    let none = ControlBuffer { length: 48, address: 0x10 };
    let key = |c| SetFeature::RssHashFunction { selected: 1, init_val: 0, key: c };
    assert_eq!(send(set(key(none))), status::MALFORMED_REQUEST, "key outside the window");
    let short = ControlBuffer { length: 47, address: W0 + 0x10_0000 };
    assert_eq!(send(set(key(short))), status::MALFORMED_REQUEST, "key buffer too short");
    let zeros = ControlBuffer { length: 48, address: W0 + 0x10_0000 };
    assert_eq!(send(set(key(zeros))), status::MALFORMED_REQUEST, "key_parts is not 10");
    let crc = SetFeature::RssHashFunction { selected: 2, init_val: 0, key: zeros };
    assert_eq!(send(set(crc)), status::ILLEGAL_PARAMETER, "only Toeplitz");
    let inline = SetFeature::RssIndirectionTable { log_size: 7, inline: Some((3, 9)), table: None };
    assert_eq!(send(set(inline)), status::ILLEGAL_PARAMETER, "CQ 9 is no RX queue's");
    let table = SetFeature::RssIndirectionTable { log_size: 7, inline: None, table: Some(none) };
    assert_eq!(send(set(table)), status::MALFORMED_REQUEST, "table outside the window");
    let wide = SetFeature::RssIndirectionTable { log_size: 9, inline: None, table: Some(zeros) };
    assert_eq!(send(set(wide)), status::ILLEGAL_PARAMETER, "512 entries");
    let groups = SetFeature::AenqConfig { enabled_groups: 1 << 2 };
    assert_eq!(send(set(groups)), status::ILLEGAL_PARAMETER, "warnings are not reported");
    let get = |id| Command::GetFeature(GetFeature { feature: id, version: 0, control: None });
    assert_eq!(send(get(77)), status::UNSUPPORTED_OPCODE);
    let llq_192 = admin::LlqInfo {
        header_location_ctrl_enabled: 1,
        entry_size_ctrl_enabled: vnic::abi::llq::entry_size::B192,
        desc_num_before_header_enabled: 2,
        descriptors_stride_ctrl_enabled: 2,
        ..Default::default()
    };
    let llq_64 = admin::LlqInfo { entry_size_ctrl_enabled: 8, ..llq_192 };
    assert_eq!(send(set(SetFeature::Llq(llq_64))), status::ILLEGAL_PARAMETER, "no such entry size");
    let header_ring =
        admin::LlqInfo { header_location_ctrl_enabled: 2, entry_size_ctrl_enabled: 1, ..llq_192 };
    assert_eq!(send(set(SetFeature::Llq(header_ring))), status::ILLEGAL_PARAMETER, "header ring");
    let stats = |t, control| {
        Command::GetStats(GetStats {
            stats_type: t,
            scope: 1,
            queue_idx: 0,
            device_id: 0xffff,
            requested_metrics: 1,
            control,
        })
    };
    assert_eq!(
        send(stats(admin::stats_type::EXTENDED, None)),
        status::MALFORMED_REQUEST,
        "no buffer"
    );
    assert_eq!(send(stats(9, None)), status::UNSUPPORTED_OPCODE);
    let metrics = admin::stats_type::CUSTOMER_METRICS;
    assert_eq!(send(stats(metrics, None)), status::MALFORMED_REQUEST, "no buffer");
    assert_eq!(send(Command::DestroySq { sq_idx: 0, direction: Direction::Tx }), 5);
    assert_eq!(send(Command::DestroyCq { cq_idx: 3 }), status::ILLEGAL_PARAMETER);
    let sq = |cq_idx, depth, ring_base, placement| {
        Command::CreateSq(CreateSq {
            direction: Direction::Tx,
            placement,
            completion_policy: admin::CompletionPolicy::DescOnDemand,
            physically_contiguous: true,
            cq_idx,
            depth,
            ring_base,
            head_writeback: 0,
        })
    };
    let host = admin::Placement::Host;
    assert_eq!(send(sq(7, 256, W0, host)), status::ILLEGAL_PARAMETER, "no CQ 7");
    let cq = |entry_words, depth, ring_base| {
        Command::CreateCq(CreateCq {
            interrupt_mode: true,
            entry_words,
            depth,
            msix_vector: 0,
            ring_base,
        })
    };
    assert_eq!(send(cq(3, 256, W0 + 0x1000)), status::ILLEGAL_PARAMETER, "3-word entries");
    assert_eq!(send(cq(2, 100, W0 + 0x1000)), status::ILLEGAL_PARAMETER, "not a power of two");
    assert_eq!(send(cq(2, 256, 0x100)), status::ILLEGAL_PARAMETER, "no room for the index block");
    // A CQ outside the window is accepted (its ring is attached when the pair is complete) ...
    assert_eq!(send(cq(2, 256, 0xdead_0000)), status::SUCCESS);
    let rx_llq = match sq(0, 256, 0, admin::Placement::Device) {
        Command::CreateSq(c) => Command::CreateSq(CreateSq { direction: Direction::Rx, ..c }),
        _ => unreachable!(),
    };
    assert_eq!(send(rx_llq), status::ILLEGAL_PARAMETER, "RX queues are never low-latency");
    assert_eq!(send(sq(0, 128, W0 + 0x4000, host)), 5, "depth differs from its CQ's");
    assert_eq!(send(sq(0, 256, W0 + 0x4000, host)), status::SUCCESS);
    assert_eq!(send(cq(4, 256, W0 + 0x10_0000 + INDEX_BLOCK_BYTES as u64)), status::SUCCESS);
    let rx = Command::CreateSq(CreateSq {
        direction: Direction::Rx,
        ..match sq(1, 256, W0 + 0x20_0000, host) {
            Command::CreateSq(c) => c,
            _ => unreachable!(),
        }
    });
    // ... and the pair it would make is refused: its rings are not rings.
    assert_eq!(send(rx), status::ILLEGAL_PARAMETER);

    // Bytes ENA does not define.
    let mut send_raw = |e: Entry| admin.execute_raw(&mut regs, e).unwrap().status;
    assert_eq!(send_raw(raw(99, &[])), status::BAD_OPCODE);
    assert_eq!(send_raw(raw(admin::opcode::CREATE_SQ, &[(4, &[3 << 5]), (6, &[1])])), 4);
    assert_eq!(send_raw(raw(admin::opcode::CREATE_SQ, &[(4, &[1 << 5]), (6, &[2])])), 4);
    assert_eq!(send_raw(raw(admin::opcode::SET_FEATURE, &[(17, &[77])])), 3);
    assert_eq!(send_raw(raw(admin::opcode::SET_FEATURE, &[(17, &[feature::LLQ])])), 5);
    let no_buffer = raw(admin::opcode::SET_FEATURE, &[(17, &[feature::RSS_HASH_FUNCTION])]);
    assert_eq!(send_raw(no_buffer), status::MALFORMED_REQUEST);
    // Random entries: every one gets a completion, none a panic.
    let mut x = 0x1234_5678_9abc_def1u64;
    for _ in 0..5_000 {
        let mut e = [0u8; 64];
        for chunk in e.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        e[2] = [1, 2, 3, 4, 8, 9, 11, (x >> 3) as u8][(x % 8) as usize];
        admin.execute_raw(&mut regs, e).unwrap();
    }
    // Registers written with nonsense: the admin queue moved outside the window answers nothing.
    regs.write32(regs::AQ_BASE_LO, 0x10);
    regs.write32(0x3, 0xffff_ffff);
    regs.write32(0x9999, 1);
    regs.write32(regs::AQ_DB, 0xffff);
    assert!(pf.vf(0).unwrap().queue_count() <= 1);
}

#[test]
fn a_command_written_with_a_stale_phase_waits_for_the_driver() {
    let (mut pf, w0, _) = setup();
    let mut regs = pf.registers(0).unwrap();
    let mut admin = AdminDriver::bring_up(w0.clone(), 12 * MB, &mut regs).unwrap();
    // Where the driver's next command goes: bring-up used some entries; find the tail from
    // the device's answer (the head after each command).
    let c = admin
        .execute(
            &mut regs,
            &Command::GetFeature(GetFeature { feature: 14, version: 0, control: None }),
        )
        .unwrap();
    let tail = u32::from(c.sq_head);
    let aq =
        u64::from(regs.read32(regs::AQ_BASE_LO)) | u64::from(regs.read32(regs::AQ_BASE_HI)) << 32;
    // The first lap's phase is 1; an entry with phase 0 is not this lap's.
    let stale =
        Command::GetFeature(GetFeature { feature: 14, version: 0, control: None }).encode(7, false);
    w0.write(aq + u64::from(tail % 32) * 64, &stale).unwrap();
    let acq_tail = regs.read32(regs::ACQ_TAIL);
    regs.write32(regs::AQ_DB, tail + 1);
    assert_eq!(regs.read32(regs::ACQ_TAIL), acq_tail, "not executed");
    let fresh =
        Command::GetFeature(GetFeature { feature: 14, version: 0, control: None }).encode(7, true);
    w0.write(aq + u64::from(tail % 32) * 64, &fresh).unwrap();
    regs.write32(regs::AQ_DB, tail + 1);
    assert_eq!(regs.read32(regs::ACQ_TAIL), acq_tail + 1, "executed once its phase is right");
}

#[test]
fn queue_pairs_are_destroyed_in_enas_order_first_queue_first() {
    let (mut pf, w0, _) = setup();
    let mut regs = pf.registers(0).unwrap();
    let mut admin = AdminDriver::bring_up(w0.clone(), 12 * MB, &mut regs).unwrap();
    let end = QueuePairLayout::new(0, 256, 2048).end;
    let q0 = QueuePairDriver::create(w0.clone(), QueuePairLayout::new(0, 256, 2048)).unwrap();
    let q1 = QueuePairDriver::create(w0.clone(), QueuePairLayout::new(end, 256, 2048)).unwrap();
    let a = admin.create_queue_pair(&mut regs, &q0).unwrap();
    let b = admin.create_queue_pair(&mut regs, &q1).unwrap();
    assert_eq!((a.tx_sq, b.tx_sq), (0, 2));
    // ena_destroy_all_tx_queues then ..._rx_queues: queue 0 first.
    for (sq_idx, direction, cq_idx) in [
        (a.tx_sq, Direction::Tx, a.tx_cq),
        (b.tx_sq, Direction::Tx, b.tx_cq),
        (a.rx_sq, Direction::Rx, a.rx_cq),
        (b.rx_sq, Direction::Rx, b.rx_cq),
    ] {
        admin.execute(&mut regs, &Command::DestroySq { sq_idx, direction }).unwrap();
        admin.execute(&mut regs, &Command::DestroyCq { cq_idx }).unwrap();
    }
    assert_eq!(pf.vf(0).unwrap().queue_count(), 0);
    // And the queues come back at the same indices.
    let mut regs = pf.registers(0).unwrap();
    let again = admin.create_queue_pair(&mut regs, &q0).unwrap();
    assert_eq!((again.tx_sq, again.rx_sq), (0, 1));
    // A stopped pair below a live one: the live one is served, the stopped one is not.
    let b = admin.create_queue_pair(&mut regs, &q1).unwrap();
    admin.execute(&mut regs, &Command::DestroySq { sq_idx: 0, direction: Direction::Tx }).unwrap();
    assert_eq!(pf.vf(0).unwrap().queue_count(), 2, "pair 0 stops, pair 1 lives");
    let mut regs = pf.registers(0).unwrap();
    admin.destroy_queue_pair(&mut regs, &b).unwrap();
    assert_eq!(pf.vf(0).unwrap().queue_count(), 0, "both gone once the last one goes");
}
