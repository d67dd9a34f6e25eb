//! ENA's admin protocol: 64-byte commands, 64-byte completions, typed both ways.
//!
//! A command entry (`ena_admin_aq_entry`) starts with a 4-byte common header (command id 11:0,
//! opcode, flags: phase bit 0, "control buffer" bits 1 and 2), then 60 bytes whose meaning
//! depends on the opcode. A completion entry (`ena_admin_acq_entry`) starts with an 8-byte header
//! (command id, status, flags with the phase in bit 0, extended status, the admin queue head)
//! and 56 bytes of response ([`Body`]). Data too large for an entry (the RSS key, the
//! indirection table, the hash-input control, customer metrics) travels in a **control buffer**:
//! the command carries its length and 48-bit DMA address at bytes 4..16 and sets flag bit 2, as
//! ENA's driver does.
//!
//! [`Command::encode`] / [`Command::decode`] and the [`ResponseBody`] types are the only code
//! that knows these byte positions; the device decodes what the driver encodes and neither
//! reaches into the other. Offsets are those of `ena_admin_defs.h`; multi-byte fields are little
//! endian; addresses are `ena_common_mem_addr` (low 32 bits, high 16 bits, 16 reserved).
//!
//! | opcode | command bytes (after the 4-byte header) | response bytes (after the 8-byte header) |
//! | --- | --- | --- |
//! | `CREATE_SQ` 1 | 4 direction << 5; 6 placement 3:0, completion policy 6:4; 7 contiguous; 8 cq_idx; 10 depth; 12 ring base; 20 head writeback | 8 sq_idx; 12 doorbell offset; 16 LLQ descriptors offset; 20 LLQ headers offset |
//! | `DESTROY_SQ` 2 | 4 sq_idx; 6 direction << 5 | – |
//! | `CREATE_CQ` 3 | 4 interrupt mode bit 5; 5 entry size in words; 6 depth; 8 MSI-X vector; 12 ring base | 8 cq_idx; 10 actual depth; 12 NUMA register; 16 head doorbell; 20 unmask register |
//! | `DESTROY_CQ` 4 | 4 cq_idx | – |
//! | `GET_FEATURE` 8 / `SET_FEATURE` 9 | 4 control buffer; 16 select; 17 feature id; 18 version; 20.. value | 8.. value |
//! | `GET_STATS` 11 | 4 control buffer; 16 type; 17 scope; 20 queue; 22 device id; 24 requested metrics | 8.. statistics |

use super::wire::*;
use crate::frame::MacAddr;

/// Bytes of a command or completion entry.
pub const ENTRY_BYTES: usize = 64;
/// One admin queue or admin completion queue entry.
pub type Entry = [u8; ENTRY_BYTES];
/// Bytes of a completion's response, after its 8-byte header.
pub const BODY_BYTES: usize = ENTRY_BYTES - COMPLETION_HEADER_BYTES;
/// A completion's response.
pub type Body = [u8; BODY_BYTES];
const COMPLETION_HEADER_BYTES: usize = 8;

/// Admin queue depth ENA's driver uses.
pub const AQ_DEPTH: u16 = 32;
/// Async event queue depth ENA's driver uses.
pub const AENQ_DEPTH: u16 = 16;
/// Command ids are 12 bits.
pub const COMMAND_ID_MASK: u16 = 0x0fff;

/// Opcodes (`ena_admin_aq_opcode`).
pub mod opcode {
    /// Create an IO submission queue.
    pub const CREATE_SQ: u8 = 1;
    /// Destroy an IO submission queue.
    pub const DESTROY_SQ: u8 = 2;
    /// Create an IO completion queue.
    pub const CREATE_CQ: u8 = 3;
    /// Destroy an IO completion queue.
    pub const DESTROY_CQ: u8 = 4;
    /// Read a feature.
    pub const GET_FEATURE: u8 = 8;
    /// Write a feature.
    pub const SET_FEATURE: u8 = 9;
    /// Read statistics.
    pub const GET_STATS: u8 = 11;
}

/// Completion statuses (`ena_admin_aq_completion_status`).
pub mod status {
    /// Done.
    pub const SUCCESS: u8 = 0;
    /// Out of resources.
    pub const RESOURCE_ALLOCATION_FAILURE: u8 = 1;
    /// Unknown opcode.
    pub const BAD_OPCODE: u8 = 2;
    /// Known but not supported (also: a feature the device does not have).
    pub const UNSUPPORTED_OPCODE: u8 = 3;
    /// Malformed command.
    pub const MALFORMED_REQUEST: u8 = 4;
    /// A parameter out of range.
    pub const ILLEGAL_PARAMETER: u8 = 5;
    /// Anything else.
    pub const UNKNOWN_ERROR: u8 = 6;
    /// Busy.
    pub const RESOURCE_BUSY: u8 = 7;
}

/// Feature ids (`ena_admin_aq_feature_id`); bit `id` of `supported_features` says the device
/// has it.
pub mod feature {
    /// MAC, MTU limit, supported features and capabilities.
    pub const DEVICE_ATTRIBUTES: u8 = 1;
    /// Queue limits (the old form).
    pub const MAX_QUEUES_NUM: u8 = 2;
    /// Timeouts and limits for the driver.
    pub const HW_HINTS: u8 = 3;
    /// Low-latency (device-placed) queues.
    pub const LLQ: u8 = 4;
    /// Queue limits per direction.
    pub const MAX_QUEUES_EXT: u8 = 7;
    /// RSS hash function and key.
    pub const RSS_HASH_FUNCTION: u8 = 10;
    /// Checksum and segmentation offloads.
    pub const STATELESS_OFFLOAD_CONFIG: u8 = 11;
    /// RSS indirection table.
    pub const RSS_INDIRECTION_TABLE_CONFIG: u8 = 12;
    /// MTU.
    pub const MTU: u8 = 14;
    /// Which header fields RSS hashes.
    pub const RSS_HASH_INPUT: u8 = 18;
    /// Interrupt moderation.
    pub const INTERRUPT_MODERATION: u8 = 20;
    /// Which async event groups are reported.
    pub const AENQ_CONFIG: u8 = 26;
    /// Link speed.
    pub const LINK_CONFIG: u8 = 27;
    /// The driver's host information.
    pub const HOST_ATTR_CONFIG: u8 = 28;
}

