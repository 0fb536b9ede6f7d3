//! detect::fold: how the rules that sum a host's traffic in time buckets (`profile`,
//! `low_and_slow`, `spread_egress`) take a conversation's records: summed over a few
//! seconds of event time ([`FOLD_MS`]) instead of one at a time. Their state is a few
//! hundred bytes per host and per destination, far larger than the caches, and touching it
//! is most of a record's cost where a conversation sends many records; summed records land
//! in the same buckets with the same bytes, so what the rules conclude is the same, up to
//! [`FOLD_MS`] (or one `flow.tick_s`, for a conversation that goes quiet) later.
//!
//! A record is held only when it can be summed without changing what a rule sees: never
//! the one that starts a conversation (the rules count conversations begun), never one
//! timed backwards or longer than the narrowest bucket (a rule may count a share of a long
//! record), and only
//! with records of the same bucket of every folding rule. The held records go to the rules
//! when the next record of the conversation cannot join them, when [`FOLD_MS`] of its
//! exporter's clock have passed since the first, when the conversation ends, and at the
//! first tick after the conversation has been quiet for [`FOLD_MS`].

use crate::flow::{ConversationId, ConversationKey, Oriented, Update};
use crate::prefetch::prefetch;

use super::RecordEvent;

/// Event time over which a conversation's records are summed at most.
pub const FOLD_MS: u64 = 10_000;

/// What a conversation's held records cost at most, with their entry and slot: the folds
/// take `rules.max_state_bytes` (a shard's share) at this much each, as a rule's state does.
pub const HELD_BYTES: u64 = 256;

/// A conversation's records not yet given to the folding rules: their sum.
#[derive(Debug, Clone)]
pub struct Held {
    /// The first record, with the bytes and packets of all, from the earliest start to the
    /// latest end.
    pub record: Oriented,
    /// The exporter's clock at the latest record.
    pub now_ms: u64,
    /// The exporter's clock at the first.
    since_ms: u64,
    /// The ends a record may have to join: those in the same bucket of every folding rule
    /// as the first record's end (the sum's end stays within them).
    joins_ms: std::ops::Range<u64>,
    pub from_resolver: bool,
}

impl Held {
    fn of(event: &RecordEvent<'_>, widths_ms: &[u64]) -> Held {
        let end_ms = event.record.end_ms;
        let (mut from_ms, mut to_ms) = (0, u64::MAX);
        for &width in widths_ms {
            let bucket_ms = end_ms - end_ms % width;
            from_ms = from_ms.max(bucket_ms);
            to_ms = to_ms.min(bucket_ms.saturating_add(width));
        }
        Held {
            record: *event.record,
            now_ms: event.now_ms,
            since_ms: event.now_ms,
            joins_ms: from_ms..to_ms,
            from_resolver: event.from_resolver,
        }
    }

    fn add(&mut self, event: &RecordEvent<'_>) {
        let (sum, record) = (&mut self.record, event.record);
        sum.bytes_out = sum.bytes_out.saturating_add(record.bytes_out);
        sum.bytes_in = sum.bytes_in.saturating_add(record.bytes_in);
        sum.packets_out = sum.packets_out.saturating_add(record.packets_out);
        sum.packets_in = sum.packets_in.saturating_add(record.packets_in);
        sum.start_ms = sum.start_ms.min(record.start_ms);
        sum.end_ms = sum.end_ms.max(record.end_ms);
        sum.tcp_flags |= record.tcp_flags;
        self.now_ms = self.now_ms.max(event.now_ms);
    }
}

/// What the folding rules get for a record: first the records held before it, if any,
/// then the record itself, if it is not held in turn.
#[derive(Debug)]
pub struct Folded {
    pub earlier: Option<Held>,
    pub now: bool,
}

/// The held records of one shard's conversations, found by conversation id: a record's
/// check is an index into a vector, not a search by key (a miss in a map far larger than
/// the caches, on every record).
#[derive(Debug, Default)]
pub struct Folds {
    /// By conversation id: 0, nothing held; else the position in `held` plus one. Grows to
    /// the most conversations the shard's table has held at once, 4 bytes each.
    slots: Vec<u32>,
    /// The held conversations, dense: a removal moves the last into the hole, so the
    /// order (of [`Folds::take_quiet`]) depends only on the calls made.
    held: Vec<(ConversationId, ConversationKey, Held)>,
    /// Conversations held at most; beyond them, records go to the rules one at a time
    /// (slower, nothing lost).
    max_held: usize,
    /// The folding rules' bucket widths, ms: records are summed within one bucket of each.
    widths_ms: Vec<u64>,
    /// The narrowest of them: a longer record is never held.
    narrowest_ms: u64,
}

