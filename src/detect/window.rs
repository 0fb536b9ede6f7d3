//! detect: `Buckets`, a sliding window of `N` fixed-width time buckets for the windowed
//! behaviour rules. A record's bytes join the bucket of the record's own time, not the
//! pipeline's clock: a record an exporter delivers an hour late still counts in the hour
//! it belongs to, as long as that hour is still inside the window.
//!
//! [`Windows`] is what `low_and_slow` and `spread_egress` keep: a bounded map of [`Window`]s
//! (buckets, first and last time, the steps reported, evidence) that ticks slide.
//!
//! [`within_window`] is what a record can have sent within one window: a record longer
//! than the window spreads its bytes over its whole duration.

use std::hash::Hash;

use super::alert::EvidenceList;
use super::bounded::evict_stalest;
use super::slab_map::SlabMap;

/// Sums over the last `N` buckets of `width_ms` each, ending at the newest bucket seen.
///
/// The sums are kept as buckets fill and empty, so reading them touches the first line
/// only and a record touches that line and its bucket's: the rules read them per record,
/// in windows far larger than the caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets<const N: usize> {
    /// Index (time / width) of the newest bucket; 0 while nothing was added.
    newest: u64,
    /// The sum of `bytes`, capped at `u64::MAX` (as a saturating sum of them is).
    bytes_total: u64,
    /// The sum of `counts`.
    count_total: u64,
    bytes: [u64; N],
    /// Conversations (or records) counted per bucket, saturating.
    counts: [u32; N],
}

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Buckets {
            newest: 0,
            bytes_total: 0,
            count_total: 0,
            bytes: [0; N],
            counts: [0; N],
        }
    }
}

impl<const N: usize> Buckets<N> {
    /// Adds `bytes` and `count` at `at_ms`. Returns false (and adds nothing) when `at_ms` is
    /// older than the window.
    pub fn add(&mut self, at_ms: u64, width_ms: u64, bytes: u64, count: u32) -> bool {
        let index = at_ms / width_ms.max(1);
        if self.newest == 0 {
            self.newest = index;
        }
        self.advance_to(index);
        if index.saturating_add(N as u64) <= self.newest {
            return false;
        }
        let slot = (index % N as u64) as usize;
        let (old_bytes, old_count) = (self.bytes[slot], self.counts[slot]);
        self.bytes[slot] = old_bytes.saturating_add(bytes);
        self.counts[slot] = old_count.saturating_add(count);
        self.bytes_total = self
            .bytes_total
            .saturating_add(self.bytes[slot] - old_bytes);
        self.count_total += u64::from(self.counts[slot] - old_count);
        true
    }

    /// Moves the window's end to `now_ms` (when later), emptying the buckets it leaves.
    pub fn slide(&mut self, now_ms: u64, width_ms: u64) {
        if self.newest != 0 {
            self.advance_to(now_ms / width_ms.max(1));
        }
    }

    fn advance_to(&mut self, index: u64) {
        if index <= self.newest {
            return;
        }
        let steps = (index - self.newest).min(N as u64);
        let capped = self.bytes_total == u64::MAX;
        for step in 1..=steps {
            let slot = ((self.newest + step) % N as u64) as usize;
            // Exact below the cap; a capped sum is summed again below.
            self.bytes_total = self.bytes_total.wrapping_sub(self.bytes[slot]);
            self.count_total -= u64::from(self.counts[slot]);
            self.bytes[slot] = 0;
            self.counts[slot] = 0;
        }
        if capped {
            self.bytes_total = self
                .bytes
                .iter()
                .fold(0u64, |sum, b| sum.saturating_add(*b));
        }
        self.newest = index;
    }

    /// The bytes in the window (saturating).
    pub fn bytes(&self) -> u64 {
        self.bytes_total
    }

    pub fn count(&self) -> u64 {
        self.count_total
    }

    /// Nothing left in the window.
    pub fn is_empty(&self) -> bool {
        self.bytes_total == 0 && self.count_total == 0
    }

    /// Start of the oldest bucket in the window, ms.
    pub fn start_ms(&self, width_ms: u64) -> u64 {
        self.newest
            .saturating_sub(N as u64 - 1)
            .saturating_mul(width_ms)
    }

