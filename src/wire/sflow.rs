//! wire: sFlow version 5 datagrams (sflow.org, "sFlow Version 5", July 2004): the datagram
//! header, its samples, the flow records of flow samples, and the standard flow record
//! formats exflow reads (raw packet header, sampled IPv4/IPv6, extended switch, router and
//! gateway).
//!
//! sFlow is XDR: every field is a big-endian 32-bit word, opaque data is padded to four
//! bytes, and every sample and record is a `(enterprise << 12 | format, length, body)`
//! triple, so unknown ones are skipped by their length. The contract is `wire`'s: a view's
//! `new_checked` checks every length it depends on (the address type and the fixed part of
//! a header, a record's declared header length, every AS path segment of a gateway record);
//! accessors cannot panic afterwards. [`Records`] yields `Result`, stops for good after the
//! first error, never yields more entries than the count in front of them and consumes at
//! least eight bytes per step.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{WireError, read_u32};

/// The version word of an sFlow v5 datagram.
pub const VERSION: u32 = 5;

/// Sample formats (enterprise 0).
pub const FLOW_SAMPLE: u32 = 1;
pub const COUNTER_SAMPLE: u32 = 2;
pub const EXPANDED_FLOW_SAMPLE: u32 = 3;
pub const EXPANDED_COUNTER_SAMPLE: u32 = 4;
/// The sFlow drops extension's discarded-packet sample.
pub const DISCARDED_PACKET: u32 = 5;

/// Flow record formats (enterprise 0).
pub const RAW_PACKET_HEADER: u32 = 1;
pub const SAMPLED_IPV4: u32 = 3;
pub const SAMPLED_IPV6: u32 = 4;
pub const EXTENDED_SWITCH: u32 = 1001;
pub const EXTENDED_ROUTER: u32 = 1002;
pub const EXTENDED_GATEWAY: u32 = 1003;

/// Counter record format of the generic interface counters (enterprise 0).
pub const GENERIC_INTERFACE_COUNTERS: u32 = 1;

/// Raw packet header protocols the decoder parses.
pub const HEADER_PROTOCOL_ETHERNET: u32 = 1;
pub const HEADER_PROTOCOL_IPV4: u32 = 11;
pub const HEADER_PROTOCOL_IPV6: u32 = 12;

/// Big-endian word at `at`, 0 past the end (only called on offsets a `new_checked` vouched for).
fn word(buf: &[u8], at: usize) -> u32 {
    read_u32(buf, at).unwrap_or(0)
}

/// `n` rounded up to XDR's four-byte alignment, without overflow.
fn padded(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// An sFlow `address`: a type word (0 unknown, 1 IPv4, 2 IPv6) and the address. Returns the
/// address (unspecified for type 0) and the bytes it takes; `None` when truncated or of an
/// unknown type.
pub fn read_address(buf: &[u8], at: usize) -> Option<(IpAddr, usize)> {
    let kind = read_u32(buf, at)?;
    let body = at.checked_add(4)?;
    match kind {
        0 => Some((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4)),
        1 => {
            let b: [u8; 4] = buf.get(body..body + 4)?.try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(b)), 8))
        }
        2 => {
            let b: [u8; 16] = buf.get(body..body + 16)?.try_into().ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(b)), 20))
        }
        _ => None,
    }
}

