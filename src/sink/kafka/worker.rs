//! sink kafka worker: the sink thread. Appends queued alerts to the spool, produces from the
//! spool in order, applies delivery reports as acknowledgements, and heals the link: while
//! deliveries fail it checks the broker; when the broker answers again it replaces the
//! producer (a fenced or stale idempotent producer never delivers again), skips the spooled
//! alerts the topic holds already, and re-sends the rest. A fatal producer error replaces the
//! producer at once; an alert the broker rejects for good goes to the dead-letter file. With
//! `ocsf_topic` set every alert is spooled twice, as itself and as its OCSF finding, and each
//! copy goes to its own topic with the same guarantees.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tracing::{debug, info, warn};

use super::encoding::Stream;
use super::producer::{DeliveryContext, Failure, health_check, producer, tail_consumer};
use super::tail::read_tails;
use super::{KafkaConfig, KafkaCounters, encoding};
use crate::detect::Alert;
use crate::sink::spool::{AppendError, Spool, SpoolSeq};

/// In flight at most: bounds memory and the re-sends after an outage.
const MAX_IN_FLIGHT: usize = 10_000;
const READ_AHEAD: usize = 512;
/// How often the broker is checked while deliveries fail.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Most messages read back per partition to find spooled alerts the topic holds already.
const TAIL_CHECK_MAX: u64 = 50_000;
/// How long reading back the topic's tail may take before it counts as a failed check.
const TAIL_CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// Failed read-backs of the topic's tail in a row before the spool is sent unchecked.
const TAIL_CHECK_ATTEMPTS: u32 = 3;
/// Name of the dead-letter file in the spool directory.
pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";

pub(super) struct Worker {
    /// Kept to build a new producer and the tail consumer.
    config: KafkaConfig,
    producer: BaseProducer<DeliveryContext>,
    spool: Spool,
    counters: Arc<KafkaCounters>,
    /// Spool entries handed to the producer, not yet reported.
    in_flight: HashSet<SpoolSeq>,
    /// Entries whose batch the broker rejected for good: the rejection may be for another
    /// message of the batch, so each is sent again alone (nothing else in flight) and only
    /// a rejection then moves it to the dead-letter file. Bounded by `MAX_IN_FLIGHT`.
    suspects: BTreeSet<SpoolSeq>,
    /// The suspect sent alone, awaiting its report.
    probing: Option<SpoolSeq>,
    /// Spool entries read ahead, in order, not yet sent.
    read_ahead: VecDeque<(SpoolSeq, Vec<u8>)>,
    /// The lowest spool seq not yet handed to the producer.
    next_to_send: SpoolSeq,
    /// No entry at or above this was ever handed to a producer (in this run; at start, every
    /// entry may have been, by the previous run): the tail check looks below it only.
    sent_below: SpoolSeq,
    /// Whether alerts are produced: false from a failed delivery until the broker answers.
    sending: bool,
    /// When the broker was last checked; `None` before the first check.
    last_health_check: Option<Instant>,
    /// Since when the worker waits for in-flight reports before a check (a stuck producer is
    /// replaced after twice the message timeout).
    draining_since: Option<Instant>,
    /// A delivery failed with this producer: replace it before sending again (a fresh
    /// idempotent producer id, no state from before the outage).
    failed_since_created: bool,
    /// The spool may hold alerts the topic has already (alerts in flight at a crash or at a
    /// failure): read the topic's tail and skip them before sending.
    check_topic_tail: bool,
    /// Read-backs of the tail that failed since the last one that worked.
    tail_check_failed_in_a_row: u32,
    /// `dead-letter.jsonl` in the spool dir, opened at the first rejected alert.
    dead_letter_path: PathBuf,
    dead_letter: Option<File>,
    unsynced: bool,
    /// The last spool write failed (a full disk): logged once until it succeeds again.
    spool_write_failing: bool,
    /// The last commit of acknowledgements failed: logged once until one succeeds.
    commit_failing: bool,
    acked_since_commit: bool,
    flush_timeout: Duration,
}