    /// Of the runs of `w` consecutive buckets (at most `N`) that hold the bucket of `at_ms`
    /// and end no later than the newest, the one with the most bytes: (bytes, count, start
    /// ms). A ring that holds more buckets than a window keeps the windows a late record
    /// belongs to; the record is judged in the busiest of them, not cut off by the records
    /// its exporter sent after it.
    pub fn busiest_window_with(&self, at_ms: u64, width_ms: u64, w: usize) -> (u64, u64, u64) {
        let width_ms = width_ms.max(1);
        let w = w.clamp(1, N) as u64;
        let index = at_ms / width_ms;
        let oldest = self.newest.saturating_sub(N as u64 - 1);
        let get = |i: u64| {
            if i < oldest || i > self.newest {
                (0, 0)
            } else {
                let slot = (i % N as u64) as usize;
                (self.bytes[slot], u64::from(self.counts[slot]))
            }
        };
        let (mut bytes, mut count) = (0u64, 0u64);
        for i in (index + 1).saturating_sub(w)..=index {
            let (b, c) = get(i);
            (bytes, count) = (bytes.saturating_add(b), count + c);
        }
        let mut best = (bytes, count, index);
        let mut end = index;
        while end < self.newest.min(index.saturating_add(w - 1)) {
            end += 1;
            let (b, c) = get(end);
            let (gone_b, gone_c) = if end >= w { get(end - w) } else { (0, 0) };
            bytes = bytes.saturating_add(b).saturating_sub(gone_b);
            count = (count + c).saturating_sub(gone_c);
            if bytes > best.0 {
                best = (bytes, count, end);
            }
        }
        let start = (best.2 + 1).saturating_sub(w).saturating_mul(width_ms);
        (best.0, best.1, start)
    }
}

/// What a rule keeps per window besides its buckets (`()` for nothing): forgets what lies
/// before the window's start as the window slides.
pub trait Tracked: Default {
    fn forget_before(&mut self, _start_ms: u64) {}
}

impl Tracked for () {}

/// One (inside host, what it sums over) window of a windowed rule (`low_and_slow`,
/// `spread_egress`): its ring of `N` buckets, when it began and was last fed, the ladder
/// steps it reported, its largest conversations, and what else the rule tracks (`T`).
#[derive(Debug, Default)]
pub struct Window<const N: usize, T> {
    pub buckets: Buckets<N>,
    /// Start of the earliest record still in the window, ms.
    pub first_ms: u64,
    /// Event time of the last record: the stalest windows are evicted first.
    pub last_ms: u64,
    /// Ladder steps reported plus one, while the window stays over the threshold.
    pub reported: u8,
    pub evidence: EvidenceList,
    pub tracked: T,
}

impl<const N: usize, T: Tracked> Window<N, T> {
    /// Moves the ring's end to `now_ms` (when later) and forgets what now lies before its
    /// start.
    pub fn slide(&mut self, now_ms: u64, bucket_ms: u64) {
        self.buckets.slide(now_ms, bucket_ms);
        let start = self.buckets.start_ms(bucket_ms);
        self.first_ms = self.first_ms.max(start);
        self.evidence.retain(|e| e.last_ms >= start);
        self.tracked.forget_before(start);
    }
}

/// A windowed rule's windows by key, bounded: at `max` windows the stalest tenth goes
/// (`evicted`); ticks slide every window and drop the empty ones.
#[derive(Debug)]
pub struct Windows<K, const N: usize, T> {
    map: SlabMap<K, Window<N, T>>,
    max: usize,
    bucket_ms: u64,
    /// How far behind a tick records may still arrive (`Rule::allow_lateness`).
    lateness_ms: u64,
    /// Windows evicted to stay within `max`.
    pub evicted: u64,
    /// Records older than the ring holds.
    pub too_late: u64,
}

