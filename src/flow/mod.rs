//! flow: records oriented inside -> outside and stitched into conversations in an in-memory
//! table bounded by a maximum size, expired on event time (the exporters' clocks).
//!
//! One `FlowTable` is one shard, owned by one thread: the pipeline shards by the inside
//! address, so a host's conversations and its detectors' state live together and no lock
//! is taken per record.
//!
//! A table is three parts: the entries in a slab addressed by `u32` handles (`slab`), an
//! index of handles by key, and a timer wheel of handles by deadline (`wheel`) from which
//! expiry and eviction take the stalest conversations.

pub mod clock;
pub mod community_id;
mod config;
mod initiator;
mod slab;
mod wheel;

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use foldhash::HashMap;
use foldhash::fast::RandomState;
use hashbrown::HashTable;

pub use self::config::{BYTES_PER_CONVERSATION, FlowConfig};
pub use self::initiator::{Evidence, Initiator, Opening};
use self::slab::{MAX_HANDLES, Slab};
use self::wheel::Wheel;

use crate::decode::FlowRecord;
use crate::enrich::{Destination, Enricher};

/// A record seen from the inside: what one inside host exchanged with one outside endpoint.
/// Counters are multiplied by the sampling rate (estimates of the real traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oriented {
    pub inside: IpAddr,
    pub outside: IpAddr,
    pub inside_port: u16,
    pub outside_port: u16,
    pub proto: u8,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The outside end's AS number as the exporter sent it (0: none).
    pub outside_asn: u32,
    pub exporter: IpAddr,
    /// The OR of the TCP flags of the record's packets (0: none sent).
    pub tcp_flags: u8,
    /// The record's source is the inside host (its forward counters are the upload).
    pub from_inside: bool,
    /// The exporter reported this flow before (`FlowRecord::continues_flow`): not another
    /// flow of the conversation.
    pub continues: bool,
    /// The exporter says the connection is over (`FlowRecord::ends_connection`): its
    /// conversation ends now rather than at the idle timeout.
    pub ends: bool,
}

impl Oriented {
    pub fn key(&self) -> ConversationKey {
        ConversationKey {
            inside: self.inside,
            outside: self.outside,
            inside_port: self.inside_port,
            outside_port: self.outside_port,
            proto: self.proto,
        }
    }
}

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    Outbound(Oriented),
    /// Both ends outside: traffic passing through, counted and skipped.
    Transit,
    /// Both ends inside: east-west traffic, counted and skipped.
    Internal,
}

/// Orients a decoded record with the inside networks. A record from outside to inside
/// counts as the inside host's download; RFC 5103 reverse counters go the other way.
///
/// Behind a NAT the inside host is the untranslated address: a firewall's record of an
/// outbound connection has it as the source (its post-NAT source is the public address); of
/// an inbound one to a published server, the post-NAT destination may be it while the
/// destination is the public address. An end that is not inside but whose post-NAT address
/// is stands for that inside host, with its post-NAT port.
pub fn orient(record: &FlowRecord, enricher: &Enricher) -> Orientation {
    let translated = |addr: IpAddr, port: u16, post_nat: IpAddr, post_port: u16| {
        if enricher.is_inside(addr) {
            Some((addr, port))
        } else if !post_nat.is_unspecified() && enricher.is_inside(post_nat) {
            Some((post_nat, if post_port != 0 { post_port } else { port }))
        } else {
            None
        }
    };
    let src = translated(
        record.src_addr,
        record.src_port,
        record.post_nat_src_addr,
        record.post_nat_src_port,
    );
    let dst = translated(
        record.dst_addr,
        record.dst_port,
        record.post_nat_dst_addr,
        record.post_nat_dst_port,
    );
    let src_inside = src.is_some();
    let rate = u64::from(record.sampling_rate.max(1));
    let forward = (
        record.bytes.saturating_mul(rate),
        record.packets.saturating_mul(rate),
    );
    let reverse = (
        record.reverse_bytes.saturating_mul(rate),
        record.reverse_packets.saturating_mul(rate),
    );
    let ends = record.ends_connection();
    let base = |(inside, inside_port): (IpAddr, u16),
                outside,
                outside_port,
                out: (u64, u64),
                inn: (u64, u64),
                asn| {
        Oriented {
            tcp_flags: record.tcp_flags,
            from_inside: src_inside,
            inside,
            outside,
            inside_port,
            outside_port,
            proto: record.proto,
            bytes_out: out.0,
            packets_out: out.1,
            bytes_in: inn.0,
            packets_in: inn.1,
            start_ms: record.time_flow_start_ns / 1_000_000,
            end_ms: record.time_flow_end_ns / 1_000_000,
            outside_asn: asn,
            exporter: record.sampler_address,
            continues: record.continues_flow,
            ends,
        }
    };
    match (src, dst) {
        (Some(inside), None) => Orientation::Outbound(base(
            inside,
            record.dst_addr,
            record.dst_port,
            forward,
            reverse,
            record.dst_as,
        )),
        (None, Some(inside)) => Orientation::Outbound(base(
            inside,
            record.src_addr,
            record.src_port,
            reverse,
            forward,
            record.src_as,
        )),
        (None, None) => Orientation::Transit,
        (Some(_), Some(_)) => Orientation::Internal,
    }
}

