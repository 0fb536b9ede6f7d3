//! detect: per-inside-host behaviour profiles and the two rules that judge a host against
//! its own: `role_change` (a host that only served starts connections of its own to the
//! outside) and `egress_anomaly` (a host's foreign upload in an hour far above its usual
//! hours). Profiles are learned on event time, each host from its own first record (a new
//! host learns while the others keep detecting), and kept in bounded memory: at most
//! `rules.profile.max_hosts` hosts (the stalest evicted and counted), about 1 kB each, with
//! fixed-size sketches where exact sets would grow (top-k ports, a few countries and ASNs,
//! a HyperLogLog of distinct peers, 24 hourly egress totals). The daemon saves them beside
//! its state file, so a restart is not blind.
//!
//! Who opened a conversation (the flow table's [`Initiator`]) decides what it says about a
//! host: answering inbound connections makes it a server, and bytes a server sends back to
//! its clients are not its upload.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::alert::{
    Baseline, EvidenceConversation, EvidenceList, Explanation, HostRole, keep_evidence,
};
use super::bounded::evict_stalest;
use super::slab_map::SlabMap;
use super::window::Buckets;
use super::{
    Finding, ParsedState, RecordEvent, Rule, describe_destination, human_bytes, log_score,
    rule_allows,
};
use crate::enrich::AllowList;
use crate::enrich::{Allow, CountryCode, Destination};
use crate::flow::{Initiator, Oriented, Update};

pub const NAME: &str = "profile";
pub const ROLE_CHANGE: &str = "role_change";
pub const EGRESS_ANOMALY: &str = "egress_anomaly";
/// Exfiltration over the command-and-control channel an implant opened; over a
/// non-standard port (T1571) or fetching tools (T1105) when the traffic says so.
const ROLE_ATTACK: &[&str] = &["T1041"];
const ROLE_ATTACK_ODD_PORT: &[&str] = &["T1041", "T1571"];
const ROLE_ATTACK_DOWNLOAD: &[&str] = &["T1041", "T1105"];
/// Exfiltration over an alternative protocol; over a web service when the port is web.
const EGRESS_ATTACK: &[&str] = &["T1048"];
const EGRESS_ATTACK_WEB: &[&str] = &["T1048", "T1567"];
/// Multiples of a rule's threshold at which its alert escalates.
const LADDER: [u64; 3] = [1, 10, 100];
const HOUR_MS: u64 = 3_600_000;
/// Hours of foreign egress a profile keeps (the baseline is the other hours of these): a
/// day and some, so last night's backup is in the baseline of tonight's.
const HOURS: usize = 28;
/// Ports, countries and ASNs a profile keeps.
const TOP_PORTS: usize = 8;
const MAX_COUNTRIES: usize = 16;
const MAX_CLIENT_COUNTRIES: usize = 8;
const MAX_ASNS: usize = 32;
/// Conversations kept as a finding's evidence.
const EVIDENCE: usize = 4;
/// A role change without new outward traffic for this long is forgotten.
const SHIFT_IDLE_MS: u64 = 24 * HOUR_MS;
/// Upload prefixes a profile remembers.
const PREFIXES: usize = 16;
/// The unfamiliar upload window: six buckets of ten minutes...
const UNFAMILIAR_BUCKET_MS: u64 = 600_000;
const UNFAMILIAR_BUCKETS: usize = 6;
/// ...in a ring of twelve: an hour more for records that come late (`flow.max_lateness_s`).
const UNFAMILIAR_HELD: usize = 2 * UNFAMILIAR_BUCKETS;
/// What a profile costs at most, with its map entry and its role shift's evidence.
const PROFILE_BYTES: u64 = 1024;
/// HyperLogLog registers for the distinct peers (standard error about 18%).
const HLL_REGISTERS: usize = 32;

/// `[rules.profile]`: the profiles both behaviour rules share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Inside hosts profiled at most (about 1 kB each); beyond it the stalest profile is
    /// evicted, counted as `exflow_detect_state_dropped_total{rule="profile",kind="hosts_evicted"}`.
    pub max_hosts: usize,
    /// Event time from a host's first record during which its role and usual egress are
    /// learned and it is not judged.
    pub learning_s: u64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            max_hosts: 100_000,
            learning_s: 4 * 3600,
        }
    }
}

/// `[rules.role_change]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleChangeConfig {
    pub enabled: bool,
    /// Inbound conversations a host must have answered, with none started outward, to be
    /// a server once its learning ends.
    pub min_served_conversations: u32,
    /// Upload over the connections a server starts before it is reported.
    pub min_bytes_out: u64,
    /// Traffic this allows neither makes a host a client while learning nor counts after.
    /// Default: DNS and NTP to the outside, which servers do.
    pub allow: AllowList,
}

impl Default for RoleChangeConfig {
    fn default() -> Self {
        RoleChangeConfig {
            enabled: true,
            min_served_conversations: 10,
            min_bytes_out: 2_000_000,
            allow: AllowList {
                ports: vec![53, 123],
                ..AllowList::default()
            },
        }
    }
}

/// `[rules.egress_anomaly]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressAnomalyConfig {
    pub enabled: bool,
    /// An hour's foreign upload is reported above this multiple of the host's busiest
    /// other hour of the last day...
    pub peak_factor: f64,
    /// ...and above this floor.
    pub min_bytes_out: u64,
    /// Event time a host must have been profiled before it is judged: the baseline is its
    /// busiest hour of the last day, and until a whole day is seen (its afternoon, its
    /// nightly jobs) that is a guess from a morning. Default a day; `profile.learning_s`
    /// still bounds it from below.
    pub min_history_s: u64,
    pub allow: AllowList,
}

impl Default for EgressAnomalyConfig {
    fn default() -> Self {
        EgressAnomalyConfig {
            enabled: true,
            peak_factor: 5.0,
            min_bytes_out: 20_000_000,
            min_history_s: 24 * 3600,
            allow: AllowList::default(),
        }
    }
}

/// What a host was learned to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    /// Not decided yet: learning, or a host that answered too few connections to say.
    #[default]
    Learning,
    /// Answered inbound connections and started none outward while learning.
    Server,
    /// Started connections to the outside while learning.
    Client,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Learning => "learning",
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// The ports seen most, by the space-saving sketch: a new port takes the place of the
/// least counted one (inheriting its count), so heavy hitters stay whatever the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct TopPorts([(u16, u32); TOP_PORTS]);

