//! decode: `FlowRecord`, the one fixed-size struct every decoded flow record becomes, and its
//! JSON form (GoFlow2's field names, so existing consumers read it unchanged).

use std::net::{IpAddr, Ipv4Addr};

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::exporter::InterfaceName;

pub use crate::wire::FlowKind;

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
    /// The addresses and ports after network address translation (IE 225-228, 281/282;
    /// NSEL's xlate fields); unspecified / 0 when the exporter sent none.
    pub post_nat_src_addr: IpAddr,
    pub post_nat_dst_addr: IpAddr,
    pub post_nat_src_port: u16,
    pub post_nat_dst_port: u16,
    /// flowEndReason (IE 136), 0 when absent: 1 idle, 2 active timeout, 3 end of flow
    /// detected, 4 forced end, 5 lack of resources.
    pub flow_end_reason: u8,
    /// firewallEvent (IE 233, NSEL 40005), 0 when absent: 1 created, 2 deleted, 3 denied,
    /// 4 alert, 5 update.
    pub firewall_event: u8,
    /// The exporter reported this flow before (a firewall's update or teardown of a known
    /// connection id, a running total after the first): its counters are what is new since
    /// the last report, and it is the same flow, not another one.
    pub continues_flow: bool,
}

/// The fields `wire::emit` encodes, so the benchmarks, the load generator and the tests
/// encode records the decoder made (or could have made).
#[cfg(any(test, feature = "loadgen"))]
impl From<FlowRecord> for crate::wire::emit::Flow {
    fn from(r: FlowRecord) -> Self {
        crate::wire::emit::Flow {
            src_addr: r.src_addr,
            dst_addr: r.dst_addr,
            next_hop: r.next_hop,
            src_port: r.src_port,
            dst_port: r.dst_port,
            proto: r.proto,
            tcp_flags: r.tcp_flags,
            ip_tos: r.ip_tos,
            bytes: r.bytes,
            packets: r.packets,
            time_flow_start_ns: r.time_flow_start_ns,
            time_flow_end_ns: r.time_flow_end_ns,
            in_if: r.in_if,
            out_if: r.out_if,
            src_as: r.src_as,
            dst_as: r.dst_as,
        }
    }
}

/// flowEndReason values that say the flow is over (all but 2, the active timeout).
const END_REASON_IDLE: u8 = 1;
const END_REASON_END_OF_FLOW: u8 = 3;
const END_REASON_FORCED: u8 = 4;
const END_REASON_LACK_OF_RESOURCES: u8 = 5;
/// firewallEvent values.
pub const FIREWALL_EVENT_CREATED: u8 = 1;
pub const FIREWALL_EVENT_DELETED: u8 = 2;
pub const FIREWALL_EVENT_DENIED: u8 = 3;
pub const FIREWALL_EVENT_UPDATE: u8 = 5;

impl FlowRecord {
    /// The exporter says the flow is over: a flowEndReason other than the active timeout,
    /// or a firewall's teardown (deleted) or denied event.
    pub fn ends_flow(&self) -> bool {
        matches!(
            self.flow_end_reason,
            END_REASON_IDLE
                | END_REASON_END_OF_FLOW
                | END_REASON_FORCED
                | END_REASON_LACK_OF_RESOURCES
        ) || matches!(
            self.firewall_event,
            FIREWALL_EVENT_DELETED | FIREWALL_EVENT_DENIED
        )
    }

    /// The exporter says the connection is over and this record covers both its directions,
    /// so nothing more of it is to come: a firewall's teardown or denied event (one record per
    /// connection), or end of flow detected (TCP FIN/RST) on a biflow. A one-way record's end
    /// of flow is not enough (the other direction's record may follow), nor an idle timeout,
    /// a forced end or a full cache (the same 5-tuple may continue).
    pub fn ends_connection(&self) -> bool {
        matches!(
            self.firewall_event,
            FIREWALL_EVENT_DELETED | FIREWALL_EVENT_DENIED
        ) || (self.flow_end_reason == END_REASON_END_OF_FLOW
            && (self.reverse_bytes != 0 || self.reverse_packets != 0))
    }

    fn has_nat(&self) -> bool {
        !self.post_nat_src_addr.is_unspecified()
            || !self.post_nat_dst_addr.is_unspecified()
            || self.post_nat_src_port != 0
            || self.post_nat_dst_port != 0
    }
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
            post_nat_src_addr: unspecified,
            post_nat_dst_addr: unspecified,
            post_nat_src_port: 0,
            post_nat_dst_port: 0,
            flow_end_reason: 0,
            firewall_event: 0,
            continues_flow: false,
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
        let mut map = serializer.serialize_map(Some(self.field_count()))?;
        self.serialize_fields(&mut map)?;
        map.end()
    }
}

/// A record with the names its exporter gave its interfaces (options data, IE 82/83), as
/// `exflow decode` prints it: the record's fields, then `in_if_name`, `in_if_description`,
/// `out_if_name`, `out_if_description` where known (Akvorado's names for them).
pub struct NamedRecord<'a> {
    pub record: &'a FlowRecord,
    pub in_if: Option<&'a InterfaceName>,
    pub out_if: Option<&'a InterfaceName>,
}

