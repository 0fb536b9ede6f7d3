//! sink kafka config: the `[sink.kafka]` section, owned by the Kafka sink and composed into
//! the configuration tree by `config.rs` (which validates it with the rest).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port,host:port`.
    pub brokers: String,
    /// Versioned: a breaking change of the alert schema gets a new topic.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Passed to librdkafka as they are (and validated by it), e.g. `security.protocol`.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
    /// The write-ahead spool of alerts not yet acknowledged by the broker.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// The spool's cap; alerts beyond it are dropped and counted.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Alerts queued in memory between the pipeline and the sink thread.
    #[serde(default = "default_queue_alerts")]
    pub queue_alerts: usize,
    /// How long librdkafka retries a message before reporting the broker down.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// On shutdown, how long to wait for outstanding deliveries (the rest stays spooled).
    #[serde(default = "default_flush_timeout_ms")]
    pub flush_timeout_ms: u64,
    /// Also publish every decoded flow record to this topic (off when unset).
    #[serde(default)]
    pub flows_topic: Option<String>,
    /// `json` (GoFlow2's field names) or `protobuf` (GoFlow2's flow.proto field numbers).
    #[serde(default)]
    pub flows_format: FlowsFormat,
    /// Also publish every alert as an OCSF Detection Finding (`sink::ocsf`) to this topic,
    /// through the same spool (off when unset).
    #[serde(default)]
    pub ocsf_topic: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowsFormat {
    #[default]
    Json,
    Protobuf,
}

impl KafkaConfig {
    pub fn new(brokers: &str) -> Self {
        KafkaConfig {
            brokers: brokers.to_string(),
            topic: default_topic(),
            librdkafka_options: BTreeMap::new(),
            spool_dir: default_spool_dir(),
            spool_max_bytes: default_spool_max_bytes(),
            queue_alerts: default_queue_alerts(),
            message_timeout_ms: default_message_timeout_ms(),
            flush_timeout_ms: default_flush_timeout_ms(),
            flows_topic: None,
            flows_format: FlowsFormat::Json,
            ocsf_topic: None,
        }
    }
}

fn default_topic() -> String {
    "exflow.alerts.v1".to_string()
}

fn default_spool_dir() -> PathBuf {
    PathBuf::from("exflow-spool")
}

fn default_spool_max_bytes() -> u64 {
    1 << 30
}

fn default_queue_alerts() -> usize {
    100_000
}

fn default_message_timeout_ms() -> u64 {
    10_000
}

fn default_flush_timeout_ms() -> u64 {
    5_000
}
