//! Max-min fair capacity planning by progressive filling.
//!
//! Every flow's rate rises at the same pace from zero (the *level*); a flow freezes when it
//! reaches its own bound (its single-flow cap or its demand) or when a resource it crosses
//! saturates, and the others keep rising. This is the water-filling SimGrid's LMM solver uses,
//! with per-flow bounds. The resources a flow crosses:
//!
//! | resource | capacity |
//! | --- | --- |
//! | sender out, receiver in | the instance type's baseline bandwidth |
//! | rack uplink out / in | the rack's uplink, for flows that leave / enter the rack |
//! | AZ link out / in | the AZ's inter-AZ link, for flows that leave / enter the AZ |
//! | region egress | per sender: 5 Gbps, or 50% of its bandwidth at 32+ vCPUs |
//!
//! Instead of raising the level in small steps, the solver jumps from event to event: the next
//! flow bound (flows sorted by bound) or the next resource saturation (a heap of each resource's
//! saturation level `(capacity − frozen load) / active flows`, brought up to date lazily, see
//! `Filling`). Resources no feasible allocation can fill are left out (`tight_resources`).
//! 100,000 flows over 2,000 instances solve in 62 ms, 1,000,000 over 100,000 instances in
//! 1.5 s (`cargo bench --bench placement`, `--bench region`).
//!
//! A `Problem` holds the flows resolved against the fleet once; a failure's blast radius
//! solves again only the components (flows joined by resources that can saturate) that lost a
//! flow, and the result is the plan of the survivors bit for bit (the eager solver this one
//! replaced is kept as the oracle of a property test).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use crate::{AzId, Fleet, InstanceId, NetworkClass, NetworkModel, PlacementError, RackId};

#[cfg(test)]
mod reference;

/// A flow to plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDemand {
    /// Sender.
    pub src: InstanceId,
    /// Receiver.
    pub dst: InstanceId,
    /// What the flow would send if nothing limited it, Gbps (`f64::INFINITY`: as much as it can).
    pub demand_gbps: f64,
    /// ENA Express (SRD) requested.
    #[serde(default)]
    pub srd: bool,
}

/// A shared resource of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Link {
    /// An instance's sending bandwidth.
    SenderOut(InstanceId),
    /// An instance's receiving bandwidth.
    ReceiverIn(InstanceId),
    /// A rack's uplink, outbound.
    RackUplinkOut(RackId),
    /// A rack's uplink, inbound.
    RackUplinkIn(RackId),
    /// An AZ's inter-AZ link, outbound.
    AzLinkOut(AzId),
    /// An AZ's inter-AZ link, inbound.
    AzLinkIn(AzId),
    /// An instance's allowance for traffic leaving the region.
    RegionEgress(InstanceId),
}

/// What stopped a flow from going faster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "link")]
pub enum Bottleneck {
    /// Its single-flow cap.
    FlowCap,
    /// It got all it asked for.
    Demand,
    /// A saturated shared resource.
    Link(Link),
}

/// One flow's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowPlan {
    /// Achieved rate, Gbps.
    pub rate_gbps: f64,
    /// Its single-flow cap, Gbps.
    pub cap_gbps: f64,
    /// What limited it.
    pub bottleneck: Bottleneck,
    /// Network class of its two ends.
    pub class: NetworkClass,
}

/// How loaded one resource is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkUse {
    /// The resource.
    pub link: Link,
    /// Its capacity, Gbps.
    pub capacity_gbps: f64,
    /// Carried, Gbps.
    pub used_gbps: f64,
}

impl LinkUse {
    /// Used / capacity.
    pub fn utilisation(&self) -> f64 {
        if self.capacity_gbps > 0.0 { self.used_gbps / self.capacity_gbps } else { 0.0 }
    }
}

/// The max-min fair plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per input flow, in input order.
    pub flows: Vec<FlowPlan>,
    /// Every resource some flow crosses, with its load.
    pub links: Vec<LinkUse>,
    /// Sum of rates, Gbps.
    pub total_gbps: f64,
    /// Sum over flows with finite demand of demand − rate, Gbps.
    pub unmet_demand_gbps: f64,
}

impl Plan {
    /// The load on one resource, if any flow crosses it.
    pub fn link(&self, link: Link) -> Option<&LinkUse> {
        self.links.iter().find(|l| l.link == link)
    }
}

/// Index of resources: instance out/in, rack out/in, AZ out/in, region egress per instance.
struct Resources {
    n_inst: usize,
    n_rack: usize,
    n_az: usize,
}

impl Resources {
    fn id(&self, link: Link) -> usize {
        let (i, r, a) = (self.n_inst, self.n_rack, self.n_az);
        match link {
            Link::SenderOut(x) => x.index(),
            Link::ReceiverIn(x) => i + x.index(),
            Link::RackUplinkOut(x) => 2 * i + x.index(),
            Link::RackUplinkIn(x) => 2 * i + r + x.index(),
            Link::AzLinkOut(x) => 2 * i + 2 * r + x.index(),
            Link::AzLinkIn(x) => 2 * i + 2 * r + a + x.index(),
            Link::RegionEgress(x) => 2 * i + 2 * r + 2 * a + x.index(),
        }
    }

