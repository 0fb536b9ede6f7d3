//! decode: what the decoder remembers about one exporter: per observation domain its
//! templates, clock and samplers, its sequence numbers, and the data sets waiting for a
//! template. Everything is bounded by `DecoderLimits`.

use std::collections::VecDeque;

use foldhash::HashMap;

use super::layout::Layout;
use super::record::FlowKind;
use super::stats::DecodeCounters;

/// The samplers one domain has announced, capped so an exporter cannot grow it unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samplers {
    /// (sampler or selector id, 1-in-N rate); id 0 where the options record named none.
    pub rates: Vec<(u64, u32)>,
    /// The most recently announced rate, for data records that name no sampler.
    pub latest: Option<u32>,
}

/// At most this many samplers per domain; a new one beyond it replaces the oldest.
pub const MAX_SAMPLERS: usize = 64;

impl Samplers {
    pub fn set(&mut self, sampler_id: u64, rate: u32) {
        if let Some(entry) = self.rates.iter_mut().find(|(id, _)| *id == sampler_id) {
            entry.1 = rate;
        } else {
            if self.rates.len() == MAX_SAMPLERS {
                self.rates.remove(0);
            }
            self.rates.push((sampler_id, rate));
        }
        self.latest = Some(rate);
    }

    /// The rate for a data record: its sampler's, else the latest announced.
    pub fn rate_for(&self, sampler_id: Option<u64>) -> Option<u32> {
        sampler_id
            .and_then(|wanted| {
                self.rates
                    .iter()
                    .find(|(id, _)| *id == wanted)
                    .map(|&(_, rate)| rate)
            })
            .or(self.latest)
    }
}

/// How an exporter's sequence number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceUnit {
    /// NetFlow v9: one per export packet.
    Datagrams,
    /// NetFlow v5 and IPFIX: records sent before this datagram.
    Records,
}

/// Sequence tracking for one domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sequence {
    /// The last datagram's sequence number with its data record count, and the same
    /// count without options records.
    last: Option<(u32, u32, u32)>,
    /// Which reading of the sequence number this exporter was last seen to follow (an
    /// index into the candidates of [`observe`](Self::observe)), used to measure gaps.
    reading: usize,
}

/// A forward jump this large is a restart, not loss.
const MAX_PLAUSIBLE_GAP: u32 = 1 << 30;

impl Sequence {
    /// Records a datagram and returns how many units went missing before it.
    ///
    /// IPFIX exporters disagree on what they count: RFC 7011 says data records *before*
    /// this message, options records included; softflowd counts the records *including*
    /// this message's and leaves options records out. Any of those readings that matches
    /// is in order, so neither exporter shows false loss, and the one that matched measures
    /// the next gap.
    pub fn observe(
        &mut self,
        unit: SequenceUnit,
        sequence: u32,
        records: u32,
        flow_records: u32,
    ) -> SequenceCheck {
        let previous = self.last.replace((sequence, records, flow_records));
        let Some((last, last_records, last_flows)) = previous else {
            return SequenceCheck::InOrder;
        };
        let candidates = match unit {
            SequenceUnit::Datagrams => [last.wrapping_add(1); 4],
            SequenceUnit::Records => [
                last.wrapping_add(last_records),
                last.wrapping_add(last_flows),
                last.wrapping_add(records),
                last.wrapping_add(flow_records),
            ],
        };
        if let Some(reading) = candidates.iter().position(|&c| c == sequence) {
            self.reading = reading;
            return SequenceCheck::InOrder;
        }
        let gap = sequence.wrapping_sub(candidates[self.reading]);
        if gap < MAX_PLAUSIBLE_GAP {
            SequenceCheck::Lost(u64::from(gap))
        } else {
            SequenceCheck::Reset
        }
    }

