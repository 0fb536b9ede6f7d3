//! sink: alerts to Kafka, never lost. The spool is a write-ahead log: every alert is
//! appended to it (fsync'd in batches) and produced from it in order; an acknowledged alert
//! is marked there and its segment deleted once all of it is. So a broker outage, a full
//! producer queue, a restart or `kill -9` all end the same way: what the spool holds is
//! (re-)sent, in order, when the broker answers. The in-memory queue in front (a bounded
//! channel from the pipeline) keeps disk and network off the detection thread.
//!
//! Messages: JSON body per `schemas/alert.schema.json`, key = the inside host (all alerts of
//! a host in one partition, in order), headers `schema` and `rule`; idempotent producer, lz4.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tracing::{info, warn};

use super::spool::{AppendError, Spool, SpoolSeq};
use crate::config::KafkaConfig;
use crate::detect::Alert;
use crate::detect::alert::ALERT_SCHEMA;

/// Counters of the Kafka sink, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct KafkaCounters {
    /// Alerts the broker acknowledged.
    pub delivered: AtomicU64,
    /// Delivery attempts that failed (each is retried from the spool).
    pub failed: AtomicU64,
    /// Alerts dropped because the in-memory queue to the sink thread was full.
    pub queue_dropped: AtomicU64,
    /// Alerts dropped because the spool was at `spool_max_bytes`.
    pub spool_dropped: AtomicU64,
    /// Alerts in the spool not yet acknowledged.
    pub spool_alerts: AtomicU64,
    /// 1 while the broker answers, 0 while it does not.
    pub broker_up: AtomicU64,
}

/// The pipeline's handle: a bounded queue to the sink thread.
pub struct KafkaSink {
    queue: Option<SyncSender<Alert>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    pub counters: Arc<KafkaCounters>,
}

impl KafkaSink {
    /// Creates the producer (validating the librdkafka options), opens the spool and
    /// starts the sink thread. A broker that does not answer is logged, not an error:
    /// alerts wait in the spool.
    pub fn start(config: &KafkaConfig) -> anyhow::Result<KafkaSink> {
        let producer = producer(config)?;
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        let counters = Arc::new(KafkaCounters::default());
        counters.spool_alerts.store(spool.len(), Ordering::Relaxed);
        if !spool.is_empty() {
            info!(alerts = spool.len(), dir = %config.spool_dir.display(), "re-sending alerts from the spool");
        }
        let up = health_check(&producer, &config.topic, Duration::from_secs(5));
        counters.broker_up.store(u64::from(up), Ordering::Relaxed);
        let (queue, alerts) = sync_channel(config.queue_alerts.max(1));
        let mut worker = Worker {
            producer,
            spool,
            topic: config.topic.clone(),
            counters: counters.clone(),
            in_flight: HashMap::new(),
            read_ahead: Vec::new(),
            next_to_send: 0,
            broker_up: up,
            last_health_check: Instant::now(),
            unsynced: false,
            acked_since_commit: false,
            flush_timeout: Duration::from_millis(config.flush_timeout_ms),
        };
        worker.next_to_send = worker.spool.first_unacked().unwrap_or(0);
        let thread = std::thread::Builder::new()
            .name("exflow-kafka".into())
            .spawn(move || worker.run(alerts))?;
        Ok(KafkaSink {
            queue: Some(queue),
            thread: Some(thread),
            counters,
        })
    }

    /// Hands an alert to the sink thread without blocking; a full queue drops it, counted.
    pub fn send(&self, alert: Alert) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(alert) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.queue_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stops the sink thread: it spools what is queued, flushes the producer within
    /// `flush_timeout_ms`, and leaves what is undelivered in the spool for the next start.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.queue.take();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the kafka sink thread panicked"),
            None => Ok(()),
        }
    }
}

/// Builds the producer: exflow's defaults, then the user's `librdkafka_options` (which may
/// override them), validated by librdkafka itself (an unknown or bad property is an error
/// that names it).
pub fn producer(config: &KafkaConfig) -> anyhow::Result<BaseProducer<DeliveryContext>> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", config.message_timeout_ms.to_string())
        .set("client.id", "exflow");
    for (key, value) in &config.librdkafka_options {
        client.set(key, value);
    }
    client
        .create_with_context(DeliveryContext::default())
        .with_context(|| "invalid sink.kafka settings (librdkafka_options or brokers)".to_string())
}

/// Fetches the topic's metadata: the broker answers and knows the topic (or creates it).
pub fn health_check<C: ProducerContext>(
    producer: &BaseProducer<C>,
    topic: &str,
    timeout: Duration,
) -> bool {
    match producer.client().fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => {
            let found = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none());
            if !found {
                warn!(
                    topic,
                    "kafka answers but topic '{topic}' is not available yet; alerts wait in the spool"
                );
            }
            found
        }
        Err(error) => {
            warn!("kafka broker unreachable ({error}); collecting on, alerts wait in the spool");
            false
        }
    }
}

/// Receives delivery reports during `poll`, on the sink thread.
#[derive(Default)]
pub struct DeliveryContext {
    reports: Mutex<Vec<(SpoolSeq, bool)>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<SpoolSeq>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((*seq, result.is_ok()));
    }
}

