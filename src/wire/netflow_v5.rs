//! wire: NetFlow v5 export packet, a 24-byte header followed by `count` fixed 48-byte records,
//! and its fixed-record kin: v1 (a 16-byte header without sequence, engine or sampling;
//! 48-byte records without AS numbers, TCP flags at byte 40) and v7 (Catalyst switches: v5's
//! header with the engine and sampling bytes reserved, 52-byte records: v5's plus a flags
//! word and the router shortcut address).
//!
//! Layout from Cisco's "NetFlow Export Datagram Format" (v1, v5, v7). All fields big-endian.

use std::net::Ipv4Addr;

use super::{WireError, read_u16, read_u32};

mod field {
    use std::ops::Range;
    pub const VERSION: Range<usize> = 0..2;
    pub const COUNT: Range<usize> = 2..4;
    pub const SYS_UPTIME: Range<usize> = 4..8;
    pub const UNIX_SECS: Range<usize> = 8..12;
    pub const UNIX_NSECS: Range<usize> = 12..16;
    pub const FLOW_SEQUENCE: Range<usize> = 16..20;
    pub const ENGINE_TYPE: usize = 20;
    pub const ENGINE_ID: usize = 21;
    pub const SAMPLING_INTERVAL: Range<usize> = 22..24;
    pub const HEADER_LEN: usize = 24;

    pub const SRCADDR: Range<usize> = 0..4;
    pub const DSTADDR: Range<usize> = 4..8;
    pub const NEXTHOP: Range<usize> = 8..12;
    pub const INPUT: Range<usize> = 12..14;
    pub const OUTPUT: Range<usize> = 14..16;
    pub const D_PKTS: Range<usize> = 16..20;
    pub const D_OCTETS: Range<usize> = 20..24;
    pub const FIRST: Range<usize> = 24..28;
    pub const LAST: Range<usize> = 28..32;
    pub const SRCPORT: Range<usize> = 32..34;
    pub const DSTPORT: Range<usize> = 34..36;
    pub const TCP_FLAGS: usize = 37;
    pub const PROT: usize = 38;
    pub const TOS: usize = 39;
    pub const SRC_AS: Range<usize> = 40..42;
    pub const DST_AS: Range<usize> = 42..44;
    pub const SRC_MASK: usize = 44;
    pub const DST_MASK: usize = 45;
    pub const RECORD_LEN: usize = 48;
}

pub use field::{HEADER_LEN, RECORD_LEN};

/// The most records Cisco's format allows in one packet.
pub const MAX_RECORDS: u16 = 30;

/// Which of the fixed-record formats a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    V1,
    V5,
    V7,
}

impl Format {
    pub const fn version(self) -> u16 {
        match self {
            Format::V1 => 1,
            Format::V5 => 5,
            Format::V7 => 7,
        }
    }

    pub const fn header_len(self) -> usize {
        match self {
            Format::V1 => 16,
            Format::V5 | Format::V7 => HEADER_LEN,
        }
    }

    pub const fn record_len(self) -> usize {
        match self {
            Format::V1 | Format::V5 => RECORD_LEN,
            Format::V7 => 52,
        }
    }

    /// The most records Cisco's format allows in one packet.
    pub const fn max_records(self) -> u16 {
        match self {
            Format::V1 => 24,
            Format::V5 => MAX_RECORDS,
            Format::V7 => 28,
        }
    }
}

