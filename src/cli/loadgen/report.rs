//! cli: `exflow loadgen --report-json FILE`, the run's report as one JSON object (what was
//! sent, what exflow received and dropped, each scenario's outcome) for scripts and tests;
//! the same numbers as the human report on stdout.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::harness::{Detections, LoadSpec, Received, Sent};
use super::scenario::SCENARIO_DESTINATION;

/// The whole report: `received` and `scenarios` are absent when not measured (no
/// `--metrics`; no `--scenario`).
#[derive(Debug, Serialize)]
pub struct Report {
    pub sent: SentReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<ReceivedReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenarios: Option<ScenariosReport>,
}

#[derive(Debug, Serialize)]
pub struct SentReport {
    pub records: u64,
    pub datagrams: u64,
    pub send_errors: u64,
    pub seconds: f64,
}

impl From<&Sent> for SentReport {
    fn from(sent: &Sent) -> Self {
        SentReport {
            records: sent.records,
            datagrams: sent.datagrams,
            send_errors: sent.send_errors,
            seconds: sent.elapsed.as_secs_f64(),
        }
    }
}

/// Differences of exflow's counters over the run, and the loss they make.
#[derive(Debug, Serialize)]
pub struct ReceivedReport {
    pub datagrams: f64,
    pub records: f64,
    pub kernel_dropped_datagrams: f64,
    pub decode_errors: f64,
    pub lost_records: f64,
    pub queue_dropped_records: f64,
    /// A fraction (0.0001 = 0.01%).
    pub loss: f64,
}

impl ReceivedReport {
    pub fn new(r: &Received, sent: &Sent) -> Self {
        ReceivedReport {
            datagrams: r.datagrams,
            records: r.records,
            kernel_dropped_datagrams: r.kernel_dropped,
            decode_errors: r.decode_errors,
            lost_records: r.lost_records,
            queue_dropped_records: r.queue_dropped,
            loss: r.loss(sent),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ScenariosReport {
    /// Where the alerts were looked for: `metrics` (the alert counters) or `topic`.
    pub alerts_from: &'static str,
    /// In the order planned: the sent ones first, in the order sent, then any not sent.
    pub results: Vec<ScenarioReport>,
    pub missed: usize,
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    pub rule: &'static str,
    /// Whether every datagram of it was sent (false: not sent at all, or a send failed).
    pub sent: bool,
    pub detected: bool,
    /// Seconds into the run its last datagram was sent (planned time when not sent).
    pub sent_at_s: f64,
    /// From its last datagram sent to its alert being seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inside_addr: Option<Ipv4Addr>,
    pub outside_addr: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exporter: Option<IpAddr>,
}

impl ScenariosReport {
    pub fn new(d: &Detections, spec: &LoadSpec, alerts_from: &'static str) -> Self {
        let mut results: Vec<ScenarioReport> = d
            .scenarios
            .iter()
            .map(|detection| {
                let i = detection.injected;
                ScenarioReport {
                    rule: i.scenario.rule(),
                    sent: i.sent_ok,
                    detected: detection.latency.is_some(),
                    sent_at_s: i.sent_after.as_secs_f64(),
                    latency_ms: detection.latency.map(|l| l.as_secs_f64() * 1000.0),
                    inside_addr: Some(i.inside),
                    outside_addr: SCENARIO_DESTINATION,
                    exporter: Some(i.exporter),
                }
            })
            .collect();
        results.extend(
            spec.scenarios[d.scenarios.len()..]
                .iter()
                .map(|planned| ScenarioReport {
                    rule: planned.scenario.rule(),
                    sent: false,
                    detected: false,
                    sent_at_s: planned.at.as_secs_f64(),
                    latency_ms: None,
                    inside_addr: None,
                    outside_addr: SCENARIO_DESTINATION,
                    exporter: None,
                }),
        );
        let missed = results.iter().filter(|r| !r.detected).count();
        ScenariosReport {
            alerts_from,
            results,
            missed,
        }
    }
}

impl Report {
    /// Writes the report to `path` as one JSON object and a newline.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_string(self)?;
        json.push('\n');
        std::fs::write(path, json)
            .with_context(|| format!("--report-json {}: cannot write", path.display()))
    }
}
