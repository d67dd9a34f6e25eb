//! VF → VF through the device engine: `cargo bench --bench device`.
//!
//! A guest thread drives VF 0's and VF 1's ENA-style drivers (copy the frame into a TX buffer,
//! post descriptors with one doorbell per burst, reap TX completions, receive and repost RX
//! buffers); the engine thread busy-polls the PF (validate, gather, switch by MAC, RSS, copy into
//! the posted RX buffer, complete). Frames of 64, 1500 and 9001 bytes, bursts of 1, 8 and 32, one
//! and two queue pairs (two flows spread by RSS over VF 1's queues, VF 0 sending on both of its
//! queues), and with one queue pair at burst 32 also with moderated RX interrupts (ENA's 20 µs;
//! the guest sleeps on the interrupt line whenever it finds nothing to receive) instead of busy
//! polling. One queue pair at burst 32 also with VF 0's TX queue placed in device memory (a
//! low-latency queue, ENA's default layout of 128-byte entries with 96 header bytes, brought up
//! through the admin queue), 64 and 1500 bytes: `vf_to_vf/1qp_64B/burst32_llq` against
//! `.../burst32`. And one queue pair at burst 32 with guest and engine on one thread
//! (`.../burst32_one_thread`: send a burst, poll the PF once, receive): the whole path's work
//! per frame on one core, without the lines the two cores pass between them, the steadier
//! figure to tune the engine by (a 2-vCPU VM's second core comes and goes). And one queue pair
//! at burst 32 with an ENI shaper on VF 0 whose limits no frame reaches (`.../burst32_shaped`):
//! against `.../burst32`, what the engine's per-frame admission costs. One iteration is
//! [`PER_ITER`] frames received; criterion reports frames per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vnic::device::{DmaWindow, InterruptLine, Iova, Notification, PhysicalFunction};
use vnic::driver::{AdminDriver, QueuePairDriver, QueuePairLayout};
use vnic::frame::{MacAddr, build_udp_frame};
use vnic::ring::SharedRegion;
use vnic::shaper::{BandwidthAllowance, FlowKey, ShaperConfig};

const PER_ITER: u64 = 8192;
const DEPTH: u32 = 1024;

struct Rig {
    tx: Vec<QueuePairDriver>,
    rx: Vec<QueuePairDriver>,
    frames: Vec<Vec<u8>>,
    /// With moderated RX interrupts: the line the guest sleeps on when it finds nothing.
    rx_line: Option<Arc<InterruptLine>>,
    stop: Arc<AtomicBool>,
    engine: Option<std::thread::JoinHandle<()>>,
    /// In one-thread mode the PF, polled by the guest's loop after each send.
    inline: Option<PhysicalFunction>,
}

