//! flow: records oriented inside -> outside and stitched into conversations in an in-memory
//! table bounded by a maximum size, expired on event time (the exporters' clocks).
//!
//! One `FlowTable` is one shard, owned by one thread: the pipeline shards by the inside
//! address, so a host's conversations and its detectors' state live together and no lock
//! is taken per record.

use std::collections::hash_map::Entry;

use foldhash::{HashMap, HashMapExt};
use std::net::IpAddr;

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
pub fn orient(record: &FlowRecord, enricher: &Enricher) -> Orientation {
    let src_inside = enricher.is_inside(record.src_addr);
    let dst_inside = enricher.is_inside(record.dst_addr);
    let rate = u64::from(record.sampling_rate.max(1));
    let forward = (
        record.bytes.saturating_mul(rate),
        record.packets.saturating_mul(rate),
    );
    let reverse = (
        record.reverse_bytes.saturating_mul(rate),
        record.reverse_packets.saturating_mul(rate),
    );
    let base =
        |inside, outside, inside_port, outside_port, out: (u64, u64), inn: (u64, u64), asn| {
            Oriented {
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
            }
        };
    match (src_inside, dst_inside) {
        (true, false) => Orientation::Outbound(base(
            record.src_addr,
            record.dst_addr,
            record.src_port,
            record.dst_port,
            forward,
            reverse,
            record.dst_as,
        )),
        (false, true) => Orientation::Outbound(base(
            record.dst_addr,
            record.src_addr,
            record.dst_port,
            record.src_port,
            reverse,
            forward,
            record.src_as,
        )),
        (false, false) => Orientation::Transit,
        (true, true) => Orientation::Internal,
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
    /// Records stitched in.
    pub flows: u32,
    pub destination: Destination,
}

impl Conversation {
    pub fn duration_ms(&self) -> u64 {
        self.last_ms.saturating_sub(self.first_ms)
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
}

impl FlowCounters {
    pub fn merge(&mut self, other: &FlowCounters) {
        self.records += other.records;
        self.transit_records += other.transit_records;
        self.internal_records += other.internal_records;
        self.conversations_created += other.conversations_created;
        self.conversations_expired += other.conversations_expired;
        self.conversations_evicted += other.conversations_evicted;
    }
}

/// One shard of the conversation table.
#[derive(Debug)]
pub struct FlowTable {
    conversations: HashMap<ConversationKey, Conversation>,
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
    /// A shard of at most `max_conversations`, stitching records `idle_timeout_s` apart and
    /// ending conversations idle for `idle_timeout_s + late_records_s` of event time.
    pub fn new(max_conversations: usize, idle_timeout_s: u64, late_records_s: u64) -> Self {
        FlowTable {
            conversations: HashMap::new(),
            max_conversations: max_conversations.max(1),
            idle_timeout_ms: idle_timeout_s.saturating_mul(1000),
            expiry_ms: idle_timeout_s
                .saturating_add(late_records_s)
                .saturating_mul(1000),
            counters: FlowCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.conversations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conversations.is_empty()
    }

    pub fn get(&self, key: &ConversationKey) -> Option<&Conversation> {
        self.conversations.get(key)
    }

    /// Stitches a record into its conversation, or starts one (looking the destination up
    /// once with `destination`). A record that starts more than the idle timeout after the
    /// conversation's last activity starts a new one; `ended` receives the old one. One
    /// hash lookup per record (two when the table is full).
    pub fn update(
        &mut self,
        record: &Oriented,
        destination: impl FnOnce() -> Destination,
        mut ended: impl FnMut(&ConversationKey, &Conversation),
    ) -> (Update, &Conversation) {
        self.counters.records += 1;
        let key = record.key();
        if self.conversations.len() >= self.max_conversations
            && !self.conversations.contains_key(&key)
        {
            self.evict_for_room(&mut ended);
        }
        let fresh = |destination: Destination| Conversation {
            first_ms: record.start_ms,
            last_ms: record.end_ms.max(record.start_ms),
            bytes_out: record.bytes_out,
            bytes_in: record.bytes_in,
            packets_out: record.packets_out,
            packets_in: record.packets_in,
            flows: 1,
            destination,
        };
        match self.conversations.entry(key) {
            Entry::Occupied(entry) => {
                let conversation = entry.into_mut();
                if record.start_ms <= conversation.last_ms.saturating_add(self.idle_timeout_ms) {
                    conversation.first_ms = conversation.first_ms.min(record.start_ms);
                    conversation.last_ms = conversation.last_ms.max(record.end_ms);
                    // Exporters control these numbers: saturate rather than overflow.
                    conversation.bytes_out =
                        conversation.bytes_out.saturating_add(record.bytes_out);
                    conversation.bytes_in = conversation.bytes_in.saturating_add(record.bytes_in);
                    conversation.packets_out =
                        conversation.packets_out.saturating_add(record.packets_out);
                    conversation.packets_in =
                        conversation.packets_in.saturating_add(record.packets_in);
                    conversation.flows = conversation.flows.saturating_add(1);
                    return (Update::Extended, conversation);
                }
                // Too long a silence: the old conversation ended, a new one starts. The
                // destination facts stay (same outside address).
                ended(&key, conversation);
                self.counters.conversations_expired += 1;
                self.counters.conversations_created += 1;
                *conversation = fresh(conversation.destination);
                (Update::Created, conversation)
            }
            Entry::Vacant(entry) => {
                self.counters.conversations_created += 1;
                (Update::Created, entry.insert(fresh(destination())))
            }
        }
    }

    /// Ends every conversation idle for longer than the idle timeout plus the lateness
    /// allowed for records, at event time `now_ms`.
    pub fn expire(&mut self, now_ms: u64, mut ended: impl FnMut(&ConversationKey, &Conversation)) {
        let horizon = now_ms.saturating_sub(self.expiry_ms);
        let before = self.conversations.len();
        self.conversations.retain(|key, conversation| {
            let keep = conversation.last_ms >= horizon;
            if !keep {
                ended(key, conversation);
            }
            keep
        });
        self.counters.conversations_expired += (before - self.conversations.len()) as u64;
    }

    /// Ends every conversation (end of input).
    pub fn drain(&mut self, mut ended: impl FnMut(&ConversationKey, &Conversation)) {
        for (key, conversation) in self.conversations.drain() {
            ended(&key, &conversation);
        }
    }

    /// The table is full: end the longest-idle tenth of it, counted as evictions.
    fn evict_for_room(&mut self, ended: &mut impl FnMut(&ConversationKey, &Conversation)) {
        let evicted = evict_stalest(&mut self.conversations, |c| c.last_ms, ended);
        self.counters.conversations_evicted += evicted as u64;
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
    let (_, &mut cut, _) = seen.select_nth_unstable(index);
    let mut removed = 0;
    map.retain(|key, value| {
        let evict = removed < target && last_ms(value) <= cut;
        if evict {
            removed += 1;
            evicted(key, value);
        }
        !evict
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn enricher() -> Enricher {
        let config = Config {
            inside: vec!["10.10.0.0/16".parse().unwrap()],
            ..Config::default()
        };
        Enricher::new(
            std::sync::Arc::new(crate::enrich::Geo::embedded().unwrap()),
            &config,
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
    fn a_conversation_is_small() {
        assert_eq!(std::mem::size_of::<Conversation>(), 64);
        assert_eq!(std::mem::size_of::<(ConversationKey, Conversation)>(), 104);
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
}
