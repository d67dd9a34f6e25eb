use super::*;

const DEFAULT: &str = include_str!("../../scenarios/default.toml");

fn error(text: &str) -> String {
    match load("s.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// The default scenario with a security group `name` of `body`'s rules.
fn sg(name: &str, body: &str) -> String {
    format!("{DEFAULT}\n[[security_groups]]\nname = \"{name}\"\n{body}\n")
}

/// The default scenario with a network ACL `acl-a` of `body`'s rules.
fn nacl(body: &str) -> String {
    format!("{DEFAULT}\n[[nacls]]\nname = \"acl-a\"\n{body}\n")
}

fn replaced(from: &str, to: &str) -> String {
    assert!(DEFAULT.contains(from), "the default scenario has no `{from}`");
    DEFAULT.replacen(from, to, 1)
}

#[test]
fn the_default_scenario_loads_and_places() {
    let p = load("default.toml", DEFAULT).unwrap();
    assert_eq!(p.vms.len(), 6);
    assert_eq!(p.flows.len(), 5);
    let hosts: std::collections::BTreeSet<u32> =
        p.vms.iter().map(|v| p.fleet.instance(v.id).unwrap().host.0).collect();
    assert_eq!(hosts.len(), 2, "two hosts");
    assert_eq!(p.vms.iter().filter(|v| v.path == PathName::Emulated).count(), 1);
    check_runnable(&p, true).unwrap();
}

/// Each malformed scenario gets one message naming the file and, where it can, the line
/// and column of the culprit.
#[test]
fn thirty_and_more_malformed_scenarios_each_get_a_clear_error() {
    let hpc_line = DEFAULT.lines().position(|l| l == "name = \"hpc\"").unwrap() + 1;
    let cases: Vec<(String, &str)> = vec![
        // Syntax, unknown keys, wrong types.
        ("name = \"x\"\n[topology\n".into(), "s.toml:2:"),
        (replaced("seed = 1", "seed = \"one\""), "invalid type"),
        (replaced("seed = 1", "sede = 1"), "unknown field `sede`"),
        (replaced("duration_s = 3.0", "duration_s = \"long\""), "invalid type"),
        (replaced("duration_s = 3.0", "duration_s = -1.0"), "duration_s -1 is not in"),
        (replaced("duration_s = 3.0", "duration_s = 1000.0"), "is not in (0, 600]"),
        (replaced("racks_per_az = 2", "racks_per_az = \"two\""), "invalid type"),
        (replaced("[run]\n", "[run]\nturbo = true\n"), "unknown field `turbo`"),
        (replaced("vfs_per_pf = 8", "vfs_per_pf = 0"), "run.vfs_per_pf 0"),
        (replaced("vfs_per_pf = 8", "vfs_per_pf = 300"), "run.vfs_per_pf 300"),
        (replaced("link_gbps = 100.0", "link_gbps = 0.0"), "run.link_gbps 0"),
        (replaced("sample_ms = 100", "sample_ms = 1"), "run.sample_ms 1"),
        (replaced("strategy = \"cluster\"", "strategy = \"clump\""), "unknown strategy `clump`"),
        (replaced("strategy = \"cluster\"", "strategy = \"partition\""), "needs `partitions`"),
        (
            replaced("strategy = \"spread\"", "strategy = \"spread\"\npartitions = 2"),
            "only partition groups",
        ),
        (replaced("type = \"m5.large\"", "type = \"m9.huge\""), "unknown instance type `m9.huge`"),
        (replaced("type = \"m5.large\"", "type = 5"), "invalid type"),
        (replaced("count = 2\ngroup = \"hpc\"", "count = 2\ngroup = \"nope\""), "does not exist"),
        (replaced("count = 2\ngroup = \"hpc\"", "count = 0\ngroup = \"hpc\""), "count 0"),
        (
            replaced("count = 2\ngroup = \"hpc\"", "count = 9\ngroup = \"hpc\""),
            "InsufficientInstanceCapacity",
        ),
        (
            replaced("path = \"emulated\"", "path = \"smoke-signals\""),
            "unknown path `smoke-signals`",
        ),
        (replaced("path = \"emulated\"", "path = \"efa\""), "vm web-0 has no EFA interface"),
        (
            replaced("count = 2\ngroup = \"hpc\"", "count = 2\ngroup = \"hpc\"\npath = \"efa\""),
            "frame 9015 B: EFA messages are 32 to 8192 B",
        ),
        (
            replaced("frame = 1514", "frame = 1514\narrivals = \"bursty\""),
            "arrivals `bursty` is not `periodic` or `poisson`",
        ),
        (
            replaced("frame = 1514", "frame = 1514\npattern = \"echo\""),
            "pattern `echo` is not `stream` or `ping-pong`",
        ),
        (replaced("[run]\n", "[run]\nefa_loss = 0.9\n"), "run.efa_loss 0.9 is not 0 to 0.5"),
        (format!("{DEFAULT}\n[costs]\nnope_ns = 3\n"), "costs.nope_ns is not a cost"),
        (format!("{DEFAULT}\n[costs]\ndoorbell_ns = -1\n"), "costs.doorbell_ns = -1 is not 0 to"),
        (format!("{DEFAULT}\n[costs]\ndoorbell_ns = 1.5\n"), "invalid type"),
        (replaced("burst_s = 0.1", "burst_s = -3.0"), "burst_s -3 is not a duration"),
        (replaced("type = \"m5.large\"", "type = \"m5.large\"\nmtu = 70000"), "invalid value"),
        (
            replaced("type = \"m5.large\"", "type = \"m5.large\"\nmtu = 100"),
            "mtu 100 is not 576 to 9001",
        ),
        (
            replaced("type = \"m5.large\"", "type = \"m5.large\"\nqueues = 64"),
            "queues 64 is not 1 to 32",
        ),
        (
            replaced("type = \"m5.large\"", "type = \"m5.large\"\nrx = \"telepathy\""),
            "rx `telepathy`",
        ),
        (
            replaced("type = \"m5.large\"", "type = \"m5.large\"\naz = \"mars-1a\""),
            "no AZ named `mars-1a`",
        ),
        (
            replaced("type = \"m5.large\"", "type = \"m5.large\"\nsubnet = \"nowhere\""),
            "no subnet named `nowhere`",
        ),
        (replaced("from = \"hpc-0\"", "from = \"hpc-7\""), "no VM named `hpc-7`"),
        (replaced("to = \"web-0\"", "to = \"wob-*\""), "no VM named `wob-*`"),
        (replaced("gbps = 1.5", "gbps = -1.5"), "gbps -1.5 is not a rate"),
        (replaced("gbps = 1.5", "gbps = 1000.0"), "gbps 1000 is not a rate"),
        (replaced("frame = 9015", "frame = 20"), "frame 20 B"),
        (
            replaced("frame = 1514", "frame = 9015\nprotocol = \"icmp\""),
            "protocol `icmp`: expected `udp` or `tcp`",
        ),
        (replaced("start_s = 1.5", "start_s = 5.0"), "start_s 5 is not within"),
        (replaced("start_s = 1.5", "start_s = 1.5\nstop_s = 1.0"), "stop_s 1 is not after"),
        (
            replaced("frame = 1514", "frame = 1514\npath = \"emulated\""),
            "has no ENI on the emulated path",
        ),
        (format!("{DEFAULT}\n[[enis]]\nname = \"x\"\nvm = \"ghost\"\n"), "no VM named `ghost`"),
        (
            format!("{DEFAULT}\n[[enis]]\nname = \"x\"\nvm = \"db\"\nips = [\"10.0.0.300\"]\n"),
            "is not an IPv4 address",
        ),
        (
            format!("{DEFAULT}\n[[failures]]\nat_s = 1.0\nrack_of = \"ghost\"\n"),
            "no VM named `ghost`",
        ),
        (
            format!("{DEFAULT}\n[[failures]]\nat_s = 9.0\nrack_of = \"db\"\n"),
            "at_s 9 is not within",
        ),
        (
            format!(
                "{DEFAULT}\n[[subnets]]\nname = \"a\"\naz = \"us-east-1a\"\ncidr = \"10.0.0.0\"\n"
            ),
            "is not a.b.c.d/n",
        ),
        (
            format!(
                "{DEFAULT}\n[[subnets]]\nname = \"a\"\naz = \"us-east-1a\"\ncidr = \"10.0.0.0/8\"\n"
            ),
            "/16 to /28",
        ),
        (
            format!(
                "{DEFAULT}\n[[subnets]]\nname = \"a\"\naz = \"us-east-9z\"\ncidr = \"10.0.0.0/24\"\n"
            ),
            "no AZ named `us-east-9z`",
        ),
        (replaced("seed = 1", "seed = 1\nfragmentation = 2.0"), "fragmentation 2 is not between"),
        (replaced("frame = 1514", "frame = 1514\nsrd = \"yes\""), "invalid type"),
        (replaced("frame = 1514", "frame = 1514\nparallel = 0"), "parallel 0 is not 1 to 1024"),
        // The network model, instance types, flows and subnets (issue 19).
        (
            format!("{DEFAULT}\n[network]\nflow_cap_gbps = -5.0\n"),
            "network.flow_cap_gbps = -5 is not a rate",
        ),
        (format!("{DEFAULT}\n[network]\nflow_cap_gbps = nan\n"), "network.flow_cap_gbps = NaN"),
        (
            format!("{DEFAULT}\n[network]\ncluster_flow_cap_gbps = inf\n"),
            "network.cluster_flow_cap_gbps = inf is not a rate",
        ),
        (
            format!("{DEFAULT}\n[network]\nlatency_us = [-1.0, 25.0, 60.0, 500.0, 30000.0]\n"),
            "network.latency_us[0] (same host) = -1 is not 0 to",
        ),
        (
            format!("{DEFAULT}\n[network]\nlatency_us = [10.0, 25.0, 60.0, 500.0, 1e12]\n"),
            "network.latency_us[4] (other region) = 1000000000000 is not 0 to",
        ),
        (
            format!("{DEFAULT}\n[network]\nlatency_us = [10.0, 25.0, 6.0, 500.0, 30000.0]\n"),
            "a farther class cannot be nearer",
        ),
        (
            format!("{DEFAULT}\n[network]\nregion_egress_large_share = 2.0\n"),
            "network.region_egress_large_share = 2 is not 0 to 1",
        ),
        (
            format!(
                "{DEFAULT}\n[[instance_types]]\nname = \"z1\"\nvcpus = 0\nmemory_gib = 4\n\
                 baseline_gbps = 1.0\nburst_gbps = 1.0\n"
            ),
            "instance type z1: vcpus 0",
        ),
        (
            format!(
                "{DEFAULT}\n[[instance_types]]\nname = \"z1\"\nvcpus = 2\nmemory_gib = 4\n\
                 baseline_gbps = 2.0\nburst_gbps = 1.0\n"
            ),
            "burst_gbps 1 is below its baseline_gbps 2",
        ),
        (
            format!(
                "{DEFAULT}\n[[instance_types]]\nname = \"m5.large\"\nvcpus = 2\n\
                 memory_gib = 8\nbaseline_gbps = 1.0\nburst_gbps = 1.0\n"
            ),
            "instance type m5.large is defined twice",
        ),
        (replaced("to = \"hpc-1\"", "to = \"hpc-0\""), "a VM does not send to itself"),
        (
            replaced("start_s = 1.5", "start_s = 1.5\nstop_s = 99.0"),
            "stop_s 99 is after the run ends (3 s)",
        ),
        (
            format!(
                "{DEFAULT}\n[[subnets]]\nname = \"tiny\"\naz = \"us-east-1a\"\n\
                 cidr = \"10.9.0.0/28\"\n\n[[vms]]\nname = \"t\"\ntype = \"m5.large\"\n\
                 count = 20\n"
            ),
            "subnet tiny (10.9.0.0/28) has 11 usable addresses (AWS reserves 5) for 26 (26 VMs'",
        ),
        // Security groups and NACLs.
        (
            sg("sg-a", "inbound = [{ protocol = \"tcp\", ports = \"80-\", from = \"0.0.0.0/0\" }]"),
            "ports `80-`: expected a port",
        ),
        (
            sg(
                "sg-a",
                "inbound = [{ protocol = \"tcp\", ports = \"90-80\", from = \"0.0.0.0/0\" }]",
            ),
            "port range 90-80 is reversed",
        ),
        (
            sg("sg-a", "inbound = [{ protocol = \"gre\", from = \"0.0.0.0/0\" }]"),
            "protocol `gre`: expected tcp, udp, icmp, -1",
        ),
        (
            sg("sg-a", "inbound = [{ protocol = \"icmp\", ports = \"8\", from = \"0.0.0.0/0\" }]"),
            "an ICMP rule takes icmp_type",
        ),
        (
            sg("sg-a", "inbound = [{ protocol = \"tcp\", ports = \"22\", from = \"sg-nope\" }]"),
            "`sg-nope` is neither a CIDR",
        ),
        (
            sg("sg-a", "inbound = [{ protocol = \"tcp\", ports = \"22\", to = \"0.0.0.0/0\" }]"),
            "an inbound rule names its peer with `from`",
        ),
        (
            sg(
                "sg-a",
                "inbound = [{ protocol = \"tcp\", ports = \"22\", from = \"10.0.0.0/33\" }]",
            ),
            "`10.0.0.0/33` is not a.b.c.d/n",
        ),
        (sg("default", ""), "security group `default` is defined twice"),
        (
            sg(
                "sg-a",
                &format!(
                    "inbound = [{}]",
                    (0..61)
                        .map(|p| format!(
                            "{{ protocol = \"tcp\", ports = \"{p}\", from = \"0.0.0.0/0\" }}"
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            "RulesPerSecurityGroupLimitExceeded: security group sg-a would have 61 inbound rules, the quota is 60",
        ),
        (
            replaced("name = \"db\"\n", "name = \"db\"\nsecurity_groups = [\"sg-x\"]\n"),
            "no security group named `sg-x`",
        ),
        (
            replaced(
                "name = \"db\"\n",
                &format!("name = \"db\"\nsecurity_groups = [{}]\n", ["\"default\""; 6].join(", ")),
            ),
            "SecurityGroupsPerInterfaceLimitExceeded: 6 security groups on one interface, the quota is 5",
        ),
        (
            nacl(
                "inbound = [{ rule = 0, protocol = \"-1\", cidr = \"0.0.0.0/0\", action = \"allow\" }]",
            ),
            "rule number 0 is not 1 to 32766",
        ),
        (
            nacl(
                "inbound = [{ rule = 10, protocol = \"-1\", cidr = \"0.0.0.0/0\", action = \"permit\" }]",
            ),
            "action `permit`: expected allow or deny",
        ),
        (
            nacl(
                "inbound = [{ rule = 10, protocol = \"-1\", cidr = \"0.0.0.0/0\", action = \"allow\" }, { rule = 10, protocol = \"tcp\", cidr = \"0.0.0.0/0\", action = \"deny\" }]",
            ),
            "acl-a already has inbound rule 10",
        ),
        (
            format!(
                "{DEFAULT}\n[[subnets]]\nname = \"s\"\naz = \"us-east-1a\"\ncidr = \"10.9.0.0/24\"\nnacl = \"acl-none\"\n"
            ),
            "no network ACL named `acl-none`",
        ),
        (
            format!("{DEFAULT}\n[quotas]\nsecurity_groups_per_eni = 17\n"),
            "security groups per interface quota 17 is above EC2's most, 16",
        ),
        (
            replaced("name = \"client\"\n", "name = \"client\"\nephemeral_ports = \"bsd\"\n"),
            "ephemeral ports `bsd`: expected linux, windows or nat-gateway",
        ),
        (
            replaced(
                "from = \"web-1\"\nto = \"web-0\"\n",
                "from = \"web-1\"\nto = \"web-0\"\nprotocol = \"sctp\"\n",
            ),
            "protocol `sctp`: expected `udp` or `tcp`",
        ),
        (
            format!(
                "{DEFAULT}\n[[subnets]]\nname = \"s\"\naz = \"us-east-1a\"\ncidr = \"10.9.0.5/24\"\n"
            ),
            "`10.9.0.5/24` has host bits set: the subnet is 10.9.0.0/24",
        ),
        (format!("{DEFAULT}\n[[flow_logs]]\nof = \"vm:nobody\"\n"), "no VM named `nobody`"),
        (
            format!("{DEFAULT}\n[[flow_logs]]\nof = \"eni\"\n"),
            "expected `vm:NAME`, `subnet:NAME` or `vpc`",
        ),
        (
            format!("{DEFAULT}\n[[flow_logs]]\nof = \"vpc\"\ninterval_s = 0\n"),
            "interval_s 0 is not 1 to 600",
        ),
        (
            replaced("name = \"client\"\n", "name = \"client\"\nlistens = [443, 0]\n"),
            "listens: port 0 is not a port to listen on",
        ),
        (
            replaced("name = \"client\"\n", "name = \"client\"\ntcp_syn_retries = 33\n"),
            "tcp_syn_retries 33 is not 0 to 32",
        ),
        (
            replaced(
                "from = \"web-1\"\nto = \"web-0\"\n",
                "from = \"web-1\"\nto = \"web-0\"\nprotocol = \"tcp\"\npattern = \"ping-pong\"\n",
            ),
            "ping-pong is UDP request/response",
        ),
        (
            replaced(
                "from = \"web-1\"\nto = \"web-0\"\ngbps = 0.5\nframe = 1514\n",
                "from = \"web-1\"\nto = \"web-0\"\ngbps = 0.5\nprotocol = \"tcp\"\nframe = 64\n",
            ),
            "carries 70 to",
        ),
        (
            sg(
                "sg-a",
                "inbound = [{ protocol = \"tcp\", ports = \"22\", from = \"10.0.0.0/8\" }]\n[[rule_changes]]\nat_s = 0.1\ngroup = \"sg-a\"\nrevoke_inbound = [{ protocol = \"tcp\", ports = \"23\", from = \"10.0.0.0/8\" }]",
            ),
            "InvalidPermission.NotFound: sg-a has no inbound rule tcp 23 10.0.0.0/8 to revoke",
        ),
        (
            sg(
                "sg-a",
                "[[rule_changes]]\nat_s = 0.1\ngroup = \"sg-b\"\nauthorize_inbound = [{ protocol = \"tcp\", from = \"10.0.0.0/8\" }]",
            ),
            "no security group `sg-b`",
        ),
        (
            nacl("[[rule_changes]]\nat_s = 0.1\nnacl = \"acl-a\"\ndelete_inbound = [100]"),
            "InvalidNetworkAclEntry.NotFound: acl-a has no inbound rule 100 to delete",
        ),
        (
            nacl(
                "[[rule_changes]]\nat_s = 0.1\nnacl = \"acl-a\"\nrevoke_inbound = [{ protocol = \"tcp\", from = \"10.0.0.0/8\" }]",
            ),
            "a network ACL's change takes put_*/delete_* rules",
        ),
        (
            nacl("[[rule_changes]]\nat_s = 0.1\nnacl = \"acl-a\"\ngroup = \"default\""),
            "a rule change names one `group` or one `nacl`",
        ),
        (
            nacl("[[rule_changes]]\nat_s = 0.1\nnacl = \"acl-a\""),
            "a rule change with no rule to change",
        ),
        (
            nacl("[[rule_changes]]\nat_s = 99.0\nnacl = \"acl-a\"\ndelete_inbound = [1]"),
            "at_s 99 is not within the run's",
        ),
    ];
    assert!(cases.len() >= 30, "{} cases", cases.len());
    for (text, want) in &cases {
        let e = error(text);
        assert!(e.contains(want), "wanted {want:?} in {e:?}");
        assert!(e.starts_with("s.toml"), "names the file: {e}");
        assert_eq!(e.lines().count(), 1, "one line: {e}");
    }
    // Located errors point at their line: the cluster group's name, and a dangling flow.
    let e = error(&replaced("count = 2\ngroup = \"hpc\"", "count = 2\ngroup = \"nope\""));
    let line = DEFAULT.lines().position(|l| l == "group = \"hpc\"").unwrap() + 1;
    assert!(e.starts_with(&format!("s.toml:{line}:")), "{e}");
    let e = error(&replaced("strategy = \"cluster\"", "strategy = \"clump\""));
    assert!(e.starts_with(&format!("s.toml:{}:12", hpc_line + 1)), "{e}");
    let e = error(&replaced("from = \"hpc-0\"", "from = \"hpc-7\""));
    let line = DEFAULT.lines().position(|l| l == "from = \"hpc-0\"").unwrap() + 1;
    assert_eq!(e, format!("s.toml:{line}:8: no VM named `hpc-7`"));
    // Tables read without positions are named by their header's line.
    let e = error(&format!("{DEFAULT}\n[network]\nflow_cap_gbps = 0.0\n"));
    let line = DEFAULT.lines().count() + 2;
    assert!(e.starts_with(&format!("s.toml:{line}:1: network.flow_cap_gbps")), "{e}");
    let tiny = format!(
        "{DEFAULT}\n[[subnets]]\nname = \"tiny\"\naz = \"us-east-1a\"\ncidr = \"10.9.0.0/28\"\n\n\
         [[vms]]\nname = \"t\"\ntype = \"m5.large\"\ncount = 20\n"
    );
    let e = error(&tiny);
    let line = DEFAULT.lines().count() + 5;
    assert!(e.starts_with(&format!("s.toml:{line}:8: subnet tiny")), "{e}");
    // Five fewer VMs fit exactly: 11 addresses for 6 + 5.
    assert!(load("s.toml", &tiny.replace("count = 20", "count = 5")).is_ok());
    // A fragmented fleet keeps the mean it was given, 1.0 included (every host full).
    let full = replaced("seed = 1", "seed = 1\nfragmentation = 1.0");
    assert!(error(&full).contains("InsufficientInstanceCapacity"), "no room left at all");
}

#[test]
fn runs_that_cannot_be_simulated_are_refused_before_they_start() {
    let p = load("s.toml", &replaced("vfs_per_pf = 8", "vfs_per_pf = 2")).unwrap();
    assert!(check_runnable(&p, true).unwrap_err().contains("raise run.vfs_per_pf"));
    let no_flows = DEFAULT.split("[[flows]]").next().unwrap();
    let p = load("s.toml", no_flows).unwrap();
    assert!(check_runnable(&p, true).unwrap_err().contains("no flows"));
}

/// A pattern that expands further than its author meant is refused by count, before anything is
/// placed or allocated, at the entry that crosses the limit; so is a launch past the instance
/// limit. The default scenario has five flow entries of one flow each, and six VMs.
#[test]
fn flow_patterns_and_instance_counts_are_refused_past_their_limits() {
    let limits = |max_flows, max_instances| Limits { max_flows, max_instances };
    assert_eq!(load_with("s.toml", DEFAULT, &limits(5, 6)).unwrap().flows.len(), 5);
    let e = load_with("s.toml", DEFAULT, &limits(4, 6)).unwrap_err().to_string();
    let last = s_flows_last_entry();
    assert!(e.starts_with(&format!("s.toml:{last}:")), "{e}");
    assert!(
        e.contains(
            "expands to 1 flow (after 4 from the entries before it); the limit is 4 (--max-flows)"
        ),
        "{e}"
    );
    let e = load_with("s.toml", DEFAULT, &limits(5, 5)).unwrap_err().to_string();
    assert!(
        e.contains("brings the scenario to 6 instances; the limit is 5 (--max-instances)"),
        "{e}"
    );
    // 50,000 × 50,000 pairs less none shared: refused with the number, nothing placed.
    let big = format!(
        "{DEFAULT}\n[[vms]]\nname = \"w\"\ntype = \"m5.large\"\ncount = 50000\n\n[[vms]]\nname = \"d\"\ntype = \"m5.large\"\ncount = 50000\n\n[[flows]]\nfrom = \"w-*\"\nto = \"d-*\"\n"
    );
    let e = load_with("s.toml", &big, &limits(DEFAULT_MAX_FLOWS, DEFAULT_MAX_INSTANCES));
    let e = e.unwrap_err().to_string();
    assert!(e.contains("flows[5] `w-*` → `d-*` expands to 2,500,000,000 flows"), "{e}");
    assert!(e.ends_with("the limit is 10,000,000 (--max-flows)"), "{e}");
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1_000), "1,000");
    assert_eq!(thousands(123_454_321), "123,454,321");
}

/// The line of the default scenario's last `from = ` (its last flow entry).
fn s_flows_last_entry() -> usize {
    DEFAULT.lines().enumerate().filter(|(_, l)| l.starts_with("from = ")).last().unwrap().0 + 1
}

/// A scenario whose only security declaration is a change to the VPC's default group still has
/// its devices filter (else the change would have nothing to change).
#[test]
fn a_rule_change_alone_puts_the_filters_in_the_devices() {
    assert!(!load("s.toml", DEFAULT).unwrap().security.is_declared());
    let text = format!(
        "{DEFAULT}\n[[rule_changes]]\nat_s = 0.5\ngroup = \"default\"\nrevoke_inbound = [{{ protocol = \"-1\", from = \"default\" }}]\n"
    );
    let placed = load("s.toml", &text).unwrap();
    assert!(placed.security.is_declared());
    assert_eq!(placed.security.changes.len(), 1);
    assert_eq!(placed.security.changes[0].says, "default: revoke inbound all traffic default");
}