impl Serialize for NamedRecord<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let names = 2 * (usize::from(self.in_if.is_some()) + usize::from(self.out_if.is_some()));
        let mut map = serializer.serialize_map(Some(self.record.field_count() + names))?;
        self.record.serialize_fields(&mut map)?;
        if let Some(names) = self.in_if {
            map.serialize_entry("in_if_name", &*names.name)?;
            map.serialize_entry("in_if_description", &*names.description)?;
        }
        if let Some(names) = self.out_if {
            map.serialize_entry("out_if_name", &*names.name)?;
            map.serialize_entry("out_if_description", &*names.description)?;
        }
        map.end()
    }
}

impl FlowRecord {
    fn field_count(&self) -> usize {
        let biflow = self.reverse_bytes != 0 || self.reverse_packets != 0;
        23 + if biflow { 2 } else { 0 }
            + if self.has_nat() { 4 } else { 0 }
            + usize::from(self.flow_end_reason != 0)
            + usize::from(self.firewall_event != 0)
    }

    fn serialize_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        let biflow = self.reverse_bytes != 0 || self.reverse_packets != 0;
        let nat = self.has_nat();
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
        if nat {
            // GoFlow2 has no NAT fields; these are the IANA names in its snake case, as
            // GoFlow2's custom field mappings name them.
            let (src, dst) = if self.post_nat_src_addr.is_ipv6() || self.post_nat_dst_addr.is_ipv6()
            {
                ("post_nat_src_ipv6_address", "post_nat_dst_ipv6_address")
            } else {
                ("post_nat_src_ipv4_address", "post_nat_dst_ipv4_address")
            };
            map.serialize_entry(src, &RenderedAddr(self.post_nat_src_addr))?;
            map.serialize_entry(dst, &RenderedAddr(self.post_nat_dst_addr))?;
            map.serialize_entry("post_napt_src_transport_port", &self.post_nat_src_port)?;
            map.serialize_entry("post_napt_dst_transport_port", &self.post_nat_dst_port)?;
        }
        if self.flow_end_reason != 0 {
            map.serialize_entry("flow_end_reason", &self.flow_end_reason)?;
        }
        if self.firewall_event != 0 {
            map.serialize_entry("firewall_event", &self.firewall_event)?;
        }
        Ok(())
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

    #[test]
    fn nat_and_firewall_fields_only_when_sent() {
        let record = FlowRecord {
            src_addr: "10.0.0.5".parse().unwrap(),
            post_nat_src_addr: "198.51.100.7".parse().unwrap(),
            post_nat_src_port: 40001,
            flow_end_reason: 3,
            firewall_event: FIREWALL_EVENT_DELETED,
            ..FlowRecord::default()
        };
        let json = serde_json::to_value(record).unwrap();
        assert_eq!(json["post_nat_src_ipv4_address"], "198.51.100.7");
        assert_eq!(json["post_nat_dst_ipv4_address"], "");
        assert_eq!(json["post_napt_src_transport_port"], 40001);
        assert_eq!(json["post_napt_dst_transport_port"], 0);
        assert_eq!(
            (
                json["flow_end_reason"].as_u64(),
                json["firewall_event"].as_u64()
            ),
            (Some(3), Some(2))
        );
        assert_eq!(json.as_object().unwrap().len(), 29);
        assert!(record.ends_flow() && record.ends_connection());
        let one_way_fin = FlowRecord {
            flow_end_reason: 3,
            ..FlowRecord::default()
        };
        assert!(one_way_fin.ends_flow() && !one_way_fin.ends_connection());
        let biflow_fin = FlowRecord {
            reverse_packets: 1,
            ..one_way_fin
        };
        assert!(biflow_fin.ends_connection());
        let active_timeout = FlowRecord {
            flow_end_reason: 2,
            ..FlowRecord::default()
        };
        assert!(!active_timeout.ends_flow());
        let plain = serde_json::to_value(FlowRecord::default()).unwrap();
        assert!(plain.get("post_nat_src_ipv4_address").is_none());
        assert!(plain.get("flow_end_reason").is_none());
    }

    #[test]
    fn a_named_record_adds_the_interface_names_it_has() {
        let record = FlowRecord {
            in_if: 104,
            out_if: 7,
            ..FlowRecord::default()
        };
        let names = InterfaceName {
            name: "Te0/6/0/2".into(),
            description: "TenGigE0_6_0_2".into(),
        };
        let json = serde_json::to_value(NamedRecord {
            record: &record,
            in_if: Some(&names),
            out_if: None,
        })
        .unwrap();
        assert_eq!(json["in_if"], 104);
        assert_eq!(json["in_if_name"], "Te0/6/0/2");
        assert_eq!(json["in_if_description"], "TenGigE0_6_0_2");
        assert!(json.get("out_if_name").is_none());
        assert_eq!(json.as_object().unwrap().len(), 23 + 2);
        assert_eq!(InterfaceName::text(b"eth0\0\0\0"), "eth0".into());
        assert_eq!(InterfaceName::text(&[b'x'; 100]).len(), 64);
    }
}