impl Folds {
    /// Folds for rules whose buckets are `widths_ms` wide (none: nothing is held), in
    /// `max_bytes`.
    pub fn new(widths_ms: Vec<u64>, max_bytes: u64) -> Self {
        let widths_ms: Vec<u64> = widths_ms.into_iter().map(|w| w.max(1)).collect();
        let narrowest_ms = widths_ms.iter().copied().min().unwrap_or(0);
        Folds {
            slots: Vec::new(),
            held: Vec::new(),
            max_held: usize::try_from(max_bytes / HELD_BYTES).unwrap_or(usize::MAX),
            widths_ms,
            narrowest_ms,
        }
    }

    /// Conversations with records held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Where `id`'s held records are in `held`.
    #[inline]
    fn position(&self, id: ConversationId) -> Option<usize> {
        let slot = *self.slots.get(id.index())?;
        (slot != 0).then(|| slot as usize - 1)
    }

    /// Whether `id`'s records are held (its next record most likely is too); if so, brings
    /// them into the cache for [`Folds::fold`].
    #[inline]
    pub fn warm(&self, id: ConversationId) -> bool {
        match self.position(id) {
            Some(at) => {
                prefetch(&self.held[at]);
                true
            }
            None => false,
        }
    }

    /// Holds `event`'s record or says what the folding rules take now.
    pub fn fold(&mut self, event: &RecordEvent<'_>) -> Folded {
        let record = event.record;
        let duration_ms = record.end_ms.saturating_sub(record.start_ms);
        if self.widths_ms.is_empty()
            || event.update == Update::Created
            || record.end_ms < record.start_ms
            || duration_ms > self.narrowest_ms
        {
            return Folded {
                earlier: self.take(event.id),
                now: true,
            };
        }
        let Some(at) = self.position(event.id) else {
            if self.held.len() >= self.max_held {
                return Folded {
                    earlier: None,
                    now: true,
                };
            }
            self.insert(event.id, *event.key, Held::of(event, &self.widths_ms));
            return Folded {
                earlier: None,
                now: false,
            };
        };
        let held = &mut self.held[at].2;
        if !joins(self.narrowest_ms, held, record) {
            let earlier = std::mem::replace(held, Held::of(event, &self.widths_ms));
            return Folded {
                earlier: Some(earlier),
                now: false,
            };
        }
        held.add(event);
        let due = held.now_ms.saturating_sub(held.since_ms) >= FOLD_MS;
        Folded {
            earlier: if due { self.take(event.id) } else { None },
            now: false,
        }
    }

    /// `id`'s held records, when its conversation ends (and when a record is not held).
    pub fn take(&mut self, id: ConversationId) -> Option<Held> {
        let at = self.position(id)?;
        Some(self.take_at(at).2)
    }

    /// The held records of conversations quiet for [`FOLD_MS`] of the tick's clock
    /// (`now_ms`), handed to `taken`: the others are given to the rules with their next
    /// record soon, and a tick does not stall on all of them at once.
    pub fn take_quiet(
        &mut self,
        now_ms: u64,
        mut taken: impl FnMut(ConversationId, ConversationKey, Held),
    ) {
        let mut at = 0;
        while at < self.held.len() {
            if self.held[at].2.now_ms.saturating_add(FOLD_MS) > now_ms {
                at += 1;
                continue;
            }
            // The last entry takes the hole and is looked at next.
            let (id, key, held) = self.take_at(at);
            taken(id, key, held);
        }
    }

    fn insert(&mut self, id: ConversationId, key: ConversationKey, held: Held) {
        if self.slots.len() <= id.index() {
            self.slots.resize(id.index() + 1, 0);
        }
        self.held.push((id, key, held));
        self.slots[id.index()] =
            u32::try_from(self.held.len()).expect("ids are u32: fewer held than 2^32");
    }

