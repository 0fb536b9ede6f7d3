//! Kafka faults end to end, each with its own tansu: the broker restarted (memory storage:
//! the topic comes back empty and is recreated) or frozen (SIGSTOP/SIGCONT) while exflow runs,
//! an alert the producer rejects for good, `kill -9` of exflow in an alert storm, an
//! unreachable broker at start-up. Each reads the
//! topic back and checks every alert id arrives once, nothing missing, and the counters.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use exflow::sink::kafka::encoding;
use exflow::sink::spool::Spool;

use crate::harness::{
    Daemon, Tansu, consume, create_named_topic, free_port, temp_dir, topic_name, wait_until,
};
use crate::support::{border_config, data, replay};

/// The watchlist rule with a 1-byte threshold and the load generator's destinations' countries
/// watched: nearly every background conversation is an alert (thousands a second).
const STORM_RULES: &str = "[rules.watchlist]\nmin_bytes = 1\n";
const STORM_ARGS: &[&str] = &[
    "--inside",
    "10.0.0.0/8",
    "--watch-country",
    "US",
    "--watch-country",
    "CN",
    "--watch-country",
    "DE",
    "--watch-country",
    "FR",
    "--watch-country",
    "GB",
    "--watch-country",
    "JP",
    "--watch-country",
    "BR",
    "--watch-country",
    "RU",
];

fn config(brokers: &str, topic: &str, spool: &Path, extra: &str) -> String {
    format!(
        "{STORM_RULES}[sink.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\nspool_dir = \"{}\"\nmessage_timeout_ms = 3000\n{extra}",
        spool.display()
    )
}

/// Alert ids on the topic, asserting that none is there twice.
fn ids_once(brokers: &str, topic: &str, expected: usize) -> BTreeSet<String> {
    let messages = consume(brokers, topic, expected, Duration::from_secs(90));
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m.alert["alert_id"].as_str().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(distinct.len(), ids.len(), "no alert twice on the topic");
    distinct
}

/// A running `exflow loadgen` and the file it writes its `--report-json` report to.
struct Storm {
    loadgen: std::process::Child,
    report: std::path::PathBuf,
}

/// `exflow loadgen` at the daemon for `seconds` (a storm of watchlist alerts), no metrics.
fn storm(daemon_port: u16, seconds: &str) -> Storm {
    let report = temp_dir("storm-report").join("report.json");
    let loadgen = Command::new(env!("CARGO_BIN_EXE_exflow"))
        .arg("loadgen")
        .args(["--target", &format!("127.0.0.1:{daemon_port}")])
        .args(["--exporters", "4", "--rate", "20000", "--duration", seconds])
        .arg("--report-json")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Storm { loadgen, report }
}

/// Waits for the load generator to end; returns the records it sent (its report's
/// `sent.records`).
fn wait_for_storm(storm: Storm) -> f64 {
    let output = storm.loadgen.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "loadgen ran: {stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&storm.report).unwrap()).unwrap();
    report["sent"]["records"]
        .as_f64()
        .unwrap_or_else(|| panic!("no sent.records in the report: {report}"))
}

/// Waits until the daemon has decoded `records` and its tables took them (so no more alerts
/// come from them).
fn wait_processed(daemon: &Daemon, records: f64) {
    wait_until("the storm is processed", Duration::from_secs(60), || {
        let decoded = daemon.metric("exflow_decode_records_total");
        decoded >= records
            && [
                "exflow_flow_records_total",
                "exflow_flow_transit_records_total",
                "exflow_flow_internal_records_total",
                "exflow_flow_queue_dropped_records_total",
            ]
            .iter()
            .map(|name| daemon.metric(name))
            .sum::<f64>()
                >= decoded
    });
}

/// Waits until everything the daemon took is acknowledged: nothing spooled and every queued
/// alert (at least one) delivered, skipped as a duplicate or dead-lettered.
fn wait_drained(daemon: &Daemon, what: &str, timeout: Duration) {
    wait_until(what, timeout, || {
        let Some(m) = daemon.scrape() else {
            return false;
        };
        let get = |name: &str| m.get(name).copied().unwrap_or(-1.0);
        get("exflow_sink_spool_alerts") == 0.0
            && get("exflow_sink_alerts_total") > 0.0
            && get("exflow_sink_kafka_delivered_alerts_total")
                + get("exflow_sink_kafka_skipped_duplicate_alerts_total")
                + get("exflow_sink_kafka_dead_lettered_alerts_total")
                >= get("exflow_sink_alerts_total")
    });
}