impl Worker {
    /// Creates the producer (validating the librdkafka options) and opens the spool; the
    /// broker is checked by the thread ([`Worker::run`]), so start-up never waits for it.
    pub(super) fn new(
        config: &KafkaConfig,
        counters: Arc<KafkaCounters>,
    ) -> anyhow::Result<Worker> {
        let producer = producer(config)?;
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        counters.spool_alerts.store(spool.len(), Ordering::Relaxed);
        if !spool.is_empty() {
            info!(alerts = spool.len(), dir = %config.spool_dir.display(), "re-sending alerts from the spool");
        }
        let next_to_send = spool.first_unacked().unwrap_or(0);
        let worker = Worker {
            config: config.clone(),
            producer,
            counters,
            in_flight: HashSet::new(),
            suspects: BTreeSet::new(),
            probing: None,
            read_ahead: VecDeque::new(),
            next_to_send,
            sent_below: spool.next_seq(),
            sending: false,
            last_health_check: None,
            draining_since: None,
            failed_since_created: false,
            // A previous run may have delivered some of what the spool holds.
            check_topic_tail: !spool.is_empty(),
            tail_check_failed_in_a_row: 0,
            dead_letter_path: config.spool_dir.join(DEAD_LETTER_FILE),
            dead_letter: None,
            spool,
            unsynced: false,
            spool_write_failing: false,
            commit_failing: false,
            acked_since_commit: false,
            flush_timeout: Duration::from_millis(config.flush_timeout_ms),
        };
        worker.publish_spool_counters();
        Ok(worker)
    }

    pub(super) fn run(&mut self, alerts: Receiver<Alert>) -> anyhow::Result<()> {
        let mut last_commit = Instant::now();
        loop {
            let open = match alerts.recv_timeout(Duration::from_millis(50)) {
                Ok(alert) => {
                    self.append(&alert);
                    while let Ok(alert) = alerts.try_recv() {
                        self.append(&alert);
                    }
                    true
                }
                Err(RecvTimeoutError::Timeout) => true,
                Err(RecvTimeoutError::Disconnected) => false,
            };
            self.sync();
            self.pump();
            if last_commit.elapsed() >= Duration::from_secs(1) {
                self.commit();
                last_commit = Instant::now();
            }
            if !open {
                break;
            }
        }
        // Shutdown: what is delivered within the flush timeout is acknowledged; the rest
        // stays in the spool for the next start.
        let deadline = Instant::now() + self.flush_timeout;
        while Instant::now() < deadline
            && (!self.in_flight.is_empty() || (self.sending && self.has_unsent()))
        {
            self.pump();
        }
        self.producer.poll(Duration::ZERO);
        self.settle();
        self.sync();
        self.commit();
        let lost = self.spool.buffered();
        if lost > 0 {
            // Held in memory because the disk was full: they end with the process, counted.
            self.counters
                .spool_dropped
                .fetch_add(lost, Ordering::Relaxed);
            warn!(
                alerts = lost,
                "alerts that could not be written to the spool (full disk) are lost at shutdown"
            );
        }
        if self.spool.len() > lost {
            info!(
                alerts = self.spool.len() - lost,
                "undelivered alerts kept in the spool for the next start"
            );
        }
        Ok(())
    }

    /// Spools the alert, and its OCSF finding when an OCSF topic is set.
    fn append(&mut self, alert: &Alert) {
        self.append_entry(encoding::encode(alert));
        if self.config.ocsf_topic.is_some() {
            self.append_entry(encoding::encode_ocsf(alert));
        }
    }

