//! daemon::receive: a receive worker's thread: polls its sockets, decodes, and either runs
//! the table and the rules itself (`flow.shards = 0`) or hands the shards their records in
//! batches through bounded queues (a queue that stays full drops the batch, counted).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use super::PUBLISH_EVERY;
use super::report::WorkerReport;
use super::shard::ShardRunner;
use super::state::save_state;
use crate::pipeline::{Ingest, Routed};
use crate::source::udp::Sockets;

/// Records (and ticks) routed to one shard by one receive worker, with what the shard
/// needs for the end of event time and its latency figures.
pub(super) struct Batch {
    pub(super) records: Vec<Routed>,
    /// The receive worker that sent it.
    pub(super) worker: usize,
    /// Event time as far as the worker knows (all shards' records), ms.
    pub(super) watermark_ms: u64,
    /// When the oldest of the batch's datagrams was received (wall clock, ns).
    pub(super) received_ns: u64,
    /// Datagrams that contributed records.
    pub(super) datagrams: u64,
}

/// Datagrams received since the last hand-over, for the latency figures.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) oldest_ns: u64,
    pub(super) datagrams: u64,
}

/// Where a receive worker's records go.
pub(super) enum Tables {
    /// The worker runs the table and the rules itself, datagram by datagram.
    Inline(Box<ShardRunner>),
    /// Shard threads, fed through bounded queues.
    Queued(Vec<SyncSender<Batch>>),
}

/// A receive worker: its decoder (with a batch in the making per shard) and the tables.
pub(super) struct ReceiveWorker {
    /// Its index among the receive workers.
    pub(super) index: usize,
    pub(super) ingest: Ingest,
    pub(super) tables: Tables,
    pub(super) pending: Pending,
    pub(super) queue_dropped: Arc<AtomicU64>,
    pub(super) queue_wait: QueueWait,
    pub(super) report: Arc<Mutex<WorkerReport>>,
    pub(super) shutdown: Arc<AtomicBool>,
    /// Where and how often (s) this worker saves its templates.
    pub(super) state: Option<(PathBuf, u64)>,
}

impl ReceiveWorker {
    /// Receives until shutdown, then takes what the sockets still hold; returns the ingest
    /// so its template state can be saved.
    pub(super) fn run(mut self, mut sockets: Sockets) -> Ingest {
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
                &mut self.queue_wait,
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

/// Sends each shard its batch, waiting for room in a full queue while `wait` allows; a
/// queue still full drops the batch, counted.
fn hand_over(
    worker: usize,
    ingest: &mut Ingest,
    queues: &[SyncSender<Batch>],
    pending: Pending,
    wait: &mut QueueWait,
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
        if let Err(batch) = wait.send(queue, batch) {
            let records = batch.records.iter();
            let dropped = records.filter(|r| matches!(r, Routed::Record { .. }));
            queue_dropped.fetch_add(dropped.count() as u64, Ordering::Relaxed);
        }
    }
}

/// How long a receive worker may still wait for room in full shard queues: at most `max`,
/// earned back at a tenth of the time passing (`flow.queue_wait_ms`). Meanwhile the socket
/// buffer holds the datagrams that arrive, so a burst the shards catch up with is not
/// lost; a shard that stays behind costs the worker at most a tenth of its time, and then
/// its batches are dropped.
pub(super) struct QueueWait {
    max: Duration,
    left: Duration,
    /// When `left` was last brought up to date.
    since: Instant,
}

/// How often a waiting worker tries a full queue again.
const QUEUE_POLL: Duration = Duration::from_micros(50);

impl QueueWait {
    pub(super) fn new(max: Duration) -> QueueWait {
        QueueWait {
            max,
            left: max,
            since: Instant::now(),
        }
    }

