//! sink: the optional second stream, every decoded flow record to a Kafka topic, keyed by
//! the inside host, as JSON (GoFlow2's field names) or protobuf (GoFlow2's `flow.proto`
//! field numbers), so other pipelines, and exflow's own scale-out, can consume them.
//! Best effort by design (millions a second, no spool): a full producer queue drops the
//! record and counts it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use prost::Message;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::RecordTap;
use super::kafka::producer::client_config;
use super::kafka::{FlowsFormat, KafkaConfig};
use crate::decode::record::NamedRecord;
use crate::decode::{FlowKind, FlowRecord};

/// GoFlow2's `flowpb.FlowMessage`, the fields exflow fills, with GoFlow2's field numbers.
/// (GoFlow2 has no reverse counters: biflow records carry their forward half only.)
#[derive(Clone, PartialEq, Message)]
pub struct FlowMessage {
    /// 2 NETFLOW_V5, 3 NETFLOW_V9, 4 IPFIX.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(uint64, tag = "110")]
    pub time_received_ns: u64,
    #[prost(uint32, tag = "4")]
    pub sequence_num: u32,
    #[prost(uint64, tag = "3")]
    pub sampling_rate: u64,
    #[prost(bytes = "vec", tag = "11")]
    pub sampler_address: Vec<u8>,
    #[prost(uint64, tag = "111")]
    pub time_flow_start_ns: u64,
    #[prost(uint64, tag = "112")]
    pub time_flow_end_ns: u64,
    #[prost(uint64, tag = "9")]
    pub bytes: u64,
    #[prost(uint64, tag = "10")]
    pub packets: u64,
    #[prost(bytes = "vec", tag = "6")]
    pub src_addr: Vec<u8>,
    #[prost(bytes = "vec", tag = "7")]
    pub dst_addr: Vec<u8>,
    #[prost(uint32, tag = "30")]
    pub etype: u32,
    #[prost(uint32, tag = "20")]
    pub proto: u32,
    #[prost(uint32, tag = "21")]
    pub src_port: u32,
    #[prost(uint32, tag = "22")]
    pub dst_port: u32,
    #[prost(uint32, tag = "18")]
    pub in_if: u32,
    #[prost(uint32, tag = "19")]
    pub out_if: u32,
    #[prost(uint32, tag = "23")]
    pub ip_tos: u32,
    #[prost(uint32, tag = "26")]
    pub tcp_flags: u32,
    #[prost(uint32, tag = "14")]
    pub src_as: u32,
    #[prost(uint32, tag = "15")]
    pub dst_as: u32,
    #[prost(bytes = "vec", tag = "12")]
    pub next_hop: Vec<u8>,
    #[prost(uint32, tag = "70")]
    pub observation_domain_id: u32,
}

fn octets(address: IpAddr) -> Vec<u8> {
    if address.is_unspecified() {
        return Vec::new();
    }
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

impl From<&FlowRecord> for FlowMessage {
    fn from(r: &FlowRecord) -> Self {
        FlowMessage {
            r#type: match r.kind {
                // GoFlow2's protobuf has no v1 or v7: the fixed-record format they share.
                FlowKind::NetflowV5 | FlowKind::NetflowV1 | FlowKind::NetflowV7 => 2,
                FlowKind::NetflowV9 => 3,
                FlowKind::Ipfix => 4,
                FlowKind::Sflow5 => 1,
            },
            time_received_ns: r.time_received_ns,
            sequence_num: r.sequence_num,
            sampling_rate: u64::from(r.sampling_rate),
            sampler_address: octets(r.sampler_address),
            time_flow_start_ns: r.time_flow_start_ns,
            time_flow_end_ns: r.time_flow_end_ns,
            bytes: r.bytes,
            packets: r.packets,
            src_addr: octets(r.src_addr),
            dst_addr: octets(r.dst_addr),
            etype: u32::from(r.etype),
            proto: u32::from(r.proto),
            src_port: u32::from(r.src_port),
            dst_port: u32::from(r.dst_port),
            in_if: r.in_if,
            out_if: r.out_if,
            ip_tos: u32::from(r.ip_tos),
            tcp_flags: u32::from(r.tcp_flags),
            src_as: r.src_as,
            dst_as: r.dst_as,
            next_hop: octets(r.next_hop),
            observation_domain_id: r.observation_domain_id,
        }
    }
}

