//! decode: a template compiled once into the offsets of the fields exflow reads. Decoding a
//! data record walks that short list and fills a `FlowRecord` (or `OptionsRecord`) in place;
//! every other field is skipped by its length. No allocation per record or per field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::record::{ETYPE_IPV4, ETYPE_IPV6, FlowRecord};
use crate::wire::read_uint;
use crate::wire::template::{Dialect, FieldSpec, TemplateKind, VARIABLE_LENGTH};
use crate::wire::{ie, sampled};

/// How a timestamp field counts time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Milliseconds,
    /// dateTimeMicroseconds: NTP format (RFC 7011 section 6.1.9).
    NtpMicroseconds,
    /// dateTimeNanoseconds: NTP format.
    NtpNanoseconds,
    /// Milliseconds since the exporter booted (IE 21/22).
    SysUpTime,
    /// Microseconds before the export time (IE 158/159).
    DeltaMicroseconds,
}

/// Where a field's value goes. `Skip` for every element exflow does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Skip,
    Bytes,
    Packets,
    BytesTotal,
    PacketsTotal,
    InitiatorBytes,
    InitiatorPackets,
    ResponderBytes,
    ResponderPackets,
    ObservedMilliseconds,
    ReverseBytes,
    ReversePackets,
    Proto,
    Tos,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcAddrV4,
    DstAddrV4,
    SrcAddrV6,
    DstAddrV6,
    NextHopV4,
    NextHopV6,
    InIf,
    OutIf,
    SrcAs,
    DstAs,
    IpVersion,
    Start(TimeUnit),
    End(TimeUnit),
    DurationMilliseconds,
    DurationMicroseconds,
    SamplerId,
    SamplingInterval,
    SamplerRandomInterval,
    SystemInitMilliseconds,
    SamplingPacketInterval,
    SamplingPacketSpace,
    SamplingSize,
    SamplingPopulation,
    PostNatSrcAddrV4,
    PostNatDstAddrV4,
    PostNatSrcAddrV6,
    PostNatDstAddrV6,
    PostNatSrcPort,
    PostNatDstPort,
    FlowEndReason,
    FlowId,
    FirewallEvent,
    /// ipHeaderPacketSection: the sampled packet from its IP header on.
    IpPacketSection,
    /// dataLinkFrameSection: the sampled frame from its Ethernet header on.
    FramePacketSection,
    /// interfaceName (IE 82), in options data: the name of the record's ifIndex.
    InterfaceName,
    /// interfaceDescription (IE 83), in options data.
    InterfaceDescription,
    /// exporterIPv4Address / exporterIPv6Address (IE 130/131): the exporter behind a relay.
    ExporterAddrV4,
    ExporterAddrV6,
}

