//! flow: the conversation table's settings (`[flow]`): its bounds, timeouts, lateness,
//! shards and queues.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Conversations tracked at most; beyond it the longest-idle are evicted (counted).
    pub max_conversations: usize,
    /// Memory the conversation tables may take, at the measured 120 bytes per tracked
    /// conversation (see README): the stricter of this and `max_conversations` applies.
    pub max_memory_bytes: u64,
    /// Records of the same 5-tuple that start within this long (event time) after the
    /// conversation's last activity are stitched into it.
    pub idle_timeout_s: u64,
    /// How late an exporter may deliver a record: one that ended up to this long before
    /// its exporter's clock (the latest flow end that exporter sent) still feeds its
    /// conversation and the rules' windows; later ones are counted and dropped
    /// (`exflow_flow_late_dropped_records_total`). Flow caches export long flows at their
    /// active timeout and short ones when the cache flushes: an hour is normal. A
    /// conversation ends when idle for `idle_timeout_s + max_lateness_s`, and the rules
    /// keep their windows that much longer. (Was `late_records_s`, still read.)
    #[serde(alias = "late_records_s")]
    pub max_lateness_s: u64,
    /// A record dated more than this after its datagram was received (wall clock live,
    /// capture time in a replay) is not believed: counted and dropped
    /// (`exflow_flow_clock_skewed_records_total`).
    pub max_clock_skew_s: u64,
    /// How often (event time) expiry and windowed rules run.
    pub tick_s: u64,
    /// Flow-table shard threads, each with its slice of the table (by inside host) and its
    /// rules' state, fed by the receive workers through bounded queues. The default, one,
    /// keeps the receive thread free to drain its socket while the shard runs the table and
    /// the rules. 0: the one receive worker runs them itself, with no hand-over (for a
    /// one-core machine; needs `source.workers = 1`).
    pub shards: usize,
    /// Record batches that may wait for each shard; a receive worker that finds the queue
    /// full waits for room (see `queue_wait_ms`), then drops the batch and counts it
    /// (`exflow_flow_queue_dropped_records_total`).
    pub queue_batches: usize,
    /// How long in all a receive worker may wait for room in full shard queues while its
    /// socket buffer holds what arrives, earned back at a tenth of the time passing: a
    /// burst the shards catch up with (a cold start, exporters flushing their caches) is
    /// not dropped, and a shard that stays behind costs the worker at most a tenth of its
    /// time. 0: never wait.
    pub queue_wait_ms: u64,
}

/// Bytes one tracked conversation takes at most: in the table, measured from 7 to 10
/// million (`cargo bench --bench flow_memory`), a 104-byte slab entry, its 4-byte handle in
/// the index at the index's load factor and its 4-byte link in the timer wheel (120); beside
/// it, 4 bytes by its id for the rules' held records ([`crate::detect::fold`]).
pub const BYTES_PER_CONVERSATION: u64 = 124;

impl FlowConfig {
    /// The conversations the tables may hold: `max_conversations`, or fewer when
    /// `max_memory_bytes` says so.
    pub fn conversation_limit(&self) -> usize {
        let by_memory =
            usize::try_from(self.max_memory_bytes / BYTES_PER_CONVERSATION).unwrap_or(usize::MAX);
        self.max_conversations.min(by_memory).max(1)
    }
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_conversations: 2_000_000,
            max_memory_bytes: 1 << 30,
            idle_timeout_s: 1800,
            max_lateness_s: 3600,
            max_clock_skew_s: 600,
            tick_s: 60,
            shards: 1,
            queue_batches: 256,
            queue_wait_ms: 1000,
        }
    }
}
