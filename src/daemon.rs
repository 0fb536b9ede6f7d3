//! daemon: `exflow run`. The CLI binds the sockets first ([`BoundSockets`]: UDP, one lock
//! per port, metrics) and hands them to [`run`]. Receive workers (`source.workers`) each own a socket per listen
//! address and a decoder. By default the one worker also runs the flow table and the rules
//! on its own thread, straight after decoding (`flow.shards = 0`: no hand-over, the fastest
//! on a machine of few cores). With `flow.shards = N` the table is split by inside host over
//! N shard threads; the workers hand them records in batches through bounded queues, and a
//! full queue drops the batch and counts it. The main thread hands alerts to the sink and
//! publishes the metrics. On SIGTERM it drains in order: the workers take what the sockets
//! still hold and stop, the shards run what is queued and end event time (every
//! conversation ends), the last alerts reach the sink, the sink flushes, template state is
//! saved.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tracing::{info, warn};

use crate::config::Config;
use crate::decode::DecodeCounters;
use crate::decode::exporter::InterfaceCounters;
use crate::detect::Alert;
use crate::enrich::NetSet;
use crate::flow::clock::WorkerClocks;
use crate::pipeline::{Ingest, PipelineCounters, Routed, Shard, sum_state_dropped};
use crate::sink::AlertSink;
use crate::source::udp::{self, Listener, PortLock, Sockets, SourceCounters};
use crate::telemetry::{FaultCounters, Latency, Snapshot, Telemetry};
use crate::time::wall_clock_ns as now_ns;

/// Signals the daemon reacts to, as flags (set by signal handlers or by tests).
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// SIGTERM / SIGINT: drain and stop.
    pub shutdown: Arc<AtomicBool>,
    /// SIGHUP: reload the threat-intel file.
    pub reload: Arc<AtomicBool>,
}

/// How often threads publish their counters and the main thread the metrics; also the
/// longest a receive worker or a shard waits before it looks at its flags again.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Records (and ticks) routed to one shard by one receive worker, with what the shard
/// needs for the end of event time and its latency figures.
struct Batch {
    records: Vec<Routed>,
    /// The receive worker that sent it.
    worker: usize,
    /// Event time as far as the worker knows (all shards' records), ms.
    watermark_ms: u64,
    /// When the oldest of the batch's datagrams was received (wall clock, ns).
    received_ns: u64,
    /// Datagrams that contributed records.
    datagrams: u64,
}

/// What a receive worker publishes for the metrics.
#[derive(Default)]
struct WorkerReport {
    counters: PipelineCounters,
    exporters: Vec<(IpAddr, DecodeCounters)>,
    sflow_interfaces: Vec<(IpAddr, InterfaceCounters)>,
    templates: usize,
}

/// What a shard publishes for the metrics.
struct ShardReport {
    counters: PipelineCounters,
    rule_state_dropped: Vec<(&'static str, &'static str, u64)>,
    now_ms: u64,
    /// Datagram received -> its records in the table, microseconds.
    receive_to_table: Histogram<u64>,
}

impl Default for ShardReport {
    fn default() -> Self {
        ShardReport {
            counters: PipelineCounters::default(),
            rule_state_dropped: Vec::new(),
            now_ms: 0,
            receive_to_table: latency_histogram(),
        }
    }
}

/// The threat-intel networks as last (re)loaded, with a generation the shards compare
/// with theirs so a reload costs them one atomic load per wake-up.
#[derive(Default)]
struct ThreatIntel {
    generation: AtomicU64,
    networks: Mutex<Arc<NetSet>>,
}

/// The daemon's sockets, bound before anything slow starts (the sink, state files), so no
/// datagram is refused meanwhile: the kernel queues them. The CLI binds them and hands them
/// to [`run`]; ports given as 0 are resolved, so a caller learns what it got.
pub struct BoundSockets {
    /// Each receive worker's sockets, one per listen address.
    workers: Vec<WorkerListeners>,
    /// Each listen address as bound, with the counters its workers' sockets share.
    sources: Vec<(SocketAddr, Arc<SourceCounters>)>,
    /// Where `/metrics` is served.
    metrics: TcpListener,
    /// One per UDP port, held until `run` returns: no second exflow takes the ports.
    locks: Vec<PortLock>,
}

