//! Each rule at its edges, with generated traffic encoded as IPFIX and run through the
//! whole pipeline: just under and just over each threshold, allow-listed, home country.

use exflow::config::Config;
use exflow::decode::FlowRecord;
use exflow::detect::Alert;

use crate::support::{assert_schema_valid, border_config, replay_records};

const T0_MS: u64 = 1_710_230_400_000; // 2024-03-12T08:00:00Z
const MIN: u64 = 60_000;

/// One flow record `inside:40000 -> outside:port` over [start, end) minutes after T0: UDP
/// to port 53, TCP otherwise, in packets of up to 1400 bytes.
fn record(
    inside: &str,
    outside: &str,
    port: u16,
    bytes: u64,
    start_min: f64,
    end_min: f64,
) -> FlowRecord {
    FlowRecord {
        src_addr: inside.parse().unwrap(),
        dst_addr: outside.parse().unwrap(),
        src_port: 40000,
        dst_port: port,
        proto: if port == 53 { 17 } else { 6 },
        bytes,
        packets: bytes.div_ceil(1400).max(1),
        time_flow_start_ns: (T0_MS + (start_min * MIN as f64) as u64) * 1_000_000,
        time_flow_end_ns: (T0_MS + (end_min * MIN as f64) as u64) * 1_000_000,
        ..FlowRecord::default()
    }
}

/// An upload of `bytes` in 5-minute pieces over `minutes`.
fn upload(inside: &str, outside: &str, bytes: u64, minutes: u64) -> Vec<FlowRecord> {
    let pieces = minutes.div_ceil(5).max(1);
    (0..pieces)
        .map(|i| {
            let start = (i * 5) as f64;
            let end = ((i + 1) * 5).min(minutes.max(1)) as f64;
            let share = bytes / pieces + if i == 0 { bytes % pieces } else { 0 };
            record(inside, outside, 443, share, start, end)
        })
        .collect()
}

fn run(records: &[FlowRecord], config: &Config) -> Vec<Alert> {
    let alerts = replay_records(records, config);
    assert_schema_valid(&alerts);
    alerts
}

fn rules(alerts: &[Alert]) -> Vec<&'static str> {
    let mut rules: Vec<_> = alerts.iter().map(|a| a.rule).collect();
    rules.dedup();
    rules
}

const RU: &str = "5.255.255.77";
const NL: &str = "145.100.0.1";
const HOST: &str = "10.10.1.1";

#[test]
fn bulk_egress_at_its_threshold() {
    let config = border_config();
    let under = run(&upload(HOST, RU, 99_999_999, 30), &config);
    assert!(!rules(&under).contains(&"bulk_egress"), "{under:#?}");
    let over = run(&upload(HOST, RU, 100_000_000, 30), &config);
    let alert = over
        .iter()
        .find(|a| a.rule == "bulk_egress")
        .expect("bulk_egress at 100 MB");
    assert_eq!(alert.bytes_out, 100_000_000);
    // The same upload spread over two hours never has 100 MB in one hour.
    let slow = run(&upload(HOST, RU, 150_000_000, 120), &config);
    assert!(!rules(&slow).contains(&"bulk_egress"), "{slow:#?}");
}

#[test]
fn bulk_egress_to_home_is_reported_lower_and_allow_lists_silence_it() {
    let config = border_config();
    let foreign = run(&upload(HOST, RU, 200_000_000, 10), &config);
    let home = run(&upload(HOST, NL, 200_000_000, 10), &config);
    let score = |alerts: &[Alert]| {
        alerts
            .iter()
            .find(|a| a.rule == "bulk_egress")
            .map(|a| a.score)
            .unwrap()
    };
    assert!(
        score(&home) < score(&foreign),
        "a foreign destination scores higher"
    );
    let mut allowed = border_config();
    allowed.rules.bulk_egress.allow.cidrs = vec!["5.255.0.0/16".parse().unwrap()];
    assert!(run(&upload(HOST, RU, 200_000_000, 10), &allowed).is_empty());
    let mut global = border_config();
    global.allow.countries = vec!["RU".parse().unwrap()];
    assert!(run(&upload(HOST, RU, 200_000_000, 70), &global).is_empty());
}