/// Device capabilities (`ena_admin_aq_caps_id`), bits of `DeviceAttributes::capabilities`.
pub mod capability {
    /// ENI statistics (`GET_STATS` type ENI).
    pub const ENI_STATS: u32 = 0;
    /// ENA Express (SRD) information.
    pub const ENA_SRD_INFO: u32 = 1;
    /// Customer metrics (`GET_STATS` type CUSTOMER_METRICS).
    pub const CUSTOMER_METRICS: u32 = 2;
}

/// `GET_STATS` types (`ena_admin_get_stats_type`).
pub mod stats_type {
    /// Packets, bytes and drops.
    pub const BASIC: u8 = 0;
    /// A string buffer (not modelled).
    pub const EXTENDED: u8 = 1;
    /// The ENI's allowance counters.
    pub const ENI: u8 = 2;
    /// ENA Express (SRD) counters.
    pub const ENA_SRD: u8 = 3;
    /// The allowance counters as a requested bitmap, into a control buffer.
    pub const CUSTOMER_METRICS: u8 = 4;
}

/// Customer metric ids (`ena_admin_customer_metrics_id`), bits of `requested_metrics`.
pub mod customer_metric {
    /// Packets shaped by the inbound bandwidth allowance.
    pub const BW_IN_ALLOWANCE_EXCEEDED: u32 = 0;
    /// Packets shaped by the outbound bandwidth allowance.
    pub const BW_OUT_ALLOWANCE_EXCEEDED: u32 = 1;
    /// Packets shaped by the PPS allowance.
    pub const PPS_ALLOWANCE_EXCEEDED: u32 = 2;
    /// Packets dropped for the connection-tracking allowance.
    pub const CONNTRACK_ALLOWANCE_EXCEEDED: u32 = 3;
    /// Packets to link-local services shaped by their allowance.
    pub const LINKLOCAL_ALLOWANCE_EXCEEDED: u32 = 4;
    /// Tracked connections still available.
    pub const CONNTRACK_ALLOWANCE_AVAILABLE: u32 = 5;
    /// How many metric ids there are.
    pub const COUNT: u32 = 6;
}

/// RSS hash functions (`ena_admin_hash_functions`), as bitmasks.
pub mod hash_function {
    /// Toeplitz.
    pub const TOEPLITZ: u32 = 1;
    /// CRC32.
    pub const CRC32: u32 = 2;
}

/// Async event groups the device can report, bits of `AenqConfig` (see [`super::aenq::group`]).
pub const AENQ_ALL_GROUPS: u32 = 0b1_1111;

/// A submission queue's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Transmit (1).
    Tx = 1,
    /// Receive (2).
    Rx = 2,
}

impl Direction {
    fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(Self::Tx),
            2 => Some(Self::Rx),
            _ => None,
        }
    }
}

/// Where a submission queue's descriptors live (`ena_admin_placement_policy_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Descriptors and headers in host memory (1).
    Host = 1,
    /// Descriptors and headers in device memory: a low-latency queue (3).
    Device = 3,
}

/// When the device writes a completion (`ena_admin_completion_policy_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompletionPolicy {
    /// One per descriptor (0).
    Desc = 0,
    /// One per descriptor that asks for it (1), what ENA's driver uses.
    DescOnDemand = 1,
    /// The head pointer written on request (2).
    HeadOnDemand = 2,
    /// The head pointer written for every descriptor (3).
    Head = 3,
}

impl CompletionPolicy {
    fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Self::Desc),
            1 => Some(Self::DescOnDemand),
            2 => Some(Self::HeadOnDemand),
            3 => Some(Self::Head),
            _ => None,
        }
    }
}

/// Data too large for the entry, in driver memory (`ena_admin_ctrl_buff_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlBuffer {
    /// Bytes.
    pub length: u32,
    /// 48-bit DMA address.
    pub address: u64,
}

/// `CREATE_SQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateSq {
    /// TX or RX.
    pub direction: Direction,
    /// Host memory or a low-latency queue.
    pub placement: Placement,
    /// When completions are written.
    pub completion_policy: CompletionPolicy,
    /// The ring is one physically contiguous block.
    pub physically_contiguous: bool,
    /// The completion queue, created before.
    pub cq_idx: u16,
    /// Entries.
    pub depth: u16,
    /// Address of entry 0 (host placement only).
    pub ring_base: u64,
    /// Where the head is written back (head policies only).
    pub head_writeback: u64,
}

/// `CREATE_CQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateCq {
    /// Interrupts on (else polled).
    pub interrupt_mode: bool,
    /// Entry size in 32-bit words: 2 for TX (8 bytes), 4 for RX (16 bytes).
    pub entry_words: u8,
    /// Entries, a power of two.
    pub depth: u16,
    /// MSI-X vector.
    pub msix_vector: u32,
    /// Address of entry 0.
    pub ring_base: u64,
}

/// `GET_FEATURE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetFeature {
    /// Feature id ([`feature`]).
    pub feature: u8,
    /// The highest version of it the driver knows.
    pub version: u8,
    /// Where a large value goes (the RSS key, the indirection table, the hash control).
    pub control: Option<ControlBuffer>,
}

/// `SET_FEATURE`, by feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetFeature {
    /// MTU, excluding L2.
    Mtu(u32),
    /// The async event groups to report.
    AenqConfig {
        /// Bitmap of [`super::aenq::group`].
        enabled_groups: u32,
    },
    /// Hash function and key; the key ([`RssHashKey`]) in the control buffer.
    RssHashFunction {
        /// Bitmask of [`hash_function`].
        selected: u32,
        /// Initial value (CRC32).
        init_val: u32,
        /// The key.
        key: ControlBuffer,
    },
    /// Hash-input sorting and, in the control buffer, the fields per protocol
    /// ([`RssHashControl`]).
    RssHashInput {
        /// L3 sort bit 1, L4 sort bit 2.
        enabled_sort: u16,
        /// The fields.
        fields: Option<ControlBuffer>,
    },
    /// The indirection table: a size, and the whole table in the control buffer
    /// (4 bytes per entry, [`encode_indirection`]) or one inline entry.
    RssIndirectionTable {
        /// Table size, log2.
        log_size: u16,
        /// `(index, cq_idx)` of one entry to update, or none (`0xFFFF_FFFF` on the wire).
        inline: Option<(u32, u16)>,
        /// The whole table.
        table: Option<ControlBuffer>,
    },
    /// vnic extension (ENA moderates in its driver, through the unmask register): TX and RX
    /// interrupt delays in µs, words 20 and 24.
    InterruptModeration {
        /// TX delay, µs.
        tx_us: u32,
        /// RX delay, µs.
        rx_us: u32,
    },
    /// vnic extension, for VFs the PF trusts: the VF's MAC, bytes 20..26.
    Mac(MacAddr),
    /// The low-latency queue layout the driver chose: `ena_admin_feature_llq_desc` from byte
    /// 20, its `*_enabled` fields (and the accelerated-mode flags) set.
    Llq(LlqInfo),
}

