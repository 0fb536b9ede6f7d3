//! source: the receive side's settings (`[source]`): socket buffers, batch gathering,
//! workers and the exporters accepted.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The daemon's receive side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `SO_RCVBUF` asked for on each socket; the kernel caps it at `net.core.rmem_max`.
    pub receive_buffer_bytes: usize,
    /// How often (wall clock) templates and sampling state are saved to `state_file`.
    pub state_save_interval_s: u64,
    /// After a receive round that drained its sockets short of a full batch, how long at
    /// most a worker waits for the next batch to gather, by the measured arrival rate
    /// (microseconds; 0: poll again at once). Fewer wake-ups per datagram at moderate
    /// rates, for at most this much latency.
    pub gather_max_us: u64,
    /// Receive workers: threads that each own a socket per listen address (SO_REUSEPORT;
    /// the kernel keeps each exporter on one of them, so its templates stay with one
    /// decoder) and decode what arrives there.
    pub workers: usize,
    /// The exporters accepted (networks; RFC 7011 section 11: a collector should accept
    /// only known exporters). Datagrams from any other address are dropped and counted
    /// (`exflow_source_rejected_datagrams_total`) before decoding. Empty: every sender.
    pub exporters: Vec<IpNet>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            receive_buffer_bytes: 32 << 20,
            state_save_interval_s: 60,
            gather_max_us: 1000,
            workers: 1,
            exporters: Vec::new(),
        }
    }
}
