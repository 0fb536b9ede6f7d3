//! detect: `low_and_slow`, an inside host's cumulative upload to one outside address, or to
//! one outside network (ASN), over a sliding day (default 24 h in hourly buckets) in many
//! connections (default 20 conversations, 20 MB), whatever each connection's size or
//! duration: exfiltration paced to stay under every per-connection and per-hour threshold.
//! Bytes a host sends back on connections outside hosts started are not upload. Bytes join
//! the window at their record's own time, so late records count where they belong: the
//! ring holds two buckets more than the day, a record is judged in the busiest day it
//! belongs to, and ticks slide the ring to the exporter's clock less `allow_lateness`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::alert::{Baseline, EvidenceConversation, Explanation, keep_evidence};
use super::window::Windows;
use super::{
    Finding, RecordEvent, Rule, describe_destination, human_bytes, log_score, rule_allows,
};
use crate::enrich::{Allow, AllowList, Destination};
use crate::flow::{Initiator, Oriented, Update};

pub const NAME: &str = "low_and_slow";
/// Data transfer size limits; scheduled transfer.
const ATTACK: &[&str] = &["T1030", "T1029"];
const LADDER: [u64; 3] = [1, 5, 25];
/// The window is 24 buckets (hours by default)...
const BUCKETS: usize = 24;
/// ...of a ring of 26: two buckets more for records that come late (up to two hours behind
/// the newest by default; `flow.max_lateness_s` is one).
const HELD: usize = BUCKETS + 2;
const EVIDENCE: usize = 4;
/// What a window costs at most, with its map entry, addresses and evidence.
const WINDOW_BYTES: u64 = 664;

/// `[rules.low_and_slow]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowAndSlowConfig {
    pub enabled: bool,
    /// Upload to one address or network within `window_s`...
    pub min_bytes_out: u64,
    /// ...over at least this many conversations.
    pub min_conversations: u64,
    pub window_s: u64,
    /// Also sum per outside network, not only per address.
    pub by_asn: bool,
    /// (inside host, address or ASN) windows kept at most; beyond it the stalest go,
    /// counted as `exflow_detect_state_dropped_total{rule="low_and_slow",kind="windows_evicted"}`.
    pub max_windows: usize,
    pub allow: AllowList,
}

impl Default for LowAndSlowConfig {
    fn default() -> Self {
        LowAndSlowConfig {
            enabled: true,
            min_bytes_out: 20_000_000,
            min_conversations: 20,
            window_s: 24 * 3600,
            by_asn: true,
            max_windows: 200_000,
            allow: AllowList::default(),
        }
    }
}

/// What a window sums over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Address(IpAddr),
    Asn(u32),
}

pub struct LowAndSlow {
    min_bytes_out: u64,
    min_conversations: u64,
    bucket_ms: u64,
    window_ms: u64,
    by_asn: bool,
    allow: Allow,
    /// Upload and conversations begun, per bucket.
    windows: Windows<(IpAddr, Target), HELD, ()>,
}

impl LowAndSlow {
    pub fn new(config: &LowAndSlowConfig) -> Self {
        let window_ms = config.window_s.saturating_mul(1000).max(BUCKETS as u64);
        let bucket_ms = window_ms / BUCKETS as u64;
        LowAndSlow {
            min_bytes_out: config.min_bytes_out.max(1),
            min_conversations: config.min_conversations,
            bucket_ms,
            window_ms,
            by_asn: config.by_asn,
            allow: Allow::new(&config.allow),
            windows: Windows::new(config.max_windows, bucket_ms),
        }
    }

