//! The lab's workload (`hypervisor_sim::pair`) on the simulated NIC: the same flow that
//! `vnic-lab lab traffic` runs on real 82576 VFs, here between two ENA-style VFs of a `vnic` PF
//! brought up through their admin queues; and its accounting against a wire that drops,
//! corrupts, duplicates and reorders on purpose.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hypervisor_sim::paced::{Arrivals, Pacer};
use hypervisor_sim::pair::{PairFlow, Schedule, run_pair};
use hypervisor_sim::sim::SplitMix64;
use hypervisor_sim::traffic::{Endpoint, FlowFrame, TrafficClock};
use vnic::device::{DmaWindow, Iova, PhysicalFunction};
use vnic::driver::{AdminDriver, QueuePairDriver, QueuePairLayout};
use vnic::frame::MacAddr;
use vnic::nic::QueuePair;
use vnic::ring::SharedRegion;

const SIZES: [usize; 6] = [60, 61, 128, 511, 1024, 1514];

fn templates(src: MacAddr, dst: MacAddr) -> Vec<FlowFrame> {
    let a = Endpoint { mac: src, ip: Ipv4Addr::new(10, 0, 0, 1), port: 40_000 };
    let b = Endpoint { mac: dst, ip: Ipv4Addr::new(10, 0, 0, 2), port: 50_000 };
    SIZES.iter().map(|&n| FlowFrame::new(a, b, n)).collect()
}

/// Two VFs of one PF, each brought up through its admin queue, the engine on its own thread.
fn simulated_pair(f: impl FnOnce(&mut QueuePairDriver, &mut QueuePairDriver, MacAddr, MacAddr)) {
    let mut pf = PhysicalFunction::new(4).unwrap();
    pf.set_num_vfs(2).unwrap();
    let layout = QueuePairLayout::with_buffers(0, 256, 2048, 2048);
    let mut drivers = Vec::new();
    for vf in 0..2u16 {
        let memory =
            Arc::new(SharedRegion::anonymous(layout.end + AdminDriver::BYTES + 128).unwrap());
        let window = DmaWindow::new(memory, Iova(0x1_0000_0000 * u64::from(vf + 1)));
        pf.assign(vf, window.clone()).unwrap();
        let mut regs = pf.registers(vf).unwrap();
        let mut admin = AdminDriver::bring_up(window.clone(), layout.end, &mut regs).unwrap();
        let driver = QueuePairDriver::create(window, layout).unwrap();
        admin.create_queue_pair(&mut regs, &driver).unwrap();
        drivers.push(driver);
    }
    let (src, dst) = (pf.port(0).unwrap().mac, pf.port(1).unwrap().mac);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let engine = std::thread::spawn(move || pf.run(&flag));
    let mut rx = drivers.pop().unwrap();
    let mut tx = drivers.pop().unwrap();
    f(&mut tx, &mut rx, src, dst);
    stop.store(true, Ordering::Relaxed);
    engine.join().unwrap();
}

#[test]
fn the_lab_s_flow_crosses_simulated_vfs_byte_exact_flooding_and_paced() {
    simulated_pair(|tx, rx, src, dst| {
        let clock = TrafficClock::new();
        let flow = PairFlow {
            templates: templates(src, dst),
            frames: 20_000,
            burst: 32,
            schedule: Schedule::Flood,
            send_until_ns: u64::MAX,
            stall_ns: 10_000_000_000,
        };
        let r = run_pair(tx, rx, flow, &clock, None);
        assert_eq!((r.sent, r.received, r.lost()), (20_000, 20_000, 0));
        assert_eq!((r.corrupt, r.reordered, r.duplicates, r.gaps, r.foreign), (0, 0, 0, 0, 0));
        assert_eq!(r.latency.len(), 20_000, "every frame's latency recorded");
        let bytes: u64 = (0..20_000u64).map(|s| SIZES[(s % 6) as usize] as u64).sum();
        assert_eq!((r.sent_bytes, r.received_bytes), (bytes, bytes));

        // Paced: 2,000 frames at 200,000 frames/s, the run's own Pacer.
        let start = clock.now_ns();
        let pacer = Pacer::new(5_000, start, u64::MAX, Arrivals::Periodic, SplitMix64::new(1, 0));
        let mut captured = 0u64;
        let mut capture = |_t: u64, _f: &[u8]| captured += 1;
        let flow = PairFlow {
            templates: templates(src, dst),
            frames: 2_000,
            burst: 32,
            schedule: Schedule::Paced(pacer),
            send_until_ns: u64::MAX,
            stall_ns: 10_000_000_000,
        };
        let r = run_pair(tx, rx, flow, &clock, Some(&mut capture));
        // A loaded machine may fall 5 ms behind and drop by the pacer's rule; what is sent
        // arrives, once, byte for byte, in order.
        assert_eq!(r.sent + r.sender_drops, 2_000);
        assert_eq!((r.received, r.corrupt, r.reordered, r.duplicates), (r.sent, 0, 0, 0));
        assert_eq!(captured, r.sent + r.received, "the capture sees both ends");
        assert!(r.span_ns.1 >= r.span_ns.0 + 5_000 * (r.sent.saturating_sub(1)) / 2);
    });
}

