//! scaleout checkpoint: how a partition's state passes from one `exflow detect` to the
//! next. A detector writes, per owned partition, an offsets record to
//! `scaleout.state_topic` every round (the committed offset and the alert ids it had
//! delivered lately), and now and then (`scaleout.state_interval_ms`, when every alert of
//! the partition is acknowledged) the state a replay of recent records cannot rebuild (the
//! rules' long memory, suppression, risk: [`crate::pipeline::Shard::checkpoint`]) as one
//! generation of state messages of at most `scaleout.max_state_message_bytes` each, with
//! the offset the state covers and where, `scaleout.rewind_s` of event time earlier, a new
//! owner starts replaying to rebuild the rest. A new owner reads the partition's latest
//! records back ([`StateReader`]) when it is assigned the partition and restores the newest
//! complete generation ([`Assembly`]). The records and the key scheme are in
//! `schemas/flows.v1.md`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::detect::CheckpointSnapshot;
use crate::sink::kafka::tail::read_tails;

/// The checkpoint records' schema name.
pub const CHECKPOINT_SCHEMA: &str = "exflow.state.v1";
/// Delivered alert ids a checkpoint names at most (the newest).
pub const MAX_DELIVERED_IDS: usize = 1024;
/// Records read back from the end of each state-topic partition for a new owner: a
/// compacted topic is far shorter; one that is not (tansu's memory storage) holds every
/// round of every partition, and only the latest rounds matter.
const TAIL_RECORDS: i64 = 65_536;
/// Alerts per partition of the alerts topic a new owner reads back (`recent_alert_ids`).
const RECENT_ALERTS: i64 = 10_000;
/// How long reading the state topic back may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Rewind marks a partition keeps: one every `rewind_s / MARKS` of event time.
const MARKS: u64 = 64;
/// Generations of a partition's state a reader holds while reading (the newest): the
/// latest, possibly partial, and the complete one before it, with one to spare.
const MAX_GENERATIONS: usize = 3;

/// A partition's offsets record on the state topic (JSON), written every round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub schema: String,
    pub group: String,
    /// The detector's `scaleout.instance_id`.
    pub member: String,
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset as this detector committed it: below it every alert
    /// was acknowledged by the broker.
    pub committed_offset: i64,
    /// The next offset the detector was to run.
    pub next_offset: i64,
    /// The partition's event clock, ms.
    pub clock_ms: u64,
    /// Wall clock when written, ms.
    pub written_ms: u64,
    /// Ids of the alerts the detector had delivered (acknowledged by the broker) lately,
    /// the newest last: a new owner that raises one of them again counts it and does not
    /// send it.
    #[serde(default)]
    pub delivered_alert_ids: Vec<String>,
}

/// The header of one state message: a JSON line, then `b'\n'`, then the message's slice
/// of the state's JSON bytes. A generation's `count` messages, in `seq` order, make the
/// state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChunk {
    pub schema: String,
    /// The writer's `scaleout.instance_id`.
    pub member: String,
    pub topic: String,
    pub partition: i32,
    /// Grows with each state of the partition, across owners: the writer's wall clock
    /// (ms), or one more than the partition's latest generation when that is higher.
    pub generation: u64,
    pub seq: u32,
    pub count: u32,
    /// The whole state's length and CRC-32 (IEEE), checked when it is put together.
    pub state_bytes: u64,
    pub state_crc32: u32,
    /// The offset the state covers: the records below it made it.
    pub state_offset: i64,
    /// Where a new owner starts reading: `rewind_s` of event time before `state_offset`.
    pub rebuild_from_offset: i64,
    /// The partition's event clock and the writer's wall clock, ms.
    pub clock_ms: u64,
    pub written_ms: u64,
}

