//! sink: where alerts go, the end of the data path. JSON lines on stdout or appended to a
//! file by default; Kafka when configured.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use crate::detect::Alert;
use crate::sink::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Alerts as JSON lines to this file (appended); default stdout.
    pub file: Option<PathBuf>,
    pub kafka: Option<KafkaConfig>,
}

pub mod flows;
pub mod kafka;
pub mod spool;

/// The configured destination of alerts.
pub enum AlertSink {
    JsonLines(JsonLines),
    Kafka(kafka::KafkaSink),
}

impl AlertSink {
    /// Kafka when `sink.kafka` is set, else `sink.file`, else stdout.
    pub fn from_config(config: &SinkConfig) -> anyhow::Result<AlertSink> {
        Ok(match (&config.kafka, &config.file) {
            (Some(kafka), _) => AlertSink::Kafka(kafka::KafkaSink::start(kafka)?),
            (None, Some(path)) => AlertSink::JsonLines(JsonLines::file(path)?),
            (None, None) => AlertSink::JsonLines(JsonLines::stdout()),
        })
    }

    /// Hands over one alert: `Ok(true)` when written or queued. JSON lines are written at
    /// once (an error is returned); Kafka queues it for the sink thread (a full queue drops
    /// it, counted in the Kafka counters: `Ok(false)`).
    pub fn send(&mut self, alert: Alert) -> std::io::Result<bool> {
        match self {
            AlertSink::JsonLines(lines) => lines.send(&alert).map(|()| true),
            AlertSink::Kafka(kafka) => Ok(kafka.send(alert)),
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            AlertSink::JsonLines(lines) => lines.flush(),
            AlertSink::Kafka(_) => Ok(()),
        }
    }

    /// Flushes and stops: for Kafka, delivers what it can within its flush timeout and
    /// keeps the rest in the spool.
    pub fn close(self) -> anyhow::Result<()> {
        match self {
            AlertSink::JsonLines(mut lines) => Ok(lines.flush()?),
            AlertSink::Kafka(kafka) => kafka.close(),
        }
    }
}

/// Alerts as JSON lines (one object per line, `schemas/alert.schema.json`).
pub struct JsonLines {
    out: Box<dyn Write + Send>,
}

impl JsonLines {
    pub fn stdout() -> Self {
        JsonLines {
            out: Box::new(BufWriter::new(std::io::stdout())),
        }
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
        })
    }

    /// Writes one alert; the line is complete in the buffer before the next one starts.
    pub fn send(&mut self, alert: &Alert) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(alert).map_err(std::io::Error::from)?;
        line.push(b'\n');
        self.out.write_all(&line)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
