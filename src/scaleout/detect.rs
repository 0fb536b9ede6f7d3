//! scaleout detect: `exflow detect`, the back half of the pipeline as a member of a Kafka
//! consumer group. The group (cooperative-sticky assignment, static membership by
//! `group.instance.id`) gives each member some partitions of the flows topic, each one
//! slice of inside hosts; a member keeps one flow-table shard with its rules per owned
//! partition, runs the partition's records in offset order on their exporters' clocks, and
//! ticks it on the partition's clock ([`super::clock`]). Alerts go through the alert sink
//! (the spool, then Kafka), as `exflow run`'s do.
//!
//! Handoff ([`super::checkpoint`]): a member commits a partition's offset only up to the
//! records whose alerts the broker has acknowledged, and writes a checkpoint record per
//! partition to `scaleout.state_topic` naming that offset and the alert ids it delivered
//! lately; now and then the record also carries the partition's state (what a replay of
//! recent records cannot rebuild) with the offset it covers. A new owner reads the
//! partition's latest checkpoint when it is assigned the partition, starts reading
//! `scaleout.rewind_s` of event time before the state (or from the partition's first
//! offset without one), takes the state in place of what it rebuilt when it reaches the
//! offset the state covers, and sends none of the alerts it raises below the committed
//! offset (they were delivered before: counted in `rebuilt_alerts`), then raises alerts as
//! usual. Alert ids are deterministic, so an alert raised again across a takeover (above
//! the committed offset: the previous owner raised it after its last commit) has the id it
//! had; one the checkpoint names as delivered is counted and not sent again.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use super::checkpoint::{
    self, CHECKPOINT_SCHEMA, CheckpointContext, CheckpointProducer, CheckpointRecord, Found,
    MAX_DELIVERED_IDS, Rewind, SavedState, StateChunk, StateReader, StateWriter,
};
use super::clock::PartitionClock;
use super::collect::{flows_topic, kafka_section, partition_count};
use super::encoding::{self, FlowsMessage, MessageError};
use super::metrics::{ConsumeSnapshot, PartitionFigures, ScaleoutMetrics};
use crate::config::Config;
use crate::daemon::Control;
use crate::decode::directory::InterfaceDirectory;
use crate::detect::{Alert, Detector, ParsedCheckpoint};
use crate::enrich::Enricher;
use crate::pipeline::{PipelineCounters, Routed, Shard, sum_state_dropped};
use crate::sink::AlertSink;
use crate::sink::kafka::KafkaCounters;
use crate::sink::kafka::producer::client_config;
use crate::telemetry::{MetricsServer, Snapshot, Telemetry};
use crate::time::wall_clock_ns;

/// How often the metrics are published; also the longest a poll waits.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How long a request to the group coordinator may take.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(10);
/// How long leaving the group at shutdown may take: librdkafka's close waits for the
/// coordinator, and a broker that does not answer must not keep the process alive.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Room beside `scaleout.max_state_message_bytes` in the checkpoint producer's
/// `message.max.bytes` (a request's framing; an offsets record naming 1,024 alert ids is
/// some 20 kB).
const REQUEST_OVERHEAD_BYTES: usize = 64 << 10;

/// What the rebalance callbacks saw, for the consumer thread to act on after its poll.
#[derive(Debug, Default)]
struct Events {
    /// Partitions assigned, with what the state topic holds for them and the alerts
    /// topic's recent ids (one read, shared by the partitions assigned with it).
    assigned: Vec<(i32, Found, Arc<HashSet<String>>)>,
    revoked: Vec<i32>,
    errors: u64,
    commit_failures: u64,
}

/// The consumer's context: assigns new partitions from where their checkpoint's rewind
/// starts (their first offset without one) and notes what was assigned and revoked.
pub struct DetectContext {
    events: Mutex<Events>,
    /// Reads the checkpoints of newly assigned partitions (`None`: it could not be made,
    /// and partitions are rebuilt from their first offset).
    reader: Option<StateReader>,
    flows_topic: String,
}

impl DetectContext {
    fn events(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for DetectContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.events().errors += 1;
        warn!("kafka: {error}: {reason}");
    }
}

