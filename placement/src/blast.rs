//! Blast radius: what one host, rack or AZ failure takes down.
//!
//! For a failed domain: the instances that fail, the share of each placement group and of each
//! partition lost, the flows that end with them, and, re-running the planner on the flows that
//! survive, the bandwidth left. A partition group's promise is visible here: a rack failure takes
//! down at most one partition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::planner::{Problem, Scratch};
use crate::{
    AzId, Fleet, FlowDemand, HostId, InstanceId, NetworkModel, PlacementError, Plan, RackId,
};

/// A piece of hardware that fails as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum FailureDomain {
    /// One host.
    Host(HostId),
    /// One rack (its top-of-rack switch or power).
    Rack(RackId),
    /// A whole availability zone.
    Az(AzId),
}

impl FailureDomain {
    /// Whether `host` is inside this domain.
    pub fn contains(self, fleet: &Fleet, host: HostId) -> bool {
        let t = fleet.topology();
        match self {
            FailureDomain::Host(h) => h == host,
            FailureDomain::Rack(r) => t.rack_of(host) == r,
            FailureDomain::Az(a) => t.az_of(host) == a,
        }
    }

    /// Every host, rack and AZ that runs at least one instance, in that order.
    pub fn occupied(fleet: &Fleet) -> Vec<FailureDomain> {
        let t = fleet.topology();
        let mut hosts = std::collections::BTreeSet::new();
        for inst in fleet.instances().iter().filter(|i| i.running) {
            hosts.insert(inst.host);
        }
        let racks: std::collections::BTreeSet<RackId> =
            hosts.iter().map(|&h| t.rack_of(h)).collect();
        let azs: std::collections::BTreeSet<AzId> =
            racks.iter().map(|&r| t.az_of_rack(r)).collect();
        hosts
            .into_iter()
            .map(FailureDomain::Host)
            .chain(racks.into_iter().map(FailureDomain::Rack))
            .chain(azs.into_iter().map(FailureDomain::Az))
            .collect()
    }
}

/// What a failure costs one placement group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupLoss {
    /// The group.
    pub group: String,
    /// Running instances lost.
    pub lost: u32,
    /// Running instances before the failure.
    pub total: u32,
}

impl GroupLoss {
    /// lost / total.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 { 0.0 } else { f64::from(self.lost) / f64::from(self.total) }
    }
}

/// What a failure costs one partition of a partition group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionLoss {
    /// The group.
    pub group: String,
    /// The partition number (1-based).
    pub partition: u8,
    /// Running instances lost.
    pub lost: u32,
    /// Running instances before the failure.
    pub total: u32,
}

/// The consequences of one failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlastRadius {
    /// What failed.
    pub domain: FailureDomain,
    /// The instances that failed with it.
    pub failed: Vec<InstanceId>,
    /// Per group that lost something.
    pub groups: Vec<GroupLoss>,
    /// Per partition that lost something.
    pub partitions: Vec<PartitionLoss>,
    /// Indices (into the input) of the flows that ended.
    pub flows_lost: Vec<usize>,
    /// Total planned bandwidth before, Gbps.
    pub throughput_before_gbps: f64,
    /// Total planned bandwidth after the failure, Gbps.
    pub throughput_after_gbps: f64,
    /// The plan for the surviving flows (in input order, the lost ones left out):
    /// [`blast_radius`] gives it; [`blast_radii`] does not (a region's is tens of MB per
    /// failure) and gives only its total.
    pub after: Option<Plan>,
}

