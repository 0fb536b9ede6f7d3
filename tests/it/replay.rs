//! The whole pipeline over the real exporters' captures: the alerts the captures' README
//! expects for every scenario, from every exporter, and none on the background; every
//! alert valid against the schema; the same alerts whatever the sharding.

use std::collections::BTreeSet;

use exflow::detect::{Alert, Severity};

use crate::support::{assert_schema_valid, border_config, replay};

/// (rule, inside, outside) of every expected alert.
pub const EXPECTED: [(&str, &str, &str); 9] = [
    ("long_lived_foreign", "10.10.20.15", "5.255.255.77"), // B1
    ("bulk_egress", "10.10.20.15", "5.255.255.77"),        // B1
    ("bulk_egress", "10.10.20.16", "39.156.66.10"),        // B2
    ("beacon", "10.10.30.7", "185.220.101.45"),            // C1
    ("beacon", "10.10.30.8", "91.108.56.130"),             // C2
    ("long_lived_foreign", "2001:db8:10:1::25", "2a02:6b8:a::a"), // D
    ("bulk_egress", "2001:db8:10:1::25", "2a02:6b8:a::a"), // D
    ("dns_tunnel", "10.10.40.23", "77.88.8.8"),            // E1
    ("dns_tunnel", "10.10.40.24", "114.114.114.114"),      // E2
];

fn pairs(alerts: &[Alert]) -> BTreeSet<(String, String, String)> {
    alerts
        .iter()
        .map(|a| {
            (
                a.rule.to_string(),
                a.inside_addr.to_string(),
                a.outside_addr.to_string(),
            )
        })
        .collect()
}

/// (rule, inside, outside) of alerts as JSON (from Kafka or the file sink), leaving out
/// low-severity beacons (B4's tolerated keepalive; see [`tolerated`]).
pub fn json_pairs<'a>(
    alerts: impl IntoIterator<Item = &'a serde_json::Value>,
) -> BTreeSet<(String, String, String)> {
    alerts
        .into_iter()
        .filter(|a| !(a["rule"] == "beacon" && a["severity"] == "low"))
        .map(|a| {
            let text = |key: &str| a[key].as_str().unwrap().to_string();
            (text("rule"), text("inside_addr"), text("outside_addr"))
        })
        .collect()
}

/// The expected alerts' (rule, inside, outside); the IPv6 scenario's only with `ipv6`.
pub fn expected(ipv6: bool) -> BTreeSet<(String, String, String)> {
    EXPECTED
        .iter()
        .filter(|(_, inside, _)| ipv6 || !inside.contains(':'))
        .map(|(r, i, o)| (r.to_string(), i.to_string(), o.to_string()))
        .collect()
}

/// B4 (a keepalive to Apple every 15 min) may show as a low-severity beacon, nothing more.
fn tolerated(alert: &Alert) -> bool {
    alert.rule == "beacon"
        && alert.inside_addr.to_string() == "10.10.5.30"
        && alert.severity == Severity::Low
}

#[test]
fn every_export_gives_the_expected_alerts_and_no_others() {
    let captures = [
        ("softflowd_v5.pcap", false),
        ("softflowd_v9.pcap", true),
        ("softflowd_ipfix.pcap", true),
        ("softflowd_ipfix_bidir.pcap", true),
        ("softflowd_ipfix_sampled10.pcap", true),
        ("pmacct_v9.pcap", true),
        ("pmacct_ipfix.pcap", true),
    ];
    for (capture, ipv6) in captures {
        let (alerts, counters) = replay(&[capture], &border_config(), 1);
        assert_schema_valid(&alerts);
        let relevant: Vec<Alert> = alerts.iter().filter(|a| !tolerated(a)).cloned().collect();
        assert_eq!(
            pairs(&relevant),
            expected(ipv6),
            "{capture}: {:#?}",
            summaries(&alerts)
        );
        assert_eq!(counters.alerts.total() as usize, alerts.len());
        // The exporters read the two-hour capture faster than real time and flushed
        // their caches at the end: a third of the records arrive more than an hour
        // (`flow.max_lateness_s`) behind their exporter's clock and are counted late.
        assert_eq!(
            counters.flow.records + counters.flow.clock.late,
            counters.decode.records,
            "{capture}: every record reached the table or was counted late"
        );
        assert_eq!(counters.flow.clock.skewed, 0, "{capture}");
    }
}

fn summaries(alerts: &[Alert]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| format!("{} {:?} {}", a.rule, a.severity, a.summary))
        .collect()
}

