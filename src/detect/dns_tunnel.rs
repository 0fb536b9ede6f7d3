//! detect: `dns_tunnel`, an inside host pushing data out through DNS queries sent straight
//! to an outside resolver (port 53, UDP or TCP). Per (inside host, outside resolver), summed
//! over every source port (tunnel tools use a new port per query), within a sliding window
//! of event time (default 10 min), it fires on volume (default 100 kB), on the number of
//! queries (packets, default 500), or on long queries (default 100 queries averaging 160 B
//! or more: data encoded in names). Inside resolvers forwarding for everyone are exempt.
//!
//! Slow tunnels (a query a second for hours) stay under the 10-minute thresholds: the
//! detector also judges each of `slow_windows` (at most three; default an hour and a day,
//! with thresholds of their own), each window kept in the pair's one entry; suppression
//! keeps one alert per host, resolver and step whichever window saw it first. A window
//! forgets a pair when it holds nothing of it; the pair goes when every window has.
//!
//! A record counts at its end time, in buckets of a thirtieth of the window (20 s by
//! default, 10 s at least), so the window is exact to a bucket.

use std::collections::VecDeque;

use std::net::IpAddr;

use arrayvec::ArrayVec;

use super::bounded::evict_stalest;
use super::slab_map::SlabMap;
use super::{
    Finding, RecordEvent, Rule, describe_destination, human_bytes, log_score, rule_allows,
};
use crate::decode::directory::InterfaceRef;
use crate::enrich::AllowList;
use crate::enrich::{Allow, Destination};
use crate::flow::Oriented;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsTunnelConfig {
    pub enabled: bool,
    pub window_s: u64,
    /// Volume: bytes sent to one outside resolver within the window...
    pub min_bytes_out: u64,
    /// ...or queries (packets) sent within the window...
    pub min_queries: u64,
    /// ...or at least `min_queries_for_ratio` queries averaging this many bytes (long names).
    pub min_bytes_per_query: u64,
    pub min_queries_for_ratio: u64,
    /// Longer windows beside `window_s`, for slow tunnels (a query a second for hours),
    /// each with its own thresholds (the same `min_bytes_per_query`).
    pub slow_windows: Vec<DnsSlowWindow>,
    pub allow: AllowList,
}

/// A longer `dns_tunnel` window and its thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSlowWindow {
    pub window_s: u64,
    pub min_bytes_out: u64,
    pub min_queries: u64,
    pub min_queries_for_ratio: u64,
}

impl DnsTunnelConfig {
    /// The configuration of each window: this one, then one per `slow_windows` entry.
    pub fn windows(&self) -> Vec<DnsTunnelConfig> {
        let mut windows = vec![self.clone()];
        windows.extend(self.slow_windows.iter().map(|slow| DnsTunnelConfig {
            window_s: slow.window_s,
            min_bytes_out: slow.min_bytes_out,
            min_queries: slow.min_queries,
            min_queries_for_ratio: slow.min_queries_for_ratio,
            slow_windows: Vec::new(),
            ..self.clone()
        }));
        windows
    }
}

impl Default for DnsTunnelConfig {
    fn default() -> Self {
        DnsTunnelConfig {
            enabled: true,
            window_s: 600,
            min_bytes_out: 100_000,
            min_queries: 500,
            min_bytes_per_query: 160,
            min_queries_for_ratio: 100,
            // Rates the 10 minutes (500 queries, 100 kB) do not see: an hour at 0.4
            // queries a second or 400 kB; a day at 0.17 a second or 4 MB.
            slow_windows: vec![
                DnsSlowWindow {
                    window_s: 3600,
                    min_bytes_out: 400_000,
                    min_queries: 1_500,
                    min_queries_for_ratio: 300,
                },
                DnsSlowWindow {
                    window_s: 86_400,
                    min_bytes_out: 4_000_000,
                    min_queries: 15_000,
                    min_queries_for_ratio: 2_000,
                },
            ],
            allow: AllowList::default(),
        }
    }
}

pub const NAME: &str = "dns_tunnel";
/// Exfiltration over an unencrypted non-C2 protocol; application layer protocol: DNS.
const ATTACK: &[&str] = &["T1048.003", "T1071.004"];
const DNS_PORT: u16 = 53;
/// Buckets are at least this wide, and a window holds at most `MAX_BUCKETS` of them (1.8 kB
/// per pair).
const MIN_BUCKET_MS: u64 = 10_000;
const MAX_BUCKETS: u64 = 30;
/// Windows at most: `window_s` and up to three `slow_windows`, kept in each pair's entry.
pub const MAX_WINDOWS: usize = 4;
/// Pairs tracked per shard; when full the stalest tenth goes. Most clients use the inside
/// resolvers, so pairs are few.
const MAX_PAIRS: usize = 16_384;
/// Multiples of `min_bytes_out` within the window at which the alert escalates.
const LADDER: [u64; 3] = [1, 10, 100];
/// While a pair stays over a threshold its finding is repeated this often, so that it
/// alerts again once the suppression cooldown has passed; the suppressor drops the rest.
const REPEAT_MS: u64 = 3_600_000;