    fn link(&self, id: usize) -> Link {
        let (i, r, a) = (self.n_inst, self.n_rack, self.n_az);
        let u = |v: usize| v as u32;
        if id < i {
            Link::SenderOut(InstanceId(u(id)))
        } else if id < 2 * i {
            Link::ReceiverIn(InstanceId(u(id - i)))
        } else if id < 2 * i + r {
            Link::RackUplinkOut(RackId(u(id - 2 * i)))
        } else if id < 2 * i + 2 * r {
            Link::RackUplinkIn(RackId(u(id - 2 * i - r)))
        } else if id < 2 * i + 2 * r + a {
            Link::AzLinkOut(AzId(u(id - 2 * i - 2 * r)))
        } else if id < 2 * i + 2 * r + 2 * a {
            Link::AzLinkIn(AzId(u(id - 2 * i - 2 * r - a)))
        } else {
            Link::RegionEgress(InstanceId(u(id - 2 * i - 2 * r - 2 * a)))
        }
    }

    fn count(&self) -> usize {
        3 * self.n_inst + 2 * self.n_rack + 2 * self.n_az
    }
}

/// Total order on f64 for the heap (levels are never NaN).
#[derive(Clone, Copy)]
struct Level(f64);
impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Level {}
impl PartialOrd for Level {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Level {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A resource's part in the filling.
#[derive(Clone, Copy, Default)]
struct ResState {
    /// Sum of the rates of its frozen flows.
    frozen_load: f64,
    /// The level at which it saturates as of its last change: `(capacity − frozen load) /
    /// active`, never below the level of the freeze that changed it.
    level: f64,
    /// Its flows not yet frozen.
    active: u32,
    /// Bumped at every change of `level`: a heap entry of an older version is stale.
    version: u32,
    /// Key and version of the newest heap entry pushed for it (see [`Filling::next_saturation`]).
    queued: (f64, u32),
    saturated: bool,
}

/// A resource no feasible allocation can load past this share of its capacity never saturates,
/// so the filling leaves it out (see [`tight_resources`]). A share, not one, so that rounding in
/// the frozen loads can never make it saturate where exact arithmetic would not: 10⁻⁶ of a
/// capacity is ten orders of magnitude above the rounding of a million additions.
const SLACK_SHARE: f64 = 1.0 - 1e-6;

/// Which resources can saturate: the others are *slack*, and leaving them out of the filling
/// changes nothing.
///
/// The filling's state at any level is a feasible allocation (no flow above its bound, no
/// resource above its capacity), and a resource saturates only in a state that loads it to its
/// capacity. So a resource that no feasible allocation can load to more than [`SLACK_SHARE`] of
/// its capacity never saturates. Three bounds on its load, the least of which is used, each
/// with a flow's rate at most `u` = the least of its bound and its resources' capacities:
///
/// * the sum of its flows' `u`;
/// * per sender, the lesser of its sending bandwidth and the `u` of its flows that cross the
///   resource, summed over senders (a rack uplink behind senders that cannot fill it);
/// * the same per receiver.
///
/// A resource of capacity 0 is slack only if all its flows ask for nothing.
fn tight_resources(
    res: &Resources,
    capacity: &[f64],
    flows: &[FlowDemand],
    (flow_start, flow_res): (&[u32], &[u32]),
    bound: &[f64],
) -> Vec<bool> {
    let resources_of = |f: usize| &flow_res[flow_start[f] as usize..flow_start[f + 1] as usize];
    let u: Vec<f64> = (0..flows.len())
        .map(|f| resources_of(f).iter().fold(bound[f], |u, &r| u.min(capacity[r as usize])))
        .collect();
    let mut sum_u = vec![0.0f64; res.count()];
    let mut asks = vec![false; res.count()];
    for f in 0..flows.len() {
        for &r in resources_of(f) {
            sum_u[r as usize] += u[f];
            asks[r as usize] |= bound[f] > 0.0;
        }
    }
    let by_end = |end: fn(&FlowDemand) -> InstanceId, link: fn(InstanceId) -> Link| {
        let (start, of_end) = group_by(res.n_inst, flows.iter().map(|f| end(f).index()));
        let mut load = vec![0.0f64; res.count()];
        let mut here = vec![0.0f64; res.count()];
        let mut seen = vec![u32::MAX; res.count()];
        let mut touched: Vec<u32> = Vec::new();
        for i in 0..res.n_inst {
            for &f in &of_end[start[i] as usize..start[i + 1] as usize] {
                for &r in resources_of(f as usize) {
                    if seen[r as usize] != i as u32 {
                        seen[r as usize] = i as u32;
                        touched.push(r);
                    }
                    here[r as usize] += u[f as usize];
                }
            }
            let own = capacity[res.id(link(InstanceId(i as u32)))];
            for r in touched.drain(..) {
                load[r as usize] += here[r as usize].min(own);
                here[r as usize] = 0.0;
            }
        }
        load
    };
    let by_sender = by_end(|f| f.src, Link::SenderOut);
    let by_receiver = by_end(|f| f.dst, Link::ReceiverIn);
    (0..res.count())
        .map(|r| {
            let most = sum_u[r].min(by_sender[r]).min(by_receiver[r]);
            let slack = most <= capacity[r] * SLACK_SHARE && (capacity[r] > 0.0 || !asks[r]);
            !slack
        })
        .collect()
}

/// Flows resolved against a fleet once: each flow's resources, bound, cap and class; which
/// resources can ever saturate (the *tight* ones); and the components the tight resources join
/// flows into. [`plan`] solves it once; a blast radius solves it again for each failure, only in
/// the components a lost flow belonged to.
///
/// Max-min fair rates are separable: a component's rates depend on its own flows and resources
/// only (the filling freezes a flow at the level of its own bound or of one of its own resources'
/// saturation, and a level is computed from that resource's flows alone). So solving only the
/// touched components, and keeping the others' rates, gives the very plan, bit for bit, that
/// solving every surviving flow gives.
pub(crate) struct Problem<'a> {
    flows: &'a [FlowDemand],
    res: Resources,
    capacity: Vec<f64>,
    /// Every resource of each flow (CSR), for the link loads.
    flow_start: Vec<u32>,
    flow_res: Vec<u32>,
    /// The tight resources of each flow (CSR).
    tight_start: Vec<u32>,
    tight_res: Vec<u32>,
    /// The flows of each tight resource (CSR; none for the others).
    res_start: Vec<u32>,
    res_flows: Vec<u32>,
    bound: Vec<f64>,
    caps: Vec<f64>,
    classes: Vec<NetworkClass>,
    /// Flows by bound, ties in input order.
    order: Vec<u32>,
    /// Each flow's component (the smallest flow index in it).
    component: Vec<u32>,
    /// The flows of each component (CSR by component).
    comp_start: Vec<u32>,
    comp_flows: Vec<u32>,
    /// The flows each instance sends and receives (CSR by instance index).
    of_src: (Vec<u32>, Vec<u32>),
    of_dst: (Vec<u32>, Vec<u32>),
}

impl<'a> Problem<'a> {
    /// Resolves `flows` against `fleet`; refuses a flow to itself, a demand that is not a rate,
    /// or an end that is not running, with the flow's index.
    pub(crate) fn new(
        fleet: &Fleet,
        model: &NetworkModel,
        flows: &'a [FlowDemand],
    ) -> Result<Self, PlacementError> {
        let topo = fleet.topology();
        let res = Resources {
            n_inst: fleet.instances().len(),
            n_rack: topo.racks.len(),
            n_az: topo.azs.len(),
        };
        let mut capacity = vec![0.0f64; res.count()];
        for inst in fleet.instances() {
            let bw = fleet.instance_types()[inst.instance_type].baseline_gbps;
            capacity[res.id(Link::SenderOut(inst.id))] = bw;
            capacity[res.id(Link::ReceiverIn(inst.id))] = bw;
            capacity[res.id(Link::RegionEgress(inst.id))] =
                model.region_egress_gbps(fleet, inst.id)?;
        }
        for (r, rack) in topo.racks.iter().enumerate() {
            capacity[res.id(Link::RackUplinkOut(RackId(r as u32)))] = rack.uplink_gbps;
            capacity[res.id(Link::RackUplinkIn(RackId(r as u32)))] = rack.uplink_gbps;
        }
        for (a, az) in topo.azs.iter().enumerate() {
            capacity[res.id(Link::AzLinkOut(AzId(a as u32)))] = az.uplink_gbps;
            capacity[res.id(Link::AzLinkIn(AzId(a as u32)))] = az.uplink_gbps;
        }

        let mut flow_start = Vec::with_capacity(flows.len() + 1);
        let mut flow_res: Vec<u32> = Vec::with_capacity(flows.len() * 4);
        let mut bound = Vec::with_capacity(flows.len());
        let mut caps = Vec::with_capacity(flows.len());
        let mut classes = Vec::with_capacity(flows.len());
        for (i, f) in flows.iter().enumerate() {
            if f.src == f.dst {
                return Err(PlacementError::BadFlow {
                    flow: i,
                    why: "sender and receiver are the same instance".into(),
                });
            }
            if f.demand_gbps.is_nan() || f.demand_gbps < 0.0 {
                return Err(PlacementError::BadFlow {
                    flow: i,
                    why: format!("demand {} Gbps is not a rate", f.demand_gbps),
                });
            }
            for end in [f.src, f.dst] {
                if !fleet.instance(end)?.running {
                    return Err(PlacementError::BadFlow {
                        flow: i,
                        why: format!("instance {} is not running", end.0),
                    });
                }
            }
            let class = fleet.network_class(f.src, f.dst)?;
            let cap = model.flow_cap_gbps(fleet, f.src, f.dst, f.srd)?;
            flow_start.push(flow_res.len() as u32);
            flow_res.push(res.id(Link::SenderOut(f.src)) as u32);
            flow_res.push(res.id(Link::ReceiverIn(f.dst)) as u32);
            let (hs, hd) = (fleet.instance(f.src)?.host, fleet.instance(f.dst)?.host);
            let (rs, rd) = (topo.rack_of(hs), topo.rack_of(hd));
            if rs != rd {
                flow_res.push(res.id(Link::RackUplinkOut(rs)) as u32);
                flow_res.push(res.id(Link::RackUplinkIn(rd)) as u32);
            }
            let (zs, zd) = (topo.az_of_rack(rs), topo.az_of_rack(rd));
            if zs != zd {
                flow_res.push(res.id(Link::AzLinkOut(zs)) as u32);
                flow_res.push(res.id(Link::AzLinkIn(zd)) as u32);
            }
            if class == NetworkClass::OtherRegion {
                flow_res.push(res.id(Link::RegionEgress(f.src)) as u32);
            }
            bound.push(cap.min(f.demand_gbps));
            caps.push(cap);
            classes.push(class);
        }
        flow_start.push(flow_res.len() as u32);

        let tight = tight_resources(&res, &capacity, flows, (&flow_start, &flow_res), &bound);
        let mut tight_start = Vec::with_capacity(flows.len() + 1);
        let mut tight_res = Vec::with_capacity(flow_res.len());
        for f in 0..flows.len() {
            tight_start.push(tight_res.len() as u32);
            let all = &flow_res[flow_start[f] as usize..flow_start[f + 1] as usize];
            tight_res.extend(all.iter().filter(|&&r| tight[r as usize]));
        }
        tight_start.push(tight_res.len() as u32);

        let mut count = vec![0u32; res.count()];
        for &r in &tight_res {
            count[r as usize] += 1;
        }
        let mut res_start = vec![0u32; res.count() + 1];
        for r in 0..res.count() {
            res_start[r + 1] = res_start[r] + count[r];
        }
        let mut res_flows = vec![0u32; tight_res.len()];
        let mut cursor = res_start.clone();
        for f in 0..flows.len() {
            for &r in &tight_res[tight_start[f] as usize..tight_start[f + 1] as usize] {
                res_flows[cursor[r as usize] as usize] = f as u32;
                cursor[r as usize] += 1;
            }
        }

        let mut order: Vec<u32> = (0..flows.len() as u32).collect();
        order.sort_by(|&a, &b| bound[a as usize].total_cmp(&bound[b as usize]));
        let component = components(flows.len(), &res_start, &res_flows);
        let (comp_start, comp_flows) = group_by(flows.len(), component.iter().map(|&c| c as usize));
        let of_src = group_by(res.n_inst, flows.iter().map(|f| f.src.index()));
        let of_dst = group_by(res.n_inst, flows.iter().map(|f| f.dst.index()));
        Ok(Self {
            flows,
            res,
            capacity,
            flow_start,
            flow_res,
            tight_start,
            tight_res,
            res_start,
            res_flows,
            bound,
            caps,
            classes,
            order,
            component,
            comp_start,
            comp_flows,
            of_src,
            of_dst,
        })
    }

