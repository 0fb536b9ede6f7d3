//! daemon: `exflow run`. The CLI binds the sockets first ([`BoundSockets`]: UDP, one lock
//! per port, metrics) and hands them to [`run`]. Receive workers (`source.workers`) each
//! own a socket per listen address and a decoder. The table is split by inside host over
//! `flow.shards` shard threads (one by default); the workers hand them records in batches
//! through bounded queues, and a full queue drops the batch and counts it. With
//! `flow.shards = 0` the one worker runs the table and the rules itself, straight after
//! decoding (no hand-over, for a one-core machine). Each shard hands its alerts straight to the
//! sink (its bounded queue or its file). The main thread supervises: it publishes the
//! metrics, takes up threat-intel reloads and waits for the threads to end. On SIGTERM the
//! daemon drains in order: the workers take what the sockets still hold and stop, the
//! shards run what is queued and end event time (every conversation ends) and hand over
//! their last alerts, the sink flushes, template state is saved.

mod receive;
mod report;
mod shard;
mod sockets;
mod state;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use self::receive::{Batch, Pending, QueueWait, ReceiveWorker, Tables};
use self::report::{ShardReport, WorkerReport, snapshot};
use self::shard::{RulesState, ShardRunner, ThreatIntel, reload_threat_intel, run_shard};
pub use self::sockets::{BoundSockets, SocketParts};
use self::state::{restore_rules_state, restore_state, save_state, state_path};
use crate::config::Config;
use crate::decode::directory::InterfaceDirectory;
use crate::enrich::Enricher;
use crate::flow::clock::WorkerClocks;
use crate::pipeline::{Ingest, Shard};
use crate::sink::{AlertSender, AlertSink};
use crate::source::udp::{Listener, Sockets, SourceCounters};
use crate::telemetry::{MetricsServer, Telemetry};

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
    let metrics_server = MetricsServer::spawn(metrics, telemetry.clone())?;
    let enricher = config.enricher()?;
    let sink = AlertSink::from_config(&config.sink)?;
    if let AlertSink::Kafka(kafka) = &sink {
        let _ = telemetry.kafka.set(kafka.counters.clone());
    }
    let workers = listeners.len();
    // The interface names every worker's decoder learns, for the shards' alerts.
    let interface_names = InterfaceDirectory::default();
    let ingests = ingests(config, &enricher, workers, &telemetry, &interface_names)?;
    let intel = Arc::new(ThreatIntel::default());
    let (mut runners, shard_reports) = shard_runners(
        config,
        &enricher,
        workers,
        &intel,
        &sink.sender(telemetry.sink.clone()),
        &interface_names,
    );

    // Every thread holds a clone of `running` (nothing is ever sent on it): the channel
    // closes when the last thread has ended, which is the end of the drain.
    let (running, all_ended) = mpsc::channel::<Infallible>();
    // Shards first: the workers need their queues.
    let (queues, shard_threads) = if config.flow.shards > 0 {
        spawn_shards(std::mem::take(&mut runners), config, &running)?
    } else {
        (Vec::new(), Vec::new())
    };
    let queue_dropped = Arc::new(AtomicU64::new(0));
    let (worker_threads, worker_reports) = spawn_workers(
        config,
        ingests.into_iter().zip(listeners),
        runners,
        &queues,
        &queue_dropped,
        &control,
        &running,
    )?;
    drop((queues, running));

    // The main thread supervises: metrics, reloads, until every thread has ended.
    let publish = || {
        telemetry.publish(snapshot(
            &worker_reports,
            &shard_reports,
            queue_dropped.load(Ordering::Relaxed),
        ));
    };
    supervise(&all_ended, || {
        if control.reload.swap(false, Ordering::Relaxed) {
            reload_threat_intel(config, &intel, &telemetry.faults);
        }
        publish();
    });
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
    publish();
    metrics_server.stop();
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

/// The shards' queues (their senders) and threads.
type ShardThreads = (Vec<mpsc::SyncSender<Batch>>, Vec<JoinHandle<()>>);

/// The receive workers' threads (each returns its ingest) and their reports.
type WorkerThreads = (Vec<JoinHandle<Ingest>>, Vec<Arc<Mutex<WorkerReport>>>);

/// One thread per shard runner (`exflow-shard-N`), each fed by a bounded queue of
/// `flow.queue_batches` batches; returns the queues' senders and the threads.
fn spawn_shards(
    runners: Vec<ShardRunner>,
    config: &Config,
    running: &mpsc::Sender<Infallible>,
) -> std::io::Result<ShardThreads> {
    let mut queues = Vec::new();
    let mut threads = Vec::new();
    for (index, runner) in runners.into_iter().enumerate() {
        let (tx, rx) = mpsc::sync_channel::<Batch>(config.flow.queue_batches.max(1));
        let running = running.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("exflow-shard-{index}"))
                .spawn(move || {
                    run_shard(runner, rx);
                    drop(running);
                })?,
        );
        queues.push(tx);
    }
    Ok((queues, threads))
}

