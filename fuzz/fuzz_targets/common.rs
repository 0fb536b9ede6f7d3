//! fuzz: helpers shared by the wire targets: walk template records the way the decoder does
//! and check the invariants the `wire` module doc promises.

use std::hint::black_box;

use exflow::wire::WireError;
use exflow::wire::set::Set;
use exflow::wire::template::{Dialect, TemplateKind, TemplateRecords};

/// Walks every template record of `body` and every field of each. Checks that the
/// iterator stops after its first error and that a checked record yields exactly
/// `field_count` specifiers (its fields were bounds-checked when it was read).
pub fn walk_templates(body: &[u8], dialect: Dialect, kind: TemplateKind) {
    let mut records = TemplateRecords::new(body, dialect, kind);
    // Each record takes at least four bytes, so a body holds at most len/4 of them.
    let mut steps = 0usize;
    for record in records.by_ref() {
        steps += 1;
        assert!(
            steps <= body.len() / 4 + 1,
            "template iterator does not advance"
        );
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                black_box(error.code());
                break;
            }
        };
        black_box((
            record.template_id,
            record.scope_field_count,
            record.is_withdrawal(),
        ));
        let mut fields = 0usize;
        for spec in record.fields() {
            fields += 1;
            black_box(spec);
        }
        assert_eq!(
            fields,
            usize::from(record.field_count),
            "checked record lost field specifiers"
        );
        assert!(
            record.scope_field_count <= record.field_count,
            "scope larger than the record"
        );
    }
    assert!(
        records.next().is_none(),
        "template iterator resumed after its end or first error"
    );
}

/// Walks a set iterator to its end, checking that it stops for good (after its first
/// error too) and that every set body lies inside `within`; calls `each` on every good set.
pub fn walk_sets<'a>(
    mut sets: impl Iterator<Item = Result<Set<'a>, WireError>>,
    within: &[u8],
    mut each: impl FnMut(Set<'a>),
) {
    let start = within.as_ptr() as usize;
    let end = start + within.len();
    let mut steps = 0usize;
    for set in sets.by_ref() {
        steps += 1;
        assert!(
            steps <= within.len() / 4 + 1,
            "set iterator does not advance"
        );
        match set {
            Ok(set) => {
                let at = set.body.as_ptr() as usize;
                assert!(
                    at >= start && at + set.body.len() <= end,
                    "set body outside the message"
                );
                each(set);
            }
            Err(error) => {
                black_box(error.code());
                break;
            }
        }
    }
    assert!(
        sets.next().is_none(),
        "set iterator resumed after its end or first error"
    );
}
