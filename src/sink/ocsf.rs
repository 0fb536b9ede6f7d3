//! sink ocsf: an alert as an OCSF Detection Finding (class 2004, OCSF schema 1.3.0), the
//! optional second form the sink publishes (`sink.kafka.ocsf_topic`, `exflow replay --format
//! ocsf`) for SIEMs that speak OCSF. The exflow alert (`schemas/alert.schema.json`) stays the
//! source; this is a mapping of it, described in `schemas/ocsf-detection-finding.v1.md`.

use serde_json::{Value, json};

use crate::detect::Alert;
use crate::detect::alert::{ALERT_SCHEMA, Evidence, Severity};
use crate::time::parse_rfc3339_ms;

/// The OCSF schema version the findings follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// The `schema` header of a finding on Kafka: the mapping's own version and OCSF's.
pub const OCSF_SCHEMA: &str = "exflow.ocsf.detection_finding.v1";
/// Detection Finding, in the Findings category.
const CLASS_UID: u32 = 2004;
const CATEGORY_UID: u32 = 2;
/// `activity_id`: a first report creates a finding, an escalation updates it.
const ACTIVITY_CREATE: u32 = 1;
const ACTIVITY_UPDATE: u32 = 2;
/// Observable `type_id`s.
const OBSERVABLE_IP: u32 = 2;
const OBSERVABLE_COUNTRY: u32 = 14;
/// MITRE ATT&CK version the technique names below are from.
const ATTACK_VERSION: &str = "v16";

/// The techniques the rules name, with their tactic: (id, name, tactic id, tactic name).
const TECHNIQUES: &[(&str, &str, &str, &str)] = &[
    ("T1029", "Scheduled Transfer", "TA0010", "Exfiltration"),
    (
        "T1030",
        "Data Transfer Size Limits",
        "TA0010",
        "Exfiltration",
    ),
    (
        "T1041",
        "Exfiltration Over C2 Channel",
        "TA0010",
        "Exfiltration",
    ),
    (
        "T1048",
        "Exfiltration Over Alternative Protocol",
        "TA0010",
        "Exfiltration",
    ),
    (
        "T1048.003",
        "Exfiltration Over Unencrypted Non-C2 Protocol",
        "TA0010",
        "Exfiltration",
    ),
    (
        "T1537",
        "Transfer Data to Cloud Account",
        "TA0010",
        "Exfiltration",
    ),
    (
        "T1567",
        "Exfiltration Over Web Service",
        "TA0010",
        "Exfiltration",
    ),
    (
        "T1071",
        "Application Layer Protocol",
        "TA0011",
        "Command and Control",
    ),
    ("T1071.004", "DNS", "TA0011", "Command and Control"),
    (
        "T1105",
        "Ingress Tool Transfer",
        "TA0011",
        "Command and Control",
    ),
    (
        "T1571",
        "Non-Standard Port",
        "TA0011",
        "Command and Control",
    ),
];

/// OCSF `severity_id` (and caption) of an exflow severity.
fn severity(severity: Severity) -> (u32, &'static str) {
    match severity {
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// One ATT&CK entry; a sub-technique also names its parent technique.
fn attack(id: &str) -> Value {
    let known = TECHNIQUES.iter().find(|t| t.0 == id);
    let parent = id.split_once('.').map(|(parent, _)| parent);
    let name_of = |id: &str| TECHNIQUES.iter().find(|t| t.0 == id).map(|t| t.1);
    let mut entry = json!({ "version": ATTACK_VERSION });
    match parent {
        Some(parent) => {
            entry["technique"] = json!({ "uid": parent, "name": name_of(parent) });
            entry["sub_technique"] = json!({ "uid": id, "name": known.map(|t| t.1) });
        }
        None => entry["technique"] = json!({ "uid": id, "name": known.map(|t| t.1) }),
    }
    if let Some(&(_, _, tactic, tactic_name)) = known {
        entry["tactic"] = json!({ "uid": tactic, "name": tactic_name });
    }
    strip_nulls(entry)
}

/// Drops the `null` members an unknown name leaves (OCSF omits what it does not know).
fn strip_nulls(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
        for v in map.values_mut() {
            *v = strip_nulls(std::mem::take(v));
        }
    }
    value
}

fn protocol_name(proto: u8) -> Option<&'static str> {
    match proto {
        1 => Some("icmp"),
        6 => Some("tcp"),
        17 => Some("udp"),
        58 => Some("ipv6-icmp"),
        _ => None,
    }
}

