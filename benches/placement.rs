//! Capacity-planning benchmarks: `cargo bench --bench placement`.
//!
//! * `place_10k_instances_5k_hosts`: a 3-AZ region of 5,040 hosts (42 racks × 40 hosts per AZ);
//!   200 cluster groups of 10, 300 spread groups of 7, 100 partition groups of 14 over 7
//!   partitions, and 4,500 ungrouped instances in launches of 10: 10,000 instances in all.
//!   Target < 100 ms.
//! * `plan_100k_flows_2k_instances`: max-min fair rates for 100,000 seeded random flows among
//!   2,000 instances of that fleet. Target < 1 s.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use placement::{
    Fleet, FlowDemand, GeneratedTopology, InstanceId, InstanceType, LaunchRequest, NetworkModel,
    PlacementStrategy, SplitMix64, SpreadLevel, plan,
};

fn empty_fleet() -> Fleet {
    let topology = GeneratedTopology::simple(3, 42, 40).build().expect("topology");
    Fleet::new(topology, InstanceType::catalog())
}

fn launch(fleet: &mut Fleet, ty: &str, count: u32, group: Option<String>) -> Vec<InstanceId> {
    fleet
        .launch(&LaunchRequest { instance_type: ty.into(), count, group, ..Default::default() })
        .expect("the benchmark fleet fits")
}

/// Places the 10,000-instance fleet; returns the instance ids.
fn place_fleet(fleet: &mut Fleet) -> Vec<InstanceId> {
    let mut ids = Vec::with_capacity(10_000);
    for g in 0..200 {
        let name = format!("cluster-{g}");
        fleet.create_group(&name, None, PlacementStrategy::Cluster).expect("group");
        ids.extend(launch(fleet, "c5n.9xlarge", 10, Some(name)));
    }
    for g in 0..300 {
        let name = format!("spread-{g}");
        let strategy = PlacementStrategy::Spread { level: SpreadLevel::Rack };
        fleet.create_group(&name, None, strategy).expect("group");
        ids.extend(launch(fleet, "c5.4xlarge", 7, Some(name)));
    }
    for g in 0..100 {
        let name = format!("partition-{g}");
        fleet
            .create_group(&name, None, PlacementStrategy::Partition { partitions: 7 })
            .expect("group");
        ids.extend(launch(fleet, "m5.large", 14, Some(name)));
    }
    let types = ["m5.large", "c5.4xlarge", "c5n.large", "c5n.9xlarge"];
    for i in 0..450 {
        ids.extend(launch(fleet, types[i % types.len()], 10, None));
    }
    ids
}

fn flows(ids: &[InstanceId], n: usize, seed: u64) -> Vec<FlowDemand> {
    let mut rng = SplitMix64::new(seed);
    let pool = &ids[..2000];
    (0..n)
        .filter_map(|_| {
            let src = pool[(rng.next_u64() % pool.len() as u64) as usize];
            let dst = pool[(rng.next_u64() % pool.len() as u64) as usize];
            let demand =
                if rng.next_u64().is_multiple_of(4) { f64::INFINITY } else { rng.next_f64() * 8.0 };
            (src != dst).then_some(FlowDemand { src, dst, demand_gbps: demand, srd: false })
        })
        .collect()
}

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    let empty = empty_fleet();
    group.bench_function("place_10k_instances_5k_hosts", |b| {
        b.iter_batched(
            || empty.clone(),
            |mut fleet| {
                let ids = place_fleet(&mut fleet);
                assert_eq!(ids.len(), 10_000);
                black_box(fleet)
            },
            BatchSize::LargeInput,
        )
    });

    let mut fleet = empty_fleet();
    let ids = place_fleet(&mut fleet);
    let flows = flows(&ids, 100_000, 42);
    let model = NetworkModel::default();
    group.bench_function("plan_100k_flows_2k_instances", |b| {
        b.iter(|| black_box(plan(&fleet, &model, &flows).expect("plan")))
    });
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
