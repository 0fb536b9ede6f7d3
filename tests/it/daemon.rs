//! `exflow run` on live UDP: metrics, the state file across a restart, the threat-intel
//! reload on SIGHUP, and the load harness against it.

use std::time::Duration;

use crate::harness::{Daemon, exflow_exits, free_port, temp_dir, wait_until};
use crate::support::data;

fn file_sink(dir: &std::path::Path) -> String {
    format!(
        "[sink]\nfile = \"{}\"\n",
        dir.join("alerts.jsonl").display()
    )
}

fn alerts_in(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn metrics_count_every_stage_and_alerts_go_to_the_file_sink() {
    let dir = temp_dir("daemon-metrics");
    let daemon = Daemon::start(&file_sink(&dir), &[]);
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    let metrics = daemon.scrape().unwrap();
    let listen = format!(
        "exflow_source_datagrams_total{{listen=\"127.0.0.1:{}\"}}",
        daemon.udp_port
    );
    assert_eq!(metrics[&listen], 107.0);
    assert_eq!(
        metrics["exflow_decode_exporter_records_total{exporter=\"127.0.0.1\"}"],
        2208.0
    );
    // A third of softflowd's records are over an hour late (it flushed its cache at
    // the end of the capture): counted, not in the table.
    assert_eq!(
        metrics["exflow_flow_records_total"] + metrics["exflow_flow_late_dropped_records_total"],
        2208.0
    );
    assert_eq!(metrics["exflow_flow_clock_skewed_records_total"], 0.0);
    assert_eq!(
        metrics["exflow_decode_errors_total{kind=\"truncated\"}"],
        0.0
    );
    daemon.stop();
    let alerts = alerts_in(&dir);
    let (replayed, _) = crate::support::replay(
        &["softflowd_ipfix.pcap"],
        &crate::support::border_config(),
        1,
    );
    assert_eq!(
        alerts.len(),
        replayed.len(),
        "the file holds every alert, the last ones flushed at shutdown"
    );
}

/// Several receive workers and flow-table shards, each a thread: the same records reach
/// the tables and the same alerts come out as from a one-thread replay.
#[test]
fn workers_and_shards_on_threads_raise_what_replay_raises() {
    raises_what_replay_raises(
        "daemon-threads",
        "[source]\nworkers = 2\n\n[flow]\nshards = 3\n",
    );
}

/// `flow.shards = 0`: the one receive worker runs the table and the rules itself, and the
/// alerts are still a replay's.
#[test]
fn the_inline_table_raises_what_replay_raises() {
    raises_what_replay_raises("daemon-inline", "[flow]\nshards = 0\n");
}

fn raises_what_replay_raises(name: &str, threads: &str) {
    let dir = temp_dir(name);
    let config = format!("{}\n{threads}", file_sink(&dir));
    let daemon = Daemon::start(&config, &[]);
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until(
        "all records are in the tables",
        Duration::from_secs(30),
        || {
            daemon.metric("exflow_flow_records_total")
                + daemon.metric("exflow_flow_late_dropped_records_total")
                == 2208.0
        },
    );
    assert_eq!(
        daemon.metric("exflow_flow_queue_dropped_records_total"),
        0.0
    );
    daemon.stop();
    let ids = |alerts: Vec<String>| {
        alerts
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
    };
    let live = alerts_in(&dir)
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let (replayed, _) = crate::support::replay(
        &["softflowd_ipfix.pcap"],
        &crate::support::border_config(),
        1,
    );
    let replayed = ids(replayed.into_iter().map(|a| a.alert_id).collect());
    assert!(!replayed.is_empty(), "the capture raises alerts");
    assert_eq!(ids(live), replayed);
}

/// pmacct's pmacctd (Debian's, with its nfprobe plugin) reads the border mix and exports
/// IPFIX to the daemon live: every record arrives and the alerts are the ones the captures'
/// README expects.
#[test]
fn pmacct_exports_to_the_daemon_and_the_expected_alerts_come_out() {
    let dir = temp_dir("daemon-pmacct");
    let daemon = Daemon::start(&file_sink(&dir), &[]);
    let config = dir.join("pmacctd.conf");
    std::fs::write(
        &config,
        format!(
            "daemonize: false\n\
             pidfile: {}\n\
             pcap_savefile: {}\n\
             plugins: nfprobe[exp]\n\
             nfprobe_receiver[exp]: 127.0.0.1:{}\n\
             nfprobe_version[exp]: 10\n\
             nfprobe_timeouts[exp]: tcp=3600:tcp.fin=300:udp=300:maxlife=300\n\
             aggregate[exp]: src_host, dst_host, src_port, dst_port, proto, tos, tcpflags\n",
            dir.join("pmacctd.pid").display(),
            data("border_mix.pcap").display(),
            daemon.udp_port
        ),
    )
    .unwrap();
    run_pmacctd(&config);
    wait_until(
        "pmacct's 2230 records are decoded",
        Duration::from_secs(30),
        || daemon.metric("exflow_decode_records_total") == 2230.0,
    );
    assert_eq!(daemon.metric("exflow_decode_lost_records_total"), 0.0);
    daemon.stop();
    assert_eq!(
        crate::replay::json_pairs(&alerts_in(&dir)),
        crate::replay::expected(true)
    );
}

/// pmacct's pmacctd with its sfprobe plugin (Debian's) reads the border mix and exports sFlow
/// v5 to the daemon live, one flow sample per packet (sfprobe's default rate, 1 in 1): every
/// sample arrives. sFlow has no flow times, so a sample is timed by its arrival and the
/// capture is read in seconds: the volume rules fire as with NetFlow (bulk_egress for B1,
/// B2 and D, B1's escalation, dns_tunnel for E1 and E2), the rules that need the capture's
/// hours (long_lived_foreign, beacon) do not.
#[test]
fn pmacct_sfprobe_exports_sflow_and_the_volume_alerts_come_out() {
    let dir = temp_dir("daemon-pmacct-sflow");
    let daemon = Daemon::start(&file_sink(&dir), &[]);
    let config = dir.join("pmacctd.conf");
    std::fs::write(
        &config,
        format!(
            "daemonize: false\n\
             pidfile: {}\n\
             pcap_savefile: {}\n\
             plugins: sfprobe[exp]\n\
             sfprobe_receiver[exp]: 127.0.0.1:{}\n",
            dir.join("pmacctd.pid").display(),
            data("border_mix.pcap").display(),
            daemon.udp_port
        ),
    )
    .unwrap();
    run_pmacctd(&config);
    daemon.wait_for_metric(
        "sfprobe's 44494 samples are decoded",
        "exflow_decode_records_total",
        44494.0,
        Duration::from_secs(60),
    );
    assert_eq!(daemon.metric("exflow_decode_lost_datagrams_total"), 0.0);
    daemon.stop();
    let alerts = alerts_in(&dir);
    let pair = |rule: &str, inside: &str, outside: &str| {
        (rule.to_string(), inside.to_string(), outside.to_string())
    };
    let expected: std::collections::BTreeSet<_> = [
        pair("bulk_egress", "10.10.20.15", "5.255.255.77"),
        pair("bulk_egress", "10.10.20.16", "39.156.66.10"),
        pair("bulk_egress", "2001:db8:10:1::25", "2a02:6b8:a::a"),
        pair("dns_tunnel", "10.10.40.23", "77.88.8.8"),
        pair("dns_tunnel", "10.10.40.24", "114.114.114.114"),
    ]
    .into();
    assert_eq!(crate::replay::json_pairs(&alerts), expected);
    // B1's 600 MB escalates bulk_egress, naming the first alert.
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "bulk_egress" && a["escalates"].is_string()),
        "{alerts:?}"
    );
}

