//! decode: sFlow v5 datagrams to `FlowRecord`s. Each flow sample (compact or expanded) is
//! one sampled packet and becomes one record of `packets` 1, `bytes` the packet's length on
//! the wire and its `sampling_rate`, so the flow table stitches the samples of a
//! conversation and detection scales them; counter and discard samples are counted and
//! skipped by length. The datagram sequence number, per agent and sub-agent, gives loss.
//!
//! sFlow carries no wall-clock time (only the agent's uptime): a record's start and end are
//! the datagram's receive time, which replaying a capture reproduces.

use std::net::IpAddr;

use super::exporter::{Exporter, InterfaceCounters, SequenceCheck, SequenceUnit, set_interface};
use super::record::{ETYPE_IPV4, ETYPE_IPV6, FlowKind, FlowRecord};
use super::stats::DecodeError;
use super::{DecodeCounters, DecoderConfig};
use crate::wire::sampled::{self, PacketSummary};
use crate::wire::sflow::{self, Datagram, FlowSample, Record};

pub(super) fn decode(
    exporter: &mut Exporter,
    config: &DecoderConfig,
    address: IpAddr,
    received_ns: u64,
    datagram: &[u8],
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let datagram = Datagram::new_checked(datagram)?;
    let rate = SamplingRate {
        override_rate: config.sampling.overrides.get(&address).copied(),
        default_rate: config.sampling.default_rate,
    };
    let base = FlowRecord {
        kind: FlowKind::Sflow5,
        time_received_ns: received_ns,
        sequence_num: datagram.sequence_number(),
        sampler_address: address,
        observation_domain_id: datagram.sub_agent_id(),
        time_flow_start_ns: received_ns,
        time_flow_end_ns: received_ns,
        packets: 1,
        ..FlowRecord::default()
    };
    let counters = &mut exporter.counters;
    let interfaces = &mut exporter.interfaces;
    let mut result = Ok(());
    for sample in datagram.samples() {
        let sample = match sample {
            Ok(sample) => sample,
            Err(error) => {
                result = Err(error.into());
                break;
            }
        };
        if sample.is(sflow::FLOW_SAMPLE) || sample.is(sflow::EXPANDED_FLOW_SAMPLE) {
            let expanded = sample.is(sflow::EXPANDED_FLOW_SAMPLE);
            match FlowSample::new_checked(sample.body, expanded) {
                Ok(flow) => decode_flow_sample(&flow, &base, rate, counters, out),
                Err(error) => counters.errors.add(error.into()),
            }
        } else if sample.is(sflow::COUNTER_SAMPLE) || sample.is(sflow::EXPANDED_COUNTER_SAMPLE) {
            let expanded = sample.is(sflow::EXPANDED_COUNTER_SAMPLE);
            match sflow::CounterSample::new_checked(sample.body, expanded) {
                Ok(counter_sample) => {
                    counters.counter_samples += 1;
                    read_counter_sample(
                        &counter_sample,
                        datagram.sub_agent_id(),
                        config.limits.max_sflow_interfaces_per_agent,
                        interfaces,
                        counters,
                    );
                }
                Err(error) => counters.errors.add(error.into()),
            }
        } else if sample.is(sflow::DISCARDED_PACKET) {
            match sflow::DiscardSample::new_checked(sample.body) {
                Ok(_) => counters.discard_samples += 1,
                Err(error) => counters.errors.add(error.into()),
            }
        } else {
            counters.skipped_samples += 1;
        }
    }
    let domain = exporter.domain_mut((FlowKind::Sflow5, datagram.sub_agent_id()));
    match domain
        .sequence
        .observe(SequenceUnit::Datagrams, datagram.sequence_number(), 1, 1)
    {
        SequenceCheck::InOrder => {}
        SequenceCheck::Lost(n) => exporter.counters.lost_datagrams += n,
        SequenceCheck::Reset => exporter.counters.sequence_resets += 1,
    }
    result
}

/// Keeps the generic interface counters of a counter sample (other counter records, such as
/// Ethernet or processor counters, are skipped by length).
fn read_counter_sample(
    sample: &sflow::CounterSample<'_>,
    sub_agent_id: u32,
    max_interfaces: usize,
    interfaces: &mut Vec<InterfaceCounters>,
    counters: &mut DecodeCounters,
) {
    for record in sample.records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                counters.errors.add(error.into());
                break;
            }
        };
        if !record.is(sflow::GENERIC_INTERFACE_COUNTERS) {
            continue;
        }
        let generic = match sflow::InterfaceCounters::new_checked(record.body) {
            Ok(generic) => generic,
            Err(error) => {
                counters.errors.add(error.into());
                continue;
            }
        };
        let latest = InterfaceCounters {
            if_index: generic.if_index(),
            sub_agent_id,
            speed_bps: generic.if_speed(),
            in_octets: generic.if_in_octets(),
            out_octets: generic.if_out_octets(),
            in_errors: u64::from(generic.if_in_errors()),
            out_errors: u64::from(generic.if_out_errors()),
            in_discards: u64::from(generic.if_in_discards()),
            out_discards: u64::from(generic.if_out_discards()),
        };
        if !set_interface(interfaces, latest, max_interfaces) {
            counters.interfaces_refused += 1;
        }
    }
}

