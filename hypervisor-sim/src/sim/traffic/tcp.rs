//! TCP connections of a simulated flow: enough TCP for what security groups track and what a user
//! sees, no congestion control (data is paced at the offered rate).
//!
//! - **Open**: the client sends a SYN from its ephemeral port. Unanswered, it sends it again
//!   after the retransmission timeout, 1 s at first (RFC 6298's initial RTO, Linux's
//!   `TCP_TIMEOUT_INIT`) and doubling, `syn_retries` times (Linux's `net.ipv4.tcp_syn_retries`,
//!   6 by default), then gives up: after 1 + 2 + 4 + … + 2^retries s, 127 s for Linux's 6, the
//!   application sees **a timeout**. That is what a security group or NACL dropping the SYN (or
//!   the SYN-ACK) looks like.
//! - **Answer**: a server listening on the port answers every SYN with a SYN-ACK, and the client
//!   completes the handshake with an ACK; a server with nothing listening answers with RST-ACK,
//!   which the client reports at once as **connection refused**.
//! - **Data**: PSH-ACK segments carrying the flow's stamped payload, at the flow's pace; the
//!   server acknowledges every second segment (delayed ACK), so the reply direction carries
//!   traffic through the security groups' connection tracking and the NACLs' ephemeral rules.
//! - **Close**: when the flow stops the client sends FIN-ACK, the server answers FIN-ACK, the
//!   client's last ACK ends it.
//!
//! Segments are real Ethernet/IPv4/TCP frames ([`vnic::frame::build_tcp_frame`]) through the real
//! rings, filters and engine; sequence and acknowledgement numbers are consistent, so a capture
//! reads as a TCP stream.

use vnic::frame::{MacAddr, build_tcp_frame, field, tcp_flags};

/// Initial retransmission timeout of a SYN, ns (RFC 6298 section 2.1: 1 s).
pub const INITIAL_RTO_NS: u64 = 1_000_000_000;

/// Linux's default `net.ipv4.tcp_syn_retries`.
pub const LINUX_SYN_RETRIES: u32 = 6;

/// Most SYN retries a client may be given (Linux caps `tcp_syn_retries` at 127; past 32 the
/// doubling timeout outgrows any run).
pub const MAX_SYN_RETRIES: u32 = 32;

/// Data segments a receiver takes before it acknowledges them (delayed ACK).
pub const SEGMENTS_PER_ACK: u64 = 2;

/// When a client that has had no answer gives up, ns after its first SYN: the sum of the doubling
/// timeouts, `INITIAL_RTO_NS × (2^(retries + 1) − 1)`.
pub fn give_up_after_ns(syn_retries: u32) -> u64 {
    let retries = syn_retries.min(MAX_SYN_RETRIES);
    INITIAL_RTO_NS.saturating_mul((1u64 << (retries + 1)) - 1)
}

/// A TCP flow's connection as its ends behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSpec {
    /// Whether a process listens on the destination port of the receiver.
    pub listening: bool,
    /// SYN retries before the client gives up (Linux: [`LINUX_SYN_RETRIES`]).
    pub syn_retries: u32,
}

/// What became of a connection, as the client's application sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Connect {
    /// Never tried (the flow's start lies past the run, or its sender was stopped first).
    #[default]
    NotTried,
    /// SYNs sent, no answer yet when the run ended.
    Connecting,
    /// The handshake completed.
    Connected,
    /// An RST answered the SYN: nothing listens on the port.
    Refused,
    /// No answer to any SYN: the client gave up.
    TimedOut,
}

/// What a TCP flow's connection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOutcome {
    /// How it ended (or where it stood when the run ended).
    pub connect: Connect,
    /// SYNs the client sent.
    pub syns: u32,
    /// From the first SYN to the SYN-ACK's arrival (connected), the RST's (refused), or the
    /// client giving up (timed out), ns.
    pub answer_ns: Option<u64>,
    /// Pure ACKs the client received for its data.
    pub acks: u64,
    /// Whether the FIN exchange completed.
    pub closed: bool,
}

/// One end: MAC, IPv4 address, port.
#[derive(Debug, Clone, Copy)]
struct End {
    mac: MacAddr,
    ip: [u8; 4],
    port: u16,
}

/// A segment's fields the ends read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub payload: usize,
}