    fn tight_of(&self, f: usize) -> &[u32] {
        &self.tight_res[self.tight_start[f] as usize..self.tight_start[f + 1] as usize]
    }

    fn resources_of(&self, f: usize) -> &[u32] {
        &self.flow_res[self.flow_start[f] as usize..self.flow_start[f + 1] as usize]
    }

    /// Progressive filling of the flows `live` (ascending), in `scratch`: each one's rate and
    /// bottleneck are left in `scratch.rate` and `scratch.why`. Costs the live flows and their
    /// resources, not the whole problem.
    fn solve(&self, live: &[u32], scratch: &mut Scratch) {
        // The live flows by bound, ties in input order: `self.order` itself, or filtered (a
        // pass over every flow) for a large part, or sorted afresh (stable) for a small one.
        let sorted: Vec<u32>;
        let order: &[u32] = if live.len() == self.flows.len() {
            &self.order
        } else if live.len() > self.flows.len() / 16 {
            let mut is_live = vec![false; self.flows.len()];
            for &f in live {
                is_live[f as usize] = true;
            }
            sorted = self.order.iter().copied().filter(|&f| is_live[f as usize]).collect();
            &sorted
        } else {
            let mut by_bound = live.to_vec();
            by_bound.sort_by(|&a, &b| self.bound[a as usize].total_cmp(&self.bound[b as usize]));
            sorted = by_bound;
            &sorted
        };
        let mut fill = Filling {
            capacity: &self.capacity,
            tight_res: &self.tight_res,
            tight_start: &self.tight_start,
            state: &mut scratch.state,
            heap: BinaryHeap::new(),
            rate: &mut scratch.rate,
            why: &mut scratch.why,
        };
        let mark = &mut scratch.mark;
        let mut touched: Vec<u32> = Vec::new();
        for &f in live {
            mark[f as usize] = Mark::Live;
            for &r in self.tight_of(f as usize) {
                let s = &mut fill.state[r as usize];
                if s.active == 0 {
                    touched.push(r);
                }
                s.active += 1;
            }
        }
        for &r in &touched {
            let s = &mut fill.state[r as usize];
            s.level = self.capacity[r as usize] / f64::from(s.active);
            s.queued = (s.level, 0);
            fill.heap.push(Reverse((Level(s.level), r, 0)));
        }

        let mut to_freeze = live.len();
        let mut next = 0usize;
        let mut level = 0.0f64;
        while to_freeze > 0 {
            while next < order.len() && mark[order[next] as usize] != Mark::Live {
                next += 1;
            }
            let next_bound =
                if next < order.len() { self.bound[order[next] as usize] } else { f64::INFINITY };
            let next_saturation = fill.next_saturation();
            if next_bound <= next_saturation {
                let f = order[next] as usize;
                level = level.max(next_bound);
                let b = if self.caps[f] <= self.flows[f].demand_gbps {
                    Bottleneck::FlowCap
                } else {
                    Bottleneck::Demand
                };
                fill.freeze(f, next_bound, b);
                mark[f] = Mark::Solved;
                to_freeze -= 1;
            } else {
                let Some(Reverse((l, r, _))) = fill.heap.pop() else { break };
                let r = r as usize;
                level = level.max(l.0);
                fill.state[r].saturated = true;
                let link = self.res.link(r);
                for k in self.res_start[r]..self.res_start[r + 1] {
                    let f = self.res_flows[k as usize] as usize;
                    if mark[f] == Mark::Live {
                        fill.freeze(f, level, Bottleneck::Link(link));
                        mark[f] = Mark::Solved;
                        to_freeze -= 1;
                    }
                }
            }
        }
        for &r in &touched {
            fill.state[r as usize] = ResState::default();
        }
    }

