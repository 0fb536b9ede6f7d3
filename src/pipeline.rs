//! pipeline: the stages joined for one thread: datagrams -> decode -> orient -> flow-table
//! shard -> detect -> alerts, all on event time. `exflow replay` drives it over captures and
//! the daemon over live sockets, so the same datagrams in the same order give the same
//! alerts either way.

use std::net::IpAddr;

use crate::config::Config;
use crate::decode::directory::InterfaceDirectory;
use crate::decode::{DecodeCounters, Decoder, DecoderConfig, FlowRecord, SamplingConfig};
use crate::detect::{Alert, Detector, ParsedCheckpoint, RULES, RecordEvent, Severity};
use crate::enrich::Enricher;
use crate::flow::clock::EventClock;
use crate::flow::{FlowCounters, FlowTable, KeyHash, Lookup, Orientation, Oriented, orient};

/// Alerts counted by rule and severity (the order of [`RULES`] and [`Severity::ALL`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounters(pub [[u64; 4]; RULES.len()]);

impl AlertCounters {
    fn add(&mut self, alert: &Alert) {
        if let Some(rule) = RULES.iter().position(|r| *r == alert.rule) {
            self.0[rule][alert.severity as usize] += 1;
        }
    }

    pub fn merge(&mut self, other: &AlertCounters) {
        for (mine, theirs) in self.0.iter_mut().flatten().zip(other.0.iter().flatten()) {
            *mine += theirs;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().flatten().sum()
    }

    /// (rule, severity, count) for every non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Severity, u64)> + '_ {
        RULES.iter().enumerate().flat_map(move |(r, rule)| {
            Severity::ALL
                .iter()
                .map(move |&s| (*rule, s, self.0[r][s as usize]))
                .filter(|&(_, _, n)| n > 0)
        })
    }
}

pub use crate::sink::RecordTap;

/// Counters of every stage, for summaries and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    pub decode: DecodeCounters,
    pub flow: FlowCounters,
    pub conversations: u64,
    pub alerts: AlertCounters,
    pub suppressed: u64,
    /// Hosts alerted on within the last day, by the severity band of their risk score
    /// (low, medium, high, critical): a gauge.
    pub risky_hosts: [u64; 4],
    /// Conversations whose latest records the folding rules have not seen yet
    /// ([`crate::detect::fold`]): a gauge.
    pub held_conversations: u64,
    /// Datagrams from senders outside `source.exporters`, dropped undecoded.
    pub rejected_datagrams: u64,
}

impl PipelineCounters {
    /// Adds a shard's (or another pipeline half's) counters.
    pub fn merge(&mut self, other: &PipelineCounters) {
        self.decode.merge(&other.decode);
        self.flow.merge(&other.flow);
        self.conversations += other.conversations;
        self.alerts.merge(&other.alerts);
        self.suppressed += other.suppressed;
        for (sum, n) in self.risky_hosts.iter_mut().zip(other.risky_hosts) {
            *sum += n;
        }
        self.held_conversations += other.held_conversations;
        self.rejected_datagrams += other.rejected_datagrams;
    }
}

/// What a shard runs, in order: records, each stamped with its exporter's clock when it
/// arrived (its end, or a later one that exporter already sent), and the ticks of the
/// table clock (see [`crate::flow::clock`]) the ingest broadcasts to every shard when that
/// clock crosses a tick. A record is judged by the rules on its exporter's time; expiry
/// and the rules' windows move on the table clock. Both are decided before sharding: the
/// alerts do not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// `now_ms`: the record's exporter's clock.
    Record { record: Oriented, now_ms: u64 },
    /// `now_ms`: the table clock.
    Tick { now_ms: u64 },
}

