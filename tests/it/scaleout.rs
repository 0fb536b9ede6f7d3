//! Scale-out on a real broker: `exflow collect` publishes the oriented records of a capture
//! to a flows topic of 4 partitions, two `exflow detect` members of one group share them,
//! and the alerts on the alerts topic are those of a one-process replay of the same
//! datagrams (rule, hosts, step and id), also when one detector is killed mid-stream, and
//! when what the survivor must know was learned before the rewind of its checkpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{
    Consumed, Daemon, consume, create_topic, shared_brokers, temp_dir, topic_name, wait_until,
};
use crate::support::{border_config, datagrams, replay};

const CAPTURE: &str = "softflowd_ipfix.pcap";

/// (rule, inside, outside, step, alert_id) of an alert.
type AlertKey = (String, String, String, u64, String);

struct Topics {
    brokers: String,
    flows: String,
    alerts: String,
    state: String,
    group: String,
    /// The group's assignor: exflow's cooperative-sticky, or eager `range` (below).
    assignor: &'static str,
    /// More configuration, appended.
    extra: String,
    /// `scaleout.state_interval_ms`: short, so that a test's takeover finds a state.
    state_interval_ms: u64,
}

impl Topics {
    fn new(assignor: &'static str) -> Topics {
        let brokers = shared_brokers();
        Topics {
            assignor,
            flows: create_topic(&brokers, "exflow.flows.it", 4),
            alerts: create_topic(&brokers, "exflow.alerts.scaleout", 3),
            state: create_topic(&brokers, "exflow.state.it", 1),
            group: topic_name("exflow-detect"),
            brokers,
            extra: String::new(),
            state_interval_ms: 500,
        }
    }

    /// A process's config: the topics, its own spool, and the group settings a test wants
    /// (a short session so a killed member's partitions move within seconds). For tansu
    /// 0.6.0 (README, "Scale-out on Kafka"): no static membership, which it does not
    /// settle; and for a member joining mid-stream the eager `range` assignor, as tansu
    /// gets cooperative-sticky's incremental moves wrong then (a partition owned twice,
    /// another by nobody), while with `range` it never hands a killed member's partitions
    /// on.
    fn config(&self, spool: &std::path::Path) -> String {
        format!(
            "[sink.kafka]\nlibrdkafka_options = {{ \"partition.assignment.strategy\" = \"{}\" }}\n\
             brokers = \"{}\"\ntopic = \"{}\"\nflows_topic = \"{}\"\n\
             spool_dir = \"{}\"\nmessage_timeout_ms = 3000\n\
             [scaleout]\ngroup = \"{}\"\nstate_topic = \"{}\"\nstatic_membership = false\n\
             session_timeout_ms = 6000\ncheckpoint_interval_ms = 500\nwatermark_interval_ms = 200\n\
             state_interval_ms = {}\n{}",
            self.assignor,
            self.brokers,
            self.alerts,
            self.flows,
            spool.display(),
            self.group,
            self.state,
            self.state_interval_ms,
            self.extra,
        )
    }

    fn detector(&self, id: &str) -> Daemon {
        let spool = temp_dir(&format!("spool-{id}"));
        Daemon::start_command("detect", &self.config(&spool), &["--instance-id", id])
    }

    fn collector(&self) -> Daemon {
        self.collector_named("site-a")
    }

    fn collector_named(&self, id: &str) -> Daemon {
        let spool = temp_dir("spool-collect");
        Daemon::start_command("collect", &self.config(&spool), &["--collector-id", id])
    }
}

fn key(alert: &serde_json::Value) -> AlertKey {
    let text = |field: &str| alert[field].as_str().unwrap_or_default().to_string();
    (
        text("rule"),
        text("inside_addr"),
        text("outside_addr"),
        alert["step"].as_u64().unwrap(),
        text("alert_id"),
    )
}

/// Every distinct alert with how often the topic holds it.
fn counted(messages: &[Consumed]) -> BTreeMap<AlertKey, usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        *counts.entry(key(&m.alert)).or_default() += 1;
    }
    counts
}

fn expected() -> Vec<AlertKey> {
    expected_of(&[CAPTURE])
}

fn expected_of(captures: &[&str]) -> Vec<AlertKey> {
    let (alerts, _) = replay(captures, &border_config(), 1);
    let mut keys: Vec<AlertKey> = alerts
        .iter()
        .map(|a| key(&serde_json::to_value(a).unwrap()))
        .collect();
    keys.sort();
    assert!(!keys.is_empty(), "the capture raises alerts");
    keys
}

fn metric_sum(daemons: &[&Daemon], name: &str) -> f64 {
    daemons.iter().map(|d| d.metric(name).max(0.0)).sum()
}

