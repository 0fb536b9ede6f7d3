//! scaleout metrics: what `exflow collect` and `exflow detect` add to the Prometheus
//! endpoint (`exflow_collect_*`, `exflow_consume_*`), beside the stages' own metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::encoding::MessageError;

/// The collector's counters: bumped by its thread and by librdkafka's delivery reports.
#[derive(Debug, Default)]
pub struct CollectCounters {
    /// Records the broker acknowledged.
    pub published: AtomicU64,
    /// Records dropped because the producer's queue stayed full.
    pub dropped: AtomicU64,
    /// Records and watermarks that failed delivery after librdkafka's retries.
    pub failed: AtomicU64,
    /// Watermarks handed to the producer (one per partition each time).
    pub watermarks: AtomicU64,
    /// Watermarks dropped at a full producer queue.
    pub watermarks_dropped: AtomicU64,
    /// The collector's table clock, ms.
    pub clock_ms: AtomicU64,
    /// Partitions of the flows topic.
    pub partitions: AtomicU64,
}

/// One owned partition's figures.
#[derive(Debug, Clone, Default)]
pub struct PartitionFigures {
    pub partition: i32,
    /// The partition's high watermark minus the next offset to read.
    pub lag_records: u64,
    /// The partition's event clock, ms.
    pub clock_ms: u64,
    /// Seconds since its last checkpoint with a state was written (since it was assigned
    /// before that), and that record's size.
    pub checkpoint_age_s: u64,
    pub checkpoint_bytes: u64,
    /// Reading back from the start to rebuild its state, alerts not sent.
    pub rebuilding: bool,
}

/// What the detector's consumer thread last published.
#[derive(Debug, Clone, Default)]
pub struct ConsumeSnapshot {
    pub partitions: Vec<PartitionFigures>,
    /// Partitions assigned that another member (or an earlier run) had worked on.
    pub takeovers: u64,
    pub records: u64,
    pub watermarks: u64,
    pub malformed: [u64; MessageError::ALL.len()],
    /// Alerts raised again while rebuilding state below the committed offset, not sent.
    pub rebuilt_alerts: u64,
    /// Messages of partitions not (or no longer) owned, skipped.
    pub unowned_messages: u64,
    /// Each collector's latest clock over the owned partitions, ms.
    pub collectors: BTreeMap<String, u64>,
    /// Watermarks ignored at `scaleout.max_collectors`.
    pub ignored_watermarks: u64,
    pub checkpoints: u64,
    /// Checkpoints that carried the partition's state.
    pub state_checkpoints: u64,
    /// Partitions assigned with a checkpoint's state, and the entries it restored.
    pub restored_checkpoints: u64,
    pub restored_entries: u64,
    /// Alerts raised again with an id the previous owner's checkpoint names as delivered:
    /// counted, not sent.
    pub duplicate_alerts: u64,
    pub checkpoint_failures: u64,
    pub commit_failures: u64,
    pub consumer_errors: u64,
}

/// The scale-out metrics of one process.
#[derive(Debug)]
pub enum ScaleoutMetrics {
    Collect(std::sync::Arc<CollectCounters>),
    Consume(Mutex<ConsumeSnapshot>),
}

type Metric<'a> = &'a dyn Fn(&mut String, &str, &str, &str, &[(String, u64)]);

