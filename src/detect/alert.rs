//! detect: `Alert`, what a rule reports, in the public JSON form of
//! `schemas/alert.schema.json` ("exflow.alert.v1").

use std::net::IpAddr;

use serde::Serialize;

use crate::decode::directory::{InterfaceDirectory, InterfaceRef};
use crate::enrich::CountryCode;
use crate::flow::community_id::community_id;
use crate::flow::{Conversation, ConversationKey};
use crate::time::rfc3339;

/// The schema id every alert carries; a breaking change gets a new one (and topic).
pub const ALERT_SCHEMA: &str = "exflow.alert.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The severity band of a 0-100 score.
    pub fn of_score(score: u8) -> Severity {
        match score {
            0..=39 => Severity::Low,
            40..=59 => Severity::Medium,
            60..=79 => Severity::High,
            _ => Severity::Critical,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
}

/// One alert, as serialised. Times are RFC 3339 UTC strings; counters are sampled-up
/// estimates of the real traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub schema: &'static str,
    /// Stable for the same input: a hash of rule, endpoints, step and event time.
    pub alert_id: String,
    pub rule: &'static str,
    pub severity: Severity,
    pub score: u8,
    pub summary: String,
    /// When the threshold was crossed, on the exporters' clock.
    pub event_time: String,
    /// `event_time` in milliseconds, for ordering and suppression (not serialised).
    #[serde(skip)]
    pub event_time_ms: u64,
    /// Wall clock when the alert was raised, ns: the daemon's alert latency (not serialised).
    #[serde(skip)]
    pub raised_ns: u64,
    pub inside_addr: IpAddr,
    pub outside_addr: IpAddr,
    pub outside_port: u16,
    pub proto: u8,
    /// Community ID v1 of the conversation the alert is about (the one that crossed the
    /// line, for the rules that sum several): the flow hash Zeek, Suricata and Elastic
    /// share. Absent for a series of connections (`beacon`) or of queries (`dns_tunnel`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    pub outside_country: Option<CountryCode>,
    pub outside_asn: Option<u32>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub flows: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub duration_s: u64,
    pub exporters: Vec<IpAddr>,
    /// The name and description its exporter gave the input and output interface of the
    /// record behind the alert (options data, IE 82/83; the record that crossed the line,
    /// for the rules that sum several; a `beacon` series' first record, a `dns_tunnel`
    /// pair's latest). Absent where the exporter announced none. Additive to v1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_if_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_if_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_if_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_if_description: Option<String>,
    /// Where those names are looked up, once the alert is raised (not serialised).
    #[serde(skip)]
    pub interfaces: InterfaceRef,
    /// MITRE ATT&CK technique ids.
    pub attack: Vec<&'static str>,
    /// Ladder step of this alert (0 = first report); a higher step is an escalation.
    pub step: u8,
    /// For an escalation, the `alert_id` of the first alert of the same rule, host and
    /// destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalates: Option<String>,
    /// For the behaviour rules: the host's own baseline the traffic departed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// For the behaviour rules: what the host was learned to be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_role: Option<HostRole>,
    /// The conversations behind the alert (the largest first, a few at most).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
    /// The inside host's risk over its alerts of the last day (`detect::risk`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_risk: Option<super::risk::HostRisk>,
}

impl Alert {
    /// Names the interfaces of the record behind the alert from what its exporter
    /// announced: one lookup per alert, none per record. A name or description the
    /// exporter left empty stays absent.
    pub fn name_interfaces(&mut self, directory: &InterfaceDirectory) {
        let Some(&exporter) = self.exporters.first() else {
            return;
        };
        let named = directory.lookup(exporter, &self.interfaces);
        let text = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        if let Some(input) = named.input {
            self.in_if_name = text(&input.name);
            self.in_if_description = text(&input.description);
        }
        if let Some(output) = named.output {
            self.out_if_name = text(&output.name);
            self.out_if_description = text(&output.description);
        }
    }
}

/// What a rule measured against a host's own normal, and the line it crossed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    /// What is measured, e.g. "foreign_bytes_out_per_hour".
    pub metric: &'static str,
    /// The value that raised the alert.
    pub observed: u64,
    /// The line it crossed.
    pub threshold: u64,
    /// The host's usual value: the median over the hours learned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<u64>,
    /// Median absolute deviation over the same hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mad: Option<u64>,
    /// The host's highest value over the same hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak: Option<u64>,
    /// Hours behind median, MAD and peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<u32>,
    /// `observed` over the usual peak (or over the threshold when there is none).
    pub ratio: f64,
}

