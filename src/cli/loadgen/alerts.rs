//! cli: `exflow loadgen --kafka-brokers`, the watch for a scaled-out exflow (`collect`
//! receiving loadgen's datagrams, `detect` members raising the alerts): instead of the
//! alert counters at `--metrics`, reads the alerts topic from its end and takes a
//! scenario as detected when an alert of its rule about its inside host arrives. The
//! latency is from the scenario's last datagram sent to that alert read back: datagram to
//! alert across the collector, the flows topic, a detector, its spool and the alerts topic.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::harness::{Detection, Detections, Injected, Planned};

/// How long a metadata or offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a poll waits (the resolution of the latencies is the broker's, not this).
const POLL: Duration = Duration::from_millis(10);
/// Alerts remembered by (rule, inside host) at most; background traffic may raise many.
const MAX_SEEN: usize = 100_000;

/// Reads the alerts topic on a thread of its own while scenarios are injected.
pub struct TopicWatch {
    sender: mpsc::Sender<Injected>,
    thread: std::thread::JoinHandle<Detections>,
}

impl TopicWatch {
    /// Starts reading `topic` at `brokers` from its end now; after the sending ends,
    /// scenarios get `timeout` more to be detected.
    pub fn start(
        brokers: &str,
        topic: &str,
        plan: &[Planned],
        timeout: Duration,
    ) -> anyhow::Result<TopicWatch> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "exflow-loadgen")
            // Assigned, never subscribed: the group is only librdkafka's requirement.
            .set("group.id", "exflow-loadgen")
            .set("enable.auto.commit", "false")
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
            .create()
            .context("invalid --kafka-brokers")?;
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .with_context(|| format!("cannot fetch the metadata of '{topic}'"))?;
        let mut assignment = TopicPartitionList::new();
        for partition in metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions())
        {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)
                .with_context(|| format!("cannot fetch the offsets of '{topic}'"))?;
            assignment.add_partition_offset(topic, partition.id(), Offset::Offset(high))?;
        }
        anyhow::ensure!(
            assignment.count() > 0,
            "the alerts topic '{topic}' has no partitions (create it first)"
        );
        consumer.assign(&assignment)?;
        let mut rules: Vec<&'static str> = plan.iter().map(|p| p.scenario.rule()).collect();
        rules.sort_unstable();
        rules.dedup();
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("loadgen-alerts".into())
            .spawn(move || watch(consumer, rules, receiver, timeout))?;
        Ok(TopicWatch { sender, thread })
    }

    /// Tells the watch a scenario was sent.
    pub fn injected(&self, injected: Injected) {
        let _ = self.sender.send(injected);
    }

    /// The sending is over: waits for the scenarios still undetected, up to the timeout.
    pub fn finish(self) -> Detections {
        drop(self.sender);
        self.thread
            .join()
            .expect("the alerts watch thread does not panic")
    }
}

fn watch(
    consumer: BaseConsumer,
    rules: Vec<&'static str>,
    receiver: mpsc::Receiver<Injected>,
    timeout: Duration,
) -> Detections {
    let mut injected: Vec<Injected> = Vec::new();
    // When an alert of (rule, inside host) was first read.
    let mut seen: HashMap<(String, String), Instant> = HashMap::new();
    let mut per_rule = vec![0.0f64; rules.len()];
    let mut deadline = None;
    let mut last_error = None;
    loop {
        loop {
            match receiver.try_recv() {
                Ok(scenario) => injected.push(scenario),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    deadline.get_or_insert(Instant::now() + timeout);
                    break;
                }
            }
        }
        let waiting = injected.iter().any(|i| {
            i.sent_ok && !seen.contains_key(&(i.scenario.rule().to_string(), i.inside.to_string()))
        });
        if deadline.is_some_and(|d| !waiting || Instant::now() >= d) {
            break;
        }
        match consumer.poll(POLL) {
            Some(Ok(message)) => {
                let now = Instant::now();
                let Some(alert) = message
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                else {
                    continue;
                };
                let field = |name: &str| alert[name].as_str().unwrap_or_default().to_string();
                let rule = field("rule");
                if let Some(i) = rules.iter().position(|r| *r == rule) {
                    per_rule[i] += 1.0;
                }
                if seen.len() < MAX_SEEN {
                    seen.entry((rule, field("inside_addr"))).or_insert(now);
                }
            }
            Some(Err(error)) => last_error = Some(error.to_string()),
            None => {}
        }
    }
    Detections {
        scenarios: injected
            .iter()
            .map(|i| Detection {
                injected: *i,
                latency: seen
                    .get(&(i.scenario.rule().to_string(), i.inside.to_string()))
                    .filter(|_| i.sent_ok)
                    .map(|at| at.saturating_duration_since(i.sent)),
            })
            .collect(),
        rises: rules.into_iter().zip(per_rule).collect(),
        last_error,
    }
}
