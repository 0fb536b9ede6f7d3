//! decode: what exporters that report one flow many times have already told, so every byte is
//! counted once. Running totals (IE 85/86 without deltas: Juniper SRX, Cisco ASA's permanent
//! counters) become the volume since the flow's previous report; a firewall's events of one
//! connection (NSEL create / update / teardown, keyed by connection id) are accounted as the
//! events define them: updates carry the volume since the last update, the teardown the
//! connection's total, of which only what the updates did not report is new. Records after
//! the first of a flow are marked `continues_flow`.
//!
//! Bounded: at most `max_tracked_connections` flows over all exporters; when full, the
//! stalest tenth is forgotten and counted (a forgotten flow's next report counts its whole
//! total again: an over-count, never a loss).

use std::net::IpAddr;

use foldhash::HashMap;

use super::layout::CounterSource;
use super::record::{
    FIREWALL_EVENT_CREATED, FIREWALL_EVENT_DELETED, FIREWALL_EVENT_UPDATE, FlowKind, FlowRecord,
};

/// Which flow of which exporter: by the exporter's flow id (NSEL connection id) when the
/// record has one, else by its 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    exporter: IpAddr,
    kind: FlowKind,
    domain_id: u32,
    identity: Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Identity {
    FlowId(u64),
    FiveTuple {
        src: IpAddr,
        dst: IpAddr,
        src_port: u16,
        dst_port: u16,
        proto: u8,
    },
}

/// What was accounted for one flow.
#[derive(Debug, Clone, Copy, Default)]
struct Accounted {
    /// Running totals: the last totals reported. Firewall events: the volume counted so far.
    bytes: u64,
    packets: u64,
    reverse_bytes: u64,
    reverse_packets: u64,
    /// The connection was torn down: what comes after for it was in its teardown's total.
    closed: bool,
    /// The decoder's datagram counter at the last report, for evicting the stalest.
    last_seen: u64,
}

/// The flows tracked, over all exporters.
#[derive(Debug, Default)]
pub struct Connections {
    flows: HashMap<FlowKey, Accounted>,
}

impl Connections {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Turns `flow`'s counters into the volume not counted before, by how the record counts
    /// (`source`); `flow_id` is its IE 148. Returns how many tracked flows were forgotten to
    /// make room (at most `max` are kept).
    pub fn account(
        &mut self,
        flow: &mut FlowRecord,
        source: CounterSource,
        flow_id: Option<u64>,
        now: u64,
        max: usize,
    ) -> u64 {
        let event = flow.firewall_event;
        let tracked = match source {
            CounterSource::Totals => true,
            CounterSource::Initiator => matches!(
                event,
                FIREWALL_EVENT_CREATED | FIREWALL_EVENT_UPDATE | FIREWALL_EVENT_DELETED
            ),
            // Deltas need no arithmetic, and an event without counters (ASA's create) none
            // either; a firewall's events of one connection id still tell a later event
            // from a new flow (Palo Alto: updates with deltas).
            CounterSource::Delta | CounterSource::None => flow_id.is_some() && event != 0,
        };
        if !tracked || max == 0 {
            return 0;
        }
        let key = FlowKey {
            exporter: flow.sampler_address,
            kind: flow.kind,
            domain_id: flow.observation_domain_id,
            identity: match flow_id {
                Some(id) => Identity::FlowId(id),
                None => Identity::FiveTuple {
                    src: flow.src_addr,
                    dst: flow.dst_addr,
                    src_port: flow.src_port,
                    dst_port: flow.dst_port,
                    proto: flow.proto,
                },
            },
        };
        let ends = flow.ends_flow();
        let mut evicted = 0;
        if !self.flows.contains_key(&key) {
            if ends && flow_id.is_none() {
                return 0; // one report of a whole flow: nothing to remember
            }
            if self.flows.len() >= max {
                evicted = self.evict_stalest();
            }
        }
        let known = self.flows.contains_key(&key);
        let entry = self.flows.entry(key).or_default();
        entry.last_seen = now;
        let counters = [
            &mut flow.bytes,
            &mut flow.packets,
            &mut flow.reverse_bytes,
            &mut flow.reverse_packets,
        ];
        let accounted = [
            &mut entry.bytes,
            &mut entry.packets,
            &mut entry.reverse_bytes,
            &mut entry.reverse_packets,
        ];
        let mut continues = known;
        match source {
            CounterSource::Totals => {
                // A total below the last one is a new flow on the same key (a restart).
                if counters
                    .iter()
                    .zip(&accounted)
                    .any(|(now, last)| **now < **last)
                {
                    continues = false;
                    for (now, last) in counters.into_iter().zip(accounted) {
                        *last = *now;
                    }
                } else {
                    for (now, last) in counters.into_iter().zip(accounted) {
                        let total = *now;
                        *now = total - *last;
                        *last = total;
                    }
                }
            }
            CounterSource::Initiator if entry.closed => {
                // A late update (or the teardown again) of a connection whose teardown
                // total was counted: nothing new.
                for now in counters {
                    *now = 0;
                }
            }
            CounterSource::Initiator if event == FIREWALL_EVENT_DELETED => {
                for (now, counted) in counters.into_iter().zip(accounted) {
                    let total = *now;
                    *now = total.saturating_sub(*counted);
                    *counted = (*counted).max(total);
                }
            }
            CounterSource::Initiator => {
                for (now, counted) in counters.into_iter().zip(accounted) {
                    *counted = counted.saturating_add(*now);
                }
            }
            CounterSource::Delta | CounterSource::None => {}
        }
        flow.continues_flow = continues;
        if ends {
            if flow_id.is_some() {
                entry.closed = true; // kept until stale: its late events are not new flows
            } else {
                self.flows.remove(&key);
            }
        }
        evicted
    }