/// The broker dies and comes back empty while exflow runs: the producer (fenced: its
/// producer id is unknown to the new broker) is replaced, and every alert raised meanwhile
/// reaches the recreated topic, within seconds, with no restart of exflow.
#[test]
fn broker_restart_mid_run_delivers_every_alert_once() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = topic_name("exflow.alerts.restart");
    let spool = temp_dir("spool-restart");
    let tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    let daemon = Daemon::start(&config(&brokers, &topic, &spool, ""), STORM_ARGS);
    let sent = wait_for_storm(storm(daemon.udp_port, "1"));
    wait_processed(&daemon, sent);
    wait_drained(
        &daemon,
        "the first storm is delivered",
        Duration::from_secs(60),
    );
    let first_raised = daemon.metric("exflow_sink_alerts_total");
    assert!(first_raised >= 1000.0, "a storm: {first_raised} alerts");
    let before = ids_once(&brokers, &topic, first_raised as usize);
    assert_eq!(before.len() as f64, first_raised);

    drop(tansu);
    let decoded = daemon.metric("exflow_decode_records_total");
    let sent = wait_for_storm(storm(daemon.udp_port, "1"));
    wait_processed(&daemon, decoded + sent);
    wait_until("deliveries fail", Duration::from_secs(60), || {
        daemon.metric("exflow_sink_kafka_failed_deliveries_total") > 0.0
            && daemon.metric("exflow_sink_kafka_broker_up") == 0.0
    });
    let raised = daemon.metric("exflow_sink_alerts_total");
    assert!(
        raised > first_raised,
        "alerts raised while the broker is down"
    );

    let _tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    wait_drained(
        &daemon,
        "the spool drains into the new broker",
        Duration::from_secs(60),
    );
    let raised = daemon.metric("exflow_sink_alerts_total");
    assert!(daemon.metric("exflow_sink_kafka_producer_recreated_total") >= 1.0);
    assert_eq!(daemon.metric("exflow_sink_kafka_broker_up"), 1.0);
    assert_eq!(
        daemon.metric("exflow_sink_kafka_dead_lettered_alerts_total"),
        0.0
    );
    let after = ids_once(&brokers, &topic, (raised - first_raised) as usize);
    assert!(before.is_disjoint(&after), "nothing delivered twice");
    assert_eq!(
        before.len() + after.len(),
        raised as usize,
        "every alert arrives"
    );
    assert_eq!(
        after.len() as f64,
        raised - first_raised,
        "the alerts raised while the broker was away arrive"
    );
    daemon.stop();
    let _ = std::fs::remove_dir_all(&spool);
}

