//! scaleout encoding: the messages of the flows topic (`exflow.flows.v1`) between `exflow
//! collect` and `exflow detect`, as documented in `schemas/flows.v1.md`. Every message is
//! two header bytes, the schema version (1) and the kind, then a protobuf body: a record
//! oriented inside -> outside and stamped with its exporter's clock (kind 1), a
//! collector's watermark (kind 2), or an exporter's interface names (kind 3). The flows
//! topic is a trust boundary like a socket: a message that does not decode, or decodes to
//! impossible values, is an error the caller counts and skips.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use prost::Message;

use crate::decode::FlowKind;
use crate::decode::directory::{InterfaceRef, NamedInterface};
use crate::decode::exporter::InterfaceName;
use crate::flow::Oriented;

/// The first byte of every message: a breaking change gets a new version (and topic).
pub const SCHEMA_VERSION: u8 = 1;
const KIND_RECORD: u8 = 1;
const KIND_WATERMARK: u8 = 2;
const KIND_INTERFACES: u8 = 3;
/// The most interface names one message may carry (a collector's decoder holds at most
/// `decoder.max_interface_names` of every exporter's, 65,536 by default).
pub const MAX_INTERFACE_NAMES: usize = 65_536;
/// The longest interface name or description a message may carry, bytes (a decoder keeps
/// 64 of each).
pub const MAX_INTERFACE_TEXT_BYTES: usize = 255;
/// The longest collector id a watermark may carry, bytes.
pub const MAX_COLLECTOR_ID_BYTES: usize = 255;

/// A record as detection needs it: [`Oriented`] (counters already scaled by the sampling
/// rate) and the clock of its exporter when the collector accepted it.
#[derive(Clone, PartialEq, Message)]
pub struct OrientedRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub inside: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub outside: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub inside_port: u32,
    #[prost(uint32, tag = "4")]
    pub outside_port: u32,
    #[prost(uint32, tag = "5")]
    pub proto: u32,
    #[prost(uint64, tag = "6")]
    pub bytes_out: u64,
    #[prost(uint64, tag = "7")]
    pub bytes_in: u64,
    #[prost(uint64, tag = "8")]
    pub packets_out: u64,
    #[prost(uint64, tag = "9")]
    pub packets_in: u64,
    #[prost(uint64, tag = "10")]
    pub start_ms: u64,
    #[prost(uint64, tag = "11")]
    pub end_ms: u64,
    #[prost(uint32, tag = "12")]
    pub outside_asn: u32,
    #[prost(bytes = "vec", tag = "13")]
    pub exporter: Vec<u8>,
    #[prost(uint32, tag = "14")]
    pub tcp_flags: u32,
    #[prost(bool, tag = "15")]
    pub from_inside: bool,
    /// The exporter's clock the record is judged on (ms since the epoch).
    #[prost(uint64, tag = "16")]
    pub exporter_clock_ms: u64,
    /// The exporter reported this flow before (a running total turned delta, an NSEL
    /// update): not another connection.
    #[prost(bool, tag = "17")]
    pub continues: bool,
    /// The exporter says the connection is over (a teardown, a flow end reason).
    #[prost(bool, tag = "18")]
    pub ends: bool,
    /// The export protocol's version (5, 9, 10 for IPFIX...) and observation domain (source
    /// id) of the record's interfaces; with `in_if`/`out_if` (0: not sent), what an
    /// exporter's interface names (kind 3) are looked up by.
    #[prost(uint32, tag = "19")]
    pub version: u32,
    #[prost(uint32, tag = "20")]
    pub observation_domain: u32,
    #[prost(uint32, tag = "21")]
    pub in_if: u32,
    #[prost(uint32, tag = "22")]
    pub out_if: u32,
}

/// The interface names an exporter announced (options data), published by the collector
/// that decodes it whenever the exporter writes them (routers resend their tables every
/// few minutes), before the records that follow: all of them, replacing what a detector
/// held for the exporter (none: it forgot them).
#[derive(Clone, PartialEq, Message)]
pub struct InterfaceNames {
    #[prost(bytes = "vec", tag = "1")]
    pub exporter: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub names: Vec<InterfaceEntry>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InterfaceEntry {
    /// The export protocol's version, as in a record.
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(uint32, tag = "2")]
    pub observation_domain: u32,
    #[prost(uint32, tag = "3")]
    pub if_index: u32,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    pub description: String,
}