/// A checked view over a NetFlow v5 (or v1, v7) packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    format: Format,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version, that the header is whole and that `count` records fit. Bytes past
    /// the last record are ignored (some exporters pad).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let buf = buffer.as_ref();
        let format = match read_u16(buf, field::VERSION.start) {
            Some(1) => Format::V1,
            Some(5) => Format::V5,
            Some(7) => Format::V7,
            Some(_) => return Err(WireError::BadVersion),
            None => return Err(WireError::Truncated),
        };
        if buf.len() < format.header_len() {
            return Err(WireError::Truncated);
        }
        let packet = Packet { buffer, format };
        if packet.count() > format.max_records() {
            return Err(WireError::BadLength);
        }
        let needed = format.header_len() + usize::from(packet.count()) * format.record_len();
        if packet.buffer.as_ref().len() < needed {
            return Err(WireError::Truncated);
        }
        Ok(packet)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    fn u16_at(&self, at: usize) -> u16 {
        read_u16(self.buffer.as_ref(), at).unwrap_or(0)
    }

    fn u32_at(&self, at: usize) -> u32 {
        read_u32(self.buffer.as_ref(), at).unwrap_or(0)
    }

    pub fn count(&self) -> u16 {
        self.u16_at(field::COUNT.start)
    }

    /// Milliseconds since the exporter booted, at export time.
    pub fn sys_uptime(&self) -> u32 {
        self.u32_at(field::SYS_UPTIME.start)
    }

    pub fn unix_secs(&self) -> u32 {
        self.u32_at(field::UNIX_SECS.start)
    }

    pub fn unix_nsecs(&self) -> u32 {
        self.u32_at(field::UNIX_NSECS.start)
    }

    /// Count of flows exported before this packet (v5, v7; v1 has none: 0).
    pub fn flow_sequence(&self) -> u32 {
        if self.format == Format::V1 {
            return 0;
        }
        self.u32_at(field::FLOW_SEQUENCE.start)
    }

    /// v5 only (reserved in v7, absent in v1: 0).
    pub fn engine_type(&self) -> u8 {
        if self.format != Format::V5 {
            return 0;
        }
        self.buffer.as_ref()[field::ENGINE_TYPE]
    }

    /// v5 only (reserved in v7, absent in v1: 0).
    pub fn engine_id(&self) -> u8 {
        if self.format != Format::V5 {
            return 0;
        }
        self.buffer.as_ref()[field::ENGINE_ID]
    }

    fn sampling_field(&self) -> u16 {
        if self.format != Format::V5 {
            return 0;
        }
        self.u16_at(field::SAMPLING_INTERVAL.start)
    }

    /// Sampling mode (the top two bits of the sampling field; v5 only).
    pub fn sampling_mode(&self) -> u8 {
        (self.sampling_field() >> 14) as u8
    }

    /// Sampling interval (the low 14 bits; 0 when unsampled or unknown, and in v1 and v7).
    pub fn sampling_interval(&self) -> u16 {
        self.sampling_field() & 0x3fff
    }

    /// The `count` records, each a view of the format's record length.
    pub fn records(&self) -> impl ExactSizeIterator<Item = Record<'_>> {
        let (start, length) = (self.format.header_len(), self.format.record_len());
        let body = &self.buffer.as_ref()[start..start + usize::from(self.count()) * length];
        let v1 = self.format == Format::V1;
        body.chunks_exact(length)
            .map(move |bytes| Record { bytes, v1 })
    }
}

/// One v5 (or v1, v7) flow record; only made by [`Packet::records`], so always whole.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    bytes: &'a [u8],
    /// v1's layout after the ports: protocol, ToS, TCP flags at 38-40, no AS or masks.
    v1: bool,
}

