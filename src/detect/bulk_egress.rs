//! detect: `bulk_egress`, an inside host sending a lot (default 100 MB) to one outside
//! address within a sliding hour, whatever the ports and connections (a record longer than
//! the hour counts an even share of its bytes: `window::within_window`). Downloads never
//! count, nor what an inside server sends on connections opened from outside (its
//! answers to clients, [`Initiator::Outside`]). Severity rises with the volume (new ladder steps at 5x, 10x and 100x the
//! threshold), a foreign destination, and out/in asymmetry. A UDP pair that brings back at
//! least half of what it sends (a video call's symmetric media) is not an upload: its
//! findings wait for the next tick, when the reply direction's records are in.

use std::collections::VecDeque;

use std::hash::{BuildHasher, Hasher};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::window::within_window;
use super::{
    Finding, RecordEvent, Rule, describe_destination, human_bytes, log_score, rule_allows,
};
use crate::enrich::{Allow, AllowList, Destination};
use crate::flow::{Initiator, Oriented};
use crate::prefetch::prefetch;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkEgressConfig {
    pub enabled: bool,
    /// Upload from one inside host to one outside address within `window_s`.
    pub min_bytes_out: u64,
    pub window_s: u64,
    pub allow: AllowList,
}

impl Default for BulkEgressConfig {
    fn default() -> Self {
        BulkEgressConfig {
            enabled: true,
            min_bytes_out: 100_000_000,
            window_s: 3600,
            allow: AllowList::default(),
        }
    }
}

pub const NAME: &str = "bulk_egress";
/// Exfiltration over an alternative protocol; over a web service when the port is web.
const ATTACK: &[&str] = &["T1048"];
/// A UDP reply record of at least `min_bytes_out / MEDIA_REPLY_SHARE` (1.5 MB at the default
/// 100 MB) that comes before any upload of its pair opens the pair's window.
const MEDIA_REPLY_SHARE: u64 = 64;
const ATTACK_WEB: &[&str] = &["T1048", "T1567"];
/// Multiples of the threshold at which the alert escalates.
const LADDER: [u64; 4] = [1, 5, 10, 100];
/// Uploads are summed per minute: a window keeps at most `window_s / 60 + 1` minutes.
const BUCKET_MS: u64 = 60_000;

/// One pair's sliding window, laid out for the record path: every record finds its pair
/// and updates the newest minute in the first cache line (an upload touches nothing else);
/// the reply side and the older minutes are in the second.
#[derive(Debug)]
#[repr(C, align(64))]
struct Window {
    // First line: 64 bytes.
    inside: u128,
    outside: u128,
    /// Minutes since the epoch of the newest minute held, and of the oldest.
    newest_minute: u32,
    oldest_minute: u32,
    /// Records in the window (saturating).
    flows: u32,
    /// The highest ladder step reported while the window stayed over the threshold, plus
    /// one (0: none): a finding is made only when a higher one is reached.
    reported: u8,
    newest_out: u64,
    /// Uploads in the window, the newest minute's included.
    bytes_out: u64,
    // Second line.
    newest_in: u64,
    bytes_in: u64,
    first_ms: u64,
    /// The older minutes (minute, bytes out, bytes in, records), oldest first.
    older: VecDeque<(u32, u64, u64, u32)>,
}

/// An address as a window stores it: IPv4 as its IPv4-mapped IPv6 twin (one host).
fn address_bits(address: std::net::IpAddr) -> u128 {
    match address {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        std::net::IpAddr::V6(v6) => v6.to_bits(),
    }
}

fn pair_hash(state: &RandomState, inside: u128, outside: u128) -> u64 {
    let mut hasher = state.build_hasher();
    hasher.write_u128(inside);
    hasher.write_u128(outside);
    hasher.finish()
}

fn minute_of(at_ms: u64) -> u32 {
    u32::try_from(at_ms / BUCKET_MS).unwrap_or(u32::MAX)
}

