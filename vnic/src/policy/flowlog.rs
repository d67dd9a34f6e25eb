//! VPC flow logs: what an ENI accepted and rejected, aggregated per interval, in AWS's default
//! record format (version 2), one record per line as S3 delivery writes them:
//!
//! ```text
//! version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status
//! 2 123456789012 eni-web0 10.0.1.5 10.0.2.7 40001 5432 6 12 3120 1700000000 1700000004 ACCEPT OK
//! ```
//!
//! A record is one flow (addresses, ports, protocol) and one action within one aggregation
//! interval (EC2 offers 60 s and 600 s; a scenario may choose a shorter one); `start` and `end`
//! are the Unix seconds of its first and last packet. An interval with no traffic at all is one
//! `NODATA` record, and an interval with more flows than the log can hold ends with one
//! `SKIPDATA` record for the rest. ICMP and protocols without ports log port 0. Not logged, as
//! in EC2: traffic to or from Amazon DNS (the VPC's base + 2, and 169.254.169.253), DHCP (UDP
//! 67 and 68), instance metadata (169.254.169.254), Amazon Time Sync (169.254.169.123) and the
//! subnet's router (its base + 1).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::{Cidr, PROTO_TCP, PROTO_UDP, Tuple};

/// The record format's version.
pub const VERSION: u8 = 2;
/// The header line of the default format.
pub const HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport \
                          protocol packets bytes start end action log-status";
/// Instance metadata.
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Amazon Time Sync.
pub const TIME_SYNC: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 123);
/// Amazon DNS at its link-local address.
pub const DNS_LINK_LOCAL: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);
/// Most flows one interval of one log records before the rest is `SKIPDATA`.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;

/// A record's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogAction {
    /// Security groups and NACLs let it through.
    Accept,
    /// A security group or a NACL stopped it.
    Reject,
}

impl LogAction {
    fn as_str(self) -> &'static str {
        match self {
            LogAction::Accept => "ACCEPT",
            LogAction::Reject => "REJECT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct RecordKey {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    action: LogAction,
}

#[derive(Debug, Clone, Copy)]
struct Aggregate {
    packets: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
}

/// One ENI's flow log.
#[derive(Debug)]
pub struct FlowLog {
    account_id: String,
    interface_id: String,
    interval_ns: u64,
    epoch_unix_s: u64,
    excluded: Vec<Ipv4Addr>,
    max_records: usize,
    /// The interval being aggregated, and its records.
    window: u64,
    /// This interval's flows (sorted by first packet when written, so the per-instance hash
    /// seed, which keeps guests from aiming collisions, never shows in the log).
    records: HashMap<RecordKey, Aggregate, foldhash::fast::RandomState>,
    skipped: bool,
    /// Intervals already written.
    written_to: u64,
    lines: Vec<String>,
}

impl FlowLog {
    /// The log of ENI `interface_id` of account `account_id`, aggregated over `interval_s`,
    /// its clock's 0 at Unix second `epoch_unix_s`, for an ENI in `subnet` of a VPC of `vpc`.
    pub fn new(
        account_id: &str,
        interface_id: &str,
        interval_s: u64,
        epoch_unix_s: u64,
        vpc: Cidr,
        subnet: Cidr,
    ) -> Self {
        let base = |c: Cidr, k: u32| Ipv4Addr::from(u32::from(c.network()) + k);
        Self {
            account_id: account_id.to_string(),
            interface_id: interface_id.to_string(),
            interval_ns: interval_s.max(1) * 1_000_000_000,
            epoch_unix_s,
            excluded: vec![METADATA, TIME_SYNC, DNS_LINK_LOCAL, base(vpc, 2), base(subnet, 1)],
            max_records: DEFAULT_MAX_RECORDS,
            window: 0,
            records: HashMap::default(),
            skipped: false,
            written_to: 0,
            lines: Vec::new(),
        }
    }

