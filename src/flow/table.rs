//! flow::table: one shard of the conversation table: stitches oriented records into
//! conversations, ends them on the idle timeout (event time), on the exporter's word, or
//! when the table is full (the stalest first), and counts each.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::slab::{MAX_HANDLES, Slab};
use super::wheel::Wheel;
use super::{Conversation, ConversationKey, Oriented, clock};
use crate::enrich::Destination;

/// What the table counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub records: u64,
    pub transit_records: u64,
    pub internal_records: u64,
    pub conversations_created: u64,
    /// Ended by the idle timeout.
    pub conversations_expired: u64,
    /// Ended early because the table was full.
    pub conversations_evicted: u64,
    /// Ended on the exporter's word (flowEndReason, a firewall's teardown).
    pub conversations_closed: u64,
    /// Dropped before the table: dated too far ahead, too late, and exporter clocks
    /// forgotten (see [`clock`]).
    pub clock: clock::ClockCounters,
}

impl FlowCounters {
    pub fn merge(&mut self, other: &FlowCounters) {
        self.records += other.records;
        self.transit_records += other.transit_records;
        self.internal_records += other.internal_records;
        self.conversations_created += other.conversations_created;
        self.conversations_expired += other.conversations_expired;
        self.conversations_evicted += other.conversations_evicted;
        self.conversations_closed += other.conversations_closed;
        self.clock.merge(&other.clock);
    }
}

/// A conversation with its key, as the table stores it: 104 bytes.
#[derive(Debug)]
struct Entry {
    key: ConversationKey,
    conversation: Conversation,
}

impl Entry {
    /// A conversation closed on the exporter's word ([`FlowTable::close`]): already ended and
    /// out of the index, its entry waits in the wheel to be freed. Marked by `flows == 0`,
    /// which no open conversation has (it counts its first record), and `last_ms == 0`, so
    /// the wheel and eviction free it first.
    fn is_closed(&self) -> bool {
        self.conversation.flows == 0
    }
}

/// The conversations and their index by key: the index holds 4-byte handles into a slab of
/// entries, hashed on the entry's key and compared through the slab.
#[derive(Debug)]
struct Conversations {
    entries: Slab<Entry>,
    index: HashTable<u32>,
    /// Seeded per table, like the other maps' (it is harder to aim collisions at): no
    /// order the table produces depends on the hash, only on the sequence of calls.
    hasher: RandomState,
}

impl Conversations {
    fn new() -> Self {
        Conversations {
            entries: Slab::new(),
            index: HashTable::new(),
            hasher: RandomState::default(),
        }
    }

    #[inline]
    fn hash(&self, key: &ConversationKey) -> u64 {
        hash_key(&self.hasher, key)
    }

    #[inline]
    fn find(&self, hash: u64, key: &ConversationKey) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(hash, |&handle| entries.get(handle).key == *key)
            .copied()
    }

    fn get(&self, handle: u32) -> &Entry {
        self.entries.get(handle)
    }

    /// Whether `handle` is `key`'s open (so indexed) entry: a handle found earlier may have
    /// been closed or freed since, or handed to another key.
    #[inline]
    fn holds(&self, handle: u32, key: &ConversationKey) -> bool {
        self.entries
            .try_get(handle)
            .is_some_and(|entry| !entry.is_closed() && entry.key == *key)
    }

    /// Stores an entry whose key (hashing to `hash`) is not in the table.
    fn insert(&mut self, hash: u64, entry: Entry) -> u32 {
        let handle = self.entries.insert(entry);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.insert_unique(hash, handle, |&other| {
            hash_key(hasher, &entries.get(other).key)
        });
        handle
    }

    /// Removes an entry, from the index too unless it is a closed one (no longer indexed).
    fn remove(&mut self, handle: u32) -> Entry {
        if !self.entries.get(handle).is_closed() {
            self.unindex(handle);
        }
        self.entries.remove(handle)
    }

    /// Takes an entry out of the index only: its key's next record starts a new entry.
    fn unindex(&mut self, handle: u32) {
        let hash = self.hash(&self.entries.get(handle).key);
        // Found by handle: no key comparison.
        self.index
            .find_entry(hash, |&other| other == handle)
            .expect("every open entry is indexed")
            .remove();
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.index = HashTable::new();
    }
}

