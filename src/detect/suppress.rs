//! detect: suppression. One alert per (rule, inside host, outside destination) and ladder
//! step within a cooldown; a higher step (an escalation) is a new alert that names the
//! first one. Findings become `Alert`s here.

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;

use super::Finding;
use super::alert::{ALERT_SCHEMA, Alert, EvidenceConversation, Severity, stable_id};
use crate::flow::ConversationKey;
use crate::flow::community_id::community_id;
use crate::time::rfc3339;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// After an alert, the same (rule, host, destination, step) stays quiet this long.
    pub cooldown_s: u64,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        SuppressionConfig {
            cooldown_s: 24 * 3600,
        }
    }
}

type PairKey = (&'static str, IpAddr, IpAddr);

#[derive(Debug, Clone)]
struct Reported {
    first_alert_id: String,
    /// Highest step reported and when (event time).
    step: u8,
    at_ms: u64,
}

#[derive(Debug)]
pub struct Suppressor {
    cooldown_ms: u64,
    reported: HashMap<PairKey, Reported>,
    pub suppressed: u64,
}

impl Suppressor {
    pub fn new(cooldown_s: u64) -> Self {
        Suppressor {
            cooldown_ms: cooldown_s.saturating_mul(1000),
            reported: HashMap::new(),
            suppressed: 0,
        }
    }

    /// The alert for `finding`, or `None` when an alert of the same or a higher step for
    /// the same rule, host and destination was sent within the cooldown.
    pub fn admit(&mut self, finding: Finding) -> Option<Alert> {
        let key = (finding.rule, finding.inside, finding.outside);
        let mut escalates = None;
        if let Some(previous) = self.reported.get(&key) {
            let cooling = finding.at_ms < previous.at_ms.saturating_add(self.cooldown_ms);
            if cooling && finding.step <= previous.step {
                self.suppressed += 1;
                return None;
            }
            if cooling {
                escalates = Some(previous.first_alert_id.clone());
            }
        }
        let alert = to_alert(finding, escalates);
        let first_alert_id = alert
            .escalates
            .clone()
            .unwrap_or_else(|| alert.alert_id.clone());
        self.reported.insert(
            key,
            Reported {
                first_alert_id,
                step: alert.step,
                at_ms: alert_at(&alert),
            },
        );
        Some(alert)
    }

    /// Forgets pairs whose cooldown ended before `now_ms`, keeping the map bounded by the
    /// alerts of one cooldown.
    pub fn forget_before(&mut self, now_ms: u64) {
        let cooldown = self.cooldown_ms;
        self.reported
            .retain(|_, r| r.at_ms.saturating_add(cooldown) > now_ms);
    }
}

/// One reported pair in a checkpoint: `(rule, inside, outside, first_alert_id, step, at_ms)`.
type SavedReported = (String, IpAddr, IpAddr, String, u8, u64);

impl Suppressor {
    /// What suppression remembers (the pairs reported within the cooldown), for a
    /// partition's checkpoint (`scaleout`), sorted so equal state gives equal bytes.
    pub fn save(&self) -> serde_json::Value {
        let mut saved: Vec<SavedReported> = self
            .reported
            .iter()
            .map(|(&(rule, inside, outside), r)| {
                let id = r.first_alert_id.clone();
                (rule.to_string(), inside, outside, id, r.step, r.at_ms)
            })
            .collect();
        saved.sort();
        serde_json::json!(saved)
    }

    /// Replaces what suppression remembers with what [`save`](Self::save) gave; pairs of
    /// rules this exflow does not know are skipped. Returns the pairs restored.
    pub fn load(&mut self, saved: serde_json::Value) -> usize {
        let Ok(saved) = serde_json::from_value::<Vec<SavedReported>>(saved) else {
            return 0;
        };
        self.reported.clear();
        for (rule, inside, outside, first_alert_id, step, at_ms) in saved {
            let Some(rule) = super::RULES.iter().find(|r| **r == rule) else {
                continue;
            };
            let reported = Reported {
                first_alert_id,
                step,
                at_ms,
            };
            self.reported.insert((rule, inside, outside), reported);
        }
        self.reported.len()
    }
}

fn alert_at(alert: &Alert) -> u64 {
    alert.event_time_ms
}

fn to_alert(mut f: Finding, escalates: Option<String>) -> Alert {
    let explain = f.explain.take();
    let proto = f.proto.to_string();
    // An escalation is named by the alert it escalates and its step, not by its event
    // time: a rule may raise it on a tick, and where ticks fall depends on the clock that
    // drives them (one process's table, or a partition's collectors in scale-out), while
    // a step is reached once per first alert.
    let alert_id = match &escalates {
        Some(first_alert_id) => stable_id(&[b"escalation", first_alert_id.as_bytes(), &[f.step]]),
        None => stable_id(&[
            f.rule.as_bytes(),
            f.inside.to_string().as_bytes(),
            f.outside.to_string().as_bytes(),
            &f.outside_port.to_be_bytes(),
            proto.as_bytes(),
            &[f.step],
            &f.at_ms.to_be_bytes(),
        ]),
    };
    Alert {
        schema: ALERT_SCHEMA,
        alert_id,
        rule: f.rule,
        severity: Severity::of_score(f.score),
        score: f.score,
        summary: f.summary,
        event_time: rfc3339(f.at_ms * 1_000_000),
        event_time_ms: f.at_ms,
        raised_ns: crate::time::wall_clock_ns(),
        inside_addr: f.inside,
        outside_addr: f.outside,
        outside_port: f.outside_port,
        proto: f.proto,
        community_id: f.inside_port.map(|inside_port| {
            community_id(&ConversationKey {
                inside: f.inside,
                outside: f.outside,
                inside_port,
                outside_port: f.outside_port,
                proto: f.proto,
            })
        }),
        outside_country: f.destination.country,
        outside_asn: f.destination.asn.map(|asn| asn.get()),
        bytes_out: f.bytes_out,
        bytes_in: f.bytes_in,
        packets_out: f.packets_out,
        packets_in: f.packets_in,
        flows: f.flows,
        first_seen: rfc3339(f.first_ms * 1_000_000),
        last_seen: rfc3339(f.last_ms * 1_000_000),
        duration_s: f.last_ms.saturating_sub(f.first_ms) / 1000,
        exporters: vec![f.exporter],
        in_if_name: None,
        in_if_description: None,
        out_if_name: None,
        out_if_description: None,
        interfaces: f.interfaces,
        attack: f.attack.to_vec(),
        step: f.step,
        escalates,
        baseline: explain.as_ref().and_then(|e| e.baseline.clone()),
        host_role: explain.as_ref().and_then(|e| e.host_role.clone()),
        evidence: explain.map_or_else(Vec::new, |e| {
            let mut evidence = e.evidence;
            evidence.sort_by_key(|e| std::cmp::Reverse(e.bytes_out));
            evidence
                .iter()
                .map(EvidenceConversation::to_evidence)
                .collect()
        }),
        host_risk: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::Destination;

    fn finding(step: u8, at_ms: u64) -> Finding {
        Finding {
            rule: "bulk_egress",
            step,
            score: 60,
            summary: "s".into(),
            inside: "10.0.0.1".parse().unwrap(),
            outside: "192.0.2.1".parse().unwrap(),
            outside_port: 443,
            inside_port: None,
            proto: 6,
            destination: Destination::default(),
            bytes_out: 1,
            bytes_in: 0,
            packets_out: 1,
            packets_in: 0,
            flows: 1,
            first_ms: 0,
            last_ms: 1000,
            exporter: "127.0.0.1".parse().unwrap(),
            interfaces: Default::default(),
            attack: &["T1048"],
            at_ms,
            explain: None,
        }
    }

    #[test]
    fn an_escalations_id_is_its_first_alerts_and_step_whenever_it_is_raised() {
        let (mut early, mut late) = (Suppressor::new(3600), Suppressor::new(3600));
        let first = early.admit(finding(0, 1000)).unwrap();
        assert_eq!(
            late.admit(finding(0, 1000)).unwrap().alert_id,
            first.alert_id
        );
        // The same step reached at another tick: the same id.
        let a = early.admit(finding(1, 60_000)).unwrap();
        let b = late.admit(finding(1, 120_000)).unwrap();
        assert_eq!(a.alert_id, b.alert_id);
        assert_ne!(a.alert_id, first.alert_id);
        let c = early.admit(finding(2, 180_000)).unwrap();
        assert_ne!(c.alert_id, a.alert_id, "another step, another id");
        // A first alert still has its event time in its id.
        let mut other = Suppressor::new(3600);
        assert_ne!(
            other.admit(finding(0, 2000)).unwrap().alert_id,
            first.alert_id
        );
    }

    #[test]
    fn one_alert_per_step_within_the_cooldown_and_escalations_reference_the_first() {
        let mut s = Suppressor::new(3600);
        let first = s.admit(finding(0, 1000)).unwrap();
        assert!(first.escalates.is_none());
        assert!(s.admit(finding(0, 2000)).is_none());
        let second = s.admit(finding(1, 3000)).unwrap();
        assert_eq!(second.escalates.as_deref(), Some(first.alert_id.as_str()));
        assert!(s.admit(finding(1, 4000)).is_none());
        assert!(
            s.admit(finding(0, 5000)).is_none(),
            "a lower step than reported is no news"
        );
        let third = s.admit(finding(2, 6000)).unwrap();
        assert_eq!(third.escalates.as_deref(), Some(first.alert_id.as_str()));
        assert_eq!(s.suppressed, 3);
        // After the cooldown, the pair may alert again from scratch.
        let again = s.admit(finding(0, 6000 + 3_600_000)).unwrap();
        assert!(again.escalates.is_none());
        assert_ne!(again.alert_id, first.alert_id);
    }

    #[test]
    fn alert_fields() {
        let alert = Suppressor::new(60)
            .admit(finding(0, 1_710_230_520_000))
            .unwrap();
        let json = serde_json::to_value(&alert).unwrap();
        assert_eq!(json["schema"], "exflow.alert.v1");
        assert_eq!(json["severity"], "high");
        assert_eq!(json["event_time"], "2024-03-12T08:02:00Z");
        assert_eq!(json["first_seen"], "1970-01-01T00:00:00Z");
        assert_eq!(json["duration_s"], 1);
        assert_eq!(json["attack"][0], "T1048");
        assert!(json.get("event_time_ms").is_none());
        assert!(json.get("escalates").is_none());
    }
}