/// What a host sent to one outside resolver in one bucket of time.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start_ms: u64,
    bytes_out: u64,
    bytes_in: u64,
    queries: u64,
    packets_in: u64,
    records: u64,
    /// Earliest record start, for the finding's first-seen time.
    first_ms: u64,
}

impl Bucket {
    /// The sum of `buckets` (of none: nothing, first seen never).
    fn total<'a>(buckets: impl IntoIterator<Item = &'a Bucket>) -> Bucket {
        let mut sum = Bucket {
            first_ms: u64::MAX,
            ..Bucket::default()
        };
        for bucket in buckets {
            sum.add(bucket);
        }
        sum
    }

    fn add(&mut self, other: &Bucket) {
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.queries = self.queries.saturating_add(other.queries);
        self.packets_in = self.packets_in.saturating_add(other.packets_in);
        self.records = self.records.saturating_add(other.records);
        self.first_ms = self.first_ms.min(other.first_ms);
    }
}

/// The buckets of one window, oldest first by start: the newest (the one being filled,
/// where nearly every record lands) kept inline and the older ones behind a pointer, so a
/// record touches only its pair's entry; with their totals, kept as records are added and
/// summed again when a bucket leaves (a record does not read the whole window). Sums
/// saturate and `first_ms` is a minimum, so adding as records come gives what summing the
/// buckets would.
#[derive(Debug)]
struct Buckets {
    older: VecDeque<Bucket>,
    /// `None` only when there are no buckets at all.
    newest: Option<Bucket>,
    sum: Bucket,
}

impl Buckets {
    fn new() -> Self {
        Buckets {
            older: VecDeque::new(),
            newest: None,
            sum: Bucket::total([]),
        }
    }

    fn len(&self) -> usize {
        self.older.len() + usize::from(self.newest.is_some())
    }

    fn is_empty(&self) -> bool {
        self.newest.is_none()
    }

    /// Adds `sample` to the bucket starting at its `start_ms`.
    fn add(&mut self, sample: Bucket) {
        self.sum.add(&sample);
        let start_ms = sample.start_ms;
        let Some(newest) = &mut self.newest else {
            self.newest = Some(sample);
            return;
        };
        if start_ms == newest.start_ms {
            newest.add(&sample);
            return;
        }
        if start_ms > newest.start_ms {
            self.older.push_back(std::mem::replace(newest, sample));
            return;
        }
        // A late record: search from the newest of the older buckets.
        let older = &mut self.older;
        let mut at = older.len();
        while at > 0 && older[at - 1].start_ms > start_ms {
            at -= 1;
        }
        match at.checked_sub(1).map(|i| &mut older[i]) {
            Some(bucket) if bucket.start_ms == start_ms => bucket.add(&sample),
            _ => older.insert(at, sample),
        }
    }

    /// Drops buckets that ended at or before `horizon_ms`.
    fn slide(&mut self, horizon_ms: u64, bucket_ms: u64) {
        let ended = |b: &Bucket| b.start_ms.saturating_add(bucket_ms) <= horizon_ms;
        let before = self.len();
        while self.older.front().is_some_and(ended) {
            self.older.pop_front();
        }
        if self.older.is_empty() && self.newest.as_ref().is_some_and(ended) {
            self.newest = None;
        }
        if self.len() < before {
            self.sum = Bucket::total(self.older.iter().chain(&self.newest));
        }
    }
}

/// One window of a host's DNS traffic to one outside resolver.
#[derive(Debug)]
struct PairWindow {
    /// At most the window's worth plus the one being filled; none: the window holds
    /// nothing (it forgot the pair, or never saw it).
    buckets: Buckets,
    /// Latest record end since the window last held nothing: the window ends here.
    last_ms: u64,
    /// (step, event time) of the last report, while the pair stays over a threshold.
    reported: Option<(u8, u64)>,
}

impl PairWindow {
    fn new() -> Self {
        PairWindow {
            buckets: Buckets::new(),
            last_ms: 0,
            reported: None,
        }
    }

