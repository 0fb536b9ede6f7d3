//! sink kafka producer: the librdkafka client setup shared by the alert stream and the flows
//! stream (brokers, compression, the user's `librdkafka_options` last), the alert producer
//! with its delivery reports, and the metadata health check.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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
        // A request to a frozen broker fails within the message timeout, so a stall is seen
        // as a failed delivery (librdkafka's default waits 30 s).
        (
            "request.timeout.ms",
            config.message_timeout_ms.clamp(1000, 30_000).to_string(),
        ),
    ];
    client_config(config, "exflow", &defaults)
        .create_with_context(DeliveryContext::default())
        .with_context(|| "invalid sink.kafka settings (librdkafka_options or brokers)".to_string())
}

/// A consumer that reads back the alert topic's tail (brokers and the user's
/// `librdkafka_options`, for security settings; it never commits offsets).
pub fn tail_consumer(config: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "exflow-tail")
        .set("group.id", "exflow-tail")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The end of each partition as the fetch responses report it (see skip_delivered).
        .set("enable.partition.eof", "true");
    for (key, value) in &config.librdkafka_options {
        client.set(key, value);
    }
    client
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
        .create()
        .context("invalid sink.kafka settings for reading back the alert topic")
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

/// The outcome of one delivery: `Ok`, or librdkafka's error code.
pub type Report = (SpoolSeq, Result<(), RDKafkaErrorCode>);

/// Receives delivery reports and client errors during `poll`, on the sink thread.
#[derive(Default)]
pub struct DeliveryContext {
    /// Reports not yet applied by the worker. A std `Mutex`: held only to push or take.
    pub(super) reports: Mutex<Vec<Report>>,
    /// librdkafka reported a fatal error (e.g. the idempotent producer was fenced): this
    /// producer will deliver nothing more and must be replaced.
    pub(super) fatal: AtomicBool,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.fatal.store(true, Ordering::Relaxed);
        }
        warn!("kafka client error: {error}: {reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<SpoolSeq>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
        };
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((*seq, outcome));
    }
}

/// What a failed delivery means for the alert and the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The broker will never take this message (too large, invalid topic or record): move it
    /// aside so it does not hold back the alerts behind it.
    Permanent,
    /// The producer itself is unusable (fenced, its idempotence state lost or inconsistent):
    /// replace it and re-send what is unacknowledged.
    Fatal,
    /// The broker is away or busy (timeouts, transport errors, unknown topic while it is
    /// recreated): wait for it, then re-send.
    Transient,
}

impl Failure {
    pub fn of(code: RDKafkaErrorCode) -> Failure {
        use RDKafkaErrorCode as E;
        match code {
            E::MessageSizeTooLarge | E::InvalidTopic | E::InvalidRecord => Failure::Permanent,
            E::ProducerFenced
            | E::UnknownProducerId
            | E::InvalidProducerEpoch
            | E::InvalidProducerIdMapping
            | E::OutOfOrderSequenceNumber
            | E::Fatal
            | E::Inconsistent => Failure::Fatal,
            _ => Failure::Transient,
        }
    }
}