impl StateChunk {
    /// A header of `generation` of `partition`'s state; [`state_messages`] fills in the
    /// sequence, count, length and CRC.
    pub fn new(member: &str, topic: &str, partition: i32, generation: u64) -> StateChunk {
        StateChunk {
            schema: CHECKPOINT_SCHEMA.to_string(),
            member: member.to_string(),
            topic: topic.to_string(),
            partition,
            generation,
            seq: 0,
            count: 0,
            state_bytes: 0,
            state_crc32: 0,
            state_offset: 0,
            rebuild_from_offset: 0,
            clock_ms: 0,
            written_ms: 0,
        }
    }

    /// The key of this message: the slot (`generation % 2`) and the sequence, so that a
    /// compacted topic keeps the latest generation of each slot, and the one being
    /// written replaces the one before the previous, never the previous.
    pub fn key(&self) -> String {
        state_key(&self.topic, self.partition, self.generation % 2, self.seq)
    }
}

/// The key of a partition's offsets record.
pub fn offsets_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}/offsets")
}

/// The key of message `seq` of a partition's state in `slot` (0 or 1).
pub fn state_key(topic: &str, partition: i32, slot: u64, seq: u32) -> String {
    format!("{topic}/{partition}/state/{slot}/{seq}")
}

/// The state messages of `state` (a JSON document) under `header`'s generation, each at
/// most `max_bytes` long with its header line: (key, value) in sequence order.
pub fn state_messages(
    header: &StateChunk,
    state: &[u8],
    max_bytes: usize,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    // The longest header this generation can have: every number at its widest.
    let widest = StateChunk {
        seq: u32::MAX,
        count: u32::MAX,
        state_bytes: u64::MAX,
        state_crc32: u32::MAX,
        ..header.clone()
    };
    let header_bytes = serde_json::to_vec(&widest)?.len() + 1;
    let per_message = max_bytes.saturating_sub(header_bytes);
    anyhow::ensure!(
        per_message > 0,
        "scaleout.max_state_message_bytes {max_bytes} leaves no room beside a {header_bytes}-byte header"
    );
    let count = u32::try_from(state.len().div_ceil(per_message).max(1))
        .context("a state of more than 4 G messages")?;
    let mut chunk = StateChunk {
        count,
        state_bytes: state.len() as u64,
        state_crc32: crc32fast::hash(state),
        ..header.clone()
    };
    let mut messages = Vec::with_capacity(count as usize);
    for seq in 0..count {
        chunk.seq = seq;
        let from = seq as usize * per_message;
        let slice = &state[from..(from + per_message).min(state.len())];
        let mut value = serde_json::to_vec(&chunk)?;
        value.push(b'\n');
        value.extend_from_slice(slice);
        messages.push((chunk.key(), value));
    }
    Ok(messages)
}

/// A state message's header and slice, `None` for a message that is not one.
pub fn parse_state_message(value: &[u8]) -> Option<(StateChunk, &[u8])> {
    let end = value.iter().position(|&b| b == b'\n')?;
    let header: StateChunk = serde_json::from_slice(&value[..end]).ok()?;
    (header.schema == CHECKPOINT_SCHEMA && header.seq < header.count)
        .then_some((header, &value[end + 1..]))
}

/// A partition's state as a checkpoint restores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedState {
    pub generation: u64,
    pub member: String,
    pub state_offset: i64,
    pub rebuild_from_offset: i64,
    /// The state's JSON, whole (its length and CRC checked): a detector's checkpoint,
    /// parsed by the new owner off its consumer thread.
    pub state: Vec<u8>,
    pub state_bytes: u64,
    pub messages: u32,
}

/// One generation being put together.
#[derive(Debug)]
struct Pending {
    header: StateChunk,
    slices: BTreeMap<u32, Vec<u8>>,
}

/// The state messages of one partition read back, put together by generation: the
/// newest `MAX_GENERATIONS` generations are held (their slices), older ones dropped.
#[derive(Debug, Default)]
pub struct Assembly {
    pending: BTreeMap<(u64, String), Pending>,
    /// The highest generation heard of, partial or not.
    pub latest_generation: u64,
}

