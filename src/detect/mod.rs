//! detect: rules over conversations on event time. Each rule sees every oriented record
//! with its stitched conversation and the destination's facts, keeps whatever state it
//! needs, and reports `Finding`s; suppression turns findings into `Alert`s.
//!
//! A `Detector` belongs to one flow-table shard (sharded by inside host), so per-host state
//! is local and nothing is locked. All time is event time: the same records in the same
//! order give the same alerts, live or replayed.

pub mod alert;
pub mod beacon;
mod bounded;
pub mod bulk_egress;
pub mod dns_tunnel;
pub mod fold;
pub mod keepalive;
pub mod long_lived_foreign;
pub mod low_and_slow;
pub mod new_destination;
pub mod profile;
pub mod risk;
mod slab_map;
pub mod spread_egress;
pub mod state;
pub mod suppress;
pub mod watchlist;
pub mod window;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use alert::{Alert, Severity};
use beacon::BeaconConfig;
use bulk_egress::BulkEgressConfig;
use dns_tunnel::DnsTunnelConfig;
use long_lived_foreign::LongLivedForeignConfig;
use low_and_slow::LowAndSlowConfig;
use new_destination::NewDestinationConfig;
use profile::{EgressAnomalyConfig, ProfileConfig, RoleChangeConfig};
use spread_egress::SpreadEgressConfig;
pub use state::{CheckpointSnapshot, ParsedCheckpoint};
use watchlist::WatchlistConfig;

use crate::decode::directory::InterfaceRef;
use crate::enrich::{Allow, Destination};
use crate::flow::{Conversation, ConversationId, ConversationKey, Oriented, Update};

/// The rules' settings (`[rules]` and a table per rule), each rule's beside its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Memory each rule's per-key state (windows, series, pairs) may take, over all shards.
    /// A rule at its bound evicts its stalest keys and counts them in
    /// `exflow_detect_state_dropped_total{rule=...}`.
    pub max_state_bytes: u64,
    pub long_lived_foreign: LongLivedForeignConfig,
    pub bulk_egress: BulkEgressConfig,
    pub new_destination: NewDestinationConfig,
    pub beacon: BeaconConfig,
    pub dns_tunnel: DnsTunnelConfig,
    pub watchlist: WatchlistConfig,
    /// The per-host profiles `role_change` and `egress_anomaly` judge hosts by.
    pub profile: ProfileConfig,
    pub role_change: RoleChangeConfig,
    pub egress_anomaly: EgressAnomalyConfig,
    pub spread_egress: SpreadEgressConfig,
    pub low_and_slow: LowAndSlowConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            max_state_bytes: 64 << 20,
            long_lived_foreign: LongLivedForeignConfig::default(),
            bulk_egress: BulkEgressConfig::default(),
            new_destination: NewDestinationConfig::default(),
            beacon: BeaconConfig::default(),
            dns_tunnel: DnsTunnelConfig::default(),
            watchlist: WatchlistConfig::default(),
            profile: ProfileConfig::default(),
            role_change: RoleChangeConfig::default(),
            egress_anomaly: EgressAnomalyConfig::default(),
            spread_egress: SpreadEgressConfig::default(),
            low_and_slow: LowAndSlowConfig::default(),
        }
    }
}

/// The rules, in a fixed order (also the order of metric labels).
pub const RULES: [&str; 10] = [
    "long_lived_foreign",
    "bulk_egress",
    "new_destination",
    "beacon",
    "dns_tunnel",
    "watchlist",
    profile::ROLE_CHANGE,
    profile::EGRESS_ANOMALY,
    spread_egress::NAME,
    low_and_slow::NAME,
];