/// A checked view over an sFlow v5 datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
    agent_address: IpAddr,
    /// Where the fields after the agent address start.
    after_agent: usize,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Checks the version, the agent address type and that the header is whole. Samples are
    /// checked as they are iterated.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let buf = buffer.as_ref();
        let version = read_u32(buf, 0).ok_or(WireError::Truncated)?;
        if version != VERSION {
            return Err(WireError::BadVersion);
        }
        let kind = read_u32(buf, 4).ok_or(WireError::Truncated)?;
        if !(1..=2).contains(&kind) {
            return Err(WireError::BadLength);
        }
        let (agent_address, taken) = read_address(buf, 4).ok_or(WireError::Truncated)?;
        let after_agent = 4 + taken;
        if buf.len() < after_agent + 16 {
            return Err(WireError::Truncated);
        }
        Ok(Datagram {
            buffer,
            agent_address,
            after_agent,
        })
    }

    /// The agent's own address, as it says (not the datagram's source).
    pub fn agent_address(&self) -> IpAddr {
        self.agent_address
    }

    /// Tells apart the sub-agents of one agent; sequence numbers count per sub-agent.
    pub fn sub_agent_id(&self) -> u32 {
        word(self.buffer.as_ref(), self.after_agent)
    }

    /// Datagrams this sub-agent sent before this one, plus one.
    pub fn sequence_number(&self) -> u32 {
        word(self.buffer.as_ref(), self.after_agent + 4)
    }

    /// Milliseconds since the agent booted.
    pub fn uptime_ms(&self) -> u32 {
        word(self.buffer.as_ref(), self.after_agent + 8)
    }

    pub fn sample_count(&self) -> u32 {
        word(self.buffer.as_ref(), self.after_agent + 12)
    }

    /// The samples, at most `sample_count` of them.
    pub fn samples(&self) -> Records<'_> {
        let buf = self.buffer.as_ref();
        Records::new(&buf[self.after_agent + 16..], self.sample_count())
    }
}

/// One sample or flow record: its data format and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The top 20 bits of the format word (0: sflow.org's standard formats).
    pub enterprise: u32,
    /// The low 12 bits.
    pub format: u32,
    pub body: &'a [u8],
}

impl Record<'_> {
    /// A standard (enterprise 0) record of this format.
    pub fn is(&self, format: u32) -> bool {
        self.enterprise == 0 && self.format == format
    }
}

/// Iterator over counted `(format, length, body)` records: samples of a datagram or flow
/// records of a sample. Yields `Err(Truncated)` once for a record that runs past the end or
/// when the count promises more than the bytes hold, then stops.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Records<'a> {
    pub fn new(body: &'a [u8], count: u32) -> Self {
        Records {
            rest: body,
            remaining: count,
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let (Some(format), Some(length)) = (read_u32(self.rest, 0), read_u32(self.rest, 4)) else {
            self.remaining = 0;
            return Some(Err(WireError::Truncated));
        };
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        let Some(body) = self.rest.get(8..8usize.saturating_add(length)) else {
            self.remaining = 0;
            return Some(Err(WireError::Truncated));
        };
        // XDR pads opaque data to four bytes; a last record may end unpadded.
        let step = 8usize.saturating_add(padded(length)).min(self.rest.len());
        self.rest = &self.rest[step..];
        Some(Ok(Record {
            enterprise: format >> 12,
            format: format & 0xfff,
            body,
        }))
    }
}

/// An interface of a flow sample: the ifIndex when `format` is 0; 1 a discard reason
/// (`value`), 2 a count of output interfaces (`value`, 0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub format: u32,
    pub value: u32,
}

impl Interface {
    /// The compact form: the format in the top two bits, the value in the other thirty.
    fn compact(raw: u32) -> Self {
        Interface {
            format: raw >> 30,
            value: raw & 0x3fff_ffff,
        }
    }

    /// The ifIndex, when this names one interface.
    pub fn if_index(&self) -> Option<u32> {
        (self.format == 0).then_some(self.value)
    }
}

mod flow_sample {
    /// Compact: sequence, source id, rate, pool, drops, input, output, record count.
    pub const COMPACT_LEN: usize = 32;
    /// Expanded: source id and both interfaces take two words each.
    pub const EXPANDED_LEN: usize = 44;
}

/// A checked view over the body of a flow sample, compact (format 1) or expanded (3).
#[derive(Debug, Clone, Copy)]
pub struct FlowSample<'a> {
    body: &'a [u8],
    expanded: bool,
}

