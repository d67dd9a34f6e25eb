//! Flows: each `[[flows]]` entry is checked once (rate, protocol, arrivals, pattern, times) and
//! then expanded to every pair of two different VMs its `from` and `to` match (`web-*` to
//! `db-*`), `parallel` flows per pair, each pair checked for what it carries: a frame of 60 B
//! to the pair's smaller MTU + 14 (EFA: a message of 32 B, its header, to 8,192 B, one SRD
//! packet), an ENI on the path it names at both ends, and EC2's EFA rules.

use std::ops::Range;

use hypervisor_sim::sim::traffic::{Arrivals, EFA_HEADER_BYTES, Pattern};
use toml::Spanned;

use super::decl::{FlowDecl, Scenario};
use super::source::parse_path;
use super::{Eni, Flow, PathName, ScenarioError, Source, Vm};

/// The largest EFA message (one SRD packet).
const EFA_MTU: usize = hypervisor_sim::vnic::efa::EFA_MTU;
/// Fastest rate a flow may be offered, Gbps.
const MAX_FLOW_GBPS: f64 = 400.0;
/// Smallest Ethernet frame without its FCS.
const MIN_FRAME: usize = 60;
/// An Ethernet header: a frame carries the MTU plus this.
const ETHERNET_HEADER: usize = 14;
/// The UDP destination port when an entry does not say.
const DEFAULT_DST_PORT: u16 = 9000;

/// What an entry gives every flow it expands to, checked.
struct Shape {
    protocol: u8,
    gbps: Option<f64>,
    path: Option<PathName>,
    arrivals: Arrivals,
    pattern: Pattern,
    parallel: u16,
    start_s: f64,
    stop_s: Option<f64>,
}

/// Counts what the `[[flows]]` entries expand to, from the VMs' declared names, before any VM
/// is placed or flow built: past `max_flows` in all, the entry that crosses it is refused with
/// its count.
pub(super) fn check_expansion(
    s: &Scenario,
    src: &Source<'_>,
    names: &[String],
    max_flows: u64,
) -> Result<(), ScenarioError> {
    let mut total: u64 = 0;
    let mut in_from = vec![false; names.len()];
    for (k, f) in s.flows.iter().enumerate() {
        // A name that matches nothing counts nothing here; resolving the flows says so.
        let from = matching_names(&f.from, src, names).unwrap_or_default();
        let to = matching_names(&f.to, src, names).unwrap_or_default();
        for &i in &from {
            in_from[i] = true;
        }
        // A VM does not send to itself: pairs of one VM with itself are not flows.
        let both = to.iter().filter(|&&i| in_from[i]).count() as u64;
        for &i in &from {
            in_from[i] = false;
        }
        let parallel = f.parallel.as_ref().map_or(1, |p| u64::from(*p.get_ref()));
        let pairs = (from.len() as u64 * to.len() as u64).saturating_sub(both);
        let flows = pairs.saturating_mul(parallel);
        total = total.saturating_add(flows);
        if total > max_flows {
            let before = total - flows;
            let earlier = if before > 0 {
                format!(" (after {} from the entries before it)", super::thousands(before))
            } else {
                String::new()
            };
            return Err(src.at(
                f.from.span(),
                format!(
                    "flows[{k}] `{}` → `{}` expands to {} flow{}{earlier}; the limit is {} \
                     (--max-flows)",
                    f.from.get_ref(),
                    f.to.get_ref(),
                    super::thousands(flows),
                    if flows == 1 { "" } else { "s" },
                    super::thousands(max_flows)
                ),
            ));
        }
    }
    Ok(())
}

