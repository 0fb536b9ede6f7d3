//! telemetry scaleout: the rows of `exflow collect`'s metrics (`COLLECT`, its producer's
//! counters) and `exflow detect`'s (`CONSUME`, its consumer thread's last snapshot), in the
//! table form of every other stage's.

use std::sync::atomic::AtomicU64;

use super::{Read, Row, Samples, View, load};
use crate::scaleout::encoding::MessageError;
use crate::scaleout::metrics::{CollectCounters, ConsumeSnapshot, PartitionFigures};

/// `exflow collect`'s metrics: exported by the collector only.
pub(super) const COLLECT: &[Row] = &[
    Row {
        name: "exflow_collect_published_records_total",
        kind: "counter",
        help: "Records the broker acknowledged on the flows topic.",
        read: Read::Samples(|v| v.collect(|c| &c.published)),
    },
    Row {
        name: "exflow_collect_dropped_records_total",
        kind: "counter",
        help: "Records dropped because the producer queue stayed full.",
        read: Read::Samples(|v| v.collect(|c| &c.dropped)),
    },
    Row {
        name: "exflow_collect_failed_messages_total",
        kind: "counter",
        help: "Records, watermarks and interface names that failed delivery after retries.",
        read: Read::Samples(|v| v.collect(|c| &c.failed)),
    },
    Row {
        name: "exflow_collect_watermarks_total",
        kind: "counter",
        help: "Watermarks produced, one per partition each time.",
        read: Read::Samples(|v| v.collect(|c| &c.watermarks)),
    },
    Row {
        name: "exflow_collect_dropped_watermarks_total",
        kind: "counter",
        help: "Watermarks dropped at a full producer queue.",
        read: Read::Samples(|v| v.collect(|c| &c.watermarks_dropped)),
    },
    Row {
        name: "exflow_collect_interface_name_messages_total",
        kind: "counter",
        help: "Messages of an exporter's interface names produced, one per partition each time.",
        read: Read::Samples(|v| v.collect(|c| &c.interface_messages)),
    },
    Row {
        name: "exflow_collect_dropped_interface_name_messages_total",
        kind: "counter",
        help: "Messages of interface names dropped at a full producer queue.",
        read: Read::Samples(|v| v.collect(|c| &c.interface_messages_dropped)),
    },
    Row {
        name: "exflow_collect_partitions",
        kind: "gauge",
        help: "Partitions of the flows topic.",
        read: Read::Samples(|v| v.collect(|c| &c.partitions)),
    },
    Row {
        name: "exflow_collect_watermark_seconds",
        kind: "gauge",
        help: "This collector's event clock (its watermark), seconds since the epoch.",
        read: Read::Samples(|v| {
            let ms = v.collect(|c| &c.clock_ms)?;
            Some(ms.into_iter().map(|(l, ms)| (l, ms / 1000)).collect())
        }),
    },
];

