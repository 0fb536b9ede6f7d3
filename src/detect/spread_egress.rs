//! detect: `spread_egress`, an inside host uploading a lot (default 100 MB) within a
//! sliding hour to one outside network (ASN) or one country, spread over several
//! addresses: 20 x 30 MB to 20 addresses of one cloud provider is one 600 MB upload. One
//! address's upload is `bulk_egress`'s: at least half the threshold must have gone to
//! addresses other than the busiest one. Bytes a host sends back on connections outside
//! hosts started (a server answering its clients) are not upload. Bytes join the window at
//! their record's own time, so late records still count where they belong (the ring holds
//! a window and as much again; a record is judged in the busiest window it belongs to, and
//! ticks slide the ring to the exporter's clock less `allow_lateness`); a record longer
//! than the window counts an even share of its bytes (`window::within_window`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::alert::{Baseline, EvidenceConversation, Explanation, keep_evidence};
use super::window::{Tracked, Windows, within_window};
use super::{Finding, RecordEvent, Rule, human_bytes, log_score, rule_allows};
use crate::enrich::AllowList;
use crate::enrich::{Allow, CountryCode, Destination};
use crate::flow::{Initiator, Oriented};

pub const NAME: &str = "spread_egress";
/// Exfiltration over an alternative protocol, to a cloud account.
const ATTACK: &[&str] = &["T1048", "T1537"];
/// Multiples of the threshold at which the alert escalates.
const LADDER: [u64; 3] = [1, 5, 10];
/// The window is six buckets...
const BUCKETS: usize = 6;
/// ...of a ring of twelve: a window and as much again for records that come late (up to
/// one window behind the newest, the default `flow.max_lateness_s` for the default hour).
const HELD: usize = 2 * BUCKETS;
/// Addresses tracked per window; beyond them uploads count in the total only.
const MAX_ADDRESSES: usize = 16;
const EVIDENCE: usize = 4;
/// What a window costs at most, with its map entry, addresses and evidence.
const WINDOW_BYTES: u64 = 1024;

/// `[rules.spread_egress]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpreadEgressConfig {
    pub enabled: bool,
    /// Upload from one inside host to one ASN, or one country, within `window_s`.
    pub min_bytes_out: u64,
    pub window_s: u64,
    /// (inside host, ASN or country) windows kept at most; beyond it the stalest go,
    /// counted as `exflow_detect_state_dropped_total{rule="spread_egress",kind="windows_evicted"}`.
    pub max_windows: usize,
    pub allow: AllowList,
}

impl Default for SpreadEgressConfig {
    fn default() -> Self {
        SpreadEgressConfig {
            enabled: true,
            min_bytes_out: 100_000_000,
            window_s: 3600,
            max_windows: 100_000,
            allow: AllowList::default(),
        }
    }
}

/// What a window sums over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    Asn(u32),
    Country(CountryCode),
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Group::Asn(asn) => write!(f, "network AS{asn}"),
            Group::Country(cc) => write!(f, "country {cc}"),
        }
    }
}

/// The addresses a window's upload went to.
#[derive(Debug, Default)]
struct Addresses {
    /// Upload per address since it was first seen in the window, and when it was last.
    seen: Vec<(IpAddr, u64, u64)>,
    /// Addresses seen beyond `MAX_ADDRESSES`.
    untracked: u32,
}

impl Tracked for Addresses {
    /// Forgets addresses not seen since the window's start.
    fn forget_before(&mut self, start_ms: u64) {
        self.seen.retain(|&(_, _, last)| last >= start_ms);
    }
}

impl Addresses {
    /// The upload of the busiest address.
    fn busiest(&self) -> u64 {
        self.seen.iter().map(|a| a.1).max().unwrap_or(0)
    }
}

pub struct SpreadEgress {
    min_bytes_out: u64,
    bucket_ms: u64,
    window_ms: u64,
    allow: Allow,
    windows: Windows<(IpAddr, Group), HELD, Addresses>,
}

