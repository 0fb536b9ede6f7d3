//! NetFlow v9 / IPFIX from firewalls and routers of several makes (logstash-codec-netflow's
//! spec fixtures, see tests/data/README.md), decoded with the values logstash's spec asserts.

use std::net::IpAddr;

use exflow::decode::{DecodeCounters, Decoder, DecoderConfig, DecoderLimits, FlowKind, FlowRecord};

use crate::support::data;

/// Decodes logstash fixtures (one UDP payload each) in order, as one exporter.
fn decode_dats(names: &[&str]) -> (Vec<FlowRecord>, DecodeCounters) {
    decode_dats_with(names, DecoderConfig::default())
}

fn decode_dats_with(names: &[&str], config: DecoderConfig) -> (Vec<FlowRecord>, DecodeCounters) {
    let mut decoder = Decoder::new(config);
    let mut records = Vec::new();
    for name in names {
        let bytes = std::fs::read(data(&format!("logstash/{name}.dat"))).unwrap();
        let _ = decoder.decode("192.0.2.7".parse().unwrap(), 1, &bytes, &mut records);
    }
    (records, decoder.totals())
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Palo Alto PAN-OS 8.1: one data flowset in a datagram zero-filled to 1400 bytes. The zeros
/// after the last flowset are padding, not a bad set (logstash: one record, kerberos).
#[test]
fn palo_alto_zero_filled_datagram_is_padding() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_paloalto_81_tpl256-263",
        "netflow9_test_paloalto_81_data257_1flowset_in_large_zerofilled_packet",
    ]);
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("134.220.2.6"), ip("134.220.1.156"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 88, 50234));
    assert_eq!((r.bytes, r.packets, r.tcp_flags), (363, 3, 94));
    assert_eq!((r.in_if, r.out_if), (500_010_024, 500_010_002));
    assert_eq!(r.sequence_num, 970_830_115);
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// Cisco ASA NSEL (NetFlow v9 with firewall events): 14 records (logstash: 14); the second is
/// connection 8501, ICMP 192.168.23.22 -> 164.164.37.11 from interface 2 to 3, 56 bytes in
/// IE 85 (in_permanent_bytes), flowStartMilliseconds 1444384068169 and the event time
/// (observationTimeMilliseconds, IE 323) 1444384070179 as its end.
#[test]
fn cisco_asa_nsel_totals_and_event_time() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_cisco_asa_1_tpl",
        "netflow9_test_cisco_asa_1_data",
    ]);
    assert_eq!(records.len(), 14);
    let r = records[1];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("192.168.23.22"), ip("164.164.37.11"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (1, 17549, 0));
    assert_eq!((r.in_if, r.out_if), (2, 3));
    assert_eq!(r.bytes, 56);
    assert_eq!(r.time_flow_start_ns, 1_444_384_068_169_000_000);
    assert_eq!(r.time_flow_end_ns, 1_444_384_070_179_000_000);
    // logstash: fw_event 2 (flow deleted), xlate addresses and ports as the real ones.
    assert_eq!(r.firewall_event, 2);
    assert!(r.ends_flow());
    assert_eq!(
        (r.post_nat_src_addr, r.post_nat_dst_addr),
        (ip("192.168.23.22"), ip("164.164.37.11"))
    );
    assert_eq!((r.post_nat_src_port, r.post_nat_dst_port), (17549, 0));
    // A teardown seen first is the connection's whole volume: not a continuation.
    assert!(!r.continues_flow);
    assert_eq!(counters.errors.total(), 0);
}

