//! cli: `exflow loadgen`, the bench harness: sends, then asks exflow what it received and,
//! for injected exfiltration scenarios, how soon it alerted.

use std::time::Duration;

use anyhow::bail;
use exflow::decode::FlowKind;

use self::alerts::TopicWatch;
use self::harness::{Detections, LoadSpec, Received, Sent, Watch};
use self::report::{ReceivedReport, Report, ScenariosReport};
use super::{LoadgenArgs, Protocol};

pub mod alerts;
pub mod harness;
mod report;
mod scenario;

/// Where the scenarios' alerts are looked for.
enum Watcher {
    /// exflow's alert counters at `--metrics`.
    Metrics(Watch),
    /// The alerts topic (`--kafka-brokers`).
    Topic(TopicWatch),
}

pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let kind = match args.protocol {
        Protocol::V5 => FlowKind::NetflowV5,
        Protocol::V9 => FlowKind::NetflowV9,
        Protocol::Ipfix => FlowKind::Ipfix,
        Protocol::Sflow => FlowKind::Sflow5,
    };
    let duration = seconds("--duration", args.duration_s)?;
    let detect_timeout = seconds("--detect-timeout", args.detect_timeout)?;
    let mut scenarios = args.scenarios.clone();
    scenarios.sort_by_key(|p| p.at);
    if let Some(late) = scenarios.iter().find(|p| p.at >= duration) {
        bail!(
            "--scenario {}@{}: the run lasts only {} s (--duration)",
            late.scenario.rule(),
            late.at.as_secs_f64(),
            args.duration_s
        );
    }
    let spec = LoadSpec {
        target: args.target,
        kind,
        exporters: args.exporters,
        rate: args.rate,
        duration,
        count: args.count,
        template_every: args.template_every,
        scenarios,
    };
    if args.find_max {
        return find_max(&args, spec);
    }
    let before = match args.metrics {
        Some(metrics) => Some(harness::scrape(metrics)?),
        None => None,
    };
    let watch = match (&args.kafka_brokers, args.metrics) {
        _ if spec.scenarios.is_empty() => None,
        (Some(brokers), _) => Some(Watcher::Topic(TopicWatch::start(
            brokers,
            &args.kafka_topic,
            &spec.scenarios,
            detect_timeout,
        )?)),
        (None, Some(metrics)) => Some(Watcher::Metrics(Watch::start(
            metrics,
            &spec.scenarios,
            detect_timeout,
        )?)),
        (None, None) => bail!("--scenario needs --metrics or --kafka-brokers to see alerts"),
    };
    let sent = harness::send_injecting(&spec, |injected| match &watch {
        Some(Watcher::Metrics(watch)) => watch.injected(injected),
        Some(Watcher::Topic(watch)) => watch.injected(injected),
        None => {}
    })?;
    print_sent(&sent);
    let mut report = Report {
        sent: (&sent).into(),
        received: None,
        scenarios: None,
    };
    if let (Some(metrics), Some(before)) = (args.metrics, before) {
        let after = settled(metrics, &before, &sent)?;
        let received = Received::between(&before, &after);
        print_received(&received, &sent);
        report.received = Some(ReceivedReport::new(&received, &sent));
    }
    let mut missed = 0;
    if let Some(watch) = watch {
        let (detections, how, alerts_from) = match watch {
            Watcher::Metrics(watch) => (
                watch.finish(),
                "the first /metrics scrape (every 10 ms) counting its rule's alert; exflow \
                 publishes its counters every 100 ms, which bounds the resolution",
                "metrics",
            ),
            Watcher::Topic(watch) => (
                watch.finish(),
                "its alert (its rule, its inside host) read back from the alerts topic",
                "topic",
            ),
        };
        missed = print_detections(&detections, &spec, &sent, args.detect_timeout, how);
        report.scenarios = Some(ScenariosReport::new(&detections, &spec, alerts_from));
    }
    if let Some(path) = &args.report_json {
        report.write(path)?;
    }
    if missed > 0 {
        bail!("{missed} of {} scenarios missed", spec.scenarios.len());
    }
    Ok(())
}

/// [`harness::settle`]'s last scrape after a run that `sent`; on stderr, what was not
/// accounted for within its timeout.
fn settled(
    metrics: std::net::SocketAddr,
    before: &std::collections::HashMap<String, f64>,
    sent: &Sent,
) -> anyhow::Result<std::collections::HashMap<String, f64>> {
    let settled = harness::settle(metrics, before, sent, harness::SETTLE_TIMEOUT)?;
    if !settled.is_settled() {
        eprintln!(
            "exflow loadgen: after {} s, {:.0} of {} datagrams sent neither received nor \
             counted as dropped by the kernel, {:.0} received not yet decoded",
            harness::SETTLE_TIMEOUT.as_secs(),
            settled.unaccounted_datagrams,
            sent.datagrams,
            settled.in_flight_datagrams
        );
    }
    Ok(settled.metrics)
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} {value}: not a number of seconds"))
}

