//! Low-latency queues: TX descriptors and headers written into the device's LLQ BAR, as ENA's
//! driver writes them on 6th-generation instances.

use std::sync::Arc;

use vnic::abi::admin::{self, Command, CreateCq, CreateSq, status};
use vnic::abi::io::TxDesc;
use vnic::abi::llq::{Entry128, LlqEntry};
use vnic::device::{DmaWindow, Iova, LLQ_SLOT_BYTES, PhysicalFunction};
use vnic::driver::{AdminDriver, AdminError, QueuePairDriver, QueuePairLayout};
use vnic::frame::build_udp_frame;
use vnic::ring::{INDEX_BLOCK_BYTES, SharedRegion, SubmissionProducer};

const MB: usize = 1 << 20;

struct Pair {
    pf: PhysicalFunction,
    admin: AdminDriver,
    tx: QueuePairDriver,
    rx: QueuePairDriver,
    w0: DmaWindow,
}

fn pair(entry_bytes: usize, depth: u32) -> Pair {
    let mut pf = PhysicalFunction::new(2).unwrap();
    pf.set_num_vfs(2).unwrap();
    let w0 = DmaWindow::new(Arc::new(SharedRegion::anonymous(32 * MB).unwrap()), Iova(1 << 32));
    let w1 = DmaWindow::new(Arc::new(SharedRegion::anonymous(32 * MB).unwrap()), Iova(2 << 32));
    pf.assign(0, w0.clone()).unwrap();
    pf.assign(1, w1.clone()).unwrap();
    for vf in 0..2 {
        pf.set_mtu(vf, 9001).unwrap();
    }
    let mut regs = pf.registers(0).unwrap();
    let mut admin = AdminDriver::bring_up(w0.clone(), 28 * MB, &mut regs).unwrap();
    admin.configure_llq(&mut regs, entry_bytes).unwrap();
    let layout = QueuePairLayout::new(0, depth, 2048);
    let mut tx = QueuePairDriver::create(w0.clone(), layout).unwrap();
    let bar = pf.llq_bar(0).unwrap();
    let mut regs = pf.registers(0).unwrap();
    admin.create_queue_pair_llq(&mut regs, &mut tx, bar, entry_bytes).unwrap();
    assert!(tx.is_llq());
    let mut rx = QueuePairDriver::create(w1, QueuePairLayout::new(0, depth, 2048)).unwrap();
    pf.create_queue_pair(1, rx.spec()).unwrap();
    rx.refill_rx();
    Pair { pf, admin, tx, rx, w0 }
}

/// A UDP frame from VF 0 to VF 1 whose payload depends on `seq`.
fn frame(p: &Pair, len: usize, seq: u16) -> Vec<u8> {
    let mut buf = frame_between(&p.pf, len, seq);
    for (i, b) in buf.iter_mut().enumerate().skip(42) {
        *b = (i as u8) ^ (seq as u8);
    }
    buf
}

#[test]
fn frames_of_every_size_cross_a_low_latency_queue_byte_for_byte() {
    for entry_bytes in [128, 192, 256] {
        let mut p = pair(entry_bytes, 256);
        // All header (60, 96), a header and one buffer (97, 1500), and a jumbo frame whose
        // third descriptor spills into a continuation entry (9014).
        let sizes = [60usize, 96, 97, 224, 225, 1500, 9014];
        let mut sent = 0;
        // Several laps of the 256-entry ring: the phase flips.
        for round in 0..200u16 {
            let frames: Vec<Vec<u8>> = sizes.iter().map(|&len| frame(&p, len, round)).collect();
            let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
            assert_eq!(p.tx.send_burst(&refs), sizes.len(), "round {round}");
            p.pf.poll();
            p.pf.poll();
            let mut got = Vec::new();
            p.rx.recv(|f, _| got.push(f.to_vec()));
            assert_eq!(got, frames, "round {round}, {entry_bytes}-byte entries");
            assert_eq!(p.tx.reap_tx(), sizes.len());
            sent += sizes.len() as u64;
        }
        let (q, _) = p.pf.vf(0).unwrap().totals();
        assert_eq!((q.tx_packets, q.tx_bad_desc), (sent, 0));
        let mut regs = p.pf.registers(0).unwrap();
        assert_eq!(p.admin.basic_stats(&mut regs).unwrap().tx_pkts, sent);
    }
}

