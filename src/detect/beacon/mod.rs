//! detect: `beacon`, an inside host calling one outside endpoint at a steady rhythm, as an
//! implant checks in with its command-and-control server. Flow records show two shapes:
//!
//! - **Many short connections** (one conversation each): per (inside host, outside address,
//!   port, protocol) the start times and sizes of new conversations are kept, and once there
//!   are `min_occurrences` a RITA-style score in 0..1 is the mean of three terms: interval
//!   regularity `1 - min(1, MAD / median)` of the gaps between starts, `1 - |Bowley skew|` of
//!   those gaps, and the same MAD / median regularity of the connection sizes.
//! - **One long quiet flow**: a single stitched conversation whose exporter splits it into
//!   records (by its active timeout, or a record per packet when its inactive timeout is
//!   shorter than the interval). A record of `p` packets over `d` ms says the packets came
//!   about `d / (p - 1)` apart. A conversation is followed once its packets out average
//!   `quiet_min_interval_s` apart; when its records agree on the interval and on the bytes
//!   per packet, it is a constant-rate heartbeat. The score is the mean of the MAD / median
//!   regularity of the per-record intervals and of the bytes per packet, and
//!   `1 - min(1, CV)` of the intervals (not robust, on purpose: it sees the odd record the
//!   medians ignore). A flow split into one-packet records has no per-record intervals; the
//!   silences between its records are the intervals then.
//!
//!   Those silences also check the rhythm: in a steady flow the gap between one record's end
//!   and the next one's start is one more interval. When the median gap is not within a
//!   factor of 2 of the median interval, packets come in bursts (a keepalive pair every 15
//!   min reads "a packet every 300 s" inside 15-minute records with 15-minute gaps) or
//!   sampling hides most of them (1-in-10 sampling turns C2's records into 10 or 20
//!   "packets"): the rhythm is uncertain and reported at low severity only.
//!
//! Well-known keepalive services (`detect::keepalive`: Apple and Google push, VPN endpoints,
//! ICMP echo) are skipped: one long connection with a timer-driven keepalive is what they
//! are for. On the evaluation day, push keepalives exported at a 30-minute active timeout
//! read as a constant-rate quiet flow exactly as a heartbeat implant would; only knowing
//! the service tells them apart.
//!
//! Both shapes need the median interval to be at least `quiet_min_interval_s`: bulk
//! transfers, streams, bursts of parallel connections and DNS chatter are fast, not
//! beacons.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;

use super::{Finding, RecordEvent, Rule, describe_destination, rule_allows};
use crate::decode::directory::InterfaceRef;
use crate::detect::bounded::evict_stalest;
use crate::enrich::{Allow, Destination};
use crate::flow::{Conversation, ConversationKey, Update};

mod stats;
use crate::enrich::AllowList;
use serde::{Deserialize, Serialize};
use stats::{bowley_skew, coefficient_of_variation, dispersion, median};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeaconConfig {
    pub enabled: bool,
    /// Connections (or, in one quiet flow, packets) needed before a score is given.
    pub min_occurrences: u32,
    /// Regularity score (0..1) at or above which a beacon is reported.
    pub score_threshold: f64,
    /// Shortest median interval between connections, or between packets of one flow, that
    /// can be a beacon: faster is interactive or bulk traffic.
    pub quiet_min_interval_s: u64,
    /// Skip well-known keepalive services (Apple and Google push, VPN endpoints, ICMP
    /// echo: see `detect::keepalive`), whose timers are regular by design.
    pub skip_keepalive_services: bool,
    pub allow: AllowList,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        BeaconConfig {
            enabled: true,
            min_occurrences: 20,
            score_threshold: 0.8,
            quiet_min_interval_s: 10,
            skip_keepalive_services: true,
            // NTP clients poll servers like clockwork; a beacon on port 123 needs it removed.
            allow: AllowList {
                ports: vec![123],
                ..AllowList::default()
            },
        }
    }
}

pub const NAME: &str = "beacon";
/// Application-layer protocol command and control; scheduled transfer.
const ATTACK: &[&str] = &["T1071", "T1029"];

/// Connection starts kept per series, the most recent: enough to judge a rhythm, 4 KB at most.
const MAX_STARTS: usize = 256;
/// Series kept per shard, and connection starts kept over all of them (16 MB); when either
/// is exceeded the stalest tenth of the series goes. A live beacon refreshes its series
/// every interval, so it survives unless that many new series appear meanwhile. Most series
/// (web browsing) hold one or two starts, so the count binds first in normal traffic.
const MAX_SERIES: usize = 65_536;
const MAX_STORED_STARTS: usize = 1 << 20;
/// A series without a new connection for this long is forgotten (slower beacons are out of
/// scope, and web browsing leaves many one-connection series behind).
const SERIES_IDLE_MS: u64 = 6 * 3_600_000;
/// After the first score at `min_occurrences`, connections between re-scores on the record
/// path (`on_tick` also re-scores any series that changed).
const RESCORE_EVERY: u64 = 10;
/// How many recent starts a later record of a connection searches for its own, to update
/// the connection's size.
const SIZE_LOOKBACK: usize = 8;
/// Records of one connection whose size still counts towards its start.
const MAX_SIZED_RECORDS: u32 = 4;
/// Per-record samples (and gaps) kept per quiet flow, the most recent.
const MAX_RECORD_SAMPLES: usize = 64;
/// Records a quiet flow needs before it is scored.
const MIN_QUIET_RECORDS: usize = 3;
/// Quiet flows tracked per shard; when full the stalest tenth goes.
const MAX_QUIET_FLOWS: usize = 16_384;
/// A quiet flow's samples are dropped after this long without a record, should its end
/// never be reported.
const QUIET_IDLE_MS: u64 = 6 * 3_600_000;
/// While a series stays over the threshold its finding is repeated this often, so that it
/// alerts again once the suppression cooldown has passed; the suppressor drops the rest.
const REPEAT_MS: u64 = 3_600_000;

