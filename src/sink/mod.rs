//! sink: where alerts go, the end of the data path. JSON lines on stdout or appended to a
//! file by default; Kafka when configured. The daemon's shards hand their alerts straight
//! to the sink through an [`AlertSender`] each (one hop: the Kafka sink's bounded queue, or
//! the JSON lines writer).

pub mod flows;
pub mod kafka;
pub mod ocsf;
pub mod spool;

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::decode::record::NamedRecord;
use crate::detect::Alert;
use crate::sink::kafka::KafkaConfig;

/// The `[sink]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Alerts as JSON lines to this file (appended); default stdout.
    pub file: Option<PathBuf>,
    pub kafka: Option<KafkaConfig>,
}

/// Sees every decoded record (with the names of its interfaces where its exporter gave
/// them, and its inside host when it has one): the flows stream
/// ([`flows::FlowsPublisher`]), which the pipeline's `Ingest` feeds.
pub trait RecordTap: Send {
    fn record(&mut self, record: &NamedRecord<'_>, inside: Option<IpAddr>);

    /// End of input: deliver what is buffered.
    fn finish(&mut self) {}
}

/// Counters of the alert sink, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Alerts written (JSON lines) or queued for the Kafka sink thread.
    pub alerts: AtomicU64,
    /// Alerts the JSON lines sink failed to write.
    pub errors: AtomicU64,
}

/// The configured destination of alerts.
pub enum AlertSink {
    /// Shared with the [`AlertSender`]s: each shard writes its alerts under the lock (a
    /// std mutex, held for one batch of alerts and no I/O wait beyond the write).
    JsonLines(Arc<Mutex<JsonLines>>),
    Kafka(kafka::KafkaSink),
}

impl AlertSink {
    /// Kafka when `sink.kafka` is set, else `sink.file`, else stdout.
    pub fn from_config(config: &SinkConfig) -> anyhow::Result<AlertSink> {
        Ok(match (&config.kafka, &config.file) {
            (Some(kafka), _) => AlertSink::Kafka(kafka::KafkaSink::start(kafka)?),
            (None, Some(path)) => {
                AlertSink::JsonLines(Arc::new(Mutex::new(JsonLines::file(path)?)))
            }
            (None, None) => AlertSink::JsonLines(Arc::new(Mutex::new(JsonLines::stdout()))),
        })
    }

    /// A handle a shard hands its alerts to, counting them in `counters`.
    pub fn sender(&self, counters: Arc<SinkCounters>) -> AlertSender {
        let target = match self {
            AlertSink::JsonLines(lines) => Target::JsonLines(lines.clone()),
            AlertSink::Kafka(kafka) => Target::Kafka(kafka.queue()),
        };
        AlertSender { target, counters }
    }

    /// Hands over one alert: `Ok(true)` when written or queued. JSON lines are written at
    /// once (an error is returned); Kafka queues it for the sink thread (a full queue drops
    /// it, counted in the Kafka counters: `Ok(false)`).
    pub fn send(&mut self, alert: Alert) -> std::io::Result<bool> {
        match self {
            AlertSink::JsonLines(lines) => lock(lines).send(&alert).map(|()| true),
            AlertSink::Kafka(kafka) => Ok(kafka.send(alert)),
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            AlertSink::JsonLines(lines) => lock(lines).flush(),
            AlertSink::Kafka(_) => Ok(()),
        }
    }

    /// Flushes and stops: for Kafka, delivers what it can within its flush timeout and
    /// keeps the rest in the spool. The Kafka sink thread stops once every
    /// [`AlertSender`] is dropped too: drop them first.
    pub fn close(self) -> anyhow::Result<()> {
        match self {
            AlertSink::JsonLines(lines) => Ok(lock(&lines).flush()?),
            AlertSink::Kafka(kafka) => kafka.close(),
        }
    }
}

/// A poisoned lock means a panic while writing: the writer is still usable.
fn lock(lines: &Mutex<JsonLines>) -> std::sync::MutexGuard<'_, JsonLines> {
    lines.lock().unwrap_or_else(|e| e.into_inner())
}

/// One shard's handle on the alert sink (a cheap clone): its alerts go from the shard
/// straight to the sink's queue or file.
#[derive(Clone)]
pub struct AlertSender {
    target: Target,
    counters: Arc<SinkCounters>,
}

#[derive(Clone)]
enum Target {
    JsonLines(Arc<Mutex<JsonLines>>),
    Kafka(kafka::KafkaQueue),
}

impl AlertSender {
    /// Hands over a shard's alerts without waiting for Kafka: each written or queued is
    /// counted in `alerts`; a failed write in `errors`; a full Kafka queue drops the alert,
    /// counted in the Kafka counters' `queue_dropped`. JSON lines are flushed after the batch.
    pub fn send(&self, alerts: impl IntoIterator<Item = Alert>) {
        let (mut taken, mut failed) = (0, 0);
        match &self.target {
            Target::JsonLines(lines) => {
                let mut lines = lock(lines);
                for alert in alerts {
                    match lines.send(&alert) {
                        Ok(()) => taken += 1,
                        Err(_) => failed += 1,
                    }
                }
                if taken > 0 && lines.flush().is_err() {
                    failed += 1;
                }
            }
            Target::Kafka(queue) => {
                for alert in alerts {
                    // Dropped at the full queue: counted there, not taken.
                    taken += u64::from(queue.send(alert));
                }
            }
        }
        self.counters.alerts.fetch_add(taken, Ordering::Relaxed);
        self.counters.errors.fetch_add(failed, Ordering::Relaxed);
    }
}

/// The form alerts are written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AlertFormat {
    /// The exflow alert, `schemas/alert.schema.json`.
    #[default]
    Json,
    /// The alert as an OCSF 1.3.0 Detection Finding (`sink::ocsf`).
    Ocsf,
}

/// Alerts as JSON lines (one object per line, `schemas/alert.schema.json`, or OCSF findings).
pub struct JsonLines {
    out: Box<dyn Write + Send>,
    format: AlertFormat,
}

impl JsonLines {
    pub fn stdout() -> Self {
        JsonLines {
            out: Box::new(BufWriter::new(std::io::stdout())),
            format: AlertFormat::Json,
        }
    }

    /// The same lines in `format`.
    pub fn with_format(mut self, format: AlertFormat) -> Self {
        self.format = format;
        self
    }

    /// Appends to `path`, creating it when missing.
    pub fn file(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open sink.file '{}' for appending", path.display()))?;
        Ok(JsonLines {
            out: Box::new(BufWriter::new(file)),
            format: AlertFormat::Json,
        })
    }

    /// Writes one alert; the line is complete in the buffer before the next one starts.
    pub fn send(&mut self, alert: &Alert) -> std::io::Result<()> {
        let mut line = match self.format {
            AlertFormat::Json => serde_json::to_vec(alert),
            AlertFormat::Ocsf => serde_json::to_vec(&ocsf::detection_finding(alert)),
        }
        .map_err(std::io::Error::from)?;
        line.push(b'\n');
        self.out.write_all(&line)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