impl Window {
    fn new(inside: u128, outside: u128, first_ms: u64) -> Window {
        Window {
            inside,
            outside,
            newest_minute: 0,
            oldest_minute: 0,
            flows: 0,
            reported: 0,
            newest_out: 0,
            bytes_out: 0,
            newest_in: 0,
            bytes_in: 0,
            first_ms,
            older: VecDeque::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.flows == 0 && self.newest_minute == 0
    }

    fn add(&mut self, at_ms: u64, bytes_out: u64, bytes_in: u64) {
        let minute = minute_of(at_ms);
        if self.is_empty() {
            (self.newest_minute, self.oldest_minute) = (minute, minute);
        } else if minute > self.newest_minute {
            // Late records join the newest minute: close enough for an hour's window.
            let flows = self.flows - self.older.iter().map(|m| m.3).sum::<u32>();
            let closed = (self.newest_minute, self.newest_out, self.newest_in, flows);
            self.older.push_back(closed);
            (self.newest_minute, self.newest_out, self.newest_in) = (minute, 0, 0);
        }
        self.newest_out += bytes_out;
        self.bytes_out += bytes_out;
        if bytes_in > 0 {
            self.newest_in += bytes_in;
            self.bytes_in += bytes_in;
        }
        self.flows = self.flows.saturating_add(1);
    }

    fn slide(&mut self, now_ms: u64, window_ms: u64) {
        let horizon = now_ms.saturating_sub(window_ms);
        let gone = |minute: u32| (u64::from(minute) + 1) * BUCKET_MS <= horizon;
        if !gone(self.oldest_minute) {
            return;
        }
        while let Some(&(minute, out, inn, flows)) = self.older.front() {
            if !gone(minute) {
                break;
            }
            self.older.pop_front();
            self.bytes_out -= out;
            self.bytes_in -= inn;
            self.flows = self.flows.saturating_sub(flows);
        }
        match self.older.front() {
            Some(&(minute, ..)) => self.oldest_minute = minute,
            None if gone(self.newest_minute) => {
                let first_ms = self.first_ms;
                *self = Window::new(self.inside, self.outside, first_ms);
            }
            None => self.oldest_minute = self.newest_minute,
        }
    }

    /// Forgets what was reported once the window fell below `threshold`: a new burst is
    /// news again.
    fn rearm_below(&mut self, threshold: u64) {
        if self.bytes_out < threshold {
            self.reported = 0;
        }
    }
}

/// What one window may cost: its slot in the table, counted twice (a table just grown is
/// half full), and each older minute in its deque likewise twice (a deque doubles).
const BYTES_PER_WINDOW: u64 = 2 * std::mem::size_of::<Window>() as u64 + 2;
const BYTES_PER_MINUTE: u64 = 2 * std::mem::size_of::<(u32, u64, u64, u32)>() as u64;

pub struct BulkEgress {
    min_bytes_out: u64,
    window_ms: u64,
    allow: Allow,
    windows: HashTable<Window>,
    hasher: RandomState,
    /// The memory the windows may take (`limit_state`); at it, the stalest tenth goes.
    max_bytes: u64,
    /// Older minutes held by all windows, for the memory they take.
    stored_minutes: u64,
    /// Windows evicted to stay within `max_bytes`.
    windows_evicted: u64,
    /// How far behind a tick records may still arrive (`allow_lateness`).
    lateness_ms: u64,
    /// UDP findings (and their pair) waiting for the next tick: a pair that brought back at
    /// least half what it sent by then is media (a call), not an upload. Exporters send the
    /// reply direction's record right after the upload's.
    pending: Vec<(u128, u128, Finding)>,
}

impl BulkEgress {
    pub fn new(config: &BulkEgressConfig) -> Self {
        BulkEgress {
            min_bytes_out: config.min_bytes_out.max(1),
            window_ms: config.window_s.saturating_mul(1000),
            allow: Allow::new(&config.allow),
            windows: HashTable::new(),
            hasher: RandomState::default(),
            max_bytes: u64::MAX,
            stored_minutes: 0,
            windows_evicted: 0,
            lateness_ms: 0,
            pending: Vec::new(),
        }
    }

    /// The memory the windows take, as `limit_state` bounds it.
    fn state_bytes(&self) -> u64 {
        (self.windows.len() as u64)
            .saturating_mul(BYTES_PER_WINDOW)
            .saturating_add(self.stored_minutes.saturating_mul(BYTES_PER_MINUTE))
    }

    /// Evicts the stalest tenth of the windows (at least one): the oldest newest minute
    /// first, ties by addresses, so the same input evicts the same windows every run.
    fn evict_stalest(&mut self) {
        let target = (self.windows.len() / 10).max(1);
        let mut ages: Vec<(u32, u128, u128)> = self
            .windows
            .iter()
            .map(|w| (w.newest_minute, w.inside, w.outside))
            .collect();
        if ages.is_empty() {
            return;
        }
        let (_, &mut cut, _) = ages.select_nth_unstable(target - 1);
        let mut freed_minutes = 0;
        self.windows.retain(|w| {
            let evict = (w.newest_minute, w.inside, w.outside) <= cut;
            if evict {
                freed_minutes += w.older.len() as u64;
            }
            !evict
        });
        self.stored_minutes = self.stored_minutes.saturating_sub(freed_minutes);
        self.windows_evicted += target as u64;
    }

