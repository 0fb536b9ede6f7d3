//! detect: `watchlist`, real traffic (default 100 kB, both directions) between an inside
//! host and a watch-listed country or a threat-intel network, summed over all of their
//! conversations.

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;

use super::bounded::evict_stalest;
use super::{
    Finding, RecordEvent, Rule, describe_destination, human_bytes, log_score, rule_allows,
};
use crate::enrich::Allow;
use crate::enrich::AllowList;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchlistConfig {
    pub enabled: bool,
    /// Traffic (both directions) between a host and a listed destination before it is reported.
    pub min_bytes: u64,
    pub allow: AllowList,
}

impl Default for WatchlistConfig {
    fn default() -> Self {
        WatchlistConfig {
            enabled: true,
            min_bytes: 100_000,
            allow: AllowList::default(),
        }
    }
}

pub const NAME: &str = "watchlist";
const ATTACK: &[&str] = &["T1041"];
/// A pair quiet this long is forgotten.
const FORGET_AFTER_MS: u64 = 24 * 3600 * 1000;
/// What one pair may cost in its map: key and counters, counted twice (a map just grown
/// is half full).
const BYTES_PER_PAIR: u64 = 2 * (std::mem::size_of::<((IpAddr, IpAddr), Exchanged)>() as u64 + 1);

#[derive(Debug, Default, Clone, Copy)]
struct Exchanged {
    bytes_out: u64,
    bytes_in: u64,
    packets_out: u64,
    packets_in: u64,
    flows: u64,
    first_ms: u64,
    last_ms: u64,
}

pub struct Watchlist {
    min_bytes: u64,
    allow: Allow,
    pairs: HashMap<(IpAddr, IpAddr), Exchanged>,
    /// Pairs held at most (`limit_state`); at it, the stalest tenth goes.
    max_pairs: usize,
    /// Pairs evicted to stay within `max_pairs`.
    pairs_evicted: u64,
}

impl Watchlist {
    pub fn new(config: &WatchlistConfig) -> Self {
        Watchlist {
            min_bytes: config.min_bytes.max(1),
            allow: Allow::new(&config.allow),
            pairs: HashMap::new(),
            max_pairs: usize::MAX,
            pairs_evicted: 0,
        }
    }
}

impl Rule for Watchlist {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let destination = event.destination();
        if !destination.watched || rule_allows(&self.allow, event.key, destination) {
            return;
        }
        let r = event.record;
        if self.pairs.len() >= self.max_pairs && !self.pairs.contains_key(&(r.inside, r.outside)) {
            self.pairs_evicted += evict_stalest(&mut self.pairs, |p| p.last_ms, |_, _| {}) as u64;
        }
        let pair = self
            .pairs
            .entry((r.inside, r.outside))
            .or_insert(Exchanged {
                first_ms: r.start_ms,
                ..Default::default()
            });
        let before = pair.bytes_out + pair.bytes_in;
        pair.bytes_out += r.bytes_out;
        pair.bytes_in += r.bytes_in;
        pair.packets_out += r.packets_out;
        pair.packets_in += r.packets_in;
        pair.flows += 1;
        pair.first_ms = pair.first_ms.min(r.start_ms);
        pair.last_ms = pair.last_ms.max(r.end_ms);
        let total = pair.bytes_out + pair.bytes_in;
        // Report on crossing the threshold, and on each tenfold after it.
        let crossed = |mark: u64| before < mark && total >= mark;
        let step = (0..4u32)
            .rev()
            .find(|&s| crossed(self.min_bytes.saturating_mul(10u64.pow(s))));
        let Some(step) = step else { return };
        let what = match destination.country {
            Some(cc) if destination.foreign || !cc.as_str().is_empty() => {
                format!("watch-listed {cc}")
            }
            _ => "a threat-intel network".to_string(),
        };
        let summary = format!(
            "{} exchanged {} ({} out) with {}, {what}",
            r.inside,
            human_bytes(total),
            human_bytes(pair.bytes_out),
            describe_destination(r.outside, event.key.outside_port, destination),
        );
        let score = log_score(total, self.min_bytes, 55.0, 15.0);
        let p = *pair;
        let mut finding = Finding::for_conversation(NAME, event, step as u8, score, summary);
        (
            finding.bytes_out,
            finding.bytes_in,
            finding.packets_out,
            finding.packets_in,
        ) = (p.bytes_out, p.bytes_in, p.packets_out, p.packets_in);
        (finding.flows, finding.first_ms, finding.last_ms) = (p.flows, p.first_ms, p.last_ms);
        findings.push(finding.with_attack(ATTACK));
    }

    fn on_tick(&mut self, now_ms: u64, _findings: &mut Vec<Finding>) {
        self.pairs
            .retain(|_, p| p.last_ms.saturating_add(FORGET_AFTER_MS) > now_ms);
    }

    fn limit_state(&mut self, max_bytes: u64) {
        self.max_pairs = usize::try_from(max_bytes / BYTES_PER_PAIR)
            .unwrap_or(usize::MAX)
            .max(1);
    }

    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        vec![("pairs_evicted", self.pairs_evicted)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::{event_with, oriented};
    use crate::enrich::Destination;

    #[test]
    fn fires_once_the_pair_exchanged_enough_across_conversations() {
        let mut r = Watchlist::new(&WatchlistConfig {
            min_bytes: 1000,
            ..WatchlistConfig::default()
        });
        let watched = Destination {
            country: Some("KP".parse().unwrap()),
            watched: true,
            foreign: true,
            ..Default::default()
        };
        let mut findings = Vec::new();
        for port in 0..3u16 {
            let o = oriented(
                "10.0.0.1",
                6000 + port,
                "175.45.176.1",
                443,
                300,
                100,
                0,
                1000,
            );
            r.on_record(&event_with(&o, 1000, watched), &mut findings);
        }
        assert_eq!(
            findings.len(),
            1,
            "400 + 400 + 400 crosses 1000 on the third"
        );
        assert_eq!(
            (
                findings[0].bytes_out,
                findings[0].bytes_in,
                findings[0].flows
            ),
            (900, 300, 3)
        );
        assert!(
            findings[0].summary.contains("watch-listed KP"),
            "{}",
            findings[0].summary
        );
    }

    #[test]
    fn pairs_stay_within_their_memory() {
        let mut r = Watchlist::new(&WatchlistConfig::default());
        r.limit_state(50 * BYTES_PER_PAIR);
        let watched = Destination {
            watched: true,
            ..Default::default()
        };
        let mut findings = Vec::new();
        for i in 0..500u64 {
            let outside = format!("175.45.{}.{}", i / 200, i % 200 + 1);
            let o = oriented("10.0.0.1", 6000, &outside, 443, 10, 0, i, i + 1);
            r.on_record(&event_with(&o, i + 1, watched), &mut findings);
            assert!(r.pairs.len() <= 50);
        }
        assert!(r.pairs_evicted >= 450, "{}", r.pairs_evicted);
        assert_eq!(r.state_dropped(), vec![("pairs_evicted", r.pairs_evicted)]);
    }

    #[test]
    fn unlisted_destinations_are_ignored() {
        let mut r = Watchlist::new(&WatchlistConfig {
            min_bytes: 1,
            ..WatchlistConfig::default()
        });
        let mut findings = Vec::new();
        let o = oriented("10.0.0.1", 6000, "5.255.255.77", 443, 300_000, 0, 0, 1000);
        r.on_record(&event_with(&o, 1000, Destination::default()), &mut findings);
        assert!(findings.is_empty());
        assert!(r.pairs.is_empty());
    }
}
