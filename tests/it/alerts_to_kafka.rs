//! Alerts on Kafka end to end: the daemon on live UDP with a real broker, a real exporter
//! (softflowd) reading the border mix, a broker outage, `kill -9` with a full spool.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::harness::{
    Consumed, Daemon, Tansu, consume, create_named_topic, create_topic, free_port, shared_brokers,
    temp_dir, topic_name, wait_until,
};
use crate::support::{border_config, data, replay};

fn kafka_config(brokers: &str, topic: &str, spool: &std::path::Path) -> String {
    format!(
        "[sink.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\nspool_dir = \"{}\"\nmessage_timeout_ms = 3000\n",
        spool.display()
    )
}

fn ids(messages: &[Consumed]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.alert["alert_id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_valid(messages: &[Consumed]) {
    assert!(!messages.is_empty(), "no alert read back");
    for m in messages {
        assert_eq!(
            m.headers.get("schema").map(String::as_str),
            Some("exflow.alert.v1")
        );
        assert_eq!(
            m.headers.get("rule").map(String::as_str),
            m.alert["rule"].as_str()
        );
        assert_eq!(
            Some(m.key.as_str()),
            m.alert["inside_addr"].as_str(),
            "keyed by the inside host"
        );
    }
    // One host, one partition.
    let mut partitions: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for m in messages {
        partitions.entry(&m.key).or_default().insert(m.partition);
    }
    assert!(partitions.values().all(|p| p.len() == 1), "{partitions:?}");
    crate::support::assert_json_schema_valid(messages.iter().map(|m| &m.alert));
}

/// Live UDP into the daemon gives the same alerts, ids included, as replaying the capture,
/// and every one reaches the topic once, keyed by the inside host with its headers.
#[test]
fn live_alerts_reach_kafka_exactly_as_replayed() {
    let brokers = shared_brokers();
    let topic = create_topic(&brokers, "exflow.alerts.live", 3);
    let spool = temp_dir("spool-live");
    let daemon = Daemon::start(&kafka_config(&brokers, &topic, &spool), &[]);
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    daemon.stop();
    let (expected, _) = replay(&["softflowd_ipfix.pcap"], &border_config(), 1);
    let messages = consume(&brokers, &topic, expected.len(), Duration::from_secs(60));
    assert_valid(&messages);
    let mut got = ids(&messages);
    let mut want: Vec<String> = expected.iter().map(|a| a.alert_id.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&spool);
}

/// softflowd, installed from Debian, reads the border mix and exports IPFIX to the daemon;
/// the topic gets the alerts the captures' README expects.
#[test]
fn softflowd_exports_to_the_daemon_and_the_alerts_reach_kafka() {
    let brokers = shared_brokers();
    let topic = create_topic(&brokers, "exflow.alerts.softflowd", 3);
    let spool = temp_dir("spool-softflowd");
    let daemon = Daemon::start(&kafka_config(&brokers, &topic, &spool), &[]);
    let status = std::process::Command::new("softflowd")
        .args(["-d", "-a", "-m", "1024", "-v", "10", "-t", "maxlife=300"])
        .arg("-r")
        .arg(data("border_mix.pcap"))
        .args(["-n", &format!("127.0.0.1:{}", daemon.udp_port)])
        .arg("-p")
        .arg(spool.join("softflowd.pid"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("softflowd is installed (apt-get install softflowd; .ci/run does)");
    assert!(status.success());
    wait_until(
        "softflowd's 2208 records are decoded",
        Duration::from_secs(30),
        || daemon.metric("exflow_decode_records_total") == 2208.0,
    );
    assert_eq!(daemon.metric("exflow_decode_lost_records_total"), 0.0);
    daemon.stop();
    let messages = consume(&brokers, &topic, 9, Duration::from_secs(60));
    assert_valid(&messages);
    assert_eq!(
        crate::replay::json_pairs(messages.iter().map(|m| &m.alert)),
        crate::replay::expected(true)
    );
    let _ = std::fs::remove_dir_all(&spool);
}

/// The broker is down while alerts happen: they wait in the spool. A broker comes up on
/// the same address (tansu's memory storage starts empty): every alert arrives exactly
/// once, and each host's alerts in the order they were raised.
#[test]
fn broker_outage_spools_then_delivers_exactly_once_in_order() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = topic_name("exflow.alerts.outage");
    let spool = temp_dir("spool-outage");
    let daemon = Daemon::start(&kafka_config(&brokers, &topic, &spool), &[]);
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    let raised = daemon.metric("exflow_sink_alerts_total");
    assert!(raised >= 1.0, "alerts were raised before the end of input");
    wait_until("the alerts are spooled", Duration::from_secs(20), || {
        daemon.metric("exflow_sink_spool_alerts") == raised
    });
    assert_eq!(
        daemon.metric("exflow_sink_kafka_delivered_alerts_total"),
        0.0
    );
    let tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    wait_until("the spool drains", Duration::from_secs(60), || {
        daemon.metric("exflow_sink_spool_alerts") == 0.0
    });
    daemon.stop();
    let (expected, _) = replay(&["softflowd_ipfix.pcap"], &border_config(), 1);
    let messages = consume(
        &tansu.brokers,
        &topic,
        expected.len(),
        Duration::from_secs(60),
    );
    assert_valid(&messages);
    let got = ids(&messages);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "no alert twice");
    assert_eq!(got.len(), expected.len(), "every alert arrives");
    assert_in_order_per_host(&messages, &expected);
    let _ = std::fs::remove_dir_all(&spool);
}

/// Within each partition, a host's alerts come in the order the pipeline raised them.
fn assert_in_order_per_host(messages: &[Consumed], raised: &[exflow::detect::Alert]) {
    let position: BTreeMap<&str, usize> = raised
        .iter()
        .enumerate()
        .map(|(i, a)| (a.alert_id.as_str(), i))
        .collect();
    let mut by_host: BTreeMap<&str, Vec<(i64, usize)>> = BTreeMap::new();
    for m in messages {
        let id = m.alert["alert_id"].as_str().unwrap();
        by_host
            .entry(&m.key)
            .or_default()
            .push((m.offset, position[id]));
    }
    assert!(!by_host.is_empty(), "no alert read back");
    for (host, mut seen) in by_host {
        seen.sort();
        assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{host}: {seen:?}");
    }
}

/// `kill -9` while the broker is down and the spool holds alerts; a restart with the
/// broker back delivers every spooled alert exactly once.
#[test]
fn kill_9_with_a_full_spool_then_restart_delivers_everything_once() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = topic_name("exflow.alerts.kill9");
    let spool = temp_dir("spool-kill9");
    let config = kafka_config(&brokers, &topic, &spool);
    let first = Daemon::start(&config, &[]);
    first.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        first.metric("exflow_decode_records_total") == 2208.0
    });
    let raised = first.metric("exflow_sink_alerts_total");
    wait_until("the alerts are spooled", Duration::from_secs(20), || {
        first.metric("exflow_sink_spool_alerts") == raised
    });
    first.kill();
    let tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    let second = Daemon::start(&config, &[]);
    wait_until(
        "the spool drains after the restart",
        Duration::from_secs(60),
        || second.metric("exflow_sink_spool_alerts") == 0.0,
    );
    assert_eq!(
        second.metric("exflow_sink_kafka_delivered_alerts_total"),
        raised
    );
    second.stop();
    let messages = consume(
        &tansu.brokers,
        &topic,
        raised as usize,
        Duration::from_secs(60),
    );
    assert_valid(&messages);
    let got = ids(&messages);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "no alert twice");
    assert_eq!(got.len(), raised as usize, "every spooled alert arrives");
    let (replayed, _) = replay(&["softflowd_ipfix.pcap"], &border_config(), 1);
    let known: BTreeSet<&str> = replayed.iter().map(|a| a.alert_id.as_str()).collect();
    assert!(
        got.iter().all(|id| known.contains(id.as_str())),
        "the spooled alerts are the pipeline's"
    );
    let _ = std::fs::remove_dir_all(&spool);
}

