//! flow::clock: event time that no sender can corrupt. Each exporter has a clock of its own
//! (the latest flow end of its records); every record is judged on its exporter's clock and
//! its datagram's receive time before it reaches a table: one from the future (more than
//! `flow.max_clock_skew_s` after it was received) or too late (ended more than
//! `flow.max_lateness_s` before its exporter's clock) is counted and dropped. The shared
//! tables expire and tick on a clock of their own, the slowest exporter heard recently, so
//! that no single exporter can push it.
//!
//! The table clock is the minimum of the clocks of the exporters heard within the last
//! [`SILENT_AFTER_MS`] of receive time, and it never goes back. An exporter dated in the
//! future therefore cannot move the tables: the minimum ignores it (and it cannot be more
//! than the skew ahead of its receive time anyway). One dated in the past, or simply slow,
//! holds expiry and the rules' window sliding back while it keeps sending (the rules still
//! judge every record on its own exporter's clock, and full tables still evict); an
//! exporter that falls silent times out of the minimum. With one exporter the table clock
//! is that exporter's clock. The one exporter a minimum cannot outvote is the first one
//! heard: it sets the clock until another exporter comes, at most the skew ahead of the
//! wall clock.
//!
//! Everything is a function of the records and their receive times, in order: a replay
//! (receive time = capture time) is deterministic, and the clock is computed before the
//! records are sharded, so the sharding changes nothing.

use std::net::IpAddr;

use foldhash::HashMap;

/// An exporter that has sent nothing for this long (receive time) no longer holds the
/// table clock back.
pub const SILENT_AFTER_MS: u64 = 600_000;

/// How often (receive time) a table clock held back by an exporter looks again whether
/// that exporter fell silent.
const RECHECK_MS: u64 = 1_000;

/// Up to this many exporters, the table clock is brought up to date on every record;
/// beyond, only when it may cross a tick.
const EXACT_UP_TO: usize = 16;

/// Records sent before an exporter is trusted not to be a one-off (spoofed) source when
/// clocks must be forgotten to make room.
const PROVEN_RECORDS: u64 = 16;

/// What the clock dropped, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockCounters {
    /// Records dated more than the skew after they were received
    /// (`exflow_flow_clock_skewed_records_total`).
    pub skewed: u64,
    /// Records that ended more than the lateness before their exporter's clock
    /// (`exflow_flow_late_dropped_records_total`).
    pub late: u64,
    /// Exporter clocks forgotten to make room (`exflow_flow_clock_exporters_evicted_total`).
    pub evicted: u64,
}

impl ClockCounters {
    pub fn merge(&mut self, other: &ClockCounters) {
        self.skewed += other.skewed;
        self.late += other.late;
        self.evicted += other.evicted;
    }
}

/// Why a record was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Dated too far after its receive time.
    Future,
    /// Too far behind its exporter's clock.
    Late,
}

#[derive(Debug, Clone, Copy)]
struct ExporterClock {
    address: IpAddr,
    /// The latest flow end of its accepted records, ms.
    now_ms: u64,
    /// The latest receive time of its records, ms.
    heard_ms: u64,
    records: u64,
}

/// The exporters' clocks and the table clock of one ingest.
#[derive(Debug)]
pub struct EventClock {
    exporters: Vec<ExporterClock>,
    /// Each exporter's position in `exporters`.
    positions: HashMap<IpAddr, u32>,
    /// The position of the last record's exporter: a datagram's records are one
    /// exporter's, and are not looked up one by one.
    last: usize,
    max_exporters: usize,
    lateness_ms: u64,
    skew_ms: u64,
    /// The latest receive time seen, ms.
    received_ms: u64,
    /// The tables' event time, ms (0 before the first record).
    table_ms: u64,
    /// When (receive time) to look again at a table clock held back below `wanted_ms`.
    recheck_ms: Option<u64>,
    pub counters: ClockCounters,
}

impl EventClock {
    /// Clocks for at most `max_exporters` exporters.
    pub fn new(max_exporters: usize, max_lateness_s: u64, max_clock_skew_s: u64) -> EventClock {
        EventClock {
            exporters: Vec::new(),
            positions: HashMap::default(),
            last: usize::MAX,
            max_exporters: max_exporters.clamp(1, u32::MAX as usize),
            lateness_ms: max_lateness_s.saturating_mul(1000),
            skew_ms: max_clock_skew_s.saturating_mul(1000),
            received_ms: 0,
            table_ms: 0,
            recheck_ms: None,
            counters: ClockCounters::default(),
        }
    }

