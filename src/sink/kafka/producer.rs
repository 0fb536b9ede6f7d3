//! sink kafka producer: the librdkafka client setup shared by the alert stream and the flows
//! stream (brokers, compression, the user's `librdkafka_options` last), the alert producer
//! with its delivery reports, and the metadata health check.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use tracing::warn;

use super::KafkaConfig;
use crate::sink::spool::SpoolSeq;

/// exflow's settings for one stream (`client_id`, then `defaults`), then the user's
/// `librdkafka_options`, which may override any of them.
pub fn client_config(
    config: &KafkaConfig,
    client_id: &str,
    defaults: &[(&str, String)],
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("compression.type", "lz4")
        .set("client.id", client_id);
    for (key, value) in defaults {
        client.set(*key, value);
    }
    for (key, value) in &config.librdkafka_options {
        client.set(key, value);
    }
    client
}

/// Builds the alert producer: idempotent, lz4, `message_timeout_ms`, then the user's
/// `librdkafka_options`, validated by librdkafka itself (an unknown or bad property is an
/// error that names it).
pub fn producer(config: &KafkaConfig) -> anyhow::Result<BaseProducer<DeliveryContext>> {
    let defaults = [
        ("enable.idempotence", "true".to_string()),
        ("linger.ms", "5".to_string()),
        ("message.timeout.ms", config.message_timeout_ms.to_string()),
    ];
    client_config(config, "exflow", &defaults)
        .create_with_context(DeliveryContext::default())
        .with_context(|| "invalid sink.kafka settings (librdkafka_options or brokers)".to_string())
}

/// Fetches the topic's metadata: the broker answers and knows the topic (or creates it).
pub fn health_check<C: ProducerContext>(
    producer: &BaseProducer<C>,
    topic: &str,
    timeout: Duration,
) -> bool {
    match producer.client().fetch_metadata(Some(topic), timeout) {
        Ok(metadata) => {
            let found = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none());
            if !found {
                warn!(
                    topic,
                    "kafka answers but topic '{topic}' is not available yet; alerts wait in the spool"
                );
            }
            found
        }
        Err(error) => {
            warn!("kafka broker unreachable ({error}); collecting on, alerts wait in the spool");
            false
        }
    }
}

/// Receives delivery reports during `poll`, on the sink thread.
#[derive(Default)]
pub struct DeliveryContext {
    pub(super) reports: Mutex<Vec<(SpoolSeq, bool)>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<SpoolSeq>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((*seq, result.is_ok()));
    }
}
