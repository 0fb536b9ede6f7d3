//! The decoder against real exporters: softflowd and pmacct (v5, v9, IPFIX, biflow,
//! sampled) compared record for record with nfdump's reference decoding, real Cisco
//! captures, and hostile variations of them.

use std::collections::HashMap;
use std::net::IpAddr;

use exflow::decode::{DecodeError, Decoder, DecoderConfig, DecoderLimits, FlowKind, FlowRecord};

use crate::support::{data, datagrams, decode_capture, nfdump_time};

/// A flow as both decoders see it: endpoints, protocol, counters (forward and reverse).
type FlowKey = (IpAddr, IpAddr, u16, u16, u8, u64, u64, u64, u64);

fn proto_number(name: &str) -> u8 {
    match name {
        "TCP" => 6,
        "UDP" => 17,
        "ICMP" => 1,
        "ICMP6" => 58,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("protocol {other:?}")),
    }
}

struct Reference {
    keys: HashMap<FlowKey, usize>,
    /// (start, end) seconds per key, nfdump's reading.
    times: HashMap<FlowKey, Vec<(u64, u64)>>,
    records: usize,
    bytes: u64,
    packets: u64,
}

fn reference(capture: &str) -> Reference {
    let text = std::fs::read_to_string(data(&format!("{capture}.nfdump.csv"))).unwrap();
    let mut r = Reference {
        keys: HashMap::new(),
        times: HashMap::new(),
        records: 0,
        bytes: 0,
        packets: 0,
    };
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let proto = proto_number(f[6]);
        // nfdump folds ICMP type/code into the destination port; compare without ports.
        let (sp, dp) = if proto == 1 || proto == 58 {
            (0, 0)
        } else {
            (f[4].parse().unwrap(), f[5].parse().unwrap())
        };
        let key: FlowKey = (
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            sp,
            dp,
            proto,
            f[7].parse().unwrap(),
            f[8].parse().unwrap(),
            f[9].parse().unwrap(),
            f[10].parse().unwrap(),
        );
        *r.keys.entry(key).or_default() += 1;
        r.times
            .entry(key)
            .or_default()
            .push((nfdump_time(f[0]), nfdump_time(f[1])));
        r.records += 1;
        r.bytes += key.6 + key.8;
        r.packets += key.5 + key.7;
    }
    r
}

fn key_of(record: &FlowRecord) -> FlowKey {
    let icmp = record.proto == 1 || record.proto == 58;
    (
        record.src_addr,
        record.dst_addr,
        if icmp { 0 } else { record.src_port },
        if icmp { 0 } else { record.dst_port },
        record.proto,
        record.packets,
        record.bytes,
        record.reverse_packets,
        record.reverse_bytes,
    )
}

const EXPORTS: [(&str, FlowKind, u32); 7] = [
    ("softflowd_v5", FlowKind::NetflowV5, 0),
    ("softflowd_v9", FlowKind::NetflowV9, 1),
    ("softflowd_ipfix", FlowKind::Ipfix, 1),
    ("softflowd_ipfix_bidir", FlowKind::Ipfix, 1),
    ("softflowd_ipfix_sampled10", FlowKind::Ipfix, 10),
    ("pmacct_v9", FlowKind::NetflowV9, 0),
    ("pmacct_ipfix", FlowKind::Ipfix, 0),
];

