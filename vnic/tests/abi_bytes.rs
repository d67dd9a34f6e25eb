//! Known answers for `vnic::abi`, byte by byte. The expected bytes are built here from the C
//! structs of the public ENA headers (`ena_admin_defs.h`, `ena_common_defs.h`, `ena_regs_defs.h`),
//! written out below field by field with their C types and laid out by C's rules (each field at
//! the next multiple of its alignment), and from the bit positions the headers' comments give:
//! nothing is taken from the encoder under test, so a wrong offset or shift cannot hide in the
//! expected value.

use vnic::abi::admin::{self, *};
use vnic::abi::aenq::{AenqEntry, Event};
use vnic::abi::regs::ReadlessResponse;
use vnic::frame::MacAddr;

/// A C field: its name and type (`u8`, `u16`, `u32`, `u64`, with an optional `[n]`).
type Field = (&'static str, &'static str);

/// `struct ena_common_mem_addr` with its fields prefixed by `name`.
fn mem_addr(name: &'static str) -> [Field; 3] {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    [
        (leak(format!("{name}.mem_addr_low")), "u32"),
        (leak(format!("{name}.mem_addr_high")), "u16"),
        (leak(format!("{name}.reserved16")), "u16"),
    ]
}

/// `struct ena_admin_aq_common_desc`.
const AQ_COMMON: [Field; 3] = [("command_id", "u16"), ("opcode", "u8"), ("flags", "u8")];
/// `struct ena_admin_acq_common_desc`.
const ACQ_COMMON: [Field; 5] = [
    ("command", "u16"),
    ("status", "u8"),
    ("flags", "u8"),
    ("extended_status", "u16"),
    ("sq_head_indx", "u16"),
];

fn size_align(ty: &str) -> (usize, usize) {
    let (base, count) = match ty.split_once('[') {
        Some((b, n)) => (b, n.trim_end_matches(']').parse::<usize>().unwrap()),
        None => (ty, 1),
    };
    let size = match base {
        "u8" => 1,
        "u16" => 2,
        "u32" => 4,
        "u64" => 8,
        other => panic!("type {other}"),
    };
    (size * count, size)
}

/// Each field's (offset, size) by C's layout rules.
fn layout(fields: &[Field]) -> Vec<(&'static str, usize, usize)> {
    let mut at = 0usize;
    fields
        .iter()
        .map(|&(name, ty)| {
            let (size, align) = size_align(ty);
            at = at.div_ceil(align) * align;
            let placed = (name, at, size);
            at += size;
            placed
        })
        .collect()
}

/// The struct's bytes with `values` (little endian; byte strings for arrays), padded to `len`.
fn bytes(fields: &[Field], values: &[(&str, Value)], len: usize) -> Vec<u8> {
    let placed = layout(fields);
    for (i, f) in fields.iter().enumerate() {
        assert!(fields[..i].iter().all(|g| g.0 != f.0), "field {} named twice", f.0);
    }
    let mut out = vec![0u8; len];
    for (name, value) in values {
        let &(_, at, size) =
            placed.iter().find(|(n, ..)| n == name).unwrap_or_else(|| panic!("no field {name}"));
        match value {
            Value::N(v) => out[at..at + size].copy_from_slice(&v.to_le_bytes()[..size]),
            Value::B(b) => out[at..at + b.len()].copy_from_slice(b),
        }
    }
    out
}