fn print_sent(sent: &Sent) {
    let seconds = sent.elapsed.as_secs_f64();
    println!(
        "sent:     {} records in {} datagrams in {:.2} s = {:.0} records/s ({} send errors)",
        sent.records,
        sent.datagrams,
        seconds,
        sent.records as f64 / seconds.max(1e-9),
        sent.send_errors
    );
}

fn print_received(r: &Received, sent: &Sent) {
    println!(
        "received: {:.0} datagrams, {:.0} records decoded",
        r.datagrams, r.records
    );
    println!(
        "dropped:  {:.0} datagrams by the kernel, {:.0} decode errors, {:.0} records missing by \
         sequence, {:.0} records at full shard queues",
        r.kernel_dropped, r.decode_errors, r.lost_records, r.queue_dropped
    );
    println!("loss:     {:.4}%", r.loss(sent) * 100.0);
}

/// One line per scenario; returns how many were not detected (or not sent).
fn print_detections(
    d: &Detections,
    spec: &LoadSpec,
    sent: &Sent,
    timeout_s: f64,
    how: &str,
) -> usize {
    println!("scenarios: latency is from a scenario's last datagram sent to {how}");
    let mut missed = 0;
    for detection in &d.scenarios {
        let i = detection.injected;
        let outcome = match (i.sent_ok, detection.latency) {
            (false, _) => "detected no   (a datagram of it could not be sent)".to_string(),
            (true, Some(latency)) => {
                format!(
                    "detected yes  latency {:.0} ms",
                    latency.as_secs_f64() * 1000.0
                )
            }
            (true, None) => format!("detected no   (no alert within {timeout_s} s after the run)"),
        };
        if detection.latency.is_none() {
            missed += 1;
        }
        println!(
            "scenario: {:<18}  sent at {:.3} s  {outcome}  [{} -> {} via exporter {}]",
            i.scenario.rule(),
            i.sent_after.as_secs_f64(),
            i.inside,
            scenario::SCENARIO_DESTINATION,
            i.exporter,
        );
    }
    for planned in &spec.scenarios[d.scenarios.len()..] {
        missed += 1;
        println!(
            "scenario: {:<18}  not sent: the run ended at {:.3} s, before {:.3} s",
            planned.scenario.rule(),
            sent.elapsed.as_secs_f64(),
            planned.at.as_secs_f64()
        );
    }
    for (rule, rise) in &d.rises {
        let injected = d
            .scenarios
            .iter()
            .filter(|s| s.injected.scenario.rule() == *rule && s.injected.sent_ok)
            .count();
        if *rise > injected as f64 {
            println!(
                "note: {rule} alerts rose by {rise:.0} with {injected} injected: other traffic \
                 (the background, repeated long enough) raised it too, so its latencies may be \
                 too short"
            );
        }
    }
    if missed > 0
        && let Some(error) = &d.last_error
    {
        println!("note: reading metrics last failed with: {error}");
    }
    missed
}

/// Steps the rate up (x1.25 per step from `--rate`, default 250k/s) and reports the
/// highest rate whose loss stayed below `--max-loss`.
fn find_max(args: &LoadgenArgs, spec: LoadSpec) -> anyhow::Result<()> {
    let metrics = args
        .metrics
        .ok_or_else(|| anyhow::anyhow!("--find-max needs --metrics to measure loss"))?;
    let mut rate = args.rate.unwrap_or(250_000) as f64;
    let mut best = None;
    loop {
        let step = LoadSpec {
            rate: Some(rate as u64),
            ..spec.clone()
        };
        let now = harness::scrape(metrics)?;
        let before = settled(metrics, &now, &Sent::default())?;
        let sent = harness::send(&step)?;
        let after = settled(metrics, &before, &sent)?;
        let received = Received::between(&before, &after);
        let loss = received.loss(&sent);
        let achieved = sent.records as f64 / sent.elapsed.as_secs_f64();
        println!(
            "rate {:>10.0}/s: sent {:>10.0}/s, loss {:.4}%",
            rate,
            achieved,
            loss * 100.0
        );
        // Stop when loss exceeds the bar, or when the generator itself cannot keep up.
        if loss > args.max_loss || achieved < rate * 0.95 {
            break;
        }
        best = Some(achieved);
        rate *= 1.25;
    }
    match best {
        Some(best) => println!(
            "highest rate with loss below {:.4}%: {:.0} records/s",
            args.max_loss * 100.0,
            best
        ),
        None => println!(
            "even the first rate lost more than {:.4}%",
            args.max_loss * 100.0
        ),
    }
    Ok(())
}