impl TopPorts {
    fn add(&mut self, port: u16) {
        if let Some(slot) = self.0.iter_mut().find(|(p, n)| *p == port && *n > 0) {
            slot.1 = slot.1.saturating_add(1);
            return;
        }
        let least = self
            .0
            .iter_mut()
            .min_by_key(|(_, n)| *n)
            .expect("a non-empty array");
        *least = (port, least.1.saturating_add(1));
    }

    /// Ports by count, busiest first.
    fn busiest(&self) -> Vec<u16> {
        let mut ports: Vec<(u16, u32)> = self.0.iter().copied().filter(|(_, n)| *n > 0).collect();
        ports.sort_by_key(|&(port, n)| (std::cmp::Reverse(n), port));
        ports.into_iter().map(|(port, _)| port).collect()
    }
}

/// A HyperLogLog of 32 five-bit-rank registers over a fixed hash (stable across restarts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Peers([u8; HLL_REGISTERS]);

impl Peers {
    fn add(&mut self, peer: IpAddr) {
        let hash = stable_hash(peer);
        let register = (hash >> 59) as usize;
        let rank = ((hash << 5) | (1 << 4)).leading_zeros() as u8 + 1;
        self.0[register] = self.0[register].max(rank);
    }

    fn estimate(&self) -> u64 {
        let m = HLL_REGISTERS as f64;
        let sum: f64 = self.0.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
        let raw = 0.697 * m * m / sum;
        let zeros = self.0.iter().filter(|&&r| r == 0).count();
        if raw <= 2.5 * m && zeros > 0 {
            (m * (m / zeros as f64).ln()).round() as u64
        } else {
            raw.round() as u64
        }
    }
}

/// splitmix64 of the address: the same on every run and build.
fn stable_hash(address: IpAddr) -> u64 {
    let bits = match address {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    let mut z = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A server's outward traffic since its role changed.
#[derive(Debug, Clone, Default)]
struct RoleShift {
    first_ms: u64,
    last_ms: u64,
    bytes_out: u64,
    bytes_in: u64,
    conversations: u64,
    /// Ladder steps reported, plus one (0: none).
    reported: u8,
    foreign: bool,
    /// A country none of its clients came from.
    new_country: bool,
    evidence: EvidenceList,
}

/// One inside host's behaviour. Saved and loaded as it is (serde), within the same caps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HostProfile {
    host: Option<IpAddr>,
    /// Event time the host was first and last seen, ms.
    first_ms: u64,
    last_ms: u64,
    role: Role,
    /// Conversations outside hosts started with it, and on which ports.
    served: u64,
    served_ports: TopPorts,
    /// Countries its clients came from.
    client_countries: Vec<CountryCode>,
    /// Conversations it started to the outside while learning, to which ports, countries
    /// and networks.
    initiated: u64,
    initiated_ports: TopPorts,
    countries: Vec<CountryCode>,
    /// Sorted.
    asns: Vec<u32>,
    peers: Peers,
    /// Foreign upload per hour (of conversations it did not merely answer): slot
    /// `hour % 24`, the newest hour being `egress_hour`.
    egress: [u64; HOURS],
    egress_hour: u64,
    /// Prefixes (/24, /48) it uploaded to: (hash, first and last minute seen). One is
    /// familiar an hour after the first upload to it.
    upload_prefixes: [(u32, u32, u32); PREFIXES],
    /// Foreign upload to unfamiliar prefixes within the sliding hour.
    #[serde(skip)]
    unfamiliar: Buckets<UNFAMILIAR_HELD>,
    /// Ladder steps reported plus one while `unfamiliar` stays over the threshold.
    #[serde(skip)]
    egress_reported: u8,
    /// The largest conversations behind `unfamiliar`.
    #[serde(skip)]
    egress_evidence: EvidenceList,
    #[serde(skip)]
    shift: Option<Box<RoleShift>>,
}

impl HostProfile {
    fn new(host: IpAddr, now_ms: u64) -> Self {
        HostProfile {
            host: Some(host),
            first_ms: now_ms,
            last_ms: now_ms,
            ..HostProfile::default()
        }
    }

    /// Adds foreign upload at `hour`; false when the hour is older than the day kept.
    fn add_egress(&mut self, hour: u64, bytes: u64) -> bool {
        if self.egress_hour == 0 {
            self.egress_hour = hour;
        }
        if hour > self.egress_hour {
            let steps = (hour - self.egress_hour).min(HOURS as u64);
            for step in 1..=steps {
                let slot = ((self.egress_hour + step) % HOURS as u64) as usize;
                self.egress[slot] = 0;
            }
            self.egress_hour = hour;
        }
        if hour + HOURS as u64 <= self.egress_hour {
            return false;
        }
        let slot = (hour % HOURS as u64) as usize;
        self.egress[slot] = self.egress[slot].saturating_add(bytes);
        true
    }

    /// Median, MAD, peak and count of the hours kept before `from_hour`, from the host's
    /// first hour on. An hour already reported stays in: a host alerted on once has shown
    /// it does this (a nightly backup is news the first night only).
    fn egress_baseline(&self, from_hour: u64) -> (u64, u64, u64, u32) {
        let first_hour = self.first_ms / HOUR_MS;
        let oldest = self
            .egress_hour
            .saturating_sub(HOURS as u64 - 1)
            .max(first_hour);
        let mut values: Vec<u64> = (oldest..=self.egress_hour)
            .filter(|&h| h < from_hour)
            .map(|h| (h % HOURS as u64) as usize)
            .map(|slot| self.egress[slot])
            .collect();
        if values.is_empty() {
            return (0, 0, 0, 0);
        }
        values.sort_unstable();
        let median = values[values.len() / 2];
        let peak = *values.last().expect("not empty");
        let mut deviations: Vec<u64> = values.iter().map(|v| v.abs_diff(median)).collect();
        deviations.sort_unstable();
        let mad = deviations[deviations.len() / 2];
        (median, mad, peak, values.len() as u32)
    }

    /// Whether `outside`'s prefix is familiar (first uploaded to an hour or more before
    /// `now_ms`); remembers it, in place of the least recently used one.
    fn familiar(&mut self, outside: IpAddr, now_ms: u64) -> bool {
        let prefix = match outside {
            IpAddr::V4(v4) => IpAddr::from((v4.to_bits() & 0xffff_ff00).to_be_bytes()),
            IpAddr::V6(v6) => IpAddr::from((v6.to_bits() & !((1u128 << 80) - 1)).to_be_bytes()),
        };
        let hash = (stable_hash(prefix) as u32) | 1;
        let minute = u32::try_from(now_ms / 60_000).unwrap_or(u32::MAX);
        if let Some(entry) = self.upload_prefixes.iter_mut().find(|e| e.0 == hash) {
            entry.2 = entry.2.max(minute);
            return entry.1.saturating_add(60) <= minute;
        }
        let oldest = self
            .upload_prefixes
            .iter_mut()
            .min_by_key(|e| e.2)
            .expect("a non-empty array");
        *oldest = (hash, minute, minute);
        false
    }

    fn host_role(&self, now_ms: u64) -> HostRole {
        HostRole {
            role: self.role.name(),
            served_ports: self.served_ports.busiest(),
            served_conversations: self.served,
            initiated_conversations: self.initiated,
            initiated_countries: self.countries.clone(),
            distinct_peers: self.peers.estimate(),
            profiled_s: now_ms.saturating_sub(self.first_ms) / 1000,
        }
    }

    /// Keeps the caps whatever a state file says.
    fn bounded(mut self) -> Self {
        self.client_countries.truncate(MAX_CLIENT_COUNTRIES);
        self.countries.truncate(MAX_COUNTRIES);
        self.asns.sort_unstable();
        self.asns.dedup();
        self.asns.truncate(MAX_ASNS);
        self.egress_reported = 0;
        self
    }
}

fn push_capped<T: PartialEq>(list: &mut Vec<T>, item: T, cap: usize) {
    if list.len() < cap && !list.contains(&item) {
        list.push(item);
    }
}

/// The host's profile in `hosts`, made (evicting the stalest tenth when full, counted in
/// `evicted`) when it has none.
fn profile_of<'a>(
    hosts: &'a mut SlabMap<IpAddr, HostProfile>,
    max_hosts: usize,
    evicted: &mut u64,
    host: IpAddr,
    now_ms: u64,
) -> &'a mut HostProfile {
    if hosts.len() >= max_hosts && !hosts.contains_key(&host) {
        *evicted += evict_stalest(hosts, |p: &HostProfile| p.last_ms, |_, _| {}) as u64;
    }
    hosts.get_or_insert_with(host, || HostProfile::new(host, now_ms))
}

