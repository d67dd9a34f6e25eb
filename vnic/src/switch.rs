//! The embedded switch of an SR-IOV NIC: it forwards frames between a PF's virtual functions and
//! to the uplink, by destination MAC and VLAN.
//!
//! The PF's driver programs each VF's MAC (and optionally a port VLAN, as `ip link set dev PF vf
//! N mac M vlan V` does), so the forwarding table is static: a VF receives only frames addressed
//! to its MAC, plus broadcast and multicast on its VLAN. With spoof checking on (the default, as
//! EC2's source/destination check), a frame whose source MAC is not the sending VF's is dropped.
//! Unicast to an unknown MAC leaves through the uplink ([`Uplink`], which a host's fabric
//! implements); unknown unicast arriving from the uplink is dropped.

use std::collections::HashMap;

use crate::frame::{FrameInfo, MacAddr};

/// Where a frame comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// A virtual function, by index.
    Vf(u16),
    /// The physical uplink.
    Uplink,
}

/// Something that carries frames off the NIC (the host's fabric).
pub trait Uplink: Send + Sync {
    /// Sends one frame out.
    fn transmit(&self, frame: &[u8]);

    /// Sends a burst out, in order: what the engine calls, once per TX burst it served. An
    /// uplink that can share work across frames (a clock read, a route lookup, a doorbell)
    /// overrides this; by default each frame is [`Uplink::transmit`]ted.
    fn transmit_batch(&self, batch: &FrameBatch) {
        batch.iter().for_each(|f| self.transmit(f));
    }
}

/// Frames packed end to end in one buffer, kept from burst to burst (no allocation per frame
/// once it has grown to a burst's size).
#[derive(Debug, Default, Clone)]
pub struct FrameBatch {
    bytes: Vec<u8>,
    /// Where each frame ends in `bytes`.
    ends: Vec<usize>,
}

impl FrameBatch {
    /// Appends a frame.
    pub fn push(&mut self, frame: &[u8]) {
        self.bytes.extend_from_slice(frame);
        self.ends.push(self.bytes.len());
    }

    /// Appends a frame of `len` bytes that `fill` writes; if `fill` fails the frame is not
    /// added and the error is returned.
    pub fn push_with<E>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        self.bytes.resize(start + len, 0);
        match fill(&mut self.bytes[start..]) {
            Ok(()) => {
                self.ends.push(self.bytes.len());
                Ok(())
            }
            Err(e) => {
                self.bytes.truncate(start);
                Err(e)
            }
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True if it holds no frame.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The frames, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(a, b)| &self.bytes[a..b])
    }

    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Why the switch dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SwitchDrop {
    /// The source MAC is not the sending VF's.
    #[error("source MAC is not the VF's own (spoof check)")]
    Spoofed,
    /// A VF with a port VLAN sent a tagged frame.
    #[error("a VF with a port VLAN sent a tagged frame")]
    TaggedOnVlanPort,
    /// The sending port is not configured.
    #[error("no such port")]
    NoSuchPort,
    /// Unicast from the uplink to a MAC no VF has.
    #[error("unknown unicast from the uplink")]
    UnknownUnicast,
    /// A VF sent a frame to itself.
    #[error("frame addressed to its own sender")]
    Hairpin,
}

/// A VF's port configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfPort {
    /// Its MAC.
    pub mac: MacAddr,
    /// Its port VLAN: frames to and from it are untagged and belong to this VLAN.
    pub vlan: Option<u16>,
    /// Drop frames whose source MAC is not `mac`.
    pub spoof_check: bool,
}

/// The forwarding decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// To one port.
    One(Port),
    /// To every port of the VLAN but the sender ([`EmbeddedSwitch::flood`]).
    Flood {
        /// The VLAN.
        vlan: u16,
    },
    /// Dropped.
    Drop(SwitchDrop),
}

