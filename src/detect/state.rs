//! detect: what the rules learned (the per-host profiles) saved beside the daemon's state
//! file and loaded at start, so a restart is not blind. One file per flow-table shard,
//! `<state_file>.rules.<shard>`, written atomically; at start each shard reads every such
//! file and keeps the hosts that are its own, so a change of `flow.shards` loses nothing.
//! The same state with suppression and the hosts' risk is a scale-out partition's
//! checkpoint ([`Detector::checkpoint`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Detector;
use crate::decode::state::write_atomically;

/// Bumped on any incompatible change; a file of another version is refused.
const STATE_VERSION: u32 = 1;
/// Shard files looked for at start (`flow.shards` is at most 256).
const MAX_SHARD_FILES: usize = 256;

#[derive(Debug, Serialize, Deserialize)]
struct SavedRules {
    version: u32,
    /// Each rule's own state, by rule name.
    rules: BTreeMap<String, serde_json::Value>,
}

/// The rules' state file of `shard` beside `state_file`.
pub fn rules_state_path(state_file: &Path, shard: usize) -> PathBuf {
    let mut path = state_file.as_os_str().to_owned();
    path.push(format!(".rules.{shard}"));
    PathBuf::from(path)
}

/// Every rules' state file beside `state_file` that exists.
pub fn rules_state_paths(state_file: &Path) -> Vec<PathBuf> {
    (0..MAX_SHARD_FILES)
        .map(|shard| rules_state_path(state_file, shard))
        .filter(|path| path.exists())
        .collect()
}

impl Detector {
    /// Writes what the rules learned to `path`, atomically.
    pub fn save_rules_state(&self, path: &Path) -> anyhow::Result<()> {
        let state = SavedRules {
            version: STATE_VERSION,
            rules: self
                .save_state()
                .into_iter()
                .map(|(rule, value)| (rule.to_string(), value))
                .collect(),
        };
        let json = serde_json::to_vec(&state).expect("rule state serialises: plain data");
        write_atomically(path, &json)
            .with_context(|| format!("cannot write rules state file '{}'", path.display()))
    }

    /// Loads what [`save_rules_state`](Self::save_rules_state) wrote, for the hosts `keep`
    /// accepts; returns how many entries were restored. A missing file is not an error.
    pub fn load_rules_state(
        &mut self,
        path: &Path,
        keep: &dyn Fn(IpAddr) -> bool,
    ) -> anyhow::Result<usize> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read rules state file '{}'", path.display()));
            }
        };
        let state: SavedRules = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "'{}' is not a valid exflow rules state file",
                path.display()
            )
        })?;
        anyhow::ensure!(
            state.version == STATE_VERSION,
            "rules state file '{}' has version {}, this exflow reads version {STATE_VERSION}",
            path.display(),
            state.version
        );
        Ok(state
            .rules
            .into_iter()
            .map(|(rule, value)| self.load_state(&rule, value, keep))
            .sum())
    }
}

/// A partition's checkpoint copied on the detector's thread, to be encoded on another
/// ([`CheckpointSnapshot::encode`]): the rules' state as plain data, suppression and risk
/// (small) as JSON values.
pub struct CheckpointSnapshot {
    rules: Vec<(&'static str, super::StateSnapshot)>,
    suppression: serde_json::Value,
    risk: serde_json::Value,
}

impl CheckpointSnapshot {
    /// The checkpoint's JSON: `{"version", "rules": {rule: its saved state},
    /// "suppression", "risk"}`: what the rules learned (as the state file holds it), what
    /// suppression remembers and the hosts' alerts of the day.
    pub fn encode(self) -> serde_json::Result<Vec<u8>> {
        let mut rules = self.rules;
        rules.sort_by_key(|(rule, _)| *rule);
        let mut out = Vec::new();
        out.extend_from_slice(format!("{{\"version\":{STATE_VERSION},\"rules\":{{").as_bytes());
        for (i, (rule, snapshot)) in rules.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, rule)?;
            out.push(b':');
            snapshot(&mut out)?;
        }
        out.extend_from_slice(b"},\"suppression\":");
        serde_json::to_writer(&mut out, &self.suppression)?;
        out.extend_from_slice(b",\"risk\":");
        serde_json::to_writer(&mut out, &self.risk)?;
        out.push(b'}');
        Ok(out)
    }
}

impl Detector {
    /// What a replay of recent records cannot rebuild, for a partition's checkpoint: every
    /// rule's [`snapshot_state`](super::Rule::snapshot_state), suppression and the hosts'
    /// risk. Copies plain data: a JSON value of 100,000 profiles took seconds to build
    /// (`benches/checkpoint.rs`).
    pub fn checkpoint(&self) -> CheckpointSnapshot {
        CheckpointSnapshot {
            rules: self.snapshot_state(),
            suppression: self.suppressor.save(),
            risk: self.risk.save(),
        }
    }

