//! wire: template and options-template records (NetFlow v9, RFC 3954 section 5.2 and 6.1;
//! IPFIX, RFC 7011 sections 3.4.1 and 3.4.2): the field specifiers that say how the data
//! records of a template are laid out.

use super::{WireError, read_u16, read_u32};

/// IPFIX's length value for a variable-length field (RFC 7011 section 7).
pub const VARIABLE_LENGTH: u16 = 65535;

/// Which protocol's template encoding a set uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// NetFlow v9: 4-byte field specifiers; options templates count scope and option
    /// fields in bytes; scope field types are their own numbering (system, interface...).
    V9,
    /// IPFIX: the top bit of the field id says a 4-byte enterprise number follows;
    /// options templates count fields; scope fields are ordinary information elements.
    Ipfix,
}

/// Whether a set holds data templates or options templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    Data,
    Options,
}

/// One field specifier: which information element, from which enterprise (0 = IANA) and
/// how many bytes it takes in a data record ([`VARIABLE_LENGTH`] for IPFIX variable length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FieldSpec {
    pub id: u16,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub enterprise: u32,
    pub length: u16,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl FieldSpec {
    pub const fn new(id: u16, length: u16) -> Self {
        FieldSpec {
            id,
            enterprise: 0,
            length,
        }
    }
}

/// One template record, checked: its field specifiers are all inside `fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateRecord<'a> {
    pub template_id: u16,
    /// Number of field specifiers. Zero in IPFIX means the template is withdrawn.
    pub field_count: u16,
    /// How many of the leading fields are scope fields (options templates only).
    pub scope_field_count: u16,
    dialect: Dialect,
    fields: &'a [u8],
}

impl<'a> TemplateRecord<'a> {
    /// An IPFIX template withdrawal (RFC 7011 section 8.1): a record with no fields.
    pub fn is_withdrawal(&self) -> bool {
        self.dialect == Dialect::Ipfix && self.field_count == 0
    }

    /// The field specifiers, in order. Never fails: lengths were checked when the record
    /// was read.
    pub fn fields(&self) -> FieldSpecs<'a> {
        FieldSpecs {
            rest: self.fields,
            dialect: self.dialect,
        }
    }
}

/// Iterator over a checked record's field specifiers.
#[derive(Debug, Clone)]
pub struct FieldSpecs<'a> {
    rest: &'a [u8],
    dialect: Dialect,
}

impl Iterator for FieldSpecs<'_> {
    type Item = FieldSpec;

    fn next(&mut self) -> Option<FieldSpec> {
        let raw_id = read_u16(self.rest, 0)?;
        let length = read_u16(self.rest, 2)?;
        if self.dialect == Dialect::Ipfix && raw_id & 0x8000 != 0 {
            let enterprise = read_u32(self.rest, 4)?;
            self.rest = &self.rest[8..];
            Some(FieldSpec {
                id: raw_id & 0x7fff,
                enterprise,
                length,
            })
        } else {
            self.rest = &self.rest[4..];
            Some(FieldSpec {
                id: raw_id,
                enterprise: 0,
                length,
            })
        }
    }
}

/// Iterator over the template records of one template or options-template set body.
/// Stops at trailing padding (fewer than four bytes, or all zeros); yields `Err` once for a
/// record that does not fit, then stops.
#[derive(Debug, Clone)]
pub struct TemplateRecords<'a> {
    rest: &'a [u8],
    dialect: Dialect,
    kind: TemplateKind,
}

impl<'a> TemplateRecords<'a> {
    pub fn new(body: &'a [u8], dialect: Dialect, kind: TemplateKind) -> Self {
        TemplateRecords {
            rest: body,
            dialect,
            kind,
        }
    }

    fn read_one(&mut self) -> Result<TemplateRecord<'a>, WireError> {
        let buf = self.rest;
        let template_id = read_u16(buf, 0).ok_or(WireError::Truncated)?;
        let (header_len, field_count, scope_field_count) = match (self.dialect, self.kind) {
            (_, TemplateKind::Data) => (4, read_u16(buf, 2).ok_or(WireError::Truncated)?, 0),
            (Dialect::V9, TemplateKind::Options) => {
                let scope_len = read_u16(buf, 2).ok_or(WireError::Truncated)?;
                let option_len = read_u16(buf, 4).ok_or(WireError::Truncated)?;
                if scope_len % 4 != 0 || option_len % 4 != 0 {
                    return Err(WireError::BadTemplate);
                }
                (6, (scope_len / 4) + (option_len / 4), scope_len / 4)
            }
            (Dialect::Ipfix, TemplateKind::Options) => {
                let field_count = read_u16(buf, 2).ok_or(WireError::Truncated)?;
                if field_count == 0 {
                    (4, 0, 0) // withdrawal: RFC 7011 section 8.1
                } else {
                    let scope = read_u16(buf, 4).ok_or(WireError::Truncated)?;
                    if scope == 0 || scope > field_count {
                        return Err(WireError::BadTemplate);
                    }
                    (6, field_count, scope)
                }
            }
        };
        // Walk the specifiers once to find where the record ends.
        let mut at = header_len;
        for _ in 0..field_count {
            let raw_id = read_u16(buf, at).ok_or(WireError::Truncated)?;
            at += if self.dialect == Dialect::Ipfix && raw_id & 0x8000 != 0 {
                8
            } else {
                4
            };
        }
        let fields = buf.get(header_len..at).ok_or(WireError::Truncated)?;
        self.rest = &buf[at..];
        Ok(TemplateRecord {
            template_id,
            field_count,
            scope_field_count,
            dialect: self.dialect,
            fields,
        })
    }
}

