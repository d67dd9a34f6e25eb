//! The 82576 / I350 VF driver against a model of the VF and of Linux's igb PF driver: the
//! bring-up sequence and its registers, descriptors as the datasheet lays them out, frames
//! through the rings over many laps, and devices and PFs that misbehave. Known answers are
//! written from the datasheet's bit positions and igbvf's mailbox layout, not from the
//! driver's constants.
//!
//! The real thing (a QEMU guest with two igb NICs, the kernel's igb PF driver, VFIO) is
//! `scripts/vfio-lab-test.sh`.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use vnic::abi::regs::RegisterSpace;
use vnic::device::{DmaWindow, Iova};
use vnic::frame::MacAddr;
use vnic::igbvf::{DmaLayout, IgbVf, IgbVfConfig, IgbVfError, MacChoice};
use vnic::ring::SharedRegion;

const IOVA: u64 = 0x4000_0000;

/// What the model PF and VF do, and what they saw.
#[derive(Default)]
struct Model {
    regs: Vec<u32>,
    mailbox: [u32; 16],
    /// Mailbox control bits as the VF reads them.
    control: u32,
    /// Messages the PF received (first words), in order, and their words.
    messages: Vec<Vec<u32>>,
    /// The PF's configuration.
    pf_mac: Option<MacAddr>,
    mac_locked: bool,
    api2: bool,
    refuse_lpe: bool,
    pf_silent: bool,
    reply_to_other: bool,
    rsti_reads: u32,
    rsti_forever: bool,
    reset_seen: bool,
    /// The device's data path.
    dma: Option<DmaWindow>,
    tdh: u32,
    rdh: u32,
    /// Hostile knobs: RX write-backs with this length, without EOP, with errors; TX never done.
    rx_length: Option<u16>,
    rx_no_eop: bool,
    rx_error: bool,
    tx_never_done: bool,
    removed: bool,
    delivered: u64,
}

const V2P: u32 = 0x0C40;
const VMBMEM: u32 = 0x0800;
// V2PMAILBOX bits (82576 datasheet 8.27.x / igbvf mbx.h): REQ 0, ACK 1, VFU 2, PFU 3, PFSTS 4,
// PFACK 5, RSTI 6, RSTD 7.
const REQ: u32 = 1;
const ACK: u32 = 1 << 1;
const VFU: u32 = 1 << 2;
const PFSTS: u32 = 1 << 4;
const PFACK: u32 = 1 << 5;
const RSTI: u32 = 1 << 6;
// Reply bits of a message's first word.
const MSG_ACK: u32 = 1 << 31;
const MSG_NACK: u32 = 1 << 30;
const MSG_CTS: u32 = 1 << 29;

impl Model {
    fn new() -> Self {
        Self { regs: vec![0; 0x4000 / 4], rsti_reads: 2, ..Self::default() }
    }

    fn reg(&self, off: u32) -> u32 {
        self.regs[(off / 4) as usize]
    }

    /// The PF's answer to the message in the buffer, as igb's igb_rcv_msg_from_vf gives it.
    fn pf_answer(&mut self) {
        let words = self.mailbox.to_vec();
        self.messages.push(words.clone());
        self.control |= PFACK;
        if self.pf_silent {
            return;
        }
        let kind = words[0] & 0xffff;
        let mut reply = [0u32; 16];
        let ok = match kind {
            1 => {
                self.reset_seen = true;
                if let Some(m) = self.pf_mac {
                    let (w1, w2) = mac_words_from_bytes(m);
                    reply[1] = w1;
                    reply[2] = w2;
                    true
                } else {
                    false
                }
            }
            2 => !self.mac_locked,
            5 => !self.refuse_lpe,
            8 => self.api2,
            _ => false,
        };
        let kind = if self.reply_to_other { kind + 1 } else { kind };
        reply[0] =
            kind | if ok { MSG_ACK } else { MSG_NACK } | if self.reset_seen { MSG_CTS } else { 0 };
        self.mailbox = reply;
        self.control |= PFSTS;
    }