struct Worker {
    producer: BaseProducer<DeliveryContext>,
    spool: Spool,
    topic: String,
    counters: Arc<KafkaCounters>,
    /// Spool entries handed to the producer, not yet reported.
    in_flight: HashMap<SpoolSeq, ()>,
    /// Spool entries read ahead, in order, not yet sent.
    read_ahead: Vec<(SpoolSeq, Vec<u8>)>,
    /// The lowest spool seq not yet handed to the producer.
    next_to_send: SpoolSeq,
    broker_up: bool,
    last_health_check: Instant,
    unsynced: bool,
    acked_since_commit: bool,
    flush_timeout: Duration,
}

/// In flight at most: bounds memory and the re-sends after an outage.
const MAX_IN_FLIGHT: usize = 10_000;
const READ_AHEAD: usize = 512;
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(2);

impl Worker {
    fn run(&mut self, alerts: Receiver<Alert>) -> anyhow::Result<()> {
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
            && (!self.in_flight.is_empty() || (self.broker_up && self.has_unsent()))
        {
            self.pump();
        }
        self.producer.poll(Duration::ZERO);
        self.settle();
        self.commit();
        if !self.spool.is_empty() {
            info!(
                alerts = self.spool.len(),
                "undelivered alerts kept in the spool for the next start"
            );
        }
        Ok(())
    }

    fn append(&mut self, alert: &Alert) {
        let payload = match serde_json::to_vec(alert) {
            Ok(payload) => payload,
            Err(_) => return,
        };
        match self.spool.append(&payload) {
            Ok(_) => self.unsynced = true,
            Err(AppendError::Full) => {
                self.counters.spool_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(AppendError::Io(error)) => {
                warn!("cannot append to the spool: {error}; alert dropped");
                self.counters.spool_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn sync(&mut self) {
        if self.unsynced {
            if let Err(error) = self.spool.sync() {
                warn!("cannot sync the spool: {error}");
            }
            self.unsynced = false;
        }
        self.counters
            .spool_alerts
            .store(self.spool.len(), Ordering::Relaxed);
    }

    fn has_unsent(&self) -> bool {
        !self.read_ahead.is_empty() || self.spool.len() as usize > self.in_flight.len()
    }

    /// Sends what the spool holds, in order, while the broker is up; handles reports.
    fn pump(&mut self) {
        self.producer.poll(Duration::from_millis(10));
        self.settle();
        if !self.broker_up {
            if self.in_flight.is_empty() && self.last_health_check.elapsed() >= HEALTH_CHECK_EVERY {
                self.last_health_check = Instant::now();
                if health_check(&self.producer, &self.topic, Duration::from_secs(1)) {
                    info!("kafka broker is back; sending the spool");
                    self.broker_up = true;
                    self.counters.broker_up.store(1, Ordering::Relaxed);
                    // Re-send from the oldest unacknowledged alert.
                    self.next_to_send = self.spool.first_unacked().unwrap_or(self.next_to_send);
                    self.read_ahead.clear();
                }
            }
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
                batch.reverse(); // pop from the back in order
                self.read_ahead = batch;
            }
            let Some((seq, payload)) = self.read_ahead.pop() else {
                return;
            };
            let (key, rule) = routing(&payload);
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "schema",
                    value: Some(ALERT_SCHEMA),
                })
                .insert(Header {
                    key: "rule",
                    value: Some(rule.as_str()),
                });
            let record = BaseRecord::with_opaque_to(&self.topic, Box::new(seq))
                .key(&key)
                .payload(&payload)
                .headers(headers);
            match self.producer.send(record) {
                Ok(()) => {
                    self.in_flight.insert(seq, ());
                    self.next_to_send = seq + 1;
                }
                Err((_, _)) => {
                    // The producer's queue is full: backpressure. Put it back, try later.
                    self.read_ahead.push((seq, payload));
                    return;
                }
            }
        }
    }

    /// Applies delivery reports: acknowledged entries are marked in the spool; a failure
    /// marks the broker down, and everything unacknowledged is re-sent when it is back.
    fn settle(&mut self) {
        let reports = std::mem::take(
            &mut *self
                .producer
                .context()
                .reports
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (seq, delivered) in reports {
            self.in_flight.remove(&seq);
            if delivered {
                self.spool.ack(seq);
                self.acked_since_commit = true;
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                if self.broker_up {
                    warn!(
                        "kafka delivery failed; alerts wait in the spool until the broker is back"
                    );
                    self.broker_up = false;
                    self.counters.broker_up.store(0, Ordering::Relaxed);
                    self.last_health_check = Instant::now();
                }
            }
        }
    }

    fn commit(&mut self) {
        if self.acked_since_commit {
            if let Err(error) = self.spool.commit_acks() {
                warn!("cannot record acknowledged alerts in the spool: {error}");
            }
            self.acked_since_commit = false;
        }
        self.counters
            .spool_alerts
            .store(self.spool.len(), Ordering::Relaxed);
    }
}

/// The message key (inside host) and `rule` header of a spooled alert.
fn routing(payload: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Routing {
        inside_addr: String,
        rule: String,
    }
    match serde_json::from_slice::<Routing>(payload) {
        Ok(r) => (r.inside_addr, r.rule),
        Err(_) => (String::new(), String::new()),
    }
}