    /// Every tracked flow, for the state file (most recently reported first, so a restore
    /// into a smaller bound keeps the freshest).
    pub fn saved(&self) -> Vec<SavedConnection> {
        let mut flows: Vec<_> = self.flows.iter().collect();
        flows.sort_by_key(|(_, a)| std::cmp::Reverse(a.last_seen));
        flows
            .into_iter()
            .map(|(key, a)| SavedConnection {
                exporter: key.exporter,
                kind: SavedKind::of(key.kind),
                domain_id: key.domain_id,
                flow_id: match key.identity {
                    Identity::FlowId(id) => Some(id),
                    Identity::FiveTuple { .. } => None,
                },
                five_tuple: match key.identity {
                    Identity::FlowId(_) => None,
                    Identity::FiveTuple {
                        src,
                        dst,
                        src_port,
                        dst_port,
                        proto,
                    } => Some((src, dst, src_port, dst_port, proto)),
                },
                counted: [a.bytes, a.packets, a.reverse_bytes, a.reverse_packets],
                closed: a.closed,
            })
            .collect()
    }

    /// Takes back what [`saved`](Self::saved) wrote, at most `max` flows in all; returns
    /// how many were restored. Restored flows are the stalest until reported again.
    pub fn restore(&mut self, saved: Vec<SavedConnection>, max: usize) -> usize {
        let mut restored = 0;
        for connection in saved {
            if self.flows.len() >= max {
                break;
            }
            let identity = match (connection.flow_id, connection.five_tuple) {
                (Some(id), _) => Identity::FlowId(id),
                (None, Some((src, dst, src_port, dst_port, proto))) => Identity::FiveTuple {
                    src,
                    dst,
                    src_port,
                    dst_port,
                    proto,
                },
                (None, None) => continue,
            };
            let key = FlowKey {
                exporter: connection.exporter,
                kind: connection.kind.kind(),
                domain_id: connection.domain_id,
                identity,
            };
            let [bytes, packets, reverse_bytes, reverse_packets] = connection.counted;
            let accounted = Accounted {
                bytes,
                packets,
                reverse_bytes,
                reverse_packets,
                closed: connection.closed,
                last_seen: 0,
            };
            restored += usize::from(self.flows.insert(key, accounted).is_none());
        }
        restored
    }