/// What a rule sees for each record.
#[derive(Debug, Clone, Copy)]
pub struct RecordEvent<'a> {
    pub record: &'a Oriented,
    pub key: &'a ConversationKey,
    /// The conversation's place in the shard's table (state kept beside it is found by it).
    pub id: ConversationId,
    /// The conversation after the record was stitched in.
    pub conversation: &'a Conversation,
    pub update: Update,
    /// Event time: the clock of the record's exporter (the latest flow end it sent; see
    /// `flow::clock`). A late record ends before it: windows take it at its own time.
    pub now_ms: u64,
    /// The inside host is a configured resolver.
    pub from_resolver: bool,
}

impl RecordEvent<'_> {
    pub fn destination(&self) -> &Destination {
        &self.conversation.destination
    }
}

/// A rule's report, before suppression. Counters describe what the rule looked at (a
/// conversation, or a host's traffic to a destination over a window).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    /// Ladder step, 0 for the first report; each higher step is an escalation.
    pub step: u8,
    pub score: u8,
    pub summary: String,
    pub inside: IpAddr,
    pub outside: IpAddr,
    pub outside_port: u16,
    /// The inside port when the finding is about one conversation (its Community ID).
    pub inside_port: Option<u16>,
    pub proto: u8,
    pub destination: Destination,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub flows: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub exporter: IpAddr,
    /// The observation domain and ifIndexes of the record that crossed the line (a
    /// beacon series' first record, a DNS pair's latest), to name the alert's interfaces.
    pub interfaces: InterfaceRef,
    pub attack: &'static [&'static str],
    /// Event time of the finding.
    pub at_ms: u64,
    /// Baseline, host role and evidence, for the rules that have them.
    pub explain: Option<Box<alert::Explanation>>,
}

impl Finding {
    /// A finding about one conversation, with its counters.
    pub fn for_conversation(
        rule: &'static str,
        event: &RecordEvent<'_>,
        step: u8,
        score: u8,
        summary: String,
    ) -> Self {
        let (key, c) = (event.key, event.conversation);
        Finding {
            rule,
            step,
            score,
            summary,
            inside: key.inside,
            outside: key.outside,
            outside_port: key.outside_port,
            inside_port: Some(key.inside_port),
            proto: key.proto,
            destination: c.destination,
            bytes_out: c.bytes_out,
            bytes_in: c.bytes_in,
            packets_out: c.packets_out,
            packets_in: c.packets_in,
            flows: u64::from(c.flows),
            first_ms: c.first_ms,
            last_ms: c.last_ms,
            exporter: event.record.exporter,
            interfaces: event.record.interfaces,
            attack: &[],
            at_ms: event.now_ms,
            explain: None,
        }
    }

    pub fn with_attack(mut self, attack: &'static [&'static str]) -> Self {
        self.attack = attack;
        self
    }
}

/// One detection rule. Implementations keep their own bounded state.
pub trait Rule: Send {
    fn name(&self) -> &'static str;