/// Cisco ASA NSEL #2: initiator/responder octets (IE 231/232, logstash's fwd/rev flow delta
/// bytes). 19 records; the last is connection 742820223, 192.168.0.1:56651 -> 192.168.0.18:80,
/// 69 bytes forward and 14178 back, in its teardown (fw_event 2). The trace is ASA's event
/// sequence per connection: create (1, no bytes), the update at teardown (5, the last
/// interval's bytes) and the teardown (2, the connection's total): summed as sent, every
/// connection would count twice.
#[test]
fn cisco_asa_nsel_initiator_and_responder_octets() {
    let names = [
        "netflow9_test_cisco_asa_2_tpl_26x",
        "netflow9_test_cisco_asa_2_tpl_27x",
        "netflow9_test_cisco_asa_2_data",
    ];
    // As exported (nothing tracked): logstash's values.
    let raw_config = DecoderConfig {
        limits: DecoderLimits {
            max_tracked_connections: 0,
            ..DecoderLimits::default()
        },
        ..DecoderConfig::default()
    };
    let (raw, _) = decode_dats_with(&names, raw_config);
    assert_eq!(raw.len(), 19);
    let r = raw[18];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("192.168.0.1"), ip("192.168.0.18"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 56651, 80));
    assert_eq!((r.in_if, r.out_if), (3, 4));
    assert_eq!((r.bytes, r.reverse_bytes, r.firewall_event), (69, 14178, 2));
    assert_eq!(
        (r.post_nat_src_addr, r.post_nat_dst_addr),
        (ip("192.168.0.1"), ip("192.168.0.18"))
    );
    assert_eq!((r.post_nat_src_port, r.post_nat_dst_port), (56651, 80));
    assert_eq!(r.time_flow_start_ns, 1_469_109_036_395_000_000);
    assert_eq!(r.time_flow_end_ns, 1_469_109_036_495_000_000);

    // Accounted: each connection's events sum to its teardown's total, once.
    let (records, counters) = decode_dats(&names);
    assert_eq!(records.len(), 19);
    let teardowns: Vec<&FlowRecord> = raw.iter().filter(|r| r.firewall_event == 2).collect();
    assert_eq!(teardowns.len(), 8);
    for teardown in teardowns {
        let of_connection = |r: &&FlowRecord| r.src_port == teardown.src_port;
        let summed: (u64, u64) = records
            .iter()
            .filter(of_connection)
            .fold((0, 0), |(b, rb), r| (b + r.bytes, rb + r.reverse_bytes));
        assert_eq!(
            summed,
            (teardown.bytes, teardown.reverse_bytes),
            "connection from port {}",
            teardown.src_port
        );
    }
    // Connection 742820223: create, update (the bytes), teardown (nothing new, the same flow).
    let last: Vec<(u8, u64, u64, bool)> = records[16..]
        .iter()
        .map(|r| (r.firewall_event, r.bytes, r.reverse_bytes, r.continues_flow))
        .collect();
    assert_eq!(
        last,
        [(1, 0, 0, false), (5, 69, 14178, true), (2, 0, 0, true)]
    );
    assert_eq!(counters.continued_records, 11);
    assert_eq!(counters.errors.total(), 0);
}

/// H3C NetStream: a NetFlow v9 template with a variable-length VRF name (length 65535),
/// which used to reject the datagram as truncated. logstash: 20.20.20.20:137 ->
/// 20.20.255.255:137 UDP, 9 packets, 702 bytes, input interface 17, VRF name "".
#[test]
fn h3c_variable_length_vrf_name_in_v9() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_h3c_netstream_varstring_tpl3281",
        "netflow9_test_h3c_netstream_varstring_data3281",
    ]);
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("20.20.20.20"), ip("20.20.255.255"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (17, 137, 137));
    assert_eq!((r.packets, r.bytes, r.in_if, r.out_if), (9, 702, 17, 0));
    assert_eq!(r.sequence_num, 133);
    assert_eq!(counters.errors.total(), 0);
}

/// Barracuda firewall IPFIX: delta and total counters side by side (logstash: 8 records; the
/// last 10.98.243.20:53 -> 10.99.168.140:50294 UDP, octetDelta = octetTotal = 113, one
/// packet, interfaces 41874 -> 48660). Its sysUpTime times come without a boot time, so
/// they are timed by the export header, and counted.
#[test]
fn barracuda_delta_and_total_counters() {
    let (records, counters) =
        decode_dats(&["ipfix_test_barracuda_tpl", "ipfix_test_barracuda_data256"]);
    assert_eq!(records.len(), 8);
    let r = records[7];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("10.98.243.20"), ip("10.99.168.140"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (17, 53, 50294));
    assert_eq!((r.bytes, r.packets), (113, 1));
    assert_eq!((r.in_if, r.out_if), (41874, 48660));
    assert_eq!(counters.times_from_header, 8);
    assert_eq!(counters.errors.total(), 0);
}

