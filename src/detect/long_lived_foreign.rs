//! detect: `long_lived_foreign`, a stitched conversation from an inside host to a foreign
//! destination that lasts (default one hour) and carries real upload (default 1 MB; a
//! keepalive does not count), opened by the inside host (not a connection an inside server
//! answers). It re-alerts with rising severity at each ladder step
//! (default 4 h, 8 h, 12 h), as RITA and Zeek's long-connection ladders do. A step is
//! reached `duration_slack_s` (default 60 s) early: exporters time flows from first to last
//! packet, so the hour-long scenario D reads as 59 min 51 s.

use foldhash::{HashMap, HashMapExt};

use super::{Finding, RecordEvent, Rule, describe_destination, human_bytes, rule_allows};
use crate::config::LongLivedForeignConfig;
use crate::enrich::Allow;
use crate::flow::{Conversation, ConversationKey, Initiator};

pub const NAME: &str = "long_lived_foreign";
/// Exfiltration over a command-and-control channel; automated, scheduled transfer.
const ATTACK: &[&str] = &["T1041", "T1029"];
/// Scores of the ladder steps: medium, high, high, critical, then critical.
const STEP_SCORES: [u8; 8] = [50, 65, 75, 85, 90, 95, 98, 100];

pub struct LongLivedForeign {
    /// The step last reported per conversation, so a finding is made once per step, not on
    /// every record; forgotten when the conversation ends. Only conversations that reached
    /// the ladder are here.
    reported: HashMap<ConversationKey, u8>,
    ladder_ms: Vec<u64>,
    min_bytes_out: u64,
    allow: Allow,
}

impl LongLivedForeign {
    pub fn new(config: &LongLivedForeignConfig) -> Self {
        LongLivedForeign {
            reported: HashMap::new(),
            ladder_ms: config
                .ladder_s
                .iter()
                .map(|s| {
                    s.saturating_sub(config.duration_slack_s)
                        .saturating_mul(1000)
                })
                .collect(),
            min_bytes_out: config.min_bytes_out,
            allow: Allow::new(&config.allow),
        }
    }
}

impl Rule for LongLivedForeign {
    fn name(&self) -> &'static str {
        NAME
    }

    fn on_record(&mut self, event: &RecordEvent<'_>, findings: &mut Vec<Finding>) {
        let c = event.conversation;
        // A connection opened from outside is an inside server's (its sending is answers).
        if !c.destination.foreign
            || c.bytes_out < self.min_bytes_out
            || c.initiator() == Initiator::Outside
        {
            return;
        }
        let duration = c.duration_ms();
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
            "{} kept a connection to {} open for {:.1} h, sending {} out and {} in \
             ({} records; opened by the {} host, from {})",
            event.key.inside,
            describe_destination(event.key.outside, event.key.outside_port, &c.destination),
            duration as f64 / 3_600_000.0,
            human_bytes(c.bytes_out),
            human_bytes(c.bytes_in),
            c.flows,
            c.initiator().name(),
            c.opening.evidence().name(),
        );
        let score = STEP_SCORES[step.min(STEP_SCORES.len() - 1)];
        findings.push(
            Finding::for_conversation(NAME, event, step as u8, score, summary).with_attack(ATTACK),
        );
    }

    fn on_end(
        &mut self,
        key: &ConversationKey,
        _conversation: &Conversation,
        _now_ms: u64,
        _findings: &mut Vec<Finding>,
    ) {
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
        let config = crate::config::BulkEgressConfig::default();
        let mut rule = crate::detect::bulk_egress::BulkEgress::new(&config);
        assert!(!two_hours(&mut rule, 51234, 443).is_empty());
        let mut rule = crate::detect::bulk_egress::BulkEgress::new(&config);
        assert_eq!(two_hours(&mut rule, 443, 51234), Vec::new());
    }
}