impl Assembly {
    /// Takes one state message of the partition.
    pub fn add(&mut self, header: StateChunk, slice: &[u8]) {
        self.latest_generation = self.latest_generation.max(header.generation);
        let id = (header.generation, header.member.clone());
        let pending = self.pending.entry(id).or_insert_with(|| Pending {
            header: header.clone(),
            slices: BTreeMap::new(),
        });
        // A message that disagrees with its generation's first (another writer under the
        // same name and generation) is not taken.
        let first = &pending.header;
        if (
            first.count,
            first.state_bytes,
            first.state_crc32,
            first.state_offset,
        ) == (
            header.count,
            header.state_bytes,
            header.state_crc32,
            header.state_offset,
        ) {
            pending.slices.insert(header.seq, slice.to_vec());
        }
        while self.pending.len() > MAX_GENERATIONS {
            self.pending.pop_first();
        }
    }

    /// The newest complete generation's state, and how many newer generations were partial
    /// (messages missing, or the whole not matching its length and CRC) and so ignored.
    pub fn finish(self) -> (Option<SavedState>, u64) {
        let mut partial = 0;
        for (_, pending) in self.pending.into_iter().rev() {
            let header = pending.header;
            if pending.slices.len() != header.count as usize {
                partial += 1;
                continue;
            }
            let mut bytes = Vec::with_capacity(header.state_bytes.min(1 << 30) as usize);
            for slice in pending.slices.values() {
                bytes.extend_from_slice(slice);
            }
            let whole = bytes.len() as u64 == header.state_bytes
                && crc32fast::hash(&bytes) == header.state_crc32;
            match whole.then_some(bytes) {
                Some(state) => {
                    let saved = SavedState {
                        generation: header.generation,
                        member: header.member,
                        state_offset: header.state_offset,
                        rebuild_from_offset: header.rebuild_from_offset,
                        state,
                        state_bytes: header.state_bytes,
                        messages: header.count,
                    };
                    return (Some(saved), partial);
                }
                None => partial += 1,
            }
        }
        (None, partial)
    }
}

/// What the state topic holds for one partition.
#[derive(Debug, Default)]
pub struct Found {
    /// The newest complete generation of its state.
    pub state: Option<SavedState>,
    /// Generations newer than `state` that were partial, ignored.
    pub partial_states: u64,
    /// The highest generation heard of: the next owner's generations are above it.
    pub latest_generation: u64,
    /// The latest offsets record's delivered alert ids.
    pub delivered_alert_ids: HashSet<String>,
    /// Records of this partition read back (any member's, any round, any kind).
    pub records: u64,
}

/// The checkpoint producer's context: counts the records the broker did not take (one
/// larger than its `message.max.bytes`, a timeout).
#[derive(Default)]
pub struct CheckpointContext {
    pub failed: AtomicU64,
}

impl ClientContext for CheckpointContext {}

impl ProducerContext for CheckpointContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, message)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            warn!(
                bytes = message.payload_len(),
                "a checkpoint record was not delivered: {error}"
            );
        }
    }
}

/// The checkpoint producer, shared by the consumer thread (offsets records) and the
/// state writer's thread.
pub type CheckpointProducer = Arc<ThreadedProducer<CheckpointContext>>;

/// How long a state message waits at most for room in the producer's queue.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

/// A partition's state to encode and send: its header (the generation, offsets, clocks)
/// and the detector's state as [`crate::pipeline::Shard::checkpoint`] copied it.
struct StateJob {
    header: StateChunk,
    state: CheckpointSnapshot,
}

/// What the writer last sent of a partition's state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub bytes: u64,
    pub messages: u32,
}