/// FortiGate FortiOS 5.4.2 (NetFlow v9 with application ids): logstash's first record,
/// 192.168.100.151:45380 -> 182.50.136.239:80 TCP, 6 packets, 748 bytes, interfaces 8 -> 2,
/// flow_end_reason 3 (end of flow detected), translated source 10.0.0.250:45380 and no
/// translated destination (0.0.0.0).
#[test]
fn fortigate_nat_and_flow_end_reason() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_fortigate_fortios_542_appid_tpl258-269",
        "netflow9_test_fortigate_fortios_542_appid_data258_262",
    ]);
    let r = records[0];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("192.168.100.151"), ip("182.50.136.239"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 45380, 80));
    assert_eq!((r.packets, r.bytes, r.in_if, r.out_if), (6, 748, 8, 2));
    assert_eq!(r.flow_end_reason, 3);
    assert!(r.ends_flow());
    assert_eq!(
        (r.post_nat_src_addr, r.post_nat_src_port),
        (ip("10.0.0.250"), 45380)
    );
    assert!(r.post_nat_dst_addr.is_unspecified());
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(json["post_nat_src_ipv4_address"], "10.0.0.250");
    assert_eq!(json["post_nat_dst_ipv4_address"], "");
    assert_eq!(json["flow_end_reason"], 3);
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// Palo Alto PAN-OS with app-id: logstash decodes 8 records; the second is session 415347,
/// 10.32.105.103:39702 -> 162.115.24.30:443 TCP, one packet of 111 bytes (a delta counter)
/// with fw_event 5 (update), TCP flags 26, interfaces 24 -> 23.
#[test]
fn palo_alto_session_updates() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_paloalto_panos_tpl",
        "netflow9_test_paloalto_panos_data",
    ]);
    let r = records[1];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("10.32.105.103"), ip("162.115.24.30"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 39702, 443));
    assert_eq!((r.packets, r.bytes, r.tcp_flags), (1, 111, 26));
    assert_eq!((r.in_if, r.out_if), (24, 23));
    assert_eq!(r.firewall_event, 5);
    assert!(!r.ends_flow());
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// An IPFIX message as a Juniper SRX exports a session: running totals (octetTotalCount,
/// packetTotalCount) without deltas, the flow's start and end times, flowEndReason.
fn totals_only_message(
    sequence: u32,
    export_s: u32,
    records: &[(u64, u64, u64, u64, u8)],
) -> Vec<u8> {
    // (field id, length): source, destination, ports, protocol, totals, times, end reason.
    const FIELDS: [(u16, u16); 10] = [
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (85, 8),
        (86, 8),
        (152, 8),
        (153, 8),
        (136, 1),
    ];
    let mut sets = Vec::new();
    sets.extend_from_slice(&2u16.to_be_bytes());
    sets.extend_from_slice(&((4 + 4 + FIELDS.len() * 4) as u16).to_be_bytes());
    sets.extend_from_slice(&256u16.to_be_bytes());
    sets.extend_from_slice(&(FIELDS.len() as u16).to_be_bytes());
    for (id, length) in FIELDS {
        sets.extend_from_slice(&id.to_be_bytes());
        sets.extend_from_slice(&length.to_be_bytes());
    }
    let mut data = Vec::new();
    for &(bytes, packets, start_ms, end_ms, end_reason) in records {
        data.extend_from_slice(&[10, 10, 20, 50, 5, 255, 255, 77]);
        data.extend_from_slice(&50_000u16.to_be_bytes());
        data.extend_from_slice(&443u16.to_be_bytes());
        data.push(6);
        data.extend_from_slice(&bytes.to_be_bytes());
        data.extend_from_slice(&packets.to_be_bytes());
        data.extend_from_slice(&start_ms.to_be_bytes());
        data.extend_from_slice(&end_ms.to_be_bytes());
        data.push(end_reason);
    }
    sets.extend_from_slice(&256u16.to_be_bytes());
    sets.extend_from_slice(&((4 + data.len()) as u16).to_be_bytes());
    sets.extend_from_slice(&data);
    let mut message = Vec::new();
    message.extend_from_slice(&10u16.to_be_bytes());
    message.extend_from_slice(&((16 + sets.len()) as u16).to_be_bytes());
    message.extend_from_slice(&export_s.to_be_bytes());
    message.extend_from_slice(&sequence.to_be_bytes());
    message.extend_from_slice(&0u32.to_be_bytes());
    message.extend_from_slice(&sets);
    message
}