impl Target {
    /// The target of one field specifier, `Skip` when exflow does not read it or when its
    /// length cannot hold the element (a 3-byte IPv4 address, a 9-byte counter).
    fn of(spec: FieldSpec, dialect: Dialect, is_scope: bool) -> Target {
        // NetFlow v9 scope fields have their own numbering (1 = system, 2 = interface...);
        // an interface scope is the ifIndex the options record describes.
        if is_scope && dialect == Dialect::V9 {
            return if spec.id == V9_SCOPE_INTERFACE && (1..=8).contains(&spec.length) {
                Target::InIf
            } else {
                Target::Skip
            };
        }
        let target = match (spec.enterprise, spec.id) {
            (0, ie::OCTET_DELTA_COUNT) => Target::Bytes,
            (0, ie::PACKET_DELTA_COUNT) => Target::Packets,
            (0, ie::OCTET_TOTAL_COUNT) => Target::BytesTotal,
            (0, ie::PACKET_TOTAL_COUNT) => Target::PacketsTotal,
            (0, ie::INITIATOR_OCTETS) => Target::InitiatorBytes,
            (0, ie::INITIATOR_PACKETS) => Target::InitiatorPackets,
            (0, ie::RESPONDER_OCTETS) => Target::ResponderBytes,
            (0, ie::RESPONDER_PACKETS) => Target::ResponderPackets,
            (0, ie::OBSERVATION_TIME_MILLISECONDS) => Target::ObservedMilliseconds,
            (ie::REVERSE_PEN, ie::OCTET_DELTA_COUNT) => Target::ReverseBytes,
            (ie::REVERSE_PEN, ie::PACKET_DELTA_COUNT) => Target::ReversePackets,
            (0, ie::PROTOCOL_IDENTIFIER) => Target::Proto,
            (0, ie::IP_CLASS_OF_SERVICE) => Target::Tos,
            (0, ie::TCP_CONTROL_BITS) => Target::TcpFlags,
            (0, ie::SOURCE_TRANSPORT_PORT) => Target::SrcPort,
            (0, ie::DESTINATION_TRANSPORT_PORT) => Target::DstPort,
            (0, ie::SOURCE_IPV4_ADDRESS) => Target::SrcAddrV4,
            (0, ie::DESTINATION_IPV4_ADDRESS) => Target::DstAddrV4,
            (0, ie::SOURCE_IPV6_ADDRESS) => Target::SrcAddrV6,
            (0, ie::DESTINATION_IPV6_ADDRESS) => Target::DstAddrV6,
            (0, ie::IP_NEXT_HOP_IPV4_ADDRESS) => Target::NextHopV4,
            (0, ie::IP_NEXT_HOP_IPV6_ADDRESS) => Target::NextHopV6,
            (0, ie::INGRESS_INTERFACE) => Target::InIf,
            (0, ie::EGRESS_INTERFACE) => Target::OutIf,
            (0, ie::BGP_SOURCE_AS_NUMBER) => Target::SrcAs,
            (0, ie::BGP_DESTINATION_AS_NUMBER) => Target::DstAs,
            (0, ie::IP_VERSION) => Target::IpVersion,
            (0, ie::FLOW_START_SYS_UP_TIME) => Target::Start(TimeUnit::SysUpTime),
            (0, ie::FLOW_END_SYS_UP_TIME) => Target::End(TimeUnit::SysUpTime),
            (0, ie::FLOW_START_SECONDS) => Target::Start(TimeUnit::Seconds),
            (0, ie::FLOW_END_SECONDS) => Target::End(TimeUnit::Seconds),
            (0, ie::FLOW_START_MILLISECONDS) => Target::Start(TimeUnit::Milliseconds),
            (0, ie::FLOW_END_MILLISECONDS) => Target::End(TimeUnit::Milliseconds),
            (0, ie::FLOW_START_MICROSECONDS) => Target::Start(TimeUnit::NtpMicroseconds),
            (0, ie::FLOW_END_MICROSECONDS) => Target::End(TimeUnit::NtpMicroseconds),
            (0, ie::FLOW_START_NANOSECONDS) => Target::Start(TimeUnit::NtpNanoseconds),
            (0, ie::FLOW_END_NANOSECONDS) => Target::End(TimeUnit::NtpNanoseconds),
            (0, ie::FLOW_START_DELTA_MICROSECONDS) => Target::Start(TimeUnit::DeltaMicroseconds),
            (0, ie::FLOW_END_DELTA_MICROSECONDS) => Target::End(TimeUnit::DeltaMicroseconds),
            (0, ie::FLOW_DURATION_MILLISECONDS) => Target::DurationMilliseconds,
            (0, ie::FLOW_DURATION_MICROSECONDS) => Target::DurationMicroseconds,
            (0, ie::SAMPLER_ID) | (0, ie::SELECTOR_ID) => Target::SamplerId,
            (0, ie::SAMPLING_INTERVAL) => Target::SamplingInterval,
            (0, ie::SAMPLER_RANDOM_INTERVAL) => Target::SamplerRandomInterval,
            (0, ie::SYSTEM_INIT_TIME_MILLISECONDS) => Target::SystemInitMilliseconds,
            (0, ie::SAMPLING_PACKET_INTERVAL) => Target::SamplingPacketInterval,
            (0, ie::SAMPLING_PACKET_SPACE) => Target::SamplingPacketSpace,
            (0, ie::SAMPLING_SIZE) => Target::SamplingSize,
            (0, ie::SAMPLING_POPULATION) => Target::SamplingPopulation,
            (0, ie::POST_NAT_SOURCE_IPV4_ADDRESS) => Target::PostNatSrcAddrV4,
            (0, ie::POST_NAT_DESTINATION_IPV4_ADDRESS) => Target::PostNatDstAddrV4,
            (0, ie::POST_NAT_SOURCE_IPV6_ADDRESS) => Target::PostNatSrcAddrV6,
            (0, ie::POST_NAT_DESTINATION_IPV6_ADDRESS) => Target::PostNatDstAddrV6,
            (0, ie::POST_NAPT_SOURCE_TRANSPORT_PORT) => Target::PostNatSrcPort,
            (0, ie::POST_NAPT_DESTINATION_TRANSPORT_PORT) => Target::PostNatDstPort,
            (0, ie::FLOW_END_REASON) => Target::FlowEndReason,
            (0, ie::FLOW_ID) => Target::FlowId,
            (0, ie::FIREWALL_EVENT) => Target::FirewallEvent,
            (0, id) if dialect == Dialect::V9 && id >= ie::NSEL_V9_XLATE_SRC_ADDR_IPV4 => {
                match id {
                    ie::NSEL_V9_XLATE_SRC_ADDR_IPV4 => Target::PostNatSrcAddrV4,
                    ie::NSEL_V9_XLATE_DST_ADDR_IPV4 => Target::PostNatDstAddrV4,
                    ie::NSEL_V9_XLATE_SRC_PORT => Target::PostNatSrcPort,
                    ie::NSEL_V9_XLATE_DST_PORT => Target::PostNatDstPort,
                    ie::NSEL_V9_FW_EVENT => Target::FirewallEvent,
                    _ => Target::Skip,
                }
            }
            (0, ie::IP_HEADER_PACKET_SECTION) => Target::IpPacketSection,
            (0, ie::DATA_LINK_FRAME_SECTION) => Target::FramePacketSection,
            (0, ie::INTERFACE_NAME) => Target::InterfaceName,
            (0, ie::INTERFACE_DESCRIPTION) => Target::InterfaceDescription,
            (0, ie::EXPORTER_IPV4_ADDRESS) => Target::ExporterAddrV4,
            (0, ie::EXPORTER_IPV6_ADDRESS) => Target::ExporterAddrV6,
            _ => Target::Skip,
        };
        let length_fits = match target {
            Target::Skip => true,
            // Any length (usually variable): the packet parser bounds every read.
            Target::IpPacketSection | Target::FramePacketSection => true,
            // Strings of any length; what is kept is cut to `MAX_INTERFACE_TEXT_BYTES`.
            Target::InterfaceName | Target::InterfaceDescription => true,
            Target::ExporterAddrV4 => spec.length == 4,
            Target::ExporterAddrV6 => spec.length == 16,
            Target::SrcAddrV4
            | Target::DstAddrV4
            | Target::NextHopV4
            | Target::PostNatSrcAddrV4
            | Target::PostNatDstAddrV4 => spec.length == 4,
            Target::SrcAddrV6
            | Target::DstAddrV6
            | Target::NextHopV6
            | Target::PostNatSrcAddrV6
            | Target::PostNatDstAddrV6 => spec.length == 16,
            _ => (1..=8).contains(&spec.length),
        };
        if length_fits { target } else { Target::Skip }
    }
}

/// NetFlow v9's options scope type "Interface" (RFC 3954 section 6.1).
const V9_SCOPE_INTERFACE: u16 = 2;

/// One field exflow reads, at a fixed offset in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Op {
    offset: u16,
    length: u16,
    target: Target,
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub template_id: u16,
    pub kind: TemplateKind,
    pub dialect: Dialect,
    pub scope_field_count: u16,
    /// The template as received, kept for persistence and for variable-length records.
    pub specs: Box<[FieldSpec]>,
    /// Targets of `specs`, index for index.
    targets: Box<[Target]>,
    /// Fields read, with offsets; only valid when `record_length` is `Some`.
    ops: Box<[Op]>,
    /// `ops` resolved to one read per value, when every field read is a common one.
    direct: Option<Direct>,
    /// Length of every record when no field has variable length.
    record_length: Option<u16>,
    /// The fewest bytes a record can take (at least 1, so walking a set always progresses).
    min_record_length: usize,
}

/// Why a template cannot be compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// More fields than the configured cap.
    TooManyFields,
    /// A template whose records would take zero bytes, or a v9 template without fields.
    Empty,
}