    /// Decodes a checkpoint's JSON (what [`CheckpointSnapshot::encode`] wrote) into the
    /// rules' own types: the costly half of a restore (seconds for 100,000 profiles), which
    /// needs no detector, so a new owner runs it off its consumer thread.
    pub fn parse_checkpoint(json: &[u8]) -> anyhow::Result<ParsedCheckpoint> {
        let checkpoint: ParsedDocument = match serde_json::from_slice(json) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                #[derive(Deserialize)]
                struct Version {
                    version: u32,
                }
                if let Ok(Version { version }) = serde_json::from_slice(json) {
                    anyhow::ensure!(
                        version == STATE_VERSION,
                        "checkpoint version {version}, this exflow reads version {STATE_VERSION}"
                    );
                }
                return Err(error).context("not an exflow detector checkpoint");
            }
        };
        anyhow::ensure!(
            checkpoint.version == STATE_VERSION,
            "checkpoint version {}, this exflow reads version {STATE_VERSION}",
            checkpoint.version
        );
        let ParsedRules {
            profile,
            new_destination,
        } = checkpoint.rules;
        let mut rules: Vec<(&'static str, super::ParsedState)> = Vec::new();
        if let Some(saved) = profile {
            rules.push((super::profile::NAME, Box::new(saved)));
        }
        if let Some(saved) = new_destination {
            rules.push((super::new_destination::NAME, Box::new(saved)));
        }
        Ok(ParsedCheckpoint {
            rules,
            suppression: checkpoint.suppression,
            risk: checkpoint.risk,
        })
    }

    /// Takes a parsed checkpoint in place of what this detector rebuilt from the records
    /// before it; returns the entries restored.
    pub fn restore(&mut self, checkpoint: ParsedCheckpoint) -> usize {
        let mut restored = 0;
        for (name, state) in checkpoint.rules {
            if let Some(rule) = self.rules.iter_mut().find(|r| r.name() == name) {
                restored += rule.load_parsed(state, &|_| true);
            }
        }
        restored + self.suppressor.load(checkpoint.suppression) + self.risk.load(checkpoint.risk)
    }
}

/// A checkpoint as [`Detector::parse_checkpoint`] reads it: the state of each rule that
/// saves one, in its own type (a field per such rule, named as the rule).
#[derive(Deserialize)]
struct ParsedDocument {
    version: u32,
    rules: ParsedRules,
    suppression: serde_json::Value,
    risk: serde_json::Value,
}

#[derive(Deserialize)]
struct ParsedRules {
    profile: Option<super::profile::SavedProfiles>,
    new_destination: Option<super::new_destination::SavedBaselines>,
}