/// The broker is frozen (SIGSTOP) while alerts are in flight and thawed (SIGCONT): every alert
/// reaches the topic exactly once, the ones in flight included, without a restart of exflow.
#[test]
fn broker_freeze_delivers_every_alert_and_resends_keep_their_id() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = topic_name("exflow.alerts.freeze");
    let spool = temp_dir("spool-freeze");
    let tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    let daemon = Daemon::start(&config(&brokers, &topic, &spool, ""), STORM_ARGS);
    let load = storm(daemon.udp_port, "3");
    wait_until(
        "alerts are being delivered",
        Duration::from_secs(30),
        || daemon.metric("exflow_sink_kafka_delivered_alerts_total") >= 100.0,
    );
    tansu.signal(libc::SIGSTOP);
    wait_until("deliveries fail", Duration::from_secs(60), || {
        daemon.metric("exflow_sink_kafka_failed_deliveries_total") > 0.0
            && daemon.metric("exflow_sink_kafka_broker_up") == 0.0
    });
    let sent = wait_for_storm(load);
    wait_processed(&daemon, sent);
    tansu.signal(libc::SIGCONT);
    wait_drained(
        &daemon,
        "the spool drains after the thaw",
        Duration::from_secs(60),
    );
    let raised = daemon.metric("exflow_sink_alerts_total");
    assert!(raised >= 1000.0, "a storm: {raised} alerts");
    assert!(daemon.metric("exflow_sink_kafka_producer_recreated_total") >= 1.0);
    assert_eq!(daemon.metric("exflow_sink_kafka_broker_up"), 1.0);
    // In-flight alerts the frozen broker wrote but never acknowledged are skipped when the
    // topic's tail shows them; not all are yet: duplicates are allowed here, each with the
    // same alert_id, and reported.
    let messages = consume(&brokers, &topic, raised as usize, Duration::from_secs(90));
    let ids: BTreeSet<&str> = messages
        .iter()
        .map(|m| m.alert["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), raised as usize, "every alert arrives");
    eprintln!(
        "freeze: {} alerts, {} sent twice, {} skipped as already on the topic",
        raised,
        messages.len() - ids.len(),
        daemon.metric("exflow_sink_kafka_skipped_duplicate_alerts_total")
    );
    daemon.stop();
    let _ = std::fs::remove_dir_all(&spool);
}

/// An alert larger than the producer's `message.max.bytes` is rejected for good: it goes to
/// the dead-letter file, counted, and the alerts behind it are delivered.
#[test]
fn permanently_rejected_alert_is_dead_lettered_and_blocks_nothing() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = topic_name("exflow.alerts.rejected");
    let spool = temp_dir("spool-rejected");
    let (alerts, _) = replay(&["softflowd_ipfix.pcap"], &border_config(), 1);
    assert!(alerts.len() >= 5);
    let mut huge = alerts[0].clone();
    huge.alert_id = "00000000deadbeef".to_string();
    huge.summary = "x".repeat(4000);
    {
        // The huge alert first: the others wait behind it in the spool.
        let mut spooled = Spool::open(&spool, 1 << 30).unwrap();
        for alert in std::iter::once(&huge).chain(&alerts) {
            spooled.append(&encoding::encode(alert).unwrap()).unwrap();
        }
        spooled.close().unwrap();
    }
    let _tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    let extra = "[sink.kafka.librdkafka_options]\n\"message.max.bytes\" = \"2000\"\n";
    let daemon = Daemon::start(&config(&brokers, &topic, &spool, extra), &[]);
    wait_until("the spool drains", Duration::from_secs(60), || {
        daemon.metric("exflow_sink_spool_alerts") == 0.0
    });
    assert_eq!(
        daemon.metric("exflow_sink_kafka_dead_lettered_alerts_total"),
        1.0
    );
    assert_eq!(
        daemon.metric("exflow_sink_kafka_delivered_alerts_total"),
        alerts.len() as f64
    );
    let ids = ids_once(&brokers, &topic, alerts.len());
    let expected: BTreeSet<String> = alerts.iter().map(|a| a.alert_id.clone()).collect();
    assert_eq!(ids, expected);
    let dead = std::fs::read_to_string(spool.join("dead-letter.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["alert_id"], "00000000deadbeef");
    daemon.stop();
    let _ = std::fs::remove_dir_all(&spool);
}

/// Alert ids the spool in `dir` holds unacknowledged (the daemon is not running).
fn spooled_ids(dir: &Path) -> BTreeSet<String> {
    let mut spool = Spool::open(dir, 1 << 30).unwrap();
    let mut entries = Vec::new();
    spool.read(0, usize::MAX, &mut entries).unwrap();
    entries
        .iter()
        .map(|(_, entry)| encoding::decode(entry).alert_id.into_owned())
        .collect()
}

/// `kill -9` while a storm of alerts is being delivered, then a restart: the topic ends up
/// with what it had plus what the spool held, each alert id once (the spooled alerts that
/// reached the topic before the kill are found there and not sent again).
#[test]
fn kill_9_during_a_storm_then_restart_delivers_nothing_twice() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = topic_name("exflow.alerts.storm-kill");
    let spool = temp_dir("spool-storm-kill");
    let _tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    let config = config(&brokers, &topic, &spool, "");
    let first = Daemon::start(&config, STORM_ARGS);
    let load = storm(first.udp_port, "2");
    wait_until(
        "alerts are being delivered",
        Duration::from_secs(30),
        || first.metric("exflow_sink_kafka_delivered_alerts_total") >= 2000.0,
    );
    first.kill();
    let _ = load.loadgen.wait_with_output();
    let spooled = spooled_ids(&spool);
    let delivered_before = consume(&brokers, &topic, 1, Duration::from_secs(30));
    let before: BTreeSet<String> = delivered_before
        .iter()
        .map(|m| m.alert["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        before.len(),
        delivered_before.len(),
        "no duplicates before the restart"
    );
    assert!(!spooled.is_empty() && before.len() >= 2000);
    let known = spooled.intersection(&before).count();

    let second = Daemon::start(&config, STORM_ARGS);
    wait_until(
        "the spool drains after the restart",
        Duration::from_secs(60),
        || {
            second.metric("exflow_sink_spool_alerts") == 0.0
                && second.metric("exflow_sink_kafka_delivered_alerts_total")
                    + second.metric("exflow_sink_kafka_skipped_duplicate_alerts_total")
                    >= spooled.len() as f64
        },
    );
    let skipped = second.metric("exflow_sink_kafka_skipped_duplicate_alerts_total");
    let delivered = second.metric("exflow_sink_kafka_delivered_alerts_total");
    second.stop();
    eprintln!(
        "kill -9: {} on the topic before, {} spooled, {known} of them on the topic, {skipped} skipped, {delivered} delivered",
        before.len(),
        spooled.len()
    );
    assert_eq!(
        skipped, known as f64,
        "every spooled alert on the topic is skipped"
    );
    assert_eq!(delivered, (spooled.len() - known) as f64);
    let expected: BTreeSet<String> = before.union(&spooled).cloned().collect();
    let after = ids_once(&brokers, &topic, expected.len());
    assert_eq!(
        after, expected,
        "what the topic had plus what the spool held, once each"
    );
    let _ = std::fs::remove_dir_all(&spool);
}

/// A 64 KiB tmpfs for the spool (root only: `None`, with a message, otherwise), unmounted on
/// drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount() -> Option<SmallFs> {
        let path = temp_dir("small-fs");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("skipped: mounting a small tmpfs for the spool needs root");
            return None;
        }
        Some(SmallFs(path))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The spool's filesystem (64 KiB, one spool segment's worth of a few dozen alerts) fills
