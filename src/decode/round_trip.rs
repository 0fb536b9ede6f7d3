//! decode tests: what `wire::emit` writes (the load generator's and the benchmarks'
//! datagrams), the decoder reads back field for field. Here, not in wire, because the
//! check needs the decoder, the stage above the views.

use crate::decode::{Decoder, DecoderConfig, FlowKind};
use crate::synth::background_records;
use crate::wire::emit::{DATAGRAM_BUDGET, Exporter, SFLOW_SAMPLING_RATE, record_count};

/// What the encoder writes, the decoder reads back field for field.
#[test]
fn round_trips_through_the_decoder() {
    let records = background_records(500, 7, 1_710_230_400_000);
    for kind in [FlowKind::NetflowV5, FlowKind::NetflowV9, FlowKind::Ipfix] {
        let mut datagrams = Vec::new();
        Exporter::new(kind, 3).template_every(10).encode(
            &records,
            1_710_230_500_000,
            &mut datagrams,
        );
        let budget = if kind == FlowKind::NetflowV5 {
            24 + 30 * 48
        } else {
            DATAGRAM_BUDGET
        };
        assert!(datagrams.iter().all(|d| d.len() <= budget), "{kind:?}");
        let mut decoder = Decoder::new(DecoderConfig::default());
        let mut decoded = Vec::new();
        for d in &datagrams {
            decoder
                .decode("192.0.2.1".parse().unwrap(), 1, d, &mut decoded)
                .unwrap();
        }
        let expected: Vec<_> = records
            .iter()
            .filter(|r| kind != FlowKind::NetflowV5 || r.src_addr.is_ipv4())
            .collect();
        assert_eq!(decoded.len(), expected.len(), "{kind:?}");
        for (got, want) in decoded.iter().zip(expected) {
            assert_eq!(
                (got.src_addr, got.dst_addr, got.src_port, got.dst_port),
                (want.src_addr, want.dst_addr, want.src_port, want.dst_port)
            );
            assert_eq!(
                (got.bytes, got.packets, got.proto),
                (want.bytes, want.packets, want.proto),
                "{kind:?}"
            );
            assert_eq!(
                got.time_flow_start_ns, want.time_flow_start_ns,
                "{kind:?} {got:?} {want:?}"
            );
            assert_eq!(got.time_flow_end_ns, want.time_flow_end_ns, "{kind:?}");
        }
        let totals = decoder.totals();
        assert_eq!(
            (
                totals.errors.total(),
                totals.lost_records,
                totals.lost_datagrams
            ),
            (0, 0, 0),
            "{kind:?}"
        );
    }
}

/// sFlow: one sample per record, its packet's 5-tuple and flags read back from the raw
/// header, one packet of the record's mean size at the announced rate.
#[test]
fn sflow_round_trips_through_the_decoder() {
    let records = background_records(200, 9, 1_710_230_400_000);
    let mut datagrams = Vec::new();
    Exporter::new(FlowKind::Sflow5, 0).encode(&records, 1_710_230_500_000, &mut datagrams);
    assert!(datagrams.iter().all(|d| d.len() <= DATAGRAM_BUDGET));
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut decoded = Vec::new();
    for d in &datagrams {
        let n = decoder
            .decode("192.0.2.1".parse().unwrap(), 1, d, &mut decoded)
            .unwrap();
        assert_eq!(n as u32, record_count(FlowKind::Sflow5, d));
    }
    assert_eq!(decoded.len(), records.len());
    for (got, want) in decoded.iter().zip(&records) {
        assert_eq!(
            (
                got.src_addr,
                got.dst_addr,
                got.src_port,
                got.dst_port,
                got.proto
            ),
            (
                want.src_addr,
                want.dst_addr,
                want.src_port,
                want.dst_port,
                want.proto
            )
        );
        assert_eq!(
            got.tcp_flags,
            if want.proto == 6 { want.tcp_flags } else { 0 }
        );
        assert_eq!((got.packets, got.sampling_rate), (1, SFLOW_SAMPLING_RATE));
        assert_eq!(got.bytes, want.bytes / want.packets.max(1) + 18);
    }
    let totals = decoder.totals();
    assert_eq!((totals.errors.total(), totals.lost_datagrams), (0, 0));
}

#[test]
fn ipfix_datagrams_carry_about_seventeen_records() {
    let records = background_records(10_000, 1, 1_710_230_400_000);
    let mut datagrams = Vec::new();
    Exporter::new(FlowKind::Ipfix, 0).encode(&records, 1_710_230_500_000, &mut datagrams);
    let per_datagram = records.len() as f64 / datagrams.len() as f64;
    assert!((15.0..=21.0).contains(&per_datagram), "{per_datagram}");
    let counted: u32 = datagrams
        .iter()
        .map(|d| record_count(FlowKind::Ipfix, d))
        .sum();
    assert_eq!(counted as usize, records.len());
}