/// A checkpoint decoded, ready for [`Detector::restore`]; made on any thread.
pub struct ParsedCheckpoint {
    rules: Vec<(&'static str, super::ParsedState)>,
    suppression: serde_json::Value,
    risk: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::RulesConfig;
    use crate::detect::suppress::SuppressionConfig;
    use crate::detect::tests::{event_with, oriented};
    use crate::enrich::Destination;
    use crate::flow::FlowConfig;

    #[test]
    fn profiles_round_trip_through_the_file_per_shard() {
        let directory = std::env::temp_dir().join(format!("exflow-rules-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let state_file = directory.join("state.json");
        let (rules, suppression) = (RulesConfig::default(), SuppressionConfig::default());
        let max_lateness_s = FlowConfig::default().max_lateness_s;
        let mut detector = Detector::new(&rules, &suppression, max_lateness_s, 1);
        let mut alerts = Vec::new();
        let destination = Destination {
            country: Some("US".parse().unwrap()),
            foreign: true,
            ..Destination::default()
        };
        for (i, host) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].into_iter().enumerate() {
            let record = oriented(host, 50_000, "52.1.1.1", 443, 1000, 0, 0, 1000 + i as u64);
            detector.on_record(&event_with(&record, 1000, destination), &mut alerts);
        }
        assert!(alerts.is_empty());
        // A rule's snapshot encodes to what it saves.
        let saved = detector.save_state();
        let snapshots = detector.snapshot_state();
        assert_eq!(snapshots.len(), saved.len());
        assert!(saved.iter().any(|(rule, _)| *rule == "new_destination"));
        for ((rule, snapshot), (saved_rule, value)) in snapshots.into_iter().zip(&saved) {
            let mut out = Vec::new();
            snapshot(&mut out).unwrap();
            assert_eq!(rule, *saved_rule);
            assert_eq!(
                &serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
                value
            );
        }
        let path = rules_state_path(&state_file, 1);
        detector.save_rules_state(&path).unwrap();
        assert_eq!(rules_state_paths(&state_file), vec![path.clone()]);
        let mut restarted = Detector::new(&rules, &suppression, max_lateness_s, 1);
        let keep = |host: IpAddr| host != IpAddr::from([10, 0, 0, 2]);
        // Two hosts' profiles and their new_destination baselines.
        assert_eq!(restarted.load_rules_state(&path, &keep).unwrap(), 4);
        let saved = restarted.save_state();
        let profile = saved.iter().find(|(rule, _)| *rule == "profile").unwrap();
        assert_eq!(profile.1["hosts"].as_array().unwrap().len(), 2);
        // Missing is a first start; a wrong version or garbage is an error.
        assert_eq!(
            restarted
                .load_rules_state(&directory.join("absent"), &keep)
                .unwrap(),
            0
        );
        std::fs::write(&path, br#"{"version":9,"rules":{}}"#).unwrap();
        assert!(restarted.load_rules_state(&path, &keep).is_err());
        std::fs::write(&path, b"not json").unwrap();
        assert!(restarted.load_rules_state(&path, &keep).is_err());
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn a_checkpoint_carries_suppression_and_the_rules_state() {
        let (rules, suppression) = (RulesConfig::default(), SuppressionConfig::default());
        let max_lateness_s = FlowConfig::default().max_lateness_s;
        let detector = || Detector::new(&rules, &suppression, max_lateness_s, 1);
        let finding = crate::detect::Finding {
            rule: "bulk_egress",
            step: 0,
            score: 60,
            summary: "s".into(),
            inside: IpAddr::from([10, 0, 0, 1]),
            outside: IpAddr::from([52, 1, 1, 1]),
            outside_port: 443,
            inside_port: None,
            proto: 6,
            destination: Destination::default(),
            bytes_out: 1,
            bytes_in: 0,
            packets_out: 1,
            packets_in: 0,
            flows: 1,
            first_ms: 0,
            last_ms: 1000,
            exporter: IpAddr::from([127, 0, 0, 1]),
            interfaces: Default::default(),
            attack: &["T1048"],
            at_ms: 1_000_000,
            explain: None,
        };
        let admitted = |d: &mut Detector| {
            d.findings.push(finding.clone());
            let mut alerts = Vec::new();
            d.suppress(&mut alerts);
            alerts.len()
        };
        let mut first = detector();
        assert_eq!(admitted(&mut first), 1);
        let encoded = |d: &Detector| -> serde_json::Value {
            serde_json::from_slice(&d.checkpoint().encode().unwrap()).unwrap()
        };
        let bytes = first.checkpoint().encode().unwrap();
        let checkpoint = encoded(&first);
        let mut second = detector();
        // The suppressed pair and the host's day of alerts at least.
        assert!(second.restore(Detector::parse_checkpoint(&bytes).unwrap()) >= 2);
        // The same finding again within the cooldown is suppressed, as by the first.
        assert_eq!(admitted(&mut second), 0);
        assert_eq!(encoded(&second), checkpoint);
        let error = Detector::parse_checkpoint(br#"{"version":9}"#)
            .err()
            .unwrap();
        assert!(error.to_string().contains("version 9"), "{error:#}");
        assert!(Detector::parse_checkpoint(b"not json").is_err());
    }

    /// Every rule that saves a state is read back by `parse_checkpoint` into its own type:
    /// a checkpoint of profiles and baselines restores as many entries as a state file.
    #[test]
    fn a_parsed_checkpoint_restores_every_rule_that_saves_state() {
        let (rules, suppression) = (RulesConfig::default(), SuppressionConfig::default());
        let max_lateness_s = FlowConfig::default().max_lateness_s;
        let detector = || Detector::new(&rules, &suppression, max_lateness_s, 1);
        let mut first = detector();
        let mut alerts = Vec::new();
        let destination = Destination {
            country: Some("US".parse().unwrap()),
            foreign: true,
            ..Destination::default()
        };
        for (i, host) in ["10.0.0.1", "10.0.0.2"].into_iter().enumerate() {
            let record = oriented(host, 50_000, "52.1.1.1", 443, 1000, 0, 0, 1000 + i as u64);
            first.on_record(&event_with(&record, 1000, destination), &mut alerts);
        }
        let saving: Vec<&str> = first.save_state().iter().map(|(rule, _)| *rule).collect();
        assert_eq!(
            saving,
            ["new_destination", "profile"],
            "a new rule saves state: parse it"
        );
        let mut second = detector();
        let parsed = Detector::parse_checkpoint(&first.checkpoint().encode().unwrap()).unwrap();
        // Two profiles and two baselines (suppression and risk hold nothing).
        assert_eq!(second.restore(parsed), 4);
        assert_eq!(second.save_state(), first.save_state());
    }
}