    /// Called for every record of a conversation the global allow-list does not match.
    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>);

    /// Touches the state `on_record` will need for this record, so the misses of a batch
    /// overlap (optional: rules with per-record lookups in big maps implement it). The
    /// destination is its conversation's, when the conversation is already in the table.
    fn warm(&self, _record: &Oriented, _destination: Option<&Destination>) {}

    /// The widths (ms) of the time buckets in which this rule sums a host's traffic, when
    /// it takes a conversation's records summed ([`fold`]) rather than one at a time
    /// (`None`). Called once, before any record.
    fn fold_widths_ms(&self) -> Option<Vec<u64>> {
        None
    }

    /// Called as event time advances (every `flow.tick_s`) and at the end of input, to
    /// close windows and forget old state.
    fn on_tick(&mut self, _now_ms: u64, _findings: &mut Vec<Finding>) {}

    /// Called when a conversation ends (idle, evicted, end of input).
    fn on_end(
        &mut self,
        _key: &ConversationKey,
        _conversation: &Conversation,
        _now_ms: u64,
        _findings: &mut Vec<Finding>,
    ) {
    }

    /// State the rule dropped to stay within its bounds, by kind: (kind, count).
    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Bounds the rule's per-key state to about `max_bytes` (its share of
    /// `rules.max_state_bytes` in this shard); called once, before any record.
    fn limit_state(&mut self, _max_bytes: u64) {}

    /// Records may arrive up to `lateness_ms` behind the tick's `now_ms`
    /// (`flow.max_lateness_s`): a rule whose ticks slide windows keeps what such records
    /// still belong to. Called once, before any record.
    fn allow_lateness(&mut self, _lateness_ms: u64) {}

    /// What the rule learned that a restart should not forget (`None`: nothing).
    fn save_state(&self) -> Option<serde_json::Value> {
        None
    }

    /// What [`Rule::save_state`] saves, copied now and encoded later on another thread: a
    /// rule with much state (a profile per host) copies its plain data, which is much
    /// cheaper than building a JSON value of it. By default the value itself.
    fn snapshot_state(&self) -> Option<StateSnapshot> {
        let value = self.save_state()?;
        Some(Box::new(move |out| serde_json::to_writer(out, &value)))
    }

    /// Takes back what [`Rule::save_state`] gave, for the inside hosts `keep` accepts (this
    /// shard's) and within the rule's bounds; returns how many entries it restored.
    fn load_state(&mut self, _state: serde_json::Value, _keep: &dyn Fn(IpAddr) -> bool) -> usize {
        0
    }

    /// [`load_state`](Rule::load_state) of a state decoded on another thread
    /// ([`Detector::parse_checkpoint`]): only the taking in runs on the rule's.
    fn load_parsed(&mut self, _state: ParsedState, _keep: &dyn Fn(IpAddr) -> bool) -> usize {
        0
    }
}

/// A rule's saved state decoded into the rule's own type, to be taken by
/// [`Rule::load_parsed`].
pub type ParsedState = Box<dyn std::any::Any + Send>;

/// A copy of what a rule saves, encoded to its [`Rule::save_state`] JSON later, on
/// another thread: a scale-out checkpoint's writer (`crate::scaleout::checkpoint`).
pub type StateSnapshot = Box<dyn FnOnce(&mut Vec<u8>) -> serde_json::Result<()> + Send>;

/// Whether a rule's own allow-list matches the event's conversation.
pub fn rule_allows(allow: &Allow, key: &ConversationKey, destination: &Destination) -> bool {
    allow.allows(key.inside, key.outside, key.outside_port, destination)
}

/// Score 0-100 growing with the logarithm of `value / threshold`: `base` at the
/// threshold, `per_decade` more for each tenfold, capped at 100.
pub fn log_score(value: u64, threshold: u64, base: f64, per_decade: f64) -> u8 {
    let ratio = value as f64 / threshold.max(1) as f64;
    (base + per_decade * ratio.max(1.0).log10()).clamp(0.0, 100.0) as u8
}

/// Human-readable byte counts for summaries: "600.4 MB".
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// The place of a destination in a summary: "5.255.255.77:443 (RU, AS...)".
pub fn describe_destination(outside: IpAddr, port: u16, destination: &Destination) -> String {
    let endpoint = std::net::SocketAddr::new(outside, port);
    match (destination.country, destination.asn.map(|asn| asn.get())) {
        (Some(cc), Some(asn)) => format!("{endpoint} ({cc}, AS{asn})"),
        (Some(cc), None) => format!("{endpoint} ({cc})"),
        (None, Some(asn)) => format!("{endpoint} (AS{asn})"),
        (None, None) => endpoint.to_string(),
    }
}

/// The rules of one shard and the suppression in front of the sink.
pub struct Detector {
    rules: Vec<Box<dyn Rule>>,
    /// Which of `rules` take a conversation's records summed (`fold`).
    folding: Vec<bool>,
    folds: fold::Folds,
    suppressor: suppress::Suppressor,
    /// Each host's alerts of the day, for its risk score.
    risk: risk::Risk,
    findings: Vec<Finding>,
}

