//! Decode throughput per protocol, in records per second on one core: a warm decoder
//! (templates known) over ~1400-byte datagrams of a realistic border-traffic mix (sFlow:
//! one flow sample with a raw Ethernet/IP/TCP-or-UDP header per record).
//!
//! `cargo bench --bench decode`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exflow::decode::{Decoder, DecoderConfig, FlowKind};
use exflow::synth;

fn decode(c: &mut Criterion) {
    let records = synth::background_records(20_000, 42, 1_710_230_400_000);
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let mut group = c.benchmark_group("decode");
    for (name, kind) in [
        ("netflow_v5", FlowKind::NetflowV5),
        ("netflow_v9", FlowKind::NetflowV9),
        ("ipfix", FlowKind::Ipfix),
        ("sflow_v5", FlowKind::Sflow5),
    ] {
        let mut datagrams = Vec::new();
        // Templates only with the first datagram, as in a steady stream.
        exflow::wire::emit::Exporter::new(kind, 0)
            .template_every(u32::MAX)
            .encode(&records, 1_710_230_500_000, &mut datagrams);
        let mut decoder = Decoder::new(DecoderConfig::default());
        let mut out = Vec::with_capacity(64);
        let mut total = 0;
        for d in &datagrams {
            out.clear();
            total += decoder.decode(exporter, 0, d, &mut out).unwrap();
        }
        let data = &datagrams[1..];
        let per_pass = total
            - datagrams.first().map_or(0, |first| {
                let mut scratch = Decoder::new(DecoderConfig::default());
                scratch.decode(exporter, 0, first, &mut Vec::new()).unwrap()
            });
        group.throughput(Throughput::Elements(per_pass as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for d in data {
                    out.clear();
                    let _ = black_box(decoder.decode(exporter, 0, black_box(d), &mut out));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