/// A key's hash, from its fields in three words: fewer steps than the derived `Hash`,
/// which feeds the hasher field by field and each address with its length.
#[inline]
fn hash_key(state: &RandomState, key: &ConversationKey) -> u64 {
    let bits = |address: IpAddr| match address {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    let rest = u64::from(key.inside_port)
        | u64::from(key.outside_port) << 16
        | u64::from(key.proto) << 32
        | u64::from(key.inside.is_ipv6()) << 40
        | u64::from(key.outside.is_ipv6()) << 41;
    let mut hasher = state.build_hasher();
    hasher.write_u128(bits(key.inside));
    hasher.write_u128(bits(key.outside));
    hasher.write_u64(rest);
    hasher.finish()
}

/// One shard of the conversation table.
///
/// Memory: each conversation takes its 104-byte entry in a slab grown one chunk at a time,
/// a 4-byte handle in the index (a hash table of a power of two of buckets, at most 7/8
/// full: 5.7 to 11.4 bytes with their control bytes) and a 4-byte link in the wheel: 114
/// to 120 bytes (116 at 10 million). Time: one index lookup per record; expiry and
/// eviction take conversations from the wheel's oldest slots and never scan the table.
#[derive(Debug)]
pub struct FlowTable {
    conversations: Conversations,
    /// Every conversation's handle, filed by the deadline its last activity gave when it
    /// was filed (and filed again when found extended).
    wheel: Wheel,
    max_conversations: usize,
    /// The stitching gap.
    idle_timeout_ms: u64,
    /// Idle time (against event time) after which a conversation ends.
    expiry_ms: u64,
    pub counters: FlowCounters,
}

/// An open conversation's place in its table: stable from its first record to its end
/// (a conversation restarted in place by a record after the idle timeout keeps it), then
/// handed to a later conversation. Dense, from 0 to the most conversations the table has
/// held at once, so state kept beside a conversation (the rules' held records,
/// [`crate::detect::fold`]) is a vector indexed by it, not a map searched by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(u32);

impl ConversationId {
    /// Its index in a vector kept beside the table.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The id at `index`, for tests of state kept beside a table.
    #[cfg(test)]
    pub fn at(index: u32) -> ConversationId {
        ConversationId(index)
    }
}

/// A record's key hashed for its table ([`FlowTable::warm`]): a record hashes its key once
/// on its way through a batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHash(u64);

/// A record's key looked up ahead of its update ([`FlowTable::look_up`]): the key, its hash
/// and the open conversation found. The records updated in between may have ended that
/// conversation or started one for the key, so the update checks the one found still holds
/// the key, and searches again when it does not (or none was found).
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    key: ConversationKey,
    hash: u64,
    found: Option<u32>,
}

impl Lookup {
    pub fn key(&self) -> &ConversationKey {
        &self.key
    }
}

/// What [`FlowTable::update`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// A new conversation began.
    Created,
    /// The record extended a conversation.
    Extended,
}