impl ConsumerContext for DetectContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let ids: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
                let mut found = match &self.reader {
                    Some(reader) => match reader.latest(&self.flows_topic, &ids) {
                        Ok(found) => found,
                        Err(error) => {
                            self.events().errors += 1;
                            warn!(
                                "cannot read the checkpoints, rebuilding from the start: {error:#}"
                            );
                            BTreeMap::new()
                        }
                    },
                    None => BTreeMap::new(),
                };
                // What previous owners delivered after their last checkpoints.
                let recent = Arc::new(match &self.reader {
                    Some(reader) if !partitions.is_empty() => match reader.recent_alert_ids() {
                        Ok(ids) => ids,
                        Err(error) => {
                            self.events().errors += 1;
                            warn!(
                                "cannot read the alerts topic back, alerts raised again since the last checkpoints may be sent twice: {error:#}"
                            );
                            HashSet::new()
                        }
                    },
                    _ => HashSet::new(),
                });
                let mut from_start = TopicPartitionList::new();
                let mut assigned = Vec::with_capacity(partitions.len());
                for (topic, partition) in &partitions {
                    let found = found.remove(partition).unwrap_or_default();
                    let offset = found
                        .state
                        .as_ref()
                        .map_or(Offset::Beginning, |s| Offset::Offset(s.rebuild_from_offset));
                    let _ = from_start.add_partition_offset(topic, *partition, offset);
                    assigned.push((*partition, found, recent.clone()));
                }
                self.events().assigned.extend(assigned);
                if cooperative {
                    consumer.incremental_assign(&from_start)
                } else {
                    consumer.assign(&from_start)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.events()
                    .revoked
                    .extend(partitions.iter().map(|(_, p)| *p));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                warn!("rebalance failed: {other:?}");
                Ok(())
            }
        };
        if let Err(error) = result {
            self.events().errors += 1;
            warn!("cannot apply the new assignment: {error}");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            self.events().commit_failures += 1;
            warn!("offset commit failed: {error}");
        }
    }
}

/// An owned partition: its shard of the table and rules, its clock, and what its offsets
/// mean for the alerts.
struct Owned {
    shard: Shard,
    clock: PartitionClock,
    /// Alerts raised for records below this offset were delivered by an earlier owner:
    /// they are rebuilt, not sent (-1: none).
    silent_until: i64,
    /// The next offset to run; lower ones (a re-delivery) are skipped.
    next_offset: i64,
    /// Offsets of records that raised alerts, with the count of alerts sent through them:
    /// the offset is committable once the sink has that many acknowledged.
    unacked: VecDeque<(i64, u64)>,
    /// The offset committed last.
    committed: i64,
    assigned_at: Instant,
    last_checkpoint: Option<Instant>,
    /// When the partition's state was last handed to the state writer.
    last_state: Option<Instant>,
    /// The generation of that state (above every generation the state topic held for
    /// the partition when it was assigned).
    generation: u64,
    /// A checkpoint's state, being parsed off this thread, taken in place of what the
    /// replay rebuilt when the partition reaches the offset it covers.
    restore: Option<Restore>,
    /// Where the clock stood at which offsets: a new owner's rewind before a state.
    rewind: Rewind,
    /// Alerts this member sent for the partition: (sent count when sent, alert id), the
    /// newest `MAX_DELIVERED_IDS`; those the broker has acknowledged go in checkpoints.
    sent_ids: VecDeque<(u64, String)>,
    /// Ids the previous owner's latest checkpoint names as delivered, and the alerts
    /// topic's recent ones (what it delivered after that checkpoint, shared by the
    /// partitions assigned together): raised again, they are counted and not sent.
    delivered_before: HashSet<String>,
    recently_delivered: Arc<HashSet<String>>,
}

/// A checkpoint's state parsed on a thread of its own ([`Detector::parse_checkpoint`]:
/// seconds for 100,000 hosts), so the consumer thread goes on running the rewind and the
/// other partitions meanwhile, and takes the parsed state in (fast) at the offset it covers.
enum Restore {
    /// Being parsed; taken in when the partition reaches `state_offset`.
    Parsing {
        state_offset: i64,
        parsed: mpsc::Receiver<anyhow::Result<ParsedCheckpoint>>,
    },
    /// The partition reached `state_offset` before the parse was done: it is paused, and
    /// what it is still delivered is dropped unread (memory stays bounded)...
    Waiting {
        parsed: mpsc::Receiver<anyhow::Result<ParsedCheckpoint>>,
    },
    /// ...and once the state is in, it is sought back to its next offset and resumed.
    Seeking,
}

impl Restore {
    /// Starts parsing `state` (`None`, logged, when no thread can be made: the partition is
    /// rebuilt from its records alone).
    fn parse(partition: i32, state_offset: i64, state: Vec<u8>) -> Option<Restore> {
        let (sender, parsed) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name(format!("exflow-restore-{partition}"))
            .spawn(move || {
                // The receiver is gone when the partition was revoked meanwhile.
                let _ = sender.send(Detector::parse_checkpoint(&state));
            });
        match spawned {
            Ok(_) => Some(Restore::Parsing {
                state_offset,
                parsed,
            }),
            Err(error) => {
                warn!(partition, "cannot parse the checkpoint's state: {error}");
                None
            }
        }
    }
}

