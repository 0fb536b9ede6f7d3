//! fuzz: template and options-template records on their own. The first byte picks the
//! dialect (bit 0: IPFIX) and kind (bit 1: options); the rest is a set body.
#![no_main]

#[allow(dead_code)] // walk_sets is for the message targets
mod common;

use exflow::wire::template::{Dialect, TemplateKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let dialect = if selector & 1 == 0 {
        Dialect::V9
    } else {
        Dialect::Ipfix
    };
    let kind = if selector & 2 == 0 {
        TemplateKind::Data
    } else {
        TemplateKind::Options
    };
    common::walk_templates(body, dialect, kind);
});