impl Detector {
    /// The enabled rules of `r`, for one of `shards` shards (which share
    /// `r.max_state_bytes`); windows stay open `max_lateness_s` for late records.
    pub fn new(
        r: &RulesConfig,
        suppression: &suppress::SuppressionConfig,
        max_lateness_s: u64,
        shards: usize,
    ) -> Self {
        let mut rules: Vec<Box<dyn Rule>> = Vec::new();
        if r.long_lived_foreign.enabled {
            rules.push(Box::new(long_lived_foreign::LongLivedForeign::new(
                &r.long_lived_foreign,
            )));
        }
        if r.bulk_egress.enabled {
            rules.push(Box::new(bulk_egress::BulkEgress::new(&r.bulk_egress)));
        }
        if r.new_destination.enabled {
            rules.push(Box::new(new_destination::NewDestination::new(
                &r.new_destination,
            )));
        }
        if r.beacon.enabled {
            rules.push(Box::new(beacon::Beacon::new(&r.beacon)));
        }
        if r.dns_tunnel.enabled {
            // One rule for every window (10 min, and the slow tunnels' hour and day).
            rules.push(Box::new(dns_tunnel::DnsTunnel::new(&r.dns_tunnel)));
        }
        if r.watchlist.enabled {
            rules.push(Box::new(watchlist::Watchlist::new(&r.watchlist)));
        }
        if r.role_change.enabled || r.egress_anomaly.enabled {
            rules.push(Box::new(profile::Profiles::new(
                &r.profile,
                &r.role_change,
                &r.egress_anomaly,
            )));
        }
        if r.spread_egress.enabled {
            rules.push(Box::new(spread_egress::SpreadEgress::new(&r.spread_egress)));
        }
        if r.low_and_slow.enabled {
            rules.push(Box::new(low_and_slow::LowAndSlow::new(&r.low_and_slow)));
        }
        let share = r.max_state_bytes / shards.max(1) as u64;
        let lateness_ms = max_lateness_s.saturating_mul(1000);
        for rule in &mut rules {
            rule.limit_state(share);
            rule.allow_lateness(lateness_ms);
        }
        let widths: Vec<Option<Vec<u64>>> = rules.iter().map(|r| r.fold_widths_ms()).collect();
        Detector {
            rules,
            folding: widths.iter().map(Option::is_some).collect(),
            folds: fold::Folds::new(widths.into_iter().flatten().flatten().collect(), share),
            suppressor: suppress::Suppressor::new(suppression.cooldown_s),
            risk: risk::Risk::default(),
            findings: Vec::new(),
        }
    }

    pub fn on_record(&mut self, event: &RecordEvent<'_>, alerts: &mut Vec<Alert>) {
        if event.destination().allowed {
            return;
        }
        let folded = self.folds.fold(event);
        for (rule, &folding) in self.rules.iter_mut().zip(&self.folding) {
            if !folding {
                rule.on_record(event, &mut self.findings);
            }
        }
        if let Some(held) = folded.earlier {
            self.run_held(event.id, event.key, &held, event.conversation);
        }
        if folded.now {
            self.run_folding(event);
        }
        self.suppress(alerts);
    }

    /// Runs the folding rules on a record, or on held records summed.
    fn run_folding(&mut self, event: &RecordEvent<'_>) {
        for (rule, &folding) in self.rules.iter_mut().zip(&self.folding) {
            if folding {
                rule.on_record(event, &mut self.findings);
            }
        }
    }

    /// Runs the folding rules on `key`'s held records, with its conversation as it is now.
    fn run_held(
        &mut self,
        id: ConversationId,
        key: &ConversationKey,
        held: &fold::Held,
        conversation: &Conversation,
    ) {
        self.run_folding(&RecordEvent {
            record: &held.record,
            key,
            id,
            conversation,
            update: Update::Extended,
            now_ms: held.now_ms,
            from_resolver: held.from_resolver,
        });
    }

