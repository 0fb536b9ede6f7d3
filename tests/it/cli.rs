//! The `exflow` binary as a user runs it: output formats, the summary, error lines.

use std::process::Command;

use crate::support::data;

fn exflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exflow"))
}

#[test]
fn decode_prints_goflow2_json_lines_and_a_summary() {
    let output = exflow()
        .arg("decode")
        .arg(data("softflowd_v5.pcap"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1682);
    let first = lines[0].as_object().unwrap();
    for field in [
        "type",
        "time_received_ns",
        "sequence_num",
        "sampling_rate",
        "sampler_address",
        "observation_domain_id",
        "time_flow_start_ns",
        "time_flow_end_ns",
        "bytes",
        "packets",
        "src_addr",
        "dst_addr",
        "etype",
        "proto",
        "src_port",
        "dst_port",
        "in_if",
        "out_if",
        "src_as",
        "dst_as",
        "next_hop",
        "tcp_flags",
        "ip_tos",
    ] {
        assert!(first.contains_key(field), "missing {field}");
    }
    assert_eq!(first["type"], "NETFLOW_V5");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("decoded: 83 datagrams, 1682 records"),
        "{stderr}"
    );
    assert!(
        stderr.contains("exporter 127.0.0.1: 83 datagrams"),
        "{stderr}"
    );
}

#[test]
fn decode_reads_several_captures_and_prints_a_table() {
    let output = exflow()
        .args(["decode", "--format", "table"])
        .arg(data("softflowd_ipfix.pcap"))
        .arg(data(
            "pmacct-test-automation/100-IPFIXv10-CISCO__traffic-00.pcap",
        ))
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("start"));
    assert_eq!(lines.count(), 2208 + 12);
    assert!(stdout.contains("10.10.20.15:50122"));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("exporter 138.187.0.13:"), "{stderr}");
}