impl FlowTable {
    /// A shard of at most `max_conversations` (and at most `u32::MAX - 1`), stitching
    /// records `idle_timeout_s` apart and ending conversations idle for
    /// `idle_timeout_s + max_lateness_s` of event time: a record that ends up to
    /// `max_lateness_s` behind the clock still finds its conversation.
    pub fn new(max_conversations: usize, idle_timeout_s: u64, max_lateness_s: u64) -> Self {
        let expiry_ms = idle_timeout_s
            .saturating_add(max_lateness_s)
            .saturating_mul(1000);
        FlowTable {
            conversations: Conversations::new(),
            wheel: Wheel::new(expiry_ms),
            max_conversations: max_conversations.clamp(1, MAX_HANDLES),
            idle_timeout_ms: idle_timeout_s.saturating_mul(1000),
            expiry_ms,
            counters: FlowCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.conversations.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &ConversationKey) -> Option<&Conversation> {
        Some(self.find(key)?.1)
    }

    /// `key`'s open conversation, with its id.
    #[inline]
    pub fn find(&self, key: &ConversationKey) -> Option<(ConversationId, &Conversation)> {
        let handle = self.conversations.find(self.conversations.hash(key), key)?;
        Some((
            ConversationId(handle),
            &self.conversations.get(handle).conversation,
        ))
    }

    /// Looks up the key of a record [`warm`](Self::warm) gave `hash`, ahead of its
    /// [`update_looked_up`](Self::update_looked_up): its open conversation, with its id,
    /// and the lookup for the update.
    #[inline]
    pub fn look_up(
        &self,
        record: &Oriented,
        hash: KeyHash,
    ) -> (Lookup, Option<(ConversationId, &Conversation)>) {
        let key = record.key();
        let found = self.conversations.find(hash.0, &key);
        let conversation =
            found.map(|h| (ConversationId(h), &self.conversations.get(h).conversation));
        (
            Lookup {
                key,
                hash: hash.0,
                found,
            },
            conversation,
        )
    }

    /// The open conversation `id` names, with its key (`None`: it ended).
    pub fn by_id(&self, id: ConversationId) -> Option<(&ConversationKey, &Conversation)> {
        let entry = self.conversations.entries.try_get(id.0)?;
        (!entry.is_closed()).then_some((&entry.key, &entry.conversation))
    }

    /// Brings the record's conversation into the cache ahead of [`FlowTable::update`]: the
    /// lookups of a batch then overlap in memory instead of stalling one by one. The
    /// entries the index holds under the key's hash are prefetched from their handles
    /// alone (one but for a collision of seven bits): comparing a key would be the miss.
    /// Returns the key's hash, for [`look_up`](Self::look_up).
    #[inline]
    pub fn warm(&self, record: &Oriented) -> KeyHash {
        let conversations = &self.conversations;
        let hash = conversations.hash(&record.key());
        for &handle in conversations.index.iter_hash(hash) {
            conversations.entries.prefetch(handle);
        }
        KeyHash(hash)
    }

    /// When a conversation last active at `last_ms` ends.
    fn deadline(&self, last_ms: u64) -> u64 {
        last_ms.saturating_add(self.expiry_ms)
    }

    /// Stitches a record into its conversation, or starts one (looking the destination up
    /// once with `destination`). A record that starts more than the idle timeout after the
    /// conversation's last activity starts a new one, with the same id; `ended` receives the
    /// old one. One hash lookup per record.
    pub fn update(
        &mut self,
        record: &Oriented,
        destination: impl FnOnce() -> Destination,
        ended: impl FnMut(ConversationId, &ConversationKey, &Conversation),
    ) -> (Update, ConversationId, &Conversation) {
        let key = record.key();
        let lookup = Lookup {
            hash: self.conversations.hash(&key),
            found: None,
            key,
        };
        self.update_looked_up(record, &lookup, destination, ended)
    }

    /// [`update`](Self::update) of a record looked up earlier in its batch
    /// ([`look_up`](Self::look_up)): neither hashed nor searched again when the
    /// conversation found then still holds the key.
    pub fn update_looked_up(
        &mut self,
        record: &Oriented,
        lookup: &Lookup,
        destination: impl FnOnce() -> Destination,
        mut ended: impl FnMut(ConversationId, &ConversationKey, &Conversation),
    ) -> (Update, ConversationId, &Conversation) {
        self.counters.records += 1;
        let (key, hash) = (lookup.key, lookup.hash);
        let fresh = |destination: Destination| Conversation::first(record, destination);
        let found = lookup
            .found
            .filter(|&handle| self.conversations.holds(handle, &key))
            .or_else(|| self.conversations.find(hash, &key));
        if let Some(handle) = found {
            // The wheel is not told: it finds out when it reaches the handle's old slot.
            let conversation = &mut self.conversations.entries.get_mut(handle).conversation;
            if record.start_ms <= conversation.last_ms.saturating_add(self.idle_timeout_ms) {
                let earliest = record.start_ms < conversation.first_ms;
                conversation.opening.observe(record, earliest);
                conversation.first_ms = conversation.first_ms.min(record.start_ms);
                conversation.last_ms = conversation.last_ms.max(record.end_ms);
                // Exporters control these numbers: saturate rather than overflow.
                conversation.bytes_out = conversation.bytes_out.saturating_add(record.bytes_out);
                conversation.bytes_in = conversation.bytes_in.saturating_add(record.bytes_in);
                conversation.packets_out =
                    conversation.packets_out.saturating_add(record.packets_out);
                conversation.packets_in = conversation.packets_in.saturating_add(record.packets_in);
                // The exporter's later reports of one flow are not more flows.
                conversation.flows = conversation
                    .flows
                    .saturating_add(u16::from(!record.continues));
                return (Update::Extended, ConversationId(handle), conversation);
            }
            // Too long a silence: the old conversation ended, a new one starts in its entry
            // (still filed at the old deadline, an earlier one: refiled when reached). The
            // destination facts stay (same outside address).
            ended(ConversationId(handle), &key, conversation);
            self.counters.conversations_expired += 1;
            self.counters.conversations_created += 1;
            *conversation = fresh(conversation.destination);
            return (Update::Created, ConversationId(handle), conversation);
        }
        if self.len() >= self.max_conversations {
            self.evict_for_room(&mut ended);
        }
        self.counters.conversations_created += 1;
        let conversation = fresh(destination());
        let deadline = self.deadline(conversation.last_ms);
        let handle = self.conversations.insert(hash, Entry { key, conversation });
        self.wheel.insert(handle, deadline);
        (
            Update::Created,
            ConversationId(handle),
            &self.conversations.get(handle).conversation,
        )
    }

    /// Ends the conversation of `key` now, on the exporter's word that its flow is over
    /// (called after the closing record went through [`update`](Self::update) and the rules):
    /// `ended` receives it, and the key's next record starts a new conversation. Its entry
    /// is freed when the wheel or eviction reaches it. `false` when there is none.
    pub fn close(
        &mut self,
        key: &ConversationKey,
        ended: impl FnOnce(ConversationId, &ConversationKey, &Conversation),
    ) -> bool {
        let Some(handle) = self.conversations.find(self.conversations.hash(key), key) else {
            return false;
        };
        self.conversations.unindex(handle);
        let entry = self.conversations.entries.get_mut(handle);
        ended(ConversationId(handle), &entry.key, &entry.conversation);
        entry.conversation.flows = 0;
        entry.conversation.last_ms = 0;
        self.counters.conversations_closed += 1;
        true
    }

    /// Ends every conversation idle for longer than the idle timeout plus the lateness
    /// allowed for records, at event time `now_ms`. Visits the wheel's slots up to
    /// `now_ms`: the conversations ending and those extended since they were filed.
    pub fn expire(
        &mut self,
        now_ms: u64,
        mut ended: impl FnMut(ConversationId, &ConversationKey, &Conversation),
    ) {
        let horizon = now_ms.saturating_sub(self.expiry_ms);
        let expiry_ms = self.expiry_ms;
        let conversations = &mut self.conversations;
        let expired = &mut self.counters.conversations_expired;
        self.wheel.advance(now_ms, |handle| {
            let last_ms = conversations.get(handle).conversation.last_ms;
            if last_ms >= horizon {
                return Some(last_ms.saturating_add(expiry_ms));
            }
            let entry = conversations.remove(handle);
            if !entry.is_closed() {
                ended(ConversationId(handle), &entry.key, &entry.conversation);
                *expired += 1;
            }
            None
        });
    }

    /// Ends every conversation (end of input), in the order of their handles.
    pub fn drain(
        &mut self,
        mut ended: impl FnMut(ConversationId, &ConversationKey, &Conversation),
    ) {
        for (handle, entry) in self.conversations.entries.iter() {
            if !entry.is_closed() {
                ended(ConversationId(handle), &entry.key, &entry.conversation);
            }
        }
        self.conversations.clear();
        self.wheel.clear();
    }

    /// The table is full: end the longest-idle tenth of it (at least one), counted as
    /// evictions. The wheel's oldest slots hold them: each slot taken is sorted by last
    /// activity (ties by handle, for the same order on every run), and what is left of the
    /// last one goes back.
    fn evict_for_room(
        &mut self,
        ended: &mut impl FnMut(ConversationId, &ConversationKey, &Conversation),
    ) {
        let target = (self.len() / 10).max(1);
        let mut evicted = 0;
        // Closed conversations' entries freed on the way: already ended, not evictions.
        let mut freed = 0;
        let mut oldest = Vec::new();
        while evicted < target && !self.is_empty() {
            let conversations = &self.conversations;
            let expiry_ms = self.expiry_ms;
            self.wheel.take_oldest(
                |handle| {
                    let last_ms = conversations.get(handle).conversation.last_ms;
                    last_ms.saturating_add(expiry_ms)
                },
                &mut oldest,
            );
            oldest.sort_unstable_by_key(|&handle| {
                (conversations.get(handle).conversation.last_ms, handle)
            });
            for handle in oldest.drain(..) {
                if evicted < target {
                    let entry = self.conversations.remove(handle);
                    if entry.is_closed() {
                        freed += 1;
                    } else {
                        ended(ConversationId(handle), &entry.key, &entry.conversation);
                    }
                    evicted += 1;
                } else {
                    let deadline =
                        self.deadline(self.conversations.get(handle).conversation.last_ms);
                    self.wheel.insert(handle, deadline);
                }
            }
        }
        self.counters.conversations_evicted += (evicted - freed) as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::flow::orient;
    use crate::flow::orientation::tests::{enricher, outbound, record};

    #[test]
    fn a_conversation_is_small() {
        assert_eq!(std::mem::size_of::<Conversation>(), 64);
        assert_eq!(std::mem::size_of::<Entry>(), 104);
        // A vacant slab entry (a link in the free list) costs nothing more.
        assert_eq!(Slab::<Entry>::slot_size(), 104);
    }

    #[test]
    fn records_within_the_idle_timeout_are_stitched() {
        let e = enricher();
        let mut table = FlowTable::new(100, 600, 0);
        let mut ended = Vec::new();
        let pieces = [(0, 300), (300, 600), (1150, 1200)];
        for (start, end) in pieces {
            let o = outbound(orient(
                &record("10.10.1.1", "5.255.255.77", 1000, start, end),
                &e,
            ));
            table.update(&o, Destination::default, |_, k, c| ended.push((*k, *c)));
        }
        assert_eq!(table.len(), 1);
        let key = outbound(orient(&record("10.10.1.1", "5.255.255.77", 0, 0, 0), &e)).key();
        let c = table.get(&key).unwrap();
        assert_eq!(
            (c.first_ms, c.last_ms, c.bytes_out, c.flows),
            (0, 1_200_000, 3000, 3)
        );
        // The opposite direction feeds the same conversation's download.
        let back = outbound(orient(
            &record("5.255.255.77", "10.10.1.1", 5, 1200, 1201),
            &e,
        ));
        let mut reply = back;
        reply.inside_port = 50000;
        reply.outside_port = 443;
        table.update(&reply, Destination::default, |_, _, _| {});
        assert_eq!(table.get(&key).unwrap().bytes_in, 5);
        // A record after more than the idle timeout starts a new conversation.
        let late = outbound(orient(
            &record("10.10.1.1", "5.255.255.77", 1, 2000, 2001),
            &e,
        ));
        let (update, _, conversation) =
            table.update(&late, Destination::default, |_, k, c| ended.push((*k, *c)));
        assert_eq!((update, conversation.flows), (Update::Created, 1));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].1.bytes_out, 3000);
        assert_eq!(table.counters.conversations_expired, 1);
    }

