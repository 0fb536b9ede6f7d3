//! detect: `long_lived_foreign`, a stitched conversation from an inside host to a foreign
//! destination that lasts (default one hour) and carries real upload (default 1 MB; a
//! keepalive does not count), opened by the inside host (not a connection an inside server
//! answers). It re-alerts with rising severity at each ladder step (default 4 h, 8 h,
//! 12 h), as RITA and Zeek's long-connection ladders do. A step is reached
//! `duration_slack_s` (default 60 s) early: exporters time flows from first to last packet,
//! so the hour-long scenario D reads as 59 min 51 s.
//!
//! Two refinements of issue 9:
//! - **Quiet long flows**: a conversation the inside host opened and held for
//!   `quiet_after_s` (default 9 h) is reported whatever its volume, at medium severity
//!   (Stealthwatch's "Suspect Quiet Long Flow"), unless it goes to a keepalive service
//!   (push, VPN, ping: `detect::keepalive`) or is DNS (a forwarding resolver's upstream).
//! - **Symmetric media**: a UDP conversation that brings back at least half what it sends
//!   (a video call) is media, not an upload. Exporters send the two directions' records
//!   one after the other, so a UDP finding waits for the next tick and is dropped if the
//!   conversation turned out symmetric by then.
//! - **Jump hosts**: a host that answered connections from outside on a
//!   remote-administration port (`jump_host_ports`: SSH, RDP) within the last day is a
//!   bastion; its own connections to that port abroad are the administrators' sessions it
//!   relays, as long as their working day, and are not reported here. What they carry
//!   still counts in the volume rules.

use std::net::IpAddr;

use foldhash::{HashMap, HashMapExt};

use super::bounded::evict_stalest;
use super::{Finding, RecordEvent, Rule, describe_destination, human_bytes, rule_allows};
use crate::enrich::Allow;
use crate::enrich::AllowList;
use crate::flow::{Conversation, ConversationKey, Initiator};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongLivedForeignConfig {
    pub enabled: bool,
    /// Durations at which the conversation is reported, each step more severe.
    pub ladder_s: Vec<u64>,
    /// Exporters time a flow from its first to its last packet, so an hour-long transfer
    /// reads as 59 min 5x s: a step is reached this much before its duration.
    pub duration_slack_s: u64,
    /// Upload a conversation needs before it counts (a keepalive does not).
    pub min_bytes_out: u64,
    /// A conversation the inside host opened to a foreign destination and held this long
    /// is reported whatever its volume (a quiet long flow); 0: never. Keepalive services
    /// (`detect::keepalive`) are not.
    pub quiet_after_s: u64,
    /// Remote-administration ports (SSH, RDP): a host that answers connections from
    /// outside on one of them and opens connections on the same port to foreign hosts is a
    /// jump host (a bastion), and its sessions on that port are administrators' working
    /// sessions, long by nature: not reported (their volume still counts in `bulk_egress`,
    /// `spread_egress`, `egress_anomaly` and `low_and_slow`). Empty: no jump hosts.
    pub jump_host_ports: Vec<u16>,
    pub allow: AllowList,
}

impl Default for LongLivedForeignConfig {
    fn default() -> Self {
        LongLivedForeignConfig {
            enabled: true,
            ladder_s: vec![3600, 4 * 3600, 8 * 3600, 12 * 3600],
            duration_slack_s: 60,
            min_bytes_out: 1_000_000,
            quiet_after_s: 9 * 3600,
            jump_host_ports: vec![22, 3389],
            allow: AllowList::default(),
        }
    }
}

pub const NAME: &str = "long_lived_foreign";
/// Exfiltration over a command-and-control channel; automated, scheduled transfer.
const ATTACK: &[&str] = &["T1041", "T1029"];
/// Scores of the ladder steps: medium, high, high, critical, then critical.
const STEP_SCORES: [u8; 8] = [50, 65, 75, 85, 90, 95, 98, 100];
/// The score of a quiet long flow: medium.
const QUIET_SCORE: u8 = 55;
/// A host stays a jump host this long after it last answered on a jump-host port.
const JUMP_HOST_IDLE_MS: u64 = 24 * 3_600_000;
/// Jump hosts (host, port) remembered at most; beyond it the stalest go, counted.
const MAX_JUMP_HOSTS: usize = 4096;

/// A UDP conversation that brings back at least half of what it sends: media (a call), not
/// an upload.
pub fn symmetric_media(c: &Conversation, proto: u8) -> bool {
    proto == 17 && c.bytes_in.saturating_mul(2) >= c.bytes_out
}