enum Value {
    N(u64),
    B(&'static [u8]),
}
use Value::{B, N};

fn cat(parts: &[&[Field]]) -> Vec<Field> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

const ADDR: u64 = 0xa1b2_c3d4_e5f6; // 48 bits
const ADDR_LO: u64 = 0xc3d4_e5f6;
const ADDR_HI: u64 = 0xa1b2;

fn check_command(cmd: Command, id: u16, phase: bool, expected: Vec<u8>) {
    let entry = cmd.encode(id, phase);
    assert_eq!(entry.to_vec(), expected, "{cmd:?}");
    let back: [u8; 64] = expected.try_into().unwrap();
    assert_eq!(Command::decode(&back).unwrap(), cmd);
}

#[test]
fn create_sq_is_ena_admin_aq_create_sq_cmd() {
    let fields = cat(&[
        &AQ_COMMON,
        &[("sq_identity", "u8"), ("reserved8_w1", "u8"), ("sq_caps_2", "u8"), ("sq_caps_3", "u8")],
        &[("cq_idx", "u16"), ("sq_depth", "u16")],
        &mem_addr("sq_ba"),
        &mem_addr("sq_head_writeback"),
        &[("reserved0_w7", "u32"), ("reserved0_w8", "u32")],
    ]);
    // sq_identity 7:5 direction (2 RX); sq_caps_2 3:0 placement (3 device), 6:4 completion
    // policy (1 on demand); sq_caps_3 bit 0 contiguous; flags bit 0 phase.
    let expected = bytes(
        &fields,
        &[
            ("command_id", N(0x0abc)),
            ("opcode", N(1)),
            ("flags", N(1)),
            ("sq_identity", N(2 << 5)),
            ("sq_caps_2", N(3 | 1 << 4)),
            ("sq_caps_3", N(1)),
            ("cq_idx", N(0x0203)),
            ("sq_depth", N(1024)),
            ("sq_ba.mem_addr_low", N(ADDR_LO)),
            ("sq_ba.mem_addr_high", N(ADDR_HI)),
            ("sq_head_writeback.mem_addr_low", N(0x40)),
        ],
        64,
    );
    let cmd = Command::CreateSq(CreateSq {
        direction: Direction::Rx,
        placement: Placement::Device,
        completion_policy: CompletionPolicy::DescOnDemand,
        physically_contiguous: true,
        cq_idx: 0x0203,
        depth: 1024,
        ring_base: ADDR,
        head_writeback: 0x40,
    });
    check_command(cmd, 0x0abc, true, expected);
    // The command id is 12 bits (11:0).
    assert_eq!(cmd.encode(0xfabc, false)[..2], 0x0abcu16.to_le_bytes());
}

#[test]
fn create_cq_and_the_destroys_are_enas() {
    let fields = cat(&[
        &AQ_COMMON,
        &[("cq_caps_1", "u8"), ("cq_caps_2", "u8"), ("cq_depth", "u16"), ("msix_vector", "u32")],
        &mem_addr("cq_ba"),
    ]);
    // cq_caps_1 bit 5 interrupt mode; cq_caps_2 4:0 entry size in words.
    let expected = bytes(
        &fields,
        &[
            ("command_id", N(5)),
            ("opcode", N(3)),
            ("cq_caps_1", N(1 << 5)),
            ("cq_caps_2", N(4)),
            ("cq_depth", N(512)),
            ("msix_vector", N(0x0102_0304)),
            ("cq_ba.mem_addr_low", N(ADDR_LO)),
            ("cq_ba.mem_addr_high", N(ADDR_HI)),
        ],
        64,
    );
    let cmd = Command::CreateCq(CreateCq {
        interrupt_mode: true,
        entry_words: 4,
        depth: 512,
        msix_vector: 0x0102_0304,
        ring_base: ADDR,
    });
    check_command(cmd, 5, false, expected);

    let fields =
        cat(&[&AQ_COMMON, &[("sq_idx", "u16"), ("sq_identity", "u8"), ("reserved1", "u8")]]);
    let expected = bytes(
        &fields,
        &[("command_id", N(6)), ("opcode", N(2)), ("sq_idx", N(7)), ("sq_identity", N(1 << 5))],
        64,
    );
    check_command(Command::DestroySq { sq_idx: 7, direction: Direction::Tx }, 6, false, expected);

    let fields = cat(&[&AQ_COMMON, &[("cq_idx", "u16"), ("reserved1", "u16")]]);
    let expected = bytes(
        &fields,
        &[("command_id", N(8)), ("opcode", N(4)), ("flags", N(1)), ("cq_idx", N(0x0102))],
        64,
    );
    check_command(Command::DestroyCq { cq_idx: 0x0102 }, 8, true, expected);
}

/// `struct ena_admin_get_feat_cmd` / `ena_admin_set_feat_cmd` up to their value.
fn feat_cmd() -> Vec<Field> {
    cat(&[
        &AQ_COMMON,
        &[("control_buffer.length", "u32")],
        &mem_addr("control_buffer.address"),
        &[("feat.flags", "u8"), ("feat.feature_id", "u8"), ("feat.feature_version", "u8")],
        &[("feat.reserved8", "u8")],
    ])
}

#[test]
fn get_and_set_feature_are_enas() {
    let expected = bytes(
        &feat_cmd(),
        &[
            ("command_id", N(1)),
            ("opcode", N(8)),
            ("feat.feature_id", N(7)),
            ("feat.feature_version", N(1)),
        ],
        64,
    );
    let get = GetFeature { feature: feature::MAX_QUEUES_EXT, version: 1, control: None };
    check_command(Command::GetFeature(get), 1, false, expected);

    // With a control buffer: flags bit 2 (ctrl_data_indirect), as ENA's driver sets it.
    let expected = bytes(
        &feat_cmd(),
        &[
            ("command_id", N(2)),
            ("opcode", N(8)),
            ("flags", N(1 | 1 << 2)),
            ("control_buffer.length", N(512)),
            ("control_buffer.address.mem_addr_low", N(ADDR_LO)),
            ("control_buffer.address.mem_addr_high", N(ADDR_HI)),
            ("feat.feature_id", N(12)),
        ],
        64,
    );
    let control = Some(ControlBuffer { length: 512, address: ADDR });
    let get = GetFeature { feature: feature::RSS_INDIRECTION_TABLE_CONFIG, version: 0, control };
    check_command(Command::GetFeature(get), 2, true, expected);

    // SET MTU: `struct ena_admin_set_feature_mtu_desc { u32 mtu; }` after the common part.
    let mtu = cat(&[&feat_cmd(), &[("mtu", "u32")]]);
    let expected = bytes(
        &mtu,
        &[("command_id", N(3)), ("opcode", N(9)), ("feat.feature_id", N(14)), ("mtu", N(9001))],
        64,
    );
    check_command(Command::SetFeature(SetFeature::Mtu(9001)), 3, false, expected);

    // SET AENQ_CONFIG: `ena_admin_feature_aenq_desc { supported_groups; enabled_groups; }`.
    let aenq = cat(&[&feat_cmd(), &[("supported_groups", "u32"), ("enabled_groups", "u32")]]);
    let expected = bytes(
        &aenq,
        &[
            ("command_id", N(4)),
            ("opcode", N(9)),
            ("feat.feature_id", N(26)),
            ("enabled_groups", N(0x11)),
        ],
        64,
    );
    let cmd = Command::SetFeature(SetFeature::AenqConfig { enabled_groups: 0x11 });
    check_command(cmd, 4, false, expected);

    // SET RSS_HASH_FUNCTION: `ena_admin_feature_rss_flow_hash_function`, key in the buffer.
    let func = cat(&[
        &feat_cmd(),
        &[("supported_func", "u32"), ("selected_func", "u32"), ("init_val", "u32")],
    ]);
    let expected = bytes(
        &func,
        &[
            ("command_id", N(5)),
            ("opcode", N(9)),
            ("flags", N(1 << 2)),
            ("control_buffer.length", N(48)),
            ("control_buffer.address.mem_addr_low", N(0x1000)),
            ("feat.feature_id", N(10)),
            ("selected_func", N(1)),
            ("init_val", N(0xffff_ffff)),
        ],
        64,
    );
    let key = ControlBuffer { length: 48, address: 0x1000 };
    let cmd =
        Command::SetFeature(SetFeature::RssHashFunction { selected: 1, init_val: u32::MAX, key });
    check_command(cmd, 5, false, expected);

    // SET RSS_INDIRECTION_TABLE_CONFIG: `ena_admin_feature_rss_ind_table`, inline entry; an
    // inline index of 0xFFFFFFFF means none.
    let table = cat(&[
        &feat_cmd(),
        &[("min_size", "u16"), ("max_size", "u16"), ("size", "u16"), ("reserved", "u16")],
        &[
            ("inline_index", "u32"),
            ("inline_entry.cq_idx", "u16"),
            ("inline_entry.reserved", "u16"),
        ],
    ]);
    let expected = bytes(
        &table,
        &[
            ("command_id", N(6)),
            ("opcode", N(9)),
            ("feat.feature_id", N(12)),
            ("size", N(7)),
            ("inline_index", N(3)),
            ("inline_entry.cq_idx", N(9)),
        ],
        64,
    );
    let one = SetFeature::RssIndirectionTable { log_size: 7, inline: Some((3, 9)), table: None };
    check_command(Command::SetFeature(one), 6, false, expected);
    let whole = SetFeature::RssIndirectionTable {
        log_size: 7,
        inline: None,
        table: Some(ControlBuffer { length: 512, address: 0x2000 }),
    };
    let e = Command::SetFeature(whole).encode(7, false);
    let at = layout(&table).iter().find(|f| f.0 == "inline_index").unwrap().1;
    assert_eq!(e[at..at + 4], [0xff; 4]);
    assert_eq!(Command::decode(&e).unwrap(), Command::SetFeature(whole));
}

#[test]
fn get_stats_is_ena_admin_aq_get_stats_cmd() {
    let fields = cat(&[
        &AQ_COMMON,
        &[("control_buffer.length", "u32")],
        &mem_addr("control_buffer.address"),
        &[("type", "u8"), ("scope", "u8"), ("reserved3", "u16"), ("queue_idx", "u16")],
        &[("device_id", "u16"), ("requested_metrics", "u64")],
    ]);
    let expected = bytes(
        &fields,
        &[
            ("command_id", N(9)),
            ("opcode", N(11)),
            ("flags", N(1 << 2)),
            ("control_buffer.length", N(40)),
            ("control_buffer.address.mem_addr_low", N(0x3000)),
            ("type", N(4)),
            ("scope", N(1)),
            ("queue_idx", N(2)),
            ("device_id", N(0xffff)),
            ("requested_metrics", N(0x1f)),
        ],
        64,
    );
    let cmd = Command::GetStats(GetStats {
        stats_type: stats_type::CUSTOMER_METRICS,
        scope: 1,
        queue_idx: 2,
        device_id: 0xffff,
        requested_metrics: 0x1f,
        control: Some(ControlBuffer { length: 40, address: 0x3000 }),
    });
    check_command(cmd, 9, false, expected);
}

fn check_response<R: ResponseBody + PartialEq + std::fmt::Debug>(
    fields: &[Field],
    values: &[(&str, Value)],
    response: R,
) {
    let all = cat(&[&ACQ_COMMON, fields]);
    let mut header: Vec<(&str, Value)> =
        vec![("command", N(0x0123)), ("status", N(0)), ("flags", N(1)), ("sq_head_indx", N(33))];
    header.extend(values.iter().map(|(n, v)| {
        (
            *n,
            match v {
                N(x) => N(*x),
                B(b) => B(b),
            },
        )
    }));
    let expected = bytes(&all, &header, 64);
    let c = Completion {
        command_id: 0x0123,
        status: 0,
        phase: true,
        extended_status: 0,
        sq_head: 33,
        body: response.body(),
    };
    assert_eq!(c.encode().to_vec(), expected, "{response:?}");
    let back = Completion::decode(&expected.try_into().unwrap());
    assert_eq!(back, c);
    assert_eq!(back.response::<R>(), response);
}

#[test]
fn completions_are_enas_response_structs() {
    check_response(
        &[("sq_idx", "u16"), ("reserved", "u16"), ("sq_doorbell_offset", "u32")],
        &[("sq_idx", N(3)), ("sq_doorbell_offset", N(0x100c))],
        CreateSqResponse { sq_idx: 3, sq_doorbell_offset: 0x100c, ..Default::default() },
    );
    check_response(
        &[
            ("sq_idx", "u16"),
            ("reserved", "u16"),
            ("sq_doorbell_offset", "u32"),
            ("llq_descriptors_offset", "u32"),
            ("llq_headers_offset", "u32"),
        ],
        &[("llq_descriptors_offset", N(0x8000)), ("llq_headers_offset", N(0x9000))],
        CreateSqResponse {
            llq_descriptors_offset: 0x8000,
            llq_headers_offset: 0x9000,
            ..Default::default()
        },
    );
    check_response(
        &[
            ("cq_idx", "u16"),
            ("cq_actual_depth", "u16"),
            ("numa_node_register_offset", "u32"),
            ("cq_head_db_register_offset", "u32"),
            ("cq_interrupt_unmask_register_offset", "u32"),
        ],
        &[
            ("cq_idx", N(4)),
            ("cq_actual_depth", N(1024)),
            ("numa_node_register_offset", N(0x11)),
            ("cq_head_db_register_offset", N(0x1810)),
            ("cq_interrupt_unmask_register_offset", N(0x1c10)),
        ],
        CreateCqResponse {
            cq_idx: 4,
            cq_actual_depth: 1024,
            numa_node_register_offset: 0x11,
            cq_head_db_register_offset: 0x1810,
            cq_interrupt_unmask_register_offset: 0x1c10,
        },
    );
    // ena_admin_device_attr_feature_desc.
    check_response(
        &[
            ("impl_id", "u32"),
            ("device_version", "u32"),
            ("supported_features", "u32"),
            ("capabilities", "u32"),
            ("phys_addr_width", "u32"),
            ("virt_addr_width", "u32"),
            ("mac_addr", "u8[6]"),
            ("reserved7", "u8[2]"),
            ("max_mtu", "u32"),
        ],
        &[
            ("impl_id", N(1)),
            ("device_version", N(2)),
            ("supported_features", N(1 << 1 | 1 << 7)),
            ("capabilities", N(0b111)),
            ("phys_addr_width", N(48)),
            ("virt_addr_width", N(48)),
            ("mac_addr", B(&[0x02, 0, 0, 0, 0, 0x2a])),
            ("max_mtu", N(9216)),
        ],
        DeviceAttributes {
            impl_id: 1,
            device_version: 2,
            supported_features: 1 << 1 | 1 << 7,
            capabilities: 0b111,
            phys_addr_width: 48,
            virt_addr_width: 48,
            mac: MacAddr([0x02, 0, 0, 0, 0, 0x2a]),
            max_mtu: 9216,
        },
    );
    // ena_admin_queue_ext_feature_desc: a version byte, 3 reserved, then the fields.
    check_response(
        &[
            ("version", "u8"),
            ("reserved1", "u8[3]"),
            ("max_tx_sq_num", "u32"),
            ("max_tx_cq_num", "u32"),
            ("max_rx_sq_num", "u32"),
            ("max_rx_cq_num", "u32"),
            ("max_tx_sq_depth", "u32"),
            ("max_tx_cq_depth", "u32"),
            ("max_rx_sq_depth", "u32"),
            ("max_rx_cq_depth", "u32"),
            ("max_tx_header_size", "u32"),
            ("max_per_packet_tx_descs", "u16"),
            ("max_per_packet_rx_descs", "u16"),
        ],
        &[
            ("version", N(1)),
            ("max_tx_sq_num", N(8)),
            ("max_rx_cq_num", N(9)),
            ("max_tx_cq_depth", N(1024)),
            ("max_rx_sq_depth", N(16384)),
            ("max_tx_header_size", N(96)),
            ("max_per_packet_tx_descs", N(19)),
            ("max_per_packet_rx_descs", N(64)),
        ],
        MaxQueuesExt {
            version: 1,
            max_tx_sq_num: 8,
            max_rx_cq_num: 9,
            max_tx_cq_depth: 1024,
            max_rx_sq_depth: 16384,
            max_tx_header_size: 96,
            max_per_packet_tx_descs: 19,
            max_per_packet_rx_descs: 64,
            ..Default::default()
        },
    );
    // ena_admin_ena_hw_hints.
    check_response(
        &[
            ("mmio_read_timeout", "u16"),
            ("driver_watchdog_timeout", "u16"),
            ("missing_tx_completion_timeout", "u16"),
            ("missed_tx_completion_count_threshold_to_reset", "u16"),
            ("admin_completion_tx_timeout", "u16"),
            ("netdev_wd_timeout", "u16"),
            ("max_tx_sgl_size", "u16"),
            ("max_rx_sgl_size", "u16"),
        ],
        &[
            ("driver_watchdog_timeout", N(6000)),
            ("admin_completion_tx_timeout", N(300)),
            ("max_rx_sgl_size", N(7)),
        ],
        HwHints {
            driver_watchdog_timeout: 6000,
            admin_completion_tx_timeout: 300,
            max_rx_sgl_size: 7,
            ..Default::default()
        },
    );
    check_response(
        &[("supported_groups", "u32"), ("enabled_groups", "u32")],
        &[("supported_groups", N(0x11)), ("enabled_groups", N(0x10))],
        AenqConfig { supported_groups: 0x11, enabled_groups: 0x10 },
    );
    check_response(
        &[
            ("min_size", "u16"),
            ("max_size", "u16"),
            ("size", "u16"),
            ("reserved", "u16"),
            ("inline_index", "u32"),
            ("inline_entry.cq_idx", "u16"),
        ],
        &[("min_size", N(7)), ("max_size", N(7)), ("size", N(7)), ("inline_index", N(0xffff_ffff))],
        RssIndirectionInfo {
            min_size: 7,
            max_size: 7,
            size: 7,
            inline_index: u32::MAX,
            inline_cq_idx: 0,
        },
    );
}

#[test]
fn statistics_are_enas_basic_eni_and_srd_structs() {
    // ena_admin_basic_stats: each counter as _low then _high.
    let names = ["tx_bytes", "tx_pkts", "rx_bytes", "rx_pkts", "rx_drops", "tx_drops"];
    let fields: Vec<Field> = names
        .iter()
        .flat_map(|n| {
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            [(leak(format!("{n}_low")), "u32"), (leak(format!("{n}_high")), "u32")]
        })
        .collect();
    let v = |k: u64| 0x0000_0007_0000_0000 * (k + 1) + k;
    let values: Vec<(&str, Value)> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let k = (i / 2) as u64;
            (f.0, N(if i % 2 == 0 { v(k) & 0xffff_ffff } else { v(k) >> 32 }))
        })
        .collect();
    check_response(
        &fields,
        &values,
        BasicStats {
            tx_bytes: v(0),
            tx_pkts: v(1),
            rx_bytes: v(2),
            rx_pkts: v(3),
            rx_drops: v(4),
            tx_drops: v(5),
        },
    );
    // ena_admin_eni_stats: five u64, in the order ethtool -S lists them.
    check_response(
        &[
            ("bw_in_allowance_exceeded", "u64"),
            ("bw_out_allowance_exceeded", "u64"),
            ("pps_allowance_exceeded", "u64"),
            ("conntrack_allowance_exceeded", "u64"),
            ("linklocal_allowance_exceeded", "u64"),
        ],
        &[
            ("bw_in_allowance_exceeded", N(1)),
            ("bw_out_allowance_exceeded", N(2 << 40)),
            ("pps_allowance_exceeded", N(3)),
            ("conntrack_allowance_exceeded", N(4)),
            ("linklocal_allowance_exceeded", N(5)),
        ],
        EniStats {
            bw_in_allowance_exceeded: 1,
            bw_out_allowance_exceeded: 2 << 40,
            pps_allowance_exceeded: 3,
            conntrack_allowance_exceeded: 4,
            linklocal_allowance_exceeded: 5,
        },
    );
    // ena_admin_ena_srd_info: flags, then ena_admin_ena_srd_stats.
    check_response(
        &[
            ("info.flags", "u64"),
            ("ena_srd_tx_pkts", "u64"),
            ("ena_srd_eligible_tx_pkts", "u64"),
            ("ena_srd_rx_pkts", "u64"),
            ("ena_srd_resource_utilization", "u64"),
        ],
        &[
            ("info.flags", N(0b11)),
            ("ena_srd_eligible_tx_pkts", N(9)),
            ("ena_srd_resource_utilization", N(42)),
        ],
        SrdInfo {
            flags: 0b11,
            ena_srd_eligible_tx_pkts: 9,
            ena_srd_resource_utilization: 42,
            ..Default::default()
        },
    );
}