/// Templates survive a restart: data sent after it decodes although the exporter has not
/// re-sent its templates.
#[test]
fn templates_survive_a_restart_through_the_state_file() {
    let dir = temp_dir("daemon-state");
    let config = format!(
        "state_file = \"{}\"\n{}",
        dir.join("state.json").display(),
        file_sink(&dir)
    );
    let datagrams = crate::support::datagrams("pmacct_ipfix.pcap");
    let first = Daemon::start(&config, &[]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(&datagrams[0].2, ("127.0.0.1", first.udp_port))
        .unwrap();
    wait_until("the templates are learned", Duration::from_secs(20), || {
        first.metric("exflow_decode_templates") == 4.0
    });
    first.stop();
    assert!(dir.join("state.json").exists());
    let second = Daemon::start(&config, &[]);
    let (_, _, data_only) = &datagrams[1];
    socket
        .send_to(data_only, ("127.0.0.1", second.udp_port))
        .unwrap();
    wait_until("the data decodes", Duration::from_secs(20), || {
        second.metric("exflow_decode_records_total") == 2.0
    });
    assert_eq!(second.metric("exflow_decode_template_misses_total"), 0.0);
    second.stop();
}

/// SIGHUP reloads the threat-intel file: a network added to it is watched from then on.
#[test]
fn sighup_reloads_the_threat_intel_file() {
    let dir = temp_dir("daemon-intel");
    let intel = dir.join("intel.txt");
    std::fs::write(&intel, "# nothing listed yet\n").unwrap();
    // C1's records reach the watchlist's volume only with those softflowd flushed at the
    // end of the capture, up to two hours behind its clock: allow that lateness.
    let config = format!(
        "threat_intel_file = \"{}\"\n{}\n[flow]\nmax_lateness_s = 10800\n",
        intel.display(),
        file_sink(&dir)
    );
    let daemon = Daemon::start(&config, &[]);
    std::fs::write(&intel, "# C1's server\n185.220.101.45/32\n").unwrap();
    daemon.signal(libc::SIGHUP);
    wait_until("the reload is logged", Duration::from_secs(10), || {
        daemon.log_contains("reloaded threat intel")
    });
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    daemon.stop();
    let alerts = alerts_in(&dir);
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "watchlist" && a["outside_addr"] == "185.220.101.45"),
        "{alerts:#?}"
    );
}

