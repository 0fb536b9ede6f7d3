//! Detection quality on the reduced evaluation day (tests/data/eval/, made by
//! benches/eval/gen_day.py --scale ci and exported by softflowd and pmacctd): every export is
//! replayed, its alerts are scored against the labels with score.py's matching, and the test
//! fails when a scenario that was caught is missed, false alerts per 10,000 benign
//! conversations rise above the ceiling in thresholds.json, or exflow drops another number of
//! records as too late than score.py counted beyond `flow.max_lateness_s`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::Deserialize;

use exflow::config::Config;
use exflow::detect::Alert;

use crate::support::{data, nfdump_time, replay};

/// score.py's window around a scenario: from a minute before it to three hours after.
const WINDOW_BEFORE_S: f64 = 60.0;
const WINDOW_AFTER_S: f64 = 3.0 * 3600.0;

#[derive(Deserialize)]
struct Labels {
    inside: Vec<String>,
    home_countries: Vec<String>,
    watch_countries: Vec<String>,
    benign_conversations: usize,
    benign_classes: HashMap<String, BenignClass>,
    scenarios: Vec<Scenario>,
    /// [inside, outside, proto, outside port, start, end, class]
    benign: Vec<(IpAddr, IpAddr, u8, u16, f64, f64, String)>,
}

#[derive(Deserialize)]
struct BenignClass {
    may: Vec<String>,
}

#[derive(Deserialize)]
struct Scenario {
    id: String,
    inside: IpAddr,
    outside: Vec<IpAddr>,
    any_outside: bool,
    start: f64,
    end: f64,
    caught_by: Vec<String>,
}

impl Scenario {
    /// Whether an alert about [first, raised] overlaps the scenario's window.
    fn in_window(&self, (first, raised): (f64, f64)) -> bool {
        first <= self.end + WINDOW_AFTER_S && raised >= self.start - WINDOW_BEFORE_S
    }
}

#[derive(Deserialize)]
struct Thresholds {
    exports: BTreeMap<String, Floor>,
}

/// What one export must keep doing.
#[derive(Deserialize)]
struct Floor {
    /// Scenarios that must be caught (by one of their `caught_by` rules).
    caught: Vec<String>,
    max_false_per_10k: f64,
    /// Records that end more than `flow.max_lateness_s` behind the newest flow end the export
    /// sent before them (score.py's count): what exflow must drop, no more, no fewer.
    late_dropped: u64,
}

/// Seconds since the epoch of an alert's RFC 3339 time ("2025-03-11T14:09:59.999Z").
fn seconds(rfc3339: &str) -> f64 {
    let text = rfc3339.trim_end_matches('Z');
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = if fraction.is_empty() {
        0.0
    } else {
        format!("0.{fraction}").parse::<f64>().unwrap()
    };
    nfdump_time(&whole.replace('T', " ")) as f64 + fraction
}

/// [first_seen, event_time]: what an alert reports on, up to when it was raised.
fn span(alert: &Alert) -> (f64, f64) {
    (
        seconds(&alert.first_seen),
        alert.event_time_ms as f64 / 1000.0,
    )
}

