//! The VF side of the 82576's VF ↔ PF mailbox: 16 shared words and a control register
//! ([`super::regs::V2PMAILBOX`]) through which a VF asks its PF's driver for what it may not
//! do itself (reset its queues, own a MAC address, receive large frames).
//!
//! A message goes out as: take the buffer (write VFU, read it back), clear stale PFACK / PFSTS,
//! write the words, write REQ (which drops VFU and interrupts the PF), then wait for PFACK. A
//! reply comes in as: wait for PFSTS, take the buffer, read the words, write ACK. The PF's reply
//! repeats the request's type in its low 16 bits and adds ACK or NACK, and CTS once the VF has
//! reset (the PF answers nothing but a reset before that). PFSTS, PFACK and RSTD clear on read,
//! so every read's bits are remembered until they are consumed.

use std::time::{Duration, Instant};

use super::regs::{
    MAILBOX_WORDS, MBX_ACK, MBX_PFACK, MBX_PFSTS, MBX_READ_TO_CLEAR, MBX_REQ, MBX_RSTD, MBX_RSTI,
    MBX_VFU, V2PMAILBOX, VMBMEM,
};
use crate::abi::regs::RegisterSpace;

/// Message types, the low 16 bits of a message's first word.
pub mod msg {
    /// Reset the VF's queues; the reply carries the MAC the PF assigned (if any).
    pub const RESET: u32 = 0x01;
    /// Own a unicast MAC address (words 1–2).
    pub const SET_MAC_ADDR: u32 = 0x02;
    /// Multicast hash list.
    pub const SET_MULTICAST: u32 = 0x03;
    /// VLAN filter.
    pub const SET_VLAN: u32 = 0x04;
    /// The largest frame to receive (word 1, bytes with FCS): VMOLR.LPE and RLPML.
    pub const SET_LPE: u32 = 0x05;
    /// Unicast / multicast promiscuous modes.
    pub const SET_PROMISC: u32 = 0x06;
    /// Mailbox API 2.0: negotiate the API version (word 1). A PF that speaks only 1.0
    /// (Linux's igb) answers NACK, which means version 1.0.
    pub const API_NEGOTIATE: u32 = 0x08;
    /// The request's type bits.
    pub const TYPE_MASK: u32 = 0xffff;
    /// Reply: done.
    pub const ACK: u32 = 0x8000_0000;
    /// Reply: refused.
    pub const NACK: u32 = 0x4000_0000;
    /// Reply: the VF is clear to send (it has reset).
    pub const CTS: u32 = 0x2000_0000;
}

/// Mailbox API versions (the values of API_NEGOTIATE's word 1, `enum e1000_pfvf_api_rev` of
/// the e1000 shared code: 2.0 is what illumos's igb PF offers).
pub mod api {
    /// 1.0: reset, MAC, multicast, VLAN, large frames, promiscuous.
    pub const V1_0: u32 = 0;
    /// 2.0: also queue counts and several MAC addresses.
    pub const V2_0: u32 = 1;
}

/// What went wrong on the mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    /// The PF never let the VF have the buffer.
    #[error("the mailbox buffer stayed the PF's for {0:?}")]
    Busy(Duration),
    /// The PF never acknowledged a message.
    #[error("the PF did not acknowledge message {kind:#x} within {waited:?}")]
    NoAck {
        /// The message type.
        kind: u32,
        /// How long the driver waited.
        waited: Duration,
    },
    /// The PF never replied.
    #[error("the PF did not reply to message {kind:#x} within {waited:?}")]
    NoReply {
        /// The message type.
        kind: u32,
        /// How long the driver waited.
        waited: Duration,
    },
    /// A reply to another request, or neither ACK nor NACK.
    #[error("the PF replied {word:#010x} to message {kind:#x}")]
    BadReply {
        /// The message type.
        kind: u32,
        /// The reply's first word.
        word: u32,
    },
}

/// A reply: its words, and whether the PF did what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The reply's words (the first is type | ACK/NACK | CTS).
    pub words: [u32; MAILBOX_WORDS],
    /// ACK (else NACK).
    pub acked: bool,
    /// The PF says the VF is clear to send.
    pub clear_to_send: bool,
}

/// The VF's end of the mailbox.
#[derive(Debug, Clone)]
pub struct Mailbox {
    remembered: u32,
    timeout: Duration,
    poll_gap: Duration,
    /// Messages sent.
    pub sent: u64,
    /// Replies read.
    pub received: u64,
}