    /// Takes the entry at `at` out; the last takes its place.
    fn take_at(&mut self, at: usize) -> (ConversationId, ConversationKey, Held) {
        let taken = self.held.swap_remove(at);
        self.slots[taken.0.index()] = 0;
        if let Some(&(moved, _, _)) = self.held.get(at) {
            self.slots[moved.index()] = at as u32 + 1;
        }
        taken
    }
}

/// Whether `record` can be summed with `held`: ending in the same bucket of every width
/// (no division: the range was worked out when the first was held), and the sum no longer
/// than the narrowest. Held records end no earlier than they start, so each counts at its
/// end, and so does their sum.
fn joins(narrowest_ms: u64, held: &Held, record: &Oriented) -> bool {
    let sum = &held.record;
    let span_ms = sum.end_ms.max(record.end_ms) - sum.start_ms.min(record.start_ms);
    span_ms <= narrowest_ms && held.joins_ms.contains(&record.end_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::oriented;
    use crate::enrich::Destination;
    use crate::flow::{Conversation, ConversationId, Update};

    const T0: u64 = 1_710_230_400_000;
    const MIN: u64 = 60_000;

    /// Folds for the profile's widths (an hour, ten minutes).
    fn folds() -> Folds {
        Folds::new(vec![60 * MIN, 10 * MIN], 1 << 20)
    }

    /// Folds `bytes_out` sent from `start_ms` to `end_ms`, the exporter's clock at its end.
    fn fold(
        folds: &mut Folds,
        update: Update,
        bytes_out: u64,
        start_ms: u64,
        end_ms: u64,
    ) -> Folded {
        let record = oriented(
            "10.0.0.5",
            40000,
            "198.51.100.7",
            443,
            bytes_out,
            0,
            start_ms,
            end_ms,
        );
        let key = record.key();
        let conversation = Conversation::first(&record, Destination::default());
        folds.fold(&RecordEvent {
            record: &record,
            key: &key,
            id: ConversationId::at(7),
            conversation: &conversation,
            update,
            now_ms: end_ms,
            from_resolver: false,
        })
    }

    #[test]
    fn records_of_one_bucket_are_summed_for_up_to_the_fold_time() {
        let mut folds = folds();
        let first = fold(&mut folds, Update::Created, 100, T0, T0 + 1000);
        assert!(
            first.now && first.earlier.is_none(),
            "a new conversation runs at once"
        );
        for i in 1..5 {
            let at = T0 + i * 2000;
            let held = fold(&mut folds, Update::Extended, 10 * i, at - 500, at);
            assert!(!held.now && held.earlier.is_none(), "record {i} is held");
        }
        assert!(folds.warm(ConversationId::at(7)) && !folds.warm(ConversationId::at(8)));
        // Ten seconds of the exporter's clock after the first held record.
        let due = fold(&mut folds, Update::Extended, 50, T0 + 11_500, T0 + 12_000);
        let sum = due.earlier.expect("due");
        assert!(!due.now);
        assert_eq!(sum.record.bytes_out, 10 + 20 + 30 + 40 + 50);
        assert_eq!(
            (sum.record.start_ms, sum.record.end_ms),
            (T0 + 1500, T0 + 12_000)
        );
        assert_eq!(sum.now_ms, T0 + 12_000);
        assert!(folds.is_empty());
    }

    #[test]
    fn a_bucket_boundary_a_long_or_backwards_record_gives_the_held_ones_first() {
        let mut folds = folds();
        // Ten-minute buckets: T0 + 9 min and T0 + 10 min are not summed.
        assert!(
            !fold(
                &mut folds,
                Update::Extended,
                7,
                T0 + 9 * MIN - 10,
                T0 + 9 * MIN
            )
            .now
        );
        let next = fold(
            &mut folds,
            Update::Extended,
            8,
            T0 + 10 * MIN,
            T0 + 10 * MIN + 5,
        );
        assert_eq!(next.earlier.map(|h| h.record.bytes_out), Some(7));
        assert!(!next.now, "the new bucket's record is held in turn");
        // Longer than ten minutes: never held.
        let long = fold(&mut folds, Update::Extended, 9, T0, T0 + 11 * MIN);
        assert_eq!(long.earlier.map(|h| h.record.bytes_out), Some(8));
        assert!(long.now && folds.is_empty());
        let backwards = fold(&mut folds, Update::Extended, 9, T0 + 5, T0);
        assert!(backwards.now && backwards.earlier.is_none());
        // A restarted conversation gives what was held of the old one.
        assert!(!fold(&mut folds, Update::Extended, 3, T0, T0 + 1).now);
        let restart = fold(&mut folds, Update::Created, 4, T0 + 2, T0 + 3);
        assert_eq!(
            (restart.earlier.map(|h| h.record.bytes_out), restart.now),
            (Some(3), true)
        );
    }

    #[test]
    fn ticks_take_the_quiet_conversations_and_no_widths_hold_nothing() {
        let mut folds = folds();
        assert!(!fold(&mut folds, Update::Extended, 5, T0, T0 + 1000).now);
        let mut taken = Vec::new();
        folds.take_quiet(T0 + 1000 + FOLD_MS - 1, |_, _, held| taken.push(held));
        assert!(taken.is_empty(), "not yet quiet for the fold time");
        folds.take_quiet(T0 + 1000 + FOLD_MS, |_, _, held| taken.push(held));
        assert_eq!(
            taken.iter().map(|h| h.record.bytes_out).collect::<Vec<_>>(),
            [5]
        );
        assert!(folds.is_empty());
        let mut none = Folds::new(Vec::new(), 1 << 20);
        let mut full = Folds::new(vec![10 * MIN], HELD_BYTES);
        assert!(!fold(&mut full, Update::Extended, 5, T0, T0 + 1000).now);
        let other = oriented("10.0.0.6", 40000, "198.51.100.7", 443, 5, 0, T0, T0 + 1000);
        let (key, conversation) = (
            other.key(),
            Conversation::first(&other, Destination::default()),
        );
        let event = RecordEvent {
            record: &other,
            key: &key,
            id: ConversationId::at(8),
            conversation: &conversation,
            update: Update::Extended,
            now_ms: T0 + 1000,
            from_resolver: false,
        };
        assert!(
            full.fold(&event).now,
            "one conversation held at most: the next runs at once"
        );
        assert!(fold(&mut none, Update::Extended, 5, T0, T0 + 1000).now);
    }

    #[test]
    fn a_held_conversation_costs_no_more_than_it_is_counted() {
        let entry = std::mem::size_of::<(ConversationId, ConversationKey, Held)>();
        assert!(entry + 4 <= HELD_BYTES as usize, "{entry} bytes and a slot");
    }

    #[test]
    fn held_records_are_found_by_id_through_removals() {
        let mut folds = folds();
        let record = |port: u16, bytes_out: u64| {
            oriented(
                "10.0.0.5",
                port,
                "198.51.100.7",
                443,
                bytes_out,
                0,
                T0,
                T0 + 1000,
            )
        };
        let hold = |folds: &mut Folds, id: u32, record: &Oriented| {
            let (key, conversation) = (
                record.key(),
                Conversation::first(record, Destination::default()),
            );
            let event = RecordEvent {
                record,
                key: &key,
                id: ConversationId::at(id),
                conversation: &conversation,
                update: Update::Extended,
                now_ms: T0 + 1000,
                from_resolver: false,
            };
            folds.fold(&event).now
        };
        for id in 0..4u32 {
            assert!(!hold(
                &mut folds,
                id,
                &record(id as u16, 10 * u64::from(id + 1))
            ));
        }
        let taken = |folds: &mut Folds, id| {
            folds
                .take(ConversationId::at(id))
                .map(|held| (held.record.inside_port, held.record.bytes_out))
        };
        // Each removal moves the last into the hole: every id still finds its own.
        assert_eq!(taken(&mut folds, 1), Some((1, 20)));
        assert_eq!(taken(&mut folds, 1), None);
        assert!(folds.warm(ConversationId::at(3)) && !folds.warm(ConversationId::at(9)));
        assert_eq!(taken(&mut folds, 0), Some((0, 10)));
        assert_eq!(taken(&mut folds, 3), Some((3, 40)));
        assert_eq!(taken(&mut folds, 2), Some((2, 30)));
        assert!(folds.is_empty());
    }
}