/// The bench harness runs against the daemon: every datagram it sends is received or
/// counted as dropped by the kernel (the harness waits for that with a deadline), what is
/// received decodes without error, and every record is decoded or, where the kernel
/// dropped datagrams, counted missing by sequence number.
#[test]
fn loadgen_datagrams_and_records_are_all_accounted_for() {
    let dir = temp_dir("daemon-loadgen");
    let daemon = Daemon::start(&file_sink(&dir), &[]);
    let run = daemon.loadgen(&["--rate", "40000", "--duration", "2", "--exporters", "8"]);
    // The decoder's counters are published apart from the socket's: once a flush (sent
    // after every loadgen datagram) is decoded, so is everything before it.
    let flush = "exflow_decode_errors_total{kind=\"unknown_version\"}";
    wait_until(
        "a flush datagram is decoded",
        Duration::from_secs(20),
        || daemon.metric(flush) >= 1.0,
    );
    let metrics = daemon.scrape().unwrap();
    let decoded = metrics["exflow_decode_records_total"];
    let lost = metrics["exflow_decode_lost_records_total"];
    assert!(decoded > 0.0);
    if run.kernel_dropped == 0.0 {
        assert_eq!((decoded, lost), (run.records, 0.0), "{}", run.stdout);
    } else {
        // Drops at the very end show in no later sequence number: at most this many.
        assert!(decoded + lost <= run.records, "{}", run.stdout);
    }
    let errors: Vec<(&String, &f64)> = metrics
        .iter()
        .filter(|(k, v)| k.starts_with("exflow_decode_errors_total{") && **v > 0.0)
        .collect();
    // The harness's flush datagrams, and nothing else (those the kernel dropped aside).
    let flushes_received = metrics[flush];
    assert!(
        flushes_received >= 1.0 && flushes_received <= run.flushes as f64,
        "{errors:?} {}",
        run.flushes
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    daemon.stop();
}

/// sFlow v5 from the bench harness (`--protocol sflow`, one flow sample per record) to a live
/// daemon: every datagram is received or dropped by the kernel; every received one decodes
/// without error into its samples, and the kernel's drops show as lost datagrams.
#[test]
fn loadgen_sflow_samples_are_all_decoded_or_counted_lost() {
    let dir = temp_dir("daemon-loadgen-sflow");
    let daemon = Daemon::start(&file_sink(&dir), &[]);
    let run = daemon.loadgen(&[
        "--protocol",
        "sflow",
        "--rate",
        "20000",
        "--duration",
        "2",
        "--exporters",
        "4",
    ]);
    let flush = "exflow_decode_errors_total{kind=\"unknown_version\"}";
    wait_until(
        "a flush datagram is decoded",
        Duration::from_secs(20),
        || daemon.metric(flush) >= 1.0,
    );
    let metrics = daemon.scrape().unwrap();
    let decoded = metrics["exflow_decode_records_total"];
    assert!(decoded > 0.0);
    if run.kernel_dropped == 0.0 {
        assert_eq!(decoded, run.records, "{}", run.stdout);
        assert_eq!(metrics["exflow_decode_lost_datagrams_total"], 0.0);
    } else {
        assert!(decoded < run.records, "{}", run.stdout);
    }
    let errors: Vec<(&String, &f64)> = metrics
        .iter()
        .filter(|(k, v)| k.starts_with("exflow_decode_errors_total{") && **v > 0.0)
        .collect();
    assert_eq!(errors.len(), 1, "only the flushes: {errors:?}");
    assert_eq!(metrics["exflow_decode_sflow_skipped_samples_total"], 0.0);
    daemon.stop();
}

/// A second `exflow run` on a UDP port the first one receives on fails at start with one
/// line saying so, even with SO_REUSEPORT on both (two receive workers each), and the
/// first keeps every datagram. Before, the second started and took all the traffic.
#[test]
fn a_second_collector_on_the_same_port_fails_at_start() {
    let dir = temp_dir("daemon-second");
    let config = format!(
        "{}\n[source]\nworkers = 2\n\n[flow]\nshards = 1\n",
        file_sink(&dir)
    );
    let first = Daemon::start(&config, &[]);
    let config_path = dir.join("second.toml");
    std::fs::write(&config_path, &config).unwrap();
    let listen = format!("127.0.0.1:{}", first.udp_port);
    let (status, stderr) = exflow_exits(
        &[
            "run",
            "--config",
            config_path.to_str().unwrap(),
            "--listen",
            &listen,
            "--metrics-listen",
            "127.0.0.1:0",
            "--inside",
            "10.10.0.0/16",
            "--home-country",
            "NL",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("exflow:"))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "exflow: cannot listen on udp {listen}: another exflow already receives on port {}",
            first.udp_port
        )],
        "{stderr}"
    );
    first.send_capture(&data("softflowd_ipfix.pcap"));
    let datagrams = format!("exflow_source_datagrams_total{{listen=\"{listen}\"}}");
    wait_until(
        "the first collector has every datagram",
        Duration::from_secs(30),
        || {
            first
                .scrape()
                .is_some_and(|m| m.get(&datagrams) == Some(&107.0))
        },
    );
    first.stop();
}

