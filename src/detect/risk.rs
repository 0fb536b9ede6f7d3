//! detect: the per-host risk score, after suppression: every alert of an inside host over
//! the last day, whatever its rule, combined into one number carried in the alert
//! (`host_risk`) and counted by band on `/metrics`, so an analyst reads the hosts several
//! rules flagged first.
//!
//! The score is the host's highest alert score of the day, plus a quarter of the highest
//! score of each other rule that alerted on it, at most 100: escalations of one rule do not
//! add up (they are one finding growing), independent rules do (corroboration is what a
//! triage orders by). A host keeps its `MAX_ALERTS` newest alerts of the day (ordered by
//! event time); at most `MAX_HOSTS` hosts, the stalest evicted and counted.

use std::net::IpAddr;

use foldhash::{HashMap, HashMapExt};
use serde::Serialize;

use super::alert::{Alert, Severity};
use super::bounded::evict_stalest;

/// The span of alerts a score combines.
const DAY_MS: u64 = 24 * 3_600_000;
/// Alerts remembered per host (the newest).
const MAX_ALERTS: usize = 16;
/// Hosts remembered at most.
const MAX_HOSTS: usize = 100_000;

/// What the alert says of its host's day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRisk {
    /// 0-100, as above.
    pub score: u8,
    /// Alerts on the host within the last day, this one included (at most `MAX_ALERTS`).
    pub alerts: u32,
    /// The rules behind them, the highest-scoring first.
    pub rules: Vec<&'static str>,
}