impl BoundSockets {
    /// Binds every listen address once per receive worker (SO_REUSEPORT when there are
    /// several), each port under a [`PortLock`], then the metrics listener.
    pub fn bind(config: &Config) -> anyhow::Result<BoundSockets> {
        let workers = config.source.workers.max(1);
        let reuse_port = workers > 1;
        let mut per_worker: Vec<WorkerListeners> = (0..workers).map(|_| Vec::new()).collect();
        let mut sources = Vec::with_capacity(config.listen.len());
        let mut locks: Vec<PortLock> = Vec::new();
        let mut lock = |port: u16, address: SocketAddr| -> anyhow::Result<()> {
            // Several listen addresses may share a port: one lock covers them.
            if !locks.iter().any(|l| l.port == port) {
                locks.push(PortLock::acquire(port, address)?);
            }
            Ok(())
        };
        for &asked in &config.listen {
            if asked.port() != 0 {
                lock(asked.port(), asked)?;
            }
            let counters = Arc::new(SourceCounters::default());
            // Port 0 means "any": the other workers join the port the first one got.
            let mut address = asked;
            for sockets in &mut per_worker {
                let listener = udp::bind(address, config.source.receive_buffer_bytes, reuse_port)?;
                address = listener.address;
                sockets.push((listener, counters.clone()));
            }
            lock(address.port(), address)?;
            let granted = per_worker[0]
                .last()
                .map_or(0, |(l, _)| l.receive_buffer_bytes);
            // Linux reports twice what it grants; compare with what was asked.
            if granted / 2 < config.source.receive_buffer_bytes {
                warn!(
                    "udp {address}: receive buffer capped at {} bytes (asked {}); raise the cap \
                     with `sysctl -w net.core.rmem_max={}`",
                    granted / 2,
                    config.source.receive_buffer_bytes,
                    config.source.receive_buffer_bytes
                );
            }
            info!(listen = %address, "receiving NetFlow v5/v9, IPFIX and sFlow v5");
            sources.push((address, counters));
        }
        let metrics = TcpListener::bind(config.metrics_listen)
            .with_context(|| format!("cannot serve metrics on {}", config.metrics_listen))?;
        Ok(BoundSockets {
            workers: per_worker,
            sources,
            metrics,
            locks,
        })
    }

    /// The UDP addresses as bound, in the order of `listen`.
    pub fn listen_addresses(&self) -> Vec<SocketAddr> {
        self.sources.iter().map(|(address, _)| *address).collect()
    }

    /// The metrics address as bound.
    pub fn metrics_address(&self) -> std::io::Result<SocketAddr> {
        self.metrics.local_addr()
    }

    /// The parts, for a command that receives as the daemon does on a loop of its own
    /// (`exflow collect`): every worker's sockets in one list, the listen addresses with
    /// their counters, the metrics listener, and the port locks (hold them while receiving).
    pub fn into_parts(self) -> SocketParts {
        SocketParts {
            sockets: self.workers.into_iter().flatten().collect(),
            sources: self.sources,
            metrics: self.metrics,
            locks: self.locks,
        }
    }
}

/// [`BoundSockets`] taken apart.
pub struct SocketParts {
    pub sockets: Vec<(Listener, Arc<SourceCounters>)>,
    pub sources: Vec<(SocketAddr, Arc<SourceCounters>)>,
    pub metrics: TcpListener,
    pub locks: Vec<PortLock>,
}

