//! fuzz: the sFlow v5 views. Any bytes through `sflow::Datagram::new_checked`, every header
//! accessor, every sample, the flow and discard sample views, every flow record view, and
//! the sampled packet header parser over raw packet headers (and over the input itself).
#![no_main]

use std::hint::black_box;

use exflow::wire::sampled;
use exflow::wire::sflow::{self, Datagram, Record, Records};
use libfuzzer_sys::fuzz_target;

/// Walks `records`, checking the iterator's promises: it advances (each record takes at
/// least eight bytes), and nothing follows an error.
fn walk<'a>(records: Records<'a>, len: usize, mut each: impl FnMut(Record<'a>)) {
    let mut steps = 0usize;
    let mut failed = false;
    for record in records {
        assert!(!failed, "records yielded after an error");
        steps += 1;
        assert!(steps <= len / 8 + 1, "records iterator does not advance");
        match record {
            Ok(record) => {
                assert!(record.body.len() <= len, "record body outside its parent");
                each(record)
            }
            Err(error) => {
                black_box(error.code());
                failed = true;
            }
        }
    }
}

fn flow_record(record: Record<'_>) {
    if record.enterprise != 0 {
        return;
    }
    match record.format {
        sflow::RAW_PACKET_HEADER => {
            if let Ok(raw) = sflow::RawPacketHeader::new_checked(record.body) {
                black_box((raw.header_protocol(), raw.frame_length(), raw.stripped()));
                black_box(sampled::ethernet(raw.header()));
                black_box(sampled::ip(raw.header()));
            }
        }
        sflow::SAMPLED_IPV4 | sflow::SAMPLED_IPV6 => {
            let v6 = record.format == sflow::SAMPLED_IPV6;
            if let Ok(ip) = sflow::SampledIp::new_checked(record.body, v6) {
                black_box((ip.length(), ip.protocol(), ip.src_ip(), ip.dst_ip()));
                black_box((ip.src_port(), ip.dst_port(), ip.tcp_flags(), ip.tos()));
            }
        }
        sflow::EXTENDED_SWITCH => {
            if let Ok(s) = sflow::ExtendedSwitch::new_checked(record.body) {
                black_box((
                    s.src_vlan(),
                    s.src_priority(),
                    s.dst_vlan(),
                    s.dst_priority(),
                ));
            }
        }
        sflow::EXTENDED_ROUTER => {
            if let Ok(r) = sflow::ExtendedRouter::new_checked(record.body) {
                black_box((r.next_hop(), r.src_mask_len(), r.dst_mask_len()));
            }
        }
        sflow::EXTENDED_GATEWAY => {
            if let Ok(g) = sflow::ExtendedGateway::new_checked(record.body) {
                black_box((g.next_hop(), g.as_number(), g.src_as(), g.src_peer_as()));
                assert_eq!(g.first_path_as().is_some(), g.last_path_as().is_some());
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    black_box(sampled::ethernet(data));
    black_box(sampled::ip(data));
    let Ok(datagram) = Datagram::new_checked(data) else {
        return;
    };
    black_box((
        datagram.agent_address(),
        datagram.sub_agent_id(),
        datagram.sequence_number(),
        datagram.uptime_ms(),
        datagram.sample_count(),
    ));
    walk(datagram.samples(), data.len(), |sample| {
        if sample.enterprise != 0 {
            return;
        }
        match sample.format {
            sflow::FLOW_SAMPLE | sflow::EXPANDED_FLOW_SAMPLE => {
                let expanded = sample.format == sflow::EXPANDED_FLOW_SAMPLE;
                if let Ok(flow) = sflow::FlowSample::new_checked(sample.body, expanded) {
                    black_box((flow.sequence_number(), flow.source_id_type()));
                    black_box((flow.source_id_index(), flow.sampling_rate()));
                    black_box((
                        flow.sample_pool(),
                        flow.drops(),
                        flow.input(),
                        flow.output(),
                    ));
                    walk(flow.records(), sample.body.len(), flow_record);
                }
            }
            sflow::DISCARDED_PACKET => {
                if let Ok(discard) = sflow::DiscardSample::new_checked(sample.body) {
                    black_box((discard.sequence_number(), discard.drops(), discard.reason()));
                    black_box((discard.input(), discard.output()));
                    walk(discard.records(), sample.body.len(), |r| {
                        black_box(r);
                    });
                }
            }
            _ => {}
        }
    });
});