/// The front half: datagrams decoded, records oriented and routed to their shard's batch,
/// in arrival order. One per receive worker; it owns the template state of the exporters
/// that worker hears, and their event clocks, which judge each record (too far in the
/// future, too late) and decide the ticks.
pub struct Ingest {
    /// `source.exporters`; `None`: every sender is accepted.
    accepted: Option<crate::enrich::NetSet>,
    rejected_datagrams: u64,
    decoder: Decoder,
    enricher: Enricher,
    tap: Option<Box<dyn RecordTap>>,
    records: Vec<FlowRecord>,
    /// What each shard runs next.
    batches: Vec<Vec<Routed>>,
    /// Every exporter's clock and the table clock.
    clock: EventClock,
    /// Event time of the tables (the table clock as of the last tick decision), ms.
    now_ms: u64,
    next_tick_ms: u64,
    /// The table clock's first value, ms (0: no record accepted yet): where the ticks'
    /// boundaries started, for a consumer of the batches that must tick as the shards do.
    first_ms: u64,
    tick_ms: u64,
    transit_records: u64,
    internal_records: u64,
}

impl Ingest {
    /// An ingest routing to `shards` shards (at least one).
    pub fn new(config: &Config, enricher: Enricher, shards: usize) -> Ingest {
        let decoder_config = DecoderConfig {
            limits: config.decoder,
            sampling: SamplingConfig::from(&config.sampling),
        };
        let accepted = (!config.source.exporters.is_empty())
            .then(|| crate::enrich::NetSet::from_nets(config.source.exporters.iter().copied()));
        Ingest {
            accepted,
            rejected_datagrams: 0,
            decoder: Decoder::new(decoder_config),
            enricher,
            tap: None,
            records: Vec::with_capacity(64),
            batches: vec![Vec::new(); shards.max(1)],
            clock: EventClock::new(
                config.decoder.max_exporters,
                config.flow.max_lateness_s,
                config.flow.max_clock_skew_s,
            ),
            now_ms: 0,
            next_tick_ms: 0,
            first_ms: 0,
            tick_ms: config.flow.tick_s.saturating_mul(1000).max(1),
            transit_records: 0,
            internal_records: 0,
        }
    }

