//! detect: `new_destination`, an inside host uploading (default 1 MB) to a country or an
//! autonomous system it never sent to while its baseline was learned. Learning lasts
//! `learning_s` of event time (default 24 h) from the first record this rule saw, for all
//! hosts at once; during it each host's destination countries and ASNs are remembered:
//! those it uploaded to and those of the conversations it opened (a place a host visits
//! every day is not new to it, even when a sampled export saw only the download). A record
//! belongs to learning by its own time, so one delivered late still teaches.
//! After it, upload to anything outside a host's baseline is summed per new country and per
//! new ASN, across conversations, and reported once it reaches `min_bytes_out`.
//!
//! Trade-offs, all towards fewer false alarms:
//! - A host first seen after learning has no baseline and is never reported (a new laptop
//!   would otherwise alert on everything it does).
//! - A host that sent to more countries (64) or ASNs (256) than a baseline keeps talks to
//!   everyone: no country (or ASN) is news for it.
//! - A new country or ASN that sees no upload for a day is forgotten, reported or not, so a
//!   trickle over weeks never adds up and a destination still in use may be reported again
//!   (once the suppression cooldown allows).
//! - The baseline is not re-learned: after a long run, new-but-legitimate destinations are
//!   silenced with the rule's allow-list.

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;

use super::{
    Finding, ParsedState, RecordEvent, Rule, describe_destination, human_bytes, log_score,
    rule_allows,
};
use crate::enrich::AllowList;
use crate::enrich::{Allow, CountryCode};
use crate::flow::{Initiator, Update};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewDestinationConfig {
    pub enabled: bool,
    /// Event time from the first record during which each host's usual countries and
    /// networks are learned.
    pub learning_s: u64,
    /// Upload to a never-seen country or ASN that is reported after learning.
    pub min_bytes_out: u64,
    /// Hosts whose destinations are remembered at most (the rest are not baselined).
    pub max_hosts: usize,
    pub allow: AllowList,
}

impl Default for NewDestinationConfig {
    fn default() -> Self {
        NewDestinationConfig {
            enabled: true,
            learning_s: 24 * 3600,
            min_bytes_out: 1_000_000,
            max_hosts: 200_000,
            allow: AllowList::default(),
        }
    }
}

pub const NAME: &str = "new_destination";
/// Exfiltration over an alternative protocol (to somewhere new).
const ATTACK: &[&str] = &["T1048"];
/// Countries and ASNs a baseline keeps per host; beyond them the host "talks to everyone".
const MAX_COUNTRIES: usize = 64;
const MAX_ASNS: usize = 256;
/// New countries and ASNs tracked per host after learning; more are counted and ignored.
const MAX_NOVEL: usize = 32;
/// A new country or ASN without upload for this long is forgotten.
const NOVEL_IDLE_MS: u64 = 24 * 3_600_000;
/// How often (event time) idle novelties are swept.
const SWEEP_MS: u64 = 3_600_000;

/// Something a host had not sent to while learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Novelty {
    Country(CountryCode),
    Asn(u32),
}

impl std::fmt::Display for Novelty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Novelty::Country(cc) => write!(f, "country {cc}"),
            Novelty::Asn(asn) => write!(f, "network AS{asn}"),
        }
    }
}

/// Upload to one novelty since learning ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Novel {
    what: Novelty,
    bytes_out: u64,
    last_ms: u64,
    reported: bool,
}

/// One host's usual destinations, and its upload to unusual ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Baseline {
    countries: Vec<CountryCode>,
    /// Sorted, for binary search.
    asns: Vec<u32>,
    /// The host sent to more countries than `MAX_COUNTRIES` while learning.
    countries_full: bool,
    asns_full: bool,
    novel: Vec<Novel>,
}

impl Baseline {
    fn learn(&mut self, country: Option<CountryCode>, asn: Option<u32>) {
        if let Some(cc) = country.filter(|cc| !self.countries.contains(cc)) {
            if self.countries.len() < MAX_COUNTRIES {
                self.countries.push(cc);
            } else {
                self.countries_full = true;
            }
        }
        if let Some(asn) = asn
            && let Err(at) = self.asns.binary_search(&asn)
        {
            if self.asns.len() < MAX_ASNS {
                self.asns.insert(at, asn);
            } else {
                self.asns_full = true;
            }
        }
    }

