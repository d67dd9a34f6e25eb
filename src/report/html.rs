//! `report.html`: one self-contained page (no file or network fetched) a person reads at a
//! glance. For `run`: the placement drawn as racks and hosts with each VM coloured by its
//! placement group, the flows against their offer and cap (a bar per flow: achieved filled,
//! offer dashed, cap dotted; a row short of its offer by more than 5 % marked), the throughput
//! and latency plots inline, latency percentiles and where the time went, and the ENI counters
//! with every non-zero allowance or drop counter marked. For `plan`: the placement, the flows
//! with what limits each, the busiest links and the blast radius of each rack and AZ.
//!
//! The page carries a few lines of script that only check it: on load it counts the plots that
//! rendered with a size and lines, and any error the page raised, into `data-` attributes of
//! `<body>` (what the headless-browser test reads back).

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::plan::{PlanReport, VmPlacement};
use crate::run::{ConnectOutcome, EniReport, FlowReport, PathLatency, RunReport};

/// Racks drawn side by side before the diagram starts a new row.
const RACKS_PER_ROW: usize = 6;
/// Most racks the diagram draws; the rest are counted under it.
const MAX_RACKS_DRAWN: usize = 36;
/// Most VMs listed in one host's box; the rest are counted in it.
const MAX_VMS_PER_HOST: usize = 8;
/// Most flows listed open; a run with more lists its worst and folds the rest away.
const MAX_ROWS_OPEN: usize = 40;
/// Flows listed open when the rest are folded away.
const WORST_ROWS: usize = 10;
/// A flow whose achieved rate is below this share of its offer is marked short.
const SHORT_OF_OFFER: f64 = 0.95;
/// Group colours, in the order groups are first met (a VM in no group is grey).
const GROUP_COLOURS: [&str; 8] =
    ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"];
const NO_GROUP_COLOUR: &str = "#bab0ac";

