//! sFlow v5 from real agents (tcpdump's and telegraf's test captures, see tests/data/README.md)
//! through the decoder, with the values those projects assert; and hostile cuts of them.

use std::net::IpAddr;

use exflow::decode::{DecodeError, Decoder, DecoderConfig, FlowKind, FlowRecord};

use crate::support::{data, datagrams, decode_capture};

/// A telegraf fixture: one datagram's bytes, decoded as if from 127.0.0.1.
fn decode_bin(name: &str) -> (Vec<FlowRecord>, exflow::decode::DecodeCounters) {
    let bytes = std::fs::read(data(&format!("sflow/{name}.bin"))).unwrap();
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    decoder
        .decode("127.0.0.1".parse().unwrap(), 1, &bytes, &mut records)
        .unwrap();
    (records, decoder.totals())
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// tcpdump's sflow_expanded.pcap (tcpdump -v: "expanded flow sample (3), seqnum 2170480284,
/// rate 1000, input 29001 (0), output 1285816721 (0), records 3": raw packet, extended
/// gateway, extended router).
#[test]
fn expanded_flow_sample_with_gateway_and_router() {
    let (records, counters) = decode_capture("sflow/tcpdump_sflow_expanded.pcap");
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(r.kind, FlowKind::Sflow5);
    assert_eq!(r.sequence_num, 115_694_180); // the datagram's, as GoFlow2 reports it
    assert_eq!(r.sampling_rate, 1000);
    assert_eq!((r.in_if, r.out_if), (29001, 1_285_816_721));
    // The raw Ethernet header: TCP 52.52.52.52:22 -> 53.53.53.53:52237, PSH ACK, ToS 8;
    // the frame's length on the wire is the record's bytes, one packet.
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("52.52.52.52"), ip("53.53.53.53"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 22, 52237));
    assert_eq!((r.tcp_flags, r.ip_tos), (0x18, 0x08));
    assert_eq!((r.bytes, r.packets), (126, 1));
    // Gateway: source AS and the destination path's origin; router: the next hop.
    assert_eq!((r.src_as, r.dst_as), (203_476, 203_361));
    assert_eq!(r.next_hop, ip("54.54.54.54"));
    // No wall clock in sFlow: the flow is timed by its arrival.
    assert_eq!(r.time_flow_start_ns, r.time_received_ns);
    assert_eq!(r.time_flow_end_ns, r.time_received_ns);
    assert_eq!(counters.errors.total(), 0);
    let json = serde_json::to_value(r).unwrap();
    assert_eq!(json["type"], "SFLOW_5");
    assert_eq!(json["sampler_address"], "192.0.2.100");
}

/// tcpdump's sflow-print-v6.pcap: an IPv6 agent (30::1:1:1) over IPv6, 25 datagrams with
/// sequence numbers 109 to 133, 48 counter samples and 13 compact flow samples of one
/// generated IPv4 stream (protocol 63) on VLAN 10, rate 1, frame lengths summing to 1454.
#[test]
fn ipv6_agent_flow_and_counter_samples() {
    let (records, counters) = decode_capture("sflow/tcpdump_sflow_print_v6.pcap");
    assert_eq!(counters.datagrams, 25);
    assert_eq!(records.len(), 13);
    assert_eq!(counters.counter_samples, 48);
    assert_eq!((counters.lost_datagrams, counters.sequence_resets), (0, 0));
    assert_eq!(counters.errors.total(), 0);
    for r in &records {
        assert_eq!(r.sampler_address, ip("30::1:1:1"));
        assert_eq!((r.src_addr, r.dst_addr), (ip("10.10.10.2"), ip("50.1.1.2")));
        assert_eq!((r.proto, r.sampling_rate, r.packets), (63, 1, 1));
        // "input 7001 output 2147483648": the output is a count of interfaces, not one.
        assert_eq!((r.in_if, r.out_if), (7001, 0));
    }
    assert_eq!(records.iter().map(|r| r.bytes).sum::<u64>(), 1454);
}

/// Losing a datagram shows as one lost datagram of that agent.
#[test]
fn sequence_numbers_give_loss() {
    let all = datagrams("sflow/tcpdump_sflow_print_v6.pcap");
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    for (i, (exporter, received_ns, payload)) in all.iter().enumerate() {
        if i != 10 {
            let _ = decoder.decode(*exporter, *received_ns, payload, &mut out);
        }
    }
    assert_eq!(decoder.totals().lost_datagrams, 1);
}