impl Rig {
    fn new(
        frame_len: usize,
        queues: usize,
        moderated: bool,
        (llq, one_thread, shaped): (bool, bool, bool),
    ) -> Rig {
        let mut pf = PhysicalFunction::new(2).expect("pf");
        pf.set_num_vfs(2).expect("vfs");
        if shaped {
            // An ENI shaper whose limits no frame here reaches (400 Gbps, 1 Gpps, a 400 Gbps
            // flow cap): every frame passes, and the row measures what deciding that costs.
            let unbounded = 400_000_000_000;
            let config = ShaperConfig {
                bw_out: BandwidthAllowance::fixed(unbounded),
                bw_in: BandwidthAllowance::fixed(unbounded),
                pps: 1_000_000_000,
                ..ShaperConfig::default()
            };
            pf.set_shaper(0, Some((config, Box::new(move |_: &FlowKey| unbounded))))
                .expect("shaper");
        }
        // Buffers sized to the frames, as a driver sizes them to its MTU.
        let buf = if frame_len > 2048 { 9216 } else { 2048 };
        let layout_bytes = QueuePairLayout::with_buffers(0, DEPTH, buf, buf).end;
        let mut drivers: Vec<Vec<QueuePairDriver>> = Vec::new();
        for vf in 0..2u16 {
            pf.set_mtu(vf, 9001).expect("mtu");
            let admin_at = layout_bytes * queues;
            let region =
                SharedRegion::anonymous(admin_at + AdminDriver::BYTES + 256).expect("guest memory");
            let window = DmaWindow::new(Arc::new(region), Iova(0x1_0000_0000 * u64::from(vf + 1)));
            pf.assign(vf, window.clone()).expect("assign");
            let llq_sender = llq && vf == 0;
            let mut admin = llq_sender.then(|| {
                let mut regs = pf.registers(vf).expect("registers");
                let mut admin =
                    AdminDriver::bring_up(window.clone(), admin_at, &mut regs).expect("bring-up");
                admin.configure_llq(&mut regs, 128).expect("llq");
                admin
            });
            let mut qs = Vec::new();
            for q in 0..queues {
                let layout = QueuePairLayout::with_buffers(q * layout_bytes, DEPTH, buf, buf);
                let mut drv = QueuePairDriver::create(window.clone(), layout).expect("driver");
                if let Some(admin) = admin.as_mut() {
                    let bar = pf.llq_bar(vf).expect("llq bar");
                    let mut regs = pf.registers(vf).expect("registers");
                    admin.create_queue_pair_llq(&mut regs, &mut drv, bar, 128).expect("llq pair");
                } else {
                    pf.create_queue_pair(vf, drv.spec()).expect("queue pair");
                }
                drv.refill_rx();
                qs.push(drv);
            }
            drivers.push(qs);
        }
        let rx_line = moderated.then(|| Arc::new(InterruptLine::new().expect("eventfd")));
        if let Some(line) = &rx_line {
            for q in 0..queues as u16 {
                let busy = (Notification::BusyPoll, None);
                pf.set_notification(1, q, busy, (Notification::ENA_RX, Some(line.clone())))
                    .expect("irq");
            }
        }
        let rx = drivers.pop().expect("vf 1");
        let tx = drivers.pop().expect("vf 0");
        // Flows whose RSS hashes land on each of VF 1's queues.
        let frames = (0..queues as u16)
            .map(|q| {
                let mut buf = vec![0u8; frame_len];
                let sport = (0..u16::MAX)
                    .find(|&p| {
                        let t = vnic::rss::Toeplitz::new(vnic::rss::MICROSOFT_RSS_KEY);
                        t.hash_ipv4_ports([10, 0, 0, 1], [10, 0, 0, 2], p, 9000)
                            % 128
                            % queues as u32
                            == u32::from(q)
                    })
                    .expect("a port for each queue");
                build_udp_frame(
                    &mut buf,
                    frame_len,
                    MacAddr::local(2),
                    MacAddr::local(1),
                    ([10, 0, 0, 1], [10, 0, 0, 2]),
                    (sport, 9000),
                );
                buf
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        if one_thread {
            return Rig { tx, rx, frames, rx_line, stop, engine: None, inline: Some(pf) };
        }
        let flag = stop.clone();
        let engine = std::thread::spawn(move || pf.run(&flag));
        Rig { tx, rx, frames, rx_line, stop, engine: Some(engine), inline: None }
    }

    /// Keeps sending in bursts of `burst` until `count` frames have been received (frames the
    /// receiver had no buffer for are dropped and not counted); returns the time taken.
    fn run(&mut self, count: u64, burst: usize) -> Duration {
        let start = Instant::now();
        let mut received = 0u64;
        let mut last_progress = Instant::now();
        let mut idle = 0u32;
        while received < count {
            for (q, tx) in self.tx.iter_mut().enumerate() {
                tx.reap_tx();
                let frames = [self.frames[q].as_slice(); 128];
                tx.send_burst(&frames[..burst]);
            }
            if let Some(pf) = self.inline.as_mut() {
                pf.poll();
            }
            let before = received;
            for rx in self.rx.iter_mut() {
                received += rx.recv(|f, _| {
                    std::hint::black_box(f);
                }) as u64;
            }
            if received != before {
                idle = 0;
            } else if let Some(line) = &self.rx_line {
                // Interrupt mode: nothing arrived, so sleep until the device says so.
                line.wait(Duration::from_millis(1));
            } else {
                if idle == 0 {
                    last_progress = Instant::now();
                }
                idle += 1;
                if idle.is_multiple_of(1 << 16) {
                    assert!(last_progress.elapsed() < Duration::from_secs(10), "no frame for 10 s");
                }
            }
        }
        start.elapsed()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(e) = self.engine.take() {
            let _ = e.join();
        }
    }
}

fn device(c: &mut Criterion) {
    let mut group = c.benchmark_group("vf_to_vf");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(20);
    for queues in [1usize, 2] {
        for frame_len in [64usize, 1500, 9001] {
            for burst in [1usize, 8, 32] {
                for moderated in [false, true] {
                    if (queues == 2 && burst != 32) || (moderated && (queues != 1 || burst != 32)) {
                        continue;
                    }
                    let variants = !moderated && queues == 1 && burst == 32 && frame_len <= 1500;
                    let modes = [
                        (false, false, false),
                        (true, false, false),
                        (false, true, false),
                        (false, false, true),
                    ];
                    for mode in modes {
                        if mode != (false, false, false) && !variants {
                            continue;
                        }
                        let mut rig = Rig::new(frame_len, queues, moderated, mode);
                        group.throughput(Throughput::Elements(PER_ITER));
                        let mode = match (moderated, mode) {
                            (true, _) => "_irq",
                            (_, (true, _, _)) => "_llq",
                            (_, (_, true, _)) => "_one_thread",
                            (_, (_, _, true)) => "_shaped",
                            _ => "",
                        };
                        let id = BenchmarkId::new(
                            format!("{queues}qp_{frame_len}B"),
                            format!("burst{burst}{mode}"),
                        );
                        group.bench_function(id, |b| {
                            b.iter_custom(|iters| rig.run(iters * PER_ITER, burst))
                        });
                    }
                }
            }
        }
    }
    group.finish();
}

criterion_group!(benches, device);
criterion_main!(benches);