#[test]
fn control_buffers_and_events_are_enas() {
    // ena_admin_feature_rss_flow_hash_control: key_parts, reserved, u32 key[10].
    let key: [u8; 40] = std::array::from_fn(|i| i as u8 + 1);
    let fields = [("key_parts", "u32"), ("reserved", "u32"), ("key", "u8[40]")];
    let leaked: &'static [u8] = Box::leak(Box::new(key));
    let expected = bytes(&fields, &[("key_parts", N(10)), ("key", B(leaked))], 48);
    assert_eq!(RssHashKey { key }.encode().to_vec(), expected);
    assert_eq!(RssHashKey::decode(&expected.clone().try_into().unwrap()), Some(RssHashKey { key }));
    // ena_admin_rss_ind_table_entry: u16 cq_idx, u16 reserved.
    assert_eq!(admin::encode_indirection(&[1, 0x0203]), vec![1, 0, 0, 0, 3, 2, 0, 0]);
    // ena_admin_feature_rss_hash_control: 16 supported, then 16 selected ena_admin_proto_input.
    let mut c = RssHashControl::default();
    c.supported[hash_proto::UDP4] = 0x3c;
    c.selected[hash_proto::NOT_IP] = 0x3;
    let b = c.encode();
    assert_eq!(u16::from_le_bytes([b[4], b[5]]), 0x3c, "supported_fields[1].fields");
    assert_eq!(u16::from_le_bytes([b[64 + 28], b[64 + 29]]), 0x3, "selected_fields[7].fields");
    assert_eq!(RssHashControl::decode(&b), c);

    // ena_admin_aenq_common_desc, then the group's data.
    let common = [
        ("group", "u16"),
        ("syndrome", "u16"),
        ("flags", "u8"),
        ("reserved1", "u8[3]"),
        ("timestamp_low", "u32"),
        ("timestamp_high", "u32"),
    ];
    let link = cat(&[&common, &[("link_flags", "u32")]]);
    let expected = bytes(
        &link,
        &[
            ("group", N(0)),
            ("flags", N(1)),
            ("timestamp_low", N(0x89ab_cdef)),
            ("timestamp_high", N(0x0123_4567)),
            ("link_flags", N(1)),
        ],
        64,
    );
    let e = AenqEntry {
        event: Event::LinkChange { up: true },
        phase: true,
        timestamp: 0x0123_4567_89ab_cdef,
    };
    assert_eq!(e.encode().to_vec(), expected);
    assert_eq!(AenqEntry::decode(&expected.try_into().unwrap()), e);
    let keep_alive = cat(&[
        &common,
        &[
            ("rx_drops_low", "u32"),
            ("rx_drops_high", "u32"),
            ("tx_drops_low", "u32"),
            ("tx_drops_high", "u32"),
        ],
    ]);
    let expected = bytes(
        &keep_alive,
        &[("group", N(4)), ("rx_drops_low", N(5)), ("rx_drops_high", N(1)), ("tx_drops_low", N(6))],
        64,
    );
    let e = AenqEntry {
        event: Event::KeepAlive { rx_drops: 1 << 32 | 5, tx_drops: 6 },
        phase: false,
        timestamp: 0,
    };
    assert_eq!(e.encode().to_vec(), expected);

    // ena_admin_ena_mmio_req_read_less_resp: u16 req_id, u16 reg_off, u32 reg_val.
    let fields = [("req_id", "u16"), ("reg_off", "u16"), ("reg_val", "u32")];
    let expected = bytes(
        &fields,
        &[("req_id", N(0xbeef)), ("reg_off", N(0x58)), ("reg_val", N(0x0102_0304))],
        8,
    );
    let r = ReadlessResponse { req_id: 0xbeef, reg_off: 0x58, reg_val: 0x0102_0304 };
    assert_eq!(r.encode().to_vec(), expected);
    assert_eq!(ReadlessResponse::decode(&expected.try_into().unwrap()), r);
    // MMIO_REG_READ: request id 15:0, offset 31:16.
    assert_eq!(vnic::abi::regs::readless_request(0x58, 7), 0x0058_0007);
}