/// tcpdump's sflow_multiple_counter_30_pdus.pcap: HP agents (15.184.x.x) sending expanded
/// counter samples only (144 of them), mixed with NetFlow v5 from other routers.
#[test]
fn counter_samples_make_no_flow_records() {
    let (records, counters) = decode_capture("sflow/tcpdump_sflow_multiple_counter_30_pdus.pcap");
    assert_eq!(counters.counter_samples, 144);
    assert!(!records.is_empty(), "the other routers' v5 records");
    assert!(records.iter().all(|r| r.kind == FlowKind::NetflowV5));
    assert_eq!(counters.errors.get(DecodeError::UnknownVersion), 0);
    assert_eq!(counters.errors.total(), 0);
}

/// telegraf's sflow_issue_15918: a switch's datagram of one counter sample and six flow
/// samples (802.1Q tagged, IPv4 and IPv6, rate 200). telegraf's expected src, dst, ports,
/// `l2_bytes` and `sampling_interval`; the interfaces are the samples' input/output words
/// (telegraf reports the same raw words; an output of format 2, several ports, is 0 here).
#[test]
fn switch_samples_match_telegraf() {
    let (records, counters) = decode_bin("telegraf_sflow_issue_15918");
    assert_eq!(counters.counter_samples, 1);
    let got: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.src_addr, r.dst_addr, r.src_port, r.dst_port, r.proto, r.bytes,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                ip("192.168.227.2"),
                ip("192.168.101.2"),
                49469,
                2055,
                17,
                1286
            ),
            (
                ip("142.250.200.99"),
                ip("192.168.100.104"),
                443,
                52851,
                17,
                563
            ),
            // Hop-by-hop options then ICMPv6 (MLD report, type 143): telegraf stops at
            // "hopopt", exflow reads through the extension header.
            (
                ip("fe80::f3a8:9738:cab4:2286"),
                ip("ff02::16"),
                0,
                143 << 8,
                58,
                114
            ),
            (
                ip("192.168.153.106"),
                ip("142.250.185.14"),
                64969,
                443,
                17,
                77
            ),
            (
                ip("142.250.185.14"),
                ip("192.168.153.106"),
                443,
                64969,
                17,
                719
            ),
            (
                ip("fe80::f3a8:9738:cab4:2286"),
                ip("ff02::1:3"),
                49770,
                5355,
                17,
                93
            ),
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.sampling_rate == 200 && r.packets == 1)
    );
    assert_eq!((records[0].in_if, records[0].out_if), (96, 95));
    assert_eq!((records[2].in_if, records[2].out_if), (97, 0));
    assert_eq!(counters.errors.total(), 0);
}

/// telegraf's sflow_v5_example (hsflowd: one counter sample) and sflow_issue_15375 (one
/// discarded-packet sample, reason 1, 256 drops): counted, no flow records.
#[test]
fn counter_and_discard_samples_make_no_records() {
    let (records, counters) = decode_bin("telegraf_sflow_v5_example");
    assert!(records.is_empty());
    assert_eq!(counters.counter_samples, 1);
    let (records, counters) = decode_bin("telegraf_sflow_drop_1036");
    assert!(records.is_empty());
    assert_eq!(counters.discard_samples, 1);
    assert_eq!(counters.errors.total(), 0);
}

/// Every cut of every real datagram decodes what it can, counts one error, and never panics;
/// a flipped sample length is an error, not a misread.
#[test]
fn cut_and_corrupted_datagrams_are_counted() {
    let mut payloads: Vec<Vec<u8>> = datagrams("sflow/tcpdump_sflow_print_v6.pcap")
        .into_iter()
        .chain(datagrams("sflow/tcpdump_sflow_expanded.pcap"))
        .map(|(_, _, p)| p)
        .collect();
    payloads.push(std::fs::read(data("sflow/telegraf_sflow_issue_15918.bin")).unwrap());
    assert!(!payloads.is_empty());
    for payload in &payloads {
        let mut decoder = Decoder::new(DecoderConfig::default());
        let mut out = Vec::new();
        let whole = decoder
            .decode(ip("192.0.2.1"), 1, payload, &mut out)
            .unwrap();
        for len in 0..payload.len() {
            let mut decoder = Decoder::new(DecoderConfig::default());
            let mut cut = Vec::new();
            let result = decoder.decode(ip("192.0.2.1"), 1, &payload[..len], &mut cut);
            // The header's sample count promises the bytes that were cut off.
            assert!(result.is_err(), "cut at {len} of {}", payload.len());
            assert_eq!(decoder.totals().errors.total(), 1);
            assert!(cut.len() <= whole);
        }
        let mut flipped = payload.clone();
        // The first sample's length word, after a header of 28 (IPv4 agent) or 40 bytes.
        let at = if flipped[7] == 1 { 28 + 4 } else { 40 + 4 };
        flipped[at] = 0x7f;
        let mut decoder = Decoder::new(DecoderConfig::default());
        let result = decoder.decode(ip("192.0.2.1"), 1, &flipped, &mut Vec::new());
        assert_eq!(result, Err(DecodeError::Truncated));
    }
}