impl Record<'_> {
    fn addr(&self, at: std::ops::Range<usize>) -> Ipv4Addr {
        Ipv4Addr::new(
            self.bytes[at.start],
            self.bytes[at.start + 1],
            self.bytes[at.start + 2],
            self.bytes[at.start + 3],
        )
    }
    fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.bytes[at], self.bytes[at + 1]])
    }
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        self.addr(field::SRCADDR)
    }
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.addr(field::DSTADDR)
    }
    pub fn next_hop(&self) -> Ipv4Addr {
        self.addr(field::NEXTHOP)
    }
    pub fn input(&self) -> u16 {
        self.u16_at(field::INPUT.start)
    }
    pub fn output(&self) -> u16 {
        self.u16_at(field::OUTPUT.start)
    }
    pub fn d_pkts(&self) -> u32 {
        self.u32_at(field::D_PKTS.start)
    }
    pub fn d_octets(&self) -> u32 {
        self.u32_at(field::D_OCTETS.start)
    }
    /// sysUptime (ms) at the flow's first packet.
    pub fn first(&self) -> u32 {
        self.u32_at(field::FIRST.start)
    }
    /// sysUptime (ms) at the flow's last packet.
    pub fn last(&self) -> u32 {
        self.u32_at(field::LAST.start)
    }
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRCPORT.start)
    }
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DSTPORT.start)
    }
    pub fn tcp_flags(&self) -> u8 {
        self.bytes[if self.v1 {
            V1_TCP_FLAGS
        } else {
            field::TCP_FLAGS
        }]
    }
    pub fn prot(&self) -> u8 {
        self.bytes[field::PROT]
    }
    pub fn tos(&self) -> u8 {
        self.bytes[field::TOS]
    }
    /// 0 in v1, which has no AS numbers.
    pub fn src_as(&self) -> u16 {
        if self.v1 {
            0
        } else {
            self.u16_at(field::SRC_AS.start)
        }
    }
    pub fn dst_as(&self) -> u16 {
        if self.v1 {
            0
        } else {
            self.u16_at(field::DST_AS.start)
        }
    }
    pub fn src_mask(&self) -> u8 {
        if self.v1 {
            0
        } else {
            self.bytes[field::SRC_MASK]
        }
    }
    pub fn dst_mask(&self) -> u8 {
        if self.v1 {
            0
        } else {
            self.bytes[field::DST_MASK]
        }
    }
}

