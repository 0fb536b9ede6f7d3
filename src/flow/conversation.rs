//! flow::conversation: what the table keeps per conversation, the oriented 5-tuple that
//! names it and the counters, times and opening of the records stitched into it.

use std::net::IpAddr;

use super::{Initiator, Opening, Oriented};
use crate::enrich::Destination;

/// A conversation's identity: the oriented 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey {
    pub inside: IpAddr,
    pub outside: IpAddr,
    pub inside_port: u16,
    pub outside_port: u16,
    pub proto: u8,
}

/// One stitched conversation: every record of the same 5-tuple (both directions) that
/// followed the previous one within the idle timeout.
/// 64 bytes: with its 40-byte key, one table entry is 104 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversation {
    pub first_ms: u64,
    pub last_ms: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    /// Records stitched in (saturating: a conversation of 65,535 records is a 45-day one
    /// at a one-minute active timeout). 16 bits leave room for `opening` in 64 bytes.
    pub flows: u16,
    /// Who opened the conversation, and from what evidence.
    pub opening: Opening,
    pub destination: Destination,
}

impl Conversation {
    /// A conversation begun by `record`.
    pub fn first(record: &Oriented, destination: Destination) -> Conversation {
        Conversation {
            first_ms: record.start_ms,
            last_ms: record.end_ms.max(record.start_ms),
            bytes_out: record.bytes_out,
            bytes_in: record.bytes_in,
            packets_out: record.packets_out,
            packets_in: record.packets_in,
            flows: 1,
            opening: Opening::first(record),
            destination,
        }
    }

    pub fn duration_ms(&self) -> u64 {
        self.last_ms.saturating_sub(self.first_ms)
    }

    /// Who opened the conversation.
    pub fn initiator(&self) -> Initiator {
        self.opening.initiator()
    }
}
