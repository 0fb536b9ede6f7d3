//! wire: IPFIX message (RFC 7011 section 3.1): a 16-byte header whose `length` covers the
//! whole message, then sets.

use super::set::Sets;
use super::{WireError, read_u16, read_u32};

mod field {
    pub const VERSION: usize = 0;
    pub const LENGTH: usize = 2;
    pub const EXPORT_TIME: usize = 4;
    pub const SEQUENCE: usize = 8;
    pub const OBSERVATION_DOMAIN_ID: usize = 12;
    pub const HEADER_LEN: usize = 16;
}

pub use field::HEADER_LEN;

/// Set id of template sets.
pub const TEMPLATE_SET_ID: u16 = 2;
/// Set id of options template sets.
pub const OPTIONS_TEMPLATE_SET_ID: u16 = 3;
/// The lowest set id that is a data set (its template id).
pub const MIN_DATA_SET_ID: u16 = 256;

/// A checked view over one IPFIX message.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Checks the version and that `length` is at least a header and at most the buffer.
    /// Bytes past `length` are ignored.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let buf = buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if read_u16(buf, field::VERSION) != Some(10) {
            return Err(WireError::BadVersion);
        }
        let message = Message { buffer };
        let length = usize::from(message.length());
        if length < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if length > message.buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(message)
    }

    fn u32_at(&self, at: usize) -> u32 {
        read_u32(self.buffer.as_ref(), at).unwrap_or(0)
    }

    /// Total message length in bytes, header included.
    pub fn length(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH).unwrap_or(0)
    }

    /// Seconds since the UNIX epoch when the message left the exporter.
    pub fn export_time(&self) -> u32 {
        self.u32_at(field::EXPORT_TIME)
    }

    /// Count of data records sent before this message in this observation domain.
    pub fn sequence(&self) -> u32 {
        self.u32_at(field::SEQUENCE)
    }

    pub fn observation_domain_id(&self) -> u32 {
        self.u32_at(field::OBSERVATION_DOMAIN_ID)
    }

    /// The sets, to the end of `length`.
    pub fn sets(&self) -> Sets<'_> {
        Sets::new(&self.buffer.as_ref()[HEADER_LEN..usize::from(self.length())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::set::Set;

    #[rustfmt::skip]
    static MESSAGE: [u8; 26] = [
        0x00, 0x0a,             // version 10
        0x00, 0x18,             // length 24
        0x65, 0xf0, 0x0d, 0x6e, // export time 1710230894
        0x00, 0x00, 0x00, 0x04, // sequence 4
        0x00, 0x00, 0x00, 0x07, // observation domain 7
        0x01, 0x00, 0x00, 0x08, // set 256, length 8
        0xde, 0xad, 0xbe, 0xef, // one 4-byte record
        0xff, 0xff,             // past `length`: ignored
    ];

    #[test]
    fn reads_header_and_sets_up_to_length() {
        let message = Message::new_checked(&MESSAGE[..]).unwrap();
        assert_eq!(message.length(), 24);
        assert_eq!(message.export_time(), 1_710_230_894);
        assert_eq!(message.sequence(), 4);
        assert_eq!(message.observation_domain_id(), 7);
        let sets: Vec<_> = message.sets().collect();
        assert_eq!(
            sets,
            vec![Ok(Set {
                id: 256,
                body: &[0xde, 0xad, 0xbe, 0xef]
            })]
        );
    }

    #[test]
    fn truncations_and_bad_lengths() {
        for len in 0..24 {
            assert_eq!(
                Message::new_checked(&MESSAGE[..len]).unwrap_err(),
                WireError::Truncated,
                "length {len}"
            );
        }
        let mut bytes = MESSAGE;
        bytes[3] = 15;
        assert_eq!(
            Message::new_checked(&bytes[..]).unwrap_err(),
            WireError::BadLength
        );
        let mut bytes = MESSAGE;
        bytes[1] = 9;
        assert_eq!(
            Message::new_checked(&bytes[..]).unwrap_err(),
            WireError::BadVersion
        );
    }
}
