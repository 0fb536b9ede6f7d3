//! wire: stateless, zero-copy views over NetFlow v5, NetFlow v9, IPFIX and sFlow v5 datagrams
//! (and the sampled packet headers sFlow carries).
//!
//! The contract, as in smoltcp's `wire`: a view's `new_checked` validates every length it
//! depends on (including lengths inside the packet) once; after that no accessor panics.
//! Iterators over sub-records (sets, flowsets, template records) yield `Result`, stop for
//! good after the first error and always consume at least four bytes per step, so a hostile
//! datagram can neither loop nor make us read out of bounds. Nothing here allocates.
//!
//! The views know nothing of templates: compiling templates and decoding data records is
//! the stateful `decode` stage's job.

/// The views' emit side, for the load generator, the benchmarks and the tests (the
/// `loadgen` feature): exflow itself never exports.
#[cfg(any(test, feature = "loadgen"))]
pub mod emit;
pub mod ie;
pub mod ipfix;
pub mod netflow_v5;
pub mod netflow_v9;
pub mod sampled;
pub mod set;
pub mod sflow;
pub mod template;

use std::fmt;

/// Which protocol a datagram (and each record decoded from it) arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FlowKind {
    #[default]
    NetflowV5,
    NetflowV1,
    NetflowV7,
    NetflowV9,
    Ipfix,
    Sflow5,
}

impl FlowKind {
    /// GoFlow2's `type` value.
    pub const fn name(self) -> &'static str {
        match self {
            FlowKind::NetflowV5 => "NETFLOW_V5",
            // GoFlow2 has no v1 or v7 type; named in its style.
            FlowKind::NetflowV1 => "NETFLOW_V1",
            FlowKind::NetflowV7 => "NETFLOW_V7",
            FlowKind::NetflowV9 => "NETFLOW_V9",
            FlowKind::Ipfix => "IPFIX",
            FlowKind::Sflow5 => "SFLOW_5",
        }
    }
}

/// Why a datagram, or part of one, could not be read. Small and `Copy`: it is counted on the
/// hot path, and its [`code`](WireError::code) doubles as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer ends before a header or a length field says it should.
    Truncated,
    /// The version field is not the one this view reads.
    BadVersion,
    /// A header or set length is impossible (smaller than its own header, or past the end).
    BadLength,
    /// A template record declares no usable layout (zero fields where not allowed, an
    /// options scope larger than the record, a zero-length fixed record).
    BadTemplate,
}

impl WireError {
    /// Stable snake_case name, used in summaries and as a metric label.
    pub const fn code(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadVersion => "bad_version",
            WireError::BadLength => "bad_length",
            WireError::BadTemplate => "bad_template",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for WireError {}

/// Which export protocol a datagram speaks, from its first two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// NetFlow v1, v5 and v7: fixed records (`netflow_v5`).
    NetflowV1,
    NetflowV5,
    NetflowV7,
    NetflowV9,
    Ipfix,
    /// sFlow v5: its version is a 32-bit word, so the first two bytes are zero.
    Sflow5,
    Unknown(u16),
}

impl Version {
    /// Reads the version field every NetFlow/IPFIX header starts with (sFlow's 32-bit one
    /// when the first two bytes are zero); `None` for a datagram shorter than two bytes.
    pub fn of(datagram: &[u8]) -> Option<Version> {
        let raw = read_u16(datagram, 0)?;
        Some(match raw {
            1 => Version::NetflowV1,
            5 => Version::NetflowV5,
            7 => Version::NetflowV7,
            9 => Version::NetflowV9,
            10 => Version::Ipfix,
            0 if read_u32(datagram, 0) == Some(sflow::VERSION) => Version::Sflow5,
            other => Version::Unknown(other),
        })
    }
}

/// Big-endian `u16` at `at`, or `None` past the end.
#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Big-endian `u32` at `at`, or `None` past the end.
#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Big-endian unsigned integer of 0 to 8 bytes (IPFIX reduced-size encoding, RFC 7011
/// section 6.2). Longer slices keep their last eight bytes, so no input can panic.
#[inline]
pub fn read_uint(bytes: &[u8]) -> u64 {
    // The common widths as single loads; the rest byte by byte.
    match *bytes {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_be_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
        _ => {
            let tail = &bytes[bytes.len().saturating_sub(8)..];
            tail.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_first_two_bytes() {
        assert_eq!(Version::of(&[0, 5, 0xff]), Some(Version::NetflowV5));
        assert_eq!(Version::of(&[0, 9]), Some(Version::NetflowV9));
        assert_eq!(Version::of(&[0, 10]), Some(Version::Ipfix));
        assert_eq!(Version::of(&[1, 0]), Some(Version::Unknown(256)));
        assert_eq!(Version::of(&[0, 0, 0, 5]), Some(Version::Sflow5));
        assert_eq!(Version::of(&[0, 0, 0, 4]), Some(Version::Unknown(0)));
        assert_eq!(Version::of(&[0]), None);
    }

    #[test]
    fn reduced_size_unsigned_integers() {
        assert_eq!(read_uint(&[]), 0);
        assert_eq!(read_uint(&[0x12]), 0x12);
        assert_eq!(read_uint(&[0x01, 0x02, 0x03]), 0x01_0203);
        assert_eq!(read_uint(&[0xff; 8]), u64::MAX);
        assert_eq!(read_uint(&[0xaa, 0, 0, 0, 0, 0, 0, 0, 7]), 7);
    }

    #[test]
    fn reads_stop_at_the_end() {
        assert_eq!(read_u16(&[1, 2], 0), Some(0x0102));
        assert_eq!(read_u16(&[1, 2], 1), None);
        assert_eq!(read_u32(&[0, 0, 1, 0], 0), Some(256));
        assert_eq!(read_u32(&[0, 0, 1], 0), None);
        assert_eq!(read_u32(&[0; 4], usize::MAX), None);
    }
}