/// One host's alerts of the day: (event time, rule, score), oldest first.
/// An alert of a host's day: (event time ms, rule, score).
type DayAlert = (u64, &'static str, u8);

#[derive(Debug, Default)]
struct Day {
    alerts: Vec<DayAlert>,
    last_ms: u64,
    /// The host's score from `alerts` ([`Day::rescore`]), kept as they change: the gauge
    /// of hosts by band reads every host's several times a second.
    score: u8,
}

impl Day {
    /// Each rule's highest score, the highest first (ties by name, for a stable order).
    fn by_rule(&self) -> Vec<(&'static str, u8)> {
        let mut best: Vec<(&'static str, u8)> = Vec::new();
        for &(_, rule, score) in &self.alerts {
            match best.iter_mut().find(|b| b.0 == rule) {
                Some(b) => b.1 = b.1.max(score),
                None => best.push((rule, score)),
            }
        }
        best.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        best
    }

    /// Sets `score` from the alerts: the top rule's score and a quarter of the others'.
    fn rescore(&mut self) {
        let best = self.by_rule();
        let Some(&(_, top)) = best.first() else {
            self.score = 0;
            return;
        };
        let others: u32 = best[1..].iter().map(|b| u32::from(b.1)).sum();
        self.score = (u32::from(top) + others / 4).min(100) as u8;
    }
}

#[derive(Debug)]
pub struct Risk {
    hosts: HashMap<IpAddr, Day>,
    max_hosts: usize,
    /// Hosts forgotten to stay within `max_hosts`.
    pub hosts_evicted: u64,
}

impl Default for Risk {
    fn default() -> Self {
        Risk::new(MAX_HOSTS)
    }
}

impl Risk {
    pub fn new(max_hosts: usize) -> Self {
        Risk {
            hosts: HashMap::new(),
            max_hosts: max_hosts.max(1),
            hosts_evicted: 0,
        }
    }

    /// Adds `alert` to its host's day and writes the host's score into it.
    pub fn add(&mut self, alert: &mut Alert) {
        let host = alert.inside_addr;
        if !self.hosts.contains_key(&host) && self.hosts.len() >= self.max_hosts {
            self.hosts_evicted +=
                evict_stalest(&mut self.hosts, |d: &Day| d.last_ms, |_, _| {}) as u64;
        }
        let at = alert.event_time_ms;
        let day = self.hosts.entry(host).or_default();
        day.last_ms = day.last_ms.max(at);
        let horizon = day.last_ms.saturating_sub(DAY_MS);
        day.alerts.retain(|a| a.0 > horizon);
        // In event-time order: a late record's alert goes where it belongs.
        let index = day.alerts.partition_point(|a| a.0 <= at);
        day.alerts.insert(index, (at, alert.rule, alert.score));
        if day.alerts.len() > MAX_ALERTS {
            day.alerts.remove(0);
        }
        day.rescore();
        alert.host_risk = Some(HostRisk {
            score: day.score,
            alerts: day.alerts.len() as u32,
            rules: day.by_rule().into_iter().map(|b| b.0).collect(),
        });
    }

    /// The hosts' alerts of the day, for a partition's checkpoint (`scaleout`): `(host,
    /// last_ms, [(at_ms, rule, score)])`, sorted by host.
    pub fn save(&self) -> serde_json::Value {
        let mut saved: Vec<(IpAddr, u64, &[DayAlert])> = self
            .hosts
            .iter()
            .map(|(&host, day)| (host, day.last_ms, day.alerts.as_slice()))
            .collect();
        saved.sort_by_key(|s| s.0);
        serde_json::json!(saved)
    }

    /// Replaces the hosts' days with what [`save`](Self::save) gave, within `max_hosts`
    /// and `MAX_ALERTS` a host; alerts of unknown rules are skipped. Returns the hosts.
    pub fn load(&mut self, saved: serde_json::Value) -> usize {
        type Saved = Vec<(IpAddr, u64, Vec<(u64, String, u8)>)>;
        let Ok(saved) = serde_json::from_value::<Saved>(saved) else {
            return 0;
        };
        self.hosts.clear();
        for (host, last_ms, alerts) in saved.into_iter().take(self.max_hosts) {
            let mut day = Day {
                alerts: Vec::new(),
                last_ms,
                score: 0,
            };
            for (at, rule, score) in alerts {
                if let Some(rule) = super::RULES.iter().find(|r| **r == rule) {
                    day.alerts.push((at, *rule, score));
                }
            }
            day.alerts.sort_by_key(|a| a.0);
            let excess = day.alerts.len().saturating_sub(MAX_ALERTS);
            day.alerts.drain(..excess);
            day.rescore();
            self.hosts.insert(host, day);
        }
        self.hosts.len()
    }

    /// Forgets hosts without an alert for a day before `now_ms`.
    pub fn forget_before(&mut self, now_ms: u64) {
        self.hosts
            .retain(|_, d| d.last_ms.saturating_add(DAY_MS) > now_ms);
    }

    /// Hosts with an alert within the last day, by the severity band of their score
    /// (low, medium, high, critical).
    pub fn hosts_by_band(&self) -> [u64; 4] {
        let mut bands = [0u64; 4];
        for day in self.hosts.values() {
            let band = Severity::of_score(day.score);
            let i = Severity::ALL.iter().position(|s| *s == band).unwrap_or(0);
            bands[i] += 1;
        }
        bands
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Finding;
    use crate::detect::suppress::Suppressor;

    const H: u64 = 3_600_000;

    fn alert(host: &str, rule: &'static str, score: u8, at_ms: u64) -> Alert {
        let finding = Finding {
            rule,
            step: 0,
            score,
            summary: "s".into(),
            inside: host.parse().unwrap(),
            outside: "192.0.2.1".parse().unwrap(),
            outside_port: 443,
            inside_port: Some(50_000),
            proto: 6,
            destination: crate::enrich::Destination::default(),
            bytes_out: 1,
            bytes_in: 0,
            packets_out: 1,
            packets_in: 0,
            flows: 1,
            first_ms: at_ms,
            last_ms: at_ms,
            exporter: "127.0.0.1".parse().unwrap(),
            interfaces: Default::default(),
            attack: &[],
            at_ms,
            explain: None,
        };
        Suppressor::new(0).admit(finding).unwrap()
    }

    fn scored(risk: &mut Risk, host: &str, rule: &'static str, score: u8, at: u64) -> HostRisk {
        let mut a = alert(host, rule, score, at);
        risk.add(&mut a);
        a.host_risk.unwrap()
    }

    #[test]
    fn other_rules_add_a_quarter_escalations_of_one_do_not_and_a_day_later_it_is_gone() {
        let mut risk = Risk::default();
        let t0 = 1_710_230_400_000;
        let first = scored(&mut risk, "10.0.0.1", "egress_anomaly", 64, t0);
        assert_eq!((first.score, first.alerts), (64, 1));
        // The same rule again, higher: its best counts, alone.
        let again = scored(&mut risk, "10.0.0.1", "egress_anomaly", 70, t0 + H);
        assert_eq!(again.score, 70);
        // Two other rules: 70 + (60 + 52) / 4 = 98.
        scored(&mut risk, "10.0.0.1", "new_destination", 60, t0 + 2 * H);
        let third = scored(&mut risk, "10.0.0.1", "spread_egress", 52, t0 + 3 * H);
        assert_eq!(third.score, 98);
        assert_eq!(third.alerts, 4);
        assert_eq!(
            third.rules,
            vec!["egress_anomaly", "new_destination", "spread_egress"]
        );
        // Another host is its own.
        assert_eq!(
            scored(&mut risk, "10.0.0.2", "beacon", 45, t0 + 3 * H).score,
            45
        );
        assert_eq!(risk.hosts_by_band(), [0, 1, 0, 1]);
        // A day after the first two, they are out of its day: 60 + 52 / 4 + 20 / 4.
        let later = scored(&mut risk, "10.0.0.1", "watchlist", 20, t0 + 25 * H);
        assert_eq!((later.score, later.alerts), (78, 3));
        risk.forget_before(t0 + 60 * H);
        assert_eq!(risk.hosts_by_band(), [0; 4]);
    }

    #[test]
    fn alerts_and_hosts_stay_bounded() {
        let mut risk = Risk::new(10);
        let t0 = 1_710_230_400_000;
        for i in 0..40u64 {
            scored(&mut risk, "10.0.0.1", "beacon", 40, t0 + i * 60_000);
        }
        assert_eq!(
            scored(&mut risk, "10.0.0.1", "beacon", 40, t0 + H).alerts,
            MAX_ALERTS as u32
        );
        for i in 0..100u64 {
            scored(
                &mut risk,
                &format!("10.1.0.{}", i + 1),
                "beacon",
                40,
                t0 + i,
            );
        }
        assert!(risk.hosts.len() <= 10);
        assert!(risk.hosts_evicted >= 90);
    }
}
