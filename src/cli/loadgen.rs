//! cli: `exflow loadgen`, the bench harness: sends, then asks exflow what it received.

use std::time::Duration;

use exflow::decode::FlowKind;
use exflow::loadgen::{self, LoadSpec, Received, Sent};

use super::{LoadgenArgs, Protocol};

pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    let kind = match args.protocol {
        Protocol::V5 => FlowKind::NetflowV5,
        Protocol::V9 => FlowKind::NetflowV9,
        Protocol::Ipfix => FlowKind::Ipfix,
    };
    let spec = LoadSpec {
        target: args.target,
        kind,
        exporters: args.exporters,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration_s),
        count: args.count,
        template_every: args.template_every,
    };
    if args.find_max {
        return find_max(&args, spec);
    }
    let before = match args.metrics {
        Some(metrics) => Some(loadgen::scrape(metrics)?),
        None => None,
    };
    let sent = loadgen::send(&spec)?;
    print_sent(&sent);
    if let (Some(metrics), Some(before)) = (args.metrics, before) {
        let after = loadgen::settle(metrics)?;
        print_received(&Received::between(&before, &after), &sent);
    }
    Ok(())
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
        "dropped:  {:.0} datagrams by the kernel, {:.0} decode errors, {:.0} records missing by sequence",
        r.kernel_dropped, r.decode_errors, r.lost_records
    );
    println!("loss:     {:.4}%", r.loss(sent) * 100.0);
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
        let before = loadgen::settle(metrics)?;
        let sent = loadgen::send(&step)?;
        let after = loadgen::settle(metrics)?;
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