    /// Within the bounds `learn` keeps (a saved baseline is not trusted to be).
    fn bounded(mut self) -> Self {
        self.countries.truncate(MAX_COUNTRIES);
        self.asns.sort_unstable();
        self.asns.dedup();
        self.asns.truncate(MAX_ASNS);
        self.novel.truncate(MAX_NOVEL);
        self
    }

    fn is_new(&self, what: Novelty) -> bool {
        match what {
            Novelty::Country(cc) => !self.countries_full && !self.countries.contains(&cc),
            Novelty::Asn(asn) => !self.asns_full && self.asns.binary_search(&asn).is_err(),
        }
    }
}

pub struct NewDestination {
    learning_ms: u64,
    min_bytes_out: u64,
    max_hosts: usize,
    allow: Allow,
    /// End of learning in event time, set by the first record.
    learning_until_ms: Option<u64>,
    hosts: HashMap<IpAddr, Baseline>,
    /// Conversations learned from hosts that found no room (`max_hosts`): those hosts have no
    /// baseline and are never reported.
    pub conversations_not_baselined: u64,
    /// New countries or ASNs not tracked because their host tracked `MAX_NOVEL` already.
    pub novelties_dropped: u64,
    last_sweep_ms: u64,
}

impl NewDestination {
    pub fn new(config: &NewDestinationConfig) -> Self {
        NewDestination {
            learning_ms: config.learning_s.saturating_mul(1000),
            min_bytes_out: config.min_bytes_out.max(1),
            max_hosts: config.max_hosts,
            allow: Allow::new(&config.allow),
            learning_until_ms: None,
            hosts: HashMap::new(),
            conversations_not_baselined: 0,
            novelties_dropped: 0,
            last_sweep_ms: 0,
        }
    }

    fn learn(&mut self, event: &RecordEvent<'_>) {
        let destination = event.destination();
        let host = event.key.inside;
        if self.hosts.len() >= self.max_hosts && !self.hosts.contains_key(&host) {
            self.conversations_not_baselined += 1;
            return;
        }
        // A host sending only to unknown places still gets a baseline (an empty one).
        self.hosts
            .entry(host)
            .or_default()
            .learn(destination.country, destination.asn.map(|asn| asn.get()));
    }
}