    /// Hands every record to `tap` as well.
    pub fn set_tap(&mut self, tap: Box<dyn RecordTap>) {
        self.tap = Some(tap);
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// Shares the interface names this ingest's decoder learns (options data) with the
    /// shards holding `directory`, for their alerts.
    pub fn share_interface_names(&mut self, directory: InterfaceDirectory) {
        self.decoder.share_interface_names(directory);
    }

    /// The tables' event time as far as this ingest has seen, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The table clock's first value, ms, once a record was accepted: the ticks that
    /// follow are at the crossings of `flow.tick_s` boundaries counted from it.
    pub fn clock_started_ms(&self) -> Option<u64> {
        (self.first_ms > 0).then_some(self.first_ms)
    }

    /// The batch waiting for each shard; the caller runs or sends them and leaves them
    /// empty.
    pub fn batches(&mut self) -> &mut [Vec<Routed>] {
        &mut self.batches
    }

    /// Decodes a datagram and routes its records; one from a sender outside
    /// `source.exporters` is counted and dropped undecoded.
    pub fn push_datagram(&mut self, exporter: IpAddr, received_ns: u64, datagram: &[u8]) {
        if let Some(accepted) = &self.accepted
            && !accepted.contains(exporter)
        {
            self.rejected_datagrams += 1;
            return;
        }
        let mut records = std::mem::take(&mut self.records);
        records.clear();
        let _ = self
            .decoder
            .decode(exporter, received_ns, datagram, &mut records);
        self.route(&records, Some(exporter));
        self.records = records;
    }

    /// Orients decoded records and routes each one that goes from an inside host to the
    /// outside (or back) to its shard, unless its exporter's clock rejects it (counted);
    /// transit and internal ones are counted and go no further. The tap sees every
    /// decoded record, with the names its exporter gave the record's interfaces.
    pub fn push_records(&mut self, records: &[FlowRecord]) {
        self.route(records, None);
    }

    /// [`Ingest::push_records`] of records from the datagrams of `source` (the decoder
    /// keeps interface names by it); `None`: the records' own exporter address.
    fn route(&mut self, records: &[FlowRecord], source: Option<IpAddr>) {
        for record in records {
            let orientation = orient(record, &self.enricher);
            if let Some(tap) = &mut self.tap {
                let inside = match &orientation {
                    Orientation::Outbound(o) => Some(o.inside),
                    _ => None,
                };
                let source = source.unwrap_or(record.sampler_address);
                tap.record(&self.decoder.named(source, record), inside);
            }
            match orientation {
                Orientation::Outbound(oriented) => {
                    let Ok(exporter_ms) = self.clock.accept(
                        oriented.exporter,
                        record.time_received_ns / 1_000_000,
                        oriented.start_ms,
                        oriented.end_ms,
                        self.next_tick_ms,
                    ) else {
                        continue;
                    };
                    self.advance();
                    let shard = shard_of(oriented.inside, self.batches.len());
                    self.batches[shard].push(Routed::Record {
                        record: oriented,
                        now_ms: exporter_ms,
                    });
                }
                Orientation::Transit => self.transit_records += 1,
                Orientation::Internal => self.internal_records += 1,
            }
        }
    }

    /// Moves the tables' event time to the table clock when it is later; every shard gets
    /// a tick when it passes one.
    fn advance(&mut self) {
        let end_ms = self.clock.table_ms();
        if end_ms <= self.now_ms {
            return;
        }
        self.now_ms = end_ms;
        if self.next_tick_ms == 0 {
            self.first_ms = end_ms;
            self.next_tick_ms = next_tick(end_ms, self.tick_ms);
        } else if end_ms >= self.next_tick_ms {
            // One tick at the current time stands for every interval skipped.
            for batch in &mut self.batches {
                batch.push(Routed::Tick { now_ms: end_ms });
            }
            self.next_tick_ms = next_tick(end_ms, self.tick_ms);
        }
    }

    /// End of input: the tap delivers what it buffered.
    pub fn finish(&mut self) {
        if let Some(tap) = &mut self.tap {
            tap.finish();
        }
    }

    /// Decode counters and the records orientation skipped.
    pub fn counters(&self) -> PipelineCounters {
        let mut counters = PipelineCounters {
            decode: self.decoder.totals(),
            ..PipelineCounters::default()
        };
        counters.flow.transit_records = self.transit_records;
        counters.flow.internal_records = self.internal_records;
        counters.flow.clock = self.clock.counters;
        counters.rejected_datagrams = self.rejected_datagrams;
        counters
    }
}

/// The first tick boundary after `now_ms`.
fn next_tick(now_ms: u64, tick_ms: u64) -> u64 {
    now_ms - now_ms % tick_ms + tick_ms
}

/// Records a shard warms ahead of running them: enough to overlap their cache misses,
/// few enough that the first is still cached when it runs.
const WARM_AHEAD: usize = 16;

/// The back half: a slice of the conversation table (by inside host) with its rules.
/// Owned by one thread; no lock is taken per record.
pub struct Shard {
    table: FlowTable,
    detector: Detector,
    enricher: Enricher,
    /// The table clock, ms: as the ticks this shard ran stamped it.
    now_ms: u64,
    /// Ticks before this are repeats (from another receive worker) and skipped.
    next_tick_ms: u64,
    tick_ms: u64,
    alert_counters: AlertCounters,
    /// The names the ingests' decoders learned, to name an alert's interfaces; `None`:
    /// alerts name none.
    interface_names: Option<InterfaceDirectory>,
}

impl Shard {
    /// One of `shards` shards: it holds its share of the conversations and of the rules'
    /// state.
    pub fn new(config: &Config, enricher: Enricher, shards: usize) -> Shard {
        let max_conversations = config.flow.conversation_limit().div_ceil(shards.max(1));
        Shard {
            table: FlowTable::new(
                max_conversations,
                config.flow.idle_timeout_s,
                config.flow.max_lateness_s,
            ),
            detector: Detector::new(
                &config.rules,
                &config.suppression,
                config.flow.max_lateness_s,
                shards,
            ),
            enricher,
            now_ms: 0,
            next_tick_ms: 0,
            tick_ms: config.flow.tick_s.saturating_mul(1000).max(1),
            alert_counters: AlertCounters::default(),
            interface_names: None,
        }
    }