/// A state file that cannot be read is moved aside to `state.json.corrupt`, logged once
/// and counted; the daemon starts without it and its shutdown save writes a fresh
/// `state.json`, leaving the damaged bytes untouched for the operator.
#[test]
fn an_unreadable_state_file_is_kept_aside_logged_and_counted() {
    let dir = temp_dir("daemon-corrupt-state");
    let state = dir.join("state.json");
    let damaged = b"{\"version\": 1, \"exporters\": [{\"addr";
    std::fs::write(&state, damaged).unwrap();
    let config = format!("state_file = \"{}\"\n{}", state.display(), file_sink(&dir));
    let daemon = Daemon::start(&config, &[]);
    wait_until("the failure is counted", Duration::from_secs(10), || {
        daemon.metric("exflow_decode_state_load_failures_total") == 1.0
    });
    let corrupt = dir.join("state.json.corrupt");
    assert!(daemon.log_contains(&format!("the file is kept as '{}'", corrupt.display())));
    // Templates still work: the daemon learns them afresh.
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    let (_, log) = daemon.stop();
    assert_eq!(
        log.matches("starting without saved templates").count(),
        1,
        "{log}"
    );
    assert_eq!(std::fs::read(&corrupt).unwrap(), damaged);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).expect("a fresh, valid save");
    assert!(
        !saved["exporters"].as_array().unwrap().is_empty(),
        "{saved}"
    );
}

