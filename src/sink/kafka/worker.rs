//! sink kafka worker: the sink thread. Appends queued alerts to the spool, produces from the
//! spool in order, applies delivery reports as acknowledgements, and checks the broker while
//! it is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tracing::{info, warn};

use super::producer::{DeliveryContext, health_check, producer};
use super::{KafkaConfig, KafkaCounters, encoding};
use crate::detect::Alert;
use crate::sink::spool::{AppendError, Spool, SpoolSeq};

pub(super) struct Worker {
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
    /// Creates the producer (validating the librdkafka options), opens the spool and checks
    /// the broker. A broker that does not answer is logged, not an error: alerts wait in the
    /// spool.
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
        let up = health_check(&producer, &config.topic, Duration::from_secs(5));
        counters.broker_up.store(u64::from(up), Ordering::Relaxed);
        let next_to_send = spool.first_unacked().unwrap_or(0);
        Ok(Worker {
            producer,
            spool,
            topic: config.topic.clone(),
            counters,
            in_flight: HashMap::new(),
            read_ahead: Vec::new(),
            next_to_send,
            broker_up: up,
            last_health_check: Instant::now(),
            unsynced: false,
            acked_since_commit: false,
            flush_timeout: Duration::from_millis(config.flush_timeout_ms),
        })
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
        let Some(payload) = encoding::encode(alert) else {
            return;
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
            let message = encoding::decode(&payload);
            let record = BaseRecord::with_opaque_to(&self.topic, Box::new(seq))
                .key(message.key.as_ref())
                .payload(message.body)
                .headers(message.headers());
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