    /// Queues `batch`, waiting for room while the allowance lasts; gives it back if the
    /// queue stays full or its shard is gone.
    fn send(&mut self, queue: &SyncSender<Batch>, batch: Batch) -> Result<(), Batch> {
        let mut batch = match queue.try_send(batch) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(batch)) => batch,
            Err(TrySendError::Disconnected(batch)) => return Err(batch),
        };
        let start = Instant::now();
        self.earn(start);
        let deadline = start + self.left;
        let sent = loop {
            if Instant::now() >= deadline {
                break Err(batch);
            }
            std::thread::sleep(QUEUE_POLL);
            match queue.try_send(batch) {
                Ok(()) => break Ok(()),
                Err(TrySendError::Full(again)) => batch = again,
                Err(TrySendError::Disconnected(batch)) => break Err(batch),
            }
        };
        self.left = self.left.saturating_sub(start.elapsed());
        sent
    }

    /// Brings the allowance up to `now`: a tenth of the time passed, `max` at most.
    fn earn(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.since) / 10;
        self.left = (self.left + earned).min(self.max);
        self.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::test_config as config;
    use std::sync::mpsc;

    /// A receive worker's ingest and 40 records for it.
    fn ingest_and_records() -> (Ingest, Vec<crate::decode::FlowRecord>) {
        let config = config();
        let ingest = Ingest::new(&config, config.enricher().unwrap(), 1);
        (
            ingest,
            crate::synth::background_records(40, 1, 1_710_230_400_000),
        )
    }

    /// Decodes `records` into the one shard's batch and hands it over; returns its length.
    fn hand_over_records(
        ingest: &mut Ingest,
        queue: &SyncSender<Batch>,
        records: &[crate::decode::FlowRecord],
        wait: &mut QueueWait,
        dropped: &AtomicU64,
    ) -> usize {
        ingest.push_records(records);
        let len = ingest.batches()[0].len();
        let pending = Pending {
            oldest_ns: 1,
            datagrams: 1,
        };
        hand_over(
            0,
            ingest,
            std::slice::from_ref(queue),
            pending,
            wait,
            dropped,
        );
        len
    }

    /// A shard queue that stays full does not hold the receive worker beyond its
    /// allowance (none here): the batch is dropped and its records counted; the next
    /// hand-over, with room again, goes through.
    #[test]
    fn a_full_queue_drops_the_batch_and_counts_its_records() {
        let (mut ingest, records) = ingest_and_records();
        let (queue, batches) = mpsc::sync_channel::<Batch>(1);
        let dropped = AtomicU64::new(0);
        let mut no_wait = QueueWait::new(Duration::ZERO);
        let mut hand = |ingest: &mut Ingest, records| {
            hand_over_records(ingest, &queue, records, &mut no_wait, &dropped)
        };
        let first_batch = hand(&mut ingest, &records[..20]);
        assert_eq!(dropped.load(Ordering::Relaxed), 0, "the queue had room");
        let second_batch = hand(&mut ingest, &records[20..]) as u64;
        assert!(second_batch > 0);
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            second_batch,
            "the queue was full"
        );
        assert!(ingest.batches()[0].is_empty(), "nothing is kept to grow");
        assert_eq!(batches.try_recv().unwrap().records.len(), first_batch);
        assert!(batches.try_recv().is_err());
        hand(&mut ingest, &records[..20]);
        assert_eq!(batches.try_recv().unwrap().records.len(), first_batch);
    }

    /// A full queue whose shard takes a batch within the allowance loses nothing: the
    /// worker waits for the room, whichever comes first.
    #[test]
    fn a_full_queue_that_drains_within_the_allowance_drops_nothing() {
        let (mut ingest, records) = ingest_and_records();
        let (queue, batches) = mpsc::sync_channel::<Batch>(1);
        let dropped = AtomicU64::new(0);
        let mut wait = QueueWait::new(Duration::from_secs(60));
        let first = hand_over_records(&mut ingest, &queue, &records[..20], &mut wait, &dropped);
        // The shard takes its two batches on a thread of its own; the second hand-over
        // finds the queue full unless the first batch was already taken.
        let shard = std::thread::spawn(move || {
            let a = batches.recv().unwrap().records.len();
            let b = batches.recv().unwrap().records.len();
            (a, b)
        });
        let second = hand_over_records(&mut ingest, &queue, &records[20..], &mut wait, &dropped);
        assert_eq!(shard.join().unwrap(), (first, second));
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }

    /// Waiting spends the allowance, and time passing earns it back at a tenth, up to the
    /// most it may be.
    #[test]
    fn the_allowance_is_spent_by_waiting_and_earned_back_by_time() {
        let (queue, _batches) = mpsc::sync_channel::<Batch>(1);
        let batch = || Batch {
            records: Vec::new(),
            worker: 0,
            watermark_ms: 0,
            received_ns: 0,
            datagrams: 0,
        };
        let max = Duration::from_millis(50);
        let mut wait = QueueWait::new(max);
        assert!(wait.send(&queue, batch()).is_ok(), "room");
        assert!(
            wait.send(&queue, batch()).is_err(),
            "full until the allowance ran out"
        );
        assert!(wait.left < max / 2, "spent: {:?}", wait.left);
        wait.left = Duration::ZERO;
        let since = wait.since;
        wait.earn(since + Duration::from_millis(100));
        assert_eq!(wait.left, Duration::from_millis(10));
        wait.earn(since + Duration::from_secs(3600));
        assert_eq!(wait.left, max);
    }
}
