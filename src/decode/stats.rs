//! decode: what the decoder counted, globally and per exporter. Plain integers bumped once per
//! datagram or record on the decoding thread; the summary and the metrics endpoint read them.

use std::fmt;

/// Why the decoder dropped a datagram or part of one. `Copy`, with a static code that is
/// also its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// Shorter than a header, a set or a record says it is.
    Truncated,
    /// Not NetFlow v5, v9, IPFIX or sFlow v5.
    UnknownVersion,
    /// A length that cannot be (a set shorter than its header, a message length below 16).
    BadLength,
    /// A template record that cannot be read or compiled.
    BadTemplate,
    /// A template with more fields than `max_fields_per_template`.
    TooManyFields,
    /// A new template refused because the exporter holds `max_templates_per_exporter`.
    TemplateLimit,
    /// An exporter forgotten to make room for a new one (`max_exporters`).
    ExporterEvicted,
    /// A data set held for its template was dropped (`max_pending_*`), its records lost.
    PendingDropped,
    /// A set id reserved by the protocol (v9: 2-255, IPFIX: 0-1 and 4-255).
    ReservedSet,
}

impl DecodeError {
    pub const ALL: [DecodeError; 9] = [
        DecodeError::Truncated,
        DecodeError::UnknownVersion,
        DecodeError::BadLength,
        DecodeError::BadTemplate,
        DecodeError::TooManyFields,
        DecodeError::TemplateLimit,
        DecodeError::ExporterEvicted,
        DecodeError::PendingDropped,
        DecodeError::ReservedSet,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::UnknownVersion => "unknown_version",
            DecodeError::BadLength => "bad_length",
            DecodeError::BadTemplate => "bad_template",
            DecodeError::TooManyFields => "too_many_fields",
            DecodeError::TemplateLimit => "template_limit",
            DecodeError::ExporterEvicted => "exporter_evicted",
            DecodeError::PendingDropped => "pending_dropped",
            DecodeError::ReservedSet => "reserved_set",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl From<crate::wire::WireError> for DecodeError {
    fn from(error: crate::wire::WireError) -> Self {
        use crate::wire::WireError;
        match error {
            WireError::Truncated => DecodeError::Truncated,
            WireError::BadVersion => DecodeError::UnknownVersion,
            WireError::BadLength => DecodeError::BadLength,
            WireError::BadTemplate => DecodeError::BadTemplate,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for DecodeError {}

/// Counts by [`DecodeError`] kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; DecodeError::ALL.len()]);

impl ErrorCounts {
    pub fn add(&mut self, error: DecodeError) {
        self.0[error.index()] += 1;
    }

    pub fn get(&self, error: DecodeError) -> u64 {
        self.0[error.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counts, in [`DecodeError::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DecodeError, u64)> + '_ {
        DecodeError::ALL
            .iter()
            .map(|&e| (e, self.get(e)))
            .filter(|&(_, n)| n > 0)
    }
}

/// Counters kept per exporter and, summed, for the whole decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeCounters {
    pub datagrams: u64,
    /// Flow data records decoded.
    pub records: u64,
    /// Options data records read (sampling, clock).
    pub options_records: u64,
    /// Template and options template records accepted (re-sent ones included).
    pub templates: u64,
    pub template_withdrawals: u64,
    /// Data sets that arrived before their template and were held.
    pub template_misses: u64,
    /// Records decoded late, from held data sets, when their template arrived.
    pub pending_records: u64,
    /// Records the exporter's sequence numbers say never arrived (v5, IPFIX).
    pub lost_records: u64,
    /// Datagrams the exporter's sequence numbers say never arrived (v9).
    pub lost_datagrams: u64,
    /// Sequence numbers that went backwards (exporter restart, reordering): resynchronised.
    pub sequence_resets: u64,
    /// Records with sysUpTime times but no known boot time, timed by the export header.
    pub times_from_header: u64,
    /// sFlow counter samples (their generic interface counters are kept per agent).
    pub counter_samples: u64,
    /// sFlow interfaces whose counters were not kept: the agent had
    /// `decoder.max_sflow_interfaces_per_agent` already.
    pub interfaces_refused: u64,
    /// sFlow discarded-packet samples (the drops extension), counted and skipped.
    pub discard_samples: u64,
    /// sFlow samples that made no flow record: unknown formats, and flow samples without an
    /// IP packet header or sampled IPv4/IPv6 record.
    pub skipped_samples: u64,
    /// Records that continued a flow the exporter had reported (a firewall's update or
    /// teardown of a known connection, a running total after the first): counted once.
    pub continued_records: u64,
    /// Tracked flows forgotten to stay within `decoder.max_tracked_connections`.
    pub connections_evicted: u64,
    /// Records whose addresses and ports came from a packet section (IE 313/315).
    pub packet_section_records: u64,
    /// Interfaces whose name or description (IE 82/83) options data announced.
    pub interface_names: u64,
    /// Interface names not kept: the decoder held `decoder.max_interface_names` already.
    pub interface_names_refused: u64,
    pub errors: ErrorCounts,
}

impl DecodeCounters {
    pub fn merge(&mut self, other: &DecodeCounters) {
        self.datagrams += other.datagrams;
        self.records += other.records;
        self.options_records += other.options_records;
        self.templates += other.templates;
        self.template_withdrawals += other.template_withdrawals;
        self.template_misses += other.template_misses;
        self.pending_records += other.pending_records;
        self.lost_records += other.lost_records;
        self.lost_datagrams += other.lost_datagrams;
        self.sequence_resets += other.sequence_resets;
        self.times_from_header += other.times_from_header;
        self.counter_samples += other.counter_samples;
        self.interfaces_refused += other.interfaces_refused;
        self.discard_samples += other.discard_samples;
        self.skipped_samples += other.skipped_samples;
        self.continued_records += other.continued_records;
        self.connections_evicted += other.connections_evicted;
        self.packet_section_records += other.packet_section_records;
        self.interface_names += other.interface_names;
        self.interface_names_refused += other.interface_names_refused;
        for (error, count) in other.errors.iter() {
            self.errors.0[error.index()] += count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_unique_and_indexed_in_order() {
        for (i, e) in DecodeError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        let mut codes: Vec<_> = DecodeError::ALL.iter().map(|e| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), DecodeError::ALL.len());
    }

    #[test]
    fn counters_merge() {
        let mut a = DecodeCounters {
            records: 2,
            ..Default::default()
        };
        a.errors.add(DecodeError::Truncated);
        let mut b = DecodeCounters {
            records: 3,
            lost_records: 1,
            ..Default::default()
        };
        b.errors.add(DecodeError::Truncated);
        b.errors.add(DecodeError::BadTemplate);
        a.merge(&b);
        assert_eq!((a.records, a.lost_records), (5, 1));
        assert_eq!(a.errors.get(DecodeError::Truncated), 2);
        assert_eq!(a.errors.total(), 3);
    }
}
