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
    let report = daemon
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
        .report;
    let scenarios = &report["scenarios"];
    assert_eq!(scenarios["alerts_from"], "metrics", "{report}");
    assert_eq!(scenarios["missed"], 0, "{report}");
    let mut injected = Vec::new();
    for rule in ["bulk_egress", "long_lived_foreign"] {
        let result = scenarios["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == rule)
            .unwrap_or_else(|| panic!("no result for {rule}: {report}"));
        assert_eq!(result["sent"], true, "{result}");
        assert_eq!(result["detected"], true, "{result}");
        assert!(result["latency_ms"].as_f64().unwrap() >= 0.0, "{result}");
        assert!(result["sent_at_s"].as_f64().unwrap() >= 1.0, "{result}");
        assert_eq!(result["outside_addr"], "5.255.255.77", "{result}");
        let inside = result["inside_addr"].as_str().unwrap().to_string();
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