    /// The record's pair as windows store it, and its hash.
    fn key(&self, record: &Oriented) -> (u128, u128, u64) {
        let (inside, outside) = (address_bits(record.inside), address_bits(record.outside));
        (inside, outside, pair_hash(&self.hasher, inside, outside))
    }

    fn find(&self, record: &Oriented) -> Option<&Window> {
        let (inside, outside, hash) = self.key(record);
        self.windows
            .find(hash, |w| w.inside == inside && w.outside == outside)
    }

    fn find_mut(&mut self, record: &Oriented) -> Option<&mut Window> {
        let (inside, outside, hash) = self.key(record);
        self.windows
            .find_mut(hash, |w| w.inside == inside && w.outside == outside)
    }

    /// The record's window, made when it has none, and the count of older minutes all
    /// windows hold (to keep up to date).
    fn window(&mut self, record: &Oriented) -> (&mut Window, &mut u64) {
        let (inside, outside, hash) = self.key(record);
        let hasher = &self.hasher;
        let window = self
            .windows
            .entry(
                hash,
                |w| w.inside == inside && w.outside == outside,
                |w| pair_hash(hasher, w.inside, w.outside),
            )
            .or_insert_with(|| Window::new(inside, outside, record.start_ms))
            .into_mut();
        (window, &mut self.stored_minutes)
    }
}

impl Rule for BulkEgress {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Prefetches the windows the index holds under the pair's hash (one but for a
    /// collision of seven bits), from the control bytes alone: finding the window would
    /// compare its key, which is the miss itself.
    fn warm(&self, record: &Oriented, _destination: Option<&Destination>) {
        let (_, _, hash) = self.key(record);
        self.windows.iter_hash(hash).for_each(prefetch);
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let record = event.record;
        // What an inside server sends back on connections opened from outside answers its
        // clients: not an upload.
        if record.bytes_out == 0 || event.conversation.initiator() == Initiator::Outside {
            // A download: never counted, but it is the answer side of an upload window.
            let window_ms = self.window_ms;
            let bytes_in =
                within_window(record.bytes_in, record.start_ms, record.end_ms, window_ms);
            if let Some(window) = self.find_mut(record) {
                window.add(record.end_ms, 0, bytes_in);
            } else if record.proto == 17 && bytes_in >= self.min_bytes_out / MEDIA_REPLY_SHARE {
                // A unidirectional exporter may send a call's reply direction first (nfpcapd
                // does, in the same datagram): keep it, so that the upload record after it
                // finds the pair symmetric. Only large UDP replies, the ones that can weigh
                // in the media test: DNS answers never make a window.
                if self.state_bytes() >= self.max_bytes {
                    self.evict_stalest();
                }
                let (window, _) = self.window(record);
                window.first_ms = record.start_ms;
                window.add(record.end_ms, 0, bytes_in);
            }
            return;
        }
        let destination = event.destination();
        if rule_allows(&self.allow, event.key, destination) {
            return;
        }
        let (min_bytes_out, window_ms) = (self.min_bytes_out, self.window_ms);
        if self.state_bytes() >= self.max_bytes && self.find(record).is_none() {
            self.evict_stalest();
        }
        let (window, stored_minutes) = self.window(record);
        if window.is_empty() {
            window.first_ms = record.start_ms;
        }
        let minutes_before = window.older.len() as u64;
        // A record longer than the window counts what it can have sent within one.
        let share = |bytes| within_window(bytes, record.start_ms, record.end_ms, window_ms);
        window.add(
            record.end_ms,
            share(record.bytes_out),
            share(record.bytes_in),
        );
        // The window of the record's own time: a late record is judged with what came
        // within the window before it, not cut off by its exporter's later records.
        window.slide(record.end_ms.min(event.now_ms), window_ms);
        window.rearm_below(min_bytes_out);
        *stored_minutes =
            (*stored_minutes + window.older.len() as u64).saturating_sub(minutes_before);
        if window.bytes_out < min_bytes_out {
            return;
        }
        let step = LADDER
            .iter()
            .rposition(|&m| window.bytes_out >= min_bytes_out.saturating_mul(m))
            .unwrap_or(0);
        if usize::from(window.reported) > step {
            return;
        }
        window.reported = step as u8 + 1;
        let asymmetric = window.bytes_out >= window.bytes_in.saturating_mul(10);
        let score = log_score(window.bytes_out, min_bytes_out, 45.0, 25.0)
            .saturating_add(if destination.foreign { 10 } else { 0 })
            .saturating_add(if asymmetric { 10 } else { 0 })
            .min(100);
        let window_min = window_ms / 60_000;
        let opening = event.conversation.opening;
        let summary = format!(
            "{} sent {} to {} within {window_min} min ({} back) in {} records; this \
             connection opened by the {} host ({})",
            record.inside,
            human_bytes(window.bytes_out),
            describe_destination(record.outside, event.key.outside_port, destination),
            human_bytes(window.bytes_in),
            window.flows,
            opening.initiator().name(),
            opening.evidence().name(),
        );
        let mut finding = Finding::for_conversation(NAME, event, step as u8, score, summary);
        finding.bytes_out = window.bytes_out;
        finding.bytes_in = window.bytes_in;
        finding.flows = u64::from(window.flows);
        finding.first_ms = window
            .first_ms
            .max(event.now_ms.saturating_sub(window_ms))
            .min(record.start_ms);
        finding.last_ms = record.end_ms;
        let web = matches!(event.key.outside_port, 80 | 443 | 8080 | 8443);
        let finding = finding.with_attack(if web { ATTACK_WEB } else { ATTACK });
        if event.key.proto == 17 {
            let (inside, outside) = (window.inside, window.outside);
            self.pending.push((inside, outside, finding));
        } else {
            findings.push(finding);
        }
    }