/// Every flow of the scenario, in entry order.
pub(super) fn resolve(
    s: &Scenario,
    src: &Source<'_>,
    duration_s: f64,
    vms: &[Vm],
    enis: &[Eni],
) -> Result<Vec<Flow>, ScenarioError> {
    let mut flows = Vec::new();
    for (decl, f) in s.flows.iter().enumerate() {
        let shape = shape(f, src, duration_s)?;
        let before = flows.len();
        let senders = matching(&f.from, src, vms)?;
        let receivers = matching(&f.to, src, vms)?;
        for from in senders {
            for &to in &receivers {
                if from == to {
                    // `web-*` to `web-*` means every pair of two different VMs.
                    continue;
                }
                let efa = shape.path.unwrap_or(vms[from].path) == PathName::Efa;
                if efa {
                    check_efa_pair(src, f, vms, enis, from, to)?;
                }
                let tcp = shape.protocol == vnic::policy::PROTO_TCP;
                if efa && tcp {
                    let at = f.protocol.as_ref().map_or(f.from.span(), |p| p.span());
                    return Err(
                        src.at(at, "protocol tcp on the EFA path: EFA flows are SRD messages")
                    );
                }
                let frame = frame_len(f, src, efa, tcp, &vms[from], &vms[to])?;
                if let (Some(p), Some(declared)) = (shape.path, &f.path) {
                    check_has_path(src, declared.span(), p, vms, enis, [from, to])?;
                }
                for _ in 0..shape.parallel {
                    flows.push(Flow {
                        from,
                        to,
                        gbps: shape.gbps,
                        srd: f.srd,
                        frame,
                        dst_port: f.dst_port.unwrap_or(DEFAULT_DST_PORT),
                        path: shape.path,
                        start_s: shape.start_s,
                        stop_s: shape.stop_s,
                        decl,
                        arrivals: shape.arrivals,
                        efa,
                        pattern: shape.pattern,
                        protocol: shape.protocol,
                        src_port: vms[from].ephemeral.port(flows.len() as u64),
                    });
                }
            }
        }
        if flows.len() == before {
            return Err(src.at(
                f.from.span(),
                format!(
                    "flow from `{}` to `{}` has no pair of two different VMs: a VM does not \
                     send to itself",
                    f.from.get_ref(),
                    f.to.get_ref()
                ),
            ));
        }
    }
    Ok(flows)
}

/// The VMs a `from` or `to` names: one VM, or every VM whose name starts with a prefix
/// ending in `*`; none is an error.
fn matching(
    pattern: &Spanned<String>,
    src: &Source<'_>,
    vms: &[Vm],
) -> Result<Vec<usize>, ScenarioError> {
    matching_by(pattern, src, vms.len(), |i| vms[i].name.as_str())
}

fn matching_names(
    pattern: &Spanned<String>,
    src: &Source<'_>,
    names: &[String],
) -> Result<Vec<usize>, ScenarioError> {
    matching_by(pattern, src, names.len(), |i| names[i].as_str())
}

/// The VMs (of `n`, named by `name`) a `from` or `to` names: one name, or a prefix and `*`.
fn matching_by<'a>(
    pattern: &Spanned<String>,
    src: &Source<'_>,
    n: usize,
    name: impl Fn(usize) -> &'a str,
) -> Result<Vec<usize>, ScenarioError> {
    let p = pattern.get_ref();
    let found: Vec<usize> = match p.strip_suffix('*') {
        Some(prefix) => (0..n).filter(|&i| name(i).starts_with(prefix)).collect(),
        None => (0..n).find(|&i| name(i) == p).into_iter().collect(),
    };
    if found.is_empty() {
        return Err(src.at(pattern.span(), format!("no VM named `{p}`")));
    }
    Ok(found)
}

fn shape(f: &FlowDecl, src: &Source<'_>, duration_s: f64) -> Result<Shape, ScenarioError> {
    if let Some(g) = &f.gbps
        && !(g.get_ref().is_finite() && *g.get_ref() > 0.0 && *g.get_ref() <= MAX_FLOW_GBPS)
    {
        return Err(
            src.at(g.span(), format!("gbps {} is not a rate in (0, {MAX_FLOW_GBPS}]", g.get_ref()))
        );
    }
    let protocol = match f.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "udp")) => vnic::policy::PROTO_UDP,
        Some((_, "tcp")) => vnic::policy::PROTO_TCP,
        Some((p, other)) => {
            return Err(src.at(p.span(), format!("protocol `{other}`: expected `udp` or `tcp`")));
        }
    };
    let path = f.path.as_ref().map(|p| parse_path(p, src)).transpose()?;
    let arrivals = match &f.arrivals {
        None => Arrivals::Periodic,
        Some(a) if a.get_ref() == "periodic" => Arrivals::Periodic,
        Some(a) if a.get_ref() == "poisson" => Arrivals::Poisson,
        Some(a) => {
            return Err(src.at(
                a.span(),
                format!("arrivals `{}` is not `periodic` or `poisson`", a.get_ref()),
            ));
        }
    };
    let pattern = match &f.pattern {
        None => Pattern::Stream,
        Some(p) if p.get_ref() == "stream" => Pattern::Stream,
        Some(p) if p.get_ref() == "ping-pong" => Pattern::PingPong,
        Some(p) => {
            return Err(src.at(
                p.span(),
                format!("pattern `{}` is not `stream` or `ping-pong`", p.get_ref()),
            ));
        }
    };
    if let (Some(p), Some(proto)) = (&f.pattern, &f.protocol)
        && pattern == Pattern::PingPong
        && protocol == vnic::policy::PROTO_TCP
    {
        return Err(src.at(
            p.span(),
            format!(
                "pattern ping-pong with protocol `{}`: ping-pong is UDP request/response; a TCP \
                 flow streams, its receiver acknowledging",
                proto.get_ref()
            ),
        ));
    }
    let parallel = src.ranged(&f.parallel, "parallel", 1..=1024, 1)?;
    let start_s = f.start_s.as_ref().map_or(0.0, |s| *s.get_ref());
    if let Some(st) = &f.start_s
        && !(st.get_ref().is_finite() && *st.get_ref() >= 0.0 && *st.get_ref() < duration_s)
    {
        return Err(src.at(
            st.span(),
            format!("start_s {} is not within the run's {duration_s} s", st.get_ref()),
        ));
    }
    if let Some(sp) = &f.stop_s {
        let stop = *sp.get_ref();
        if !(stop.is_finite() && stop > start_s) {
            return Err(src.at(sp.span(), format!("stop_s {stop} is not after start_s {start_s}")));
        }
        if stop > duration_s {
            return Err(src.at(
                sp.span(),
                format!(
                    "stop_s {stop} is after the run ends ({duration_s} s): lower it or raise \
                     duration_s"
                ),
            ));
        }
    }
    Ok(Shape {
        protocol,
        gbps: f.gbps.as_ref().map(|g| *g.get_ref()),
        path,
        arrivals,
        pattern,
        parallel,
        start_s,
        stop_s: f.stop_s.as_ref().map(|s| *s.get_ref()),
    })
}