impl<'a> FlowSample<'a> {
    pub fn new_checked(body: &'a [u8], expanded: bool) -> Result<Self, WireError> {
        let fixed = if expanded {
            flow_sample::EXPANDED_LEN
        } else {
            flow_sample::COMPACT_LEN
        };
        if body.len() < fixed {
            return Err(WireError::Truncated);
        }
        Ok(FlowSample { body, expanded })
    }

    fn at(&self, compact: usize, expanded: usize) -> u32 {
        word(self.body, if self.expanded { expanded } else { compact })
    }

    /// Samples this source generated before this one, plus one.
    pub fn sequence_number(&self) -> u32 {
        word(self.body, 0)
    }

    /// The data source's type (0 ifIndex, 1 smonVlanDataSource, 2 entPhysicalEntry).
    pub fn source_id_type(&self) -> u32 {
        if self.expanded {
            word(self.body, 4)
        } else {
            word(self.body, 4) >> 24
        }
    }

    pub fn source_id_index(&self) -> u32 {
        if self.expanded {
            word(self.body, 8)
        } else {
            word(self.body, 4) & 0x00ff_ffff
        }
    }

    /// 1-in-N packet sampling.
    pub fn sampling_rate(&self) -> u32 {
        self.at(8, 12)
    }

    /// Packets that could have been sampled (the total the sampler saw).
    pub fn sample_pool(&self) -> u32 {
        self.at(12, 16)
    }

    /// Samples the agent dropped for lack of resources, a running total per source.
    pub fn drops(&self) -> u32 {
        self.at(16, 20)
    }

    pub fn input(&self) -> Interface {
        if self.expanded {
            Interface {
                format: word(self.body, 24),
                value: word(self.body, 28),
            }
        } else {
            Interface::compact(word(self.body, 20))
        }
    }

    pub fn output(&self) -> Interface {
        if self.expanded {
            Interface {
                format: word(self.body, 32),
                value: word(self.body, 36),
            }
        } else {
            Interface::compact(word(self.body, 24))
        }
    }

    pub fn records(&self) -> Records<'a> {
        let (count_at, start) = if self.expanded {
            (40, flow_sample::EXPANDED_LEN)
        } else {
            (28, flow_sample::COMPACT_LEN)
        };
        Records::new(&self.body[start..], word(self.body, count_at))
    }
}

/// A checked view over a counter sample (format 2, or 4 expanded): which data source the
/// counters are of, and its counter records.
#[derive(Debug, Clone, Copy)]
pub struct CounterSample<'a> {
    body: &'a [u8],
    expanded: bool,
}

impl<'a> CounterSample<'a> {
    /// Sequence, source id, record count.
    const COMPACT_LEN: usize = 12;
    /// Sequence, source id type, source id index, record count.
    const EXPANDED_LEN: usize = 16;

    pub fn new_checked(body: &'a [u8], expanded: bool) -> Result<Self, WireError> {
        let len = if expanded {
            Self::EXPANDED_LEN
        } else {
            Self::COMPACT_LEN
        };
        if body.len() < len {
            return Err(WireError::Truncated);
        }
        Ok(CounterSample { body, expanded })
    }

    pub fn sequence_number(&self) -> u32 {
        word(self.body, 0)
    }

    /// The data source's index (an ifIndex for interface counters).
    pub fn source_id_index(&self) -> u32 {
        if self.expanded {
            word(self.body, 8)
        } else {
            word(self.body, 4) & 0x00ff_ffff
        }
    }

    pub fn records(&self) -> Records<'a> {
        let (count_at, start) = if self.expanded {
            (12, Self::EXPANDED_LEN)
        } else {
            (8, Self::COMPACT_LEN)
        };
        Records::new(&self.body[start..], word(self.body, count_at))
    }
}

/// A checked view over the generic interface counters record (counter format 1, RFC 2233's
/// ifTable counters as sFlow carries them).
#[derive(Debug, Clone, Copy)]
pub struct InterfaceCounters<'a> {
    body: &'a [u8],
}

