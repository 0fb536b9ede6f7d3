//! cli: `exflow replay`, capture files -> the whole pipeline on event time -> alerts.

use exflow::detect::Alert;
use exflow::pipeline::{Pipeline, PipelineCounters};
use exflow::sink::JsonLines;
use exflow::source::capture;

use super::ReplayArgs;

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let config = args.shared.load()?;
    let enricher = config.enricher()?;
    let mut sink = match &config.sink.file {
        Some(path) => JsonLines::file(path)?,
        None => JsonLines::stdout(),
    }
    .with_format(args.format);
    let mut pipeline = Pipeline::new(&config, enricher, args.shards);
    let mut alerts: Vec<Alert> = Vec::new();
    let mut write_error = None;
    let mut deliver = |alerts: &mut Vec<Alert>, sink: &mut JsonLines| {
        for alert in alerts.drain(..) {
            if let Err(error) = sink.send(&alert) {
                write_error.get_or_insert(error);
            }
        }
    };
    for path in &args.captures {
        capture::for_each_datagram(path, |datagram| {
            pipeline.push_datagram(
                datagram.source.ip(),
                datagram.received_ns,
                datagram.payload,
                &mut alerts,
            );
            deliver(&mut alerts, &mut sink);
        })?;
    }
    pipeline.finish(&mut alerts);
    deliver(&mut alerts, &mut sink);
    if let Some(error) = write_error {
        return Err(error.into());
    }
    sink.flush()?;
    eprint!("{}", summary(&pipeline.counters()));
    Ok(())
}

/// The end-of-run summary on stderr.
pub fn summary(c: &PipelineCounters) -> String {
    let d = &c.decode;
    let f = &c.flow;
    let mut text = format!(
        "decoded: {} datagrams, {} records, {} decode errors, {} template misses, {} lost records, {} lost datagrams\n\
         flows: {} records, {} transit, {} internal, {} conversations created, {} expired, {} evicted, {} open\n\
         dropped: {} records too late, {} dated ahead of their receive time, {} datagrams from rejected exporters\n\
         alerts: {} ({} suppressed)",
        d.datagrams,
        d.records,
        d.errors.total(),
        d.template_misses,
        d.lost_records,
        d.lost_datagrams,
        f.records,
        f.transit_records,
        f.internal_records,
        f.conversations_created,
        f.conversations_expired,
        f.conversations_evicted,
        c.conversations,
        f.clock.late,
        f.clock.skewed,
        c.rejected_datagrams,
        c.alerts.total(),
        c.suppressed,
    );
    for (rule, severity, count) in c.alerts.iter() {
        text.push_str(&format!(", {rule}/{}={count}", severity.name()));
    }
    text.push('\n');
    text
}