    /// Forgets the last datagram (its record count was unknown).
    pub fn resync(&mut self) {
        self.last = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    InOrder,
    Lost(u64),
    Reset,
}

/// Template scope inside an exporter: protocol and v5 engine / v9 source id / IPFIX
/// observation domain.
pub type DomainKey = (FlowKind, u32);

/// State of one observation domain of one exporter.
#[derive(Debug, Default)]
pub struct Domain {
    /// Data and options templates share one id space.
    pub templates: HashMap<u16, Layout>,
    /// IPFIX systemInitTimeMilliseconds, for sysUpTime-relative flow times.
    pub system_init_ms: Option<u64>,
    pub samplers: Samplers,
    pub sequence: Sequence,
    /// The exporter an options record named (exporterIPv4Address / exporterIPv6Address),
    /// the `sampler_address` of this domain's records when the datagrams come through a
    /// relay and `decoder.exporter_address_from_options` is on.
    pub exporter_address: Option<std::net::IpAddr>,
}

/// A data set that arrived before its template, copied out of the datagram.
#[derive(Debug)]
pub struct PendingSet {
    pub domain: DomainKey,
    pub template_id: u16,
    pub header: super::HeaderInfo,
    pub body: Box<[u8]>,
}

/// The latest generic interface counters an sFlow agent sent for one of its interfaces,
/// as the agent counts them (running totals since its interface counters began).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub if_index: u32,
    /// sFlow's sub-agent (the datagram's sub-agent id) the counters came from.
    pub sub_agent_id: u32,
    pub speed_bps: u64,
    pub in_octets: u64,
    pub out_octets: u64,
    pub in_errors: u64,
    pub out_errors: u64,
    pub in_discards: u64,
    pub out_discards: u64,
}

/// Everything known about one exporter (one source address).
#[derive(Debug, Default)]
pub struct Exporter {
    /// Few per exporter (usually one), so a short vector beats a map.
    pub domains: Vec<(DomainKey, Domain)>,
    pub template_count: usize,
    pub pending: VecDeque<PendingSet>,
    pub pending_bytes: usize,
    /// The decoder's datagram counter when this exporter last sent: for evicting the
    /// least recently heard exporter when `max_exporters` is reached.
    pub last_seen: u64,
    pub counters: DecodeCounters,
    /// sFlow agents: their interfaces' latest counters, by (sub-agent, ifIndex), at most
    /// `decoder.max_sflow_interfaces_per_agent`.
    pub interfaces: Vec<InterfaceCounters>,
    /// Interface names and descriptions from options data (IE 82/83), by (domain,
    /// ifIndex): for printing records with names, and shared (the same `Arc`) with the
    /// shards for alerts (`decode::directory`). All exporters together hold at most
    /// `decoder.max_interface_names`.
    pub interface_names: HashMap<(DomainKey, u32), std::sync::Arc<InterfaceName>>,
}

/// At most this many bytes of an interface's name or description are kept.
pub const MAX_INTERFACE_TEXT_BYTES: usize = 64;

/// An interface's name and description as its exporter announced them (either may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceName {
    pub name: Box<str>,
    pub description: Box<str>,
}

impl InterfaceName {
    /// Exporter text made printable: cut at the first NUL (fixed-length fields are
    /// zero-filled: Cisco IOS XR), at most `MAX_INTERFACE_TEXT_BYTES`, invalid UTF-8 replaced.
    pub fn text(bytes: &[u8]) -> Box<str> {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let bytes = &bytes[..end.min(MAX_INTERFACE_TEXT_BYTES)];
        String::from_utf8_lossy(bytes).trim_end().into()
    }
}

/// Keeps an interface's latest counters in an agent's list; a new interface beyond `max` is
/// refused (and counted by the caller): `false`.
pub fn set_interface(
    interfaces: &mut Vec<InterfaceCounters>,
    counters: InterfaceCounters,
    max: usize,
) -> bool {
    let same = |c: &&mut InterfaceCounters| {
        c.if_index == counters.if_index && c.sub_agent_id == counters.sub_agent_id
    };
    if let Some(known) = interfaces.iter_mut().find(same) {
        *known = counters;
        return true;
    }
    if interfaces.len() >= max {
        return false;
    }
    interfaces.push(counters);
    true
}