impl Segment {
    /// The TCP fields of an untagged IPv4 frame, if it is TCP.
    pub fn of(frame: &[u8]) -> Option<Self> {
        let ip = frame.get(field::ETH_LEN..)?;
        if *ip.get(field::IP_PROTO)? != vnic::frame::ip_proto::TCP {
            return None;
        }
        let ihl = usize::from(ip.first()? & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
        let tcp = ip.get(ihl..)?;
        let word = |r: std::ops::Range<usize>| -> Option<u32> {
            Some(u32::from_be_bytes(tcp.get(r)?.try_into().ok()?))
        };
        let header = usize::from(tcp.get(field::TCP_DATA_OFFSET)? >> 4) * 4;
        Some(Self {
            flags: *tcp.get(field::TCP_FLAGS)?,
            seq: word(field::TCP_SEQ)?,
            ack: word(field::TCP_ACK)?,
            payload: total.saturating_sub(ihl + header),
        })
    }
}

/// Which end of a connection a VM is, for frames of a (source port, destination port) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// What the client does after a segment from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientStep {
    /// Nothing to send.
    Quiet,
    /// The handshake just completed: the ACK is to send and the data may start.
    Established,
    /// A segment to send (an ACK of a repeated SYN-ACK, or the last ACK of the close).
    Send,
}

fn write(buf: &mut Vec<u8>, from: End, to: End, seq_ack: (u32, u32), flags: u8) {
    buf.clear();
    buf.resize(vnic::frame::ETH_MIN_FRAME, 0);
    let ports = (from.port, to.port);
    let _ = build_tcp_frame(buf, 0, to.mac, from.mac, (from.ip, to.ip), ports, seq_ack, flags);
}

/// The client's end of a connection: its SYNs and their timer, its data's numbers, its FIN,
/// and what became of it. Owned by whoever drives the sender (the simulation, or the client
/// VM's thread in a live run).
#[derive(Debug, Clone)]
pub struct Client {
    me: End,
    server: End,
    syn_retries: u32,
    isn: u32,
    /// The server's first sequence number past its SYN, once it has answered.
    server_next: u32,
    /// Payload bytes per data segment.
    payload: usize,
    first_syn_at: Option<u64>,
    fin_sent: bool,
    pub(crate) out: TcpOutcome,
}

/// The server's end: it answers SYNs (SYN-ACK, or RST-ACK if nothing listens), acknowledges
/// every second data segment and answers a FIN.
#[derive(Debug, Clone)]
pub struct Server {
    me: End,
    client: End,
    listening: bool,
    isn: u32,
    /// Data segments taken since its last ACK.
    unacked: u64,
}

/// The random stream TCP initial sequence numbers come from (one per flow, apart from the
/// flows' arrival streams).
const ISN_STREAM: u64 = 0x7463_705f_6973_6e00;

/// Both ends of the connection of flow `flow` of a run seeded `seed`, whose data segments look
/// like `data` (from the client): the same initial sequence numbers in virtual and live runs.
/// `None` if `data` is not a TCP segment.
pub fn flow_connection(
    spec: TcpSpec,
    data: &[u8],
    seed: u64,
    flow: usize,
) -> Option<(Client, Server)> {
    let isns = crate::sim::SplitMix64::new(seed ^ ISN_STREAM, flow as u64).next_u64();
    connection(spec, data, isns)
}

/// Both ends of the connection of a flow whose data segments look like `data` (from the
/// client), with initial sequence numbers drawn from `isns`.
pub(crate) fn connection(spec: TcpSpec, data: &[u8], isns: u64) -> Option<(Client, Server)> {
    let seg = Segment::of(data)?;
    let mac = |r: std::ops::Range<usize>| -> Option<MacAddr> {
        Some(MacAddr(data.get(r)?.try_into().ok()?))
    };
    let ip = |at: usize| -> Option<[u8; 4]> { data.get(at..at + 4)?.try_into().ok() };
    let port = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
    };
    let base = field::ETH_LEN;
    let client = End {
        mac: mac(field::SRC)?,
        ip: ip(base + field::IP_SRC.start)?,
        port: port(base + field::IP_MIN_LEN)?,
    };
    let server = End {
        mac: mac(field::DST)?,
        ip: ip(base + field::IP_DST.start)?,
        port: port(base + field::IP_MIN_LEN + 2)?,
    };
    Some((
        Client {
            me: client,
            server,
            syn_retries: spec.syn_retries,
            isn: isns as u32,
            server_next: 0,
            payload: seg.payload,
            first_syn_at: None,
            fin_sent: false,
            out: TcpOutcome::default(),
        },
        Server {
            me: server,
            client,
            listening: spec.listening,
            isn: (isns >> 32) as u32,
            unacked: 0,
        },
    ))
}

