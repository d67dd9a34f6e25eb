//! Failures injected during `run`: `rack_of = "vm"` at `at_s` crashes every VM placed in that
//! VM's rack, resolved here against the placement so the report can name them.

use placement::Fleet;

use super::decl::Scenario;
use super::{RackFailure, ScenarioError, Source, Vm};

/// Every `[[failures]]` entry, each within the run and naming a placed VM.
pub(super) fn resolve(
    s: &Scenario,
    src: &Source<'_>,
    duration_s: f64,
    fleet: &Fleet,
    vms: &[Vm],
) -> Result<Vec<RackFailure>, ScenarioError> {
    let mut failures = Vec::new();
    for d in &s.failures {
        let at_s = *d.at_s.get_ref();
        if !(at_s.is_finite() && at_s >= 0.0 && at_s < duration_s) {
            return Err(src
                .at(d.at_s.span(), format!("at_s {at_s} is not within the run's {duration_s} s")));
        }
        let Some(victim) = vms.iter().position(|v| v.name == *d.rack_of.get_ref()) else {
            return Err(src.at(d.rack_of.span(), format!("no VM named `{}`", d.rack_of.get_ref())));
        };
        let t = fleet.topology();
        let rack_of = |i: usize| fleet.instance(vms[i].id).map(|inst| t.rack_of(inst.host));
        let rack = rack_of(victim).map_err(|e| src.at(d.rack_of.span(), e.to_string()))?;
        let lost: Vec<usize> =
            (0..vms.len()).filter(|&i| rack_of(i).is_ok_and(|r| r == rack)).collect();
        failures.push(RackFailure { at_s, vms: lost, rack: rack.0 });
    }
    Ok(failures)
}