#[test]
fn every_export_matches_nfdump_record_for_record() {
    for (capture, kind, sampling_rate) in EXPORTS {
        let (records, counters) = decode_capture(&format!("{capture}.pcap"));
        let reference = reference(capture);
        assert_eq!(records.len(), reference.records, "{capture}: record count");
        assert_eq!(
            counters.records as usize, reference.records,
            "{capture}: counted records"
        );
        let bytes: u64 = records.iter().map(|r| r.bytes + r.reverse_bytes).sum();
        let packets: u64 = records.iter().map(|r| r.packets + r.reverse_packets).sum();
        assert_eq!(
            (bytes, packets),
            (reference.bytes, reference.packets),
            "{capture}: sums"
        );
        let mut ours: HashMap<FlowKey, usize> = HashMap::new();
        for record in &records {
            *ours.entry(key_of(record)).or_default() += 1;
        }
        assert!(
            ours == reference.keys,
            "{capture}: the records differ from nfdump's"
        );
        assert!(records.iter().all(|r| r.kind == kind), "{capture}: kind");
        assert!(
            records.iter().all(|r| r.sampling_rate == sampling_rate),
            "{capture}: sampling rate"
        );
        assert!(
            records
                .iter()
                .all(|r| r.time_flow_start_ns <= r.time_flow_end_ns),
            "{capture}: time order"
        );
        assert_eq!(
            counters.errors.total(),
            0,
            "{capture}: errors {:?}",
            counters.errors
        );
        assert_eq!(
            (
                counters.lost_records,
                counters.lost_datagrams,
                counters.sequence_resets
            ),
            (0, 0, 0),
            "{capture}"
        );
        assert_eq!(
            (counters.template_misses, counters.times_from_header),
            (0, 0),
            "{capture}"
        );
    }
}

/// nfdump's reading of v5 and v9 times is right; ours must agree to the second. (Its
/// reading of softflowd's IPFIX times is not: see the next test.)
#[test]
fn netflow_times_agree_with_nfdump() {
    for capture in ["softflowd_v5", "softflowd_v9", "pmacct_v9", "pmacct_ipfix"] {
        let (records, _) = decode_capture(&format!("{capture}.pcap"));
        assert!(!records.is_empty(), "{capture}");
        let reference = reference(capture);
        for record in &records {
            let start = record.time_flow_start_ns / 1_000_000_000;
            let end = record.time_flow_end_ns / 1_000_000_000;
            let candidates = &reference.times[&key_of(record)];
            assert!(
                candidates.iter().any(|&(s, e)| s == start && e == end),
                "{capture}: {start}..{end} not in nfdump's {candidates:?} for {record:?}"
            );
        }
    }
}

/// softflowd's IPFIX stamps flows with sysUpTime-relative IE 22/21 and announces its boot
/// time (systemInitTimeMilliseconds, IE 160) in an options record. nfdump 1.7.1 ignores the
/// latter and prints end-before-start durations of ~1.8e16 s; the right reading gives the
/// same times to the millisecond as softflowd's own v5 export of the same flows.
#[test]
fn softflowd_ipfix_times_match_its_v5_export_to_the_millisecond() {
    let (v5, _) = decode_capture("softflowd_v5.pcap");
    let (ipfix, _) = decode_capture("softflowd_ipfix.pcap");
    let timed = |r: &FlowRecord| {
        (
            key_of(r),
            r.time_flow_start_ns / 1_000_000,
            r.time_flow_end_ns / 1_000_000,
        )
    };
    let mut expected: HashMap<_, usize> = HashMap::new();
    for r in &v5 {
        *expected.entry(timed(r)).or_default() += 1;
    }
    let mut ours: HashMap<_, usize> = HashMap::new();
    for r in ipfix.iter().filter(|r| r.src_addr.is_ipv4()) {
        *ours.entry(timed(r)).or_default() += 1;
    }
    assert!(
        ours == expected,
        "IPv4 IPFIX records differ from v5 in keys or times"
    );

    // Scenario B1's first piece: 10.10.20.15:50122 -> 5.255.255.77:443, 08:02:00.000 to
    // 08:08:14.266, 501 packets, 30,973,224 bytes.
    let b1 = ipfix
        .iter()
        .filter(|r| {
            r.src_addr.to_string() == "10.10.20.15" && r.dst_addr.to_string() == "5.255.255.77"
        })
        .min_by_key(|r| r.time_flow_start_ns)
        .unwrap();
    assert_eq!(
        b1.time_flow_start_ns,
        nfdump_time("2024-03-12 08:02:00") * 1_000_000_000
    );
    assert_eq!(
        b1.time_flow_end_ns,
        (nfdump_time("2024-03-12 08:08:14") * 1000 + 266) * 1_000_000
    );
    assert_eq!(
        (b1.src_port, b1.dst_port, b1.proto, b1.packets, b1.bytes),
        (50122, 443, 6, 501, 30_973_224)
    );
    assert_eq!(b1.sequence_num, 4);
    assert_eq!(b1.sampler_address.to_string(), "127.0.0.1");
}