/// The parse's outcome, when it is done.
fn parsed(
    parsed: &mpsc::Receiver<anyhow::Result<ParsedCheckpoint>>,
) -> Option<anyhow::Result<ParsedCheckpoint>> {
    match parsed.try_recv() {
        Ok(parsed) => Some(parsed),
        Err(mpsc::TryRecvError::Empty) => None,
        Err(mpsc::TryRecvError::Disconnected) => Some(Err(anyhow::anyhow!("its parser ended"))),
    }
}

/// Takes a parsed checkpoint's state into `owned`'s shard (`partition`'s), counted in
/// `figures` or, when it could not be parsed, in `failures`.
fn take_in(
    owned: &mut Owned,
    partition: i32,
    parsed: anyhow::Result<ParsedCheckpoint>,
    figures: &mut ConsumeSnapshot,
    failures: &mut u64,
) {
    match parsed {
        Ok(checkpoint) => {
            let entries = owned.shard.restore(checkpoint);
            figures.restored_entries += entries as u64;
            info!(partition, entries, "the checkpoint's state is restored");
        }
        Err(error) => {
            *failures += 1;
            warn!(
                partition,
                "cannot restore the checkpoint's state: {error:#}"
            );
        }
    }
}

impl Owned {
    /// Where a new owner may start raising alerts: below the first record whose alerts are
    /// not all acknowledged, never below what was committed.
    fn committable(&mut self, acked: u64) -> i64 {
        while self.unacked.front().is_some_and(|&(_, sent)| sent <= acked) {
            self.unacked.pop_front();
        }
        let through = self
            .unacked
            .front()
            .map_or(self.next_offset, |&(offset, _)| offset);
        through.max(self.silent_until).max(self.committed)
    }
}

/// This member of the group: the consumer thread's state.
struct Member<'a> {
    config: &'a Config,
    enricher: Enricher,
    topic: String,
    partitions: i32,
    checkpoints: CheckpointProducer,
    /// Encodes and sends the partitions' states off the consumer thread.
    states: StateWriter,
    /// Where the next round starts looking for a partition whose state is due.
    state_cursor: i32,
    /// Checkpoint records not queued and states not restored (the broker's refusals are
    /// counted by the producer's context, states not queued whole by the writer).
    checkpoint_failures: u64,
    /// Taken at the end, to be closed before the last commit.
    sink: Option<AlertSink>,
    kafka_counters: Option<Arc<KafkaCounters>>,
    owned: BTreeMap<i32, Owned>,
    alerts: Vec<Alert>,
    /// Alerts the sink took (queued or written).
    sent: u64,
    figures: ConsumeSnapshot,
    /// Counters of the shards of partitions no longer owned, kept for the totals.
    retired: PipelineCounters,
    /// `scaleout.instance_id`, named in the checkpoints.
    instance_id: String,
    /// The exporters' interface names the collectors published, for the alerts of every
    /// partition owned.
    interface_names: InterfaceDirectory,
    /// Partitions to pause until their checkpoint's state is parsed, and those paused.
    to_pause: Vec<i32>,
    paused: HashSet<i32>,
}

/// Whether `since` (or else `start`) is `every` ago.
fn due(since: Option<Instant>, start: Instant, every: Duration) -> bool {
    since.unwrap_or(start).elapsed() >= every
}