    /// The tables' event time, ms. With more than [`EXACT_UP_TO`] exporters it is brought
    /// up to date only when it may cross the next tick boundary: between those it may lag
    /// by less than a tick.
    pub fn table_ms(&self) -> u64 {
        self.table_ms
    }

    /// Judges a record of `exporter` that started at `start_ms` and ended at `end_ms`,
    /// received at `received_ms` (0: unknown, as for records made by hand). Accepted, it
    /// moves its exporter's clock and gives that clock; `tick_ms` is the next tick
    /// boundary of the table clock, which is looked at again only when this record may
    /// have moved it past.
    pub fn accept(
        &mut self,
        exporter: IpAddr,
        received_ms: u64,
        start_ms: u64,
        end_ms: u64,
        tick_ms: u64,
    ) -> Result<u64, Rejected> {
        if received_ms > 0 && start_ms.max(end_ms) > received_ms.saturating_add(self.skew_ms) {
            self.counters.skewed += 1;
            return Err(Rejected::Future);
        }
        // Without a receive time the record's own end stands for it.
        let heard_ms = if received_ms > 0 { received_ms } else { end_ms };
        self.received_ms = self.received_ms.max(heard_ms);
        let at = self.position(exporter, heard_ms);
        let clock = &mut self.exporters[at];
        if clock.now_ms > 0 && end_ms.saturating_add(self.lateness_ms) < clock.now_ms {
            self.counters.late += 1;
            return Err(Rejected::Late);
        }
        let before = clock.now_ms;
        clock.now_ms = clock.now_ms.max(end_ms);
        clock.heard_ms = clock.heard_ms.max(heard_ms);
        clock.records += 1;
        let now_ms = clock.now_ms;
        // The table clock can only pass `tick_ms` when this exporter just passed it, or
        // when an exporter holding it back may have gone silent.
        let crossed = before < tick_ms && now_ms >= tick_ms;
        let recheck = self.recheck_ms.is_some_and(|at| self.received_ms >= at);
        // A few exporters are looked at on every record: the table clock is then exact
        // to the millisecond.
        if crossed || recheck || self.table_ms == 0 || self.exporters.len() <= EXACT_UP_TO {
            self.settle(tick_ms);
        }
        Ok(now_ms)
    }

    /// Looks at every recently heard exporter for the table clock.
    fn settle(&mut self, tick_ms: u64) {
        let horizon = self.received_ms.saturating_sub(SILENT_AFTER_MS);
        let (mut slowest, mut fastest) = (u64::MAX, 0);
        for clock in &self.exporters {
            if clock.heard_ms >= horizon && clock.now_ms > 0 {
                slowest = slowest.min(clock.now_ms);
                fastest = fastest.max(clock.now_ms);
            }
        }
        if fastest == 0 {
            return;
        }
        self.table_ms = self.table_ms.max(slowest);
        // Held back below the next tick by a slower exporter: look again in a while, in
        // case it fell silent.
        self.recheck_ms = (self.table_ms < tick_ms && fastest >= tick_ms)
            .then(|| self.received_ms.saturating_add(RECHECK_MS));
    }

    /// `exporter`'s position in `exporters`, with a clock started (heard at `heard_ms`)
    /// when it has none.
    #[inline]
    fn position(&mut self, exporter: IpAddr, heard_ms: u64) -> usize {
        if self
            .exporters
            .get(self.last)
            .is_some_and(|c| c.address == exporter)
        {
            return self.last;
        }
        let at = match self.positions.get(&exporter) {
            Some(&at) => at as usize,
            None => {
                if self.exporters.len() >= self.max_exporters {
                    self.forget_one();
                }
                let at = self.exporters.len();
                self.exporters.push(ExporterClock {
                    address: exporter,
                    now_ms: 0,
                    heard_ms,
                    records: 0,
                });
                self.positions.insert(
                    exporter,
                    u32::try_from(at).expect("max_exporters is at most u32::MAX"),
                );
                at
            }
        };
        self.last = at;
        at
    }