#[test]
fn a_missing_capture_is_one_clear_error_line() {
    let output = exflow()
        .args(["decode", "/nonexistent/x.pcap"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("exflow: cannot open capture '/nonexistent/x.pcap'"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_capture_is_refused() {
    let output = exflow()
        .arg("decode")
        .arg(data("softflowd_v5.nfdump.csv"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("exflow: cannot read capture"),
        "{stderr}"
    );
}

/// `replay --format ocsf` prints one OCSF Detection Finding per alert the default format
/// prints, each carrying its alert's id, rule and time.
#[test]
fn replay_prints_the_same_alerts_as_ocsf_findings() {
    let run = |format: &str| -> Vec<serde_json::Value> {
        let output = exflow()
            .args(["replay", "--format", format, "--inside", "10.10.0.0/16"])
            .args(["--inside", "2001:db8:10::/48", "--home-country", "NL"])
            .arg(data("softflowd_ipfix.pcap"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let alerts = run("json");
    let findings = run("ocsf");
    assert!(!alerts.is_empty());
    assert_eq!(findings.len(), alerts.len());
    for (alert, finding) in alerts.iter().zip(&findings) {
        assert_eq!(finding["class_uid"], 2004);
        assert_eq!(finding["metadata"]["version"], "1.3.0");
        assert_eq!(finding["metadata"]["uid"], alert["alert_id"]);
        assert_eq!(finding["finding_info"]["analytic"]["name"], alert["rule"]);
        assert_eq!(finding["message"], alert["summary"]);
        assert_eq!(finding["device"]["ip"], alert["inside_addr"]);
        assert_eq!(finding["metadata"]["original_time"], alert["event_time"]);
    }
}

fn write_config(text: &str) -> std::path::PathBuf {
    let dir = crate::harness::temp_dir("config");
    let path = dir.join("exflow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check_config(config: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let output = exflow()
        .arg("check-config")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn bad_configs_give_one_clear_error_naming_the_field() {
    let cases = [
        (
            "[sink.kafka]\nbrokers = \"k:9092\"\nspool = \"/x\"\n",
            "unknown field `spool`",
        ),
        (
            "[sink.kafka]\nbrokers = \"kafka1,kafka2\"\n",
            "sink.kafka.brokers: 'kafka1,kafka2' is not a comma-separated list of host:port",
        ),
        (
            "[sink.kafka]\nbrokers = \"k:9092\"\nspool_dir = \"/proc/exflow-spool\"\n",
            "/proc/exflow-spool",
        ),
        (
            "[sink.kafka]\nbrokers = \"k:9092\"\nlibrdkafka_options = { \"no.such.property\" = \"1\" }\n",
            "no.such.property",
        ),
        (
            "inside = []\n",
            "inside: at least one inside network is needed",
        ),
    ];
    for (text, expected) in cases {
        let (code, stderr) = check_config(&write_config(text), &[]);
        assert_eq!(code, Some(1), "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("exflow: ") && stderr.contains(expected),
            "{text}: {stderr}"
        );
    }
}

#[test]
fn check_config_prints_the_effective_configuration_and_flags_win() {
    let config = write_config("home_countries = [\"NL\"]\n");
    let output = exflow()
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .args(["--inside", "192.0.2.0/24"])
        .env("EXFLOW_WATCH_COUNTRY", "KP,IR")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let effective: toml::Value =
        toml::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(effective["inside"][0].as_str(), Some("192.0.2.0/24"));
    assert_eq!(effective["home_countries"][0].as_str(), Some("NL"));
    assert_eq!(effective["watch_countries"][1].as_str(), Some("IR"));
}

#[test]
fn check_config_connects_to_the_broker() {
    let brokers = crate::harness::shared_brokers();
    let topic = crate::harness::create_topic(&brokers, "exflow.check", 1);
    let spool = crate::harness::temp_dir("spool-check");
    let good = write_config(&format!(
        "[sink.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\nspool_dir = \"{}\"\n",
        spool.display()
    ));
    let (code, stderr) = check_config(&good, &["--connect"]);
    assert_eq!(code, Some(0), "{stderr}");
    let dead = format!("127.0.0.1:{}", crate::harness::free_port());
    let bad = write_config(&format!(
        "[sink.kafka]\nbrokers = \"{dead}\"\nspool_dir = \"{}\"\n",
        spool.display()
    ));
    let (code, stderr) = check_config(&bad, &["--connect"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains(&format!("broker '{dead}'")), "{stderr}");
}

/// A pcap (LINKTYPE_RAW, IPv4/UDP) of the given payloads, all from `source`.
fn raw_ipv4_pcap(source: [u8; 4], payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut pcap = Vec::new();
    pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    pcap.extend_from_slice(&4u16.to_le_bytes());
    pcap.extend_from_slice(&[0; 8]); // thiszone, sigfigs
    pcap.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
    pcap.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    for (i, payload) in payloads.iter().enumerate() {
        let total = 20 + 8 + payload.len();
        pcap.extend_from_slice(&(1_481_018_990 + i as u32).to_le_bytes());
        pcap.extend_from_slice(&0u32.to_le_bytes());
        pcap.extend_from_slice(&(total as u32).to_le_bytes());
        pcap.extend_from_slice(&(total as u32).to_le_bytes());
        pcap.extend_from_slice(&[0x45, 0]);
        pcap.extend_from_slice(&(total as u16).to_be_bytes());
        pcap.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]); // id, fragment, ttl, UDP, sum
        pcap.extend_from_slice(&source);
        pcap.extend_from_slice(&[127, 0, 0, 1]);
        pcap.extend_from_slice(&50_000u16.to_be_bytes());
        pcap.extend_from_slice(&2055u16.to_be_bytes());
        pcap.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        pcap.extend_from_slice(&[0, 0]);
        pcap.extend_from_slice(payload);
    }
    pcap
}

/// Interface names from options data come out with the records: the Cisco ASR 9000's
/// descriptions (logstash's fixtures, options first) beside `in_if` / `out_if`.
#[test]
fn decode_prints_interface_names_from_options_data() {
    let payloads = crate::support::asr9k_datagrams_with_interface_names();
    let path = std::env::temp_dir().join(format!("exflow-asr9k-{}.pcap", std::process::id()));
    std::fs::write(&path, raw_ipv4_pcap([192, 0, 2, 7], &payloads)).unwrap();
    let output = exflow().arg("decode").arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 21);
    let named: Vec<_> = lines
        .iter()
        .filter(|l| l.get("in_if_description").is_some())
        .collect();
    assert!(!named.is_empty());
    for line in &named {
        assert!(!line["in_if_description"].as_str().unwrap().is_empty());
        assert_eq!(line["in_if_name"], "");
    }
    let unnamed = lines.iter().filter(|l| l.get("in_if_name").is_none());
    assert_eq!(unnamed.count() + named.len(), 21);
}