/// The endpoints a connection series is about: every conversation of one inside host with
/// one outside service, whatever the inside port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SeriesKey {
    inside: IpAddr,
    outside: IpAddr,
    outside_port: u16,
    proto: u8,
}

/// One connection of a series.
#[derive(Debug, Clone, Copy)]
struct Start {
    start_ms: u64,
    /// Bytes both ways so far (saturated): the first record's, updated by later records of
    /// the same connection so that the reply direction counts whichever record comes first.
    size: u32,
    /// Finds the connection again for those later records.
    inside_port: u16,
}

/// The connections of one inside host to one outside service.
#[derive(Debug)]
struct Series {
    /// The most recent connections in arrival order (starts may be slightly out of order).
    starts: VecDeque<Start>,
    /// Connections ever seen; `starts` keeps only the latest.
    connections: u64,
    /// Totals over every record of the series, for the finding.
    bytes_out: u64,
    bytes_in: u64,
    packets_out: u64,
    packets_in: u64,
    first_ms: u64,
    last_ms: u64,
    /// Latest connection start seen: what staleness is judged by.
    last_start_ms: u64,
    destination: Destination,
    exporter: IpAddr,
    /// Of the series' first record, as `exporter`: what names the alert's interfaces.
    interfaces: InterfaceRef,
    /// A connection arrived or grew since the last score.
    changed: bool,
    /// When the series was last reported, while it stays over the threshold.
    reported_ms: Option<u64>,
}

/// The samples of one conversation that looks like a quiet flow.
#[derive(Debug, Default)]
struct QuietFlow {
    /// Packet interval estimates in ms of each record with 2+ packets out.
    intervals: VecDeque<f64>,
    /// Silences in ms between consecutive outbound records.
    gaps: VecDeque<f64>,
    /// Bytes per packet of each outbound record: one per record sampled.
    sizes: VecDeque<f64>,
    /// End of the latest outbound record, where the next gap starts.
    last_end_ms: Option<u64>,
    reported_ms: Option<u64>,
}

/// A score in 0..1 and the rhythm it found.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rhythm {
    score: f64,
    median_interval_ms: f64,
    /// False when the gaps between a quiet flow's records contradict the interval inside them.
    certain: bool,
}

pub struct Beacon {
    min_occurrences: u64,
    threshold: f64,
    min_interval_ms: f64,
    /// `skip_keepalive_services`: push, VPN and ping keepalives are not followed.
    skip_keepalives: bool,
    allow: Allow,
    series: HashMap<SeriesKey, Series>,
    /// Starts held by all series, against `max_stored_starts`.
    stored_starts: usize,
    /// Bounds of the state (`MAX_SERIES`, `MAX_STORED_STARTS`, `MAX_QUIET_FLOWS`, or less
    /// when `limit_state` says so).
    max_series: usize,
    max_stored_starts: usize,
    max_quiet: usize,
    quiet: HashMap<ConversationKey, QuietFlow>,
    /// Series dropped to make room (counted, not otherwise reported).
    pub series_evicted: u64,
    /// Quiet flows dropped to make room.
    pub quiet_evicted: u64,
}

impl Beacon {
    pub fn new(config: &BeaconConfig) -> Self {
        Beacon {
            min_occurrences: u64::from(config.min_occurrences.max(2)),
            threshold: config.score_threshold,
            min_interval_ms: config.quiet_min_interval_s.saturating_mul(1000) as f64,
            skip_keepalives: config.skip_keepalive_services,
            allow: Allow::new(&config.allow),
            series: HashMap::new(),
            stored_starts: 0,
            max_series: MAX_SERIES,
            max_stored_starts: MAX_STORED_STARTS,
            max_quiet: MAX_QUIET_FLOWS,
            quiet: HashMap::new(),
            series_evicted: 0,
            quiet_evicted: 0,
        }
    }

    /// Adds the record to its connection series; scores the series when its connection
    /// count reaches `min_occurrences` and every `RESCORE_EVERY` after.
    fn track_connection(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let record = event.record;
        let key = SeriesKey {
            inside: event.key.inside,
            outside: event.key.outside,
            outside_port: event.key.outside_port,
            proto: event.key.proto,
        };
        let size = u32::try_from(
            event
                .conversation
                .bytes_out
                .saturating_add(event.conversation.bytes_in),
        )
        .unwrap_or(u32::MAX);
        if event.update == Update::Extended {
            // A later record of a connection: its size grows, nothing starts. Beacon
            // connections are short; a connection past a few records is a session, whose
            // size no rhythm depends on, so the lookup is spared.
            if u32::from(event.conversation.flows) > MAX_SIZED_RECORDS {
                return;
            }
            let Some(series) = self.series.get_mut(&key) else {
                return;
            };
            series.add_totals(event);
            if let Some(start) = series
                .starts
                .iter_mut()
                .rev()
                .take(SIZE_LOOKBACK)
                .find(|s| s.inside_port == event.key.inside_port)
            {
                start.size = size;
                series.changed = true;
            }
            return;
        }
        let full =
            self.series.len() >= self.max_series || self.stored_starts >= self.max_stored_starts;
        if full && (!self.series.contains_key(&key) || self.stored_starts >= self.max_stored_starts)
        {
            self.series_evicted +=
                evict_stalest(&mut self.series, |s| s.last_start_ms, |_, _| {}) as u64;
            self.stored_starts = self.series.values().map(|s| s.starts.len()).sum();
        }
        let series = self.series.entry(key).or_insert_with(|| Series {
            starts: VecDeque::new(),
            connections: 0,
            bytes_out: 0,
            bytes_in: 0,
            packets_out: 0,
            packets_in: 0,
            first_ms: record.start_ms,
            last_ms: record.end_ms,
            last_start_ms: record.start_ms,
            destination: event.conversation.destination,
            exporter: event.record.exporter,
            interfaces: event.record.interfaces,
            changed: false,
            reported_ms: None,
        });
        if series.starts.len() >= MAX_STARTS {
            series.starts.pop_front();
        } else {
            self.stored_starts += 1;
        }
        series.starts.push_back(Start {
            start_ms: record.start_ms,
            size,
            inside_port: event.key.inside_port,
        });
        series.connections += 1;
        series.last_start_ms = series.last_start_ms.max(record.start_ms);
        series.destination = event.conversation.destination;
        series.add_totals(event);
        series.changed = true;
        let due = series.connections >= self.min_occurrences
            && (series.connections - self.min_occurrences).is_multiple_of(RESCORE_EVERY);
        if due {
            self.score_series(&key, event.now_ms, findings);
        }
    }