    /// Records at most `max` flows per interval, the rest as `SKIPDATA`.
    pub fn with_max_records(mut self, max: usize) -> Self {
        self.max_records = max;
        self
    }

    /// Whether EC2 leaves `t` out of flow logs.
    pub fn is_excluded(&self, t: &Tuple) -> bool {
        let dhcp = t.proto == PROTO_UDP && matches!((t.src_port, t.dst_port), (67 | 68, 67 | 68));
        dhcp || self.excluded.contains(&t.src) || self.excluded.contains(&t.dst)
    }

    /// Notes a packet of `bytes` the ENI sent or received at `now_ns` (times only grow).
    pub fn record(&mut self, now_ns: u64, t: &Tuple, bytes: u64, action: LogAction) {
        if self.is_excluded(t) {
            return;
        }
        self.close_until(now_ns / self.interval_ns);
        let ports = matches!(t.proto, PROTO_TCP | PROTO_UDP);
        let key = RecordKey {
            src: t.src,
            dst: t.dst,
            src_port: if ports { t.src_port } else { 0 },
            dst_port: if ports { t.dst_port } else { 0 },
            proto: t.proto,
            action,
        };
        let full = self.records.len() >= self.max_records;
        match self.records.get_mut(&key) {
            Some(a) => {
                a.packets += 1;
                a.bytes += bytes;
                a.last_ns = now_ns;
            }
            None if full => self.skipped = true,
            None => {
                self.records.insert(
                    key,
                    Aggregate { packets: 1, bytes, first_ns: now_ns, last_ns: now_ns },
                );
            }
        }
    }

    fn unix_s(&self, ns: u64) -> u64 {
        self.epoch_unix_s + ns / 1_000_000_000
    }

    fn prefix(&self) -> String {
        format!("{VERSION} {} {}", self.account_id, self.interface_id)
    }

    /// Writes out every interval before interval `window`.
    fn close_until(&mut self, window: u64) {
        while self.window < window {
            let end_ns = (self.window + 1) * self.interval_ns;
            self.write_window(end_ns);
            self.window += 1;
        }
    }

    /// Writes the current interval's records (or its NODATA record), ending at `end_ns`.
    fn write_window(&mut self, end_ns: u64) {
        let start_ns = self.window * self.interval_ns;
        let prefix = self.prefix();
        if self.records.is_empty() && !self.skipped {
            let line = format!(
                "{prefix} - - - - - - - {} {} - NODATA",
                self.unix_s(start_ns),
                self.unix_s(end_ns)
            );
            self.lines.push(line);
        }
        let mut records: Vec<(RecordKey, Aggregate)> =
            std::mem::take(&mut self.records).into_iter().collect();
        records.sort_by_key(|(k, a)| (a.first_ns, *k));
        for (k, a) in records {
            let line = format!(
                "{prefix} {} {} {} {} {} {} {} {} {} {} OK",
                k.src,
                k.dst,
                k.src_port,
                k.dst_port,
                k.proto,
                a.packets,
                a.bytes,
                self.unix_s(a.first_ns),
                self.unix_s(a.last_ns),
                k.action.as_str()
            );
            self.lines.push(line);
        }
        if std::mem::take(&mut self.skipped) {
            let line = format!(
                "{prefix} - - - - - - - {} {} - SKIPDATA",
                self.unix_s(start_ns),
                self.unix_s(end_ns)
            );
            self.lines.push(line);
        }
        self.written_to = self.window + 1;
    }

    /// Records written so far (whole intervals), oldest first; taken, so a caller can stream
    /// them to a file as the run goes.
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    /// Ends the log at `end_ns`: writes every interval up to it, the last one ending there.
    pub fn finish(mut self, end_ns: u64) -> Vec<String> {
        let last = end_ns.saturating_sub(1) / self.interval_ns;
        self.close_until(last);
        if self.written_to <= last {
            self.write_window(end_ns.max(last * self.interval_ns));
        }
        self.lines
    }
}