impl Client {
    /// What became of the connection so far.
    pub fn outcome(&self) -> TcpOutcome {
        self.out
    }

    /// The (source, destination) ports of the segments it receives.
    pub fn ports_in(&self) -> (u16, u16) {
        (self.server.port, self.me.port)
    }

    fn send(&self, buf: &mut Vec<u8>, seq_ack: (u32, u32), flags: u8) {
        write(buf, self.me, self.server, seq_ack, flags);
    }

    /// Whether it waits for an answer to its SYNs.
    pub fn connecting(&self) -> bool {
        self.out.connect == Connect::Connecting
    }

    /// Whether data may flow.
    pub fn established(&self) -> bool {
        self.out.connect == Connect::Connected && !self.fin_sent
    }

    /// Its SYN number `syns + 1`, at `now`, written into `buf`; returns when the SYN's
    /// retransmission timer fires.
    pub fn syn(&mut self, now: u64, buf: &mut Vec<u8>) -> u64 {
        self.first_syn_at.get_or_insert(now);
        self.out.connect = Connect::Connecting;
        let rto = INITIAL_RTO_NS.saturating_mul(1 << self.out.syns.min(MAX_SYN_RETRIES));
        self.out.syns += 1;
        self.send(buf, (self.isn, 0), tcp_flags::SYN);
        now.saturating_add(rto)
    }

    /// The retransmission timer of SYN number `syns` fired at `now`: true if it sends another;
    /// false if it gives up (or was answered).
    pub fn syn_timer(&mut self, now: u64, syns: u32) -> bool {
        if !self.connecting() || self.out.syns != syns {
            return false;
        }
        if syns > self.syn_retries {
            self.out.connect = Connect::TimedOut;
            self.out.answer_ns = self.first_syn_at.map(|t| now.saturating_sub(t));
            return false;
        }
        true
    }

    /// Sequence and acknowledgement numbers of data segment `k` (from 0).
    pub fn data_seq_ack(&self, k: u64) -> (u32, u32) {
        let offset = (k as u32).wrapping_mul(self.payload as u32);
        (self.isn.wrapping_add(1).wrapping_add(offset), self.server_next)
    }

    /// Writes data segment `k`'s sequence and acknowledgement numbers into `frame`.
    pub fn number(&self, frame: &mut [u8], k: u64) {
        let (seq, ack) = self.data_seq_ack(k);
        let tcp = field::ETH_LEN + field::IP_MIN_LEN;
        if let Some(s) = frame.get_mut(tcp + field::TCP_SEQ.start..tcp + field::TCP_ACK.end) {
            s[..4].copy_from_slice(&seq.to_be_bytes());
            s[4..].copy_from_slice(&ack.to_be_bytes());
        }
    }

    /// Its FIN once `segments` data segments are sent, written into `buf`; false if there is
    /// nothing to close.
    pub fn fin(&mut self, buf: &mut Vec<u8>, segments: u64) -> bool {
        if !self.established() {
            return false;
        }
        self.fin_sent = true;
        let (seq, ack) = self.data_seq_ack(segments);
        self.send(buf, (seq, ack), tcp_flags::FIN | tcp_flags::ACK);
        true
    }