impl Member<'_> {
    /// Alerts the sink has delivered: the broker's acknowledgements (spooled alerts found
    /// on the topic already and dead-lettered ones are done too). JSON lines are written
    /// at once.
    fn acked(&self) -> u64 {
        match &self.kafka_counters {
            Some(k) => {
                k.delivered.load(Ordering::Relaxed)
                    + k.duplicates_skipped.load(Ordering::Relaxed)
                    + k.dead_lettered.load(Ordering::Relaxed)
            }
            None => self.sent,
        }
    }

    /// Takes up what the rebalance callbacks saw.
    fn apply_events(&mut self, consumer: &BaseConsumer<DetectContext>) {
        let (assigned, revoked, errors, commit_failures) = {
            let mut events = consumer.context().events();
            (
                std::mem::take(&mut events.assigned),
                std::mem::take(&mut events.revoked),
                std::mem::take(&mut events.errors),
                std::mem::take(&mut events.commit_failures),
            )
        };
        self.figures.consumer_errors += errors;
        self.figures.commit_failures += commit_failures;
        for partition in revoked {
            self.to_pause.retain(|&p| p != partition);
            self.paused.remove(&partition);
            if let Some(owned) = self.owned.remove(&partition) {
                self.retired.merge(&owned.shard.counters());
                info!(partition, "partition revoked");
            }
        }
        let new: Vec<i32> = assigned
            .iter()
            .map(|(partition, ..)| *partition)
            .filter(|partition| !self.owned.contains_key(partition))
            .collect();
        let committed_offsets = if new.is_empty() {
            BTreeMap::new()
        } else {
            // A partition this member paused while it owned it before must not stay
            // paused now: resuming one that is not is nothing.
            let mut tpl = TopicPartitionList::new();
            for &partition in &new {
                let _ = tpl.add_partition(&self.topic, partition);
            }
            let _ = consumer.resume(&tpl);
            self.committed_offsets(consumer, &new)
        };
        for (partition, found, recently_delivered) in assigned {
            let Some(&committed) = committed_offsets.get(&partition) else {
                continue;
            };
            if self.owned.contains_key(&partition) {
                continue;
            }
            if committed > 0 {
                self.figures.takeovers += 1;
            }
            self.figures.partial_states += found.partial_states;
            let scaleout = &self.config.scaleout;
            // Below a state's offset every alert was acknowledged when it was written,
            // even if the commit that went with it was lost.
            let found_state_offset = found.state.as_ref().map(|s| s.state_offset);
            let (start, restore, silent_until) = match found.state {
                Some(SavedState {
                    rebuild_from_offset,
                    state_offset,
                    state,
                    ..
                }) => {
                    self.figures.restored_checkpoints += 1;
                    let restore = Restore::parse(partition, state_offset, state);
                    if restore.is_none() {
                        self.checkpoint_failures += 1;
                    }
                    (
                        rebuild_from_offset.max(0),
                        restore,
                        committed.max(state_offset),
                    )
                }
                None => (0, None, committed),
            };
            info!(
                partition,
                committed,
                start,
                state_offset = found_state_offset,
                checkpoints = found.records,
                "partition assigned: rebuilding"
            );
            self.owned.insert(
                partition,
                Owned {
                    shard: {
                        let mut shard = Shard::new(
                            self.config,
                            self.enricher.clone(),
                            self.partitions as usize,
                        );
                        shard.name_interfaces_from(self.interface_names.clone());
                        shard
                    },
                    clock: PartitionClock::new(
                        self.config.flow.tick_s,
                        scaleout.collector_timeout_s,
                        scaleout.max_collectors,
                    ),
                    silent_until,
                    next_offset: start,
                    unacked: VecDeque::new(),
                    committed,
                    assigned_at: Instant::now(),
                    last_checkpoint: None,
                    last_state: None,
                    generation: found.latest_generation,
                    restore,
                    rewind: Rewind::new(scaleout.rewind_s, start),
                    sent_ids: VecDeque::new(),
                    delivered_before: found.delivered_alert_ids,
                    recently_delivered,
                },
            );
        }
    }

    /// Pauses the partitions that wait for their state; takes in the states parsed since,
    /// seeks those partitions back to their next offset and resumes them.
    fn follow_restores(&mut self, consumer: &BaseConsumer<DetectContext>) {
        // A partition that waits or seeks is in `paused` from its first round on: with
        // none, there is nothing to follow (the common case, after every message).
        if self.to_pause.is_empty() && self.paused.is_empty() {
            return;
        }
        if !self.to_pause.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for partition in self.to_pause.drain(..) {
                let _ = tpl.add_partition(&self.topic, partition);
                self.paused.insert(partition);
            }
            if let Err(error) = consumer.pause(&tpl) {
                // Not paused: what it is delivered is dropped all the same, and read again.
                warn!("cannot pause the partitions waiting for their state: {error}");
            }
        }
        let done: Vec<(i32, anyhow::Result<ParsedCheckpoint>)> = self
            .owned
            .iter()
            .filter_map(|(&partition, owned)| match &owned.restore {
                Some(Restore::Waiting { parsed: receiver }) => Some((partition, parsed(receiver)?)),
                _ => None,
            })
            .collect();
        for (partition, parsed) in done {
            if let Some(owned) = self.owned.get_mut(&partition) {
                take_in(
                    owned,
                    partition,
                    parsed,
                    &mut self.figures,
                    &mut self.checkpoint_failures,
                );
                owned.restore = Some(Restore::Seeking);
            }
        }
        let seeking: Vec<(i32, i64)> = self
            .owned
            .iter()
            .filter(|(_, owned)| matches!(owned.restore, Some(Restore::Seeking)))
            .map(|(&partition, owned)| (partition, owned.next_offset))
            .collect();
        for (partition, next_offset) in seeking {
            match consumer.seek(
                &self.topic,
                partition,
                Offset::Offset(next_offset),
                COORDINATOR_TIMEOUT,
            ) {
                Ok(()) => {
                    if let Some(owned) = self.owned.get_mut(&partition) {
                        owned.restore = None;
                    }
                    self.resume(consumer, partition);
                    info!(
                        partition,
                        next_offset, "reading on after the checkpoint's state"
                    );
                }
                // Tried again next round, still paused.
                Err(error) => warn!(
                    partition,
                    "cannot seek back to offset {next_offset}: {error}"
                ),
            }
        }
    }

    /// Resumes `partition` when it was paused.
    fn resume(&mut self, consumer: &BaseConsumer<DetectContext>, partition: i32) {
        if self.paused.remove(&partition) {
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition(&self.topic, partition);
            if let Err(error) = consumer.resume(&tpl) {
                warn!(partition, "cannot resume the partition: {error}");
            }
        }
    }

    /// The group's committed offsets of `partitions`, in one request (-1: none, or the
    /// coordinator did not answer within `COORDINATOR_TIMEOUT`, so every alert is raised:
    /// duplicates, never a loss).
    fn committed_offsets(
        &self,
        consumer: &BaseConsumer<DetectContext>,
        partitions: &[i32],
    ) -> BTreeMap<i32, i64> {
        let mut tpl = TopicPartitionList::new();
        for &partition in partitions {
            let _ = tpl.add_partition(&self.topic, partition);
        }
        let answer = match consumer.committed_offsets(tpl, COORDINATOR_TIMEOUT) {
            Ok(tpl) => Some(tpl),
            Err(error) => {
                warn!(?partitions, "cannot read the committed offsets: {error}");
                None
            }
        };
        partitions
            .iter()
            .map(|&partition| {
                let committed = answer
                    .as_ref()
                    .and_then(|tpl| tpl.find_partition(&self.topic, partition))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(n) => Some(n),
                        _ => None,
                    });
                (partition, committed.unwrap_or(-1))
            })
            .collect()
    }

    /// Runs one message of an owned partition.
    fn run(&mut self, partition: i32, offset: i64, payload: &[u8]) {
        let Some(owned) = self.owned.get_mut(&partition) else {
            self.figures.unowned_messages += 1;
            return;
        };
        if offset < owned.next_offset {
            return;
        }
        match &owned.restore {
            // Read again once the partition is sought back.
            Some(Restore::Waiting { .. } | Restore::Seeking) => return,
            Some(Restore::Parsing {
                state_offset,
                parsed: receiver,
            }) if offset >= *state_offset => match parsed(receiver) {
                Some(parsed) => {
                    owned.restore = None;
                    take_in(
                        owned,
                        partition,
                        parsed,
                        &mut self.figures,
                        &mut self.checkpoint_failures,
                    );
                }
                None => {
                    // The replay reached the state before its parse ended: the partition
                    // waits (the others go on).
                    if let Some(Restore::Parsing { parsed, .. }) = owned.restore.take() {
                        owned.restore = Some(Restore::Waiting { parsed });
                    }
                    self.figures.restore_waits += 1;
                    self.to_pause.push(partition);
                    info!(partition, offset, "waiting for the checkpoint's state");
                    return;
                }
            },
            _ => {}
        }
        owned.next_offset = offset + 1;
        match encoding::decode(payload) {
            Err(error) => {
                let kind = MessageError::ALL.iter().position(|e| *e == error);
                self.figures.malformed[kind.unwrap_or(0)] += 1;
            }
            Ok(FlowsMessage::Record { record, now_ms }) => {
                self.figures.records += 1;
                owned
                    .shard
                    .run_batch(&[Routed::Record { record, now_ms }], &mut self.alerts);
            }
            Ok(FlowsMessage::Interfaces((exporter, names))) => {
                self.figures.interface_name_messages += 1;
                // Bounded as the collectors' decoders are, each of its own exporters'.
                let most = self.config.decoder.max_interface_names
                    * self.config.scaleout.max_collectors.max(1);
                let held = self.interface_names.len();
                let replaced = self.interface_names.len_of(exporter);
                if held - replaced + names.len() > most {
                    self.figures.interface_names_refused += names.len() as u64;
                } else {
                    self.interface_names.replace(exporter, names);
                }
                self.figures.interface_names = self.interface_names.len() as u64;
            }
            Ok(FlowsMessage::Watermark(watermark)) => {
                self.figures.watermarks += 1;
                let ignored = owned.clock.ignored_watermarks;
                let step = owned.clock.on_watermark(&watermark);
                self.figures.ignored_watermarks += owned.clock.ignored_watermarks - ignored;
                // Reported as read, not sampled from the clock at publishing: a collector
                // whose first and last watermarks come between two publishings (it ended,
                // so the clock no longer follows it) is still reported.
                let most = self.config.scaleout.max_collectors;
                let collectors = &mut self.figures.collectors;
                if let Some(latest) = collectors.get_mut(&watermark.collector) {
                    *latest = (*latest).max(watermark.clock_ms);
                } else if collectors.len() < most {
                    collectors.insert(watermark.collector.clone(), watermark.clock_ms);
                }
                if let Some(now_ms) = step.tick_ms {
                    owned
                        .shard
                        .run_batch(&[Routed::Tick { now_ms }], &mut self.alerts);
                    owned.rewind.on_clock(owned.clock.now_ms(), offset);
                }
                if let Some(end_ms) = step.end_ms {
                    info!(
                        partition,
                        "every collector's input ended: the conversations end"
                    );
                    owned.shard.finish(end_ms, &mut self.alerts);
                }
            }
        }
        if self.alerts.is_empty() {
            return;
        }
        if offset < owned.silent_until {
            self.figures.rebuilt_alerts += self.alerts.len() as u64;
            self.alerts.clear();
            return;
        }
        let Some(sink) = &mut self.sink else {
            return;
        };
        for alert in self.alerts.drain(..) {
            if owned.delivered_before.contains(&alert.alert_id)
                || owned.recently_delivered.contains(&alert.alert_id)
            {
                self.figures.duplicate_alerts += 1;
                continue;
            }
            let id = alert.alert_id.clone();
            if matches!(sink.send(alert), Ok(true)) {
                self.sent += 1;
                if owned.sent_ids.len() == MAX_DELIVERED_IDS {
                    owned.sent_ids.pop_front();
                }
                owned.sent_ids.push_back((self.sent, id));
            }
        }
        owned.unacked.push_back((offset, self.sent));
        let _ = sink.flush();
    }

    /// Commits every owned partition's committable offset and writes its checkpoint, with
    /// its state when that is due and every alert of the partition is acknowledged.
    /// `every` `None`: every partition now (at shutdown), state included.
    fn checkpoint(
        &mut self,
        consumer: &BaseConsumer<DetectContext>,
        mode: CommitMode,
        every: Option<Duration>,
    ) {
        let acked = self.acked();
        let mut commits = TopicPartitionList::new();
        let now_ms = wall_clock_ns() / 1_000_000;
        let state_every = Duration::from_millis(self.config.scaleout.state_interval_ms);
        // From the partition after the last one whose state was handed over, so that with
        // one state at a time every partition gets its turn.
        let order: Vec<i32> = self
            .owned
            .range(self.state_cursor..)
            .chain(self.owned.range(..self.state_cursor))
            .map(|(&partition, _)| partition)
            .collect();
        for partition in order {
            let owned = self.owned.get_mut(&partition).expect("a key of the map");
            if let Some(every) = every
                && !due(owned.last_checkpoint, owned.assigned_at, every)
            {
                continue;
            }
            let offset = owned.committable(acked);
            if offset > owned.committed {
                let _ =
                    commits.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
                owned.committed = offset;
            }
            // A state covers every record below `next_offset`: only when all their alerts
            // are acknowledged (a new owner sends none of them), and not while rebuilding.
            let clean = owned.unacked.is_empty()
                && owned.restore.is_none()
                && owned.next_offset >= owned.silent_until;
            // A round hands the writer a state only when it is idle (one state at a
            // time, so the others wait a round); shutdown waits for it.
            let with_state = clean
                && (every.is_none()
                    || (due(owned.last_state, owned.assigned_at, state_every)
                        && self.states.idle()));
            let rebuild_from_offset = owned.rewind.from_offset();
            if with_state {
                owned.generation = (owned.generation + 1).max(now_ms);
                let header = StateChunk {
                    state_offset: owned.next_offset,
                    rebuild_from_offset,
                    clock_ms: owned.clock.now_ms(),
                    written_ms: now_ms,
                    ..StateChunk::new(&self.instance_id, &self.topic, partition, owned.generation)
                };
                self.states.write(header, owned.shard.checkpoint());
                self.figures.state_checkpoints += 1;
                owned.last_state = Some(Instant::now());
                self.state_cursor = partition + 1;
            }
            let record = CheckpointRecord {
                schema: CHECKPOINT_SCHEMA.to_string(),
                group: self.config.scaleout.group.clone(),
                member: self.instance_id.clone(),
                topic: self.topic.clone(),
                partition,
                committed_offset: owned.committed.max(0),
                next_offset: owned.next_offset,
                clock_ms: owned.clock.now_ms(),
                written_ms: now_ms,
                delivered_alert_ids: owned
                    .sent_ids
                    .iter()
                    .filter(|(sent, _)| *sent <= acked)
                    .map(|(_, id)| id.clone())
                    .collect(),
            };
            let payload = serde_json::to_vec(&record).expect("a checkpoint serialises");
            let key = checkpoint::offsets_key(&self.topic, partition);
            let message = BaseRecord::to(&self.config.scaleout.state_topic)
                .key(&key)
                .payload(&payload);
            if self.checkpoints.send(message).is_ok() {
                self.figures.checkpoints += 1;
            } else {
                self.checkpoint_failures += 1;
            }
            owned.last_checkpoint = Some(Instant::now());
        }
        if commits.count() > 0
            && let Err(error) = consumer.commit(&commits, mode)
        {
            self.figures.commit_failures += 1;
            warn!("offset commit failed: {error}");
        }
    }

    /// The figures for the metrics endpoint.
    fn publish(&mut self, consumer: &BaseConsumer<DetectContext>, telemetry: &Telemetry) {
        let mut partitions = Vec::with_capacity(self.owned.len());
        let mut pipeline = self.retired;
        let mut dropped = Vec::new();
        let mut event_time_ms = 0;
        for (&partition, owned) in &self.owned {
            let lag = cached_watermarks(consumer, &self.topic, partition)
                .map_or(0, |(_, high)| (high - owned.next_offset).max(0) as u64);
            partitions.push(PartitionFigures {
                partition,
                lag_records: lag,
                clock_ms: owned.clock.now_ms(),
                checkpoint_age_s: owned
                    .last_state
                    .unwrap_or(owned.assigned_at)
                    .elapsed()
                    .as_secs(),
                checkpoint_bytes: self.states.written(partition).bytes,
                rebuilding: owned.next_offset < owned.silent_until,
            });
            pipeline.merge(&owned.shard.counters());
            dropped.push(owned.shard.rule_state_dropped());
            event_time_ms = event_time_ms.max(owned.clock.now_ms());
        }
        self.figures.partitions = partitions;
        let (state_messages, state_failures) = self.states.counts();
        self.figures.state_messages = state_messages;
        self.figures.checkpoint_failures = self.checkpoint_failures
            + state_failures
            + self.checkpoints.context().failed.load(Ordering::Relaxed);
        if let Some(ScaleoutMetrics::Consume(snapshot)) = telemetry.scaleout.get() {
            *snapshot.lock().unwrap_or_else(|e| e.into_inner()) = self.figures.clone();
        }
        telemetry.publish(Snapshot {
            pipeline,
            event_time_ms,
            rule_state_dropped: sum_state_dropped(dropped.iter().map(Vec::as_slice)),
            ..Snapshot::default()
        });
    }
}