/// The optional flows stream: every decoded record, keyed by its inside host, as JSON with
/// GoFlow2's field names or as GoFlow2's protobuf.
#[test]
fn flows_stream_publishes_every_record() {
    use prost::Message as _;
    let brokers = shared_brokers();
    for format in ["json", "protobuf"] {
        let alerts = create_topic(&brokers, "exflow.alerts.flows", 1);
        let flows = create_topic(&brokers, "exflow.flows", 3);
        let spool = temp_dir("spool-flows");
        let config = format!(
            "{}flows_topic = \"{flows}\"\nflows_format = \"{format}\"\n",
            kafka_config(&brokers, &alerts, &spool)
        );
        let daemon = Daemon::start(&config, &[]);
        daemon.send_capture(&data("softflowd_v5.pcap"));
        wait_until("all records are decoded", Duration::from_secs(30), || {
            daemon.metric("exflow_decode_records_total") == 1682.0
        });
        daemon.stop();
        let consumer = crate::harness::raw_consumer(&brokers, &flows);
        let messages = crate::harness::consume_raw(&consumer, 1682, Duration::from_secs(60));
        assert_eq!(messages.len(), 1682, "{format}");
        let b1 = messages
            .iter()
            .filter(|(key, _)| key == "10.10.20.15")
            .count();
        assert!(b1 >= 18, "{format}: B1's records keyed by its inside host");
        let (_, first) = &messages[0];
        match format {
            "json" => {
                let record: serde_json::Value = serde_json::from_slice(first).unwrap();
                assert_eq!(record["type"], "NETFLOW_V5");
                assert!(record["src_addr"].is_string() && record["bytes"].is_u64());
            }
            _ => {
                let record = exflow::sink::flows::FlowMessage::decode(first.as_slice()).unwrap();
                assert_eq!(record.r#type, 2);
                assert_eq!(record.sampler_address, vec![127, 0, 0, 1]);
            }
        }
        let _ = std::fs::remove_dir_all(&spool);
    }
}

/// Interface names from options data through the daemon: the Cisco ASR 9000's options and
/// flow datagrams (logstash's fixtures) on live UDP. The flows stream's JSON records and the
/// alert carry the descriptions of the record 10.0.4.212:50691 -> 10.0.3.110:443: in on
/// ifIndex 162 "Bundle-Ether2", out on 102 "TenGigE0_6_0_0" (the receive worker's decoder
/// learns them, the shard names its alert from the directory they share).
#[test]
fn flows_and_alerts_carry_interface_names_from_options_data() {
    let brokers = shared_brokers();
    let alerts = create_topic(&brokers, "exflow.alerts.names", 1);
    let flows = create_topic(&brokers, "exflow.flows.names", 1);
    let spool = temp_dir("spool-names");
    let config = format!(
        "[rules.bulk_egress]\nmin_bytes_out = 500\n{}flows_topic = \"{flows}\"\n",
        kafka_config(&brokers, &alerts, &spool)
    );
    let daemon = Daemon::start(&config, &["--inside", "10.0.4.212/32"]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for bytes in crate::support::asr9k_datagrams_with_interface_names() {
        socket
            .send_to(&bytes, ("127.0.0.1", daemon.udp_port))
            .unwrap();
    }
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 21.0
    });
    daemon.stop();
    let consumer = crate::harness::raw_consumer(&brokers, &flows);
    let messages = crate::harness::consume_raw(&consumer, 21, Duration::from_secs(60));
    assert_eq!(messages.len(), 21);
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|(_, value)| serde_json::from_slice(value).unwrap())
        .collect();
    let record = records
        .iter()
        .find(|r| r["src_addr"] == "10.0.4.212")
        .unwrap();
    assert_eq!(record["in_if"], 162);
    assert_eq!(record["in_if_description"], "Bundle-Ether2");
    assert_eq!(record["out_if_description"], "TenGigE0_6_0_0");
    let named = records
        .iter()
        .filter(|r| r.get("in_if_description").is_some())
        .count();
    assert!(named > 1 && named < 21, "{named} records name their input");

    let got = consume(&brokers, &alerts, 1, Duration::from_secs(60));
    assert_valid(&got);
    let bulk: Vec<_> = got
        .iter()
        .filter(|m| m.alert["rule"] == "bulk_egress")
        .collect();
    assert_eq!(bulk.len(), 1);
    let alert = &bulk[0].alert;
    assert_eq!(alert["inside_addr"], "10.0.4.212");
    assert_eq!(alert["in_if_description"], "Bundle-Ether2");
    assert_eq!(alert["out_if_description"], "TenGigE0_6_0_0");
    assert!(alert.get("in_if_name").is_none());
    let _ = std::fs::remove_dir_all(&spool);
}

