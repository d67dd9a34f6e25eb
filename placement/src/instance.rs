//! Instance types: what an instance takes from its host and what network it gets.
//!
//! Bandwidth is the sustained (baseline) aggregate an instance may send and, separately, receive.
//! Small "up to" instances burst above it on credits; the planner, which answers what a fleet gets
//! in steady state, uses the baseline.

use serde::{Deserialize, Serialize};

/// An EC2-like instance type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceType {
    /// Name, e.g. `c5n.18xlarge`.
    pub name: String,
    /// vCPUs it takes from a host.
    pub vcpus: u32,
    /// Memory it takes from a host, GiB.
    pub memory_gib: u32,
    /// Sustained aggregate bandwidth, each direction, Gbps.
    pub baseline_gbps: f64,
    /// Peak ("up to") bandwidth on burst credits, Gbps (equal to the baseline for large types).
    pub burst_gbps: f64,
}

impl InstanceType {
    fn new(name: &str, vcpus: u32, memory_gib: u32, baseline_gbps: f64, burst_gbps: f64) -> Self {
        Self { name: name.into(), vcpus, memory_gib, baseline_gbps, burst_gbps }
    }

    /// Whether the shape is possible: at least one vCPU and 1 GiB, a positive finite baseline
    /// and a burst rate no lower than it; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let n = &self.name;
        if self.vcpus == 0 {
            return Err(format!("instance type {n}: vcpus 0 (it needs at least one)"));
        }
        if self.memory_gib == 0 {
            return Err(format!("instance type {n}: memory_gib 0 (it needs at least 1 GiB)"));
        }
        if !(self.baseline_gbps.is_finite() && self.baseline_gbps > 0.0) {
            return Err(format!(
                "instance type {n}: baseline_gbps {} is not a positive rate",
                self.baseline_gbps
            ));
        }
        if !(self.burst_gbps.is_finite() && self.burst_gbps >= self.baseline_gbps) {
            return Err(format!(
                "instance type {n}: burst_gbps {} is below its baseline_gbps {}",
                self.burst_gbps, self.baseline_gbps
            ));
        }
        Ok(())
    }

    /// A handful of real shapes (vCPUs, memory, and network performance as EC2 documents them;
    /// baselines of "up to" types as measured and published by EC2 users).
    pub fn catalog() -> Vec<InstanceType> {
        vec![
            Self::new("m5.large", 2, 8, 0.75, 10.0),
            Self::new("c5.4xlarge", 16, 32, 5.0, 10.0),
            Self::new("c5n.large", 2, 5, 3.0, 25.0),
            Self::new("c5n.9xlarge", 36, 96, 50.0, 50.0),
            Self::new("c5n.18xlarge", 72, 192, 100.0, 100.0),
            Self::new("m5.24xlarge", 96, 384, 25.0, 25.0),
            Self::new("c6in.32xlarge", 128, 256, 200.0, 200.0),
            Self::new("p4d.24xlarge", 96, 1152, 400.0, 400.0),
        ]
    }
}