    fn append_entry(&mut self, payload: Option<Vec<u8>>) {
        let Some(payload) = payload else {
            return;
        };
        match self.spool.append(&payload) {
            Ok(_) => self.unsynced = true,
            Err(AppendError::Full) => {
                self.counters.spool_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(AppendError::Io(error)) => {
                if !self.spool_write_failing {
                    warn!("cannot append to the spool: {error}; alerts dropped (counted)");
                    self.spool_write_failing = true;
                }
                self.counters.spool_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn sync(&mut self) {
        if self.unsynced || self.spool.buffered() > 0 {
            match self.spool.sync() {
                Ok(()) if self.spool_write_failing => {
                    info!("the spool is written again");
                    self.spool_write_failing = false;
                }
                Ok(()) => {}
                Err(error) if !self.spool_write_failing => {
                    warn!(
                        buffered = self.spool.buffered(),
                        "cannot write the spool: {error}; alerts are held in memory (bounded) \
                         until it can, and dropped (counted) beyond that"
                    );
                    self.spool_write_failing = true;
                }
                Err(_) => {}
            }
            self.unsynced = false;
        }
        self.publish_spool_counters();
    }

    fn publish_spool_counters(&self) {
        let spool = self.spool.counters();
        let counters = &self.counters;
        // What is on disk; alerts held in memory on a full disk are not.
        counters.spool_alerts.store(
            self.spool.len().saturating_sub(self.spool.buffered()),
            Ordering::Relaxed,
        );
        counters
            .spool_held
            .store(self.spool.buffered(), Ordering::Relaxed);
        counters
            .spool_corrupt
            .store(spool.corrupt_records, Ordering::Relaxed);
        counters
            .spool_torn
            .store(spool.torn_tails, Ordering::Relaxed);
    }

    fn has_unsent(&self) -> bool {
        !self.read_ahead.is_empty()
            || (self.spool.len().saturating_sub(self.spool.buffered())) as usize
                > self.in_flight.len()
    }

    fn set_broker_up(&self, up: bool) {
        self.counters
            .broker_up
            .store(u64::from(up), Ordering::Relaxed);
    }

    /// Sends what the spool holds, in order, while the broker takes it; handles reports;
    /// heals the link while it does not.
    fn pump(&mut self) {
        self.producer.poll(Duration::from_millis(10));
        self.settle();
        if self.producer_is_fatal() {
            self.recreate_producer("librdkafka reported a fatal error");
        }
        if !self.sending {
            self.heal();
            return;
        }
        if !self.suspects.is_empty() {
            self.probe_suspect();
            return;
        }
        while self.in_flight.len() < MAX_IN_FLIGHT {
            if self.read_ahead.is_empty() {
                let mut batch = Vec::with_capacity(READ_AHEAD);
                if let Err(error) = self.spool.read(self.next_to_send, READ_AHEAD, &mut batch) {
                    warn!("cannot read the spool: {error}");
                    return;
                }
                if batch.is_empty() {
                    return;
                }
                self.read_ahead = batch.into();
            }
            let Some((seq, payload)) = self.read_ahead.pop_front() else {
                return;
            };
            let message = encoding::decode(&payload);
            let Some(topic) = self.topic(message.stream) else {
                self.no_topic(seq, &payload);
                self.next_to_send = seq + 1;
                continue;
            };
            let record = BaseRecord::with_opaque_to(topic, Box::new(seq))
                .key(message.key.as_ref())
                .payload(message.body)
                .headers(message.headers());
            let code = match self.producer.send(record) {
                Ok(()) => {
                    self.in_flight.insert(seq);
                    self.next_to_send = seq + 1;
                    self.sent_below = self.sent_below.max(seq + 1);
                    continue;
                }
                Err((KafkaError::MessageProduction(code), _)) => code,
                Err((error, _)) => error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
            };
            if code == RDKafkaErrorCode::QueueFull {
                // Backpressure: put it back, try after the next poll.
                self.read_ahead.push_front((seq, payload));
                return;
            }
            match Failure::of(code) {
                Failure::Permanent => {
                    self.dead_letter(seq, &payload, code);
                    self.next_to_send = seq + 1;
                }
                failure => {
                    self.read_ahead.push_front((seq, payload));
                    self.delivery_failed(code, failure);
                    return;
                }
            }
        }
    }

    /// Sends the oldest suspect alone once nothing else is in flight (see `suspects`).
    fn probe_suspect(&mut self) {
        if !self.in_flight.is_empty() {
            return;
        }
        let Some(seq) = self.suspects.pop_first() else {
            return;
        };
        let mut entry = Vec::new();
        if let Err(error) = self.spool.read(seq, 1, &mut entry) {
            warn!("cannot read the spool: {error}");
            self.suspects.insert(seq);
            return;
        }
        let Some((found, payload)) = entry.pop().filter(|(found, _)| *found == seq) else {
            return; // acknowledged meanwhile, or lost to damage
        };
        let message = encoding::decode(&payload);
        let Some(topic) = self.topic(message.stream) else {
            self.no_topic(seq, &payload);
            return;
        };
        let record = BaseRecord::with_opaque_to(topic, Box::new(found))
            .key(message.key.as_ref())
            .payload(message.body)
            .headers(message.headers());
        match self.producer.send(record) {
            Ok(()) => {
                self.in_flight.insert(seq);
                // Its report decides: delivered, or rejected alone and so dead-lettered.
                self.probing = Some(seq);
            }
            Err(_) => {
                self.suspects.insert(seq);
            }
        }
    }

    /// The topic of a stream; `None` for OCSF findings spooled by a run that had an OCSF
    /// topic when this one has none.
    fn topic(&self, stream: Stream) -> Option<&str> {
        match stream {
            Stream::Alerts => Some(&self.config.topic),
            Stream::Ocsf => self.config.ocsf_topic.as_deref(),
        }
    }

    /// A spooled OCSF finding with no OCSF topic configured any more: kept in the
    /// dead-letter file (counted), never sent to the alert topic.
    fn no_topic(&mut self, seq: SpoolSeq, payload: &[u8]) {
        warn!("a spooled OCSF finding has no sink.kafka.ocsf_topic to go to");
        self.dead_letter(seq, payload, RDKafkaErrorCode::UnknownTopic);
    }

    /// Whether the producer can deliver no more: librdkafka's fatal error, reported by the
    /// error callback or found by asking.
    fn producer_is_fatal(&self) -> bool {
        self.producer.context().fatal.load(Ordering::Relaxed)
            || self.producer.client().fatal_error().is_some()
    }

    /// While not sending: waits for the reports of what is in flight, then checks the broker
    /// every [`HEALTH_CHECK_EVERY`]; when it answers, replaces a producer that failed, skips
    /// what the topic holds already and resumes from the oldest unacknowledged alert.
    fn heal(&mut self) {
        if !self.in_flight.is_empty() {
            let since = *self.draining_since.get_or_insert_with(Instant::now);
            let patience = Duration::from_millis(self.config.message_timeout_ms.max(1000)) * 2;
            if since.elapsed() < patience {
                return;
            }
            self.recreate_producer("deliveries are not reported");
        }
        self.draining_since = None;
        if self
            .last_health_check
            .is_some_and(|last| last.elapsed() < HEALTH_CHECK_EVERY)
        {
            return;
        }
        self.last_health_check = Some(Instant::now());
        if !health_check(&self.producer, &self.config.topic, Duration::from_secs(1)) {
            self.set_broker_up(false);
            return;
        }
        if self.failed_since_created {
            self.recreate_producer("the broker is back after failed deliveries");
        }
        if self.check_topic_tail {
            match self.skip_delivered() {
                Ok(skipped) => {
                    self.tail_check_failed_in_a_row = 0;
                    if skipped > 0 {
                        info!(
                            skipped,
                            "spooled alerts found on the topic already; not sent again"
                        );
                    }
                    self.check_topic_tail = false;
                }
                Err(error) => {
                    self.counters
                        .tail_check_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.tail_check_failed_in_a_row += 1;
                    if self.tail_check_failed_in_a_row < TAIL_CHECK_ATTEMPTS {
                        warn!("cannot read back the alert topic ({error:#}); retrying");
                        self.set_broker_up(false);
                        return;
                    }
                    // E.g. no read permission on the topic: delivering at least once beats
                    // holding every alert back.
                    warn!(
                        "cannot read back the alert topic ({error:#}); sending the spool \
                         unchecked: alerts delivered before may be sent again (same alert_id)"
                    );
                    self.check_topic_tail = false;
                }
            }
        }
        if !self.spool.is_empty() {
            info!(
                alerts = self.spool.len(),
                "kafka broker answers; sending the spool"
            );
        }
        self.sending = true;
        self.next_to_send = self.spool.first_unacked().unwrap_or(self.next_to_send);
        self.read_ahead.clear();
        if self.spool.is_empty() {
            self.set_broker_up(true);
        }
    }

    /// Replaces the producer: the old one is dropped (librdkafka purges what it still holds;
    /// those alerts are unacknowledged in the spool and are sent again by the new one).
    fn recreate_producer(&mut self, why: &str) {
        let fatal = self.producer.client().fatal_error();
        match producer(&self.config) {
            Ok(fresh) => {
                warn!(
                    ?fatal,
                    in_flight = self.in_flight.len(),
                    "replacing the kafka producer: {why}"
                );
                // Drop the old one before using the new one: its purged reports go nowhere.
                self.producer = fresh;
                self.counters
                    .producer_recreated
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                // The settings were valid at start; nothing else can fail here but memory.
                warn!("cannot create a new kafka producer: {error:#}");
                return;
            }
        }
        // Whatever was in flight may or may not have reached the topic.
        if !self.in_flight.is_empty() {
            self.check_topic_tail = true;
        }
        self.in_flight.clear();
        self.failed_since_created = false;
        self.draining_since = None;
        self.stop_sending();
    }

    fn stop_sending(&mut self) {
        if let Some(seq) = self.probing.take() {
            self.suspects.insert(seq);
        }
        self.sending = false;
        self.read_ahead.clear();
        self.next_to_send = self.spool.first_unacked().unwrap_or(self.next_to_send);
    }

    /// A delivery (or a send) failed for a reason other than the message itself.
    fn delivery_failed(&mut self, code: RDKafkaErrorCode, failure: Failure) {
        self.failed_since_created = true;
        self.set_broker_up(false);
        if self.sending {
            warn!(
                ?code,
                ?failure,
                "kafka delivery failed; alerts wait in the spool until the broker takes them"
            );
            self.stop_sending();
            // The check happens at once, then every HEALTH_CHECK_EVERY.
            self.last_health_check = None;
        }
    }

    /// Applies delivery reports: acknowledged entries are marked in the spool; a permanent
    /// rejection moves the alert to the dead-letter file; any other failure stops sending
    /// until the broker is back (everything unacknowledged is re-sent then).
    fn settle(&mut self) {
        let reports = std::mem::take(
            &mut *self
                .producer
                .context()
                .reports
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (seq, outcome) in reports {
            if !self.in_flight.remove(&seq) {
                continue; // sent by a replaced producer: re-sent already
            }
            if self.probing == Some(seq) && outcome.is_ok() {
                self.probing = None;
            }
            match outcome {
                Ok(()) => {
                    self.spool.ack(seq);
                    self.acked_since_commit = true;
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    self.set_broker_up(true);
                }
                Err(code) => match Failure::of(code) {
                    Failure::Permanent if self.probing == Some(seq) => {
                        self.probing = None;
                        let mut entry = Vec::new();
                        match self.spool.read(seq, 1, &mut entry) {
                            Ok(()) => match entry.pop() {
                                Some((found, payload)) if found == seq => {
                                    self.dead_letter(seq, &payload, code)
                                }
                                _ => {}
                            },
                            Err(error) => warn!("cannot read the spool: {error}"),
                        }
                    }
                    Failure::Permanent => {
                        self.suspects.insert(seq);
                    }
                    failure => {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        // The broker may have written it before the failure was reported.
                        self.check_topic_tail = true;
                        self.delivery_failed(code, failure);
                    }
                },
            }
        }
    }

    /// Moves a rejected alert to the dead-letter file (its JSON, one line) and acknowledges
    /// it in the spool, so it never holds back the alerts behind it. When the file cannot be
    /// written the alert is still acknowledged (and counted): it would never be delivered.
    fn dead_letter(&mut self, seq: SpoolSeq, payload: &[u8], code: RDKafkaErrorCode) {
        let message = encoding::decode(payload);
        warn!(
            ?code,
            alert_id = %message.alert_id,
            path = %self.dead_letter_path.display(),
            "kafka rejects the alert for good; moved to the dead-letter file"
        );
        if let Err(error) = self.write_dead_letter(message.body) {
            warn!(
                "cannot write the dead-letter file '{}': {error}",
                self.dead_letter_path.display()
            );
        }
        self.spool.ack(seq);
        self.acked_since_commit = true;
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    fn write_dead_letter(&mut self, body: &[u8]) -> std::io::Result<()> {
        if self.dead_letter.is_none() {
            self.dead_letter = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.dead_letter_path)?,
            );
        }
        let Some(file) = self.dead_letter.as_mut() else {
            return Ok(());
        };
        let mut line = Vec::with_capacity(body.len() + 1);
        line.extend_from_slice(body);
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    }

    /// Reads back the last messages of every partition of the topic and acknowledges the
    /// spooled alerts found there (by `alert_id`), so they are not sent twice. Returns how
    /// many were skipped.
    ///
    /// Each partition is read to its end as the broker's fetch responses report it
    /// (librdkafka's partition EOF), not to the end a ListOffsets request gave at the start:
    /// tansu 0.6 answers ListOffsets "latest" with the first offset of its newest record batch
    /// plus one, up to a whole batch short, and stopping there missed the last alerts of each
    /// partition, exactly those a crash leaves unacknowledged in the spool.
    fn skip_delivered(&mut self) -> anyhow::Result<u64> {
        let unacked = self.spool.len();
        if unacked == 0 {
            return Ok(0);
        }
        // Our alerts after a duplicate are unacknowledged too, or acknowledged out of order
        // (at most MAX_IN_FLIGHT beyond): the duplicates are within this many of the end.
        let tail = (unacked + MAX_IN_FLIGHT as u64).min(TAIL_CHECK_MAX) as i64;
        let consumer = tail_consumer(&self.config)?;
        let mut on_topic: HashSet<(Stream, String)> = HashSet::new();
        for stream in [Stream::Alerts, Stream::Ocsf] {
            if let Some(topic) = self.topic(stream) {
                read_tail(&consumer, topic, stream, tail, &mut on_topic)?;
            }
        }
        let mut skipped = 0;
        if !on_topic.is_empty() {
            let mut from = self.spool.first_unacked().unwrap_or(0);
            while from < self.sent_below {
                let mut batch = Vec::with_capacity(READ_AHEAD);
                self.spool.read(from, READ_AHEAD, &mut batch)?;
                let Some(&(last, _)) = batch.last() else {
                    break;
                };
                for (seq, payload) in &batch {
                    let message = encoding::decode(payload);
                    if *seq < self.sent_below
                        && on_topic.contains(&(message.stream, message.alert_id.into_owned()))
                    {
                        self.spool.ack(*seq);
                        skipped += 1;
                    }
                }
                from = last + 1;
            }
        }
        if skipped > 0 {
            self.acked_since_commit = true;
            self.counters
                .duplicates_skipped
                .fetch_add(skipped, Ordering::Relaxed);
            self.publish_spool_counters();
        }
        Ok(skipped)
    }

    fn commit(&mut self) {
        if self.acked_since_commit {
            // A failed commit is retried at the next one (every second).
            match self.spool.commit_acks() {
                Ok(()) => {
                    self.commit_failing = false;
                    self.acked_since_commit = false;
                }
                Err(error) if !self.commit_failing => {
                    warn!("cannot record acknowledged alerts in the spool: {error}");
                    self.commit_failing = true;
                }
                Err(_) => {}
            }
        }
        self.publish_spool_counters();
    }
}

/// Reads back the last `tail` messages of every partition of `topic` and adds the alert ids
/// found to `on_topic` (see `Worker::skip_delivered`).
fn read_tail(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    stream: Stream,
    tail: i64,
    on_topic: &mut HashSet<(Stream, String)>,
) -> anyhow::Result<()> {
    let read = read_tails(
        consumer,
        topic,
        tail,
        Duration::from_secs(5),
        TAIL_CHECK_TIMEOUT,
        |message| {
            if let Some(id) = message.payload().and_then(|body| stream.alert_id(body)) {
                on_topic.insert((stream, id));
            }
        },
    )?;
    debug!(topic, read, "read back the topic's tail");
    Ok(())
}