    /// Scores one series and reports it when it is over the threshold and due.
    fn score_series(&mut self, key: &SeriesKey, now_ms: u64, findings: &mut Vec<Finding>) {
        let (min_occurrences, threshold, min_interval_ms) =
            (self.min_occurrences, self.threshold, self.min_interval_ms);
        let Some(series) = self.series.get_mut(key) else {
            return;
        };
        series.changed = false;
        let rhythm = connection_rhythm(series, min_occurrences, min_interval_ms);
        let Some(rhythm) = rhythm.filter(|r| r.score >= threshold) else {
            series.reported_ms = None;
            return;
        };
        if !due(&mut series.reported_ms, now_ms) {
            return;
        }
        let summary = format!(
            "{} connects to {} every {} ({} times, score {:.2})",
            key.inside,
            describe_destination(key.outside, key.outside_port, &series.destination),
            human_interval(rhythm.median_interval_ms),
            series.connections,
            rhythm.score,
        );
        findings.push(Finding {
            rule: NAME,
            step: 0,
            score: alert_score(rhythm.score, threshold),
            summary,
            inside: key.inside,
            outside: key.outside,
            outside_port: key.outside_port,
            inside_port: None,
            proto: key.proto,
            destination: series.destination,
            bytes_out: series.bytes_out,
            bytes_in: series.bytes_in,
            packets_out: series.packets_out,
            packets_in: series.packets_in,
            flows: series.connections,
            first_ms: series.first_ms,
            last_ms: series.last_ms,
            exporter: series.exporter,
            interfaces: series.interfaces,
            attack: ATTACK,
            at_ms: now_ms,
            explain: None,
        });
    }

    /// Adds the record's packet interval, the gap since the previous record and the bytes per
    /// packet to its conversation's samples, once the conversation is slow enough to be
    /// quiet, and scores the conversation.
    fn track_quiet_flow(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let record = event.record;
        if record.packets_out == 0 {
            return;
        }
        // Only a slow conversation is followed: a transfer or a stream never is. Checked
        // before any lookup, so fast traffic costs nothing here. (Samples of an earlier
        // conversation on the same 5-tuple were forgotten in `on_end`.)
        let conversation = event.conversation;
        let average_ms =
            conversation.duration_ms() / conversation.packets_out.max(2).saturating_sub(1);
        if conversation.packets_out < 2 || (average_ms as f64) < self.min_interval_ms {
            return;
        }
        let duration_ms = record.end_ms.saturating_sub(record.start_ms);
        let interval_ms =
            (record.packets_out >= 2).then(|| duration_ms as f64 / (record.packets_out - 1) as f64);
        if self.quiet.len() >= self.max_quiet && !self.quiet.contains_key(event.key) {
            self.quiet_evicted +=
                evict_stalest(&mut self.quiet, |q| q.last_end_ms.unwrap_or(0), |_, _| {}) as u64;
        }
        let flow = self.quiet.entry(*event.key).or_default();
        if let Some(gap_ms) = flow
            .last_end_ms
            .and_then(|end| record.start_ms.checked_sub(end))
        {
            push_capped(&mut flow.gaps, gap_ms as f64, MAX_RECORD_SAMPLES);
        }
        flow.last_end_ms = flow.last_end_ms.max(Some(record.end_ms));
        if let Some(interval_ms) = interval_ms {
            push_capped(&mut flow.intervals, interval_ms, MAX_RECORD_SAMPLES);
        }
        let bytes_per_packet = record.bytes_out as f64 / record.packets_out as f64;
        push_capped(&mut flow.sizes, bytes_per_packet, MAX_RECORD_SAMPLES);
        if conversation.packets_out < self.min_occurrences || flow.sizes.len() < MIN_QUIET_RECORDS {
            return;
        }
        let Some(rhythm) =
            quiet_rhythm(flow, self.min_interval_ms).filter(|r| r.score >= self.threshold)
        else {
            flow.reported_ms = None;
            return;
        };
        if !due(&mut flow.reported_ms, event.now_ms) {
            return;
        }
        let summary = format!(
            "{} keeps a quiet flow to {} sending a packet every {}{} (score {:.2})",
            event.key.inside,
            describe_destination(
                event.key.outside,
                event.key.outside_port,
                &conversation.destination
            ),
            human_interval(rhythm.median_interval_ms),
            if rhythm.certain {
                ""
            } else {
                " within records, with longer silences between them"
            },
            rhythm.score,
        );
        let score = if rhythm.certain {
            alert_score(rhythm.score, self.threshold)
        } else {
            uncertain_score(rhythm.score, self.threshold)
        };
        findings
            .push(Finding::for_conversation(NAME, event, 0, score, summary).with_attack(ATTACK));
    }
}