    /// Names the interfaces of this shard's alerts from `directory` (which the ingests
    /// fill).
    pub fn name_interfaces_from(&mut self, directory: InterfaceDirectory) {
        self.interface_names = Some(directory);
    }

    /// Event time now, in ms (0 before the first record).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Replaces the threat-intel networks this shard consults (SIGHUP).
    pub fn set_threat_intel(&mut self, networks: std::sync::Arc<crate::enrich::NetSet>) {
        self.enricher.set_threat_intel(networks);
    }

    /// Runs a batch through the table and the rules, in order; alerts are appended to
    /// `alerts`.
    ///
    /// The state of a few records is looked up before any of them runs, so their cache
    /// misses overlap instead of stalling one after another: with a table larger than the
    /// caches, that is most of the cost. The conversations are warmed a chunk ahead of the
    /// rules' state, which is found by them (a window of the destination's network).
    pub fn run_batch(&mut self, batch: &[Routed], alerts: &mut Vec<Alert>) {
        // A record's key is hashed when its conversation is warmed, and looked up once
        // before its update.
        let mut hashes = [KeyHash::default(); WARM_AHEAD];
        let mut lookups = [None; WARM_AHEAD];
        let mut chunks = batch.chunks(WARM_AHEAD).peekable();
        if let Some(first) = chunks.peek() {
            self.warm_table(first, &mut hashes);
        }
        while let Some(chunk) = chunks.next() {
            let chunk_hashes = hashes;
            if let Some(next) = chunks.peek() {
                self.warm_table(next, &mut hashes);
            }
            for ((routed, &hash), lookup) in chunk.iter().zip(&chunk_hashes).zip(&mut lookups) {
                if let Routed::Record { record, .. } = routed {
                    let (looked_up, conversation) = self.table.look_up(record, hash);
                    self.detector.warm(record, conversation);
                    *lookup = Some(looked_up);
                }
            }
            for (routed, lookup) in chunk.iter().zip(&lookups) {
                match *routed {
                    Routed::Record { ref record, now_ms } => {
                        let lookup = lookup.as_ref().expect("looked up above");
                        self.run(record, lookup, now_ms, alerts)
                    }
                    Routed::Tick { now_ms } => self.tick(now_ms, alerts),
                }
            }
        }
    }

    /// Warms the conversations of a chunk's records, keeping their keys' hashes.
    fn warm_table(&self, chunk: &[Routed], hashes: &mut [KeyHash; WARM_AHEAD]) {
        for (routed, hash) in chunk.iter().zip(hashes) {
            if let Routed::Record { record, .. } = routed {
                *hash = self.table.warm(record);
            }
        }
    }

    /// Runs a record at `now_ms`, its exporter's clock: a conversation it ends and what
    /// the rules make of it are on that time, whatever other exporters say.
    fn run(&mut self, oriented: &Oriented, lookup: &Lookup, now_ms: u64, alerts: &mut Vec<Alert>) {
        let enricher = &self.enricher;
        let detector = &mut self.detector;
        let produced = alerts.len();
        let (update, id, conversation) = self.table.update_looked_up(
            oriented,
            lookup,
            || {
                enricher.destination(
                    oriented.inside,
                    oriented.outside,
                    oriented.outside_port,
                    oriented.outside_asn,
                )
            },
            |id, key, ended| detector.on_end(id, key, ended, now_ms, alerts),
        );
        let key = lookup.key();
        let event = RecordEvent {
            record: oriented,
            key,
            id,
            conversation,
            update,
            now_ms,
            from_resolver: enricher.is_resolver(oriented.inside),
        };
        detector.on_record(&event, alerts);
        if oriented.ends {
            // The exporter says the flow is over: its conversation ends now, not at the
            // idle timeout.
            self.table.close(key, |id, key, ended| {
                detector.on_end(id, key, ended, now_ms, alerts)
            });
        }
        self.count(alerts, produced);
    }