fn send(collector: &Daemon, datagrams: &[(std::net::IpAddr, u64, Vec<u8>)]) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (_, _, payload) in datagrams {
        socket
            .send_to(payload, ("127.0.0.1", collector.udp_port))
            .unwrap();
    }
}

/// Waits until the detectors have read every record the collector published (and so
/// every watermark before them).
fn wait_consumed(collector: &Daemon, detectors: &[&Daemon]) {
    wait_until(
        "the detectors have read every published record",
        Duration::from_secs(60),
        || {
            let published = collector.metric("exflow_collect_published_records_total");
            published > 0.0
                && metric_sum(detectors, "exflow_consume_records_total") >= published
                && metric_sum(detectors, "exflow_consume_rebuilding_partitions") == 0.0
        },
    );
}

/// Sends `datagrams`, the capture's last, and waits until the whole capture is decoded.
fn send_to_the_end(collector: &Daemon, datagrams: &[(std::net::IpAddr, u64, Vec<u8>)]) {
    send(collector, datagrams);
    wait_until("every record is decoded", Duration::from_secs(30), || {
        collector.metric("exflow_decode_records_total") == 2208.0
    });
}

/// The alerts read back from the alerts topic (at least `expected` of them), each with
/// how many times it was raised.
fn alerts_read_back(topics: &Topics, expected: usize) -> BTreeMap<AlertKey, usize> {
    let messages = consume(
        &topics.brokers,
        &topics.alerts,
        expected,
        Duration::from_secs(60),
    );
    counted(&messages)
}

/// Waits until `first` and `second` each own some of the 4 partitions, and together all.
fn wait_shared(first: &Daemon, second: &Daemon) {
    wait_until(
        "the two detectors share the 4 partitions",
        Duration::from_secs(60),
        || {
            let (a, b) = (
                first.metric("exflow_consume_partitions"),
                second.metric("exflow_consume_partitions"),
            );
            a > 0.0 && b > 0.0 && a + b == 4.0
        },
    );
}

/// Two detectors: `leader` joins alone (and so leads the group), then `other`, until they
/// share the 4 partitions.
fn two_detectors(topics: &Topics, leader: &str, other: &str) -> (Daemon, Daemon) {
    let first = topics.detector(leader);
    wait_until(
        "the first detector owns every partition",
        Duration::from_secs(60),
        || first.metric("exflow_consume_partitions") == 4.0,
    );
    let second = topics.detector(other);
    wait_shared(&first, &second);
    (first, second)
}

/// Sends the first half of the capture and waits until the detectors consumed it; the
/// capture's datagrams and where the second half starts.
fn send_first_half(
    collector: &Daemon,
    detectors: &[&Daemon],
) -> (Vec<(std::net::IpAddr, u64, Vec<u8>)>, usize) {
    let all = datagrams(CAPTURE);
    let half = all.len() / 2;
    send(collector, &all[..half]);
    wait_until("the first half is decoded", Duration::from_secs(30), || {
        collector.metric("exflow_decode_datagrams_total") == half as f64
    });
    wait_consumed(collector, detectors);
    (all, half)
}

#[test]
fn a_collector_and_two_detectors_raise_the_alerts_of_a_replay() {
    let topics = Topics::new("cooperative-sticky");
    let first = topics.detector("detect-1");
    let second = topics.detector("detect-2");
    wait_shared(&first, &second);
    let collector = topics.collector();
    wait_until(
        "the collector knows the topic's partitions",
        Duration::from_secs(30),
        || collector.metric("exflow_collect_partitions") == 4.0,
    );
    let all = datagrams(CAPTURE);
    send_to_the_end(&collector, &all);
    wait_consumed(&collector, &[&first, &second]);
    let published = collector.metric("exflow_collect_published_records_total");
    // The end of the collector's input ends every partition's conversations.
    collector.stop();
    let want = expected();
    let got = alerts_read_back(&topics, want.len());
    assert!(
        got.values().all(|&n| n == 1),
        "no alert is raised twice: {got:?}"
    );
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    assert_eq!(
        metric_sum(&[&first, &second], "exflow_consume_records_total"),
        published
    );
    for detector in [&first, &second] {
        assert!(detector.metric("exflow_consume_watermarks_total") > 0.0);
        assert!(
            detector.metric("exflow_consume_collector_watermark_seconds{collector=\"site-a\"}")
                > 1.7e9,
            "the collector's watermark is reported"
        );
        assert_eq!(detector.metric("exflow_consume_takeovers_total"), 0.0);
    }
    first.stop();
    second.stop();
}