#[test]
fn scenario_b1_arrives_in_pieces_that_sum_to_its_upload() {
    for capture in [
        "softflowd_v9",
        "softflowd_ipfix",
        "pmacct_v9",
        "pmacct_ipfix",
    ] {
        let (records, _) = decode_capture(&format!("{capture}.pcap"));
        let b1: Vec<_> = records
            .iter()
            .filter(|r| {
                r.src_addr.to_string() == "10.10.20.15" && r.dst_addr.to_string() == "5.255.255.77"
            })
            .collect();
        assert!(
            (18..=24).contains(&b1.len()),
            "{capture}: {} pieces",
            b1.len()
        );
        assert_eq!(
            b1.iter().map(|r| r.bytes).sum::<u64>(),
            600_384_929,
            "{capture}"
        );
    }
}

/// RFC 5103 biflows: softflowd puts the lower address first, so B1's upload from
/// 10.10.20.15 is in the reverse counters of a 5.255.255.77 -> 10.10.20.15 record.
#[test]
fn biflow_reverse_counters() {
    let (records, _) = decode_capture("softflowd_ipfix_bidir.pcap");
    let b1: Vec<_> = records
        .iter()
        .filter(|r| r.src_addr.to_string() == "5.255.255.77")
        .collect();
    assert!(!b1.is_empty());
    assert!(b1.iter().all(|r| r.dst_addr.to_string() == "10.10.20.15"));
    assert_eq!(b1.iter().map(|r| r.reverse_bytes).sum::<u64>(), 600_384_929);
}

/// Real Cisco exports (pmacct's test suite): record counts as tshark counts them, the
/// n-out-of-N sampling announced in an options record, IPv6 exporters.
#[test]
fn cisco_exports() {
    let cases = [
        ("100-IPFIXv10-CISCO__traffic-00", 12, FlowKind::Ipfix),
        (
            "101-NFv9-CISCO-cust_primitives__traffic-00",
            51,
            FlowKind::NetflowV9,
        ),
        (
            "102-NFv9-CISCO-f2rd-pretag-sampling-reload__traffic-00",
            35,
            FlowKind::NetflowV9,
        ),
        (
            "104-IPFIXv10-IPv6-CISCO-sampling_option__traffic-00",
            3,
            FlowKind::Ipfix,
        ),
        (
            "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources__traffic-00",
            11,
            FlowKind::NetflowV9,
        ),
        (
            "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources__traffic-01",
            13,
            FlowKind::Ipfix,
        ),
        (
            "501-IPFIXv10-BGP-IPv6-CISCO-MPLS__traffic-00",
            74,
            FlowKind::Ipfix,
        ),
    ];
    for (name, count, kind) in cases {
        let (records, counters) = decode_capture(&format!("pmacct-test-automation/{name}.pcap"));
        assert_eq!(records.len(), count, "{name}");
        assert!(records.iter().all(|r| r.kind == kind), "{name}");
        assert_eq!(counters.errors.total(), 0, "{name}: {:?}", counters.errors);
        assert_eq!(counters.template_misses, 0, "{name}");
    }
    let (records, counters) = decode_capture(
        "pmacct-test-automation/104-IPFIXv10-IPv6-CISCO-sampling_option__traffic-00.pcap",
    );
    assert_eq!(counters.options_records, 1);
    assert!(
        records.iter().all(|r| r.sampling_rate == 256),
        "1 out of 256, from samplingSize/Population"
    );
    assert_eq!(
        records[0].sampler_address.to_string(),
        "2a02:a90:4007:700::54"
    );
    assert!(
        records
            .iter()
            .all(|r| r.etype == exflow::decode::record::ETYPE_IPV6)
    );
    // Its data uses sysUpTime times but the capture holds no systemInitTime: counted, and
    // stamped with the export time rather than left at zero.
    assert_eq!(counters.times_from_header, 3);
    assert!(
        records
            .iter()
            .all(|r| r.time_flow_start_ns > 1_600_000_000_000_000_000)
    );
}

