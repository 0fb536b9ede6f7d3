//! The rules that sum a host's upload in time buckets take a conversation's records summed
//! (`detect::fold`): what they conclude must not depend on it. A conversation that goes
//! quiet gives them its held records at the next tick, not only when it ends.

use std::net::IpAddr;

use exflow::config::Config;
use exflow::decode::FlowRecord;
use exflow::detect::Alert;
use exflow::pipeline::Pipeline;

const T0_MS: u64 = 1_710_230_400_000;
const KB: u64 = 1000;

/// `bytes` from 10.10.1.5 port `port` to 198.51.100.7:443, from `start_ms` to `end_ms`.
fn upload(port: u16, bytes: u64, start_ms: u64, end_ms: u64) -> FlowRecord {
    FlowRecord {
        time_flow_start_ns: start_ms * 1_000_000,
        time_flow_end_ns: end_ms * 1_000_000,
        bytes,
        packets: bytes.div_ceil(1000),
        src_addr: "10.10.1.5".parse().unwrap(),
        dst_addr: "198.51.100.7".parse().unwrap(),
        etype: 0x0800,
        proto: 6,
        src_port: port,
        dst_port: 443,
        sampler_address: "192.0.2.1".parse().unwrap(),
        ..FlowRecord::default()
    }
}

#[test]
fn a_trickle_of_held_records_reaches_low_and_slow_at_the_next_tick() {
    let config = Config {
        inside: vec!["10.10.0.0/16".parse().unwrap()],
        ..Config::default()
    };
    let mut pipeline = Pipeline::new(&config, config.enricher().unwrap(), 1);
    let mut alerts: Vec<Alert> = Vec::new();
    // 25 connections a minute apart, each 100 kB when it opens and nine more 100 kB
    // records a second apart (held: they extend it within ten seconds), then quiet:
    // 25 MB in all, over the 20 MB and 20 conversations low_and_slow reports.
    for conversation in 0..25u16 {
        let start = T0_MS + u64::from(conversation) * 60_000;
        for second in 0..10u64 {
            let at = start + second * 1000;
            pipeline.push_record(
                &upload(40_000 + conversation, 100 * KB, at, at + 500),
                &mut alerts,
            );
        }
    }
    assert_eq!(
        pipeline.counters().held_conversations,
        1,
        "the last connection's records are held, the earlier ones were given at a tick"
    );
    let last_ms = T0_MS + 24 * 60_000 + 9_500;
    // Another host's record moves the exporter's clock on by two ticks.
    let mut later = upload(50_000, KB, last_ms + 120_000, last_ms + 120_000);
    later.src_addr = "10.10.1.6".parse().unwrap();
    pipeline.push_record(&later, &mut alerts);
    assert_eq!(pipeline.counters().held_conversations, 0);

    let slow: Vec<&Alert> = alerts
        .iter()
        .filter(|a| {
            a.rule == "low_and_slow" && a.inside_addr == "10.10.1.5".parse::<IpAddr>().unwrap()
        })
        .collect();
    assert_eq!(
        slow.len(),
        1,
        "one report, before any conversation ended: {slow:#?}"
    );
    // The 20th conversation (at 19 min) brings the day to 20 MB: its held records came
    // to the rule with the tick after it went quiet, stamped with their exporter's clock.
    let alert = slow[0];
    assert_eq!(alert.bytes_out, 20_000 * KB, "every held record counted");
    assert_eq!(alert.event_time_ms, T0_MS + 19 * 60_000 + 9_500);
    assert_eq!(pipeline.counters().flow.records, 25 * 10 + 1);
}
