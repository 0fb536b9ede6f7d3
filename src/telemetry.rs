//! telemetry: every counter of every stage as Prometheus metrics, named
//! `exflow_<stage>_<noun>_<unit>[_total]`, served on `metrics_listen` at `/metrics`.
//!
//! The pipeline thread publishes a snapshot of its counters after each batch; the sources'
//! counters are atomics. The endpoint is hyper's HTTP/1 server on a one-thread tokio
//! runtime of its own (`serve`): concurrent connections, a bounded request head and
//! deadlines, so an idle, trickling or oversized client cannot delay a scrape or grow memory.

pub mod scrape;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::decode::exporter::InterfaceCounters;
use crate::decode::{DecodeCounters, DecodeError};
use crate::pipeline::PipelineCounters;
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
    pub scaleout: OnceLock<crate::scaleout::metrics::ScaleoutMetrics>,
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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let per_source = |f: &dyn Fn(&SourceCounters) -> u64| -> Vec<(String, u64)> {
            self.sources
                .iter()
                .map(|(address, c)| (format!("{{listen=\"{address}\"}}"), f(c)))
                .collect()
        };
        metric(
            &mut out,
            "exflow_source_datagrams_total",
            "counter",
            "Datagrams received.",
            &per_source(&|c| c.datagrams.load(Ordering::Relaxed)),
        );
        metric(
            &mut out,
            "exflow_source_bytes_total",
            "counter",
            "UDP payload bytes received.",
            &per_source(&|c| c.bytes.load(Ordering::Relaxed)),
        );
        metric(
            &mut out,
            "exflow_source_kernel_dropped_datagrams_total",
            "counter",
            "Datagrams the kernel dropped at a full socket buffer (SO_RXQ_OVFL).",
            &per_source(&|c| c.kernel_dropped.load(Ordering::Relaxed)),
        );
        metric(
            &mut out,
            "exflow_source_receive_errors_total",
            "counter",
            "Socket receive errors.",
            &per_source(&|c| c.receive_errors.load(Ordering::Relaxed)),
        );
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let p = &snapshot.pipeline;
        let d = &p.decode;
        let one = |v: u64| vec![(String::new(), v)];
        metric(
            &mut out,
            "exflow_decode_datagrams_total",
            "counter",
            "Datagrams decoded.",
            &one(d.datagrams),
        );
        metric(
            &mut out,
            "exflow_decode_records_total",
            "counter",
            "Flow records decoded.",
            &one(d.records),
        );
        metric(
            &mut out,
            "exflow_decode_options_records_total",
            "counter",
            "Options records read.",
            &one(d.options_records),
        );
        metric(
            &mut out,
            "exflow_decode_templates_total",
            "counter",
            "Template records accepted.",
            &one(d.templates),
        );
        metric(
            &mut out,
            "exflow_decode_templates",
            "gauge",
            "Templates held.",
            &one(snapshot.templates as u64),
        );
        metric(
            &mut out,
            "exflow_decode_template_misses_total",
            "counter",
            "Data sets that arrived before their template.",
            &one(d.template_misses),
        );
        metric(
            &mut out,
            "exflow_decode_pending_records_total",
            "counter",
            "Records decoded late from held data sets.",
            &one(d.pending_records),
        );
        metric(
            &mut out,
            "exflow_decode_lost_records_total",
            "counter",
            "Records missing by the exporters' sequence numbers.",
            &one(d.lost_records),
        );
        metric(
            &mut out,
            "exflow_decode_lost_datagrams_total",
            "counter",
            "Datagrams missing by the exporters' sequence numbers.",
            &one(d.lost_datagrams),
        );
        metric(
            &mut out,
            "exflow_decode_sflow_counter_samples_total",
            "counter",
            "sFlow counter samples read (their generic interface counters kept per agent).",
            &one(d.counter_samples),
        );
        metric(
            &mut out,
            "exflow_decode_sflow_discard_samples_total",
            "counter",
            "sFlow discarded-packet samples counted and skipped.",
            &one(d.discard_samples),
        );
        metric(
            &mut out,
            "exflow_decode_sflow_skipped_samples_total",
            "counter",
            "sFlow samples that made no flow record (unknown format, no IP packet).",
            &one(d.skipped_samples),
        );
        metric(
            &mut out,
            "exflow_decode_continued_records_total",
            "counter",
            "Records that continued a flow already reported (firewall updates and teardowns, running totals): their volume counted once.",
            &one(d.continued_records),
        );
        metric(
            &mut out,
            "exflow_decode_connections_evicted_total",
            "counter",
            "Tracked flows (running totals, firewall connections) forgotten at decoder.max_tracked_connections.",
            &one(d.connections_evicted),
        );
        metric(
            &mut out,
            "exflow_decode_packet_section_records_total",
            "counter",
            "Records whose addresses and ports came from a packet section (IE 313/315).",
            &one(d.packet_section_records),
        );
        let errors: Vec<(String, u64)> = DecodeError::ALL
            .iter()
            .map(|e| (format!("{{kind=\"{}\"}}", e.code()), d.errors.get(*e)))
            .collect();
        metric(
            &mut out,
            "exflow_decode_errors_total",
            "counter",
            "Datagrams or parts dropped by the decoder, by kind.",
            &errors,
        );
        let per_exporter = |f: &dyn Fn(&DecodeCounters) -> u64| -> Vec<(String, u64)> {
            snapshot
                .exporters
                .iter()
                .map(|(a, c)| (format!("{{exporter=\"{a}\"}}"), f(c)))
                .collect()
        };
        metric(
            &mut out,
            "exflow_decode_exporter_datagrams_total",
            "counter",
            "Datagrams per exporter.",
            &per_exporter(&|c| c.datagrams),
        );
        metric(
            &mut out,
            "exflow_decode_exporter_records_total",
            "counter",
            "Flow records per exporter.",
            &per_exporter(&|c| c.records),
        );
        metric(
            &mut out,
            "exflow_decode_exporter_lost_records_total",
            "counter",
            "Records missing per exporter (sequence numbers).",
            &per_exporter(&|c| c.lost_records + c.lost_datagrams),
        );
        metric(
            &mut out,
            "exflow_decode_exporter_template_misses_total",
            "counter",
            "Data sets without a template per exporter.",
            &per_exporter(&|c| c.template_misses),
        );
        let mut interfaces = snapshot.sflow_interfaces.clone();
        interfaces.sort_by_key(|(agent, c)| (*agent, c.sub_agent_id, c.if_index));
        let per_interface = |direction: Option<&str>, f: &dyn Fn(&InterfaceCounters) -> u64| {
            interfaces
                .iter()
                .map(|(agent, c)| {
                    let direction =
                        direction.map_or(String::new(), |d| format!(",direction=\"{d}\""));
                    (
                        format!(
                            "{{agent=\"{agent}\",sub_agent=\"{}\",if_index=\"{}\"{direction}}}",
                            c.sub_agent_id, c.if_index
                        ),
                        f(c),
                    )
                })
                .collect::<Vec<_>>()
        };
        let both = |f_in: &dyn Fn(&InterfaceCounters) -> u64,
                    f_out: &dyn Fn(&InterfaceCounters) -> u64| {
            let mut series = per_interface(Some("in"), f_in);
            series.extend(per_interface(Some("out"), f_out));
            series
        };
        metric(
            &mut out,
            "exflow_decode_sflow_interface_octets_total",
            "counter",
            "Octets through each sFlow agent's interface, as its counter samples report them.",
            &both(&|c| c.in_octets, &|c| c.out_octets),
        );
        metric(
            &mut out,
            "exflow_decode_sflow_interface_errors_total",
            "counter",
            "Packets with errors on each sFlow agent's interface (counter samples).",
            &both(&|c| c.in_errors, &|c| c.out_errors),
        );
        metric(
            &mut out,
            "exflow_decode_sflow_interface_discards_total",
            "counter",
            "Packets discarded on each sFlow agent's interface (counter samples).",
            &both(&|c| c.in_discards, &|c| c.out_discards),
        );
        metric(
            &mut out,
            "exflow_decode_sflow_interface_speed_bits_per_second",
            "gauge",
            "Each sFlow agent's interface speed (counter samples).",
            &per_interface(None, &|c| c.speed_bps),
        );
        metric(
            &mut out,
            "exflow_decode_sflow_interfaces_refused_total",
            "counter",
            "sFlow interfaces whose counters were not kept (decoder.max_sflow_interfaces_per_agent).",
            &one(d.interfaces_refused),
        );
        metric(
            &mut out,
            "exflow_decode_interface_names_refused_total",
            "counter",
            "Interface names from options data not kept (decoder.max_interface_names).",
            &one(d.interface_names_refused),
        );
        let f = &p.flow;
        metric(
            &mut out,
            "exflow_flow_records_total",
            "counter",
            "Records that reached the flow table.",
            &one(f.records),
        );
        metric(
            &mut out,
            "exflow_flow_queue_dropped_records_total",
            "counter",
            "Records dropped because a flow-table shard's queue was full.",
            &one(snapshot.queue_dropped_records),
        );
        metric(
            &mut out,
            "exflow_flow_transit_records_total",
            "counter",
            "Records with both ends outside (skipped).",
            &one(f.transit_records),
        );
        metric(
            &mut out,
            "exflow_flow_internal_records_total",
            "counter",
            "Records with both ends inside (skipped).",
            &one(f.internal_records),
        );
        metric(
            &mut out,
            "exflow_source_rejected_datagrams_total",
            "counter",
            "Datagrams from senders outside source.exporters (dropped undecoded).",
            &one(p.rejected_datagrams),
        );
        metric(
            &mut out,
            "exflow_flow_clock_skewed_records_total",
            "counter",
            "Records dated more than flow.max_clock_skew_s after their datagram was received (dropped).",
            &one(f.clock.skewed),
        );
        metric(
            &mut out,
            "exflow_flow_late_dropped_records_total",
            "counter",
            "Records that ended more than flow.max_lateness_s before their exporter's clock (dropped).",
            &one(f.clock.late),
        );
        metric(
            &mut out,
            "exflow_flow_clock_exporters_evicted_total",
            "counter",
            "Exporter clocks forgotten to make room (decoder.max_exporters), one-off senders first.",
            &one(f.clock.evicted),
        );
        metric(
            &mut out,
            "exflow_flow_conversations",
            "gauge",
            "Conversations tracked.",
            &one(p.conversations),
        );
        metric(
            &mut out,
            "exflow_flow_conversations_created_total",
            "counter",
            "Conversations started.",
            &one(f.conversations_created),
        );
        metric(
            &mut out,
            "exflow_flow_conversations_closed_total",
            "counter",
            "Conversations ended on the exporter's word (flowEndReason, a firewall's teardown) before their idle timeout.",
            &one(f.conversations_closed),
        );
        metric(
            &mut out,
            "exflow_flow_conversations_expired_total",
            "counter",
            "Conversations ended by the idle timeout.",
            &one(f.conversations_expired),
        );
        metric(
            &mut out,
            "exflow_flow_conversations_evicted_total",
            "counter",
            "Conversations ended early because the table was full.",
            &one(f.conversations_evicted),
        );
        metric(
            &mut out,
            "exflow_detect_event_time_seconds",
            "gauge",
            "Event time of the tables: the slowest exporter heard recently (see README, Event time).",
            &one(snapshot.event_time_ms / 1000),
        );
        let alerts: Vec<(String, u64)> = crate::detect::RULES
            .iter()
            .enumerate()
            .flat_map(|(r, rule)| {
                crate::detect::Severity::ALL.iter().map(move |s| {
                    (
                        format!("{{rule=\"{rule}\",severity=\"{}\"}}", s.name()),
                        p.alerts.0[r][*s as usize],
                    )
                })
            })
            .collect();
        metric(
            &mut out,
            "exflow_detect_alerts_total",
            "counter",
            "Alerts raised, by rule and severity.",
            &alerts,
        );
        summary(
            &mut out,
            "exflow_pipeline_receive_to_table_seconds",
            "Datagram received to its records in the conversation table.",
            &snapshot.receive_to_table,
        );
        summary(
            &mut out,
            "exflow_detect_alert_latency_seconds",
            "Alert raised (threshold crossed) to handed to the sink.",
            &snapshot.alert_latency,
        );
        let dropped: Vec<(String, u64)> = snapshot
            .rule_state_dropped
            .iter()
            .map(|(rule, kind, n)| (format!("{{rule=\"{rule}\",kind=\"{kind}\"}}"), *n))
            .collect();
        metric(
            &mut out,
            "exflow_detect_state_dropped_total",
            "counter",
            "Rule state dropped to stay within bounds.",
            &dropped,
        );
        let risky: Vec<(String, u64)> = crate::detect::Severity::ALL
            .iter()
            .zip(p.risky_hosts)
            .map(|(band, n)| (format!("{{severity=\"{}\"}}", band.name()), n))
            .collect();
        metric(
            &mut out,
            "exflow_detect_risky_hosts",
            "gauge",
            "Inside hosts alerted on within the last day, by the band of their risk score.",
            &risky,
        );
        metric(
            &mut out,
            "exflow_detect_suppressed_alerts_total",
            "counter",
            "Findings held back by suppression.",
            &one(p.suppressed),
        );
        metric(
            &mut out,
            "exflow_sink_alerts_total",
            "counter",
            "Alerts written to the sink.",
            &one(self.sink.alerts.load(Ordering::Relaxed)),
        );
        metric(
            &mut out,
            "exflow_sink_errors_total",
            "counter",
            "Alerts the sink failed to write.",
            &one(self.sink.errors.load(Ordering::Relaxed)),
        );
        if let Some(k) = self.kafka.get() {
            let load = |a: &AtomicU64| one(a.load(Ordering::Relaxed));
            metric(
                &mut out,
                "exflow_sink_kafka_delivered_alerts_total",
                "counter",
                "Alerts (and their OCSF findings when sink.kafka.ocsf_topic is set) the Kafka broker acknowledged.",
                &load(&k.delivered),
            );
            metric(
                &mut out,
                "exflow_sink_kafka_failed_deliveries_total",
                "counter",
                "Kafka deliveries that failed (retried from the spool).",
                &load(&k.failed),
            );
            metric(
                &mut out,
                "exflow_sink_kafka_broker_up",
                "gauge",
                "1 while the Kafka broker answers.",
                &load(&k.broker_up),
            );
            metric(
                &mut out,
                "exflow_sink_queue_dropped_alerts_total",
                "counter",
                "Alerts dropped because the queue to the Kafka sink was full.",
                &load(&k.queue_dropped),
            );
            metric(
                &mut out,
                "exflow_sink_spool_alerts",
                "gauge",
                "Alerts (and OCSF findings) in the spool not yet acknowledged, on disk.",
                &load(&k.spool_alerts),
            );
            metric(
                &mut out,
                "exflow_sink_spool_held_alerts",
                "gauge",
                "Alerts held in memory because the spool's disk is full (bounded).",
                &load(&k.spool_held),
            );
            metric(
                &mut out,
                "exflow_sink_spool_dropped_alerts_total",
                "counter",
                "Alerts dropped because the spool was full.",
                &load(&k.spool_dropped),
            );
            for (name, help, value) in [
                (
                    "exflow_sink_kafka_producer_recreated_total",
                    "Kafka producers replaced (fatal or fenced, or after an outage).",
                    &k.producer_recreated,
                ),
                (
                    "exflow_sink_kafka_dead_lettered_alerts_total",
                    "Alerts the broker rejected for good, moved to the spool's dead-letter file.",
                    &k.dead_lettered,
                ),
                (
                    "exflow_sink_kafka_skipped_duplicate_alerts_total",
                    "Spooled alerts found on the topic already, not sent again.",
                    &k.duplicates_skipped,
                ),
                (
                    "exflow_sink_kafka_tail_check_failures_total",
                    "Read-backs of the alert topic's tail that failed (3 in a row: sent unchecked).",
                    &k.tail_check_failures,
                ),
                (
                    "exflow_sink_spool_corrupt_records_total",
                    "Damaged spool records skipped.",
                    &k.spool_corrupt,
                ),
                (
                    "exflow_sink_spool_torn_records_total",
                    "Spool records cut short by a crash, cut off at start.",
                    &k.spool_torn,
                ),
            ] {
                metric(&mut out, name, "counter", help, &load(value));
            }
        }
        if let Some(f) = self.flows.get() {
            let load = |a: &AtomicU64| one(a.load(Ordering::Relaxed));
            metric(
                &mut out,
                "exflow_sink_flows_published_records_total",
                "counter",
                "Flow records the broker acknowledged.",
                &load(&f.published),
            );
            metric(
                &mut out,
                "exflow_sink_flows_dropped_records_total",
                "counter",
                "Flow records dropped at a full producer queue.",
                &load(&f.dropped),
            );
            metric(
                &mut out,
                "exflow_sink_flows_failed_records_total",
                "counter",
                "Flow records that failed delivery.",
                &load(&f.failed),
            );
        }
        if let Some(scaleout) = self.scaleout.get() {
            scaleout.render(&mut out, &metric);
        }
        metric(
            &mut out,
            "exflow_decode_state_load_failures_total",
            "counter",
            "State files that could not be read at start (kept aside as *.corrupt).",
            &one(self.faults.state_load_failures.load(Ordering::Relaxed)),
        );
        metric(
            &mut out,
            "exflow_enrich_threat_intel_reload_failures_total",
            "counter",
            "Threat-intel reloads (SIGHUP) that failed; the previous list stays in force.",
            &one(self
                .faults
                .threat_intel_reload_failures
                .load(Ordering::Relaxed)),
        );
        metric(
            &mut out,
            "exflow_telemetry_refused_connections_total",
            "counter",
            "Connections to this endpoint closed unserved because too many were open.",
            &one(self.http.refused_connections.load(Ordering::Relaxed)),
        );
        out
    }
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
