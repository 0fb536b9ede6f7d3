//! wire: the first bytes of a sampled packet (an sFlow raw packet header; later IPFIX packet
//! sections), read for what a flow record needs: the 5-tuple, ToS and TCP flags.
//!
//! The link layer is walked here, by hand, because `etherparse` (which reads the rest) has no
//! MPLS: Ethernet II, up to [`MAX_TAGS`] 802.1Q / 802.1ad (QinQ) tags, an MPLS label stack of
//! up to [`MAX_LABELS`] entries with the payload told apart by its IP version nibble. From the
//! IP header down, `etherparse`'s lax slicer reads IPv4, IPv6 with extension headers, TCP,
//! UDP, ICMP and ICMPv6 in place and stops where the (usually cut) header ends instead of
//! failing. Nothing allocates; every read is bounds-checked, so any bytes are safe.
//!
//! A VXLAN packet (UDP to port [`VXLAN_PORT`], RFC 7348), as a switch of an overlay fabric
//! samples it on an underlay link, is read for its inner frame: the conversation is the
//! tenant hosts', not the two tunnel endpoints' (as Akvorado reads it). One level of
//! encapsulation is opened; the inner frame must hold an IP packet, else the outer
//! headers stand.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// VLAN tags walked before giving up (QinQ is two).
pub const MAX_TAGS: usize = 4;
/// MPLS label stack entries walked before giving up.
pub const MAX_LABELS: usize = 8;

const ETHERNET_HEADER_LEN: usize = 14;
const ETYPE_VLAN: u16 = 0x8100;
const ETYPE_QINQ: u16 = 0x88a8;
const ETYPE_QINQ_OLD: u16 = 0x9100;
const ETYPE_MPLS: u16 = 0x8847;
const ETYPE_MPLS_MULTICAST: u16 = 0x8848;
const ETYPE_IPV4: u16 = 0x0800;
const ETYPE_IPV6: u16 = 0x86dd;
/// VXLAN's IANA port.
pub const VXLAN_PORT: u16 = 4789;
const VXLAN_HEADER_LEN: usize = 8;
/// VXLAN header flags: the VNI is valid.
const VXLAN_FLAG_VNI: u8 = 0x08;
/// Encapsulations opened, at most.
const MAX_TUNNELS: u8 = 1;

/// What a flow record takes from a sampled packet. Ports are 0 where the packet has none (or
/// the header was cut before them); for ICMP the destination port is `type << 8 | code`, as
/// NetFlow exporters put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketSummary {
    /// The ethernet type of the network layer (0x0800, 0x86dd, or what the frame carried).
    pub etype: u16,
    /// The outermost 802.1Q VLAN id, 0 when untagged.
    pub vlan: u16,
    /// `None` when the header ends before an IP header (or the packet is not IP).
    pub addresses: Option<(IpAddr, IpAddr)>,
    pub proto: u8,
    pub tos: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    /// The IP packet's length as its header says (IPv6: payload plus 40), 0 when unread;
    /// of the inner packet when a VXLAN packet was opened.
    pub ip_length: u32,
    /// The VXLAN network identifier when the fields above are a VXLAN packet's inner ones.
    pub vni: Option<u32>,
}

/// Reads an Ethernet frame's headers; `None` when it is shorter than an Ethernet header.
pub fn ethernet(frame: &[u8]) -> Option<PacketSummary> {
    ethernet_within(frame, MAX_TUNNELS)
}

/// [`ethernet`], opening at most `tunnels` more encapsulations.
fn ethernet_within(frame: &[u8], tunnels: u8) -> Option<PacketSummary> {
    let mut summary = PacketSummary::default();
    let mut etype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let mut at = ETHERNET_HEADER_LEN;
    let mut tags = 0;
    while matches!(etype, ETYPE_VLAN | ETYPE_QINQ | ETYPE_QINQ_OLD) && tags < MAX_TAGS {
        let Some(tag) = frame.get(at..at + 4) else {
            summary.etype = etype;
            return Some(summary);
        };
        if tags == 0 {
            summary.vlan = u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff;
        }
        etype = u16::from_be_bytes([tag[2], tag[3]]);
        at += 4;
        tags += 1;
    }
    if matches!(etype, ETYPE_MPLS | ETYPE_MPLS_MULTICAST) {
        let mut labels = 0;
        loop {
            let Some(entry) = frame.get(at..at + 4) else {
                summary.etype = etype;
                return Some(summary);
            };
            at += 4;
            labels += 1;
            let bottom = entry[2] & 1 == 1;
            if bottom || labels == MAX_LABELS {
                break;
            }
        }
        etype = match frame.get(at).map(|b| b >> 4) {
            Some(4) => ETYPE_IPV4,
            Some(6) => ETYPE_IPV6,
            _ => {
                summary.etype = etype;
                return Some(summary);
            }
        };
    }
    summary.etype = etype;
    if matches!(etype, ETYPE_IPV4 | ETYPE_IPV6) {
        let rest = frame.get(at..).unwrap_or(&[]);
        read_ip(
            LaxSlicedPacket::from_ether_type(EtherType(etype), rest),
            &mut summary,
            tunnels,
        );
    }
    Some(summary)
}

