//! wire::emit: the views' emit side. Flow records encoded as NetFlow v5, v9 or IPFIX
//! datagrams the way a router sends them (~1400-byte datagrams, IPv4 and IPv6 templates,
//! templates re-sent periodically), or as sFlow v5 the way a switch does (one flow sample
//! with a raw packet header per record). The load generator, the benchmarks and the tests
//! use it; exflow never exports. Its input is [`Flow`], the fields a datagram carries
//! (decode's record converts into it): what it writes, the decoder reads back field for
//! field (decode's round-trip tests).

use std::net::IpAddr;

use crate::wire::{FlowKind, ie};

/// What a datagram carries of one flow record: the fields of the templates below (and of
/// v5's fixed record, and of sFlow's sampled packet header). Times are absolute UTC
/// nanoseconds; counters as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    /// Unspecified when there is none.
    pub next_hop: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub ip_tos: u8,
    pub bytes: u64,
    pub packets: u64,
    pub time_flow_start_ns: u64,
    pub time_flow_end_ns: u64,
    pub in_if: u32,
    pub out_if: u32,
    pub src_as: u32,
    pub dst_as: u32,
}

/// Payload budget of one v9/IPFIX datagram: fits a 1500-byte MTU with IP and UDP
/// headers. (NetFlow v5 packets are the fixed 30 records, 1464 bytes.)
pub const DATAGRAM_BUDGET: usize = 1400;

const TEMPLATE_V4: u16 = 256;
const TEMPLATE_V6: u16 = 257;

/// (information element, length) of the IPv4 data template; IPv6 swaps the addresses.
const FIELDS_V4: [(u16, u16); 16] = [
    (ie::SOURCE_IPV4_ADDRESS, 4),
    (ie::DESTINATION_IPV4_ADDRESS, 4),
    (ie::SOURCE_TRANSPORT_PORT, 2),
    (ie::DESTINATION_TRANSPORT_PORT, 2),
    (ie::PROTOCOL_IDENTIFIER, 1),
    (ie::TCP_CONTROL_BITS, 1),
    (ie::IP_CLASS_OF_SERVICE, 1),
    (ie::OCTET_DELTA_COUNT, 8),
    (ie::PACKET_DELTA_COUNT, 8),
    (ie::FLOW_START_MILLISECONDS, 8),
    (ie::FLOW_END_MILLISECONDS, 8),
    (ie::INGRESS_INTERFACE, 4),
    (ie::EGRESS_INTERFACE, 4),
    (ie::BGP_SOURCE_AS_NUMBER, 4),
    (ie::BGP_DESTINATION_AS_NUMBER, 4),
    (ie::IP_NEXT_HOP_IPV4_ADDRESS, 4),
];

fn fields(v6: bool) -> impl Iterator<Item = (u16, u16)> {
    FIELDS_V4.into_iter().map(move |(id, len)| match (v6, id) {
        (true, ie::SOURCE_IPV4_ADDRESS) => (ie::SOURCE_IPV6_ADDRESS, 16),
        (true, ie::DESTINATION_IPV4_ADDRESS) => (ie::DESTINATION_IPV6_ADDRESS, 16),
        (true, ie::IP_NEXT_HOP_IPV4_ADDRESS) => (ie::IP_NEXT_HOP_IPV6_ADDRESS, 16),
        _ => (id, len),
    })
}

fn record_len(v6: bool) -> usize {
    fields(v6).map(|(_, len)| usize::from(len)).sum()
}

/// Encodes records as one exporter's export stream.
#[derive(Debug, Clone)]
pub struct Exporter {
    kind: FlowKind,
    domain_id: u32,
    /// v5: flows sent; v9: datagrams sent; IPFIX: data records sent.
    sequence: u32,
    /// Re-send templates every this many datagrams (and with the first).
    template_every: u32,
    datagrams: u32,
}

impl Exporter {
    pub fn new(kind: FlowKind, domain_id: u32) -> Self {
        Exporter {
            kind,
            domain_id,
            sequence: 0,
            template_every: 64,
            datagrams: 0,
        }
    }

    /// Re-send templates every `n` datagrams (at least 1).
    pub fn template_every(mut self, n: u32) -> Self {
        self.template_every = n.max(1);
        self
    }