#[test]
fn an_llq_entry_holds_the_descriptors_then_the_header_as_enas_driver_writes_it() {
    let mut p = pair(128, 256);
    let f = frame(&p, 1500, 7);
    assert_eq!(p.tx.send_burst(&[&f]), 1);
    // The ring sits in slot 0 of the BAR: its entry 0 after the index block.
    let bar = p.pf.llq_bar(0).unwrap();
    let mut entry = [0u8; 128];
    // SAFETY: nothing writes the BAR while this test reads it (the device has not polled).
    let bytes = unsafe { std::slice::from_raw_parts(bar.as_ptr(), LLQ_SLOT_BYTES) };
    entry.copy_from_slice(&bytes[INDEX_BLOCK_BYTES..INDEX_BLOCK_BYTES + 128]);
    let d0: TxDesc = bytemuck::pod_read_unaligned(&entry[..16]);
    // len_ctrl: length 15:0, phase 24, first 26, last 27, comp_req 28; header length 31:24 of
    // word 3; the first buffer holds what follows the 96 header bytes.
    let len_ctrl = u32::from_le_bytes(entry[0..4].try_into().unwrap());
    assert_eq!(len_ctrl & 0xffff, 1500 - 96);
    assert_eq!(len_ctrl >> 24 & 1, 1, "phase 1 on the first lap");
    assert_eq!((len_ctrl >> 26 & 1, len_ctrl >> 27 & 1, len_ctrl >> 28 & 1), (1, 1, 1));
    assert_eq!(entry[15], 96, "header length");
    assert_eq!(d0.header_len(), 96);
    assert_eq!(&entry[16..32], &[0u8; 16], "the second slot is unused");
    assert_eq!(&entry[32..128], &f[..96], "the header, inline");
    let mut rest = vec![0u8; 1500 - 96];
    p.w0.read(d0.addr(), &mut rest).unwrap();
    assert_eq!(&rest[..], &f[96..], "the rest in the TX buffer");
    p.pf.poll();
    assert_eq!(p.rx.recv(|g, _| assert_eq!(g, &f[..])), 1);
}

#[test]
fn hostile_llq_entries_are_refused_and_counted_never_followed() {
    let Pair { mut pf, tx, mut rx, w0, .. } = pair(128, 256);
    let good = frame_between(&pf, 90, 1);
    // The guest drops its driver and writes the LLQ ring itself: random bytes, first
    // descriptors claiming headers longer than the entry, buffers outside the window, wrong
    // phases, chains that never end; and, now and then, a frame as ENA's driver writes it.
    drop(tx);
    let bar = pf.llq_bar(0).unwrap();
    let mut evil = SubmissionProducer::<Entry128>::attach(bar, 0).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut hostile, mut good_sent) = (0u64, 0u64);
    let mut received = 0u64;
    for round in 0..4_000u32 {
        let mut e = <Entry128 as bytemuck::Zeroable>::zeroed();
        let phase = vnic::abi::io::sq_phase(evil.tail(), 256);
        if round % 8 == 7 {
            // Header only, request ids 200.. (the hostile entries use 0..200).
            let d = TxDesc::new(0, 0, 200 + (round / 8 % 56) as u16)
                .with_first(true)
                .with_last(true)
                .with_comp_req(true)
                .with_phase(phase)
                .with_header_len(good.len() as u8);
            e.set_desc(0, d);
            e.header_mut()[..good.len()].copy_from_slice(&good);
            good_sent += 1;
        } else {
            for chunk in e.0.chunks_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            let r = next();
            if r % 2 == 0 {
                let d = TxDesc::new(r >> 16, (r >> 8) as u16, (r % 200) as u16)
                    .with_first(true)
                    .with_last(r & 8 != 0)
                    .with_comp_req(true)
                    .with_phase(if r & 4 != 0 { phase } else { !phase })
                    .with_header_len((r >> 40) as u8);
                e.set_desc(0, d);
            }
            hostile += 1;
        }
        assert!(evil.push(e));
        pf.poll();
        received += rx.recv(|f, _| assert_eq!(f, &good[..])) as u64;
    }
    pf.poll();
    received += rx.recv(|f, _| assert_eq!(f, &good[..])) as u64;
    let (q, _) = pf.vf(0).unwrap().totals();
    assert!(q.tx_bad_desc > hostile / 2, "{q:?}");
    // Every well-formed entry went through; nothing else did.
    assert_eq!(received, good_sent);
    assert_eq!(q.tx_packets, good_sent);
    // Guest memory outside the rings was never written by the device: its TX buffers are
    // still zeros.
    let mut bufs = vec![0u8; 64 * 1024];
    w0.read(w0.iova(QueuePairLayout::new(0, 256, 2048).tx_bufs).0, &mut bufs).unwrap();
    assert!(bufs.iter().all(|&b| b == 0));
}