/// A 5-tuple as nfacctd aggregates it: addresses, ports, IP protocol number.
type AggregateKey = (IpAddr, IpAddr, u16, u16, u8);

/// pmacct-test-automation's own check, on exflow: every capture of each test with an
/// expected output, decoded in its replay order with one decoder, summed per 5-tuple, equals
/// nfacctd's `output-flow-00.json` summed the same way (bytes and packets; multiplied by the
/// sampling rate where the test's nfacctd.conf sets `nfacctd_renormalize: true`). The
/// expected lines are in `pmacct-test-automation/nfacctd_output_flow_00.csv` (see
/// tests/data/README.md); 110's captures are byte-identical to 100's, 101's and 102's.
#[test]
fn every_key_of_nfacctds_expected_output_is_equal() {
    const DIR: &str = "pmacct-test-automation";
    // (test number, its captures as the traffic reproducer replays them, renormalize)
    let tests: [(&str, &[&str], bool); 13] = [
        ("100", &["100-IPFIXv10-CISCO__traffic-00"], false),
        (
            "101",
            &["101-NFv9-CISCO-cust_primitives__traffic-00"],
            false,
        ),
        (
            "102",
            &["102-NFv9-CISCO-f2rd-pretag-sampling-reload__traffic-00"],
            true,
        ),
        (
            "103",
            &["103-IPFIXv10-CISCO-pretag-JSON_encoding__traffic-00"],
            false,
        ),
        (
            "104",
            &["104-IPFIXv10-IPv6-CISCO-sampling_option__traffic-00"],
            true,
        ),
        (
            "110",
            &[
                "100-IPFIXv10-CISCO__traffic-00",
                "101-NFv9-CISCO-cust_primitives__traffic-00",
                "102-NFv9-CISCO-f2rd-pretag-sampling-reload__traffic-00",
            ],
            false,
        ),
        (
            "111",
            &[
                "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources__traffic-00",
                "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources__traffic-01",
            ],
            false,
        ),
        (
            "400",
            &[
                "400-IPFIXv10-BMP-CISCO-SRv6-multiple-sources__traffic-00",
                "400-IPFIXv10-BMP-CISCO-SRv6-multiple-sources__traffic-01",
            ],
            false,
        ),
        (
            "401",
            &[
                "401-IPFIXv10-BMP-IPv6-CISCO-MPLS-multiple-sources__traffic-00",
                "401-IPFIXv10-BMP-IPv6-CISCO-MPLS-multiple-sources__traffic-01",
            ],
            false,
        ),
        (
            "402",
            &["402-IPFIXv10-BMP-IPv6-high-availability__traffic-00"],
            false,
        ),
        ("500", &["500-IPFIXv10-BGP-CISCO-SRv6__traffic-00"], false),
        (
            "501",
            &["501-IPFIXv10-BGP-IPv6-CISCO-MPLS__traffic-00"],
            false,
        ),
        (
            "502",
            &["502-IPFIXv10-BGP-IPv6-CISCO-SRv6-lcomms__traffic-00"],
            false,
        ),
    ];
    let text = std::fs::read_to_string(data(&format!("{DIR}/nfacctd_output_flow_00.csv"))).unwrap();
    let mut expected: HashMap<&str, HashMap<AggregateKey, (u64, u64)>> = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let proto = match f[5] {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "ipv6-icmp" => 58,
            "vrrp" => 112,
            other => panic!("nfacctd protocol {other:?}"),
        };
        let key = (
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
            proto,
        );
        let sums = expected.entry(f[0]).or_default().entry(key).or_default();
        sums.0 += f[7].parse::<u64>().unwrap();
        sums.1 += f[6].parse::<u64>().unwrap();
    }
    assert_eq!(expected.len(), tests.len());
    let (mut keys, mut equal) = (0, 0);
    let mut differing = Vec::new();
    for (test, captures, renormalize) in tests {
        let mut decoder = Decoder::new(DecoderConfig::default());
        let mut records = Vec::new();
        for capture in captures {
            for (exporter, received_ns, payload) in datagrams(&format!("{DIR}/{capture}.pcap")) {
                let _ = decoder.decode(exporter, received_ns, &payload, &mut records);
            }
        }
        assert_eq!(decoder.totals().errors.total(), 0, "{test}");
        let mut got: HashMap<AggregateKey, (u64, u64)> = HashMap::new();
        for r in &records {
            let scale = if renormalize {
                u64::from(r.sampling_rate.max(1))
            } else {
                1
            };
            let key = (r.src_addr, r.dst_addr, r.src_port, r.dst_port, r.proto);
            let sums = got.entry(key).or_default();
            sums.0 += r.bytes * scale;
            sums.1 += r.packets * scale;
        }
        let want = &expected[test];
        keys += want.len();
        for (key, sums) in want {
            if got.get(key) == Some(sums) {
                equal += 1;
            } else {
                differing.push((test, *key, *sums, got.get(key).copied()));
            }
        }
        for key in got.keys().filter(|k| !want.contains_key(k)) {
            differing.push((test, *key, (0, 0), got.get(key).copied()));
        }
    }
    assert!(
        differing.is_empty(),
        "(test, key, nfacctd, exflow): {differing:#?}"
    );
    assert_eq!((equal, keys), (601, 601));
}