    /// The plan of the flows `survives` keeps, each with the rate and bottleneck `outcome` gives.
    fn assemble(
        &self,
        survives: impl Fn(usize) -> bool,
        outcome: impl Fn(usize) -> (f64, Bottleneck),
    ) -> Plan {
        let n = self.flows.len();
        let mut crossed = vec![false; self.res.count()];
        let mut used = vec![0.0f64; self.res.count()];
        let mut flows_out = Vec::with_capacity(n);
        let mut unmet = Vec::new();
        for f in (0..n).filter(|&f| survives(f)) {
            let (rate, bottleneck) = outcome(f);
            for &r in self.resources_of(f) {
                crossed[r as usize] = true;
                used[r as usize] += rate;
            }
            flows_out.push(FlowPlan {
                rate_gbps: rate,
                cap_gbps: self.caps[f],
                bottleneck,
                class: self.classes[f],
            });
            if self.flows[f].demand_gbps.is_finite() {
                unmet.push((self.flows[f].demand_gbps - rate).max(0.0));
            }
        }
        let links = (0..self.res.count())
            .filter(|&r| crossed[r])
            .map(|r| LinkUse {
                link: self.res.link(r),
                capacity_gbps: self.capacity[r],
                used_gbps: used[r],
            })
            .collect();
        let total_gbps = total(flows_out.iter().map(|p| p.rate_gbps));
        let unmet_demand_gbps = total(unmet.into_iter());
        Plan { flows: flows_out, links, total_gbps, unmet_demand_gbps }
    }