/// The profiles of one shard's hosts, and the rules that read them.
pub struct Profiles {
    hosts: SlabMap<IpAddr, HostProfile>,
    max_hosts: usize,
    learning_ms: u64,
    role_change: Option<(RoleChangeConfig, Allow)>,
    egress_anomaly: Option<(EgressAnomalyConfig, Allow)>,
    /// Profiles evicted to make room for new hosts.
    pub hosts_evicted: u64,
    /// Foreign upload too late for the hours a profile keeps.
    pub egress_too_late: u64,
    last_sweep_ms: u64,
}

impl Profiles {
    pub fn new(
        profile: &ProfileConfig,
        role_change: &RoleChangeConfig,
        egress_anomaly: &EgressAnomalyConfig,
    ) -> Self {
        Profiles {
            hosts: SlabMap::new(),
            max_hosts: profile.max_hosts.max(1),
            learning_ms: profile.learning_s.saturating_mul(1000),
            role_change: role_change
                .enabled
                .then(|| (role_change.clone(), Allow::new(&role_change.allow))),
            egress_anomaly: egress_anomaly
                .enabled
                .then(|| (egress_anomaly.clone(), Allow::new(&egress_anomaly.allow))),
            hosts_evicted: 0,
            egress_too_late: 0,
            last_sweep_ms: 0,
        }
    }

    /// Adds an outward record of a server to its role shift, and reports the shift when it
    /// reaches a step of the ladder.
    fn role_change(
        event: &RecordEvent<'_>,
        config: &RoleChangeConfig,
        profile: &mut HostProfile,
        findings: &mut Vec<Finding>,
    ) {
        let mut shift = profile.shift.take().unwrap_or_else(|| {
            Box::new(RoleShift {
                first_ms: event.record.start_ms,
                ..RoleShift::default()
            })
        });
        if let Some(finding) = Profiles::role_shift(event, config, profile, &mut shift) {
            findings.push(finding);
        }
        profile.shift = Some(shift);
    }

    fn role_shift(
        event: &RecordEvent<'_>,
        config: &RoleChangeConfig,
        profile: &HostProfile,
        shift: &mut RoleShift,
    ) -> Option<Finding> {
        let (record, key, destination) = (event.record, event.key, event.destination());
        shift.first_ms = shift.first_ms.min(record.start_ms);
        shift.last_ms = shift.last_ms.max(record.end_ms).max(event.now_ms);
        shift.bytes_out = shift.bytes_out.saturating_add(record.bytes_out);
        shift.bytes_in = shift.bytes_in.saturating_add(record.bytes_in);
        if event.update == Update::Created {
            shift.conversations += 1;
        }
        shift.foreign |= destination.foreign;
        shift.new_country |= destination
            .country
            .is_some_and(|cc| !profile.client_countries.contains(&cc));
        keep_evidence(
            &mut shift.evidence,
            EvidenceConversation::of(key, event.conversation),
            EVIDENCE,
        );
        let min = config.min_bytes_out.max(1);
        let step = LADDER
            .iter()
            .rposition(|&m| shift.bytes_out >= min.saturating_mul(m))?;
        if usize::from(shift.reported) > step {
            return None;
        }
        shift.reported = step as u8 + 1;
        let score = log_score(shift.bytes_out, min, 55.0, 15.0)
            .saturating_add(if shift.foreign { 15 } else { 0 })
            .saturating_add(if shift.new_country { 10 } else { 0 })
            .min(100);
        let served = profile.served_ports.busiest();
        let served_text: Vec<String> = served.iter().take(3).map(u16::to_string).collect();
        let summary = format!(
            "{} served only inbound connections (port {}, {} conversations) and now started {} of its own, \
             sending {} out, latest to {}{}",
            key.inside,
            served_text.join("/"),
            profile.served,
            shift.conversations.max(1),
            human_bytes(shift.bytes_out),
            describe_destination(key.outside, key.outside_port, destination),
            if shift.new_country {
                ", a country none of its clients came from"
            } else {
                ""
            },
        );
        let mut finding = Finding::for_conversation(ROLE_CHANGE, event, step as u8, score, summary);
        finding.bytes_out = shift.bytes_out;
        finding.bytes_in = shift.bytes_in;
        finding.flows = shift.conversations.max(1);
        finding.first_ms = shift.first_ms;
        finding.last_ms = shift.last_ms;
        let usual_port = matches!(
            key.outside_port,
            22 | 25 | 53 | 80 | 443 | 465 | 587 | 993 | 8080 | 8443
        );
        finding.attack = if shift.bytes_in > shift.bytes_out {
            ROLE_ATTACK_DOWNLOAD
        } else if !usual_port {
            ROLE_ATTACK_ODD_PORT
        } else {
            ROLE_ATTACK
        };
        finding.explain = Some(Box::new(Explanation {
            baseline: Some(Baseline {
                metric: "bytes_out_on_connections_it_started",
                observed: shift.bytes_out,
                threshold: min,
                median: None,
                mad: None,
                peak: Some(0),
                hours: None,
                ratio: shift.bytes_out as f64 / min as f64,
            }),
            host_role: Some(profile.host_role(event.now_ms)),
            evidence: shift.evidence.to_vec(),
        }));
        Some(finding)
    }