impl Series {
    fn add_totals(&mut self, event: &RecordEvent<'_>) {
        let record = event.record;
        self.bytes_out = self.bytes_out.saturating_add(record.bytes_out);
        self.bytes_in = self.bytes_in.saturating_add(record.bytes_in);
        self.packets_out = self.packets_out.saturating_add(record.packets_out);
        self.packets_in = self.packets_in.saturating_add(record.packets_in);
        self.first_ms = self.first_ms.min(record.start_ms);
        self.last_ms = self.last_ms.max(record.end_ms);
    }
}

impl Rule for Beacon {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Half the memory to series, a quarter to their starts, a quarter to quiet flows;
    /// each entry counted twice (a map or deque just grown is half full), a quiet flow with
    /// its three full sample lists.
    fn limit_state(&mut self, max_bytes: u64) {
        let entries = |share: u64, each: usize| {
            usize::try_from(share / (2 * each as u64).max(1)).unwrap_or(usize::MAX)
        };
        let series = std::mem::size_of::<(SeriesKey, Series)>() + 1;
        let quiet = std::mem::size_of::<(ConversationKey, QuietFlow)>()
            + 1
            + 3 * MAX_RECORD_SAMPLES * std::mem::size_of::<f64>();
        self.max_series = entries(max_bytes / 2, series).clamp(1, MAX_SERIES);
        self.max_stored_starts =
            entries(max_bytes / 4, std::mem::size_of::<Start>()).clamp(1, MAX_STORED_STARTS);
        self.max_quiet = entries(max_bytes / 4, quiet).clamp(1, MAX_QUIET_FLOWS);
    }

    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("series_evicted", self.series_evicted),
            ("quiet_flows_evicted", self.quiet_evicted),
        ]
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        if rule_allows(&self.allow, event.key, event.destination())
            || (self.skip_keepalives && super::keepalive::keepalive(event.key).is_some())
        {
            return;
        }
        self.track_connection(event, findings);
        self.track_quiet_flow(event, findings);
    }

    /// Scores every series that changed since its last score, then forgets stale state.
    fn on_tick(&mut self, now_ms: u64, findings: &mut Vec<Finding>) {
        let changed: Vec<SeriesKey> = self
            .series
            .iter()
            .filter(|(_, s)| s.changed && s.connections >= self.min_occurrences)
            .map(|(key, _)| *key)
            .collect();
        for key in changed {
            self.score_series(&key, now_ms, findings);
        }
        let series_horizon = now_ms.saturating_sub(SERIES_IDLE_MS);
        self.series.retain(|_, s| s.last_start_ms >= series_horizon);
        self.stored_starts = self.series.values().map(|s| s.starts.len()).sum();
        let quiet_horizon = now_ms.saturating_sub(QUIET_IDLE_MS);
        self.quiet
            .retain(|_, q| q.last_end_ms.unwrap_or(0) >= quiet_horizon);
    }

    /// The conversation is over: its quiet-flow samples were scored with its last record.
    fn on_end(
        &mut self,
        key: &ConversationKey,
        _conversation: &Conversation,
        _now_ms: u64,
        _findings: &mut Vec<Finding>,
    ) {
        self.quiet.remove(key);
    }
}

/// The rhythm of a series' connection starts, or `None` before `min_occurrences` or when the
/// connections come faster than `min_interval_ms`.
fn connection_rhythm(
    series: &Series,
    min_occurrences: u64,
    min_interval_ms: f64,
) -> Option<Rhythm> {
    let kept = usize::try_from(min_occurrences)
        .unwrap_or(usize::MAX)
        .min(MAX_STARTS);
    if series.connections < min_occurrences || series.starts.len() < kept.max(2) {
        return None;
    }
    let mut starts: Vec<u64> = series.starts.iter().map(|s| s.start_ms).collect();
    starts.sort_unstable();
    let mut intervals: Vec<f64> = starts.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
    intervals.sort_unstable_by(f64::total_cmp);
    let median_interval_ms = median(&intervals);
    if median_interval_ms < min_interval_ms {
        return None;
    }
    let skew = 1.0 - bowley_skew(&intervals).abs();
    let timing = 1.0 - dispersion(&mut intervals);
    let mut sizes: Vec<f64> = series.starts.iter().map(|s| f64::from(s.size)).collect();
    let size = 1.0 - dispersion(&mut sizes);
    Some(Rhythm {
        score: (timing + skew + size) / 3.0,
        median_interval_ms,
        certain: true,
    })
}

/// The rhythm of a quiet flow's records, or `None` when its packets come faster than
/// `min_interval_ms` (a transfer that has slow moments) or there are too few samples.
fn quiet_rhythm(flow: &QuietFlow, min_interval_ms: f64) -> Option<Rhythm> {
    // Records of several packets carry the rhythm; a flow split into one-packet records
    // shows it only in the silences between them.
    let from_records = flow.intervals.len() >= MIN_QUIET_RECORDS;
    let source = if from_records {
        &flow.intervals
    } else {
        &flow.gaps
    };
    if source.len() < 2 {
        return None;
    }
    let mut intervals: Vec<f64> = source.iter().copied().collect();
    intervals.sort_unstable_by(f64::total_cmp);
    let median_interval_ms = median(&intervals);
    if median_interval_ms < min_interval_ms {
        return None;
    }
    let steadiness = 1.0 - coefficient_of_variation(&intervals).min(1.0);
    let timing = 1.0 - dispersion(&mut intervals);
    let mut sizes: Vec<f64> = flow.sizes.iter().copied().collect();
    let size = 1.0 - dispersion(&mut sizes);
    let mut gaps: Vec<f64> = flow.gaps.iter().copied().collect();
    gaps.sort_unstable_by(f64::total_cmp);
    let gap_ms = median(&gaps);
    let certain = !from_records
        || gaps.is_empty()
        || (gap_ms <= 2.0 * median_interval_ms && 2.0 * gap_ms >= median_interval_ms);
    Some(Rhythm {
        score: (timing + size + steadiness) / 3.0,
        median_interval_ms,
        certain,
    })
}