impl<'a> Iterator for TemplateRecords<'a> {
    type Item = Result<TemplateRecord<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 || self.rest.iter().all(|&b| b == 0) {
            return None;
        }
        let record = self.read_one();
        if record.is_err() {
            self.rest = &[];
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipfix_template_with_enterprise_field_and_padding() {
        #[rustfmt::skip]
        let body = [
            0x01, 0x00,             // template id 256
            0x00, 0x03,             // field count 3
            0x00, 0x08, 0x00, 0x04, // sourceIPv4Address, 4
            0x80, 0x01, 0x00, 0x08, // enterprise bit, octetDeltaCount, 8
            0x00, 0x00, 0x72, 0x79, // PEN 29305 (reverse)
            0x00, 0x52, 0xff, 0xff, // interfaceName, variable length
            0x00, 0x00,             // padding
        ];
        let records: Vec<_> =
            TemplateRecords::new(&body, Dialect::Ipfix, TemplateKind::Data).collect();
        assert_eq!(records.len(), 1);
        let record = records[0].unwrap();
        assert_eq!(
            (
                record.template_id,
                record.field_count,
                record.scope_field_count
            ),
            (256, 3, 0)
        );
        assert!(!record.is_withdrawal());
        let fields: Vec<_> = record.fields().collect();
        assert_eq!(
            fields,
            vec![
                FieldSpec::new(8, 4),
                FieldSpec {
                    id: 1,
                    enterprise: 29305,
                    length: 8
                },
                FieldSpec::new(82, VARIABLE_LENGTH),
            ]
        );
    }

    #[test]
    fn v9_options_template_counts_scope_in_bytes() {
        #[rustfmt::skip]
        let body = [
            0x01, 0x01,             // template id 257
            0x00, 0x04,             // scope length 4 bytes: one field
            0x00, 0x08,             // option length 8 bytes: two fields
            0x00, 0x01, 0x00, 0x04, // scope: system, 4
            0x00, 0x22, 0x00, 0x04, // SAMPLING_INTERVAL, 4
            0x00, 0x23, 0x00, 0x01, // SAMPLING_ALGORITHM, 1
            0x00, 0x00,             // padding
        ];
        let records: Vec<_> =
            TemplateRecords::new(&body, Dialect::V9, TemplateKind::Options).collect();
        let record = records[0].unwrap();
        assert_eq!(
            (
                record.template_id,
                record.field_count,
                record.scope_field_count
            ),
            (257, 3, 1)
        );
        let ids: Vec<_> = record.fields().map(|f| f.id).collect();
        assert_eq!(ids, vec![1, 34, 35]);
    }

    #[test]
    fn ipfix_options_template_and_withdrawal() {
        #[rustfmt::skip]
        let body = [
            0x01, 0x02,             // template id 258
            0x00, 0x02,             // field count 2
            0x00, 0x01,             // scope field count 1
            0x00, 0x95, 0x00, 0x04, // observationDomainId, 4
            0x00, 0xa0, 0x00, 0x08, // systemInitTimeMilliseconds, 8
            0x01, 0x03,             // template id 259
            0x00, 0x00,             // field count 0: withdrawal
        ];
        let records: Vec<_> = TemplateRecords::new(&body, Dialect::Ipfix, TemplateKind::Options)
            .map(Result::unwrap)
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].scope_field_count, 1);
        assert_eq!(records[0].fields().nth(1), Some(FieldSpec::new(160, 8)));
        assert!(records[1].is_withdrawal());
        assert_eq!(records[1].template_id, 259);
    }

    #[test]
    fn bad_scope_counts_are_rejected() {
        let zero_scope = [0x01, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x95, 0x00, 0x04];
        let records: Vec<_> =
            TemplateRecords::new(&zero_scope, Dialect::Ipfix, TemplateKind::Options).collect();
        assert_eq!(records, vec![Err(WireError::BadTemplate)]);
        let odd_scope = [
            0x01, 0x02, 0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let records: Vec<_> =
            TemplateRecords::new(&odd_scope, Dialect::V9, TemplateKind::Options).collect();
        assert_eq!(records, vec![Err(WireError::BadTemplate)]);
    }

    #[test]
    fn every_truncation_of_a_template_is_an_error_or_padding() {
        #[rustfmt::skip]
        let body = [
            0x01, 0x00, 0x00, 0x02,
            0x00, 0x08, 0x00, 0x04,
            0x80, 0x01, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79,
        ];
        for len in 4..body.len() {
            let records: Vec<_> =
                TemplateRecords::new(&body[..len], Dialect::Ipfix, TemplateKind::Data).collect();
            assert_eq!(records, vec![Err(WireError::Truncated)], "length {len}");
        }
        for len in 0..4 {
            assert_eq!(
                TemplateRecords::new(&body[..len], Dialect::Ipfix, TemplateKind::Data).count(),
                0
            );
        }
    }
}
