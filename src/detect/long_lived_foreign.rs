//! detect: `long_lived_foreign`, a stitched conversation from an inside host to a foreign
//! destination that lasts (default one hour) and carries real upload (default 1 MB; a
//! keepalive does not count). It re-alerts with rising severity at each ladder step
//! (default 4 h, 8 h, 12 h), as RITA and Zeek's long-connection ladders do. A step is
//! reached `duration_slack_s` (default 60 s) early: exporters time flows from first to last
//! packet, so the hour-long scenario D reads as 59 min 51 s.

use foldhash::{HashMap, HashMapExt};

use super::{Finding, RecordEvent, Rule, describe_destination, human_bytes, rule_allows};
use crate::config::LongLivedForeignConfig;
use crate::enrich::Allow;
use crate::flow::{Conversation, ConversationKey};

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
        if !c.destination.foreign || c.bytes_out < self.min_bytes_out {
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
            "{} kept a connection to {} open for {:.1} h, sending {} out and {} in",
            event.key.inside,
            describe_destination(event.key.outside, event.key.outside_port, &c.destination),
            duration as f64 / 3_600_000.0,
            human_bytes(c.bytes_out),
            human_bytes(c.bytes_in),
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