    /// The plan of every flow.
    pub(crate) fn plan(&self) -> Plan {
        let mut scratch = self.scratch();
        let all: Vec<u32> = (0..self.flows.len() as u32).collect();
        self.solve(&all, &mut scratch);
        self.assemble(|_| true, |f| (scratch.rate[f], scratch.why[f].unwrap_or(Bottleneck::Demand)))
    }

    /// Buffers for [`Problem::after_loss`], one per thread.
    pub(crate) fn scratch(&self) -> Scratch {
        let n = self.flows.len();
        Scratch {
            state: vec![ResState::default(); self.res.count()],
            mark: vec![Mark::Untouched; n],
            rate: vec![0.0; n],
            why: vec![None; n],
        }
    }

    /// What the flows of `problem` become when the instances `failed` marks stop, given
    /// `before`, the plan of all of them: the flows lost, and the plan of the others (in full
    /// with `full_plan`, else only its total). Only the components that lost a flow are solved
    /// again; the others keep `before`'s rates.
    pub(crate) fn after_loss(
        &self,
        before: &Plan,
        failed: &[bool],
        full_plan: bool,
        scratch: &mut Scratch,
    ) -> AfterLoss {
        let mut lost: Vec<u32> = Vec::new();
        for (i, _) in failed.iter().enumerate().filter(|(_, f)| **f) {
            for of in [&self.of_src, &self.of_dst] {
                for &f in &of.1[of.0[i] as usize..of.0[i + 1] as usize] {
                    if scratch.mark[f as usize] != Mark::Lost {
                        scratch.mark[f as usize] = Mark::Lost;
                        lost.push(f);
                    }
                }
            }
        }
        lost.sort_unstable();
        let mut components: Vec<u32> = lost.iter().map(|&f| self.component[f as usize]).collect();
        components.sort_unstable();
        components.dedup();
        let mut resolve: Vec<u32> = Vec::new();
        for c in components {
            let members = &self.comp_flows
                [self.comp_start[c as usize] as usize..self.comp_start[c as usize + 1] as usize];
            resolve.extend(members.iter().filter(|&&f| scratch.mark[f as usize] != Mark::Lost));
        }
        resolve.sort_unstable();
        self.solve(&resolve, scratch);

        let mark = &scratch.mark;
        let outcome = |f: usize| match mark[f] {
            Mark::Solved => (scratch.rate[f], scratch.why[f].unwrap_or(Bottleneck::Demand)),
            _ => (before.flows[f].rate_gbps, before.flows[f].bottleneck),
        };
        let survives = |f: usize| mark[f] != Mark::Lost;
        let (plan, total_gbps) = if full_plan {
            let plan = self.assemble(survives, outcome);
            let total_gbps = plan.total_gbps;
            (Some(plan), total_gbps)
        } else {
            let rates = (0..self.flows.len()).filter(|&f| survives(f)).map(|f| outcome(f).0);
            (None, total(rates))
        };
        for &f in lost.iter().chain(&resolve) {
            scratch.mark[f as usize] = Mark::Untouched;
            scratch.why[f as usize] = None;
        }
        AfterLoss { lost: lost.into_iter().map(|f| f as usize).collect(), plan, total_gbps }
    }
}

/// What a loss of instances does to a problem's plan ([`Problem::after_loss`]).
pub(crate) struct AfterLoss {
    /// The flows that ended, ascending.
    pub(crate) lost: Vec<usize>,
    /// The plan of the others, if asked for.
    pub(crate) plan: Option<Plan>,
    /// Its total, Gbps.
    pub(crate) total_gbps: f64,
}

/// Where a flow stands in one solve.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Not part of it: it keeps the rate it had.
    Untouched,
    /// To be solved, not yet frozen.
    Live,
    /// Solved: its rate is in the scratch.
    Solved,
    /// Ended with a failed instance.
    Lost,
}

