//! daemon::shard: a flow-table shard in the daemon, on its own thread or inline in the one
//! receive worker: runs the records it is handed, ticks on the slowest worker's clock,
//! follows threat-intel reloads, sends its alerts on and saves the rules' learned state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tracing::{info, warn};

use super::PUBLISH_EVERY;
use super::receive::Batch;
use super::report::{ShardReport, latency_histogram};
use crate::config::Config;
use crate::detect::Alert;
use crate::enrich::NetSet;
use crate::flow::clock::WorkerClocks;
use crate::pipeline::{Routed, Shard};
use crate::sink::AlertSender;
use crate::telemetry::FaultCounters;
use crate::time::wall_clock_ns as now_ns;

/// The threat-intel networks as last (re)loaded, with a generation the shards compare
/// with theirs so a reload costs them one atomic load per wake-up.
#[derive(Default)]
pub(super) struct ThreatIntel {
    generation: AtomicU64,
    networks: Mutex<Arc<NetSet>>,
}

/// A shard with what surrounds it in the daemon: where its alerts go, the threat intel it
/// follows, the figures it publishes.
pub(super) struct ShardRunner {
    shard: Shard,
    /// Alerts raised and not yet handed to the sink.
    alerts: Vec<Alert>,
    /// The sink's queue (or file), straight from this shard.
    sink: AlertSender,
    intel: Arc<ThreatIntel>,
    intel_generation: u64,
    report: Arc<Mutex<ShardReport>>,
    /// Datagram received -> its records in the table, microseconds, since the last publish.
    latency: Histogram<u64>,
    /// Alert raised -> handed to the sink, microseconds, since the last publish.
    alert_latency: Histogram<u64>,
    /// The latest event time the workers reported, for the end of input.
    watermark_ms: u64,
    /// Where and how often the rules' learned state (the host profiles) is saved.
    pub(super) rules_state: Option<RulesState>,
    /// With several receive workers, the table clock they tick this shard on (the
    /// slowest heard recently, as `flow::clock::WorkerClocks` says); `None` with one.
    pub(super) worker_clocks: Option<WorkerClocks>,
}

/// A shard's rules state file and when it was last written (wall clock).
pub(super) struct RulesState {
    pub(super) path: PathBuf,
    pub(super) every: Duration,
    pub(super) last: Instant,
}

impl ShardRunner {
    pub(super) fn new(
        shard: Shard,
        sink: AlertSender,
        intel: Arc<ThreatIntel>,
        report: Arc<Mutex<ShardReport>>,
    ) -> ShardRunner {
        ShardRunner {
            shard,
            alerts: Vec::new(),
            sink,
            intel,
            intel_generation: 0,
            report,
            latency: latency_histogram(),
            alert_latency: latency_histogram(),
            watermark_ms: 0,
            rules_state: None,
            worker_clocks: None,
        }
    }

    /// Saves the rules' state when it is due (or, with `now`, at once).
    pub(super) fn save_rules_state(&mut self, now: bool) {
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
    pub(super) fn run(
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
    pub(super) fn refresh_intel(&mut self) {
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

    /// Hands the alerts raised so far to the sink (never waiting for Kafka: a full queue
    /// drops them, counted by the sink).
    pub(super) fn send_alerts(&mut self) {
        if self.alerts.is_empty() {
            return;
        }
        let now = now_ns();
        for alert in &self.alerts {
            self.alert_latency
                .saturating_record(now.saturating_sub(alert.raised_ns) / 1000);
        }
        self.sink.send(self.alerts.drain(..));
    }

    /// End of input: every conversation ends; the last alerts and figures go out.
    pub(super) fn finish(&mut self, watermark_ms: u64) {
        let now_ms = self.watermark_ms.max(watermark_ms);
        self.shard.finish(now_ms, &mut self.alerts);
        self.send_alerts();
        self.publish();
        self.save_rules_state(true);
    }

    pub(super) fn publish(&mut self) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report.counters = self.shard.counters();
        report.rule_state_dropped = self.shard.rule_state_dropped();
        report.now_ms = self.shard.now_ms();
        let _ = report.receive_to_table.add(&self.latency);
        self.latency.reset();
        let _ = report.alert_latency.add(&self.alert_latency);
        self.alert_latency.reset();
    }
}

/// A shard's thread: runs batches until every worker has hung up, then ends event time.
pub(super) fn run_shard(mut runner: ShardRunner, batches: Receiver<Batch>) {
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

pub(super) fn reload_threat_intel(config: &Config, intel: &ThreatIntel, faults: &FaultCounters) {
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
    use crate::daemon::test_config as config;
    use crate::sink::AlertSink;

    /// With two receive workers, a spoofer the kernel puts alone on one worker (its ticks
    /// 500 s ahead) does not move the shard's table clock past the other worker's; once the
    /// other worker's exporters fall silent, the spoofer's worker alone holds it.
    #[test]
    fn a_shard_fed_by_two_workers_ticks_on_the_slowest() {
        let config = config();
        let shard = Shard::new(&config, config.enricher().unwrap(), 1);
        let sink = AlertSink::from_config(&crate::sink::SinkConfig {
            file: Some("/dev/null".into()),
            kafka: None,
        })
        .unwrap();
        let report = Arc::new(Mutex::new(ShardReport::default()));
        let mut runner =
            ShardRunner::new(shard, sink.sender(Arc::default()), Arc::default(), report);
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
}