    #[test]
    fn expiry_on_event_time_and_eviction_when_full() {
        let e = enricher();
        let mut table = FlowTable::new(10, 30, 30);
        for i in 0..10u64 {
            let mut r = record("10.10.1.1", "5.255.255.77", 1, i, i + 1);
            r.src_port = i as u16;
            table.update(
                &outbound(orient(&r, &e)),
                Destination::default,
                |_, _, _| {},
            );
        }
        let mut r = record("10.10.1.1", "5.255.255.77", 1, 20, 21);
        r.src_port = 99;
        let mut evicted = Vec::new();
        table.update(
            &outbound(orient(&r, &e)),
            Destination::default,
            |_, k, _| evicted.push(k.inside_port),
        );
        assert_eq!(evicted, vec![0], "the longest idle goes first");
        assert_eq!((table.len(), table.counters.conversations_evicted), (10, 1));
        let mut expired = 0;
        table.expire(70_500, |_, _, _| expired += 1);
        assert_eq!(
            expired, 9,
            "idle since 10 s or earlier at 70.5 s with a 60 s timeout"
        );
        assert_eq!(table.len(), 1);
    }

    /// A record of conversation `port` (the inside port tells conversations apart).
    fn on_port(port: u16, start_ms: u64, end_ms: u64) -> Oriented {
        Oriented {
            inside: "10.10.1.1".parse().unwrap(),
            outside: "5.255.255.77".parse().unwrap(),
            inside_port: port,
            outside_port: 443,
            proto: 6,
            bytes_out: 100,
            bytes_in: 10,
            packets_out: 2,
            packets_in: 1,
            start_ms,
            end_ms,
            outside_asn: 0,
            exporter: "192.0.2.1".parse().unwrap(),
            tcp_flags: 0,
            from_inside: true,
            continues: false,
            ends: false,
            interfaces: Default::default(),
        }
    }