/// `exflow detect`'s metrics: exported by the detector only.
pub(super) const CONSUME: &[Row] = &[
    Row {
        name: "exflow_consume_partitions",
        kind: "gauge",
        help: "Partitions of the flows topic this detector owns.",
        read: Read::Samples(|v| v.consume(|s| one(s.partitions.len() as u64))),
    },
    Row {
        name: "exflow_consume_rebuilding_partitions",
        kind: "gauge",
        help: "Owned partitions still rebuilding their state below the committed offset.",
        read: Read::Samples(|v| {
            v.consume(|s| one(s.partitions.iter().filter(|p| p.rebuilding).count() as u64))
        }),
    },
    Row {
        name: "exflow_consume_lag_records",
        kind: "gauge",
        help: "Messages between the next one read and the partition's end.",
        read: Read::Samples(|v| v.consume(|s| per_partition(s, |p| p.lag_records))),
    },
    Row {
        name: "exflow_consume_partition_clock_seconds",
        kind: "gauge",
        help: "The partition's event clock (lowest recent collector watermark).",
        read: Read::Samples(|v| v.consume(|s| per_partition(s, |p| p.clock_ms / 1000))),
    },
    Row {
        name: "exflow_consume_checkpoint_age_seconds",
        kind: "gauge",
        help: "Seconds since the partition's last checkpoint with its state.",
        read: Read::Samples(|v| v.consume(|s| per_partition(s, |p| p.checkpoint_age_s))),
    },
    Row {
        name: "exflow_consume_checkpoint_size_bytes",
        kind: "gauge",
        help: "Size of the partition's last state written (all its messages).",
        read: Read::Samples(|v| v.consume(|s| per_partition(s, |p| p.checkpoint_bytes))),
    },
    Row {
        name: "exflow_consume_collector_watermark_seconds",
        kind: "gauge",
        help: "Each collector's latest watermark read in the partitions this detector owned.",
        read: Read::Samples(|v| {
            v.consume(|s| {
                s.collectors
                    .iter()
                    .map(|(id, ms)| (format!("{{collector=\"{}\"}}", escape(id)), ms / 1000))
                    .collect()
            })
        }),
    },
    Row {
        name: "exflow_consume_malformed_messages_total",
        kind: "counter",
        help: "Flows-topic messages that did not decode, by kind, skipped.",
        read: Read::Samples(|v| {
            v.consume(|s| {
                MessageError::ALL
                    .iter()
                    .zip(s.malformed)
                    .map(|(e, n)| (format!("{{kind=\"{}\"}}", e.code()), n))
                    .collect()
            })
        }),
    },
    Row {
        name: "exflow_consume_takeovers_total",
        kind: "counter",
        help: "Partitions assigned that had a committed offset (worked on before).",
        read: Read::Samples(|v| v.consume(|s| one(s.takeovers))),
    },
    Row {
        name: "exflow_consume_records_total",
        kind: "counter",
        help: "Records read from the flows topic.",
        read: Read::Samples(|v| v.consume(|s| one(s.records))),
    },
    Row {
        name: "exflow_consume_watermarks_total",
        kind: "counter",
        help: "Watermarks read from the flows topic.",
        read: Read::Samples(|v| v.consume(|s| one(s.watermarks))),
    },
    Row {
        name: "exflow_consume_rebuilt_alerts_total",
        kind: "counter",
        help: "Alerts raised again while rebuilding state, not sent (sent before).",
        read: Read::Samples(|v| v.consume(|s| one(s.rebuilt_alerts))),
    },
    Row {
        name: "exflow_consume_unowned_messages_total",
        kind: "counter",
        help: "Messages of partitions no longer owned, skipped.",
        read: Read::Samples(|v| v.consume(|s| one(s.unowned_messages))),
    },
    Row {
        name: "exflow_consume_ignored_watermarks_total",
        kind: "counter",
        help: "Watermarks of collectors beyond scaleout.max_collectors, ignored.",
        read: Read::Samples(|v| v.consume(|s| one(s.ignored_watermarks))),
    },
    Row {
        name: "exflow_consume_checkpoints_total",
        kind: "counter",
        help: "Checkpoint records written to the state topic.",
        read: Read::Samples(|v| v.consume(|s| one(s.checkpoints))),
    },
    Row {
        name: "exflow_consume_state_checkpoints_total",
        kind: "counter",
        help: "Partitions' states handed to the state writer.",
        read: Read::Samples(|v| v.consume(|s| one(s.state_checkpoints))),
    },
    Row {
        name: "exflow_consume_state_messages_total",
        kind: "counter",
        help: "Messages of partitions' states written to the state topic.",
        read: Read::Samples(|v| v.consume(|s| one(s.state_messages))),
    },
    Row {
        name: "exflow_consume_interface_name_messages_total",
        kind: "counter",
        help: "Messages of an exporter's interface names read from the flows topic.",
        read: Read::Samples(|v| v.consume(|s| one(s.interface_name_messages))),
    },
    Row {
        name: "exflow_consume_interface_names",
        kind: "gauge",
        help: "Interface names held for the alerts, all exporters.",
        read: Read::Samples(|v| v.consume(|s| one(s.interface_names))),
    },
    Row {
        name: "exflow_consume_interface_names_refused_total",
        kind: "counter",
        help: "Interface names not taken: decoder.max_interface_names x scaleout.max_collectors held.",
        read: Read::Samples(|v| v.consume(|s| one(s.interface_names_refused))),
    },
    Row {
        name: "exflow_consume_partial_states_total",
        kind: "counter",
        help: "Partial generations of a partition's state found at assignment, ignored.",
        read: Read::Samples(|v| v.consume(|s| one(s.partial_states))),
    },
    Row {
        name: "exflow_consume_restored_checkpoints_total",
        kind: "counter",
        help: "Partitions assigned with a checkpoint's state to restore.",
        read: Read::Samples(|v| v.consume(|s| one(s.restored_checkpoints))),
    },
    Row {
        name: "exflow_consume_restored_entries_total",
        kind: "counter",
        help: "Entries (hosts, suppressed pairs) checkpoints restored.",
        read: Read::Samples(|v| v.consume(|s| one(s.restored_entries))),
    },
    Row {
        name: "exflow_consume_restore_waits_total",
        kind: "counter",
        help: "Partitions paused at their checkpoint's offset until its state was parsed.",
        read: Read::Samples(|v| v.consume(|s| one(s.restore_waits))),
    },
    Row {
        name: "exflow_consume_duplicate_alerts_total",
        kind: "counter",
        help: "Alerts raised again after a takeover with an id delivered before, not sent.",
        read: Read::Samples(|v| v.consume(|s| one(s.duplicate_alerts))),
    },
    Row {
        name: "exflow_consume_checkpoint_failures_total",
        kind: "counter",
        help: "Checkpoint records that could not be queued, or states not restored.",
        read: Read::Samples(|v| v.consume(|s| one(s.checkpoint_failures))),
    },
    Row {
        name: "exflow_consume_commit_failures_total",
        kind: "counter",
        help: "Offset commits the group coordinator refused.",
        read: Read::Samples(|v| v.consume(|s| one(s.commit_failures))),
    },
    Row {
        name: "exflow_consume_errors_total",
        kind: "counter",
        help: "Errors the consumer reported (broker down, rebalance errors).",
        read: Read::Samples(|v| v.consume(|s| one(s.consumer_errors))),
    },
];

