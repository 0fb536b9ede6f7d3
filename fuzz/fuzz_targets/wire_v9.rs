//! fuzz: the NetFlow v9 view. Any bytes through `Packet::new_checked`, every header accessor,
//! every flowset, and the template records of template and options-template flowsets.
#![no_main]

mod common;

use std::hint::black_box;

use exflow::wire::netflow_v9::{HEADER_LEN, OPTIONS_TEMPLATE_SET_ID, Packet, TEMPLATE_SET_ID};
use exflow::wire::template::{Dialect, TemplateKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    black_box((
        packet.count(),
        packet.sys_uptime(),
        packet.unix_secs(),
        packet.sequence(),
        packet.source_id(),
    ));
    common::walk_sets(packet.flowsets(), &data[HEADER_LEN..], |set| match set.id {
        TEMPLATE_SET_ID => common::walk_templates(set.body, Dialect::V9, TemplateKind::Data),
        OPTIONS_TEMPLATE_SET_ID => {
            common::walk_templates(set.body, Dialect::V9, TemplateKind::Options)
        }
        _ => {
            black_box(set);
        }
    });
});
