//! telemetry: every counter of every stage as Prometheus metrics, named
//! `exflow_<stage>_<noun>_<unit>[_total]`, served on `metrics_listen` at `/metrics`.
//!
//! The receive workers and shards publish snapshots of their counters (merged by the
//! daemon's main thread); the sources', the sink's and the faults' counters are atomics.
//! Each metric is a row of a table (`STAGES`, `FAULTS`, and the scale-out commands'
//! `scaleout::COLLECT` and `scaleout::CONSUME`): name, type, help and how to read it,
//! rendered in the text exposition format.
//!
//! The endpoint is hyper's HTTP/1 server on a one-thread tokio runtime of its own
//! (`serve`): concurrent connections, a bounded request head and deadlines, so an idle,
//! trickling or oversized client cannot delay a scrape or grow memory.

mod scaleout;
/// Reads a `/metrics` page back, for loadgen and the tests (the `loadgen` feature).
#[cfg(any(test, feature = "loadgen"))]
pub mod scrape;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::decode::exporter::InterfaceCounters;
use crate::decode::{DecodeCounters, DecodeError};
use crate::pipeline::PipelineCounters;
use crate::scaleout::metrics::{CollectCounters, ConsumeSnapshot, ScaleoutMetrics};
use crate::sink::flows::FlowsCounters;
use crate::sink::kafka::KafkaCounters;
use crate::source::udp::SourceCounters;

/// What the pipeline thread last published.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pipeline: PipelineCounters,
    pub exporters: Vec<(IpAddr, DecodeCounters)>,
    /// Every sFlow agent's interfaces' latest counters.
    pub sflow_interfaces: Vec<(IpAddr, InterfaceCounters)>,
    pub templates: usize,
    /// Event time, ms since the epoch.
    pub event_time_ms: u64,
    /// State the rules dropped to stay bounded: (rule, kind, count).
    pub rule_state_dropped: Vec<(&'static str, &'static str, u64)>,
    /// Datagram received -> its records in the table, since the start.
    pub receive_to_table: Latency,
    /// Alert raised -> handed to the sink, since the start.
    pub alert_latency: Latency,
    /// Records a receive worker dropped because a shard's queue was full.
    pub queue_dropped_records: u64,
}

/// A latency distribution: quantiles in seconds and the count, from an HDR histogram.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub quantiles: Vec<(f64, f64)>,
    pub count: u64,
}

/// Quantiles every latency summary reports.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

impl Latency {
    /// From a histogram of microseconds.
    pub fn of(histogram: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            quantiles: QUANTILES
                .iter()
                .map(|&q| (q, histogram.value_at_quantile(q) as f64 / 1e6))
                .collect(),
            count: histogram.len(),
        }
    }
}

/// Faults beside the data path, each also logged when it happens.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// State files that could not be read at start (each kept aside as `*.corrupt`).
    pub state_load_failures: AtomicU64,
    /// Threat-intel reloads (SIGHUP) that failed; the previous networks stay in force.
    pub threat_intel_reload_failures: AtomicU64,
}

/// Counters of the metrics endpoint itself.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Connections closed unserved because `MAX_CONNECTIONS` were open.
    pub refused_connections: AtomicU64,
}

/// All metrics of one daemon.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub sources: Vec<(SocketAddr, Arc<SourceCounters>)>,
    pub snapshot: Mutex<Snapshot>,
    /// The alert sink's counters, bumped by the shards as they hand their alerts over.
    pub sink: Arc<crate::sink::SinkCounters>,
    /// The Kafka sink's counters, when alerts go to Kafka: set once the sink is made, which
    /// is after the endpoint starts serving.
    pub kafka: OnceLock<Arc<crate::sink::kafka::KafkaCounters>>,
    /// The flows stream's counters, when it is on (set like `kafka`).
    pub flows: OnceLock<Arc<crate::sink::flows::FlowsCounters>>,
    /// `exflow collect`'s or `exflow detect`'s own metrics (set like `kafka`).
    pub scaleout: OnceLock<ScaleoutMetrics>,
    /// The metrics endpoint's own counters.
    pub http: HttpCounters,
    /// Faults beside the data path: state file, threat-intel reload.
    pub faults: FaultCounters,
}

