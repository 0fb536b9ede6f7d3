//! fuzz: the NetFlow v5 view (and v1, v7). Any bytes through `Packet::new_checked`, then every header and
//! record accessor: none may panic once the packet is checked.
#![no_main]

use std::hint::black_box;

use exflow::wire::netflow_v5::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    black_box((
        packet.count(),
        packet.sys_uptime(),
        packet.unix_secs(),
        packet.unix_nsecs(),
        packet.flow_sequence(),
        packet.engine_type(),
        packet.engine_id(),
        packet.sampling_mode(),
        packet.sampling_interval(),
    ));
    let format = packet.format();
    assert!(packet.count() <= format.max_records());
    assert!(data.len() >= format.header_len() + usize::from(packet.count()) * format.record_len());
    let records = packet.records();
    assert_eq!(records.len(), usize::from(packet.count()));
    let mut seen = 0usize;
    for r in records {
        seen += 1;
        black_box((
            r.src_addr(),
            r.dst_addr(),
            r.next_hop(),
            r.input(),
            r.output(),
        ));
        black_box((
            r.d_pkts(),
            r.d_octets(),
            r.first(),
            r.last(),
            r.src_port(),
            r.dst_port(),
        ));
        black_box((
            r.tcp_flags(),
            r.prot(),
            r.tos(),
            r.src_as(),
            r.dst_as(),
            r.src_mask(),
            r.dst_mask(),
        ));
    }
    assert_eq!(seen, usize::from(packet.count()));
});
