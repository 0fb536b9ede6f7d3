//! Memory under a flood of unique conversations: the conversation table and every rule's
//! per-key state stay within their configured bounds (`flow.max_memory_bytes`,
//! `rules.max_state_bytes` per rule), with RSS sampled from /proc. The flood runs in a child
//! process of its own (this test binary, re-run on this one test), so no other test's
//! memory is counted.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use exflow::config::Config;
use exflow::decode::FlowRecord;
use exflow::pipeline::Pipeline;

const CHILD: &str = "EXFLOW_TEST_FLOOD_CHILD";
const TEST: &str = "memory::a_unique_conversation_flood_keeps_rss_within_the_configured_memory";
/// Conversations in the flood: 4 times what the table may hold. `EXFLOW_TEST_FLOOD=N` runs
/// N instead (the README's 10-million figure: `EXFLOW_TEST_FLOOD=10000000`).
const CONVERSATIONS: u32 = 540_000;

fn conversations() -> u32 {
    std::env::var("EXFLOW_TEST_FLOOD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CONVERSATIONS)
}
const FLOW_MEMORY: u64 = 16_000_000;
const RULE_STATE: u64 = 4_000_000;
/// Rules that keep per-key state of their own (dns_tunnel three times, one per window;
/// long_lived_foreign's is bounded by the table), and the folding rules' held records.
const STATEFUL_RULES: u64 = 8;
/// What RSS may grow beyond the configured memory: allocator slack and the batches.
pub const OVERHEAD: u64 = 32 << 20;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Record `i` of the flood: a new inside host (of 65,536), outside address and ports, an
/// upload of 2 kB, 1 ms after the previous one.
fn record(i: u32, t0_ms: u64) -> FlowRecord {
    let at_ns = (t0_ms + u64::from(i)) * 1_000_000;
    FlowRecord {
        time_flow_start_ns: at_ns,
        time_flow_end_ns: at_ns,
        bytes: 2_000,
        packets: 2,
        src_addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i & 0xffff))),
        dst_addr: IpAddr::V4(Ipv4Addr::from(0x0500_0000 + i)),
        etype: 0x0800,
        proto: 6,
        src_port: 40_000 + (i % 20_000) as u16,
        dst_port: 443,
        sampler_address: "192.0.2.1".parse().unwrap(),
        ..FlowRecord::default()
    }
}

fn flood() {
    let mut config = Config {
        inside: vec!["10.0.0.0/8".parse().unwrap()],
        ..Config::default()
    };
    config.flow.max_memory_bytes = FLOW_MEMORY;
    config.rules.max_state_bytes = RULE_STATE;
    let enricher = config.enricher().unwrap();
    let mut pipeline = Pipeline::new(&config, enricher, 1);
    let mut alerts = Vec::new();
    let mut batch = Vec::with_capacity(32);
    let t0_ms = 1_710_230_400_000;
    // A first forty thousand warm the process (code, the geo tables' pages, the batch).
    let warm = 40_000;
    let (mut start_rss, mut peak_rss) = (0, 0);
    let conversations = conversations();
    for i in 0..conversations {
        batch.push(record(i, t0_ms));
        if batch.len() == batch.capacity() {
            pipeline.push_records(&batch, &mut alerts);
            batch.clear();
            alerts.clear();
        }
        if i == warm {
            start_rss = rss_bytes();
        }
        if i > warm && i % 20_000 == 0 {
            peak_rss = peak_rss.max(rss_bytes());
        }
    }
    pipeline.finish(&mut alerts);
    let counters = pipeline.counters();
    let dropped = pipeline.rule_state_dropped();
    let bound = FLOW_MEMORY + STATEFUL_RULES * RULE_STATE + OVERHEAD;
    let grown = peak_rss.saturating_sub(start_rss);
    println!(
        "flood: {conversations} conversations, RSS {} MB at the start, +{} MB at the peak \
         (bound +{} MB); evicted {}; rule state dropped {dropped:?}",
        start_rss >> 20,
        grown >> 20,
        bound >> 20,
        counters.flow.conversations_evicted,
    );
    assert!(counters.flow.conversations_evicted > u64::from(conversations) / 2);
    let evicted = |rule: &str| {
        dropped
            .iter()
            .filter(|(r, _, _)| *r == rule)
            .map(|(_, _, n)| n)
            .sum::<u64>()
    };
    assert!(evicted("bulk_egress") > 0, "{dropped:?}");
    assert!(evicted("beacon") > 0, "{dropped:?}");
    assert!(
        peak_rss <= start_rss + bound,
        "RSS grew {} MB, more than {} MB",
        grown >> 20,
        bound >> 20
    );
}

#[test]
fn a_unique_conversation_flood_keeps_rss_within_the_configured_memory() {
    if std::env::var_os(CHILD).is_some() {
        flood();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("flood: "),
        "the child ran the flood: {stdout}"
    );
    eprintln!("{stdout}");
}