    /// Expiry and the rules' windows, at event time `now_ms`.
    fn tick(&mut self, now_ms: u64, alerts: &mut Vec<Alert>) {
        self.now_ms = self.now_ms.max(now_ms);
        if now_ms < self.next_tick_ms {
            return;
        }
        self.next_tick_ms = next_tick(now_ms, self.tick_ms);
        let now_ms = self.now_ms;
        let produced = alerts.len();
        let detector = &mut self.detector;
        self.table.expire(now_ms, |id, key, ended| {
            detector.on_end(id, key, ended, now_ms, alerts)
        });
        let table = &self.table;
        detector.run_quiet_held(now_ms, |id| Some(table.by_id(id)?.1), alerts);
        detector.on_tick(now_ms, alerts);
        self.count(alerts, produced);
    }

    /// End of input at event time `now_ms`: every conversation ends and every rule gets a
    /// last tick.
    pub fn finish(&mut self, now_ms: u64, alerts: &mut Vec<Alert>) {
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        let produced = alerts.len();
        let detector = &mut self.detector;
        self.table
            .drain(|id, key, ended| detector.on_end(id, key, ended, now_ms, alerts));
        detector.on_tick(now_ms, alerts);
        self.count(alerts, produced);
    }

    /// Counts the alerts appended since `from`, and names their interfaces.
    fn count(&mut self, alerts: &mut [Alert], from: usize) {
        for alert in &mut alerts[from..] {
            self.alert_counters.add(alert);
            if let Some(directory) = &self.interface_names {
                alert.name_interfaces(directory);
            }
        }
    }

    /// State the rules dropped to stay bounded: (rule, kind, count).
    pub fn rule_state_dropped(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.detector.state_dropped()
    }

    /// Saves what the rules learned (the host profiles) to `path`.
    pub fn save_rules_state(&self, path: &std::path::Path) -> anyhow::Result<()> {
        self.detector.save_rules_state(path)
    }

    /// Loads what the rules learned from `path`, for the hosts of shard `index` of
    /// `shards`; returns how many entries were restored.
    pub fn load_rules_state(
        &mut self,
        path: &std::path::Path,
        index: usize,
        shards: usize,
    ) -> anyhow::Result<usize> {
        self.detector
            .load_rules_state(path, &|host| shard_of(host, shards.max(1)) == index)
    }

    /// The rules' long memory, suppression and risk, for a scale-out partition's
    /// checkpoint (the conversations are not in it: a replay of recent records rebuilds
    /// them).
    pub fn checkpoint(&self) -> crate::detect::CheckpointSnapshot {
        self.detector.checkpoint()
    }

    /// Takes a checkpoint ([`Detector::parse_checkpoint`]) in place of what the records
    /// before it rebuilt; returns the entries restored.
    pub fn restore(&mut self, checkpoint: ParsedCheckpoint) -> usize {
        self.detector.restore(checkpoint)
    }

    pub fn counters(&self) -> PipelineCounters {
        PipelineCounters {
            flow: self.table.counters,
            conversations: self.table.len() as u64,
            alerts: self.alert_counters,
            suppressed: self.detector.suppressed(),
            risky_hosts: self.detector.risky_hosts(),
            held_conversations: self.detector.held_conversations() as u64,
            ..PipelineCounters::default()
        }
    }
}

/// Sums rule-state drops over shards: (rule, kind, count).
pub fn sum_state_dropped<'a>(
    parts: impl IntoIterator<Item = &'a [(&'static str, &'static str, u64)]>,
) -> Vec<(&'static str, &'static str, u64)> {
    let mut sums: std::collections::BTreeMap<(&'static str, &'static str), u64> =
        Default::default();
    for part in parts {
        for &(rule, kind, n) in part {
            *sums.entry((rule, kind)).or_default() += n;
        }
    }
    sums.into_iter()
        .map(|((rule, kind), n)| (rule, kind, n))
        .collect()
}

