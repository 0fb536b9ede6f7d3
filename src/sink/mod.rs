//! sink: where alerts go, the end of the data path. JSON lines on stdout or appended to a
//! file by default; Kafka when configured.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;

use crate::detect::Alert;

/// Alerts as JSON lines (one object per line, `schemas/alert.schema.json`).
pub struct JsonLines {
    out: Box<dyn Write + Send>,
}

impl JsonLines {
    pub fn stdout() -> Self {
        JsonLines { out: Box::new(BufWriter::new(std::io::stdout())) }
    }

    /// Appends to `path`, creating it when missing.
    pub fn file(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open sink.file '{}' for appending", path.display()))?;
        Ok(JsonLines { out: Box::new(BufWriter::new(file)) })
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