pub struct LongLivedForeign {
    /// The step last reported per conversation, so a finding is made once per step, not on
    /// every record; forgotten when the conversation ends. Only conversations that reached
    /// the ladder are here (bounded by the conversation table).
    reported: HashMap<ConversationKey, u8>,
    /// UDP findings waiting for the next tick (see the module doc), by conversation.
    pending: HashMap<ConversationKey, Finding>,
    ladder_ms: Vec<u64>,
    quiet_after_ms: Option<u64>,
    min_bytes_out: u64,
    jump_host_ports: Vec<u16>,
    /// Hosts that answered connections from outside on a jump-host port, by (host, port):
    /// when they last did (event time).
    jump_hosts: HashMap<(IpAddr, u16), u64>,
    /// Jump hosts forgotten to stay within `MAX_JUMP_HOSTS`.
    jump_hosts_evicted: u64,
    allow: Allow,
}

impl LongLivedForeign {
    pub fn new(config: &LongLivedForeignConfig) -> Self {
        let early = |s: u64| {
            s.saturating_sub(config.duration_slack_s)
                .saturating_mul(1000)
        };
        LongLivedForeign {
            reported: HashMap::new(),
            pending: HashMap::new(),
            ladder_ms: config.ladder_s.iter().map(|&s| early(s)).collect(),
            quiet_after_ms: (config.quiet_after_s > 0).then(|| early(config.quiet_after_s)),
            min_bytes_out: config.min_bytes_out,
            jump_host_ports: config.jump_host_ports.clone(),
            jump_hosts: HashMap::new(),
            jump_hosts_evicted: 0,
            allow: Allow::new(&config.allow),
        }
    }

    /// Remembers that `host` answered a connection from outside on jump-host `port`.
    fn answered(&mut self, host: IpAddr, port: u16, now_ms: u64) {
        let key = (host, port);
        if !self.jump_hosts.contains_key(&key) && self.jump_hosts.len() >= MAX_JUMP_HOSTS {
            self.jump_hosts_evicted +=
                evict_stalest(&mut self.jump_hosts, |&ms| ms, |_, _| {}) as u64;
        }
        let last = self.jump_hosts.entry(key).or_insert(now_ms);
        *last = (*last).max(now_ms);
    }

    /// `host` is a jump host for `port`: it answered on it from outside within a day.
    fn jump_host(&self, host: IpAddr, port: u16, now_ms: u64) -> bool {
        self.jump_hosts
            .get(&(host, port))
            .is_some_and(|&last| last.saturating_add(JUMP_HOST_IDLE_MS) >= now_ms)
    }

    /// A pending UDP finding goes out unless its conversation is media.
    fn release(finding: Finding, findings: &mut Vec<Finding>) {
        if !(finding.proto == 17 && finding.bytes_in.saturating_mul(2) >= finding.bytes_out) {
            findings.push(finding);
        }
    }
}