#[test]
fn long_lived_foreign_at_its_edges() {
    let config = border_config();
    let hour = run(&upload(HOST, RU, 2_000_000, 60), &config);
    let alert = hour
        .iter()
        .find(|a| a.rule == "long_lived_foreign")
        .expect("an hour with 2 MB up");
    assert!(alert.duration_s >= 3540, "{alert:?}");
    assert_eq!(alert.step, 0);
    let short = run(&upload(HOST, RU, 2_000_000, 55), &config);
    assert!(
        !rules(&short).contains(&"long_lived_foreign"),
        "55 min is not long"
    );
    let tiny = run(&upload(HOST, RU, 999_999, 120), &config);
    assert!(
        !rules(&tiny).contains(&"long_lived_foreign"),
        "a keepalive is not an upload"
    );
    let home = run(&upload(HOST, NL, 2_000_000, 120), &config);
    assert!(
        !rules(&home).contains(&"long_lived_foreign"),
        "home is not foreign"
    );
    // Five hours: the 4 h step escalates, naming the first alert.
    let long = run(&upload(HOST, RU, 5_000_000, 300), &config);
    let steps: Vec<_> = long
        .iter()
        .filter(|a| a.rule == "long_lived_foreign")
        .collect();
    assert_eq!(steps.iter().map(|a| a.step).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(
        steps[1].escalates.as_deref(),
        Some(steps[0].alert_id.as_str())
    );
    assert!(steps[1].severity > steps[0].severity);
}

#[test]
fn dns_tunnel_at_its_edges() {
    let queries = |inside: &str, count: u64, bytes_per_query: u64| -> Vec<FlowRecord> {
        (0..count)
            .map(|i| {
                let mut r = record(
                    inside,
                    "77.88.8.8",
                    53,
                    bytes_per_query,
                    i as f64 * 0.01,
                    i as f64 * 0.01,
                );
                r.src_port = 10_000 + i as u16;
                r
            })
            .collect()
    };
    let config = border_config();
    assert!(
        run(&queries(HOST, 499, 60), &config).is_empty(),
        "499 ordinary queries"
    );
    assert_eq!(
        rules(&run(&queries(HOST, 500, 60), &config)),
        vec!["dns_tunnel"]
    );
    assert!(
        run(&queries(HOST, 99, 250), &config).is_empty(),
        "99 long queries"
    );
    assert_eq!(
        rules(&run(&queries(HOST, 100, 250), &config)),
        vec!["dns_tunnel"]
    );
    let mut resolver = border_config();
    resolver.resolvers = vec![HOST.parse().unwrap()];
    assert!(
        run(&queries(HOST, 2000, 250), &resolver).is_empty(),
        "the inside resolver forwards"
    );
}

#[test]
fn watchlist_at_its_threshold() {
    let mut config = border_config();
    config.watch_countries = vec!["KP".parse().unwrap()];
    let kp = "175.45.176.1";
    let under = vec![record(HOST, kp, 443, 99_999, 0.0, 1.0)];
    assert!(run(&under, &config).is_empty());
    let over = vec![record(HOST, kp, 443, 100_000, 0.0, 1.0)];
    let alerts = run(&over, &config);
    assert_eq!(rules(&alerts), vec!["watchlist"]);
    assert_eq!(
        alerts[0].outside_country.map(|c| c.to_string()),
        Some("KP".into())
    );
}

#[test]
fn new_destination_after_learning() {
    let mut config = border_config();
    config.rules.new_destination.learning_s = 3600;
    // Learning: the host uses the US...
    let mut records = vec![record(HOST, "8.8.4.4", 443, 5_000, 0.0, 1.0)];
    // ...after learning: 2 MB to Russia (new) and to the US (known).
    records.push(record(HOST, "8.8.4.4", 443, 2_000_000, 61.0, 62.0));
    records.push(record(HOST, RU, 443, 999_999, 63.0, 64.0));
    let alerts = run(&records, &config);
    assert!(
        alerts.is_empty(),
        "under 1 MB to the new country: {alerts:#?}"
    );
    records.push(record(HOST, RU, 443, 1, 64.0, 65.0));
    let alerts = run(&records, &config);
    assert_eq!(rules(&alerts), vec!["new_destination"], "{alerts:#?}");
    assert_eq!(
        alerts[0].outside_country.map(|c| c.to_string()),
        Some("RU".into())
    );
}