impl Mailbox {
    /// A mailbox that waits at most `timeout` for each step of an exchange (Linux's igbvf
    /// waits 1 s), polling every `poll_gap`.
    pub fn new(timeout: Duration, poll_gap: Duration) -> Self {
        Self { remembered: 0, timeout, poll_gap, sent: 0, received: 0 }
    }

    /// Reads V2PMAILBOX, keeping its read-to-clear bits for later.
    fn read_control(&mut self, regs: &mut impl RegisterSpace) -> u32 {
        let v = regs.read32(V2PMAILBOX) | self.remembered;
        self.remembered |= v & MBX_READ_TO_CLEAR;
        v
    }

    /// Whether `bit` has been set since it was last consumed; consumes it.
    fn take(&mut self, regs: &mut impl RegisterSpace, bit: u32) -> bool {
        let set = self.read_control(regs) & bit != 0;
        self.remembered &= !bit;
        set
    }

    /// Whether the PF is resetting the VF (RSTI), or reported a reset done (RSTD, consumed).
    pub fn reset_pending(&mut self, regs: &mut impl RegisterSpace) -> bool {
        self.take(regs, MBX_RSTI | MBX_RSTD)
    }

    /// Polls until `bit` is set (and consumes it) or the timeout passes; the error is the
    /// time waited.
    fn wait(&mut self, regs: &mut impl RegisterSpace, bit: u32) -> Result<(), Duration> {
        let start = Instant::now();
        loop {
            if self.take(regs, bit) {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited >= self.timeout {
                return Err(waited);
            }
            std::thread::sleep(self.poll_gap);
        }
    }

    fn lock(&mut self, regs: &mut impl RegisterSpace) -> Result<(), MailboxError> {
        let start = Instant::now();
        loop {
            regs.write32(V2PMAILBOX, MBX_VFU);
            if self.read_control(regs) & MBX_VFU != 0 {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                return Err(MailboxError::Busy(start.elapsed()));
            }
            std::thread::sleep(self.poll_gap);
        }
    }

    /// Sends `words` (at most 16) and waits for the PF's acknowledgement.
    pub fn send(
        &mut self,
        regs: &mut impl RegisterSpace,
        words: &[u32],
    ) -> Result<(), MailboxError> {
        let kind = words.first().copied().unwrap_or(0) & msg::TYPE_MASK;
        self.lock(regs)?;
        // Whatever was acknowledged or posted before is overwritten now.
        self.take(regs, MBX_PFACK);
        self.take(regs, MBX_PFSTS);
        for (i, w) in words.iter().take(MAILBOX_WORDS).enumerate() {
            regs.write32(VMBMEM + 4 * i as u32, *w);
        }
        regs.write32(V2PMAILBOX, MBX_REQ);
        self.sent += 1;
        self.wait(regs, MBX_PFACK).map_err(|waited| MailboxError::NoAck { kind, waited })
    }

    /// Waits for the PF's message and reads it.
    pub fn receive(
        &mut self,
        regs: &mut impl RegisterSpace,
        kind: u32,
    ) -> Result<[u32; MAILBOX_WORDS], MailboxError> {
        self.wait(regs, MBX_PFSTS).map_err(|waited| MailboxError::NoReply { kind, waited })?;
        self.lock(regs)?;
        let mut words = [0u32; MAILBOX_WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = regs.read32(VMBMEM + 4 * i as u32);
        }
        regs.write32(V2PMAILBOX, MBX_ACK);
        self.received += 1;
        Ok(words)
    }

    /// Sends a request and reads the reply, which must answer it (same type) with ACK or NACK.
    pub fn request(
        &mut self,
        regs: &mut impl RegisterSpace,
        words: &[u32],
    ) -> Result<Reply, MailboxError> {
        let kind = words.first().copied().unwrap_or(0) & msg::TYPE_MASK;
        self.send(regs, words)?;
        let reply = self.receive(regs, kind)?;
        let word = reply[0];
        let acked = word & msg::ACK != 0;
        let nacked = word & msg::NACK != 0;
        if word & msg::TYPE_MASK != kind || acked == nacked {
            return Err(MailboxError::BadReply { kind, word });
        }
        Ok(Reply { words: reply, acked, clear_to_send: word & msg::CTS != 0 })
    }
}