#[test]
fn a_detector_killed_mid_stream_is_taken_over_and_the_alerts_stay_the_same() {
    let topics = Topics::new("cooperative-sticky");
    // The survivor joins first and so leads the group: tansu 0.6.0 does not pass the
    // leadership on when the leader dies (the group keeps the dead leader's assignment),
    // so the member killed here is the other one (README, "Scale-out").
    let (survivor, victim) = two_detectors(&topics, "detect-survivor", "detect-victim");
    let collector = topics.collector();
    let (all, half) = send_first_half(&collector, &[&victim, &survivor]);
    // The victim has checkpointed (committed) what it read: a round after it read it.
    let checkpoints = victim.metric("exflow_consume_checkpoints_total");
    wait_until(
        "the victim checkpoints again",
        Duration::from_secs(30),
        || victim.metric("exflow_consume_checkpoints_total") > checkpoints,
    );
    assert!(victim.metric("exflow_consume_records_total") > 0.0);
    let victims_alerts = victim.metric("exflow_sink_kafka_delivered_alerts_total");
    assert!(
        victims_alerts > 0.0,
        "the victim's partitions raised alerts before it died"
    );
    let victim_states = victim.metric("exflow_consume_state_checkpoints_total");
    victim.kill();
    wait_until(
        "the survivor takes over every partition and rebuilds their state",
        Duration::from_secs(60),
        || {
            survivor.metric("exflow_consume_partitions") == 4.0
                && survivor.metric("exflow_consume_rebuilding_partitions") == 0.0
        },
    );
    assert!(
        survivor.metric("exflow_consume_takeovers_total") >= 1.0,
        "the victim's partitions had committed offsets"
    );
    send_to_the_end(&collector, &all[half..]);
    collector.stop();
    let want = expected();
    let got = alerts_read_back(&topics, want.len());
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        want,
        "the same alerts, ids included ({duplicates} raised twice)"
    );
    assert_eq!(duplicates, 0, "{got:?}");
    // What the victim delivered before it died is not sent again: the survivor raised it
    // while rebuilding below the committed offset, and counted it; none above it carried
    // an id the victim's checkpoints name as delivered (that would be counted, not sent).
    assert_eq!(
        survivor.metric("exflow_consume_rebuilt_alerts_total"),
        victims_alerts
    );
    assert_eq!(
        survivor.metric("exflow_consume_duplicate_alerts_total"),
        0.0
    );
    // The victim's partitions came with their state: its checkpoints carried it.
    assert!(victim_states > 0.0);
    assert!(survivor.metric("exflow_consume_restored_checkpoints_total") >= 1.0);
    survivor.stop();
}

#[test]
fn alerts_a_previous_owner_delivered_after_its_last_checkpoint_are_counted_not_sent_again() {
    let topics = Topics::new("cooperative-sticky");
    let first = topics.detector("detect-first");
    wait_until(
        "the detector owns every partition",
        Duration::from_secs(60),
        || first.metric("exflow_consume_partitions") == 4.0,
    );
    let collector = topics.collector();
    send_to_the_end(&collector, &datagrams(CAPTURE));
    collector.stop();
    let want = expected();
    wait_until(
        "the first detector delivered every alert",
        Duration::from_secs(60),
        || first.metric("exflow_sink_kafka_delivered_alerts_total") == want.len() as f64,
    );
    first.kill();
    // A new owner that finds no checkpoint of these partitions (its group and state topic
    // are its own), as after an owner that died before checkpointing what it delivered:
    // it rebuilds from the first offset and raises every alert again.
    let fresh = Topics {
        group: topic_name("exflow-detect"),
        state: create_topic(&topics.brokers, "exflow.state.it", 1),
        ..topics
    };
    let next = fresh.detector("detect-next");
    wait_until(
        "the new owner raised the alerts again and counted them",
        Duration::from_secs(60),
        || next.metric("exflow_consume_duplicate_alerts_total") == want.len() as f64,
    );
    assert_eq!(
        next.metric("exflow_consume_restored_checkpoints_total"),
        0.0
    );
    assert_eq!(next.metric("exflow_sink_kafka_delivered_alerts_total"), 0.0);
    let got = alerts_read_back(&fresh, want.len());
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    assert!(got.values().all(|&n| n == 1), "each alert once: {got:?}");
    next.stop();
}

