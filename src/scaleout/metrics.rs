//! scaleout metrics: the figures `exflow collect` and `exflow detect` add to the Prometheus
//! endpoint beside the stages' own; their rows (`exflow_collect_*`, `exflow_consume_*`)
//! are in `telemetry::scaleout`, with every other metric's.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::encoding::MessageError;

/// The collector's counters: bumped by its thread and by librdkafka's delivery reports.
#[derive(Debug, Default)]
pub struct CollectCounters {
    /// Records the broker acknowledged.
    pub published: AtomicU64,
    /// Records dropped because the producer's queue stayed full.
    pub dropped: AtomicU64,
    /// Messages (records, watermarks, interface names) that failed delivery after
    /// librdkafka's retries.
    pub failed: AtomicU64,
    /// Watermarks handed to the producer (one per partition each time).
    pub watermarks: AtomicU64,
    /// Watermarks dropped at a full producer queue.
    pub watermarks_dropped: AtomicU64,
    /// Messages of an exporter's interface names handed to the producer (one per
    /// partition each time the exporter writes them).
    pub interface_messages: AtomicU64,
    /// Messages of interface names dropped at a full producer queue.
    pub interface_messages_dropped: AtomicU64,
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
    /// Each collector's latest watermark read in this process's partitions (kept after it
    /// ended or its partitions moved), ms; at most `scaleout.max_collectors`.
    pub collectors: BTreeMap<String, u64>,
    /// Watermarks ignored at `scaleout.max_collectors`.
    pub ignored_watermarks: u64,
    /// Messages of an exporter's interface names read.
    pub interface_name_messages: u64,
    /// Interface names held, all exporters (for the alerts' `in_if_name` and the like).
    pub interface_names: u64,
    /// Interface names not taken: the detector held `decoder.max_interface_names` times
    /// `scaleout.max_collectors` already.
    pub interface_names_refused: u64,
    pub checkpoints: u64,
    /// States handed to the state writer, and the messages it sent of them.
    pub state_checkpoints: u64,
    pub state_messages: u64,
    /// Generations of a partition's state newer than the one restored (or than none)
    /// that were partial on the state topic, ignored at assignment.
    pub partial_states: u64,
    /// Partitions assigned with a checkpoint's state, and the entries it restored.
    pub restored_checkpoints: u64,
    pub restored_entries: u64,
    /// Partitions that reached their state's offset before its parse (off the consumer
    /// thread) was done, and so paused until it was.
    pub restore_waits: u64,
    /// Alerts raised again with an id the previous owner's checkpoint names as delivered:
    /// counted, not sent.
    pub duplicate_alerts: u64,
    pub checkpoint_failures: u64,
    pub commit_failures: u64,
    pub consumer_errors: u64,
}

/// The scale-out metrics of one process.
#[derive(Debug)]
// One per process, in a `OnceLock`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum ScaleoutMetrics {
    Collect(std::sync::Arc<CollectCounters>),
    Consume(Mutex<ConsumeSnapshot>),
}
