//! daemon::report: what the receive workers and the shards publish for the metrics, and
//! the snapshot the main thread assembles from it for `/metrics`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::decode::DecodeCounters;
use crate::decode::exporter::InterfaceCounters;
use crate::pipeline::{PipelineCounters, sum_state_dropped};
use crate::telemetry::{Latency, Snapshot};

/// What a receive worker publishes for the metrics.
#[derive(Default)]
pub(super) struct WorkerReport {
    pub(super) counters: PipelineCounters,
    pub(super) exporters: Vec<(IpAddr, DecodeCounters)>,
    pub(super) sflow_interfaces: Vec<(IpAddr, InterfaceCounters)>,
    pub(super) templates: usize,
}

/// What a shard publishes for the metrics.
pub(super) struct ShardReport {
    pub(super) counters: PipelineCounters,
    pub(super) rule_state_dropped: Vec<(&'static str, &'static str, u64)>,
    pub(super) now_ms: u64,
    /// Datagram received -> its records in the table, microseconds.
    pub(super) receive_to_table: Histogram<u64>,
    /// Alert raised -> handed to the sink, microseconds.
    pub(super) alert_latency: Histogram<u64>,
}

impl Default for ShardReport {
    fn default() -> Self {
        ShardReport {
            counters: PipelineCounters::default(),
            rule_state_dropped: Vec::new(),
            now_ms: 0,
            receive_to_table: latency_histogram(),
            alert_latency: latency_histogram(),
        }
    }
}

/// The metrics snapshot, assembled from what the threads published.
pub(super) fn snapshot(
    workers: &[Arc<Mutex<WorkerReport>>],
    shards: &[Arc<Mutex<ShardReport>>],
    queue_dropped_records: u64,
) -> Snapshot {
    let mut snapshot = Snapshot {
        queue_dropped_records,
        ..Snapshot::default()
    };
    for worker in workers {
        let report = worker.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.pipeline.merge(&report.counters);
        snapshot.exporters.extend(report.exporters.iter().copied());
        snapshot
            .sflow_interfaces
            .extend(report.sflow_interfaces.iter().copied());
        snapshot.templates += report.templates;
    }
    let mut receive_to_table = latency_histogram();
    let mut alert_latency = latency_histogram();
    let mut dropped = Vec::new();
    for shard in shards {
        let report = shard.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.pipeline.merge(&report.counters);
        snapshot.event_time_ms = snapshot.event_time_ms.max(report.now_ms);
        let _ = receive_to_table.add(&report.receive_to_table);
        let _ = alert_latency.add(&report.alert_latency);
        dropped.push(report.rule_state_dropped.clone());
    }
    snapshot.rule_state_dropped = sum_state_dropped(dropped.iter().map(Vec::as_slice));
    snapshot.receive_to_table = Latency::of(&receive_to_table);
    snapshot.alert_latency = Latency::of(&alert_latency);
    snapshot
}

/// Microseconds from 1 to 10 minutes, three significant digits.
pub(super) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}
