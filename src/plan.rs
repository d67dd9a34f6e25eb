//! `vnic-lab plan FILE`: the analytic capacity plan of a scenario — where every VM lands, the
//! max-min fair rate and bottleneck of every flow, the busiest links, and what each rack or AZ
//! failure takes down. No packets move.
//!
//! The scenario is the same TOML `run` takes ([`crate::scenario`]): a generated `[topology]`,
//! `[[groups]]` (cluster / spread / partition), `[[vms]]`, `[[flows]]` between VMs (`from`/`to`
//! name a VM or, ending in `*`, every VM whose name starts so; `gbps` is the demand, absent for as
//! much as the network gives). Errors name the file, line and column.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;
use std::sync::Arc;

use placement::{
    Bottleneck, FailureDomain, Fleet, FlowDemand, InstanceId, NetworkModel, blast_radii, plan,
};
use serde::Serialize;

use crate::scenario::{self, Placed, ScenarioError};

/// One VM's placement in the report (`plan`'s and `run`'s).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VmPlacement {
    /// Name.
    pub name: String,
    /// Instance type.
    pub instance_type: String,
    /// AZ name.
    pub az: String,
    /// Rack index.
    pub rack: u32,
    /// Host index.
    pub host: u32,
    /// Group, if any.
    pub group: Option<String>,
    /// Partition, if any.
    pub partition: Option<u8>,
}

/// One flow in the report. Its names and its bottleneck in words are shared with every other
/// flow of the same VM or bottleneck (a region's million flows name a few thousand VMs and
/// links).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FlowResult {
    /// Sender.
    pub from: Arc<str>,
    /// Receiver.
    pub to: Arc<str>,
    /// Achieved rate, Gbps.
    pub gbps: f64,
    /// Its single-flow cap, Gbps.
    pub cap_gbps: f64,
    /// Demand (absent: elastic).
    pub demand_gbps: Option<f64>,
    /// Network class.
    pub class: placement::NetworkClass,
    /// What limits it (absent: a security group or NACL blocks it).
    pub bottleneck: Option<Bottleneck>,
    /// The same, in words (a blocked flow: which rule stops it, or which rule is missing).
    pub limited_by: Arc<str>,
    /// Whether the VPC's security groups and NACLs let it and its replies through.
    pub allowed: bool,
}

/// What kind of domain a failure takes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureLevel {
    /// One host.
    Host,
    /// A rack (its top-of-rack switch or power).
    Rack,
    /// An availability zone.
    Az,
}

/// One failure in the report.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FailureResult {
    /// The failed domain (`rack 3`, `AZ us-east-1a`).
    pub domain: String,
    /// Whether it is a host, a rack or an AZ.
    pub level: FailureLevel,
    /// VMs lost.
    pub vms_lost: Vec<String>,
    /// Per group: lost / total.
    pub groups: BTreeMap<String, (u32, u32)>,
    /// Total planned Gbps after the failure.
    pub gbps_after: f64,
}

impl FailureResult {
    /// The VMs it takes down, in words: "no VM", "1 VM (web-0)", "8 VMs (a, b, ..., f, ...)".
    pub fn lost_summary(&self) -> String {
        const NAMED: usize = 6;
        match self.vms_lost.as_slice() {
            [] => "no VM".to_string(),
            [one] => format!("1 VM ({one})"),
            all if all.len() <= NAMED => format!("{} VMs ({})", all.len(), all.join(", ")),
            all => format!("{} VMs ({}, ...)", all.len(), all[..NAMED].join(", ")),
        }
    }
}

/// The plan.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PlanReport {
    /// The scenario's name.
    pub scenario: String,
    /// Where each VM landed.
    pub vms: Vec<VmPlacement>,
    /// Every flow's rate and bottleneck.
    pub flows: Vec<FlowResult>,
    /// Total planned Gbps.
    pub total_gbps: f64,
    /// Demand not met, Gbps.
    pub unmet_demand_gbps: f64,
    /// The five busiest links: (link, utilisation).
    pub busiest_links: Vec<(String, f64)>,
    /// Each rack and AZ that holds a VM, failed in turn.
    pub failures: Vec<FailureResult>,
}