    fn transmit(&mut self) {
        let Some(dma) = self.dma.clone() else { return };
        let tdt = self.reg(0x3818);
        let depth = self.reg(0x3808) / 16;
        let base = u64::from(self.reg(0x3800)) | (u64::from(self.reg(0x3804)) << 32);
        while self.tdh != tdt && depth > 0 {
            let at = base + u64::from(self.tdh) * 16;
            let mut d = [0u8; 16];
            dma.read(at, &mut d).unwrap();
            let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
            let cmd = u32::from_le_bytes(d[8..12].try_into().unwrap());
            let len = (cmd & 0xffff) as usize;
            let mut frame = vec![0u8; len];
            dma.read(addr, &mut frame).unwrap();
            if !self.tx_never_done {
                // Write-back: DD in the status word (bytes 12..16).
                dma.write(at + 12, &1u32.to_le_bytes()).unwrap();
            }
            self.tdh = (self.tdh + 1) % depth;
            self.receive(&dma, &frame);
        }
    }

    /// Loopback: what the VF sends comes back on its RX ring (VMDq loopback to its own MAC).
    fn receive(&mut self, dma: &DmaWindow, frame: &[u8]) {
        let depth = self.reg(0x2808) / 16;
        let rdt = self.reg(0x2818);
        if depth == 0 || self.rdh == rdt {
            return; // full: dropped
        }
        let base = u64::from(self.reg(0x2800)) | (u64::from(self.reg(0x2804)) << 32);
        let at = base + u64::from(self.rdh) * 16;
        let mut d = [0u8; 16];
        dma.read(at, &mut d).unwrap();
        let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
        dma.write(addr, frame).unwrap();
        // Write-back: pkt_info, rss, status_error (DD bit 0, EOP bit 1, errors 31:20), length.
        let mut status: u32 = 1 | if self.rx_no_eop { 0 } else { 2 };
        if self.rx_error {
            status |= 1 << 31; // RXE
        }
        let len = self.rx_length.unwrap_or(frame.len() as u16);
        let mut wb = [0u8; 16];
        wb[8..12].copy_from_slice(&status.to_le_bytes());
        wb[12..14].copy_from_slice(&len.to_le_bytes());
        dma.write(at, &wb).unwrap();
        self.rdh = (self.rdh + 1) % depth;
        self.delivered += 1;
    }
}

fn mac_words_from_bytes(m: MacAddr) -> (u32, u32) {
    // igbvf copies the six bytes into the message buffer at word 1: little-endian words.
    let b = m.0;
    (
        u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16 | u32::from(b[3]) << 24,
        u32::from(b[4]) | u32::from(b[5]) << 8,
    )
}

#[derive(Clone)]
struct Bar(Rc<RefCell<Model>>);

impl std::fmt::Debug for Bar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bar(model)")
    }
}

impl RegisterSpace for Bar {
    fn read32(&mut self, off: u32) -> u32 {
        let mut m = self.0.borrow_mut();
        if m.removed {
            return u32::MAX;
        }
        match off {
            V2P => {
                let mut v = m.control;
                if m.rsti_forever || m.rsti_reads > 0 {
                    v |= RSTI;
                    m.rsti_reads = m.rsti_reads.saturating_sub(1);
                }
                // PFSTS, PFACK and RSTD clear on read.
                m.control &= !(PFSTS | PFACK | (1 << 7));
                v
            }
            o if (VMBMEM..VMBMEM + 64).contains(&o) => m.mailbox[((o - VMBMEM) / 4) as usize],
            0x3810 => m.tdh,
            0x2810 => m.rdh,
            o if (o as usize) < m.regs.len() * 4 => m.reg(o),
            _ => u32::MAX,
        }
    }