impl SetFeature {
    /// Its feature id.
    pub fn feature(&self) -> u8 {
        match self {
            Self::Mtu(_) => feature::MTU,
            Self::AenqConfig { .. } => feature::AENQ_CONFIG,
            Self::RssHashFunction { .. } => feature::RSS_HASH_FUNCTION,
            Self::RssHashInput { .. } => feature::RSS_HASH_INPUT,
            Self::RssIndirectionTable { .. } => feature::RSS_INDIRECTION_TABLE_CONFIG,
            Self::InterruptModeration { .. } => feature::INTERRUPT_MODERATION,
            Self::Mac(_) => feature::DEVICE_ATTRIBUTES,
            Self::Llq(_) => feature::LLQ,
        }
    }

    fn control(&self) -> Option<ControlBuffer> {
        match *self {
            Self::RssHashFunction { key, .. } => Some(key),
            Self::RssHashInput { fields, .. } => fields,
            Self::RssIndirectionTable { table, .. } => table,
            _ => None,
        }
    }
}

/// `GET_STATS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetStats {
    /// [`stats_type`].
    pub stats_type: u8,
    /// 0 one queue, 1 all Ethernet traffic.
    pub scope: u8,
    /// The queue, for scope 0.
    pub queue_idx: u16,
    /// `0xFFFF`: this function.
    pub device_id: u16,
    /// Bitmap of [`customer_metric`] ids (customer metrics).
    pub requested_metrics: u64,
    /// Where customer metrics go (one u64 per requested metric, in id order).
    pub control: Option<ControlBuffer>,
}

/// An admin command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Create an IO submission queue.
    CreateSq(CreateSq),
    /// Destroy one.
    DestroySq {
        /// Its index.
        sq_idx: u16,
        /// Its direction.
        direction: Direction,
    },
    /// Create an IO completion queue.
    CreateCq(CreateCq),
    /// Destroy one.
    DestroyCq {
        /// Its index.
        cq_idx: u16,
    },
    /// Read a feature.
    GetFeature(GetFeature),
    /// Write a feature.
    SetFeature(SetFeature),
    /// Read statistics.
    GetStats(GetStats),
}

/// Byte positions inside a command entry.
mod at {
    pub const COMMAND_ID: usize = 0;
    pub const OPCODE: usize = 2;
    pub const FLAGS: usize = 3;
    pub const CTRL_LENGTH: usize = 4;
    pub const CTRL_ADDRESS: usize = 8;
    // CREATE_SQ
    pub const SQ_IDENTITY: usize = 4;
    pub const SQ_CAPS_2: usize = 6;
    pub const SQ_CAPS_3: usize = 7;
    pub const SQ_CQ_IDX: usize = 8;
    pub const SQ_DEPTH: usize = 10;
    pub const SQ_BA: usize = 12;
    pub const SQ_HEAD_WRITEBACK: usize = 20;
    // DESTROY_SQ
    pub const DESTROY_SQ_IDX: usize = 4;
    pub const DESTROY_SQ_IDENTITY: usize = 6;
    // CREATE_CQ
    pub const CQ_CAPS_1: usize = 4;
    pub const CQ_CAPS_2: usize = 5;
    pub const CQ_DEPTH: usize = 6;
    pub const CQ_MSIX: usize = 8;
    pub const CQ_BA: usize = 12;
    // DESTROY_CQ
    pub const DESTROY_CQ_IDX: usize = 4;
    // GET/SET_FEATURE (byte 16, the select field, stays 0 as ENA's driver leaves it)
    pub const FEAT_ID: usize = 17;
    pub const FEAT_VERSION: usize = 18;
    pub const FEAT_VALUE: usize = 20;
    // GET_STATS
    pub const STATS_TYPE: usize = 16;
    pub const STATS_SCOPE: usize = 17;
    pub const STATS_QUEUE: usize = 20;
    pub const STATS_DEVICE: usize = 22;
    pub const STATS_METRICS: usize = 24;
}

/// Bits of the command header's flags byte.
pub mod flags {
    /// Phase.
    pub const PHASE: u8 = 1 << 0;
    /// The control buffer address is valid.
    pub const CTRL_DATA: u8 = 1 << 1;
    /// The control buffer is given indirectly (ENA's driver sets this for every control
    /// buffer it passes).
    pub const CTRL_DATA_INDIRECT: u8 = 1 << 2;
}

const SQ_DIRECTION_SHIFT: u8 = 5;
const INTERRUPT_MODE: u8 = 1 << 5;
const ENTRY_WORDS_MASK: u8 = 0x1f;
const INLINE_NONE: u32 = 0xFFFF_FFFF;

/// The common header of a command entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandHeader {
    /// Command id, 12 bits.
    pub command_id: u16,
    /// Opcode.
    pub opcode: u8,
    /// Phase bit.
    pub phase: bool,
}

impl CommandHeader {
    /// The header of `entry`.
    pub fn decode(entry: &Entry) -> Self {
        Self {
            command_id: u16_at(entry, at::COMMAND_ID) & COMMAND_ID_MASK,
            opcode: u8_at(entry, at::OPCODE),
            phase: u8_at(entry, at::FLAGS) & flags::PHASE != 0,
        }
    }
}

/// Why a command entry does not decode; each maps to ENA's status for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No such opcode.
    #[error("unknown admin opcode {0}")]
    UnknownOpcode(u8),
    /// A feature the device cannot set.
    #[error("feature {0} cannot be set")]
    UnsupportedFeature(u8),
    /// A field with a value ENA does not define.
    #[error("malformed admin command: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// ENA's completion status for it.
    pub fn status(&self) -> u8 {
        match self {
            Self::UnknownOpcode(_) => status::BAD_OPCODE,
            Self::UnsupportedFeature(_) => status::UNSUPPORTED_OPCODE,
            Self::Malformed(_) => status::MALFORMED_REQUEST,
        }
    }
}