/// A session exported as running totals every minute (active timeout, flowEndReason 2) and
/// closed with end of flow (3), through the whole pipeline: `mb_per_minute` MB a minute for
/// 30 minutes. Returns the bulk_egress alerts and the counters.
fn replay_totals_session(
    mb_per_minute: u64,
    max_tracked_connections: usize,
) -> (
    Vec<exflow::detect::Alert>,
    exflow::pipeline::PipelineCounters,
) {
    let mut config = crate::support::border_config();
    config.decoder.max_tracked_connections = max_tracked_connections;
    let enricher = config.enricher().unwrap();
    let mut pipeline = exflow::pipeline::Pipeline::new(&config, enricher, 1);
    let mut alerts = Vec::new();
    let start_s: u64 = 1_764_547_200; // 2025-12-01 00:00 UTC
    for minute in 1..=30u64 {
        let export_s = start_s + minute * 60;
        let total = minute * mb_per_minute * 1_000_000;
        let reason = if minute == 30 { 3 } else { 2 };
        let message = totals_only_message(
            (minute - 1) as u32,
            export_s as u32,
            &[(total, total / 1000, start_s * 1000, export_s * 1000, reason)],
        );
        pipeline.push_datagram(
            ip("192.0.2.9"),
            export_s * 1_000_000_000,
            &message,
            &mut alerts,
        );
    }
    pipeline.finish(&mut alerts);
    alerts.retain(|a| a.rule == "bulk_egress");
    (alerts, pipeline.counters())
}

/// Running totals are counted once: a 150 MB upload in 30 minutes is one bulk_egress alert
/// of at most 150 MB, not the 2.3 GB (and its 10x escalation) the summed totals make; a 60 MB
/// one (930 MB summed) raises nothing.
#[test]
fn running_totals_are_counted_once_through_the_pipeline() {
    let tracked = DecoderLimits::default().max_tracked_connections;
    let (alerts, counters) = replay_totals_session(5, tracked);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!((alert.step, alert.inside_addr), (0, ip("10.10.20.50")));
    assert!(
        (100_000_000..=150_000_000).contains(&alert.bytes_out),
        "{}",
        alert.bytes_out
    );
    assert_eq!(counters.decode.records, 30);
    assert_eq!(counters.decode.continued_records, 29);
    assert_eq!(counters.flow.conversations_created, 1);
    // Its end of flow is one direction's: the conversation waits for the other's records.
    assert_eq!(counters.flow.conversations_closed, 0);

    let (alerts, counters) = replay_totals_session(2, tracked);
    assert!(alerts.is_empty(), "{alerts:?}");
    assert_eq!(counters.decode.continued_records, 29);

    // Without the tracking (the bound at 0), the totals are summed: escalations follow.
    let (alerts, _) = replay_totals_session(5, 0);
    assert!(alerts.iter().any(|a| a.step > 0), "{alerts:?}");
}

/// ASA's create / update / teardown events of one connection through the pipeline: one
/// conversation per connection (8, not 19), counted once, each ended by its teardown.
#[test]
fn nsel_events_are_one_conversation_each_ended_by_the_teardown() {
    let config = exflow::config::Config {
        inside: vec!["192.168.0.0/30".parse().unwrap()],
        ..exflow::config::Config::default()
    };
    let enricher = config.enricher().unwrap();
    let mut pipeline = exflow::pipeline::Pipeline::new(&config, enricher, 1);
    let mut alerts = Vec::new();
    for name in [
        "netflow9_test_cisco_asa_2_tpl_26x",
        "netflow9_test_cisco_asa_2_tpl_27x",
        "netflow9_test_cisco_asa_2_data",
    ] {
        let bytes = std::fs::read(data(&format!("logstash/{name}.dat"))).unwrap();
        // Received just after the events (2016-07-21 13:50 UTC).
        pipeline.push_datagram(
            ip("192.0.2.7"),
            1_469_109_100_000_000_000,
            &bytes,
            &mut alerts,
        );
    }
    let before_finish = pipeline.counters();
    pipeline.finish(&mut alerts);
    let counters = pipeline.counters();
    assert_eq!(counters.flow.records, 19);
    assert_eq!(counters.flow.conversations_created, 8);
    assert_eq!(before_finish.flow.conversations_closed, 8);
    assert_eq!(counters.flow.conversations_expired, 0);
}