/// One thread's buffers for solving parts of a problem again and again: each use leaves every
/// mark, bottleneck and resource state at its default (rates are only read where the mark says
/// solved, so they are left), so a solve costs what it touches, not the problem's size.
pub(crate) struct Scratch {
    state: Vec<ResState>,
    mark: Vec<Mark>,
    rate: Vec<f64>,
    why: Vec<Option<Bottleneck>>,
}

/// Flows grouped by one key (CSR): `.1[.0[k]...0[k + 1]]` are key `k`'s, ascending.
fn group_by(n_keys: usize, keys: impl Iterator<Item = usize> + Clone) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; n_keys + 1];
    for k in keys.clone() {
        start[k + 1] += 1;
    }
    for k in 0..n_keys {
        start[k + 1] += start[k];
    }
    let mut members = vec![0u32; start[n_keys] as usize];
    let mut cursor = start.clone();
    for (f, k) in keys.enumerate() {
        members[cursor[k] as usize] = f as u32;
        cursor[k] += 1;
    }
    (start, members)
}

/// Each flow's component: flows that share a tight resource are in one, named by its smallest
/// flow index (union-find over the resources' flow lists).
fn components(n: usize, res_start: &[u32], res_flows: &[u32]) -> Vec<u32> {
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            let up = parent[parent[x as usize] as usize];
            parent[x as usize] = up;
            x = up;
        }
        x
    }
    let mut parent: Vec<u32> = (0..n as u32).collect();
    for r in 0..res_start.len() - 1 {
        let members = &res_flows[res_start[r] as usize..res_start[r + 1] as usize];
        if let Some((&first, rest)) = members.split_first() {
            for &f in rest {
                let (a, b) = (find(&mut parent, first), find(&mut parent, f));
                // The smaller index is the root, so a component is named by its first flow.
                let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                parent[hi as usize] = lo;
            }
        }
    }
    (0..n as u32).map(|f| find(&mut parent, f)).collect()
}

/// The progressive-filling state: per resource its frozen load, active flows, saturation level
/// and whether it saturated; per flow its rate and bottleneck once frozen.
///
/// The heap is lazy: a freeze only raises the levels of the flow's resources, it pushes
/// nothing. An entry whose version is old is brought up to date when it reaches the top. A
/// level that could rise only ever rises (the share `(left − at) / (active − 1)` of a resource
/// is at least `left / active` when `at` is at most the level), so the entry in the heap is
/// never above the level it stands for, and the top, once current, is the lowest level of all,
/// ties to the lowest resource, exactly as an eager heap of every change would have it. Where
/// rounding lowers a level after all, a new entry is pushed. A freeze costs its resources'
/// arithmetic; the heap sees a few pushes per resource instead of one per flow and resource
/// (the region bench's million flows: 6.5 s eager, 1.5 s lazy with slack resources left out).
struct Filling<'a> {
    capacity: &'a [f64],
    tight_res: &'a [u32],
    tight_start: &'a [u32],
    state: &'a mut [ResState],
    heap: BinaryHeap<Reverse<(Level, u32, u32)>>,
    rate: &'a mut [f64],
    why: &'a mut [Option<Bottleneck>],
}

