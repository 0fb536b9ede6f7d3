//! sink kafka: alerts to Kafka through an on-disk spool. The pipeline hands alerts to a
//! bounded in-memory queue ([`KafkaQueue::send`]; a full queue drops the alert and counts it
//! in `queue_dropped`). The sink thread appends every queued alert to the spool, a
//! write-ahead log (fsync'd in batches), and produces from it in order; an acknowledged alert
//! is marked there and its segment deleted once all of it is. So a broker outage, a full
//! producer queue, a restart or `kill -9` all end the same way: what the spool holds is
//! (re-)sent, in order, when the broker answers. Alerts are lost only at a full queue or a
//! full spool (both counted), or when not yet synced to the spool at a crash.
//!
//! Messages: JSON body per `schemas/alert.schema.json`, key = the inside host (all alerts of
//! a host in one partition, in order), headers `schema` and `rule`; idempotent producer, lz4.
//! With `ocsf_topic` set, each alert is spooled a second time as its OCSF Detection Finding
//! (`sink::ocsf`, same key and headers, `schema` its own) and produced to that topic with the
//! same guarantees.
//!
//! Files: `config` (the `[sink.kafka]` section), `producer` (client setup shared with the
//! flows stream, health check), `encoding` (spool entry and message), `worker` (the sink
//! thread).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

pub mod config;
pub mod encoding;
pub mod producer;
pub mod tail;
mod worker;

pub use config::{FlowsFormat, KafkaConfig};
pub use producer::{health_check, producer};

use crate::detect::Alert;

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
    /// Alerts in the spool not yet acknowledged, on disk.
    pub spool_alerts: AtomicU64,
    /// Alerts taken by the spool but held in its memory buffer because the disk is full
    /// (bounded; written when space returns, counted in `spool_dropped` if exflow stops first).
    pub spool_held: AtomicU64,
    /// 1 while deliveries succeed (or, with nothing to deliver, the broker answers), 0 from
    /// the first failed delivery or unanswered check until the next success.
    pub broker_up: AtomicU64,
    /// Producers replaced because librdkafka reported them fatal (fenced) or after an outage.
    pub producer_recreated: AtomicU64,
    /// Alerts the broker rejected for good, moved to `dead-letter.jsonl` in the spool dir.
    pub dead_lettered: AtomicU64,
    /// Spooled alerts found on the topic already (delivered before a crash or a failure
    /// whose report was lost) and so not sent again.
    pub duplicates_skipped: AtomicU64,
    /// Read-backs of the topic's tail that failed (after a few in a row the spool is sent
    /// without the check, so delivery never waits on read permission).
    pub tail_check_failures: AtomicU64,
    /// Damaged spool records skipped (the spool's count since it was opened).
    pub spool_corrupt: AtomicU64,
    /// Records cut short by a crash at the end of the spool (since it was opened).
    pub spool_torn: AtomicU64,
}

/// The pipeline's handle: a bounded queue to the sink thread.
pub struct KafkaSink {
    queue: KafkaQueue,
    thread: JoinHandle<anyhow::Result<()>>,
    pub counters: Arc<KafkaCounters>,
}

/// The bounded queue to the sink thread, one clone per shard.
#[derive(Clone)]
pub struct KafkaQueue {
    queue: SyncSender<Alert>,
    counters: Arc<KafkaCounters>,
}

impl KafkaQueue {
    /// Hands an alert to the sink thread without blocking: `true` when queued; a full queue
    /// drops it, counted in `queue_dropped`, and returns `false`.
    pub fn send(&self, alert: Alert) -> bool {
        let queued = match self.queue.try_send(alert) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        };
        if !queued {
            self.counters.queue_dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }
}

impl KafkaSink {
    /// Creates the producer (validating the librdkafka options), opens the spool and
    /// starts the sink thread, without waiting for the broker: the thread checks it. A
    /// broker that does not answer is logged, not an error: alerts wait in the spool.
    pub fn start(config: &KafkaConfig) -> anyhow::Result<KafkaSink> {
        let counters = Arc::new(KafkaCounters::default());
        let mut worker = worker::Worker::new(config, counters.clone())?;
        let (queue, alerts) = sync_channel(config.queue_alerts.max(1));
        let thread = std::thread::Builder::new()
            .name("exflow-kafka".into())
            .spawn(move || worker.run(alerts))?;
        Ok(KafkaSink {
            queue: KafkaQueue {
                queue,
                counters: counters.clone(),
            },
            thread,
            counters,
        })
    }

    /// Another handle on the queue, for a shard to send its alerts itself.
    pub fn queue(&self) -> KafkaQueue {
        self.queue.clone()
    }

    /// Hands an alert to the sink thread without blocking, as [`KafkaQueue::send`].
    pub fn send(&self, alert: Alert) -> bool {
        self.queue.send(alert)
    }

    /// Stops the sink thread once every [`KafkaQueue`] clone is dropped too: it spools what
    /// is queued, flushes the producer within `flush_timeout_ms`, and leaves what is
    /// undelivered in the spool for the next start.
    pub fn close(self) -> anyhow::Result<()> {
        let KafkaSink { queue, thread, .. } = self;
        drop(queue);
        match thread.join() {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the kafka sink thread panicked"),
        }
    }
}