#[test]
fn a_third_detector_joining_mid_stream_takes_partitions_and_the_alerts_stay_the_same() {
    let topics = Topics::new("range");
    let (first, second) = two_detectors(&topics, "detect-a", "detect-b");
    let collector = topics.collector();
    let (all, half) = send_first_half(&collector, &[&first, &second]);
    // Both have committed what they read: a checkpoint round after they read it.
    let rounds = [&first, &second].map(|d| d.metric("exflow_consume_checkpoints_total"));
    wait_until(
        "both detectors checkpoint again",
        Duration::from_secs(30),
        || {
            first.metric("exflow_consume_checkpoints_total") > rounds[0]
                && second.metric("exflow_consume_checkpoints_total") > rounds[1]
        },
    );
    let third = topics.detector("detect-c");
    let members = [&first, &second, &third];
    wait_until(
        "the third detector owns partitions and every state is rebuilt",
        Duration::from_secs(60),
        || {
            third.metric("exflow_consume_partitions") > 0.0
                && metric_sum(&members, "exflow_consume_partitions") == 4.0
                && metric_sum(&members, "exflow_consume_rebuilding_partitions") == 0.0
        },
    );
    assert!(
        third.metric("exflow_consume_takeovers_total") >= 1.0,
        "the partitions it took had been worked on"
    );
    send_to_the_end(&collector, &all[half..]);
    collector.stop();
    let want = expected();
    let got = alerts_read_back(&topics, want.len());
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    // A partition handed over mid-stream may have alerts its previous owner raised after
    // its last commit raised again by the new one: the same alerts, with the same ids.
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        want,
        "the same alerts, ids included ({duplicates} raised twice)"
    );
    for member in [first, second, third] {
        member.stop();
    }
}

#[test]
fn two_collectors_with_their_own_exporters_clocks_raise_the_alerts_of_one_replay() {
    let topics = Topics::new("cooperative-sticky");
    let first = topics.detector("detect-1");
    wait_until(
        "the detector owns every partition",
        Duration::from_secs(60),
        || first.metric("exflow_consume_partitions") == 4.0,
    );
    let second = topics.detector("detect-2");
    wait_until(
        "two detectors share the partitions",
        Duration::from_secs(60),
        || {
            let (a, b) = (
                first.metric("exflow_consume_partitions"),
                second.metric("exflow_consume_partitions"),
            );
            a > 0.0 && b > 0.0 && a + b == 4.0
        },
    );
    // softflowd's and pmacctd's exports of the same border mix, each exporter with its
    // own clock, each to a collector of its own, one after the other as a replay of both
    // captures reads them.
    let site_a = topics.collector_named("site-a");
    let site_b = topics.collector_named("site-b");
    let softflowd = datagrams(CAPTURE);
    send(&site_a, &softflowd);
    wait_until(
        "site a decoded its capture",
        Duration::from_secs(30),
        || site_a.metric("exflow_decode_records_total") == 2208.0,
    );
    wait_consumed(&site_a, &[&first, &second]);
    let pmacct = datagrams("pmacct_ipfix.pcap");
    send(&site_b, &pmacct);
    wait_until(
        "site b decoded its capture",
        Duration::from_secs(30),
        || site_b.metric("exflow_decode_datagrams_total") == pmacct.len() as f64,
    );
    site_a.stop();
    site_b.stop();
    let want = expected_of(&[CAPTURE, "pmacct_ipfix.pcap"]);
    let messages = consume(
        &topics.brokers,
        &topics.alerts,
        want.len(),
        Duration::from_secs(60),
    );
    let got: Vec<AlertKey> = counted(&messages).into_keys().collect();
    // The same alerts, ids included: a partition's clock with two collectors ticks at
    // other points of the stream than one process's table clock, but an escalation raised
    // on a tick is named by its first alert and step (bulk_egress's second step of
    // 10.10.20.15 here), not by the tick's time.
    assert_eq!(got, want);
    // Each detector reports both collectors' watermarks once they reached its partitions:
    // the alerts read back may all be another detector's, so this one may still be
    // reading site b's last watermarks (its figures are published every 100 ms).
    for detector in [&first, &second] {
        for site in ["site-a", "site-b"] {
            let name =
                format!("exflow_consume_collector_watermark_seconds{{collector=\"{site}\"}}");
            wait_until(&name, Duration::from_secs(30), || {
                detector.metric(&name) > 1.7e9
            });
        }
    }
    first.stop();
    second.stop();
}

/// 2024-03-12 08:00 UTC.
const T0_MS: u64 = 1_710_230_400_000;
const MINUTE_MS: u64 = 60_000;
/// The learning inside hosts.
const HOSTS: u8 = 16;

/// An upload of `bytes` from `inside` to `outside:443` ending at `end_ms`.
fn upload(inside: String, outside: String, bytes: u64, end_ms: u64) -> exflow::decode::FlowRecord {
    exflow::decode::FlowRecord {
        kind: exflow::decode::FlowKind::Ipfix,
        time_flow_start_ns: (end_ms - 1000) * 1_000_000,
        time_flow_end_ns: end_ms * 1_000_000,
        bytes,
        packets: bytes.div_ceil(1400),
        src_addr: inside.parse().unwrap(),
        dst_addr: outside.parse().unwrap(),
        src_port: 40_000,
        dst_port: 443,
        proto: 6,
        ..exflow::decode::FlowRecord::default()
    }
}