impl Telemetry {
    pub fn publish(&self, snapshot: Snapshot) {
        // A poisoned lock means a panic elsewhere; the metrics can still be replaced.
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// The Prometheus text exposition of every metric: the rows of [`STAGES`], the
    /// scale-out commands' own (`COLLECT`, `CONSUME`), then those of [`FAULTS`].
    pub fn render(&self) -> String {
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let view = View::new(self, snapshot);
        let mut out = String::with_capacity(8192);
        view.write(&mut out, STAGES);
        view.write(&mut out, scaleout::COLLECT);
        view.write(&mut out, scaleout::CONSUME);
        view.write(&mut out, FAULTS);
        out
    }
}

/// One metric of the exposition: its name, Prometheus type, help, and how its samples are
/// read from what the daemon publishes.
struct Row {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    read: Read,
}

/// How a [`Row`]'s samples are read.
enum Read {
    /// (labels, value) samples; `None`: the metric is not exported (the Kafka sink's without
    /// Kafka, the flows stream's when it is off).
    Samples(fn(&View) -> Option<Samples>),
    /// A latency summary (`kind` "summary").
    Summary(fn(&View) -> Latency),
}

/// A metric's samples: its labels (`{name="value",..}`, or empty) and its value.
type Samples = Vec<(String, u64)>;

/// Every stage's metrics, in the order of the data path: source, decode, flow, detect, sink.
const STAGES: &[Row] = &[
    Row {
        name: "exflow_source_datagrams_total",
        kind: "counter",
        help: "Datagrams received.",
        read: Read::Samples(|v| v.per_source(|c| &c.datagrams)),
    },
    Row {
        name: "exflow_source_bytes_total",
        kind: "counter",
        help: "UDP payload bytes received.",
        read: Read::Samples(|v| v.per_source(|c| &c.bytes)),
    },
    Row {
        name: "exflow_source_kernel_dropped_datagrams_total",
        kind: "counter",
        help: "Datagrams the kernel dropped at a full socket buffer (SO_RXQ_OVFL).",
        read: Read::Samples(|v| v.per_source(|c| &c.kernel_dropped)),
    },
    Row {
        name: "exflow_source_receive_errors_total",
        kind: "counter",
        help: "Socket receive errors.",
        read: Read::Samples(|v| v.per_source(|c| &c.receive_errors)),
    },
    Row {
        name: "exflow_decode_datagrams_total",
        kind: "counter",
        help: "Datagrams decoded.",
        read: Read::Samples(|v| one(v.decode().datagrams)),
    },
    Row {
        name: "exflow_decode_records_total",
        kind: "counter",
        help: "Flow records decoded.",
        read: Read::Samples(|v| one(v.decode().records)),
    },
    Row {
        name: "exflow_decode_options_records_total",
        kind: "counter",
        help: "Options records read.",
        read: Read::Samples(|v| one(v.decode().options_records)),
    },
    Row {
        name: "exflow_decode_templates_total",
        kind: "counter",
        help: "Template records accepted.",
        read: Read::Samples(|v| one(v.decode().templates)),
    },
    Row {
        name: "exflow_decode_templates",
        kind: "gauge",
        help: "Templates held.",
        read: Read::Samples(|v| one(v.snapshot.templates as u64)),
    },
    Row {
        name: "exflow_decode_template_misses_total",
        kind: "counter",
        help: "Data sets that arrived before their template.",
        read: Read::Samples(|v| one(v.decode().template_misses)),
    },
    Row {
        name: "exflow_decode_pending_records_total",
        kind: "counter",
        help: "Records decoded late from held data sets.",
        read: Read::Samples(|v| one(v.decode().pending_records)),
    },
    Row {
        name: "exflow_decode_lost_records_total",
        kind: "counter",
        help: "Records missing by the exporters' sequence numbers.",
        read: Read::Samples(|v| one(v.decode().lost_records)),
    },
    Row {
        name: "exflow_decode_lost_datagrams_total",
        kind: "counter",
        help: "Datagrams missing by the exporters' sequence numbers.",
        read: Read::Samples(|v| one(v.decode().lost_datagrams)),
    },
    Row {
        name: "exflow_decode_sflow_counter_samples_total",
        kind: "counter",
        help: "sFlow counter samples read (their generic interface counters kept per agent).",
        read: Read::Samples(|v| one(v.decode().counter_samples)),
    },
    Row {
        name: "exflow_decode_sflow_discard_samples_total",
        kind: "counter",
        help: "sFlow discarded-packet samples counted and skipped.",
        read: Read::Samples(|v| one(v.decode().discard_samples)),
    },
    Row {
        name: "exflow_decode_sflow_skipped_samples_total",
        kind: "counter",
        help: "sFlow samples that made no flow record (unknown format, no IP packet).",
        read: Read::Samples(|v| one(v.decode().skipped_samples)),
    },
    Row {
        name: "exflow_decode_continued_records_total",
        kind: "counter",
        help: "Records that continued a flow already reported (firewall updates and teardowns, running totals): their volume counted once.",
        read: Read::Samples(|v| one(v.decode().continued_records)),
    },
    Row {
        name: "exflow_decode_connections_evicted_total",
        kind: "counter",
        help: "Tracked flows (running totals, firewall connections) forgotten at decoder.max_tracked_connections.",
        read: Read::Samples(|v| one(v.decode().connections_evicted)),
    },
    Row {
        name: "exflow_decode_packet_section_records_total",
        kind: "counter",
        help: "Records whose addresses and ports came from a packet section (IE 313/315).",
        read: Read::Samples(|v| one(v.decode().packet_section_records)),
    },
    Row {
        name: "exflow_decode_errors_total",
        kind: "counter",
        help: "Datagrams or parts dropped by the decoder, by kind.",
        read: Read::Samples(|v| Some(v.decode_errors())),
    },
    Row {
        name: "exflow_decode_exporter_datagrams_total",
        kind: "counter",
        help: "Datagrams per exporter.",
        read: Read::Samples(|v| v.per_exporter(|c| c.datagrams)),
    },
    Row {
        name: "exflow_decode_exporter_records_total",
        kind: "counter",
        help: "Flow records per exporter.",
        read: Read::Samples(|v| v.per_exporter(|c| c.records)),
    },
    Row {
        name: "exflow_decode_exporter_lost_records_total",
        kind: "counter",
        help: "Records missing per exporter (sequence numbers).",
        read: Read::Samples(|v| v.per_exporter(|c| c.lost_records + c.lost_datagrams)),
    },
    Row {
        name: "exflow_decode_exporter_template_misses_total",
        kind: "counter",
        help: "Data sets without a template per exporter.",
        read: Read::Samples(|v| v.per_exporter(|c| c.template_misses)),
    },
    Row {
        name: "exflow_decode_sflow_interface_octets_total",
        kind: "counter",
        help: "Octets through each sFlow agent's interface, as its counter samples report them.",
        read: Read::Samples(|v| v.both(|c| c.in_octets, |c| c.out_octets)),
    },
    Row {
        name: "exflow_decode_sflow_interface_errors_total",
        kind: "counter",
        help: "Packets with errors on each sFlow agent's interface (counter samples).",
        read: Read::Samples(|v| v.both(|c| c.in_errors, |c| c.out_errors)),
    },
    Row {
        name: "exflow_decode_sflow_interface_discards_total",
        kind: "counter",
        help: "Packets discarded on each sFlow agent's interface (counter samples).",
        read: Read::Samples(|v| v.both(|c| c.in_discards, |c| c.out_discards)),
    },
    Row {
        name: "exflow_decode_sflow_interface_speed_bits_per_second",
        kind: "gauge",
        help: "Each sFlow agent's interface speed (counter samples).",
        read: Read::Samples(|v| Some(v.per_interface(None, |c| c.speed_bps))),
    },
    Row {
        name: "exflow_decode_sflow_interfaces_refused_total",
        kind: "counter",
        help: "sFlow interfaces whose counters were not kept (decoder.max_sflow_interfaces_per_agent).",
        read: Read::Samples(|v| one(v.decode().interfaces_refused)),
    },
    Row {
        name: "exflow_decode_interface_names_refused_total",
        kind: "counter",
        help: "Interface names from options data not kept (decoder.max_interface_names).",
        read: Read::Samples(|v| one(v.decode().interface_names_refused)),
    },
    Row {
        name: "exflow_flow_records_total",
        kind: "counter",
        help: "Records that reached the flow table.",
        read: Read::Samples(|v| one(v.flow().records)),
    },
    Row {
        name: "exflow_flow_queue_dropped_records_total",
        kind: "counter",
        help: "Records dropped because a flow-table shard's queue was full.",
        read: Read::Samples(|v| one(v.snapshot.queue_dropped_records)),
    },
    Row {
        name: "exflow_flow_transit_records_total",
        kind: "counter",
        help: "Records with both ends outside (skipped).",
        read: Read::Samples(|v| one(v.flow().transit_records)),
    },
    Row {
        name: "exflow_flow_internal_records_total",
        kind: "counter",
        help: "Records with both ends inside (skipped).",
        read: Read::Samples(|v| one(v.flow().internal_records)),
    },
    Row {
        name: "exflow_source_rejected_datagrams_total",
        kind: "counter",
        help: "Datagrams from senders outside source.exporters (dropped undecoded).",
        read: Read::Samples(|v| one(v.pipeline().rejected_datagrams)),
    },
    Row {
        name: "exflow_flow_clock_skewed_records_total",
        kind: "counter",
        help: "Records dated more than flow.max_clock_skew_s after their datagram was received (dropped).",
        read: Read::Samples(|v| one(v.flow().clock.skewed)),
    },
    Row {
        name: "exflow_flow_late_dropped_records_total",
        kind: "counter",
        help: "Records that ended more than flow.max_lateness_s before their exporter's clock (dropped).",
        read: Read::Samples(|v| one(v.flow().clock.late)),
    },
    Row {
        name: "exflow_flow_clock_exporters_evicted_total",
        kind: "counter",
        help: "Exporter clocks forgotten to make room (decoder.max_exporters), one-off senders first.",
        read: Read::Samples(|v| one(v.flow().clock.evicted)),
    },
    Row {
        name: "exflow_flow_conversations",
        kind: "gauge",
        help: "Conversations tracked.",
        read: Read::Samples(|v| one(v.pipeline().conversations)),
    },
    Row {
        name: "exflow_flow_conversations_created_total",
        kind: "counter",
        help: "Conversations started.",
        read: Read::Samples(|v| one(v.flow().conversations_created)),
    },
    Row {
        name: "exflow_flow_conversations_closed_total",
        kind: "counter",
        help: "Conversations ended on the exporter's word (flowEndReason, a firewall's teardown) before their idle timeout.",
        read: Read::Samples(|v| one(v.flow().conversations_closed)),
    },
    Row {
        name: "exflow_flow_conversations_expired_total",
        kind: "counter",
        help: "Conversations ended by the idle timeout.",
        read: Read::Samples(|v| one(v.flow().conversations_expired)),
    },
    Row {
        name: "exflow_flow_conversations_evicted_total",
        kind: "counter",
        help: "Conversations ended early because the table was full.",
        read: Read::Samples(|v| one(v.flow().conversations_evicted)),
    },
    Row {
        name: "exflow_detect_event_time_seconds",
        kind: "gauge",
        help: "Event time of the tables: the slowest exporter heard recently (see README, Event time).",
        read: Read::Samples(|v| one(v.snapshot.event_time_ms / 1000)),
    },
    Row {
        name: "exflow_detect_alerts_total",
        kind: "counter",
        help: "Alerts raised, by rule and severity.",
        read: Read::Samples(|v| Some(v.alerts())),
    },
    Row {
        name: "exflow_pipeline_receive_to_table_seconds",
        kind: "summary",
        help: "Datagram received to its records in the conversation table.",
        read: Read::Summary(|v| v.snapshot.receive_to_table.clone()),
    },
    Row {
        name: "exflow_detect_alert_latency_seconds",
        kind: "summary",
        help: "Alert raised (threshold crossed) to handed to the sink.",
        read: Read::Summary(|v| v.snapshot.alert_latency.clone()),
    },
    Row {
        name: "exflow_detect_state_dropped_total",
        kind: "counter",
        help: "Rule state dropped to stay within bounds.",
        read: Read::Samples(|v| Some(v.rule_state_dropped())),
    },
    Row {
        name: "exflow_detect_risky_hosts",
        kind: "gauge",
        help: "Inside hosts alerted on within the last day, by the band of their risk score.",
        read: Read::Samples(|v| Some(v.risky_hosts())),
    },
    Row {
        name: "exflow_detect_held_conversations",
        kind: "gauge",
        help: "Conversations whose latest records the folding rules (profile, low_and_slow, spread_egress) hold, summed, for up to 10 s of event time.",
        read: Read::Samples(|v| one(v.pipeline().held_conversations)),
    },
    Row {
        name: "exflow_detect_suppressed_alerts_total",
        kind: "counter",
        help: "Findings held back by suppression.",
        read: Read::Samples(|v| one(v.pipeline().suppressed)),
    },
    Row {
        name: "exflow_sink_alerts_total",
        kind: "counter",
        help: "Alerts written to the sink.",
        read: Read::Samples(|v| one(load(&v.telemetry.sink.alerts))),
    },
    Row {
        name: "exflow_sink_errors_total",
        kind: "counter",
        help: "Alerts the sink failed to write.",
        read: Read::Samples(|v| one(load(&v.telemetry.sink.errors))),
    },
    Row {
        name: "exflow_sink_kafka_delivered_alerts_total",
        kind: "counter",
        help: "Alerts (and their OCSF findings when sink.kafka.ocsf_topic is set) the Kafka broker acknowledged.",
        read: Read::Samples(|v| v.kafka(|k| &k.delivered)),
    },
    Row {
        name: "exflow_sink_kafka_failed_deliveries_total",
        kind: "counter",
        help: "Kafka deliveries that failed (retried from the spool).",
        read: Read::Samples(|v| v.kafka(|k| &k.failed)),
    },
    Row {
        name: "exflow_sink_kafka_broker_up",
        kind: "gauge",
        help: "1 while the Kafka broker answers.",
        read: Read::Samples(|v| v.kafka(|k| &k.broker_up)),
    },
    Row {
        name: "exflow_sink_queue_dropped_alerts_total",
        kind: "counter",
        help: "Alerts dropped because the queue to the Kafka sink was full.",
        read: Read::Samples(|v| v.kafka(|k| &k.queue_dropped)),
    },
    Row {
        name: "exflow_sink_spool_alerts",
        kind: "gauge",
        help: "Alerts (and OCSF findings) in the spool not yet acknowledged, on disk.",
        read: Read::Samples(|v| v.kafka(|k| &k.spool_alerts)),
    },
    Row {
        name: "exflow_sink_spool_held_alerts",
        kind: "gauge",
        help: "Alerts held in memory because the spool's disk is full (bounded).",
        read: Read::Samples(|v| v.kafka(|k| &k.spool_held)),
    },
    Row {
        name: "exflow_sink_spool_dropped_alerts_total",
        kind: "counter",
        help: "Alerts dropped because the spool was full.",
        read: Read::Samples(|v| v.kafka(|k| &k.spool_dropped)),
    },
    Row {
        name: "exflow_sink_kafka_producer_recreated_total",
        kind: "counter",
        help: "Kafka producers replaced (fatal or fenced, or after an outage).",
        read: Read::Samples(|v| v.kafka(|k| &k.producer_recreated)),
    },
    Row {
        name: "exflow_sink_kafka_dead_lettered_alerts_total",
        kind: "counter",
        help: "Alerts the broker rejected for good, moved to the spool's dead-letter file.",
        read: Read::Samples(|v| v.kafka(|k| &k.dead_lettered)),
    },
    Row {
        name: "exflow_sink_kafka_skipped_duplicate_alerts_total",
        kind: "counter",
        help: "Spooled alerts found on the topic already, not sent again.",
        read: Read::Samples(|v| v.kafka(|k| &k.duplicates_skipped)),
    },
    Row {
        name: "exflow_sink_kafka_tail_check_failures_total",
        kind: "counter",
        help: "Read-backs of the alert topic's tail that failed (3 in a row: sent unchecked).",
        read: Read::Samples(|v| v.kafka(|k| &k.tail_check_failures)),
    },
    Row {
        name: "exflow_sink_spool_corrupt_records_total",
        kind: "counter",
        help: "Damaged spool records skipped.",
        read: Read::Samples(|v| v.kafka(|k| &k.spool_corrupt)),
    },
    Row {
        name: "exflow_sink_spool_torn_records_total",
        kind: "counter",
        help: "Spool records cut short by a crash, cut off at start.",
        read: Read::Samples(|v| v.kafka(|k| &k.spool_torn)),
    },
    Row {
        name: "exflow_sink_flows_published_records_total",
        kind: "counter",
        help: "Flow records the broker acknowledged.",
        read: Read::Samples(|v| v.flows(|f| &f.published)),
    },
    Row {
        name: "exflow_sink_flows_dropped_records_total",
        kind: "counter",
        help: "Flow records dropped at a full producer queue.",
        read: Read::Samples(|v| v.flows(|f| &f.dropped)),
    },
    Row {
        name: "exflow_sink_flows_failed_records_total",
        kind: "counter",
        help: "Flow records that failed delivery.",
        read: Read::Samples(|v| v.flows(|f| &f.failed)),
    },
];

/// Faults beside the data path and the endpoint's own counter.
const FAULTS: &[Row] = &[
    Row {
        name: "exflow_decode_state_load_failures_total",
        kind: "counter",
        help: "State files that could not be read at start (kept aside as *.corrupt).",
        read: Read::Samples(|v| one(load(&v.telemetry.faults.state_load_failures))),
    },
    Row {
        name: "exflow_enrich_threat_intel_reload_failures_total",
        kind: "counter",
        help: "Threat-intel reloads (SIGHUP) that failed; the previous list stays in force.",
        read: Read::Samples(|v| one(load(&v.telemetry.faults.threat_intel_reload_failures))),
    },
    Row {
        name: "exflow_telemetry_refused_connections_total",
        kind: "counter",
        help: "Connections to this endpoint closed unserved because too many were open.",
        read: Read::Samples(|v| one(load(&v.telemetry.http.refused_connections))),
    },
];

/// What one rendering reads: the telemetry's atomics and the threads' last snapshot.
struct View<'a> {
    telemetry: &'a Telemetry,
    snapshot: Snapshot,
    /// The sFlow interfaces by agent, sub-agent and ifIndex.
    interfaces: Vec<(IpAddr, InterfaceCounters)>,
    /// `exflow collect`'s counters, in `exflow collect` only.
    collect: Option<Arc<CollectCounters>>,
    /// `exflow detect`'s consumer snapshot (copied once per rendering), in `exflow detect`
    /// only.
    consume: Option<ConsumeSnapshot>,
}