/// Reads and plans the scenario at `path` within `limits`.
pub fn run_file(path: &Path, limits: &scenario::Limits) -> Result<PlanReport, ScenarioError> {
    let placed = scenario::load_file_with(path, limits)?;
    plan_placed(&placed).map_err(|message| ScenarioError {
        file: path.display().to_string(),
        at: None,
        message,
    })
}

/// Plans a scenario given as text (`file` names it in errors).
#[cfg(test)]
pub fn run_text(file: &str, text: &str) -> Result<PlanReport, ScenarioError> {
    let placed = scenario::load(file, text)?;
    plan_placed(&placed).map_err(|message| ScenarioError { file: file.into(), at: None, message })
}

/// The plan of a placed scenario, its blast radius on every core.
pub fn plan_placed(placed: &Placed) -> Result<PlanReport, String> {
    plan_placed_on(placed, std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The plan of a placed scenario, its blast radius on up to `threads` threads (the result is
/// the same for any number).
pub fn plan_placed_on(placed: &Placed, threads: usize) -> Result<PlanReport, String> {
    // Undeclared security lets every flow through: nothing to walk, nothing to keep per flow.
    let reach = if placed.security.is_declared() { Some(flow_reach(placed)?) } else { None };
    let mut flows = placed.demands();
    // A blocked flow moves nothing: it asks for nothing.
    for (d, r) in flows.iter_mut().zip(reach.iter().flatten()) {
        if !r.allowed {
            d.demand_gbps = 0.0;
        }
    }
    let model = &placed.network;
    let planned = plan(&placed.fleet, model, &flows).map_err(|e| e.to_string())?;
    let order: Vec<String> = placed.vms.iter().map(|v| v.name.clone()).collect();
    let names: BTreeMap<String, InstanceId> =
        placed.vms.iter().map(|v| (v.name.clone(), v.id)).collect();
    let vm_names: Vec<Arc<str>> = placed.vms.iter().map(|v| Arc::from(v.name.as_str())).collect();
    let flow_names: Vec<FlowNames> =
        placed.flows.iter().map(|f| (vm_names[f.from].clone(), vm_names[f.to].clone())).collect();
    let mut report =
        report(&placed.fleet, model, (&order, &names), (&flows, &flow_names), &planned, threads)?;
    report.scenario = placed.name.clone();
    for ((f, r), declared) in
        report.flows.iter_mut().zip(reach.into_iter().flatten()).zip(&placed.flows)
    {
        if let Some(why) = r.blocked {
            report.unmet_demand_gbps += declared.gbps.unwrap_or(0.0);
            f.allowed = false;
            f.bottleneck = None;
            f.limited_by = why.into();
            // What it asked for, not the nothing the planner was given.
            f.demand_gbps = declared.gbps;
        }
    }
    Ok(report)
}

/// Each flow's way through the security groups and NACLs. A scenario that declares none has
/// every ENI in the VPC's default group (everything from itself) behind the default NACL
/// (everything), so every flow between its VMs passes and nothing needs walking.
pub fn flow_reach(placed: &Placed) -> Result<Vec<crate::reach::FlowReach>, String> {
    if !placed.security.is_declared() {
        let open = crate::reach::FlowReach {
            allowed: true,
            blocked: None,
            request: Vec::new(),
            reply: Vec::new(),
        };
        return Ok(vec![open; placed.flows.len()]);
    }
    let mut vpc = crate::reach::vpc(placed)?;
    Ok(crate::reach::flows(placed, &mut vpc))
}

/// A flow's sender and receiver, by name.
type FlowNames = (Arc<str>, Arc<str>);

fn report(
    fleet: &Fleet,
    model: &NetworkModel,
    (order, names): (&[String], &BTreeMap<String, InstanceId>),
    (flows, flow_names): (&[FlowDemand], &[FlowNames]),
    planned: &placement::Plan,
    threads: usize,
) -> Result<PlanReport, String> {
    let internal = |e: placement::PlacementError| e.to_string();
    let t = fleet.topology();
    let name_of: BTreeMap<InstanceId, &String> = names.iter().map(|(n, &id)| (id, n)).collect();
    let mut vms = Vec::new();
    for name in order {
        let inst = fleet.instance(names[name]).map_err(internal)?;
        vms.push(VmPlacement {
            name: name.clone(),
            instance_type: fleet.instance_types()[inst.instance_type].name.clone(),
            az: t.azs[t.az_of(inst.host).index()].name.clone(),
            rack: t.rack_of(inst.host).0,
            host: inst.host.0,
            group: inst.group.map(|g| fleet.group(g).name.clone()),
            partition: inst.partition,
        });
    }
    let vm = |id: InstanceId| {
        name_of.get(&id).map_or_else(|| format!("instance {}", id.0), |n| (*n).clone())
    };
    let link_label = |l: placement::Link| match l {
        placement::Link::SenderOut(i) => format!("{}'s sending bandwidth", vm(i)),
        placement::Link::ReceiverIn(i) => format!("{}'s receiving bandwidth", vm(i)),
        placement::Link::RackUplinkOut(r) => format!("rack {}'s uplink out", r.0),
        placement::Link::RackUplinkIn(r) => format!("rack {}'s uplink in", r.0),
        placement::Link::AzLinkOut(a) => format!("{}'s inter-AZ link out", t.azs[a.index()].name),
        placement::Link::AzLinkIn(a) => format!("{}'s inter-AZ link in", t.azs[a.index()].name),
        placement::Link::RegionEgress(i) => format!("{}'s region egress allowance", vm(i)),
    };
    let mut labels: std::collections::HashMap<Bottleneck, Arc<str>> = Default::default();
    let flows_out = flows
        .iter()
        .zip(&planned.flows)
        .zip(flow_names)
        .map(|((f, p), (from, to))| FlowResult {
            limited_by: labels
                .entry(p.bottleneck)
                .or_insert_with(|| match p.bottleneck {
                    Bottleneck::FlowCap => "the single-flow cap".into(),
                    Bottleneck::Demand => "its demand".into(),
                    Bottleneck::Link(l) => link_label(l).into(),
                })
                .clone(),
            from: from.clone(),
            to: to.clone(),
            gbps: p.rate_gbps,
            cap_gbps: p.cap_gbps,
            demand_gbps: f.demand_gbps.is_finite().then_some(f.demand_gbps),
            class: p.class,
            bottleneck: Some(p.bottleneck),
            allowed: true,
        })
        .collect();
    let mut links: Vec<(String, f64)> =
        planned.links.iter().map(|l| (link_label(l.link), l.utilisation())).collect();
    links.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    links.truncate(5);
    // Every rack and AZ that holds a VM, failed in turn.
    let domains: Vec<FailureDomain> = FailureDomain::occupied(fleet)
        .into_iter()
        .filter(|d| !matches!(d, FailureDomain::Host(_)))
        .collect();
    let failures =
        blast_radii(fleet, model, flows, planned, &domains, threads, |b| FailureResult {
            domain: match b.domain {
                FailureDomain::Host(h) => format!("host {}", h.0),
                FailureDomain::Rack(r) => format!("rack {}", r.0),
                FailureDomain::Az(a) => format!("AZ {}", t.azs[a.index()].name),
            },
            level: match b.domain {
                FailureDomain::Host(_) => FailureLevel::Host,
                FailureDomain::Rack(_) => FailureLevel::Rack,
                FailureDomain::Az(_) => FailureLevel::Az,
            },
            vms_lost: b
                .failed
                .iter()
                .filter_map(|id| name_of.get(id).map(|n| (*n).clone()))
                .collect(),
            groups: b.groups.iter().map(|g| (g.group.clone(), (g.lost, g.total))).collect(),
            gbps_after: b.throughput_after_gbps,
        })
        .map_err(internal)?;
    Ok(PlanReport {
        scenario: String::new(),
        vms,
        flows: flows_out,
        total_gbps: planned.total_gbps,
        unmet_demand_gbps: planned.unmet_demand_gbps,
        busiest_links: links,
        failures,
    })
}

impl VmPlacement {
    /// Its group and partition, for a text line (empty if neither).
    pub fn group_label(&self) -> String {
        let mut label = String::new();
        if let Some(g) = &self.group {
            let _ = write!(label, "  group {g}");
        }
        if let Some(p) = self.partition {
            let _ = write!(label, " partition {p}");
        }
        label
    }
}

impl fmt::Display for PlanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "placement ({} VMs):", self.vms.len())?;
        for vm in &self.vms {
            writeln!(
                f,
                "  {:<12} {:<14} {}  rack {:>3}  host {:>4}{}",
                vm.name,
                vm.instance_type,
                vm.az,
                vm.rack,
                vm.host,
                vm.group_label()
            )?;
        }
        writeln!(
            f,
            "flows ({}): {:.2} Gbps in all, {:.2} Gbps of demand unmet",
            self.flows.len(),
            self.total_gbps,
            self.unmet_demand_gbps
        )?;
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for fl in &self.flows {
            *by.entry(&fl.limited_by).or_default() += 1;
        }
        for (k, n) in &by {
            writeln!(f, "  {n:>4} limited by {k}")?;
        }
        for fl in self.flows.iter().take(12) {
            writeln!(
                f,
                "  {:>10} -> {:<10} {:>7.2} Gbps  cap {:>4.1}  {}, limited by {}",
                fl.from, fl.to, fl.gbps, fl.cap_gbps, fl.class, fl.limited_by
            )?;
        }
        if self.flows.len() > 12 {
            writeln!(f, "  ... {} more (--json for all)", self.flows.len() - 12)?;
        }
        writeln!(f, "busiest links:")?;
        for (l, u) in &self.busiest_links {
            writeln!(f, "  {:>5.1}%  {l}", u * 100.0)?;
        }
        writeln!(f, "blast radius:")?;
        for x in &self.failures {
            let groups: Vec<String> =
                x.groups.iter().map(|(g, (l, t))| format!("{l} of {t} in {g}")).collect();
            let lost = x.lost_summary();
            let groups =
                if groups.is_empty() { String::new() } else { format!("; {}", groups.join(", ")) };
            writeln!(f, "  {:<16} loses {lost}{groups}; {:.2} Gbps left", x.domain, x.gbps_after)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../scenarios/plan-hpc.toml");

    /// A scenario that declares no security group or NACL is not walked (every ENI is in the
    /// default group behind the default NACL); walking it finds every flow allowed anyway.
    #[test]
    fn undeclared_security_lets_every_flow_through() {
        for text in [EXAMPLE, include_str!("../scenarios/default.toml")] {
            let placed = scenario::load("s.toml", text).unwrap();
            assert!(!placed.security.is_declared());
            let mut vpc = crate::reach::vpc(&placed).unwrap();
            let walked = crate::reach::flows(&placed, &mut vpc);
            assert!(walked.iter().all(|r| r.allowed), "{walked:#?}");
            assert_eq!(walked.len(), placed.flows.len());
        }
    }

    #[test]
    fn the_example_plans() {
        let r = run_text("plan-hpc.toml", EXAMPLE).unwrap();
        assert_eq!(r.vms.len(), 24);
        let azs: std::collections::BTreeSet<&str> = r
            .vms
            .iter()
            .filter(|v| v.group.as_deref() == Some("hpc"))
            .map(|v| v.az.as_str())
            .collect();
        assert_eq!(azs.len(), 1, "a cluster group lives in one AZ");
        assert_eq!(r.flows.len(), 8 * 7 + 6 * 6 + 4);
        for fl in r.flows.iter().filter(|f| f.from.starts_with("node")) {
            assert_eq!((fl.gbps, fl.cap_gbps), (10.0, 10.0), "{fl:?}");
        }
        for fl in r.flows.iter().filter(|f| f.to.starts_with("client")) {
            assert!((fl.gbps - 0.75).abs() < 1e-9, "m5.large baseline: {fl:?}");
        }
        assert!(!r.failures.is_empty());
        let text = r.to_string();
        assert!(text.contains("blast radius") && text.contains("limited by"), "{text}");
        assert!(serde_json::to_string(&r).unwrap().contains("\"bottleneck\""));
        // A rack that holds one VM: "loses 1 VM (name)", its groups as "k of n in group".
        let one = r.failures.iter().find(|x| x.vms_lost.len() == 1).expect("a rack with one VM");
        let line = format!("loses 1 VM ({})", one.vms_lost[0]);
        assert!(text.contains(&line), "{text}");
        assert!(!text.contains("VMs []") && !text.contains("1 VMs"), "{text}");
        assert!(text.contains(" of 6 in web"), "{text}");
    }

    #[test]
    fn network_classes_read_the_same_in_text_and_json() {
        use placement::NetworkClass::*;
        for class in [SameHost, SameRack, SameAz, OtherAz, OtherRegion] {
            assert_eq!(serde_json::to_string(&class).unwrap(), format!("\"{class}\""));
        }
        let r = run_text("plan-hpc.toml", EXAMPLE).unwrap();
        let text = r.to_string();
        let class = r.flows[0].class.to_string();
        assert!(text.contains(&format!("  {class}, limited by")), "{text}");
    }

    #[test]
    fn no_flows_is_zero_not_minus_zero() {
        let no_flows = EXAMPLE.split("[[flows]]").next().unwrap();
        let r = run_text("plan.toml", no_flows).unwrap();
        assert!(r.total_gbps.is_sign_positive() && r.unmet_demand_gbps.is_sign_positive());
        let text = r.to_string();
        assert!(text.contains("0.00 Gbps in all") && !text.contains("-0.00"), "{text}");
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("-0.0"), "{json}");
    }

    #[test]
    fn bad_scenarios_name_the_place() {
        let cases: &[(&str, &str)] = &[
            ("[topology]\nregionz = []\n", "plan.toml:2:1"),
            ("seed = \"x\"\n", "plan.toml:1:8"),
            (&EXAMPLE.replace("to = \"web-*\"", "to = \"webb-*\""), "no VM named `webb-*`"),
            (
                &EXAMPLE.replace("strategy = \"spread\"", "strategy = \"scatter\""),
                "unknown strategy `scatter`",
            ),
            (&EXAMPLE.replace("partitions = 3", "partitions = 8"), "1 to 7 partitions"),
            (
                &EXAMPLE.replace("count = 8\ngroup = \"hpc\"", "count = 80\ngroup = \"hpc\""),
                "InsufficientInstanceCapacity",
            ),
            (
                &EXAMPLE.replace("type = \"m5.large\"", "type = \"m9.huge\""),
                "unknown instance type",
            ),
            (&EXAMPLE.replace("gbps = 2.0", "gbps = -2.0"), "is not a rate"),
            (&EXAMPLE.replace("group = \"web\"", "group = \"nope\""), "does not exist"),
        ];
        for (text, want) in cases {
            let e = run_text("plan.toml", text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(e.starts_with("plan.toml"), "{e}");
        }
        // Dangling references point at their line.
        let e = run_text("plan.toml", &EXAMPLE.replace("to = \"web-*\"", "to = \"webb-*\""))
            .unwrap_err()
            .to_string();
        let line = EXAMPLE.lines().position(|l| l.contains("to = \"web-*\"")).unwrap() + 1;
        assert!(e.starts_with(&format!("plan.toml:{line}:")), "{e}");
    }
}