/// The partition's low and high watermarks as the consumer last heard them from fetches
/// (librdkafka's cache: no request to the broker), `None` before any.
fn cached_watermarks(
    consumer: &BaseConsumer<DetectContext>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer lives as long as `consumer`; the topic is a NUL-terminated
    // string and the out-parameters are valid for writes.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low, high))
}

/// The consumer's librdkafka settings: the group, static membership (unless turned off:
/// tansu 0.6.0 never settles a group whose members have a `group.instance.id`), cooperative-sticky,
/// no automatic commits (offsets are committed as alerts are acknowledged), then the
/// user's `librdkafka_options`.
fn consumer_config(config: &Config, brokers: &str, member: &str) -> ClientConfig {
    let scaleout = &config.scaleout;
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        .set("client.id", "exflow-detect")
        .set("group.id", &scaleout.group)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            scaleout.session_timeout_ms.to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (scaleout.session_timeout_ms / 6).max(100).to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    if scaleout.static_membership {
        client.set("group.instance.id", member);
    }
    if let Some(kafka) = &config.sink.kafka {
        for (key, value) in &kafka.librdkafka_options {
            client.set(key, value);
        }
    }
    client
}

/// Runs `exflow detect` until `control.shutdown` is set, serving metrics on `metrics`;
/// then hands the last alerts to the sink, waits for it, commits what it acknowledged
/// and leaves (static membership: the partitions wait for this member's restart until
/// the session times out).
pub fn run(config: &Config, metrics: TcpListener, control: Control) -> anyhow::Result<()> {
    let kafka = kafka_section(config)?;
    let topic = flows_topic(kafka).to_string();
    let telemetry = Arc::new(Telemetry::default());
    let _ = telemetry
        .scaleout
        .set(ScaleoutMetrics::Consume(Mutex::default()));
    info!(metrics = %metrics.local_addr()?, "serving /metrics");
    let metrics_server = MetricsServer::spawn(metrics, telemetry.clone())?;
    let result = consume(config, kafka, topic, &telemetry, &control);
    metrics_server.stop();
    result
}