impl<'a> View<'a> {
    fn new(telemetry: &'a Telemetry, snapshot: Snapshot) -> View<'a> {
        let mut interfaces = snapshot.sflow_interfaces.clone();
        interfaces.sort_by_key(|(agent, c)| (*agent, c.sub_agent_id, c.if_index));
        let (mut collect, mut consume) = (None, None);
        match telemetry.scaleout.get() {
            Some(ScaleoutMetrics::Collect(counters)) => collect = Some(counters.clone()),
            Some(ScaleoutMetrics::Consume(snapshot)) => {
                // A poisoned lock means a panic elsewhere; the last figures are still whole.
                consume = Some(snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone());
            }
            None => {}
        }
        View {
            telemetry,
            snapshot,
            interfaces,
            collect,
            consume,
        }
    }

    /// Appends `rows` in the text exposition format.
    fn write(&self, out: &mut String, rows: &[Row]) {
        for row in rows {
            match row.read {
                Read::Samples(read) => {
                    if let Some(samples) = read(self) {
                        metric(out, row.name, row.kind, row.help, &samples);
                    }
                }
                Read::Summary(read) => summary(out, row.name, row.help, &read(self)),
            }
        }
    }

    fn pipeline(&self) -> &PipelineCounters {
        &self.snapshot.pipeline
    }

    fn decode(&self) -> &DecodeCounters {
        &self.snapshot.pipeline.decode
    }

    fn flow(&self) -> &crate::flow::FlowCounters {
        &self.snapshot.pipeline.flow
    }

    /// One sample per listen address.
    fn per_source(&self, counter: fn(&SourceCounters) -> &AtomicU64) -> Option<Samples> {
        let sources = self.telemetry.sources.iter();
        Some(
            sources
                .map(|(address, c)| (format!("{{listen=\"{address}\"}}"), load(counter(c))))
                .collect(),
        )
    }

    /// One sample per exporter.
    fn per_exporter(&self, value: fn(&DecodeCounters) -> u64) -> Option<Samples> {
        let exporters = self.snapshot.exporters.iter();
        Some(
            exporters
                .map(|(a, c)| (format!("{{exporter=\"{a}\"}}"), value(c)))
                .collect(),
        )
    }

    /// One sample per sFlow interface, with a `direction` label when one is given.
    fn per_interface(
        &self,
        direction: Option<&str>,
        value: fn(&InterfaceCounters) -> u64,
    ) -> Samples {
        let direction = direction.map_or(String::new(), |d| format!(",direction=\"{d}\""));
        self.interfaces
            .iter()
            .map(|(agent, c)| {
                (
                    format!(
                        "{{agent=\"{agent}\",sub_agent=\"{}\",if_index=\"{}\"{direction}}}",
                        c.sub_agent_id, c.if_index
                    ),
                    value(c),
                )
            })
            .collect()
    }

    /// Every sFlow interface's `in`, then every one's `out`.
    fn both(
        &self,
        in_value: fn(&InterfaceCounters) -> u64,
        out_value: fn(&InterfaceCounters) -> u64,
    ) -> Option<Samples> {
        let mut samples = self.per_interface(Some("in"), in_value);
        samples.extend(self.per_interface(Some("out"), out_value));
        Some(samples)
    }

    /// A Kafka sink counter, when alerts go to Kafka.
    fn kafka(&self, counter: fn(&KafkaCounters) -> &AtomicU64) -> Option<Samples> {
        let kafka = self.telemetry.kafka.get()?;
        one(load(counter(kafka)))
    }

    /// A flows stream counter, when the stream is on.
    fn flows(&self, counter: fn(&FlowsCounters) -> &AtomicU64) -> Option<Samples> {
        let flows = self.telemetry.flows.get()?;
        one(load(counter(flows)))
    }

    fn decode_errors(&self) -> Samples {
        let errors = &self.decode().errors;
        DecodeError::ALL
            .iter()
            .map(|e| (format!("{{kind=\"{}\"}}", e.code()), errors.get(*e)))
            .collect()
    }

    fn alerts(&self) -> Samples {
        let alerts = &self.pipeline().alerts;
        crate::detect::RULES
            .iter()
            .enumerate()
            .flat_map(|(r, rule)| {
                crate::detect::Severity::ALL.iter().map(move |s| {
                    (
                        format!("{{rule=\"{rule}\",severity=\"{}\"}}", s.name()),
                        alerts.0[r][*s as usize],
                    )
                })
            })
            .collect()
    }

    fn rule_state_dropped(&self) -> Samples {
        self.snapshot
            .rule_state_dropped
            .iter()
            .map(|(rule, kind, n)| (format!("{{rule=\"{rule}\",kind=\"{kind}\"}}"), *n))
            .collect()
    }

    fn risky_hosts(&self) -> Samples {
        crate::detect::Severity::ALL
            .iter()
            .zip(self.pipeline().risky_hosts)
            .map(|(band, n)| (format!("{{severity=\"{}\"}}", band.name()), n))
            .collect()
    }
}

/// A metric of one sample, without labels.
fn one(value: u64) -> Option<Samples> {
    Some(vec![(String::new(), value)])
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One metric in the text exposition format.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// One latency summary: quantiles in seconds and the count.
fn summary(out: &mut String, name: &str, help: &str, latency: &Latency) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    for (q, seconds) in &latency.quantiles {
        let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {seconds}");
    }
    let _ = writeln!(out, "{name}_count {}", latency.count);
}

/// Most connections the endpoint holds at once; one more is closed at once and counted
/// (`exflow_telemetry_refused_connections_total`), so idle clients cannot grow memory.
const MAX_CONNECTIONS: usize = 128;
/// Longest a client may take to send its request line and headers: an idle or trickling
/// client is cut off after this, and holds only its own connection meanwhile.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection lives whatever it does, e.g. a client that never reads its response.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head read: a longer one is answered 431 and the connection closed, so a
/// huge request line costs this much memory, no more (hyper's smallest allowed is 8 KiB).
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// How often the server looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// The metrics endpoint on a thread of its own (`exflow-metrics`), serving until it is
/// stopped or dropped (so an early return stops it too).
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `telemetry` on `listener` ([`serve`]); a failure of the endpoint is logged.
    pub fn spawn(listener: TcpListener, telemetry: Arc<Telemetry>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("exflow-metrics".into())
                .spawn(move || {
                    if let Err(error) = serve(listener, telemetry, stop) {
                        tracing::warn!("the metrics endpoint stopped: {error}");
                    }
                })?
        };
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops serving and waits for the thread.
    pub fn stop(self) {}
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` is set.
///
/// hyper's HTTP/1 server on a one-thread tokio runtime, this thread's own: connections are
/// served concurrently, each with a bounded request head and a deadline for it, so no
/// client can delay another's scrape or grow memory. This is exflow's only async code: the
/// data path stays synchronous threads.
pub fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut tick = tokio::time::interval(SHUTDOWN_POLL);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            tokio::spawn(serve_connection(stream, telemetry.clone(), slot));
                        }
                        // Dropping the stream closes it.
                        Err(_) => {
                            telemetry.http.refused_connections.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    // Out of file descriptors and the like: wait for some to be released.
                    Err(_) => tokio::time::sleep(SHUTDOWN_POLL).await,
                },
                _ = tick.tick() => {
                    if shutdown.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                }
            }
        }
    })
}

/// One connection: one request, one response (no keep-alive), within the deadlines.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    telemetry: Arc<Telemetry>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |request| {
        let response = respond(&telemetry, &request);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REQUEST_HEAD_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    // Errors are the client's (closed early, too slow, head too large): nothing to do.
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
}

type Body = http_body_util::Full<bytes::Bytes>;

/// `GET /metrics` (or `HEAD`): the exposition; anything else 404 or 405.
fn respond<B>(telemetry: &Telemetry, request: &hyper::Request<B>) -> hyper::Response<Body> {
    use hyper::{Method, StatusCode, header};
    let status = if request.uri().path() != "/metrics" {
        StatusCode::NOT_FOUND
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        return hyper::Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Body::from(telemetry.render()))
            .expect("static status and header are valid");
    };
    let mut response = hyper::Response::new(Body::default());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract_names() {
        let telemetry = Telemetry {
            sources: vec![(
                "0.0.0.0:2055".parse().unwrap(),
                Arc::new(SourceCounters::default()),
            )],
            ..Telemetry::default()
        };
        let mut snapshot = Snapshot::default();
        snapshot.pipeline.decode.records = 42;
        snapshot.sflow_interfaces.push((
            "192.0.2.1".parse().unwrap(),
            InterfaceCounters {
                if_index: 3,
                speed_bps: 1_000_000_000,
                in_octets: 3910,
                out_octets: 3946,
                ..InterfaceCounters::default()
            },
        ));
        telemetry.publish(snapshot);
        let text = telemetry.render();
        for line in [
            "exflow_decode_sflow_interface_octets_total{agent=\"192.0.2.1\",sub_agent=\"0\",if_index=\"3\",direction=\"in\"} 3910\n",
            "exflow_decode_sflow_interface_octets_total{agent=\"192.0.2.1\",sub_agent=\"0\",if_index=\"3\",direction=\"out\"} 3946\n",
            "exflow_decode_sflow_interface_speed_bits_per_second{agent=\"192.0.2.1\",sub_agent=\"0\",if_index=\"3\"} 1000000000\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(
            text.contains("\nexflow_decode_records_total 42\n"),
            "{text}"
        );
        assert!(text.contains("exflow_source_datagrams_total{listen=\"0.0.0.0:2055\"} 0"));
        assert!(text.contains("exflow_decode_errors_total{kind=\"truncated\"} 0"));
        assert!(
            text.contains("exflow_detect_alerts_total{rule=\"bulk_egress\",severity=\"high\"} 0")
        );
    }
}