    /// Adds a record's counters to the bucket of its end time `end_ms`; a record older than
    /// the window is dropped.
    fn add(&mut self, end_ms: u64, sample: Bucket, bucket_ms: u64, window_ms: u64) {
        let start_ms = end_ms - end_ms % bucket_ms;
        if start_ms.saturating_add(bucket_ms) <= self.last_ms.saturating_sub(window_ms) {
            return;
        }
        self.buckets.add(Bucket { start_ms, ..sample });
    }
}

/// One host's DNS traffic to one outside resolver: a window of it per window of the rule,
/// kept in the pair's entry (one lookup and one entry for a record, whatever the windows).
#[derive(Debug)]
struct Pair {
    windows: ArrayVec<PairWindow, MAX_WINDOWS>,
    /// Of the latest record, for the finding.
    proto: u8,
    destination: Destination,
    exporter: IpAddr,
    /// Of the latest record: what names the alert's interfaces.
    interfaces: InterfaceRef,
}

impl Pair {
    /// Whether no window holds anything.
    fn is_empty(&self) -> bool {
        self.windows.iter().all(|w| w.buckets.is_empty())
    }

    /// The latest record end any window holds, for eviction.
    fn last_ms(&self) -> u64 {
        self.windows.iter().map(|w| w.last_ms).max().unwrap_or(0)
    }
}

/// A window's width and thresholds.
#[derive(Debug, Clone)]
struct Window {
    window_ms: u64,
    bucket_ms: u64,
    min_bytes_out: u64,
    min_queries: u64,
    min_queries_for_ratio: u64,
}

impl Window {
    fn new(config: &DnsTunnelConfig) -> Self {
        let window_ms = config.window_s.saturating_mul(1000).max(1);
        Window {
            window_ms,
            bucket_ms: (window_ms / MAX_BUCKETS).max(MIN_BUCKET_MS),
            min_bytes_out: config.min_bytes_out.max(1),
            min_queries: config.min_queries.max(1),
            min_queries_for_ratio: config.min_queries_for_ratio.max(1),
        }
    }

    /// The alert score and ladder step of a window's totals, or `None` under every
    /// threshold. The score is 50 at a threshold, 20 more for each tenfold of the volume or
    /// count thresholds (whichever is further), and 10 more when the queries are long.
    fn judge(&self, min_bytes_per_query: u64, sum: &Bucket) -> Option<(u8, u8)> {
        let long = sum.bytes_out / sum.queries.max(1) >= min_bytes_per_query;
        let crossed = sum.bytes_out >= self.min_bytes_out
            || sum.queries >= self.min_queries
            || (sum.queries >= self.min_queries_for_ratio && long);
        if !crossed {
            return None;
        }
        let over = log_score(sum.bytes_out, self.min_bytes_out, 50.0, 20.0).max(log_score(
            sum.queries,
            self.min_queries,
            50.0,
            20.0,
        ));
        let score = over.saturating_add(if long { 10 } else { 0 }).min(100);
        let step = LADDER
            .iter()
            .rposition(|&m| sum.bytes_out >= self.min_bytes_out.saturating_mul(m))
            .unwrap_or(0);
        Some((score, step as u8))
    }
}

pub struct DnsTunnel {
    /// The window of `window_s`, then those of `slow_windows`.
    windows: ArrayVec<Window, MAX_WINDOWS>,
    min_bytes_per_query: u64,
    allow: Allow,
    pairs: SlabMap<(IpAddr, IpAddr), Pair>,
    /// Pairs dropped to make room (counted, not otherwise reported).
    pub pairs_evicted: u64,
    /// Pairs held at most: `MAX_PAIRS`, or fewer when `limit_state` says so.
    max_pairs: usize,
    /// How far behind a tick records may still arrive (`allow_lateness`).
    lateness_ms: u64,
}

impl DnsTunnel {
    /// The rule over `config`'s windows (the first [`MAX_WINDOWS`]: the configuration's
    /// check refuses more).
    pub fn new(config: &DnsTunnelConfig) -> Self {
        DnsTunnel {
            windows: config
                .windows()
                .iter()
                .take(MAX_WINDOWS)
                .map(Window::new)
                .collect(),
            min_bytes_per_query: config.min_bytes_per_query,
            allow: Allow::new(&config.allow),
            pairs: SlabMap::new(),
            pairs_evicted: 0,
            max_pairs: MAX_PAIRS,
            lateness_ms: 0,
        }
    }
}