/// Every prefix of the first datagrams of real exports, decoded with the templates of the
/// datagrams before it: never a panic, never more records than the whole datagram gives,
/// and, where the protocol says how long the datagram is (v5 counts, IPFIX lengths), a cut
/// one is counted as an error.
#[test]
fn truncated_datagrams_are_counted_and_skipped() {
    for capture in [
        "softflowd_v5.pcap",
        "softflowd_v9.pcap",
        "softflowd_ipfix.pcap",
        "pmacct_v9.pcap",
    ] {
        let all = datagrams(capture);
        let knows_length = !capture.contains("v9");
        let warmed_up = |upto: usize| {
            let mut decoder = Decoder::new(DecoderConfig::default());
            for (exporter, t, payload) in &all[..upto] {
                let _ = decoder.decode(*exporter, *t, payload, &mut Vec::new());
            }
            decoder
        };
        for (index, (exporter, t, payload)) in all.iter().enumerate().take(6) {
            let mut full = Vec::new();
            warmed_up(index)
                .decode(*exporter, *t, payload, &mut full)
                .unwrap();
            for cut in 0..payload.len() {
                let mut decoder = warmed_up(index);
                let errors_before = decoder.totals().errors.total();
                let mut records = Vec::new();
                let result = decoder.decode(*exporter, *t, &payload[..cut], &mut records);
                assert!(records.len() <= full.len(), "{capture}: cut at {cut}");
                if knows_length {
                    let counted = decoder.totals().errors.total() > errors_before;
                    assert!(
                        result.is_err() && counted,
                        "{capture}: datagram {index} cut at {cut} not counted"
                    );
                }
            }
        }
    }
}

/// Data that arrives before its template is held and decoded when the template comes.
#[test]
fn data_before_template_is_held_then_decoded() {
    let all = datagrams("pmacct_ipfix.pcap");
    let (exporter, t0, with_templates) = &all[0];
    let (_, t1, data_only) = &all[1];
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    assert_eq!(
        decoder.decode(*exporter, *t1, data_only, &mut records),
        Ok(0)
    );
    assert_eq!(decoder.totals().template_misses, 1);
    let added = decoder
        .decode(*exporter, *t0, with_templates, &mut records)
        .unwrap();
    assert_eq!(added, 4, "2 held records and the template datagram's own 2");
    assert_eq!(decoder.totals().pending_records, 2);
    // The held records keep their own datagram's receive time and sequence number.
    assert!(
        records
            .iter()
            .any(|r| r.time_received_ns == *t1 && r.sequence_num == 2)
    );
}

