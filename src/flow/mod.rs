//! flow: records oriented inside -> outside and stitched into conversations in an in-memory
//! table bounded by a maximum size, expired on event time (the exporters' clocks).
//!
//! One `FlowTable` is one shard, owned by one thread: the pipeline shards by the inside
//! address, so a host's conversations and its detectors' state live together and no lock
//! is taken per record.
//!
//! A table is three parts: the entries in a slab addressed by `u32` handles (`slab`), an
//! index of handles by key, and a timer wheel of handles by deadline (`wheel`) from which
//! expiry and eviction take the stalest conversations.
//!
//! Records go through `orientation` (inside -> outside), are stitched into a
//! `conversation` and kept in the `table`.

pub mod clock;
pub mod community_id;
mod config;
mod conversation;
mod initiator;
mod orientation;
mod slab;
mod table;
mod wheel;

pub use self::config::{BYTES_PER_CONVERSATION, FlowConfig};
pub use self::conversation::{Conversation, ConversationKey};
pub use self::initiator::{Evidence, Initiator, Opening};
pub use self::orientation::{Orientation, Oriented, orient};
pub use self::table::{ConversationId, FlowCounters, FlowTable, KeyHash, Lookup, Update};