impl ScaleoutMetrics {
    /// Appends the metrics in the text exposition format, with `metric` writing one.
    pub fn render(&self, out: &mut String, metric: Metric<'_>) {
        let one = |v: u64| vec![(String::new(), v)];
        match self {
            ScaleoutMetrics::Collect(c) => {
                let load = |a: &AtomicU64| one(a.load(Ordering::Relaxed));
                for (name, kind, help, value) in [
                    (
                        "exflow_collect_published_records_total",
                        "counter",
                        "Records the broker acknowledged on the flows topic.",
                        &c.published,
                    ),
                    (
                        "exflow_collect_dropped_records_total",
                        "counter",
                        "Records dropped because the producer queue stayed full.",
                        &c.dropped,
                    ),
                    (
                        "exflow_collect_failed_messages_total",
                        "counter",
                        "Records and watermarks that failed delivery after retries.",
                        &c.failed,
                    ),
                    (
                        "exflow_collect_watermarks_total",
                        "counter",
                        "Watermarks produced, one per partition each time.",
                        &c.watermarks,
                    ),
                    (
                        "exflow_collect_dropped_watermarks_total",
                        "counter",
                        "Watermarks dropped at a full producer queue.",
                        &c.watermarks_dropped,
                    ),
                    (
                        "exflow_collect_partitions",
                        "gauge",
                        "Partitions of the flows topic.",
                        &c.partitions,
                    ),
                ] {
                    metric(out, name, kind, help, &load(value));
                }
                metric(
                    out,
                    "exflow_collect_watermark_seconds",
                    "gauge",
                    "This collector's event clock (its watermark), seconds since the epoch.",
                    &one(c.clock_ms.load(Ordering::Relaxed) / 1000),
                );
            }
            ScaleoutMetrics::Consume(snapshot) => {
                let s = snapshot.lock().unwrap_or_else(|e| e.into_inner());
                let per_partition = |f: &dyn Fn(&PartitionFigures) -> u64| -> Vec<(String, u64)> {
                    s.partitions
                        .iter()
                        .map(|p| (format!("{{partition=\"{}\"}}", p.partition), f(p)))
                        .collect()
                };
                metric(
                    out,
                    "exflow_consume_partitions",
                    "gauge",
                    "Partitions of the flows topic this detector owns.",
                    &one(s.partitions.len() as u64),
                );
                metric(
                    out,
                    "exflow_consume_rebuilding_partitions",
                    "gauge",
                    "Owned partitions still rebuilding their state below the committed offset.",
                    &one(s.partitions.iter().filter(|p| p.rebuilding).count() as u64),
                );
                metric(
                    out,
                    "exflow_consume_lag_records",
                    "gauge",
                    "Messages between the next one read and the partition's end.",
                    &per_partition(&|p| p.lag_records),
                );
                metric(
                    out,
                    "exflow_consume_partition_clock_seconds",
                    "gauge",
                    "The partition's event clock (lowest recent collector watermark).",
                    &per_partition(&|p| p.clock_ms / 1000),
                );
                metric(
                    out,
                    "exflow_consume_checkpoint_age_seconds",
                    "gauge",
                    "Seconds since the partition's last checkpoint with its state.",
                    &per_partition(&|p| p.checkpoint_age_s),
                );
                metric(
                    out,
                    "exflow_consume_checkpoint_size_bytes",
                    "gauge",
                    "Size of the partition's last checkpoint record with its state.",
                    &per_partition(&|p| p.checkpoint_bytes),
                );
                let collectors: Vec<(String, u64)> = s
                    .collectors
                    .iter()
                    .map(|(id, ms)| (format!("{{collector=\"{}\"}}", escape(id)), ms / 1000))
                    .collect();
                metric(
                    out,
                    "exflow_consume_collector_watermark_seconds",
                    "gauge",
                    "Each collector's latest watermark over the owned partitions.",
                    &collectors,
                );
                let malformed: Vec<(String, u64)> = MessageError::ALL
                    .iter()
                    .zip(s.malformed)
                    .map(|(e, n)| (format!("{{kind=\"{}\"}}", e.code()), n))
                    .collect();
                metric(
                    out,
                    "exflow_consume_malformed_messages_total",
                    "counter",
                    "Flows-topic messages that did not decode, by kind, skipped.",
                    &malformed,
                );
                for (name, help, value) in [
                    (
                        "exflow_consume_takeovers_total",
                        "Partitions assigned that had a committed offset (worked on before).",
                        s.takeovers,
                    ),
                    (
                        "exflow_consume_records_total",
                        "Records read from the flows topic.",
                        s.records,
                    ),
                    (
                        "exflow_consume_watermarks_total",
                        "Watermarks read from the flows topic.",
                        s.watermarks,
                    ),
                    (
                        "exflow_consume_rebuilt_alerts_total",
                        "Alerts raised again while rebuilding state, not sent (sent before).",
                        s.rebuilt_alerts,
                    ),
                    (
                        "exflow_consume_unowned_messages_total",
                        "Messages of partitions no longer owned, skipped.",
                        s.unowned_messages,
                    ),
                    (
                        "exflow_consume_ignored_watermarks_total",
                        "Watermarks of collectors beyond scaleout.max_collectors, ignored.",
                        s.ignored_watermarks,
                    ),
                    (
                        "exflow_consume_checkpoints_total",
                        "Checkpoint records written to the state topic.",
                        s.checkpoints,
                    ),
                    (
                        "exflow_consume_state_checkpoints_total",
                        "Checkpoint records that carried the partition's state.",
                        s.state_checkpoints,
                    ),
                    (
                        "exflow_consume_restored_checkpoints_total",
                        "Partitions assigned with a checkpoint's state to restore.",
                        s.restored_checkpoints,
                    ),
                    (
                        "exflow_consume_restored_entries_total",
                        "Entries (hosts, suppressed pairs) checkpoints restored.",
                        s.restored_entries,
                    ),
                    (
                        "exflow_consume_duplicate_alerts_total",
                        "Alerts raised again after a takeover with an id delivered before, not sent.",
                        s.duplicate_alerts,
                    ),
                    (
                        "exflow_consume_checkpoint_failures_total",
                        "Checkpoint records that could not be queued, or states not restored.",
                        s.checkpoint_failures,
                    ),
                    (
                        "exflow_consume_commit_failures_total",
                        "Offset commits the group coordinator refused.",
                        s.commit_failures,
                    ),
                    (
                        "exflow_consume_errors_total",
                        "Errors the consumer reported (broker down, rebalance errors).",
                        s.consumer_errors,
                    ),
                ] {
                    metric(out, name, "counter", help, &one(value));
                }
            }
        }
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
