//! detect: `Alert`, what a rule reports, in the public JSON form of
//! `schemas/alert.schema.json` ("exflow.alert.v1").

use std::net::IpAddr;

use serde::Serialize;

use crate::enrich::CountryCode;

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
    /// MITRE ATT&CK technique ids.
    pub attack: Vec<&'static str>,
    /// Ladder step of this alert (0 = first report); a higher step is an escalation.
    pub step: u8,
    /// For an escalation, the `alert_id` of the first alert of the same rule, host and
    /// destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalates: Option<String>,
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