fn put_control(e: &mut Entry, control: Option<ControlBuffer>) {
    if let Some(c) = control {
        put_u32(e, at::CTRL_LENGTH, c.length);
        put_addr(e, at::CTRL_ADDRESS, c.address);
        e[at::FLAGS] |= flags::CTRL_DATA_INDIRECT;
    }
}

fn control_of(e: &Entry) -> Option<ControlBuffer> {
    let given = e[at::FLAGS] & (flags::CTRL_DATA | flags::CTRL_DATA_INDIRECT) != 0;
    given.then(|| ControlBuffer {
        length: u32_at(e, at::CTRL_LENGTH),
        address: addr_at(e, at::CTRL_ADDRESS),
    })
}

impl Command {
    /// Its opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Self::CreateSq(_) => opcode::CREATE_SQ,
            Self::DestroySq { .. } => opcode::DESTROY_SQ,
            Self::CreateCq(_) => opcode::CREATE_CQ,
            Self::DestroyCq { .. } => opcode::DESTROY_CQ,
            Self::GetFeature(_) => opcode::GET_FEATURE,
            Self::SetFeature(_) => opcode::SET_FEATURE,
            Self::GetStats(_) => opcode::GET_STATS,
        }
    }

    /// The entry for this command with `command_id` (12 bits) and `phase`.
    pub fn encode(&self, command_id: u16, phase: bool) -> Entry {
        let mut e = [0u8; ENTRY_BYTES];
        put_u16(&mut e, at::COMMAND_ID, command_id & COMMAND_ID_MASK);
        put_u8(&mut e, at::OPCODE, self.opcode());
        put_u8(&mut e, at::FLAGS, if phase { flags::PHASE } else { 0 });
        match *self {
            Self::CreateSq(c) => {
                put_u8(&mut e, at::SQ_IDENTITY, (c.direction as u8) << SQ_DIRECTION_SHIFT);
                let caps2 = (c.placement as u8 & 0x0f) | (c.completion_policy as u8 & 0x07) << 4;
                put_u8(&mut e, at::SQ_CAPS_2, caps2);
                put_u8(&mut e, at::SQ_CAPS_3, u8::from(c.physically_contiguous));
                put_u16(&mut e, at::SQ_CQ_IDX, c.cq_idx);
                put_u16(&mut e, at::SQ_DEPTH, c.depth);
                put_addr(&mut e, at::SQ_BA, c.ring_base);
                put_addr(&mut e, at::SQ_HEAD_WRITEBACK, c.head_writeback);
            }
            Self::DestroySq { sq_idx, direction } => {
                put_u16(&mut e, at::DESTROY_SQ_IDX, sq_idx);
                put_u8(&mut e, at::DESTROY_SQ_IDENTITY, (direction as u8) << SQ_DIRECTION_SHIFT);
            }
            Self::CreateCq(c) => {
                put_u8(&mut e, at::CQ_CAPS_1, if c.interrupt_mode { INTERRUPT_MODE } else { 0 });
                put_u8(&mut e, at::CQ_CAPS_2, c.entry_words & ENTRY_WORDS_MASK);
                put_u16(&mut e, at::CQ_DEPTH, c.depth);
                put_u32(&mut e, at::CQ_MSIX, c.msix_vector);
                put_addr(&mut e, at::CQ_BA, c.ring_base);
            }
            Self::DestroyCq { cq_idx } => put_u16(&mut e, at::DESTROY_CQ_IDX, cq_idx),
            Self::GetFeature(g) => {
                put_control(&mut e, g.control);
                put_u8(&mut e, at::FEAT_ID, g.feature);
                put_u8(&mut e, at::FEAT_VERSION, g.version);
            }
            Self::SetFeature(s) => {
                put_control(&mut e, s.control());
                put_u8(&mut e, at::FEAT_ID, s.feature());
                encode_set_value(&mut e, &s);
            }
            Self::GetStats(s) => {
                put_control(&mut e, s.control);
                put_u8(&mut e, at::STATS_TYPE, s.stats_type);
                put_u8(&mut e, at::STATS_SCOPE, s.scope);
                put_u16(&mut e, at::STATS_QUEUE, s.queue_idx);
                put_u16(&mut e, at::STATS_DEVICE, s.device_id);
                put_u64(&mut e, at::STATS_METRICS, s.requested_metrics);
            }
        }
        e
    }

    /// The command in `entry`, checked: every field ENA enumerates must hold one of its values.
    pub fn decode(e: &Entry) -> Result<Self, DecodeError> {
        let op = u8_at(e, at::OPCODE);
        Ok(match op {
            opcode::CREATE_SQ => {
                let identity = u8_at(e, at::SQ_IDENTITY) >> SQ_DIRECTION_SHIFT;
                let caps2 = u8_at(e, at::SQ_CAPS_2);
                Self::CreateSq(CreateSq {
                    direction: Direction::from_raw(identity)
                        .ok_or(DecodeError::Malformed("SQ direction"))?,
                    placement: match caps2 & 0x0f {
                        1 => Placement::Host,
                        3 => Placement::Device,
                        _ => return Err(DecodeError::Malformed("placement policy")),
                    },
                    completion_policy: CompletionPolicy::from_raw((caps2 >> 4) & 0x07)
                        .ok_or(DecodeError::Malformed("completion policy"))?,
                    physically_contiguous: u8_at(e, at::SQ_CAPS_3) & 1 != 0,
                    cq_idx: u16_at(e, at::SQ_CQ_IDX),
                    depth: u16_at(e, at::SQ_DEPTH),
                    ring_base: addr_at(e, at::SQ_BA),
                    head_writeback: addr_at(e, at::SQ_HEAD_WRITEBACK),
                })
            }
            opcode::DESTROY_SQ => Self::DestroySq {
                sq_idx: u16_at(e, at::DESTROY_SQ_IDX),
                direction: Direction::from_raw(u8_at(e, at::DESTROY_SQ_IDENTITY) >> 5)
                    .ok_or(DecodeError::Malformed("SQ direction"))?,
            },
            opcode::CREATE_CQ => Self::CreateCq(CreateCq {
                interrupt_mode: u8_at(e, at::CQ_CAPS_1) & INTERRUPT_MODE != 0,
                entry_words: u8_at(e, at::CQ_CAPS_2) & ENTRY_WORDS_MASK,
                depth: u16_at(e, at::CQ_DEPTH),
                msix_vector: u32_at(e, at::CQ_MSIX),
                ring_base: addr_at(e, at::CQ_BA),
            }),
            opcode::DESTROY_CQ => Self::DestroyCq { cq_idx: u16_at(e, at::DESTROY_CQ_IDX) },
            opcode::GET_FEATURE => Self::GetFeature(GetFeature {
                feature: u8_at(e, at::FEAT_ID),
                version: u8_at(e, at::FEAT_VERSION),
                control: control_of(e),
            }),
            opcode::SET_FEATURE => Self::SetFeature(decode_set_value(e)?),
            opcode::GET_STATS => Self::GetStats(GetStats {
                stats_type: u8_at(e, at::STATS_TYPE),
                scope: u8_at(e, at::STATS_SCOPE),
                queue_idx: u16_at(e, at::STATS_QUEUE),
                device_id: u16_at(e, at::STATS_DEVICE),
                requested_metrics: u64_at(e, at::STATS_METRICS),
                control: control_of(e),
            }),
            _ => return Err(DecodeError::UnknownOpcode(op)),
        })
    }
}