impl<'a> InterfaceCounters<'a> {
    /// ifIndex, ifType, ifSpeed (8), ifDirection, ifStatus, ifInOctets (8), seven 32-bit in
    /// counters, ifOutOctets (8), five 32-bit out counters, ifPromiscuousMode.
    const LEN: usize = 88;

    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < Self::LEN {
            return Err(WireError::Truncated);
        }
        Ok(InterfaceCounters { body })
    }

    fn long(&self, at: usize) -> u64 {
        u64::from(word(self.body, at)) << 32 | u64::from(word(self.body, at + 4))
    }

    pub fn if_index(&self) -> u32 {
        word(self.body, 0)
    }

    /// Bits per second.
    pub fn if_speed(&self) -> u64 {
        self.long(8)
    }

    pub fn if_in_octets(&self) -> u64 {
        self.long(24)
    }

    pub fn if_in_discards(&self) -> u32 {
        word(self.body, 44)
    }

    pub fn if_in_errors(&self) -> u32 {
        word(self.body, 48)
    }

    pub fn if_out_octets(&self) -> u64 {
        self.long(56)
    }

    pub fn if_out_discards(&self) -> u32 {
        word(self.body, 76)
    }

    pub fn if_out_errors(&self) -> u32 {
        word(self.body, 80)
    }
}

/// A checked view over a discarded-packet sample (format 5, the sFlow drops extension).
#[derive(Debug, Clone, Copy)]
pub struct DiscardSample<'a> {
    body: &'a [u8],
}

impl<'a> DiscardSample<'a> {
    /// Sequence, source id type and index, drops, input, output, reason, record count.
    const LEN: usize = 32;

    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < Self::LEN {
            return Err(WireError::Truncated);
        }
        Ok(DiscardSample { body })
    }

    pub fn sequence_number(&self) -> u32 {
        word(self.body, 0)
    }

    /// Discarded packets the agent could not report, a running total.
    pub fn drops(&self) -> u32 {
        word(self.body, 12)
    }

    pub fn input(&self) -> u32 {
        word(self.body, 16)
    }

    pub fn output(&self) -> u32 {
        word(self.body, 20)
    }

    /// Why the packet was dropped (the drops extension's reason codes).
    pub fn reason(&self) -> u32 {
        word(self.body, 24)
    }

    pub fn records(&self) -> Records<'a> {
        Records::new(&self.body[Self::LEN..], word(self.body, 28))
    }
}

/// A checked view over a raw packet header record (format 1): the first bytes of the
/// sampled packet as they were on the wire.
#[derive(Debug, Clone, Copy)]
pub struct RawPacketHeader<'a> {
    body: &'a [u8],
    header_len: usize,
}

impl<'a> RawPacketHeader<'a> {
    const FIXED_LEN: usize = 16;

    /// Checks that the header bytes the record declares are inside it.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        let declared = read_u32(body, 12).ok_or(WireError::Truncated)?;
        let header_len = usize::try_from(declared).unwrap_or(usize::MAX);
        if body.len() - Self::FIXED_LEN < header_len {
            return Err(WireError::Truncated);
        }
        Ok(RawPacketHeader { body, header_len })
    }

    /// What the header starts with: 1 Ethernet, 11 IPv4, 12 IPv6, others per the spec.
    pub fn header_protocol(&self) -> u32 {
        word(self.body, 0)
    }

    /// The sampled packet's length on the wire, before the agent cut it.
    pub fn frame_length(&self) -> u32 {
        word(self.body, 4)
    }

    /// Bytes removed from the packet before the header was taken (e.g. the FCS).
    pub fn stripped(&self) -> u32 {
        word(self.body, 8)
    }

    pub fn header(&self) -> &'a [u8] {
        &self.body[Self::FIXED_LEN..Self::FIXED_LEN + self.header_len]
    }
}