    /// Runs `record` through `table`, returning the inside ports of what ended.
    fn run(table: &mut FlowTable, record: &Oriented) -> Vec<u16> {
        let mut ended = Vec::new();
        table.update(record, Destination::default, |_, k, _| {
            ended.push(k.inside_port)
        });
        ended
    }

    fn expire(table: &mut FlowTable, now_ms: u64) -> Vec<u16> {
        let mut ended = Vec::new();
        table.expire(now_ms, |_, k, _| ended.push(k.inside_port));
        ended
    }

    #[test]
    fn a_flow_the_exporter_ends_closes_its_conversation_once() {
        let mut table = FlowTable::new(100, 30, 30);
        let mut teardown = on_port(1, 10_000, 20_000);
        teardown.continues = true;
        assert!(run(&mut table, &on_port(1, 0, 10_000)).is_empty());
        assert!(run(&mut table, &on_port(2, 0, 10_000)).is_empty());
        assert!(run(&mut table, &teardown).is_empty());
        let conversation = *table.get(&teardown.key()).unwrap();
        // The teardown continues the flow: one flow, both reports' volume.
        assert_eq!((conversation.flows, conversation.bytes_out), (1, 200));
        let mut ended = Vec::new();
        assert!(table.close(&teardown.key(), |_, k, c| {
            ended.push((k.inside_port, c.bytes_out))
        }));
        assert_eq!(ended, [(1, 200)]);
        assert_eq!(table.counters.conversations_closed, 1);
        assert!(table.get(&teardown.key()).is_none());
        assert!(!table.close(&teardown.key(), |_, _, _| panic!("closed twice")));
        // The same 5-tuple again is a new conversation.
        assert!(run(&mut table, &on_port(1, 30_000, 31_000)).is_empty());
        assert_eq!(table.get(&teardown.key()).unwrap().flows, 1);
        assert_eq!(table.counters.conversations_created, 3);
        // Expiry ends the open ones and frees the closed entry without ending it again.
        let mut expired = expire(&mut table, 200_000);
        expired.sort_unstable();
        assert_eq!(expired, [1, 2]);
        assert_eq!(table.counters.conversations_expired, 2);
        assert!(table.is_empty());
    }

    #[test]
    fn a_lookup_made_before_earlier_records_ran_is_checked_not_trusted() {
        // A batch looks its records up before any runs: by a record's update, the
        // conversation found may have been closed, or evicted and its entry given to
        // another key, by the records before it.
        let mut table = FlowTable::new(1, 30, 30);
        let (first, other) = (on_port(1, 0, 1000), on_port(2, 2000, 3000));
        run(&mut table, &first);
        let (lookup, found) = table.look_up(&first, table.warm(&first));
        let (first_id, _) = found.expect("open");
        // The table is full: `other` takes the entry `first` held.
        run(&mut table, &other);
        let (update, id, conversation) =
            table.update_looked_up(&first, &lookup, Destination::default, |_, _, _| {});
        assert_eq!((update, conversation.bytes_out), (Update::Created, 100));
        assert_eq!(table.get(&first.key()).map(|c| c.flows), Some(1));
        assert!(
            table.get(&other.key()).is_none(),
            "evicted for `first`'s return"
        );
        assert_eq!(id, first_id, "the freed entry is reused");
        // Closed after its lookup: the record starts a new conversation.
        let (lookup, _) = table.look_up(&first, table.warm(&first));
        table.close(&first.key(), |_, _, _| {});
        let (update, _, conversation) =
            table.update_looked_up(&first, &lookup, Destination::default, |_, _, _| {});
        assert_eq!((update, conversation.flows), (Update::Created, 1));
        // Found and still open: extended.
        let (lookup, _) = table.look_up(&first, table.warm(&first));
        let (update, _, conversation) =
            table.update_looked_up(&first, &lookup, Destination::default, |_, _, _| {});
        assert_eq!((update, conversation.flows), (Update::Extended, 2));
        assert_eq!(table.counters.conversations_created, 4);
    }