#[test]
fn held_data_is_bounded_and_drops_are_counted() {
    let all = datagrams("pmacct_ipfix.pcap");
    let limits = DecoderLimits {
        max_pending_sets_per_exporter: 3,
        ..DecoderLimits::default()
    };
    let mut decoder = Decoder::new(DecoderConfig {
        limits,
        ..DecoderConfig::default()
    });
    let mut records = Vec::new();
    for (exporter, t, payload) in all.iter().skip(1).take(5) {
        let _ = decoder.decode(*exporter, *t, payload, &mut records);
    }
    let totals = decoder.totals();
    assert_eq!(totals.template_misses, 5);
    assert_eq!(totals.errors.get(DecodeError::PendingDropped), 2);
    let (exporter, t, first) = &all[0];
    decoder.decode(*exporter, *t, first, &mut records).unwrap();
    assert_eq!(
        decoder.totals().pending_records,
        6,
        "the 3 held sets of 2 records each"
    );
}

/// Templates, boot time and sampling survive a restart through the state file.
#[test]
fn state_file_restores_templates_clock_and_sampling() {
    let all = datagrams("softflowd_ipfix_sampled10.pcap");
    let dir = std::env::temp_dir().join(format!("exflow-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let mut before = Decoder::new(DecoderConfig::default());
    let mut expected = Vec::new();
    for (exporter, t, payload) in &all[..2] {
        before
            .decode(*exporter, *t, payload, &mut expected)
            .unwrap();
    }
    before.save_state(&path).unwrap();
    let (exporter, t, later) = &all[1];
    let mut after = Decoder::new(DecoderConfig::default());
    assert!(after.load_state(&path).unwrap() >= 2);
    let mut records = Vec::new();
    after.decode(*exporter, *t, later, &mut records).unwrap();
    assert!(!records.is_empty());
    let expected_tail = &expected[expected.len() - records.len()..];
    assert_eq!(
        records, expected_tail,
        "same records, times and sampling rate as before the restart"
    );
    assert!(records.iter().all(|r| r.sampling_rate == 10));
    assert_eq!(after.totals().template_misses, 0);
    // A missing file is a first start; a corrupt one is a clear error.
    assert_eq!(
        Decoder::new(DecoderConfig::default())
            .load_state(&dir.join("absent.json"))
            .unwrap(),
        0
    );
    std::fs::write(dir.join("bad.json"), b"{not json").unwrap();
    let error = Decoder::new(DecoderConfig::default())
        .load_state(&dir.join("bad.json"))
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("is not valid exflow state"),
        "{error:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exporter_and_template_limits_evict_or_refuse_and_count() {
    let all = datagrams("pmacct_ipfix.pcap");
    let (_, t, first) = &all[0]; // four templates
    let limits = DecoderLimits {
        max_exporters: 2,
        max_templates_per_exporter: 2,
        ..DecoderLimits::default()
    };
    let mut decoder = Decoder::new(DecoderConfig {
        limits,
        ..DecoderConfig::default()
    });
    let mut records = Vec::new();
    for last_octet in 1..=3u8 {
        let exporter = IpAddr::from([192, 0, 2, last_octet]);
        let _ = decoder.decode(exporter, *t, first, &mut records);
    }
    let totals = decoder.totals();
    assert_eq!(decoder.exporter_count(), 2);
    assert_eq!(totals.errors.get(DecodeError::ExporterEvicted), 1);
    assert_eq!(totals.errors.get(DecodeError::TemplateLimit), 3 * 2);
    assert_eq!(decoder.template_count(), 2 * 2);
}

/// Hand-made IPFIX: template withdrawal (RFC 7011 section 8.1), variable-length fields,
/// a zero-length set.
#[test]
fn ipfix_withdrawal_variable_length_and_zero_length_set() {
    fn message(sets: &[u8], sequence: u32) -> Vec<u8> {
        let mut m = vec![0, 10];
        m.extend_from_slice(&(16 + sets.len() as u16).to_be_bytes());
        m.extend_from_slice(&1_710_230_894u32.to_be_bytes());
        m.extend_from_slice(&sequence.to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(sets);
        m
    }
    #[rustfmt::skip]
    let template = [
        0, 2, 0, 20,            // template set, length 20
        1, 0, 0, 3,             // template 256, 3 fields
        0, 8, 0, 4,             // sourceIPv4Address
        0, 82, 0xff, 0xff,      // interfaceName, variable
        0, 1, 0, 4,             // octetDeltaCount
    ];
    #[rustfmt::skip]
    let data = [
        1, 0, 0, 17,            // data set 256, length 17
        10, 0, 0, 1, 2, b'e', b'0', 0, 0, 0, 42, // 10.0.0.1, "e0", 42 bytes
        0, 0,                   // padding
    ];
    let withdraw = [0, 2, 0, 8, 1, 0, 0, 0];
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    decoder
        .decode(exporter, 1, &message(&template, 0), &mut records)
        .unwrap();
    decoder
        .decode(exporter, 2, &message(&data[..], 0), &mut records)
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].src_addr, records[0].bytes),
        ("10.0.0.1".parse().unwrap(), 42)
    );
    assert_eq!(
        records[0].time_flow_start_ns, 1_710_230_894_000_000_000,
        "no times: export time"
    );
    decoder
        .decode(exporter, 3, &message(&withdraw, 1), &mut records)
        .unwrap();
    assert_eq!(decoder.template_count(), 0);
    decoder
        .decode(exporter, 4, &message(&data[..], 1), &mut records)
        .unwrap();
    assert_eq!(records.len(), 1, "withdrawn: the data is held, not decoded");
    assert_eq!(decoder.totals().template_withdrawals, 1);
    let zero_length = [1, 0, 0, 0, 1, 0, 0, 0];
    assert_eq!(
        decoder.decode(exporter, 5, &message(&zero_length, 2), &mut records),
        Err(DecodeError::BadLength)
    );
    assert_eq!(decoder.totals().errors.get(DecodeError::BadLength), 1);
    assert_eq!(
        decoder.decode(exporter, 6, b"\x00\x08hello", &mut records),
        Err(DecodeError::UnknownVersion)
    );
}