/// A conversation as an OCSF evidence artifact: the inside host is the source, the outside
/// peer the destination (exflow orients, it does not always know who initiated).
fn evidence(alert: &Alert, e: &Evidence) -> Value {
    strip_nulls(json!({
        "src_endpoint": { "ip": e.inside_addr, "port": e.inside_port },
        "dst_endpoint": {
            "ip": e.outside_addr,
            "port": e.outside_port,
            "location": alert.outside_country.filter(|_| e.outside_addr == alert.outside_addr)
                .map(|c| json!({ "country": c })),
        },
        "connection_info": {
            "uid": e.community_id,
            "protocol_num": e.proto,
            "protocol_name": protocol_name(e.proto),
            "boundary_id": 3,
            "boundary": "External",
            "direction_id": 0,
        },
        "data": {
            "first_seen": e.first_seen,
            "last_seen": e.last_seen,
            "bytes_out": e.bytes_out,
            "bytes_in": e.bytes_in,
        },
    }))
}

/// The alert's own endpoints as evidence when the rule gave no conversations.
fn endpoints(alert: &Alert) -> Value {
    strip_nulls(json!({
        "src_endpoint": { "ip": alert.inside_addr },
        "dst_endpoint": {
            "ip": alert.outside_addr,
            "port": (alert.outside_port != 0).then_some(alert.outside_port),
            "location": alert.outside_country.map(|c| json!({ "country": c })),
        },
        "connection_info": {
            "uid": alert.community_id,
            "protocol_num": alert.proto,
            "protocol_name": protocol_name(alert.proto),
            "boundary_id": 3,
            "boundary": "External",
            "direction_id": 0,
        },
    }))
}

/// The alert as an OCSF 1.3.0 Detection Finding.
pub fn detection_finding(alert: &Alert) -> Value {
    let (severity_id, severity_name) = severity(alert.severity);
    let (activity_id, activity_name) = if alert.step == 0 {
        (ACTIVITY_CREATE, "Create")
    } else {
        (ACTIVITY_UPDATE, "Update")
    };
    // An escalation updates the finding its first alert created.
    let finding_uid = alert.escalates.as_deref().unwrap_or(&alert.alert_id);
    let evidences: Vec<Value> = if alert.evidence.is_empty() {
        vec![endpoints(alert)]
    } else {
        alert.evidence.iter().map(|e| evidence(alert, e)).collect()
    };
    let mut observables = vec![
        json!({ "name": "device.ip", "type_id": OBSERVABLE_IP, "type": "IP Address",
                "value": alert.inside_addr }),
        json!({ "name": "evidences.dst_endpoint.ip", "type_id": OBSERVABLE_IP,
                "type": "IP Address", "value": alert.outside_addr }),
    ];
    if let Some(country) = alert.outside_country {
        observables.push(json!({ "name": "evidences.dst_endpoint.location.country",
                                 "type_id": OBSERVABLE_COUNTRY, "type": "Country",
                                 "value": country }));
    }
    let analytic_type = if alert.baseline.is_some() || alert.host_role.is_some() {
        (2, "Behavioral")
    } else {
        (1, "Rule")
    };
    let mut finding = strip_nulls(json!({
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("Detection Finding: {activity_name}"),
        "time": alert.event_time_ms,
        "start_time": parse_rfc3339_ms(&alert.first_seen),
        "end_time": parse_rfc3339_ms(&alert.last_seen),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": 1,
        "status": "New",
        "message": alert.summary,
        "risk_score": alert.score,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": alert.alert_id,
            "correlation_uid": finding_uid,
            "original_time": alert.event_time,
            "log_name": "exflow.alerts",
            "product": {
                "name": "exflow",
                "vendor_name": "exflow",
                "version": env!("CARGO_PKG_VERSION"),
                "feature": { "name": alert.rule },
            },
        },
        "finding_info": {
            "uid": finding_uid,
            "title": alert.summary,
            "types": [alert.rule],
            "created_time": alert.event_time_ms,
            "first_seen_time": parse_rfc3339_ms(&alert.first_seen),
            "last_seen_time": parse_rfc3339_ms(&alert.last_seen),
            "analytic": {
                "uid": alert.rule,
                "name": alert.rule,
                "type_id": analytic_type.0,
                "type": analytic_type.1,
            },
            "attacks": alert.attack.iter().map(|id| attack(id)).collect::<Vec<_>>(),
        },
        "device": { "ip": alert.inside_addr, "type_id": 0, "type": "Unknown" },
        "evidences": evidences,
        "observables": observables,
        // What OCSF has no place for, under exflow's own names.
        "unmapped": {
            "schema": ALERT_SCHEMA,
            "rule": alert.rule,
            "step": alert.step,
            "escalates": alert.escalates,
            "bytes_out": alert.bytes_out,
            "bytes_in": alert.bytes_in,
            "packets_out": alert.packets_out,
            "packets_in": alert.packets_in,
            "flows": alert.flows,
            "duration_s": alert.duration_s,
            "outside_asn": alert.outside_asn,
            "exporters": alert.exporters,
            "baseline": alert.baseline,
            "host_role": alert.host_role,
            "host_risk": alert.host_risk,
        },
    }));
    // The interfaces the exporter named, where it named them (beside `json!`, whose
    // macro nesting the object above already fills).
    let interfaces = [
        ("in_if_name", &alert.in_if_name),
        ("in_if_description", &alert.in_if_description),
        ("out_if_name", &alert.out_if_name),
        ("out_if_description", &alert.out_if_description),
    ];
    if let Some(unmapped) = finding["unmapped"].as_object_mut() {
        for (name, value) in interfaces {
            if let Some(value) = value {
                unmapped.insert(name.to_string(), Value::from(value.as_str()));
            }
        }
    }
    finding
}

