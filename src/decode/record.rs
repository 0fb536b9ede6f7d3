//! decode: `FlowRecord`, the one fixed-size struct every decoded flow record becomes, and its
//! JSON form (GoFlow2's field names, so existing consumers read it unchanged).

use std::net::{IpAddr, Ipv4Addr};

use serde::ser::{Serialize, SerializeMap, Serializer};

/// Which protocol a record arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FlowKind {
    #[default]
    NetflowV5,
    NetflowV9,
    Ipfix,
    Sflow5,
}

impl FlowKind {
    /// GoFlow2's `type` value.
    pub const fn name(self) -> &'static str {
        match self {
            FlowKind::NetflowV5 => "NETFLOW_V5",
            FlowKind::NetflowV9 => "NETFLOW_V9",
            FlowKind::Ipfix => "IPFIX",
            FlowKind::Sflow5 => "SFLOW_5",
        }
    }
}

/// Ethernet type of IPv4 payloads.
pub const ETYPE_IPV4: u16 = 0x0800;
/// Ethernet type of IPv6 payloads.
pub const ETYPE_IPV6: u16 = 0x86dd;

/// One decoded flow record. `Copy` and allocation-free: the decoder fills these in place,
/// and every later stage passes them by value or in batches.
///
/// Counters are as exported, not multiplied by `sampling_rate`; times are absolute UTC
/// nanoseconds, already converted from whatever the exporter sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    pub kind: FlowKind,
    /// When the datagram reached the collector (capture time when reading a capture).
    pub time_received_ns: u64,
    /// The export header's sequence number.
    pub sequence_num: u32,
    /// 1-in-N packet sampling, 0 when the exporter told nothing and no default is set.
    pub sampling_rate: u32,
    /// The exporter: the datagram's source address.
    pub sampler_address: IpAddr,
    /// NetFlow v9 source id or IPFIX observation domain; v5: engine type and id.
    pub observation_domain_id: u32,
    pub time_flow_start_ns: u64,
    pub time_flow_end_ns: u64,
    pub bytes: u64,
    pub packets: u64,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    /// 0x0800 (IPv4) or 0x86dd (IPv6).
    pub etype: u16,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub in_if: u32,
    pub out_if: u32,
    pub src_as: u32,
    pub dst_as: u32,
    /// Unspecified when the exporter sent none.
    pub next_hop: IpAddr,
    pub tcp_flags: u8,
    pub ip_tos: u8,
    /// RFC 5103 biflow: what flowed from destination back to source.
    pub reverse_bytes: u64,
    pub reverse_packets: u64,
}

impl Default for FlowRecord {
    fn default() -> Self {
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        FlowRecord {
            kind: FlowKind::default(),
            time_received_ns: 0,
            sequence_num: 0,
            sampling_rate: 0,
            sampler_address: unspecified,
            observation_domain_id: 0,
            time_flow_start_ns: 0,
            time_flow_end_ns: 0,
            bytes: 0,
            packets: 0,
            src_addr: unspecified,
            dst_addr: unspecified,
            etype: 0,
            proto: 0,
            src_port: 0,
            dst_port: 0,
            in_if: 0,
            out_if: 0,
            src_as: 0,
            dst_as: 0,
            next_hop: unspecified,
            tcp_flags: 0,
            ip_tos: 0,
            reverse_bytes: 0,
            reverse_packets: 0,
        }
    }
}

/// GoFlow2's name for an ethernet type ("" where it has none).
pub fn etype_name(etype: u16) -> &'static str {
    match etype {
        ETYPE_IPV4 => "IPv4",
        ETYPE_IPV6 => "IPv6",
        0x0806 => "ARP",
        _ => "",
    }
}

/// GoFlow2's name for an IP protocol; `None` where GoFlow2 has none (exflow then prints
/// the number as a string rather than GoFlow2's empty string, so nothing is lost).
pub fn proto_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        58 => "ICMPv6",
        132 => "SCTP",
        _ => return None,
    })
}

/// An address as GoFlow2 renders it: empty when absent.
struct RenderedAddr(IpAddr);

impl Serialize for RenderedAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_unspecified() {
            serializer.serialize_str("")
        } else {
            serializer.collect_str(&self.0)
        }
    }
}