/// An exporter's interface names, decoded.
pub type ExporterInterfaces = (IpAddr, Vec<NamedInterface>);

/// A collector's event clock, published into every partition.
#[derive(Clone, PartialEq, Message)]
pub struct Watermark {
    /// Who sends it (`scaleout.collector_id`).
    #[prost(string, tag = "1")]
    pub collector: String,
    /// The collector's table clock: the slowest of its exporters heard recently, ms.
    #[prost(uint64, tag = "2")]
    pub clock_ms: u64,
    /// The collector's wall clock when it sent this, ms: tells detectors who fell silent,
    /// in a way a replay of the partition reproduces.
    #[prost(uint64, tag = "3")]
    pub sent_ms: u64,
    /// The collector stopped: its input ended at `clock_ms`.
    #[prost(bool, tag = "4")]
    pub end: bool,
}

/// A decoded flows-topic message.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowsMessage {
    Record { record: Oriented, now_ms: u64 },
    Watermark(Watermark),
    Interfaces(ExporterInterfaces),
}

/// Why a message was skipped: a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// Shorter than the two header bytes.
    Truncated,
    /// A schema version this build does not read.
    Version,
    /// A kind this build does not know.
    Kind,
    /// The protobuf body does not decode.
    Body,
    /// An address of neither 4 nor 16 bytes, a port or protocol out of range, an empty
    /// or oversized collector id, an unknown protocol version, too many interface names.
    Value,
}

impl MessageError {
    pub const ALL: [MessageError; 5] = [
        MessageError::Truncated,
        MessageError::Version,
        MessageError::Kind,
        MessageError::Body,
        MessageError::Value,
    ];

    pub fn code(self) -> &'static str {
        match self {
            MessageError::Truncated => "truncated",
            MessageError::Version => "version",
            MessageError::Kind => "kind",
            MessageError::Body => "body",
            MessageError::Value => "value",
        }
    }
}

/// The version number a protocol's packets carry.
fn protocol_version(kind: FlowKind) -> u32 {
    match kind {
        FlowKind::NetflowV1 => 1,
        FlowKind::NetflowV5 => 5,
        FlowKind::NetflowV7 => 7,
        FlowKind::NetflowV9 => 9,
        FlowKind::Ipfix => 10,
        FlowKind::Sflow5 => 0x5f05,
    }
}

fn flow_kind(version: u32) -> Result<FlowKind, MessageError> {
    Ok(match version {
        1 => FlowKind::NetflowV1,
        5 => FlowKind::NetflowV5,
        7 => FlowKind::NetflowV7,
        9 => FlowKind::NetflowV9,
        10 => FlowKind::Ipfix,
        0x5f05 => FlowKind::Sflow5,
        _ => return Err(MessageError::Value),
    })
}

fn octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn address(bytes: &[u8]) -> Result<IpAddr, MessageError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(MessageError::Value)
    }
}

/// Appends a record message to `out`.
pub fn encode_record(record: &Oriented, now_ms: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&[SCHEMA_VERSION, KIND_RECORD]);
    let body = OrientedRecord {
        inside: octets(record.inside),
        outside: octets(record.outside),
        inside_port: u32::from(record.inside_port),
        outside_port: u32::from(record.outside_port),
        proto: u32::from(record.proto),
        bytes_out: record.bytes_out,
        bytes_in: record.bytes_in,
        packets_out: record.packets_out,
        packets_in: record.packets_in,
        start_ms: record.start_ms,
        end_ms: record.end_ms,
        outside_asn: record.outside_asn,
        exporter: octets(record.exporter),
        tcp_flags: u32::from(record.tcp_flags),
        from_inside: record.from_inside,
        exporter_clock_ms: now_ms,
        continues: record.continues,
        ends: record.ends,
        version: protocol_version(record.interfaces.domain.0),
        observation_domain: record.interfaces.domain.1,
        in_if: record.interfaces.in_if,
        out_if: record.interfaces.out_if,
    };
    // Encoding into a Vec cannot fail: it grows.
    let _ = body.encode(out);
}

/// Appends a watermark message to `out`.
pub fn encode_watermark(watermark: &Watermark, out: &mut Vec<u8>) {
    out.extend_from_slice(&[SCHEMA_VERSION, KIND_WATERMARK]);
    let _ = watermark.encode(out);
}