    /// Judges the host's upload to unfamiliar destinations within the sliding hour against
    /// its usual hours (those before the window).
    fn egress_anomaly(
        event: &RecordEvent<'_>,
        config: &EgressAnomalyConfig,
        profile: &mut HostProfile,
        findings: &mut Vec<Finding>,
    ) {
        let key = event.key;
        // No hour within the ring can hold more than the whole ring.
        if profile.unfamiliar.bytes() < config.min_bytes_out {
            profile.egress_reported = 0;
            return;
        }
        // The busiest hour the record belongs to: a late one is judged with what came
        // around it, not with what its exporter sent after it.
        let at = event.record.end_ms.max(event.record.start_ms);
        let (observed, _, window_start) =
            profile
                .unfamiliar
                .busiest_window_with(at, UNFAMILIAR_BUCKET_MS, UNFAMILIAR_BUCKETS);
        if observed < config.min_bytes_out {
            profile.egress_reported = 0;
            return;
        }
        let (median, mad, peak, hours) = profile.egress_baseline(window_start / HOUR_MS);
        let by_peak = (peak as f64 * config.peak_factor).min(u64::MAX as f64) as u64;
        let threshold = by_peak.max(config.min_bytes_out).max(1);
        let Some(step) = LADDER
            .iter()
            .rposition(|&m| observed >= threshold.saturating_mul(m))
        else {
            profile.egress_reported = 0;
            return;
        };
        if usize::from(profile.egress_reported) > step {
            return;
        }
        profile.egress_reported = step as u8 + 1;
        let ratio = observed as f64 / peak.max(1) as f64;
        let score = log_score(observed, threshold, 50.0, 20.0)
            .saturating_add(if peak == 0 { 5 } else { 10 })
            .min(100);
        let destination = event.destination();
        let summary = format!(
            "{} sent {} abroad to destinations new to it within the hour, {} its busiest hour of the \
             last day ({}; median {}), latest to {}",
            key.inside,
            human_bytes(observed),
            if peak == 0 {
                "where it had sent nothing in".to_string()
            } else {
                format!("{ratio:.0}x")
            },
            human_bytes(peak),
            human_bytes(median),
            describe_destination(key.outside, key.outside_port, destination),
        );
        let mut finding =
            Finding::for_conversation(EGRESS_ANOMALY, event, step as u8, score, summary);
        finding.bytes_out = observed;
        finding.first_ms = profile
            .egress_evidence
            .iter()
            .map(|e| e.first_ms)
            .min()
            .unwrap_or(window_start)
            .max(window_start);
        finding.last_ms = event.record.end_ms.max(finding.first_ms);
        finding.flows = profile.egress_evidence.len().max(1) as u64;
        let web = matches!(key.outside_port, 80 | 443 | 8080 | 8443);
        finding.attack = if web {
            EGRESS_ATTACK_WEB
        } else {
            EGRESS_ATTACK
        };
        finding.explain = Some(Box::new(Explanation {
            baseline: Some(Baseline {
                metric: "foreign_bytes_out_per_hour",
                observed,
                threshold,
                median: Some(median),
                mad: Some(mad),
                peak: Some(peak),
                hours: Some(hours),
                ratio,
            }),
            host_role: Some(profile.host_role(event.now_ms)),
            evidence: profile.egress_evidence.to_vec(),
        }));
        findings.push(finding);
    }
}