    /// Encodes `records` ([`Flow`]s, or anything that converts into one, such as decode's
    /// `FlowRecord`) into datagrams of at most [`DATAGRAM_BUDGET`] bytes, appended to
    /// `out`. `export_ms` is the header's export time. NetFlow v5 can carry IPv4 only:
    /// IPv6 records are skipped there.
    pub fn encode<R: Copy + Into<Flow>>(
        &mut self,
        records: &[R],
        export_ms: u64,
        out: &mut Vec<Vec<u8>>,
    ) {
        let records: Vec<Flow> = records.iter().map(|&r| r.into()).collect();
        let records = records.as_slice();
        match self.kind {
            // The generator makes no v1 or v7: they are encoded as v5.
            FlowKind::NetflowV5 | FlowKind::NetflowV1 | FlowKind::NetflowV7 => {
                let v4: Vec<&Flow> = records.iter().filter(|r| r.src_addr.is_ipv4()).collect();
                for chunk in v4.chunks(30) {
                    out.push(self.v5(chunk, export_ms));
                }
            }
            FlowKind::NetflowV9 | FlowKind::Ipfix => {
                let mut rest = records;
                while !rest.is_empty() {
                    let taken = self.templated(rest, export_ms, out);
                    rest = &rest[taken..];
                }
            }
            FlowKind::Sflow5 => {
                for chunk in records.chunks(SFLOW_SAMPLES_PER_DATAGRAM) {
                    out.push(self.sflow(chunk, export_ms));
                }
            }
        }
    }

    /// One sFlow v5 datagram: per record a compact flow sample of one packet of the record's
    /// mean packet size, 1 in [`SFLOW_SAMPLING_RATE`], with its Ethernet/IP/transport headers.
    fn sflow(&mut self, records: &[Flow], export_ms: u64) -> Vec<u8> {
        let mut d = Vec::with_capacity(DATAGRAM_BUDGET);
        let word = |d: &mut Vec<u8>, w: u32| d.extend_from_slice(&w.to_be_bytes());
        word(&mut d, 5);
        word(&mut d, 1);
        d.extend_from_slice(&[192, 0, 2, 1]); // agent address
        word(&mut d, self.domain_id); // sub-agent
        self.sequence = self.sequence.wrapping_add(1);
        word(&mut d, self.sequence);
        word(&mut d, (export_ms % 86_400_000) as u32); // uptime
        word(&mut d, records.len() as u32);
        let mut header = Vec::with_capacity(128);
        for (i, r) in records.iter().enumerate() {
            header.clear();
            packet_headers(r, &mut header);
            let padded = header.len().div_ceil(4) * 4;
            let frame_length = (r.bytes / r.packets.max(1)) as u32 + 18; // Ethernet + FCS
            word(&mut d, 1); // flow sample
            word(&mut d, (32 + 8 + 16 + padded) as u32);
            word(
                &mut d,
                self.datagrams.wrapping_mul(64).wrapping_add(i as u32),
            ); // sample seq
            word(&mut d, r.in_if & 0x00ff_ffff); // source: ifIndex
            word(&mut d, SFLOW_SAMPLING_RATE);
            word(&mut d, SFLOW_SAMPLING_RATE.wrapping_mul(self.sequence)); // pool
            word(&mut d, 0); // drops
            word(&mut d, r.in_if & 0x3fff_ffff);
            word(&mut d, r.out_if & 0x3fff_ffff);
            word(&mut d, 1); // one record
            word(&mut d, 1); // raw packet header
            word(&mut d, (16 + padded) as u32);
            word(&mut d, 1); // Ethernet
            word(&mut d, frame_length);
            word(&mut d, 4); // FCS stripped
            word(&mut d, header.len() as u32);
            d.extend_from_slice(&header);
            d.resize(d.len() + padded - header.len(), 0);
        }
        self.datagrams += 1;
        d
    }

    fn v5(&mut self, records: &[&Flow], export_ms: u64) -> Vec<u8> {
        // sysUptime counts from an arbitrary boot a day before the export.
        let boot_ms = export_ms.saturating_sub(86_400_000);
        let uptime = |ns: u64| ((ns / 1_000_000).saturating_sub(boot_ms)) as u32;
        let mut d = Vec::with_capacity(24 + 48 * records.len());
        d.extend_from_slice(&5u16.to_be_bytes());
        d.extend_from_slice(&(records.len() as u16).to_be_bytes());
        d.extend_from_slice(&uptime(export_ms * 1_000_000).to_be_bytes());
        d.extend_from_slice(&((export_ms / 1000) as u32).to_be_bytes());
        d.extend_from_slice(&(((export_ms % 1000) * 1_000_000) as u32).to_be_bytes());
        d.extend_from_slice(&self.sequence.to_be_bytes());
        d.extend_from_slice(&[0, self.domain_id as u8, 0, 0]);
        for r in records {
            d.extend_from_slice(&v4_octets(r.src_addr));
            d.extend_from_slice(&v4_octets(r.dst_addr));
            d.extend_from_slice(&v4_octets(r.next_hop));
            d.extend_from_slice(&(r.in_if as u16).to_be_bytes());
            d.extend_from_slice(&(r.out_if as u16).to_be_bytes());
            d.extend_from_slice(&(r.packets as u32).to_be_bytes());
            d.extend_from_slice(&(r.bytes as u32).to_be_bytes());
            d.extend_from_slice(&uptime(r.time_flow_start_ns).to_be_bytes());
            d.extend_from_slice(&uptime(r.time_flow_end_ns).to_be_bytes());
            d.extend_from_slice(&r.src_port.to_be_bytes());
            d.extend_from_slice(&r.dst_port.to_be_bytes());
            d.extend_from_slice(&[0, r.tcp_flags, r.proto, r.ip_tos]);
            d.extend_from_slice(&(r.src_as as u16).to_be_bytes());
            d.extend_from_slice(&(r.dst_as as u16).to_be_bytes());
            d.extend_from_slice(&[0, 0, 0, 0]);
        }
        self.sequence = self.sequence.wrapping_add(records.len() as u32);
        self.datagrams += 1;
        d
    }

