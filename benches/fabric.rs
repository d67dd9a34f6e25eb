//! The fabric's uplink, frame by frame against a burst at a time: 4,096 frames from endpoint 0
//! to one VM behind endpoint 1 (a 100 Gbit/s, 12.5 µs link, the same rack), handed to
//! `Uplink::transmit` one at a time (as every uplink frame was before the engine batched them)
//! or to `Uplink::transmit_batch` 32 at a time (a TX burst, as the engine now does), then drained
//! at the destination with the virtual clock past every due time. One thread: the fabric's own
//! work per frame (clock, routes, link time, pool, queue, counters, doorbell), without the
//! engines around it. 64 and 1500 bytes. Criterion reports frames per second.
//!
//! `cargo bench --bench fabric`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hypervisor_sim::fabric::{Fabric, LinkSpec};
use hypervisor_sim::vnic::frame::MacAddr;
use hypervisor_sim::vnic::shaper::{DeviceClock, VirtualClock};
use hypervisor_sim::vnic::switch::FrameBatch;

const FRAMES: usize = 4096;
const BURST: usize = 32;

fn fabric(c: &mut Criterion) {
    let mut group = c.benchmark_group("fabric_uplink");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for len in [64usize, 1500] {
        let clock = VirtualClock::new();
        let link = |_, _| LinkSpec { latency_ns: 12_500, bits_per_second: 100_000_000_000 };
        let fabric = Fabric::with_clock(2, link, DeviceClock::Virtual(clock.clone()));
        let dst = MacAddr::local(7);
        fabric.route(dst, 1);
        let up = fabric.uplink(0);
        let mut port = fabric.port(1);
        let mut frame = vec![0u8; len];
        frame[..6].copy_from_slice(&dst.0);
        let mut batch = FrameBatch::default();
        for _ in 0..BURST {
            batch.push(&frame);
        }
        // Past every due time of the frames just sent (4,096 × 1500 B at 100 Gbit/s < 1 ms).
        let drain = |port: &mut hypervisor_sim::fabric::FabricPort| {
            clock.advance(1_000_000_000);
            let n = port.drain(|f| {
                std::hint::black_box(f);
            });
            assert_eq!(n, FRAMES, "every frame crossed");
        };
        group.bench_function(BenchmarkId::new("per_frame", format!("{len}B")), |b| {
            b.iter(|| {
                for _ in 0..FRAMES {
                    up.transmit(&frame);
                }
                drain(&mut port);
            })
        });
        group.bench_function(BenchmarkId::new("burst32", format!("{len}B")), |b| {
            b.iter(|| {
                for _ in 0..FRAMES / BURST {
                    up.transmit_batch(&batch);
                }
                drain(&mut port);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fabric);
criterion_main!(benches);