impl Layout {
    pub fn compile(
        template_id: u16,
        kind: TemplateKind,
        dialect: Dialect,
        scope_field_count: u16,
        specs: &[FieldSpec],
        max_fields: usize,
    ) -> Result<Layout, LayoutError> {
        if specs.len() > max_fields {
            return Err(LayoutError::TooManyFields);
        }
        let mut targets = Vec::with_capacity(specs.len());
        let mut ops = Vec::new();
        let mut offset: usize = 0;
        let mut variable = false;
        let mut min_record_length: usize = 0;
        for (index, &spec) in specs.iter().enumerate() {
            let is_scope = index < usize::from(scope_field_count);
            let target = Target::of(spec, dialect, is_scope);
            targets.push(target);
            // IPFIX's variable length (RFC 7011 section 7); H3C sends it in v9 templates too.
            if spec.length == VARIABLE_LENGTH {
                variable = true;
                min_record_length += 1;
                continue;
            }
            if target != Target::Skip && offset <= usize::from(u16::MAX) {
                ops.push(Op {
                    offset: offset as u16,
                    length: spec.length,
                    target,
                });
            }
            offset += usize::from(spec.length);
            min_record_length += usize::from(spec.length);
        }
        if min_record_length == 0 {
            return Err(LayoutError::Empty);
        }
        let record_length = if variable {
            None
        } else {
            u16::try_from(offset).ok()
        };
        let direct = record_length.and_then(|_| Direct::compile(&ops));
        Ok(Layout {
            template_id,
            kind,
            dialect,
            scope_field_count,
            specs: specs.into(),
            targets: targets.into(),
            ops: ops.into(),
            direct,
            record_length,
            min_record_length,
        })
    }

    /// Splits the next record off the front of `body`: `Some((record, rest))`, or `None`
    /// when what is left is shorter than a record (padding, or a truncated record).
    #[inline]
    pub fn split_record<'a>(&self, body: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let length = match self.record_length {
            Some(length) => usize::from(length),
            None => self.variable_record_length(body)?,
        };
        if body.len() < length.max(self.min_record_length) {
            return None;
        }
        Some(body.split_at(length))
    }

    fn variable_record_length(&self, body: &[u8]) -> Option<usize> {
        let mut at = 0usize;
        for spec in self.specs.iter() {
            at += if spec.length == VARIABLE_LENGTH {
                variable_field(body, at)?.1
            } else {
                usize::from(spec.length)
            };
            if at > body.len() {
                return None;
            }
        }
        Some(at)
    }

    /// Calls `apply` with each field exflow reads in `record` (as split by
    /// [`split_record`](Self::split_record)).
    #[inline]
    fn for_each_field<'r>(&self, record: &'r [u8], mut apply: impl FnMut(Target, &'r [u8])) {
        if self.record_length.is_some() {
            for op in self.ops.iter() {
                let start = usize::from(op.offset);
                if let Some(bytes) = record.get(start..start + usize::from(op.length)) {
                    apply(op.target, bytes);
                }
            }
            return;
        }
        let mut at = 0usize;
        for (spec, &target) in self.specs.iter().zip(self.targets.iter()) {
            let (start, length) = if spec.length == VARIABLE_LENGTH {
                match variable_field(record, at) {
                    Some((header, total)) => (at + header, total - header),
                    None => return,
                }
            } else {
                (at, usize::from(spec.length))
            };
            let Some(bytes) = record.get(start..start + length) else {
                return;
            };
            if target != Target::Skip {
                apply(target, bytes);
            }
            at = start + length;
        }
    }

    /// Decodes a data record into `flow` and `times`. `flow`'s header fields (exporter,
    /// sequence...) are the caller's to set.
    #[inline]
    pub fn decode_flow(&self, record: &[u8], flow: &mut FlowRecord, facts: &mut RecordFacts) {
        let mut scratch = FlowScratch::default();
        if let Some(direct) = &self.direct
            && self
                .record_length
                .is_some_and(|length| record.len() >= usize::from(length))
        {
            // The hot path of the common templates: no loop, no match per field. (A short
            // record is decoded field by field: an earlier field of a value given twice
            // may be in it where the last is not.)
            direct.decode(record, flow, facts, &mut scratch);
        } else if self.record_length.is_some() {
            // Fixed offsets, one match per field read.
            for op in self.ops.iter() {
                let start = usize::from(op.offset);
                if let Some(bytes) = record.get(start..start + usize::from(op.length)) {
                    apply_flow_field(op.target, bytes, flow, facts, &mut scratch);
                }
            }
        } else {
            self.for_each_field(record, |target, bytes| {
                apply_flow_field(target, bytes, flow, facts, &mut scratch)
            });
        }
        // Delta counters first; else totals; else a firewall's initiator counters (NSEL).
        // `facts.counters` says which, for the decoder to turn totals into deltas.
        facts.counters = if scratch.has_delta
            && (flow.bytes != 0 || flow.packets != 0 || !scratch.has_total)
        {
            CounterSource::Delta
        } else if scratch.has_total
            && (scratch.bytes_total != 0 || scratch.packets_total != 0 || !scratch.has_initiator)
        {
            flow.bytes = scratch.bytes_total;
            flow.packets = scratch.packets_total;
            CounterSource::Totals
        } else if scratch.has_initiator {
            flow.bytes = scratch.initiator_bytes;
            flow.packets = scratch.initiator_packets;
            CounterSource::Initiator
        } else {
            CounterSource::None
        };
        if flow.reverse_bytes == 0 {
            flow.reverse_bytes = scratch.responder_bytes;
        }
        if flow.reverse_packets == 0 {
            flow.reverse_packets = scratch.responder_packets;
        }
        // A packet section stands in for address fields the record does not have.
        if flow.src_addr.is_unspecified()
            && flow.dst_addr.is_unspecified()
            && let Some(packet) = scratch.packet
            && let Some((src, dst)) = packet.addresses
        {
            flow.src_addr = src;
            flow.dst_addr = dst;
            flow.proto = packet.proto;
            flow.src_port = packet.src_port;
            flow.dst_port = packet.dst_port;
            if flow.tcp_flags == 0 {
                flow.tcp_flags = packet.tcp_flags;
            }
            if flow.ip_tos == 0 {
                flow.ip_tos = packet.tos;
            }
            facts.from_packet_section = true;
        }
        flow.etype = match scratch.ip_version {
            4 => ETYPE_IPV4,
            6 => ETYPE_IPV6,
            _ if flow.src_addr.is_ipv6() || flow.dst_addr.is_ipv6() => ETYPE_IPV6,
            _ => ETYPE_IPV4,
        };
    }

    /// Decodes an options data record: the sampling and clock facts exflow keeps.
    pub fn decode_options<'r>(&self, record: &'r [u8]) -> OptionsRecord<'r> {
        let mut options = OptionsRecord::default();
        self.for_each_field(record, |target, bytes| {
            let value = read_uint(bytes);
            match target {
                Target::InIf => options.if_index = u32::try_from(value).ok(),
                Target::OutIf => options.if_index = options.if_index.or(u32::try_from(value).ok()),
                Target::InterfaceName => options.interface_name = Some(bytes),
                Target::InterfaceDescription => options.interface_description = Some(bytes),
                // Juniper sends both, the family it does not use zero-filled.
                Target::ExporterAddrV4 => {
                    set_exporter_address(&mut options.exporter_address, ipv4(bytes))
                }
                Target::ExporterAddrV6 => {
                    set_exporter_address(&mut options.exporter_address, ipv6(bytes))
                }
                Target::SystemInitMilliseconds => options.system_init_ms = Some(value),
                Target::SamplerId => options.sampler_id = Some(value),
                Target::SamplingInterval | Target::SamplerRandomInterval => {
                    options.sampling_interval = Some(value)
                }
                Target::SamplingPacketInterval => options.packet_interval = Some(value),
                Target::SamplingPacketSpace => options.packet_space = Some(value),
                Target::SamplingSize => options.sampling_size = Some(value),
                Target::SamplingPopulation => options.sampling_population = Some(value),
                _ => {}
            }
        });
        options
    }
}