/// Reads a packet that starts at its IP header; `None` when no IP header can be read.
pub fn ip(packet: &[u8]) -> Option<PacketSummary> {
    let sliced = LaxSlicedPacket::from_ip(packet).ok()?;
    let mut summary = PacketSummary::default();
    read_ip(sliced, &mut summary, MAX_TUNNELS);
    summary.addresses.is_some().then_some(summary)
}

fn read_ip(sliced: LaxSlicedPacket<'_>, summary: &mut PacketSummary, tunnels: u8) {
    let payload = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let header = v4.header();
            summary.etype = ETYPE_IPV4;
            summary.addresses = Some((
                IpAddr::V4(header.source_addr()),
                IpAddr::V4(header.destination_addr()),
            ));
            summary.tos = header.slice()[1];
            summary.ip_length = u32::from(header.total_len());
            v4.payload()
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let header = v6.header();
            summary.etype = ETYPE_IPV6;
            summary.addresses = Some((
                IpAddr::V6(header.source_addr()),
                IpAddr::V6(header.destination_addr()),
            ));
            summary.tos = header.traffic_class();
            summary.ip_length = u32::from(header.payload_length()) + 40;
            v6.payload()
        }
        Some(LaxNetSlice::Arp(_)) | None => return,
    };
    summary.proto = payload.ip_number.0;
    match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            summary.src_port = tcp.source_port();
            summary.dst_port = tcp.destination_port();
            summary.tcp_flags = tcp.slice().get(13).copied().unwrap_or(0);
        }
        Some(TransportSlice::Udp(udp)) => {
            summary.src_port = udp.source_port();
            summary.dst_port = udp.destination_port();
            if summary.dst_port == VXLAN_PORT && tunnels > 0 {
                open_vxlan(udp.payload(), summary, tunnels - 1);
            }
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            summary.dst_port = u16::from(icmp.type_u8()) << 8 | u16::from(icmp.code_u8());
        }
        Some(TransportSlice::Icmpv6(icmp)) => {
            summary.dst_port = u16::from(icmp.type_u8()) << 8 | u16::from(icmp.code_u8());
        }
        _ => {
            // Cut before a whole TCP/UDP header: the ports are still in its first four bytes.
            if matches!(summary.proto, 6 | 17 | 132)
                && !payload.fragmented
                && let [a, b, c, d, ..] = *payload.payload
            {
                summary.src_port = u16::from_be_bytes([a, b]);
                summary.dst_port = u16::from_be_bytes([c, d]);
            }
        }
    }
}

