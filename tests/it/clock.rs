//! Event time no sender can corrupt, on a live daemon: a spoofed exporter on another
//! loopback address cannot move the legitimate exporter's clock, records too far in the
//! future are dropped and counted; late and reordered records still raise the alerts.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;

use exflow::decode::{FlowKind, FlowRecord};

use crate::harness::{Daemon, temp_dir, wait_until};
use crate::support::{border_config, datagrams, replay};

/// 2030-01-01T00:00:00Z.
const YEAR_2030_MS: u64 = 1_893_456_000_000;

fn alerts_in(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A small upload of an inside host, from `start_ms` to `end_ms`.
fn upload(inside: &str, start_ms: u64, end_ms: u64) -> FlowRecord {
    FlowRecord {
        kind: FlowKind::Ipfix,
        time_flow_start_ns: start_ms * 1_000_000,
        time_flow_end_ns: end_ms * 1_000_000,
        bytes: 1_000,
        packets: 2,
        src_addr: inside.parse().unwrap(),
        dst_addr: "198.51.100.7".parse().unwrap(),
        src_port: 40_000,
        dst_port: 443,
        proto: 6,
        ..FlowRecord::default()
    }
}

/// IPFIX datagrams (template first) carrying `records`, exported at `export_ms`.
fn ipfix(records: &[FlowRecord], export_ms: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    exflow::wire::emit::Exporter::new(FlowKind::Ipfix, 7).encode(records, export_ms, &mut out);
    out
}

/// (alert id, event time) of alerts as JSON.
fn ids_and_times<'a>(
    alerts: impl IntoIterator<Item = &'a serde_json::Value>,
) -> BTreeMap<String, String> {
    alerts
        .into_iter()
        .map(|a| {
            (
                a["alert_id"].as_str().unwrap().to_string(),
                a["event_time"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// softflowd's export from 127.0.0.1, and halfway through it a spoofer on 127.0.0.2 sends
/// one record dated 2030 and one dated now (two years ahead of the capture's 2024, but
/// within the skew of the wall clock). The first is dropped and counted; the second runs
/// on the spoofer's own clock only. The legitimate alerts are exactly those of a replay of
/// the capture alone, ids and event times included, and none is dated after 2024.
#[test]
fn a_spoofed_exporter_cannot_move_the_legitimate_exporters_clock() {
    let dir = temp_dir("clock-spoofed");
    let config = format!(
        "[sink]\nfile = \"{}\"\n",
        dir.join("alerts.jsonl").display()
    );
    let daemon = Daemon::start(&config, &[]);
    let legit = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spoofer = UdpSocket::bind("127.0.0.2:0").unwrap();
    let capture = datagrams("softflowd_ipfix.pcap");
    let target = ("127.0.0.1", daemon.udp_port);
    let (first, second) = capture.split_at(capture.len() / 2);
    for (_, _, payload) in first {
        legit.send_to(payload, target).unwrap();
    }
    let now_ms = exflow::time::wall_clock_ns() / 1_000_000;
    let spoofed = [
        upload("10.10.99.1", YEAR_2030_MS - 1_000, YEAR_2030_MS),
        upload("10.10.99.2", now_ms - 1_000, now_ms),
    ];
    for payload in ipfix(&spoofed, now_ms) {
        spoofer.send_to(&payload, target).unwrap();
    }
    for (_, _, payload) in second {
        legit.send_to(payload, target).unwrap();
    }
    wait_until("every record is decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0 + 2.0
    });
    assert_eq!(daemon.metric("exflow_flow_clock_skewed_records_total"), 1.0);
    daemon.stop();

    let live = alerts_in(&dir);
    let (replayed, _) = replay(&["softflowd_ipfix.pcap"], &border_config(), 1);
    assert!(!replayed.is_empty());
    let replayed: Vec<serde_json::Value> = replayed
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect();
    assert_eq!(ids_and_times(&live), ids_and_times(&replayed));
    for alert in &live {
        let time = alert["event_time"].as_str().unwrap();
        assert!(time.starts_with("2024-"), "dated by the spoofer: {alert}");
    }
}

/// Every record of pmacct's export, delayed as a large flow cache delays them: each one
/// arrives between 0 and 50 minutes after its flow ended (a fixed pseudo-random delay per
/// record), so records of different flows, and of one long flow, come out of order. The
/// border mix's expected alerts all still come, and no record is too late.
#[test]
fn records_delayed_up_to_50_minutes_still_raise_the_expected_alerts() {
    let (records, _) = crate::support::decode_capture("pmacct_ipfix.pcap");
    assert!(!records.is_empty());
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut delayed: Vec<(u64, FlowRecord)> = records
        .into_iter()
        .map(|record| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay_ms = seed % (50 * 60_000);
            (record.time_flow_end_ns / 1_000_000 + delay_ms, record)
        })
        .collect();
    delayed.sort_by_key(|(arrival_ms, _)| *arrival_ms);
    // Out of order indeed: many records end more than half an hour before one that
    // arrived ahead of them.
    let mut latest_end = 0;
    let mut reordered = 0;
    for (_, record) in &delayed {
        let end = record.time_flow_end_ns / 1_000_000;
        if end + 30 * 60_000 < latest_end {
            reordered += 1;
        }
        latest_end = latest_end.max(end);
    }
    assert!(reordered > 300, "{reordered} records reordered by 30 min");

    let config = border_config();
    let enricher = config.enricher().unwrap();
    let mut pipeline = exflow::pipeline::Pipeline::new(&config, enricher, 2);
    let mut exporter = exflow::wire::emit::Exporter::new(FlowKind::Ipfix, 1);
    let (mut alerts, mut datagrams) = (Vec::new(), Vec::new());
    // One datagram per arrival millisecond's records, sent when they arrive.
    for batch in delayed.chunk_by(|a, b| a.0 == b.0) {
        let arrival_ms = batch[0].0;
        let records: Vec<FlowRecord> = batch.iter().map(|(_, r)| *r).collect();
        datagrams.clear();
        exporter.encode(&records, arrival_ms, &mut datagrams);
        for datagram in &datagrams {
            pipeline.push_datagram(
                "192.0.2.1".parse().unwrap(),
                arrival_ms * 1_000_000,
                datagram,
                &mut alerts,
            );
        }
    }
    pipeline.finish(&mut alerts);
    let counters = pipeline.counters();
    assert_eq!(counters.flow.clock.late, 0);
    assert_eq!(counters.flow.records, counters.decode.records);
    // Every expected alert, at any severity: C2's quiet-flow beacon comes at low severity,
    // for the beacon rule measures the silences between a flow's records in the order
    // they arrive. B4's keepalive may show as a low beacon, as in every replay.
    let pairs: std::collections::BTreeSet<(String, String, String)> = alerts
        .iter()
        .filter(|a| a.inside_addr.to_string() != "10.10.5.30")
        .map(|a| {
            let (rule, inside) = (a.rule.to_string(), a.inside_addr.to_string());
            (rule, inside, a.outside_addr.to_string())
        })
        .collect();
    assert_eq!(
        pairs,
        crate::replay::expected(true),
        "{:#?}",
        alerts.iter().map(|a| &a.summary).collect::<Vec<_>>()
    );
}

/// An IPFIX message with no sets, from the spoofer's point of view the cheapest way to
/// make a collector hold state for a new exporter.
fn empty_ipfix(export_s: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(16);
    message.extend_from_slice(&10u16.to_be_bytes());
    message.extend_from_slice(&16u16.to_be_bytes());
    message.extend_from_slice(&export_s.to_be_bytes());
    message.extend_from_slice(&0u32.to_be_bytes());
    message.extend_from_slice(&1u32.to_be_bytes());
    message
}

/// Halfway through softflowd's export, 5,000 spoofed exporters (more than
/// `decoder.max_exporters`, 4,096) send one datagram each from as many loopback addresses.
/// The exporter table makes room by forgetting spoofers, never the exporter that sends
/// steadily: its templates and options (its clock's systemInitTimeMilliseconds) survive,
/// every record of the second half decodes, and the alerts are a replay's to the
/// millisecond (ids and event times).
#[test]
fn a_spoofed_exporter_flood_does_not_evict_the_steady_exporter() {
    let dir = temp_dir("clock-flood");
    let config = format!(
        "[sink]\nfile = \"{}\"\n",
        dir.join("alerts.jsonl").display()
    );
    let daemon = Daemon::start(&config, &[]);
    let target = ("127.0.0.1", daemon.udp_port);
    let legit = UdpSocket::bind("127.0.0.1:0").unwrap();
    let capture = datagrams("softflowd_ipfix.pcap");
    let (first, second) = capture.split_at(capture.len() / 2);
    for (_, _, payload) in first {
        legit.send_to(payload, target).unwrap();
    }
    const SPOOFED: u32 = 5_000;
    let message = empty_ipfix(1_710_234_000);
    for i in 0..SPOOFED {
        let address = std::net::Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8);
        let spoofer = UdpSocket::bind((address, 0)).unwrap();
        spoofer.send_to(&message, target).unwrap();
    }
    for (_, _, payload) in second {
        legit.send_to(payload, target).unwrap();
    }
    let sent = capture.len() as f64 + f64::from(SPOOFED);
    wait_until("every datagram is decoded", Duration::from_secs(60), || {
        daemon.metric("exflow_decode_datagrams_total") == sent
    });
    assert_eq!(
        daemon.metric("exflow_decode_errors_total{kind=\"exporter_evicted\"}"),
        f64::from(SPOOFED + 1 - 4096)
    );
    assert_eq!(daemon.metric("exflow_decode_records_total"), 2208.0);
    assert_eq!(daemon.metric("exflow_decode_template_misses_total"), 0.0);
    daemon.stop();

    let live = alerts_in(&dir);
    let (replayed, _) = replay(&["softflowd_ipfix.pcap"], &border_config(), 1);
    assert!(!replayed.is_empty());
    let replayed: Vec<serde_json::Value> = replayed
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect();
    assert_eq!(ids_and_times(&live), ids_and_times(&replayed));
}

/// With `source.exporters`, datagrams from any other address are dropped undecoded and
/// counted; the accepted exporter's are decoded as ever.
#[test]
fn datagrams_from_outside_the_exporter_allowlist_are_dropped_and_counted() {
    let dir = temp_dir("clock-allowlist");
    let config = format!(
        "[sink]\nfile = \"{}\"\n\n[source]\nexporters = [\"127.0.0.1/32\"]\n",
        dir.join("alerts.jsonl").display()
    );
    let daemon = Daemon::start(&config, &[]);
    let target = ("127.0.0.1", daemon.udp_port);
    let capture = datagrams("softflowd_ipfix.pcap");
    let stranger = UdpSocket::bind("127.0.0.3:0").unwrap();
    for (_, _, payload) in &capture[..10] {
        stranger.send_to(payload, target).unwrap();
    }
    let legit = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (_, _, payload) in &capture {
        legit.send_to(payload, target).unwrap();
    }
    wait_until("every datagram is taken", Duration::from_secs(30), || {
        daemon.metric("exflow_source_rejected_datagrams_total") == 10.0
            && daemon.metric("exflow_decode_datagrams_total") == capture.len() as f64
    });
    let metrics = daemon.scrape().unwrap();
    assert_eq!(metrics["exflow_decode_records_total"], 2208.0);
    assert!(
        !metrics
            .keys()
            .any(|name| name.contains("exporter=\"127.0.0.3\"")),
        "no state for the stranger"
    );
    daemon.stop();
}