    fn add(&mut self, event: &RecordEvent<'_>, target: Target) -> Option<Finding> {
        let (record, key) = (event.record, event.key);
        let at = record.end_ms.max(record.start_ms);
        let begun = u32::from(event.update == Update::Created);
        let window = self
            .windows
            .add((key.inside, target), at, record.bytes_out, begun)?;
        if window.first_ms == 0 {
            window.first_ms = record.start_ms;
        }
        window.last_ms = window.last_ms.max(event.now_ms);
        keep_evidence(
            &mut window.evidence,
            EvidenceConversation::of(key, event.conversation),
            EVIDENCE,
        );
        // Forgets what the ring no longer holds (it ends at the newest record, `add`).
        window.slide(at, self.bucket_ms);
        let min = self.min_bytes_out;
        // No day within the ring can hold more than the whole ring: below the threshold,
        // the buckets need not be read.
        if window.buckets.bytes() < min {
            window.reported = 0;
            return None;
        }
        // The ring ends at the newest record's time (`add`), not the exporter's clock: a
        // late record is judged in the busiest day it belongs to.
        let (total, conversations, start) =
            window
                .buckets
                .busiest_window_with(at, self.bucket_ms, BUCKETS);
        if total < min {
            window.reported = 0;
            return None;
        }
        if conversations < self.min_conversations {
            return None;
        }
        let step = LADDER
            .iter()
            .rposition(|&m| total >= min.saturating_mul(m))?;
        if usize::from(window.reported) > step {
            return None;
        }
        window.reported = step as u8 + 1;
        let destination = event.destination();
        let score = log_score(total, min, 45.0, 20.0)
            .saturating_add(if destination.foreign { 10 } else { 0 })
            .min(100);
        let hours =
            (event.now_ms.saturating_sub(window.first_ms.max(start)) as f64 / 3_600_000.0).max(0.1);
        let what = match target {
            Target::Address(_) => describe_destination(key.outside, key.outside_port, destination),
            Target::Asn(asn) => format!(
                "network AS{asn}, latest {}",
                describe_destination(key.outside, key.outside_port, destination)
            ),
        };
        let summary = format!(
            "{} sent {} to {} over {:.1} h in {} conversations ({} each on average)",
            key.inside,
            human_bytes(total),
            what,
            hours,
            conversations,
            human_bytes(total / conversations.max(1)),
        );
        let mut finding = Finding::for_conversation(NAME, event, step as u8, score, summary);
        finding.bytes_out = total;
        finding.flows = conversations;
        finding.first_ms = window.first_ms.max(start);
        finding.last_ms = record.end_ms.max(finding.first_ms);
        finding.attack = ATTACK;
        finding.explain = Some(Box::new(Explanation {
            baseline: Some(Baseline {
                metric: "bytes_out_per_day",
                observed: total,
                threshold: min,
                median: None,
                mad: None,
                peak: None,
                hours: Some((self.window_ms / 3_600_000) as u32),
                ratio: total as f64 / min as f64,
            }),
            host_role: None,
            evidence: window.evidence.to_vec(),
        }));
        Some(finding)
    }
}

