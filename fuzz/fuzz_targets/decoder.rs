//! fuzz: the stateful decoder. One input is a short script of datagrams fed to one
//! `Decoder` from two exporters, so template, pending-data, sampling and sequence state
//! carry from datagram to datagram, as they do on a live socket.
//!
//! Input format (what `scripts/fuzz-smoke.sh` writes for its seeds):
//! - byte 0, the decoder's configuration: bit 0 tight limits (1 exporter, 4 templates,
//!   8 fields, 2 pending sets, 512 pending bytes, 3 interface names: every cap and
//!   eviction path is hit);
//!   bit 1 a default sampling rate and a per-exporter override; bit 2 receive times from
//!   the UNIX epoch instead of 2024.
//! - then datagrams, each: one control byte (bit 0: exporter B instead of A; bits 1-7:
//!   seconds since the previous datagram), a big-endian `u16` length, the datagram bytes.
//!   A length past the end of the input takes what is left.
#![no_main]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use exflow::decode::{Decoder, DecoderConfig, DecoderLimits, FlowKind, FlowRecord};
use exflow::wire::Version;
use libfuzzer_sys::fuzz_target;

const EXPORTER_A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const EXPORTER_B: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
/// 2024-03-12 00:00 UTC, the day the shared captures were made.
const RECEIVED_BASE_NS: u64 = 1_710_201_600 * 1_000_000_000;

fn config(flags: u8) -> DecoderConfig {
    let mut config = DecoderConfig::default();
    if flags & 1 != 0 {
        config.limits = DecoderLimits {
            max_exporters: 1,
            max_templates_per_exporter: 4,
            max_fields_per_template: 8,
            max_pending_sets_per_exporter: 2,
            max_pending_bytes_per_exporter: 512,
            max_tracked_connections: 4,
            max_sflow_interfaces_per_agent: 2,
            max_interface_names: 3,
            // Off as by default: the target checks every record names its datagram's sender.
            exporter_address_from_options: false,
        };
    }
    if flags & 2 != 0 {
        config.sampling.default_rate = Some(10);
        config.sampling.overrides.insert(EXPORTER_B, 100);
    }
    config
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let config = config(flags);
    let limits = config.limits;
    let mut decoder = Decoder::new(config);
    let mut received_ns = if flags & 4 != 0 { 0 } else { RECEIVED_BASE_NS };
    let mut out: Vec<FlowRecord> = Vec::new();
    let mut datagrams = 0u64;
    let mut appended = 0u64;
    while let [control, hi, lo, tail @ ..] = rest {
        let length = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, next) = tail.split_at(length);
        rest = next;
        let exporter = if control & 1 == 0 {
            EXPORTER_A
        } else {
            EXPORTER_B
        };
        received_ns += u64::from(control >> 1) * 1_000_000_000;

        out.clear();
        let result = decoder.decode(exporter, received_ns, datagram, &mut out);
        datagrams += 1;
        appended += out.len() as u64;
        match result {
            Ok(n) => assert_eq!(
                n,
                out.len(),
                "decode() returned a count other than it appended"
            ),
            Err(error) => {
                black_box(error.code());
            }
        }
        // Records from held data sets belong to the exporter that sent them, and held sets
        // are per exporter and protocol: whatever comes out now is this exporter's, in
        // this datagram's protocol.
        let kind = match Version::of(datagram) {
            Some(Version::NetflowV1) => Some(FlowKind::NetflowV1),
            Some(Version::NetflowV5) => Some(FlowKind::NetflowV5),
            Some(Version::NetflowV7) => Some(FlowKind::NetflowV7),
            Some(Version::NetflowV9) => Some(FlowKind::NetflowV9),
            Some(Version::Ipfix) => Some(FlowKind::Ipfix),
            Some(Version::Sflow5) => Some(FlowKind::Sflow5),
            _ => None,
        };
        for record in &out {
            assert_eq!(
                record.sampler_address, exporter,
                "record attributed to another exporter"
            );
            assert_eq!(
                Some(record.kind),
                kind,
                "record of another protocol than its datagram"
            );
            black_box(record);
        }
        assert!(
            decoder.exporter_count() <= limits.max_exporters.max(1),
            "exporter cap exceeded"
        );
        assert!(
            decoder.template_count()
                <= limits.max_templates_per_exporter * decoder.exporter_count(),
            "template cap exceeded"
        );
        assert!(
            decoder.tracked_connections() <= limits.max_tracked_connections,
            "tracked connections cap exceeded"
        );
        assert!(
            decoder.sflow_interfaces().count()
                <= limits.max_sflow_interfaces_per_agent * decoder.exporter_count(),
            "sFlow interface cap exceeded"
        );
        assert!(
            decoder.interface_name_count() <= limits.max_interface_names,
            "interface name cap exceeded"
        );
    }
    let totals = decoder.totals();
    assert_eq!(
        totals.datagrams, datagrams,
        "datagram count lost (eviction must keep counters)"
    );
    assert_eq!(
        totals.records, appended,
        "record count differs from records appended"
    );
    black_box(totals.errors.total());
    for (address, counters) in decoder.exporters() {
        black_box((address, counters.records, counters.errors.total()));
    }
});