impl Exporter {
    /// The address this exporter's records of a domain carry, for the exporter heard at
    /// `address`: the one its options data announced (IE 130/131, when
    /// `decoder.exporter_address_from_options` took it), else `address`.
    pub fn published_address(
        &self,
        address: std::net::IpAddr,
    ) -> impl Fn(DomainKey) -> std::net::IpAddr + '_ {
        move |key| {
            self.domains
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, domain)| domain.exporter_address)
                .unwrap_or(address)
        }
    }

    pub fn domain_mut(&mut self, key: DomainKey) -> &mut Domain {
        let index = match self.domains.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                self.domains.push((key, Domain::default()));
                self.domains.len() - 1
            }
        };
        &mut self.domains[index].1
    }

    pub fn domain(&self, key: DomainKey) -> Option<&Domain> {
        self.domains.iter().find(|(k, _)| *k == key).map(|(_, d)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v9_counts_datagrams() {
        let mut seq = Sequence::default();
        assert_eq!(
            seq.observe(SequenceUnit::Datagrams, 1, 4, 4),
            SequenceCheck::InOrder
        );
        assert_eq!(
            seq.observe(SequenceUnit::Datagrams, 2, 9, 9),
            SequenceCheck::InOrder
        );
        assert_eq!(
            seq.observe(SequenceUnit::Datagrams, 5, 1, 1),
            SequenceCheck::Lost(2)
        );
        assert_eq!(
            seq.observe(SequenceUnit::Datagrams, 1, 1, 1),
            SequenceCheck::Reset
        );
    }

    #[test]
    fn ipfix_counts_records_before_the_message() {
        let mut seq = Sequence::default();
        assert_eq!(
            seq.observe(SequenceUnit::Records, 0, 2, 2),
            SequenceCheck::InOrder
        );
        assert_eq!(
            seq.observe(SequenceUnit::Records, 2, 2, 2),
            SequenceCheck::InOrder
        );
        assert_eq!(
            seq.observe(SequenceUnit::Records, 10, 2, 2),
            SequenceCheck::Lost(6)
        );
        assert_eq!(
            seq.observe(SequenceUnit::Records, 12, 2, 2),
            SequenceCheck::InOrder
        );
    }

    #[test]
    fn softflowd_off_by_one_ipfix_sequence_is_not_loss() {
        // softflowd: 4 records (+1 options record) with sequence 4, then 2 with 6, 6 with 12.
        let mut seq = Sequence::default();
        assert_eq!(
            seq.observe(SequenceUnit::Records, 4, 5, 4),
            SequenceCheck::InOrder
        );
        assert_eq!(
            seq.observe(SequenceUnit::Records, 6, 2, 2),
            SequenceCheck::InOrder
        );
        assert_eq!(
            seq.observe(SequenceUnit::Records, 12, 6, 6),
            SequenceCheck::InOrder
        );
        assert_eq!(
            seq.observe(SequenceUnit::Records, 14, 2, 2),
            SequenceCheck::InOrder
        );
        // A real gap still shows, measured softflowd's way: a datagram of 3 went missing
        // before this one of 2.
        assert_eq!(
            seq.observe(SequenceUnit::Records, 19, 2, 2),
            SequenceCheck::Lost(3)
        );
    }

    #[test]
    fn sequence_wraps_without_loss() {
        let mut seq = Sequence::default();
        seq.observe(SequenceUnit::Records, u32::MAX - 1, 3, 3);
        assert_eq!(
            seq.observe(SequenceUnit::Records, 1, 3, 3),
            SequenceCheck::InOrder
        );
    }

    #[test]
    fn samplers_are_capped_and_fall_back_to_latest() {
        let mut samplers = Samplers::default();
        assert_eq!(samplers.rate_for(None), None);
        samplers.set(1, 100);
        samplers.set(2, 1000);
        assert_eq!(samplers.rate_for(Some(1)), Some(100));
        assert_eq!(samplers.rate_for(Some(9)), Some(1000));
        assert_eq!(samplers.rate_for(None), Some(1000));
        for id in 0..200 {
            samplers.set(id + 10, 5);
        }
        assert_eq!(samplers.rates.len(), MAX_SAMPLERS);
    }
}
