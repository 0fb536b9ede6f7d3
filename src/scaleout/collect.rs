//! scaleout collect: `exflow collect`, the front half of the pipeline on its own machine.
//! UDP datagrams -> decode -> orient -> each exporter's clock -> the flows topic: every
//! record an inside host sent or received, as exflow's own protobuf ([`super::encoding`]),
//! to the partition of its inside host (the pipeline's shard of it, with the partitions as
//! shards) keyed by that host; and the collector's clock, as a watermark into every
//! partition: when it starts, at every tick of it (in the stream of records, where the
//! one-process pipeline ticks its shards), every `scaleout.watermark_interval_ms`, and with
//! `end` set when the collector stops; and an exporter's interface names (options data)
//! into every partition whenever it writes them, before the records of that datagram, so
//! that detectors name their alerts' interfaces. Transit and internal records, and records
//! the exporters' clocks reject (too late, dated ahead), are counted here and not published.
//!
//! One thread receives, decodes and produces; librdkafka batches (`linger.ms`) and
//! compresses (lz4) on its own threads. A full producer queue is backpressure: the thread
//! waits for room up to `QUEUE_FULL_WAIT`, meanwhile the socket buffers hold what arrives
//! (and the kernel counts what they cannot), then drops the record and counts it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tracing::{info, warn};

use super::config::DEFAULT_FLOWS_TOPIC;
use super::encoding::{self, Watermark};
use super::metrics::{CollectCounters, ScaleoutMetrics};
use crate::config::Config;
use crate::daemon::{BoundSockets, Control};
use crate::decode::directory::InterfaceDirectory;
use crate::pipeline::{Ingest, Routed};
use crate::sink::kafka::KafkaConfig;
use crate::sink::kafka::producer::client_config;
use crate::source::udp::Sockets;
use crate::telemetry::{MetricsServer, Snapshot, Telemetry};
use crate::time::wall_clock_ns;

/// How often the counters are published to the metrics endpoint.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Longest a record waits for room in a full producer queue before it is dropped.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(1);
/// How long the end waits for librdkafka to deliver what it holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts delivery reports (records vs watermarks and interface names by the opaque flag).
pub struct CollectContext {
    counters: Arc<CollectCounters>,
}

impl ClientContext for CollectContext {}

impl ProducerContext for CollectContext {
    /// `true` for a record, `false` for a watermark or interface names.
    type DeliveryOpaque = Box<bool>;