/// Counters of the flows stream.
#[derive(Debug, Default)]
pub struct FlowsCounters {
    pub published: AtomicU64,
    /// Dropped because the producer's queue was full.
    pub dropped: AtomicU64,
    /// Failed after librdkafka's retries.
    pub failed: AtomicU64,
}

/// Counts delivery reports on librdkafka's polling thread.
pub struct FlowsContext {
    counters: Arc<FlowsCounters>,
}

impl ClientContext for FlowsContext {}

impl ProducerContext for FlowsContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.counters.published
        } else {
            &self.counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes records to `flows_topic`.
pub struct FlowsPublisher {
    producer: ThreadedProducer<FlowsContext>,
    topic: String,
    format: FlowsFormat,
    pub counters: Arc<FlowsCounters>,
    buffer: Vec<u8>,
}

impl FlowsPublisher {
    /// `None` when `flows_topic` is unset. Publishers of several receive workers may share
    /// `counters`.
    pub fn from_config(
        config: &KafkaConfig,
        counters: Arc<FlowsCounters>,
    ) -> anyhow::Result<Option<FlowsPublisher>> {
        let Some(topic) = &config.flows_topic else {
            return Ok(None);
        };
        let defaults = [
            ("linger.ms", "20".to_string()),
            ("queue.buffering.max.messages", "1000000".to_string()),
        ];
        let producer = client_config(config, "exflow-flows", &defaults)
            .create_with_context(FlowsContext {
                counters: counters.clone(),
            })
            .context("invalid sink.kafka settings for the flows stream")?;
        Ok(Some(FlowsPublisher {
            producer,
            topic: topic.clone(),
            format: config.flows_format,
            counters,
            buffer: Vec::new(),
        }))
    }
}

/// How long the end of input waits for queued records.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl RecordTap for FlowsPublisher {
    fn record(&mut self, named: &NamedRecord<'_>, inside: Option<IpAddr>) {
        let record = named.record;
        self.buffer.clear();
        match self.format {
            // With `in_if_name` and the rest where known, as `exflow decode` prints them.
            FlowsFormat::Json => {
                if serde_json::to_writer(&mut self.buffer, named).is_err() {
                    return;
                }
            }
            FlowsFormat::Protobuf => {
                if FlowMessage::from(record).encode(&mut self.buffer).is_err() {
                    return;
                }
            }
        }
        let key = inside.unwrap_or(record.src_addr).to_string();
        let message = BaseRecord::to(&self.topic).key(&key).payload(&self.buffer);
        if self.producer.send(message).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn finish(&mut self) {
        let _ = self.producer.flush(FLUSH_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_uses_goflow2_field_numbers() {
        let record = FlowRecord {
            kind: FlowKind::Ipfix,
            bytes: 300,
            src_addr: "10.0.0.1".parse().unwrap(),
            src_port: 443,
            ..FlowRecord::default()
        };
        let bytes = FlowMessage::from(&record).encode_to_vec();
        // type = 4 (field 1, varint), bytes = 300 (field 9, varint 0xac 0x02),
        // src_addr (field 6, 4 bytes), src_port = 443 (field 21: key 0xa8 0x01).
        assert_eq!(&bytes[..2], &[0x08, 0x04]);
        assert!(bytes.windows(3).any(|w| w == [0x48, 0xac, 0x02]));
        assert!(bytes.windows(6).any(|w| w == [0x32, 0x04, 10, 0, 0, 1]));
        assert!(bytes.windows(4).any(|w| w == [0xa8, 0x01, 0xbb, 0x03]));
        assert_eq!(FlowMessage::decode(bytes.as_slice()).unwrap().bytes, 300);
    }
}
