//! detect: `bulk_egress`, an inside host sending a lot (default 100 MB) to one outside
//! address within a sliding hour, whatever the ports and connections. Downloads never
//! count. Severity rises with the volume (new ladder steps at 5x, 10x and 100x the
//! threshold), a foreign destination, and out/in asymmetry.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;

use super::{
    Finding, RecordEvent, Rule, describe_destination, human_bytes, log_score, rule_allows,
};
use crate::config::BulkEgressConfig;
use crate::enrich::Allow;

pub const NAME: &str = "bulk_egress";
/// Exfiltration over an alternative protocol; over a web service when the port is web.
const ATTACK: &[&str] = &["T1048"];
const ATTACK_WEB: &[&str] = &["T1048", "T1567"];
/// Multiples of the threshold at which the alert escalates.
const LADDER: [u64; 4] = [1, 5, 10, 100];
/// Uploads are summed per minute: a window keeps at most `window_s / 60 + 1` buckets.
const BUCKET_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct Window {
    /// (minute start, bytes out, bytes in), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    bytes_out: u64,
    bytes_in: u64,
    flows: u64,
    first_ms: u64,
    /// The highest ladder step reported while the window stayed over the threshold: a
    /// finding is made only when a higher one is reached, not on every record.
    reported_step: Option<u8>,
}

impl Window {
    fn add(&mut self, at_ms: u64, bytes_out: u64, bytes_in: u64) {
        let minute = at_ms - at_ms % BUCKET_MS;
        match self.buckets.back_mut() {
            Some(last) if last.0 == minute => {
                last.1 += bytes_out;
                last.2 += bytes_in;
            }
            // Late records join the newest bucket: close enough for an hour's window.
            Some(last) if last.0 > minute => {
                last.1 += bytes_out;
                last.2 += bytes_in;
            }
            _ => self.buckets.push_back((minute, bytes_out, bytes_in)),
        }
        self.bytes_out += bytes_out;
        self.bytes_in += bytes_in;
        self.flows += 1;
    }

    fn slide(&mut self, now_ms: u64, window_ms: u64) {
        let horizon = now_ms.saturating_sub(window_ms);
        while let Some(&(minute, out, inn)) = self.buckets.front() {
            if minute + BUCKET_MS > horizon {
                break;
            }
            self.buckets.pop_front();
            self.bytes_out -= out;
            self.bytes_in -= inn;
        }
        if self.buckets.is_empty() {
            self.flows = 0;
        }
    }

    /// Forgets what was reported once the window fell below `threshold`: a new burst is
    /// news again.
    fn rearm_below(&mut self, threshold: u64) {
        if self.bytes_out < threshold {
            self.reported_step = None;
        }
    }
}

pub struct BulkEgress {
    min_bytes_out: u64,
    window_ms: u64,
    allow: Allow,
    windows: HashMap<(IpAddr, IpAddr), Window>,
}

impl BulkEgress {
    pub fn new(config: &BulkEgressConfig) -> Self {
        BulkEgress {
            min_bytes_out: config.min_bytes_out.max(1),
            window_ms: config.window_s.saturating_mul(1000),
            allow: Allow::new(&config.allow),
            windows: HashMap::new(),
        }
    }
}

