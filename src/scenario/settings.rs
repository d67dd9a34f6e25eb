//! The scenario's scalar settings and tables without references: the run's length and
//! sampling, `[run]`, `[network]`, `[[instance_types]]`, `[topology]` and `[costs]`, each
//! checked against its range before anything is built from it.

use hypervisor_sim::sim::CostModel;
use placement::{InstanceType, Topology};

use super::decl::Scenario;
use super::{MAX_DURATION_S, ScenarioError, Source};

/// Seconds of traffic when a scenario gives no `duration_s`.
const DEFAULT_DURATION_S: f64 = 3.0;

/// Most any one cost may be, ns or ps per byte: one second.
const MAX_COST: i64 = 1_000_000_000;

/// A scenario's settings, checked.
pub(super) struct Settings {
    /// Seconds of traffic.
    pub duration_s: f64,
    /// The region's AZs, racks and hosts.
    pub topology: Topology,
    /// The built-in catalogue plus the scenario's instance types.
    pub types: Vec<InstanceType>,
    /// Virtual-time costs.
    pub costs: CostModel,
}

/// Checks every setting of `s` that refers to nothing else in the scenario.
pub(super) fn check(s: &Scenario, src: &Source<'_>) -> Result<Settings, ScenarioError> {
    if !(0.0..=1.0).contains(&s.fragmentation) {
        return Err(src.whole(format!("fragmentation {} is not between 0 and 1", s.fragmentation)));
    }
    let duration_s = match &s.duration_s {
        Some(d)
            if !(d.get_ref().is_finite()
                && *d.get_ref() > 0.0
                && *d.get_ref() <= MAX_DURATION_S) =>
        {
            return Err(src.at(
                d.span(),
                format!("duration_s {} is not in (0, {MAX_DURATION_S}]", d.get_ref()),
            ));
        }
        Some(d) => *d.get_ref(),
        None => DEFAULT_DURATION_S,
    };
    check_run(s, src)?;
    s.network.check().map_err(|e| src.at_table("[network]", 0, e))?;
    let topology = s.topology.build().map_err(|e| src.whole(format!("topology: {e}")))?;
    Ok(Settings { duration_s, topology, types: instance_types(s, src)?, costs: costs(s, src)? })
}

/// `[run]`: how the hosts are built and measured.
fn check_run(s: &Scenario, src: &Source<'_>) -> Result<(), ScenarioError> {
    let r = &s.run;
    let fail = |message: String| Err(src.at_table("[run]", 0, message));
    if r.pfs_per_host == 0 || r.pfs_per_host > 8 {
        return fail(format!("run.pfs_per_host {} is not 1 to 8", r.pfs_per_host));
    }
    if r.vfs_per_pf == 0 || r.vfs_per_pf > 256 {
        return fail(format!("run.vfs_per_pf {} is not 1 to 256", r.vfs_per_pf));
    }
    if !(r.link_gbps.is_finite() && r.link_gbps > 0.0) {
        return fail(format!("run.link_gbps {} is not a rate", r.link_gbps));
    }
    if !(10..=10_000).contains(&r.sample_ms) {
        return fail(format!("run.sample_ms {} is not 10 to 10000", r.sample_ms));
    }
    if !(0.0..=0.5).contains(&r.efa_loss) {
        return fail(format!("run.efa_loss {} is not 0 to 0.5", r.efa_loss));
    }
    Ok(())
}

/// The catalogue plus the scenario's types, each checked and none defined twice.
fn instance_types(s: &Scenario, src: &Source<'_>) -> Result<Vec<InstanceType>, ScenarioError> {
    let mut types = InstanceType::catalog();
    for (i, t) in s.instance_types.iter().enumerate() {
        t.check().map_err(|e| src.at_table("[[instance_types]]", i, e))?;
        if types.iter().any(|c| c.name == t.name) {
            return Err(src.at_table(
                "[[instance_types]]",
                i,
                format!("instance type {} is defined twice", t.name),
            ));
        }
        types.push(t.clone());
    }
    Ok(types)
}

/// The default costs with the scenario's `[costs]` applied, each name and value checked.
fn costs(s: &Scenario, src: &Source<'_>) -> Result<CostModel, ScenarioError> {
    let mut costs = CostModel::default();
    for (name, value) in &s.costs {
        let v = *value.get_ref();
        if !(0..=MAX_COST).contains(&v) {
            return Err(src.at(
                value.span(),
                format!("costs.{} = {v} is not 0 to {MAX_COST}", name.get_ref()),
            ));
        }
        if !costs.set(name.get_ref(), v as u64) {
            let known: Vec<&str> = costs.fields().iter().map(|(n, _)| *n).collect();
            return Err(src.at(
                name.span(),
                format!("costs.{} is not a cost (the costs: {})", name.get_ref(), known.join(", ")),
            ));
        }
    }
    Ok(costs)
}
