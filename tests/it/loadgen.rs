//! `exflow loadgen --scenario` against a live `exflow run`: the injected exfiltration is
//! detected, its latency reported (how long it took is the harness's measurement, not
//! something a test asserts), and the alert is the injected host's.

use crate::harness::{Daemon, temp_dir};

#[test]
fn loadgen_reports_the_detection_latency_of_injected_scenarios() {
    let dir = temp_dir("loadgen-scenario");
    let alerts = dir.join("alerts.jsonl");
    let config = format!("[sink]\nfile = \"{}\"\n", alerts.display());
    // The harness's inside networks plus the load generator's hosts.
    let daemon = Daemon::start(&config, &["--inside", "10.0.0.0/8"]);
    let stdout = daemon
        .loadgen(&[
            "--exporters",
            "8",
            "--rate",
            "50000",
            "--duration",
            "3",
            // The watch stops as soon as both are detected: a long bound costs nothing
            // and keeps a loaded machine from failing the test.
            "--detect-timeout",
            "120",
            "--scenario",
            "bulk_egress@1",
            "--scenario",
            "long_lived_foreign@1.5",
        ])
        .stdout;
    let mut injected = Vec::new();
    for rule in ["bulk_egress", "long_lived_foreign"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("scenario: {rule} ")))
            .unwrap_or_else(|| panic!("no line for {rule}: {stdout}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |word: &str| words.iter().position(|w| *w == word).unwrap();
        assert_eq!(words[at("detected") + 1], "yes", "{line}");
        let latency: f64 = words[at("latency") + 1].parse().unwrap();
        assert_eq!(words[at("latency") + 2], "ms", "{line}");
        assert!(latency >= 0.0, "{line}");
        let sent_at: f64 = words[at("at") + 1].parse().unwrap();
        assert!(sent_at >= 1.0, "{line}");
        let inside = words[at("->") - 1].trim_start_matches('[').to_string();
        injected.push((rule, inside));
    }
    daemon.stop();
    let raised: Vec<(String, String)> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["outside_addr"] == "5.255.255.77")
        .map(|a| {
            (
                a["rule"].as_str().unwrap().into(),
                a["inside_addr"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (rule, inside) in injected {
        assert!(
            raised.contains(&(rule.to_string(), inside.clone())),
            "no {rule} alert for {inside}: {raised:?}"
        );
    }
}
