//! The pipeline after decoding, per record: orientation, the conversation table and every
//! detection rule, on a warm table, over two mixes: exflow's own border traffic
//! (`synth::background_records`, the `exflow loadgen` workload) and a flowgen-like one
//! (`synth::flowgen_like_records`: random addresses, large volumes, a pool resent as it is,
//! so thresholds are crossed again and again: the alert-storm workload). Then the same
//! flowgen-like mix through the table alone and through the table with one rule at a time,
//! so a regression shows in the stage it is in.
//!
//! `cargo bench --bench pipeline`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exflow::config::Config;
use exflow::decode::FlowRecord;
use exflow::pipeline::Pipeline;
use exflow::synth;

/// The daemon's allocator (huge pages for the large tables), so the per-record costs here
/// are the daemon's: with 4 KiB pages most lookups also miss the TLB.
#[global_allocator]
static ALLOCATOR: exflow::alloc::HugePages = exflow::alloc::HugePages;

/// What a ~1400-byte IPFIX datagram carries.
const RECORDS_PER_DATAGRAM: usize = 17;
/// flowgen's default pool: 2,048 datagrams of 17 records.
const FLOWGEN_POOL: usize = 2048 * RECORDS_PER_DATAGRAM;
const NOW_MS: u64 = 1_710_230_400_000;

fn config() -> Config {
    Config {
        inside: vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:10::/48".parse().unwrap(),
        ],
        ..Config::default()
    }
}

/// A pipeline warmed with `records` once.
fn warmed(config: &Config, records: &[FlowRecord]) -> Pipeline {
    let mut pipeline = Pipeline::new(config, config.enricher().unwrap(), 1);
    let mut alerts = Vec::new();
    for datagram in records.chunks(RECORDS_PER_DATAGRAM) {
        pipeline.push_records(datagram, &mut alerts);
    }
    pipeline
}

fn run(c: &mut Criterion, group: &str, name: &str, config: &Config, records: &[FlowRecord]) {
    let mut pipeline = warmed(config, records);
    let mut alerts = Vec::new();
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10);
    group.bench_function(name, |b| {
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

fn pipeline(c: &mut Criterion) {
    let config = config();
    let background = synth::background_records(200_000, 7, NOW_MS);
    run(c, "pipeline", "orient_table_detect", &config, &background);
    let flowgen = synth::flowgen_like_records(FLOWGEN_POOL, 11, NOW_MS);
    run(
        c,
        "pipeline",
        "orient_table_detect_flowgen_mix",
        &config,
        &flowgen,
    );
}

/// Every rule off.
fn no_rules() -> Config {
    let mut config = config();
    let r = &mut config.rules;
    r.long_lived_foreign.enabled = false;
    r.bulk_egress.enabled = false;
    r.new_destination.enabled = false;
    r.beacon.enabled = false;
    r.dns_tunnel.enabled = false;
    r.watchlist.enabled = false;
    r.role_change.enabled = false;
    r.egress_anomaly.enabled = false;
    r.spread_egress.enabled = false;
    r.low_and_slow.enabled = false;
    config
}

/// A rule's name and how to turn it on.
type RuleSwitch = (&'static str, fn(&mut Config));

fn stages(c: &mut Criterion) {
    let flowgen = synth::flowgen_like_records(FLOWGEN_POOL, 11, NOW_MS);
    run(c, "stage", "orient_table", &no_rules(), &flowgen);
    let one_rule: [RuleSwitch; 9] = [
        ("long_lived_foreign", |c| {
            c.rules.long_lived_foreign.enabled = true
        }),
        ("bulk_egress", |c| c.rules.bulk_egress.enabled = true),
        ("new_destination", |c| {
            c.rules.new_destination.enabled = true
        }),
        ("beacon", |c| c.rules.beacon.enabled = true),
        ("dns_tunnel", |c| c.rules.dns_tunnel.enabled = true),
        ("watchlist", |c| c.rules.watchlist.enabled = true),
        ("profiles", |c| {
            c.rules.role_change.enabled = true;
            c.rules.egress_anomaly.enabled = true;
        }),
        ("spread_egress", |c| c.rules.spread_egress.enabled = true),
        ("low_and_slow", |c| c.rules.low_and_slow.enabled = true),
    ];
    for (name, enable) in one_rule {
        let mut config = no_rules();
        enable(&mut config);
        run(
            c,
            "stage",
            &format!("orient_table_{name}"),
            &config,
            &flowgen,
        );
    }
}

criterion_group!(benches, pipeline, stages);
criterion_main!(benches);