impl Rule for NewDestination {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "conversations_not_baselined",
                self.conversations_not_baselined,
            ),
            ("novelties_dropped", self.novelties_dropped),
        ]
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let learning_until = *self
            .learning_until_ms
            .get_or_insert(event.now_ms.saturating_add(self.learning_ms));
        let record = event.record;
        let opened = event.conversation.initiator() == Initiator::Inside;
        // Learning is judged on the record's own time: a record of the learning day that
        // its exporter delivers late still teaches the baseline.
        let learning = record.end_ms.max(record.start_ms) < learning_until;
        if record.bytes_out == 0 && !(learning && opened && event.update == Update::Created) {
            // Only what a host sends is judged.
            return;
        }
        let destination = event.destination();
        if rule_allows(&self.allow, event.key, destination) {
            return;
        }
        if learning {
            // A conversation's destination never changes: learn it from its first record
            // when the host opened it (a sampled export may carry only the download of a
            // visit), else from its first upload, not from every record.
            if event.update == Update::Created || event.conversation.bytes_out == record.bytes_out {
                self.learn(event);
            }
            return;
        }
        let Some(baseline) = self.hosts.get_mut(&event.key.inside) else {
            return;
        };
        let candidates = [
            destination.country.map(Novelty::Country),
            destination.asn.map(|asn| Novelty::Asn(asn.get())),
        ];
        let mut crossed: Vec<(Novelty, u64)> = Vec::new();
        for what in candidates.into_iter().flatten() {
            if !baseline.is_new(what) {
                continue;
            }
            let novel = match baseline.novel.iter().position(|n| n.what == what) {
                Some(at) => &mut baseline.novel[at],
                None if baseline.novel.len() < MAX_NOVEL => {
                    baseline.novel.push(Novel {
                        what,
                        bytes_out: 0,
                        last_ms: 0,
                        reported: false,
                    });
                    baseline.novel.last_mut().expect("just pushed")
                }
                None => {
                    self.novelties_dropped += 1;
                    continue;
                }
            };
            novel.bytes_out = novel.bytes_out.saturating_add(record.bytes_out);
            novel.last_ms = novel.last_ms.max(event.now_ms);
            if !novel.reported && novel.bytes_out >= self.min_bytes_out {
                novel.reported = true;
                crossed.push((what, novel.bytes_out));
            }
        }
        let Some(&(_, bytes_out)) = crossed.iter().max_by_key(|(_, bytes)| *bytes) else {
            return;
        };
        let what: Vec<String> = crossed.iter().map(|(what, _)| what.to_string()).collect();
        let summary = format!(
            "{} sent {} to {}, absent from its {} baseline, latest to {}",
            event.key.inside,
            human_bytes(bytes_out),
            what.join(" and "),
            human_hours(self.learning_ms),
            describe_destination(event.key.outside, event.key.outside_port, destination),
        );
        let score = log_score(bytes_out, self.min_bytes_out, 50.0, 15.0)
            .saturating_add(if destination.foreign { 10 } else { 0 })
            .min(100);
        // Counters are the conversation's, but the upload is what the rule judged: the sum
        // to the new place over every conversation since learning.
        let mut finding =
            Finding::for_conversation(NAME, event, 0, score, summary).with_attack(ATTACK);
        finding.bytes_out = bytes_out;
        findings.push(finding);
    }

    /// The end of learning and every host's baseline: what a replay of recent records
    /// cannot rebuild (the learning day may be long past).
    fn save_state(&self) -> Option<serde_json::Value> {
        let mut hosts: Vec<(&IpAddr, &Baseline)> = self.hosts.iter().collect();
        hosts.sort_by_key(|h| *h.0);
        Some(serde_json::json!({
            "learning_until_ms": self.learning_until_ms,
            "hosts": hosts,
        }))
    }

    /// The baselines copied, encoded later as `save_state` saves them.
    fn snapshot_state(&self) -> Option<super::StateSnapshot> {
        #[derive(Serialize)]
        struct Saved<'a> {
            learning_until_ms: Option<u64>,
            hosts: &'a [(IpAddr, Baseline)],
        }
        let learning_until_ms = self.learning_until_ms;
        let mut sorted: Vec<(&IpAddr, &Baseline)> = self.hosts.iter().collect();
        sorted.sort_unstable_by_key(|h| *h.0);
        let hosts: Vec<(IpAddr, Baseline)> =
            sorted.into_iter().map(|(h, b)| (*h, b.clone())).collect();
        Some(Box::new(move |out| {
            serde_json::to_writer(
                out,
                &Saved {
                    learning_until_ms,
                    hosts: &hosts,
                },
            )
        }))
    }

    fn load_state(&mut self, state: serde_json::Value, keep: &dyn Fn(IpAddr) -> bool) -> usize {
        serde_json::from_value::<SavedBaselines>(state).map_or(0, |saved| self.take(saved, keep))
    }

    fn load_parsed(&mut self, state: ParsedState, keep: &dyn Fn(IpAddr) -> bool) -> usize {
        state
            .downcast::<SavedBaselines>()
            .map_or(0, |saved| self.take(*saved, keep))
    }

    /// Forgets new countries and ASNs idle for a day (checked hourly).
    fn on_tick(&mut self, now_ms: u64, _findings: &mut Vec<Finding>) {
        if now_ms < self.last_sweep_ms.saturating_add(SWEEP_MS) {
            return;
        }
        self.last_sweep_ms = now_ms;
        let horizon = now_ms.saturating_sub(NOVEL_IDLE_MS);
        for baseline in self.hosts.values_mut() {
            baseline.novel.retain(|n| n.last_ms >= horizon);
        }
    }
}

/// A learning period for summaries: "24 h", "1.5 h", "30 min".
fn human_hours(ms: u64) -> String {
    if ms < 3_600_000 {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{} h", ms / 3_600_000)
    } else {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    }
}

