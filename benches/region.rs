//! Capacity planning at region scale: `cargo bench --bench region`.
//!
//! The fleet is a region of 3 AZs × 100 racks × 40 hosts (12,000 hosts of 192 vCPUs / 768 GiB,
//! 3.2 Tbps rack uplinks, 100 Tbps AZ links) carrying 100,000 instances:
//! 1,000 cluster groups of 10 `c5n.9xlarge`, 1,000 rack-spread groups of 7 `c5.4xlarge`,
//! 300 partition groups of 70 `m5.large` over 7 partitions, and 62,000 ungrouped instances of
//! four types in launches of 100. 1,000,000 seeded random flows run between them, a quarter
//! elastic, the others asking 0 to 2 Gbps.
//!
//! * `place_100k_instances_12k_hosts`: every launch of that fleet. Target < 1 s.
//! * `plan_1m_flows_100k_instances`: max-min fair rates and bottlenecks of the million flows.
//!   Target < 5 s.
//! * `blast_radius_300_racks_3_azs_1m_application_flows`: each of the 300 racks and 3 AZs
//!   failed in turn and the survivors re-planned, on every core, for a million flows inside
//!   applications (ten from every instance to peers of its own launch). Target < 10 s. A
//!   failure re-plans only the components (flows joined by resources that can saturate) it
//!   touches. The same for the million region-wide random flows of the plan bench is one
//!   component, every failure re-plans all of it: 107 s on the 2-vCPU VM (2026-12-02), too
//!   slow to sample here.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use placement::{
    FailureDomain, Fleet, FlowDemand, GeneratedTopology, HostCapacity, InstanceId, InstanceType,
    LaunchRequest, NetworkModel, PlacementStrategy, SplitMix64, SpreadLevel, blast_radii, plan,
};

fn empty_region() -> Fleet {
    let mut spec = GeneratedTopology::simple(3, 100, 40);
    spec.host = HostCapacity { vcpus: 192, memory_gib: 768, slots: Vec::new() };
    spec.rack_uplink_gbps = 3200.0;
    spec.az_uplink_gbps = 100_000.0;
    Fleet::new(spec.build().expect("topology"), InstanceType::catalog())
}

fn launch(fleet: &mut Fleet, ty: &str, count: u32, group: Option<String>) -> Vec<InstanceId> {
    fleet
        .launch(&LaunchRequest { instance_type: ty.into(), count, group, ..Default::default() })
        .expect("the region fits its fleet")
}

/// Places the 100,000 instances; returns their ids, one list per launch (an application).
fn place_region(fleet: &mut Fleet) -> Vec<Vec<InstanceId>> {
    let mut ids = Vec::with_capacity(2920);
    for g in 0..1000 {
        let name = format!("cluster-{g}");
        fleet.create_group(&name, None, PlacementStrategy::Cluster).expect("group");
        ids.push(launch(fleet, "c5n.9xlarge", 10, Some(name)));
    }
    for g in 0..1000 {
        let name = format!("spread-{g}");
        let strategy = PlacementStrategy::Spread { level: SpreadLevel::Rack };
        fleet.create_group(&name, None, strategy).expect("group");
        ids.push(launch(fleet, "c5.4xlarge", 7, Some(name)));
    }
    for g in 0..300 {
        let name = format!("partition-{g}");
        let strategy = PlacementStrategy::Partition { partitions: 7 };
        fleet.create_group(&name, None, strategy).expect("group");
        ids.push(launch(fleet, "m5.large", 70, Some(name)));
    }
    let types = ["m5.large", "c5.4xlarge", "c5n.large", "c5n.9xlarge"];
    for i in 0..620 {
        ids.push(launch(fleet, types[i % types.len()], 100, None));
    }
    ids
}

/// A demand: a quarter elastic, the others 0 to 2 Gbps.
fn demand(rng: &mut SplitMix64) -> f64 {
    if rng.next_u64().is_multiple_of(4) { f64::INFINITY } else { rng.next_f64() * 2.0 }
}

/// `n` flows between instances drawn from the whole region.
fn random_flows(ids: &[InstanceId], n: usize, seed: u64) -> Vec<FlowDemand> {
    let mut rng = SplitMix64::new(seed);
    let mut flows = Vec::with_capacity(n);
    while flows.len() < n {
        let src = ids[(rng.next_u64() % ids.len() as u64) as usize];
        let dst = ids[(rng.next_u64() % ids.len() as u64) as usize];
        if src != dst {
            flows.push(FlowDemand { src, dst, demand_gbps: demand(&mut rng), srd: false });
        }
    }
    flows
}

/// Ten flows from every instance to peers of its own application (its launch): a million.
fn application_flows(apps: &[Vec<InstanceId>], seed: u64) -> Vec<FlowDemand> {
    let mut rng = SplitMix64::new(seed);
    let mut flows = Vec::with_capacity(1_000_000);
    for app in apps {
        for &src in app {
            for _ in 0..10 {
                let mut dst = app[(rng.next_u64() % app.len() as u64) as usize];
                if dst == src {
                    dst = app[(app.iter().position(|&i| i == src).unwrap_or(0) + 1) % app.len()];
                }
                flows.push(FlowDemand { src, dst, demand_gbps: demand(&mut rng), srd: false });
            }
        }
    }
    flows
}

fn region(c: &mut Criterion) {
    let mut group = c.benchmark_group("region");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let empty = empty_region();
    group.bench_function("place_100k_instances_12k_hosts", |b| {
        b.iter_batched(
            || empty.clone(),
            |mut fleet| {
                let apps = place_region(&mut fleet);
                assert_eq!(apps.iter().map(Vec::len).sum::<usize>(), 100_000);
                black_box(fleet)
            },
            BatchSize::LargeInput,
        )
    });

    let mut fleet = empty_region();
    let apps = place_region(&mut fleet);
    let ids: Vec<InstanceId> = apps.concat();
    let flows = random_flows(&ids, 1_000_000, 7);
    let model = NetworkModel::default();
    group.bench_function("plan_1m_flows_100k_instances", |b| {
        b.iter(|| black_box(plan(&fleet, &model, &flows).expect("plan")))
    });

    let domains: Vec<FailureDomain> = FailureDomain::occupied(&fleet)
        .into_iter()
        .filter(|d| !matches!(d, FailureDomain::Host(_)))
        .collect();
    assert_eq!(domains.len(), 303, "every rack and AZ of the region holds an instance");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    group.measurement_time(Duration::from_secs(60));
    let flows = application_flows(&apps, 11);
    let before = plan(&fleet, &model, &flows).expect("plan");
    group.bench_function("blast_radius_300_racks_3_azs_1m_application_flows", |b| {
        b.iter(|| {
            let after = blast_radii(&fleet, &model, &flows, &before, &domains, threads, |r| {
                r.throughput_after_gbps
            })
            .expect("blast radius");
            black_box(after)
        })
    });
    group.finish();
}

criterion_group!(benches, region);
criterion_main!(benches);