fn frame_between(pf: &PhysicalFunction, len: usize, sport: u16) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let (dst, src) = (pf.port(1).unwrap().mac, pf.port(0).unwrap().mac);
    build_udp_frame(&mut buf, len, dst, src, ([10, 0, 0, 1], [10, 0, 0, 2]), (sport, 9000));
    buf
}

#[test]
fn llq_limits_get_enas_statuses() {
    let mut p = pair(256, 256);
    let mut regs = p.pf.registers(0).unwrap();
    // The layout cannot change under a live low-latency queue.
    assert!(matches!(
        p.admin.configure_llq(&mut regs, 128),
        Err(AdminError::Status { status: status::ILLEGAL_PARAMETER, .. })
    ));
    let cq = |depth| {
        Command::CreateCq(CreateCq {
            interrupt_mode: true,
            entry_words: 2,
            depth,
            msix_vector: 0,
            ring_base: (1 << 32) + 0x10_0000,
        })
    };
    let sq = |cq_idx, depth| {
        Command::CreateSq(CreateSq {
            direction: admin::Direction::Tx,
            placement: admin::Placement::Device,
            completion_policy: admin::CompletionPolicy::DescOnDemand,
            physically_contiguous: true,
            cq_idx,
            depth,
            ring_base: 0,
            head_writeback: 0,
        })
    };
    let c: admin::CreateCqResponse = p.admin.execute(&mut regs, &cq(1024)).unwrap().response();
    let status_of = |r: Result<admin::Completion, AdminError>| match r {
        Ok(c) => c.status,
        Err(AdminError::Status { status, .. }) => status,
        Err(e) => panic!("{e}"),
    };
    // 256-byte entries: at most 512 of them.
    assert_eq!(status_of(p.admin.execute(&mut regs, &sq(c.cq_idx, 1024))), 5);
    // Eight low-latency queues: the ninth finds no slot.
    let bar = p.pf.llq_bar(0).unwrap();
    let end = QueuePairLayout::new(0, 256, 2048).end;
    let mut st = status::SUCCESS;
    for k in 1..=8 {
        let layout = QueuePairLayout::new(k * end, 256, 2048);
        let mut q = QueuePairDriver::create(p.w0.clone(), layout).unwrap();
        let mut regs = p.pf.registers(0).unwrap();
        match p.admin.create_queue_pair_llq(&mut regs, &mut q, bar.clone(), 256) {
            Ok(_) => assert!(k < 8, "queue {k}"),
            Err(AdminError::Status { status, .. }) => {
                assert_eq!(k, 8);
                st = status;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(st, status::RESOURCE_ALLOCATION_FAILURE);
}