/// A conversation's identity: the oriented 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey {
    pub inside: IpAddr,
    pub outside: IpAddr,
    pub inside_port: u16,
    pub outside_port: u16,
    pub proto: u8,
}

/// One stitched conversation: every record of the same 5-tuple (both directions) that
/// followed the previous one within the idle timeout.
/// 64 bytes: with its 40-byte key, one table entry is 104 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversation {
    pub first_ms: u64,
    pub last_ms: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    /// Records stitched in (saturating: a conversation of 65,535 records is a 45-day one
    /// at a one-minute active timeout). 16 bits leave room for `opening` in 64 bytes.
    pub flows: u16,
    /// Who opened the conversation, and from what evidence.
    pub opening: Opening,
    pub destination: Destination,
}

impl Conversation {
    /// A conversation begun by `record`.
    pub fn first(record: &Oriented, destination: Destination) -> Conversation {
        Conversation {
            first_ms: record.start_ms,
            last_ms: record.end_ms.max(record.start_ms),
            bytes_out: record.bytes_out,
            bytes_in: record.bytes_in,
            packets_out: record.packets_out,
            packets_in: record.packets_in,
            flows: 1,
            opening: Opening::first(record),
            destination,
        }
    }

    pub fn duration_ms(&self) -> u64 {
        self.last_ms.saturating_sub(self.first_ms)
    }

