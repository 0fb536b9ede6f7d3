//! pipeline: the stages joined for one thread: datagrams -> decode -> orient -> flow-table
//! shard -> detect -> alerts, all on event time. `exflow replay` drives it over captures and
//! the daemon over live sockets, so the same datagrams in the same order give the same
//! alerts either way.

use std::net::IpAddr;

use crate::config::Config;
use crate::decode::{DecodeCounters, Decoder, DecoderConfig, FlowRecord, SamplingConfig};
use crate::detect::{Alert, Detector, RULES, RecordEvent, Severity};
use crate::enrich::Enricher;
use crate::flow::{FlowCounters, FlowTable, Orientation, orient};

/// One shard: a slice of the conversation table (by inside host) with its detectors.
struct Shard {
    table: FlowTable,
    detector: Detector,
}

/// Alerts counted by rule and severity (the order of [`RULES`] and [`Severity::ALL`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounters(pub [[u64; 4]; RULES.len()]);

impl AlertCounters {
    fn add(&mut self, alert: &Alert) {
        if let Some(rule) = RULES.iter().position(|r| *r == alert.rule) {
            self.0[rule][alert.severity as usize] += 1;
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

/// Sees every decoded record (with its inside host, when it has one): the flows stream.
pub trait RecordTap: Send {
    fn record(&mut self, record: &FlowRecord, inside: Option<IpAddr>);

    /// End of input: deliver what is buffered.
    fn finish(&mut self) {}
}

pub struct Pipeline {
    decoder: Decoder,
    tap: Option<Box<dyn RecordTap>>,
    enricher: Enricher,
    shards: Vec<Shard>,
    /// Event time: the latest flow end seen, in ms.
    now_ms: u64,
    next_tick_ms: u64,
    tick_ms: u64,
    records: Vec<FlowRecord>,
    pub alert_counters: AlertCounters,
}

/// Counters of every stage, for summaries and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    pub decode: DecodeCounters,
    pub flow: FlowCounters,
    pub conversations: u64,
    pub alerts: AlertCounters,
    pub suppressed: u64,
}

impl Pipeline {
    /// A pipeline with `shards` table shards (at least one).
    pub fn new(config: &Config, enricher: Enricher, shards: usize) -> Pipeline {
        let decoder_config = DecoderConfig {
            limits: config.decoder,
            sampling: SamplingConfig {
                default_rate: config.sampling.default_rate,
                overrides: config
                    .sampling
                    .overrides
                    .iter()
                    .map(|(a, r)| (*a, *r))
                    .collect(),
            },
        };
        let shard_count = shards.max(1);
        let per_shard = config.flow.conversation_limit().div_ceil(shard_count);
        Pipeline {
            decoder: Decoder::new(decoder_config),
            tap: None,
            enricher,
            shards: (0..shard_count)
                .map(|_| Shard {
                    table: FlowTable::new(
                        per_shard,
                        config.flow.idle_timeout_s,
                        config.flow.late_records_s,
                    ),
                    detector: Detector::new(config),
                })
                .collect(),
            now_ms: 0,
            next_tick_ms: 0,
            tick_ms: config.flow.tick_s.saturating_mul(1000).max(1),
            records: Vec::with_capacity(64),
            alert_counters: AlertCounters::default(),
        }
    }

    /// Hands every record to `tap` as well.
    pub fn set_tap(&mut self, tap: Box<dyn RecordTap>) {
        self.tap = Some(tap);
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    pub fn enricher_mut(&mut self) -> &mut Enricher {
        &mut self.enricher
    }

    /// Event time now, in ms (0 before the first record).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
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
        let mut records = std::mem::take(&mut self.records);
        records.clear();
        let _ = self
            .decoder
            .decode(exporter, received_ns, datagram, &mut records);
        for record in &records {
            self.push_record(record, alerts);
        }
        self.records = records;
    }

    /// Runs one decoded record through the table and the rules.
    pub fn push_record(&mut self, record: &FlowRecord, alerts: &mut Vec<Alert>) {
        let orientation = orient(record, &self.enricher);
        if let Some(tap) = &mut self.tap {
            let inside = match &orientation {
                Orientation::Outbound(o) => Some(o.inside),
                _ => None,
            };
            tap.record(record, inside);
        }
        let oriented = match orientation {
            Orientation::Outbound(o) => o,
            Orientation::Transit => {
                self.shards[0].table.counters.transit_records += 1;
                return;
            }
            Orientation::Internal => {
                self.shards[0].table.counters.internal_records += 1;
                return;
            }
        };
        self.advance(oriented.end_ms, alerts);
        let index = shard_of(oriented.inside, self.shards.len());
        let now_ms = self.now_ms;
        let enricher = &self.enricher;
        let shard = &mut self.shards[index];
        let detector = &mut shard.detector;
        let mut ended_alerts = Vec::new();
        let (update, conversation) = shard.table.update(
            &oriented,
            || {
                enricher.destination(
                    oriented.inside,
                    oriented.outside,
                    oriented.outside_port,
                    oriented.outside_asn,
                )
            },
            |key, ended| detector.on_end(key, ended, now_ms, &mut ended_alerts),
        );
        let key = oriented.key();
        let event = RecordEvent {
            record: &oriented,
            key: &key,
            conversation,
            update,
            now_ms,
            from_resolver: enricher.is_resolver(oriented.inside),
        };
        detector.on_record(&event, &mut ended_alerts);
        self.emit(ended_alerts, alerts);
    }

    /// Moves event time to `end_ms` when it is later, running the ticks it passes.
    fn advance(&mut self, end_ms: u64, alerts: &mut Vec<Alert>) {
        if end_ms <= self.now_ms {
            return;
        }
        self.now_ms = end_ms;
        if self.next_tick_ms == 0 {
            self.next_tick_ms = end_ms - end_ms % self.tick_ms + self.tick_ms;
            return;
        }
        if self.now_ms >= self.next_tick_ms {
            // One tick at the current time stands for every interval skipped.
            self.tick(alerts);
            self.next_tick_ms = self.now_ms - self.now_ms % self.tick_ms + self.tick_ms;
        }
    }

    fn tick(&mut self, alerts: &mut Vec<Alert>) {
        let now_ms = self.now_ms;
        let mut produced = Vec::new();
        for shard in &mut self.shards {
            let detector = &mut shard.detector;
            shard.table.expire(now_ms, |key, ended| {
                detector.on_end(key, ended, now_ms, &mut produced)
            });
            detector.on_tick(now_ms, &mut produced);
        }
        self.emit(produced, alerts);
    }

    /// End of input: every conversation ends and every rule gets a last tick.
    pub fn finish(&mut self, alerts: &mut Vec<Alert>) {
        let now_ms = self.now_ms;
        let mut produced = Vec::new();
        for shard in &mut self.shards {
            let detector = &mut shard.detector;
            shard
                .table
                .drain(|key, ended| detector.on_end(key, ended, now_ms, &mut produced));
            detector.on_tick(now_ms, &mut produced);
        }
        self.emit(produced, alerts);
        if let Some(tap) = &mut self.tap {
            tap.finish();
        }
    }

    fn emit(&mut self, produced: Vec<Alert>, alerts: &mut Vec<Alert>) {
        for alert in produced {
            self.alert_counters.add(&alert);
            alerts.push(alert);
        }
    }

    /// State the rules dropped to stay bounded, summed over shards: (rule, kind, count).
    pub fn rule_state_dropped(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut sums: std::collections::BTreeMap<(&'static str, &'static str), u64> =
            Default::default();
        for shard in &self.shards {
            for (rule, kind, n) in shard.detector.state_dropped() {
                *sums.entry((rule, kind)).or_default() += n;
            }
        }
        sums.into_iter()
            .map(|((rule, kind), n)| (rule, kind, n))
            .collect()
    }

    pub fn counters(&self) -> PipelineCounters {
        let mut counters = PipelineCounters {
            decode: self.decoder.totals(),
            alerts: self.alert_counters,
            ..PipelineCounters::default()
        };
        for shard in &self.shards {
            counters.flow.merge(&shard.table.counters);
            counters.conversations += shard.table.len() as u64;
            counters.suppressed += shard.detector.suppressed();
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