/// Takes the inner frame's fields when `payload` is a VXLAN header and a frame holding an
/// IP packet; leaves `summary` (the outer packet's) as it is otherwise.
fn open_vxlan(payload: &[u8], summary: &mut PacketSummary, tunnels: u8) {
    let Some((header, frame)) = payload.split_at_checked(VXLAN_HEADER_LEN) else {
        return;
    };
    if header[0] & VXLAN_FLAG_VNI == 0 {
        return;
    }
    let Some(inner) = ethernet_within(frame, tunnels).filter(|s| s.addresses.is_some()) else {
        return;
    };
    *summary = PacketSummary {
        vlan: summary.vlan,
        vni: Some(u32::from_be_bytes([0, header[4], header[5], header[6]])),
        ..inner
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_v4() -> Vec<u8> {
        let mut packet = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [192, 0, 2, 9], 64)
            .udp(5353, 53)
            .write(&mut packet, &[0u8; 12])
            .unwrap();
        packet
    }

    #[rustfmt::skip]
    const MACS: [u8; 12] = [
        0, 1, 2, 3, 4, 5, // destination
        6, 7, 8, 9, 10, 11, // source
    ];

    #[test]
    fn qinq_tagged_udp() {
        let mut frame = MACS.to_vec();
        frame.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64]); // S-tag, VLAN 100
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]); // C-tag, VLAN 10
        frame.extend_from_slice(&[0x08, 0x00]); // IPv4
        frame.extend_from_slice(&udp_v4());
        let summary = ethernet(&frame).unwrap();
        assert_eq!(summary.vlan, 100);
        assert_eq!(summary.etype, ETYPE_IPV4);
        assert_eq!(
            summary.addresses,
            Some((IpAddr::from([10, 0, 0, 1]), IpAddr::from([192, 0, 2, 9])))
        );
        assert_eq!(
            (summary.proto, summary.src_port, summary.dst_port),
            (17, 5353, 53)
        );
        assert_eq!(summary.ip_length, 40);
    }

    #[test]
    fn mpls_label_stack_then_ipv4() {
        let mut frame = MACS.to_vec();
        frame.extend_from_slice(&[0x88, 0x47]);
        frame.extend_from_slice(&[0x00, 0x01, 0x00, 0x40]); // label 16
        frame.extend_from_slice(&[0x00, 0x01, 0x11, 0x40]); // label 17, bottom of stack
        frame.extend_from_slice(&udp_v4());
        let summary = ethernet(&frame).unwrap();
        assert_eq!(summary.etype, ETYPE_IPV4);
        assert_eq!(summary.dst_port, 53);
    }

    #[test]
    fn tcp_flags_icmp_and_cut_headers() {
        let mut packet = Vec::new();
        etherparse::PacketBuilder::ipv6([0x20; 16], [0x30; 16], 64)
            .tcp(40000, 443, 1, 1024)
            .syn()
            .ack(5)
            .write(&mut packet, &[])
            .unwrap();
        let summary = ip(&packet).unwrap();
        assert_eq!(summary.etype, ETYPE_IPV6);
        assert_eq!(
            (summary.proto, summary.dst_port, summary.tcp_flags),
            (6, 443, 0x12)
        );
        // Cut inside the TCP header: the ports are kept, the flags are not.
        let cut = ip(&packet[..40 + 6]).unwrap();
        assert_eq!((cut.src_port, cut.dst_port, cut.tcp_flags), (40000, 443, 0));

        let mut echo = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut echo, &[])
            .unwrap();
        let summary = ip(&echo).unwrap();
        assert_eq!((summary.proto, summary.dst_port), (1, 8 << 8));
    }

    /// An Ethernet frame of a VXLAN packet (VTEP 192.0.2.1 to 192.0.2.2, VNI 5001, `flags`)
    /// carrying `inner`.
    fn vxlan(flags: u8, inner: &[u8]) -> Vec<u8> {
        let mut payload = vec![flags, 0, 0, 0, 0x00, 0x13, 0x89, 0];
        payload.extend_from_slice(inner);
        let mut frame = MACS.to_vec();
        frame.extend_from_slice(&[0x08, 0x00]);
        etherparse::PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(49152, VXLAN_PORT)
            .write(&mut frame, &payload)
            .unwrap();
        frame
    }

    fn tcp_frame() -> Vec<u8> {
        let mut frame = MACS.to_vec();
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]); // VLAN 7
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [198, 51, 100, 7], 64)
            .tcp(40000, 443, 1, 1024)
            .syn()
            .write(&mut frame, &[0u8; 100])
            .unwrap();
        frame
    }

    #[test]
    fn vxlan_is_read_for_its_inner_frame() {
        let summary = ethernet(&vxlan(0x08, &tcp_frame())).unwrap();
        assert_eq!(
            summary.addresses,
            Some((IpAddr::from([10, 0, 0, 1]), IpAddr::from([198, 51, 100, 7])))
        );
        assert_eq!(
            (summary.proto, summary.src_port, summary.dst_port),
            (6, 40000, 443)
        );
        assert_eq!((summary.tcp_flags, summary.ip_length), (0x02, 140));
        assert_eq!(summary.vni, Some(5001));
        // The outer frame was untagged: the inner frame's VLAN is the tenant's, not the link's.
        assert_eq!(summary.vlan, 0);
        // As an sFlow raw header starting at the IP header.
        let summary = ip(&vxlan(0x08, &tcp_frame())[14..]).unwrap();
        assert_eq!(summary.dst_port, 443);
    }

    #[test]
    fn vxlan_without_an_inner_ip_packet_keeps_the_tunnel_endpoints() {
        let outer = |frame: &[u8]| {
            let summary = ethernet(frame).unwrap();
            (summary.addresses, summary.dst_port, summary.vni)
        };
        let endpoints = (
            Some((IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2]))),
            VXLAN_PORT,
            None,
        );
        // No valid-VNI flag; an inner ARP frame; cut inside the inner Ethernet header.
        assert_eq!(outer(&vxlan(0x00, &tcp_frame())), endpoints);
        let mut arp = MACS.to_vec();
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(outer(&vxlan(0x08, &arp)), endpoints);
        assert_eq!(outer(&vxlan(0x08, &tcp_frame()[..12])), endpoints);
    }

    #[test]
    fn one_level_of_vxlan_is_opened() {
        let twice = vxlan(0x08, &vxlan(0x08, &tcp_frame()));
        let summary = ethernet(&twice).unwrap();
        assert_eq!(summary.dst_port, VXLAN_PORT);
        assert_eq!(summary.vni, Some(5001));
        for len in 0..twice.len() {
            let _ = ethernet(&twice[..len]);
        }
    }

    #[test]
    fn no_panic_on_any_prefix() {
        let mut frame = MACS.to_vec();
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x88, 0x47, 0, 0, 1, 0]);
        frame.extend_from_slice(&udp_v4());
        for len in 0..frame.len() {
            let _ = ethernet(&frame[..len]);
            let _ = ip(&frame[..len]);
        }
        assert!(ethernet(&frame[..13]).is_none());
        assert_eq!(ethernet(&frame[..14]).unwrap().addresses, None);
    }
}
