//! scaleout clock: a partition's event clock in `exflow detect`, from the watermarks the
//! collectors publish into it. The clock is the lowest of the clocks of the collectors
//! heard from recently, and never goes back; it ticks the partition's table and rules as
//! the pipeline's ingest ticks its shards (see [`crate::pipeline::Ingest`]): the first
//! value only starts the tick boundaries, every later crossing of a boundary is one tick
//! at the clock. "Recently" is judged on the collectors' own send times in the partition,
//! not on when a detector reads them, so a detector that replays the partition after a
//! takeover sees the same ticks as the one before it. When every collector heard from has
//! said its input ended, the partition's input ends: its conversations end, as `exflow run`'s
//! do when it stops.

use std::collections::HashMap;

use super::encoding::Watermark;

/// What a watermark did to the partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockStep {
    /// The clock crossed a tick boundary: tick at this time, ms.
    pub tick_ms: Option<u64>,
    /// Every collector's input ended: end the partition's input at this time, ms.
    pub end_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    clock_ms: u64,
    sent_ms: u64,
    ended: bool,
}

/// One partition's clock.
#[derive(Debug, Clone)]
pub struct PartitionClock {
    collectors: HashMap<String, Heard>,
    max_collectors: usize,
    timeout_ms: u64,
    tick_ms: u64,
    /// The newest send time of any watermark in the partition, ms.
    newest_sent_ms: u64,
    now_ms: u64,
    next_tick_ms: u64,
    /// Watermarks ignored because `max_collectors` were already followed.
    pub ignored_watermarks: u64,
}

impl PartitionClock {
    pub fn new(tick_s: u64, timeout_s: u64, max_collectors: usize) -> PartitionClock {
        PartitionClock {
            collectors: HashMap::new(),
            max_collectors: max_collectors.max(1),
            timeout_ms: timeout_s.saturating_mul(1000),
            tick_ms: tick_s.saturating_mul(1000).max(1),
            newest_sent_ms: 0,
            now_ms: 0,
            next_tick_ms: 0,
            ignored_watermarks: 0,
        }
    }

    /// The partition's event time, ms (0 before the first watermark).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Each collector followed, with its last clock (ms).
    pub fn collectors(&self) -> impl Iterator<Item = (&str, u64)> {
        self.collectors
            .iter()
            .map(|(id, heard)| (id.as_str(), heard.clock_ms))
    }

    pub fn on_watermark(&mut self, watermark: &Watermark) -> ClockStep {
        if !self.collectors.contains_key(&watermark.collector) {
            self.forget_silent();
            if self.collectors.len() >= self.max_collectors {
                self.ignored_watermarks += 1;
                return ClockStep::default();
            }
        }
        self.newest_sent_ms = self.newest_sent_ms.max(watermark.sent_ms);
        // The latest word of a collector stands, even lower (a restart): the partition's
        // clock itself never goes back.
        self.collectors.insert(
            watermark.collector.clone(),
            Heard {
                clock_ms: watermark.clock_ms,
                sent_ms: watermark.sent_ms,
                ended: false,
            },
        );
        self.forget_silent();
        let mut step = ClockStep::default();
        // A collector that ends has its last clock counted first, as the end of input
        // runs on the ingest's clock in one process.
        if let Some(lowest) = self.collectors.values().map(|h| h.clock_ms).min() {
            step.tick_ms = self.advance(lowest);
        }
        if watermark.end {
            if let Some(heard) = self.collectors.get_mut(&watermark.collector) {
                heard.ended = true;
            }
            if self.collectors.values().all(|h| h.ended) {
                self.collectors.clear();
                step.end_ms = Some(self.now_ms);
            }
        }
        step
    }

    /// Drops the collectors silent for longer than the timeout (they no longer hold the
    /// clock) and those whose input ended while others' goes on.
    fn forget_silent(&mut self) {
        let newest = self.newest_sent_ms;
        let timeout = self.timeout_ms;
        self.collectors
            .retain(|_, h| !h.ended && h.sent_ms.saturating_add(timeout) >= newest);
    }