/// Positions inside a `SET_FEATURE` value (from byte 20 of the entry).
mod set_at {
    use super::at::FEAT_VALUE as V;
    pub const MTU: usize = V;
    pub const AENQ_ENABLED: usize = V + 4; // after supported_groups
    pub const HASH_SELECTED: usize = V + 4; // after supported_func
    pub const HASH_INIT: usize = V + 8;
    pub const INPUT_ENABLED_SORT: usize = V + 2; // after supported_input_sort
    pub const IND_SIZE: usize = V + 4; // after min_size, max_size
    pub const IND_INLINE_INDEX: usize = V + 8;
    pub const IND_INLINE_CQ: usize = V + 12;
    pub const MODERATION_TX: usize = V;
    pub const MODERATION_RX: usize = V + 4;
    pub const MAC: usize = V;
}

fn encode_set_value(e: &mut Entry, s: &SetFeature) {
    match *s {
        SetFeature::Mtu(mtu) => put_u32(e, set_at::MTU, mtu),
        SetFeature::AenqConfig { enabled_groups } => {
            put_u32(e, set_at::AENQ_ENABLED, enabled_groups)
        }
        SetFeature::RssHashFunction { selected, init_val, .. } => {
            put_u32(e, set_at::HASH_SELECTED, selected);
            put_u32(e, set_at::HASH_INIT, init_val);
        }
        SetFeature::RssHashInput { enabled_sort, .. } => {
            put_u16(e, set_at::INPUT_ENABLED_SORT, enabled_sort)
        }
        SetFeature::RssIndirectionTable { log_size, inline, .. } => {
            put_u16(e, set_at::IND_SIZE, log_size);
            let (index, cq) = inline.unwrap_or((INLINE_NONE, 0));
            put_u32(e, set_at::IND_INLINE_INDEX, index);
            put_u16(e, set_at::IND_INLINE_CQ, cq);
        }
        SetFeature::InterruptModeration { tx_us, rx_us } => {
            put_u32(e, set_at::MODERATION_TX, tx_us);
            put_u32(e, set_at::MODERATION_RX, rx_us);
        }
        SetFeature::Mac(mac) => e[set_at::MAC..set_at::MAC + 6].copy_from_slice(&mac.0),
        SetFeature::Llq(llq) => {
            let body = llq.body();
            let room = ENTRY_BYTES - at::FEAT_VALUE;
            e[at::FEAT_VALUE..].copy_from_slice(&body[..room]);
        }
    }
}

fn decode_set_value(e: &Entry) -> Result<SetFeature, DecodeError> {
    let id = u8_at(e, at::FEAT_ID);
    let control = control_of(e);
    Ok(match id {
        feature::MTU => SetFeature::Mtu(u32_at(e, set_at::MTU)),
        feature::AENQ_CONFIG => {
            SetFeature::AenqConfig { enabled_groups: u32_at(e, set_at::AENQ_ENABLED) }
        }
        feature::RSS_HASH_FUNCTION => SetFeature::RssHashFunction {
            selected: u32_at(e, set_at::HASH_SELECTED),
            init_val: u32_at(e, set_at::HASH_INIT),
            key: control.ok_or(DecodeError::Malformed("RSS key without a control buffer"))?,
        },
        feature::RSS_HASH_INPUT => SetFeature::RssHashInput {
            enabled_sort: u16_at(e, set_at::INPUT_ENABLED_SORT),
            fields: control,
        },
        feature::RSS_INDIRECTION_TABLE_CONFIG => {
            let index = u32_at(e, set_at::IND_INLINE_INDEX);
            SetFeature::RssIndirectionTable {
                log_size: u16_at(e, set_at::IND_SIZE),
                inline: (index != INLINE_NONE).then(|| (index, u16_at(e, set_at::IND_INLINE_CQ))),
                table: control,
            }
        }
        feature::INTERRUPT_MODERATION => SetFeature::InterruptModeration {
            tx_us: u32_at(e, set_at::MODERATION_TX),
            rx_us: u32_at(e, set_at::MODERATION_RX),
        },
        feature::DEVICE_ATTRIBUTES => {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&e[set_at::MAC..set_at::MAC + 6]);
            SetFeature::Mac(MacAddr(mac))
        }
        feature::LLQ => {
            let mut body = [0u8; BODY_BYTES];
            let room = ENTRY_BYTES - at::FEAT_VALUE;
            body[..room].copy_from_slice(&e[at::FEAT_VALUE..]);
            SetFeature::Llq(LlqInfo::read(&body))
        }
        other => return Err(DecodeError::UnsupportedFeature(other)),
    })
}

/// A completion entry: its header and the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The command id it answers (12 bits).
    pub command_id: u16,
    /// [`status`].
    pub status: u8,
    /// Phase bit.
    pub phase: bool,
    /// Extended status.
    pub extended_status: u16,
    /// The admin queue's head after this command: entries before it may be reused.
    pub sq_head: u16,
    /// The response.
    pub body: Body,
}

mod completion_at {
    pub const COMMAND: usize = 0;
    pub const STATUS: usize = 2;
    pub const FLAGS: usize = 3;
    pub const EXTENDED_STATUS: usize = 4;
    pub const SQ_HEAD: usize = 6;
}

impl Completion {
    /// A completion for `command_id` with `status` and a response.
    pub fn new(command_id: u16, status: u8, body: Body) -> Self {
        Self { command_id, status, phase: false, extended_status: 0, sq_head: 0, body }
    }