/// Runs on `sockets` (bound from the same `config`) until `control.shutdown` is set.
pub fn run(config: &Config, sockets: BoundSockets, control: Control) -> anyhow::Result<()> {
    let BoundSockets {
        workers: listeners,
        sources,
        metrics,
        locks: _locks,
    } = sockets;
    // Metrics first: they answer while the rest starts (the sink may wait for a broker).
    let telemetry = Arc::new(Telemetry {
        sources,
        ..Telemetry::default()
    });
    info!(
        metrics = %metrics.local_addr()?,
        workers = listeners.len(),
        shards = config.flow.shards,
        "serving /metrics"
    );
    let stop_metrics = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let metrics_thread = {
        let (telemetry, stop) = (telemetry.clone(), stop_metrics.0.clone());
        std::thread::Builder::new()
            .name("exflow-metrics".into())
            .spawn(move || {
                if let Err(error) = crate::telemetry::serve(metrics, telemetry, stop) {
                    warn!("the metrics endpoint stopped: {error}");
                }
            })?
    };
    let enricher = config.enricher()?;
    let mut sink = AlertSink::from_config(&config.sink)?;
    if let AlertSink::Kafka(kafka) = &sink {
        let _ = telemetry.kafka.set(kafka.counters.clone());
    }
    let workers = listeners.len();
    let flows_counters = Arc::new(crate::sink::flows::FlowsCounters::default());
    let mut ingests = Vec::with_capacity(workers);
    for worker in 0..workers {
        let mut ingest = Ingest::new(config, enricher.clone(), config.flow.shards.max(1));
        if let Some(path) = &config.state_file {
            restore_state(&mut ingest, path, workers, &telemetry.faults);
        }
        if let Some(kafka) = &config.sink.kafka
            && let Some(flows) =
                crate::sink::flows::FlowsPublisher::from_config(kafka, flows_counters.clone())?
        {
            if worker == 0 {
                info!(
                    topic = kafka.flows_topic.as_deref().unwrap_or_default(),
                    "publishing every flow record"
                );
            }
            let _ = telemetry.flows.set(flows_counters.clone());
            ingest.set_tap(Box::new(flows));
        }
        ingests.push(ingest);
    }

    // Shards first: the workers need their queues.
    let threaded = config.flow.shards > 0;
    let shard_count = config.flow.shards.max(1);
    let intel = Arc::new(ThreatIntel::default());
    let (alerts_tx, alerts_rx) = mpsc::sync_channel::<Vec<Alert>>(1024);
    let mut shard_reports = Vec::with_capacity(shard_count);
    let mut runners = Vec::with_capacity(shard_count);
    for index in 0..shard_count {
        let report = Arc::new(Mutex::new(ShardReport::default()));
        let mut shard = Shard::new(config, enricher.clone(), shard_count);
        let rules_state = config.state_file.as_deref().map(|path| {
            restore_rules_state(&mut shard, path, index, shard_count);
            RulesState {
                path: crate::detect::state::rules_state_path(path, index),
                every: Duration::from_secs(config.source.state_save_interval_s),
                last: Instant::now(),
            }
        });
        let mut runner = ShardRunner::new(shard, alerts_tx.clone(), intel.clone(), report.clone());
        runner.rules_state = rules_state;
        runner.worker_clocks = (threaded && workers > 1).then(|| WorkerClocks::new(workers));
        runners.push(runner);
        shard_reports.push(report);
    }
    drop(alerts_tx);
    let mut queues = Vec::new();
    let mut shard_threads = Vec::new();
    if threaded {
        for (index, runner) in runners.drain(..).enumerate() {
            let (tx, rx) = mpsc::sync_channel::<Batch>(config.flow.queue_batches.max(1));
            shard_threads.push(
                std::thread::Builder::new()
                    .name(format!("exflow-shard-{index}"))
                    .spawn(move || run_shard(runner, rx))?,
            );
            queues.push(tx);
        }
    }
    let queue_dropped = Arc::new(AtomicU64::new(0));
    let mut worker_reports = Vec::with_capacity(workers);
    let mut worker_threads: Vec<JoinHandle<Ingest>> = Vec::with_capacity(workers);
    let gather_max = Duration::from_micros(config.source.gather_max_us);
    for (index, (ingest, listeners)) in ingests.into_iter().zip(listeners).enumerate() {
        let report = Arc::new(Mutex::new(WorkerReport::default()));
        let tables = match runners.pop() {
            // Validation allows the inline tables with one worker only.
            Some(runner) => Tables::Inline(Box::new(runner)),
            None => Tables::Queued(queues.clone()),
        };
        let worker = ReceiveWorker {
            index,
            ingest,
            tables,
            pending: Pending::default(),
            queue_dropped: queue_dropped.clone(),
            report: report.clone(),
            shutdown: control.shutdown.clone(),
            state: config
                .state_file
                .as_deref()
                .map(|path| (state_path(path, index), config.source.state_save_interval_s)),
        };
        worker_threads.push(
            std::thread::Builder::new()
                .name(format!("exflow-receive-{index}"))
                // The receive slots are raw buffers the kernel fills: made on their thread.
                .spawn(move || worker.run(Sockets::new(listeners, gather_max)))?,
        );
        worker_reports.push(report);
    }
    drop(queues);

    // The main thread: alerts to the sink, metrics, reloads, until the shards are done.
    let mut alert_latency = latency_histogram();
    let mut last_publish = Instant::now();
    let publish = |alert_latency: &Histogram<u64>| {
        telemetry.publish(snapshot(
            &worker_reports,
            &shard_reports,
            alert_latency,
            queue_dropped.load(Ordering::Relaxed),
        ));
    };
    loop {
        match alerts_rx.recv_timeout(PUBLISH_EVERY) {
            Ok(alerts) => {
                deliver(alerts, &mut sink, &telemetry, &mut alert_latency);
                while let Ok(more) = alerts_rx.try_recv() {
                    deliver(more, &mut sink, &telemetry, &mut alert_latency);
                }
                let _ = sink.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every shard has finished: the drain is complete.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if control.reload.swap(false, Ordering::Relaxed) {
            reload_threat_intel(config, &intel, &telemetry.faults);
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            publish(&alert_latency);
            last_publish = Instant::now();
        }
    }
    info!("stopping: the tables are drained");
    for (index, thread) in worker_threads.into_iter().enumerate() {
        match thread.join() {
            Ok(mut ingest) => {
                if let Some(path) = &config.state_file {
                    save_state(&mut ingest, &state_path(path, index));
                }
            }
            Err(_) => warn!("receive worker {index} panicked"),
        }
    }
    for thread in shard_threads {
        if thread.join().is_err() {
            warn!("a flow-table shard panicked");
        }
    }
    publish(&alert_latency);
    drop(stop_metrics);
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

/// Sets the metrics server's stop flag when dropped, so that an early return stops it too.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Each worker's listeners.
type WorkerListeners = Vec<(Listener, Arc<SourceCounters>)>;

/// Datagrams received since the last hand-over, for the latency figures.
#[derive(Default)]
struct Pending {
    oldest_ns: u64,
    datagrams: u64,
}

/// Where a receive worker's records go.
enum Tables {
    /// The worker runs the table and the rules itself, datagram by datagram.
    Inline(Box<ShardRunner>),
    /// Shard threads, fed through bounded queues.
    Queued(Vec<SyncSender<Batch>>),
}

/// A receive worker: its decoder (with a batch in the making per shard) and the tables.
struct ReceiveWorker {
    /// Its index among the receive workers.
    index: usize,
    ingest: Ingest,
    tables: Tables,
    pending: Pending,
    queue_dropped: Arc<AtomicU64>,
    report: Arc<Mutex<WorkerReport>>,
    shutdown: Arc<AtomicBool>,
    /// Where and how often (s) this worker saves its templates.
    state: Option<(PathBuf, u64)>,
}

impl ReceiveWorker {
    /// Receives until shutdown, then takes what the sockets still hold; returns the ingest
    /// so its template state can be saved.
    fn run(mut self, mut sockets: Sockets) -> Ingest {
        let mut last_publish = Instant::now();
        let mut last_save = Instant::now();
        while !self.shutdown.load(Ordering::Relaxed) {
            self.receive(&mut sockets, PUBLISH_EVERY);
            if last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish();
                last_publish = Instant::now();
            }
            if let Some((path, every_s)) = &self.state
                && last_save.elapsed() >= Duration::from_secs(*every_s)
            {
                save_state(&mut self.ingest, path);
                last_save = Instant::now();
            }
            if let Tables::Inline(runner) = &mut self.tables {
                runner.save_rules_state(false);
            }
        }
        while self.receive(&mut sockets, Duration::ZERO) > 0 {}
        if let Tables::Inline(runner) = &mut self.tables {
            runner.finish(self.ingest.now_ms());
        }
        self.ingest.finish();
        self.publish();
        self.ingest
    }

    /// One poll round: decodes what arrived within `wait` and runs it or hands it over.
    fn receive(&mut self, sockets: &mut Sockets, wait: Duration) -> usize {
        let (ingest, pending, tables) = (&mut self.ingest, &mut self.pending, &mut self.tables);
        let received = sockets
            .receive(wait, |exporter, received_ns, payload| {
                ingest.push_datagram(exporter, received_ns, payload);
                match tables {
                    Tables::Inline(runner) => {
                        // A reload applies to every datagram that arrives after it.
                        runner.refresh_intel();
                        let watermark_ms = ingest.now_ms();
                        let batch = &mut ingest.batches()[0];
                        runner.run(0, batch, watermark_ms, received_ns, 1);
                        batch.clear();
                    }
                    Tables::Queued(_) => {
                        if pending.datagrams == 0 {
                            pending.oldest_ns = received_ns;
                        }
                        pending.datagrams += 1;
                    }
                }
            })
            .unwrap_or_else(|error| {
                warn!("receive failed: {error}");
                0
            });
        match &mut self.tables {
            Tables::Inline(runner) => runner.send_alerts(),
            Tables::Queued(queues) => hand_over(
                self.index,
                &mut self.ingest,
                queues,
                std::mem::take(&mut self.pending),
                &self.queue_dropped,
            ),
        }
        received
    }

    fn publish(&mut self) {
        if let Tables::Inline(runner) = &mut self.tables {
            runner.publish();
        }
        let counters = self.ingest.counters();
        let decoder = self.ingest.decoder();
        let report = WorkerReport {
            counters,
            exporters: decoder.exporters().map(|(a, c)| (a, *c)).collect(),
            sflow_interfaces: decoder.sflow_interfaces().map(|(a, c)| (a, *c)).collect(),
            templates: decoder.template_count(),
        };
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = report;
    }
}

/// Sends each shard its batch. Never waits: a full queue drops the batch, counted.
fn hand_over(
    worker: usize,
    ingest: &mut Ingest,
    queues: &[SyncSender<Batch>],
    pending: Pending,
    queue_dropped: &AtomicU64,
) {
    let watermark_ms = ingest.now_ms();
    for (queue, batch) in queues.iter().zip(ingest.batches()) {
        if batch.is_empty() {
            continue;
        }
        let records = std::mem::replace(batch, Vec::with_capacity(batch.len()));
        let batch = Batch {
            records,
            worker,
            watermark_ms,
            received_ns: pending.oldest_ns,
            datagrams: pending.datagrams,
        };
        if let Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) =
            queue.try_send(batch)
        {
            let records = batch.records.iter();
            let dropped = records.filter(|r| matches!(r, Routed::Record { .. }));
            queue_dropped.fetch_add(dropped.count() as u64, Ordering::Relaxed);
        }
    }
}

/// A shard with what surrounds it in the daemon: where its alerts go, the threat intel it
/// follows, the figures it publishes.
struct ShardRunner {
    shard: Shard,
    alerts: Vec<Alert>,
    alerts_out: SyncSender<Vec<Alert>>,
    intel: Arc<ThreatIntel>,
    intel_generation: u64,
    report: Arc<Mutex<ShardReport>>,
    /// Datagram received -> its records in the table, microseconds, since the last publish.
    latency: Histogram<u64>,
    /// The latest event time the workers reported, for the end of input.
    watermark_ms: u64,
    /// Where and how often the rules' learned state (the host profiles) is saved.
    rules_state: Option<RulesState>,
    /// With several receive workers, the table clock they tick this shard on (the
    /// slowest heard recently, as `flow::clock::WorkerClocks` says); `None` with one.
    worker_clocks: Option<WorkerClocks>,
}

/// A shard's rules state file and when it was last written (wall clock).
struct RulesState {
    path: PathBuf,
    every: Duration,
    last: Instant,
}

impl ShardRunner {
    fn new(
        shard: Shard,
        alerts_out: SyncSender<Vec<Alert>>,
        intel: Arc<ThreatIntel>,
        report: Arc<Mutex<ShardReport>>,
    ) -> ShardRunner {
        ShardRunner {
            shard,
            alerts: Vec::new(),
            alerts_out,
            intel,
            intel_generation: 0,
            report,
            latency: latency_histogram(),
            watermark_ms: 0,
            rules_state: None,
            worker_clocks: None,
        }
    }

    /// Saves the rules' state when it is due (or, with `now`, at once).
    fn save_rules_state(&mut self, now: bool) {
        let Some(state) = &mut self.rules_state else {
            return;
        };
        if !now && state.last.elapsed() < state.every {
            return;
        }
        state.last = Instant::now();
        if let Err(error) = self.shard.save_rules_state(&state.path) {
            warn!("{error:#}");
        }
    }

    /// Runs a batch of `datagrams` datagrams from receive worker `worker`, the oldest
    /// received at `received_ns`.
    fn run(
        &mut self,
        worker: usize,
        records: &[Routed],
        watermark_ms: u64,
        received_ns: u64,
        datagrams: u64,
    ) {
        let Some(clocks) = &mut self.worker_clocks else {
            self.shard.run_batch(records, &mut self.alerts);
            return self.account(watermark_ms, received_ns, datagrams);
        };
        // A worker's tick moves this shard only as far as the slowest worker heard.
        let received_ms = match received_ns {
            0 => now_ns() / 1_000_000,
            ns => ns / 1_000_000,
        };
        let mut from = 0;
        for (i, routed) in records.iter().enumerate() {
            if let Routed::Tick { now_ms } = *routed {
                self.shard.run_batch(&records[from..i], &mut self.alerts);
                from = i + 1;
                if let Some(now_ms) = clocks.tick(worker, now_ms, received_ms) {
                    self.shard
                        .run_batch(&[Routed::Tick { now_ms }], &mut self.alerts);
                }
            }
        }
        self.shard.run_batch(&records[from..], &mut self.alerts);
        self.account(watermark_ms, received_ns, datagrams);
    }

    /// Takes note of a batch's event time and latency.
    fn account(&mut self, watermark_ms: u64, received_ns: u64, datagrams: u64) {
        self.watermark_ms = self.watermark_ms.max(watermark_ms);
        if datagrams > 0 {
            let micros = now_ns().saturating_sub(received_ns) / 1000;
            let _ = self.latency.record_n(micros.max(1), datagrams);
        }
    }

    /// Takes up a reload of the threat intel, if there was one.
    fn refresh_intel(&mut self) {
        let generation = self.intel.generation.load(Ordering::Acquire);
        if generation != self.intel_generation {
            self.intel_generation = generation;
            let networks = self
                .intel
                .networks
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.shard.set_threat_intel(networks.clone());
        }
    }

    /// Hands the alerts raised so far to the main thread. Blocking is right here: alerts
    /// are few, and the sink never blocks for long (it spools to disk when Kafka is away).
    fn send_alerts(&mut self) {
        if !self.alerts.is_empty()
            && self
                .alerts_out
                .send(std::mem::take(&mut self.alerts))
                .is_err()
        {
            warn!("the alert sink is gone; alerts of this shard are lost");
        }
    }

    /// End of input: every conversation ends; the last alerts and figures go out.
    fn finish(&mut self, watermark_ms: u64) {
        let now_ms = self.watermark_ms.max(watermark_ms);
        self.shard.finish(now_ms, &mut self.alerts);
        self.send_alerts();
        self.publish();
        self.save_rules_state(true);
    }

    fn publish(&mut self) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report.counters = self.shard.counters();
        report.rule_state_dropped = self.shard.rule_state_dropped();
        report.now_ms = self.shard.now_ms();
        let _ = report.receive_to_table.add(&self.latency);
        self.latency.reset();
    }
}