/// Counter samples become per-agent interface counters, with the values the agents' own
/// decoders print: telegraf's hsflowd sample (sub-agent 100000, interface 3 "eno1", 1 Gbit/s,
/// 3910 octets in, 3946 out) and tcpdump's HP switch capture (94 interfaces of five agents;
/// tcpdump -v prints, last for 15.184.1.76 agent-id 2 ifindex 55, "In octets 820721 ...
/// Out octets 178785248", and for 15.184.1.194 agent-id 1 ifindex 3 "In errors 1").
#[test]
fn counter_samples_give_interface_counters() {
    let bytes = std::fs::read(data("sflow/telegraf_sflow_v5_example.bin")).unwrap();
    let mut decoder = Decoder::new(DecoderConfig::default());
    decoder
        .decode(ip("127.0.0.1"), 1, &bytes, &mut Vec::new())
        .unwrap();
    let interfaces: Vec<_> = decoder.sflow_interfaces().map(|(a, c)| (a, *c)).collect();
    assert_eq!(interfaces.len(), 1);
    let (agent, c) = interfaces[0];
    assert_eq!(agent, ip("127.0.0.1"));
    assert_eq!(
        (c.sub_agent_id, c.if_index, c.speed_bps),
        (100_000, 3, 1_000_000_000)
    );
    assert_eq!((c.in_octets, c.out_octets), (3910, 3946));
    assert_eq!(
        (c.in_errors, c.out_errors, c.in_discards, c.out_discards),
        (0, 0, 0, 0)
    );

    let mut decoder = Decoder::new(DecoderConfig::default());
    for (source, received_ns, payload) in
        datagrams("sflow/tcpdump_sflow_multiple_counter_30_pdus.pcap")
    {
        let _ = decoder.decode(source, received_ns, &payload, &mut Vec::new());
    }
    let interfaces: Vec<_> = decoder.sflow_interfaces().map(|(a, c)| (a, *c)).collect();
    assert_eq!(interfaces.len(), 94);
    let find = |agent: &str, sub: u32, index: u32| {
        interfaces
            .iter()
            .find(|(a, c)| *a == ip(agent) && c.sub_agent_id == sub && c.if_index == index)
            .map(|(_, c)| *c)
            .unwrap()
    };
    let c = find("15.184.1.76", 2, 55);
    assert_eq!(
        (c.speed_bps, c.in_octets, c.out_octets),
        (1_000_000_000, 820_721, 178_785_248)
    );
    let c = find("15.184.1.194", 1, 3);
    assert_eq!(
        (c.in_octets, c.out_octets, c.in_errors),
        (200_763_454, 3_317_395_016, 1)
    );
    // Summed over the 94 interfaces, as tcpdump prints them last.
    let sum_in: u64 = interfaces.iter().map(|(_, c)| c.in_octets).sum();
    let sum_out: u64 = interfaces.iter().map(|(_, c)| c.out_octets).sum();
    assert_eq!((sum_in, sum_out), (98_973_941_953, 210_384_219_274));
    assert_eq!(decoder.totals().interfaces_refused, 0);

    // Bounded per agent: with room for 4 interfaces, the rest are counted, not kept.
    let mut config = DecoderConfig::default();
    config.limits.max_sflow_interfaces_per_agent = 4;
    let mut decoder = Decoder::new(config);
    for (source, received_ns, payload) in
        datagrams("sflow/tcpdump_sflow_multiple_counter_30_pdus.pcap")
    {
        let _ = decoder.decode(source, received_ns, &payload, &mut Vec::new());
    }
    assert_eq!(decoder.sflow_interfaces().count(), 5 * 4);
    assert!(decoder.totals().interfaces_refused > 0);
}