    /// The entry's bytes.
    pub fn encode(&self) -> Entry {
        use completion_at::*;
        let mut e = [0u8; ENTRY_BYTES];
        put_u16(&mut e, COMMAND, self.command_id & COMMAND_ID_MASK);
        put_u8(&mut e, STATUS, self.status);
        put_u8(&mut e, FLAGS, u8::from(self.phase));
        put_u16(&mut e, EXTENDED_STATUS, self.extended_status);
        put_u16(&mut e, SQ_HEAD, self.sq_head);
        e[COMPLETION_HEADER_BYTES..].copy_from_slice(&self.body);
        e
    }

    /// The completion in `e`.
    pub fn decode(e: &Entry) -> Self {
        use completion_at::*;
        let mut body = [0u8; BODY_BYTES];
        body.copy_from_slice(&e[COMPLETION_HEADER_BYTES..]);
        Self {
            command_id: u16_at(e, COMMAND) & COMMAND_ID_MASK,
            status: u8_at(e, STATUS),
            phase: u8_at(e, FLAGS) & 1 != 0,
            extended_status: u16_at(e, EXTENDED_STATUS),
            sq_head: u16_at(e, SQ_HEAD),
            body,
        }
    }

    /// The response, read as `R`.
    pub fn response<R: ResponseBody>(&self) -> R {
        R::read(&self.body)
    }
}

/// A typed response: how it sits in a completion's 56 bytes (offsets here are from byte 8 of
/// the entry).
pub trait ResponseBody: Sized {
    /// Writes it into a response.
    fn write(&self, body: &mut Body);
    /// Reads it from a response.
    fn read(body: &Body) -> Self;
    /// A response holding it.
    fn body(&self) -> Body {
        let mut b = [0u8; BODY_BYTES];
        self.write(&mut b);
        b
    }
}

/// Declares a response of plain little-endian fields at fixed offsets.
macro_rules! response {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ident @ $off:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        impl ResponseBody for $name {
            fn write(&self, b: &mut Body) {
                $(response!(@put $ty, b, $off, self.$field);)*
            }
            fn read(b: &Body) -> Self {
                Self { $($field: response!(@get $ty, b, $off),)* }
            }
        }
    };
    (@put u8, $b:ident, $off:expr, $v:expr) => { put_u8($b, $off, $v) };
    (@put u16, $b:ident, $off:expr, $v:expr) => { put_u16($b, $off, $v) };
    (@put u32, $b:ident, $off:expr, $v:expr) => { put_u32($b, $off, $v) };
    (@put u64, $b:ident, $off:expr, $v:expr) => { put_u64($b, $off, $v) };
    (@get u8, $b:ident, $off:expr) => { u8_at($b, $off) };
    (@get u16, $b:ident, $off:expr) => { u16_at($b, $off) };
    (@get u32, $b:ident, $off:expr) => { u32_at($b, $off) };
    (@get u64, $b:ident, $off:expr) => { u64_at($b, $off) };
}

response!(
    /// `CREATE_SQ`'s response (`ena_admin_acq_create_sq_resp_desc`).
    CreateSqResponse {
        /// The queue's index.
        sq_idx: u16 @ 0,
        /// Its doorbell, as an offset into BAR0.
        sq_doorbell_offset: u32 @ 4,
        /// A low-latency queue's descriptors, as an offset into the LLQ BAR.
        llq_descriptors_offset: u32 @ 8,
        /// A low-latency queue's headers, as an offset into the LLQ BAR.
        llq_headers_offset: u32 @ 12,
    }
);

response!(
    /// `CREATE_CQ`'s response (`ena_admin_acq_create_cq_resp_desc`).
    CreateCqResponse {
        /// The queue's index.
        cq_idx: u16 @ 0,
        /// Its depth as created.
        cq_actual_depth: u16 @ 2,
        /// The NUMA-node register, as an offset into BAR0.
        numa_node_register_offset: u32 @ 4,
        /// The head doorbell, as an offset into BAR0.
        cq_head_db_register_offset: u32 @ 8,
        /// The interrupt unmask register, as an offset into BAR0.
        cq_interrupt_unmask_register_offset: u32 @ 12,
    }
);

/// `DEVICE_ATTRIBUTES` (`ena_admin_device_attr_feature_desc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceAttributes {
    /// Implementation id.
    pub impl_id: u32,
    /// Device version.
    pub device_version: u32,
    /// Bit `id` set for every feature id the device answers.
    pub supported_features: u32,
    /// Bits of [`capability`].
    pub capabilities: u32,
    /// Physical address bits.
    pub phys_addr_width: u32,
    /// Virtual address bits.
    pub virt_addr_width: u32,
    /// The unicast MAC, in network order.
    pub mac: MacAddr,
    /// Largest MTU.
    pub max_mtu: u32,
}

impl ResponseBody for DeviceAttributes {
    fn write(&self, b: &mut Body) {
        put_u32(b, 0, self.impl_id);
        put_u32(b, 4, self.device_version);
        put_u32(b, 8, self.supported_features);
        put_u32(b, 12, self.capabilities);
        put_u32(b, 16, self.phys_addr_width);
        put_u32(b, 20, self.virt_addr_width);
        b[24..30].copy_from_slice(&self.mac.0);
        put_u32(b, 32, self.max_mtu);
    }
    fn read(b: &Body) -> Self {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&b[24..30]);
        Self {
            impl_id: u32_at(b, 0),
            device_version: u32_at(b, 4),
            supported_features: u32_at(b, 8),
            capabilities: u32_at(b, 12),
            phys_addr_width: u32_at(b, 16),
            virt_addr_width: u32_at(b, 20),
            mac: MacAddr(mac),
            max_mtu: u32_at(b, 32),
        }
    }
}

response!(
    /// `MAX_QUEUES_EXT` (`ena_admin_queue_ext_feature_desc`, version 1).
    MaxQueuesExt {
        /// Feature version.
        version: u8 @ 0,
        /// TX submission queues.
        max_tx_sq_num: u32 @ 4,
        /// TX completion queues.
        max_tx_cq_num: u32 @ 8,
        /// RX submission queues.
        max_rx_sq_num: u32 @ 12,
        /// RX completion queues.
        max_rx_cq_num: u32 @ 16,
        /// TX submission depth.
        max_tx_sq_depth: u32 @ 20,
        /// TX completion depth.
        max_tx_cq_depth: u32 @ 24,
        /// RX submission depth.
        max_rx_sq_depth: u32 @ 28,
        /// RX completion depth.
        max_rx_cq_depth: u32 @ 32,
        /// Largest TX header.
        max_tx_header_size: u32 @ 36,
        /// Descriptors per TX packet, the meta descriptor included.
        max_per_packet_tx_descs: u16 @ 40,
        /// Descriptors per RX packet.
        max_per_packet_rx_descs: u16 @ 42,
    }
);

