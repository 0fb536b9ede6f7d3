//! fuzz: the IPFIX view. Any bytes through `Message::new_checked`, every header accessor,
//! every set up to the message length, and the template records of template and
//! options-template sets.
#![no_main]

mod common;

use std::hint::black_box;

use exflow::wire::ipfix::{HEADER_LEN, Message, OPTIONS_TEMPLATE_SET_ID, TEMPLATE_SET_ID};
use exflow::wire::template::{Dialect, TemplateKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::new_checked(data) else {
        return;
    };
    let length = usize::from(message.length());
    assert!((HEADER_LEN..=data.len()).contains(&length));
    black_box((
        message.export_time(),
        message.sequence(),
        message.observation_domain_id(),
    ));
    common::walk_sets(message.sets(), &data[HEADER_LEN..length], |set| {
        match set.id {
            TEMPLATE_SET_ID => common::walk_templates(set.body, Dialect::Ipfix, TemplateKind::Data),
            OPTIONS_TEMPLATE_SET_ID => {
                common::walk_templates(set.body, Dialect::Ipfix, TemplateKind::Options)
            }
            _ => {
                black_box(set);
            }
        }
    });
});