/// The finding's JSON bytes.
pub fn encode(alert: &Alert) -> Option<Vec<u8>> {
    serde_json::to_vec(&detection_finding(alert)).ok()
}

/// The `metadata.uid` (the exflow `alert_id`) of a finding's JSON, as read back from its
/// topic.
pub fn alert_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        uid: String,
    }
    #[derive(serde::Deserialize)]
    struct Finding {
        metadata: Metadata,
    }
    serde_json::from_slice::<Finding>(body)
        .ok()
        .map(|f| f.metadata.uid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::detect::alert::Baseline;

    /// A second-step `bulk_egress` alert (it escalates an earlier one) with one evidence
    /// conversation to Russia.
    pub(crate) fn escalated_bulk_egress() -> Alert {
        Alert {
            schema: ALERT_SCHEMA,
            alert_id: "00c0ffee00c0ffee".into(),
            rule: "bulk_egress",
            severity: Severity::High,
            score: 70,
            summary: "10.20.0.5 sent 400 MB to 77.88.55.80 (RU) in 20 min".into(),
            event_time: "2025-03-11T10:20:00Z".into(),
            event_time_ms: 1_741_688_400_000,
            raised_ns: 0,
            inside_addr: "10.20.0.5".parse().unwrap(),
            outside_addr: "77.88.55.80".parse().unwrap(),
            outside_port: 443,
            proto: 6,
            community_id: Some("1:abc=".into()),
            outside_country: Some("RU".parse().unwrap()),
            outside_asn: Some(13238),
            bytes_out: 400_000_000,
            bytes_in: 1_000_000,
            packets_out: 300_000,
            packets_in: 20_000,
            flows: 3,
            first_seen: "2025-03-11T10:00:00.250Z".into(),
            last_seen: "2025-03-11T10:20:00Z".into(),
            duration_s: 1199,
            exporters: vec!["192.0.2.1".parse().unwrap()],
            in_if_name: None,
            in_if_description: None,
            out_if_name: None,
            out_if_description: None,
            interfaces: Default::default(),
            attack: vec!["T1048", "T1071.004"],
            step: 1,
            escalates: Some("1111222233334444".into()),
            baseline: Some(Baseline {
                metric: "foreign_bytes_out_per_hour",
                observed: 400_000_000,
                threshold: 100_000_000,
                median: None,
                mad: None,
                peak: None,
                hours: None,
                ratio: 4.0,
            }),
            host_role: None,
            evidence: vec![Evidence {
                proto: 6,
                inside_addr: "10.20.0.5".parse().unwrap(),
                inside_port: 50123,
                outside_addr: "77.88.55.80".parse().unwrap(),
                outside_port: 443,
                community_id: "1:abc=".into(),
                first_seen: "2025-03-11T10:00:00.250Z".into(),
                last_seen: "2025-03-11T10:20:00Z".into(),
                bytes_out: 400_000_000,
                bytes_in: 1_000_000,
            }],
            host_risk: None,
        }
    }

    #[test]
    fn an_escalated_alert_is_an_update_of_its_first_alerts_finding() {
        let alert = escalated_bulk_egress();
        let f = detection_finding(&alert);
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(f["activity_id"], 2);
        assert_eq!(f["type_uid"], 200_402);
        assert_eq!(f["time"], 1_741_688_400_000u64);
        assert_eq!(f["start_time"], 1_741_687_200_250u64);
        assert_eq!(f["end_time"], 1_741_688_400_000u64);
        assert_eq!(f["severity_id"], 4);
        assert_eq!(f["severity"], "High");
        assert_eq!(f["risk_score"], 70);
        assert_eq!(f["message"], alert.summary);
        assert_eq!(f["metadata"]["version"], "1.3.0");
        assert_eq!(f["metadata"]["uid"], "00c0ffee00c0ffee");
        assert_eq!(f["metadata"]["product"]["name"], "exflow");
        assert_eq!(f["metadata"]["product"]["vendor_name"], "exflow");
        // the finding is the first alert's; this alert is one update of it
        assert_eq!(f["finding_info"]["uid"], "1111222233334444");
        assert_eq!(f["finding_info"]["title"], alert.summary);
        assert_eq!(f["finding_info"]["types"][0], "bulk_egress");
        assert_eq!(f["finding_info"]["analytic"]["name"], "bulk_egress");
        assert_eq!(f["finding_info"]["analytic"]["type"], "Behavioral");
        let attacks = f["finding_info"]["attacks"].as_array().unwrap();
        assert_eq!(attacks.len(), 2);
        assert_eq!(attacks[0]["technique"]["uid"], "T1048");
        assert_eq!(
            attacks[0]["technique"]["name"],
            "Exfiltration Over Alternative Protocol"
        );
        assert_eq!(attacks[0]["tactic"]["uid"], "TA0010");
        assert_eq!(attacks[1]["technique"]["uid"], "T1071");
        assert_eq!(attacks[1]["sub_technique"]["uid"], "T1071.004");
        assert_eq!(attacks[1]["tactic"]["name"], "Command and Control");
        assert_eq!(f["device"]["ip"], "10.20.0.5");
        let evidences = f["evidences"].as_array().unwrap();
        assert_eq!(evidences.len(), 1);
        let e = &evidences[0];
        assert_eq!(e["src_endpoint"]["ip"], "10.20.0.5");
        assert_eq!(e["src_endpoint"]["port"], 50123);
        assert_eq!(e["dst_endpoint"]["ip"], "77.88.55.80");
        assert_eq!(e["dst_endpoint"]["port"], 443);
        assert_eq!(e["dst_endpoint"]["location"]["country"], "RU");
        assert_eq!(e["connection_info"]["uid"], "1:abc=");
        assert_eq!(e["connection_info"]["protocol_name"], "tcp");
        assert_eq!(e["data"]["bytes_out"], 400_000_000);
        let observables: Vec<(&str, u64, &str)> = f["observables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["name"].as_str().unwrap(),
                    o["type_id"].as_u64().unwrap(),
                    o["value"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            observables,
            [
                ("device.ip", 2, "10.20.0.5"),
                ("evidences.dst_endpoint.ip", 2, "77.88.55.80"),
                ("evidences.dst_endpoint.location.country", 14, "RU"),
            ]
        );
        assert_eq!(f["unmapped"]["schema"], "exflow.alert.v1");
        assert_eq!(f["unmapped"]["baseline"]["threshold"], 100_000_000);
        assert_eq!(f["unmapped"]["outside_asn"], 13238);
        // Interface names only where the exporter announced them.
        assert!(f["unmapped"].get("in_if_name").is_none());
        let mut named = alert.clone();
        named.in_if_name = Some("Bundle-Ether2".into());
        named.out_if_description = Some("transit".into());
        let n = detection_finding(&named);
        assert_eq!(n["unmapped"]["in_if_name"], "Bundle-Ether2");
        assert_eq!(n["unmapped"]["out_if_description"], "transit");
        assert!(n["unmapped"].get("out_if_name").is_none());
        assert_eq!(
            alert_id(&encode(&alert).unwrap()).as_deref(),
            Some("00c0ffee00c0ffee")
        );
    }

    #[test]
    fn a_first_alert_without_evidence_creates_a_finding_of_its_own_endpoints() {
        let mut alert = escalated_bulk_egress();
        alert.step = 0;
        alert.escalates = None;
        alert.evidence.clear();
        alert.baseline = None;
        alert.attack = vec!["T9999"];
        let f = detection_finding(&alert);
        assert_eq!(f["activity_id"], 1);
        assert_eq!(f["type_uid"], 200_401);
        assert_eq!(f["finding_info"]["uid"], "00c0ffee00c0ffee");
        assert_eq!(f["finding_info"]["analytic"]["type"], "Rule");
        // an id the table does not know keeps its uid, without a name or tactic
        assert_eq!(
            f["finding_info"]["attacks"][0],
            json!({ "version": ATTACK_VERSION, "technique": { "uid": "T9999" } })
        );
        let e = &f["evidences"][0];
        assert_eq!(e["dst_endpoint"]["ip"], "77.88.55.80");
        assert_eq!(e["dst_endpoint"]["location"]["country"], "RU");
        assert_eq!(e["connection_info"]["uid"], "1:abc=");
        assert!(f["unmapped"].get("escalates").is_none());
    }
}