impl Rule for Profiles {
    fn name(&self) -> &'static str {
        NAME
    }

    /// At most `max_bytes` of profiles, at [`PROFILE_BYTES`] each.
    fn limit_state(&mut self, max_bytes: u64) {
        let by_bytes = usize::try_from(max_bytes / PROFILE_BYTES).unwrap_or(usize::MAX);
        self.max_hosts = self.max_hosts.min(by_bytes).max(1);
    }

    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("hosts_evicted", self.hosts_evicted),
            ("egress_too_late", self.egress_too_late),
        ]
    }

    /// The hourly egress and the unfamiliar upload's ten-minute buckets.
    fn fold_widths_ms(&self) -> Option<Vec<u64>> {
        Some(vec![HOUR_MS, UNFAMILIAR_BUCKET_MS])
    }

    fn warm(&self, record: &Oriented, _destination: Option<&Destination>) {
        self.hosts.prefetch(&record.inside);
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let (record, key, destination) = (event.record, event.key, event.destination());
        let now_ms = event.now_ms;
        let Profiles {
            hosts,
            max_hosts,
            learning_ms,
            role_change,
            egress_anomaly,
            hosts_evicted,
            egress_too_late,
            ..
        } = self;
        let initiator = event.conversation.initiator();
        let role_allowed = role_change
            .as_ref()
            .is_some_and(|(_, allow)| rule_allows(allow, key, destination));
        let min_served = role_change
            .as_ref()
            .map_or(u32::MAX, |(c, _)| c.min_served_conversations);
        let profile = profile_of(hosts, *max_hosts, hosts_evicted, key.inside, now_ms);
        profile.last_ms = profile.last_ms.max(now_ms);
        let created = event.update == Update::Created;
        if created {
            profile.peers.add(key.outside);
            match initiator {
                Initiator::Outside => {
                    profile.served = profile.served.saturating_add(1);
                    profile.served_ports.add(key.inside_port);
                    if let Some(cc) = destination.country {
                        push_capped(&mut profile.client_countries, cc, MAX_CLIENT_COUNTRIES);
                    }
                }
                Initiator::Inside if !role_allowed && profile.role != Role::Server => {
                    profile.initiated = profile.initiated.saturating_add(1);
                    profile.initiated_ports.add(key.outside_port);
                    if let Some(cc) = destination.country {
                        push_capped(&mut profile.countries, cc, MAX_COUNTRIES);
                    }
                    if let Some(asn) = destination.asn.map(|a| a.get())
                        && let Err(at) = profile.asns.binary_search(&asn)
                        && profile.asns.len() < MAX_ASNS
                    {
                        profile.asns.insert(at, asn);
                    }
                }
                _ => {}
            }
        }
        let learned = now_ms >= profile.first_ms.saturating_add(*learning_ms);
        if profile.role == Role::Learning {
            if profile.initiated > 0 {
                profile.role = Role::Client;
            } else if learned && profile.served >= u64::from(min_served) {
                profile.role = Role::Server;
            }
        }
        if profile.role == Role::Server
            && initiator == Initiator::Inside
            && !role_allowed
            && let Some((config, _)) = role_change
        {
            Profiles::role_change(event, config, profile, findings);
        }
        // Symmetric UDP (media: about as much back as out) is not an upload.
        let media =
            key.proto == 17 && event.conversation.bytes_in >= event.conversation.bytes_out / 2;
        if destination.foreign && initiator != Initiator::Outside && record.bytes_out > 0 && !media
        {
            let at = record.end_ms.max(record.start_ms);
            if !profile.add_egress(at / HOUR_MS, record.bytes_out) {
                *egress_too_late += 1;
                return;
            }
            if !profile.familiar(key.outside, now_ms) {
                profile
                    .unfamiliar
                    .add(at, UNFAMILIAR_BUCKET_MS, record.bytes_out, 1);
                keep_evidence(
                    &mut profile.egress_evidence,
                    EvidenceConversation::of(key, event.conversation),
                    EVIDENCE,
                );
            }
            // The ring ends at the newest record's time, not the exporter's clock.
            profile.unfamiliar.slide(at, UNFAMILIAR_BUCKET_MS);
            let start = profile.unfamiliar.start_ms(UNFAMILIAR_BUCKET_MS);
            profile.egress_evidence.retain(|e| e.last_ms >= start);
            if learned
                && let Some((config, allow)) = egress_anomaly
                && now_ms
                    >= profile
                        .first_ms
                        .saturating_add(config.min_history_s.saturating_mul(1000))
                && !rule_allows(allow, key, destination)
            {
                Profiles::egress_anomaly(event, config, profile, findings);
            }
        }
    }

    /// Forgets role changes idle for a day (checked hourly).
    fn on_tick(&mut self, now_ms: u64, _findings: &mut Vec<Finding>) {
        if now_ms < self.last_sweep_ms.saturating_add(HOUR_MS) {
            return;
        }
        self.last_sweep_ms = now_ms;
        for profile in self.hosts.values_mut() {
            if profile
                .shift
                .as_ref()
                .is_some_and(|s| s.last_ms.saturating_add(SHIFT_IDLE_MS) < now_ms)
            {
                profile.shift = None;
            }
        }
    }

    fn save_state(&self) -> Option<serde_json::Value> {
        let mut hosts: Vec<&HostProfile> = self.hosts.values().collect();
        hosts.sort_by_key(|p| p.host);
        Some(serde_json::json!({ "hosts": hosts }))
    }

    /// The profiles copied (plain data, a few hundred bytes a host), encoded later as
    /// `save_state` saves them.
    fn snapshot_state(&self) -> Option<super::StateSnapshot> {
        #[derive(Serialize)]
        struct Saved<'a> {
            hosts: &'a [HostProfile],
        }
        // Sorted by reference, then copied: sorting the profiles themselves moves hundreds
        // of bytes each, many times over.
        let mut sorted: Vec<&HostProfile> = self.hosts.values().collect();
        sorted.sort_unstable_by_key(|p| p.host);
        let hosts: Vec<HostProfile> = sorted.into_iter().cloned().collect();
        Some(Box::new(move |out| {
            serde_json::to_writer(out, &Saved { hosts: &hosts })
        }))
    }

    fn load_state(&mut self, state: serde_json::Value, keep: &dyn Fn(IpAddr) -> bool) -> usize {
        serde_json::from_value::<SavedProfiles>(state).map_or(0, |saved| self.take(saved, keep))
    }

    fn load_parsed(&mut self, state: ParsedState, keep: &dyn Fn(IpAddr) -> bool) -> usize {
        state
            .downcast::<SavedProfiles>()
            .map_or(0, |saved| self.take(*saved, keep))
    }
}

/// What [`Profiles`] saves (`save_state`, `snapshot_state`), as it is read back.
#[derive(Deserialize)]
pub(super) struct SavedProfiles {
    hosts: Vec<HostProfile>,
}

