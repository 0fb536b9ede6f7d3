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