impl SpreadEgress {
    pub fn new(config: &SpreadEgressConfig) -> Self {
        let window_ms = config.window_s.saturating_mul(1000).max(BUCKETS as u64);
        let bucket_ms = window_ms / BUCKETS as u64;
        SpreadEgress {
            min_bytes_out: config.min_bytes_out.max(2),
            bucket_ms,
            window_ms,
            allow: Allow::new(&config.allow),
            windows: Windows::new(config.max_windows, bucket_ms),
        }
    }

    /// Adds the record to its group's window and reports the window when it crossed a step.
    fn add(
        &mut self,
        event: &RecordEvent<'_>,
        group: Group,
        findings: &mut Vec<Finding>,
    ) -> Option<()> {
        let (record, key) = (event.record, event.key);
        let at = record.end_ms.max(record.start_ms);
        // A record longer than the window counts what it can have sent within one.
        let bytes_out = within_window(
            record.bytes_out,
            record.start_ms,
            record.end_ms,
            self.window_ms,
        );
        let window = self.windows.add((key.inside, group), at, bytes_out, 0)?;
        if window.first_ms == 0 {
            window.first_ms = record.start_ms;
        }
        window.last_ms = window.last_ms.max(event.now_ms);
        // The ring ends at the newest record's time (`add`), not the exporter's clock: a
        // late record is judged with what came around it.
        let addresses = &mut window.tracked;
        match addresses.seen.iter().position(|a| a.0 == key.outside) {
            Some(at_index) => {
                let address = &mut addresses.seen[at_index];
                address.1 = address.1.saturating_add(bytes_out);
                address.2 = address.2.max(at);
            }
            None if addresses.seen.len() < MAX_ADDRESSES => {
                addresses.seen.push((key.outside, bytes_out, at));
            }
            None => addresses.untracked = addresses.untracked.saturating_add(1),
        }
        keep_evidence(
            &mut window.evidence,
            EvidenceConversation::of(key, event.conversation),
            EVIDENCE,
        );
        window.slide(at, self.bucket_ms);
        let min = self.min_bytes_out;
        // No window within the ring can hold more than the whole ring.
        if window.buckets.bytes() < min {
            window.reported = 0;
            return None;
        }
        let (total, _, window_start) =
            window
                .buckets
                .busiest_window_with(at, self.bucket_ms, BUCKETS);
        if total < min {
            window.reported = 0;
            return None;
        }
        // Of the window's upload, what did not go to the busiest address.
        let busiest = window.tracked.busiest();
        if total.saturating_sub(busiest) < min / 2 {
            return None;
        }
        let step = LADDER
            .iter()
            .rposition(|&m| total >= min.saturating_mul(m))?;
        if usize::from(window.reported) > step {
            return None;
        }
        window.reported = step as u8 + 1;
        let addresses = window.tracked.seen.len() + window.tracked.untracked as usize;
        let destination: &Destination = event.destination();
        let score = log_score(total, min, 50.0, 25.0)
            .saturating_add(if destination.foreign { 10 } else { 0 })
            .saturating_add(if record.bytes_in < record.bytes_out / 10 {
                10
            } else {
                0
            })
            .min(100);
        let summary = format!(
            "{} sent {} to {} addresses of {} within {} min (the busiest took {}), latest to {}",
            key.inside,
            human_bytes(total),
            addresses,
            group,
            self.window_ms / 60_000,
            human_bytes(busiest),
            super::describe_destination(key.outside, key.outside_port, destination),
        );
        let mut finding = Finding::for_conversation(NAME, event, step as u8, score, summary);
        finding.bytes_out = total;
        finding.bytes_in = window.evidence.iter().map(|e| e.bytes_in).sum();
        finding.flows = addresses as u64;
        finding.first_ms = window.first_ms.max(window_start);
        finding.last_ms = record.end_ms.max(finding.first_ms);
        finding.attack = ATTACK;
        finding.explain = Some(Box::new(Explanation {
            baseline: Some(Baseline {
                metric: "bytes_out_per_network_per_window",
                observed: total,
                threshold: min,
                median: None,
                mad: None,
                peak: Some(busiest),
                hours: None,
                ratio: total as f64 / min as f64,
            }),
            host_role: None,
            evidence: window.evidence.to_vec(),
        }));
        findings.push(finding);
        Some(())
    }
}

