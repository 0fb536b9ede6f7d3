//! source: UDP datagrams out of capture files (classic pcap and pcapng; Ethernet, VLAN,
//! Linux SLL/SLL2, raw IP, BSD loopback; IPv4 and IPv6), in file order, with their capture
//! time standing in for the time they were received.

use std::fs::File;
use std::io::{BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{Context, bail};
use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};

/// One UDP datagram from a capture.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Capture time, nanoseconds since the UNIX epoch.
    pub received_ns: u64,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub payload: &'a [u8],
}

/// What reading a capture skipped, so nothing is dropped silently.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureCounters {
    pub frames: u64,
    pub udp_datagrams: u64,
    /// Frames that are not UDP over IP (TCP sessions, ARP...).
    pub not_udp: u64,
    /// IP fragments: exflow does not reassemble capture files.
    pub fragments: u64,
    /// Frames whose headers could not be read, or of a link type exflow does not know.
    pub unreadable: u64,
}

const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Calls `each` with every UDP datagram in the capture at `path`.
pub fn for_each_datagram(
    path: &Path,
    mut each: impl FnMut(Datagram<'_>),
) -> anyhow::Result<CaptureCounters> {
    let file =
        File::open(path).with_context(|| format!("cannot open capture '{}'", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .with_context(|| format!("'{}' is too short to be a capture", path.display()))?;
    let reader = std::io::Cursor::new(magic).chain(reader);
    let mut counters = CaptureCounters::default();
    let context = || format!("cannot read capture '{}'", path.display());
    if magic == PCAPNG_MAGIC {
        let mut pcapng = PcapNgReader::new(reader).with_context(context)?;
        while let Some(block) = pcapng.next_block() {
            let block = block.with_context(context)?.into_owned();
            let Block::EnhancedPacket(packet) = block else {
                continue;
            };
            let interface = pcapng.packet_interface(&packet);
            let link = interface.map_or(DataLink::ETHERNET, |i| i.linktype);
            let resolution = interface.map_or(6, timestamp_resolution);
            // pcap-file reads the raw timestamp as nanoseconds; rescale by if_tsresol.
            let received_ns = rescale(packet.timestamp.as_nanos() as u64, resolution);
            counters.frames += 1;
            read_frame(link, received_ns, &packet.data, &mut counters, &mut each);
        }
    } else {
        let mut pcap = PcapReader::new(reader).with_context(context)?;
        let link = pcap.header().datalink;
        while let Some(packet) = pcap.next_packet() {
            let packet = packet.with_context(context)?;
            counters.frames += 1;
            read_frame(
                link,
                packet.timestamp.as_nanos() as u64,
                &packet.data,
                &mut counters,
                &mut each,
            );
        }
    }
    if counters.frames == 0 {
        bail!("capture '{}' holds no packets", path.display());
    }
    Ok(counters)
}

/// pcapng `if_tsresol`: a power of ten (high bit clear) or of two (high bit set) of
/// units per second; 6 (microseconds) when absent.
fn timestamp_resolution(
    interface: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock,
) -> u8 {
    interface
        .options
        .iter()
        .find_map(|option| match option {
            InterfaceDescriptionOption::IfTsResol(resolution) => Some(*resolution),
            _ => None,
        })
        .unwrap_or(6)
}

fn rescale(units: u64, resolution: u8) -> u64 {
    if resolution & 0x80 != 0 {
        let shift = u32::from(resolution & 0x7f).min(63);
        ((u128::from(units) * 1_000_000_000) >> shift) as u64
    } else {
        let exponent = u32::from(resolution).min(18);
        if exponent <= 9 {
            units.saturating_mul(10u64.pow(9 - exponent))
        } else {
            units / 10u64.pow(exponent - 9)
        }
    }
}

fn read_frame(
    link: DataLink,
    received_ns: u64,
    frame: &[u8],
    counters: &mut CaptureCounters,
    each: &mut impl FnMut(Datagram<'_>),
) {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(frame),
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(frame),
        // SLL2: the protocol type comes first, the header is 20 bytes.
        DataLink::LINUX_SLL2 if frame.len() >= 20 => SlicedPacket::from_ether_type(
            EtherType(u16::from_be_bytes([frame[0], frame[1]])),
            &frame[20..],
        ),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(frame),
        // BSD loopback: a 4-byte address family, then the IP packet.
        DataLink::NULL | DataLink::LOOP if frame.len() >= 4 => SlicedPacket::from_ip(&frame[4..]),
        _ => {
            counters.unreadable += 1;
            return;
        }
    };
    let Ok(packet) = sliced else {
        counters.unreadable += 1;
        return;
    };
    let (source_ip, destination_ip, fragmented) = match &packet.net {
        Some(NetSlice::Ipv4(ip)) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
            ip.is_payload_fragmented(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
            ip.is_payload_fragmented(),
        ),
        _ => {
            counters.not_udp += 1;
            return;
        }
    };
    if fragmented {
        counters.fragments += 1;
        return;
    }
    let Some(TransportSlice::Udp(udp)) = &packet.transport else {
        counters.not_udp += 1;
        return;
    };
    counters.udp_datagrams += 1;
    each(Datagram {
        received_ns,
        source: SocketAddr::new(source_ip, udp.source_port()),
        destination: SocketAddr::new(destination_ip, udp.destination_port()),
        payload: udp.payload(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_timestamp_resolutions() {
        assert_eq!(rescale(1_500_000, 6), 1_500_000_000);
        assert_eq!(rescale(7, 9), 7);
        assert_eq!(rescale(12_345, 12), 12);
        assert_eq!(rescale(3 << 10, 0x80 | 10), 3_000_000_000);
    }

    #[test]
    fn udp_in_ethernet_vlan_and_raw_ip() {
        let builder = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(etherparse::VlanId::try_new(10).unwrap())
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(40000, 2055);
        let mut frame = Vec::new();
        builder.write(&mut frame, &[0, 9, 0, 0]).unwrap();
        let mut seen = Vec::new();
        let mut counters = CaptureCounters::default();
        read_frame(DataLink::ETHERNET, 5, &frame, &mut counters, &mut |d| {
            seen.push((d.received_ns, d.source, d.destination, d.payload.to_vec()))
        });
        assert_eq!(
            seen,
            vec![(
                5,
                "192.0.2.1:40000".parse().unwrap(),
                "192.0.2.2:2055".parse().unwrap(),
                vec![0, 9, 0, 0]
            )]
        );
        let raw = etherparse::PacketBuilder::ipv6([0x20; 16], [0x30; 16], 64).udp(1, 4739);
        let mut packet = Vec::new();
        raw.write(&mut packet, &[0, 10]).unwrap();
        read_frame(DataLink::RAW, 6, &packet, &mut counters, &mut |d| {
            assert_eq!(d.destination.port(), 4739)
        });
        assert_eq!(counters.udp_datagrams, 2);
        read_frame(
            DataLink::ETHERNET,
            7,
            &frame[..20],
            &mut counters,
            &mut |_| panic!("truncated"),
        );
        read_frame(
            DataLink::Unknown(999),
            7,
            &frame,
            &mut counters,
            &mut |_| panic!("unknown link"),
        );
        assert_eq!(counters.unreadable, 2);
    }
}
