//! scaleout config: the `[scaleout]` section, what `exflow collect` and `exflow detect` add
//! to the shared configuration (the brokers and topics stay in `[sink.kafka]`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleoutConfig {
    /// This collector's name in its watermarks; unique among the collectors of a flows
    /// topic and stable across restarts. Default: the host name.
    pub collector_id: Option<String>,
    /// How often a collector publishes its watermark into every partition (besides every
    /// tick of its clock), wall clock.
    pub watermark_interval_ms: u64,
    /// A collector whose last watermark in a partition is this much older (by the
    /// collectors' own send times) than the newest stops holding the partition's clock.
    pub collector_timeout_s: u64,
    /// Most collectors a partition's clock follows; watermarks of more are counted and
    /// ignored.
    pub max_collectors: usize,
    /// The detectors' consumer group.
    pub group: String,
    /// This detector's static membership (`group.instance.id`): a restart within the
    /// session timeout gets its partitions back without a rebalance. Unique per detector
    /// and stable across restarts. Default: the host name.
    pub instance_id: Option<String>,
    /// Join with `group.instance.id` = `instance_id` (static membership). Turn it off for
    /// brokers that do not support it: tansu 0.6.0 rebalances such a group at every
    /// session timeout and never settles.
    pub static_membership: bool,
    /// A detector silent this long loses its partitions to the others.
    pub session_timeout_ms: u64,
    /// Where detectors write their partitions' checkpoints, keyed by partition.
    pub state_topic: String,
    /// How often a detector commits the offsets whose alerts the broker acknowledged and
    /// writes a checkpoint per partition.
    pub checkpoint_interval_ms: u64,
    /// How often a partition's checkpoint carries its state (the rules' long memory,
    /// suppression, risk): at the first checkpoint after this long at which every alert
    /// of the partition is acknowledged.
    pub state_interval_ms: u64,
    /// Event time a new owner replays before a checkpoint's state, to rebuild what the
    /// state does not hold (the conversations, the rules' windows): the longest window
    /// the rules keep (a day) by default.
    pub rewind_s: u64,
    /// Largest message of a partition's state on the state topic, its header included: a
    /// state is split into as many as it needs, well under the brokers' default
    /// `message.max.bytes` (1 MB) by default.
    pub max_state_message_bytes: usize,
}

impl Default for ScaleoutConfig {
    fn default() -> Self {
        ScaleoutConfig {
            collector_id: None,
            watermark_interval_ms: 1000,
            collector_timeout_s: 60,
            max_collectors: 256,
            group: "exflow-detect".to_string(),
            instance_id: None,
            static_membership: true,
            session_timeout_ms: 10_000,
            state_topic: "exflow.state.v1".to_string(),
            checkpoint_interval_ms: 5000,
            state_interval_ms: 60_000,
            rewind_s: 86_400,
            max_state_message_bytes: 256 * 1024,
        }
    }
}

/// The default flows topic of `collect` and `detect` when `sink.kafka.flows_topic` is unset.
pub const DEFAULT_FLOWS_TOPIC: &str = "exflow.flows.v1";

impl ScaleoutConfig {
    /// Problems, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let bad_id = |id: &Option<String>| {
            id.as_ref().is_some_and(|id| {
                id.is_empty()
                    || id.len() > super::encoding::MAX_COLLECTOR_ID_BYTES
                    || id.chars().any(char::is_control)
            })
        };
        if bad_id(&self.collector_id) {
            problems.push("scaleout.collector_id: 1 to 255 bytes, no control characters".into());
        }
        if bad_id(&self.instance_id) {
            problems.push("scaleout.instance_id: 1 to 255 bytes, no control characters".into());
        }
        if self.group.is_empty() {
            problems.push("scaleout.group: must not be empty".into());
        }
        if self.watermark_interval_ms == 0
            || self.checkpoint_interval_ms == 0
            || self.state_interval_ms == 0
            || self.collector_timeout_s == 0
            || self.max_collectors == 0
        {
            problems.push(
                "scaleout.watermark_interval_ms, scaleout.checkpoint_interval_ms, \
                 scaleout.state_interval_ms, scaleout.collector_timeout_s, \
                 scaleout.max_collectors: must be at least 1"
                    .into(),
            );
        }
        if !(2048..=16 << 20).contains(&self.max_state_message_bytes) {
            problems.push("scaleout.max_state_message_bytes: 2048 to 16777216".into());
        }
        if !(1000..=3_600_000).contains(&self.session_timeout_ms) {
            problems.push("scaleout.session_timeout_ms: 1000 to 3600000".into());
        }
        problems
    }

    pub fn collector_id(&self) -> String {
        self.collector_id.clone().unwrap_or_else(host_name)
    }

    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(host_name)
    }
}

/// The host name (gethostname(2)), or "exflow" when it has none.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and the last byte stays 0.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len() - 1) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(0);
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "exflow".to_string(),
    }
}
