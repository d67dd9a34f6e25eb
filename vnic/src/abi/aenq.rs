//! ENA's asynchronous event notification queue: 64-byte events the device writes into a ring
//! in driver memory, each with a phase bit.
//!
//! An event (`ena_admin_aenq_entry`) is a 16-byte header (group, syndrome, flags with the phase
//! in bit 0, a 64-bit timestamp as two words) and 48 bytes of group-specific data. The device
//! reports only groups the driver enabled with `SET_FEATURE AENQ_CONFIG`, and writes an event
//! only while the driver has room for it: `AENQ_HEAD_DB` holds the events the driver consumed
//! plus the queue's depth (ENA's driver writes the depth at start-up). A keep-alive arrives once
//! a second; a driver that misses them for its watchdog's timeout resets the function.

use super::wire::*;

/// Bytes of one event.
pub const ENTRY_BYTES: usize = 64;
/// One event.
pub type Entry = [u8; ENTRY_BYTES];
const DATA_AT: usize = 16;

/// Event groups (`ena_admin_aenq_group`); bit `group` of `AENQ_CONFIG` enables one.
pub mod group {
    /// Link up or down.
    pub const LINK_CHANGE: u16 = 0;
    /// Fatal error.
    pub const FATAL_ERROR: u16 = 1;
    /// Warning.
    pub const WARNING: u16 = 2;
    /// Notification (syndrome says which).
    pub const NOTIFICATION: u16 = 3;
    /// Keep-alive, with drop counters.
    pub const KEEP_ALIVE: u16 = 4;
}

/// Notification syndromes (`ena_admin_aenq_notification_syndrome`).
pub mod syndrome {
    /// New hardware hints: read `HW_HINTS` again.
    pub const UPDATE_HINTS: u16 = 2;
}

/// What an event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `LINK_CHANGE`: data word 0 bit 0.
    LinkChange {
        /// Link up.
        up: bool,
    },
    /// `KEEP_ALIVE`: RX and TX drops, each as low and high words.
    KeepAlive {
        /// Frames dropped on receive.
        rx_drops: u64,
        /// Frames dropped on transmit.
        tx_drops: u64,
    },
    /// Any other group, its syndrome and data left as they are.
    Other {
        /// Group.
        group: u16,
        /// Syndrome.
        syndrome: u16,
    },
}

impl Event {
    /// Its group.
    pub fn group(&self) -> u16 {
        match self {
            Self::LinkChange { .. } => group::LINK_CHANGE,
            Self::KeepAlive { .. } => group::KEEP_ALIVE,
            Self::Other { group, .. } => *group,
        }
    }
}

/// An event with its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AenqEntry {
    /// What happened.
    pub event: Event,
    /// Phase bit.
    pub phase: bool,
    /// Device time, ns (ENA leaves the unit to the device).
    pub timestamp: u64,
}

impl AenqEntry {
    /// The event's bytes.
    pub fn encode(&self) -> Entry {
        let mut e = [0u8; ENTRY_BYTES];
        put_u16(&mut e, 0, self.event.group());
        if let Event::Other { syndrome, .. } = self.event {
            put_u16(&mut e, 2, syndrome);
        }
        put_u8(&mut e, 4, u8::from(self.phase));
        put_u32(&mut e, 8, self.timestamp as u32);
        put_u32(&mut e, 12, (self.timestamp >> 32) as u32);
        match self.event {
            Event::LinkChange { up } => put_u32(&mut e, DATA_AT, u32::from(up)),
            Event::KeepAlive { rx_drops, tx_drops } => {
                put_u64(&mut e, DATA_AT, rx_drops);
                put_u64(&mut e, DATA_AT + 8, tx_drops);
            }
            Event::Other { .. } => {}
        }
        e
    }

    /// The event in `e`.
    pub fn decode(e: &Entry) -> Self {
        let group = u16_at(e, 0);
        let event = match group {
            group::LINK_CHANGE => Event::LinkChange { up: u32_at(e, DATA_AT) & 1 != 0 },
            group::KEEP_ALIVE => {
                Event::KeepAlive { rx_drops: u64_at(e, DATA_AT), tx_drops: u64_at(e, DATA_AT + 8) }
            }
            _ => Event::Other { group, syndrome: u16_at(e, 2) },
        };
        Self { event, phase: u8_at(e, 4) & 1 != 0, timestamp: u64_at(e, 8) }
    }
}
