//! The pipeline after decoding, per record: orientation, the conversation table and every
//! detection rule, on a warm table of realistic border traffic.
//!
//! `cargo bench --bench pipeline`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exflow::config::Config;
use exflow::pipeline::Pipeline;
use exflow::synth;

/// What a ~1400-byte IPFIX datagram carries.
const RECORDS_PER_DATAGRAM: usize = 17;

fn pipeline(c: &mut Criterion) {
    let config = Config {
        inside: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:10::/48".parse().unwrap(),
        ],
        ..Config::default()
    };
    let records = synth::background_records(200_000, 7, 1_710_230_400_000);
    let mut pipeline = Pipeline::new(&config, config.enricher().unwrap(), 1);
    let mut alerts = Vec::new();
    for record in &records {
        pipeline.push_record(record, &mut alerts);
    }
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(20);
    group.bench_function("orient_table_detect", |b| {
        b.iter(|| {
            // A datagram's worth at a time, as the daemon runs them.
            for datagram in records.chunks(RECORDS_PER_DATAGRAM) {
                pipeline.push_records(black_box(datagram), &mut alerts);
            }
            alerts.clear();
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