    /// Releases the UDP findings that are not media, then slides every window to the
    /// oldest time a record may still come from: `now_ms` less the lateness allowed.
    fn on_tick(&mut self, now_ms: u64, findings: &mut Vec<Finding>) {
        for (inside, outside, mut finding) in std::mem::take(&mut self.pending) {
            let hash = pair_hash(&self.hasher, inside, outside);
            let window = self
                .windows
                .find_mut(hash, |w| w.inside == inside && w.outside == outside);
            let Some(window) = window else {
                findings.push(finding);
                continue;
            };
            if window.bytes_in.saturating_mul(2) >= window.bytes_out {
                // Media: forgotten, so a one-way burst later is news.
                window.reported = 0;
                continue;
            }
            finding.bytes_in = window.bytes_in;
            findings.push(finding);
        }
        let window_ms = self.window_ms;
        let threshold = self.min_bytes_out;
        let oldest_ms = now_ms.saturating_sub(self.lateness_ms);
        let mut stored_minutes = 0;
        self.windows.retain(|window| {
            window.slide(oldest_ms, window_ms);
            window.rearm_below(threshold);
            stored_minutes += window.older.len() as u64;
            !window.is_empty()
        });
        self.stored_minutes = stored_minutes;
    }

    fn allow_lateness(&mut self, lateness_ms: u64) {
        self.lateness_ms = lateness_ms;
    }

    fn limit_state(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        vec![("windows_evicted", self.windows_evicted)]
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
    fn a_record_longer_than_the_window_counts_what_fits_in_one() {
        let mut r = rule(100_000_000);
        let mut findings = Vec::new();
        // An SSH session of 5.5 h that sent 165 MB in all: 30 MB an hour.
        let hour = 3_600_000;
        let end = 11 * hour / 2;
        let o = oriented("10.0.0.1", 40000, "18.184.1.1", 22, 165_000_000, 0, 0, end);
        r.on_record(&event_for(&o, end), &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(r.find(&o).unwrap().bytes_out, 30_000_000);
        // 120 MB within 20 minutes is all in the hour.
        let o = oriented(
            "10.0.0.1",
            40001,
            "18.184.1.1",
            22,
            120_000_000,
            0,
            end,
            end + hour / 3,
        );
        r.on_record(&event_for(&o, end + hour / 3), &mut findings);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].bytes_out, 150_000_000);
    }