/// The switch: VF ports and their MACs.
#[derive(Debug, Default)]
pub struct EmbeddedSwitch {
    ports: Vec<Option<VfPort>>,
    fdb: HashMap<(MacAddr, u16), u16, foldhash::fast::RandomState>,
    /// Extra unicast MAC filters per VF (a hypervisor's backend VF carrying emulated NICs).
    extra: HashMap<(MacAddr, u16), u16, foldhash::fast::RandomState>,
    /// VEPA mode: no switching between VFs, every frame a VF sends leaves by the uplink.
    vepa: bool,
    /// Bumped by every change to the ports, filters or mode: what a [`ForwardMemo`] checks.
    generation: u64,
}

/// The last decision of [`EmbeddedSwitch::forward_memo`], for the frames after it: a burst's
/// frames mostly share their sender, MACs and tag, and the decision depends on nothing else
/// but the switch's configuration, whose generation the memo keeps. At 64-byte frames the
/// switch's lookup (the port, the spoof check, a hash of the forwarding table) was 15% of the
/// engine's samples; a hit is four compares.
#[derive(Debug, Default, Clone, Copy)]
pub struct ForwardMemo {
    last: Option<MemoEntry>,
}

#[derive(Debug, Clone, Copy)]
struct MemoEntry {
    generation: u64,
    from: Port,
    src: MacAddr,
    dst: MacAddr,
    vlan: Option<u16>,
    decision: Forward,
}

impl EmbeddedSwitch {
    /// A switch with no ports.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures VF `vf` (replacing what it had; its extra MAC filters move to the new VLAN).
    pub fn set_port(&mut self, vf: u16, port: VfPort) {
        self.generation = self.generation.wrapping_add(1);
        let extras = self.take_extras(vf);
        self.remove_port(vf);
        let i = usize::from(vf);
        if self.ports.len() <= i {
            self.ports.resize(i + 1, None);
        }
        self.ports[i] = Some(port);
        self.fdb.insert((port.mac, port.vlan.unwrap_or(0)), vf);
        for mac in extras {
            self.add_mac_filter(vf, mac);
        }
    }

    /// Removes VF `vf`'s port and its extra MAC filters.
    pub fn remove_port(&mut self, vf: u16) {
        self.generation = self.generation.wrapping_add(1);
        self.take_extras(vf);
        if let Some(Some(old)) = self.ports.get_mut(usize::from(vf)).map(Option::take) {
            self.fdb.remove(&(old.mac, old.vlan.unwrap_or(0)));
        }
    }

    /// Removes VF `vf`'s extra MAC filters and returns their MACs.
    pub(crate) fn take_extras(&mut self, vf: u16) -> Vec<MacAddr> {
        self.generation = self.generation.wrapping_add(1);
        let keys: Vec<(MacAddr, u16)> =
            self.extra.iter().filter(|&(_, &owner)| owner == vf).map(|(&k, _)| k).collect();
        for key in &keys {
            self.extra.remove(key);
            self.fdb.remove(key);
        }
        keys.into_iter().map(|(mac, _)| mac).collect()
    }

    /// Switches between VEB (the default: frames between VFs are switched locally) and VEPA
    /// (every frame from a VF leaves by the uplink, and the adjacent switch relays it back if it
    /// is for a neighbour), as a hypervisor's software bridge in front of a NIC can be set.
    pub fn set_vepa(&mut self, vepa: bool) {
        self.generation = self.generation.wrapping_add(1);
        self.vepa = vepa;
    }

    /// Adds an extra unicast MAC filter to VF `vf`'s port, on its VLAN: frames to `mac` are
    /// delivered to it, and with spoof check on it may send as `mac` too (as a hypervisor's
    /// backend VF does for the emulated NICs behind it). Returns false, changing nothing, if
    /// the port does not exist or another port already has the MAC.
    pub fn add_mac_filter(&mut self, vf: u16, mac: MacAddr) -> bool {
        self.generation = self.generation.wrapping_add(1);
        let Some(port) = self.port(vf) else { return false };
        let key = (mac, port.vlan.unwrap_or(0));
        match self.fdb.get(&key) {
            Some(&owner) => owner == vf,
            None => {
                self.fdb.insert(key, vf);
                self.extra.insert(key, vf);
                true
            }
        }
    }