/// v1's TCP flags byte (after protocol and ToS, where v5 has the AS numbers).
const V1_TCP_FLAGS: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    #[rustfmt::skip]
    static PACKET: [u8; 72] = [
        0x00, 0x05,             // version 5
        0x00, 0x01,             // count 1
        0x00, 0x01, 0x86, 0xa0, // sys_uptime 100000 ms
        0x65, 0xf0, 0x0b, 0x6e, // unix_secs 1710230382
        0x00, 0x00, 0x00, 0x07, // unix_nsecs 7
        0x00, 0x00, 0x00, 0x2a, // flow_sequence 42
        0x01,                   // engine_type 1
        0x02,                   // engine_id 2
        0x40, 0x0a,             // sampling: mode 1, interval 10
        // record 1
        10, 10, 20, 15,         // srcaddr
        5, 255, 255, 77,        // dstaddr
        192, 0, 2, 1,           // nexthop
        0x00, 0x03,             // input 3
        0x00, 0x04,             // output 4
        0x00, 0x00, 0x01, 0xf5, // dPkts 501
        0x01, 0xd8, 0x9c, 0x28, // dOctets 30972968
        0x00, 0x01, 0x5f, 0x90, // first 90000
        0x00, 0x01, 0x86, 0x9f, // last 99999
        0xc3, 0xca,             // srcport 50122
        0x01, 0xbb,             // dstport 443
        0x00,                   // pad1
        0x1b,                   // tcp_flags ACK|PSH|SYN|FIN
        0x06,                   // prot TCP
        0x08,                   // tos
        0xfd, 0xe8,             // src_as 65000
        0x33, 0x39,             // dst_as 13113
        24,                     // src_mask
        16,                     // dst_mask
        0x00, 0x00,             // pad2
    ];

    #[test]
    fn reads_every_field() {
        let packet = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.count(), 1);
        assert_eq!(packet.sys_uptime(), 100_000);
        assert_eq!(packet.unix_secs(), 1_710_230_382);
        assert_eq!(packet.unix_nsecs(), 7);
        assert_eq!(packet.flow_sequence(), 42);
        assert_eq!(packet.engine_type(), 1);
        assert_eq!(packet.engine_id(), 2);
        assert_eq!(packet.sampling_mode(), 1);
        assert_eq!(packet.sampling_interval(), 10);
        let records: Vec<_> = packet.records().collect();
        assert_eq!(records.len(), 1);
        let r = records[0];
        assert_eq!(r.src_addr(), Ipv4Addr::new(10, 10, 20, 15));
        assert_eq!(r.dst_addr(), Ipv4Addr::new(5, 255, 255, 77));
        assert_eq!(r.next_hop(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!((r.input(), r.output()), (3, 4));
        assert_eq!(r.d_pkts(), 501);
        assert_eq!(r.d_octets(), 30_972_968);
        assert_eq!((r.first(), r.last()), (90_000, 99_999));
        assert_eq!((r.src_port(), r.dst_port()), (50122, 443));
        assert_eq!((r.tcp_flags(), r.prot(), r.tos()), (0x1b, 6, 8));
        assert_eq!((r.src_as(), r.dst_as()), (65000, 13113));
        assert_eq!((r.src_mask(), r.dst_mask()), (24, 16));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..PACKET.len() {
            let err = Packet::new_checked(&PACKET[..len]).unwrap_err();
            assert_eq!(err, WireError::Truncated, "length {len}");
        }
    }

    #[test]
    fn rejects_other_versions_and_impossible_counts() {
        let mut bytes = PACKET;
        bytes[1] = 9;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            WireError::BadVersion
        );
        let mut bytes = PACKET;
        bytes[3] = 31;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            WireError::BadLength
        );
    }

    #[test]
    fn zero_records_is_a_valid_empty_packet() {
        let mut bytes = PACKET;
        bytes[3] = 0;
        let packet = Packet::new_checked(&bytes[..HEADER_LEN]).unwrap();
        assert_eq!(packet.records().len(), 0);
    }

    #[test]
    fn v7_and_v1_share_the_record_layout() {
        // v7: v5's packet with 4 more bytes per record, engine and sampling reserved.
        let mut v7 = PACKET[..HEADER_LEN].to_vec();
        v7[1] = 7;
        v7.extend_from_slice(&PACKET[HEADER_LEN..]);
        v7.extend_from_slice(&[0, 0]); // the flags word: the router shortcut is missing
        assert!(Packet::new_checked(&v7[..]).is_err());
        v7.extend_from_slice(&[192, 0, 2, 9]);
        let packet = Packet::new_checked(&v7[..]).unwrap();
        assert_eq!(
            (
                packet.format(),
                packet.flow_sequence(),
                packet.sampling_interval()
            ),
            (Format::V7, 42, 0)
        );
        let record = packet.records().next().unwrap();
        assert_eq!(
            (record.d_pkts(), record.src_port(), record.tcp_flags()),
            (501, 50122, PACKET[HEADER_LEN + 37])
        );
        assert_eq!(
            record.dst_as(),
            u16::from_be_bytes([PACKET[HEADER_LEN + 42], PACKET[HEADER_LEN + 43]])
        );

        // v1: a 16-byte header, then the record with protocol, ToS and flags at 38-40.
        let mut v1 = PACKET[..16].to_vec();
        v1[1] = 1;
        let mut record = PACKET[HEADER_LEN..].to_vec();
        record[38] = 17;
        record[39] = 0x10;
        record[40] = 0x02;
        v1.extend_from_slice(&record);
        let packet = Packet::new_checked(&v1[..]).unwrap();
        assert_eq!(
            (packet.format(), packet.count(), packet.flow_sequence()),
            (Format::V1, 1, 0)
        );
        let r = packet.records().next().unwrap();
        assert_eq!(
            (r.prot(), r.tos(), r.tcp_flags(), r.src_as()),
            (17, 0x10, 0x02, 0)
        );
        assert_eq!(r.src_addr(), Ipv4Addr::new(10, 10, 20, 15));
        assert!(Packet::new_checked(&v1[..v1.len() - 1]).is_err());
        assert!(Packet::new_checked(&v1[..15]).is_err());
    }
}