/// Appends a message of `exporter`'s interface names to `out`.
pub fn encode_interfaces(exporter: IpAddr, names: &[NamedInterface], out: &mut Vec<u8>) {
    out.extend_from_slice(&[SCHEMA_VERSION, KIND_INTERFACES]);
    let body = InterfaceNames {
        exporter: octets(exporter),
        names: names
            .iter()
            .take(MAX_INTERFACE_NAMES)
            .map(|((kind, domain), if_index, names)| InterfaceEntry {
                version: protocol_version(*kind),
                observation_domain: *domain,
                if_index: *if_index,
                name: names.name.to_string(),
                description: names.description.to_string(),
            })
            .collect(),
    };
    let _ = body.encode(out);
}

/// Decodes a message, checking every value.
pub fn decode(payload: &[u8]) -> Result<FlowsMessage, MessageError> {
    let [version, kind, body @ ..] = payload else {
        return Err(MessageError::Truncated);
    };
    if *version != SCHEMA_VERSION {
        return Err(MessageError::Version);
    }
    match *kind {
        KIND_RECORD => {
            let m = OrientedRecord::decode(body).map_err(|_| MessageError::Body)?;
            let small = |v: u32, max: u32| {
                if v <= max {
                    Ok(v)
                } else {
                    Err(MessageError::Value)
                }
            };
            let record = Oriented {
                inside: address(&m.inside)?,
                outside: address(&m.outside)?,
                inside_port: small(m.inside_port, 0xffff)? as u16,
                outside_port: small(m.outside_port, 0xffff)? as u16,
                proto: small(m.proto, 0xff)? as u8,
                bytes_out: m.bytes_out,
                bytes_in: m.bytes_in,
                packets_out: m.packets_out,
                packets_in: m.packets_in,
                start_ms: m.start_ms,
                end_ms: m.end_ms,
                outside_asn: m.outside_asn,
                exporter: address(&m.exporter)?,
                tcp_flags: small(m.tcp_flags, 0xff)? as u8,
                from_inside: m.from_inside,
                continues: m.continues,
                ends: m.ends,
                interfaces: InterfaceRef {
                    // A record of an older collector carries no version: no names.
                    domain: (
                        flow_kind(m.version).unwrap_or_default(),
                        m.observation_domain,
                    ),
                    in_if: m.in_if,
                    out_if: m.out_if,
                },
            };
            Ok(FlowsMessage::Record {
                record,
                now_ms: m.exporter_clock_ms,
            })
        }
        KIND_WATERMARK => {
            let m = Watermark::decode(body).map_err(|_| MessageError::Body)?;
            if m.collector.is_empty() || m.collector.len() > MAX_COLLECTOR_ID_BYTES {
                return Err(MessageError::Value);
            }
            Ok(FlowsMessage::Watermark(m))
        }
        KIND_INTERFACES => {
            let m = InterfaceNames::decode(body).map_err(|_| MessageError::Body)?;
            if m.names.len() > MAX_INTERFACE_NAMES {
                return Err(MessageError::Value);
            }
            let names = m
                .names
                .into_iter()
                .map(|entry| {
                    if entry.name.len() > MAX_INTERFACE_TEXT_BYTES
                        || entry.description.len() > MAX_INTERFACE_TEXT_BYTES
                    {
                        return Err(MessageError::Value);
                    }
                    let names = InterfaceName {
                        name: entry.name.into(),
                        description: entry.description.into(),
                    };
                    Ok((
                        (flow_kind(entry.version)?, entry.observation_domain),
                        entry.if_index,
                        std::sync::Arc::new(names),
                    ))
                })
                .collect::<Result<_, MessageError>>()?;
            Ok(FlowsMessage::Interfaces((address(&m.exporter)?, names)))
        }
        _ => Err(MessageError::Kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Oriented {
        Oriented {
            inside: "10.10.0.5".parse().unwrap(),
            outside: "2001:db8::1".parse().unwrap(),
            inside_port: 50_123,
            outside_port: 443,
            proto: 6,
            bytes_out: 1_000_000,
            bytes_in: 20_000,
            packets_out: 700,
            packets_in: 300,
            start_ms: 1_710_230_400_000,
            end_ms: 1_710_230_460_000,
            outside_asn: 24_940,
            exporter: "192.0.2.1".parse().unwrap(),
            tcp_flags: 0x1b,
            from_inside: true,
            continues: true,
            ends: true,
            interfaces: Default::default(),
        }
    }

    #[test]
    fn a_record_round_trips_with_its_exporter_clock() {
        let mut bytes = Vec::new();
        encode_record(&record(), 1_710_230_470_000, &mut bytes);
        assert_eq!(&bytes[..2], &[1, 1], "version 1, kind record");
        assert_eq!(
            decode(&bytes),
            Ok(FlowsMessage::Record {
                record: record(),
                now_ms: 1_710_230_470_000
            })
        );
    }

    #[test]
    fn a_watermark_round_trips() {
        let watermark = Watermark {
            collector: "site-a".into(),
            clock_ms: 1_710_230_400_000,
            sent_ms: 1_796_000_000_000,
            end: true,
        };
        let mut bytes = Vec::new();
        encode_watermark(&watermark, &mut bytes);
        assert_eq!(&bytes[..2], &[1, 2]);
        assert_eq!(decode(&bytes), Ok(FlowsMessage::Watermark(watermark)));
    }

    #[test]
    fn a_record_carries_its_interfaces_and_an_exporters_names_round_trip() {
        let named = Oriented {
            interfaces: InterfaceRef {
                domain: (FlowKind::NetflowV9, 2177),
                in_if: 162,
                out_if: 102,
            },
            ..record()
        };
        let mut bytes = Vec::new();
        encode_record(&named, 1, &mut bytes);
        assert_eq!(
            decode(&bytes),
            Ok(FlowsMessage::Record {
                record: named,
                now_ms: 1
            })
        );
        let router: IpAddr = "192.0.2.7".parse().unwrap();
        let names = vec![(
            (FlowKind::Ipfix, 4),
            162,
            std::sync::Arc::new(InterfaceName {
                name: "xe-0/0/0".into(),
                description: "to AS64500".into(),
            }),
        )];
        let mut bytes = Vec::new();
        encode_interfaces(router, &names, &mut bytes);
        assert_eq!(&bytes[..2], &[1, 3]);
        assert_eq!(
            decode(&bytes),
            Ok(FlowsMessage::Interfaces((router, names)))
        );
        // An exporter that forgot its names: none.
        let mut bytes = Vec::new();
        encode_interfaces(router, &[], &mut bytes);
        assert_eq!(
            decode(&bytes),
            Ok(FlowsMessage::Interfaces((router, Vec::new())))
        );
        // A protocol version no exporter sends.
        let mut bad = vec![1, 3];
        InterfaceNames {
            exporter: vec![192, 0, 2, 7],
            names: vec![InterfaceEntry {
                version: 4,
                ..InterfaceEntry::default()
            }],
        }
        .encode(&mut bad)
        .unwrap();
        assert_eq!(decode(&bad), Err(MessageError::Value));
    }

    #[test]
    fn hostile_messages_are_errors_not_panics() {
        assert_eq!(decode(&[]), Err(MessageError::Truncated));
        assert_eq!(decode(&[1]), Err(MessageError::Truncated));
        assert_eq!(decode(&[2, 1]), Err(MessageError::Version));
        assert_eq!(decode(&[1, 9]), Err(MessageError::Kind));
        // Field 1 (bytes) claims 100 bytes that are not there.
        assert_eq!(decode(&[1, 1, 0x0a, 100, 1]), Err(MessageError::Body));
        // An empty body: addresses of zero bytes.
        assert_eq!(decode(&[1, 1]), Err(MessageError::Value));
        let mut port = Vec::new();
        let mut bad = OrientedRecord {
            inside: vec![10, 0, 0, 1],
            outside: vec![8, 8, 8, 8],
            exporter: vec![127, 0, 0, 1],
            outside_port: 70_000,
            ..OrientedRecord::default()
        };
        port.extend_from_slice(&[1, 1]);
        bad.encode(&mut port).unwrap();
        assert_eq!(decode(&port), Err(MessageError::Value));
        bad.outside_port = 53;
        let mut fine = vec![1, 1];
        bad.encode(&mut fine).unwrap();
        assert!(decode(&fine).is_ok());
        let mut anonymous = Vec::new();
        encode_watermark(&Watermark::default(), &mut anonymous);
        assert_eq!(decode(&anonymous), Err(MessageError::Value));
        // Every truncation of a valid record is an error or a record, never a panic.
        let mut bytes = Vec::new();
        encode_record(&record(), 1, &mut bytes);
        for end in 0..bytes.len() {
            let _ = decode(&bytes[..end]);
        }
    }
}