    fn advance(&mut self, clock_ms: u64) -> Option<u64> {
        if clock_ms <= self.now_ms {
            return None;
        }
        self.now_ms = clock_ms;
        if self.next_tick_ms == 0 {
            self.next_tick_ms = next_tick(clock_ms, self.tick_ms);
            None
        } else if clock_ms >= self.next_tick_ms {
            self.next_tick_ms = next_tick(clock_ms, self.tick_ms);
            Some(clock_ms)
        } else {
            None
        }
    }
}

fn next_tick(now_ms: u64, tick_ms: u64) -> u64 {
    now_ms - now_ms % tick_ms + tick_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(collector: &str, clock_s: u64, sent_s: u64) -> Watermark {
        Watermark {
            collector: collector.into(),
            clock_ms: clock_s * 1000,
            sent_ms: sent_s * 1000,
            end: false,
        }
    }

    #[test]
    fn the_first_value_starts_the_ticks_and_each_crossing_is_one_tick() {
        let mut clock = PartitionClock::new(60, 30, 8);
        // 1_000_020 s is a multiple of the 60 s tick.
        assert_eq!(clock.on_watermark(&mark("a", 1_000_025, 1)).tick_ms, None);
        assert_eq!(clock.on_watermark(&mark("a", 1_000_070, 2)).tick_ms, None);
        assert_eq!(
            clock.on_watermark(&mark("a", 1_000_150, 3)).tick_ms,
            Some(1_000_150_000),
            "two boundaries crossed: one tick"
        );
        assert_eq!(clock.on_watermark(&mark("a", 1_000_100, 4)).tick_ms, None);
        assert_eq!(clock.now_ms(), 1_000_150_000, "never back");
    }

    #[test]
    fn the_slowest_collector_holds_the_clock_until_it_falls_silent() {
        let mut clock = PartitionClock::new(60, 30, 8);
        clock.on_watermark(&mark("a", 1_000_000, 100));
        clock.on_watermark(&mark("b", 900_000, 100));
        assert_eq!(
            clock.now_ms(),
            1_000_000_000,
            "b came after the clock had started"
        );
        clock.on_watermark(&mark("a", 1_000_500, 120));
        assert_eq!(clock.now_ms(), 1_000_000_000, "b holds it back");
        clock.on_watermark(&mark("b", 1_000_200, 125));
        assert_eq!(clock.now_ms(), 1_000_200_000);
        // b says nothing more; 31 s of a's send time later it no longer counts.
        assert_eq!(
            clock.on_watermark(&mark("a", 1_000_900, 156)).tick_ms,
            Some(1_000_900_000)
        );
        assert_eq!(clock.collectors().count(), 1);
    }

    #[test]
    fn the_input_ends_when_every_collector_heard_has_ended() {
        let mut clock = PartitionClock::new(60, 30, 8);
        clock.on_watermark(&mark("a", 1_000_000, 1));
        clock.on_watermark(&mark("b", 1_000_010, 1));
        let end_a = Watermark {
            end: true,
            ..mark("a", 1_000_020, 2)
        };
        assert_eq!(clock.on_watermark(&end_a).end_ms, None, "b goes on");
        let end_b = Watermark {
            end: true,
            ..mark("b", 1_000_030, 3)
        };
        assert_eq!(clock.on_watermark(&end_b).end_ms, Some(1_000_030_000));
        assert_eq!(clock.collectors().count(), 0);
    }

    #[test]
    fn collectors_beyond_the_bound_are_ignored_and_counted() {
        let mut clock = PartitionClock::new(60, 30, 2);
        clock.on_watermark(&mark("a", 1_000_000, 1));
        clock.on_watermark(&mark("b", 1_000_000, 1));
        clock.on_watermark(&mark("c", 1, 1));
        assert_eq!(clock.ignored_watermarks, 1);
        assert_eq!(clock.now_ms(), 1_000_000_000, "c's clock is not followed");
    }
}