    /// It takes `seg` from the server at `t`: what it does, anything to send written into
    /// `buf`.
    pub(crate) fn rx(&mut self, t: u64, seg: Segment, buf: &mut Vec<u8>) -> ClientStep {
        use tcp_flags::{ACK, FIN, RST, SYN};
        let since_syn = |c: &Self| c.first_syn_at.map(|s| t.saturating_sub(s));
        if seg.flags & RST != 0 {
            if self.connecting() {
                self.out.connect = Connect::Refused;
                self.out.answer_ns = since_syn(self);
            }
            return ClientStep::Quiet;
        }
        if seg.flags & (SYN | ACK) == SYN | ACK {
            let seq_ack = (self.isn.wrapping_add(1), seg.seq.wrapping_add(1));
            if self.connecting() {
                self.out.connect = Connect::Connected;
                self.out.answer_ns = since_syn(self);
                self.server_next = seq_ack.1;
                self.send(buf, seq_ack, ACK);
                return ClientStep::Established;
            }
            if self.established() {
                // Its ACK was lost, or its SYN went twice: acknowledge again.
                self.send(buf, seq_ack, ACK);
                return ClientStep::Send;
            }
            return ClientStep::Quiet;
        }
        if seg.flags & FIN != 0 && self.fin_sent && !self.out.closed {
            self.out.closed = true;
            self.send(buf, (seg.ack, seg.seq.wrapping_add(1)), ACK);
            return ClientStep::Send;
        }
        if seg.flags & ACK != 0 && self.out.connect == Connect::Connected {
            self.out.acks += 1;
        }
        ClientStep::Quiet
    }
}

impl Server {
    /// The (source, destination) ports of the segments it receives.
    pub fn ports_in(&self) -> (u16, u16) {
        (self.client.port, self.me.port)
    }

    /// Whether a process listens on the port (data is only taken if one does).
    pub fn listening(&self) -> bool {
        self.listening
    }

    fn send(&self, buf: &mut Vec<u8>, seq_ack: (u32, u32), flags: u8) {
        write(buf, self.me, self.client, seq_ack, flags);
    }