/// A threat-intel file that fails to parse on SIGHUP is logged and counted, and the
/// networks loaded before stay in force.
#[test]
fn a_failed_threat_intel_reload_is_counted_and_the_previous_list_kept() {
    let dir = temp_dir("daemon-intel-broken");
    let intel = dir.join("intel.txt");
    std::fs::write(&intel, "# C1's server\n185.220.101.45/32\n").unwrap();
    // As in sighup_reloads_the_threat_intel_file: C1's volume needs the records softflowd
    // flushed at the end of the capture, up to two hours late.
    let config = format!(
        "threat_intel_file = \"{}\"\n{}\n[flow]\nmax_lateness_s = 10800\n",
        intel.display(),
        file_sink(&dir)
    );
    let daemon = Daemon::start(&config, &[]);
    assert_eq!(
        daemon.metric("exflow_enrich_threat_intel_reload_failures_total"),
        0.0
    );
    std::fs::write(&intel, "185.220.101.45/32\nnot a network\n").unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_metric(
        "the failed reload is counted",
        "exflow_enrich_threat_intel_reload_failures_total",
        1.0,
        Duration::from_secs(10),
    );
    assert!(daemon.log_contains("keeping the previous threat intel"));
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    wait_until("all records are decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    daemon.stop();
    let alerts = alerts_in(&dir);
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "watchlist" && a["outside_addr"] == "185.220.101.45"),
        "{alerts:#?}"
    );
}

/// With the Kafka broker unreachable the sink's start waits for it (5 s, the health
/// check's timeout), but the UDP sockets and `/metrics` come first: a scrape sent as soon
/// as the sockets are bound is answered within a deadline shorter than that wait, and
/// every datagram sent at once is received, none refused.
#[test]
fn sockets_and_metrics_serve_while_the_broker_is_unreachable_at_start() {
    let spool = temp_dir("daemon-no-broker");
    let config = format!(
        "[sink.kafka]\nbrokers = \"127.0.0.1:{}\"\ntopic = \"exflow.unreachable\"\nspool_dir = \"{}\"\n",
        free_port(),
        spool.display()
    );
    let daemon = Daemon::spawn(&config, &[]);
    daemon.send_capture(&data("softflowd_ipfix.pcap"));
    let (status, _) =
        crate::metrics_endpoint::scrape_within(&daemon.metrics, Duration::from_secs(3));
    assert_eq!(status, "HTTP/1.1 200 OK");
    let listen = format!("127.0.0.1:{}", daemon.udp_port);
    wait_until("every record is decoded", Duration::from_secs(30), || {
        daemon.metric("exflow_decode_records_total") == 2208.0
    });
    let metrics = daemon.scrape().unwrap();
    assert_eq!(
        metrics[&format!("exflow_source_datagrams_total{{listen=\"{listen}\"}}")],
        107.0
    );
    assert_eq!(
        metrics[&format!("exflow_source_kernel_dropped_datagrams_total{{listen=\"{listen}\"}}")],
        0.0
    );
    daemon.kill();
}

/// Runs pmacctd on `config` until it exits (it reads a file, exports what it holds and
/// exits). At the end of the file pmacctd 1.7.7 races its plugin's exit: now and then the
/// core exits 1 after the export is done, its log saying "connection lost to
/// 'exp-sfprobe'" (or 'exp-nfprobe') and "no more plugins active". That exit is tolerated,
/// since the callers wait for every record to arrive; any other failure fails the test.
fn run_pmacctd(config: &std::path::Path) {
    let output = std::process::Command::new("pmacctd")
        .arg("-f")
        .arg(config)
        .output()
        .expect("pmacctd is installed (apt-get install pmacct; .ci/run does)");
    if output.status.success() {
        return;
    }
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        log.contains("no more plugins active"),
        "pmacctd exited with {}: {log}",
        output.status
    );
    eprintln!(
        "pmacctd exited with {} at the end of its file: {log}",
        output.status
    );
}