/// Where one value lies in a fixed-length record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    start: u16,
    end: u16,
}

impl Slot {
    #[inline(always)]
    fn of(self, record: &[u8]) -> Option<&[u8]> {
        record.get(usize::from(self.start)..usize::from(self.end))
    }
}

/// A fixed-length template whose fields read are all common ones (counters, addresses,
/// ports, interfaces, ASes, times, sampler), resolved to where each value lies: decoding
/// a record is then a straight run of reads, each either always or never taken for the
/// template, instead of a dispatch per field. A value the template gives twice is read
/// from its last field, as the field-by-field decoding leaves it; a template with what
/// that decoding resolves between fields (an address given twice, either family, a
/// firewall's or NAT's fields, totals, packet sections) has no `Direct`, and is decoded
/// field by field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Direct {
    bytes: Option<Slot>,
    packets: Option<Slot>,
    reverse_bytes: Option<Slot>,
    reverse_packets: Option<Slot>,
    proto: Option<Slot>,
    tos: Option<Slot>,
    tcp_flags: Option<Slot>,
    src_port: Option<Slot>,
    dst_port: Option<Slot>,
    /// 4 bytes for IPv4, 16 for IPv6 (as `Target::of` admits them).
    src_addr: Option<Slot>,
    dst_addr: Option<Slot>,
    next_hop: Option<Slot>,
    in_if: Option<Slot>,
    out_if: Option<Slot>,
    src_as: Option<Slot>,
    dst_as: Option<Slot>,
    ip_version: Option<Slot>,
    start: Option<(Slot, TimeUnit)>,
    end: Option<(Slot, TimeUnit)>,
    flow_end_reason: Option<Slot>,
    sampler_id: Option<Slot>,
    sampling_interval: Option<Slot>,
}

impl Direct {
    /// `None` when a field read is not one `Direct` takes, or an address comes twice.
    fn compile(ops: &[Op]) -> Option<Direct> {
        let mut direct = Direct::default();
        for op in ops {
            let slot = Slot {
                start: op.offset,
                end: op.offset.checked_add(op.length)?,
            };
            let last = |field: &mut Option<Slot>| *field = Some(slot);
            let once = |field: &mut Option<Slot>| field.replace(slot).is_none().then_some(());
            match op.target {
                Target::Bytes => last(&mut direct.bytes),
                Target::Packets => last(&mut direct.packets),
                Target::ReverseBytes => last(&mut direct.reverse_bytes),
                Target::ReversePackets => last(&mut direct.reverse_packets),
                Target::Proto => last(&mut direct.proto),
                Target::Tos => last(&mut direct.tos),
                Target::TcpFlags => last(&mut direct.tcp_flags),
                Target::SrcPort => last(&mut direct.src_port),
                Target::DstPort => last(&mut direct.dst_port),
                // Set only when not zero, or first: an address given twice is resolved
                // between its fields.
                Target::SrcAddrV4 | Target::SrcAddrV6 => once(&mut direct.src_addr)?,
                Target::DstAddrV4 | Target::DstAddrV6 => once(&mut direct.dst_addr)?,
                Target::NextHopV4 | Target::NextHopV6 => last(&mut direct.next_hop),
                Target::InIf => last(&mut direct.in_if),
                Target::OutIf => last(&mut direct.out_if),
                Target::SrcAs => last(&mut direct.src_as),
                Target::DstAs => last(&mut direct.dst_as),
                Target::IpVersion => last(&mut direct.ip_version),
                Target::Start(unit) => direct.start = Some((slot, unit)),
                Target::End(unit) => direct.end = Some((slot, unit)),
                Target::FlowEndReason => last(&mut direct.flow_end_reason),
                Target::SamplerId => last(&mut direct.sampler_id),
                Target::SamplingInterval | Target::SamplerRandomInterval => {
                    last(&mut direct.sampling_interval)
                }
                _ => return None,
            }
        }
        Some(direct)
    }

    /// What [`apply_flow_field`] makes of the template's fields, one after another.
    #[inline]
    fn decode(
        &self,
        record: &[u8],
        flow: &mut FlowRecord,
        facts: &mut RecordFacts,
        scratch: &mut FlowScratch,
    ) {
        let uint = |slot: Option<Slot>| slot.and_then(|slot| slot.of(record)).map(read_uint);
        let address = |slot: Option<Slot>| {
            let bytes = slot?.of(record)?;
            Some(if bytes.len() == 4 {
                ipv4(bytes)
            } else {
                ipv6(bytes)
            })
        };
        if let Some(bytes) = uint(self.bytes) {
            flow.bytes = bytes;
            scratch.has_delta = true;
        }
        if let Some(packets) = uint(self.packets) {
            flow.packets = packets;
            scratch.has_delta = true;
        }
        if let Some(bytes) = uint(self.reverse_bytes) {
            flow.reverse_bytes = bytes;
        }
        if let Some(packets) = uint(self.reverse_packets) {
            flow.reverse_packets = packets;
        }
        if let Some(proto) = uint(self.proto) {
            flow.proto = proto as u8;
        }
        if let Some(tos) = uint(self.tos) {
            flow.ip_tos = tos as u8;
        }
        if let Some(flags) = uint(self.tcp_flags) {
            flow.tcp_flags = flags as u8;
        }
        if let Some(port) = uint(self.src_port) {
            flow.src_port = port as u16;
        }
        if let Some(port) = uint(self.dst_port) {
            flow.dst_port = port as u16;
        }
        if let Some(src) = address(self.src_addr) {
            set_address(&mut flow.src_addr, src);
        }
        if let Some(dst) = address(self.dst_addr) {
            set_address(&mut flow.dst_addr, dst);
        }
        if let Some(next_hop) = address(self.next_hop) {
            flow.next_hop = next_hop;
        }
        if let Some(index) = uint(self.in_if) {
            flow.in_if = index as u32;
        }
        if let Some(index) = uint(self.out_if) {
            flow.out_if = index as u32;
        }
        if let Some(asn) = uint(self.src_as) {
            flow.src_as = asn as u32;
        }
        if let Some(asn) = uint(self.dst_as) {
            flow.dst_as = asn as u32;
        }
        if let Some(version) = uint(self.ip_version) {
            scratch.ip_version = version;
        }
        if let Some((slot, unit)) = self.start
            && let Some(bytes) = slot.of(record)
        {
            facts.start = Some((unit, read_uint(bytes)));
        }
        if let Some((slot, unit)) = self.end
            && let Some(bytes) = slot.of(record)
        {
            facts.end = Some((unit, read_uint(bytes)));
        }
        if let Some(reason) = uint(self.flow_end_reason) {
            flow.flow_end_reason = reason as u8;
        }
        if let Some(id) = uint(self.sampler_id) {
            facts.sampler_id = Some(id);
        }
        if let Some(interval) = uint(self.sampling_interval) {
            facts.sampling_interval = Some(interval);
        }
    }
}

