//! NetFlow v9 / IPFIX from firewalls and routers of several makes (logstash-codec-netflow's
//! spec fixtures, see tests/data/README.md), decoded with the values logstash's spec asserts.

use std::net::IpAddr;

use exflow::decode::{DecodeCounters, Decoder, DecoderConfig, FlowRecord};

use crate::support::data;

/// Decodes logstash fixtures (one UDP payload each) in order, as one exporter.
fn decode_dats(names: &[&str]) -> (Vec<FlowRecord>, DecodeCounters) {
    let mut decoder = Decoder::new(DecoderConfig::default());
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
    assert_eq!(counters.errors.total(), 0);
}

/// Cisco ASA NSEL #2: initiator/responder octets (IE 231/232, logstash's fwd/rev flow delta
/// bytes). 19 records; the last is connection 742820223, 192.168.0.1:56651 -> 192.168.0.18:80,
/// 69 bytes forward and 14178 back.
#[test]
fn cisco_asa_nsel_initiator_and_responder_octets() {
    let (records, counters) = decode_dats(&[
        "netflow9_test_cisco_asa_2_tpl_26x",
        "netflow9_test_cisco_asa_2_tpl_27x",
        "netflow9_test_cisco_asa_2_data",
    ]);
    assert_eq!(records.len(), 19);
    let r = records[18];
    assert_eq!(
        (r.src_addr, r.dst_addr),
        (ip("192.168.0.1"), ip("192.168.0.18"))
    );
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 56651, 80));
    assert_eq!((r.in_if, r.out_if), (3, 4));
    assert_eq!((r.bytes, r.reverse_bytes), (69, 14178));
    assert_eq!(r.time_flow_start_ns, 1_469_109_036_395_000_000);
    assert_eq!(r.time_flow_end_ns, 1_469_109_036_495_000_000);
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