/// A NetFlow v5 packet's bytes turned into v7 (Catalyst: 52-byte records) and v1 (fprobe:
/// a 16-byte header, no AS numbers): the same flow decodes from each, with its type.
#[test]
fn netflow_v1_and_v7_decode_like_v5() {
    #[rustfmt::skip]
    let header_v5 = [
        0, 5, 0, 1,              // version 5, one record
        0, 0x01, 0x86, 0xa0,     // sysUptime 100000 ms
        0x65, 0xf0, 0x0b, 0x6e,  // unix_secs 1710230382
        0, 0, 0, 0,              // unix_nsecs
        0, 0, 0, 42,             // flow sequence
        0, 0, 0, 0,              // engine, sampling
    ];
    #[rustfmt::skip]
    let record = [
        10, 10, 20, 15, 5, 255, 255, 77, 0, 0, 0, 0, // src, dst, next hop
        0, 3, 0, 4,                                  // input, output
        0, 0, 0, 10, 0, 0, 0x3a, 0x98,               // 10 packets, 15000 bytes
        0, 0x01, 0x7f, 0xd0, 0, 0x01, 0x86, 0xa0,    // first 98256, last 100000
        0xc3, 0xca, 1, 0xbb,                         // 50122 -> 443
        0, 0x1a, 6, 0,                               // pad, flags, TCP, ToS
        0, 0, 0x20, 0x18, 24, 0, 0, 0,               // AS 0 -> 8216, masks, pad
    ];
    let mut v7 = header_v5.to_vec();
    v7[1] = 7;
    v7.extend_from_slice(&record);
    v7.extend_from_slice(&[0; 4]); // flags word and router shortcut
    let mut v1 = header_v5[..16].to_vec();
    v1[1] = 1;
    let mut v1_record = record;
    v1_record[37] = 0;
    v1_record[38] = 6; // protocol
    v1_record[39] = 0; // ToS
    v1_record[40] = 0x1a; // TCP flags
    v1.extend_from_slice(&v1_record);
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    for datagram in [&v7, &v1] {
        assert_eq!(
            decoder.decode(ip("192.0.2.5"), 1, datagram, &mut records),
            Ok(1)
        );
    }
    let kinds: Vec<_> = records.iter().map(|r| r.kind.name()).collect();
    assert_eq!(kinds, ["NETFLOW_V7", "NETFLOW_V1"]);
    for r in &records {
        assert_eq!(
            (r.src_addr, r.dst_addr),
            (ip("10.10.20.15"), ip("5.255.255.77"))
        );
        assert_eq!(
            (r.proto, r.src_port, r.dst_port, r.tcp_flags),
            (6, 50122, 443, 0x1a)
        );
        assert_eq!((r.packets, r.bytes, r.in_if, r.out_if), (10, 15000, 3, 4));
        assert_eq!(r.time_flow_end_ns - r.time_flow_start_ns, 1_744_000_000);
    }
    assert_eq!((records[0].dst_as, records[1].dst_as), (8216, 0));
    assert_eq!(records[0].sequence_num, 42);
    assert_eq!(decoder.totals().errors.total(), 0);
}