/// A shard's thread: runs batches until every worker has hung up, then ends event time.
fn run_shard(mut runner: ShardRunner, batches: Receiver<Batch>) {
    let mut last_publish = Instant::now();
    loop {
        let received = batches.recv_timeout(PUBLISH_EVERY);
        // A reload applies to every record that arrives after it.
        runner.refresh_intel();
        match received {
            Ok(batch) => runner.run(
                batch.worker,
                &batch.records,
                batch.watermark_ms,
                batch.received_ns,
                batch.datagrams,
            ),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                runner.finish(0);
                return;
            }
        }
        runner.send_alerts();
        runner.save_rules_state(false);
        if last_publish.elapsed() >= PUBLISH_EVERY {
            runner.publish();
            last_publish = Instant::now();
        }
    }
}

/// The metrics snapshot, assembled from what the threads published.
fn snapshot(
    workers: &[Arc<Mutex<WorkerReport>>],
    shards: &[Arc<Mutex<ShardReport>>],
    alert_latency: &Histogram<u64>,
    queue_dropped_records: u64,
) -> Snapshot {
    let mut snapshot = Snapshot {
        alert_latency: Latency::of(alert_latency),
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
    let mut dropped = Vec::new();
    for shard in shards {
        let report = shard.lock().unwrap_or_else(|e| e.into_inner());
        snapshot.pipeline.merge(&report.counters);
        snapshot.event_time_ms = snapshot.event_time_ms.max(report.now_ms);
        let _ = receive_to_table.add(&report.receive_to_table);
        dropped.push(report.rule_state_dropped.clone());
    }
    snapshot.rule_state_dropped = sum_state_dropped(dropped.iter().map(Vec::as_slice));
    snapshot.receive_to_table = Latency::of(&receive_to_table);
    snapshot
}

fn deliver(
    alerts: Vec<Alert>,
    sink: &mut AlertSink,
    telemetry: &Telemetry,
    latency: &mut Histogram<u64>,
) {
    let now = now_ns();
    for alert in alerts {
        latency.saturating_record(now.saturating_sub(alert.raised_ns) / 1000);
        match sink.send(alert) {
            Ok(true) => telemetry.sink.alerts.fetch_add(1, Ordering::Relaxed),
            // Dropped at the sink's full queue: counted there, not written.
            Ok(false) => 0,
            Err(_) => telemetry.sink.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Microseconds from 1 to 10 minutes, three significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

/// Worker 0 keeps `state_file` itself; worker N its own `state_file.N`.
fn state_path(path: &Path, worker: usize) -> PathBuf {
    if worker == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{worker}"));
    PathBuf::from(name)
}

/// Loads every worker's saved templates: after a restart the kernel may hand an exporter
/// to another worker than before. A file that cannot be read is moved aside to
/// `PATH.corrupt` (so the next save does not overwrite what an operator may want to look
/// at), logged and counted; the daemon starts without it.
fn restore_state(ingest: &mut Ingest, path: &Path, workers: usize, faults: &FaultCounters) {
    for worker in 0..workers {
        let path = state_path(path, worker);
        if worker > 0 && !path.exists() {
            continue;
        }
        match ingest.decoder().load_state(&path) {
            Ok(restored) => {
                info!(templates = restored, path = %path.display(), "restored decoder state")
            }
            Err(error) => {
                faults.state_load_failures.fetch_add(1, Ordering::Relaxed);
                let mut aside = path.as_os_str().to_owned();
                aside.push(".corrupt");
                let aside = PathBuf::from(aside);
                match std::fs::rename(&path, &aside) {
                    Ok(()) => warn!(
                        "{error:#}; starting without saved templates, the file is kept as '{}'",
                        aside.display()
                    ),
                    // The directory refuses the rename: it refuses the atomic save too.
                    Err(rename) => warn!(
                        "{error:#}; starting without saved templates (cannot keep the file as \
                         '{}': {rename})",
                        aside.display()
                    ),
                }
            }
        }
    }
}

/// Gives shard `index` of `shards` the hosts it owns from every rules state file beside
/// `path` (whatever the sharding that wrote them).
fn restore_rules_state(shard: &mut Shard, path: &Path, index: usize, shards: usize) {
    for file in crate::detect::state::rules_state_paths(path) {
        match shard.load_rules_state(&file, index, shards) {
            Ok(restored) => {
                info!(entries = restored, shard = index, path = %file.display(), "restored rules state")
            }
            Err(error) => warn!("{error:#}; this shard starts without it"),
        }
    }
}

fn save_state(ingest: &mut Ingest, path: &Path) {
    if let Err(error) = ingest.decoder().save_state(path) {
        warn!("{error:#}");
    }
}

fn reload_threat_intel(config: &Config, intel: &ThreatIntel, faults: &FaultCounters) {
    let Some(path) = &config.threat_intel_file else {
        return;
    };
    match crate::enrich::load_threat_intel(path) {
        Ok(networks) => {
            let ranges = networks.range_count();
            *intel.networks.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(networks);
            intel.generation.fetch_add(1, Ordering::Release);
            info!(ranges, path = %path.display(), "reloaded threat intel");
        }
        Err(error) => {
            faults
                .threat_intel_reload_failures
                .fetch_add(1, Ordering::Relaxed);
            warn!("{error:#}; keeping the previous threat intel");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            inside: vec!["10.0.0.0/8".parse().unwrap()],
            ..Config::default()
        }
    }

    /// With two receive workers, a spoofer the kernel puts alone on one worker (its ticks
    /// 500 s ahead) does not move the shard's table clock past the other worker's; once the
    /// other worker's exporters fall silent, the spoofer's worker alone holds it.
    #[test]
    fn a_shard_fed_by_two_workers_ticks_on_the_slowest() {
        let config = config();
        let shard = Shard::new(&config, config.enricher().unwrap(), 1);
        let (alerts, _alerts_rx) = mpsc::sync_channel(16);
        let report = Arc::new(Mutex::new(ShardReport::default()));
        let mut runner = ShardRunner::new(shard, alerts, Arc::default(), report);
        runner.worker_clocks = Some(WorkerClocks::new(2));
        const T: u64 = 1_710_230_400_000;
        let at = |ms: u64| ms * 1_000_000;
        let tick = |now_ms| [Routed::Tick { now_ms }];
        runner.run(0, &tick(T), T, at(T), 1);
        runner.run(1, &tick(T + 500_000), T + 500_000, at(T), 1);
        assert_eq!(runner.shard.now_ms(), T);
        runner.run(0, &tick(T + 60_000), T + 60_000, at(T + 60_000), 1);
        runner.run(1, &tick(T + 560_000), T + 560_000, at(T + 60_000), 1);
        assert_eq!(runner.shard.now_ms(), T + 60_000);
        let silent = T + 60_000 + crate::flow::clock::SILENT_AFTER_MS + 1;
        runner.run(1, &tick(T + 600_000), T + 600_000, at(silent), 1);
        assert_eq!(runner.shard.now_ms(), T + 600_000);
        // One worker, as the daemon runs by default: its ticks go straight through.
        runner.worker_clocks = None;
        runner.run(0, &tick(T + 700_000), T + 700_000, at(silent), 1);
        assert_eq!(runner.shard.now_ms(), T + 700_000);
    }

    /// A full shard queue never blocks the receive worker: the batch is dropped and its
    /// records counted; the next hand-over, with room again, goes through.
    #[test]
    fn a_full_queue_drops_the_batch_and_counts_its_records() {
        let config = config();
        let mut ingest = Ingest::new(&config, config.enricher().unwrap(), 1);
        let records = crate::synth::background_records(40, 1, 1_710_230_400_000);
        let (queue, batches) = mpsc::sync_channel::<Batch>(1);
        let dropped = AtomicU64::new(0);
        let pending = || Pending {
            oldest_ns: 1,
            datagrams: 1,
        };
        let queues = [queue];
        ingest.push_records(&records[..20]);
        let first_batch = ingest.batches()[0].len();
        hand_over(0, &mut ingest, &queues, pending(), &dropped);
        assert_eq!(dropped.load(Ordering::Relaxed), 0, "the queue had room");
        ingest.push_records(&records[20..]);
        let second_batch = ingest.batches()[0].len() as u64;
        assert!(second_batch > 0);
        hand_over(0, &mut ingest, &queues, pending(), &dropped);
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            second_batch,
            "the queue was full"
        );
        assert!(ingest.batches()[0].is_empty(), "nothing is kept to grow");
        assert_eq!(batches.try_recv().unwrap().records.len(), first_batch);
        assert!(batches.try_recv().is_err());
        ingest.push_records(&records[..20]);
        hand_over(0, &mut ingest, &queues, pending(), &dropped);
        assert_eq!(batches.try_recv().unwrap().records.len(), first_batch);
    }

    /// As mini-redis's server: the caller binds (port 0 here, so no port is guessed),
    /// learns the ports, runs the daemon on a thread with a shutdown flag of its own, and
    /// stops it. A datagram sent to the learnt port is counted on the learnt metrics port.
    #[test]
    fn runs_on_sockets_the_caller_bound_until_told_to_stop() {
        use std::io::{Read, Write};
        let config = Config::from_toml(
            "inside = [\"10.0.0.0/8\"]\nlisten = [\"127.0.0.1:0\"]\n\
             metrics_listen = \"127.0.0.1:0\"\n[sink]\nfile = \"/dev/null\"\n",
            "test",
        )
        .unwrap();
        let sockets = BoundSockets::bind(&config).unwrap();
        let udp = sockets.listen_addresses()[0];
        let metrics = sockets.metrics_address().unwrap();
        assert_ne!(udp.port(), 0);
        assert_ne!(metrics.port(), 0);
        let control = Control::default();
        let daemon = {
            let control = control.clone();
            std::thread::spawn(move || run(&config, sockets, control))
        };
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"not netflow", udp).unwrap();
        let counted = format!("exflow_source_datagrams_total{{listen=\"{udp}\"}} 1\n");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut stream = std::net::TcpStream::connect(metrics).unwrap();
            stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            if text.contains(&counted) {
                break;
            }
            assert!(Instant::now() < deadline, "never counted: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
        control.shutdown.store(true, Ordering::Relaxed);
        daemon.join().unwrap().unwrap();
    }

    #[test]
    fn each_worker_keeps_its_own_state_file() {
        let path = Path::new("/var/lib/exflow/state.json");
        assert_eq!(state_path(path, 0), path);
        assert_eq!(
            state_path(path, 2),
            Path::new("/var/lib/exflow/state.json.2")
        );
    }
}
