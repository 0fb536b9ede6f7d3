//! daemon: `exflow run`. Binds the UDP listeners and the metrics endpoint, then receives and
//! runs the pipeline on one thread until asked to stop (the Kafka sink and the metrics
//! endpoint have threads of their own); then drains in order: take what the sockets still
//! hold, flush the tables (end of event time), hand the last alerts to the sink, flush it,
//! save the template state.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use crate::config::Config;
use crate::detect::Alert;
use crate::enrich::Enricher;
use crate::pipeline::Pipeline;
use crate::sink::AlertSink;
use crate::source::udp::{self, Sockets, SourceCounters};
use crate::telemetry::{Latency, Snapshot, Telemetry};
use crate::time::wall_clock_ns as now_ns;
use hdrhistogram::Histogram;

/// Signals the daemon reacts to, as flags (set by signal handlers or by tests).
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// SIGTERM / SIGINT: drain and stop.
    pub shutdown: Arc<AtomicBool>,
    /// SIGHUP: reload the threat-intel file.
    pub reload: Arc<AtomicBool>,
}

/// Runs until `control.shutdown` is set.
pub fn run(config: &Config, control: Control) -> anyhow::Result<()> {
    let enricher = Enricher::from_config(config)?;
    let mut pipeline = Pipeline::new(config, enricher, 1);
    if let Some(path) = &config.state_file {
        match pipeline.decoder().load_state(path) {
            Ok(restored) => {
                info!(templates = restored, path = %path.display(), "restored decoder state")
            }
            Err(error) => warn!("{error:#}; starting without saved templates"),
        }
    }
    let mut sink = AlertSink::from_config(&config.sink)?;
    let mut flows_counters = None;
    if let Some(kafka) = &config.sink.kafka
        && let Some(flows) = crate::sink::flows::FlowsPublisher::from_config(kafka)?
    {
        flows_counters = Some(flows.counters.clone());
        info!(
            topic = kafka.flows_topic.as_deref().unwrap_or_default(),
            "publishing every flow record"
        );
        pipeline.set_tap(Box::new(flows));
    }
    let mut telemetry = Telemetry::default();
    if let AlertSink::Kafka(kafka) = &sink {
        telemetry.kafka = Some(kafka.counters.clone());
    }
    telemetry.flows = flows_counters;
    let mut listeners = Vec::new();
    for &address in &config.listen {
        let listener = udp::bind(address, config.source.receive_buffer_bytes)?;
        // Linux reports twice what it grants; compare with what was asked.
        if listener.receive_buffer_bytes / 2 < config.source.receive_buffer_bytes {
            warn!(
                "udp {}: receive buffer capped at {} bytes (asked {}); raise the cap with \
                 `sysctl -w net.core.rmem_max={}`",
                listener.address,
                listener.receive_buffer_bytes / 2,
                config.source.receive_buffer_bytes,
                config.source.receive_buffer_bytes
            );
        }
        info!(listen = %listener.address, "receiving NetFlow v5/v9/IPFIX");
        let counters = Arc::new(SourceCounters::default());
        telemetry.sources.push((listener.address, counters.clone()));
        listeners.push((listener, counters));
    }
    let metrics = TcpListener::bind(config.metrics_listen)
        .with_context(|| format!("cannot serve metrics on {}", config.metrics_listen))?;
    info!(metrics = %metrics.local_addr()?, "serving /metrics");
    let telemetry = Arc::new(telemetry);
    let stop_metrics = Arc::new(AtomicBool::new(false));
    let mut sockets = Sockets::new(listeners);
    let metrics_thread = {
        let (telemetry, stop) = (telemetry.clone(), stop_metrics.clone());
        std::thread::Builder::new()
            .name("exflow-metrics".into())
            .spawn(move || crate::telemetry::serve(metrics, telemetry, stop))?
    };

    let mut worker = Worker {
        pipeline,
        receive_to_table: latency_histogram(),
        alert_latency: latency_histogram(),
        last_publish: Instant::now(),
        sink: &mut sink,
        telemetry: &telemetry,
        alerts: Vec::new(),
    };
    let mut last_save = Instant::now();
    let save_every = Duration::from_secs(config.source.state_save_interval_s);
    while !control.shutdown.load(Ordering::Relaxed) {
        worker.receive(&mut sockets, Duration::from_millis(100));
        if control.reload.swap(false, Ordering::Relaxed) {
            reload_threat_intel(config, &mut worker.pipeline);
        }
        if last_save.elapsed() >= save_every {
            save_state(config, &mut worker.pipeline);
            last_save = Instant::now();
        }
    }
    info!("stopping: draining sockets and tables");
    // What the kernel already holds is taken; then event time ends.
    while worker.receive(&mut sockets, Duration::ZERO) > 0 {}
    worker.pipeline.finish(&mut worker.alerts);
    worker.deliver();
    worker.publish();
    save_state(config, &mut worker.pipeline);
    stop_metrics.store(true, Ordering::Relaxed);
    let _ = metrics_thread.join();
    sink.close().context("cannot flush the alert sink")?;
    let counters = telemetry
        .snapshot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pipeline;
    info!(
        records = counters.decode.records,
        alerts = counters.alerts.total(),
        "stopped"
    );
    Ok(())
}