response!(
    /// `MAX_QUEUES_NUM` (`ena_admin_queue_feature_desc`).
    MaxQueues {
        /// Submission queues.
        max_sq_num: u32 @ 0,
        /// Submission depth.
        max_sq_depth: u32 @ 4,
        /// Completion queues.
        max_cq_num: u32 @ 8,
        /// Completion depth.
        max_cq_depth: u32 @ 12,
        /// Low-latency queues.
        max_legacy_llq_num: u32 @ 16,
        /// Low-latency depth.
        max_legacy_llq_depth: u32 @ 20,
        /// Largest header.
        max_header_size: u32 @ 24,
        /// Descriptors per TX packet.
        max_packet_tx_descs: u16 @ 28,
        /// Descriptors per RX packet.
        max_packet_rx_descs: u16 @ 30,
    }
);

response!(
    /// `LLQ` (`ena_admin_feature_llq_desc`): what the device offers (`*_supported`, bitfields of
    /// [`crate::abi::llq`]'s constants) and what the driver chose (`*_enabled`).
    LlqInfo {
        /// Low-latency queues.
        max_llq_num: u32 @ 0,
        /// Their depth in 128-byte entries.
        max_llq_depth: u32 @ 4,
        /// Header locations.
        header_location_ctrl_supported: u16 @ 8,
        /// The one chosen.
        header_location_ctrl_enabled: u16 @ 10,
        /// Entry sizes.
        entry_size_ctrl_supported: u16 @ 12,
        /// The one chosen.
        entry_size_ctrl_enabled: u16 @ 14,
        /// Descriptor slots before the header.
        desc_num_before_header_supported: u16 @ 16,
        /// The number chosen.
        desc_num_before_header_enabled: u16 @ 18,
        /// Stride controls.
        descriptors_stride_ctrl_supported: u16 @ 20,
        /// The one chosen.
        descriptors_stride_ctrl_enabled: u16 @ 22,
        /// Accelerated-mode flags (get: supported; set: enabled).
        accel_flags: u16 @ 28,
        /// Largest TX burst between doorbells, bytes (get only; 0: no limit).
        max_tx_burst_size: u16 @ 30,
    }
);

response!(
    /// `AENQ_CONFIG` (`ena_admin_feature_aenq_desc`).
    AenqConfig {
        /// Groups the device can report.
        supported_groups: u32 @ 0,
        /// Groups it reports.
        enabled_groups: u32 @ 4,
    }
);

response!(
    /// `STATELESS_OFFLOAD_CONFIG` (`ena_admin_feature_offload_desc`).
    Offload {
        /// TX offloads.
        tx: u32 @ 0,
        /// RX offloads supported (bit 3: RX hash).
        rx_supported: u32 @ 4,
        /// RX offloads enabled.
        rx_enabled: u32 @ 8,
    }
);

response!(
    /// `RSS_HASH_FUNCTION` (`ena_admin_feature_rss_flow_hash_function`).
    RssHashFunctionInfo {
        /// Bitmask of [`hash_function`].
        supported_func: u32 @ 0,
        /// The one in use.
        selected_func: u32 @ 4,
        /// Initial value.
        init_val: u32 @ 8,
    }
);

response!(
    /// `RSS_HASH_INPUT` (`ena_admin_feature_rss_flow_hash_input`).
    RssHashInputInfo {
        /// Sorting supported: L3 bit 1, L4 bit 2.
        supported_input_sort: u16 @ 0,
        /// Sorting enabled.
        enabled_input_sort: u16 @ 2,
    }
);

response!(
    /// `RSS_INDIRECTION_TABLE_CONFIG` (`ena_admin_feature_rss_ind_table`).
    RssIndirectionInfo {
        /// Smallest table, log2.
        min_size: u16 @ 0,
        /// Largest table, log2.
        max_size: u16 @ 2,
        /// Current table, log2.
        size: u16 @ 4,
        /// Inline entry's index (`0xFFFF_FFFF`: none).
        inline_index: u32 @ 8,
        /// Inline entry's CQ.
        inline_cq_idx: u16 @ 12,
    }
);

response!(
    /// `INTERRUPT_MODERATION` (`ena_admin_feature_intr_moder_desc`).
    InterruptModerationInfo {
        /// Delay granularity, µs (0: the device does not moderate).
        intr_delay_resolution: u16 @ 0,
    }
);

response!(
    /// `HW_HINTS` (`ena_admin_ena_hw_hints`); 0 means "use the driver's default".
    HwHints {
        /// Readless read timeout, ms.
        mmio_read_timeout: u16 @ 0,
        /// Keep-alive watchdog, ms.
        driver_watchdog_timeout: u16 @ 2,
        /// Per-packet TX completion timeout, ms.
        missing_tx_completion_timeout: u16 @ 4,
        /// Missed completions before a reset.
        missed_tx_completion_count_threshold_to_reset: u16 @ 6,
        /// Admin completion timeout, ms.
        admin_completion_tx_timeout: u16 @ 8,
        /// Stack watchdog, ms.
        netdev_wd_timeout: u16 @ 10,
        /// Largest TX scatter list.
        max_tx_sgl_size: u16 @ 12,
        /// Largest RX scatter list.
        max_rx_sgl_size: u16 @ 14,
    }
);

response!(
    /// `LINK_CONFIG` (`ena_admin_get_feature_link_desc`).
    LinkConfig {
        /// Speed, Mb/s.
        speed: u32 @ 0,
        /// Bitmap of link speeds.
        supported: u32 @ 4,
        /// Autoneg bit 0, full duplex bit 1.
        flags: u32 @ 8,
    }
);

response!(
    /// `MTU` as a `GET_FEATURE` answer (vnic: ENA defines only the set form).
    MtuInfo {
        /// MTU.
        mtu: u32 @ 0,
    }
);

response!(
    /// vnic extension: `INTERRUPT_MODERATION`'s current delays after ENA's resolution.
    ModerationDelays {
        /// Granularity, µs.
        intr_delay_resolution: u16 @ 0,
        /// TX delay, µs.
        tx_us: u32 @ 4,
        /// RX delay, µs.
        rx_us: u32 @ 8,
    }
);