impl Rule for LowAndSlow {
    fn name(&self) -> &'static str {
        NAME
    }

    /// At most `max_bytes` of windows, at [`WINDOW_BYTES`] each.
    fn limit_state(&mut self, max_bytes: u64) {
        self.windows.limit(max_bytes, WINDOW_BYTES);
    }

    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        self.windows.dropped()
    }

    fn fold_widths_ms(&self) -> Option<Vec<u64>> {
        Some(vec![self.bucket_ms])
    }

    fn warm(&self, record: &Oriented, destination: Option<&Destination>) {
        self.windows
            .prefetch(&(record.inside, Target::Address(record.outside)));
        if let Some(asn) = destination.and_then(|d| d.asn).filter(|_| self.by_asn) {
            self.windows
                .prefetch(&(record.inside, Target::Asn(asn.get())));
        }
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let record = event.record;
        let created = event.update == Update::Created;
        if (record.bytes_out == 0 && !created)
            || event.conversation.initiator() == Initiator::Outside
        {
            return;
        }
        let destination = event.destination();
        if rule_allows(&self.allow, event.key, destination) {
            return;
        }
        // The address's window first; the network's only when the address's did not fire.
        if let Some(finding) = self.add(event, Target::Address(event.key.outside)) {
            findings.push(finding);
            if let Some(asn) = destination.asn.filter(|_| self.by_asn) {
                self.add(event, Target::Asn(asn.get()));
            }
        } else if let Some(asn) = destination.asn.filter(|_| self.by_asn)
            && let Some(finding) = self.add(event, Target::Asn(asn.get()))
        {
            findings.push(finding);
        }
    }

    fn allow_lateness(&mut self, lateness_ms: u64) {
        self.windows.allow_lateness(lateness_ms);
    }

    /// Slides every window to the oldest time a record may still come from: `now_ms` less
    /// the lateness allowed.
    fn on_tick(&mut self, now_ms: u64, _findings: &mut Vec<Finding>) {
        self.windows.on_tick(now_ms, self.min_bytes_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::{feed, oriented};
    use crate::enrich::Destination;
    use crate::flow::FlowTable;

    const T0: u64 = 1_710_230_400_000;
    const MB: u64 = 1_000_000;
    const MIN: u64 = 60_000;

    fn vps() -> Destination {
        Destination {
            country: Some("RU".parse().unwrap()),
            asn: std::num::NonZeroU32::new(48666),
            foreign: true,
            ..Destination::default()
        }
    }

    struct Harness {
        table: FlowTable,
        rule: LowAndSlow,
        findings: Vec<Finding>,
    }

    impl Harness {
        fn new(config: LowAndSlowConfig) -> Self {
            Harness {
                table: FlowTable::new(100_000, 1800, 3600),
                rule: LowAndSlow::new(&config),
                findings: Vec::new(),
            }
        }

        fn upload(
            &mut self,
            inside_port: u16,
            outside: &str,
            bytes: u64,
            end_ms: u64,
            now_ms: u64,
        ) {
            let mut record = oriented(
                "10.10.4.4",
                inside_port,
                outside,
                443,
                bytes,
                2000,
                end_ms - 5000,
                end_ms,
            );
            record.outside_asn = 48666;
            feed(
                &mut self.rule,
                &mut self.table,
                &record,
                vps(),
                now_ms,
                false,
                &mut self.findings,
            );
        }
    }

    #[test]
    fn a_trickle_over_many_connections_adds_up_over_the_day() {
        let mut h = Harness::new(LowAndSlowConfig::default());
        // 900 kB every 20 min: 2.7 MB an hour, never near any per-hour threshold.
        for i in 0..40u64 {
            let at = T0 + i * 20 * MIN;
            h.upload(50_000 + i as u16, "185.1.1.1", 900_000, at, at);
        }
        assert_eq!(h.findings.len(), 1, "{:?}", h.findings);
        let f = &h.findings[0];
        // 20 MB is reached at the 23rd conversation (20.7 MB).
        assert_eq!(
            (f.rule, f.step, f.flows, f.bytes_out),
            (NAME, 0, 23, 23 * 900_000)
        );
        assert_eq!(f.outside.to_string(), "185.1.1.1");
        assert_eq!(f.attack, ATTACK);
        assert!(
            f.summary.contains("over 7.3 h in 23 conversations"),
            "{}",
            f.summary
        );
        assert_eq!(f.explain.as_ref().unwrap().evidence.len(), EVIDENCE);
    }

    #[test]
    fn the_network_sums_several_addresses_and_few_connections_are_not_slow() {
        let mut h = Harness::new(LowAndSlowConfig::default());
        for i in 0..30u64 {
            let at = T0 + i * 30 * MIN;
            h.upload(
                50_000 + i as u16,
                &format!("185.1.1.{}", i % 3 + 1),
                1_000_000,
                at,
                at,
            );
        }
        let targets: Vec<(u64, u64)> = h.findings.iter().map(|f| (f.flows, f.bytes_out)).collect();
        assert_eq!(targets, vec![(20, 20 * MB)], "the network's window");
        assert!(
            h.findings[0].summary.contains("network AS48666"),
            "{}",
            h.findings[0].summary
        );
        // Two large uploads are not many connections.
        let mut h = Harness::new(LowAndSlowConfig::default());
        h.upload(50_000, "185.1.1.9", 40 * MB, T0, T0);
        h.upload(50_001, "185.1.1.9", 40 * MB, T0 + MIN, T0 + MIN);
        assert!(h.findings.is_empty());
    }

    #[test]
    fn the_day_slides_and_late_records_count_in_their_own_hour() {
        let mut h = Harness::new(LowAndSlowConfig {
            by_asn: false,
            ..LowAndSlowConfig::default()
        });
        // 19 conversations of 1 MB on day one, then silence for a day: all forgotten.
        for i in 0..19u64 {
            h.upload(
                50_000 + i as u16,
                "185.1.1.1",
                MB,
                T0 + i * MIN,
                T0 + i * MIN,
            );
        }
        // (The ring holds the day and two hours more, for late records.)
        h.rule.on_tick(T0 + 26 * 60 * MIN, &mut h.findings);
        assert!(h.rule.windows.is_empty());
        for i in 0..19u64 {
            let at = T0 + 28 * 60 * MIN + i * MIN;
            h.upload(51_000 + i as u16, "185.1.1.1", MB, at, at);
        }
        assert!(h.findings.is_empty());
        // The 20th arrives 50 min late: still within the day.
        let now = T0 + 29 * 60 * MIN;
        h.upload(52_000, "185.1.1.1", MB, now - 50 * MIN, now);
        assert_eq!(h.findings.len(), 1);
        assert_eq!(h.findings[0].flows, 20);
        // A record from before the window is counted, not added.
        h.upload(52_001, "185.1.1.1", MB, T0, now);
        assert_eq!(h.rule.windows.too_late, 1);
    }

    #[test]
    fn windows_are_capped_and_servers_replies_ignored() {
        let mut h = Harness::new(LowAndSlowConfig {
            max_windows: 10,
            ..LowAndSlowConfig::default()
        });
        for i in 0..100u64 {
            h.upload(50_000, &format!("185.2.{}.1", i), 1000, T0 + i, T0 + i);
        }
        assert!(h.rule.windows.len() <= 10);
        assert!(h.rule.windows.evicted >= 90);
        let mut h = Harness::new(LowAndSlowConfig::default());
        for i in 0..40u64 {
            let mut record = oriented(
                "10.10.4.4",
                443,
                "185.1.1.1",
                50_000 + i as u16,
                MB,
                0,
                T0,
                T0 + i,
            );
            record.outside_asn = 48666;
            feed(
                &mut h.rule,
                &mut h.table,
                &record,
                vps(),
                T0 + i,
                false,
                &mut h.findings,
            );
        }
        assert!(h.findings.is_empty() && h.rule.windows.is_empty());
    }
}