impl View<'_> {
    /// A collector counter, when this is `exflow collect`.
    fn collect(&self, counter: fn(&CollectCounters) -> &AtomicU64) -> Option<Samples> {
        let counters = self.collect.as_ref()?;
        Some(one(load(counter(counters))))
    }

    /// Samples of the detector's snapshot, when this is `exflow detect`.
    fn consume(&self, samples: fn(&ConsumeSnapshot) -> Samples) -> Option<Samples> {
        self.consume.as_ref().map(samples)
    }
}

/// One sample without labels.
fn one(value: u64) -> Samples {
    vec![(String::new(), value)]
}

/// One sample per owned partition.
fn per_partition(s: &ConsumeSnapshot, value: fn(&PartitionFigures) -> u64) -> Samples {
    s.partitions
        .iter()
        .map(|p| (format!("{{partition=\"{}\"}}", p.partition), value(p)))
        .collect()
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::scaleout::metrics::ScaleoutMetrics;
    use crate::telemetry::Telemetry;

    #[test]
    fn a_detector_renders_its_partitions_collectors_and_counters() {
        let mut snapshot = ConsumeSnapshot {
            records: 7,
            ..ConsumeSnapshot::default()
        };
        snapshot.partitions.push(PartitionFigures {
            partition: 2,
            lag_records: 5,
            clock_ms: 1_710_230_400_999,
            rebuilding: true,
            ..PartitionFigures::default()
        });
        snapshot
            .collectors
            .insert("edge \"1\"".into(), 1_710_230_400_000);
        let telemetry = Telemetry::default();
        let _ = telemetry
            .scaleout
            .set(ScaleoutMetrics::Consume(Mutex::new(snapshot)));
        let text = telemetry.render();
        for line in [
            "exflow_consume_partitions 1\n",
            "exflow_consume_rebuilding_partitions 1\n",
            "exflow_consume_lag_records{partition=\"2\"} 5\n",
            "exflow_consume_partition_clock_seconds{partition=\"2\"} 1710230400\n",
            "exflow_consume_collector_watermark_seconds{collector=\"edge \\\"1\\\"\"} 1710230400\n",
            "exflow_consume_records_total 7\n",
            "# TYPE exflow_consume_malformed_messages_total counter\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("exflow_collect_"), "{text}");
    }

    #[test]
    fn a_collector_renders_its_counters_and_clock() {
        let counters = Arc::new(CollectCounters::default());
        counters
            .published
            .store(3, std::sync::atomic::Ordering::Relaxed);
        counters
            .clock_ms
            .store(1_710_230_400_500, std::sync::atomic::Ordering::Relaxed);
        let telemetry = Telemetry::default();
        let _ = telemetry.scaleout.set(ScaleoutMetrics::Collect(counters));
        let text = telemetry.render();
        for line in [
            "exflow_collect_published_records_total 3\n",
            "exflow_collect_watermark_seconds 1710230400\n",
            "# TYPE exflow_collect_partitions gauge\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("exflow_consume_"), "{text}");
    }
}