/// A checked view over a sampled IPv4 (format 3) or IPv6 (format 4) record: the fields of a
/// packet the agent parsed itself.
#[derive(Debug, Clone, Copy)]
pub struct SampledIp<'a> {
    body: &'a [u8],
    v6: bool,
}

impl<'a> SampledIp<'a> {
    pub fn new_checked(body: &'a [u8], v6: bool) -> Result<Self, WireError> {
        let len = if v6 { 56 } else { 32 };
        if body.len() < len {
            return Err(WireError::Truncated);
        }
        Ok(SampledIp { body, v6 })
    }

    fn after_addresses(&self) -> usize {
        if self.v6 { 40 } else { 16 }
    }

    /// The IP packet's length (header included).
    pub fn length(&self) -> u32 {
        word(self.body, 0)
    }

    pub fn protocol(&self) -> u32 {
        word(self.body, 4)
    }

    pub fn src_ip(&self) -> IpAddr {
        self.address(8)
    }

    pub fn dst_ip(&self) -> IpAddr {
        self.address(if self.v6 { 24 } else { 12 })
    }

    fn address(&self, at: usize) -> IpAddr {
        if self.v6 {
            let mut b = [0u8; 16];
            b.copy_from_slice(&self.body[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            IpAddr::V4(Ipv4Addr::from(word(self.body, at)))
        }
    }

    pub fn src_port(&self) -> u32 {
        word(self.body, self.after_addresses())
    }

    pub fn dst_port(&self) -> u32 {
        word(self.body, self.after_addresses() + 4)
    }

    pub fn tcp_flags(&self) -> u32 {
        word(self.body, self.after_addresses() + 8)
    }

    /// IPv4 type of service; IPv6 priority (traffic class).
    pub fn tos(&self) -> u32 {
        word(self.body, self.after_addresses() + 12)
    }
}

/// A checked view over an extended switch record (format 1001): 802.1Q VLANs and priorities.
#[derive(Debug, Clone, Copy)]
pub struct ExtendedSwitch<'a> {
    body: &'a [u8],
}

impl<'a> ExtendedSwitch<'a> {
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < 16 {
            return Err(WireError::Truncated);
        }
        Ok(ExtendedSwitch { body })
    }

    pub fn src_vlan(&self) -> u32 {
        word(self.body, 0)
    }

    pub fn src_priority(&self) -> u32 {
        word(self.body, 4)
    }

    pub fn dst_vlan(&self) -> u32 {
        word(self.body, 8)
    }

    pub fn dst_priority(&self) -> u32 {
        word(self.body, 12)
    }
}

/// A checked view over an extended router record (format 1002): next hop and prefix lengths.
#[derive(Debug, Clone, Copy)]
pub struct ExtendedRouter<'a> {
    body: &'a [u8],
    next_hop: IpAddr,
    after_next_hop: usize,
}

impl<'a> ExtendedRouter<'a> {
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        let (next_hop, taken) = read_address(body, 0).ok_or(WireError::Truncated)?;
        if body.len() < taken + 8 {
            return Err(WireError::Truncated);
        }
        Ok(ExtendedRouter {
            body,
            next_hop,
            after_next_hop: taken,
        })
    }

    pub fn next_hop(&self) -> IpAddr {
        self.next_hop
    }

    pub fn src_mask_len(&self) -> u32 {
        word(self.body, self.after_next_hop)
    }

    pub fn dst_mask_len(&self) -> u32 {
        word(self.body, self.after_next_hop + 4)
    }
}

/// A checked view over an extended gateway record (format 1003): BGP next hop, the router's
/// own AS, the source and source-peer AS and the AS path to the destination.
#[derive(Debug, Clone, Copy)]
pub struct ExtendedGateway<'a> {
    body: &'a [u8],
    next_hop: IpAddr,
    after_next_hop: usize,
    /// Offsets of the first and the last AS of the destination path, when it has any.
    path_ends: Option<(usize, usize)>,
}