const STYLE: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; }
.lede { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .5em 0; font-variant-numeric: tabular-nums; }
th, td { padding: .2em .6em; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; font-weight: 600; }
td.name, th.name { text-align: left; white-space: nowrap; }
tr.short td { background: #fff4e0; }
td.nz { background: #ffe1e1; color: #a00; font-weight: 600; }
.note { color: #666; font-size: .92em; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
svg.placement { max-width: 100%; height: auto; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: .9em; height: .9em; vertical-align: -.1em;
          margin-right: .3em; border-radius: 2px; }
.warn { color: #a00; font-weight: 600; }
";

/// Counts the plots that rendered and the errors raised into `<body data-…>`.
const SELF_CHECK: &str = "
(function () {
  var errors = 0;
  window.addEventListener('error', function () {
    errors += 1; document.body.setAttribute('data-errors', String(errors));
  }, true);
  window.addEventListener('load', function () {
    var plots = document.querySelectorAll('figure.plot svg');
    var drawn = 0;
    for (var i = 0; i < plots.length; i++) {
      var r = plots[i].getBoundingClientRect();
      var lines = plots[i].querySelectorAll('polyline, path, line').length;
      if (r.width > 100 && r.height > 100 && lines > 0) {
        drawn += 1;
      }
    }
    document.body.setAttribute('data-plots', String(plots.length));
    document.body.setAttribute('data-plots-drawn', String(drawn));
    document.body.setAttribute('data-errors', String(errors));
  });
})();
";

fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
                script { (PreEscaped(SELF_CHECK)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// An SVG document from plotters, as an element to inline (without its XML declaration).
fn inline_svg(svg: &str) -> PreEscaped<&str> {
    let start = svg.find("<svg").unwrap_or(0);
    PreEscaped(&svg[start..])
}

/// The last part of a path (a capture's file, wherever this run put it).
fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The class of a counter's cell: marked when something was held back or dropped.
fn marked(nonzero: bool) -> Option<&'static str> {
    nonzero.then_some("nz")
}

fn gbps(v: f64) -> String {
    if v.is_finite() { format!("{:.3}", v + 0.0) } else { "elastic".into() }
}

/// The `run` report.
pub fn run_page(report: &RunReport, throughput_svg: &str, latency_svg: &str) -> String {
    let offered = placement::total(report.flows.iter().map(|f| f.offered_gbps));
    let achieved = placement::total(report.flows.iter().map(|f| f.achieved_gbps));
    let mode = if report.simulation.mode == "virtual" {
        format!("virtual time, seed {} (deterministic)", report.simulation.seed)
    } else {
        "live: this machine's threads and wall clock".to_string()
    };
    let placements: Vec<&VmPlacement> = report.vms.iter().map(|v| &v.placement).collect();
    let body = html! {
        h1 { "vnic-lab run: " (report.scenario) }
        p.lede {
            (report.vms.len()) " VMs on " (report.hosts) " host(s), " (report.flows.len())
            " flows, " (format!("{:.1}", report.duration_s)) " s of traffic; " (mode) ". "
            "Offered " (gbps(offered)) " Gbps, achieved " (gbps(achieved)) " Gbps."
        }
        h2 { "Placement" }
        (placement_diagram(&placements))
        h2 { "Flows" }
        p.note {
            "Bars: achieved (filled) against the offer (dashed) and the flow's single-flow cap "
            "(dotted red). Rows short of their offer by more than "
            (format!("{:.0}", 100.0 * (1.0 - SHORT_OF_OFFER))) " % are shaded."
        }
        @if report.flows.len() <= MAX_ROWS_OPEN {
            (run_flows(report.flows.iter()))
        } @else {
            h3 { "The " (WORST_ROWS) " flows furthest below their offer" }
            @let short = report
                .flows
                .iter()
                .filter(|f| f.achieved_gbps < SHORT_OF_OFFER * f.offered_gbps)
                .count();
            p.note { (short) " of " (report.flows.len()) " flows are short of their offer." }
            (run_flows(super::furthest_below_offer(&report.flows, WORST_ROWS).into_iter()))
            details {
                summary { "All " (report.flows.len()) " flows" }
                (run_flows(report.flows.iter()))
            }
        }
        @let troubled: Vec<&FlowReport> = report
            .flows
            .iter()
            .filter(|f| f.blocked.is_some() || f.connection.as_ref().is_some_and(|c| c.outcome != ConnectOutcome::Connected))
            .collect();
        @if !troubled.is_empty() {
            h3 { "Flows that did not get through" }
            ul {
                @for f in troubled {
                    li.warn {
                        (f.from) " → " (f.to)
                        @if let Some(c) = &f.connection { ": " strong { (c.says) } }
                        @if let Some(why) = &f.blocked { br; (why) }
                    }
                }
            }
        }
        figure.plot { (inline_svg(throughput_svg)) }
        h2 { "Latency" }
        (latency_table("One way", "frames", &report.latency))
        @if !report.rtt.is_empty() {
            (latency_table("Round trips (ping-pong flows)", "replies", &report.rtt))
        }
        figure.plot { (inline_svg(latency_svg)) }
        @for b in &report.breakdown {
            h3 {
                "Where the " (b.path.as_str()) " path's mean " (format!("{:.2}", b.mean_us))
                " µs went"
            }
            table {
                tr { th.name { "part" } th { "µs" } th { "share" } }
                @for (name, us) in b.components_us.iter().filter(|(_, us)| *us >= 0.005) {
                    tr {
                        td.name { (name) }
                        td { (format!("{us:.2}")) }
                        td { (format!("{:.1} %", 100.0 * us / b.mean_us.max(1e-9))) }
                    }
                }
            }
        }
        h2 { "ENIs" }
        p.note { "ENA's allowance counters and the queues' drops; a non-zero one is marked." }
        (eni_table(report))
        @if !report.cpu.is_empty() {
            h2 { "CPU" }
            table {
                tr { th.name { "VM" } th { "vCPUs" } th { "busy vCPU-s" } th { "utilisation" } }
                @for c in &report.cpu {
                    tr {
                        td.name { (c.vm) } td { (c.vcpus) }
                        td { (format!("{:.4}", c.busy_vcpu_s)) }
                        td { (format!("{:.2} %", 100.0 * c.utilisation)) }
                    }
                }
                @for h in &report.hypervisor_cpu {
                    tr {
                        td.name { (h.host) " hypervisor worker" } td { "" }
                        td { (format!("{:.4}", h.busy_s)) }
                        td { (format!("{:.2} % of one host CPU", 100.0 * h.utilisation)) }
                    }
                }
            }
        }
        @if !report.rule_changes.is_empty() {
            h2 { "Rule changes" }
            ul {
                @for c in &report.rule_changes {
                    li { (format!("{:.2}", c.at_s)) " s: " (c.says) }
                }
            }
        }
        @if !report.failures.is_empty() {
            h2 { "Failures" }
            ul {
                @for x in &report.failures {
                    li {
                        (format!("{:.2}", x.at_s)) " s: rack " (x.rack) " lost "
                        (x.vms.len()) " VM(s): " (x.vms.join(", "))
                    }
                }
            }
        }
        h2 { "Run" }
        p {
            "Fabric: " (report.fabric_frames) " frames between hosts, "
            span class=[(report.fabric_drops > 0).then_some("warn")] {
                (report.fabric_drops) " dropped"
            }
            "; emulated NIC traps: " (report.emulated_traps) "."
        }
        @for c in &report.captures {
            p {
                "Capture of " (c.vm) " into " code { (file_name(&c.file)) } ": " (c.frames)
                " frames"
                @if c.not_captured > 0 {
                    span.warn {
                        "; " (c.not_captured)
                        " frames not captured (the writer fell behind; the run was not slowed)"
                    }
                }
            }
        }
        p.note {
            @if report.simulation.mode == "virtual" {
                "Simulated " (format!("{:.2}", report.simulation.simulated_s)) " s, "
                (report.simulation.events) " events. (The wall time it took is in the text \
                report only: this page, like report.json, is the same on every machine.)"
            } @else {
                "Ran " (format!("{:.2}", report.simulation.wall_s)) " s of wall time."
            }
        }
    };
    page(&format!("vnic-lab run: {}", report.scenario), body)
}

/// Achieved against offer and cap on one scale: filled bar, dashed offer, dotted cap.
fn rate_bar(achieved: f64, offered: Option<f64>, cap: f64) -> Markup {
    const W: f64 = 160.0;
    let top = [Some(achieved), offered, Some(cap)]
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(1e-9, f64::max)
        * 1.05;
    let x = |v: f64| (W * v.max(0.0) / top).min(W);
    html! {
        svg.bar width=(W) height="14" viewBox=(format!("0 0 {W} 14")) role="img"
            aria-label=(format!("achieved {achieved:.3} of cap {cap:.3} Gbps")) {
            rect x="0" y="2" width=(W) height="10" fill="#f2f2f2" {}
            rect x="0" y="2" width=(format!("{:.1}", x(achieved))) height="10" fill="#4e79a7" {}
            @if let Some(o) = offered.filter(|o| o.is_finite()) {
                line x1=(format!("{:.1}", x(o))) x2=(format!("{:.1}", x(o))) y1="0" y2="14"
                    stroke="#000" stroke-width="1.5" stroke-dasharray="3 2" {}
            }
            @if cap.is_finite() {
                line x1=(format!("{:.1}", x(cap))) x2=(format!("{:.1}", x(cap))) y1="0" y2="14"
                    stroke="#c00" stroke-width="1.5" stroke-dasharray="1 2" {}
            }
        }
    }
}

fn run_flows<'a>(flows: impl Iterator<Item = &'a FlowReport>) -> Markup {
    html! {
        table {
            tr {
                th.name { "from" } th.name { "to" } th.name { "path" } th.name { "class" }
                th { "frame B" } th { "offered" } th { "achieved" } th { "cap" } th { "" }
                th { "Mpps" } th { "lost" } th { "sender drops" }
            }
            @for f in flows {
                @let short = f.achieved_gbps < SHORT_OF_OFFER * f.offered_gbps;
                tr class=[short.then_some("short")] {
                    td.name { (f.from) } td.name { (f.to) } td.name { (f.path.as_str()) }
                    td.name { (f.class.name()) }
                    td { (f.frame_bytes) } td { (gbps(f.offered_gbps)) }
                    td { (gbps(f.achieved_gbps)) } td { (format!("{:.1}", f.cap_gbps)) }
                    td { (rate_bar(f.achieved_gbps, Some(f.offered_gbps), f.cap_gbps)) }
                    td { (format!("{:.4}", f.achieved_mpps)) }
                    td class=[marked(f.lost_frames > 0)] { (f.lost_frames) }
                    td class=[marked(f.sender_drops > 0)] { (f.sender_drops) }
                }
            }
        }
    }
}

fn latency_table(what: &str, unit: &str, paths: &[PathLatency]) -> Markup {
    html! {
        h3 { (what) }
        table {
            tr {
                th.name { "path" } th { (unit) } th { "p50 µs" } th { "p90 µs" } th { "p99 µs" }
                th { "p99.9 µs" } th { "max µs" }
            }
            @for l in paths {
                tr {
                    td.name { (l.path.as_str()) } td { (l.frames) }
                    td { (format!("{:.1}", l.p50_us)) } td { (format!("{:.1}", l.p90_us)) }
                    td { (format!("{:.1}", l.p99_us)) } td { (format!("{:.1}", l.p999_us)) }
                    td { (format!("{:.1}", l.max_us)) }
                }
            }
        }
    }
}

/// An ENI's counters that say something was held back or dropped, by name.
fn problem_counters(e: &EniReport) -> [(&'static str, u64); 11] {
    [
        ("bw_out", e.bw_out_allowance_exceeded),
        ("bw_in", e.bw_in_allowance_exceeded),
        ("pps", e.pps_allowance_exceeded),
        ("conntrack", e.conntrack_allowance_exceeded),
        ("linklocal", e.linklocal_allowance_exceeded),
        ("flow_cap", e.flow_cap_exceeded),
        ("shaper drops", e.shaper_drops),
        ("rx drops", e.rx_drops),
        ("src/dst check", e.src_dst_check_drops),
        ("SG drops", e.security_group_drops),
        ("NACL drops", e.nacl_drops),
    ]
}

fn eni_table(report: &RunReport) -> Markup {
    let names = report
        .vms
        .first()
        .and_then(|v| v.enis.first())
        .map(|e| problem_counters(e).map(|(n, _)| n))
        .unwrap_or_default();
    html! {
        table {
            tr {
                th.name { "ENI" } th.name { "address" } th.name { "path" }
                th { "tx" } th { "rx" }
                @for n in names { th { (n) } }
                th { "engine share exhausted" }
            }
            @for vm in &report.vms {
                @for e in &vm.enis {
                    tr {
                        td.name { (e.name) } td.name { (e.ip) " " span.note { (e.mac) } }
                        td.name { (e.path.as_str()) }
                        td { (e.tx_packets) } td { (e.rx_packets) }
                        @for (_, v) in problem_counters(e) { td class=[marked(v > 0)] { (v) } }
                        td class=[marked(e.engine_share_exhausted > 0)] {
                            (e.engine_share_exhausted)
                        }
                    }
                }
            }
        }
    }
}

/// The `plan` report of the scenario `name`.
pub fn plan_page(name: &str, plan: &PlanReport) -> String {
    let placements: Vec<&VmPlacement> = plan.vms.iter().collect();
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &plan.flows {
        *by.entry(&f.limited_by).or_default() += 1;
    }
    let body = html! {
        h1 { "vnic-lab plan: " (name) }
        p.lede {
            (plan.vms.len()) " VMs, " (plan.flows.len()) " flows: "
            (format!("{:.2}", plan.total_gbps)) " Gbps in all, "
            span class=[(plan.unmet_demand_gbps > 0.005).then_some("warn")] {
                (format!("{:.2}", plan.unmet_demand_gbps)) " Gbps of demand unmet"
            } ". Max-min fair rates; no packets."
        }
        h2 { "Placement" }
        (placement_diagram(&placements))
        h2 { "Bottlenecks" }
        table {
            tr { th.name { "limited by" } th { "flows" } }
            @for (what, n) in &by { tr { td.name { (what) } td { (n) } } }
        }
        h2 { "Flows" }
        table {
            tr {
                th.name { "from" } th.name { "to" } th.name { "class" } th { "demand" }
                th { "rate" } th { "cap" } th { "" } th.name { "limited by" }
            }
            @for f in &plan.flows {
                @let short = f.demand_gbps.is_some_and(|d| f.gbps < SHORT_OF_OFFER * d);
                tr class=[short.then_some("short")] {
                    td.name { (f.from) } td.name { (f.to) } td.name { (f.class.name()) }
                    td { (f.demand_gbps.map_or("elastic".into(), gbps)) }
                    td { (gbps(f.gbps)) } td { (format!("{:.1}", f.cap_gbps)) }
                    td { (rate_bar(f.gbps, f.demand_gbps, f.cap_gbps)) }
                    td.name { (f.limited_by) }
                }
            }
        }
        h2 { "Busiest links" }
        table {
            tr { th.name { "link" } th { "utilisation" } }
            @for (link, u) in &plan.busiest_links {
                tr { td.name { (link) } td { (format!("{:.1} %", 100.0 * u)) } }
            }
        }
        h2 { "Blast radius" }
        p.note { "Each rack and AZ that holds a VM, failed in turn." }
        table {
            tr {
                th.name { "failure" } th.name { "loses" } th.name { "groups" }
                th { "Gbps left" }
            }
            @for x in &plan.failures {
                tr {
                    td.name { (x.domain) } td.name { (x.lost_summary()) }
                    td.name {
                        (x.groups.iter().map(|(g, (l, t))| format!("{l} of {t} in {g}"))
                            .collect::<Vec<_>>().join(", "))
                    }
                    td { (format!("{:.2}", x.gbps_after)) }
                }
            }
        }
    };
    page(&format!("vnic-lab plan: {name}"), body)
}

/// One host's box in the placement diagram.
struct HostBox<'a> {
    y: f64,
    height: f64,
    host: u32,
    vms: Vec<&'a VmPlacement>,
}

/// One rack's column in the placement diagram.
struct RackBox<'a> {
    x: f64,
    y: f64,
    height: f64,
    az: &'a str,
    rack: u32,
    hosts: Vec<HostBox<'a>>,
}

const RACK_W: f64 = 180.0;
const GAP: f64 = 14.0;
const LINE: f64 = 15.0;
const RACK_HEAD: f64 = 38.0;
const HOST_HEAD: f64 = 20.0;

/// Lays the racks out in rows of [`RACKS_PER_ROW`]; returns them and the drawing's size.
fn lay_out<'a>(
    racks: &BTreeMap<(&'a str, u32), BTreeMap<u32, Vec<&'a VmPlacement>>>,
) -> (Vec<RackBox<'a>>, f64, f64) {
    let host_height = |n: usize| {
        let lines = n.min(MAX_VMS_PER_HOST) + usize::from(n > MAX_VMS_PER_HOST);
        HOST_HEAD + LINE * lines as f64 + 6.0
    };
    let mut out = Vec::new();
    let mut row_top = GAP;
    let drawn: Vec<_> = racks.iter().take(MAX_RACKS_DRAWN).collect();
    for row in drawn.chunks(RACKS_PER_ROW) {
        let mut tallest: f64 = 0.0;
        for (c, ((az, rack), hosts)) in row.iter().enumerate() {
            let x = GAP + c as f64 * (RACK_W + GAP);
            let mut y = row_top + RACK_HEAD;
            let mut boxes = Vec::new();
            for (&host, vms) in hosts.iter() {
                let height = host_height(vms.len());
                boxes.push(HostBox { y, height, host, vms: vms.clone() });
                y += height + 6.0;
            }
            let height = y - row_top - RACK_HEAD;
            tallest = tallest.max(height);
            out.push(RackBox { x, y: row_top, height, az, rack: *rack, hosts: boxes });
        }
        row_top += RACK_HEAD + tallest + GAP;
    }
    let width = (drawn.len().min(RACKS_PER_ROW) as f64) * (RACK_W + GAP) + GAP;
    (out, width, row_top)
}

/// Where each VM landed, drawn: a column per rack (grouped by AZ), a box per host in it with
/// its VMs, each VM coloured by its placement group; and a legend of the groups.
fn placement_diagram(vms: &[&VmPlacement]) -> Markup {
    let mut racks: BTreeMap<(&str, u32), BTreeMap<u32, Vec<&VmPlacement>>> = BTreeMap::new();
    let mut groups: Vec<&str> = Vec::new();
    for v in vms {
        racks.entry((v.az.as_str(), v.rack)).or_default().entry(v.host).or_default().push(v);
        if let Some(g) = v.group.as_deref()
            && !groups.contains(&g)
        {
            groups.push(g);
        }
    }
    let group_colour = |i: usize| GROUP_COLOURS[i % GROUP_COLOURS.len()];
    let colour = |v: &VmPlacement| match v.group.as_deref() {
        Some(g) => group_colour(groups.iter().position(|&x| x == g).unwrap_or(0)),
        None => NO_GROUP_COLOUR,
    };
    let (boxes, width, height) = lay_out(&racks);
    let not_drawn = racks.len().saturating_sub(MAX_RACKS_DRAWN);
    html! {
        svg.placement xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) font-family="system-ui, sans-serif"
            font-size="12" role="img" aria-label="placement of the VMs on racks and hosts" {
            @for r in &boxes {
                text x=(r.x) y=(r.y + 12.0) fill="#666" { (r.az) }
                text x=(r.x) y=(r.y + 28.0) font-weight="600" { "rack " (r.rack) }
                rect x=(r.x - 4.0) y=(r.y + RACK_HEAD - 4.0) width=(RACK_W + 8.0)
                    height=(r.height + 2.0) fill="none" stroke="#999" rx="4" {}
                @for h in &r.hosts {
                    rect x=(r.x) y=(h.y) width=(RACK_W) height=(h.height) fill="#fafafa"
                        stroke="#ccc" rx="3" {}
                    text x=(r.x + 6.0) y=(h.y + 14.0) fill="#444" { "host " (h.host) }
                    @for (k, v) in h.vms.iter().take(MAX_VMS_PER_HOST).enumerate() {
                        @let line_y = h.y + HOST_HEAD + LINE * k as f64;
                        rect x=(r.x + 6.0) y=(line_y + 2.0) width="10" height="10"
                            fill=(colour(v)) rx="2" {}
                        text x=(r.x + 21.0) y=(line_y + 11.0) {
                            title { (v.name) " (" (v.instance_type) ")" (v.group_label()) }
                            (v.name)
                            @if let Some(p) = v.partition { " p" (p) }
                        }
                    }
                    @if h.vms.len() > MAX_VMS_PER_HOST {
                        text x=(r.x + 21.0)
                            y=(h.y + HOST_HEAD + LINE * MAX_VMS_PER_HOST as f64 + 11.0)
                            fill="#666" { "and " (h.vms.len() - MAX_VMS_PER_HOST) " more" }
                    }
                }
            }
        }
        p.legend {
            @for (i, g) in groups.iter().enumerate() {
                span {
                    span.swatch style=(format!("background:{}", group_colour(i))) {}
                    "group " (g)
                }
            }
            span { span.swatch style=(format!("background:{NO_GROUP_COLOUR}")) {} "no group" }
        }
        @if not_drawn > 0 {
            p.note { (not_drawn) " more racks hold VMs; the JSON report lists every VM." }
        }
    }
}