/// Both halves on one thread: what `exflow replay` and the tests run. The daemon runs the
/// same halves on threads of their own, joined by queues that carry the same batches.
pub struct Pipeline {
    ingest: Ingest,
    shards: Vec<Shard>,
}

impl Pipeline {
    /// A pipeline with `shards` table shards (at least one).
    pub fn new(config: &Config, enricher: Enricher, shards: usize) -> Pipeline {
        let shard_count = shards.max(1);
        let names = InterfaceDirectory::default();
        let mut ingest = Ingest::new(config, enricher.clone(), shard_count);
        ingest.share_interface_names(names.clone());
        Pipeline {
            ingest,
            shards: (0..shard_count)
                .map(|_| {
                    let mut shard = Shard::new(config, enricher.clone(), shard_count);
                    shard.name_interfaces_from(names.clone());
                    shard
                })
                .collect(),
        }
    }

    /// Hands every record to `tap` as well.
    pub fn set_tap(&mut self, tap: Box<dyn RecordTap>) {
        self.ingest.set_tap(tap);
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        self.ingest.decoder()
    }

    /// Event time now, in ms (0 before the first record).
    pub fn now_ms(&self) -> u64 {
        self.ingest.now_ms()
    }

    /// Decodes a datagram and runs its records through the table and the rules; alerts are
    /// appended to `alerts`.
    pub fn push_datagram(
        &mut self,
        exporter: IpAddr,
        received_ns: u64,
        datagram: &[u8],
        alerts: &mut Vec<Alert>,
    ) {
        self.ingest.push_datagram(exporter, received_ns, datagram);
        self.run_batches(alerts);
    }

    /// Runs a batch of decoded records (a datagram's worth) through the table and the
    /// rules, in order.
    pub fn push_records(&mut self, records: &[FlowRecord], alerts: &mut Vec<Alert>) {
        self.ingest.push_records(records);
        self.run_batches(alerts);
    }

    /// Runs one decoded record through the table and the rules.
    pub fn push_record(&mut self, record: &FlowRecord, alerts: &mut Vec<Alert>) {
        self.push_records(std::slice::from_ref(record), alerts);
    }

    fn run_batches(&mut self, alerts: &mut Vec<Alert>) {
        for (shard, batch) in self.shards.iter_mut().zip(self.ingest.batches()) {
            shard.run_batch(batch, alerts);
            batch.clear();
        }
    }

    /// End of input: every conversation ends and every rule gets a last tick.
    pub fn finish(&mut self, alerts: &mut Vec<Alert>) {
        let now_ms = self.ingest.now_ms();
        for shard in &mut self.shards {
            shard.finish(now_ms, alerts);
        }
        self.ingest.finish();
    }

    /// State the rules dropped to stay bounded, summed over shards: (rule, kind, count).
    pub fn rule_state_dropped(&self) -> Vec<(&'static str, &'static str, u64)> {
        let parts: Vec<_> = self.shards.iter().map(Shard::rule_state_dropped).collect();
        sum_state_dropped(parts.iter().map(Vec::as_slice))
    }

    pub fn counters(&self) -> PipelineCounters {
        let mut counters = self.ingest.counters();
        for shard in &self.shards {
            counters.merge(&shard.counters());
        }
        counters
    }
}

/// The shard of an inside host: a fixed multiplicative hash of its address, so the
/// assignment is the same in every run.
pub fn shard_of(inside: IpAddr, shards: usize) -> usize {
    let bits: u128 = match inside {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let folded = (bits as u64) ^ ((bits >> 64) as u64);
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % shards
}
