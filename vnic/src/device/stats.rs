//! Counters with ethtool's names, per queue and per VF, readable from any thread while traffic
//! runs (relaxed atomics: each is exact, a snapshot of several is not a single instant).
//!
//! The device engine is the only writer of its counters, so it adds with a relaxed load and
//! store, not a locked read-modify-write: counting costs two plain moves.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($(#[$doc:meta])* $atomic:ident, $snapshot:ident { $($(#[$fdoc:meta])* $field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $atomic {
            $($(#[$fdoc])* pub $field: AtomicU64,)*
        }

        /// A snapshot of the counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $snapshot {
            $($(#[$fdoc])* pub $field: u64,)*
        }

        impl $atomic {
            /// The counters now.
            pub fn snapshot(&self) -> $snapshot {
                $snapshot { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }

        impl std::ops::AddAssign for $snapshot {
            fn add_assign(&mut self, other: Self) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

counters!(
    /// One queue pair's counters.
    QueueStats,
    QueueStatsSnapshot {
        /// Frames sent.
        tx_packets,
        /// Bytes sent.
        tx_bytes,
        /// TX descriptors rejected (bad address, length, request id, or chain).
        tx_bad_desc,
        /// Frames completed with an error status.
        tx_errors,
        /// Frames received.
        rx_packets,
        /// Bytes received.
        rx_bytes,
        /// Frames dropped on receive (no buffer posted, too large, bad descriptor).
        rx_drops,
        /// RX descriptors rejected.
        rx_bad_desc,
    }
);

counters!(
    /// A VF's counters outside its queues.
    VfStats,
    VfStatsSnapshot {
        /// Frames dropped by the spoof check.
        tx_spoofed,
        /// Frames the switch dropped for other reasons (hairpin, tagged on a VLAN port, ...).
        tx_switch_drops,
        /// Frames that could not be parsed.
        tx_malformed,
        /// Frames larger than the MTU.
        tx_oversize,
        /// Frames sent from an address the VF does not own (source/destination check).
        tx_src_dst_check,
        /// Frames arriving for an address the VF does not own (source/destination check).
        rx_src_dst_check,
        /// Frames the egress shaper dropped (its queue full, or conntrack exhausted).
        tx_shaper_drops,
        /// Frames sent that no rule of the VF's security groups allows.
        tx_security_group_drops,
        /// Frames arriving that no rule of the VF's security groups allows.
        rx_security_group_drops,
        /// New connections the security groups allowed but could not track (the conntrack
        /// allowance spent): the frame is dropped.
        conntrack_allowance_exceeded,
        /// Frames sent out of the VF's subnet that its NACL denies.
        tx_nacl_drops,
        /// Frames arriving from outside the VF's subnet that its NACL denies.
        rx_nacl_drops,
        /// TX descriptors the engine took from the VF's rings, valid or not.
        engine_descriptors,
        /// Engine work charged to the VF for them: one unit per descriptor plus one per
        /// `BYTES_PER_UNIT` bytes copied.
        engine_units,
        /// Polls in which the VF still had TX descriptors waiting when its share of the engine
        /// ran out.
        engine_share_exhausted,
    }
);

/// Adds `n` to a counter that only the calling thread (the engine that owns it) writes.
#[inline(always)]
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}