#[test]
fn scenario_details() {
    let (alerts, _) = replay(&["softflowd_ipfix.pcap"], &border_config(), 1);
    let find = |rule: &str, inside: &str| {
        alerts
            .iter()
            .find(|a| a.rule == rule && a.inside_addr.to_string() == inside)
            .unwrap_or_else(|| panic!("{rule} {inside}"))
    };
    let b1 = find("long_lived_foreign", "10.10.20.15");
    assert_eq!((b1.outside_port, b1.proto), (443, 6));
    assert_eq!(b1.outside_country.map(|c| c.to_string()), Some("RU".into()));
    assert!(b1.duration_s >= 3540 && b1.bytes_out >= 1_000_000, "{b1:?}");
    assert_eq!(b1.first_seen, "2024-03-12T08:02:00Z");
    assert!(b1.attack.contains(&"T1041"));
    let b2 = find("bulk_egress", "10.10.20.16");
    assert!(
        b2.bytes_out >= 100_000_000 && b2.bytes_out <= 250_160_889,
        "{b2:?}"
    );
    assert_eq!(b2.outside_country.map(|c| c.to_string()), Some("CN".into()));
    assert!(b2.severity >= Severity::High, "foreign and one-way: {b2:?}");
    let e1 = find("dns_tunnel", "10.10.40.23");
    assert_eq!(e1.outside_port, 53);
    assert!(e1.attack.contains(&"T1048.003"));
    assert!(
        alerts
            .iter()
            .all(|a| a.exporters == vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()])
    );
}

#[test]
fn replay_is_deterministic_and_independent_of_sharding() {
    let config = border_config();
    let (one, _) = replay(&["softflowd_ipfix.pcap"], &config, 1);
    let (again, _) = replay(&["softflowd_ipfix.pcap"], &config, 1);
    let (sharded, _) = replay(&["softflowd_ipfix.pcap"], &config, 4);
    let ids = |alerts: &[Alert]| {
        alerts
            .iter()
            .map(|a| a.alert_id.clone())
            .collect::<BTreeSet<_>>()
    };
    // The same JSON, byte for byte (the wall-clock latency stamp is not part of it).
    let json = |alerts: &[Alert]| serde_json::to_string(alerts).unwrap();
    assert_eq!(json(&one), json(&again));
    assert_eq!(ids(&one), ids(&sharded));
}

#[test]
fn downloads_and_background_alone_raise_nothing() {
    // Without the inside networks the exfiltration hosts are not "ours": transit only.
    let mut config = border_config();
    config.inside = vec!["192.0.2.0/24".parse().unwrap()];
    let (alerts, counters) = replay(&["softflowd_ipfix.pcap"], &config, 1);
    assert!(alerts.is_empty(), "{alerts:?}");
    assert_eq!(counters.flow.transit_records, 2208);
}

/// Who opened each scenario's conversations, from every export: the inside host, by ports,
/// SYN or first record, whatever the exporter sends (pmacct sends no flags with v9).
#[test]
fn every_export_tells_who_opened_the_scenarios() {
    use exflow::enrich::Destination;
    use exflow::flow::{FlowTable, Initiator, Orientation, orient};
    let config = border_config();
    let enricher = config.enricher().unwrap();
    let opened_by_inside = [
        ("10.10.20.15", 443),       // B1
        ("10.10.20.16", 443),       // B2
        ("10.10.5.30", 5223),       // B4
        ("10.10.30.7", 443),        // C1
        ("2001:db8:10:1::25", 443), // D
        ("10.10.40.24", 53),        // E2
    ];
    for capture in [
        "softflowd_v5.pcap",
        "softflowd_v9.pcap",
        "softflowd_ipfix.pcap",
        "softflowd_ipfix_bidir.pcap",
        "pmacct_v9.pcap",
        "pmacct_ipfix.pcap",
    ] {
        let (records, _) = crate::support::decode_capture(capture);
        let mut table = FlowTable::new(100_000, 1800, 3600);
        let mut ended = Vec::new();
        for record in &records {
            if let Orientation::Outbound(o) = orient(record, &enricher) {
                table.update(&o, Destination::default, |_, k, c| ended.push((*k, *c)));
            }
        }
        table.drain(|_, k, c| ended.push((*k, *c)));
        let mut tally = std::collections::BTreeMap::new();
        for (_, c) in &ended {
            *tally
                .entry(format!("{:?}/{:?}", c.initiator(), c.opening.evidence()))
                .or_insert(0) += 1;
        }
        for (inside, port) in opened_by_inside {
            let theirs: Vec<_> = ended
                .iter()
                .filter(|(k, _)| k.inside.to_string() == inside && k.outside_port == port)
                .collect();
            if inside.contains(':') && capture == "softflowd_v5.pcap" {
                continue;
            }
            assert!(!theirs.is_empty(), "{capture}: {inside}");
            for (key, c) in theirs {
                assert_eq!(
                    c.initiator(),
                    Initiator::Inside,
                    "{capture}: {key:?} {c:?} {tally:?}"
                );
            }
        }
        eprintln!("{capture}: {tally:?}");
    }
}
