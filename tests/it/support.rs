//! Shared test helpers: paths to fixtures, decoding a capture the way `exflow decode` does.

use std::path::PathBuf;

use exflow::decode::{DecodeCounters, Decoder, DecoderConfig, FlowRecord};
use exflow::source::capture;

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// The Cisco ASR 9000's datagrams of logstash's fixtures, options first: its interface
/// descriptions (options template 256 and data), then a template and 21 flow records naming
/// ifIndexes 162 ("Bundle-Ether2") and 102 ("TenGigE0_6_0_0") among others.
pub fn asr9k_datagrams_with_interface_names() -> Vec<Vec<u8>> {
    [
        "netflow9_test_cisco_asr9k_opttpl256",
        "netflow9_test_cisco_asr9k_data256",
        "netflow9_test_cisco_asr9k_tpl260",
        "netflow9_test_cisco_asr9k_data260",
    ]
    .iter()
    .map(|name| std::fs::read(data(&format!("logstash/{name}.dat"))).unwrap())
    .collect()
}

/// Every UDP payload of a capture with its source address and capture time.
pub fn datagrams(name: &str) -> Vec<(std::net::IpAddr, u64, Vec<u8>)> {
    let mut all = Vec::new();
    capture::for_each_datagram(&data(name), |d| {
        all.push((d.source.ip(), d.received_ns, d.payload.to_vec()))
    })
    .expect("fixture capture reads");
    all
}

/// Decodes a whole capture with one decoder.
pub fn decode_capture(name: &str) -> (Vec<FlowRecord>, DecodeCounters) {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    for (exporter, received_ns, payload) in datagrams(name) {
        let _ = decoder.decode(exporter, received_ns, &payload, &mut records);
    }
    (records, decoder.totals())
}

/// Seconds since the epoch of nfdump's "2024-03-12 08:02:00" (UTC).
pub fn nfdump_time(text: &str) -> u64 {
    let (date, time) = text.split_once(' ').expect("date and time");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<u64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]
}

use exflow::config::Config;
use exflow::detect::Alert;
use exflow::pipeline::{Pipeline, PipelineCounters};

/// The test configuration of the captures' README: inside networks and home country NL.
pub fn border_config() -> Config {
    Config {
        inside: vec![
            "10.10.0.0/16".parse().unwrap(),
            "2001:db8:10::/48".parse().unwrap(),
        ],
        home_countries: vec!["NL".parse().unwrap()],
        ..Config::default()
    }
}

/// Replays captures through the whole pipeline, as `exflow replay` does.
pub fn replay(names: &[&str], config: &Config, shards: usize) -> (Vec<Alert>, PipelineCounters) {
    let enricher = config.enricher().unwrap();
    let mut pipeline = Pipeline::new(config, enricher, shards);
    let mut alerts = Vec::new();
    for name in names {
        capture::for_each_datagram(&data(name), |d| {
            pipeline.push_datagram(d.source.ip(), d.received_ns, d.payload, &mut alerts)
        })
        .unwrap();
    }
    pipeline.finish(&mut alerts);
    (alerts, pipeline.counters())
}

/// Feeds records (encoded as IPFIX by `wire::emit`, decoded again) through a pipeline.
pub fn replay_records(records: &[FlowRecord], config: &Config) -> Vec<Alert> {
    let enricher = config.enricher().unwrap();
    let mut pipeline = Pipeline::new(config, enricher, 2);
    let mut alerts = Vec::new();
    let mut exporter = exflow::wire::emit::Exporter::new(exflow::decode::FlowKind::Ipfix, 1);
    let mut datagrams = Vec::new();
    for record in records {
        datagrams.clear();
        exporter.encode(
            std::slice::from_ref(record),
            record.time_flow_end_ns / 1_000_000,
            &mut datagrams,
        );
        for d in &datagrams {
            pipeline.push_datagram(
                "192.0.2.1".parse().unwrap(),
                record.time_flow_end_ns,
                d,
                &mut alerts,
            );
        }
    }
    pipeline.finish(&mut alerts);
    alerts
}

/// Every alert must be valid against `schemas/alert.schema.json`.
pub fn assert_schema_valid(alerts: &[Alert]) {
    let values: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| serde_json::to_value(a).unwrap())
        .collect();
    assert_json_schema_valid(&values);
}

/// Every JSON value must be valid against `schemas/alert.schema.json`.
pub fn assert_json_schema_valid<'a>(alerts: impl IntoIterator<Item = &'a serde_json::Value>) {
    let validator = alert_validator();
    for json in alerts {
        let errors: Vec<String> = validator
            .iter_errors(json)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "alert {json} violates the schema: {errors:?}"
        );
    }
}

fn alert_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/alert.schema.json"
        ))
        .unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap())
            .expect("the schema is valid JSON Schema")
    })
}