/// telegraf's sflow_issue_18876: a 10 Gbit/s switch port's counters past 2^32 (agent
/// 172.16.254.196, sequence 17628, ifIndex 1258293248). telegraf's expected values:
/// in_bytes 59347538341644, out_bytes 89572325677612, in_errors 58690, no discards.
#[test]
fn counter_samples_keep_64_bit_octets() {
    let bytes = std::fs::read(data("sflow/telegraf_sflow_issue_18876.bin")).unwrap();
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    decoder
        .decode(ip("127.0.0.1"), 1, &bytes, &mut records)
        .unwrap();
    assert!(records.is_empty());
    let interfaces: Vec<_> = decoder.sflow_interfaces().map(|(_, c)| *c).collect();
    assert_eq!(interfaces.len(), 1);
    let c = interfaces[0];
    assert_eq!((c.sub_agent_id, c.if_index), (0, 1_258_293_248));
    assert_eq!(c.speed_bps, 10_000_000_000);
    assert_eq!(
        (c.in_octets, c.out_octets),
        (59_347_538_341_644, 89_572_325_677_612)
    );
    assert_eq!(
        (c.in_errors, c.out_errors, c.in_discards, c.out_discards),
        (58_690, 0, 0, 0)
    );
    let totals = decoder.totals();
    assert_eq!((totals.counter_samples, totals.errors.total()), (1, 0));
}

/// logstash-codec-sflow's switch datagram with LAG counters (agent 10.0.1.80): two
/// expanded counter samples (generic interface, Ethernet and LAG records of 10 Gbit/s
/// ports) and five expanded flow samples of 802.1Q-tagged Ethernet (VLANs 6, 1081, 10).
/// The codec's spec asserts no values; these are tshark 4's decoding of the datagram.
#[test]
fn expanded_switch_samples_with_lag_counters() {
    let (records, counters) = decode_bin("logstash_sflow_with_lag_counters");
    assert_eq!(counters.counter_samples, 2);
    assert_eq!(records.len(), 5);
    let got: Vec<_> = records
        .iter()
        .map(|r| {
            (
                (r.src_addr, r.src_port),
                (r.dst_addr, r.dst_port),
                (r.tcp_flags, r.bytes, r.sampling_rate),
                (r.in_if, r.out_if),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                (ip("192.168.6.10"), 1263),
                (ip("192.168.6.79"), 1194),
                (0x10, 68, 16384),
                (1_054_596, 1_049_348)
            ),
            (
                (ip("31.13.71.3"), 443),
                (ip("217.77.82.226"), 61769),
                (0x18, 111, 1024),
                (1_053_956, 1_053_828)
            ),
            (
                (ip("192.168.6.12"), 80),
                (ip("192.168.6.9"), 63573),
                (0x10, 1522, 16384),
                (1_054_596, 1_054_468)
            ),
            (
                (ip("193.206.135.147"), 80),
                (ip("217.77.82.143"), 19515),
                (0x10, 74, 1024),
                (1_053_956, 1_053_828)
            ),
            (
                (ip("10.0.10.200"), 443),
                (ip("192.168.150.114"), 57724),
                (0x10, 1522, 16384),
                (1_050_500, 1_049_220)
            ),
        ]
    );
    assert!(
        records
            .iter()
            .all(|r| r.kind == FlowKind::Sflow5 && r.proto == 6 && r.packets == 1)
    );
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);

    let bytes = std::fs::read(data("sflow/logstash_sflow_with_lag_counters.bin")).unwrap();
    let mut decoder = Decoder::new(DecoderConfig::default());
    decoder
        .decode(ip("127.0.0.1"), 1, &bytes, &mut Vec::new())
        .unwrap();
    let port = decoder
        .sflow_interfaces()
        .map(|(_, c)| *c)
        .find(|c| c.if_index == 1_054_596)
        .unwrap();
    assert_eq!(
        (port.speed_bps, port.in_octets, port.out_octets),
        (10_000_000_000, 135_852_990_118_270, 438_139_041_512_356)
    );
}

/// logstash-codec-sflow's compact flow samples: a raw IPv4 header (header protocol 11, no
/// Ethernet; agent 10.1.240.66 sub-agent 1, rate 2048, input 0x3fffffff "internal") and an
/// 802.1Q-tagged Ethernet header (agent 10.243.62.190, VLAN 2422, rate 2000). Values as
/// tshark 4 decodes them.
#[test]
fn raw_ipv4_and_vlan_tagged_flow_samples() {
    let (records, counters) = decode_bin("logstash_sflow_flow_sample");
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(
        ((r.src_addr, r.src_port), (r.dst_addr, r.dst_port), r.proto),
        ((ip("10.243.27.17"), 5672), (ip("10.243.0.45"), 59451), 6)
    );
    assert_eq!((r.tcp_flags, r.bytes, r.packets), (0x18, 490, 1));
    assert_eq!(r.sampling_rate, 2048);
    assert_eq!((r.in_if, r.out_if), (0x3fff_ffff, 944));
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);

    let (records, counters) = decode_bin("logstash_sflow_flow_sample_eth_vlan");
    assert_eq!(records.len(), 1);
    let r = records[0];
    assert_eq!(
        ((r.src_addr, r.src_port), (r.dst_addr, r.dst_port), r.proto),
        ((ip("10.243.2.11"), 63150), (ip("10.243.13.15"), 443), 6)
    );
    assert_eq!((r.tcp_flags, r.bytes, r.sampling_rate), (0x10, 62, 2000));
    assert_eq!((r.in_if, r.out_if), (53, 52));
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}