/// What [`NewDestination`] saves (`save_state`, `snapshot_state`), as it is read back.
#[derive(Deserialize)]
pub(super) struct SavedBaselines {
    learning_until_ms: Option<u64>,
    hosts: Vec<(IpAddr, Baseline)>,
}

impl NewDestination {
    /// Takes the saved end of learning, and each kept host's saved baseline in place of
    /// its own, within `max_hosts`; returns how many baselines.
    fn take(&mut self, saved: SavedBaselines, keep: &dyn Fn(IpAddr) -> bool) -> usize {
        if saved.learning_until_ms.is_some() {
            self.learning_until_ms = saved.learning_until_ms;
        }
        let mut restored = 0;
        for (host, baseline) in saved.hosts {
            if keep(host) && (self.hosts.contains_key(&host) || self.hosts.len() < self.max_hosts) {
                self.hosts.insert(host, baseline.bounded());
                restored += 1;
            }
        }
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::feed;
    use crate::enrich::Destination;
    use crate::flow::{FlowTable, Oriented};

    const H: u64 = 3_600_000;
    /// 2024-03-12 08:00 UTC.
    const T0: u64 = 1_710_230_400_000;

    struct Harness {
        table: FlowTable,
        rule: NewDestination,
        findings: Vec<Finding>,
    }

    impl Harness {
        fn new(config: NewDestinationConfig) -> Self {
            Harness {
                table: FlowTable::new(100_000, 1800, 0),
                rule: NewDestination::new(&config),
                findings: Vec::new(),
            }
        }

        /// An upload of `bytes` from `inside` to `outside:443` ending at `at`, the outside
        /// being in `country` (foreign unless NL) and `asn`.
        fn upload(
            &mut self,
            inside: &str,
            outside: &str,
            country: Option<&str>,
            asn: Option<u32>,
            bytes: u64,
            at: u64,
        ) {
            self.record(inside, outside, country, asn, (bytes, 0), at, at);
        }

        /// A record of `bytes` (out, in) of `inside:50000 -> outside:443` ending at `at`,
        /// delivered when the exporter's clock reads `now`.
        #[allow(clippy::too_many_arguments)]
        fn record(
            &mut self,
            inside: &str,
            outside: &str,
            country: Option<&str>,
            asn: Option<u32>,
            (bytes, bytes_in): (u64, u64),
            at: u64,
            now: u64,
        ) {
            let country = country.map(|cc| cc.parse::<CountryCode>().unwrap());
            let destination = Destination {
                country,
                asn: asn.and_then(std::num::NonZeroU32::new),
                foreign: country.is_some_and(|cc| cc.as_str() != "NL"),
                ..Default::default()
            };
            let record = Oriented {
                inside: inside.parse().unwrap(),
                outside: outside.parse().unwrap(),
                inside_port: 50_000,
                outside_port: 443,
                proto: 6,
                bytes_out: bytes,
                bytes_in,
                packets_out: bytes.div_ceil(1400),
                packets_in: bytes_in.div_ceil(1400),
                start_ms: at.saturating_sub(1000),
                end_ms: at,
                outside_asn: asn.unwrap_or(0),
                exporter: "127.0.0.1".parse().unwrap(),
                tcp_flags: 0,
                from_inside: true,
                continues: false,
                ends: false,
                interfaces: Default::default(),
            };
            let findings = &mut self.findings;
            feed(
                &mut self.rule,
                &mut self.table,
                &record,
                destination,
                now,
                false,
                findings,
            );
        }
    }

    /// 10.10.1.5 learns NL (AS1136) and DE (AS3320) in its first hours.
    fn learned() -> Harness {
        let mut h = Harness::new(NewDestinationConfig::default());
        h.upload("10.10.1.5", "145.7.1.1", Some("NL"), Some(1136), 5000, T0);
        h.upload(
            "10.10.1.5",
            "80.150.1.1",
            Some("DE"),
            Some(3320),
            5000,
            T0 + H,
        );
        h
    }

    #[test]
    fn a_saved_baseline_and_end_of_learning_outlive_the_records_that_taught_them() {
        let h = learned();
        let saved = h.rule.save_state().unwrap();
        // A new owner that saw only later records: without the saved state its learning
        // would start at its first record and the upload below would teach, not alert.
        let mut later = Harness::new(NewDestinationConfig::default());
        later.upload(
            "10.10.1.5",
            "145.7.1.2",
            Some("NL"),
            Some(1136),
            5000,
            T0 + 30 * H,
        );
        assert_eq!(later.rule.load_state(saved.clone(), &|_| true), 1);
        // DE is known from the saved baseline, RU is new.
        later.upload(
            "10.10.1.5",
            "80.150.1.2",
            Some("DE"),
            Some(3320),
            2_000_000,
            T0 + 31 * H,
        );
        assert!(later.findings.is_empty(), "{:?}", later.findings);
        later.upload(
            "10.10.1.5",
            "5.255.255.77",
            Some("RU"),
            Some(13238),
            2_000_000,
            T0 + 31 * H,
        );
        assert_eq!(later.findings.len(), 1);
        assert_eq!(later.findings[0].rule, NAME);
        // Hosts `keep` refuses are not taken; garbage restores nothing.
        let mut other = Harness::new(NewDestinationConfig::default());
        assert_eq!(other.rule.load_state(saved, &|_| false), 0);
        assert_eq!(
            other
                .rule
                .load_state(serde_json::json!({"hosts": 3}), &|_| true),
            0
        );
    }

    #[test]
    fn nothing_is_new_while_learning() {
        let mut h = learned();
        // The scenarios' two hours: big uploads to new places, all within learning.
        h.upload(
            "10.10.1.5",
            "5.255.255.77",
            Some("RU"),
            Some(13238),
            600_000_000,
            T0 + 2 * H,
        );
        h.upload(
            "10.10.1.5",
            "39.156.66.10",
            Some("CN"),
            Some(9808),
            250_000_000,
            T0 + 24 * H - 1,
        );
        assert!(h.findings.is_empty());
    }

    #[test]
    fn a_new_country_after_learning_fires_at_the_threshold() {
        let mut h = learned();
        h.upload(
            "10.10.1.5",
            "80.150.1.2",
            Some("DE"),
            Some(3320),
            50_000_000,
            T0 + 25 * H,
        );
        assert!(h.findings.is_empty(), "DE and AS3320 are in the baseline");
        h.upload(
            "10.10.1.5",
            "39.156.66.10",
            Some("CN"),
            None,
            999_999,
            T0 + 25 * H,
        );
        assert!(h.findings.is_empty(), "one byte short");
        h.upload(
            "10.10.1.6",
            "39.156.66.10",
            Some("CN"),
            None,
            5_000_000,
            T0 + 25 * H,
        );
        assert!(
            h.findings.is_empty(),
            "10.10.1.6 was not seen while learning"
        );
        // Another address in the same new country: the upload adds up across conversations.
        h.upload(
            "10.10.1.5",
            "39.156.66.11",
            Some("CN"),
            None,
            1,
            T0 + 26 * H,
        );
        assert_eq!(h.findings.len(), 1);
        let f = &h.findings[0];
        assert_eq!(
            f.summary,
            "10.10.1.5 sent 1.0 MB to country CN, absent from its 24 h baseline, latest to 39.156.66.11:443 (CN)"
        );
        assert_eq!(
            (f.rule, f.step, f.score, f.bytes_out),
            (NAME, 0, 60, 1_000_000),
            "50, +10 foreign"
        );
        assert_eq!(f.attack, ATTACK);
        h.upload(
            "10.10.1.5",
            "39.156.66.11",
            Some("CN"),
            None,
            100_000_000,
            T0 + 27 * H,
        );
        assert_eq!(h.findings.len(), 1, "reported once");
    }

    #[test]
    fn a_new_network_in_a_known_country_fires_once_for_both_at_once() {
        let mut h = learned();
        h.upload(
            "10.10.1.5",
            "80.158.1.1",
            Some("DE"),
            Some(6805),
            10_000_000,
            T0 + 25 * H,
        );
        assert_eq!(h.findings.len(), 1);
        assert!(
            h.findings[0]
                .summary
                .starts_with("10.10.1.5 sent 10.0 MB to network AS6805, absent from")
        );
        assert_eq!(
            h.findings[0].score, 75,
            "50 + 15 for a tenfold, +10 foreign"
        );
        h.upload(
            "10.10.1.5",
            "5.255.255.77",
            Some("RU"),
            Some(13238),
            2_000_000,
            T0 + 25 * H,
        );
        assert_eq!(h.findings.len(), 2);
        assert!(
            h.findings[1]
                .summary
                .contains("to country RU and network AS13238, absent from")
        );
    }

    #[test]
    fn a_visit_seen_only_as_its_download_or_late_still_teaches() {
        let mut h = learned();
        // A sampled export kept only the answer of a visit to the US; a record of a visit
        // to JP ended within learning but came an hour late.
        let us = (Some("US"), Some(15169));
        h.record(
            "10.10.1.5",
            "142.250.1.1",
            us.0,
            us.1,
            (0, 800_000),
            T0 + 5 * H,
            T0 + 5 * H,
        );
        let late = T0 + 24 * H - 60_000;
        let jp = (Some("JP"), Some(2516));
        h.record(
            "10.10.1.5",
            "203.0.113.7",
            jp.0,
            jp.1,
            (3000, 0),
            late,
            late + H,
        );
        // Uploads there after learning are no news; to BR they are.
        h.upload(
            "10.10.1.5",
            "142.250.1.2",
            us.0,
            us.1,
            5_000_000,
            T0 + 30 * H,
        );
        h.upload(
            "10.10.1.5",
            "203.0.113.8",
            jp.0,
            jp.1,
            5_000_000,
            T0 + 30 * H,
        );
        assert!(h.findings.is_empty(), "{:?}", h.findings);
        h.upload(
            "10.10.1.5",
            "200.147.1.1",
            Some("BR"),
            Some(7162),
            5_000_000,
            T0 + 30 * H,
        );
        assert_eq!(h.findings.len(), 1, "{:?}", h.findings);
        assert!(
            h.findings[0].summary.contains("BR"),
            "{}",
            h.findings[0].summary
        );
    }

    #[test]
    fn learning_starts_at_the_first_record_for_every_host() {
        let mut h = learned();
        // 10.10.1.7 shows up 23 h in: an hour of learning left, then it has a baseline.
        h.upload(
            "10.10.1.7",
            "145.7.1.9",
            Some("NL"),
            Some(1136),
            100,
            T0 + 23 * H,
        );
        h.upload(
            "10.10.1.7",
            "5.255.255.77",
            Some("RU"),
            Some(13238),
            2_000_000,
            T0 + 24 * H,
        );
        assert_eq!(h.findings.len(), 1);
        assert_eq!(h.findings[0].inside.to_string(), "10.10.1.7");
    }

    #[test]
    fn the_rules_allow_list_silences_it() {
        let mut config = NewDestinationConfig::default();
        config.allow.countries = vec!["RU".parse().unwrap()];
        let mut h = Harness::new(config);
        h.upload("10.10.1.5", "145.7.1.1", Some("NL"), None, 5000, T0);
        h.upload(
            "10.10.1.5",
            "5.255.255.77",
            Some("RU"),
            None,
            50_000_000,
            T0 + 25 * H,
        );
        assert!(h.findings.is_empty());
    }

    #[test]
    fn unknown_destinations_and_downloads_are_not_news() {
        let mut h = learned();
        h.upload(
            "10.10.1.5",
            "198.51.100.1",
            None,
            None,
            50_000_000,
            T0 + 25 * H,
        );
        h.upload(
            "10.10.1.5",
            "5.255.255.77",
            Some("RU"),
            None,
            0,
            T0 + 25 * H,
        );
        assert!(h.findings.is_empty());
    }

    #[test]
    fn hosts_and_baselines_are_capped() {
        let mut h = Harness::new(NewDestinationConfig {
            max_hosts: 2,
            ..NewDestinationConfig::default()
        });
        for host in ["10.10.1.1", "10.10.1.2", "10.10.1.3", "10.10.1.3"] {
            h.upload(host, "145.7.1.1", Some("NL"), Some(1136), 100, T0);
        }
        assert_eq!(
            (h.rule.hosts.len(), h.rule.conversations_not_baselined),
            (2, 1),
            "one conversation of 10.10.1.3, two records"
        );
        // A host that sent to 100 countries and 300 networks while learning talks to everyone.
        for i in 0..300u32 {
            let cc = [b'A' + (i / 26 % 26) as u8, b'A' + (i % 26) as u8];
            let cc = CountryCode::from_ascii(cc).unwrap();
            let outside = format!("100.64.{}.{}", i / 256, i % 256);
            h.upload(
                "10.10.1.1",
                &outside,
                Some(cc.as_str()),
                Some(64_512 + i),
                100,
                T0 + u64::from(i),
            );
        }
        let baseline = &h.rule.hosts[&"10.10.1.1".parse().unwrap()];
        assert_eq!(
            (baseline.countries.len(), baseline.asns.len()),
            (MAX_COUNTRIES, MAX_ASNS)
        );
        assert!(baseline.countries_full && baseline.asns_full);
        h.upload(
            "10.10.1.1",
            "5.255.255.77",
            Some("RU"),
            Some(13238),
            50_000_000,
            T0 + 25 * H,
        );
        assert!(h.findings.is_empty());
    }

    #[test]
    fn novelties_stay_bounded_and_idle_ones_are_forgotten() {
        let mut h = learned();
        for i in 0..100u32 {
            let outside = format!("100.65.{}.1", i);
            h.upload(
                "10.10.1.5",
                &outside,
                Some("DE"),
                Some(64_512 + i),
                10,
                T0 + 25 * H,
            );
        }
        let host: IpAddr = "10.10.1.5".parse().unwrap();
        assert_eq!(h.rule.hosts[&host].novel.len(), MAX_NOVEL);
        assert_eq!(h.rule.novelties_dropped, 100 - MAX_NOVEL as u64);
        h.rule.on_tick(T0 + 48 * H, &mut h.findings);
        assert_eq!(
            h.rule.hosts[&host].novel.len(),
            MAX_NOVEL,
            "idle for 23 h only"
        );
        h.rule.on_tick(T0 + 49 * H + 1, &mut h.findings);
        assert!(h.rule.hosts[&host].novel.is_empty());
        // Forgotten, so a later upload starts from zero.
        h.upload(
            "10.10.1.5",
            "100.65.0.1",
            Some("DE"),
            Some(64_512),
            999_999,
            T0 + 50 * H,
        );
        assert!(h.findings.is_empty());
    }

    #[test]
    fn hostile_counters_and_times_do_not_panic() {
        let mut h = Harness::new(NewDestinationConfig {
            learning_s: u64::MAX,
            ..NewDestinationConfig::default()
        });
        h.upload(
            "10.10.1.5",
            "145.7.1.1",
            Some("NL"),
            Some(1136),
            u64::MAX,
            u64::MAX,
        );
        let mut h = Harness::new(NewDestinationConfig {
            learning_s: 0,
            ..NewDestinationConfig::default()
        });
        h.upload(
            "10.10.1.5",
            "145.7.1.1",
            Some("NL"),
            Some(1136),
            u64::MAX,
            0,
        );
        h.upload(
            "10.10.1.5",
            "5.255.255.77",
            Some("RU"),
            Some(13238),
            u64::MAX,
            0,
        );
        h.upload(
            "10.10.1.5",
            "5.255.255.78",
            Some("RU"),
            Some(13238),
            u64::MAX,
            u64::MAX,
        );
        h.rule.on_tick(u64::MAX, &mut h.findings);
        // What is checked is that none of it panics (the learning clock and the byte sums
        // saturate); the records are all at learning's edge, so nothing is reported.
        assert_eq!(h.findings.len(), 0);
    }

    #[test]
    fn learning_periods_in_words() {
        assert_eq!(human_hours(24 * H), "24 h");
        assert_eq!(human_hours(H + H / 2), "1.5 h");
        assert_eq!(human_hours(H / 2), "30 min");
    }
}