/// Loss shows in the sequence counters: drop datagrams from a real export.
#[test]
fn missing_datagrams_are_counted_as_loss() {
    for (capture, lost_records, lost_datagrams) in [
        ("softflowd_v5.pcap", true, false),
        ("softflowd_v9.pcap", false, true),
        ("softflowd_ipfix.pcap", true, false),
    ] {
        let all = datagrams(capture);
        let mut decoder = Decoder::new(DecoderConfig::default());
        let mut records = Vec::new();
        let mut skipped_records = 0;
        for (i, (exporter, t, payload)) in all.iter().enumerate().take(20) {
            if i == 5 || i == 6 {
                let mut scratch = Decoder::new(DecoderConfig::default());
                let mut skipped = Vec::new();
                for (e, t, p) in &all[..=i] {
                    skipped.clear();
                    let _ = scratch.decode(*e, *t, p, &mut skipped);
                }
                skipped_records += skipped.len() as u64;
                continue;
            }
            decoder
                .decode(*exporter, *t, payload, &mut records)
                .unwrap();
        }
        let totals = decoder.totals();
        assert_eq!(
            totals.lost_records,
            if lost_records { skipped_records } else { 0 },
            "{capture}"
        );
        assert_eq!(
            totals.lost_datagrams,
            if lost_datagrams { 2 } else { 0 },
            "{capture}"
        );
    }
}