/// Fields of a data record that only decide other fields.
#[derive(Default)]
struct FlowScratch {
    has_delta: bool,
    has_total: bool,
    has_initiator: bool,
    bytes_total: u64,
    packets_total: u64,
    initiator_bytes: u64,
    initiator_packets: u64,
    responder_bytes: u64,
    responder_packets: u64,
    ip_version: u64,
    /// What a packet section (IE 313/315) held, when the record had one.
    packet: Option<sampled::PacketSummary>,
}

#[inline(always)]
fn apply_flow_field(
    target: Target,
    bytes: &[u8],
    flow: &mut FlowRecord,
    times: &mut RecordFacts,
    scratch: &mut FlowScratch,
) {
    match target {
        Target::Bytes => {
            flow.bytes = read_uint(bytes);
            scratch.has_delta = true;
        }
        Target::Packets => {
            flow.packets = read_uint(bytes);
            scratch.has_delta = true;
        }
        Target::BytesTotal => {
            scratch.bytes_total = read_uint(bytes);
            scratch.has_total = true;
        }
        Target::PacketsTotal => {
            scratch.packets_total = read_uint(bytes);
            scratch.has_total = true;
        }
        Target::InitiatorBytes => {
            scratch.initiator_bytes = read_uint(bytes);
            scratch.has_initiator = true;
        }
        Target::InitiatorPackets => {
            scratch.initiator_packets = read_uint(bytes);
            scratch.has_initiator = true;
        }
        Target::ResponderBytes => scratch.responder_bytes = read_uint(bytes),
        Target::ResponderPackets => scratch.responder_packets = read_uint(bytes),
        Target::ObservedMilliseconds => times.observed_ms = Some(read_uint(bytes)),
        Target::ReverseBytes => flow.reverse_bytes = read_uint(bytes),
        Target::ReversePackets => flow.reverse_packets = read_uint(bytes),
        Target::Proto => flow.proto = read_uint(bytes) as u8,
        Target::Tos => flow.ip_tos = read_uint(bytes) as u8,
        Target::TcpFlags => flow.tcp_flags = read_uint(bytes) as u8,
        Target::SrcPort => flow.src_port = read_uint(bytes) as u16,
        Target::DstPort => flow.dst_port = read_uint(bytes) as u16,
        Target::SrcAddrV4 => set_address(&mut flow.src_addr, ipv4(bytes)),
        Target::DstAddrV4 => set_address(&mut flow.dst_addr, ipv4(bytes)),
        Target::SrcAddrV6 => set_address(&mut flow.src_addr, ipv6(bytes)),
        Target::DstAddrV6 => set_address(&mut flow.dst_addr, ipv6(bytes)),
        Target::NextHopV4 => flow.next_hop = ipv4(bytes),
        Target::NextHopV6 => flow.next_hop = ipv6(bytes),
        Target::InIf => flow.in_if = read_uint(bytes) as u32,
        Target::OutIf => flow.out_if = read_uint(bytes) as u32,
        Target::SrcAs => flow.src_as = read_uint(bytes) as u32,
        Target::DstAs => flow.dst_as = read_uint(bytes) as u32,
        Target::IpVersion => scratch.ip_version = read_uint(bytes),
        Target::Start(unit) => times.start = Some((unit, read_uint(bytes))),
        Target::End(unit) => times.end = Some((unit, read_uint(bytes))),
        Target::DurationMilliseconds => {
            times.duration_ns = Some(read_uint(bytes).saturating_mul(1_000_000))
        }
        Target::DurationMicroseconds => {
            times.duration_ns = Some(read_uint(bytes).saturating_mul(1_000))
        }
        Target::SamplerId => times.sampler_id = Some(read_uint(bytes)),
        Target::SamplingInterval | Target::SamplerRandomInterval => {
            times.sampling_interval = Some(read_uint(bytes))
        }
        Target::PostNatSrcAddrV4 => flow.post_nat_src_addr = ipv4(bytes),
        Target::PostNatDstAddrV4 => flow.post_nat_dst_addr = ipv4(bytes),
        Target::PostNatSrcAddrV6 => flow.post_nat_src_addr = ipv6(bytes),
        Target::PostNatDstAddrV6 => flow.post_nat_dst_addr = ipv6(bytes),
        Target::PostNatSrcPort => flow.post_nat_src_port = read_uint(bytes) as u16,
        Target::PostNatDstPort => flow.post_nat_dst_port = read_uint(bytes) as u16,
        Target::FlowEndReason => flow.flow_end_reason = read_uint(bytes) as u8,
        Target::FirewallEvent => flow.firewall_event = read_uint(bytes) as u8,
        Target::FlowId => times.flow_id = Some(read_uint(bytes)),
        Target::IpPacketSection => scratch.packet = sampled::ip(bytes),
        Target::FramePacketSection => scratch.packet = sampled::ethernet(bytes),
        Target::ExporterAddrV4 => set_exporter_address(&mut times.exporter_address, ipv4(bytes)),
        Target::ExporterAddrV6 => set_exporter_address(&mut times.exporter_address, ipv6(bytes)),
        _ => {}
    }
}