/// How long the pipeline thread receives before it hands alerts to the sink and publishes
/// its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

struct Worker<'a> {
    pipeline: Pipeline,
    /// Datagram received -> records in the table, microseconds.
    receive_to_table: Histogram<u64>,
    /// Alert raised -> handed to the sink, microseconds.
    alert_latency: Histogram<u64>,
    last_publish: Instant,
    sink: &'a mut AlertSink,
    telemetry: &'a Telemetry,
    alerts: Vec<Alert>,
}

impl Worker<'_> {
    /// Receives and runs datagrams for up to [`PUBLISH_EVERY`] (waiting at most `wait` for
    /// the first), then hands alerts to the sink and publishes the counters. Returns how
    /// many datagrams it ran.
    fn receive(&mut self, sockets: &mut Sockets, wait: Duration) -> usize {
        let started = Instant::now();
        let mut total = 0;
        let mut timeout = wait;
        loop {
            let pipeline = &mut self.pipeline;
            let alerts = &mut self.alerts;
            let histogram = &mut self.receive_to_table;
            let received = sockets
                .receive(timeout, |exporter, received_ns, payload| {
                    pipeline.push_datagram(exporter, received_ns, payload, alerts);
                    histogram.saturating_record(now_ns().saturating_sub(received_ns) / 1000);
                })
                .unwrap_or_else(|error| {
                    warn!("receive failed: {error}");
                    0
                });
            total += received;
            if received == 0 || started.elapsed() >= PUBLISH_EVERY {
                break;
            }
            timeout = Duration::ZERO;
        }
        if total > 0 || started.elapsed() >= PUBLISH_EVERY || !self.alerts.is_empty() {
            self.deliver();
            let _ = self.sink.flush();
        }
        if self.last_publish.elapsed() >= PUBLISH_EVERY {
            self.publish();
        }
        total
    }

    fn deliver(&mut self) {
        let now = now_ns();
        for alert in self.alerts.drain(..) {
            self.alert_latency
                .saturating_record(now.saturating_sub(alert.raised_ns) / 1000);
            match self.sink.send(alert) {
                Ok(()) => self.telemetry.sink.alerts.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.telemetry.sink.errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    fn publish(&mut self) {
        self.last_publish = Instant::now();
        let decoder = self.pipeline.decoder();
        let exporters = decoder.exporters().map(|(a, c)| (a, *c)).collect();
        let templates = decoder.template_count();
        self.telemetry.publish(Snapshot {
            pipeline: self.pipeline.counters(),
            exporters,
            templates,
            event_time_ms: self.pipeline.now_ms(),
            rule_state_dropped: self.pipeline.rule_state_dropped(),
            receive_to_table: Latency::of(&self.receive_to_table),
            alert_latency: Latency::of(&self.alert_latency),
        });
    }
}

/// Microseconds from 1 to 10 minutes, three significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

fn save_state(config: &Config, pipeline: &mut Pipeline) {
    if let Some(path) = &config.state_file
        && let Err(error) = pipeline.decoder().save_state(path)
    {
        warn!("{error:#}");
    }
}

fn reload_threat_intel(config: &Config, pipeline: &mut Pipeline) {
    let Some(path) = &config.threat_intel_file else {
        return;
    };
    match crate::config::load_threat_intel(path) {
        Ok(networks) => {
            info!(ranges = networks.range_count(), path = %path.display(), "reloaded threat intel");
            pipeline.enricher_mut().set_threat_intel(networks);
        }
        Err(error) => warn!("{error:#}; keeping the previous threat intel"),
    }
}