impl Rule for DnsTunnel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        vec![("pairs_evicted", self.pairs_evicted)]
    }

    fn allow_lateness(&mut self, lateness_ms: u64) {
        self.lateness_ms = lateness_ms;
    }

    /// A pair with every window full of buckets and its 5 bytes in the index, counted
    /// twice (a map or deque just grown is half full). Each window is a rule's worth of
    /// state: the rule takes `max_bytes` per window.
    fn limit_state(&mut self, max_bytes: u64) {
        let windows = self.windows.len().max(1);
        let pair = std::mem::size_of::<((IpAddr, IpAddr), Pair)>()
            + 5
            + windows * (MAX_BUCKETS as usize + 1) * std::mem::size_of::<Bucket>();
        let max_bytes = max_bytes.saturating_mul(windows as u64);
        self.max_pairs = usize::try_from(max_bytes / (2 * pair as u64))
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_PAIRS);
    }

    /// Prefetches a DNS record's pair from the index alone (see [`SlabMap::prefetch`]).
    fn warm(&self, record: &Oriented, _destination: Option<&Destination>) {
        if record.outside_port == DNS_PORT {
            self.pairs.prefetch(&(record.inside, record.outside));
        }
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let (key, record) = (event.key, event.record);
        if key.outside_port != DNS_PORT || !matches!(key.proto, 6 | 17) || event.from_resolver {
            return;
        }
        let destination = event.destination();
        if rule_allows(&self.allow, key, destination) {
            return;
        }
        let pair_key = (key.inside, key.outside);
        // Answers alone (the reply direction's record) open no window.
        let answers = record.bytes_out == 0 && record.packets_out == 0;
        if answers && !self.pairs.contains_key(&pair_key) {
            return;
        }
        if self.pairs.len() >= self.max_pairs && !self.pairs.contains_key(&pair_key) {
            self.pairs_evicted += evict_stalest(&mut self.pairs, Pair::last_ms, |_, _| {}) as u64;
        }
        let windows = self.windows.len();
        let pair = self.pairs.get_or_insert_with(pair_key, || Pair {
            windows: (0..windows).map(|_| PairWindow::new()).collect(),
            proto: key.proto,
            destination: *destination,
            exporter: record.exporter,
            interfaces: record.interfaces,
        });
        pair.proto = key.proto;
        pair.destination = *destination;
        pair.exporter = record.exporter;
        pair.interfaces = record.interfaces;
        let sample = Bucket {
            start_ms: 0,
            bytes_out: record.bytes_out,
            bytes_in: record.bytes_in,
            queries: record.packets_out,
            packets_in: record.packets_in,
            records: 1,
            first_ms: record.start_ms,
        };
        let mut crossed: ArrayVec<(usize, Bucket, u8, u8), MAX_WINDOWS> = ArrayVec::new();
        for (at, (window, state)) in self.windows.iter().zip(&mut pair.windows).enumerate() {
            if state.buckets.is_empty() {
                if answers {
                    continue;
                }
                // A window that forgot the pair starts it afresh.
                *state = PairWindow {
                    last_ms: record.end_ms,
                    ..PairWindow::new()
                };
            }
            let (bucket_ms, window_ms) = (window.bucket_ms, window.window_ms);
            state.last_ms = state.last_ms.max(record.end_ms);
            state.add(record.end_ms, sample, bucket_ms, window_ms);
            state
                .buckets
                .slide(state.last_ms.saturating_sub(window_ms), bucket_ms);
            let sum = state.buckets.sum;
            let Some((score, step)) = window.judge(self.min_bytes_per_query, &sum) else {
                state.reported = None;
                continue;
            };
            let due = match state.reported {
                Some((reported, at)) => {
                    step > reported || event.now_ms >= at.saturating_add(REPEAT_MS)
                }
                None => true,
            };
            if due {
                state.reported = Some((step, event.now_ms));
                crossed.push((at, sum, score, step));
            }
        }
        for (at, sum, score, step) in crossed {
            let window_ms = self.windows[at].window_ms;
            let last_ms = pair.windows[at].last_ms;
            let summary = format!(
                "{} sent {} DNS queries ({}, {} B per query) to {} within {}",
                key.inside,
                sum.queries,
                human_bytes(sum.bytes_out),
                sum.bytes_out / sum.queries.max(1),
                describe_destination(key.outside, DNS_PORT, destination),
                human_window(window_ms),
            );
            findings.push(Finding {
                rule: NAME,
                step,
                score,
                summary,
                inside: key.inside,
                outside: key.outside,
                outside_port: DNS_PORT,
                inside_port: None,
                proto: pair.proto,
                destination: pair.destination,
                bytes_out: sum.bytes_out,
                bytes_in: sum.bytes_in,
                packets_out: sum.queries,
                packets_in: sum.packets_in,
                flows: sum.records,
                first_ms: sum.first_ms,
                last_ms,
                exporter: pair.exporter,
                interfaces: pair.interfaces,
                attack: ATTACK,
                at_ms: event.now_ms,
                explain: None,
            });
        }
    }

    /// Slides every window to the oldest time a record may still come from (`now_ms` less
    /// the lateness allowed) and forgets pairs with nothing left in any: a tunnel whose
    /// records all come late still adds up in the window of their own time.
    fn on_tick(&mut self, now_ms: u64, _findings: &mut Vec<Finding>) {
        let at_ms = now_ms.saturating_sub(self.lateness_ms);
        let windows = &self.windows;
        self.pairs.retain(|_, pair| {
            for (window, state) in windows.iter().zip(&mut pair.windows) {
                let horizon_ms = at_ms.saturating_sub(window.window_ms);
                state.buckets.slide(horizon_ms, window.bucket_ms);
            }
            !pair.is_empty()
        });
    }
}

