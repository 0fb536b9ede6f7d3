//! sink kafka encoding: an alert as the spool stores it and as Kafka receives it. The body is
//! the alert's JSON (`schemas/alert.schema.json`); the key (the inside host), the `rule`
//! header and the `alert_id` (to skip alerts the topic holds already) are computed once, when
//! the alert is spooled, and stored in front of the body, so sending from the spool needs no
//! parsing.
//!
//! Spooled entry: `0x01`, then key, rule and alert id, each as `u16 LE` length + bytes, then
//! the JSON body. An entry that starts with `{` is the older form (the JSON body alone, from
//! spools written before these were stored): they are read from the JSON. With
//! `sink.kafka.ocsf_topic` set, each alert is also spooled as its OCSF Detection Finding
//! (`sink::ocsf`): the same fields after `0x02`, for the OCSF topic, acknowledged on its own.

use rdkafka::message::{Header, OwnedHeaders};

use crate::detect::Alert;
use crate::detect::alert::ALERT_SCHEMA;
use crate::sink::ocsf::{self, OCSF_SCHEMA};

/// First byte of a spooled entry that carries its key and rule.
const ENTRY_V1: u8 = 0x01;
/// First byte of a spooled OCSF finding (the same fields, for the OCSF topic).
const ENTRY_OCSF: u8 = 0x02;

/// Which topic a spooled entry goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// `sink.kafka.topic`: the exflow alert (`schemas/alert.schema.json`).
    Alerts,
    /// `sink.kafka.ocsf_topic`: the alert as an OCSF Detection Finding.
    Ocsf,
}

impl Stream {
    /// The `schema` header of its messages.
    pub fn schema(self) -> &'static str {
        match self {
            Stream::Alerts => ALERT_SCHEMA,
            Stream::Ocsf => OCSF_SCHEMA,
        }
    }

    /// The `alert_id` of a message body of this stream, as read back from its topic.
    pub fn alert_id(self, body: &[u8]) -> Option<String> {
        match self {
            Stream::Alerts => alert_id(body),
            Stream::Ocsf => ocsf::alert_id(body),
        }
    }
}

/// Encodes `alert` as a spool entry; `None` when it cannot be serialised.
pub fn encode(alert: &Alert) -> Option<Vec<u8>> {
    entry(ENTRY_V1, alert, serde_json::to_vec(alert).ok()?)
}

/// Encodes `alert`'s OCSF Detection Finding as a spool entry for the OCSF topic.
pub fn encode_ocsf(alert: &Alert) -> Option<Vec<u8>> {
    entry(ENTRY_OCSF, alert, ocsf::encode(alert)?)
}

fn entry(kind: u8, alert: &Alert, body: Vec<u8>) -> Option<Vec<u8>> {
    let key = alert.inside_addr.to_string();
    let rule = alert.rule;
    let id = alert.alert_id.as_str();
    let mut entry = Vec::with_capacity(7 + key.len() + rule.len() + id.len() + body.len());
    entry.push(kind);
    for field in [key.as_str(), rule, id] {
        let length = u16::try_from(field.len()).ok()?;
        entry.extend_from_slice(&length.to_le_bytes());
        entry.extend_from_slice(field.as_bytes());
    }
    entry.extend_from_slice(&body);
    Some(entry)
}

/// A spooled alert ready to produce.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The topic it goes to.
    pub stream: Stream,
    /// The inside host: all alerts of a host in one partition, in order.
    pub key: std::borrow::Cow<'a, str>,
    /// The `rule` header.
    pub rule: std::borrow::Cow<'a, str>,
    /// The alert's `alert_id`, its idempotency key.
    pub alert_id: std::borrow::Cow<'a, str>,
    /// The alert's JSON.
    pub body: &'a [u8],
}

impl Message<'_> {
    /// The `schema` and `rule` headers.
    pub fn headers(&self) -> OwnedHeaders {
        OwnedHeaders::new()
            .insert(Header {
                key: "schema",
                value: Some(self.stream.schema()),
            })
            .insert(Header {
                key: "rule",
                value: Some(self.rule.as_ref()),
            })
    }
}