    #[test]
    fn closed_entries_are_freed_first_and_not_counted_as_evictions() {
        let mut table = FlowTable::new(3, 30, 30);
        for port in 1..=3 {
            run(&mut table, &on_port(port, 0, 1000));
        }
        table.close(&on_port(2, 0, 0).key(), |_, _, _| {});
        // Full: room is made from the closed entry, nothing open is evicted.
        assert!(run(&mut table, &on_port(4, 2000, 3000)).is_empty());
        assert_eq!(table.counters.conversations_evicted, 0);
        let mut drained = Vec::new();
        table.drain(|_, k, _| drained.push(k.inside_port));
        drained.sort_unstable();
        assert_eq!(drained, [1, 3, 4]);
    }

    #[test]
    fn a_conversation_keeps_its_id_until_it_ends() {
        let mut table = FlowTable::new(100, 30, 30);
        let id = |table: &mut FlowTable, record: &Oriented| {
            let (_, id, _) = table.update(record, Destination::default, |_, _, _| {});
            id
        };
        let first = id(&mut table, &on_port(1, 0, 1000));
        let other = id(&mut table, &on_port(2, 0, 1000));
        assert_ne!(first, other);
        assert_eq!(id(&mut table, &on_port(1, 2000, 3000)), first, "extended");
        let key = on_port(1, 0, 0).key();
        assert_eq!(table.find(&key).map(|(id, _)| id), Some(first));
        assert_eq!(table.by_id(first).map(|(k, _)| *k), Some(key));
        // Restarted after the idle timeout: the old one ends with the id, the new keeps it.
        let mut ended = Vec::new();
        let (update, restarted, _) = table.update(
            &on_port(1, 100_000, 101_000),
            Destination::default,
            |id, k, _| ended.push((id, k.inside_port)),
        );
        assert_eq!(
            (update, restarted, ended),
            (Update::Created, first, vec![(first, 1)])
        );
        // Closed: no longer found by id; once freed, the id goes to the next conversation.
        let mut closed = Vec::new();
        table.close(&key, |id, _, _| closed.push(id));
        assert_eq!((closed, table.by_id(first)), (vec![first], None));
        expire(&mut table, 1_000_000);
        assert!(table.is_empty() && table.by_id(other).is_none());
        let next = id(&mut table, &on_port(3, 2_000_000, 2_001_000));
        assert!(next == first || next == other, "ids are reused");
    }

    #[test]
    fn an_extended_conversation_outlives_its_first_deadline() {
        // Conversations end after 60 s of idleness.
        let mut table = FlowTable::new(100, 30, 30);
        run(&mut table, &on_port(1, 0, 1_000));
        run(&mut table, &on_port(2, 0, 1_000));
        // Filed in the wheel to end at 61 s; extended to 50 s, it ends at 110 s.
        run(&mut table, &on_port(1, 20_000, 50_000));
        assert_eq!(expire(&mut table, 61_001), vec![2]);
        assert_eq!(expire(&mut table, 110_000), Vec::<u16>::new());
        assert_eq!(expire(&mut table, 110_001), vec![1]);
        assert!(table.is_empty());
        assert_eq!(table.counters.conversations_expired, 2);
    }

    #[test]
    fn eviction_takes_the_stalest_first() {
        let mut table = FlowTable::new(20, 30, 30);
        // Last active at 1 s to 9.55 s, 450 ms apart, in a shuffled order: two or three
        // to a wheel slot.
        let mut lasts: Vec<(u64, u16)> = (0..20u16)
            .map(|port| (1_000 + u64::from(port) * 7_919 % 20 * 450, port))
            .collect();
        for &(last, port) in &lasts {
            run(&mut table, &on_port(port, last - 500, last));
        }
        // The stalest, extended, is not stale any more.
        lasts.sort();
        let (_, extended) = lasts.remove(0);
        run(&mut table, &on_port(extended, 9_000, 10_000));
        // Full: a new conversation ends the stalest tenth, stalest first.
        let mut evicted = Vec::new();
        table.update(
            &on_port(99, 10_000, 11_000),
            Destination::default,
            |_, k, c| evicted.push((c.last_ms, k.inside_port)),
        );
        assert_eq!(evicted, lasts[..2]);
        assert_eq!((table.len(), table.counters.conversations_evicted), (19, 2));
        run(&mut table, &on_port(100, 10_000, 11_000));
        let mut evicted = Vec::new();
        table.update(
            &on_port(101, 10_000, 11_000),
            Destination::default,
            |_, k, c| evicted.push((c.last_ms, k.inside_port)),
        );
        assert_eq!(evicted, lasts[2..4]);
        assert_eq!(table.counters.conversations_evicted, 4);
    }