/// The blast radius of each of `domains`, each handed to `summarise` as soon as it is planned
/// (a region's plan after a failure is tens of MB: only the summaries are kept), in the order
/// of `domains`. The flows are resolved against the fleet once for all domains, and each
/// failure re-plans only the flows that shared a saturable resource, directly or through
/// others, with a flow it ends (see [`blast_radius`]). The domains are planned on up to
/// `threads` threads at once; the results are the same whatever the number.
pub fn blast_radii<T: Send>(
    fleet: &Fleet,
    model: &NetworkModel,
    flows: &[FlowDemand],
    before: &Plan,
    domains: &[FailureDomain],
    threads: usize,
    summarise: impl Fn(&BlastRadius) -> T + Sync,
) -> Result<Vec<T>, PlacementError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let problem = Problem::new(fleet, model, flows)?;
    let computed;
    let before = if before.flows.len() == flows.len() {
        before
    } else {
        // Not the plan of these flows: the plan of these flows.
        computed = problem.plan();
        &computed
    };
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        let mut scratch = problem.scratch();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&domain) = domains.get(k) else { break };
            let radius = radius_of(fleet, &problem, before, domain, false, &mut scratch);
            done.push((k, summarise(&radius)));
        }
        done
    };
    let threads = threads.clamp(1, domains.len().max(1));
    let mut results: Vec<(usize, T)> = if threads == 1 {
        work()
    } else {
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            // A worker's panic is a bug of the planner's: it goes on up as it would have.
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    results.sort_by_key(|(k, _)| *k);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// The blast radius of `domain` for a fleet carrying `flows` (`before`: the plan without the
/// failure, computed if not given).
///
/// The plan after is the plan of the surviving flows, exactly as [`crate::plan`] would make
/// it, but only the flows in a component (flows joined by resources that can saturate) that
/// lost a flow are solved again: max-min fair rates of one component do not depend on
/// another's.
pub fn blast_radius(
    fleet: &Fleet,
    model: &NetworkModel,
    flows: &[FlowDemand],
    before: Option<&Plan>,
    domain: FailureDomain,
) -> Result<BlastRadius, PlacementError> {
    let problem = Problem::new(fleet, model, flows)?;
    let computed;
    let before = match before {
        Some(p) if p.flows.len() == flows.len() => p,
        _ => {
            computed = problem.plan();
            &computed
        }
    };
    Ok(radius_of(fleet, &problem, before, domain, true, &mut problem.scratch()))
}

/// The blast radius of `domain` for the flows of `problem`, whose plan is `before` (with the
/// plan after in full if `full_plan`).
fn radius_of(
    fleet: &Fleet,
    problem: &Problem<'_>,
    before: &Plan,
    domain: FailureDomain,
    full_plan: bool,
    scratch: &mut Scratch,
) -> BlastRadius {
    let mut is_failed = vec![false; fleet.instances().len()];
    let running = fleet.instances().iter().filter(|i| i.running);
    let mut failed = Vec::new();
    for inst in running.clone().filter(|i| domain.contains(fleet, i.host)) {
        is_failed[inst.id.index()] = true;
        failed.push(inst.id);
    }

    let mut groups: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    let mut partitions: BTreeMap<(u32, u8), (u32, u32)> = BTreeMap::new();
    for inst in running {
        if let Some(g) = inst.group {
            let lost = u32::from(is_failed[inst.id.index()]);
            let e = groups.entry(g.0).or_default();
            e.1 += 1;
            e.0 += lost;
            if let Some(p) = inst.partition {
                let e = partitions.entry((g.0, p)).or_default();
                e.1 += 1;
                e.0 += lost;
            }
        }
    }
    let name = |g: u32| fleet.group(crate::GroupId(g)).name.clone();
    let groups = groups
        .into_iter()
        .filter(|(_, (lost, _))| *lost > 0)
        .map(|(g, (lost, total))| GroupLoss { group: name(g), lost, total })
        .collect();
    let partitions = partitions
        .into_iter()
        .filter(|(_, (lost, _))| *lost > 0)
        .map(|((g, partition), (lost, total))| PartitionLoss {
            group: name(g),
            partition,
            lost,
            total,
        })
        .collect();

    let (flows_lost, after, throughput_after_gbps) = if failed.is_empty() {
        // No flow ends: the same flows over the same links, the same plan.
        (Vec::new(), full_plan.then(|| before.clone()), before.total_gbps)
    } else {
        let loss = problem.after_loss(before, &is_failed, full_plan, scratch);
        (loss.lost, loss.plan, loss.total_gbps)
    };
    BlastRadius {
        domain,
        failed,
        groups,
        partitions,
        flows_lost,
        throughput_before_gbps: before.total_gbps,
        throughput_after_gbps,
        after,
    }
}
