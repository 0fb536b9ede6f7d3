//! cli: `exflow decode`, capture files -> decoder -> flow records on stdout.

use std::io::{BufWriter, Write};

use exflow::decode::record::NamedRecord;
use exflow::decode::{DecodeCounters, Decoder, DecoderConfig, FlowRecord};
use exflow::source::capture::{self, CaptureCounters};

use super::{DecodeArgs, OutputFormat};

pub fn run(args: DecodeArgs) -> anyhow::Result<()> {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let mut records = Vec::with_capacity(64);
    let mut capture_counters = CaptureCounters::default();
    if args.format == OutputFormat::Table {
        writeln!(out, "{}", table_header())?;
    }
    for path in &args.captures {
        let mut write_error = None;
        let counters = capture::for_each_datagram(path, |datagram| {
            records.clear();
            let _ = decoder.decode(
                datagram.source.ip(),
                datagram.received_ns,
                datagram.payload,
                &mut records,
            );
            let exporter = datagram.source.ip();
            for record in &records {
                let domain = (record.kind, record.observation_domain_id);
                let named = NamedRecord {
                    record,
                    in_if: decoder.interface_name(exporter, domain, record.in_if),
                    out_if: decoder.interface_name(exporter, domain, record.out_if),
                };
                let written = match args.format {
                    OutputFormat::Jsonl => serde_json::to_writer(&mut out, &named)
                        .map_err(std::io::Error::from)
                        .and_then(|()| out.write_all(b"\n")),
                    OutputFormat::Table => writeln!(out, "{}", table_row(record)),
                };
                if let Err(error) = written {
                    write_error.get_or_insert(error);
                }
            }
        })?;
        if let Some(error) = write_error {
            return Err(error.into());
        }
        add_capture_counters(&mut capture_counters, &counters);
    }
    out.flush()?;
    eprint!("{}", summary(&decoder, &capture_counters));
    Ok(())
}

fn add_capture_counters(total: &mut CaptureCounters, more: &CaptureCounters) {
    total.frames += more.frames;
    total.udp_datagrams += more.udp_datagrams;
    total.not_udp += more.not_udp;
    total.fragments += more.fragments;
    total.unreadable += more.unreadable;
}

fn table_header() -> String {
    format!(
        "{:<24} {:>9} {:<6} {:>41} {:>41} {:>12} {:>9} {:<16}",
        "start", "dur_s", "proto", "source", "destination", "bytes", "packets", "exporter"
    )
}

fn table_row(r: &FlowRecord) -> String {
    let duration_s = r.time_flow_end_ns.saturating_sub(r.time_flow_start_ns) as f64 / 1e9;
    let proto = exflow::decode::record::proto_name(r.proto)
        .map_or_else(|| r.proto.to_string(), str::to_string);
    format!(
        "{:<24} {:>9.3} {:<6} {:>41} {:>41} {:>12} {:>9} {:<16}",
        exflow::time::rfc3339(r.time_flow_start_ns),
        duration_s,
        proto,
        std::net::SocketAddr::new(r.src_addr, r.src_port).to_string(),
        std::net::SocketAddr::new(r.dst_addr, r.dst_port).to_string(),
        r.bytes,
        r.packets,
        r.sampler_address.to_string(),
    )
}

/// The end-of-run summary: what was read, decoded, lost and refused, per exporter.
fn summary(decoder: &Decoder, capture: &CaptureCounters) -> String {
    let mut text = String::new();
    let totals = decoder.totals();
    text.push_str(&format!(
        "capture: {} frames, {} udp datagrams, {} not udp, {} fragments, {} unreadable\n",
        capture.frames,
        capture.udp_datagrams,
        capture.not_udp,
        capture.fragments,
        capture.unreadable
    ));
    text.push_str(&format!("decoded: {}\n", counters_line(&totals)));
    let mut exporters: Vec<_> = decoder.exporters().collect();
    exporters.sort_by_key(|(address, _)| *address);
    for (address, counters) in exporters {
        text.push_str(&format!(
            "exporter {address}: {}\n",
            counters_line(counters)
        ));
    }
    text
}

fn counters_line(c: &DecodeCounters) -> String {
    let mut line = format!(
        "{} datagrams, {} records, {} options records, {} templates, {} template misses, \
         {} lost records, {} lost datagrams, {} sequence resets",
        c.datagrams,
        c.records,
        c.options_records,
        c.templates,
        c.template_misses,
        c.lost_records,
        c.lost_datagrams,
        c.sequence_resets
    );
    if c.times_from_header > 0 {
        line.push_str(&format!(", {} timed by export header", c.times_from_header));
    }
    if c.counter_samples + c.discard_samples + c.skipped_samples > 0 {
        line.push_str(&format!(
            ", sflow: {} counter samples, {} discard samples, {} skipped samples",
            c.counter_samples, c.discard_samples, c.skipped_samples
        ));
    }
    let errors: Vec<String> = c
        .errors
        .iter()
        .map(|(e, n)| format!("{}={n}", e.code()))
        .collect();
    if !errors.is_empty() {
        line.push_str(&format!(", errors: {}", errors.join(" ")));
    }
    line
}