    #[test]
    fn records_behind_the_clock_within_the_lateness_keep_their_conversations() {
        // Stitched 30 s apart, records up to 60 s late: conversations end 90 s idle.
        let mut table = FlowTable::new(100, 30, 60);
        run(&mut table, &on_port(1, 100_000, 101_000));
        assert_eq!(expire(&mut table, 150_000), Vec::<u16>::new());
        // 55 s behind the clock, a new conversation: due (185 s) before the wheel's
        // cursor (191 s, the first deadline it was given), it is filed there and ends no
        // earlier than its deadline.
        run(&mut table, &on_port(3, 94_000, 95_000));
        assert_eq!(expire(&mut table, 185_000), Vec::<u16>::new());
        // Older than its conversation's first record: stitched in, nothing ends.
        assert_eq!(
            run(&mut table, &on_port(1, 40_000, 45_000)),
            Vec::<u16>::new()
        );
        let first = table.get(&on_port(1, 0, 0).key()).unwrap();
        assert_eq!(
            (first.first_ms, first.last_ms, first.flows),
            (40_000, 101_000, 2)
        );
        let mut ended = expire(&mut table, 191_001);
        ended.sort();
        assert_eq!(ended, vec![1, 3]);
        assert_eq!(table.counters.conversations_created, 2);
    }

    #[test]
    fn a_reused_handle_is_not_ended_by_its_previous_conversation() {
        let mut table = FlowTable::new(100, 30, 30);
        let handle = |table: &FlowTable, port: u16| {
            let key = on_port(port, 0, 0).key();
            let hash = table.conversations.hash(&key);
            table.conversations.find(hash, &key)
        };
        // Expired at 61 s: its handle goes to the next conversation, due at 122 s.
        run(&mut table, &on_port(1, 0, 1_000));
        assert_eq!(expire(&mut table, 61_001), vec![1]);
        run(&mut table, &on_port(2, 61_000, 62_000));
        assert_eq!((handle(&table, 1), handle(&table, 2)), (None, Some(0)));
        assert_eq!(expire(&mut table, 70_000), Vec::<u16>::new());
        assert_eq!(expire(&mut table, 122_000), Vec::<u16>::new());
        assert_eq!(expire(&mut table, 122_001), vec![2]);
        // Ended by a long silence, a conversation starts again in the same entry: the
        // first one's deadline (261 s) is not the second's (301 s).
        run(&mut table, &on_port(3, 200_000, 201_000));
        assert_eq!(run(&mut table, &on_port(3, 240_000, 241_000)), vec![3]);
        assert_eq!(expire(&mut table, 262_000), Vec::<u16>::new());
        assert_eq!(expire(&mut table, 301_001), vec![3]);
        // Evicted: the handle's next conversation is not evicted or expired in its place.
        let mut table = FlowTable::new(2, 30, 30);
        run(&mut table, &on_port(4, 0, 1_000));
        run(&mut table, &on_port(5, 50_000, 50_000));
        assert_eq!(run(&mut table, &on_port(6, 60_000, 60_000)), vec![4]);
        assert_eq!(handle(&table, 6), Some(0));
        assert_eq!(expire(&mut table, 110_001), vec![5]);
        assert_eq!(expire(&mut table, 120_000), Vec::<u16>::new());
        assert_eq!(expire(&mut table, 120_001), vec![6]);
    }

    #[test]
    fn drain_ends_every_conversation_in_handle_order() {
        let mut table = FlowTable::new(100, 30, 30);
        for port in 0..5 {
            let at = if port == 1 { 0 } else { 50_000 };
            run(&mut table, &on_port(port, at, at));
        }
        assert_eq!(expire(&mut table, 60_001), vec![1]);
        // Port 7 takes the handle port 1 left.
        run(&mut table, &on_port(7, 60_000, 60_000));
        let mut drained = Vec::new();
        table.drain(|_, k, _| drained.push(k.inside_port));
        assert_eq!(drained, vec![0, 7, 2, 3, 4]);
        assert!(table.is_empty());
        assert_eq!(table.wheel.len(), 0);
        assert_eq!(
            (
                table.counters.conversations_created,
                table.counters.conversations_expired
            ),
            (6, 1)
        );
        // And it works on.
        run(&mut table, &on_port(1, 70_000, 70_000));
        assert_eq!(expire(&mut table, 130_001), vec![1]);
    }

    /// The table against a model that does the obvious: a sorted map, scanned to expire
    /// and evict. The same calls must end the same conversations with the same counters;
    /// a twin table must end them in the same order (a different hash seed: the order
    /// must not depend on it).
    #[test]
    fn behaves_like_a_scanned_map() {
        for seed in [0x2545_f491_4f6c_dd1d, 1, 0xdead_beef, 0x9e37_79b9_7f4a_7c15] {
            behaves_like_a_scanned_map_from(seed);
        }
    }