    /// Forgets one clock to make room: of the exporters that sent fewest records (a
    /// spoofed source sends one), the least recently heard.
    fn forget_one(&mut self) {
        let gone = (0..self.exporters.len()).min_by_key(|&at| {
            let c = &self.exporters[at];
            (c.records.min(PROVEN_RECORDS), c.heard_ms, c.address)
        });
        if let Some(at) = gone {
            let clock = self.exporters.swap_remove(at);
            self.positions.remove(&clock.address);
            if let Some(moved) = self.exporters.get(at) {
                self.positions.insert(moved.address, at as u32);
            }
            self.last = usize::MAX;
            self.counters.evicted += 1;
        }
    }

    /// Exporter clocks kept.
    pub fn exporters(&self) -> usize {
        self.exporters.len()
    }

    /// An exporter's clock, ms.
    pub fn exporter_ms(&self, exporter: IpAddr) -> Option<u64> {
        let &at = self.positions.get(&exporter)?;
        Some(self.exporters[at as usize].now_ms)
    }
}

/// The table clock of a shard that several receive workers feed (`source.workers > 1`):
/// each worker ticks the shards on its own table clock (its exporters' slowest), and the
/// shard follows the slowest worker heard within [`SILENT_AFTER_MS`] (receive time), never
/// going back. So a spoofer the kernel puts alone on a worker cannot move the shards ahead
/// of the other workers' exporters, as one exporter cannot within a worker; a worker whose
/// exporters all fall silent stops holding the shards back.
#[derive(Debug, Clone, Default)]
pub struct WorkerClocks {
    /// Per worker: its latest table clock and when (receive time, ms) it said so.
    workers: Vec<Option<(u64, u64)>>,
    now_ms: u64,
}

impl WorkerClocks {
    pub fn new(workers: usize) -> WorkerClocks {
        WorkerClocks {
            workers: vec![None; workers],
            now_ms: 0,
        }
    }