    /// Forgets the stalest tenth (at least one); returns how many.
    fn evict_stalest(&mut self) -> u64 {
        let target = (self.flows.len() / 10).max(1);
        let mut seen: Vec<u64> = self.flows.values().map(|a| a.last_seen).collect();
        let index = target.min(seen.len()) - 1;
        let (_, &mut cutoff, _) = seen.select_nth_unstable(index);
        let before = self.flows.len();
        let mut left = target;
        self.flows.retain(|_, a| {
            if left > 0 && a.last_seen <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
        (before - self.flows.len()) as u64
    }
}

/// A tracked flow as the state file keeps it (`decode::state`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedConnection {
    pub exporter: IpAddr,
    pub kind: SavedKind,
    pub domain_id: u32,
    /// The exporter's flow id (IE 148), or else the 5-tuple (source, destination, ports,
    /// protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub five_tuple: Option<(IpAddr, IpAddr, u16, u16, u8)>,
    /// Bytes, packets, reverse bytes, reverse packets: the last totals, or for a firewall
    /// connection what was counted so far.
    pub counted: [u64; 4],
    #[serde(default)]
    pub closed: bool,
}

/// The protocols whose records are tracked (only templated exports carry totals and
/// firewall events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavedKind {
    NetflowV9,
    Ipfix,
}

impl SavedKind {
    fn of(kind: FlowKind) -> SavedKind {
        if kind == FlowKind::NetflowV9 {
            SavedKind::NetflowV9
        } else {
            SavedKind::Ipfix
        }
    }