/// IPFIX datagrams of `records`, each exported when it ends, as (exporter, received ns,
/// datagram) like a capture's.
fn exported(records: &[exflow::decode::FlowRecord]) -> Vec<(std::net::IpAddr, u64, Vec<u8>)> {
    let mut exporter = exflow::wire::emit::Exporter::new(exflow::decode::FlowKind::Ipfix, 1);
    let mut out = Vec::new();
    for record in records {
        let mut datagrams = Vec::new();
        let export_ms = record.time_flow_end_ns / 1_000_000;
        exporter.encode(std::slice::from_ref(record), export_ms, &mut datagrams);
        let exporter_addr: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        out.extend(
            datagrams
                .into_iter()
                .map(|d| (exporter_addr, record.time_flow_end_ns, d)),
        );
    }
    out
}

/// The alerts of a one-process replay of `datagrams`.
fn replay_datagrams(
    datagrams: &[(std::net::IpAddr, u64, Vec<u8>)],
    config: &exflow::config::Config,
) -> Vec<AlertKey> {
    let mut pipeline = exflow::pipeline::Pipeline::new(config, config.enricher().unwrap(), 1);
    let mut alerts = Vec::new();
    for (exporter, received_ns, datagram) in datagrams {
        pipeline.push_datagram(*exporter, *received_ns, datagram, &mut alerts);
    }
    pipeline.finish(&mut alerts);
    let mut keys: Vec<AlertKey> = alerts
        .iter()
        .map(|a| key(&serde_json::to_value(a).unwrap()))
        .collect();
    keys.sort();
    keys
}

/// Sixteen inside hosts learn their destinations (the US) in `new_destination`'s first
/// hour; half an hour of small uploads follows (to other US addresses each time, no
/// series); then the victim writes a checkpoint, whose rewind (10 min) starts long after
/// the learning records, and dies; after the takeover every host uploads 2 MB to Russia.
/// The survivor rebuilds from the rewind only, so only the checkpoint tells it that
/// learning ended and what each host's baseline is (rebuilt from the rewind, learning
/// would start again there and the uploads would teach, not alert): the alerts are those
/// of one process that saw everything, one `new_destination` per host.
#[test]
fn a_takeover_restores_a_baseline_learned_before_the_rewind_from_the_checkpoint() {
    let mut topics = Topics::new("cooperative-sticky");
    // States of a few kB: each split into several messages of at most 2 kB.
    topics.extra = "rewind_s = 600\nmax_state_message_bytes = 2048\n\
                    [rules.new_destination]\nlearning_s = 3600\n"
        .into();
    let mut config = border_config();
    config.rules.new_destination.learning_s = 3600;
    config.scaleout.rewind_s = 600;
    let host = |h: u8| format!("10.10.1.{h}");
    let mut learning = Vec::new();
    for h in 1..=HOSTS {
        let at = T0_MS + u64::from(h) * 10_000;
        learning.push(upload(host(h), format!("52.94.0.{h}"), 50_000, at));
    }
    for h in 1..=HOSTS {
        let at = T0_MS + 40 * MINUTE_MS + u64::from(h) * 10_000;
        learning.push(upload(host(h), format!("52.95.0.{h}"), 50_000, at));
    }
    // From 60 to about 92 minutes, at uneven intervals.
    let later: Vec<_> = (0..50u64)
        .map(|i| {
            let at = T0_MS + 60 * MINUTE_MS + i * 37_000 + (i * i % 23) * 1000;
            let h = (i % u64::from(HOSTS)) as u8 + 1;
            upload(host(h), format!("52.94.1.{}", i + 1), 2_000, at)
        })
        .collect();
    let exfiltration: Vec<_> = (1..=HOSTS)
        .map(|h| {
            let at = T0_MS + 95 * MINUTE_MS + u64::from(h) * 1000;
            upload(host(h), "5.255.255.77".into(), 2_000_000, at)
        })
        .collect();
    let before = exported(&[learning.clone(), later.clone()].concat());
    let after = exported(&exfiltration);
    let want = replay_datagrams(&[before.clone(), after.clone()].concat(), &config);
    assert_eq!(
        want.iter().filter(|k| k.0 == "new_destination").count(),
        usize::from(HOSTS),
        "one process raises one new_destination per host: {want:?}"
    );

    let (survivor, victim) = two_detectors(&topics, "detect-survivor", "detect-victim");
    let collector = topics.collector();
    let records = (learning.len() + later.len()) as f64;
    send(&collector, &before);
    wait_until("the first part is decoded", Duration::from_secs(30), || {
        collector.metric("exflow_decode_records_total") == records
    });
    wait_consumed(&collector, &[&victim, &survivor]);
    // Checkpoints with the state of everything read: a whole round after it was read.
    let states = victim.metric("exflow_consume_state_checkpoints_total");
    let owned = victim.metric("exflow_consume_partitions");
    wait_until(
        "the victim writes its partitions' states again",
        Duration::from_secs(30),
        || victim.metric("exflow_consume_state_checkpoints_total") >= states + 2.0 * owned,
    );
    let victims_records = victim.metric("exflow_consume_records_total");
    assert!(victims_records > 0.0, "the victim's partitions had hosts");
    // Its states took more messages than there were states, and one was larger than a
    // message may be.
    let largest_state = victim
        .scrape()
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name.starts_with("exflow_consume_checkpoint_size_bytes{"))
        .map(|(_, bytes)| bytes)
        .fold(0.0, f64::max);
    assert!(
        largest_state > 2048.0,
        "the largest state: {largest_state} bytes"
    );
    assert!(
        victim.metric("exflow_consume_state_messages_total")
            > victim.metric("exflow_consume_state_checkpoints_total")
    );
    let read_before = survivor.metric("exflow_consume_records_total");
    victim.kill();
    wait_until(
        "the survivor takes over every partition and restores their state",
        Duration::from_secs(60),
        || {
            survivor.metric("exflow_consume_partitions") == 4.0
                && survivor.metric("exflow_consume_rebuilding_partitions") == 0.0
                && survivor.metric("exflow_consume_restored_checkpoints_total") >= 1.0
        },
    );
    assert!(survivor.metric("exflow_consume_restored_entries_total") > 0.0);
    // It replayed only the rewind of the victim's partitions, not the learning records.
    let replayed = survivor.metric("exflow_consume_records_total") - read_before;
    assert!(
        replayed < victims_records / 2.0,
        "replayed {replayed} of the victim's {victims_records} records"
    );
    send(&collector, &after);
    wait_until("the uploads are decoded", Duration::from_secs(30), || {
        collector.metric("exflow_decode_records_total") == records + exfiltration.len() as f64
    });
    collector.stop();
    let got = alerts_read_back(&topics, want.len());
    assert!(got.values().all(|&n| n == 1), "no alert twice: {got:?}");
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    survivor.stop();
}