/// A wire between two queue pairs of this test: it drops, corrupts, duplicates and swaps
/// frames by their position on it.
#[derive(Default)]
struct Wire {
    queue: VecDeque<Vec<u8>>,
    position: u64,
    held: Option<Vec<u8>>,
}

struct End<'a>(&'a std::cell::RefCell<Wire>);

impl QueuePair for End<'_> {
    fn send_burst(&mut self, frames: &[&[u8]]) -> usize {
        let mut w = self.0.borrow_mut();
        for f in frames {
            let k = w.position;
            w.position += 1;
            let mut f = f.to_vec();
            match k % 10 {
                3 => continue,                     // dropped
                5 => *f.last_mut().unwrap() ^= 1,  // corrupted
                7 => w.queue.push_back(f.clone()), // duplicated
                _ => {}
            }
            if k % 10 == 8 {
                w.held = Some(f); // arrives after the next one
                continue;
            }
            w.queue.push_back(f);
            if let Some(h) = w.held.take() {
                w.queue.push_back(h);
            }
        }
        frames.len()
    }
    fn reap_tx(&mut self) -> usize {
        0
    }
    fn recv_each(&mut self, each: &mut dyn FnMut(&[u8])) -> usize {
        let frames: Vec<Vec<u8>> = self.0.borrow_mut().queue.drain(..).collect();
        for f in &frames {
            each(f);
        }
        frames.len()
    }
    fn refill_rx(&mut self) -> usize {
        0
    }
    fn rx_capacity(&self) -> usize {
        64
    }
    fn max_frame(&self) -> usize {
        1514
    }
}

#[test]
fn loss_corruption_duplicates_and_reordering_are_counted_as_they_happened() {
    let wire = std::cell::RefCell::new(Wire::default());
    let (a, b) = (MacAddr::local(1), MacAddr::local(2));
    let flow = PairFlow {
        templates: templates(a, b),
        frames: 1_000,
        burst: 10,
        schedule: Schedule::Flood,
        send_until_ns: u64::MAX,
        stall_ns: 20_000_000,
    };
    // A frame of the flow's shape stamped with a sequence number never sent: foreign (and
    // no bitmap of 2^60 bits for it).
    let mut stray = Vec::new();
    hypervisor_sim::pair::expected_frame(&templates(a, b), 1 << 60, 0, &mut stray);
    wire.borrow_mut().queue.push_back(stray);
    let r = run_pair(&mut End(&wire), &mut End(&wire), flow, &TrafficClock::new(), None);
    assert_eq!(r.foreign, 1);
    // Of every ten frames on the wire: #3 lost, #5 corrupted, #7 twice, #8 after #9. The
    // last ten's #8 waits for a #9, which comes, so it arrives too.
    assert_eq!(r.sent, 1_000);
    assert_eq!(r.lost(), 100);
    assert_eq!(r.received, 1_000 - 100 + 100, "900 frames, plus 100 duplicates");
    assert_eq!(r.duplicates, 100);
    assert_eq!(r.corrupt, 100);
    assert_eq!(r.reordered, 100, "each #8 arrives after its #9");
    assert_eq!(r.latency.len(), 900, "one latency per distinct frame");
}