impl Rule for SpreadEgress {
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
        if record.bytes_out == 0 {
            return;
        }
        if let Some(asn) = destination.and_then(|d| d.asn) {
            self.windows
                .prefetch(&(record.inside, Group::Asn(asn.get())));
        }
        if let Some(cc) = destination.and_then(|d| d.country) {
            self.windows.prefetch(&(record.inside, Group::Country(cc)));
        }
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let record = event.record;
        if record.bytes_out == 0 || event.conversation.initiator() == Initiator::Outside {
            return;
        }
        let destination = event.destination();
        if rule_allows(&self.allow, event.key, destination) {
            return;
        }
        let before = findings.len();
        if let Some(asn) = destination.asn {
            self.add(event, Group::Asn(asn.get()), findings);
        }
        if let Some(cc) = destination.country {
            self.add(event, Group::Country(cc), findings);
        }
        // One upload crossing for its network and its country is one alert: the network's.
        findings.truncate(findings.len().min(before + 1));
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
    use crate::flow::FlowTable;

    const T0: u64 = 1_710_230_400_000;
    const MB: u64 = 1_000_000;

    fn cloud() -> Destination {
        Destination {
            country: Some("US".parse().unwrap()),
            asn: std::num::NonZeroU32::new(16509),
            foreign: true,
            ..Destination::default()
        }
    }

    struct Harness {
        table: FlowTable,
        rule: SpreadEgress,
        findings: Vec<Finding>,
    }

    impl Harness {
        fn new(config: SpreadEgressConfig) -> Self {
            Harness {
                table: FlowTable::new(100_000, 1800, 3600),
                rule: SpreadEgress::new(&config),
                findings: Vec::new(),
            }
        }

        fn upload(&mut self, outside: &str, port: u16, bytes: u64, end_ms: u64, now_ms: u64) {
            let mut record = oriented(
                "10.10.3.4",
                port,
                outside,
                443,
                bytes,
                bytes / 100,
                end_ms - 60_000,
                end_ms,
            );
            record.outside_asn = 16509;
            feed(
                &mut self.rule,
                &mut self.table,
                &record,
                cloud(),
                now_ms,
                false,
                &mut self.findings,
            );
        }
    }

    #[test]
    fn twenty_uploads_to_one_provider_are_one_upload() {
        let mut h = Harness::new(SpreadEgressConfig::default());
        for i in 0..20u64 {
            let at = T0 + i * 150_000;
            h.upload(&format!("52.94.{i}.10"), 50_000 + i as u16, 30 * MB, at, at);
        }
        let steps: Vec<(u8, u64)> = h.findings.iter().map(|f| (f.step, f.bytes_out)).collect();
        assert_eq!(
            steps,
            vec![(0, 120 * MB), (1, 510 * MB)],
            "100 MB reached at the 4th, 500 MB at the 17th"
        );
        let f = &h.findings[1];
        assert_eq!((f.rule, f.flows), (NAME, 17));
        assert_eq!(f.attack, ATTACK);
        assert!(
            f.summary
                .contains("to 17 addresses of network AS16509 within 60 min"),
            "{}",
            f.summary
        );
        let explain = f.explain.as_ref().unwrap();
        assert_eq!(explain.evidence.len(), EVIDENCE);
        assert!(explain.evidence.iter().all(|e| e.bytes_out == 30 * MB));
        assert_eq!(explain.baseline.as_ref().unwrap().peak, Some(30 * MB));
    }

