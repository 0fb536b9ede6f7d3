//! synth: the load generator's and the benchmarks' workloads, deterministic mixes of flow
//! records (encoded into datagrams by `wire::emit`). Not part of the product: compiled with
//! the `loadgen` cargo feature (on by default, for `exflow loadgen` and the benchmarks) and
//! for the library's own tests.

use std::net::IpAddr;

use crate::decode::FlowRecord;

/// A deterministic mix of border traffic for benchmarks and load: inside hosts in
/// 10.0.0.0/8 and 2001:db8:10::/48 talking to public addresses, a quarter IPv6.
pub fn background_records(count: usize, seed: u64, start_ms: u64) -> Vec<FlowRecord> {
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64*: fast, deterministic, good enough to spread keys.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..count)
        .map(|i| {
            let r = next();
            let v6 = r % 4 == 0;
            let inside: IpAddr = if v6 {
                IpAddr::from([
                    0x2001,
                    0xdb8,
                    0x10,
                    0,
                    0,
                    0,
                    (r >> 8) as u16 & 0xff,
                    (r >> 16) as u16,
                ])
            } else {
                IpAddr::from([10, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8])
            };
            let outside: IpAddr = if v6 {
                IpAddr::from([
                    0x2a00 + ((r >> 32) as u16 & 0xff),
                    0x1450,
                    (r >> 40) as u16,
                    0,
                    0,
                    0,
                    0,
                    1,
                ])
            } else {
                IpAddr::from([
                    ((r >> 32) as u8 % 200) + 20,
                    (r >> 40) as u8,
                    (r >> 48) as u8,
                    (r >> 56) as u8,
                ])
            };
            let upload = r & (1 << 5) != 0;
            let (src_addr, dst_addr) = if upload {
                (inside, outside)
            } else {
                (outside, inside)
            };
            let start = start_ms + (i as u64 % 60_000);
            FlowRecord {
                src_addr,
                dst_addr,
                src_port: if upload {
                    32768 + (r >> 20) as u16 % 28000
                } else {
                    443
                },
                dst_port: if upload {
                    443
                } else {
                    32768 + (r >> 20) as u16 % 28000
                },
                proto: if r & (1 << 6) != 0 { 17 } else { 6 },
                bytes: 64 + (r >> 28) % 1_500_000,
                packets: 1 + (r >> 30) % 1000,
                time_flow_start_ns: start * 1_000_000,
                time_flow_end_ns: (start + (r >> 36) % 30_000) * 1_000_000,
                etype: if v6 {
                    crate::decode::record::ETYPE_IPV6
                } else {
                    crate::decode::record::ETYPE_IPV4
                },
                ..FlowRecord::default()
            }
        })
        .collect()
}

/// `count` records like those of `../shared/tools/flowgen`, the second load generator:
/// random inside (10.0.0.0/8) and public outside IPv4 addresses in either direction, 70%
/// TCP, 25% UDP, 5% ICMP, well-known service ports three times in four, packets per record
/// up to 65,536 (so large volumes, and many pairs cross detection thresholds), AS numbers
/// from the exporter, flows that began up to two minutes before `now_ms`. Repeated as they
/// are (flowgen resends its pool with the same record times), they keep extending the same
/// conversations and windows: the alert-storm workload.
pub fn flowgen_like_records(count: usize, seed: u64, now_ms: u64) -> Vec<FlowRecord> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let address = |inside: bool, r: u64| -> IpAddr {
        let first = if inside {
            10
        } else {
            match 1 + (r % 223) as u8 {
                10 | 127 => 93,
                octet => octet,
            }
        };
        IpAddr::from([
            first,
            (r >> 8) as u8,
            (r >> 16) as u8,
            1 + ((r >> 24) as u8 % 254),
        ])
    };
    const SERVICES: [u16; 8] = [80, 443, 53, 22, 25, 123, 3389, 8080];
    (0..count)
        .map(|_| {
            let r = [next(), next(), next(), next()];
            let outbound = r[0] & 1 == 0;
            let (src_addr, dst_addr) = (address(outbound, r[1]), address(!outbound, r[2]));
            let proto = match (r[0] >> 8) & 0xff {
                p if p * 100 < 70 * 256 => 6,
                p if p * 100 < 95 * 256 => 17,
                _ => 1,
            };
            let (src_port, dst_port) = if proto == 1 {
                (0, ((r[0] >> 16) as u16 % 4) << 8)
            } else {
                let ephemeral = 1024 + (r[0] >> 16) as u16 % 64511;
                let service = if (r[0] >> 32) % 4 == 0 {
                    1 + (r[0] >> 34) as u16 % 65534
                } else {
                    SERVICES[(r[0] >> 50) as usize % 8]
                };
                if outbound {
                    (ephemeral, service)
                } else {
                    (service, ephemeral)
                }
            };
            let packets = 1 + r[3] % (1 << (1 + (r[3] >> 20) % 16));
            let start = now_ms - 1000 - (r[3] >> 24) % 120_000;
            let end = (start + (r[3] >> 44) % 60_000).min(now_ms - 500);
            FlowRecord {
                src_addr,
                dst_addr,
                src_port,
                dst_port,
                proto,
                tcp_flags: if proto == 6 { 0x18 } else { 0 },
                bytes: packets * (40 + (r[2] >> 40) % 1461),
                packets,
                src_as: 1 + (r[1] >> 40) as u32 % 64_000,
                dst_as: 1 + (r[2] >> 48) as u32 % 64_000,
                time_flow_start_ns: start * 1_000_000,
                time_flow_end_ns: end * 1_000_000,
                etype: crate::decode::record::ETYPE_IPV4,
                ..FlowRecord::default()
            }
        })
        .collect()
}