    /// It takes `seg`: true if it answers, the answer written into `buf`.
    pub(crate) fn rx(&mut self, seg: Segment, buf: &mut Vec<u8>) -> bool {
        use tcp_flags::{ACK, FIN, RST, SYN};
        let next = seg.seq.wrapping_add(seg.payload as u32);
        if seg.flags & SYN != 0 && seg.flags & ACK == 0 {
            let (seq_ack, flags) = if self.listening {
                ((self.isn, next.wrapping_add(1)), SYN | ACK)
            } else {
                ((0, next.wrapping_add(1)), RST | ACK)
            };
            self.send(buf, seq_ack, flags);
            return true;
        }
        if seg.flags & RST != 0 || !self.listening {
            return false;
        }
        if seg.flags & FIN != 0 {
            self.send(buf, (self.isn.wrapping_add(1), next.wrapping_add(1)), FIN | ACK);
            return true;
        }
        if seg.payload == 0 {
            return false;
        }
        self.unacked += 1;
        if self.unacked < SEGMENTS_PER_ACK {
            return false;
        }
        self.unacked = 0;
        self.send(buf, (self.isn.wrapping_add(1), next), ACK);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcp_flags::{ACK, FIN, PSH, RST, SYN};

    fn data_frame() -> Vec<u8> {
        let mut buf = vec![0u8; 200];
        let len = build_tcp_frame(
            &mut buf,
            100,
            MacAddr::local(2),
            MacAddr::local(1),
            ([10, 0, 2, 4], [10, 0, 3, 4]),
            (40_000, 5432),
            (0, 0),
            PSH | ACK,
        )
        .map(|f| f.len())
        .unwrap();
        buf.truncate(len);
        buf
    }

    fn conn(listening: bool) -> (Client, Server) {
        let spec = TcpSpec { listening, syn_retries: 2 };
        connection(spec, &data_frame(), 0x0000_0100_0000_0010).unwrap()
    }

    /// Linux's default of six retries gives up 127 s after the first SYN (1 + 2 + … + 64).
    #[test]
    fn linux_gives_up_after_127_seconds() {
        assert_eq!(give_up_after_ns(LINUX_SYN_RETRIES), 127 * INITIAL_RTO_NS);
        assert_eq!(give_up_after_ns(0), INITIAL_RTO_NS);
        assert_eq!(give_up_after_ns(2), 7 * INITIAL_RTO_NS);
    }

    /// SYN, SYN-ACK, ACK, two data segments and their delayed ACK, FIN, FIN-ACK, ACK, with the
    /// numbers RFC 793 gives each.
    #[test]
    fn a_listening_server_completes_the_handshake_and_the_close() {
        let (mut c, mut s) = conn(true);
        let mut buf = Vec::new();
        assert_eq!(c.syn(0, &mut buf), INITIAL_RTO_NS);
        let syn = Segment::of(&buf).unwrap();
        assert_eq!((syn.flags, syn.seq, syn.payload), (SYN, 0x10, 0));
        assert!(s.rx(syn, &mut buf));
        let syn_ack = Segment::of(&buf).unwrap();
        assert_eq!((syn_ack.flags, syn_ack.seq, syn_ack.ack), (SYN | ACK, 0x100, 0x11));
        assert_eq!(c.rx(30_000, syn_ack, &mut buf), ClientStep::Established);
        let ack = Segment::of(&buf).unwrap();
        assert_eq!((ack.flags, ack.seq, ack.ack), (ACK, 0x11, 0x101));
        assert_eq!(c.out.answer_ns, Some(30_000));
        assert!(!s.rx(ack, &mut buf), "a pure ACK needs no answer");
        // Data segment k starts at isn + 1 + k × 100 (154-byte frames: 100 bytes of payload).
        assert_eq!(c.data_seq_ack(3), (0x11 + 3 * 100, 0x101));
        let seg = |k: u64| Segment {
            flags: PSH | ACK,
            seq: c.data_seq_ack(k).0,
            ack: 0x101,
            payload: 100,
        };
        let (s0, s1) = (seg(0), seg(1));
        assert!(!s.rx(s0, &mut buf));
        assert!(s.rx(s1, &mut buf));
        let dack = Segment::of(&buf).unwrap();
        assert_eq!((dack.flags, dack.ack), (ACK, 0x11 + 2 * 100));
        assert_eq!(c.rx(40_000, dack, &mut buf), ClientStep::Quiet);
        assert_eq!(c.out.acks, 1);
        assert!(c.fin(&mut buf, 2));
        let fin = Segment::of(&buf).unwrap();
        assert_eq!((fin.flags, fin.seq), (FIN | ACK, 0x11 + 2 * 100));
        assert!(s.rx(fin, &mut buf));
        let fin_ack = Segment::of(&buf).unwrap();
        assert_eq!((fin_ack.flags, fin_ack.ack), (FIN | ACK, 0x11 + 2 * 100 + 1));
        assert_eq!(c.rx(50_000, fin_ack, &mut buf), ClientStep::Send);
        assert!(c.out.closed && c.out.connect == Connect::Connected);
    }

    #[test]
    fn a_closed_port_answers_rst_and_the_client_is_refused() {
        let (mut c, mut s) = conn(false);
        let mut buf = Vec::new();
        c.syn(5, &mut buf);
        let syn = Segment::of(&buf).unwrap();
        assert!(s.rx(syn, &mut buf));
        let rst = Segment::of(&buf).unwrap();
        assert_eq!((rst.flags, rst.ack), (RST | ACK, 0x11));
        assert_eq!(c.rx(25, rst, &mut buf), ClientStep::Quiet);
        assert_eq!((c.out.connect, c.out.answer_ns, c.out.syns), (Connect::Refused, Some(20), 1));
        assert!(!c.syn_timer(INITIAL_RTO_NS, 1), "refused: no retry");
    }

    /// Unanswered, SYNs go out at 0, 1 and 3 s (two retries) and the client gives up at 7 s.
    #[test]
    fn unanswered_syns_back_off_and_time_out() {
        let (mut c, _) = conn(true);
        let mut buf = Vec::new();
        let mut at = c.syn(0, &mut buf);
        let mut sent = vec![0];
        while c.syn_timer(at, c.out.syns) {
            sent.push(at);
            at = c.syn(at, &mut buf);
        }
        let s = INITIAL_RTO_NS;
        assert_eq!(sent, [0, s, 3 * s]);
        assert_eq!(
            (c.out.connect, c.out.syns, c.out.answer_ns),
            (Connect::TimedOut, 3, Some(7 * s))
        );
        assert_eq!(c.out.answer_ns, Some(give_up_after_ns(2)));
    }

    #[test]
    fn segments_read_their_payload_length_from_the_headers() {
        assert_eq!(crate::traffic::payload_at(&data_frame()), 54);
        assert_eq!(Segment::of(&[0u8; 30]), None);
        assert_eq!(Segment::of(&data_frame()).map(|s| s.payload), Some(100));
    }
}