struct RenderedProto(u8);

impl Serialize for RenderedProto {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match proto_name(self.0) {
            Some(name) => serializer.serialize_str(name),
            None => serializer.collect_str(&self.0),
        }
    }
}

impl Serialize for FlowRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let biflow = self.reverse_bytes != 0 || self.reverse_packets != 0;
        let mut map = serializer.serialize_map(Some(if biflow { 25 } else { 23 }))?;
        map.serialize_entry("type", self.kind.name())?;
        map.serialize_entry("time_received_ns", &self.time_received_ns)?;
        map.serialize_entry("sequence_num", &self.sequence_num)?;
        map.serialize_entry("sampling_rate", &self.sampling_rate)?;
        map.serialize_entry("sampler_address", &RenderedAddr(self.sampler_address))?;
        map.serialize_entry("observation_domain_id", &self.observation_domain_id)?;
        map.serialize_entry("time_flow_start_ns", &self.time_flow_start_ns)?;
        map.serialize_entry("time_flow_end_ns", &self.time_flow_end_ns)?;
        map.serialize_entry("bytes", &self.bytes)?;
        map.serialize_entry("packets", &self.packets)?;
        map.serialize_entry("src_addr", &RenderedAddr(self.src_addr))?;
        map.serialize_entry("dst_addr", &RenderedAddr(self.dst_addr))?;
        map.serialize_entry("etype", etype_name(self.etype))?;
        map.serialize_entry("proto", &RenderedProto(self.proto))?;
        map.serialize_entry("src_port", &self.src_port)?;
        map.serialize_entry("dst_port", &self.dst_port)?;
        map.serialize_entry("in_if", &self.in_if)?;
        map.serialize_entry("out_if", &self.out_if)?;
        map.serialize_entry("src_as", &self.src_as)?;
        map.serialize_entry("dst_as", &self.dst_as)?;
        map.serialize_entry("next_hop", &RenderedAddr(self.next_hop))?;
        map.serialize_entry("tcp_flags", &self.tcp_flags)?;
        map.serialize_entry("ip_tos", &self.ip_tos)?;
        if biflow {
            map.serialize_entry("reverse_bytes", &self.reverse_bytes)?;
            map.serialize_entry("reverse_packets", &self.reverse_packets)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_goflow2_names_and_renderings() {
        let record = FlowRecord {
            kind: FlowKind::Ipfix,
            time_received_ns: 1_710_230_894_000_000_000,
            sequence_num: 4,
            sampling_rate: 10,
            sampler_address: "127.0.0.1".parse().unwrap(),
            observation_domain_id: 0,
            time_flow_start_ns: 1_710_230_520_000_000_000,
            time_flow_end_ns: 1_710_230_894_000_000_000,
            bytes: 30_973_224,
            packets: 501,
            src_addr: "10.10.20.15".parse().unwrap(),
            dst_addr: "5.255.255.77".parse().unwrap(),
            etype: ETYPE_IPV4,
            proto: 6,
            src_port: 50122,
            dst_port: 443,
            tcp_flags: 0x1a,
            ..FlowRecord::default()
        };
        let json = serde_json::to_value(record).unwrap();
        assert_eq!(json["type"], "IPFIX");
        assert_eq!(json["sampler_address"], "127.0.0.1");
        assert_eq!(json["src_addr"], "10.10.20.15");
        assert_eq!(json["etype"], "IPv4");
        assert_eq!(json["proto"], "TCP");
        assert_eq!(json["bytes"], 30_973_224);
        assert_eq!(json["next_hop"], "");
        assert_eq!(json["tcp_flags"], 0x1a);
        assert!(json.get("reverse_bytes").is_none());
        assert_eq!(json.as_object().unwrap().len(), 23);
    }

    #[test]
    fn biflow_counters_and_unnamed_protocols() {
        let record = FlowRecord {
            proto: 47,
            reverse_bytes: 5,
            reverse_packets: 1,
            ..FlowRecord::default()
        };
        let json = serde_json::to_value(record).unwrap();
        assert_eq!(json["proto"], "47");
        assert_eq!(json["reverse_bytes"], 5);
        assert_eq!(json["reverse_packets"], 1);
    }
}