/// Huawei NetStream (NetFlow v9, template 1315): logstash's one record, 10.108.219.53:45587
/// -> 10.111.112.204:2598 TCP, 4 packets, 200 bytes, flags 24, interfaces 8 -> 31, next hop
/// 10.108.252.41, first switched 2018-01-29T02:56:52.940Z.
#[test]
fn huawei_netstream() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_huawei_netstream_tpl",
        "netflow9_test_huawei_netstream_data",
    ]);
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("10.108.219.53"), ip("10.111.112.204"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 45587, 2598));
    assert_eq!((r.packets, r.bytes, r.tcp_flags), (4, 200, 24));
    assert_eq!((r.in_if, r.out_if), (8, 31));
    assert_eq!(r.next_hop, ip("10.108.252.41"));
    // logstash's v9 times are a second late whenever the record's age is not whole
    // seconds (netflow.rb: `micros = 1000000 - ((millis % 1000) * 1000)` with
    // `seconds = unix_sec - millis / 1000`): exflow's are logstash's minus one second.
    assert_eq!(r.time_flow_start_ns, 1_517_194_611_940_000_000);
    assert_eq!(r.sequence_num, 129_954);
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// Cisco ACI (NetFlow v9): logstash decodes 3 records; the first is 10.154.231.145:179 ->
/// 10.154.231.146:49411 TCP, 2 packets, 99 bytes, flags 24, input interface 369139712.
/// The data flowset ends in zero padding, which is not an error.
#[test]
fn cisco_aci_set_padding() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_cisco_aci_tpl256-258",
        "netflow9_test_cisco_aci_data256",
    ]);
    assert_eq!(records.len(), 3);
    let r = records[0];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("10.154.231.145"), ip("10.154.231.146"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 179, 49411));
    assert_eq!((r.packets, r.bytes, r.tcp_flags), (2, 99, 24));
    assert_eq!(r.in_if, 369_139_712);
    // logstash's v9 times are a second late whenever the record's age is not whole
    // seconds (netflow.rb: `micros = 1000000 - ((millis % 1000) * 1000)` with
    // `seconds = unix_sec - millis / 1000`): exflow's are logstash's minus one second.
    assert_eq!(r.time_flow_start_ns, 1_539_602_884_019_000_000);
    assert_eq!(r.time_flow_end_ns, 1_539_602_903_066_000_000);
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// MikroTik RouterOS 6.39.2 IPFIX: 46 records (logstash: 46). The first is NAT'ed NTP,
/// 10.10.8.197:123 -> 192.168.128.17:123, 2 packets, 152 bytes, interfaces 13 -> 7, next hop
/// 192.168.224.1, post-NAT source 192.168.230.216; the last IPv6, fe80::ff:fe00:1201:5678 ->
/// fe80::ff:fe00:1201:5678 UDP, 370 bytes, next hop ff02::1, input interface 17. Its
/// second data set ends in two stray bytes that align the set to 4 bytes: padding.
#[test]
fn mikrotik_ipfix_nat_and_ipv6() {
    let (records, counters) = decode_dats(&[
        "ipfix_test_mikrotik_tpl",
        "ipfix_test_mikrotik_data258",
        "ipfix_test_mikrotik_data259",
    ]);
    assert_eq!(records.len(), 46);
    let r = records[0];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("10.10.8.197"), ip("192.168.128.17"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (17, 123, 123));
    assert_eq!((r.packets, r.bytes), (2, 152));
    assert_eq!((r.in_if, r.out_if), (13, 7));
    assert_eq!(r.next_hop, ip("192.168.224.1"));
    assert_eq!(
        (r.post_nat_src_addr, r.post_nat_dst_addr),
        (ip("192.168.230.216"), ip("192.168.128.17"))
    );
    let r = records[45];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("fe80::ff:fe00:1201"), ip("fe80::ff:fe00:1201"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (17, 5678, 5678));
    assert_eq!((r.packets, r.bytes), (2, 370));
    assert_eq!((r.in_if, r.out_if), (17, 0));
    assert_eq!(r.next_hop, ip("ff02::1"));
    assert_eq!(r.etype, exflow::decode::record::ETYPE_IPV6);
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// Juniper SRX: an options template whose scope field has length 0 (logstash: one options
/// record, sampling algorithm 2, interval 1). Read, not refused.
#[test]
fn juniper_srx_options_template_with_zero_length_scope() {
    let (records, counters) = decode_dats(&["netflow9_test_juniper_srx_tplopt"]);
    assert!(records.is_empty());
    assert_eq!(counters.options_records, 1);
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// Cisco ASR 9000 (IOS XR, NetFlow v9 template 260): 21 records (logstash: 21); the last is
/// 10.0.29.46:443 -> 10.0.15.38:52364 TCP, 2 packets, 112 bytes, flags 18, AS 15169 ->
/// 64498, interfaces 75 -> 158, BGP next hop 10.0.14.27.
#[test]
fn cisco_asr9k_template_260() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_cisco_asr9k_tpl260",
        "netflow9_test_cisco_asr9k_data260",
    ]);
    assert_eq!(records.len(), 21);
    let r = records[20];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("10.0.29.46"), ip("10.0.15.38"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 443, 52364));
    assert_eq!((r.packets, r.bytes, r.tcp_flags), (2, 112, 18));
    assert_eq!((r.src_as, r.dst_as), (15169, 64498));
    assert_eq!((r.in_if, r.out_if), (75, 158));
    // logstash's v9 times are a second late whenever the record's age is not whole
    // seconds (netflow.rb: `micros = 1000000 - ((millis % 1000) * 1000)` with
    // `seconds = unix_sec - millis / 1000`): exflow's are logstash's minus one second.
    assert_eq!(r.time_flow_start_ns, 1_481_018_932_377_000_000);
    assert_eq!(r.time_flow_end_ns, 1_481_018_933_964_000_000);
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// Cisco ASR 9000: options template 256 (scope system, ingress interface, interface
/// description) and its 19 options records; logstash's last: interface 104 is
/// "TenGigE0_6_0_2". The names are kept per (exporter, observation domain, ifIndex) and the
/// same router's flow records (template 260, same source id) find theirs.
#[test]
fn cisco_asr9k_interface_descriptions_from_options_data() {
    let names = [
        "netflow9_test_cisco_asr9k_opttpl256",
        "netflow9_test_cisco_asr9k_data256",
        "netflow9_test_cisco_asr9k_tpl260",
        "netflow9_test_cisco_asr9k_data260",
    ];
    let exporter: IpAddr = "192.0.2.7".parse().unwrap();
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    for name in names {
        let bytes = std::fs::read(data(&format!("logstash/{name}.dat"))).unwrap();
        let _ = decoder.decode(exporter, 1, &bytes, &mut records);
    }
    let counters = decoder.totals();
    assert_eq!(counters.options_records, 19);
    assert_eq!(counters.interface_names, 19);
    assert_eq!(decoder.interface_name_count(), 19);
    let domain = (FlowKind::NetflowV9, 2177);
    let names = decoder.interface_name(exporter, domain, 104).unwrap();
    assert_eq!(&*names.description, "TenGigE0_6_0_2");
    assert_eq!(&*names.name, "");
    assert!(
        decoder
            .interface_name(exporter, (FlowKind::Ipfix, 2177), 104)
            .is_none()
    );
    assert!(
        decoder
            .interface_name(ip("192.0.2.8"), domain, 104)
            .is_none()
    );
    assert_eq!(records.len(), 21);
    let named = records
        .iter()
        .filter(|r| decoder.interface_name(exporter, domain, r.in_if).is_some())
        .count();
    assert!(
        named > 0,
        "some of the router's records name their input interface"
    );
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// Interface names are bounded over all exporters: at `decoder.max_interface_names` a new
/// one is refused and counted, a known one still updated.
#[test]
fn interface_names_are_bounded_and_refusals_counted() {
    let config = DecoderConfig {
        limits: DecoderLimits {
            max_interface_names: 5,
            ..DecoderLimits::default()
        },
        ..DecoderConfig::default()
    };
    let (_, counters) = decode_dats_with(
        &[
            "netflow9_test_cisco_asr9k_opttpl256",
            "netflow9_test_cisco_asr9k_data256",
            "netflow9_test_cisco_asr9k_data256",
        ],
        config,
    );
    assert_eq!(counters.interface_names, 5);
    assert_eq!(counters.interface_names_refused, 2 * 14);
}

/// Juniper MX240 (JunOS 15.1) options data names the exporter, exporterIPv4Address
/// 10.0.0.1 (logstash). Through a relay (here 192.0.2.7), with
/// `decoder.exporter_address_from_options` the domain's flow records carry that address;
/// by default the datagram's source, as a sender could claim any address.
#[test]
fn relayed_exporter_address_from_options_data() {
    let mut flow = totals_only_message(1, 1_527_865_913, &[(1000, 2, 0, 0, 3)]);
    flow[12..16].copy_from_slice(&524_288u32.to_be_bytes()); // the MX240's domain
    let decode = |from_options: bool| {
        let config = DecoderConfig {
            limits: DecoderLimits {
                exporter_address_from_options: from_options,
                ..DecoderLimits::default()
            },
            ..DecoderConfig::default()
        };
        let mut decoder = Decoder::new(config);
        let mut records = Vec::new();
        for name in [
            "ipfix_test_juniper_mx240_junos151r6s3_opttpl512",
            "ipfix_test_juniper_mx240_junos151r6s3_data512",
        ] {
            let bytes = std::fs::read(data(&format!("logstash/{name}.dat"))).unwrap();
            let _ = decoder.decode(ip("192.0.2.7"), 1, &bytes, &mut records);
        }
        let _ = decoder.decode(ip("192.0.2.7"), 2, &flow, &mut records);
        assert_eq!(decoder.totals().options_records, 1);
        assert_eq!(decoder.totals().errors.total(), 0);
        assert_eq!(records.len(), 1);
        records[0]
    };
    let relayed = decode(true);
    assert_eq!(relayed.sampler_address, ip("10.0.0.1"));
    assert_eq!(relayed.observation_domain_id, 524_288);
    assert_eq!(decode(false).sampler_address, ip("192.0.2.7"));
}

/// A session's running totals across a restart: the tracked connections go into the
/// decoder's state file with the templates, so the first total after the restart counts
/// only what is new (10 MB), not the session's whole 30 MB again.
#[test]
fn running_totals_survive_a_restart_in_the_state_file() {
    const MB: u64 = 1_000_000;
    let start_ms = 1_710_230_400_000;
    let report = |n: u64| {
        totals_only_message(
            n as u32,
            1_710_230_400 + 60 * n as u32,
            &[(10 * MB * n, 1000 * n, start_ms, start_ms + 60_000 * n, 2)],
        )
    };
    let exporter = ip("192.0.2.9");
    let mut before = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    for n in 1..=2 {
        before
            .decode(exporter, n, &report(n), &mut records)
            .unwrap();
    }
    assert_eq!(records.iter().map(|r| r.bytes).sum::<u64>(), 20 * MB);
    let path = std::env::temp_dir().join(format!("exflow-totals-{}.state", std::process::id()));
    before.save_state(&path).unwrap();

    let mut after = Decoder::new(DecoderConfig::default());
    after.load_state(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(after.tracked_connections(), 1);
    let mut records = Vec::new();
    after.decode(exporter, 3, &report(3), &mut records).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].bytes, records[0].packets), (10 * MB, 1000));
    assert!(records[0].continues_flow);

    // Without the saved connections the same report counts its whole total.
    let mut fresh = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    fresh.decode(exporter, 3, &report(3), &mut records).unwrap();
    assert_eq!(records[0].bytes, 30 * MB);
}

