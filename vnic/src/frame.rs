//! Checked views of the frames the device forwards: Ethernet (with an optional 802.1Q tag), and
//! the IPv4 / TCP / UDP fields that RSS, the switch and the shaper need.
//!
//! As in smoltcp, field byte ranges live in one place (`mod field`), and [`FrameInfo::parse`]
//! validates lengths before it reads anything: a frame from a guest is untrusted, and a short or
//! malformed one is an error, never a panic or an out-of-bounds read.

use std::fmt;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for broadcast and multicast addresses (group bit set).
    pub fn is_group(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// True for a unicast address other than 00:00:00:00:00:00: one a NIC may own.
    pub fn is_unicast_assigned(&self) -> bool {
        !self.is_group() && self.0 != [0; 6]
    }

    /// A locally administered unicast address derived from `n`, as a PF assigns to its VFs.
    pub fn local(n: u32) -> Self {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x56, b[0], b[1], b[2], b[3]])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// EtherTypes the device understands.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// Byte ranges of the headers.
pub mod field {
    use std::ops::Range;
    /// Ethernet destination.
    pub const DST: Range<usize> = 0..6;
    /// Ethernet source.
    pub const SRC: Range<usize> = 6..12;
    /// EtherType (or TPID of a VLAN tag).
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Untagged Ethernet header length.
    pub const ETH_LEN: usize = 14;
    /// 802.1Q tag control information, after the TPID.
    pub const VLAN_TCI: Range<usize> = 14..16;
    /// The inner EtherType of a tagged frame.
    pub const VLAN_ETHERTYPE: Range<usize> = 16..18;
    /// Tagged Ethernet header length.
    pub const VLAN_ETH_LEN: usize = 18;
    /// IPv4: version and IHL byte, offset in the IP header.
    pub const IP_VHL: usize = 0;
    /// IPv4 protocol.
    pub const IP_PROTO: usize = 9;
    /// IPv4 source.
    pub const IP_SRC: Range<usize> = 12..16;
    /// IPv4 destination.
    pub const IP_DST: Range<usize> = 16..20;
    /// IPv4 minimum header.
    pub const IP_MIN_LEN: usize = 20;
    /// TCP/UDP source port, offset in the L4 header.
    pub const L4_SPORT: Range<usize> = 0..2;
    /// TCP/UDP destination port.
    pub const L4_DPORT: Range<usize> = 2..4;
    /// TCP sequence number.
    pub const TCP_SEQ: Range<usize> = 4..8;
    /// TCP acknowledgement number.
    pub const TCP_ACK: Range<usize> = 8..12;
    /// TCP data offset (header length in 32-bit words, high nibble).
    pub const TCP_DATA_OFFSET: usize = 12;
    /// TCP flags.
    pub const TCP_FLAGS: usize = 13;
    /// TCP receive window.
    pub const TCP_WINDOW: Range<usize> = 14..16;
    /// TCP header without options.
    pub const TCP_MIN_LEN: usize = 20;
    /// UDP header.
    pub const UDP_LEN: usize = 8;
    /// ICMP echo identifier.
    pub const ICMP_ID: Range<usize> = 4..6;
}

/// TCP header flags (byte 13 of the TCP header).
pub mod tcp_flags {
    /// FIN: the sender has no more data.
    pub const FIN: u8 = 0x01;
    /// SYN: synchronise sequence numbers (opens a connection).
    pub const SYN: u8 = 0x02;
    /// RST: reset the connection (a closed port answers a SYN with it).
    pub const RST: u8 = 0x04;
    /// PSH: push the data to the application.
    pub const PSH: u8 = 0x08;
    /// ACK: the acknowledgement number is valid.
    pub const ACK: u8 = 0x10;
}

/// IP protocol numbers the frame builders write.
pub mod ip_proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// Why a frame could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than an Ethernet header.
    #[error("frame of {0} bytes is shorter than an Ethernet header")]
    Truncated(usize),
    /// An IPv4 header that does not fit or is not version 4.
    #[error("malformed IPv4 header")]
    BadIpv4,
}