    fn write32(&mut self, off: u32, value: u32) {
        let mut m = self.0.borrow_mut();
        if m.removed {
            return;
        }
        match off {
            V2P => {
                if value & VFU != 0 {
                    m.control |= VFU;
                }
                if value & REQ != 0 {
                    m.control &= !VFU;
                    m.pf_answer();
                }
                if value & ACK != 0 {
                    m.control &= !VFU;
                }
            }
            o if (VMBMEM..VMBMEM + 64).contains(&o) => {
                m.mailbox[((o - VMBMEM) / 4) as usize] = value
            }
            o if (o as usize) < m.regs.len() * 4 => {
                m.regs[(o / 4) as usize] = value;
                match o {
                    0x3810 => m.tdh = value,
                    0x2810 => m.rdh = value,
                    0x3818 => m.transmit(),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

struct Rig {
    model: Rc<RefCell<Model>>,
    dma: DmaWindow,
}

fn rig(configure: impl FnOnce(&mut Model)) -> Rig {
    let layout = DmaLayout::new(64).unwrap();
    let region = Arc::new(SharedRegion::anonymous(layout.bytes).unwrap());
    let dma = DmaWindow::new(region, Iova(IOVA));
    let mut m = Model::new();
    m.dma = Some(dma.clone());
    configure(&mut m);
    Rig { model: Rc::new(RefCell::new(m)), dma }
}

fn config(mac: MacChoice) -> IgbVfConfig {
    IgbVfConfig { depth: 64, mailbox_timeout: Duration::from_millis(50), ..IgbVfConfig::new(mac) }
}

const OURS: MacAddr = MacAddr([0x02, 0x76, 0x00, 0x01, 0x10, 0x02]);

fn open(r: &Rig, mac: MacChoice) -> Result<IgbVf<Bar>, IgbVfError> {
    IgbVf::open(Bar(r.model.clone()), r.dma.clone(), config(mac))
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    f[..6].copy_from_slice(&OURS.0);
    f
}

#[test]
fn bring_up_is_igbvf_s_sequence_and_programs_the_rings() {
    let r = rig(|_| {});
    let vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
    let m = r.model.borrow();
    let kinds: Vec<u32> = m.messages.iter().map(|w| w[0]).collect();
    // VF_RESET (1), API_NEGOTIATE (8) for API 2.0 (enum value 1), SET_MAC_ADDR (2), SET_LPE (5).
    assert_eq!(kinds, [1, 8, 2, 5]);
    assert_eq!(m.messages[1][1], 1, "API 2.0 asked for");
    // The MAC's bytes in words 1 and 2, little-endian: 02 76 00 01 | 10 02.
    assert_eq!(m.messages[2][1], 0x0100_7602);
    assert_eq!(m.messages[2][2], 0x0000_0210);
    assert_eq!(m.messages[3][1], 1518, "1500-byte MTU + 14 header + 4 FCS");
    assert_eq!(vf.mac(), OURS);
    assert_eq!(vf.bring_up().assigned_mac, None, "the model PF NACKs the reset: no MAC of its own");
    assert_eq!(vf.bring_up().api, 0, "NACK to API_NEGOTIATE: API 1.0");
    // Interrupts masked: EIMC (0x1528) gets the three causes.
    assert_eq!(m.reg(0x1528), 0b111);
    // CTRL.RST is bit 26.
    assert_eq!(m.reg(0x0000), 1 << 26);
    // TX ring at the window's start, RX after the TX ring's page: 64 × 16 bytes each.
    assert_eq!(m.reg(0x3800), IOVA as u32);
    assert_eq!(m.reg(0x3804), (IOVA >> 32) as u32);
    assert_eq!(m.reg(0x3808), 64 * 16);
    assert_eq!(m.reg(0x2800), (IOVA + 4096) as u32);
    assert_eq!(m.reg(0x2808), 64 * 16);
    // SRRCTL: 2 KiB buffers (BSIZEPKT = 2), one-buffer advanced descriptors (DESCTYPE 001b at
    // bits 27:25), drop when no descriptor (bit 31).
    assert_eq!(m.reg(0x280C), 2 | 1 << 25 | 1 << 31);
    // Both queues enabled (bit 25); every RX slot but one posted.
    assert_eq!(m.reg(0x3828), 1 << 25);
    assert_eq!(m.reg(0x2828), 1 << 25);
    assert_eq!(m.reg(0x2818), 63);
    // Each posted RX descriptor: its buffer's address, and 0 in the header word (DD clear).
    let mut d = [0u8; 16];
    r.dma.read(IOVA + 4096 + 5 * 16, &mut d).unwrap();
    let rx_bufs = IOVA + 2 * 4096 + 64 * 2048;
    assert_eq!(u64::from_le_bytes(d[..8].try_into().unwrap()), rx_bufs + 5 * 2048);
    assert_eq!(&d[8..], &[0; 8]);
}

#[test]
fn a_tx_descriptor_is_the_datasheet_s_advanced_data_descriptor() {
    // The model leaves the descriptor as the driver wrote it (no write-back).
    let r = rig(|m| m.tx_never_done = true);
    let mut vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
    let f = frame(60, 0);
    assert_eq!(vf.send_burst(&[&f]), 1);
    let mut d = [0u8; 16];
    r.dma.read(IOVA, &mut d).unwrap();
    let tx_bufs = IOVA + 2 * 4096;
    assert_eq!(u64::from_le_bytes(d[..8].try_into().unwrap()), tx_bufs);
    // DTYP = 0011b at bits 23:20 (data), DCMD at 31:24: DEXT bit 29, RS bit 27, IFCS bit 25,
    // EOP bit 24; DTALEN in 15:0.
    let cmd = u32::from_le_bytes(d[8..12].try_into().unwrap());
    assert_eq!(cmd, 0b0011 << 20 | 1 << 29 | 1 << 27 | 1 << 25 | 1 << 24 | 60);
    // PAYLEN at bits 31:14 of olinfo_status, DD (bit 0) clear until the device writes back.
    let olinfo = u32::from_le_bytes(d[12..16].try_into().unwrap());
    assert_eq!(olinfo, 60 << 14);
    assert_eq!(vf.reap_tx(), 0, "not done");
    r.dma.write(IOVA + 12, &1u32.to_le_bytes()).unwrap();
    assert_eq!(vf.reap_tx(), 1, "DD written back: done");
    assert_eq!(r.model.borrow().reg(0x3818), 1, "TDT: one past the descriptor");
}

#[test]
fn frames_of_every_size_come_back_byte_exact_over_many_laps() {
    let r = rig(|_| {});
    let mut vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
    let sizes = [60, 61, 127, 128, 511, 1024, 1513, 1514];
    let mut got = Vec::new();
    let mut sent = 0u64;
    for lap in 0..40u8 {
        let frames: Vec<Vec<u8>> =
            (0..24).map(|k| frame(sizes[k % sizes.len()], lap ^ k as u8)).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert_eq!(vf.send_burst(&refs), 24, "lap {lap}");
        sent += 24;
        assert_eq!(vf.reap_tx(), 24);
        let mut this = Vec::new();
        vf.recv(|f| this.push(f.to_vec()));
        assert_eq!(this, frames, "lap {lap}: byte for byte, in order");
        got.extend(this);
    }
    let c = vf.counters();
    assert_eq!((c.tx_frames, c.tx_completed, c.rx_frames), (sent, sent, sent));
    let bytes: u64 = got.iter().map(|f| f.len() as u64).sum();
    assert_eq!((c.tx_bytes, c.rx_bytes), (bytes, bytes));
    assert_eq!((c.rx_errors, c.rx_malformed, c.tx_refused), (0, 0, 0));
    assert!(sent > 10 * 64, "the rings wrapped many times");
}

#[test]
fn the_pf_s_assigned_mac_is_taken_and_a_locked_one_is_refused_by_name() {
    let theirs = MacAddr([0x02, 0xaa, 0, 0, 0, 7]);
    let r = rig(|m| m.pf_mac = Some(theirs));
    let vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
    assert_eq!(vf.mac(), theirs);
    assert_eq!(vf.bring_up().assigned_mac, Some(theirs));
    let kinds: Vec<u32> = r.model.borrow().messages.iter().map(|w| w[0]).collect();
    assert_eq!(kinds, [1, 8, 5], "no SET_MAC_ADDR when the PF assigned one");
    drop(vf);

    let r = rig(|m| {
        m.pf_mac = Some(theirs);
        m.mac_locked = true;
    });
    let e = open(&r, MacChoice::Exactly(OURS)).unwrap_err();
    assert!(
        matches!(e, IgbVfError::MacRefused { asked, assigned: Some(a) } if asked == OURS && a == theirs)
    );
    let text = e.to_string();
    assert!(text.contains("02:76:00:01:10:02") && text.contains("ip link set"), "{text}");
}

#[test]
fn api_2_0_is_used_when_the_pf_offers_it() {
    let r = rig(|m| m.api2 = true);
    assert_eq!(open(&r, MacChoice::PfOr(OURS)).unwrap().bring_up().api, 1);
}

#[test]
fn a_silent_pf_a_stuck_reset_and_a_wrong_reply_are_errors_that_say_what_to_do() {
    let r = rig(|m| m.pf_silent = true);
    let e = open(&r, MacChoice::PfOr(OURS)).unwrap_err();
    assert!(matches!(e, IgbVfError::Mailbox { step: "VF_RESET", .. }), "{e}");
    assert!(e.to_string().contains("ip link set <pf-netdev> up"), "{e}");

    let r = rig(|m| m.rsti_forever = true);
    let e = open(&r, MacChoice::PfOr(OURS)).unwrap_err();
    assert!(matches!(e, IgbVfError::StuckInReset(_)), "{e}");
    assert!(e.to_string().contains("ip link set"), "{e}");

    let r = rig(|m| m.reply_to_other = true);
    let e = open(&r, MacChoice::PfOr(OURS)).unwrap_err();
    assert!(e.to_string().contains("replied 0x"), "{e}");

    let r = rig(|m| m.refuse_lpe = true);
    assert!(matches!(open(&r, MacChoice::PfOr(OURS)), Err(IgbVfError::LargeFramesRefused(1518))));
}

#[test]
fn a_removed_device_reading_all_ones_fails_the_bring_up_without_hanging() {
    let r = rig(|m| m.removed = true);
    assert!(open(&r, MacChoice::PfOr(OURS)).is_err());
}

#[test]
fn hostile_rx_write_backs_are_counted_and_dropped_and_the_ring_goes_on() {
    for (what, knob) in [
        (
            "a length beyond the buffer",
            &(|m: &mut Model| m.rx_length = Some(0xffff)) as &dyn Fn(&mut Model),
        ),
        ("a zero length", &|m: &mut Model| m.rx_length = Some(0)),
        ("no end of packet", &|m: &mut Model| m.rx_no_eop = true),
    ] {
        let r = rig(|_| {});
        let mut vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
        knob(&mut r.model.borrow_mut());
        let f = frame(100, 1);
        for _ in 0..3 {
            assert_eq!(vf.send_burst(&[&f]), 1);
        }
        let mut handed_up = 0;
        vf.recv(|_| handed_up += 1);
        assert_eq!(handed_up, 0, "{what}: nothing handed up");
        assert_eq!(vf.counters().rx_malformed, 3, "{what}");
        // The device behaves again: frames flow, every buffer went back to the ring.
        {
            let mut m = r.model.borrow_mut();
            m.rx_length = None;
            m.rx_no_eop = false;
        }
        let mut n = 0;
        for lap in 0..3 {
            let frames: Vec<Vec<u8>> = (0..40).map(|k| frame(64 + k, lap)).collect();
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            assert_eq!(vf.send_burst(&refs), 40);
            vf.reap_tx();
            // A chain cut short discards up to its end: the first good frame after a frame
            // without EOP is taken as that end (and counted), the rest arrive.
            vf.recv(|f| {
                assert_eq!(&f[..6], &OURS.0);
                n += 1;
            });
        }
        assert!(n >= 119, "{what}: {n} of 120 after the device recovered");
    }

    let r = rig(|_| {});
    let mut vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
    r.model.borrow_mut().rx_error = true;
    let f = frame(100, 1);
    vf.send_burst(&[&f, &f]);
    let mut handed_up = 0;
    vf.recv(|_| handed_up += 1);
    assert_eq!((handed_up, vf.counters().rx_errors), (0, 2), "RXE set: dropped as an error");
}

#[test]
fn a_device_that_never_completes_tx_fills_the_ring_and_no_more() {
    let r = rig(|m| m.tx_never_done = true);
    let mut vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
    let f = frame(200, 3);
    let burst: Vec<&[u8]> = (0..32).map(|_| f.as_slice()).collect();
    let mut taken = 0;
    for _ in 0..4 {
        taken += vf.send_burst(&burst);
        vf.reap_tx();
    }
    assert_eq!(taken, 63, "a ring of 64 holds 63 in flight");
    assert_eq!(vf.tx_in_flight(), 63);
    assert_eq!(vf.counters().tx_refused, 128 - 63);
    assert_eq!(vf.counters().tx_completed, 0);
    // Empty and oversized frames are refused too.
    let big = vec![0u8; 2045];
    let r = rig(|_| {});
    let mut vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
    assert_eq!(vf.send_burst(&[&[]]), 0);
    assert_eq!(vf.send_burst(&[&big]), 0);
}

#[test]
fn releasing_the_driver_stops_both_queues_and_resets_the_vf() {
    let r = rig(|_| {});
    let vf = open(&r, MacChoice::PfOr(OURS)).unwrap();
    r.model.borrow_mut().regs[0] = 0;
    drop(vf);
    let m = r.model.borrow();
    assert_eq!(m.reg(0x2828) & (1 << 25), 0, "RXDCTL disabled");
    assert_eq!(m.reg(0x3828) & (1 << 25), 0, "TXDCTL disabled");
    assert_eq!(m.reg(0x0000), 1 << 26, "CTRL.RST");
}

#[test]
fn bad_configurations_are_refused_before_the_device_is_touched() {
    let r = rig(|_| {});
    let mk = |c: IgbVfConfig| IgbVf::open(Bar(r.model.clone()), r.dma.clone(), c);
    assert!(matches!(
        mk(IgbVfConfig { depth: 12, ..config(MacChoice::PfOr(OURS)) }),
        Err(IgbVfError::BadDepth(12))
    ));
    assert!(matches!(
        mk(IgbVfConfig { depth: 8192, ..config(MacChoice::PfOr(OURS)) }),
        Err(IgbVfError::BadDepth(8192))
    ));
    assert!(matches!(
        mk(IgbVfConfig { depth: 128, ..config(MacChoice::PfOr(OURS)) }),
        Err(IgbVfError::SmallDma { .. })
    ));
    assert!(matches!(
        mk(IgbVfConfig { max_frame: 9018, ..config(MacChoice::PfOr(OURS)) }),
        Err(IgbVfError::FrameTooLarge(9018))
    ));
    let odd = DmaWindow::new(r.dma.region().clone(), Iova(IOVA + 64));
    assert!(matches!(
        IgbVf::open(Bar(r.model.clone()), odd, config(MacChoice::PfOr(OURS))),
        Err(IgbVfError::Misaligned(_))
    ));
    assert!(r.model.borrow().messages.is_empty(), "no message was sent");
}