impl<K: Eq + Hash + Copy, const N: usize, T: Tracked> Windows<K, N, T> {
    pub fn new(max: usize, bucket_ms: u64) -> Self {
        Windows {
            map: SlabMap::new(),
            max: max.max(1),
            bucket_ms,
            lateness_ms: 0,
            evicted: 0,
            too_late: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// At most `max_bytes` of windows, at `window_bytes` each.
    pub fn limit(&mut self, max_bytes: u64, window_bytes: u64) {
        let by_bytes = usize::try_from(max_bytes / window_bytes.max(1)).unwrap_or(usize::MAX);
        self.max = self.max.min(by_bytes).max(1);
    }

    pub fn allow_lateness(&mut self, lateness_ms: u64) {
        self.lateness_ms = lateness_ms;
    }

    /// (kind, count) for `Rule::state_dropped`.
    pub fn dropped(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("windows_evicted", self.evicted),
            ("too_late", self.too_late),
        ]
    }

    /// Adds `bytes` and `count` at `at_ms` to `key`'s window (made when it has none,
    /// evicting the stalest tenth when full) and returns it; `None`, counted in `too_late`,
    /// when `at_ms` is older than the ring holds.
    pub fn add(&mut self, key: K, at_ms: u64, bytes: u64, count: u32) -> Option<&mut Window<N, T>> {
        if self.map.len() >= self.max && !self.map.contains_key(&key) {
            self.evicted +=
                evict_stalest(&mut self.map, |w: &Window<N, T>| w.last_ms, |_, _| {}) as u64;
        }
        let window = self.map.get_or_insert_with(key, Window::default);
        if !window.buckets.add(at_ms, self.bucket_ms, bytes, count) {
            self.too_late += 1;
            return None;
        }
        Some(window)
    }

    /// Starts bringing `key`'s window into the cache, for a batch's warm pass.
    #[inline]
    pub fn prefetch(&self, key: &K) {
        self.map.prefetch(key);
    }

    /// Slides every window to the oldest time a record may still come from, `now_ms` less
    /// the lateness allowed; a window that fell below `rearm_below` bytes may report again;
    /// the empty ones go.
    pub fn on_tick(&mut self, now_ms: u64, rearm_below: u64) {
        let bucket_ms = self.bucket_ms;
        let oldest_ms = now_ms.saturating_sub(self.lateness_ms);
        self.map.retain(|_, window| {
            window.slide(oldest_ms, bucket_ms);
            if window.buckets.bytes() < rearm_below {
                window.reported = 0;
            }
            !window.buckets.is_empty()
        });
    }
}

/// The part of `bytes`, counted by a record from `start_ms` to `end_ms`, that can lie within
/// one window of `window_ms`: all of it when the record fits in the window, else an even
/// share (exporters say nothing finer, so an even rate is the honest reading). A 5.5-hour
/// SSH session's 165 MB is 30 MB in any hour, not 165 MB "within 60 min"; what a long
/// connection carries in all is `long_lived_foreign`'s and `low_and_slow`'s to judge.
pub fn within_window(bytes: u64, start_ms: u64, end_ms: u64, window_ms: u64) -> u64 {
    let duration = end_ms.saturating_sub(start_ms);
    if duration <= window_ms || window_ms == 0 {
        return bytes;
    }
    // window_ms < duration, so the share is below `bytes` and fits a u64.
    (u128::from(bytes) * u128::from(window_ms) / u128::from(duration)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_record_is_judged_in_the_busiest_window_it_belongs_to() {
        let width = 600_000;
        // A ring of twelve buckets, windows of six.
        let mut w: Buckets<12> = Buckets::default();
        assert!(w.add(20 * width, width, 100, 1));
        assert!(w.add(25 * width, width, 40, 1));
        assert!(w.add(27 * width, width, 5, 1));
        // A record of bucket 21 comes when bucket 27 is the newest: the windows holding it
        // end at 21..=26; the busiest is 20..=25 (100 + 40 + its own 7).
        assert!(w.add(21 * width, width, 7, 1));
        assert_eq!(
            w.busiest_window_with(21 * width, width, 6),
            (147, 3, 20 * width)
        );
        // The newest record's own windows end at 27: 22..=27.
        assert_eq!(
            w.busiest_window_with(27 * width, width, 6),
            (45, 2, 22 * width)
        );
        // The ring is twelve buckets: 15 is still held, 14 is not.
        assert!(w.add(16 * width, width, 1, 1));
        assert!(!w.add(15 * width, width, 1, 1));
    }

    #[test]
    fn a_record_longer_than_the_window_counts_its_even_share() {
        let hour = 3_600_000;
        assert_eq!(within_window(400, 0, hour / 3, hour), 400);
        assert_eq!(within_window(400, 0, hour, hour), 400);
        // 5.5 hours: 2/11 of it in any hour.
        assert_eq!(
            within_window(165_000_000, 0, 11 * hour / 2, hour),
            30_000_000
        );
        assert_eq!(within_window(u64::MAX, 0, 2 * hour, hour), u64::MAX / 2);
        // A record timed backwards counts whole.
        assert_eq!(within_window(7, hour, 0, hour), 7);
    }

    #[test]
    fn late_records_join_their_own_bucket_and_old_ones_slide_out() {
        let mut w: Buckets<6> = Buckets::default();
        assert!(w.add(10 * 600_000, 600_000, 100, 1));
        assert!(w.add(14 * 600_000 + 5, 600_000, 50, 1));
        // Fifty minutes late: still in the hour.
        assert!(w.add(9 * 600_000, 600_000, 7, 1));
        assert_eq!((w.bytes(), w.count()), (157, 3));
        // Too late for the window: refused.
        assert!(!w.add(3 * 600_000, 600_000, 1000, 1));
        w.slide(15 * 600_000, 600_000);
        assert_eq!(w.bytes(), 150, "bucket 9 left the window ending at 15");
        assert_eq!(w.start_ms(600_000), 10 * 600_000);
        w.slide(100 * 600_000, 600_000);
        assert!(w.is_empty());
    }

    /// The kept sums are what summing the buckets gives, saturation included: a capped
    /// sum is exact again once the bucket that capped it leaves the window.
    #[test]
    fn the_kept_sums_match_the_buckets_even_when_capped() {
        let mut w: Buckets<3> = Buckets::default();
        assert!(w.add(10 * 1000, 1000, u64::MAX - 5, 2));
        assert!(w.add(11 * 1000, 1000, 100, u32::MAX));
        assert_eq!(w.bytes(), u64::MAX);
        assert_eq!(w.count(), 2 + u64::from(u32::MAX));
        assert!(w.add(11 * 1000, 1000, 1, 1));
        assert_eq!(
            w.count(),
            2 + u64::from(u32::MAX),
            "the bucket's count saturates"
        );
        w.slide(13 * 1000, 1000);
        assert_eq!((w.bytes(), w.count()), (101, u64::from(u32::MAX)));
        w.slide(14 * 1000, 1000);
        assert_eq!((w.bytes(), w.count()), (0, 0));
        assert!(w.is_empty());
    }
}