/// The operator's rates around the one each flow sample carries.
#[derive(Debug, Clone, Copy)]
struct SamplingRate {
    override_rate: Option<u32>,
    default_rate: Option<u32>,
}

impl SamplingRate {
    fn for_sample(self, announced: u32) -> u32 {
        self.override_rate
            .or((announced > 0).then_some(announced))
            .or(self.default_rate)
            .unwrap_or(0)
    }
}

/// One flow sample to one record, appended to `out` when it had an IP packet header or a
/// sampled IPv4/IPv6 record to take the flow from; otherwise counted as skipped.
fn decode_flow_sample(
    flow: &FlowSample<'_>,
    base: &FlowRecord,
    rate: SamplingRate,
    counters: &mut DecodeCounters,
    out: &mut Vec<FlowRecord>,
) {
    let mut record = FlowRecord {
        sampling_rate: rate.for_sample(flow.sampling_rate()),
        in_if: flow.input().if_index().unwrap_or(0),
        out_if: flow.output().if_index().unwrap_or(0),
        ..*base
    };
    let mut has_packet = false;
    let mut has_router_next_hop = false;
    for flow_record in flow.records() {
        let flow_record = match flow_record {
            Ok(r) => r,
            Err(error) => {
                counters.errors.add(error.into());
                break;
            }
        };
        if let Err(error) = read_flow_record(
            &flow_record,
            &mut record,
            &mut has_packet,
            &mut has_router_next_hop,
        ) {
            counters.errors.add(error.into());
        }
    }
    if has_packet {
        out.push(record);
    } else {
        counters.skipped_samples += 1;
    }
}

/// Fills `record` from one flow record. A raw packet header wins over a sampled IPv4/IPv6
/// record of the same sample (it is the packet itself); the extended router's next hop wins
/// over the gateway's BGP next hop.
fn read_flow_record(
    flow_record: &Record<'_>,
    record: &mut FlowRecord,
    has_packet: &mut bool,
    has_router_next_hop: &mut bool,
) -> Result<(), crate::wire::WireError> {
    if flow_record.enterprise != 0 {
        return Ok(());
    }
    match flow_record.format {
        sflow::RAW_PACKET_HEADER => {
            let raw = sflow::RawPacketHeader::new_checked(flow_record.body)?;
            let summary = match raw.header_protocol() {
                sflow::HEADER_PROTOCOL_ETHERNET => sampled::ethernet(raw.header()),
                sflow::HEADER_PROTOCOL_IPV4 | sflow::HEADER_PROTOCOL_IPV6 => {
                    sampled::ip(raw.header())
                }
                _ => None,
            };
            // Only IP packets make flow records; others (ARP, LLDP) are counted as skipped.
            if let Some(summary) = summary.filter(|s| s.addresses.is_some()) {
                apply_summary(record, &summary);
                record.bytes = u64::from(raw.frame_length());
                *has_packet = true;
            }
        }
        sflow::SAMPLED_IPV4 | sflow::SAMPLED_IPV6 if !*has_packet => {
            let v6 = flow_record.format == sflow::SAMPLED_IPV6;
            let ip = sflow::SampledIp::new_checked(flow_record.body, v6)?;
            record.etype = if v6 { ETYPE_IPV6 } else { ETYPE_IPV4 };
            record.src_addr = ip.src_ip();
            record.dst_addr = ip.dst_ip();
            record.proto = ip.protocol() as u8;
            record.src_port = ip.src_port() as u16;
            record.dst_port = ip.dst_port() as u16;
            record.tcp_flags = ip.tcp_flags() as u8;
            record.ip_tos = ip.tos() as u8;
            record.bytes = u64::from(ip.length());
            *has_packet = true;
        }
        sflow::EXTENDED_ROUTER => {
            let router = sflow::ExtendedRouter::new_checked(flow_record.body)?;
            record.next_hop = router.next_hop();
            *has_router_next_hop = true;
        }
        sflow::EXTENDED_GATEWAY => {
            let gateway = sflow::ExtendedGateway::new_checked(flow_record.body)?;
            if !*has_router_next_hop {
                record.next_hop = gateway.next_hop();
            }
            // GoFlow2's reading: the source AS, else the router's own; the destination is
            // the path's origin, else the router's own AS.
            record.src_as = match gateway.src_as() {
                0 => gateway.as_number(),
                src => src,
            };
            record.dst_as = gateway
                .last_path_as()
                .unwrap_or_else(|| gateway.as_number());
        }
        _ => {}
    }
    Ok(())
}

fn apply_summary(record: &mut FlowRecord, summary: &PacketSummary) {
    record.etype = summary.etype;
    if let Some((src, dst)) = summary.addresses {
        record.src_addr = src;
        record.dst_addr = dst;
    }
    record.proto = summary.proto;
    record.src_port = summary.src_port;
    record.dst_port = summary.dst_port;
    record.tcp_flags = summary.tcp_flags;
    record.ip_tos = summary.tos;
}