/// A window for summaries: "10 min", "90 s".
fn human_window(ms: u64) -> String {
    if ms.is_multiple_of(60_000) {
        format!("{} min", ms / 60_000)
    } else {
        format!("{} s", ms / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::{feed, foreign, oriented};
    use crate::flow::{FlowTable, Oriented};

    const S: u64 = 1000;
    /// 2024-03-12 09:00 UTC.
    const T0: u64 = 1_710_234_000_000;

    struct Harness {
        table: FlowTable,
        rule: DnsTunnel,
        findings: Vec<Finding>,
    }

    /// The 10-minute window alone.
    fn ten_minutes() -> DnsTunnelConfig {
        DnsTunnelConfig {
            slow_windows: Vec::new(),
            ..DnsTunnelConfig::default()
        }
    }

    impl Harness {
        fn new(config: DnsTunnelConfig) -> Self {
            Harness {
                table: FlowTable::new(100_000, 1800, 0),
                rule: DnsTunnel::new(&config),
                findings: Vec::new(),
            }
        }

        fn feed(&mut self, record: Oriented, from_resolver: bool) {
            let now_ms = record.end_ms;
            let findings = &mut self.findings;
            feed(
                &mut self.rule,
                &mut self.table,
                &record,
                foreign(),
                now_ms,
                from_resolver,
                findings,
            );
        }
    }

    /// Queries `inside:port -> outside:53` over UDP.
    fn queries(
        inside: &str,
        port: u16,
        outside: &str,
        count: u64,
        bytes: u64,
        start_ms: u64,
        end_ms: u64,
    ) -> Oriented {
        let record = oriented(inside, port, outside, 53, bytes, 0, start_ms, end_ms);
        Oriented {
            proto: 17,
            packets_out: count,
            ..record
        }
    }

    #[test]
    fn e1_long_txt_queries_from_one_port() {
        let mut h = Harness::new(ten_minutes());
        // As softflowd exported it: 854 queries in 5.7 min, then 146 more.
        let interfaces = InterfaceRef {
            domain: (crate::decode::FlowKind::NetflowV9, 0),
            in_if: 3,
            out_if: 7,
        };
        h.feed(
            Oriented {
                interfaces,
                ..queries(
                    "10.10.40.23",
                    53211,
                    "77.88.8.8",
                    854,
                    236_558,
                    T0 - S,
                    T0 + 339_274,
                )
            },
            false,
        );
        h.feed(
            queries(
                "10.10.40.23",
                53211,
                "77.88.8.8",
                146,
                40_442,
                T0 + 339_274,
                T0 + 398_126,
            ),
            false,
        );
        assert_eq!(h.findings.len(), 1, "the second record changes no step");
        let f = &h.findings[0];
        assert_eq!(
            f.summary,
            "10.10.40.23 sent 854 DNS queries (236.6 kB, 277 B per query) to 77.88.8.8:53 (RU) within 10 min"
        );
        assert_eq!(
            (f.rule, f.step, f.proto, f.outside_port, f.flows),
            (NAME, 0, 17, 53, 1)
        );
        // Volume 2.4x the threshold (50 + 20 log10 2.37 = 57), long queries (+10).
        assert_eq!(f.score, 67);
        assert_eq!(f.attack, ATTACK);
        assert_eq!(
            f.interfaces, interfaces,
            "the alert can name the record's interfaces"
        );
    }

    #[test]
    fn e2_null_queries_from_random_ports() {
        let mut h = Harness::new(ten_minutes());
        for i in 0..300u64 {
            let at = T0 + 1_800_000 + i * S;
            let port = 1024 + (i.wrapping_mul(7919) % 60_000) as u16;
            h.feed(
                queries("10.10.40.24", port, "114.114.114.114", 1, 277, at, at + 100),
                false,
            );
        }
        // Long queries: the 100th query crosses min_queries_for_ratio; reported once.
        assert_eq!(h.findings.len(), 1);
        let f = &h.findings[0];
        assert_eq!(
            (f.packets_out, f.bytes_out, f.flows, f.score),
            (100, 27_700, 100, 60)
        );
        assert!(f.summary.starts_with(
            "10.10.40.24 sent 100 DNS queries (27.7 kB, 277 B per query) to 114.114.114.114:53"
        ));
    }

    #[test]
    fn each_threshold_fires_just_over_and_not_just_under() {
        // (queries, bytes) just under, then one query or byte more.
        let cases = [
            ((499, 499 * 60), (1, 60)),     // min_queries
            ((10, 99_999), (0, 1)),         // min_bytes_out
            ((99, 99 * 200), (1, 200)),     // min_queries_for_ratio
            ((100, 100 * 160 - 1), (0, 1)), // min_bytes_per_query
        ];
        for ((count, bytes), (more_count, more_bytes)) in cases {
            let mut h = Harness::new(ten_minutes());
            h.feed(
                queries(
                    "10.10.40.30",
                    5000,
                    "77.88.8.8",
                    count,
                    bytes,
                    T0,
                    T0 + 60 * S,
                ),
                false,
            );
            assert!(h.findings.is_empty(), "{count} queries, {bytes} B");
            h.feed(
                queries(
                    "10.10.40.30",
                    5000,
                    "77.88.8.8",
                    more_count,
                    more_bytes,
                    T0 + 60 * S,
                    T0 + 61 * S,
                ),
                false,
            );
            assert_eq!(
                h.findings.len(),
                1,
                "{count} + {more_count} queries, {bytes} + {more_bytes} B"
            );
        }
    }

    #[test]
    fn inside_resolvers_are_exempt() {
        let mut h = Harness::new(ten_minutes());
        h.feed(
            queries(
                "10.10.0.53",
                35637,
                "8.8.8.8",
                5000,
                5_000_000,
                T0,
                T0 + 60 * S,
            ),
            true,
        );
        assert!(h.findings.is_empty());
        assert!(h.rule.pairs.is_empty());
    }

    #[test]
    fn ordinary_lookups_do_not_fire() {
        let mut h = Harness::new(ten_minutes());
        // An unlisted resolver forwarding 122 queries of 62 B over two hours, answers apart.
        for i in 0..122u64 {
            let at = T0 + i * 59 * S;
            h.feed(
                queries(
                    "10.10.0.53",
                    30_000 + i as u16,
                    "8.8.8.8",
                    1,
                    62,
                    at,
                    at + 20,
                ),
                false,
            );
            let mut answer = queries(
                "10.10.0.53",
                30_000 + i as u16,
                "8.8.8.8",
                0,
                0,
                at + 20,
                at + 20,
            );
            (answer.bytes_in, answer.packets_in) = (92, 1);
            h.feed(answer, false);
        }
        // IPv6 hosts with a handful of queries each.
        for host in 0..20u16 {
            let inside = format!("2001:db8:10:1::{host:x}");
            for q in 0..9u64 {
                let at = T0 + q * 10 * S;
                h.feed(
                    queries(
                        &inside,
                        40_000 + q as u16,
                        "2606:4700:4700::1111",
                        1,
                        81,
                        at,
                        at + 10,
                    ),
                    false,
                );
            }
        }
        assert!(h.findings.is_empty());
    }

    #[test]
    fn the_window_slides() {
        let mut h = Harness::new(ten_minutes());
        h.feed(
            queries(
                "10.10.40.30",
                5000,
                "77.88.8.8",
                300,
                300 * 60,
                T0,
                T0 + 60 * S,
            ),
            false,
        );
        // 550 queries, but the first 300 ended 10 min and a bucket (20 s) before the last 250.
        h.feed(
            queries(
                "10.10.40.30",
                5000,
                "77.88.8.8",
                250,
                250 * 60,
                T0 + 670 * S,
                T0 + 681 * S,
            ),
            false,
        );
        assert!(h.findings.is_empty());
        // A late record older than the window is dropped, not counted.
        h.feed(
            queries(
                "10.10.40.30",
                5001,
                "77.88.8.8",
                400,
                400 * 60,
                T0,
                T0 + 10 * S,
            ),
            false,
        );
        assert!(h.findings.is_empty());
        h.rule.on_tick(T0 + 1300 * S, &mut h.findings);
        assert!(
            h.rule.pairs.is_empty(),
            "state is dropped once the window is empty"
        );
    }

    #[test]
    fn steps_rise_with_volume() {
        let mut h = Harness::new(ten_minutes());
        for (i, bytes) in [100_000u64, 100_000, 800_000, 9_000_000]
            .into_iter()
            .enumerate()
        {
            let at = T0 + i as u64 * 30 * S;
            h.feed(
                queries(
                    "10.10.40.30",
                    5000,
                    "77.88.8.8",
                    bytes / 250,
                    bytes,
                    at,
                    at + 20 * S,
                ),
                false,
            );
        }
        let steps: Vec<u8> = h.findings.iter().map(|f| f.step).collect();
        assert_eq!(steps, vec![0, 1, 2], "the second record is no news");
        assert!(h.findings.windows(2).all(|w| w[0].score < w[1].score));
    }

    #[test]
    fn other_ports_and_protocols_are_ignored() {
        let mut h = Harness::new(ten_minutes());
        let mut r = queries(
            "10.10.40.30",
            5000,
            "77.88.8.8",
            5000,
            5_000_000,
            T0,
            T0 + 60 * S,
        );
        r.outside_port = 5353;
        h.feed(r, false);
        let mut r = queries(
            "10.10.40.30",
            5000,
            "77.88.8.8",
            5000,
            5_000_000,
            T0,
            T0 + 60 * S,
        );
        r.proto = 132;
        h.feed(r, false);
        assert!(h.findings.is_empty() && h.rule.pairs.is_empty());
        let mut r = queries(
            "10.10.40.30",
            5000,
            "77.88.8.8",
            5000,
            5_000_000,
            T0,
            T0 + 60 * S,
        );
        r.proto = 6;
        h.feed(r, false);
        assert_eq!(h.findings.len(), 1, "DNS over TCP counts");
    }

    #[test]
    fn the_rules_allow_list_silences_it() {
        let mut config = ten_minutes();
        config.allow.countries = vec!["RU".parse().unwrap()];
        let mut h = Harness::new(config);
        h.feed(
            queries(
                "10.10.40.23",
                53211,
                "77.88.8.8",
                1000,
                277_000,
                T0,
                T0 + 60 * S,
            ),
            false,
        );
        assert!(h.findings.is_empty());
    }

    #[test]
    fn state_stays_bounded() {
        let mut h = Harness::new(ten_minutes());
        for i in 0..20_000u64 {
            let outside = format!("100.{}.{}.53", 64 + i / 256, i % 256);
            h.feed(
                queries("10.10.40.30", 5000, &outside, 1, 60, T0 + i, T0 + i),
                false,
            );
        }
        assert!(h.rule.pairs.len() <= MAX_PAIRS);
        assert!(h.rule.pairs_evicted >= 20_000 - MAX_PAIRS as u64);
        // One pair with a query every second for an hour keeps a window's buckets only.
        for i in 0..3600u64 {
            h.feed(
                queries(
                    "10.10.40.31",
                    5000,
                    "77.88.8.8",
                    1,
                    60,
                    T0 + i * S,
                    T0 + i * S,
                ),
                false,
            );
        }
        let pair = &h.rule.pairs[&("10.10.40.31".parse().unwrap(), "77.88.8.8".parse().unwrap())];
        let buckets = &pair.windows[0].buckets;
        assert!(buckets.len() <= 31, "{}", buckets.len());
        h.rule.on_tick(T0 + 3600 * S + 600 * S, &mut h.findings);
        assert!(h.rule.pairs.is_empty());
    }

    #[test]
    fn a_window_keeps_its_totals_through_late_records_and_slides() {
        // Records mostly in order, one in eight late by up to four buckets, with a slide
        // after each: the kept totals are always the buckets' sum, in start order.
        let bucket_ms = 20 * S;
        let mut buckets = Buckets::new();
        let mut seed = 7u64;
        for i in 0..2_000u64 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let late = if seed >> 61 == 0 {
                (seed >> 40) % (4 * bucket_ms)
            } else {
                0
            };
            let end_ms = (T0 + i * 3 * S).saturating_sub(late);
            let sample = Bucket {
                start_ms: end_ms - end_ms % bucket_ms,
                bytes_out: seed >> 50,
                queries: 1,
                records: 1,
                first_ms: end_ms - 100,
                ..Bucket::default()
            };
            buckets.add(sample);
            buckets.slide((T0 + i * 3 * S).saturating_sub(600 * S), bucket_ms);
            let all: Vec<&Bucket> = buckets.older.iter().chain(&buckets.newest).collect();
            let expected = Bucket::total(all.iter().copied());
            let sum = &buckets.sum;
            assert_eq!(
                (sum.bytes_out, sum.queries, sum.records, sum.first_ms),
                (
                    expected.bytes_out,
                    expected.queries,
                    expected.records,
                    expected.first_ms
                ),
                "after record {i}"
            );
            assert!(all.windows(2).all(|w| w[0].start_ms < w[1].start_ms));
            assert!(buckets.len() <= 31);
        }
        buckets.slide(u64::MAX, bucket_ms);
        assert!(buckets.is_empty() && buckets.sum.records == 0);
    }

    #[test]
    fn hostile_counters_and_times_do_not_panic() {
        let mut h = Harness::new(DnsTunnelConfig {
            window_s: u64::MAX,
            ..ten_minutes()
        });
        h.feed(
            queries(
                "10.10.40.30",
                1,
                "77.88.8.8",
                u64::MAX,
                u64::MAX,
                u64::MAX,
                0,
            ),
            false,
        );
        h.feed(
            queries("10.10.40.30", 2, "77.88.8.8", 0, u64::MAX, 0, u64::MAX),
            false,
        );
        h.feed(
            queries("10.10.40.30", 3, "77.88.8.8", u64::MAX, 0, 5, 5),
            false,
        );
        h.rule.on_tick(u64::MAX, &mut h.findings);
        h.rule.on_tick(0, &mut h.findings);
        assert!(
            !h.findings.is_empty(),
            "extreme counters still make findings"
        );
        assert!(h.findings.iter().all(|f| f.score <= 100));
    }

    #[test]
    fn windows_in_words() {
        assert_eq!(human_window(600_000), "10 min");
        assert_eq!(human_window(90_000), "90 s");
    }

    #[test]
    fn a_slow_tunnel_is_seen_by_the_hour_window_only() {
        // A 90-byte query every 2 s for 3 h: 300 queries and 27 kB in any 10 minutes, under
        // those thresholds; 1,800 in an hour.
        let mut h = Harness::new(DnsTunnelConfig::default());
        assert_eq!(h.rule.windows.len(), 3);
        for i in 0..5_400u64 {
            let at = T0 + i * 2 * S;
            h.feed(
                queries("10.10.40.50", 40_000, "114.114.114.114", 1, 90, at, at),
                false,
            );
        }
        let within = |window: &str| {
            h.findings
                .iter()
                .filter(|f| f.summary.ends_with(&format!("within {window}")))
                .collect::<Vec<_>>()
        };
        assert!(within("10 min").is_empty(), "not within 10 minutes");
        let hour = within("60 min");
        assert!(!hour.is_empty(), "the hour: {:?}", h.findings);
        let f = hour[0];
        assert!(f.packets_out >= 1_500 && f.packets_out < 1_810, "{f:?}");
        assert_eq!(
            hour.len() + within("1440 min").len(),
            h.findings.len(),
            "only the slow windows fire"
        );
        // Each window forgets the pair on its own time: an hour and a bucket (2 min) after
        // the last query only the day's holds it, a day and a bucket after, none.
        let last = T0 + 5_399 * 2 * S;
        h.rule.on_tick(last + 3720 * S, &mut h.findings);
        let pair = &h.rule.pairs[&(
            "10.10.40.50".parse().unwrap(),
            "114.114.114.114".parse().unwrap(),
        )];
        let held: Vec<bool> = pair.windows.iter().map(|w| !w.buckets.is_empty()).collect();
        assert_eq!(held, [false, false, true]);
        // A query now starts the windows that forgot the pair afresh, from its own time.
        let again = last + 3721 * S;
        h.feed(
            queries(
                "10.10.40.50",
                40_001,
                "114.114.114.114",
                1,
                90,
                again,
                again,
            ),
            false,
        );
        let pair = &h.rule.pairs[&(
            "10.10.40.50".parse().unwrap(),
            "114.114.114.114".parse().unwrap(),
        )];
        let windows: Vec<(u64, usize)> = pair
            .windows
            .iter()
            .map(|w| (w.last_ms, w.buckets.len()))
            .collect();
        assert_eq!(windows[..2], [(again, 1), (again, 1)]);
        assert_eq!(windows[2].0, again);
        h.rule
            .on_tick(again + 86_400 * S + 2880 * S, &mut h.findings);
        assert!(h.rule.pairs.is_empty());
    }
}