    fn kind(self) -> FlowKind {
        match self {
            SavedKind::NetflowV9 => FlowKind::NetflowV9,
            SavedKind::Ipfix => FlowKind::Ipfix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::record::FIREWALL_EVENT_DENIED;

    fn flow(bytes: u64, packets: u64) -> FlowRecord {
        FlowRecord {
            kind: FlowKind::Ipfix,
            sampler_address: "192.0.2.1".parse().unwrap(),
            src_addr: "10.0.0.1".parse().unwrap(),
            dst_addr: "198.51.100.9".parse().unwrap(),
            src_port: 40000,
            dst_port: 443,
            proto: 6,
            bytes,
            packets,
            ..FlowRecord::default()
        }
    }

    #[test]
    fn running_totals_become_deltas_until_the_flow_ends() {
        let mut connections = Connections::default();
        let mut seen = Vec::new();
        for (i, (bytes, packets, end_reason)) in [
            (1000, 10, 2),  // active timeout: the flow goes on
            (5000, 40, 2),  // +4000
            (5000, 40, 2),  // nothing new
            (12000, 90, 3), // +7000, end of flow
            (300, 3, 0),    // the same 5-tuple again: a new flow
        ]
        .into_iter()
        .enumerate()
        {
            let mut record = flow(bytes, packets);
            record.flow_end_reason = end_reason;
            connections.account(&mut record, CounterSource::Totals, None, i as u64, 100);
            seen.push((record.bytes, record.packets, record.continues_flow));
        }
        assert_eq!(
            seen,
            [
                (1000, 10, false),
                (4000, 30, true),
                (0, 0, true),
                (7000, 50, true),
                (300, 3, false)
            ]
        );
        // Summed, the flow's volume once: 12000 bytes, not 23000.
        assert_eq!(seen[..4].iter().map(|s| s.0).sum::<u64>(), 12000);
        assert_eq!(connections.len(), 1);
    }

    #[test]
    fn a_total_that_goes_back_is_a_new_flow() {
        let mut connections = Connections::default();
        let mut first = flow(9000, 9);
        connections.account(&mut first, CounterSource::Totals, None, 1, 100);
        let mut restarted = flow(100, 1);
        connections.account(&mut restarted, CounterSource::Totals, None, 2, 100);
        assert_eq!((restarted.bytes, restarted.continues_flow), (100, false));
    }

    #[test]
    fn nsel_updates_count_deltas_and_the_teardown_only_the_rest() {
        let mut connections = Connections::default();
        let mut seen = Vec::new();
        for (i, (event, bytes)) in [
            (FIREWALL_EVENT_CREATED, 0),
            (FIREWALL_EVENT_UPDATE, 4000),
            (FIREWALL_EVENT_UPDATE, 6000),
            (FIREWALL_EVENT_DELETED, 10500), // the total: 500 were not in an update
            (FIREWALL_EVENT_UPDATE, 500),    // the update at teardown, arriving late
        ]
        .into_iter()
        .enumerate()
        {
            let mut record = flow(bytes, 0);
            record.firewall_event = event;
            connections.account(
                &mut record,
                CounterSource::Initiator,
                Some(77),
                i as u64,
                100,
            );
            seen.push((record.bytes, record.continues_flow));
        }
        assert_eq!(
            seen,
            [
                (0, false),
                (4000, true),
                (6000, true),
                (500, true),
                (0, true)
            ]
        );
        // Another connection id is another flow; a denied one is not tracked.
        let mut other = flow(10500, 0);
        other.firewall_event = FIREWALL_EVENT_DELETED;
        connections.account(&mut other, CounterSource::Initiator, Some(78), 9, 100);
        assert_eq!((other.bytes, other.continues_flow), (10500, false));
        let mut denied = flow(0, 0);
        denied.firewall_event = FIREWALL_EVENT_DENIED;
        connections.account(&mut denied, CounterSource::Initiator, Some(79), 9, 100);
        assert_eq!(connections.len(), 2);
    }

    #[test]
    fn delta_events_of_a_known_connection_continue_it() {
        let mut connections = Connections::default();
        let mut first = flow(111, 1);
        first.firewall_event = FIREWALL_EVENT_UPDATE;
        connections.account(&mut first, CounterSource::Delta, Some(415347), 1, 100);
        let mut second = first;
        connections.account(&mut second, CounterSource::Delta, Some(415347), 2, 100);
        assert_eq!((first.continues_flow, second.continues_flow), (false, true));
        assert_eq!(second.bytes, 111);
        // Plain delta records without a connection are not tracked.
        let mut plain = flow(5, 1);
        connections.account(&mut plain, CounterSource::Delta, None, 3, 100);
        assert_eq!(connections.len(), 1);
    }

    #[test]
    fn bounded_by_evicting_the_stalest() {
        let mut connections = Connections::default();
        let mut evicted = 0;
        for i in 0..1000u64 {
            let mut record = flow(100, 1);
            record.src_port = i as u16;
            evicted += connections.account(&mut record, CounterSource::Totals, None, i, 100);
        }
        assert!(connections.len() <= 100, "{}", connections.len());
        assert_eq!(evicted, 1000 - connections.len() as u64);
        assert!(!connections.is_empty());
        // The newest survived.
        let mut newest = flow(150, 2);
        newest.src_port = 999;
        connections.account(&mut newest, CounterSource::Totals, None, 1000, 100);
        assert_eq!((newest.bytes, newest.continues_flow), (50, true));
    }

    #[test]
    fn saved_connections_restore_within_the_bound_freshest_first() {
        let mut connections = Connections::default();
        for (n, port) in [(1u64, 1000u16), (2, 2000), (3, 3000)] {
            let mut record = flow(100 * n, n);
            record.src_port = port;
            connections.account(&mut record, CounterSource::Totals, None, n, 16);
        }
        let mut by_id = flow(5, 1);
        by_id.firewall_event = FIREWALL_EVENT_DELETED;
        connections.account(&mut by_id, CounterSource::Initiator, Some(77), 4, 16);
        let saved = connections.saved();
        assert_eq!(saved.len(), 4);
        assert_eq!(saved[0].flow_id, Some(77));
        assert!(saved[0].closed);
        assert_eq!(saved[1].five_tuple.unwrap().2, 3000);
        let json = serde_json::to_string(&saved).unwrap();
        let back: Vec<SavedConnection> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        let mut restored = Connections::default();
        assert_eq!(restored.restore(back, 2), 2);
        assert_eq!(restored.len(), 2);
        // The 3000 flow was kept: its next total counts from its last one.
        let mut next = flow(450, 4);
        next.src_port = 3000;
        restored.account(&mut next, CounterSource::Totals, None, 5, 16);
        assert_eq!((next.bytes, next.packets), (150, 1));
        assert!(next.continues_flow);
    }
}