impl Rule for LongLivedForeign {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let c = event.conversation;
        if let Some(pending) = self.pending.get_mut(event.key) {
            (pending.bytes_out, pending.bytes_in) = (c.bytes_out, c.bytes_in);
            (pending.packets_out, pending.packets_in) = (c.packets_out, c.packets_in);
        }
        // A connection opened from outside is an inside server's (its sending is answers).
        if c.initiator() == Initiator::Outside {
            if self.jump_host_ports.contains(&event.key.inside_port) {
                self.answered(event.key.inside, event.key.inside_port, event.now_ms);
            }
            return;
        }
        if !c.destination.foreign {
            return;
        }
        let duration = c.duration_ms();
        let quiet = c.bytes_out < self.min_bytes_out;
        if quiet
            && !(self.quiet_after_ms.is_some_and(|at| duration >= at)
                && c.initiator() == Initiator::Inside
                && super::keepalive::keepalive(event.key).is_none()
                // A forwarding resolver's upstream is DNS, dns_tunnel's matter.
                && !(event.from_resolver || event.key.outside_port == 53))
        {
            return;
        }
        if symmetric_media(c, event.key.proto)
            || (self.jump_host_ports.contains(&event.key.outside_port)
                && self.jump_host(event.key.inside, event.key.outside_port, event.now_ms))
        {
            return;
        }
        // The highest step reached; suppression drops steps already reported.
        let Some(step) = self.ladder_ms.iter().rposition(|&at| duration >= at) else {
            return;
        };
        if self
            .reported
            .get(event.key)
            .is_some_and(|&reported| usize::from(reported) >= step)
            || rule_allows(&self.allow, event.key, &c.destination)
        {
            return;
        }
        self.reported.insert(*event.key, step as u8);
        let summary = format!(
            "{} kept a {}connection to {} open for {:.1} h, sending {} out and {} in \
             ({} records; opened by the {} host, from {})",
            event.key.inside,
            if quiet { "quiet " } else { "" },
            describe_destination(event.key.outside, event.key.outside_port, &c.destination),
            duration as f64 / 3_600_000.0,
            human_bytes(c.bytes_out),
            human_bytes(c.bytes_in),
            c.flows,
            c.initiator().name(),
            c.opening.evidence().name(),
        );
        let score = if quiet {
            QUIET_SCORE
        } else {
            STEP_SCORES[step.min(STEP_SCORES.len() - 1)]
        };
        let finding =
            Finding::for_conversation(NAME, event, step as u8, score, summary).with_attack(ATTACK);
        if event.key.proto == 17 {
            self.pending.insert(*event.key, finding);
        } else {
            findings.push(finding);
        }
    }

    fn state_dropped(&self) -> Vec<(&'static str, u64)> {
        vec![("jump_hosts_evicted", self.jump_hosts_evicted)]
    }

    fn on_tick(&mut self, _now_ms: u64, findings: &mut Vec<Finding>) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending: Vec<Finding> = self.pending.drain().map(|(_, f)| f).collect();
        // The map's order is not the input's: release in a fixed one.
        pending.sort_by_key(|f| (f.at_ms, f.inside, f.outside, f.outside_port));
        for finding in pending {
            Self::release(finding, findings);
        }
    }

    fn on_end(
        &mut self,
        key: &ConversationKey,
        _conversation: &Conversation,
        _now_ms: u64,
        findings: &mut Vec<Finding>,
    ) {
        if let Some(finding) = self.pending.remove(key) {
            Self::release(finding, findings);
        }
        if !self.reported.is_empty() {
            self.reported.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::{feed, foreign, oriented};
    use crate::flow::FlowTable;

    /// Two hours of 50 MB a minute-record between 10.0.0.1:`inside_port` and
    /// 5.255.255.77:`outside_port`, through a table into `rule`.
    fn two_hours(rule: &mut dyn Rule, inside_port: u16, outside_port: u16) -> Vec<Finding> {
        let mut table = FlowTable::new(100, 1800, 0);
        let mut findings = Vec::new();
        for minute in 0..120u64 {
            let (start, end) = (minute * 60_000, minute * 60_000 + 59_000);
            let mut record = oriented(
                "10.0.0.1",
                inside_port,
                "5.255.255.77",
                outside_port,
                50_000_000,
                0,
                start,
                end,
            );
            record.tcp_flags = 0x18;
            feed(
                rule,
                &mut table,
                &record,
                foreign(),
                end,
                false,
                &mut findings,
            );
        }
        findings
    }

    #[test]
    fn an_upload_climbs_the_ladder_a_server_answering_abroad_does_not() {
        let config = LongLivedForeignConfig::default();
        let mut rule = LongLivedForeign::new(&config);
        let findings = two_hours(&mut rule, 51234, 443);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].summary.contains("opened by the inside host"));
        // The inside web server's answers to a client abroad.
        let mut rule = LongLivedForeign::new(&config);
        assert_eq!(two_hours(&mut rule, 443, 51234), Vec::new());
    }

    #[test]
    fn bulk_egress_does_not_count_a_server_answering_abroad() {
        let config = crate::detect::bulk_egress::BulkEgressConfig::default();
        let mut rule = crate::detect::bulk_egress::BulkEgress::new(&config);
        assert!(!two_hours(&mut rule, 51234, 443).is_empty());
        let mut rule = crate::detect::bulk_egress::BulkEgress::new(&config);
        assert_eq!(two_hours(&mut rule, 443, 51234), Vec::new());
    }

    /// Records every `every_s` for `hours` between 10.0.0.1:50000 and `outside`:`port`, of
    /// `out` and `back` bytes (the reply as its own record, as unidirectional exporters
    /// send it), through a table into a fresh rule; ticks every ten minutes.
    #[allow(clippy::too_many_arguments)]
    fn conversation(
        outside: &str,
        port: u16,
        proto: u8,
        hours: u64,
        every_s: u64,
        out: u64,
        back: u64,
    ) -> Vec<Finding> {
        let mut rule = LongLivedForeign::new(&LongLivedForeignConfig::default());
        let mut table = FlowTable::new(100, 1800, 0);
        let mut findings = Vec::new();
        for i in 0..hours * 3600 / every_s {
            let (start, end) = (i * every_s * 1000, (i + 1) * every_s * 1000 - 1000);
            let mut record = oriented("10.0.0.1", 50000, outside, port, out, 0, start, end);
            record.proto = proto;
            feed(
                &mut rule,
                &mut table,
                &record,
                foreign(),
                end,
                false,
                &mut findings,
            );
            if back > 0 {
                let mut reply = oriented("10.0.0.1", 50000, outside, port, 0, back, start, end);
                (reply.proto, reply.from_inside) = (proto, false);
                feed(
                    &mut rule,
                    &mut table,
                    &reply,
                    foreign(),
                    end,
                    false,
                    &mut findings,
                );
            }
            if end % 600_000 < every_s * 1000 {
                rule.on_tick(end, &mut findings);
            }
        }
        rule.on_tick(u64::MAX / 2, &mut findings);
        findings
    }

    #[test]
    fn a_quiet_long_flow_is_reported_after_nine_hours_a_push_connection_is_not() {
        // 10 h, 2 kB up every 10 min: 240 kB in all, under the 1 MB a step needs.
        let findings = conversation("5.255.255.77", 443, 6, 10, 600, 2_000, 500);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert!(f.last_ms - f.first_ms >= 9 * 3_600_000 - 60_000, "{f:?}");
        assert_eq!(f.score, QUIET_SCORE);
        assert!(f.summary.contains("quiet connection"), "{}", f.summary);
        assert_eq!(
            conversation("17.57.146.20", 5223, 6, 10, 600, 2_000, 500),
            Vec::new()
        );
        // Under nine hours: nothing.
        assert_eq!(
            conversation("5.255.255.77", 443, 6, 8, 600, 2_000, 500),
            Vec::new()
        );
    }

    #[test]
    fn a_jump_hosts_ssh_sessions_are_not_channels_another_hosts_are() {
        let hour = 3_600_000;
        // A two-hour SSH session abroad carrying 20 MB (a release copied), as one record.
        let session = |host: &str| {
            let mut record = oriented(host, 40000, "18.184.1.1", 22, 20_000_000, 0, hour, 3 * hour);
            record.tcp_flags = 0x1b;
            record
        };
        let mut rule = LongLivedForeign::new(&LongLivedForeignConfig::default());
        let mut table = FlowTable::new(100, 1800, 0);
        let mut findings = Vec::new();
        // 10.0.0.22 answered an admin's SSH session from outside (it serves port 22).
        let admin = oriented(
            "10.0.0.22",
            22,
            "195.121.1.1",
            51000,
            30_000,
            2_000,
            0,
            600_000,
        );
        feed(
            &mut rule,
            &mut table,
            &admin,
            foreign(),
            600_000,
            false,
            &mut findings,
        );
        for host in ["10.0.0.22", "10.0.0.23"] {
            let record = session(host);
            let end = record.end_ms;
            feed(
                &mut rule,
                &mut table,
                &record,
                foreign(),
                end,
                false,
                &mut findings,
            );
        }
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].inside.to_string(), "10.0.0.23");
        // Without jump-host ports the bastion's session is reported too.
        let config = LongLivedForeignConfig {
            jump_host_ports: Vec::new(),
            ..LongLivedForeignConfig::default()
        };
        let mut rule = LongLivedForeign::new(&config);
        let mut table = FlowTable::new(100, 1800, 0);
        let mut findings = Vec::new();
        feed(
            &mut rule,
            &mut table,
            &admin,
            foreign(),
            600_000,
            false,
            &mut findings,
        );
        let record = session("10.0.0.22");
        feed(
            &mut rule,
            &mut table,
            &record,
            foreign(),
            record.end_ms,
            false,
            &mut findings,
        );
        assert_eq!(findings.len(), 1, "{findings:?}");
    }

    #[test]
    fn a_video_call_is_media_a_one_way_udp_upload_is_not() {
        // An hour and a half of 1 Mbit/s each way, records every 5 min.
        let call = conversation("52.112.0.1", 3479, 17, 2, 300, 37_500_000, 36_000_000);
        assert_eq!(call, Vec::new());
        let upload = conversation("52.112.0.1", 3479, 17, 2, 300, 37_500_000, 100_000);
        assert_eq!(upload.len(), 1, "{upload:?}");
        assert_eq!(upload[0].proto, 17);
    }
}