    /// Worker `worker` ticks at `tick_ms`, received at `received_ms`: the shard's table
    /// clock when it moved forward, or `None`.
    pub fn tick(&mut self, worker: usize, tick_ms: u64, received_ms: u64) -> Option<u64> {
        let slot = self.workers.get_mut(worker)?;
        let clock = slot.map_or(tick_ms, |(ms, _)| ms.max(tick_ms));
        *slot = Some((clock, received_ms));
        let slowest = self
            .workers
            .iter()
            .flatten()
            .filter(|(_, heard)| heard.saturating_add(SILENT_AFTER_MS) >= received_ms)
            .map(|(ms, _)| *ms)
            .min()
            .unwrap_or(clock);
        (slowest > self.now_ms).then(|| {
            self.now_ms = slowest;
            slowest
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_follows_the_slowest_worker_heard_recently() {
        const T: u64 = 1_710_230_400_000;
        let mut clocks = WorkerClocks::new(2);
        assert_eq!(clocks.tick(0, T, T), Some(T));
        // A spoofer alone on worker 1, dated 500 s ahead, does not move the shard.
        assert_eq!(clocks.tick(1, T + 500_000, T), None);
        assert_eq!(clocks.tick(0, T + 60_000, T + 60_000), Some(T + 60_000));
        assert_eq!(clocks.tick(1, T + 560_000, T + 60_000), None);
        // Worker 0's exporters fall silent: worker 1 alone holds the clock, never back.
        let later = T + 60_000 + SILENT_AFTER_MS + 1;
        assert_eq!(clocks.tick(1, T + 600_000, later), Some(T + 600_000));
        assert_eq!(clocks.tick(0, T + 120_000, later), None);
        assert_eq!(clocks.tick(5, T + 900_000, later), None, "no such worker");
    }

    const T0: u64 = 1_710_234_000_000;
    const MIN: u64 = 60_000;

    fn address(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn tick_after(ms: u64) -> u64 {
        ms - ms % MIN + MIN
    }

    /// Feeds `(exporter, received, end)` records with a tick boundary that follows the
    /// table clock; returns what each gave.
    fn feed(clock: &mut EventClock, records: &[(u8, u64, u64)]) -> Vec<Result<u64, Rejected>> {
        records
            .iter()
            .map(|&(exporter, received, end)| {
                let tick = tick_after(clock.table_ms());
                clock.accept(address(exporter), received, end - 1000, end, tick)
            })
            .collect()
    }

    #[test]
    fn one_exporter_is_the_table_clock() {
        let mut clock = EventClock::new(16, 3600, 600);
        let got = feed(
            &mut clock,
            &[
                (1, T0, T0 - 5_000),
                (1, T0 + 1, T0 - 9_000),
                (1, T0 + 2, T0 + 70_000),
            ],
        );
        assert_eq!(got, vec![Ok(T0 - 5_000), Ok(T0 - 5_000), Ok(T0 + 70_000)]);
        assert_eq!(clock.table_ms(), T0 + 70_000);
    }

    #[test]
    fn a_future_record_is_dropped_and_moves_no_clock() {
        let mut clock = EventClock::new(16, 3600, 600);
        feed(&mut clock, &[(1, T0, T0)]);
        let year_2030 = 1_893_456_000_000;
        let got = feed(&mut clock, &[(2, T0, year_2030), (1, T0, T0 + 601_000)]);
        assert_eq!(got, vec![Err(Rejected::Future), Err(Rejected::Future)]);
        assert_eq!(clock.counters.skewed, 2);
        assert_eq!(
            (clock.table_ms(), clock.exporter_ms(address(1))),
            (T0, Some(T0))
        );
        // Within the skew it is accepted, on its own exporter's clock only.
        let got = feed(&mut clock, &[(2, T0, T0 + 599_000)]);
        assert_eq!(got, vec![Ok(T0 + 599_000)]);
        assert_eq!(
            clock.table_ms(),
            T0,
            "the slowest exporter holds the tables"
        );
    }

    #[test]
    fn late_records_are_judged_on_their_own_exporters_clock() {
        let mut clock = EventClock::new(16, 3600, 600);
        let hour = 3_600_000;
        feed(&mut clock, &[(2, T0, T0 - 2 * hour), (1, T0, T0)]);
        // 59 min behind exporter 1 is in time; 61 min is late; exporter 2's own records
        // two hours behind exporter 1 are in time on its clock.
        let got = feed(
            &mut clock,
            &[
                (1, T0, T0 - 59 * MIN),
                (1, T0, T0 - 61 * MIN),
                (2, T0, T0 - 2 * hour - MIN),
            ],
        );
        assert_eq!(got, vec![Ok(T0), Err(Rejected::Late), Ok(T0 - 2 * hour)]);
        assert_eq!(clock.counters.late, 1);
        // The tables follow the slower exporter.
        assert_eq!(clock.table_ms(), T0 - 2 * hour);
    }

    #[test]
    fn a_silent_exporter_stops_holding_the_tables_back() {
        let mut clock = EventClock::new(16, 3600, 600);
        feed(&mut clock, &[(2, T0, T0 - 10 * MIN), (1, T0, T0)]);
        assert_eq!(clock.table_ms(), T0 - 10 * MIN);
        // Exporter 1 goes on, 2 says nothing more: 10 min of receive time later it no
        // longer counts.
        let mut got = Vec::new();
        for s in (1..=700).step_by(5) {
            let at = T0 + s * 1000;
            got.push((s, feed(&mut clock, &[(1, at, at)])[0], clock.table_ms()));
        }
        let (_, _, before) = got.iter().find(|(s, ..)| *s == 596).unwrap();
        assert_eq!(*before, T0 - 10 * MIN);
        let (_, _, after) = got.last().unwrap();
        assert_eq!(*after, T0 + 696_000);
    }

    #[test]
    fn spoofed_one_off_exporters_do_not_push_out_a_steady_one() {
        let mut clock = EventClock::new(64, 3600, 600);
        for i in 0..100 {
            feed(&mut clock, &[(1, T0 + i, T0 + i)]);
        }
        for spoofed in 0..5_000u32 {
            let exporter = IpAddr::from((0x7f00_0100 + spoofed).to_be_bytes());
            let tick = tick_after(clock.table_ms());
            let _ = clock.accept(exporter, T0 + 200, T0 + 100, T0 + 200, tick);
        }
        assert_eq!(clock.exporters(), 64);
        assert_eq!(clock.exporter_ms(address(1)), Some(T0 + 99));
        assert_eq!(clock.counters.evicted, 5_000 - 63);
        // The steady one's next record finds its own clock, not the one last looked at
        // (a forgotten spoofer's place).
        feed(&mut clock, &[(1, T0 + 150, T0 + 150)]);
        assert_eq!(clock.exporter_ms(address(1)), Some(T0 + 150));
        let last_spoofed = IpAddr::from((0x7f00_0100 + 4_999u32).to_be_bytes());
        assert_eq!(clock.exporter_ms(last_spoofed), Some(T0 + 200));
    }
}