/// The IPv4 and L4 fields of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Protocol.
    pub protocol: u8,
    /// Source and destination ports, for TCP and UDP with a whole port field.
    pub ports: Option<(u16, u16)>,
    /// TCP flags (byte 13 of the TCP header), 0 for other protocols or a short header.
    pub tcp_flags: u8,
    /// ICMP type, code and identifier (bytes 0, 1 and 4..6 of the ICMP header).
    pub icmp: Option<(u8, u8, u16)>,
}

/// What the device needs to know of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Ethernet destination.
    pub dst: MacAddr,
    /// Ethernet source.
    pub src: MacAddr,
    /// VLAN id (12 bits), if tagged.
    pub vlan: Option<u16>,
    /// The payload's EtherType.
    pub ethertype: u16,
    /// IPv4 fields, if IPv4 and well formed.
    pub ipv4: Option<Ipv4Info>,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

impl FrameInfo {
    /// Parses the headers of `frame`.
    ///
    /// Inline: as a call it returns its 40-odd-byte answer through memory, written field by
    /// field and read back in wider words, which the store buffer cannot forward (a fifth of the
    /// engine's `serve_vf` samples waited on that load).
    #[inline(always)]
    pub fn parse(frame: &[u8]) -> Result<Self, FrameError> {
        if frame.len() < field::ETH_LEN {
            return Err(FrameError::Truncated(frame.len()));
        }
        let mac = |r: std::ops::Range<usize>| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&frame[r]);
            MacAddr(m)
        };
        let (dst, src) = (mac(field::DST), mac(field::SRC));
        let mut ethertype = be16(&frame[field::ETHERTYPE]);
        let mut l3 = field::ETH_LEN;
        let mut vlan = None;
        if ethertype == ethertype::VLAN {
            if frame.len() < field::VLAN_ETH_LEN {
                return Err(FrameError::Truncated(frame.len()));
            }
            vlan = Some(be16(&frame[field::VLAN_TCI]) & 0x0fff);
            ethertype = be16(&frame[field::VLAN_ETHERTYPE]);
            l3 = field::VLAN_ETH_LEN;
        }
        let ipv4 =
            if ethertype == ethertype::IPV4 { Some(parse_ipv4(&frame[l3..])?) } else { None };
        Ok(Self { dst, src, vlan, ethertype, ipv4 })
    }
}

#[inline(always)]
fn parse_ipv4(ip: &[u8]) -> Result<Ipv4Info, FrameError> {
    if ip.len() < field::IP_MIN_LEN || ip[field::IP_VHL] >> 4 != 4 {
        return Err(FrameError::BadIpv4);
    }
    let ihl = usize::from(ip[field::IP_VHL] & 0x0f) * 4;
    if ihl < field::IP_MIN_LEN || ip.len() < ihl {
        return Err(FrameError::BadIpv4);
    }
    let addr = |r: std::ops::Range<usize>| {
        [ip[r.start], ip[r.start + 1], ip[r.start + 2], ip[r.start + 3]]
    };
    let protocol = ip[field::IP_PROTO];
    let l4 = &ip[ihl..];
    let ports = (matches!(protocol, 6 | 17) && l4.len() >= field::L4_DPORT.end)
        .then(|| (be16(&l4[field::L4_SPORT]), be16(&l4[field::L4_DPORT])));
    let tcp_flags = match (protocol, l4.get(field::TCP_FLAGS)) {
        (6, Some(&f)) => f,
        _ => 0,
    };
    let icmp = (protocol == 1 && l4.len() >= field::ICMP_ID.end)
        .then(|| (l4[0], l4[1], be16(&l4[field::ICMP_ID])));
    Ok(Ipv4Info {
        src: addr(field::IP_SRC),
        dst: addr(field::IP_DST),
        protocol,
        ports,
        tcp_flags,
        icmp,
    })
}