/// `GET_STATS` BASIC (`ena_admin_basic_stats`), each counter as low and high words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BasicStats {
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_pkts: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_pkts: u64,
    /// Packets dropped on receive.
    pub rx_drops: u64,
    /// Packets dropped on transmit.
    pub tx_drops: u64,
}

impl ResponseBody for BasicStats {
    fn write(&self, b: &mut Body) {
        let all = [
            self.tx_bytes,
            self.tx_pkts,
            self.rx_bytes,
            self.rx_pkts,
            self.rx_drops,
            self.tx_drops,
        ];
        for (k, v) in all.into_iter().enumerate() {
            put_u32(b, 8 * k, v as u32);
            put_u32(b, 8 * k + 4, (v >> 32) as u32);
        }
    }
    fn read(b: &Body) -> Self {
        let at = |k: usize| u64_at(b, 8 * k);
        Self {
            tx_bytes: at(0),
            tx_pkts: at(1),
            rx_bytes: at(2),
            rx_pkts: at(3),
            rx_drops: at(4),
            tx_drops: at(5),
        }
    }
}

response!(
    /// `GET_STATS` ENI (`ena_admin_eni_stats`): packets shaped or dropped by the ENI's
    /// allowances, the counters `ethtool -S` shows under these names.
    EniStats {
        /// Inbound bandwidth allowance exceeded.
        bw_in_allowance_exceeded: u64 @ 0,
        /// Outbound bandwidth allowance exceeded.
        bw_out_allowance_exceeded: u64 @ 8,
        /// PPS allowance exceeded.
        pps_allowance_exceeded: u64 @ 16,
        /// Connection-tracking allowance exceeded.
        conntrack_allowance_exceeded: u64 @ 24,
        /// Link-local allowance exceeded.
        linklocal_allowance_exceeded: u64 @ 32,
    }
);

response!(
    /// `GET_STATS` ENA_SRD (`ena_admin_ena_srd_info`).
    SrdInfo {
        /// Enabled bit 0, UDP bit 1, UDP ordering bypass bit 2.
        flags: u64 @ 0,
        /// Packets sent over SRD.
        ena_srd_tx_pkts: u64 @ 8,
        /// Packets that were eligible.
        ena_srd_eligible_tx_pkts: u64 @ 16,
        /// Packets received over SRD.
        ena_srd_rx_pkts: u64 @ 24,
        /// Percentage of SRD resources in use.
        ena_srd_resource_utilization: u64 @ 32,
    }
);

/// The RSS key as it travels in a control buffer (`ena_admin_feature_rss_flow_hash_control`:
/// key_parts, reserved, ten 32-bit words; 48 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssHashKey {
    /// The 40-byte Toeplitz key.
    pub key: [u8; 40],
}

impl RssHashKey {
    /// Bytes in a control buffer.
    pub const BYTES: usize = 48;
    const PARTS: u32 = 10;

    /// Its bytes.
    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        put_u32(&mut b, 0, Self::PARTS);
        b[8..48].copy_from_slice(&self.key);
        b
    }

    /// The key in `b`; `None` unless it has ten parts.
    pub fn decode(b: &[u8; Self::BYTES]) -> Option<Self> {
        if u32_at(b, 0) != Self::PARTS {
            return None;
        }
        let mut key = [0u8; 40];
        key.copy_from_slice(&b[8..48]);
        Some(Self { key })
    }
}

/// Protocols RSS distinguishes (`ena_admin_flow_hash_proto`).
pub mod hash_proto {
    /// TCP over IPv4.
    pub const TCP4: usize = 0;
    /// UDP over IPv4.
    pub const UDP4: usize = 1;
    /// Other IPv4.
    pub const IP4: usize = 4;
    /// Not IP.
    pub const NOT_IP: usize = 7;
    /// Slots in the table.
    pub const COUNT: usize = 16;
}

/// Header fields RSS hashes (`ena_admin_flow_hash_fields`).
pub mod hash_field {
    /// IP destination.
    pub const L3_DA: u16 = 1 << 2;
    /// IP source.
    pub const L3_SA: u16 = 1 << 3;
    /// L4 destination port.
    pub const L4_DP: u16 = 1 << 4;
    /// L4 source port.
    pub const L4_SP: u16 = 1 << 5;
}

/// The hash input per protocol in a control buffer (`ena_admin_feature_rss_hash_control`: 16
/// supported, 16 selected and 32 reserved `{u16 fields; u16 reserved}`; 256 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RssHashControl {
    /// Fields the device can hash, per [`hash_proto`].
    pub supported: [u16; hash_proto::COUNT],
    /// Fields it hashes.
    pub selected: [u16; hash_proto::COUNT],
}

impl RssHashControl {
    /// Bytes in a control buffer.
    pub const BYTES: usize = 256;

    /// Its bytes.
    pub fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        for p in 0..hash_proto::COUNT {
            put_u16(&mut b, 4 * p, self.supported[p]);
            put_u16(&mut b, 64 + 4 * p, self.selected[p]);
        }
        b
    }

    /// The control in `b`.
    pub fn decode(b: &[u8; Self::BYTES]) -> Self {
        let mut c = Self::default();
        for p in 0..hash_proto::COUNT {
            c.supported[p] = u16_at(b, 4 * p);
            c.selected[p] = u16_at(b, 64 + 4 * p);
        }
        c
    }
}

/// One indirection table entry in a control buffer (`ena_admin_rss_ind_table_entry`: the RX
/// completion queue's index, 2 reserved bytes).
pub const RSS_INDIRECTION_ENTRY_BYTES: usize = 4;

/// Writes the RX CQ indices of a table into control-buffer bytes.
pub fn encode_indirection(cq_idx: &[u16]) -> Vec<u8> {
    let mut b = vec![0u8; cq_idx.len() * RSS_INDIRECTION_ENTRY_BYTES];
    for (i, &cq) in cq_idx.iter().enumerate() {
        put_u16(&mut b, i * RSS_INDIRECTION_ENTRY_BYTES, cq);
    }
    b
}

/// The RX CQ indices of a table in control-buffer bytes.
pub fn decode_indirection(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(RSS_INDIRECTION_ENTRY_BYTES).map(|c| u16_at(c, 0)).collect()
}

/// What a set of feature ids looks like as `supported_features`.
pub const fn feature_bits(ids: &[u8]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < ids.len() {
        bits |= 1 << ids[i];
        i += 1;
    }
    bits
}