#[test]
fn register_offsets_are_enas() {
    use vnic::abi::regs::*;
    let offsets = [
        (VERSION, 0x00),
        (CONTROLLER_VERSION, 0x04),
        (CAPS, 0x08),
        (CAPS_EXT, 0x0c),
        (AQ_BASE_LO, 0x10),
        (AQ_BASE_HI, 0x14),
        (AQ_CAPS, 0x18),
        (ACQ_BASE_LO, 0x20),
        (ACQ_BASE_HI, 0x24),
        (ACQ_CAPS, 0x28),
        (AQ_DB, 0x2c),
        (ACQ_TAIL, 0x30),
        (AENQ_CAPS, 0x34),
        (AENQ_BASE_LO, 0x38),
        (AENQ_BASE_HI, 0x3c),
        (AENQ_HEAD_DB, 0x40),
        (AENQ_TAIL, 0x44),
        (INTR_MASK, 0x4c),
        (DEV_CTL, 0x54),
        (DEV_STS, 0x58),
        (MMIO_REG_READ, 0x5c),
        (MMIO_RESP_LO, 0x60),
        (MMIO_RESP_HI, 0x64),
        (RSS_IND_ENTRY_UPDATE, 0x68),
    ];
    for (ours, enas) in offsets {
        assert_eq!(ours, enas);
    }
    // ena_regs_defs.h masks: CAPS reset timeout 0x3e, DMA width 0xff00, admin timeout 0xf0000;
    // DEV_STS ready 0x1, reset in progress 0x8, fatal 0x20; DEV_CTL reset reason 0xf0000000.
    assert_eq!(caps::RESET_TIMEOUT_MASK, 0x3e);
    assert_eq!(caps::DMA_ADDR_WIDTH_MASK, 0xff00);
    assert_eq!(caps::ADMIN_CMD_TO_MASK, 0xf0000);
    assert_eq!(
        (dev_sts::READY, dev_sts::RESET_IN_PROGRESS, dev_sts::FATAL_ERROR),
        (0x1, 0x8, 0x20)
    );
    assert_eq!(0xfu32 << dev_ctl::RESET_REASON_SHIFT, 0xf000_0000);
}