    #[test]
    fn one_address_is_bulk_egress_not_spread() {
        let mut h = Harness::new(SpreadEgressConfig::default());
        for i in 0..20u64 {
            let at = T0 + i * 150_000;
            h.upload("52.94.1.10", 50_000 + i as u16, 30 * MB, at, at);
        }
        // A few small uploads elsewhere in the same network change nothing.
        h.upload(
            "52.94.2.10",
            40_000,
            10 * MB,
            T0 + 3_000_000,
            T0 + 3_000_000,
        );
        assert!(h.findings.is_empty(), "{:?}", h.findings);
    }

    #[test]
    fn the_hour_slides_and_late_records_count_in_their_own_time() {
        let mut h = Harness::new(SpreadEgressConfig::default());
        // 60 MB now, 50 MB 70 min later: never 100 MB within an hour.
        h.upload("52.94.1.10", 50_000, 60 * MB, T0, T0);
        h.upload(
            "52.94.2.10",
            50_001,
            50 * MB,
            T0 + 70 * 60_000,
            T0 + 70 * 60_000,
        );
        assert!(h.findings.is_empty());
        // A record that ended 40 min ago, delivered late: it belongs to the hours from T0
        // (60 MB with it) and to the one ending now (50 MB with it); judged in the busier.
        h.upload(
            "52.94.3.10",
            50_002,
            50 * MB,
            T0 + 40 * 60_000,
            T0 + 80 * 60_000,
        );
        assert_eq!(h.findings.len(), 1);
        assert_eq!(h.findings[0].bytes_out, 110 * MB);
        assert_eq!(
            h.findings[0].first_ms,
            T0 - 60_000,
            "the first upload's start"
        );
        // Older than the ring (an hour and as much again): counted (once per window:
        // network and country), not added.
        h.upload(
            "52.94.4.10",
            50_003,
            50 * MB,
            T0 - 2 * 3_600_000,
            T0 + 80 * 60_000,
        );
        assert_eq!(h.rule.windows.too_late, 2);
        h.rule.on_tick(T0 + 10 * 3_600_000, &mut h.findings);
        assert!(h.rule.windows.is_empty());
    }

    #[test]
    fn servers_answering_and_the_allow_list_are_not_uploads() {
        let mut config = SpreadEgressConfig::default();
        config.allow.asns = vec![16509];
        let mut h = Harness::new(config);
        for i in 0..20u64 {
            h.upload(
                &format!("52.94.{i}.10"),
                50_000 + i as u16,
                30 * MB,
                T0 + i,
                T0 + i,
            );
        }
        assert!(h.findings.is_empty());
        let mut h = Harness::new(SpreadEgressConfig::default());
        for i in 0..20u64 {
            // The inside host serves port 443 to clients of the provider.
            let mut record = oriented(
                "10.10.3.4",
                443,
                &format!("52.94.{i}.10"),
                50_000,
                30 * MB,
                0,
                T0,
                T0 + i,
            );
            record.outside_asn = 16509;
            feed(
                &mut h.rule,
                &mut h.table,
                &record,
                cloud(),
                T0 + i,
                false,
                &mut h.findings,
            );
        }
        assert!(h.findings.is_empty());
        assert!(h.rule.windows.is_empty());
    }

    #[test]
    fn windows_are_capped() {
        let mut h = Harness::new(SpreadEgressConfig {
            max_windows: 10,
            ..SpreadEgressConfig::default()
        });
        for i in 0..200u64 {
            let mut record = oriented(
                &format!("10.10.{}.{}", i / 200, i % 200 + 1),
                50_000,
                "52.94.1.1",
                443,
                1000,
                0,
                T0,
                T0 + i,
            );
            record.outside_asn = 16509;
            feed(
                &mut h.rule,
                &mut h.table,
                &record,
                cloud(),
                T0 + i,
                false,
                &mut h.findings,
            );
        }
        assert!(h.rule.windows.len() <= 10);
        assert!(h.rule.windows.evicted >= 380, "{}", h.rule.windows.evicted);
    }
}