/// Length of an IPFIX variable-length field at `at` (RFC 7011 section 7): `(header, total)`
/// where `header` is 1 or 3 bytes and `total` includes it.
#[inline]
fn variable_field(record: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *record.get(at)?;
    if first < 255 {
        Some((1, 1 + usize::from(first)))
    } else {
        let long = crate::wire::read_u16(record, at + 1)?;
        Some((3, 3 + usize::from(long)))
    }
}

/// Sets an address unless `address` is all zero and the record already gave one: a template
/// with both IPv4 and IPv6 address fields (Cisco's MPLS-aware template 313 in
/// pmacct-test-automation) zero-fills the family the packet was not.
#[inline(always)]
fn set_address(slot: &mut IpAddr, address: IpAddr) {
    if !address.is_unspecified() || slot.is_unspecified() {
        *slot = address;
    }
}

/// Keeps an exporterIPv4Address / exporterIPv6Address that is not all zero.
fn set_exporter_address(slot: &mut Option<IpAddr>, address: IpAddr) {
    if !address.is_unspecified() {
        *slot = Some(address);
    }
}

#[inline(always)]
fn ipv4(bytes: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
}

#[inline(always)]
fn ipv6(bytes: &[u8]) -> IpAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(bytes);
    IpAddr::V6(Ipv6Addr::from(octets))
}

/// Which counters of a data record `bytes` and `packets` came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CounterSource {
    /// No counter fields.
    #[default]
    None,
    /// octetDeltaCount / packetDeltaCount (IE 1/2): new volume since the last report.
    Delta,
    /// octetTotalCount / packetTotalCount (IE 85/86) alone: running totals over the flow.
    Totals,
    /// A firewall's initiator counters (NSEL IE 231/298): what its event defines.
    Initiator,
}

/// The raw facts of one data record the decoder resolves against the export header and the
/// exporter's state: its times, sampler, which counters it carried and its flow id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordFacts {
    pub counters: CounterSource,
    /// flowId (IE 148; NSEL's connection id).
    pub flow_id: Option<u64>,
    /// The 5-tuple came from a packet section (IE 313/315).
    pub from_packet_section: bool,
    pub start: Option<(TimeUnit, u64)>,
    pub end: Option<(TimeUnit, u64)>,
    pub duration_ns: Option<u64>,
    pub sampler_id: Option<u64>,
    pub sampling_interval: Option<u64>,
    /// observationTimeMilliseconds (NSEL's event time): the end of a record that has no end
    /// time of its own, or its start and end when it has no times at all.
    pub observed_ms: Option<u64>,
    /// exporterIPv4Address / exporterIPv6Address carried in the record itself.
    pub exporter_address: Option<IpAddr>,
}

/// What an options data record told about the exporter. Strings are borrowed from the
/// record; the decoder copies what it keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OptionsRecord<'r> {
    /// The interface the record describes (ingressInterface / egressInterface, or a v9
    /// interface scope).
    pub if_index: Option<u32>,
    pub interface_name: Option<&'r [u8]>,
    pub interface_description: Option<&'r [u8]>,
    /// exporterIPv4Address / exporterIPv6Address: the exporter a relay forwards for.
    pub exporter_address: Option<IpAddr>,
    pub system_init_ms: Option<u64>,
    pub sampler_id: Option<u64>,
    pub sampling_interval: Option<u64>,
    pub packet_interval: Option<u64>,
    pub packet_space: Option<u64>,
    pub sampling_size: Option<u64>,
    pub sampling_population: Option<u64>,
}