    /// Who opened the conversation.
    pub fn initiator(&self) -> Initiator {
        self.opening.initiator()
    }
}

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
        let handle = self.conversations.find(self.conversations.hash(key), key)?;
        Some(&self.conversations.get(handle).conversation)
    }

    /// Brings the record's conversation into the cache ahead of [`FlowTable::update`]: the
    /// lookups of a batch then overlap in memory instead of stalling one by one.
    #[inline]
    pub fn warm(&self, record: &Oriented) {
        let key = record.key();
        if let Some(handle) = self.conversations.find(self.conversations.hash(&key), &key) {
            // Both ends of the entry: the key and the counters are on different lines.
            let conversation = &self.conversations.get(handle).conversation;
            std::hint::black_box((conversation.last_ms, conversation.flows));
        }
    }

    /// When a conversation last active at `last_ms` ends.
    fn deadline(&self, last_ms: u64) -> u64 {
        last_ms.saturating_add(self.expiry_ms)
    }

    /// Stitches a record into its conversation, or starts one (looking the destination up
    /// once with `destination`). A record that starts more than the idle timeout after the
    /// conversation's last activity starts a new one; `ended` receives the old one. One
    /// hash lookup per record.
    pub fn update(
        &mut self,
        record: &Oriented,
        destination: impl FnOnce() -> Destination,
        mut ended: impl FnMut(&ConversationKey, &Conversation),
    ) -> (Update, &Conversation) {
        self.counters.records += 1;
        let key = record.key();
        let hash = self.conversations.hash(&key);
        let fresh = |destination: Destination| Conversation::first(record, destination);
        if let Some(handle) = self.conversations.find(hash, &key) {
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
                return (Update::Extended, conversation);
            }
            // Too long a silence: the old conversation ended, a new one starts in its entry
            // (still filed at the old deadline, an earlier one: refiled when reached). The
            // destination facts stay (same outside address).
            ended(&key, conversation);
            self.counters.conversations_expired += 1;
            self.counters.conversations_created += 1;
            *conversation = fresh(conversation.destination);
            return (Update::Created, conversation);
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
        ended: impl FnOnce(&ConversationKey, &Conversation),
    ) -> bool {
        let Some(handle) = self.conversations.find(self.conversations.hash(key), key) else {
            return false;
        };
        self.conversations.unindex(handle);
        let entry = self.conversations.entries.get_mut(handle);
        ended(&entry.key, &entry.conversation);
        entry.conversation.flows = 0;
        entry.conversation.last_ms = 0;
        self.counters.conversations_closed += 1;
        true
    }

    /// Ends every conversation idle for longer than the idle timeout plus the lateness
    /// allowed for records, at event time `now_ms`. Visits the wheel's slots up to
    /// `now_ms`: the conversations ending and those extended since they were filed.
    pub fn expire(&mut self, now_ms: u64, mut ended: impl FnMut(&ConversationKey, &Conversation)) {
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
                ended(&entry.key, &entry.conversation);
                *expired += 1;
            }
            None
        });
    }

    /// Ends every conversation (end of input), in the order of their handles.
    pub fn drain(&mut self, mut ended: impl FnMut(&ConversationKey, &Conversation)) {
        for entry in self.conversations.entries.iter() {
            if !entry.is_closed() {
                ended(&entry.key, &entry.conversation);
            }
        }
        self.conversations.clear();
        self.wheel.clear();
    }

    /// The table is full: end the longest-idle tenth of it (at least one), counted as
    /// evictions. The wheel's oldest slots hold them: each slot taken is sorted by last
    /// activity (ties by handle, for the same order on every run), and what is left of the
    /// last one goes back.
    fn evict_for_room(&mut self, ended: &mut impl FnMut(&ConversationKey, &Conversation)) {
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
                        ended(&entry.key, &entry.conversation);
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

/// Removes the stalest tenth (at least one) of a full map, by `last_ms`, calling `evicted`
/// for each: the bound every exporter-controlled map keeps. One pass finds the cut-off, one
/// removes; amortised over the inserts the freed room admits.
pub fn evict_stalest<K, V>(
    map: &mut HashMap<K, V>,
    last_ms: impl Fn(&V) -> u64,
    mut evicted: impl FnMut(&K, &V),
) -> usize {
    let target = (map.len() / 10).max(1);
    let mut seen: Vec<u64> = map.values().map(&last_ms).collect();
    if seen.is_empty() {
        return 0;
    }
    let index = target.min(seen.len()) - 1;
    let (below, &mut cut, _) = seen.select_nth_unstable(index);
    // Everything older than the cut-off goes, then as many at the cut-off as fit.
    let mut ties = target - below.iter().filter(|&&ms| ms < cut).count();
    let mut removed = 0;
    map.retain(|key, value| {
        let ms = last_ms(value);
        let evict = ms < cut || (ms == cut && ties > 0);
        if evict {
            ties -= usize::from(ms == cut);
            removed += 1;
            evicted(key, value);
        }
        !evict
    });
    removed
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    fn enricher() -> Enricher {
        let config = Config {
            inside: vec!["10.10.0.0/16".parse().unwrap()],
            ..Config::default()
        };
        Enricher::new(
            std::sync::Arc::new(crate::enrich::Geo::embedded().unwrap()),
            &config.endpoint_settings(),
            Default::default(),
        )
    }

    fn record(src: &str, dst: &str, bytes: u64, start_s: u64, end_s: u64) -> FlowRecord {
        FlowRecord {
            src_addr: src.parse().unwrap(),
            dst_addr: dst.parse().unwrap(),
            src_port: 50000,
            dst_port: 443,
            proto: 6,
            bytes,
            packets: 10,
            time_flow_start_ns: start_s * 1_000_000_000,
            time_flow_end_ns: end_s * 1_000_000_000,
            ..FlowRecord::default()
        }
    }

    fn outbound(o: Orientation) -> Oriented {
        match o {
            Orientation::Outbound(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nat_orientation_takes_the_untranslated_inside_host() {
        let enricher = enricher();
        // Outbound through source NAT: the source is the inside host, its post-NAT source
        // the public address; the outside end is the destination.
        let snat = FlowRecord {
            src_addr: "10.10.5.5".parse().unwrap(),
            dst_addr: "5.255.255.77".parse().unwrap(),
            src_port: 50000,
            dst_port: 443,
            post_nat_src_addr: "198.51.100.7".parse().unwrap(),
            post_nat_src_port: 61000,
            bytes: 100,
            ..FlowRecord::default()
        };
        let o = outbound(orient(&snat, &enricher));
        assert_eq!(
            (o.inside, o.inside_port, o.outside, o.bytes_out),
            (
                "10.10.5.5".parse().unwrap(),
                50000,
                "5.255.255.77".parse().unwrap(),
                100
            )
        );
        // Inbound to a published server: the destination is the public address, the
        // post-NAT destination the inside server, which is the inside host.
        let inbound = FlowRecord {
            src_addr: "5.255.255.77".parse().unwrap(),
            dst_addr: "198.51.100.8".parse().unwrap(),
            src_port: 40000,
            dst_port: 443,
            post_nat_dst_addr: "10.10.9.9".parse().unwrap(),
            post_nat_dst_port: 8443,
            bytes: 700,
            reverse_bytes: 90,
            flow_end_reason: 3,
            ..FlowRecord::default()
        };
        let o = outbound(orient(&inbound, &enricher));
        assert_eq!(
            (o.inside, o.inside_port, o.outside, o.outside_port),
            (
                "10.10.9.9".parse().unwrap(),
                8443,
                "5.255.255.77".parse().unwrap(),
                40000
            )
        );
        assert_eq!(
            (o.bytes_in, o.bytes_out, o.from_inside, o.ends),
            (700, 90, false, true)
        );
        // Without NAT fields the public address is outside: transit.
        let plain = FlowRecord {
            post_nat_dst_addr: FlowRecord::default().src_addr,
            ..inbound
        };
        assert_eq!(orient(&plain, &enricher), Orientation::Transit);
    }

    #[test]
    fn a_conversation_is_small() {
        assert_eq!(std::mem::size_of::<Conversation>(), 64);
        assert_eq!(std::mem::size_of::<Entry>(), 104);
        // A vacant slab entry (a link in the free list) costs nothing more.
        assert_eq!(Slab::<Entry>::slot_size(), 104);
    }

    #[test]
    fn orientation_follows_the_inside_networks() {
        let e = enricher();
        let up = outbound(orient(&record("10.10.1.1", "5.255.255.77", 100, 0, 1), &e));
        assert_eq!(
            (up.inside.to_string(), up.bytes_out, up.bytes_in),
            ("10.10.1.1".into(), 100, 0)
        );
        assert_eq!((up.inside_port, up.outside_port), (50000, 443));
        let down = outbound(orient(&record("5.255.255.77", "10.10.1.1", 100, 0, 1), &e));
        assert_eq!(
            (down.inside.to_string(), down.bytes_out, down.bytes_in),
            ("10.10.1.1".into(), 0, 100)
        );
        assert_eq!((down.inside_port, down.outside_port), (443, 50000));
        assert_eq!(down.key().outside_port, 50000);
        assert_eq!(
            orient(&record("8.8.8.8", "1.1.1.1", 1, 0, 1), &e),
            Orientation::Transit
        );
        assert_eq!(
            orient(&record("10.10.1.1", "10.10.2.2", 1, 0, 1), &e),
            Orientation::Internal
        );
    }

    #[test]
    fn sampling_rate_and_reverse_counters() {
        let e = enricher();
        let mut r = record("5.255.255.77", "10.10.1.1", 100, 0, 1);
        r.reverse_bytes = 7;
        r.reverse_packets = 1;
        r.sampling_rate = 10;
        let o = outbound(orient(&r, &e));
        assert_eq!(
            (o.bytes_out, o.packets_out, o.bytes_in, o.packets_in),
            (70, 10, 1000, 100)
        );
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
            table.update(&o, Destination::default, |k, c| ended.push((*k, *c)));
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
        table.update(&reply, Destination::default, |_, _| {});
        assert_eq!(table.get(&key).unwrap().bytes_in, 5);
        // A record after more than the idle timeout starts a new conversation.
        let late = outbound(orient(
            &record("10.10.1.1", "5.255.255.77", 1, 2000, 2001),
            &e,
        ));
        let (update, conversation) =
            table.update(&late, Destination::default, |k, c| ended.push((*k, *c)));
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
            table.update(&outbound(orient(&r, &e)), Destination::default, |_, _| {});
        }
        let mut r = record("10.10.1.1", "5.255.255.77", 1, 20, 21);
        r.src_port = 99;
        let mut evicted = Vec::new();
        table.update(&outbound(orient(&r, &e)), Destination::default, |k, _| {
            evicted.push(k.inside_port)
        });
        assert_eq!(evicted, vec![0], "the longest idle goes first");
        assert_eq!((table.len(), table.counters.conversations_evicted), (10, 1));
        let mut expired = 0;
        table.expire(70_500, |_, _| expired += 1);
        assert_eq!(
            expired, 9,
            "idle since 10 s or earlier at 70.5 s with a 60 s timeout"
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn evict_stalest_takes_the_oldest_before_equally_old_ones() {
        // A tenth of 20 is 2: the oldest, then one of the 19 tied at the cut-off, whatever
        // the map's order.
        let mut map: HashMap<u16, u64> = (0..20).map(|k| (k, 5)).collect();
        map.insert(7, 1);
        let mut evicted = Vec::new();
        assert_eq!(
            evict_stalest(&mut map, |&v| v, |&k, &v| evicted.push((k, v))),
            2
        );
        assert!(evicted.contains(&(7, 1)), "{evicted:?}");
        assert_eq!(map.len(), 18);
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
        }
    }

    /// Runs `record` through `table`, returning the inside ports of what ended.
    fn run(table: &mut FlowTable, record: &Oriented) -> Vec<u16> {
        let mut ended = Vec::new();
        table.update(record, Destination::default, |k, _| {
            ended.push(k.inside_port)
        });
        ended
    }

    fn expire(table: &mut FlowTable, now_ms: u64) -> Vec<u16> {
        let mut ended = Vec::new();
        table.expire(now_ms, |k, _| ended.push(k.inside_port));
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
        assert!(table.close(&teardown.key(), |k, c| {
            ended.push((k.inside_port, c.bytes_out))
        }));
        assert_eq!(ended, [(1, 200)]);
        assert_eq!(table.counters.conversations_closed, 1);
        assert!(table.get(&teardown.key()).is_none());
        assert!(!table.close(&teardown.key(), |_, _| panic!("closed twice")));
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
    fn closed_entries_are_freed_first_and_not_counted_as_evictions() {
        let mut table = FlowTable::new(3, 30, 30);
        for port in 1..=3 {
            run(&mut table, &on_port(port, 0, 1000));
        }
        table.close(&on_port(2, 0, 0).key(), |_, _| {});
        // Full: room is made from the closed entry, nothing open is evicted.
        assert!(run(&mut table, &on_port(4, 2000, 3000)).is_empty());
        assert_eq!(table.counters.conversations_evicted, 0);
        let mut drained = Vec::new();
        table.drain(|k, _| drained.push(k.inside_port));
        drained.sort_unstable();
        assert_eq!(drained, [1, 3, 4]);
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
            |k, c| evicted.push((c.last_ms, k.inside_port)),
        );
        assert_eq!(evicted, lasts[..2]);
        assert_eq!((table.len(), table.counters.conversations_evicted), (19, 2));
        run(&mut table, &on_port(100, 10_000, 11_000));
        let mut evicted = Vec::new();
        table.update(
            &on_port(101, 10_000, 11_000),
            Destination::default,
            |k, c| evicted.push((c.last_ms, k.inside_port)),
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
        table.drain(|k, _| drained.push(k.inside_port));
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
                table.expire(now_ms, |k, c| got.push((*k, *c)));
                twin.expire(now_ms, |k, c| again.push((*k, *c)));
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
            let (update, conversation) =
                table.update(&record, destination, |k, c| got.push((*k, *c)));
            let (update, conversation) = (update, *conversation);
            twin.update(&record, destination, |k, c| again.push((*k, *c)));
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
        table.drain(|k, c| got.push((*k, *c)));
        twin.drain(|k, c| again.push((*k, *c)));
        assert_eq!(got, again);
        assert_eq!(sorted(got), model.into_iter().collect::<Vec<_>>());
        assert!(counters.conversations_evicted > 100 && counters.conversations_expired > 100);
    }
}