/// while the broker is down: what the disk cannot take is held in memory (bounded) and the
/// rest dropped, counted. When the broker is back, delivering what is on disk frees the
/// space, the held alerts reach the disk and are delivered in turn: nothing stays stuck,
/// every alert taken is delivered once or counted as dropped.
#[test]
fn full_disk_spool_recovers_and_every_alert_is_delivered_or_counted() {
    let Some(small) = SmallFs::mount() else {
        return;
    };
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = topic_name("exflow.alerts.full-disk");
    let spool = small.0.join("spool");
    let daemon = Daemon::start(&config(&brokers, &topic, &spool, ""), STORM_ARGS);
    let sent = wait_for_storm(storm(daemon.udp_port, "1"));
    wait_processed(&daemon, sent);
    // Every alert taken is on disk, held in memory or dropped; all three happen.
    let mut full = (0.0, 0.0, 0.0);
    wait_until("the disk is full", Duration::from_secs(30), || {
        let Some(m) = daemon.scrape() else {
            return false;
        };
        let get = |name: &str| m.get(name).copied().unwrap_or(-1.0);
        full = (
            get("exflow_sink_spool_alerts"),
            get("exflow_sink_spool_held_alerts"),
            get("exflow_sink_spool_dropped_alerts_total"),
        );
        full.0 > 0.0
            && full.1 > 0.0
            && full.2 > 0.0
            && full.0 + full.1 + full.2 == get("exflow_sink_alerts_total")
    });
    let (on_disk, held, _) = full;

    let _tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    wait_until(
        "every alert is delivered or counted as dropped",
        Duration::from_secs(60),
        || {
            let Some(m) = daemon.scrape() else {
                return false;
            };
            let get = |name: &str| m.get(name).copied().unwrap_or(-1.0);
            get("exflow_sink_spool_alerts") == 0.0
                && get("exflow_sink_spool_held_alerts") == 0.0
                && get("exflow_sink_kafka_delivered_alerts_total")
                    + get("exflow_sink_spool_dropped_alerts_total")
                    == get("exflow_sink_alerts_total")
        },
    );
    let raised = daemon.metric("exflow_sink_alerts_total");
    let delivered = daemon.metric("exflow_sink_kafka_delivered_alerts_total");
    let dropped = daemon.metric("exflow_sink_spool_dropped_alerts_total");
    eprintln!(
        "full disk: {raised} alerts, {on_disk} on the full disk and {held} held in memory, \
         then {delivered} delivered, {dropped} dropped"
    );
    assert!(
        delivered >= on_disk + held,
        "the alerts held in memory are delivered too"
    );
    let ids = ids_once(&brokers, &topic, delivered as usize);
    assert_eq!(ids.len() as f64, delivered);
    let (_, log) = daemon.stop();
    assert!(
        !log.contains("lost at shutdown"),
        "nothing is held in memory at shutdown: {log}"
    );
}

/// With the broker unreachable, the daemon binds its sockets and serves metrics first and
/// checks Kafka in the background: every datagram is taken, the alerts wait in the spool.
#[test]
fn unreachable_broker_does_not_hold_up_start_up() {
    let brokers = format!("127.0.0.1:{}", free_port());
    let topic = topic_name("exflow.alerts.start-up");
    let spool = temp_dir("spool-start-up");
    let daemon = Daemon::start(&config(&brokers, &topic, &spool, ""), &[]);
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    wait_until("the broker check failed", Duration::from_secs(30), || {
        daemon.log_contains("kafka broker unreachable")
    });
    assert_eq!(daemon.metric("exflow_sink_kafka_broker_up"), 0.0);
    let (_, log) = daemon.stop();
    let serving = log.find("serving /metrics").expect("metrics served");
    let checked = log
        .find("kafka broker unreachable")
        .expect("broker checked");
    assert!(
        serving < checked,
        "sockets bound before the broker check: {log}"
    );
    let _ = std::fs::remove_dir_all(&spool);
}