impl Filling<'_> {
    /// Fixes flow `f` at rate `at`, and moves the saturation level of each tight resource it
    /// crosses.
    fn freeze(&mut self, f: usize, at: f64, bottleneck: Bottleneck) {
        self.why[f] = Some(bottleneck);
        self.rate[f] = at;
        let range = self.tight_start[f] as usize..self.tight_start[f + 1] as usize;
        for &r in &self.tight_res[range] {
            let r = r as usize;
            let s = &mut self.state[r];
            s.frozen_load += at;
            s.active -= 1;
            if s.active > 0 && !s.saturated {
                s.version += 1;
                let left = self.capacity[r] - s.frozen_load;
                s.level = (left / f64::from(s.active)).max(at);
                if s.level < s.queued.0 {
                    s.queued = (s.level, s.version);
                    self.heap.push(Reverse((Level(s.level), r as u32, s.version)));
                }
            }
        }
    }

    /// The lowest level at which a live resource saturates, its entry left on top of the heap
    /// (stale entries dropped or brought up to date on the way).
    fn next_saturation(&mut self) -> f64 {
        while let Some(&Reverse((level, r, v))) = self.heap.peek() {
            let s = &mut self.state[r as usize];
            if s.saturated || s.active == 0 {
                self.heap.pop();
            } else if v == s.version {
                return level.0;
            } else {
                self.heap.pop();
                if s.queued.1 != s.version {
                    s.queued = (s.level, s.version);
                    self.heap.push(Reverse((Level(s.level), r, s.version)));
                }
            }
        }
        f64::INFINITY
    }
}

/// Computes the max-min fair rates of `flows` over `fleet`.
pub fn plan(
    fleet: &Fleet,
    model: &NetworkModel,
    flows: &[FlowDemand],
) -> Result<Plan, PlacementError> {
    Ok(Problem::new(fleet, model, flows)?.plan())
}

/// The sum of rates, 0.0 (not −0.0, which `Sum` gives an empty iterator) when there are none.
pub fn total(rates: impl Iterator<Item = f64>) -> f64 {
    rates.fold(0.0, |sum, r| sum + r)
}

#[cfg(test)]
mod tests {
    //! The solver against [`super::reference`], the eager one it replaced, bit for bit, on
    //! random fleets built to tie: few distinct demands and capacities, so that bounds and
    //! saturations meet at equal levels, and links small enough to saturate.

    use proptest::prelude::*;

    use super::{Problem, reference};
    use crate::{
        AzSpec, Fleet, FlowDemand, HostCapacity, InstanceId, InstanceType, LaunchRequest,
        NetworkModel, PlacementStrategy, Plan, RackSpec, RegionSpec, Topology, TopologySpec,
    };

    /// Two regions (one of two AZs), racks of two hosts, uplinks from `uplinks`.
    fn fleet(uplinks: &[f64], az_gbps: f64) -> Fleet {
        let racks = |first: usize| -> Vec<RackSpec> {
            (0..3)
                .map(|k| RackSpec {
                    uplink_gbps: uplinks[(first + k) % uplinks.len()],
                    hosts: vec![HostCapacity { vcpus: 64, memory_gib: 512, slots: vec![] }; 2],
                })
                .collect()
        };
        let az = |name: &str, first| AzSpec {
            name: name.into(),
            uplink_gbps: az_gbps,
            racks: racks(first),
        };
        let spec = TopologySpec {
            regions: vec![
                RegionSpec { name: "r1".into(), azs: vec![az("r1a", 0), az("r1b", 3)] },
                RegionSpec { name: "r2".into(), azs: vec![az("r2a", 6)] },
            ],
            cluster_segment_racks: 2,
        };
        let ty = |name: &str, vcpus, gbps| InstanceType {
            name: name.into(),
            vcpus,
            memory_gib: 4,
            baseline_gbps: gbps,
            burst_gbps: gbps,
        };
        let types = vec![ty("a", 2, 2.0), ty("b", 4, 4.0), ty("c", 36, 8.0)];
        Fleet::new(Topology::from_spec(&spec).expect("topology"), types)
    }

