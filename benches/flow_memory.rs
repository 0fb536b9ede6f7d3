//! Memory and speed of the conversation table: inserts 10 million distinct conversations
//! into one table and reports the process's resident memory, the bytes per conversation
//! and the insert rate; then runs one record per conversation again, in random order and
//! warmed ahead in batches as the pipeline's shards do, and reports that update rate (the
//! per-record cost once the table is larger than the caches).
//!
//! `cargo bench --bench flow_memory` (set FLOW_MEMORY_CONVERSATIONS to change the count)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use exflow::enrich::Destination;
use exflow::flow::{FlowTable, Oriented};

/// Records warmed ahead of running them, as `pipeline::Shard::run_batch` does.
const WARM_AHEAD: usize = 16;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Conversation `i`'s record starting `start_ms` after a fixed base (plus `i` ms).
fn record(i: u64, start_ms: u64) -> Oriented {
    // A quarter IPv6, like the load generator's mix.
    let inside = if i.is_multiple_of(4) {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0x10,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i as u32 & 0x00ff_ffff)))
    };
    let start_ms = 1_710_230_400_000 + i + start_ms;
    Oriented {
        inside,
        outside: IpAddr::V4(Ipv4Addr::from(0x5000_0000 | ((i >> 8) as u32))),
        inside_port: 1024 + (i % 50_000) as u16,
        outside_port: 443,
        proto: 6,
        bytes_out: 1000,
        bytes_in: 5000,
        packets_out: 10,
        packets_in: 10,
        start_ms,
        end_ms: start_ms + 1000,
        outside_asn: 0,
        exporter: IpAddr::V4(Ipv4Addr::LOCALHOST),
        tcp_flags: 0,
        from_inside: true,
        continues: false,
        ends: false,
        interfaces: Default::default(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let count: usize = std::env::var("FLOW_MEMORY_CONVERSATIONS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(10_000_000);
    let before = rss_bytes();
    let mut table = FlowTable::new(count, 1800, 3600);
    let started = Instant::now();
    for i in 0..count as u64 {
        table.update(&record(i, 0), Destination::default, |_, _, _| {});
    }
    let elapsed = started.elapsed();
    let used = rss_bytes().saturating_sub(before);
    println!(
        "{} conversations: {:.2} GiB resident, {:.0} bytes per conversation, {:.1} M inserts/s",
        table.len(),
        used as f64 / (1u64 << 30) as f64,
        used as f64 / table.len() as f64,
        table.len() as f64 / elapsed.as_secs_f64() / 1e6
    );

    // Each conversation once more, in a random order (xorshift), within the idle timeout.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut batch = Vec::with_capacity(WARM_AHEAD);
    let started = Instant::now();
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        batch.push(record(state % count as u64, 2000));
        if batch.len() == WARM_AHEAD {
            let hashes: Vec<_> = batch.iter().map(|r| table.warm(r)).collect();
            for (r, &hash) in batch.iter().zip(&hashes) {
                let (lookup, _) = table.look_up(r, hash);
                table.update_looked_up(r, &lookup, Destination::default, |_, _, _| {});
            }
            batch.clear();
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{} updates of existing conversations, warmed {} ahead: {:.1} M updates/s",
        count,
        WARM_AHEAD,
        count as f64 / elapsed.as_secs_f64() / 1e6
    );
    assert_eq!(table.len(), count);
    assert_eq!(
        table.counters.conversations_evicted + table.counters.conversations_expired,
        0
    );
}