/// The Internet checksum (RFC 1071) of an IPv4 header whose checksum field is zero: the one's
/// complement of the one's complement sum of its 16-bit words. Over a header that carries its
/// checksum the same sum gives 0.
pub fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes the Ethernet and IPv4 headers of an untagged frame of `len` bytes carrying `l4_len`
/// bytes of protocol `protocol` (the rest, up to `len`, is Ethernet padding), with its header
/// checksum, and returns the L4 part.
fn write_eth_ipv4(
    f: &mut [u8],
    l4_len: usize,
    dst: MacAddr,
    src: MacAddr,
    ips: ([u8; 4], [u8; 4]),
    protocol: u8,
) -> &mut [u8] {
    f.fill(0);
    f[field::DST].copy_from_slice(&dst.0);
    f[field::SRC].copy_from_slice(&src.0);
    f[field::ETHERTYPE].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    let ip = &mut f[field::ETH_LEN..];
    ip[field::IP_VHL] = 0x45;
    ip[2..4].copy_from_slice(&((field::IP_MIN_LEN + l4_len) as u16).to_be_bytes());
    ip[8] = 64;
    ip[field::IP_PROTO] = protocol;
    ip[field::IP_SRC].copy_from_slice(&ips.0);
    ip[field::IP_DST].copy_from_slice(&ips.1);
    let checksum = ipv4_header_checksum(&ip[..field::IP_MIN_LEN]);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    &mut ip[field::IP_MIN_LEN..]
}

/// Ethernet, IPv4 and UDP headers.
pub const UDP_HEADERS: usize = field::ETH_LEN + field::IP_MIN_LEN + field::UDP_LEN;

/// Ethernet, IPv4 and option-less TCP headers.
pub const TCP_HEADERS: usize = field::ETH_LEN + field::IP_MIN_LEN + field::TCP_MIN_LEN;

/// Shortest Ethernet frame without its FCS: shorter frames are padded to it.
pub const ETH_MIN_FRAME: usize = 60;