impl Profiles {
    /// Takes saved profiles of the hosts `keep` accepts, as many as fit (the most recently
    /// seen first); returns how many.
    fn take(&mut self, saved: SavedProfiles, keep: &dyn Fn(IpAddr) -> bool) -> usize {
        let mut hosts: Vec<HostProfile> = saved
            .hosts
            .into_iter()
            .filter(|p| p.host.is_some_and(keep))
            .collect();
        // When not all fit, the most recently seen go first (when all do, order is moot
        // and 100,000 profiles are not moved around by a sort).
        if self.hosts.len() + hosts.len() > self.max_hosts {
            hosts.sort_by_key(|p| std::cmp::Reverse(p.last_ms));
        }
        self.hosts.reserve(
            hosts
                .len()
                .min(self.max_hosts.saturating_sub(self.hosts.len())),
        );
        let mut restored = 0;
        for profile in hosts {
            let host = profile.host.expect("filtered on it");
            // As new or newer: a partition's checkpoint (scaleout) replaces the profile a
            // replay of the records before it rebuilt, which saw no more than it.
            let newer = self
                .hosts
                .get(&host)
                .is_none_or(|mine| mine.last_ms <= profile.last_ms);
            if newer && (self.hosts.contains_key(&host) || self.hosts.len() < self.max_hosts) {
                self.hosts.insert(host, profile.bounded());
                restored += 1;
            }
        }
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::feed;
    use crate::enrich::Destination;
    use crate::flow::{FlowTable, Oriented};

    const H: u64 = HOUR_MS;
    /// 2024-03-12 08:00 UTC.
    const T0: u64 = 1_710_230_400_000;
    const SERVER: &str = "10.10.1.80";

    fn destination(country: &str, asn: u32) -> Destination {
        Destination {
            country: Some(country.parse().unwrap()),
            asn: std::num::NonZeroU32::new(asn),
            foreign: country != "NL",
            ..Destination::default()
        }
    }

    struct Harness {
        table: FlowTable,
        rule: Profiles,
        findings: Vec<Finding>,
    }

    impl Harness {
        fn new() -> Self {
            Harness::with(ProfileConfig::default())
        }

        /// The hosts of these tests have hours of history, not the day `egress_anomaly`
        /// waits for by default: it judges them after the learning period.
        fn with(profile: ProfileConfig) -> Self {
            let egress = EgressAnomalyConfig {
                min_history_s: profile.learning_s,
                ..EgressAnomalyConfig::default()
            };
            Harness::configured(profile, egress)
        }

        fn configured(profile: ProfileConfig, egress: EgressAnomalyConfig) -> Self {
            Harness {
                table: FlowTable::new(100_000, 1800, 0),
                rule: Profiles::new(&profile, &RoleChangeConfig::default(), &egress),
                findings: Vec::new(),
            }
        }

        /// A record `inside:inside_port <-> outside:outside_port` ending at `at`.
        #[allow(clippy::too_many_arguments)]
        fn record(
            &mut self,
            inside: &str,
            inside_port: u16,
            outside: &str,
            outside_port: u16,
            to: Destination,
            bytes_out: u64,
            bytes_in: u64,
            at: u64,
        ) {
            let mut record = crate::detect::tests::oriented(
                inside,
                inside_port,
                outside,
                outside_port,
                bytes_out,
                bytes_in,
                at.saturating_sub(1000),
                at,
            );
            record.outside_asn = to.asn.map_or(0, |a| a.get());
            self.feed(&record, to, at);
        }

        fn feed(&mut self, record: &Oriented, to: Destination, now_ms: u64) {
            feed(
                &mut self.rule,
                &mut self.table,
                record,
                to,
                now_ms,
                false,
                &mut self.findings,
            );
        }

        /// `SERVER` answers a client from DE on port 443 every 10 min for `hours`.
        fn serve(&mut self, from: u64, hours: u64) {
            for i in 0..hours * 6 {
                let client = format!("80.150.{}.{}", i / 200, i % 200 + 1);
                let at = from + i * 600_000;
                let port = 40_000 + (i % 20_000) as u16;
                self.record(
                    SERVER,
                    443,
                    &client,
                    port,
                    destination("DE", 3320),
                    2_000_000,
                    5000,
                    at,
                );
            }
        }
    }

    #[test]
    fn a_server_that_starts_uploading_abroad_is_a_role_change() {
        let mut h = Harness::new();
        h.serve(T0, 5);
        assert!(h.findings.is_empty(), "{:?}", h.findings);
        let host: IpAddr = SERVER.parse().unwrap();
        assert_eq!(h.rule.hosts[&host].role, Role::Server);
        // DNS to the outside does not count.
        h.record(
            SERVER,
            53000,
            "8.8.8.8",
            53,
            destination("US", 15169),
            5_000,
            0,
            T0 + 5 * H,
        );
        assert!(h.findings.is_empty());
        // Now it connects out, to Russia: 1.5 MB (below), then 50 MB over two connections.
        let ru = destination("RU", 13238);
        h.record(
            SERVER,
            51000,
            "5.255.255.77",
            8443,
            ru,
            1_500_000,
            10_000,
            T0 + 5 * H + 60_000,
        );
        assert!(h.findings.is_empty(), "below 2 MB");
        h.record(
            SERVER,
            51001,
            "5.255.255.77",
            8443,
            ru,
            48_500_000,
            10_000,
            T0 + 5 * H + 120_000,
        );
        let steps: Vec<(&str, u8)> = h.findings.iter().map(|f| (f.rule, f.step)).collect();
        // 50 MB is 10x the 2 MB threshold; and 50 MB abroad in an hour is new for it too.
        assert_eq!(steps, vec![(ROLE_CHANGE, 1), (EGRESS_ANOMALY, 0)]);
        let f = &h.findings[0];
        assert_eq!((f.bytes_out, f.flows), (50_000_000, 2));
        assert_eq!(f.attack, ROLE_ATTACK);
        assert!(f.score >= 80, "foreign, a new country: {}", f.score);
        assert!(
            f.summary
                .starts_with("10.10.1.80 served only inbound connections (port 443"),
            "{}",
            f.summary
        );
        let explain = f.explain.as_ref().unwrap();
        let role = explain.host_role.as_ref().unwrap();
        assert_eq!(
            (
                role.role,
                role.served_ports.as_slice(),
                role.served_conversations
            ),
            ("server", &[443u16][..], 30)
        );
        assert!(
            (20..=45).contains(&role.distinct_peers),
            "about 30: {}",
            role.distinct_peers
        );
        let evidence: Vec<u16> = explain.evidence.iter().map(|e| e.key.inside_port).collect();
        assert_eq!(evidence, vec![51000, 51001]);
        assert_eq!(explain.evidence[1].bytes_out, 48_500_000);
        // The served bytes (60 MB back to clients in DE) were never egress.
        assert_eq!(h.rule.hosts[&host].egress.iter().sum::<u64>(), 50_005_000);
    }

    #[test]
    fn learning_hosts_and_clients_are_not_role_changes() {
        let mut h = Harness::new();
        let ru = destination("RU", 13238);
        // Serving for an hour only: still learning when it connects out.
        h.serve(T0, 1);
        h.record(SERVER, 51000, "5.255.255.77", 443, ru, 9_000_000, 0, T0 + H);
        // A workstation that connects out while learning is a client for good.
        h.record(
            "10.10.1.9",
            51000,
            "80.150.1.1",
            443,
            destination("DE", 3320),
            100,
            0,
            T0,
        );
        h.record(
            "10.10.1.9",
            22,
            "80.150.9.9",
            40000,
            destination("DE", 3320),
            100,
            0,
            T0 + 1000,
        );
        h.record(
            "10.10.1.9",
            51001,
            "5.255.255.77",
            443,
            ru,
            9_000_000,
            0,
            T0 + 6 * H,
        );
        assert!(
            h.findings.iter().all(|f| f.rule != ROLE_CHANGE),
            "{:?}",
            h.findings
        );
        let role = |h: &Harness, host: &str| h.rule.hosts[&host.parse().unwrap()].role;
        assert_eq!(
            role(&h, SERVER),
            Role::Client,
            "it connected out while learning"
        );
        assert_eq!(role(&h, "10.10.1.9"), Role::Client);
    }

    #[test]
    fn egress_to_new_places_far_above_the_hosts_own_hours_is_an_anomaly() {
        let mut h = Harness::new();
        let us = destination("US", 16509);
        let host = "10.10.2.7";
        // Five hours of 1-2 MB an hour to one US service.
        for hour in 0..5 {
            let bytes = 1_000_000 + hour * 250_000;
            let at = T0 + hour * H + 60_000;
            h.record(
                host,
                50_000 + hour as u16,
                "52.1.1.1",
                443,
                us,
                bytes,
                0,
                at,
            );
        }
        // 30 MB to that familiar service is not news; 9 MB to a new place is below the floor.
        h.record(
            host,
            50_100,
            "52.1.1.1",
            443,
            us,
            30_000_000,
            0,
            T0 + 5 * H + 30_000,
        );
        h.record(
            host,
            51000,
            "52.9.1.2",
            443,
            us,
            9_000_000,
            0,
            T0 + 5 * H + 60_000,
        );
        assert!(h.findings.is_empty(), "{:?}", h.findings);
        // 21 MB to new places within the hour: above the floor and 12x its 1.75 MB peak.
        h.record(
            host,
            51001,
            "52.9.2.3",
            443,
            us,
            12_000_000,
            0,
            T0 + 5 * H + 120_000,
        );
        assert_eq!(h.findings.len(), 1);
        let f = &h.findings[0];
        assert_eq!(
            (f.rule, f.step, f.bytes_out, f.flows),
            (EGRESS_ANOMALY, 0, 21_000_000, 2)
        );
        assert_eq!(f.attack, EGRESS_ATTACK_WEB);
        let explain = f.explain.as_ref().unwrap();
        let baseline = explain.baseline.as_ref().unwrap();
        assert_eq!(
            (
                baseline.observed,
                baseline.threshold,
                baseline.median,
                baseline.mad
            ),
            (21_000_000, 20_000_000, Some(1_500_000), Some(250_000))
        );
        assert_eq!((baseline.peak, baseline.hours), (Some(1_750_000), Some(4)));
        assert!((baseline.ratio - 12.0).abs() < 1e-9);
        let evidence: Vec<u64> = explain.evidence.iter().map(|e| e.bytes_out).collect();
        assert_eq!(evidence, vec![9_000_000, 12_000_000]);
        assert_eq!(explain.host_role.as_ref().unwrap().role, "client");
        // More of the same within the hour is no news.
        h.record(
            host,
            51002,
            "52.9.3.4",
            443,
            us,
            5_000_000,
            0,
            T0 + 5 * H + 180_000,
        );
        assert_eq!(h.findings.len(), 1);
    }

    #[test]
    fn egress_anomaly_waits_for_a_day_of_history_by_default() {
        let mut h = Harness::configured(ProfileConfig::default(), EgressAnomalyConfig::default());
        let us = destination("US", 16509);
        let host = "10.10.2.9";
        // A morning of 1 MB an hour, then 60 MB to new places at 5 h (a developer's first
        // big push of the day): a morning is no baseline.
        for hour in 0..5 {
            let at = T0 + hour * H + 60_000;
            let port = 50_000 + hour as u16;
            h.record(host, port, "52.1.1.1", 443, us, 1_000_000, 0, at);
        }
        let at = T0 + 5 * H + 60_000;
        h.record(host, 51000, "52.9.1.2", 443, us, 60_000_000, 0, at);
        assert!(h.findings.is_empty(), "{:?}", h.findings);
        // Over a day later, with that hour out of the 28 kept, the same jump is judged.
        for hour in 6..34 {
            let at = T0 + hour * H + 60_000;
            let port = 50_000 + hour as u16;
            h.record(host, port, "52.1.1.1", 443, us, 1_000_000, 0, at);
        }
        let at = T0 + 34 * H + 120_000;
        h.record(host, 51001, "52.9.2.3", 443, us, 60_000_000, 0, at);
        assert_eq!(h.findings.len(), 1, "{:?}", h.findings);
        let f = &h.findings[0];
        assert_eq!((f.rule, f.bytes_out), (EGRESS_ANOMALY, 60_000_000));
    }

    #[test]
    fn uploads_an_exporter_delivers_all_55_minutes_late_still_add_up() {
        let mut h = Harness::new();
        let us = destination("US", 16509);
        let host = "10.10.2.10";
        for hour in 0..5 {
            let at = T0 + hour * H + 60_000;
            let port = 50_000 + hour as u16;
            h.record(host, port, "52.1.1.1", 443, us, 1_000_000, 0, at);
        }
        // Six 5 MB uploads to new places 7 minutes apart, each delivered 55 minutes after
        // it ended (a sampling exporter's cache): 30 MB within 35 minutes of their own time.
        for i in 0..6u64 {
            let end = T0 + 5 * H + i * 7 * 60_000;
            let mut record = crate::detect::tests::oriented(
                host,
                51_000 + i as u16,
                &format!("162.125.64.{}", i + 1),
                443,
                5_000_000,
                0,
                end - 60_000,
                end,
            );
            record.outside_asn = 16509;
            h.feed(&record, us, end + 55 * 60_000);
        }
        // Reported at the fourth, on the 20 MB floor (5x its 1 MB peak is below it).
        assert_eq!(h.findings.len(), 1, "{:?}", h.findings);
        assert_eq!(h.findings[0].bytes_out, 20_000_000);
    }

    #[test]
    fn a_late_record_counts_in_its_own_time_and_a_new_host_learns_first() {
        let mut h = Harness::new();
        let us = destination("US", 16509);
        let host = "10.10.2.8";
        for hour in 0..5 {
            let at = T0 + hour * H + 60_000;
            h.record(
                host,
                50_000 + hour as u16,
                "52.1.1.1",
                443,
                us,
                1_000_000,
                0,
                at,
            );
        }
        // Event time is at 6 h 30 when a record that ended at 5 h 50 arrives: it is still
        // in the hour that ends now, and in its own hour of the baseline.
        let now = T0 + 6 * H + 30 * 60_000;
        h.record(host, 50_100, "52.1.1.1", 443, us, 1, 0, now);
        let start = T0 + 5 * H + 40 * 60_000;
        let mut late = crate::detect::tests::oriented(
            host,
            51000,
            "52.9.9.9",
            443,
            30_000_000,
            0,
            start,
            start + 600_000,
        );
        late.outside_asn = 16509;
        h.feed(&late, us, now);
        assert_eq!(h.findings.len(), 1);
        assert_eq!(h.findings[0].first_ms, start, "the conversation's own time");
        assert_eq!(h.findings[0].bytes_out, 30_000_000);
        let profile = &h.rule.hosts[&host.parse().unwrap()];
        assert_eq!(
            profile.egress[((T0 + 5 * H) / H % HOURS as u64) as usize],
            30_000_000
        );
        // A host first seen now uploads 200 MB: it is learning.
        let at = now + 60_000;
        h.record("10.10.2.99", 51000, "52.1.9.9", 443, us, 200_000_000, 0, at);
        assert_eq!(h.findings.len(), 1);
        // A record older than the hours kept is counted and dropped.
        let mut ancient = late;
        (ancient.start_ms, ancient.end_ms) = (T0 - 30 * H, T0 - 30 * H);
        ancient.inside_port = 51999;
        h.feed(&ancient, us, now + 60_000);
        assert_eq!(h.rule.egress_too_late, 1);
    }

    #[test]
    fn a_flood_of_hosts_stays_capped_and_counts_evictions() {
        let mut h = Harness::with(ProfileConfig {
            max_hosts: 100,
            ..ProfileConfig::default()
        });
        for i in 0..1000u64 {
            let host = format!("10.20.{}.{}", i / 250, i % 250 + 1);
            h.record(
                &host,
                51000,
                "52.1.1.1",
                443,
                destination("US", 16509),
                10,
                0,
                T0 + i * 1000,
            );
        }
        assert!(h.rule.hosts.len() <= 100);
        assert!(h.rule.hosts_evicted >= 900, "{}", h.rule.hosts_evicted);
        let dropped = h.rule.state_dropped();
        assert_eq!(dropped[0], ("hosts_evicted", h.rule.hosts_evicted));
        // The newest host is kept.
        assert!(h.rule.hosts.contains_key(&"10.20.3.250".parse().unwrap()));
    }

    #[test]
    fn profiles_survive_a_save_and_load_within_their_bounds() {
        let mut h = Harness::new();
        h.serve(T0, 5);
        h.record(
            "10.10.2.7",
            51000,
            "52.1.1.1",
            443,
            destination("US", 16509),
            1_000_000,
            0,
            T0 + H,
        );
        let saved = h.rule.save_state().unwrap();
        let text = serde_json::to_string(&saved).unwrap();
        // A restarted daemon: the server's role and the egress hours come back.
        let mut again = Harness::new();
        let restored = again
            .rule
            .load_state(serde_json::from_str(&text).unwrap(), &|_| true);
        assert_eq!(restored, 2);
        let host: IpAddr = SERVER.parse().unwrap();
        let (before, after) = (&h.rule.hosts[&host], &again.rule.hosts[&host]);
        assert_eq!(
            (after.role, after.served, after.served_ports),
            (before.role, before.served, before.served_ports)
        );
        assert_eq!(after.peers, before.peers);
        assert_eq!(
            again.rule.hosts[&"10.10.2.7".parse().unwrap()].egress,
            h.rule.hosts[&"10.10.2.7".parse().unwrap()].egress
        );
        // It detects straight away: no second learning.
        again.record(
            SERVER,
            51000,
            "5.255.255.77",
            8443,
            destination("RU", 13238),
            3_000_000,
            0,
            T0 + 5 * H + 60_000,
        );
        assert_eq!(again.findings.len(), 1);
        assert_eq!(again.findings[0].rule, ROLE_CHANGE);
        // A shard keeps only its own hosts, and no more than its cap.
        let mut small = Harness::with(ProfileConfig {
            max_hosts: 1,
            ..ProfileConfig::default()
        });
        let restored = small
            .rule
            .load_state(saved.clone(), &|host| host == IpAddr::from([10, 10, 2, 7]));
        assert_eq!((restored, small.rule.hosts.len()), (1, 1));
        let mut capped = Harness::with(ProfileConfig {
            max_hosts: 1,
            ..ProfileConfig::default()
        });
        assert_eq!(capped.rule.load_state(saved, &|_| true), 1);
        // Garbage restores nothing.
        assert_eq!(
            capped
                .rule
                .load_state(serde_json::json!({"hosts": 7}), &|_| true),
            0
        );
    }

    #[test]
    fn sketches_stay_within_their_sizes() {
        let mut ports = TopPorts::default();
        for i in 0..10_000u32 {
            ports.add(if i % 2 == 0 {
                443
            } else {
                (i % 5000) as u16 + 1024
            });
        }
        assert_eq!(ports.busiest()[0], 443);
        let mut peers = Peers::default();
        for i in 0..5000u32 {
            peers.add(IpAddr::from((0x0a00_0000 + i * 7).to_be_bytes()));
        }
        let estimate = peers.estimate();
        assert!((3000..=7000).contains(&estimate), "{estimate}");
        assert_eq!(Peers::default().estimate(), 0);
    }
}
