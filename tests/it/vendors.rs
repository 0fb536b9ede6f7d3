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
    assert_eq!((r.src_addr, r.dst_addr), (ip("134.220.2.6"), ip("134.220.1.156")));
    assert_eq!((r.proto, r.src_port, r.dst_port), (6, 88, 50234));
    assert_eq!((r.bytes, r.packets, r.tcp_flags), (363, 3, 94));
    assert_eq!((r.in_if, r.out_if), (500_010_024, 500_010_002));
    assert_eq!(r.sequence_num, 970_830_115);
    assert_eq!(counters.errors.total(), 0, "{:?}", counters.errors);
}