impl OptionsRecord<'_> {
    /// The 1-in-N sampling rate this record announces, if any.
    pub fn sampling_rate(&self) -> Option<u32> {
        let rate = match (
            self.sampling_size,
            self.sampling_population,
            self.packet_interval,
            self.packet_space,
        ) {
            // RFC 5476 n-out-of-N: `size` packets of every `population` (Cisco's random sampler).
            (Some(size), Some(population), _, _) if size > 0 => population / size,
            // RFC 5476 count-based: select `interval` packets, then skip `space`.
            // Hostile values must not overflow: a sum past u64 announces no usable rate.
            (_, _, Some(interval), Some(space)) if interval > 0 => {
                interval.checked_add(space)? / interval
            }
            _ => self.sampling_interval?,
        };
        u32::try_from(rate).ok().filter(|&rate| rate > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u16, length: u16) -> FieldSpec {
        FieldSpec::new(id, length)
    }

    #[test]
    fn fixed_layout_reads_reduced_size_fields_and_skips_the_rest() {
        let specs = [
            spec(8, 4),
            spec(12, 4),
            spec(1, 2),
            spec(2, 1),
            spec(82, 3),
            spec(7, 2),
            spec(11, 2),
            spec(4, 1),
        ];
        let layout =
            Layout::compile(256, TemplateKind::Data, Dialect::Ipfix, 0, &specs, 64).unwrap();
        #[rustfmt::skip]
        let body = [
            10, 0, 0, 1,     // sourceIPv4Address
            192, 0, 2, 9,    // destinationIPv4Address
            0x05, 0xdc,      // octetDeltaCount in 2 bytes: 1500
            3,               // packetDeltaCount in 1 byte
            0xaa, 0xbb, 0xcc,// interfaceName: skipped
            0x04, 0xd2,      // source port 1234
            0x00, 0x35,      // destination port 53
            17,              // UDP
            0xff,            // start of the next record (incomplete)
        ];
        let (record, rest) = layout.split_record(&body).unwrap();
        assert_eq!(rest, &[0xff]);
        assert!(layout.split_record(rest).is_none());
        let mut flow = FlowRecord::default();
        let mut times = RecordFacts::default();
        layout.decode_flow(record, &mut flow, &mut times);
        assert_eq!(flow.src_addr, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(flow.dst_addr, "192.0.2.9".parse::<IpAddr>().unwrap());
        assert_eq!((flow.bytes, flow.packets), (1500, 3));
        assert_eq!((flow.src_port, flow.dst_port, flow.proto), (1234, 53, 17));
        assert_eq!(flow.etype, ETYPE_IPV4);
        let delta = RecordFacts {
            counters: CounterSource::Delta,
            ..RecordFacts::default()
        };
        assert_eq!(times, delta);
    }

    #[test]
    fn firewall_nat_and_totals_fields() {
        let specs = [
            spec(148, 4),   // flowId (NSEL connection id)
            spec(8, 4),     // sourceIPv4Address
            spec(225, 4),   // postNATSourceIPv4Address
            spec(227, 2),   // postNAPTSourceTransportPort
            spec(85, 4),    // octetTotalCount
            spec(136, 1),   // flowEndReason
            spec(40005, 1), // NSEL's v9 firewall event
        ];
        let layout = Layout::compile(260, TemplateKind::Data, Dialect::V9, 0, &specs, 64).unwrap();
        #[rustfmt::skip]
        let body = [
            0, 0, 0x21, 0x35,  // connection 8501
            10, 0, 0, 5,
            198, 51, 100, 7,
            0x9c, 0x41,        // 40001
            0, 0, 0x03, 0xe8,  // 1000 bytes so far
            3,                 // end of flow detected
            2,                 // flow deleted
        ];
        let mut flow = FlowRecord::default();
        let mut facts = RecordFacts::default();
        layout.decode_flow(&body, &mut flow, &mut facts);
        assert_eq!(
            (facts.counters, facts.flow_id),
            (CounterSource::Totals, Some(8501))
        );
        assert_eq!(flow.bytes, 1000);
        assert_eq!(
            flow.post_nat_src_addr,
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(flow.post_nat_src_port, 40001);
        assert_eq!((flow.flow_end_reason, flow.firewall_event), (3, 2));
        // 40005 is an enterprise-bit id in IPFIX, not NSEL's event.
        let ipfix =
            Layout::compile(260, TemplateKind::Data, Dialect::Ipfix, 0, &specs, 64).unwrap();
        assert_eq!(ipfix.targets[6], Target::Skip);
    }

    #[test]
    fn a_zero_filled_address_family_does_not_hide_the_other() {
        // Cisco's template 313 in pmacct-test-automation: IPv6 addresses, then zeroed IPv4.
        let specs = [spec(27, 16), spec(28, 16), spec(8, 4), spec(12, 4)];
        let layout =
            Layout::compile(313, TemplateKind::Data, Dialect::Ipfix, 0, &specs, 64).unwrap();
        let mut body = [0u8; 40];
        body[0..2].copy_from_slice(&[0x20, 0x01]); // 2001::1
        body[15] = 1;
        body[16..18].copy_from_slice(&[0x20, 0x01]); // 2001::2
        body[31] = 2;
        let mut flow = FlowRecord::default();
        layout.decode_flow(&body, &mut flow, &mut RecordFacts::default());
        assert_eq!(flow.src_addr, "2001::1".parse::<IpAddr>().unwrap());
        assert_eq!(flow.dst_addr, "2001::2".parse::<IpAddr>().unwrap());
        assert_eq!(flow.etype, ETYPE_IPV6);
        // The IPv4 packet of the same template: its zero IPv6 fields come first.
        let mut body = [0u8; 40];
        body[32..36].copy_from_slice(&[192, 0, 2, 11]);
        body[36..40].copy_from_slice(&[192, 0, 2, 12]);
        let mut flow = FlowRecord::default();
        layout.decode_flow(&body, &mut flow, &mut RecordFacts::default());
        assert_eq!(flow.src_addr, "192.0.2.11".parse::<IpAddr>().unwrap());
        assert_eq!(flow.dst_addr, "192.0.2.12".parse::<IpAddr>().unwrap());
        assert_eq!(flow.etype, ETYPE_IPV4);
    }

    #[test]
    fn a_packet_section_gives_the_five_tuple_only_when_addresses_are_missing() {
        let specs = [spec(2, 4), spec(313, VARIABLE_LENGTH)];
        let layout =
            Layout::compile(261, TemplateKind::Data, Dialect::Ipfix, 0, &specs, 64).unwrap();
        #[rustfmt::skip]
        let mut body = vec![
            0, 0, 0, 1,        // one packet
            28,                // section length: IPv4 (20) + UDP (8)
            0x45, 0x10, 0, 40, 0, 0, 0x40, 0, 64, 17, 0, 0,
            10, 0, 0, 9,       // source
            192, 0, 2, 53,     // destination
            0x13, 0x88, 0, 53, 0, 20, 0, 0, // UDP 5000 -> 53
        ];
        let (record, _) = layout.split_record(&body).unwrap();
        let mut flow = FlowRecord::default();
        let mut facts = RecordFacts::default();
        layout.decode_flow(record, &mut flow, &mut facts);
        assert!(facts.from_packet_section);
        assert_eq!(flow.src_addr, "10.0.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            (flow.proto, flow.src_port, flow.dst_port, flow.ip_tos),
            (17, 5000, 53, 0x10)
        );
        // A truncated section is read as far as it goes, never past the record.
        body.truncate(12);
        body[4] = 7;
        let (record, _) = layout.split_record(&body).unwrap();
        let mut flow = FlowRecord::default();
        let mut facts = RecordFacts::default();
        layout.decode_flow(record, &mut flow, &mut facts);
        assert!(!facts.from_packet_section);
        assert!(flow.src_addr.is_unspecified());
    }

    #[test]
    fn variable_length_fields_in_both_forms() {
        let specs = [
            spec(82, VARIABLE_LENGTH),
            spec(1, 4),
            spec(83, VARIABLE_LENGTH),
            spec(2, 4),
        ];
        let layout =
            Layout::compile(300, TemplateKind::Data, Dialect::Ipfix, 0, &specs, 64).unwrap();
        let mut body = vec![2, b'e', b't']; // short form: 2 bytes
        body.extend_from_slice(&[0, 0, 0, 100]); // octets
        body.extend_from_slice(&[255, 0, 3, b'a', b'b', b'c']); // long form: 3 bytes
        body.extend_from_slice(&[0, 0, 0, 7]); // packets
        let (record, rest) = layout.split_record(&body).unwrap();
        assert!(rest.is_empty());
        let mut flow = FlowRecord::default();
        layout.decode_flow(record, &mut flow, &mut RecordFacts::default());
        assert_eq!((flow.bytes, flow.packets), (100, 7));
        // A variable-length field running past the end is not a record.
        assert!(layout.split_record(&[9, 1, 2]).is_none());
        assert!(layout.split_record(&[255, 0xff]).is_none());
    }

    #[test]
    fn misfit_lengths_are_skipped_and_empty_templates_refused() {
        let specs = [spec(8, 3), spec(1, 9), spec(27, 4)];
        let layout =
            Layout::compile(256, TemplateKind::Data, Dialect::Ipfix, 0, &specs, 64).unwrap();
        assert!(layout.targets.iter().all(|&t| t == Target::Skip));
        assert_eq!(
            Layout::compile(256, TemplateKind::Data, Dialect::V9, 0, &[], 64),
            Err(LayoutError::Empty)
        );
        assert_eq!(
            Layout::compile(256, TemplateKind::Data, Dialect::V9, 0, &[spec(1, 0)], 64),
            Err(LayoutError::Empty)
        );
        assert_eq!(
            Layout::compile(256, TemplateKind::Data, Dialect::V9, 0, &[spec(1, 4); 3], 2),
            Err(LayoutError::TooManyFields)
        );
    }

    /// The common templates are decoded by their `Direct` plan, and the rest field by field.
    #[test]
    fn common_templates_are_decoded_directly() {
        let compile = |specs: &[FieldSpec]| {
            Layout::compile(256, TemplateKind::Data, Dialect::Ipfix, 0, specs, 64).unwrap()
        };
        // flowgen's IPFIX template: both start times, both end times, prefix lengths.
        let flowgen = [
            (8, 4),
            (12, 4),
            (15, 4),
            (7, 2),
            (11, 2),
            (4, 1),
            (6, 1),
            (5, 1),
            (9, 1),
            (13, 1),
            (1, 8),
            (2, 8),
            (152, 8),
            (153, 8),
            (22, 4),
            (21, 4),
            (10, 4),
            (14, 4),
            (16, 4),
            (17, 4),
        ];
        let flowgen: Vec<_> = flowgen
            .iter()
            .map(|&(id, length)| spec(id, length))
            .collect();
        assert!(compile(&flowgen).direct.is_some());
        // Both address families (Cisco's template 313), NAT fields, totals: field by field.
        assert!(
            compile(&[spec(8, 4), spec(27, 16), spec(12, 4)])
                .direct
                .is_none()
        );
        assert!(compile(&[spec(8, 4), spec(225, 4)]).direct.is_none());
        assert!(compile(&[spec(8, 4), spec(85, 8)]).direct.is_none());
        // Variable length: field by field.
        assert!(
            compile(&[spec(8, 4), spec(1, VARIABLE_LENGTH)])
                .direct
                .is_none()
        );
    }

    /// A `Direct` plan decodes every record as the field-by-field decoding does: random
    /// templates of common, rare, repeated and misfit fields, over random records.
    #[test]
    fn direct_decoding_matches_field_by_field_decoding() {
        const POOL: &[(u16, u16)] = &[
            (1, 8),
            (1, 4),
            (2, 8),
            (2, 2),
            (23, 8),
            (24, 4),
            (4, 1),
            (5, 1),
            (6, 1),
            (6, 2),
            (7, 2),
            (11, 2),
            (8, 4),
            (8, 3),
            (12, 4),
            (27, 16),
            (28, 16),
            (15, 4),
            (62, 16),
            (10, 4),
            (10, 2),
            (14, 4),
            (16, 4),
            (17, 2),
            (60, 1),
            (152, 8),
            (153, 8),
            (22, 4),
            (21, 4),
            (150, 4),
            (151, 4),
            (154, 8),
            (155, 8),
            (136, 1),
            (48, 1),
            (34, 4),
            (35, 1),
            (85, 8),
            (86, 8),
            (225, 4),
            (148, 8),
            (233, 1),
            (161, 4),
            (9, 1),
            (13, 1),
            (82, 12),
            (999, 3),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut directs = 0;
        for _ in 0..3000 {
            let count = 1 + next() as usize % 24;
            let specs: Vec<_> = (0..count)
                .map(|_| {
                    let (id, length) = POOL[next() as usize % POOL.len()];
                    spec(id, length)
                })
                .collect();
            let Ok(layout) =
                Layout::compile(256, TemplateKind::Data, Dialect::Ipfix, 0, &specs, 64)
            else {
                continue;
            };
            let mut interpreted = layout.clone();
            interpreted.direct = None;
            directs += usize::from(layout.direct.is_some());
            let length = usize::from(layout.record_length.unwrap());
            for _ in 0..8 {
                // Zeros often: an all-zero address must not hide another.
                let record: Vec<u8> = (0..length)
                    .map(|_| if next() % 3 == 0 { 0 } else { next() as u8 })
                    .collect();
                // Whole records, and short ones (a caller's, not `split_record`'s).
                let cut = if next() % 8 == 0 {
                    next() as usize % length
                } else {
                    length
                };
                let record = &record[..cut];
                let (mut flow, mut facts) = (FlowRecord::default(), RecordFacts::default());
                layout.decode_flow(record, &mut flow, &mut facts);
                let (mut want, mut want_facts) = (FlowRecord::default(), RecordFacts::default());
                interpreted.decode_flow(record, &mut want, &mut want_facts);
                assert_eq!((flow, facts), (want, want_facts), "template {specs:?}");
            }
        }
        assert!(directs > 300, "only {directs} templates had a Direct plan");
    }

    #[test]
    fn v9_scope_fields_are_not_information_elements() {
        // Scope type 1 is "system" in v9, not octetDeltaCount.
        let specs = [spec(1, 4), spec(34, 4)];
        let layout =
            Layout::compile(257, TemplateKind::Options, Dialect::V9, 1, &specs, 64).unwrap();
        let options = layout.decode_options(&[0, 0, 0, 9, 0, 0, 0, 100]);
        assert_eq!(options.sampling_interval, Some(100));
        assert_eq!(options.sampling_rate(), Some(100));
    }

    #[test]
    fn sampling_rates_from_options() {
        let psamp = OptionsRecord {
            packet_interval: Some(1),
            packet_space: Some(9),
            ..Default::default()
        };
        assert_eq!(psamp.sampling_rate(), Some(10));
        let unsampled = OptionsRecord {
            packet_interval: Some(1),
            packet_space: Some(0),
            ..Default::default()
        };
        assert_eq!(unsampled.sampling_rate(), Some(1));
        let population = OptionsRecord {
            sampling_size: Some(1),
            sampling_population: Some(512),
            ..Default::default()
        };
        assert_eq!(population.sampling_rate(), Some(512));
        // Cisco sends an interval of 1 beside its n-out-of-N numbers: the latter win.
        let cisco = OptionsRecord {
            packet_interval: Some(1),
            ..population
        };
        assert_eq!(cisco.sampling_rate(), Some(512));
        let interval_alone = OptionsRecord {
            packet_interval: Some(1),
            ..Default::default()
        };
        assert_eq!(interval_alone.sampling_rate(), None);
        assert_eq!(OptionsRecord::default().sampling_rate(), None);
        let zero = OptionsRecord {
            sampling_interval: Some(0),
            ..Default::default()
        };
        assert_eq!(zero.sampling_rate(), None);
        // Found by the decoder fuzz target: interval + space past u64 panicked.
        let overflowing = OptionsRecord {
            packet_interval: Some(u64::MAX),
            packet_space: Some(1),
            ..Default::default()
        };
        assert_eq!(overflowing.sampling_rate(), None);
    }
}