enum Attribution<'a> {
    Scenario(&'a Scenario),
    Benign(&'a str),
    Unlabelled,
}

struct Scorer<'a> {
    labels: &'a Labels,
    /// (inside, outside) -> (start, class) of its benign conversations, in label order.
    pairs: HashMap<(IpAddr, IpAddr), Vec<(f64, &'a str)>>,
}

/// One export's score.
#[derive(Debug, Default)]
struct Score {
    caught: BTreeMap<String, BTreeSet<&'static str>>,
    false_alerts: BTreeMap<(&'static str, String), usize>,
}

impl Score {
    fn false_total(&self) -> usize {
        self.false_alerts.values().sum()
    }
}

impl<'a> Scorer<'a> {
    fn new(labels: &'a Labels) -> Scorer<'a> {
        let mut pairs: HashMap<_, Vec<_>> = HashMap::new();
        for (inside, outside, _, _, start, _, class) in &labels.benign {
            pairs
                .entry((*inside, *outside))
                .or_default()
                .push((*start, class.as_str()));
        }
        Scorer { labels, pairs }
    }

    /// score.py's `Labels.attribute`.
    fn attribute(&self, alert: &Alert) -> Attribution<'a> {
        let span = span(alert);
        for s in &self.labels.scenarios {
            if s.inside == alert.inside_addr
                && (s.outside.contains(&alert.outside_addr) || (s.any_outside && s.in_window(span)))
            {
                return Attribution::Scenario(s);
            }
        }
        let Some(conversations) = self.pairs.get(&(alert.inside_addr, alert.outside_addr)) else {
            return Attribution::Unlabelled;
        };
        // the conversation that started last before the alert's first_seen (+60 s); the first
        // of equals, as Python's max() picks
        let mut best: Option<(f64, &str)> = None;
        for &(start, class) in conversations {
            if start <= span.0 + WINDOW_BEFORE_S && best.is_none_or(|(b, _)| start > b) {
                best = Some((start, class));
            }
        }
        Attribution::Benign(best.unwrap_or(conversations[0]).1)
    }

    fn score(&self, alerts: &[Alert]) -> Score {
        let mut score = Score::default();
        for alert in alerts {
            match self.attribute(alert) {
                Attribution::Scenario(s) => {
                    if s.in_window(span(alert)) && s.caught_by.iter().any(|r| r == alert.rule) {
                        score
                            .caught
                            .entry(s.id.clone())
                            .or_default()
                            .insert(alert.rule);
                    }
                }
                Attribution::Benign(class) => {
                    let may = self.labels.benign_classes.get(class);
                    if !may.is_some_and(|c| c.may.iter().any(|r| r == alert.rule)) {
                        *score
                            .false_alerts
                            .entry((alert.rule, class.to_string()))
                            .or_default() += 1;
                    }
                }
                Attribution::Unlabelled => {
                    *score
                        .false_alerts
                        .entry((alert.rule, "unlabelled".to_string()))
                        .or_default() += 1;
                }
            }
        }
        score
    }
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let text = std::fs::read_to_string(data(name)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The flags score.py gives `exflow replay`, from the labels.
fn config(labels: &Labels) -> Config {
    Config {
        inside: labels.inside.iter().map(|n| n.parse().unwrap()).collect(),
        home_countries: labels
            .home_countries
            .iter()
            .map(|c| c.parse().unwrap())
            .collect(),
        watch_countries: labels
            .watch_countries
            .iter()
            .map(|c| c.parse().unwrap())
            .collect(),
        ..Config::default()
    }
}

#[test]
fn the_reduced_evaluation_day_keeps_its_recall_and_its_false_alert_ceiling() {
    let labels: Labels = load("eval/labels.json");
    let thresholds: Thresholds = load("eval/thresholds.json");
    assert_eq!(labels.scenarios.len(), 12);
    assert!(labels.benign.len() == labels.benign_conversations && labels.benign.len() > 4000);
    assert!(!thresholds.exports.is_empty());
    let scorer = Scorer::new(&labels);
    let config = config(&labels);
    let mut failures = Vec::new();
    for (export, floor) in &thresholds.exports {
        let (alerts, counters) = replay(&[&format!("eval/{export}.pcap")], &config, 1);
        assert!(counters.decode.records > 4000, "{export}: {counters:?}");
        assert!(!alerts.is_empty(), "{export}: no alerts at all");
        if counters.flow.clock.late != floor.late_dropped {
            failures.push(format!(
                "{export}: {} records dropped as too late, score.py counts {} beyond flow.max_lateness_s",
                counters.flow.clock.late, floor.late_dropped
            ));
        }
        let score = scorer.score(&alerts);
        let per_10k = score.false_total() as f64 * 10_000.0 / labels.benign_conversations as f64;
        eprintln!(
            "{export}: caught {:?}; {} false alerts ({per_10k:.1} per 10k): {:?}",
            score.caught,
            score.false_total(),
            score.false_alerts
        );
        for id in &floor.caught {
            if !score.caught.contains_key(id) {
                failures.push(format!("{export}: scenario {id} is no longer caught"));
            }
        }
        if per_10k > floor.max_false_per_10k + 1e-9 {
            failures.push(format!(
                "{export}: {per_10k:.2} false alerts per 10k, above the ceiling {}",
                floor.max_false_per_10k
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