/// `exflow loadgen` drives a collector and reads the injected scenario's alert back from
/// the alerts topic, which one detector raised: detected, with its datagram-to-alert
/// latency reported (measured, not asserted), and the alert is the injected host's.
#[test]
fn loadgen_drives_a_collector_and_reads_the_scenarios_alert_from_the_topic() {
    let mut topics = Topics::new("cooperative-sticky");
    // The load's thousands of hosts make a state of megabytes a partition: not twice a
    // second (the default is a minute).
    topics.state_interval_ms = 60_000;
    let inside = ["--inside", "10.0.0.0/8"];
    let spool = temp_dir("spool-loadgen-detect");
    let detector = Daemon::start_command(
        "detect",
        &topics.config(&spool),
        &[&inside[..], &["--instance-id", "detect-1"]].concat(),
    );
    wait_until(
        "the detector owns every partition",
        Duration::from_secs(60),
        || detector.metric("exflow_consume_partitions") == 4.0,
    );
    let spool = temp_dir("spool-loadgen-collect");
    let collector = Daemon::start_command("collect", &topics.config(&spool), &inside);
    let report = collector
        .loadgen(&[
            "--exporters",
            "4",
            "--rate",
            "20000",
            "--duration",
            "3",
            "--detect-timeout",
            "120",
            "--scenario",
            "bulk_egress@1",
            "--kafka-brokers",
            &topics.brokers,
            "--kafka-topic",
            &topics.alerts,
        ])
        .report;
    let scenarios = &report["scenarios"];
    assert_eq!(scenarios["alerts_from"], "topic", "{report}");
    let result = &scenarios["results"][0];
    assert_eq!(result["rule"], "bulk_egress", "{report}");
    assert_eq!(result["detected"], true, "{report}");
    assert!(result["latency_ms"].as_f64().is_some(), "{report}");
    let inside_host = result["inside_addr"].as_str().unwrap().to_string();
    collector.stop();
    let messages = consume(&topics.brokers, &topics.alerts, 1, Duration::from_secs(30));
    assert!(
        messages.iter().any(|m| m.alert["rule"] == "bulk_egress"
            && m.alert["inside_addr"] == inside_host
            && m.alert["outside_addr"] == "5.255.255.77"),
        "no bulk_egress alert for {inside_host}"
    );
    detector.stop();
}