    /// Instances of `kinds` (type, where: 0 anywhere, 1 r1b, 2 r2a, 3 the cluster group).
    fn launch(f: &mut Fleet, kinds: &[(usize, usize)]) -> Vec<InstanceId> {
        f.create_group("hpc", Some("r1"), PlacementStrategy::Cluster).expect("group");
        kinds
            .iter()
            .filter_map(|&(ty, at)| {
                let mut req = LaunchRequest {
                    instance_type: ["a", "b", "c"][ty % 3].into(),
                    count: 1,
                    ..Default::default()
                };
                match at % 4 {
                    1 => req.az = Some("r1b".into()),
                    2 => req.region = Some("r2".into()),
                    3 => req.group = Some("hpc".into()),
                    _ => {}
                }
                f.launch(&req).ok().map(|ids| ids[0])
            })
            .collect()
    }

    fn bits(p: &Plan) -> Vec<u64> {
        let rates = p.flows.iter().map(|f| f.rate_gbps.to_bits());
        let loads = p.links.iter().map(|l| l.used_gbps.to_bits());
        rates.chain(loads).chain([p.total_gbps.to_bits(), p.unmet_demand_gbps.to_bits()]).collect()
    }

    const DEMANDS: [f64; 6] = [0.0, 0.5, 1.0, 2.0, 3.0, f64::INFINITY];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn plans_and_replans_match_the_eager_solver_bit_for_bit(
            uplinks in proptest::collection::vec(
                prop::sample::select(vec![1.0, 2.0, 3.0, 4.0, 100.0]),
                1..5,
            ),
            az_gbps in prop::sample::select(vec![2.0, 4.0, 1000.0]),
            kinds in proptest::collection::vec((0usize..3, 0usize..4), 2..14),
            pairs in proptest::collection::vec(
                (0usize..64, 0usize..64, 0usize..6, any::<bool>()),
                1..60,
            ),
            dead in proptest::collection::vec(any::<bool>(), 14),
        ) {
            let mut f = fleet(&uplinks, az_gbps);
            let ids = launch(&mut f, &kinds);
            prop_assume!(ids.len() >= 2);
            let flows: Vec<FlowDemand> = pairs
                .iter()
                .filter_map(|&(a, b, d, srd)| {
                    let (src, dst) = (ids[a % ids.len()], ids[b % ids.len()]);
                    (src != dst).then_some(FlowDemand { src, dst, demand_gbps: DEMANDS[d], srd })
                })
                .collect();
            let model = NetworkModel::default();
            let eager = reference::plan(&f, &model, &flows).expect("plan");
            let problem = Problem::new(&f, &model, &flows).expect("problem");
            let lazy = problem.plan();
            prop_assert_eq!(&lazy, &eager);
            prop_assert_eq!(bits(&lazy), bits(&eager));

            // Some instances fail: the flows they end go, the rest is planned again.
            let failed = |id: InstanceId| dead[id.index() % dead.len()];
            let survives: Vec<bool> =
                flows.iter().map(|d| !failed(d.src) && !failed(d.dst)).collect();
            let surviving: Vec<FlowDemand> =
                flows.iter().zip(&survives).filter(|(_, s)| **s).map(|(d, _)| d.clone()).collect();
            let afresh = reference::plan(&f, &model, &surviving).expect("plan");
            let is_failed: Vec<bool> =
                (0..f.instances().len()).map(|i| failed(InstanceId(i as u32))).collect();
            let mut scratch = problem.scratch();
            let again = problem.after_loss(&lazy, &is_failed, true, &mut scratch);
            let lost: Vec<usize> = (0..flows.len()).filter(|&k| !survives[k]).collect();
            prop_assert_eq!(&again.lost, &lost);
            let again_plan = again.plan.expect("asked for");
            prop_assert_eq!(&again_plan, &afresh);
            prop_assert_eq!(bits(&again_plan), bits(&afresh));
            prop_assert_eq!(again.total_gbps.to_bits(), afresh.total_gbps.to_bits());
            // The scratch is clean again: a second loss on it gives the same.
            let twice = problem.after_loss(&lazy, &is_failed, false, &mut scratch);
            prop_assert_eq!(twice.total_gbps.to_bits(), afresh.total_gbps.to_bits());
        }
    }

    /// Flows that share no saturable resource are separate components; a flow whose resources
    /// all have room for every bound crossing them is alone.
    #[test]
    fn components_join_flows_through_saturable_resources_only() {
        let mut f = fleet(&[100.0], 1000.0);
        let ids = launch(&mut f, &[(0, 0), (0, 0), (0, 0), (0, 0), (2, 0), (2, 0)]);
        let flow = |s: usize, d: usize, demand_gbps| FlowDemand {
            src: ids[s],
            dst: ids[d],
            demand_gbps,
            srd: false,
        };
        // 0→1 and 0→2 share 0's 2 Gbps sender (asked 3): one component. 3→1 joins it through
        // 1's receiver (asked 2 + 2 > 2). 4→5 asks 1 of 8 Gbps ends: alone.
        let flows = [flow(0, 1, 2.0), flow(0, 2, 1.0), flow(3, 1, 2.0), flow(4, 5, 1.0)];
        let p = Problem::new(&f, &NetworkModel::default(), &flows).expect("problem");
        assert_eq!(p.component, vec![0, 0, 0, 3]);
    }
}