    fn delivery(&self, result: &DeliveryResult<'_>, is_record: Box<bool>) {
        match (result.is_ok(), *is_record) {
            (true, true) => self.counters.published.fetch_add(1, Ordering::Relaxed),
            (true, false) => 0,
            (false, _) => self.counters.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The flows topic of `collect` and `detect`.
pub fn flows_topic(kafka: &KafkaConfig) -> &str {
    kafka.flows_topic.as_deref().unwrap_or(DEFAULT_FLOWS_TOPIC)
}

/// The Kafka section `collect` and `detect` need.
pub fn kafka_section(config: &Config) -> anyhow::Result<&KafkaConfig> {
    config
        .sink
        .kafka
        .as_ref()
        .filter(|k| !k.brokers.is_empty())
        .context("no Kafka brokers: give --kafka-brokers (or sink.kafka.brokers)")
}

/// Publishes what the ingest routed, partition by partition, and the watermarks.
struct Publisher {
    producer: ThreadedProducer<CollectContext>,
    topic: String,
    collector: String,
    partitions: i32,
    counters: Arc<CollectCounters>,
    buffer: Vec<u8>,
    /// The starting watermark went out (the ingest's clock had started).
    started: bool,
}

impl Publisher {
    fn send(&mut self, partition: i32, key: &[u8], is_record: bool) -> bool {
        let deadline = Instant::now() + QUEUE_FULL_WAIT;
        let mut message = BaseRecord::with_opaque_to(&self.topic, Box::new(is_record))
            .partition(partition)
            .key(key)
            .payload(&self.buffer);
        loop {
            match self.producer.send(message) {
                Ok(()) => return true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    message = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
    }

    /// A watermark at `clock_ms` into every partition.
    fn watermark_all(&mut self, clock_ms: u64, end: bool) {
        for partition in 0..self.partitions {
            self.watermark(partition, clock_ms, end);
        }
    }

    fn watermark(&mut self, partition: i32, clock_ms: u64, end: bool) {
        let watermark = Watermark {
            collector: self.collector.clone(),
            clock_ms,
            sent_ms: wall_clock_ns() / 1_000_000,
            end,
        };
        self.buffer.clear();
        encoding::encode_watermark(&watermark, &mut self.buffer);
        let key = self.collector.clone();
        let counter = if self.send(partition, key.as_bytes(), false) {
            &self.counters.watermarks
        } else {
            &self.counters.watermarks_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends every partition the names of each exporter that wrote its interface names
    /// since the last look, before the records of the datagram that carried them.
    fn publish_interfaces(&mut self, directory: &InterfaceDirectory) {
        for exporter in directory.take_changed() {
            let names = directory.names_of(exporter);
            self.buffer.clear();
            encoding::encode_interfaces(exporter, &names, &mut self.buffer);
            let mut key = String::with_capacity(40);
            push_address(&mut key, exporter);
            for partition in 0..self.partitions {
                let counter = if self.send(partition, key.as_bytes(), false) {
                    &self.counters.interface_messages
                } else {
                    &self.counters.interface_messages_dropped
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends every partition its batch, in order (records, and a watermark for a tick),
    /// after the starting watermark if the clock has just started.
    fn publish(&mut self, ingest: &mut Ingest) {
        if !self.started
            && let Some(first_ms) = ingest.clock_started_ms()
        {
            self.started = true;
            self.watermark_all(first_ms, false);
        }
        let mut key = String::with_capacity(40);
        for (partition, batch) in ingest.batches().iter_mut().enumerate() {
            let partition = partition as i32;
            for routed in batch.drain(..) {
                match routed {
                    Routed::Record { record, now_ms } => {
                        self.buffer.clear();
                        encoding::encode_record(&record, now_ms, &mut self.buffer);
                        key.clear();
                        push_address(&mut key, record.inside);
                        if !self.send(partition, key.as_bytes(), true) {
                            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Routed::Tick { now_ms } => self.watermark(partition, now_ms, false),
                }
            }
        }
        self.counters
            .clock_ms
            .store(ingest.now_ms(), Ordering::Relaxed);
    }
}

fn push_address(out: &mut String, address: IpAddr) {
    use std::fmt::Write;
    let _ = write!(out, "{address}");
}

/// Runs `exflow collect` on `sockets` (bound from the same `config`) until
/// `control.shutdown` is set; then takes what the sockets still hold, publishes the end
/// watermark and waits for the producer.
pub fn run(config: &Config, sockets: BoundSockets, control: Control) -> anyhow::Result<()> {
    let parts = sockets.into_parts();
    let _locks = parts.locks;
    let kafka = kafka_section(config)?;
    let topic = flows_topic(kafka).to_string();
    let counters = Arc::new(CollectCounters::default());
    let telemetry = Arc::new(Telemetry {
        sources: parts.sources,
        ..Telemetry::default()
    });
    let _ = telemetry
        .scaleout
        .set(ScaleoutMetrics::Collect(counters.clone()));
    info!(metrics = %parts.metrics.local_addr()?, "serving /metrics");
    let metrics_server = MetricsServer::spawn(parts.metrics, telemetry.clone())?;
    let defaults = [
        ("linger.ms", "20".to_string()),
        ("batch.num.messages", "10000".to_string()),
        ("queue.buffering.max.messages", "1000000".to_string()),
        ("enable.idempotence", "true".to_string()),
    ];
    let producer: ThreadedProducer<CollectContext> =
        client_config(kafka, "exflow-collect", &defaults)
            .create_with_context(CollectContext {
                counters: counters.clone(),
            })
            .context("invalid sink.kafka settings for the flows topic")?;
    let partitions = partition_count(producer.client(), &topic)?;
    counters
        .partitions
        .store(partitions as u64, Ordering::Relaxed);
    let collector = config.scaleout.collector_id();
    info!(
        topic,
        partitions, collector, "publishing every oriented record"
    );
    let enricher = config.enricher()?;
    let mut ingest = Ingest::new(config, enricher, partitions as usize);
    if let Some(path) = &config.state_file
        && path.exists()
        && let Err(error) = ingest.decoder().load_state(path)
    {
        warn!("{error:#}; starting without saved templates");
    }
    // The detectors name their alerts' interfaces from what this directory publishes
    // (the names loaded with the state go out with the first datagram).
    let interface_names = InterfaceDirectory::default();
    interface_names.track_changes();
    ingest.share_interface_names(interface_names.clone());
    let mut publisher = Publisher {
        producer,
        topic,
        collector,
        partitions,
        counters: counters.clone(),
        buffer: Vec::with_capacity(128),
        started: false,
    };
    let mut sockets = Sockets::new(
        parts.sockets,
        Duration::from_micros(config.source.gather_max_us),
    );
    let watermark_every = Duration::from_millis(config.scaleout.watermark_interval_ms);
    let mut last_watermark = Instant::now();
    let mut last_publish = Instant::now();
    let mut receive = |ingest: &mut Ingest, publisher: &mut Publisher, wait: Duration| {
        sockets
            .receive(wait, |exporter, received_ns, payload| {
                ingest.push_datagram(exporter, received_ns, payload);
                publisher.publish_interfaces(&interface_names);
                publisher.publish(ingest);
            })
            .unwrap_or_else(|error| {
                warn!("receive failed: {error}");
                0
            })
    };
    let publish_metrics = |ingest: &mut Ingest| {
        let counters = ingest.counters();
        let decoder = ingest.decoder();
        telemetry.publish(Snapshot {
            pipeline: counters,
            exporters: decoder.exporters().map(|(a, c)| (a, *c)).collect(),
            templates: decoder.template_count(),
            ..Snapshot::default()
        });
    };
    while !control.shutdown.load(Ordering::Relaxed) {
        receive(&mut ingest, &mut publisher, PUBLISH_EVERY);
        if publisher.started && last_watermark.elapsed() >= watermark_every {
            publisher.watermark_all(ingest.now_ms(), false);
            last_watermark = Instant::now();
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            publish_metrics(&mut ingest);
            last_publish = Instant::now();
        }
    }
    while receive(&mut ingest, &mut publisher, Duration::ZERO) > 0 {}
    if publisher.started {
        publisher.watermark_all(ingest.now_ms(), true);
    }
    if publisher.producer.flush(FLUSH_TIMEOUT).is_err() {
        warn!("the flows topic did not take everything within {FLUSH_TIMEOUT:?}");
    }
    if let Some(path) = &config.state_file
        && let Err(error) = ingest.decoder().save_state(path)
    {
        warn!("{error:#}");
    }
    publish_metrics(&mut ingest);
    metrics_server.stop();
    let c = ingest.counters();
    info!(
        records = c.decode.records,
        published = counters.published.load(Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}

/// The number of partitions of `topic` (which must exist: its partitions are the slices of
/// inside hosts, chosen by whoever creates it).
pub fn partition_count<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> anyhow::Result<i32> {
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of topic '{topic}'"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        anyhow::bail!(
            "topic '{topic}' has no partitions: create it first (e.g. with 4 or more partitions)"
        );
    }
    Ok(partitions as i32)
}