    /// Gives the folding rules the held records of the conversations quiet for a while
    /// ([`fold::Folds::take_quiet`]), ahead of the tick at `now_ms` (`conversation` finds
    /// a conversation in the table by id); their alerts are appended to `alerts`.
    pub fn run_quiet_held<'c>(
        &mut self,
        now_ms: u64,
        conversation: impl Fn(ConversationId) -> Option<&'c Conversation>,
        alerts: &mut Vec<Alert>,
    ) {
        let mut folds = std::mem::take(&mut self.folds);
        folds.take_quiet(now_ms, |id, key, held| {
            // A conversation that ended gave its held records then.
            if let Some(conversation) = conversation(id) {
                self.run_held(id, &key, &held, conversation);
            }
        });
        self.folds = folds;
        self.suppress(alerts);
    }

    /// Conversations with records the folding rules have not seen yet.
    pub fn held_conversations(&self) -> usize {
        self.folds.len()
    }

    /// Brings the state the rules keep for this record into the cache (see
    /// [`Rule::warm`]); `conversation` is its conversation, if the table has it. The
    /// folding rules' is not brought in for a record that will most likely be held, the
    /// held records are instead.
    #[inline]
    pub fn warm(&self, record: &Oriented, conversation: Option<(ConversationId, &Conversation)>) {
        let held = conversation.is_some_and(|(id, _)| self.folds.warm(id));
        let destination = conversation.map(|(_, c)| &c.destination);
        for (rule, &folding) in self.rules.iter().zip(&self.folding) {
            if !(folding && held) {
                rule.warm(record, destination);
            }
        }
    }

    pub fn on_tick(&mut self, now_ms: u64, alerts: &mut Vec<Alert>) {
        for rule in &mut self.rules {
            rule.on_tick(now_ms, &mut self.findings);
        }
        self.suppressor.forget_before(now_ms);
        self.risk.forget_before(now_ms);
        self.suppress(alerts);
    }

    pub fn on_end(
        &mut self,
        id: ConversationId,
        key: &ConversationKey,
        conversation: &Conversation,
        now_ms: u64,
        alerts: &mut Vec<Alert>,
    ) {
        if conversation.destination.allowed {
            return;
        }
        if let Some(held) = self.folds.take(id) {
            self.run_held(id, key, &held, conversation);
        }
        for rule in &mut self.rules {
            rule.on_end(key, conversation, now_ms, &mut self.findings);
        }
        self.suppress(alerts);
    }

    fn suppress(&mut self, alerts: &mut Vec<Alert>) {
        for finding in self.findings.drain(..) {
            if let Some(mut alert) = self.suppressor.admit(finding) {
                self.risk.add(&mut alert);
                alerts.push(alert);
            }
        }
    }

    /// Alerts held back by suppression since the start.
    pub fn suppressed(&self) -> u64 {
        self.suppressor.suppressed
    }

    /// Hosts alerted on within the last day, by the band of their risk score.
    pub fn risky_hosts(&self) -> [u64; 4] {
        self.risk.hosts_by_band()
    }

    /// What the rules learned, by rule name, for the state file.
    pub fn save_state(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.rules
            .iter()
            .filter_map(|rule| Some((rule.name(), rule.save_state()?)))
            .collect()
    }

    /// [`save_state`](Self::save_state) copied, to be encoded on another thread.
    pub fn snapshot_state(&self) -> Vec<(&'static str, StateSnapshot)> {
        self.rules
            .iter()
            .filter_map(|rule| Some((rule.name(), rule.snapshot_state()?)))
            .collect()
    }

    /// Gives `rule` back its saved state, for the hosts `keep` accepts; returns how many
    /// entries were restored (0 when the rule is not enabled).
    pub fn load_state(
        &mut self,
        rule: &str,
        state: serde_json::Value,
        keep: &dyn Fn(IpAddr) -> bool,
    ) -> usize {
        match self.rules.iter_mut().find(|r| r.name() == rule) {
            Some(rule) => rule.load_state(state, keep),
            None => 0,
        }
    }

    /// Every rule's dropped state: (rule, kind, count).
    pub fn state_dropped(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.rules
            .iter()
            .flat_map(|rule| {
                rule.state_dropped()
                    .into_iter()
                    .map(move |(kind, n)| (rule.name(), kind, n))
            })
            .chain([("host_risk", "hosts_evicted", self.risk.hosts_evicted)])
            .collect()
    }
}