/// A host's behaviour as its profile learned it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRole {
    /// "server" (answered inbound connections, started none outward while learning),
    /// "client" (started connections outward), or "learning".
    pub role: &'static str,
    /// The ports it accepted most conversations on, busiest first.
    pub served_ports: Vec<u16>,
    /// Conversations outside hosts started with it.
    pub served_conversations: u64,
    /// Conversations it started to the outside while learning.
    pub initiated_conversations: u64,
    /// Countries it started conversations to while learning.
    pub initiated_countries: Vec<CountryCode>,
    /// Distinct outside peers (HyperLogLog estimate).
    pub distinct_peers: u64,
    /// Event time the profile has watched the host, s.
    pub profiled_s: u64,
}

/// One conversation behind an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub proto: u8,
    pub inside_addr: IpAddr,
    pub inside_port: u16,
    pub outside_addr: IpAddr,
    pub outside_port: u16,
    /// Community ID v1 of the conversation.
    pub community_id: String,
    pub first_seen: String,
    pub last_seen: String,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// Why a finding was made, beyond its counters: what a behaviour rule adds to its alert.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Explanation {
    pub baseline: Option<Baseline>,
    pub host_role: Option<HostRole>,
    pub evidence: Vec<EvidenceConversation>,
}

/// A conversation behind a finding, on event time (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceConversation {
    pub key: ConversationKey,
    pub first_ms: u64,
    pub last_ms: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

impl EvidenceConversation {
    pub fn of(key: &ConversationKey, conversation: &Conversation) -> Self {
        EvidenceConversation {
            key: *key,
            first_ms: conversation.first_ms,
            last_ms: conversation.last_ms,
            bytes_out: conversation.bytes_out,
            bytes_in: conversation.bytes_in,
        }
    }

    pub fn to_evidence(&self) -> Evidence {
        Evidence {
            proto: self.key.proto,
            inside_addr: self.key.inside,
            inside_port: self.key.inside_port,
            outside_addr: self.key.outside,
            outside_port: self.key.outside_port,
            community_id: community_id(&self.key),
            first_seen: rfc3339(self.first_ms.saturating_mul(1_000_000)),
            last_seen: rfc3339(self.last_ms.saturating_mul(1_000_000)),
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
        }
    }
}

/// The largest conversations a rule keeps per window or host, held inline (no allocation
/// of its own, so reading them costs no pointer chase from the rule's map entry).
pub type EvidenceList = arrayvec::ArrayVec<EvidenceConversation, EVIDENCE_HELD>;

/// What an [`EvidenceList`] holds at most.
pub const EVIDENCE_HELD: usize = 4;

/// Keeps the `max` (at most [`EVIDENCE_HELD`]) largest conversations (by bytes out) of a
/// finding's evidence: `seen` replaces its own earlier entry, or the smallest when it is
/// larger.
pub fn keep_evidence(list: &mut EvidenceList, seen: EvidenceConversation, max: usize) {
    if let Some(own) = list.iter_mut().find(|e| e.key == seen.key) {
        *own = seen;
    } else if list.len() < max.min(EVIDENCE_HELD) {
        list.push(seen);
    } else if let Some(smallest) = list.iter_mut().min_by_key(|e| e.bytes_out)
        && smallest.bytes_out < seen.bytes_out
    {
        *smallest = seen;
    }
}

/// A stable 64-bit FNV-1a hash, hex: `alert_id` must not change between runs or builds
/// (std's hasher is randomly seeded and unspecified).
pub fn stable_id(parts: &[&[u8]]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_depend_on_every_part() {
        assert_eq!(stable_id(&[b"a", b"b"]), stable_id(&[b"a", b"b"]));
        assert_ne!(stable_id(&[b"a", b"b"]), stable_id(&[b"ab"]));
        assert_eq!(stable_id(&[]).len(), 16);
    }

    #[test]
    fn severity_bands() {
        assert_eq!(Severity::of_score(0), Severity::Low);
        assert_eq!(Severity::of_score(40), Severity::Medium);
        assert_eq!(Severity::of_score(79), Severity::High);
        assert_eq!(Severity::of_score(100), Severity::Critical);
        assert_eq!(serde_json::to_value(Severity::High).unwrap(), "high");
    }
}