/// Encodes partitions' states to JSON, splits them into state messages and hands them to
/// the producer, on a thread of its own: encoding a large state (tens of MB at 100,000
/// hosts) would stall the consumer thread, which only copies it. One state at a time: the consumer thread
/// makes a partition's state value only when the writer is idle (between rounds), or
/// waits for it at shutdown.
pub struct StateWriter {
    jobs: Option<SyncSender<StateJob>>,
    thread: Option<JoinHandle<()>>,
    /// States handed over and not yet sent.
    busy: Arc<AtomicUsize>,
    shared: Arc<WriterShared>,
}

/// What the writer's thread reports.
#[derive(Default)]
struct WriterShared {
    written: Mutex<BTreeMap<i32, Written>>,
    /// State messages handed to the producer.
    messages: AtomicU64,
    /// States that could not be encoded or queued whole.
    failures: AtomicU64,
}

impl StateWriter {
    pub fn spawn(
        producer: CheckpointProducer,
        state_topic: &str,
        max_message_bytes: usize,
    ) -> anyhow::Result<StateWriter> {
        let (jobs, receiver) = sync_channel(1);
        let busy = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(WriterShared::default());
        let thread = {
            let (busy, shared, topic) = (busy.clone(), shared.clone(), state_topic.to_string());
            std::thread::Builder::new()
                .name("exflow-state".into())
                .spawn(move || {
                    write_states(
                        receiver,
                        &producer,
                        &topic,
                        max_message_bytes,
                        &busy,
                        &shared,
                    )
                })?
        };
        Ok(StateWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            busy,
            shared,
        })
    }

    /// Whether the writer has no state to send: a round may hand it one.
    pub fn idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// Hands `state` over under `header`, waiting while the writer sends another.
    pub fn write(&self, header: StateChunk, state: CheckpointSnapshot) {
        let Some(jobs) = &self.jobs else {
            return;
        };
        self.busy.fetch_add(1, Ordering::AcqRel);
        if jobs.send(StateJob { header, state }).is_err() {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            self.shared.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What was last sent of `partition`'s state.
    pub fn written(&self, partition: i32) -> Written {
        let written = self
            .shared
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        written.get(&partition).copied().unwrap_or_default()
    }

    /// State messages handed to the producer, and states not sent whole.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.shared.messages.load(Ordering::Relaxed),
            self.shared.failures.load(Ordering::Relaxed),
        )
    }

    /// Sends what was handed over, then stops the thread.
    pub fn close(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer's thread: each state encoded, split and queued, then the keys of its slot
/// that an earlier, longer generation of this writer left beyond it deleted (tombstones,
/// for compaction).
fn write_states(
    jobs: Receiver<StateJob>,
    producer: &ThreadedProducer<CheckpointContext>,
    topic: &str,
    max_message_bytes: usize,
    busy: &AtomicUsize,
    shared: &WriterShared,
) {
    // Messages this writer last sent per (partition, slot).
    let mut slots: HashMap<(i32, u64), u32> = HashMap::new();
    for StateJob { header, state } in jobs {
        let encoded = state
            .encode()
            .context("cannot encode the state")
            .and_then(|bytes| {
                Ok((
                    bytes.len() as u64,
                    state_messages(&header, &bytes, max_message_bytes)?,
                ))
            });
        let (partition, slot) = (header.partition, header.generation % 2);
        match encoded {
            Ok((bytes, messages)) => {
                let count = messages.len() as u32;
                let queued = messages
                    .iter()
                    .take_while(|(key, value)| queue(producer, topic, key, Some(value)))
                    .count();
                shared.messages.fetch_add(queued as u64, Ordering::Relaxed);
                if queued < messages.len() {
                    shared.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(partition, queued, "a state was not queued whole");
                } else {
                    let before = slots.insert((partition, slot), count).unwrap_or(0);
                    for seq in count..before {
                        let key = state_key(&header.topic, partition, slot, seq);
                        queue(producer, topic, &key, None);
                    }
                    let mut written = shared.written.lock().unwrap_or_else(|e| e.into_inner());
                    written.insert(
                        partition,
                        Written {
                            bytes,
                            messages: count,
                        },
                    );
                }
            }
            Err(error) => {
                shared.failures.fetch_add(1, Ordering::Relaxed);
                warn!(partition, "{error:#}");
            }
        }
        busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Queues one record (`None`: a tombstone), waiting up to `QUEUE_WAIT` for room.
fn queue(
    producer: &ThreadedProducer<CheckpointContext>,
    topic: &str,
    key: &str,
    value: Option<&Vec<u8>>,
) -> bool {
    let deadline = Instant::now() + QUEUE_WAIT;
    loop {
        let mut record = BaseRecord::<str, [u8]>::to(topic).key(key);
        if let Some(value) = value {
            record = record.payload(value.as_slice());
        }
        match producer.send(record) {
            Ok(()) => return true,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((error, _)) => {
                warn!(key, "cannot queue a state message: {error}");
                return false;
            }
        }
    }
}

/// Where a partition's event clock stood at which offsets, for the rewind before a
/// state: a mark every `rewind_s / 64` of event time, the oldest kept the latest at or
/// before `rewind_s` ago. Bounded at 66 marks.
#[derive(Debug)]
pub struct Rewind {
    /// (clock ms, offset of the watermark that moved the clock there), oldest first.
    marks: VecDeque<(u64, i64)>,
    rewind_ms: u64,
    spacing_ms: u64,
}

impl Rewind {
    /// Marks of a partition whose owner started reading at `start_offset`.
    pub fn new(rewind_s: u64, start_offset: i64) -> Rewind {
        let rewind_ms = rewind_s.saturating_mul(1000);
        Rewind {
            marks: VecDeque::from([(0, start_offset)]),
            rewind_ms,
            spacing_ms: (rewind_ms / MARKS).max(1000),
        }
    }

    /// The clock moved to `clock_ms` at the watermark at `offset`.
    pub fn on_clock(&mut self, clock_ms: u64, offset: i64) {
        let last = self.marks.back().map_or(0, |m| m.0);
        if self.marks.len() == 1 || clock_ms >= last.saturating_add(self.spacing_ms) {
            self.marks.push_back((clock_ms, offset));
        }
        let horizon = clock_ms.saturating_sub(self.rewind_ms);
        while self.marks.len() >= 2 && self.marks[1].0 <= horizon {
            self.marks.pop_front();
        }
    }

    /// Where a replay starts to see `rewind_s` of event time before the clock now.
    pub fn from_offset(&self) -> i64 {
        self.marks.front().map_or(0, |m| m.1)
    }
}

/// Reads the state topic back for newly assigned partitions, and the alerts topic's
/// recent ids.
pub struct StateReader {
    consumer: BaseConsumer,
    state_topic: String,
    alerts_topic: String,
}

impl StateReader {
    pub fn new(
        brokers: &str,
        state_topic: &str,
        alerts_topic: &str,
        options: &BTreeMap<String, String>,
    ) -> anyhow::Result<StateReader> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("client.id", "exflow-state-reader")
            // librdkafka assigns only with a group id; this consumer never joins the group
            // (it assigns itself partitions) nor commits.
            .set("group.id", "exflow-state-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The end of each partition as the fetch responses report it: tansu 0.6
            // answers ListOffsets "latest" up to a record batch short (see the sink's
            // skip_delivered).
            .set("enable.partition.eof", "true");
        for (key, value) in options {
            client.set(key, value);
        }
        let consumer = client
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
            .create()
            .context("invalid settings for reading the state topic")?;
        Ok(StateReader {
            consumer,
            state_topic: state_topic.to_string(),
            alerts_topic: alerts_topic.to_string(),
        })
    }

    /// The ids of the last [`RECENT_ALERTS`] alerts of each partition of the alerts topic:
    /// what a partition's previous owner delivered after its last checkpoint is among
    /// them, so a new owner that raises those alerts again counts them instead of sending
    /// them twice.
    pub fn recent_alert_ids(&self) -> anyhow::Result<HashSet<String>> {
        #[derive(Deserialize)]
        struct Id {
            alert_id: String,
        }
        let mut ids = HashSet::new();
        read_tails(
            &self.consumer,
            &self.alerts_topic,
            RECENT_ALERTS,
            READ_TIMEOUT,
            READ_TIMEOUT,
            |message| {
                if let Some(id) = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Id>(p).ok())
                {
                    ids.insert(id.alert_id);
                }
            },
        )
        .context("cannot read the alerts topic back")?;
        let _ = self.consumer.unassign();
        Ok(ids)
    }

    /// What the state topic holds for each of `partitions` of `flows_topic`, in one read
    /// of the state topic (none for a partition that has no record).
    pub fn latest(
        &self,
        flows_topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<BTreeMap<i32, Found>> {
        let topic = self.state_topic.as_str();
        let wanted: HashSet<i32> = partitions.iter().copied().collect();
        let offsets: HashMap<Vec<u8>, i32> = partitions
            .iter()
            .map(|&p| (offsets_key(flows_topic, p).into_bytes(), p))
            .collect();
        let prefix = format!("{flows_topic}/");
        let mut found: BTreeMap<i32, Found> = BTreeMap::new();
        let mut assemblies: BTreeMap<i32, Assembly> = BTreeMap::new();
        let mut latest: BTreeMap<i32, CheckpointRecord> = BTreeMap::new();
        read_tails(
            &self.consumer,
            topic,
            TAIL_RECORDS,
            READ_TIMEOUT,
            READ_TIMEOUT,
            |message| {
                let (Some(key), Some(payload)) = (message.key(), message.payload()) else {
                    return;
                };
                // A record another exflow wrote, or of another schema, is skipped.
                if let Some(&partition) = offsets.get(key) {
                    let Some(record) = serde_json::from_slice::<CheckpointRecord>(payload)
                        .ok()
                        .filter(|r| r.schema == CHECKPOINT_SCHEMA && r.partition == partition)
                    else {
                        return;
                    };
                    found.entry(partition).or_default().records += 1;
                    latest.insert(partition, record);
                } else if key.starts_with(prefix.as_bytes()) {
                    let Some((header, slice)) = parse_state_message(payload)
                        .filter(|(h, _)| h.topic == flows_topic && wanted.contains(&h.partition))
                    else {
                        return;
                    };
                    found.entry(header.partition).or_default().records += 1;
                    assemblies
                        .entry(header.partition)
                        .or_default()
                        .add(header, slice);
                }
            },
        )
        .context("cannot read the state topic")?;
        let _ = self.consumer.unassign();
        for (partition, record) in latest {
            found.entry(partition).or_default().delivered_alert_ids =
                record.delivered_alert_ids.into_iter().collect();
        }
        for (partition, assembly) in assemblies {
            let entry = found.entry(partition).or_default();
            entry.latest_generation = assembly.latest_generation;
            (entry.state, entry.partial_states) = assembly.finish();
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rewind_starts_at_the_latest_mark_a_rewind_before_the_clock() {
        // 600 s: a mark every 10 s at most (the floor is 1 s).
        let mut rewind = Rewind::new(600, 7);
        assert_eq!(
            rewind.from_offset(),
            7,
            "a short history starts at the start"
        );
        let t0 = 1_700_000_000_000;
        for i in 0..200u64 {
            rewind.on_clock(t0 + i * 5000, 100 + i as i64);
        }
        // The clock is at t0 + 995 s: the latest mark at or before t0 + 395 s is the one
        // at t0 + 390 s (marks are 10 s apart: every other step), offset 178.
        assert_eq!(rewind.from_offset(), 178);
        assert!(rewind.marks.len() <= MARKS as usize + 2);
    }

    fn generation(
        generation: u64,
        state: &serde_json::Value,
        max: usize,
    ) -> Vec<(String, Vec<u8>)> {
        let header = StateChunk {
            state_offset: generation as i64 * 100,
            rebuild_from_offset: generation as i64 * 10,
            ..StateChunk::new("detect-1", "flows", 3, generation)
        };
        state_messages(&header, &serde_json::to_vec(state).unwrap(), max).unwrap()
    }

    fn feed(assembly: &mut Assembly, messages: &[(String, Vec<u8>)]) {
        for (_, value) in messages {
            let (header, slice) = parse_state_message(value).unwrap();
            assembly.add(header, slice);
        }
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn a_state(hosts: usize) -> serde_json::Value {
        let hosts: Vec<String> = (0..hosts)
            .map(|h| format!("10.0.{}.{}", h / 256, h % 256))
            .collect();
        serde_json::json!({ "version": 1, "hosts": hosts })
    }

    #[test]
    fn a_state_is_split_into_bounded_messages_keyed_by_slot_and_sequence() {
        let state = a_state(2000);
        let messages = generation(7, &state, 2048);
        assert!(messages.len() > 5, "{} messages", messages.len());
        for (seq, (key, value)) in messages.iter().enumerate() {
            assert!(value.len() <= 2048, "message {seq}: {} bytes", value.len());
            assert_eq!(key, &format!("flows/3/state/1/{seq}"));
            let (header, _) = parse_state_message(value).unwrap();
            assert_eq!(
                (header.seq, header.count),
                (seq as u32, messages.len() as u32)
            );
        }
        // Put together again, in any order.
        let mut assembly = Assembly::default();
        let mut shuffled = messages.clone();
        shuffled.reverse();
        feed(&mut assembly, &shuffled);
        let (saved, partial) = assembly.finish();
        let saved = saved.unwrap();
        assert_eq!(json(&saved.state), state);
        assert_eq!(
            (
                saved.generation,
                saved.state_offset,
                saved.rebuild_from_offset
            ),
            (7, 700, 70)
        );
        assert_eq!(saved.messages as usize, messages.len());
        assert_eq!(partial, 0);
        // A header too long for the bound is refused, not overrun.
        assert!(state_messages(&StateChunk::new("d", "flows", 3, 1), b"{}", 100).is_err());
    }

    #[test]
    fn the_newest_complete_generation_is_restored_and_a_partial_one_is_counted() {
        let (old, new, newest) = (a_state(500), a_state(900), a_state(1200));
        let mut assembly = Assembly::default();
        feed(&mut assembly, &generation(1, &a_state(10), 2048));
        feed(&mut assembly, &generation(2, &old, 2048));
        feed(&mut assembly, &generation(3, &new, 2048));
        // The newest lost a message (its writer died, or the broker refused one).
        let mut last = generation(4, &newest, 2048);
        last.remove(1);
        feed(&mut assembly, &last);
        assert_eq!(assembly.latest_generation, 4);
        let (saved, partial) = assembly.finish();
        assert_eq!(json(&saved.unwrap().state), new);
        assert_eq!(partial, 1);

        // A slice that does not match its header's CRC: the generation is partial too.
        let mut assembly = Assembly::default();
        feed(&mut assembly, &generation(2, &old, 2048));
        let mut bad = generation(3, &new, 2048);
        let corrupt = bad[0].1.len() - 1;
        bad[0].1[corrupt] ^= 1;
        feed(&mut assembly, &bad);
        let (saved, partial) = assembly.finish();
        assert_eq!(json(&saved.unwrap().state), old);
        assert_eq!(partial, 1);

        // Only partial ones: nothing to restore. Not a state message: none.
        let mut assembly = Assembly::default();
        feed(&mut assembly, &last);
        assert_eq!(assembly.finish(), (None, 1));
        assert!(parse_state_message(b"{}\n").is_none());
        assert!(parse_state_message(b"no header").is_none());
    }
}