impl Rule for BulkEgress {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let record = event.record;
        if record.bytes_out == 0 {
            // A download: never counted, but it is the answer side of an upload window.
            if let Some(window) = self.windows.get_mut(&(record.inside, record.outside)) {
                window.add(record.end_ms, 0, record.bytes_in);
            }
            return;
        }
        let destination = event.destination();
        if rule_allows(&self.allow, event.key, destination) {
            return;
        }
        let window = self
            .windows
            .entry((record.inside, record.outside))
            .or_default();
        if window.buckets.is_empty() {
            window.first_ms = record.start_ms;
        }
        window.add(record.end_ms, record.bytes_out, record.bytes_in);
        window.slide(event.now_ms, self.window_ms);
        window.rearm_below(self.min_bytes_out);
        if window.bytes_out < self.min_bytes_out {
            return;
        }
        let step = LADDER
            .iter()
            .rposition(|&m| window.bytes_out >= self.min_bytes_out.saturating_mul(m))
            .unwrap_or(0);
        if window
            .reported_step
            .is_some_and(|reported| usize::from(reported) >= step)
        {
            return;
        }
        window.reported_step = Some(step as u8);
        let asymmetric = window.bytes_out >= window.bytes_in.saturating_mul(10);
        let score = log_score(window.bytes_out, self.min_bytes_out, 45.0, 25.0)
            .saturating_add(if destination.foreign { 10 } else { 0 })
            .saturating_add(if asymmetric { 10 } else { 0 })
            .min(100);
        let window_min = self.window_ms / 60_000;
        let summary = format!(
            "{} sent {} to {} within {window_min} min ({} back)",
            record.inside,
            human_bytes(window.bytes_out),
            describe_destination(record.outside, event.key.outside_port, destination),
            human_bytes(window.bytes_in),
        );
        let mut finding = Finding::for_conversation(NAME, event, step as u8, score, summary);
        finding.bytes_out = window.bytes_out;
        finding.bytes_in = window.bytes_in;
        finding.flows = window.flows;
        finding.first_ms = window
            .first_ms
            .max(event.now_ms.saturating_sub(self.window_ms))
            .min(record.start_ms);
        finding.last_ms = record.end_ms;
        let web = matches!(event.key.outside_port, 80 | 443 | 8080 | 8443);
        findings.push(finding.with_attack(if web { ATTACK_WEB } else { ATTACK }));
    }

    fn on_tick(&mut self, now_ms: u64, _findings: &mut Vec<Finding>) {
        let window_ms = self.window_ms;
        let threshold = self.min_bytes_out;
        self.windows.retain(|_, window| {
            window.slide(now_ms, window_ms);
            window.rearm_below(threshold);
            !window.buckets.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::{event_for, oriented};

    fn rule(min: u64) -> BulkEgress {
        BulkEgress::new(&BulkEgressConfig {
            min_bytes_out: min,
            ..BulkEgressConfig::default()
        })
    }

    #[test]
    fn fires_at_the_threshold_within_the_window_not_below() {
        let mut r = rule(1000);
        let mut findings = Vec::new();
        // Two connections (different ports) to one address: 999 bytes, then 1 more.
        let a = oriented("10.0.0.1", 5000, "5.255.255.77", 443, 999, 0, 0, 60_000);
        r.on_record(&event_for(&a, 60_000), &mut findings);
        assert!(findings.is_empty());
        let b = oriented("10.0.0.1", 5001, "5.255.255.77", 443, 1, 0, 60_000, 120_000);
        r.on_record(&event_for(&b, 120_000), &mut findings);
        assert_eq!(findings.len(), 1);
        assert_eq!(
            (findings[0].bytes_out, findings[0].flows, findings[0].step),
            (1000, 2, 0)
        );
        assert_eq!(findings[0].attack, ATTACK_WEB);
    }

    #[test]
    fn old_uploads_slide_out_and_downloads_never_count() {
        let mut r = rule(1000);
        let mut findings = Vec::new();
        let early = oriented("10.0.0.1", 5000, "5.255.255.77", 22, 600, 0, 0, 60_000);
        r.on_record(&event_for(&early, 60_000), &mut findings);
        let late = oriented(
            "10.0.0.1",
            5000,
            "5.255.255.77",
            22,
            600,
            0,
            3_700_000,
            3_720_000,
        );
        r.on_record(&event_for(&late, 3_720_000), &mut findings);
        assert!(findings.is_empty(), "600 + 600 but an hour apart");
        let download = oriented(
            "10.0.0.1",
            5000,
            "5.255.255.77",
            22,
            0,
            1_000_000_000,
            3_720_000,
            3_730_000,
        );
        r.on_record(&event_for(&download, 3_730_000), &mut findings);
        assert!(findings.is_empty());
        r.on_tick(10_000_000, &mut findings);
        assert!(
            r.windows.is_empty(),
            "state is dropped once the window is empty"
        );
    }

    #[test]
    fn steps_and_score_rise_with_volume() {
        let mut r = rule(1000);
        let mut findings = Vec::new();
        for (i, bytes) in [1000u64, 4000, 5000, 90_000].into_iter().enumerate() {
            let at = 60_000 * (i as u64 + 1);
            let o = oriented(
                "10.0.0.1",
                5000,
                "5.255.255.77",
                9000,
                bytes,
                0,
                at - 1000,
                at,
            );
            r.on_record(&event_for(&o, at), &mut findings);
        }
        let steps: Vec<u8> = findings.iter().map(|f| f.step).collect();
        assert_eq!(steps, vec![0, 1, 2, 3]);
        assert!(findings.windows(2).all(|w| w[0].score < w[1].score));
        assert_eq!(findings[0].attack, ATTACK);
    }

    #[test]
    fn allow_list_by_country() {
        let mut config = BulkEgressConfig {
            min_bytes_out: 10,
            ..BulkEgressConfig::default()
        };
        config.allow.countries = vec!["RU".parse().unwrap()];
        let mut r = BulkEgress::new(&config);
        let mut findings = Vec::new();
        let o = oriented("10.0.0.1", 5000, "5.255.255.77", 443, 100, 0, 0, 1000);
        r.on_record(&event_for(&o, 1000), &mut findings);
        assert!(findings.is_empty());
    }
}