    /// One v9/IPFIX datagram from the front of `records`; returns how many it took.
    fn templated(&mut self, records: &[Flow], export_ms: u64, out: &mut Vec<Vec<u8>>) -> usize {
        let ipfix = self.kind == FlowKind::Ipfix;
        let mut d = Vec::with_capacity(DATAGRAM_BUDGET + 100);
        let header_len = if ipfix { 16 } else { 20 };
        d.resize(header_len, 0);
        let mut flowsets = 0u16;
        if self.datagrams.is_multiple_of(self.template_every) {
            let set_start = d.len();
            d.extend_from_slice(&(if ipfix { 2u16 } else { 0u16 }).to_be_bytes());
            d.extend_from_slice(&[0, 0]);
            for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
                d.extend_from_slice(&id.to_be_bytes());
                d.extend_from_slice(&(FIELDS_V4.len() as u16).to_be_bytes());
                for (field, len) in fields(v6) {
                    d.extend_from_slice(&field.to_be_bytes());
                    d.extend_from_slice(&len.to_be_bytes());
                }
                flowsets += 1;
            }
            let set_len = (d.len() - set_start) as u16;
            d[set_start + 2..set_start + 4].copy_from_slice(&set_len.to_be_bytes());
        }
        let mut taken = 0;
        let mut data_records = 0u32;
        while taken < records.len() {
            let v6 = records[taken].src_addr.is_ipv6();
            let len = record_len(v6);
            if d.len() + 4 + len > DATAGRAM_BUDGET {
                break;
            }
            let set_start = d.len();
            d.extend_from_slice(&(if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 }).to_be_bytes());
            d.extend_from_slice(&[0, 0]);
            while taken < records.len()
                && records[taken].src_addr.is_ipv6() == v6
                && d.len() + len <= DATAGRAM_BUDGET
            {
                self.put_record(&records[taken], v6, &mut d);
                taken += 1;
                data_records += 1;
                flowsets += 1;
            }
            let set_len = (d.len() - set_start) as u16;
            d[set_start + 2..set_start + 4].copy_from_slice(&set_len.to_be_bytes());
        }
        let export_s = (export_ms / 1000) as u32;
        if ipfix {
            let length = d.len() as u16;
            d[0..2].copy_from_slice(&10u16.to_be_bytes());
            d[2..4].copy_from_slice(&length.to_be_bytes());
            d[4..8].copy_from_slice(&export_s.to_be_bytes());
            d[8..12].copy_from_slice(&self.sequence.to_be_bytes());
            d[12..16].copy_from_slice(&self.domain_id.to_be_bytes());
            self.sequence = self.sequence.wrapping_add(data_records);
        } else {
            d[0..2].copy_from_slice(&9u16.to_be_bytes());
            d[2..4].copy_from_slice(&flowsets.to_be_bytes());
            d[4..8].copy_from_slice(&86_400_000u32.to_be_bytes()); // booted a day ago
            d[8..12].copy_from_slice(&export_s.to_be_bytes());
            d[12..16].copy_from_slice(&self.sequence.to_be_bytes());
            d[16..20].copy_from_slice(&self.domain_id.to_be_bytes());
            self.sequence = self.sequence.wrapping_add(1);
        }
        self.datagrams += 1;
        out.push(d);
        taken
    }

    fn put_record(&self, r: &Flow, v6: bool, d: &mut Vec<u8>) {
        for (field, len) in fields(v6) {
            match field {
                ie::SOURCE_IPV4_ADDRESS | ie::SOURCE_IPV6_ADDRESS => put_addr(d, r.src_addr, len),
                ie::DESTINATION_IPV4_ADDRESS | ie::DESTINATION_IPV6_ADDRESS => {
                    put_addr(d, r.dst_addr, len)
                }
                ie::IP_NEXT_HOP_IPV4_ADDRESS | ie::IP_NEXT_HOP_IPV6_ADDRESS => {
                    put_addr(d, r.next_hop, len)
                }
                ie::SOURCE_TRANSPORT_PORT => d.extend_from_slice(&r.src_port.to_be_bytes()),
                ie::DESTINATION_TRANSPORT_PORT => d.extend_from_slice(&r.dst_port.to_be_bytes()),
                ie::PROTOCOL_IDENTIFIER => d.push(r.proto),
                ie::TCP_CONTROL_BITS => d.push(r.tcp_flags),
                ie::IP_CLASS_OF_SERVICE => d.push(r.ip_tos),
                ie::OCTET_DELTA_COUNT => d.extend_from_slice(&r.bytes.to_be_bytes()),
                ie::PACKET_DELTA_COUNT => d.extend_from_slice(&r.packets.to_be_bytes()),
                ie::FLOW_START_MILLISECONDS => {
                    d.extend_from_slice(&(r.time_flow_start_ns / 1_000_000).to_be_bytes())
                }
                ie::FLOW_END_MILLISECONDS => {
                    d.extend_from_slice(&(r.time_flow_end_ns / 1_000_000).to_be_bytes())
                }
                ie::INGRESS_INTERFACE => d.extend_from_slice(&r.in_if.to_be_bytes()),
                ie::EGRESS_INTERFACE => d.extend_from_slice(&r.out_if.to_be_bytes()),
                ie::BGP_SOURCE_AS_NUMBER => d.extend_from_slice(&r.src_as.to_be_bytes()),
                ie::BGP_DESTINATION_AS_NUMBER => d.extend_from_slice(&r.dst_as.to_be_bytes()),
                _ => d.resize(d.len() + usize::from(len), 0),
            }
        }
    }
}

