//! wire: the set (IPFIX, RFC 7011 section 3.3.2) or flowset (NetFlow v9, RFC 3954 section 5)
//! framing shared by both protocols: a 2-byte id, a 2-byte length that counts the 4-byte
//! header, then the body.

use super::{WireError, read_u16};

/// Length of a set header.
pub const HEADER_LEN: usize = 4;

/// One set: its id and its body (the bytes after the header, padding included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Set<'a> {
    pub id: u16,
    pub body: &'a [u8],
}

/// Iterator over the sets of a message body. Yields `Err` once for a set whose length is
/// shorter than its header (the zero-length loop of hostile packets) or runs past the end,
/// then stops. Zero bytes after the last set are padding (RFC 7011 section 3.3.1; Palo Alto
/// and others zero-fill datagrams to a fixed size) and end the iteration without an error;
/// a zero-length set followed by anything non-zero is still an error.
#[derive(Debug, Clone)]
pub struct Sets<'a> {
    rest: &'a [u8],
}

impl<'a> Sets<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Sets { rest: body }
    }
}

impl<'a> Iterator for Sets<'a> {
    type Item = Result<Set<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Stops at the first non-zero byte, which a real set's header has within four bytes.
        if self.rest.iter().all(|&b| b == 0) {
            self.rest = &[];
            return None;
        }
        let (Some(id), Some(length)) = (read_u16(self.rest, 0), read_u16(self.rest, 2)) else {
            self.rest = &[];
            return Some(Err(WireError::Truncated));
        };
        let length = usize::from(length);
        if length < HEADER_LEN {
            self.rest = &[];
            return Some(Err(WireError::BadLength));
        }
        if length > self.rest.len() {
            self.rest = &[];
            return Some(Err(WireError::Truncated));
        }
        let body = &self.rest[HEADER_LEN..length];
        self.rest = &self.rest[length..];
        Some(Ok(Set { id, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sets_by_their_length() {
        #[rustfmt::skip]
        let body = [
            0x00, 0x02, 0x00, 0x06, 0xaa, 0xbb, // set 2, length 6
            0x01, 0x00, 0x00, 0x04,             // set 256, empty body
        ];
        let sets: Vec<_> = Sets::new(&body).collect();
        assert_eq!(
            sets,
            vec![
                Ok(Set {
                    id: 2,
                    body: &[0xaa, 0xbb]
                }),
                Ok(Set { id: 256, body: &[] })
            ]
        );
    }

    #[test]
    fn trailing_zeros_are_padding() {
        #[rustfmt::skip]
        let body = [
            0x01, 0x00, 0x00, 0x05, 0xaa, // set 256, length 5
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // padding
        ];
        let sets: Vec<_> = Sets::new(&body).collect();
        assert_eq!(
            sets,
            vec![Ok(Set {
                id: 256,
                body: &[0xaa]
            })]
        );
        // Fewer than four zero bytes too.
        assert_eq!(Sets::new(&body[..7]).count(), 1);
        // Zeros then a non-zero byte are not padding.
        let mut hostile = body;
        hostile[11] = 1;
        let sets: Vec<_> = Sets::new(&hostile).collect();
        assert_eq!(sets.last(), Some(&Err(WireError::BadLength)));
    }

    #[test]
    fn zero_length_set_is_an_error_not_a_loop() {
        let body = [0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00];
        let sets: Vec<_> = Sets::new(&body).collect();
        assert_eq!(sets, vec![Err(WireError::BadLength)]);
    }

    #[test]
    fn overlong_and_partial_headers_are_truncations() {
        let sets: Vec<_> = Sets::new(&[0x01, 0x00, 0x00, 0x09, 0, 0]).collect();
        assert_eq!(sets, vec![Err(WireError::Truncated)]);
        let sets: Vec<_> = Sets::new(&[0x01, 0x00, 0x00]).collect();
        assert_eq!(sets, vec![Err(WireError::Truncated)]);
    }
}