fn consume(
    config: &Config,
    kafka: &crate::sink::kafka::KafkaConfig,
    topic: String,
    telemetry: &Telemetry,
    control: &Control,
) -> anyhow::Result<()> {
    let member = config.scaleout.instance_id();
    let reader = StateReader::new(
        &kafka.brokers,
        &config.scaleout.state_topic,
        &kafka.topic,
        &kafka.librdkafka_options,
    )
    .context("invalid sink.kafka settings for reading the state topic")?;
    let consumer: BaseConsumer<DetectContext> = consumer_config(config, &kafka.brokers, &member)
        .create_with_context(DetectContext {
            events: Mutex::default(),
            reader: Some(reader),
            flows_topic: topic.clone(),
        })
        .context("invalid settings for the flows-topic consumer")?;
    let partitions = partition_count(consumer.client(), &topic)?;
    let max_state_message_bytes = config.scaleout.max_state_message_bytes;
    let defaults = [
        ("linger.ms", "50".to_string()),
        (
            "message.max.bytes",
            (max_state_message_bytes + REQUEST_OVERHEAD_BYTES).to_string(),
        ),
    ];
    let checkpoints: CheckpointProducer = Arc::new(
        client_config(kafka, "exflow-checkpoint", &defaults)
            .create_with_context(CheckpointContext::default())
            .context("invalid sink.kafka settings for the checkpoint producer")?,
    );
    let states = StateWriter::spawn(
        checkpoints.clone(),
        &config.scaleout.state_topic,
        max_state_message_bytes,
    )?;
    let sink = AlertSink::from_config(&config.sink)?;
    let kafka_counters = match &sink {
        AlertSink::Kafka(k) => {
            let _ = telemetry.kafka.set(k.counters.clone());
            Some(k.counters.clone())
        }
        AlertSink::JsonLines(_) => None,
    };
    consumer
        .subscribe(&[&topic])
        .with_context(|| format!("cannot subscribe to '{topic}'"))?;
    info!(
        topic,
        partitions,
        group = config.scaleout.group,
        member,
        "joining the detectors' group"
    );
    let mut member = Member {
        config,
        enricher: config.enricher()?,
        topic,
        partitions,
        checkpoints,
        states,
        state_cursor: 0,
        checkpoint_failures: 0,
        sink: Some(sink),
        kafka_counters,
        owned: BTreeMap::new(),
        alerts: Vec::new(),
        sent: 0,
        figures: ConsumeSnapshot::default(),
        retired: PipelineCounters::default(),
        instance_id: member,
        interface_names: InterfaceDirectory::default(),
        to_pause: Vec::new(),
        paused: HashSet::new(),
    };
    let every = Duration::from_millis(config.scaleout.checkpoint_interval_ms);
    let mut last_publish = Instant::now();
    while !control.shutdown.load(Ordering::Relaxed) {
        let polled = consumer.poll(PUBLISH_EVERY);
        // Partitions assigned in this poll get their state before their first message.
        member.apply_events(&consumer);
        match polled {
            Some(Ok(message)) => member.run(
                message.partition(),
                message.offset(),
                message.payload().unwrap_or_default(),
            ),
            Some(Err(error)) => {
                member.figures.consumer_errors += 1;
                warn!("consumer: {error}");
            }
            None => {}
        }
        member.follow_restores(&consumer);
        // Once a round, not per message: each partition checkpoints when its own
        // interval is up.
        if last_publish.elapsed() >= PUBLISH_EVERY {
            member.checkpoint(&consumer, CommitMode::Async, Some(every));
            member.publish(&consumer, telemetry);
            last_publish = Instant::now();
        }
    }
    info!("stopping: delivering the last alerts, committing");
    let stopping = Instant::now();
    if let Some(sink) = member.sink.take() {
        sink.close().context("cannot flush the alert sink")?;
    }
    info!(elapsed = ?stopping.elapsed(), "the alert sink is closed: the last checkpoints");
    // An asynchronous commit: the close below waits for it, within its bound (a
    // synchronous one waits as long as the coordinator takes).
    member.checkpoint(&consumer, CommitMode::Async, None);
    member.states.close();
    if let Err(error) = member.checkpoints.flush(CLOSE_TIMEOUT) {
        warn!("the last checkpoints were not all delivered: {error}");
    }
    member.publish(&consumer, telemetry);
    info!(elapsed = ?stopping.elapsed(), "leaving the group");
    leave_group(consumer);
    info!(elapsed = ?stopping.elapsed(), "stopped");
    Ok(())
}

/// Leaves the group within `CLOSE_TIMEOUT`: librdkafka's close revokes the partitions,
/// waits for outstanding commits and sends LeaveGroup. Dropping the consumer would do
/// that without a bound (rdkafka polls until closed), and log an error when it is closed
/// already; so the consumer is closed here and then not dropped, closed or not: the
/// process exits next (`run` is `exflow detect`'s whole life), and a group that did not
/// hear the LeaveGroup notices at its session timeout.
fn leave_group(consumer: BaseConsumer<DetectContext>) {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    match consumer.close_queue() {
        Ok(()) => {
            while !consumer.closed() && Instant::now() < deadline {
                consumer.poll(PUBLISH_EVERY);
            }
        }
        Err(error) => warn!("cannot leave the group: {error}"),
    }
    if !consumer.closed() {
        warn!("the group did not answer within {CLOSE_TIMEOUT:?}: leaving without it");
    }
    std::mem::forget(consumer);
}
