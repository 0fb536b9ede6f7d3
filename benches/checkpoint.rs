//! A scale-out partition's checkpoint at scale (`exflow detect`, `src/scaleout/checkpoint.rs`):
//! one shard whose profiles hold 100,000 hosts (`rules.profile.max_hosts`, the default
//! bound), each learned from a few uploads over a day. Measures the steps of a checkpoint
//! with its state: the detector's state copied (`Shard::checkpoint`, on the consumer
//! thread), that copy encoded to JSON and split into state messages of
//! `scaleout.max_state_message_bytes` (on the checkpoint writer's thread), and a new
//! owner's parse of it (on a thread of its own) and restore (on its consumer thread).
//! Prints the state's size and message count once.
//!
//! `cargo bench --bench checkpoint`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use exflow::config::Config;
use exflow::decode::{FlowKind, FlowRecord};
use exflow::detect::Detector;
use exflow::pipeline::{Ingest, Shard};
use exflow::scaleout::checkpoint::{StateChunk, state_messages};

const HOSTS: u32 = 100_000;
const UPLOADS_PER_HOST: u32 = 4;
const T0_MS: u64 = 1_710_230_400_000;
const HOUR_MS: u64 = 3_600_000;

fn config() -> Config {
    let mut config = Config {
        inside: vec!["10.0.0.0/8".parse().unwrap()],
        ..Config::default()
    };
    // Room for every host: the default 4 MB would hold some 4,000 profiles.
    config.rules.max_state_bytes = 1 << 30;
    config.rules.profile.max_hosts = HOSTS as usize;
    config
}

/// `UPLOADS_PER_HOST` uploads of each host, hours apart, to a few outside addresses.
fn records() -> Vec<FlowRecord> {
    let mut records = Vec::with_capacity((HOSTS * UPLOADS_PER_HOST) as usize);
    for round in 0..UPLOADS_PER_HOST {
        for host in 0..HOSTS {
            let end_ms = T0_MS + u64::from(round) * 6 * HOUR_MS + u64::from(host) / 10;
            let inside = Ipv4Addr::from(0x0a00_0000 | host);
            let outside = Ipv4Addr::from(0x3400_0000 | ((host * 7 + round) % 65_536));
            records.push(FlowRecord {
                kind: FlowKind::Ipfix,
                time_received_ns: end_ms * 1_000_000,
                time_flow_start_ns: (end_ms - 1000) * 1_000_000,
                time_flow_end_ns: end_ms * 1_000_000,
                bytes: 20_000 + u64::from(host % 977),
                packets: 20,
                src_addr: IpAddr::V4(inside),
                dst_addr: IpAddr::V4(outside),
                src_port: 40_000 + (host % 20_000) as u16,
                dst_port: 443,
                proto: 6,
                ..FlowRecord::default()
            });
        }
    }
    records
}

fn checkpoint(c: &mut Criterion) {
    let config = config();
    let enricher = config.enricher().unwrap();
    let mut ingest = Ingest::new(&config, enricher.clone(), 1);
    let mut shard = Shard::new(&config, enricher, 1);
    let mut alerts = Vec::new();
    for datagram in records().chunks(17) {
        ingest.push_records(datagram);
        for batch in ingest.batches() {
            shard.run_batch(batch, &mut alerts);
            batch.clear();
        }
    }
    let bytes = shard.checkpoint().encode().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let hosts = state["rules"]["profile"]["hosts"]
        .as_array()
        .map_or(0, Vec::len);
    let header = StateChunk::new("detect-1", "exflow.flows.v1", 0, 1);
    let max = exflow::scaleout::ScaleoutConfig::default().max_state_message_bytes;
    let messages = state_messages(&header, &bytes, max).unwrap();
    println!(
        "checkpoint: {hosts} profiled hosts, state {} bytes, {} messages of at most {max} bytes",
        bytes.len(),
        messages.len()
    );
    assert!(hosts > 0, "the records made profiles");

    let mut group = c.benchmark_group("checkpoint_100k_hosts");
    group.sample_size(10);
    // The consumer thread's part: the copy (dropped here, encoded by the writer).
    group.bench_function("snapshot", |b| b.iter(|| black_box(shard.checkpoint())));
    group.bench_function("snapshot_and_encode", |b| {
        b.iter(|| black_box(shard.checkpoint().encode().unwrap()))
    });
    group.bench_function("split", |b| {
        b.iter(|| black_box(state_messages(&header, black_box(&bytes), max).unwrap()))
    });
    // A new owner: the bytes read back parsed into the rules' types (on a thread of its
    // own), then taken into the shard when the partition reaches the state's offset (on
    // the consumer thread).
    group.bench_function("parse", |b| {
        b.iter(|| black_box(Detector::parse_checkpoint(black_box(&bytes)).unwrap()))
    });
    group.bench_function("restore", |b| {
        b.iter_batched(
            || Detector::parse_checkpoint(&bytes).unwrap(),
            |parsed| black_box(shard.restore(parsed)),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, checkpoint);
criterion_main!(benches);