/// A new owner parses a checkpoint's state off its consumer thread. When a partition
/// reaches the state's offset before the parse is done (here at once: a state of 50,000
/// hosts, taken at offset 0, while the partition's records are already there), the
/// partition waits, paused, then is sought back to where it stopped: every record is run
/// once (librdkafka's pause and resume alone lose what it had fetched), and the alerts are
/// those of a one-process replay (the state's hosts are not the capture's).
#[test]
fn a_partition_that_reaches_its_state_before_the_parse_waits_and_loses_nothing() {
    use exflow::scaleout::checkpoint::{StateChunk, state_messages};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let topics = Topics::new("cooperative-sticky");
    // A partition's checkpoint from an earlier owner: 50,000 profiled hosts, some 35 MB.
    let mut config = border_config();
    config.rules.profile.max_hosts = 50_000;
    config.rules.max_state_bytes = 1 << 30;
    let enricher = config.enricher().unwrap();
    let mut ingest = exflow::pipeline::Ingest::new(&config, enricher.clone(), 1);
    let mut shard = exflow::pipeline::Shard::new(&config, enricher, 1);
    let mut alerts = Vec::new();
    let hosts: Vec<_> = (0..50_000u32)
        .map(|h| {
            // Inside, but none of the capture's hosts.
            let inside = format!("2001:db8:10:ffff::{h:x}");
            upload(
                inside,
                "2a05:d000::1".into(),
                20_000,
                1_710_230_400_000 + u64::from(h),
            )
        })
        .collect();
    for records in hosts.chunks(17) {
        ingest.push_records(records);
        for batch in ingest.batches() {
            shard.run_batch(batch, &mut alerts);
            batch.clear();
        }
    }
    let state = shard.checkpoint().encode().unwrap();
    assert!(state.len() > 10 << 20, "a state of {} bytes", state.len());
    let header = StateChunk {
        state_offset: 0,
        rebuild_from_offset: 0,
        ..StateChunk::new("detect-before", &topics.flows, 0, 1)
    };
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &topics.brokers)
        .create()
        .unwrap();
    for (key, value) in state_messages(&header, &state, 256 << 10).unwrap() {
        producer
            .send(BaseRecord::to(&topics.state).key(&key).payload(&value))
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // The capture is on the flows topic before the detector joins.
    let collector = topics.collector();
    send_to_the_end(&collector, &datagrams(CAPTURE));
    let detector = topics.detector("detect-after");
    wait_consumed(&collector, &[&detector]);
    assert_eq!(
        detector.metric("exflow_consume_restored_checkpoints_total"),
        1.0
    );
    assert!(
        detector.metric("exflow_consume_restore_waits_total") >= 1.0,
        "partition 0 reached its state before the parse was done"
    );
    // As many of them as the partition's share of rules.max_state_bytes holds.
    assert!(detector.metric("exflow_consume_restored_entries_total") > 1000.0);
    // Each record run once: as many as the collector published (its count is of the
    // broker's acknowledgements, which may still be coming in), never more.
    wait_until("each record is run once", Duration::from_secs(30), || {
        detector.metric("exflow_consume_records_total")
            == collector.metric("exflow_collect_published_records_total")
    });
    collector.stop();
    let want = expected();
    let got = alerts_read_back(&topics, want.len());
    assert!(got.values().all(|&n| n == 1), "no alert twice: {got:?}");
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    detector.stop();
}