/// Decodes a spool entry (either form). A damaged entry (its CRC passed, so written so by a
/// bug or an older version) is sent as it is with an empty key and rule.
pub fn decode(entry: &[u8]) -> Message<'_> {
    let stream = match entry.first() {
        Some(&ENTRY_V1) => Some(Stream::Alerts),
        Some(&ENTRY_OCSF) => Some(Stream::Ocsf),
        _ => None,
    };
    if let Some(stream) = stream
        && let Some(message) = decode_v1(stream, &entry[1..])
    {
        return message;
    }
    let (key, rule, alert_id) = routing(entry);
    Message {
        stream: Stream::Alerts,
        key: key.into(),
        rule: rule.into(),
        alert_id: alert_id.into(),
        body: entry,
    }
}

fn decode_v1(stream: Stream, rest: &[u8]) -> Option<Message<'_>> {
    let (key, rest) = field(rest)?;
    let (rule, rest) = field(rest)?;
    let (alert_id, body) = field(rest)?;
    Some(Message {
        stream,
        key: std::str::from_utf8(key).ok()?.into(),
        rule: std::str::from_utf8(rule).ok()?.into(),
        alert_id: std::str::from_utf8(alert_id).ok()?.into(),
        body,
    })
}

/// The `alert_id` of an alert's JSON body (as read back from the topic).
pub fn alert_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        alert_id: String,
    }
    serde_json::from_slice::<Id>(body)
        .ok()
        .map(|id| id.alert_id)
}

/// One `u16 LE` length-prefixed field and what follows it.
fn field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, rest) = bytes.split_first_chunk::<2>()?;
    let length = usize::from(u16::from_le_bytes(*length));
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// The message key (inside host), `rule` header and `alert_id` of an older spool entry (JSON
/// only).
fn routing(body: &[u8]) -> (String, String, String) {
    #[derive(serde::Deserialize)]
    struct Routing {
        inside_addr: String,
        rule: String,
        alert_id: String,
    }
    match serde_json::from_slice::<Routing>(body) {
        Ok(r) => (r.inside_addr, r.rule, r.alert_id),
        Err(_) => Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_carries_key_and_rule_before_the_json() {
        let entry = [
            &[ENTRY_V1][..],
            &[9, 0],            // key length
            b"10.0.0.12",       // key
            &[6, 0],            // rule length
            b"beacon",          // rule
            &[4, 0],            // alert id length
            b"a1b2",            // alert id
            br#"{"rule":"x"}"#, // body
        ]
        .concat();
        let message = decode(&entry);
        assert_eq!(message.key, "10.0.0.12");
        assert_eq!(message.rule, "beacon");
        assert_eq!(message.alert_id, "a1b2");
        assert_eq!(message.body, br#"{"rule":"x"}"#);
    }

    #[test]
    fn older_entries_are_routed_from_their_json() {
        let entry = br#"{"inside_addr":"10.0.0.1","rule":"bulk_egress","alert_id":"f0","x":1}"#;
        let message = decode(entry);
        assert_eq!(message.key, "10.0.0.1");
        assert_eq!(message.alert_id, "f0");
        assert_eq!(alert_id(entry).as_deref(), Some("f0"));
        assert_eq!(message.rule, "bulk_egress");
        assert_eq!(message.body, &entry[..]);
    }

    #[test]
    fn truncated_entries_never_panic() {
        for kind in [ENTRY_V1, ENTRY_OCSF] {
            let entry = [kind, 200, 0, b'a'];
            for end in 0..=entry.len() {
                let message = decode(&entry[..end]);
                assert_eq!(message.key, "");
            }
        }
    }

    #[test]
    fn an_ocsf_entry_goes_to_the_ocsf_stream_with_the_alerts_routing() {
        let alert = crate::sink::ocsf::tests::escalated_bulk_egress();
        let entry = encode_ocsf(&alert).unwrap();
        let message = decode(&entry);
        assert_eq!(message.stream, Stream::Ocsf);
        assert_eq!(message.key, "10.20.0.5");
        assert_eq!(message.rule, "bulk_egress");
        assert_eq!(message.alert_id, alert.alert_id);
        assert_eq!(
            Stream::Ocsf.alert_id(message.body).as_deref(),
            Some(alert.alert_id.as_str())
        );
        let plain = encode(&alert).unwrap();
        let message = decode(&plain);
        assert_eq!(message.stream, Stream::Alerts);
        assert_eq!(
            Stream::Alerts.alert_id(message.body).as_deref(),
            Some(alert.alert_id.as_str())
        );
    }
}
