//! wire: NetFlow v9 export packet (RFC 3954 section 5): a 20-byte header, then flowsets.
//!
//! The header's `count` is the number of records *including* template records, and
//! exporters disagree on it (softflowd leaves templates out), so readers should walk the
//! flowsets to the end of the datagram rather than trust it.

use super::set::Sets;
use super::{WireError, read_u16, read_u32};

mod field {
    pub const VERSION: usize = 0;
    pub const COUNT: usize = 2;
    pub const SYS_UPTIME: usize = 4;
    pub const UNIX_SECS: usize = 8;
    pub const SEQUENCE: usize = 12;
    pub const SOURCE_ID: usize = 16;
    pub const HEADER_LEN: usize = 20;
}

pub use field::HEADER_LEN;

/// Flowset id of template flowsets.
pub const TEMPLATE_SET_ID: u16 = 0;
/// Flowset id of options template flowsets.
pub const OPTIONS_TEMPLATE_SET_ID: u16 = 1;
/// The lowest flowset id that is a data flowset (its template id).
pub const MIN_DATA_SET_ID: u16 = 256;

/// A checked view over a NetFlow v9 export packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version and that the header is whole. Flowsets are checked as they are
    /// iterated.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let buf = buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(buf, field::VERSION) != Some(9) {
            return Err(WireError::BadVersion);
        }
        Ok(Packet { buffer })
    }

    fn u32_at(&self, at: usize) -> u32 {
        read_u32(self.buffer.as_ref(), at).unwrap_or(0)
    }

    /// Records in the packet as the exporter counted them (see the module doc).
    pub fn count(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::COUNT).unwrap_or(0)
    }

    /// Milliseconds since the exporter booted, at export time.
    pub fn sys_uptime(&self) -> u32 {
        self.u32_at(field::SYS_UPTIME)
    }

    pub fn unix_secs(&self) -> u32 {
        self.u32_at(field::UNIX_SECS)
    }

    /// Count of export packets sent by this source id before this one.
    pub fn sequence(&self) -> u32 {
        self.u32_at(field::SEQUENCE)
    }

    pub fn source_id(&self) -> u32 {
        self.u32_at(field::SOURCE_ID)
    }

    /// The flowsets, to the end of the datagram.
    pub fn flowsets(&self) -> Sets<'_> {
        Sets::new(&self.buffer.as_ref()[HEADER_LEN..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::set::Set;

    #[rustfmt::skip]
    static PACKET: [u8; 32] = [
        0x00, 0x09,             // version 9
        0x00, 0x02,             // count 2
        0x00, 0x07, 0x86, 0x52, // sys_uptime 493138
        0x65, 0xf0, 0x0d, 0x6e, // unix_secs 1710230894
        0x00, 0x00, 0x00, 0x01, // sequence 1
        0x00, 0x00, 0x00, 0x05, // source id 5
        0x00, 0x00, 0x00, 0x08, // flowset 0 (templates), length 8
        0x01, 0x00, 0x00, 0x00, // template 256 with no fields
        0x01, 0x00, 0x00, 0x04, // flowset 256, empty
    ];

    #[test]
    fn reads_header_and_flowsets() {
        let packet = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.count(), 2);
        assert_eq!(packet.sys_uptime(), 493_138);
        assert_eq!(packet.unix_secs(), 1_710_230_894);
        assert_eq!(packet.sequence(), 1);
        assert_eq!(packet.source_id(), 5);
        let sets: Vec<_> = packet.flowsets().collect();
        assert_eq!(
            sets,
            vec![
                Ok(Set {
                    id: 0,
                    body: &[0x01, 0x00, 0x00, 0x00]
                }),
                Ok(Set { id: 256, body: &[] })
            ]
        );
    }

    #[test]
    fn short_header_and_wrong_version() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&PACKET[..len]).unwrap_err(),
                WireError::Truncated
            );
        }
        let mut bytes = PACKET;
        bytes[1] = 10;
        assert_eq!(
            Packet::new_checked(&bytes[..]).unwrap_err(),
            WireError::BadVersion
        );
    }
}