    #[test]
    fn the_window_slides_minute_by_minute() {
        let mut r = BulkEgress::new(&BulkEgressConfig {
            min_bytes_out: 1_000_000,
            window_s: 120,
            ..BulkEgressConfig::default()
        });
        let mut findings = Vec::new();
        let pair = |r: &BulkEgress| {
            let inside = "10.0.0.1";
            let o = oriented(inside, 0, "5.255.255.77", 0, 0, 0, 0, 0);
            let w = r.find(&o).unwrap();
            (w.bytes_out, w.bytes_in, w.older.len())
        };
        for (bytes, end_ms) in [(600, 30_000), (300, 90_000), (50, 100_000)] {
            let o = oriented("10.0.0.1", 5000, "5.255.255.77", 22, bytes, 1, 0, end_ms);
            r.on_record(&event_for(&o, end_ms), &mut findings);
        }
        assert_eq!(pair(&r), (950, 3, 1), "minutes 0 and 1 held");
        let o = oriented(
            "10.0.0.1",
            5000,
            "5.255.255.77",
            22,
            200,
            0,
            190_000,
            200_000,
        );
        r.on_record(&event_for(&o, 200_000), &mut findings);
        assert_eq!(pair(&r), (550, 2, 1), "minute 0 slid out, minute 3 joined");
        r.on_tick(300_000, &mut findings);
        assert_eq!(pair(&r), (200, 0, 0), "only minute 3 is left");
        r.on_tick(240_000 + 120_000, &mut findings);
        assert!(r.windows.is_empty());
        assert!(findings.is_empty());
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
    fn windows_stay_within_their_memory_evicting_the_stalest() {
        let mut r = rule(1_000_000);
        r.limit_state(100 * BYTES_PER_WINDOW);
        let mut findings = Vec::new();
        // 1,000 destinations, one a minute; the first one again each time.
        for i in 0..1_000u64 {
            let at = 60_000 * (i + 1);
            let outside = format!("5.255.{}.{}", i / 250, i % 250 + 1);
            let o = oriented("10.0.0.1", 5000, &outside, 443, 10, 0, at - 1000, at);
            r.on_record(&event_for(&o, at), &mut findings);
            let first = oriented("10.0.0.1", 5000, "5.255.0.1", 443, 10, 0, at - 1000, at);
            r.on_record(&event_for(&first, at), &mut findings);
            assert!(r.state_bytes() <= 100 * BYTES_PER_WINDOW + BYTES_PER_WINDOW);
        }
        assert!(r.windows.len() <= 101, "{}", r.windows.len());
        assert!(r.windows_evicted >= 899, "{}", r.windows_evicted);
        assert_eq!(
            r.state_dropped(),
            vec![("windows_evicted", r.windows_evicted)]
        );
        // The busy one stayed, the newest are there, the oldest went.
        let probe = |outside: &str| oriented("10.0.0.1", 0, outside, 0, 0, 0, 0, 0);
        assert!(r.find(&probe("5.255.0.1")).is_some());
        assert!(r.find(&probe("5.255.3.250")).is_some());
        assert!(r.find(&probe("5.255.0.2")).is_none());
        assert!(findings.is_empty());
    }

    /// A UDP record of `r`'s conversation, as the exporter saw it: from inside (the upload's
    /// direction) or from outside (a reply's).
    fn udp(mut r: Oriented, from_inside: bool) -> Oriented {
        (r.proto, r.from_inside) = (17, from_inside);
        r
    }

    /// A call's upload: `bytes` from 10.0.0.1:50000 to a media relay in the first minute.
    fn call_upload(bytes: u64) -> Oriented {
        let r = oriented("10.0.0.1", 50000, "52.112.0.1", 3479, bytes, 0, 0, 60_000);
        udp(r, true)
    }

    /// The same call's reply record: `bytes` back from the relay.
    fn call_reply(bytes: u64) -> Oriented {
        let r = oriented("10.0.0.1", 50000, "52.112.0.1", 3479, 0, bytes, 0, 60_000);
        udp(r, false)
    }

    #[test]
    fn symmetric_udp_media_is_not_an_upload_one_way_udp_is() {
        for (back, expected) in [(140_000_000u64, 0usize), (1_000_000, 1)] {
            let mut r = rule(100_000_000);
            let mut findings = Vec::new();
            r.on_record(&event_for(&call_upload(150_000_000), 60_000), &mut findings);
            assert!(findings.is_empty(), "waits for the tick");
            r.on_record(&event_for(&call_reply(back), 60_000), &mut findings);
            r.on_tick(120_000, &mut findings);
            assert_eq!(findings.len(), expected, "{back}: {findings:?}");
        }
    }

    #[test]
    fn a_calls_reply_record_before_its_upload_still_makes_it_media() {
        let mut r = rule(100_000_000);
        let mut findings = Vec::new();
        r.on_record(&event_for(&call_reply(140_000_000), 60_000), &mut findings);
        r.on_record(&event_for(&call_upload(150_000_000), 60_000), &mut findings);
        r.on_tick(120_000, &mut findings);
        assert!(findings.is_empty(), "{findings:?}");
        // a small UDP answer opens no window
        let answer = udp(
            oriented("10.0.0.2", 5353, "8.8.8.8", 53, 0, 500, 0, 60_000),
            false,
        );
        r.on_record(&event_for(&answer, 60_000), &mut findings);
        assert!(r.find(&answer).is_none());
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
