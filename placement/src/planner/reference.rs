//! The solver as it was before the lazy heap, the reused problem and the slack and component
//! pruning: one plan per call, every resource in the heap, an entry pushed on every freeze.
//! Kept, unchanged, as the oracle the faster solver is checked against bit for bit.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{Bottleneck, FlowDemand, FlowPlan, Level, Link, LinkUse, Plan, Resources, total};
use crate::{AzId, Fleet, NetworkClass, NetworkModel, PlacementError, RackId};

/// The progressive-filling state: per resource its frozen load, active flows and saturation; per
/// flow its rate and bottleneck once frozen.
struct Filling<'a> {
    capacity: &'a [f64],
    flow_res: &'a [u32],
    flow_start: &'a [u32],
    frozen_load: Vec<f64>,
    active: Vec<u32>,
    /// Bumped whenever a resource's saturation level changes; older heap entries are stale.
    version: Vec<u32>,
    saturated: Vec<bool>,
    heap: BinaryHeap<Reverse<(Level, u32, u32)>>,
    rate: Vec<f64>,
    why: Vec<Option<Bottleneck>>,
}

impl Filling<'_> {
    /// Fixes flow `f` at rate `at`, and moves the saturation level of each resource it crosses.
    fn freeze(&mut self, f: usize, at: f64, bottleneck: Bottleneck) {
        self.why[f] = Some(bottleneck);
        self.rate[f] = at;
        let range = self.flow_start[f] as usize..self.flow_start[f + 1] as usize;
        for &r in &self.flow_res[range] {
            let r = r as usize;
            self.frozen_load[r] += at;
            self.active[r] -= 1;
            if self.active[r] > 0 && !self.saturated[r] {
                self.version[r] += 1;
                let left = self.capacity[r] - self.frozen_load[r];
                let s = (left / f64::from(self.active[r])).max(at);
                self.heap.push(Reverse((Level(s), r as u32, self.version[r])));
            }
        }
    }

    /// The lowest level at which a live resource saturates (stale heap entries dropped).
    fn next_saturation(&mut self) -> f64 {
        while let Some(&Reverse((level, r, v))) = self.heap.peek() {
            let r = r as usize;
            if self.saturated[r] || self.active[r] == 0 || v != self.version[r] {
                self.heap.pop();
            } else {
                return level.0;
            }
        }
        f64::INFINITY
    }
}

/// Computes the max-min fair rates of `flows` over `fleet`.
pub(crate) fn plan(
    fleet: &Fleet,
    model: &NetworkModel,
    flows: &[FlowDemand],
) -> Result<Plan, PlacementError> {
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
        capacity[res.id(Link::RegionEgress(inst.id))] = model.region_egress_gbps(fleet, inst.id)?;
    }
    for (r, rack) in topo.racks.iter().enumerate() {
        capacity[res.id(Link::RackUplinkOut(RackId(r as u32)))] = rack.uplink_gbps;
        capacity[res.id(Link::RackUplinkIn(RackId(r as u32)))] = rack.uplink_gbps;
    }
    for (a, az) in topo.azs.iter().enumerate() {
        capacity[res.id(Link::AzLinkOut(AzId(a as u32)))] = az.uplink_gbps;
        capacity[res.id(Link::AzLinkIn(AzId(a as u32)))] = az.uplink_gbps;
    }

    // Each flow's resources (CSR), bound and class.
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
    let n = flows.len();
    let resources_of = |f: usize| &flow_res[flow_start[f] as usize..flow_start[f + 1] as usize];

    // Resource → flows (CSR) and active counts.
    let mut active = vec![0u32; res.count()];
    for &r in &flow_res {
        active[r as usize] += 1;
    }
    let mut res_start = vec![0u32; res.count() + 1];
    for r in 0..res.count() {
        res_start[r + 1] = res_start[r] + active[r];
    }
    let mut res_flows = vec![0u32; flow_res.len()];
    let mut cursor = res_start.clone();
    for f in 0..n {
        for &r in resources_of(f) {
            res_flows[cursor[r as usize] as usize] = f as u32;
            cursor[r as usize] += 1;
        }
    }

    let mut fill = Filling {
        capacity: &capacity,
        flow_res: &flow_res,
        flow_start: &flow_start,
        frozen_load: vec![0.0; res.count()],
        active,
        version: vec![0; res.count()],
        saturated: vec![false; res.count()],
        heap: BinaryHeap::new(),
        rate: vec![0.0; n],
        why: vec![None; n],
    };
    for (r, (&cap, &n)) in capacity.iter().zip(&fill.active).enumerate() {
        if n > 0 {
            fill.heap.push(Reverse((Level(cap / f64::from(n)), r as u32, 0)));
        }
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| bound[a as usize].total_cmp(&bound[b as usize]));

    let mut frozen_count = 0usize;
    let mut next = 0usize;
    let mut level = 0.0f64;
    while frozen_count < n {
        while next < n && fill.why[order[next] as usize].is_some() {
            next += 1;
        }
        let next_bound = if next < n { bound[order[next] as usize] } else { f64::INFINITY };
        let next_saturation = fill.next_saturation();
        if next_bound <= next_saturation {
            let f = order[next] as usize;
            level = level.max(next_bound);
            let b = if caps[f] <= flows[f].demand_gbps {
                Bottleneck::FlowCap
            } else {
                Bottleneck::Demand
            };
            fill.freeze(f, next_bound, b);
            frozen_count += 1;
        } else {
            let Some(Reverse((l, r, _))) = fill.heap.pop() else { break };
            let r = r as usize;
            level = level.max(l.0);
            fill.saturated[r] = true;
            let link = res.link(r);
            for k in res_start[r]..res_start[r + 1] {
                let f = res_flows[k as usize] as usize;
                if fill.why[f].is_none() {
                    fill.freeze(f, level, Bottleneck::Link(link));
                    frozen_count += 1;
                }
            }
        }
    }
    let Filling { rate, why, .. } = fill;

    let mut used = vec![0.0f64; res.count()];
    for (f, &r_f) in rate.iter().enumerate() {
        for &r in resources_of(f) {
            used[r as usize] += r_f;
        }
    }
    let links = (0..res.count())
        .filter(|&r| res_start[r + 1] > res_start[r])
        .map(|r| LinkUse { link: res.link(r), capacity_gbps: capacity[r], used_gbps: used[r] })
        .collect();
    let flows_out: Vec<FlowPlan> = (0..n)
        .map(|f| FlowPlan {
            rate_gbps: rate[f],
            cap_gbps: caps[f],
            bottleneck: why[f].unwrap_or(Bottleneck::Demand),
            class: classes[f],
        })
        .collect();
    let total_gbps = total(rate.iter().copied());
    let unmet_demand_gbps = total(
        flows
            .iter()
            .zip(&rate)
            .filter(|(f, _)| f.demand_gbps.is_finite())
            .map(|(f, r)| (f.demand_gbps - r).max(0.0)),
    );
    Ok(Plan { flows: flows_out, links, total_gbps, unmet_demand_gbps })
}