/// With `ocsf_topic` set, each alert is also an OCSF Detection Finding on its own topic,
/// through the same spool: a broker outage holds both copies (two spool entries per alert)
/// and, when the broker answers, each topic gets every one exactly once.
#[test]
fn ocsf_findings_survive_an_outage_like_the_alerts() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = topic_name("exflow.alerts.ocsf");
    let ocsf_topic = topic_name("exflow.findings.ocsf");
    let spool = temp_dir("spool-ocsf");
    let config = format!(
        "{}ocsf_topic = \"{ocsf_topic}\"\n",
        kafka_config(&brokers, &topic, &spool)
    );
    let daemon = Daemon::start(&config, &[]);
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    let raised = daemon.metric("exflow_sink_alerts_total");
    assert!(raised >= 1.0, "alerts were raised before the end of input");
    wait_until(
        "each alert and its finding are spooled",
        Duration::from_secs(20),
        || daemon.metric("exflow_sink_spool_alerts") == 2.0 * raised,
    );
    let tansu = Tansu::start(port);
    create_named_topic(&brokers, &topic, 3);
    create_named_topic(&brokers, &ocsf_topic, 3);
    wait_until("the spool drains", Duration::from_secs(60), || {
        daemon.metric("exflow_sink_spool_alerts") == 0.0
    });
    daemon.stop();
    let (expected, _) = replay(&["softflowd_ipfix.pcap"], &border_config(), 1);
    let alerts = consume(
        &tansu.brokers,
        &topic,
        expected.len(),
        Duration::from_secs(60),
    );
    assert_valid(&alerts);
    let findings = consume(
        &tansu.brokers,
        &ocsf_topic,
        expected.len(),
        Duration::from_secs(60),
    );
    let mut want: Vec<String> = expected.iter().map(|a| a.alert_id.clone()).collect();
    want.sort();
    assert!(!want.is_empty());
    let mut got_alerts = ids(&alerts);
    got_alerts.sort();
    assert_eq!(got_alerts, want, "every alert once on the alert topic");
    let mut got_findings = Vec::new();
    for m in &findings {
        let f = &m.alert;
        assert_eq!(
            m.headers.get("schema").map(String::as_str),
            Some("exflow.ocsf.detection_finding.v1")
        );
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(f["metadata"]["version"], "1.3.0");
        assert_eq!(Some(m.key.as_str()), f["device"]["ip"].as_str());
        let id = f["metadata"]["uid"].as_str().unwrap();
        let alert = expected.iter().find(|a| a.alert_id == id).unwrap();
        assert_eq!(f["finding_info"]["analytic"]["name"], alert.rule);
        assert_eq!(f["message"], alert.summary.as_str());
        assert_eq!(f["time"], alert.event_time_ms);
        got_findings.push(id.to_string());
    }
    got_findings.sort();
    assert_eq!(got_findings, want, "every alert once as a finding");
    let _ = std::fs::remove_dir_all(&spool);
}