    /// Removes an extra MAC filter of VF `vf`.
    pub fn remove_mac_filter(&mut self, vf: u16, mac: MacAddr) {
        self.generation = self.generation.wrapping_add(1);
        let Some(port) = self.port(vf) else { return };
        let key = (mac, port.vlan.unwrap_or(0));
        if self.extra.get(&key) == Some(&vf) {
            self.extra.remove(&key);
            self.fdb.remove(&key);
        }
    }

    /// VF `vf`'s port.
    pub fn port(&self, vf: u16) -> Option<&VfPort> {
        self.ports.get(usize::from(vf)).and_then(Option::as_ref)
    }

    /// Where a frame from `from` goes.
    pub fn forward(&self, from: Port, info: &FrameInfo) -> Forward {
        let vlan = match from {
            Port::Vf(vf) => {
                let Some(port) = self.port(vf) else {
                    return Forward::Drop(SwitchDrop::NoSuchPort);
                };
                if port.spoof_check
                    && info.src != port.mac
                    && self.extra.get(&(info.src, port.vlan.unwrap_or(0))) != Some(&vf)
                {
                    return Forward::Drop(SwitchDrop::Spoofed);
                }
                match (port.vlan, info.vlan) {
                    (Some(_), Some(_)) => return Forward::Drop(SwitchDrop::TaggedOnVlanPort),
                    (Some(v), None) => v,
                    (None, tag) => tag.unwrap_or(0),
                }
            }
            Port::Uplink => info.vlan.unwrap_or(0),
        };
        if self.vepa && from != Port::Uplink {
            return Forward::One(Port::Uplink);
        }
        if info.dst.is_group() {
            return Forward::Flood { vlan };
        }
        match (self.fdb.get(&(info.dst, vlan)), from) {
            // Back to the sending VF only for another of its MACs (reflective relay, for a
            // hypervisor's backend VF carrying several emulated NICs): never to the same MAC.
            (Some(&vf), Port::Vf(src)) if vf == src && info.dst != info.src => {
                if self.extra.contains_key(&(info.dst, vlan)) {
                    Forward::One(Port::Vf(vf))
                } else {
                    Forward::Drop(SwitchDrop::Hairpin)
                }
            }
            (Some(&vf), Port::Vf(src)) if vf == src => Forward::Drop(SwitchDrop::Hairpin),
            (Some(&vf), _) => Forward::One(Port::Vf(vf)),
            (None, Port::Vf(_)) => Forward::One(Port::Uplink),
            (None, Port::Uplink) => Forward::Drop(SwitchDrop::UnknownUnicast),
        }
    }

    /// [`forward`](Self::forward), answered from `memo` when the frame has the sender, MACs and
    /// tag of the one before it and the switch has not changed since; `memo` then holds this
    /// frame's decision.
    #[inline]
    pub fn forward_memo(&self, memo: &mut ForwardMemo, from: Port, info: &FrameInfo) -> Forward {
        if let Some(e) = memo.last
            && e.generation == self.generation
            && e.from == from
            && e.src == info.src
            && e.dst == info.dst
            && e.vlan == info.vlan
        {
            return e.decision;
        }
        let decision = self.forward(from, info);
        memo.last = Some(MemoEntry {
            generation: self.generation,
            from,
            src: info.src,
            dst: info.dst,
            vlan: info.vlan,
            decision,
        });
        decision
    }