    fn behaves_like_a_scanned_map_from(mut seed: u64) {
        const MAX: usize = 50;
        const IDLE_MS: u64 = 5_000;
        const EXPIRY_MS: u64 = 8_000;
        let mut random = move |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let mut table = FlowTable::new(MAX, 5, 3);
        let mut twin = FlowTable::new(MAX, 5, 3);
        let mut model: BTreeMap<ConversationKey, Conversation> = BTreeMap::new();
        let mut counters = FlowCounters::default();
        let (mut now_ms, mut next_tick_ms) = (1_000_000u64, 1_002_000u64);
        let sorted = |mut ended: Vec<(ConversationKey, Conversation)>| {
            ended.sort_by_key(|(k, _)| *k);
            ended
        };
        for step in 0..6_000 {
            // Mostly a few hundred ms on; now and then a silence, rarely a long one (over
            // a turn of the wheel).
            now_ms += match random(100) {
                0 => 20_000,
                1 if random(5) == 0 => 300_000,
                _ => random(150),
            };
            // Ticks as the pipeline's: expire at the latest time once a tick has passed.
            if now_ms >= next_tick_ms {
                let (mut got, mut again) = (Vec::new(), Vec::new());
                table.expire(now_ms, |_, k, c| got.push((*k, *c)));
                twin.expire(now_ms, |_, k, c| again.push((*k, *c)));
                assert_eq!(got, again, "step {step}: the same order every run");
                let horizon = now_ms - EXPIRY_MS;
                let expected: Vec<_> = model
                    .iter()
                    .filter(|(_, c)| c.last_ms < horizon)
                    .map(|(k, c)| (*k, *c))
                    .collect();
                model.retain(|_, c| c.last_ms >= horizon);
                counters.conversations_expired += expected.len() as u64;
                assert_eq!(sorted(got), expected, "step {step}: expired at {now_ms}");
                next_tick_ms = now_ms - now_ms % 2_000 + 2_000;
            }
            // 80 conversations for 50 places; some records late, a few very late.
            let port = random(80) as u16;
            let start_ms = now_ms.saturating_sub(match random(50) {
                0 => 30_000,
                _ => random(2_000),
            });
            let mut record = on_port(port, start_ms, start_ms + random(1_500));
            record.bytes_out = random(1 << 20);
            let destination = || Destination {
                asn: std::num::NonZeroU32::new(u32::from(port) + 1),
                ..Destination::default()
            };
            let (mut got, mut again) = (Vec::new(), Vec::new());
            let (update, _, conversation) =
                table.update(&record, destination, |_, k, c| got.push((*k, *c)));
            let (update, conversation) = (update, *conversation);
            twin.update(&record, destination, |_, k, c| again.push((*k, *c)));
            assert_eq!(got, again, "step {step}: the same order every run");

            // The model.
            let key = record.key();
            counters.records += 1;
            let fresh = |destination| Conversation::first(&record, destination);
            let (expected_update, expected_ended) = match model.get_mut(&key) {
                Some(c) if record.start_ms <= c.last_ms + IDLE_MS => {
                    c.opening.observe(&record, record.start_ms < c.first_ms);
                    c.first_ms = c.first_ms.min(record.start_ms);
                    c.last_ms = c.last_ms.max(record.end_ms);
                    c.bytes_out += record.bytes_out;
                    c.bytes_in += record.bytes_in;
                    c.packets_out += record.packets_out;
                    c.packets_in += record.packets_in;
                    c.flows += 1;
                    (Update::Extended, Vec::new())
                }
                Some(c) => {
                    let old = *c;
                    *c = fresh(old.destination);
                    counters.conversations_expired += 1;
                    counters.conversations_created += 1;
                    (Update::Created, vec![(key, old)])
                }
                None => {
                    let mut evicted = Vec::new();
                    if model.len() == MAX {
                        // Which of equally stale ones go is the table's choice: check it
                        // took the stalest, as many as it should.
                        evicted = got.clone();
                        assert_eq!(evicted.len(), MAX / 10, "step {step}");
                        for (k, c) in &evicted {
                            assert_eq!(model.remove(k).as_ref(), Some(c), "step {step}");
                        }
                        let newest = evicted.iter().map(|(_, c)| c.last_ms).max();
                        let oldest_left = model.values().map(|c| c.last_ms).min();
                        assert!(newest <= oldest_left, "step {step}: not the stalest");
                        counters.conversations_evicted += evicted.len() as u64;
                    }
                    model.insert(key, fresh(destination()));
                    counters.conversations_created += 1;
                    (Update::Created, evicted)
                }
            };
            assert_eq!(got, expected_ended, "step {step}: ended by {record:?}");
            assert_eq!(
                (update, &conversation),
                (expected_update, &model[&key]),
                "step {step}"
            );
            assert_eq!(table.counters, counters, "step {step}");
            assert_eq!(table.len(), model.len(), "step {step}");
        }
        for port in 0..80 {
            let key = on_port(port, 0, 0).key();
            assert_eq!(table.get(&key), model.get(&key));
        }
        let (mut got, mut again) = (Vec::new(), Vec::new());
        table.drain(|_, k, c| got.push((*k, *c)));
        twin.drain(|_, k, c| again.push((*k, *c)));
        assert_eq!(got, again);
        assert_eq!(sorted(got), model.into_iter().collect::<Vec<_>>());
        assert!(counters.conversations_evicted > 100 && counters.conversations_expired > 100);
    }
}