/// Helpers for the rules' unit tests: events built from one record.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flow::FlowTable;

    /// An outbound record `inside:port -> outside:port` (TCP).
    #[allow(clippy::too_many_arguments)]
    pub fn oriented(
        inside: &str,
        inside_port: u16,
        outside: &str,
        outside_port: u16,
        bytes_out: u64,
        bytes_in: u64,
        start_ms: u64,
        end_ms: u64,
    ) -> Oriented {
        Oriented {
            inside: inside.parse().unwrap(),
            outside: outside.parse().unwrap(),
            inside_port,
            outside_port,
            proto: 6,
            bytes_out,
            bytes_in,
            packets_out: bytes_out.div_ceil(1000),
            packets_in: bytes_in.div_ceil(1000),
            start_ms,
            end_ms,
            outside_asn: 0,
            exporter: "127.0.0.1".parse().unwrap(),
            tcp_flags: 0,
            from_inside: true,
            continues: false,
            ends: false,
            interfaces: Default::default(),
        }
    }

    /// Stitches `record` through `table` into `rule` as the pipeline does: conversations the
    /// table ends go to `on_end`, then the record to `on_record`, at event time `now_ms`.
    pub fn feed(
        rule: &mut dyn Rule,
        table: &mut FlowTable,
        record: &Oriented,
        destination: Destination,
        now_ms: u64,
        from_resolver: bool,
        findings: &mut Vec<Finding>,
    ) {
        let mut ended = Vec::new();
        let (update, id, conversation) =
            table.update(record, || destination, |_, k, c| ended.push((*k, *c)));
        let conversation = *conversation;
        for (key, old) in ended {
            rule.on_end(&key, &old, now_ms, findings);
        }
        let key = record.key();
        let event = RecordEvent {
            record,
            key: &key,
            id,
            conversation: &conversation,
            update,
            now_ms,
            from_resolver,
        };
        rule.on_record(&event, findings);
    }

    /// A foreign (RU) destination.
    pub fn foreign() -> Destination {
        Destination {
            country: Some("RU".parse().unwrap()),
            foreign: true,
            ..Destination::default()
        }
    }

    /// The event of a record that starts its own conversation, to a foreign destination.
    pub fn event_for(record: &Oriented, now_ms: u64) -> RecordEvent<'static> {
        event_with(record, now_ms, foreign())
    }

    pub fn event_with(
        record: &Oriented,
        now_ms: u64,
        destination: Destination,
    ) -> RecordEvent<'static> {
        let mut table = FlowTable::new(10, 3600, 0);
        let (update, id, conversation) = table.update(record, || destination, |_, _, _| {});
        let leaked: &'static (Oriented, ConversationKey, Conversation) =
            Box::leak(Box::new((*record, record.key(), *conversation)));
        RecordEvent {
            record: &leaked.0,
            key: &leaked.1,
            id,
            conversation: &leaked.2,
            update,
            now_ms,
            from_resolver: false,
        }
    }

    #[test]
    fn scores_and_words() {
        assert_eq!(log_score(100, 100, 45.0, 25.0), 45);
        assert_eq!(log_score(1000, 100, 45.0, 25.0), 70);
        assert_eq!(log_score(1, 100, 45.0, 25.0), 45);
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(600_384_929), "600.4 MB");
    }
}