/// The frame (or EFA message) length the pair carries: the entry's, checked against the pair,
/// or the largest the pair carries (9,015 B jumbo frames; one SRD packet for EFA).
fn frame_len(
    f: &FlowDecl,
    src: &Source<'_>,
    efa: bool,
    tcp: bool,
    from: &Vm,
    to: &Vm,
) -> Result<usize, ScenarioError> {
    let mtu = from.mtu.min(to.mtu);
    let largest = usize::from(mtu) + ETHERNET_HEADER;
    // A TCP segment's stamp follows its 20-byte TCP header.
    let min = if tcp { hypervisor_sim::traffic::MIN_TCP_FRAME } else { MIN_FRAME };
    Ok(match &f.frame {
        Some(fr) if efa && !(EFA_HEADER_BYTES..=EFA_MTU).contains(fr.get_ref()) => {
            return Err(src.at(
                fr.span(),
                format!(
                    "frame {} B: EFA messages are {EFA_HEADER_BYTES} to {EFA_MTU} B",
                    fr.get_ref()
                ),
            ));
        }
        Some(fr) if efa => *fr.get_ref(),
        None if efa => EFA_MTU,
        Some(fr) if !(min..=largest).contains(fr.get_ref()) => {
            return Err(src.at(
                fr.span(),
                format!(
                    "frame {} B: {} -> {} carries {min} to {largest} B{} (MTU {mtu} + \
                     {ETHERNET_HEADER})",
                    fr.get_ref(),
                    from.name,
                    to.name,
                    if tcp { " of TCP" } else { "" }
                ),
            ));
        }
        Some(fr) => *fr.get_ref(),
        None => largest.min(usize::from(super::place::DEFAULT_MTU) + ETHERNET_HEADER),
    })
}

/// Both ends of a flow that names a path have an ENI on it.
fn check_has_path(
    src: &Source<'_>,
    at: Range<usize>,
    path: PathName,
    vms: &[Vm],
    enis: &[Eni],
    ends: [usize; 2],
) -> Result<(), ScenarioError> {
    for v in ends {
        let has = vms[v].path == path || enis.iter().any(|e| e.vm == v && e.path == path);
        if !has {
            return Err(src.at(
                at.clone(),
                format!("vm {} has no ENI on the {} path", vms[v].name, path.as_str()),
            ));
        }
    }
    Ok(())
}

/// EC2's EFA rules for a flow between two VMs: both ends have an EFA interface, in one subnet.
fn check_efa_pair(
    src: &Source<'_>,
    f: &FlowDecl,
    vms: &[Vm],
    enis: &[Eni],
    from: usize,
    to: usize,
) -> Result<(), ScenarioError> {
    for i in [from, to] {
        let has = vms[i].path == PathName::Efa
            || enis.iter().any(|e| e.vm == i && e.path == PathName::Efa);
        if !has {
            return Err(src.at(
                f.to.span(),
                format!("vm {} has no EFA interface (path = \"efa\") for an EFA flow", vms[i].name),
            ));
        }
    }
    let (a, b) = (&vms[from], &vms[to]);
    if a.subnet != b.subnet {
        return Err(src.at(
            f.to.span(),
            format!(
                "EFA traffic stays in one subnet: {} is in `{}`, {} in `{}`",
                a.name, a.subnet, b.name, b.subnet
            ),
        ));
    }
    Ok(())
}
