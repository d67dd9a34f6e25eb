//! `vnic-lab sweep`: the variants of `scenarios/sweep-hpc.toml` planned here, as shards merged
//! back, and as the Slurm and Kubernetes jobs it writes. (The Slurm array is submitted for real
//! by `scripts/slurm-sweep-test.sh`, which the test command runs.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HPC: &str = "scenarios/sweep-hpc.toml";

fn vnic_lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vnic-lab")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = vnic_lab(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn refused(args: &[&str]) -> String {
    let out = vnic_lab(args);
    assert_eq!(out.status.code(), Some(2), "{args:?} should be refused");
    String::from_utf8(out.stderr).unwrap()
}

/// A directory of its own, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("vnic-lab-sweep-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

const OUTPUTS: [&str; 3] = ["sweep.csv", "sweep.json", "sweep.svg"];

#[test]
fn cluster_against_partition_as_the_job_grows() {
    let json: serde_json::Value = serde_json::from_str(&ok(&["sweep", HPC, "--json"])).unwrap();
    assert_eq!(json["keys"], serde_json::json!(["vms[node].group", "vms[node].count"]));
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 5, "2 groups × 5 counts");
    // The scenario: 16 hosts per rack, one c5n.18xlarge (72 of 96 vCPUs) per host; a cluster
    // segment of 4 racks; a partition group of 7 (one rack each); all-to-all flows of 1 Gbps.
    for row in rows {
        let group = row["values"][0].as_str().unwrap();
        let n: u64 = row["values"][1].as_str().unwrap().parse().unwrap();
        let fits = match group {
            "cluster" => n <= 4 * 16,
            _ => n <= 7 * 16,
        };
        if !fits {
            assert!(row["plan"].is_null(), "{row}");
            let e = row["error"].as_str().unwrap();
            assert!(e.contains("InsufficientInstanceCapacity"), "{e}");
            assert!(e.starts_with("sweep-hpc.toml:"), "located in the file: {e}");
            continue;
        }
        let plan = &row["plan"];
        assert_eq!(plan["instances"], n);
        assert_eq!(plan["hosts"], n, "one per host");
        assert_eq!(plan["flows"], n * (n - 1));
        let racks = plan["racks"].as_u64().unwrap();
        let lost = plan["worst_rack"]["vms_lost"].as_u64().unwrap();
        match group {
            // Packed: as few racks as hold it, and a rack takes all 16 of its hosts' nodes.
            "cluster" => {
                assert_eq!(racks, n.div_ceil(16));
                assert_eq!(lost, n.min(16));
            }
            // Spread over the 7 partitions, filled evenly: a rack takes ceil(n / 7).
            _ => {
                assert_eq!(racks, 7.min(n));
                assert_eq!(lost, n.div_ceil(7));
            }
        }
        // Demand is n(n-1) Gbps; what the plan does not carry it counts as unmet.
        let total = plan["total_gbps"].as_f64().unwrap();
        let unmet = plan["unmet_demand_gbps"].as_f64().unwrap();
        assert!((total + unmet - (n * (n - 1)) as f64).abs() < 1e-6, "{row}");
    }
}

#[test]
fn shards_merged_are_the_local_sweep_byte_for_byte() {
    let dir = Scratch::new("shards");
    let local = dir.path("local");
    ok(&["sweep", HPC, "--out", &local, "--jobs", "2"]);
    let one_job = dir.path("one-job");
    ok(&["sweep", HPC, "--out", &one_job, "--jobs", "1"]);
    for k in 0..3 {
        let part = dir.path(&format!("parts/part-{k}"));
        ok(&["sweep", HPC, "--shard", &format!("{k}/3"), "--out", &part]);
    }
    let text = ok(&["sweep", "--merge", &dir.path("parts")]);
    assert!(text.contains("(10 variants)"), "{text}");
    for name in OUTPUTS {
        let want = read(&dir.0.join("local"), name);
        assert_eq!(want, read(&dir.0.join("one-job"), name), "{name}: --jobs 1");
        assert_eq!(want, read(&dir.0.join("parts"), name), "{name}: merged");
    }
    // A merge with a shard missing says which.
    std::fs::remove_dir_all(dir.0.join("parts/part-1")).unwrap();
    let e = refused(&["sweep", "--merge", &dir.path("parts")]);
    assert!(e.contains("shards 1 of 3 are missing"), "{e}");
    // Parts of another sweep do not merge with these.
    let other = dir.path("parts/part-1");
    ok(&["sweep", HPC, "--vary", "vms[node].count=8,16", "--shard", "1/3", "--out", &other]);
    let e = refused(&["sweep", "--merge", &dir.path("parts")]);
    assert!(e.contains("parts of different sweeps"), "{e}");
}

