//! scaleout checkpoint: how a partition's state passes from one `exflow detect` to the
//! next. A detector writes a checkpoint record per owned partition to
//! `scaleout.state_topic`, keyed by `TOPIC/PARTITION`: the committed offset, the alert ids
//! it had delivered lately, and now and then (`scaleout.state_interval_ms`, when every
//! alert of the partition is acknowledged) the state a replay of recent records cannot
//! rebuild (the rules' long memory, suppression, risk: [`crate::pipeline::Shard::checkpoint`])
//! with the offset it covers and where, `scaleout.rewind_s` of event time earlier, a new
//! owner starts replaying to rebuild the rest. A new owner reads the partition's latest
//! records back ([`StateReader`]) when it is assigned the partition. The record's fields
//! are in `schemas/flows.v1.md`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};

use crate::sink::kafka::tail::read_tails;

/// The checkpoint record's schema name.
pub const CHECKPOINT_SCHEMA: &str = "exflow.state.v1";
/// Delivered alert ids a checkpoint names at most (the newest).
pub const MAX_DELIVERED_IDS: usize = 1024;
/// Records read back from the end of each state-topic partition for a new owner: a
/// compacted topic is far shorter; one that is not (tansu's memory storage) holds every
/// round of every partition, and only the latest rounds matter.
const TAIL_RECORDS: i64 = 65_536;
/// How long reading the state topic back may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Rewind marks a partition keeps: one every `rewind_s / MARKS` of event time.
const MARKS: u64 = 64;

/// One checkpoint record on the state topic (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub schema: String,
    pub group: String,
    /// The detector's `scaleout.instance_id`.
    pub member: String,
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset as this detector committed it: below it every alert
    /// was acknowledged by the broker.
    pub committed_offset: i64,
    /// The next offset the detector was to run.
    pub next_offset: i64,
    /// The partition's event clock, ms.
    pub clock_ms: u64,
    /// Wall clock when written, ms.
    pub written_ms: u64,
    /// Where a new owner starts reading: `rewind_s` of event time before `state_offset`
    /// (the partition's first offset while the partition's history is shorter).
    pub rebuild_from_offset: i64,
    /// The offset `state` covers (the records below it made it); `None` in the records
    /// between two states.
    pub state_offset: Option<i64>,
    pub state: Option<serde_json::Value>,
    /// Ids of the alerts the detector had delivered (acknowledged by the broker) lately,
    /// the newest last: a new owner that raises one of them again counts it and does not
    /// send it.
    #[serde(default)]
    pub delivered_alert_ids: Vec<String>,
}

/// A checkpoint record's key: the flows topic and partition, and `/offsets` after them
/// for a record without a state, so that compaction, which keeps a key's latest record,
/// keeps the latest state too.
pub fn key(topic: &str, partition: i32, with_state: bool) -> String {
    if with_state {
        format!("{topic}/{partition}")
    } else {
        format!("{topic}/{partition}/offsets")
    }
}

/// What the state topic holds for one partition.
#[derive(Debug, Default)]
pub struct Found {
    /// The latest record with a state.
    pub state: Option<CheckpointRecord>,
    /// The latest record's delivered alert ids.
    pub delivered_alert_ids: HashSet<String>,
    /// Records of this partition read back (any member's, any round).
    pub records: u64,
}

/// Where a partition's event clock stood at which offsets, for the rewind before a
/// state: a mark every `rewind_s / 64` of event time, the oldest kept the latest at or
/// before `rewind_s` ago. Bounded at 66 marks.
#[derive(Debug)]
pub struct Rewind {
    /// (clock ms, offset of the watermark that moved the clock there), oldest first.
    marks: VecDeque<(u64, i64)>,
    rewind_ms: u64,
    spacing_ms: u64,
}

impl Rewind {
    /// Marks of a partition whose owner started reading at `start_offset`.
    pub fn new(rewind_s: u64, start_offset: i64) -> Rewind {
        let rewind_ms = rewind_s.saturating_mul(1000);
        Rewind {
            marks: VecDeque::from([(0, start_offset)]),
            rewind_ms,
            spacing_ms: (rewind_ms / MARKS).max(1000),
        }
    }