/// Writes an Ethernet + IPv4 + UDP frame of `len` bytes (at least 42) into `buf`, for tests,
/// demos and benchmarks. Returns the frame. The IPv4 header carries its checksum; the UDP
/// checksum is 0, which over IPv4 means "none" (RFC 768), as a sender leaving it to checksum
/// offload would put on the wire.
pub fn build_udp_frame(
    buf: &mut [u8],
    len: usize,
    dst: MacAddr,
    src: MacAddr,
    ips: ([u8; 4], [u8; 4]),
    ports: (u16, u16),
) -> &mut [u8] {
    let len = len.max(UDP_HEADERS).min(buf.len());
    let f = &mut buf[..len];
    if len < UDP_HEADERS {
        f.fill(0);
        return f;
    }
    let l4_len = len - field::ETH_LEN - field::IP_MIN_LEN;
    let udp = write_eth_ipv4(f, l4_len, dst, src, ips, ip_proto::UDP);
    udp[field::L4_SPORT].copy_from_slice(&ports.0.to_be_bytes());
    udp[field::L4_DPORT].copy_from_slice(&ports.1.to_be_bytes());
    udp[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    f
}

/// Writes an Ethernet + IPv4 + TCP segment into `buf`: a 20-byte TCP header (no options) with
/// `flags`, sequence and acknowledgement numbers `seq_ack` and a 65,535-byte window, then
/// `payload` bytes of zeros. The frame is `TCP_HEADERS + payload` bytes, padded to
/// [`ETH_MIN_FRAME`] (the IPv4 total length excludes the padding, as on a wire). The TCP
/// checksum is left 0, as a sender leaving it to checksum offload hands it to its NIC. Returns
/// the frame, or `None` if `buf` is too short for it.
#[allow(clippy::too_many_arguments)]
pub fn build_tcp_frame(
    buf: &mut [u8],
    payload: usize,
    dst: MacAddr,
    src: MacAddr,
    ips: ([u8; 4], [u8; 4]),
    ports: (u16, u16),
    seq_ack: (u32, u32),
    flags: u8,
) -> Option<&mut [u8]> {
    let len = (TCP_HEADERS + payload).max(ETH_MIN_FRAME);
    let f = buf.get_mut(..len)?;
    let tcp = write_eth_ipv4(f, field::TCP_MIN_LEN + payload, dst, src, ips, ip_proto::TCP);
    tcp[field::L4_SPORT].copy_from_slice(&ports.0.to_be_bytes());
    tcp[field::L4_DPORT].copy_from_slice(&ports.1.to_be_bytes());
    tcp[field::TCP_SEQ].copy_from_slice(&seq_ack.0.to_be_bytes());
    tcp[field::TCP_ACK].copy_from_slice(&seq_ack.1.to_be_bytes());
    tcp[field::TCP_DATA_OFFSET] = ((field::TCP_MIN_LEN / 4) as u8) << 4;
    tcp[field::TCP_FLAGS] = flags;
    tcp[field::TCP_WINDOW].copy_from_slice(&u16::MAX.to_be_bytes());
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine decides on a frame's first [`crate::device::HEADER_BYTES`] and only moves the
    /// rest, so parsing them must give what parsing the whole frame gives. The deepest byte the
    /// parser reads: 18 of Ethernet with a VLAN tag, an IPv4 header of 15 words (60 bytes), then
    /// TCP's flags, the 14th byte: 92.
    #[test]
    fn the_engines_header_bytes_hold_everything_parse_reads() {
        const DEEPEST: usize = 18 + 15 * 4 + 14;
        const { assert!(DEEPEST <= crate::device::HEADER_BYTES) };
        let mut f = vec![0u8; crate::device::COPY_ONCE_MIN];
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f[14..16].copy_from_slice(&42u16.to_be_bytes());
        f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
        f[18] = 0x4f; // version 4, 15 words
        f[18 + 9] = 6; // TCP
        f[DEEPEST - 1] = 0x12; // SYN and ACK
        let whole = FrameInfo::parse(&f).unwrap();
        assert_eq!(whole.ipv4.unwrap().tcp_flags, 0x12);
        assert_eq!(FrameInfo::parse(&f[..crate::device::HEADER_BYTES]).unwrap(), whole);
        // One byte fewer and the flags are out of reach: DEEPEST is the real bound.
        assert_ne!(FrameInfo::parse(&f[..DEEPEST - 1]).unwrap(), whole);
    }

    proptest::proptest! {
        /// Any bytes at all (with the EtherTypes and IP version that make the parser go deep):
        /// the header alone parses as the whole frame does.
        #[test]
        fn parsing_the_header_bytes_is_parsing_the_frame(
            mut f in proptest::collection::vec(proptest::num::u8::ANY, crate::device::COPY_ONCE_MIN..1600),
            tagged: bool,
            ihl in 0u8..16,
            protocol in proptest::sample::select(vec![1u8, 6, 17, 47]),
        ) {
            let l3 = if tagged {
                f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
                18
            } else {
                f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                14
            };
            f[l3] = 0x40 | ihl;
            f[l3 + 9] = protocol;
            let head = FrameInfo::parse(&f[..crate::device::HEADER_BYTES]);
            proptest::prop_assert_eq!(head, FrameInfo::parse(&f));
        }
    }

    #[test]
    fn parses_what_it_builds() {
        let mut buf = [0u8; 1514];
        let f = build_udp_frame(
            &mut buf,
            1500,
            MacAddr::local(2),
            MacAddr::local(1),
            ([10, 0, 0, 1], [10, 0, 0, 2]),
            (4000, 53),
        );
        let info = FrameInfo::parse(f).unwrap();
        assert_eq!(info.dst, MacAddr::local(2));
        assert_eq!(info.src.to_string(), "02:56:00:00:00:01");
        assert_eq!(info.vlan, None);
        let ip = info.ipv4.unwrap();
        assert_eq!(
            (ip.src, ip.dst, ip.protocol, ip.ports),
            ([10, 0, 0, 1], [10, 0, 0, 2], 17, Some((4000, 53)))
        );
    }

    /// A TCP segment as RFC 793 lays it out: after 14 bytes of Ethernet and 20 of IPv4, ports at
    /// 34 and 36, the sequence number at 38, the acknowledgement at 42, the data offset (5 words)
    /// at 46, the flags at 47, the window at 48; a header-only segment is padded to 60 bytes but
    /// its IPv4 total length says 40.
    #[test]
    fn tcp_segments_are_laid_out_as_rfc_793_says() {
        let mut buf = [0u8; 1514];
        let syn = tcp_flags::SYN;
        let f = build_tcp_frame(
            &mut buf,
            0,
            MacAddr::local(2),
            MacAddr::local(1),
            ([10, 0, 2, 4], [10, 0, 3, 4]),
            (40_000, 5432),
            (0x0102_0304, 0),
            syn,
        )
        .unwrap();
        assert_eq!(f.len(), 60);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 40, "IPv4 total length");
        assert_eq!(f[23], 6);
        assert_eq!(&f[34..38], &[0x9c, 0x40, 0x15, 0x38]);
        assert_eq!(&f[38..42], &[1, 2, 3, 4]);
        assert_eq!((f[46], f[47]), (0x50, 0x02));
        assert_eq!(&f[48..50], &[0xff, 0xff]);
        assert_eq!(ipv4_header_checksum(&f[14..34]), 0);
        let ip = FrameInfo::parse(f).unwrap().ipv4.unwrap();
        assert_eq!((ip.protocol, ip.ports, ip.tcp_flags), (6, Some((40_000, 5432)), syn));
        let data = build_tcp_frame(
            &mut buf,
            1446,
            MacAddr::local(2),
            MacAddr::local(1),
            ([10, 0, 2, 4], [10, 0, 3, 4]),
            (40_000, 5432),
            (1, 1),
            tcp_flags::PSH | tcp_flags::ACK,
        )
        .unwrap();
        assert_eq!(data.len(), 1500);
        assert_eq!(u16::from_be_bytes([data[16], data[17]]), 1486);
        assert!(
            build_tcp_frame(
                &mut buf[..100],
                100,
                MacAddr::local(2),
                MacAddr::local(1),
                ([0; 4], [0; 4]),
                (1, 2),
                (0, 0),
                0
            )
            .is_none()
        );
    }

    #[test]
    fn ipv4_headers_carry_their_checksum() {
        // The worked example of RFC 1071's method that every textbook uses: 192.168.0.1 to
        // 192.168.0.199, total length 0x73, DF, TTL 64, UDP: checksum 0xb861.
        let header: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&header), 0xb861);
        let mut buf = [0u8; 1514];
        for len in [42, 64, 1500, 1514] {
            let f = build_udp_frame(
                &mut buf,
                len,
                MacAddr::local(2),
                MacAddr::local(1),
                ([10, 0, 0, 1], [10, 0, 0, 2]),
                (4000, 53),
            );
            // A header with its checksum in place sums to 0xffff: its checksum is 0.
            assert_eq!(ipv4_header_checksum(&f[14..34]), 0, "len {len}");
        }
    }

    #[test]
    fn vlan_tags_and_malformed_frames() {
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        f[14..16].copy_from_slice(&0x2064u16.to_be_bytes());
        f[16..18].copy_from_slice(&ethertype::ARP.to_be_bytes());
        let info = FrameInfo::parse(&f).unwrap();
        assert_eq!((info.vlan, info.ethertype, info.ipv4), (Some(0x064), ethertype::ARP, None));
        assert!(info.dst.is_group() && !MacAddr::local(9).is_group());
        assert_eq!(FrameInfo::parse(&f[..10]), Err(FrameError::Truncated(10)));
        assert_eq!(FrameInfo::parse(&f[..16]), Err(FrameError::Truncated(16)));
        f[16..18].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        f[18] = 0x4f; // IHL 60 bytes, more than the 46 left
        assert_eq!(FrameInfo::parse(&f), Err(FrameError::BadIpv4));
        f[18] = 0x65; // version 6 in an IPv4 ethertype
        assert_eq!(FrameInfo::parse(&f), Err(FrameError::BadIpv4));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut buf = [0u8; 128];
        for len in 0..128 {
            for _ in 0..200 {
                for b in buf.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                let ty = [ethertype::IPV4, ethertype::VLAN, ethertype::IPV6][(x % 3) as usize];
                buf[12..14].copy_from_slice(&ty.to_be_bytes());
                if ty == ethertype::VLAN {
                    buf[16..18].copy_from_slice(&ethertype::IPV4.to_be_bytes());
                }
                let _ = FrameInfo::parse(&buf[..len]);
            }
        }
    }
}
