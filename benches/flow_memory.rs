//! Memory of the conversation table: inserts 10 million distinct conversations into one
//! table and reports the process's resident memory and the bytes per conversation.
//!
//! `cargo bench --bench flow_memory` (set FLOW_MEMORY_CONVERSATIONS to change the count)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use exflow::enrich::Destination;
use exflow::flow::{FlowTable, Oriented};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
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
        // A quarter IPv6, like the load generator's mix.
        let inside = if i % 4 == 0 {
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
        let record = Oriented {
            inside,
            outside: IpAddr::V4(Ipv4Addr::from(0x5000_0000 | ((i >> 8) as u32))),
            inside_port: 1024 + (i % 50_000) as u16,
            outside_port: 443,
            proto: 6,
            bytes_out: 1000,
            bytes_in: 5000,
            packets_out: 10,
            packets_in: 10,
            start_ms: 1_710_230_400_000 + i,
            end_ms: 1_710_230_400_000 + i + 1000,
            outside_asn: 0,
            exporter: IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        table.update(&record, Destination::default, |_, _| {});
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
    assert_eq!(table.counters.conversations_evicted, 0);
}