    /// The ports a broadcast or multicast from `from` on `vlan` reaches: every other VF on the
    /// VLAN, and the uplink unless it came from there.
    pub fn flood(&self, from: Port, vlan: u16) -> impl Iterator<Item = Port> + '_ {
        let vfs = self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (i as u16, p)))
            .filter(move |&(i, p)| p.vlan.unwrap_or(0) == vlan && from != Port::Vf(i))
            .map(|(i, _)| Port::Vf(i));
        vfs.chain((from != Port::Uplink).then_some(Port::Uplink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_frames_in_order_and_drops_a_failed_fill() {
        let mut b = FrameBatch::default();
        b.push(&[1, 2, 3]);
        b.push(&[]);
        assert_eq!(
            b.push_with(4, |buf| {
                buf.copy_from_slice(&[9; 4]);
                Err("no")
            }),
            Err("no")
        );
        b.push_with(2, |buf| {
            buf.copy_from_slice(&[7, 8]);
            Ok::<(), ()>(())
        })
        .unwrap();
        let frames: Vec<&[u8]> = b.iter().collect();
        assert_eq!(frames, vec![&[1u8, 2, 3][..], &[], &[7, 8]]);
        assert_eq!(b.len(), 3);
        b.clear();
        assert!(b.is_empty() && b.iter().next().is_none());
    }

    fn info(dst: MacAddr, src: MacAddr, vlan: Option<u16>) -> FrameInfo {
        FrameInfo { dst, src, vlan, ethertype: crate::frame::ethertype::IPV4, ipv4: None }
    }

    fn switch() -> EmbeddedSwitch {
        let mut s = EmbeddedSwitch::new();
        for vf in 0..3 {
            s.set_port(
                vf,
                VfPort { mac: MacAddr::local(u32::from(vf)), vlan: None, spoof_check: true },
            );
        }
        s.set_port(3, VfPort { mac: MacAddr::local(3), vlan: Some(42), spoof_check: true });
        s
    }

    /// A change to the switch, or a frame to forward.
    #[derive(Debug, Clone)]
    enum Step {
        SetPort { vf: u16, mac: u32, vlan: Option<u16>, spoof_check: bool },
        RemovePort(u16),
        AddFilter(u16, u32),
        RemoveFilter(u16, u32),
        TakeExtras(u16),
        Vepa(bool),
        Frame { from: Option<u16>, dst: Option<u32>, src: u32, vlan: Option<u16> },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        // Few VFs, MACs and VLANs, so that frames and changes keep meeting.
        let vf = 0u16..4;
        let mac = 0u32..6;
        let vlan = proptest::option::of(0u16..3);
        prop_oneof![
            1 => (vf.clone(), mac.clone(), vlan.clone(), any::<bool>()).prop_map(
                |(vf, mac, vlan, spoof_check)| Step::SetPort { vf, mac, vlan, spoof_check }
            ),
            1 => vf.clone().prop_map(Step::RemovePort),
            1 => (vf.clone(), mac.clone()).prop_map(|(vf, mac)| Step::AddFilter(vf, mac)),
            1 => (vf.clone(), mac.clone()).prop_map(|(vf, mac)| Step::RemoveFilter(vf, mac)),
            1 => vf.clone().prop_map(Step::TakeExtras),
            1 => any::<bool>().prop_map(Step::Vepa),
            // Frames four times as often as changes, in runs from one sender.
            4 => (proptest::option::of(vf), proptest::option::of(mac.clone()), mac, vlan)
                .prop_map(|(from, dst, src, vlan)| Step::Frame { from, dst, src, vlan }),
        ]
    }

    proptest::proptest! {
        /// The memo answers every frame as the switch itself does, whatever changed between
        /// frames: it never hands back a decision the switch's current configuration would not
        /// make.
        #[test]
        fn the_memo_decides_as_the_switch_does(steps in proptest::collection::vec(step(), 1..200)) {
            let mut s = switch();
            let mut memo = ForwardMemo::default();
            for step in steps {
                match step {
                    Step::SetPort { vf, mac, vlan, spoof_check } => {
                        s.set_port(vf, VfPort { mac: MacAddr::local(mac), vlan, spoof_check })
                    }
                    Step::RemovePort(vf) => s.remove_port(vf),
                    Step::AddFilter(vf, mac) => {
                        s.add_mac_filter(vf, MacAddr::local(mac));
                    }
                    Step::RemoveFilter(vf, mac) => s.remove_mac_filter(vf, MacAddr::local(mac)),
                    Step::TakeExtras(vf) => {
                        s.take_extras(vf);
                    }
                    Step::Vepa(on) => s.set_vepa(on),
                    Step::Frame { from, dst, src, vlan } => {
                        let from = from.map_or(Port::Uplink, Port::Vf);
                        let dst = dst.map_or(MacAddr::BROADCAST, MacAddr::local);
                        let frame = info(dst, MacAddr::local(src), vlan);
                        let fresh = s.forward(from, &frame);
                        proptest::prop_assert_eq!(s.forward_memo(&mut memo, from, &frame), fresh);
                        // Asked again at once, it answers from the memo: still the same.
                        proptest::prop_assert_eq!(s.forward_memo(&mut memo, from, &frame), fresh);
                    }
                }
            }
        }
    }

    #[test]
    fn a_memo_made_before_a_change_is_not_used_after_it() {
        let mut s = switch();
        let m = MacAddr::local;
        let mut memo = ForwardMemo::default();
        let frame = info(m(1), m(0), None);
        assert_eq!(s.forward_memo(&mut memo, Port::Vf(0), &frame), Forward::One(Port::Vf(1)));
        // VF 1 moves to another MAC: the same frame now leaves by the uplink.
        s.set_port(1, VfPort { mac: m(7), vlan: None, spoof_check: true });
        assert_eq!(s.forward_memo(&mut memo, Port::Vf(0), &frame), Forward::One(Port::Uplink));
        s.set_vepa(true);
        let to_seven = info(m(7), m(0), None);
        assert_eq!(s.forward_memo(&mut memo, Port::Vf(0), &to_seven), Forward::One(Port::Uplink));
        s.set_vepa(false);
        assert_eq!(s.forward_memo(&mut memo, Port::Vf(0), &to_seven), Forward::One(Port::Vf(1)));
        // Spoofing VF 1's new MAC from VF 0 is dropped, memo or not.
        let spoofed = info(m(2), m(7), None);
        assert_eq!(
            s.forward_memo(&mut memo, Port::Vf(0), &spoofed),
            Forward::Drop(SwitchDrop::Spoofed)
        );
        assert_eq!(
            s.forward_memo(&mut memo, Port::Vf(0), &spoofed),
            Forward::Drop(SwitchDrop::Spoofed)
        );
    }

    #[test]
    fn unicast_goes_to_its_mac_or_the_uplink() {
        let s = switch();
        let m = MacAddr::local;
        assert_eq!(s.forward(Port::Vf(0), &info(m(1), m(0), None)), Forward::One(Port::Vf(1)));
        assert_eq!(s.forward(Port::Vf(0), &info(m(99), m(0), None)), Forward::One(Port::Uplink));
        assert_eq!(s.forward(Port::Uplink, &info(m(2), m(99), None)), Forward::One(Port::Vf(2)));
        assert_eq!(
            s.forward(Port::Uplink, &info(m(98), m(99), None)),
            Forward::Drop(SwitchDrop::UnknownUnicast)
        );
        assert_eq!(
            s.forward(Port::Vf(0), &info(m(0), m(0), None)),
            Forward::Drop(SwitchDrop::Hairpin)
        );
        // VF 3 lives on VLAN 42: VLAN 0 traffic cannot reach it.
        assert_eq!(s.forward(Port::Vf(0), &info(m(3), m(0), None)), Forward::One(Port::Uplink));
        assert_eq!(
            s.forward(Port::Uplink, &info(m(3), m(99), Some(42))),
            Forward::One(Port::Vf(3))
        );
    }

    #[test]
    fn broadcast_floods_its_vlan_and_spoofs_are_dropped() {
        let mut s = switch();
        let m = MacAddr::local;
        let bcast = info(MacAddr::BROADCAST, m(1), None);
        assert_eq!(s.forward(Port::Vf(1), &bcast), Forward::Flood { vlan: 0 });
        let flood: Vec<Port> = s.flood(Port::Vf(1), 0).collect();
        assert_eq!(flood, vec![Port::Vf(0), Port::Vf(2), Port::Uplink]);
        let tagged = info(MacAddr::BROADCAST, m(50), Some(42));
        assert_eq!(s.forward(Port::Uplink, &tagged), Forward::Flood { vlan: 42 });
        assert_eq!(s.flood(Port::Uplink, 42).collect::<Vec<_>>(), vec![Port::Vf(3)]);
        assert_eq!(
            s.forward(Port::Vf(1), &info(m(2), m(7), None)),
            Forward::Drop(SwitchDrop::Spoofed)
        );
        assert_eq!(
            s.forward(Port::Vf(3), &info(m(0), m(3), Some(5))),
            Forward::Drop(SwitchDrop::TaggedOnVlanPort)
        );
        assert_eq!(
            s.forward(Port::Vf(9), &info(m(0), m(9), None)),
            Forward::Drop(SwitchDrop::NoSuchPort)
        );
        // Spoof check off: the VF may send as anyone.
        s.set_port(1, VfPort { mac: m(1), vlan: None, spoof_check: false });
        assert_eq!(s.forward(Port::Vf(1), &info(m(2), m(7), None)), Forward::One(Port::Vf(2)));
        // A MAC change moves the forwarding entry.
        s.set_port(2, VfPort { mac: m(22), vlan: None, spoof_check: true });
        assert_eq!(s.forward(Port::Vf(0), &info(m(2), m(0), None)), Forward::One(Port::Uplink));
        assert_eq!(s.forward(Port::Vf(0), &info(m(22), m(0), None)), Forward::One(Port::Vf(2)));
    }

    #[test]
    fn extra_mac_filters_receive_and_may_send_but_never_steal() {
        let mut s = switch();
        let m = MacAddr::local;
        assert!(s.add_mac_filter(0, m(40)));
        assert!(!s.add_mac_filter(0, m(1)), "VF 1's MAC stays VF 1's");
        assert!(!s.add_mac_filter(9, m(41)));
        assert_eq!(s.forward(Port::Uplink, &info(m(40), m(99), None)), Forward::One(Port::Vf(0)));
        assert_eq!(s.forward(Port::Vf(0), &info(m(1), m(40), None)), Forward::One(Port::Vf(1)));
        assert_eq!(
            s.forward(Port::Vf(2), &info(m(1), m(40), None)),
            Forward::Drop(SwitchDrop::Spoofed)
        );
        // Reconfiguring the port keeps its filters; removing them or the port drops them.
        s.set_port(0, VfPort { mac: m(0), vlan: None, spoof_check: true });
        assert_eq!(s.forward(Port::Uplink, &info(m(40), m(99), None)), Forward::One(Port::Vf(0)));
        s.remove_mac_filter(0, m(40));
        assert_eq!(
            s.forward(Port::Uplink, &info(m(40), m(99), None)),
            Forward::Drop(SwitchDrop::UnknownUnicast)
        );
        // Between two MACs of one VF, the switch relays the frame back (reflective relay).
        assert!(s.add_mac_filter(0, m(42)) && s.add_mac_filter(0, m(43)));
        assert_eq!(s.forward(Port::Vf(0), &info(m(43), m(42), None)), Forward::One(Port::Vf(0)));
        assert_eq!(
            s.forward(Port::Vf(0), &info(m(42), m(42), None)),
            Forward::Drop(SwitchDrop::Hairpin)
        );
        s.remove_mac_filter(0, m(42));
        s.remove_mac_filter(0, m(43));
        assert!(s.add_mac_filter(0, m(41)));
        s.remove_port(0);
        assert!(s.add_mac_filter(1, m(41)), "a removed port's filters are free again");
    }

    #[test]
    fn vepa_sends_everything_up() {
        let mut s = switch();
        let m = MacAddr::local;
        s.set_vepa(true);
        assert_eq!(s.forward(Port::Vf(0), &info(m(1), m(0), None)), Forward::One(Port::Uplink));
        assert_eq!(
            s.forward(Port::Vf(0), &info(MacAddr::BROADCAST, m(0), None)),
            Forward::One(Port::Uplink)
        );
        assert_eq!(
            s.forward(Port::Vf(0), &info(m(1), m(9), None)),
            Forward::Drop(SwitchDrop::Spoofed),
            "the spoof check still applies"
        );
        assert_eq!(s.forward(Port::Uplink, &info(m(1), m(9), None)), Forward::One(Port::Vf(1)));
    }
}