/// The state topic read back the way a new owner reads it, from a real broker: of a
/// partition's three generations of state, each split into messages of at most 2 kB, the
/// newest lost a message (its writer died mid-way): the one before it is restored, the
/// partial one counted and ignored; the delivered alert ids come from the latest offsets
/// record; another partition's messages stay out of it.
#[test]
fn a_new_owner_restores_the_newest_complete_state_and_counts_a_partial_one() {
    use exflow::scaleout::checkpoint::{
        CHECKPOINT_SCHEMA, CheckpointRecord, StateChunk, StateReader, offsets_key, state_messages,
    };
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let brokers = shared_brokers();
    let state_topic = create_topic(&brokers, "exflow.state.chunks", 2);
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let state = |hosts: u32| {
        let hosts: Vec<String> = (0..hosts)
            .map(|h| format!("10.1.{}.{}", h / 256, h % 256))
            .collect();
        serde_json::json!({ "version": 1, "hosts": hosts })
    };
    let generation = |partition: i32, generation: u64, state: &serde_json::Value| {
        let header = StateChunk {
            state_offset: generation as i64 * 1000,
            rebuild_from_offset: generation as i64 * 100,
            ..StateChunk::new("detect-a", "flows", partition, generation)
        };
        state_messages(&header, &serde_json::to_vec(state).unwrap(), 2048).unwrap()
    };
    let (first, second, third) = (state(300), state(600), state(900));
    let mut newest = generation(1, 3, &third);
    assert!(newest.len() >= 4, "{} messages", newest.len());
    newest.remove(2);
    let messages = [
        generation(1, 1, &first),
        generation(1, 2, &second),
        newest,
        generation(2, 9, &state(50)),
    ]
    .concat();
    for (key, value) in &messages {
        assert!(value.len() <= 2048);
        producer
            .send(BaseRecord::to(&state_topic).key(key).payload(value))
            .unwrap();
    }
    for ids in [vec!["old"], vec!["a1", "a2"]] {
        let record = CheckpointRecord {
            schema: CHECKPOINT_SCHEMA.into(),
            group: "g".into(),
            member: "detect-a".into(),
            topic: "flows".into(),
            partition: 1,
            committed_offset: 2500,
            next_offset: 2600,
            clock_ms: 0,
            written_ms: 0,
            delivered_alert_ids: ids.into_iter().map(String::from).collect(),
        };
        let value = serde_json::to_vec(&record).unwrap();
        producer
            .send(
                BaseRecord::to(&state_topic)
                    .key(&offsets_key("flows", 1))
                    .payload(&value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let reader = StateReader::new(
        &brokers,
        &state_topic,
        "exflow.alerts.v1",
        &Default::default(),
    )
    .unwrap();
    let found = reader.latest("flows", &[1, 3]).unwrap();
    assert!(!found.contains_key(&3), "partition 3 has no record");
    let one = &found[&1];
    let saved = one.state.as_ref().expect("a complete generation");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&saved.state).unwrap(),
        second
    );
    assert_eq!(
        (
            saved.generation,
            saved.state_offset,
            saved.rebuild_from_offset
        ),
        (2, 2000, 200)
    );
    assert!(saved.messages > 1, "{} messages", saved.messages);
    assert_eq!(one.partial_states, 1);
    assert_eq!(one.latest_generation, 3);
    let mut ids: Vec<&str> = one.delivered_alert_ids.iter().map(String::as_str).collect();
    ids.sort();
    assert_eq!(ids, ["a1", "a2"]);
    let partition_1_messages = messages
        .iter()
        .filter(|(k, _)| k.starts_with("flows/1/"))
        .count();
    assert_eq!(one.records, partition_1_messages as u64 + 2);
}

/// Interface names across machines: the Cisco ASR 9000's options and flow datagrams
/// (logstash's fixtures) to a collector, one detector: the collector publishes the router's
/// names before the records of the datagram that carried them, and the detector's
/// bulk_egress alert on 10.0.4.212 names its interfaces as `exflow run`'s does (in on
/// ifIndex 162 "Bundle-Ether2", out on 102 "TenGigE0_6_0_0").
#[test]
fn a_detectors_alerts_name_the_interfaces_the_collectors_exporters_announced() {
    let mut topics = Topics::new("cooperative-sticky");
    topics.extra = "[rules.bulk_egress]\nmin_bytes_out = 500\n".into();
    let inside = ["--inside", "10.0.4.212/32"];
    let spool = temp_dir("spool-names-detect");
    let detector = Daemon::start_command(
        "detect",
        &topics.config(&spool),
        &[&["--instance-id", "detect-names"][..], &inside[..]].concat(),
    );
    wait_until(
        "the detector owns every partition",
        Duration::from_secs(60),
        || detector.metric("exflow_consume_partitions") == 4.0,
    );
    let spool = temp_dir("spool-names-collect");
    let collector = Daemon::start_command(
        "collect",
        &topics.config(&spool),
        &[&["--collector-id", "site-a"][..], &inside[..]].concat(),
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for bytes in crate::support::asr9k_datagrams_with_interface_names() {
        socket
            .send_to(&bytes, ("127.0.0.1", collector.udp_port))
            .unwrap();
    }
    wait_until("all records are decoded", Duration::from_secs(30), || {
        collector.metric("exflow_decode_records_total") == 21.0
    });
    let messages = consume(&topics.brokers, &topics.alerts, 1, Duration::from_secs(60));
    let bulk: Vec<_> = messages
        .iter()
        .filter(|m| m.alert["rule"] == "bulk_egress")
        .collect();
    assert_eq!(bulk.len(), 1, "{messages:?}");
    let alert = &bulk[0].alert;
    assert_eq!(alert["inside_addr"], "10.0.4.212");
    assert_eq!(alert["in_if_description"], "Bundle-Ether2");
    assert_eq!(alert["out_if_description"], "TenGigE0_6_0_0");
    // Once per partition, each time the router wrote its names.
    let published = collector.metric("exflow_collect_interface_name_messages_total");
    assert!(published >= 4.0 && published % 4.0 == 0.0, "{published}");
    wait_until(
        "the detector read them all",
        Duration::from_secs(30),
        || detector.metric("exflow_consume_interface_name_messages_total") == published,
    );
    assert!(detector.metric("exflow_consume_interface_names") > 0.0);
    assert_eq!(
        detector.metric("exflow_consume_interface_names_refused_total"),
        0.0
    );
    collector.stop();
    detector.stop();
}