/// Flow samples per sFlow datagram: about 1400 bytes of IPv6 TCP samples.
pub const SFLOW_SAMPLES_PER_DATAGRAM: usize = 9;
/// The 1-in-N rate the sFlow encoder announces.
pub const SFLOW_SAMPLING_RATE: u32 = 1000;

/// The Ethernet, IP and TCP/UDP headers of a packet of `r`, without payload.
fn packet_headers(r: &Flow, out: &mut Vec<u8>) {
    let macs = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = match (r.src_addr, r.dst_addr) {
        (IpAddr::V4(s), IpAddr::V4(d)) => macs.ipv4(s.octets(), d.octets(), 64),
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(v6) => v6.octets(),
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            };
            macs.ipv6(v6(s), v6(d), 64)
        }
    };
    // Writing to a Vec cannot fail, and these headers have no length to overflow.
    let written = match r.proto {
        6 => ip.tcp(r.src_port, r.dst_port, 1, 65535).write(out, &[]),
        17 => ip.udp(r.src_port, r.dst_port).write(out, &[]),
        other => ip.write(out, etherparse::IpNumber(other), &[]),
    };
    written.expect("headers to a Vec");
    // The TCP flags byte sits 13 bytes into the TCP header.
    if r.proto == 6 {
        let at = out.len() - 20 + 13;
        out[at] = r.tcp_flags;
    }
}

/// How many flow records a datagram made by [`Exporter`] carries.
pub fn record_count(kind: FlowKind, datagram: &[u8]) -> u32 {
    match kind {
        FlowKind::Sflow5 => crate::wire::read_u32(datagram, 24).unwrap_or(0),
        FlowKind::NetflowV5 | FlowKind::NetflowV1 | FlowKind::NetflowV7 => {
            u32::from(u16::from_be_bytes([datagram[2], datagram[3]]))
        }
        FlowKind::NetflowV9 | FlowKind::Ipfix => {
            let header = if kind == FlowKind::Ipfix { 16 } else { 20 };
            crate::wire::set::Sets::new(&datagram[header..])
                .flatten()
                .filter(|set| set.id >= 256)
                .map(|set| (set.body.len() / record_len(set.id == TEMPLATE_V6)) as u32)
                .sum()
        }
    }
}

fn v4_octets(addr: IpAddr) -> [u8; 4] {
    match addr {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

fn put_addr(d: &mut Vec<u8>, addr: IpAddr, len: u16) {
    match (addr, len) {
        (IpAddr::V4(v4), 4) => d.extend_from_slice(&v4.octets()),
        (IpAddr::V6(v6), 16) => d.extend_from_slice(&v6.octets()),
        (IpAddr::V4(v4), 16) => d.extend_from_slice(&v4.to_ipv6_mapped().octets()),
        _ => d.resize(d.len() + usize::from(len), 0),
    }
}
