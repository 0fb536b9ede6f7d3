//! sink kafka tail: reads the last messages of every partition of a topic back, to each
//! partition's end as the fetches report it. The sink's crash read-back (which spooled
//! alerts the topic holds already) and scale-out's state reader (a partition's latest
//! checkpoint) both read a topic this way.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

/// Assigns `consumer` the last `tail` messages of every partition of `topic` and hands each
/// message to `each` until every partition reports its end; the number read. Metadata and
/// watermark requests wait at most `request_timeout` each, the read `read_timeout` in all.
/// The consumer needs `enable.partition.eof`, and stays assigned.
pub fn read_tails(
    consumer: &BaseConsumer,
    topic: &str,
    tail: i64,
    request_timeout: Duration,
    read_timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<u64> {
    let metadata = consumer
        .fetch_metadata(Some(topic), request_timeout)
        .with_context(|| format!("cannot fetch the metadata of topic {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    // Partitions not yet read to their end.
    let mut reading: HashSet<i32> = HashSet::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, request_timeout)
            .with_context(|| format!("cannot fetch the offsets of {topic}/{partition}"))?;
        // An empty partition answers `high == low`; a short `high` (tansu 0.6 answers
        // "latest" up to a record batch short, see the sink's `skip_delivered`) only makes
        // the read start earlier: it ends at the EOF the fetches report.
        if high > low {
            let start = low.max(high - tail);
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
            reading.insert(partition);
        }
    }
    let mut read = 0u64;
    if reading.is_empty() {
        return Ok(read);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + read_timeout;
    while !reading.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the tail of {topic} was not read within {read_timeout:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                reading.remove(&partition);
            }
            Some(Err(error)) => return Err(error).with_context(|| format!("cannot read {topic}")),
            Some(Ok(message)) => {
                read += 1;
                each(&message);
            }
        }
    }
    Ok(read)
}