/// Appends `value`, dropping the oldest to stay within `cap`.
fn push_capped(values: &mut VecDeque<f64>, value: f64, cap: usize) {
    if values.len() >= cap {
        values.pop_front();
    }
    values.push_back(value);
}

/// Whether an over-threshold report is due at `now_ms`: the first time, then every
/// `REPEAT_MS`; records when it was.
fn due(reported_ms: &mut Option<u64>, now_ms: u64) -> bool {
    match *reported_ms {
        Some(at) if now_ms < at.saturating_add(REPEAT_MS) => false,
        _ => {
            *reported_ms = Some(now_ms);
            true
        }
    }
}

/// The alert score of a 0..1 regularity score: 40 (medium) at the threshold up to 79 (high)
/// for a perfect rhythm. A beacon is a lead worth a look, not proof of theft.
fn alert_score(score: f64, threshold: f64) -> u8 {
    (40.0 + 39.0 * above_threshold(score, threshold)).round() as u8
}

/// The alert score of an uncertain rhythm: 20 to 39, low severity.
fn uncertain_score(score: f64, threshold: f64) -> u8 {
    (20.0 + 19.0 * above_threshold(score, threshold)).round() as u8
}

/// Where `score` lies between the threshold (0) and a perfect 1 (1).
fn above_threshold(score: f64, threshold: f64) -> f64 {
    let span = 1.0 - threshold;
    if span > 0.0 {
        ((score - threshold) / span).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

/// An interval for summaries: "60 s", "15 min", "2.5 h".
fn human_interval(ms: f64) -> String {
    let s = ms / 1000.0;
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::feed;
    use crate::flow::{FlowTable, Oriented};

    const MIN: u64 = 60_000;
    /// 2024-03-12 08:00 UTC.
    const T0: u64 = 1_710_230_400_000;

    /// Feeds records through a real flow table (stitching, idle timeout) into the rule,
    /// ending conversations the table ends.
    struct Harness {
        table: FlowTable,
        rule: Beacon,
        destination: Destination,
        findings: Vec<Finding>,
    }

    impl Harness {
        fn new(config: BeaconConfig) -> Self {
            Harness {
                table: FlowTable::new(100_000, 1800, 0),
                rule: Beacon::new(&config),
                destination: Destination {
                    country: Some("RU".parse().unwrap()),
                    foreign: true,
                    ..Default::default()
                },
                findings: Vec::new(),
            }
        }

        fn feed(&mut self, record: Oriented) {
            let (destination, now_ms) = (self.destination, record.end_ms);
            let findings = &mut self.findings;
            feed(
                &mut self.rule,
                &mut self.table,
                &record,
                destination,
                now_ms,
                false,
                findings,
            );
        }
    }

    /// A record of `inside:port -> outside:port`; `packets` and `bytes` go out when
    /// `outbound`, else they are the reply.
    #[allow(clippy::too_many_arguments)]
    fn record(
        inside: &str,
        inside_port: u16,
        outside: &str,
        outside_port: u16,
        proto: u8,
        outbound: bool,
        packets: u64,
        bytes: u64,
        start_ms: u64,
        end_ms: u64,
    ) -> Oriented {
        let (bytes_out, packets_out, bytes_in, packets_in) = if outbound {
            (bytes, packets, 0, 0)
        } else {
            (0, 0, bytes, packets)
        };
        Oriented {
            inside: inside.parse().unwrap(),
            outside: outside.parse().unwrap(),
            inside_port,
            outside_port,
            proto,
            bytes_out,
            bytes_in,
            packets_out,
            packets_in,
            start_ms,
            end_ms,
            outside_asn: 0,
            exporter: "127.0.0.1".parse().unwrap(),
            tcp_flags: 0,
            from_inside: true,
            continues: false,
            ends: false,
            // The router's ifIndexes, which the findings pass on to name in the alert.
            interfaces: InterfaceRef {
                domain: (crate::decode::FlowKind::NetflowV9, 0),
                in_if: 3,
                out_if: 7,
            },
        }
    }

    /// Deterministic jitter in -1500..=1500 ms (SplitMix64 of `i`).
    fn jitter(i: u64) -> i64 {
        let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x % 3001) as i64 - 1500
    }

    /// One connection as a unidirectional exporter reports it: the request record, then
    /// the reply record.
    fn connection(h: &mut Harness, port: u16, start_ms: u64, out_bytes: u64, in_bytes: u64) {
        h.feed(record(
            "10.10.30.7",
            port,
            "185.220.101.45",
            443,
            6,
            true,
            6,
            out_bytes,
            start_ms,
            start_ms + 132,
        ));
        h.feed(record(
            "10.10.30.7",
            port,
            "185.220.101.45",
            443,
            6,
            false,
            4,
            in_bytes,
            start_ms,
            start_ms + 132,
        ));
    }

    #[test]
    fn c1_a_connection_every_minute_is_a_beacon() {
        let mut h = Harness::new(BeaconConfig::default());
        for i in 0..120u64 {
            let start = (T0 as i64 + 30_000 + (i * MIN) as i64 + jitter(i)) as u64;
            connection(&mut h, 40_000 + i as u16, start, 562, 322);
            if i == 18 {
                assert!(h.findings.is_empty(), "19 connections are too few to judge");
            }
        }
        // Scored at 20 connections, then every 10 more; reported once (then hourly).
        assert_eq!(h.findings.len(), 2, "{:#?}", h.findings);
        let first = &h.findings[0];
        assert_eq!(
            (first.rule, first.flows, first.outside_port, first.proto),
            (NAME, 20, 443, 6)
        );
        assert_eq!(first.bytes_out, 20 * 562);
        assert_eq!(
            first.bytes_in,
            19 * 322,
            "the 20th reply comes after the score"
        );
        assert!(
            (60..=79).contains(&first.score),
            "high severity: {}",
            first.score
        );
        assert!(first.summary.starts_with(
            "10.10.30.7 connects to 185.220.101.45:443 (RU) every 60 s (20 times, score 0.9"
        ));
        assert_eq!(first.attack, ATTACK);
        assert_eq!((first.interfaces.in_if, first.interfaces.out_if), (3, 7));
        assert_eq!(h.findings[1].flows, 80, "repeated an hour later");
    }

    #[test]
    fn fires_just_over_the_threshold_not_just_under() {
        // Starts exactly a minute apart (timing and skew terms 1); sizes whose MAD / median is
        // 0.57 give (1 + 1 + 0.43) / 3 = 0.81, 0.63 give 0.79; the threshold is 0.8.
        for (spread, fires) in [(570u64, true), (630, false)] {
            let mut h = Harness::new(BeaconConfig::default());
            let sizes = [1000 - spread; 7]
                .into_iter()
                .chain([1000; 6])
                .chain([1000 + spread; 7]);
            for (i, size) in sizes.enumerate() {
                let start = T0 + i as u64 * MIN;
                h.feed(record(
                    "10.10.30.7",
                    40_000 + i as u16,
                    "185.220.101.45",
                    443,
                    6,
                    true,
                    6,
                    size,
                    start,
                    start + 100,
                ));
            }
            assert_eq!(h.findings.len(), usize::from(fires), "spread {spread}");
            if fires {
                assert!(
                    h.findings[0].summary.ends_with("(20 times, score 0.81)"),
                    "{}",
                    h.findings[0].summary
                );
                assert_eq!(h.findings[0].score, 42, "40 + 39 * (0.81 - 0.8) / 0.2");
            }
        }
    }

    #[test]
    fn a_series_that_becomes_regular_between_scores_is_reported_on_tick() {
        let mut h = Harness::new(BeaconConfig::default());
        // 20 connections with MAD / median 0.63 (score 0.79), then 8 of the median size: at
        // 28 connections, between record-path scores, the MAD halves (score 0.90).
        let sizes = [370u64; 7]
            .into_iter()
            .chain([1000; 6])
            .chain([1630; 7])
            .chain([1000; 8]);
        for (i, size) in sizes.enumerate() {
            let start = T0 + i as u64 * MIN;
            h.feed(record(
                "10.10.30.7",
                40_000 + i as u16,
                "185.220.101.45",
                443,
                6,
                true,
                6,
                size,
                start,
                start + 100,
            ));
        }
        assert!(h.findings.is_empty());
        h.rule.on_tick(T0 + 28 * MIN, &mut h.findings);
        assert_eq!(h.findings.len(), 1);
        assert_eq!(
            (h.findings[0].flows, h.findings[0].at_ms),
            (28, T0 + 28 * MIN)
        );
        h.rule.on_tick(T0 + 29 * MIN, &mut h.findings);
        assert_eq!(h.findings.len(), 1, "nothing changed, nothing rescored");
    }

    #[test]
    fn irregular_browsing_is_not_a_beacon() {
        let mut h = Harness::new(BeaconConfig::default());
        let mut at = T0;
        for i in 0..200u64 {
            // Gaps from seconds to many minutes, pages of every size.
            let gap = 2_000 + (i.wrapping_mul(7919) % 97) * (i % 7 + 1) * 3_000;
            at += gap;
            let size = 500 + (i.wrapping_mul(104_729) % 50_000);
            h.feed(record(
                "10.10.1.40",
                30_000 + i as u16,
                "91.198.174.192",
                443,
                6,
                true,
                12,
                size,
                at,
                at + 800,
            ));
        }
        h.rule.on_tick(at + MIN, &mut h.findings);
        assert!(h.findings.is_empty(), "{:#?}", h.findings.first());
    }

    #[test]
    fn bursts_of_parallel_connections_are_too_fast() {
        let mut h = Harness::new(BeaconConfig::default());
        // A page load every 5 s opening 6 identical connections: perfectly regular sizes,
        // but the median gap (0 s) is under quiet_min_interval_s.
        for i in 0..60u64 {
            let at = T0 + (i / 6) * 5_000 + i % 6;
            h.feed(record(
                "10.10.1.40",
                30_000 + i as u16,
                "151.101.65.140",
                443,
                6,
                true,
                10,
                2000,
                at,
                at + 300,
            ));
        }
        h.rule.on_tick(T0 + MIN, &mut h.findings);
        assert!(h.findings.is_empty());
    }

    /// C2 as softflowd split it: one packet each way every 60 s, records of 6-9 minutes
    /// (and a short last one), the reply direction in records of its own.
    const C2_SOFTFLOWD_S: [u64; 16] = [
        420, 540, 360, 360, 420, 420, 360, 360, 480, 480, 420, 360, 420, 360, 420, 60,
    ];

    fn quiet_flow(h: &mut Harness, durations_s: &[u64]) {
        let mut at = T0 + 44_000;
        for &duration_s in durations_s {
            let packets = duration_s / 60 + 1;
            let (start, end) = (at, at + duration_s * 1000);
            h.feed(record(
                "10.10.30.8",
                40_000,
                "91.108.56.130",
                443,
                17,
                true,
                packets,
                packets * 124,
                start,
                end,
            ));
            h.feed(record(
                "10.10.30.8",
                40_000,
                "91.108.56.130",
                443,
                17,
                false,
                packets,
                packets * 92,
                start,
                end,
            ));
            at = end + MIN;
        }
    }

    #[test]
    fn c2_a_quiet_flow_with_a_packet_a_minute_is_a_beacon() {
        let mut h = Harness::new(BeaconConfig::default());
        quiet_flow(&mut h, &C2_SOFTFLOWD_S);
        // Scored from the third outbound record (8 + 10 + 7 = 25 packets) on, reported then
        // and again an hour later (for the suppressor to drop within its cooldown).
        let seen: Vec<(u64, u64)> = h
            .findings
            .iter()
            .map(|f| (f.flows, f.packets_out))
            .collect();
        assert_eq!(seen, vec![(5, 25), (21, 88)]);
        let f = &h.findings[0];
        assert_eq!((f.proto, f.packets_out, f.flows), (17, 25, 5));
        assert_eq!(
            f.summary,
            "10.10.30.8 keeps a quiet flow to 91.108.56.130:443 (RU) sending a packet every 60 s (score 1.00)"
        );
        assert_eq!(f.score, 79);
        assert_eq!(h.rule.quiet.len(), 1);
        let key = record(
            "10.10.30.8",
            40_000,
            "91.108.56.130",
            443,
            17,
            true,
            0,
            0,
            0,
            0,
        )
        .key();
        let conversation = *h.table.get(&key).unwrap();
        h.rule
            .on_end(&key, &conversation, T0 + 8_000_000, &mut h.findings);
        assert!(
            h.rule.quiet.is_empty(),
            "an ended conversation is forgotten"
        );
    }

    #[test]
    fn c2_as_pmacct_splits_it() {
        let mut h = Harness::new(BeaconConfig::default());
        let mut durations = [360u64; 17];
        durations[16] = 0;
        quiet_flow(&mut h, &durations);
        let seen: Vec<u64> = h.findings.iter().map(|f| f.packets_out).collect();
        assert_eq!(seen, vec![21, 84]);
    }

    #[test]
    fn b4_a_keepalive_every_quarter_hour_is_not_reported() {
        // 10.10.5.30:52311 -> 17.57.146.20:5223: four 15-minute records, 19 packets out.
        for packets in [[7u64, 4, 4, 4, 0], [7, 4, 3, 3, 2]] {
            let mut h = Harness::new(BeaconConfig::default());
            let bytes = [945u64, 266, 266, 266, 133];
            let mut at = T0 + 59_000;
            for (i, &p) in packets.iter().enumerate().filter(|(_, p)| **p > 0) {
                let end = at + if i == 4 { 110 } else { 900_000 };
                h.feed(record(
                    "10.10.5.30",
                    52311,
                    "17.57.146.20",
                    5223,
                    6,
                    true,
                    p,
                    bytes[i],
                    at,
                    end,
                ));
                h.feed(record(
                    "10.10.5.30",
                    52311,
                    "17.57.146.20",
                    5223,
                    6,
                    false,
                    p,
                    186,
                    at,
                    end,
                ));
                at = end + 900_000;
            }
            h.rule.on_tick(at, &mut h.findings);
            assert!(h.findings.is_empty(), "{:#?}", h.findings);
        }
    }

    #[test]
    fn c2_as_a_record_per_packet() {
        // An exporter whose inactive timeout (15 s) is shorter than the beacon's interval
        // sends each packet in a record of its own; the table stitches them.
        let mut h = Harness::new(BeaconConfig::default());
        for i in 0..120u64 {
            let at = T0 + i * MIN;
            h.feed(record(
                "10.10.30.8",
                40_000,
                "91.108.56.130",
                443,
                17,
                true,
                1,
                124,
                at,
                at,
            ));
            h.feed(record(
                "10.10.30.8",
                40_000,
                "91.108.56.130",
                443,
                17,
                false,
                1,
                92,
                at + 40,
                at + 40,
            ));
        }
        let seen: Vec<u64> = h.findings.iter().map(|f| f.packets_out).collect();
        assert_eq!(seen, vec![20, 80]);
        assert!(
            h.findings[0]
                .summary
                .ends_with("sending a packet every 60 s (score 1.00)")
        );
        let flow = h.rule.quiet.values().next().unwrap();
        assert_eq!(
            (flow.sizes.len(), flow.gaps.len()),
            (MAX_RECORD_SAMPLES, MAX_RECORD_SAMPLES)
        );
    }

    #[test]
    fn push_vpn_and_ping_keepalives_are_not_followed() {
        for (outside, port, proto) in [
            ("17.57.146.20", 5223, 6),
            ("142.250.27.188", 5228, 6),
            ("5.255.255.77", 51820, 17),
        ] {
            for skip in [true, false] {
                let mut h = Harness::new(BeaconConfig {
                    skip_keepalive_services: skip,
                    ..BeaconConfig::default()
                });
                // A packet a minute for two hours, in one-packet records.
                for i in 0..120u64 {
                    let at = T0 + i * MIN;
                    h.feed(record(
                        "10.10.5.30",
                        52311,
                        outside,
                        port,
                        proto,
                        true,
                        1,
                        124,
                        at,
                        at,
                    ));
                }
                assert_eq!(h.findings.is_empty(), skip, "{outside}:{port} {skip}");
            }
        }
    }

    #[test]
    fn a_keepalive_every_quarter_hour_for_ten_hours_is_low_at_most() {
        // Records of 15 min with a keepalive pair at each end ("a packet every 300 s"), then
        // 15 min of silence: the gaps say the rhythm is not a steady packet rate. (To an
        // unknown host: to Apple's push service it is not followed at all, below.)
        let mut h = Harness::new(BeaconConfig::default());
        let mut at = T0;
        for _ in 0..20 {
            let end = at + 900_000;
            h.feed(record(
                "10.10.5.30",
                52311,
                "198.51.100.20",
                5223,
                6,
                true,
                4,
                266,
                at,
                end,
            ));
            at = end + 900_000;
        }
        let seen: Vec<(u64, u8)> = h
            .findings
            .iter()
            .map(|f| (f.packets_out, f.score))
            .collect();
        // Low from the fifth record (20 packets), repeated hourly (every other record).
        let expected: Vec<(u64, u8)> = (0..8).map(|i| (20 + 8 * i, 39)).collect();
        assert_eq!(seen, expected);
        assert!(
            h.findings[0].summary.ends_with(
                "every 5 min within records, with longer silences between them (score 1.00)"
            ),
            "{}",
            h.findings[0].summary
        );
        let flow = h.rule.quiet.values().next().unwrap();
        assert_eq!(
            (flow.sizes.len(), flow.intervals.len(), flow.gaps.len()),
            (20, 20, 19)
        );
    }

    #[test]
    fn c2_sampled_one_in_ten_is_low() {
        // softflowd -s 10: the outbound records that had a sampled packet, counters x10.
        let records = [
            (0, 360, 10),
            (960, 1380, 10),
            (1500, 1980, 20),
            (2220, 2700, 20),
            (4140, 4680, 20),
            (6600, 6960, 20),
        ];
        let mut h = Harness::new(BeaconConfig::default());
        for (start_s, end_s, packets) in records {
            let (start, end) = (T0 + 165_000 + start_s * 1000, T0 + 165_000 + end_s * 1000);
            h.feed(record(
                "10.10.30.8",
                40_000,
                "91.108.56.130",
                443,
                17,
                true,
                packets,
                packets * 124,
                start,
                end,
            ));
        }
        assert_eq!(h.findings.len(), 1, "{:#?}", h.findings);
        assert!(h.findings[0].score < 40, "{}", h.findings[0].score);
        assert!(
            h.findings[0]
                .summary
                .contains("sending a packet every 40 s within records, with longer silences"),
            "{}",
            h.findings[0].summary
        );
    }

    #[test]
    fn a_bulk_transfer_never_becomes_a_quiet_flow() {
        let mut h = Harness::new(BeaconConfig::default());
        for i in 0..24u64 {
            let start = T0 + i * 300_000;
            h.feed(record(
                "10.10.20.15",
                50122,
                "5.255.255.77",
                443,
                6,
                true,
                500,
                25_000_000,
                start,
                start + 300_000,
            ));
        }
        assert!(h.rule.quiet.is_empty());
        assert!(h.findings.is_empty());
    }

    #[test]
    fn the_rules_allow_list_silences_it() {
        let mut config = BeaconConfig::default();
        config.allow.countries = vec!["RU".parse().unwrap()];
        let mut h = Harness::new(config);
        for i in 0..40u64 {
            connection(&mut h, 40_000 + i as u16, T0 + i * MIN, 562, 322);
        }
        quiet_flow(&mut h, &C2_SOFTFLOWD_S);
        h.rule.on_tick(T0 + 3 * 3_600_000, &mut h.findings);
        assert!(h.findings.is_empty());
        assert!(h.rule.series.is_empty() && h.rule.quiet.is_empty());
    }

    #[test]
    fn state_stays_bounded() {
        let mut h = Harness::new(BeaconConfig::default());
        // Connections to 70,000 different services, then slow records on 20,000 flows.
        for i in 0..70_000u64 {
            let outside = format!("100.{}.{}.1", 64 + i / 256 % 64, i % 256);
            let at = T0 + i;
            h.feed(record(
                "10.0.0.1",
                1000,
                &outside,
                443 + (i / 16_384) as u16,
                6,
                true,
                1,
                60,
                at,
                at,
            ));
        }
        assert!(h.rule.series.len() <= MAX_SERIES);
        assert!(h.rule.series_evicted >= 70_000 - MAX_SERIES as u64);
        let held: usize = h.rule.series.values().map(|s| s.starts.len()).sum();
        assert_eq!(h.rule.stored_starts, held);
        for i in 0..20_000u64 {
            let at = T0 + 100_000 + i;
            h.feed(record(
                "10.0.0.2",
                (i % 60_000) as u16,
                "91.108.56.130",
                443,
                17,
                true,
                2,
                200,
                at,
                at + 60_000,
            ));
        }
        assert!(h.rule.quiet.len() <= MAX_QUIET_FLOWS);
        assert!(h.rule.quiet_evicted > 0);
        h.rule.on_tick(T0 + 7 * 3_600_000, &mut h.findings);
        assert!(h.rule.series.is_empty() && h.rule.quiet.is_empty());
        assert!(h.findings.is_empty());
    }

    #[test]
    fn hostile_counters_and_times_do_not_panic() {
        let mut h = Harness::new(BeaconConfig {
            min_occurrences: 4,
            score_threshold: 0.0,
            ..BeaconConfig::default()
        });
        for i in 0..30u64 {
            let at = u64::MAX - 1000 + i;
            let mut r = record(
                "10.0.0.3",
                1000 + i as u16,
                "91.108.56.130",
                443,
                17,
                true,
                u64::MAX,
                u64::MAX,
                at,
                at - 5,
            );
            r.bytes_in = u64::MAX;
            h.feed(r);
            h.feed(record(
                "10.0.0.3",
                7,
                "91.108.56.130",
                443,
                17,
                true,
                2 + i,
                0,
                0,
                u64::MAX,
            ));
            h.feed(record(
                "10.0.0.3",
                8,
                "91.108.56.130",
                443,
                17,
                true,
                2,
                100,
                5,
                5,
            ));
        }
        h.rule.on_tick(u64::MAX, &mut h.findings);
        h.rule.on_tick(0, &mut h.findings);
        assert!(
            !h.findings.is_empty(),
            "extreme counters still make findings"
        );
        for f in &h.findings {
            assert!((40..=79).contains(&f.score));
        }
    }

    #[test]
    fn scores_and_intervals() {
        assert_eq!(alert_score(0.8, 0.8), 40);
        assert_eq!(alert_score(1.0, 0.8), 79);
        assert_eq!(alert_score(1.0, 1.0), 79);
        assert_eq!(human_interval(60_000.0), "60 s");
        assert_eq!(human_interval(900_000.0), "15 min");
        assert_eq!(human_interval(9_000_000.0), "2.5 h");
    }
}