/// The Cisco ASR 9000's interface descriptions (options data, IE 83) reach the alerts: its
/// record 10.0.4.212:50691 -> 10.0.3.110:443 (533 bytes) came in on ifIndex 162
/// ("Bundle-Ether2") and left on 102 ("TenGigE0_6_0_0"); with that host inside and
/// `bulk_egress` at 500 bytes, its alert names both. The router sends descriptions, no
/// names: `in_if_name` / `out_if_name` stay absent, and all four are absent when the
/// options data never came.
#[test]
fn alerts_name_the_interfaces_options_data_described() {
    let mut config = exflow::config::Config {
        inside: vec!["10.0.4.212/32".parse().unwrap()],
        ..exflow::config::Config::default()
    };
    config.rules.bulk_egress.min_bytes_out = 500;
    let replay = |names: &[&str]| {
        let enricher = config.enricher().unwrap();
        let mut pipeline = exflow::pipeline::Pipeline::new(&config, enricher, 2);
        let mut alerts = Vec::new();
        for name in names {
            let bytes = std::fs::read(data(&format!("logstash/{name}.dat"))).unwrap();
            // Received just after the flows (2016-12-06 10:08 UTC).
            pipeline.push_datagram(
                ip("192.0.2.7"),
                1_481_018_935_000_000_000,
                &bytes,
                &mut alerts,
            );
        }
        pipeline.finish(&mut alerts);
        alerts
    };
    let alerts = replay(&[
        "netflow9_test_cisco_asr9k_opttpl256",
        "netflow9_test_cisco_asr9k_data256",
        "netflow9_test_cisco_asr9k_tpl260",
        "netflow9_test_cisco_asr9k_data260",
    ]);
    crate::support::assert_schema_valid(&alerts);
    let bulk: Vec<_> = alerts.iter().filter(|a| a.rule == "bulk_egress").collect();
    assert_eq!(bulk.len(), 1, "{alerts:?}");
    let alert = bulk[0];
    assert_eq!(
        (alert.inside_addr, alert.outside_addr, alert.outside_port),
        (ip("10.0.4.212"), ip("10.0.3.110"), 443)
    );
    assert_eq!(alert.in_if_description.as_deref(), Some("Bundle-Ether2"));
    assert_eq!(alert.out_if_description.as_deref(), Some("TenGigE0_6_0_0"));
    assert_eq!((&alert.in_if_name, &alert.out_if_name), (&None, &None));
    let json = serde_json::to_value(alert).unwrap();
    assert_eq!(json["in_if_description"], "Bundle-Ether2");
    assert_eq!(json["out_if_description"], "TenGigE0_6_0_0");
    assert!(json.get("in_if_name").is_none());

    let alerts = replay(&[
        "netflow9_test_cisco_asr9k_tpl260",
        "netflow9_test_cisco_asr9k_data260",
    ]);
    let bulk: Vec<_> = alerts.iter().filter(|a| a.rule == "bulk_egress").collect();
    assert_eq!(bulk.len(), 1, "{alerts:?}");
    let json = serde_json::to_value(bulk[0]).unwrap();
    for field in [
        "in_if_name",
        "in_if_description",
        "out_if_name",
        "out_if_description",
    ] {
        assert!(json.get(field).is_none(), "{field} in {json}");
    }
}