    /// The clock moved to `clock_ms` at the watermark at `offset`.
    pub fn on_clock(&mut self, clock_ms: u64, offset: i64) {
        let last = self.marks.back().map_or(0, |m| m.0);
        if self.marks.len() == 1 || clock_ms >= last.saturating_add(self.spacing_ms) {
            self.marks.push_back((clock_ms, offset));
        }
        let horizon = clock_ms.saturating_sub(self.rewind_ms);
        while self.marks.len() >= 2 && self.marks[1].0 <= horizon {
            self.marks.pop_front();
        }
    }

    /// Where a replay starts to see `rewind_s` of event time before the clock now.
    pub fn from_offset(&self) -> i64 {
        self.marks.front().map_or(0, |m| m.1)
    }
}

/// Reads the state topic back for newly assigned partitions.
pub struct StateReader {
    consumer: BaseConsumer,
    state_topic: String,
}

impl StateReader {
    pub fn new(
        brokers: &str,
        state_topic: &str,
        options: &BTreeMap<String, String>,
    ) -> anyhow::Result<StateReader> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("client.id", "exflow-state-reader")
            // librdkafka assigns only with a group id; this consumer never joins the group
            // (it assigns itself partitions) nor commits.
            .set("group.id", "exflow-state-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The end of each partition as the fetch responses report it: tansu 0.6
            // answers ListOffsets "latest" up to a record batch short (see the sink's
            // skip_delivered).
            .set("enable.partition.eof", "true");
        for (key, value) in options {
            client.set(key, value);
        }
        let consumer = client
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
            .create()
            .context("invalid settings for reading the state topic")?;
        Ok(StateReader {
            consumer,
            state_topic: state_topic.to_string(),
        })
    }

    /// The latest checkpoint records of each of `partitions` of `flows_topic`, in one
    /// read of the state topic (none for a partition that has no record).
    pub fn latest(
        &self,
        flows_topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<BTreeMap<i32, Found>> {
        let topic = self.state_topic.as_str();
        let wanted: HashMap<Vec<u8>, i32> = partitions
            .iter()
            .flat_map(|&p| [true, false].map(|state| (key(flows_topic, p, state).into_bytes(), p)))
            .collect();
        let mut found: BTreeMap<i32, Found> = BTreeMap::new();
        let mut latest: BTreeMap<i32, CheckpointRecord> = BTreeMap::new();
        read_tails(
            &self.consumer,
            topic,
            TAIL_RECORDS,
            READ_TIMEOUT,
            READ_TIMEOUT,
            |message| {
                let Some(&partition) = message.key().and_then(|k| wanted.get(k)) else {
                    return;
                };
                // A record another exflow wrote, or of another schema, is skipped.
                let Some(record) = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<CheckpointRecord>(p).ok())
                    .filter(|r| r.schema == CHECKPOINT_SCHEMA && r.partition == partition)
                else {
                    return;
                };
                let entry = found.entry(partition).or_default();
                entry.records += 1;
                if record.state.is_some() {
                    entry.state = Some(record.clone());
                }
                latest.insert(partition, record);
            },
        )
        .context("cannot read the state topic")?;
        let _ = self.consumer.unassign();
        for (partition, record) in latest {
            found.entry(partition).or_default().delivered_alert_ids =
                record.delivered_alert_ids.into_iter().collect();
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rewind_starts_at_the_latest_mark_a_rewind_before_the_clock() {
        // 600 s: a mark every 10 s at most (the floor is 1 s).
        let mut rewind = Rewind::new(600, 7);
        assert_eq!(
            rewind.from_offset(),
            7,
            "a short history starts at the start"
        );
        let t0 = 1_700_000_000_000;
        for i in 0..200u64 {
            rewind.on_clock(t0 + i * 5000, 100 + i as i64);
        }
        // The clock is at t0 + 995 s: the latest mark at or before t0 + 395 s is the one
        // at t0 + 390 s (marks are 10 s apart: every other step), offset 178.
        assert_eq!(rewind.from_offset(), 178);
        assert!(rewind.marks.len() <= MARKS as usize + 2);
    }
}