/// One thread per receive worker (`exflow-receive-N`), each with its ingest and its
/// sockets; a worker runs the tables inline when a shard runner is left for it (one worker,
/// `flow.shards = 0`), else hands batches to the shards' `queues`. Returns the threads
/// (each ends with its ingest, for the state file) and their reports.
fn spawn_workers(
    config: &Config,
    workers: impl Iterator<Item = (Ingest, Vec<(Listener, Arc<SourceCounters>)>)>,
    mut runners: Vec<ShardRunner>,
    queues: &[mpsc::SyncSender<Batch>],
    queue_dropped: &Arc<AtomicU64>,
    control: &Control,
    running: &mpsc::Sender<Infallible>,
) -> std::io::Result<WorkerThreads> {
    let mut threads = Vec::new();
    let mut reports = Vec::new();
    let gather_max = Duration::from_micros(config.source.gather_max_us);
    for (index, (ingest, listeners)) in workers.enumerate() {
        let report = Arc::new(Mutex::new(WorkerReport::default()));
        let tables = match runners.pop() {
            // Validation allows the inline tables with one worker only.
            Some(runner) => Tables::Inline(Box::new(runner)),
            None => Tables::Queued(queues.to_vec()),
        };
        let worker = ReceiveWorker {
            index,
            ingest,
            tables,
            pending: Pending::default(),
            queue_dropped: queue_dropped.clone(),
            queue_wait: QueueWait::new(Duration::from_millis(config.flow.queue_wait_ms)),
            report: report.clone(),
            shutdown: control.shutdown.clone(),
            state: config
                .state_file
                .as_deref()
                .map(|path| (state_path(path, index), config.source.state_save_interval_s)),
        };
        let running = running.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("exflow-receive-{index}"))
                // The receive slots are raw buffers the kernel fills: made on their thread.
                .spawn(move || {
                    let ingest = worker.run(Sockets::new(listeners, gather_max));
                    drop(running);
                    ingest
                })?,
        );
        reports.push(report);
    }
    Ok((threads, reports))
}

/// Calls `every_round` every [`PUBLISH_EVERY`] until every holder of the channel's
/// sender has dropped it, and once more then.
fn supervise(all_ended: &mpsc::Receiver<Infallible>, mut every_round: impl FnMut()) {
    loop {
        let ended = match all_ended.recv_timeout(PUBLISH_EVERY) {
            Ok(never) => match never {},
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        every_round();
        if ended {
            return;
        }
    }
}

/// Each receive worker's decoder, with the templates saved by any worker restored and
/// the flows stream tapped when it is on.
fn ingests(
    config: &Config,
    enricher: &Enricher,
    workers: usize,
    telemetry: &Telemetry,
    interface_names: &InterfaceDirectory,
) -> anyhow::Result<Vec<Ingest>> {
    let flows_counters = Arc::new(crate::sink::flows::FlowsCounters::default());
    let mut ingests = Vec::with_capacity(workers);
    for worker in 0..workers {
        let mut ingest = Ingest::new(config, enricher.clone(), config.flow.shards.max(1));
        if let Some(path) = &config.state_file {
            restore_state(&mut ingest, path, workers, &telemetry.faults);
        }
        ingest.share_interface_names(interface_names.clone());
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
    Ok(ingests)
}

/// One runner per shard (`flow.shards`, or the one inline table), each with the rules
/// state it owns restored, its own handle on the sink and the report it publishes to.
fn shard_runners(
    config: &Config,
    enricher: &Enricher,
    workers: usize,
    intel: &Arc<ThreatIntel>,
    sink: &AlertSender,
    interface_names: &InterfaceDirectory,
) -> (Vec<ShardRunner>, Vec<Arc<Mutex<ShardReport>>>) {
    let threaded = config.flow.shards > 0;
    let shard_count = config.flow.shards.max(1);
    let mut reports = Vec::with_capacity(shard_count);
    let mut runners = Vec::with_capacity(shard_count);
    for index in 0..shard_count {
        let report = Arc::new(Mutex::new(ShardReport::default()));
        let mut shard = Shard::new(config, enricher.clone(), shard_count);
        shard.name_interfaces_from(interface_names.clone());
        let rules_state = config.state_file.as_deref().map(|path| {
            restore_rules_state(&mut shard, path, index, shard_count);
            RulesState {
                path: crate::detect::state::rules_state_path(path, index),
                every: Duration::from_secs(config.source.state_save_interval_s),
                last: Instant::now(),
            }
        });
        let mut runner = ShardRunner::new(shard, sink.clone(), intel.clone(), report.clone());
        runner.rules_state = rules_state;
        runner.worker_clocks = (threaded && workers > 1).then(|| WorkerClocks::new(workers));
        runners.push(runner);
        reports.push(report);
    }
    (runners, reports)
}

/// The configuration the daemon's unit tests run with: inside is 10.0.0.0/8.
#[cfg(test)]
fn test_config() -> Config {
    Config {
        inside: vec!["10.0.0.0/8".parse().unwrap()],
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