impl<'a> ExtendedGateway<'a> {
    /// Checks the fixed fields and walks every AS path segment (each takes at least eight
    /// bytes, so the walk is bounded by the record's length). Communities and local
    /// preference after the path are not read.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        let (next_hop, taken) = read_address(body, 0).ok_or(WireError::Truncated)?;
        let segments = read_u32(body, taken + 12).ok_or(WireError::Truncated)?;
        let mut at = taken + 16;
        let mut path_ends = None;
        for _ in 0..segments {
            let length = read_u32(body, at + 4).ok_or(WireError::Truncated)?;
            let first = at + 8;
            let bytes = usize::try_from(length)
                .ok()
                .and_then(|n| n.checked_mul(4))
                .ok_or(WireError::Truncated)?;
            let end = first.checked_add(bytes).ok_or(WireError::Truncated)?;
            if end > body.len() {
                return Err(WireError::Truncated);
            }
            if length > 0 {
                let start = path_ends.map_or(first, |(s, _)| s);
                path_ends = Some((start, end - 4));
            }
            at = end;
        }
        Ok(ExtendedGateway {
            body,
            next_hop,
            after_next_hop: taken,
            path_ends,
        })
    }

    /// The BGP next hop.
    pub fn next_hop(&self) -> IpAddr {
        self.next_hop
    }

    /// The router's own AS number.
    pub fn as_number(&self) -> u32 {
        word(self.body, self.after_next_hop)
    }

    pub fn src_as(&self) -> u32 {
        word(self.body, self.after_next_hop + 4)
    }

    pub fn src_peer_as(&self) -> u32 {
        word(self.body, self.after_next_hop + 8)
    }

    /// The first AS of the destination path (the next-hop AS).
    pub fn first_path_as(&self) -> Option<u32> {
        self.path_ends.map(|(first, _)| word(self.body, first))
    }

    /// The last AS of the destination path (the origin of the destination prefix).
    pub fn last_path_as(&self) -> Option<u32> {
        self.path_ends.map(|(_, last)| word(self.body, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static DATAGRAM: [u8; 132] = [
        0, 0, 0, 5,             // version 5
        0, 0, 0, 1,             // agent address type IPv4
        192, 0, 2, 1,           // agent 192.0.2.1
        0, 0, 0, 7,             // sub-agent 7
        0, 0, 0, 42,            // sequence 42
        0, 0, 0x03, 0xe8,       // uptime 1000 ms
        0, 0, 0, 2,             // 2 samples
        0, 0, 0, 2,             // counter sample
        0, 0, 0, 4,             //   length 4
        0xaa, 0xbb, 0xcc, 0xdd, //   (body not read here)
        0, 0, 0, 1,             // flow sample
        0, 0, 0, 84,            //   length 84
        0, 0, 0, 9,             //   sample sequence 9
        0, 0, 0, 3,             //   source: ifIndex 3
        0, 0, 0x01, 0x00,       //   rate 256
        0, 0, 0x10, 0x00,       //   pool 4096
        0, 0, 0, 0,             //   drops 0
        0, 0, 0, 3,             //   input 3
        0x80, 0, 0, 2,          //   output: 2 interfaces
        0, 0, 0, 2,             //   2 records
        0, 0, 0, 3,             //   sampled IPv4
        0, 0, 0, 32,            //     length 32
        0, 0, 0x05, 0xdc,       //     length 1500
        0, 0, 0, 6,             //     TCP
        10, 0, 0, 1,            //     from 10.0.0.1
        10, 0, 0, 2,            //     to 10.0.0.2
        0, 0, 0xc3, 0x50,       //     port 50000
        0, 0, 0x01, 0xbb,       //     port 443
        0, 0, 0, 0x18,          //     flags PSH ACK
        0, 0, 0, 0x20,          //     tos 0x20
        0, 0, 0x03, 0xe9,       //   extended switch
        0, 0, 0, 4,             //     length 4, shorter than the record (not read here)
        0, 0, 0, 10,
    ];

    #[test]
    fn reads_header_samples_and_records() {
        let datagram = Datagram::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(datagram.agent_address(), IpAddr::from([192, 0, 2, 1]));
        assert_eq!(datagram.sub_agent_id(), 7);
        assert_eq!(datagram.sequence_number(), 42);
        assert_eq!(datagram.uptime_ms(), 1000);
        let samples: Vec<_> = datagram.samples().collect::<Result<_, _>>().unwrap();
        assert_eq!(samples.len(), 2);
        assert!(samples[0].is(COUNTER_SAMPLE));
        assert_eq!(samples[0].body, &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(samples[1].is(FLOW_SAMPLE));
        let flow = FlowSample::new_checked(samples[1].body, false).unwrap();
        assert_eq!(flow.sequence_number(), 9);
        assert_eq!((flow.source_id_type(), flow.source_id_index()), (0, 3));
        assert_eq!((flow.sampling_rate(), flow.sample_pool()), (256, 4096));
        assert_eq!(flow.input().if_index(), Some(3));
        assert_eq!(
            flow.output(),
            Interface {
                format: 2,
                value: 2
            }
        );
        assert_eq!(flow.output().if_index(), None);
        let records: Vec<_> = flow.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 2);
        assert!(records[0].is(SAMPLED_IPV4));
        let ip = SampledIp::new_checked(records[0].body, false).unwrap();
        assert_eq!((ip.length(), ip.protocol()), (1500, 6));
        assert_eq!(ip.src_ip(), IpAddr::from([10, 0, 0, 1]));
        assert_eq!(ip.dst_ip(), IpAddr::from([10, 0, 0, 2]));
        assert_eq!((ip.src_port(), ip.dst_port()), (50000, 443));
        assert_eq!((ip.tcp_flags(), ip.tos()), (0x18, 0x20));
        assert!(records[1].is(EXTENDED_SWITCH));
        assert_eq!(
            ExtendedSwitch::new_checked(records[1].body).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn every_cut_of_the_datagram_is_an_error_or_fewer_records() {
        for len in 0..DATAGRAM.len() {
            let Ok(datagram) = Datagram::new_checked(&DATAGRAM[..len]) else {
                assert!(len < 28);
                continue;
            };
            let samples: Vec<_> = datagram.samples().collect();
            assert!(samples.last().is_some_and(|s| s.is_err()), "cut at {len}");
        }
    }

    #[test]
    fn bad_version_and_agent_type() {
        let mut bytes = DATAGRAM;
        bytes[3] = 4;
        assert_eq!(
            Datagram::new_checked(&bytes[..]).unwrap_err(),
            WireError::BadVersion
        );
        let mut bytes = DATAGRAM;
        bytes[7] = 3;
        assert_eq!(
            Datagram::new_checked(&bytes[..]).unwrap_err(),
            WireError::BadLength
        );
    }

    #[test]
    fn a_count_larger_than_the_records_is_a_truncation() {
        let mut bytes = DATAGRAM;
        bytes[27] = 3;
        let datagram = Datagram::new_checked(&bytes[..]).unwrap();
        let samples: Vec<_> = datagram.samples().collect();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[2], Err(WireError::Truncated));
        // A huge count stops at the first failure too.
        bytes[24] = 0xff;
        let datagram = Datagram::new_checked(&bytes[..]).unwrap();
        assert_eq!(datagram.samples().count(), 3);
    }

    #[test]
    fn gateway_walks_its_as_path() {
        #[rustfmt::skip]
        let body = [
            0, 0, 0, 1, 192, 0, 2, 254, // next hop 192.0.2.254
            0, 0, 0xfd, 0xe8,           // as 65000
            0, 0, 0xfd, 0xe9,           // src as 65001
            0, 0, 0xfd, 0xea,           // src peer as 65002
            0, 0, 0, 2,                 // 2 segments
            0, 0, 0, 2, 0, 0, 0, 1,     // AS_SEQUENCE of 1
            0, 0, 0, 100,               //   100
            0, 0, 0, 1, 0, 0, 0, 2,     // AS_SET of 2
            0, 0, 0, 200, 0, 0, 1, 44,  //   200, 300
            0, 0, 0, 0,                 // no communities
            0, 0, 0, 100,               // local pref
        ];
        let gateway = ExtendedGateway::new_checked(&body[..]).unwrap();
        assert_eq!(gateway.next_hop(), IpAddr::from([192, 0, 2, 254]));
        assert_eq!(
            (gateway.as_number(), gateway.src_as(), gateway.src_peer_as()),
            (65000, 65001, 65002)
        );
        assert_eq!(gateway.first_path_as(), Some(100));
        assert_eq!(gateway.last_path_as(), Some(300));
        assert_eq!(
            ExtendedGateway::new_checked(&body[..40]).unwrap_err(),
            WireError::Truncated
        );
        let mut huge = body;
        huge[31] = 0xff; // a segment of 255 ASes in a short record
        assert!(ExtendedGateway::new_checked(&huge[..]).is_err());
    }

    #[test]
    fn counter_samples_and_interface_counters() {
        #[rustfmt::skip]
        let mut body = vec![
            0, 0, 0, 9,           // sequence
            0, 0, 0, 7,           // source id: type 0, ifIndex 7
            0, 0, 0, 1,           // one record
            0, 0, 0, 1, 0, 0, 0, 88, // generic interface counters, 88 bytes
        ];
        let mut counters = vec![0u8; 88];
        counters[3] = 7; // ifIndex
        counters[8..16].copy_from_slice(&10_000_000_000u64.to_be_bytes()); // 10 Gbit/s
        counters[24..32].copy_from_slice(&5_000_000_000u64.to_be_bytes()); // in octets
        counters[48..52].copy_from_slice(&3u32.to_be_bytes()); // in errors
        counters[56..64].copy_from_slice(&7_000_000_000u64.to_be_bytes()); // out octets
        counters[76..80].copy_from_slice(&2u32.to_be_bytes()); // out discards
        body.extend_from_slice(&counters);
        let sample = CounterSample::new_checked(&body[..], false).unwrap();
        assert_eq!((sample.sequence_number(), sample.source_id_index()), (9, 7));
        let records: Vec<_> = sample.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 1);
        assert!(records[0].is(GENERIC_INTERFACE_COUNTERS));
        let c = InterfaceCounters::new_checked(records[0].body).unwrap();
        assert_eq!((c.if_index(), c.if_speed()), (7, 10_000_000_000));
        assert_eq!(
            (c.if_in_octets(), c.if_out_octets()),
            (5_000_000_000, 7_000_000_000)
        );
        assert_eq!((c.if_in_errors(), c.if_out_discards()), (3, 2));
        assert!(InterfaceCounters::new_checked(&counters[..87]).is_err());
        assert!(CounterSample::new_checked(&body[..11], false).is_err());
        assert!(CounterSample::new_checked(&body[..15], true).is_err());
    }

    #[test]
    fn raw_header_length_is_checked() {
        #[rustfmt::skip]
        let body = [
            0, 0, 0, 1,       // Ethernet
            0, 0, 0x05, 0xee, // frame length 1518
            0, 0, 0, 4,       // 4 stripped
            0, 0, 0, 3,       // 3 header bytes
            1, 2, 3, 0,       // header, padded
        ];
        let raw = RawPacketHeader::new_checked(&body[..]).unwrap();
        assert_eq!(
            (raw.header_protocol(), raw.frame_length(), raw.stripped()),
            (1, 1518, 4)
        );
        assert_eq!(raw.header(), &[1, 2, 3]);
        let mut long = body;
        long[15] = 5;
        assert_eq!(
            RawPacketHeader::new_checked(&long[..]).unwrap_err(),
            WireError::Truncated
        );
        assert!(RawPacketHeader::new_checked(&body[..15]).is_err());
    }
}