/// logstash-codec-sflow's counter datagram (agent 10.243.29.150): twelve counter samples,
/// processor (1001), generic interface and two of an enterprise-less format 2201 that
/// exflow skips by length. Values as tshark 4 decodes them.
#[test]
fn counter_datagram_with_processor_and_unknown_records() {
    let bytes = std::fs::read(data("sflow/logstash_sflow_counters_sample.bin")).unwrap();
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    decoder
        .decode(ip("127.0.0.1"), 1, &bytes, &mut records)
        .unwrap();
    assert!(records.is_empty());
    assert_eq!(decoder.totals().counter_samples, 12);
    assert_eq!(decoder.totals().errors.total(), 0);
    let find = |index: u32| {
        decoder
            .sflow_interfaces()
            .map(|(_, c)| *c)
            .find(|c| c.if_index == index)
            .unwrap()
    };
    let c = find(80);
    assert_eq!(
        (c.speed_bps, c.in_octets, c.out_octets),
        (1_000_000_000, 39_096_809_265, 38_131_211_280)
    );
    let c = find(912);
    assert_eq!((c.in_octets, c.out_octets), (9_805_092_084, 8_075_321_090));
}

/// The border mix as a switch of a VXLAN fabric samples it on an underlay link: every frame
/// inside a VXLAN packet between two tunnel endpoints (192.0.2.1 to 192.0.2.2, VNI 5001,
/// `scripts/vxlan-wrap.py`), sampled 1 in 10 by pmacct's sfprobe (a real exporter; its
/// export captured, see tests/data/README.md). Each sample is read for its inner frame, so
/// the records and the alerts are the tenant hosts' as without the overlay: read as the
/// outer headers say, every sample would be one conversation between the endpoints, neither
/// of them inside, and nothing would alert.
#[test]
fn vxlan_underlay_samples_are_read_for_the_inner_hosts() {
    const CAPTURE: &str = "sflow/pmacct_sfprobe_vxlan_border_mix.pcap";
    let (records, counters) = decode_capture(CAPTURE);
    // tshark: 741 datagrams, 4,452 flow samples, sampling rate 10.
    assert_eq!(records.len(), 4452);
    assert_eq!(counters.datagrams, 741);
    assert_eq!((counters.lost_datagrams, counters.errors.total()), (0, 0));
    let endpoints: [IpAddr; 2] = [ip("192.0.2.1"), ip("192.0.2.2")];
    assert!(
        records
            .iter()
            .all(|r| !endpoints.contains(&r.src_addr) && !endpoints.contains(&r.dst_addr)),
        "no record is the tunnel's own"
    );
    assert!(records.iter().all(|r| r.sampling_rate == 10));
    // The first sampled frame, as tshark reads its inner headers.
    let dns = records
        .iter()
        .find(|r| r.src_addr == ip("10.10.0.53") && r.dst_addr == ip("8.8.8.8"))
        .expect("a sampled DNS query of 10.10.0.53");
    assert_eq!((dns.proto, dns.dst_port), (17, 53));
    let (alerts, _) = crate::support::replay(&[CAPTURE], &crate::support::border_config(), 1);
    let got: std::collections::BTreeSet<_> = alerts
        .iter()
        .map(|a| {
            (
                a.rule,
                a.inside_addr.to_string(),
                a.outside_addr.to_string(),
            )
        })
        .collect();
    // The volume alerts of the live sfprobe export without the overlay (tests/it/daemon.rs).
    let want: std::collections::BTreeSet<_> = [
        ("bulk_egress", "10.10.20.15", "5.255.255.77"),
        ("bulk_egress", "10.10.20.16", "39.156.66.10"),
        ("bulk_egress", "2001:db8:10:1::25", "2a02:6b8:a::a"),
        ("dns_tunnel", "10.10.40.23", "77.88.8.8"),
        ("dns_tunnel", "10.10.40.24", "114.114.114.114"),
    ]
    .into_iter()
    .map(|(rule, inside, outside)| (rule, inside.to_string(), outside.to_string()))
    .collect();
    assert_eq!(got, want);
}