#[test]
fn vary_replaces_a_key_of_the_table_and_bad_keys_are_refused_up_front() {
    let csv = ok(&["sweep", HPC, "--vary", "vms[node].count=4,12", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 2 * 2, "{csv}");
    assert!(lines[1].starts_with("0,cluster,4,4,"), "{csv}");
    assert!(lines[4].starts_with("3,partition,12,12,"), "{csv}");
    let e = refused(&["sweep", HPC, "--vary", "vms[db].count=1,2"]);
    assert_eq!(
        e.trim(),
        "error: --vary vms[db].count=1,2: `vms[db].count`: no `vms` is named `db` (they are: node)"
    );
    let e = refused(&["sweep", HPC, "--shard", "3/3"]);
    assert!(e.contains("--shard"), "{e}");
    let dir = Scratch::new("bad-table");
    let bad = dir.path("bad.toml");
    let text = std::fs::read_to_string(HPC).unwrap().replace("vms[node].count", "vms[nod].count");
    std::fs::write(&bad, text).unwrap();
    let e = refused(&["sweep", &bad]);
    assert!(e.contains("bad.toml:") && e.contains("[sweep] `vms[nod].count`"), "{e}");
}

#[test]
fn the_slurm_script_is_a_job_array_of_the_shards() {
    let dir = Scratch::new("slurm");
    let jobs = dir.path("job");
    let said = ok(&["sweep", HPC, "--slurm", &jobs, "--tasks", "4"]);
    assert!(said.contains("sbatch --wait"), "{said}");
    let script = String::from_utf8(read(&dir.0.join("job"), "sweep.sbatch")).unwrap();
    assert!(script.starts_with("#!/bin/bash\n"));
    assert!(script.contains("\n#SBATCH --array=0-3\n"), "{script}");
    assert!(script.contains("--shard \"$SLURM_ARRAY_TASK_ID/4\""), "{script}");
    // It plans a copy of the scenario kept beside the parts.
    assert_eq!(read(&dir.0.join("job"), "sweep-hpc.toml"), std::fs::read(HPC).unwrap());
    let status = Command::new("bash").args(["-n", &format!("{jobs}/sweep.sbatch")]).status();
    assert!(status.unwrap().success(), "bash -n: the script parses");
}

#[test]
fn the_kubernetes_manifest_is_an_indexed_job_kubernetes_would_take() {
    use yaml_rust2::YamlLoader;
    let dir = Scratch::new("k8s");
    let out = dir.path("k8s");
    ok(&["sweep", HPC, "--k8s", &out, "--tasks", "5", "--image", "registry.example/vnic-lab:1"]);
    let text = String::from_utf8(read(&dir.0.join("k8s"), "sweep-job.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(docs.len(), 2, "a ConfigMap and a Job");
    let (cm, job) = (&docs[0], &docs[1]);
    assert_eq!(cm["apiVersion"].as_str(), Some("v1"));
    assert_eq!(cm["kind"].as_str(), Some("ConfigMap"));
    let scenario = cm["data"]["sweep-hpc.toml"].as_str().unwrap();
    assert_eq!(scenario, std::fs::read_to_string(HPC).unwrap(), "the scenario, exactly");
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let name = job["metadata"]["name"].as_str().unwrap();
    assert!(
        name.len() <= 63
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    );
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    assert_eq!(spec["completions"].as_i64(), Some(5));
    let pod = &spec["template"]["spec"];
    // A Job's pods must not restart always.
    assert!(matches!(pod["restartPolicy"].as_str(), Some("Never" | "OnFailure")));
    let c = &pod["containers"][0];
    assert_eq!(c["name"].as_str(), Some("sweep"));
    assert_eq!(c["image"].as_str(), Some("registry.example/vnic-lab:1"));
    let args: Vec<&str> = c["args"].as_vec().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args[..2], ["sweep", "/scenario/sweep-hpc.toml"]);
    assert!(args.windows(2).any(|w| w == ["--shard", "$(VNIC_LAB_SHARD)/5"]), "{args:?}");
    let env = &c["env"][0];
    assert_eq!(env["name"].as_str(), Some("VNIC_LAB_SHARD"));
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
    );
    let mounts: Vec<&str> =
        c["volumeMounts"].as_vec().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    let volumes: Vec<&str> =
        pod["volumes"].as_vec().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(mounts, volumes, "every mount has its volume");
    assert_eq!(pod["volumes"][0]["configMap"]["name"].as_str(), cm["metadata"]["name"].as_str());
    assert_eq!(
        pod["volumes"][1]["persistentVolumeClaim"]["claimName"].as_str(),
        Some("vnic-lab-sweep")
    );
}

#[test]
fn a_damaged_part_is_refused_by_name_not_trusted() {
    let dir = Scratch::new("damaged");
    for k in 0..2 {
        ok(&[
            "sweep",
            HPC,
            "--shard",
            &format!("{k}/2"),
            "--out",
            &dir.path(&format!("p/part-{k}")),
        ]);
    }
    let part = dir.0.join("p/part-1/sweep.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&part).unwrap()).unwrap();
    json["rows"][0]["values"] = serde_json::json!(["cluster"]);
    std::fs::write(&part, json.to_string()).unwrap();
    let e = refused(&["sweep", "--merge", &dir.path("p")]);
    assert!(e.contains("part-1/sweep.json: variant 1 has 1 values for 2 keys"), "{e}");
    std::fs::write(&part, "{ not json").unwrap();
    let e = refused(&["sweep", "--merge", &dir.path("p")]);
    assert!(e.contains("part-1/sweep.json"), "{e}");
}

/// Two VMs on two racks, one flow whose rate the sweep varies: small enough to simulate.
const ONE_FLOW: &str = r#"name = "one-flow"
seed = 1
duration_s = 0.02

[topology]
regions = ["us-east-1"]
azs_per_region = 1
racks_per_az = 2
hosts_per_rack = 1
host = { vcpus = 192, memory_gib = 1536 }
rack_uplink_gbps = 400.0
az_uplink_gbps = 4000.0

[[vms]]
name = "tx"
type = "c5n.9xlarge"

[[vms]]
name = "rx"
type = "c5n.9xlarge"

[[flows]]
from = "tx"
to = "rx"
gbps = 1.0
frame = 1514
"#;

/// `--simulate` runs every variant in virtual time beside its plan: a flow well under every cap
/// gets what it offers, in the frames that rate makes, and the table is the same on every run
/// and merged from shards.
#[test]
fn a_simulated_sweep_adds_what_each_variant_delivered() {
    let dir = Scratch::new("simulate");
    let file = dir.path("one-flow.toml");
    std::fs::write(&file, ONE_FLOW).unwrap();
    let args = ["sweep", &file, "--vary", "flows[0].gbps=0.5,1,2", "--simulate", "--json"];
    let text = ok(&args);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["simulate"], true);
    for (row, offered) in json["rows"].as_array().unwrap().iter().zip([0.5, 1.0, 2.0]) {
        assert!(row["error"].is_null(), "{row}");
        let planned = row["plan"]["total_gbps"].as_f64().unwrap();
        assert!((planned - offered).abs() < 1e-9, "the plan gives the demand: {row}");
        let sim = &row["simulated"];
        // 20 ms at `offered` Gbps of 1514-byte frames.
        let frames = offered * 1e9 * 0.02 / (1514.0 * 8.0);
        let sent = sim["sent_frames"].as_f64().unwrap();
        assert!((sent - frames).abs() <= frames * 0.02 + 1.0, "{sent} frames for {frames}: {row}");
        let got = sim["achieved_gbps"].as_f64().unwrap();
        assert!((got - offered).abs() <= offered * 0.05, "{got} Gbps for {offered}: {row}");
        assert_eq!(sim["lost_frames"], 0, "{row}");
        assert!(sim["worst_p99_us"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert_eq!(ok(&args), text, "virtual time: the same table on every run");

    let csv = ok(&["sweep", &file, "--vary", "flows[0].gbps=0.5,1,2", "--simulate", "--csv"]);
    let header = csv.lines().next().unwrap();
    assert!(header.ends_with("sim_worst_p99_us,sim_events,error"), "{header}");

    let parts = dir.path("parts");
    for k in 0..2 {
        let part = format!("{parts}/part-{k}");
        ok(&[
            "sweep",
            &file,
            "--vary",
            "flows[0].gbps=0.5,1,2",
            "--simulate",
            "--shard",
            &format!("{k}/2"),
            "--out",
            &part,
        ]);
    }
    ok(&["sweep", "--merge", &parts]);
    let local = dir.path("local");
    ok(&["sweep", &file, "--vary", "flows[0].gbps=0.5,1,2", "--simulate", "--out", &local]);
    for name in OUTPUTS {
        assert_eq!(read(Path::new(&parts), name), read(Path::new(&local), name), "{name}");
    }

    // A part planned without --simulate is of another sweep.
    let plain = format!("{parts}/part-9");
    ok(&["sweep", &file, "--vary", "flows[0].gbps=0.5,1,2", "--shard", "1/2", "--out", &plain]);
    let e = refused(&["sweep", "--merge", &parts]);
    assert!(e.contains("parts of different sweeps"), "{e}");
}
