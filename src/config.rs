//! config: the whole configuration tree, read from TOML (`--config FILE`), overlaid with
//! command-line flags and their `EXFLOW_*` environment twins, then validated into the
//! objects the pipeline uses. Every key has a documented default, so an empty file (or no
//! file) runs; unknown keys are errors that name their path.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::decode::DecoderLimits;
pub use crate::decode::SamplingSection;
pub use crate::detect::RulesConfig;
pub use crate::detect::beacon::BeaconConfig;
pub use crate::detect::bulk_egress::BulkEgressConfig;
pub use crate::detect::dns_tunnel::{DnsSlowWindow, DnsTunnelConfig};
pub use crate::detect::long_lived_foreign::LongLivedForeignConfig;
pub use crate::detect::low_and_slow::LowAndSlowConfig;
pub use crate::detect::new_destination::NewDestinationConfig;
pub use crate::detect::profile::{EgressAnomalyConfig, ProfileConfig, RoleChangeConfig};
pub use crate::detect::spread_egress::SpreadEgressConfig;
pub use crate::detect::suppress::SuppressionConfig;
pub use crate::detect::watchlist::WatchlistConfig;
pub use crate::enrich::endpoint::{AllowList, load_threat_intel};
pub use crate::enrich::geo::GeoipConfig;
use crate::enrich::{CountryCode, EndpointSettings, Enricher, Geo, GeoSources};
pub use crate::flow::{BYTES_PER_CONVERSATION, FlowConfig};
pub use crate::sink::SinkConfig;
pub use crate::sink::kafka::{FlowsFormat, KafkaConfig};
pub use crate::source::SourceConfig;

/// The configuration file's root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The networks that are "ours": a record is oriented inside -> outside with them.
    /// Default: RFC 1918, RFC 6598 (carrier-grade NAT) and ULA.
    pub inside: Vec<IpNet>,
    /// Countries that are not foreign. Empty: the inside endpoint's own country, where known.
    pub home_countries: Vec<CountryCode>,
    /// Countries whose traffic the `watchlist` rule reports.
    pub watch_countries: Vec<CountryCode>,
    /// The inside DNS resolvers, whose forwarding to outside resolvers is not tunnelling.
    pub resolvers: Vec<IpAddr>,
    /// Threat-intel CIDRs, one per line (`#` comments), for `watchlist`; reloaded on SIGHUP.
    pub threat_intel_file: Option<PathBuf>,
    /// UDP addresses the daemon receives NetFlow/IPFIX on (any version on any port).
    pub listen: Vec<SocketAddr>,
    /// Prometheus `/metrics` address of the daemon.
    pub metrics_listen: SocketAddr,
    /// Where templates and sampling state are saved across restarts (daemon only).
    pub state_file: Option<PathBuf>,
    pub source: SourceConfig,
    pub geoip: GeoipConfig,
    pub sampling: SamplingSection,
    pub decoder: DecoderLimits,
    pub flow: FlowConfig,
    /// Global allow-list: matching traffic is never alerted on.
    pub allow: AllowList,
    pub rules: RulesConfig,
    pub suppression: SuppressionConfig,
    pub sink: SinkConfig,
    /// `exflow collect` and `exflow detect`: watermarks, the detectors' group, checkpoints.
    pub scaleout: crate::scaleout::ScaleoutConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inside: crate::enrich::netset::DEFAULT_INSIDE_NETS.to_vec(),
            home_countries: Vec::new(),
            watch_countries: Vec::new(),
            resolvers: Vec::new(),
            threat_intel_file: None,
            listen: vec![
                "0.0.0.0:2055".parse().expect("literal"),
                "0.0.0.0:4739".parse().expect("literal"),
                "0.0.0.0:6343".parse().expect("literal"),
            ],
            metrics_listen: "127.0.0.1:9102".parse().expect("literal"),
            state_file: None,
            source: SourceConfig::default(),
            geoip: GeoipConfig::default(),
            sampling: SamplingSection::default(),
            decoder: DecoderLimits::default(),
            flow: FlowConfig::default(),
            allow: AllowList::default(),
            rules: RulesConfig::default(),
            suppression: SuppressionConfig::default(),
            sink: SinkConfig::default(),
            scaleout: crate::scaleout::ScaleoutConfig::default(),
        }
    }
}

/// What the shared command-line flags (and their `EXFLOW_*` twins) lay over the file:
/// plain data, parsed by the CLI (its `SharedArgs`); an empty or `None` field leaves the
/// file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `inside`.
    pub inside: Vec<IpNet>,
    /// Replaces `home_countries`.
    pub home_countries: Vec<CountryCode>,
    /// Replaces `watch_countries`.
    pub watch_countries: Vec<CountryCode>,
    /// Replaces `listen`.
    pub listen: Vec<SocketAddr>,
    /// Replaces `metrics_listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Sets `sink.kafka.brokers`.
    pub kafka_brokers: Option<String>,
    /// Sets `sink.kafka.topic`.
    pub kafka_topic: Option<String>,
    /// Sets `sink.kafka.flows_topic`.
    pub flows_topic: Option<String>,
    /// Sets `sink.kafka.ocsf_topic`.
    pub ocsf_topic: Option<String>,
}

impl Config {
    /// The endpoint facts the pipeline consults: the GeoIP databases opened and the
    /// threat-intel file read as configured.
    pub fn enricher(&self) -> anyhow::Result<Enricher> {
        let geo = Geo::open(&GeoSources {
            country_db_paths: self.geoip.country_db.clone(),
            embedded_country_fallback: self.geoip.embedded,
            asn_db_path: self.geoip.asn_db.clone(),
        })?;
        let threat_intel = match &self.threat_intel_file {
            Some(path) => load_threat_intel(path)?,
            None => crate::enrich::NetSet::default(),
        };
        Ok(Enricher::new(
            std::sync::Arc::new(geo),
            &self.endpoint_settings(),
            threat_intel,
        ))
    }

    /// The top-level keys the enricher is built from.
    pub fn endpoint_settings(&self) -> EndpointSettings<'_> {
        EndpointSettings {
            inside: &self.inside,
            home_countries: &self.home_countries,
            watch_countries: &self.watch_countries,
            resolvers: &self.resolvers,
            allow: &self.allow,
        }
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> anyhow::Result<Config> {
        toml::from_str(text).map_err(|error| {
            anyhow::anyhow!("{origin}: {}", error.message().trim_end()).context(
                match error.span() {
                    Some(span) => format!(
                        "invalid config at {origin}, line {}",
                        line_of(text, span.start)
                    ),
                    None => format!("invalid config {origin}"),
                },
            )
        })
    }

    /// The file (when given) with the flags laid over it, validated.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file '{}'", path.display()))?;
                Config::from_toml(&text, &format!("'{}'", path.display()))?
            }
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, args: &Overrides) {
        if !args.inside.is_empty() {
            self.inside = args.inside.clone();
        }
        if !args.home_countries.is_empty() {
            self.home_countries = args.home_countries.clone();
        }
        if !args.watch_countries.is_empty() {
            self.watch_countries = args.watch_countries.clone();
        }
        if !args.listen.is_empty() {
            self.listen = args.listen.clone();
        }
        if let Some(address) = args.metrics_listen {
            self.metrics_listen = address;
        }
        if args.kafka_brokers.is_some()
            || args.kafka_topic.is_some()
            || args.flows_topic.is_some()
            || args.ocsf_topic.is_some()
        {
            let kafka = self.sink.kafka.get_or_insert_with(|| KafkaConfig::new(""));
            if let Some(topic) = &args.flows_topic {
                kafka.flows_topic = Some(topic.clone());
            }
            if let Some(topic) = &args.ocsf_topic {
                kafka.ocsf_topic = Some(topic.clone());
            }
            if let Some(brokers) = &args.kafka_brokers {
                kafka.brokers = brokers.clone();
            }
            if let Some(topic) = &args.kafka_topic {
                kafka.topic = topic.clone();
            }
        }
    }

    /// Checks what serde cannot: every problem is reported, each with its key path.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.inside.is_empty() {
            problems.push("inside: at least one inside network is needed".to_string());
        }
        if self.flow.max_conversations == 0 || self.flow.max_memory_bytes < BYTES_PER_CONVERSATION {
            problems.push(
                "flow.max_conversations, flow.max_memory_bytes: room for at least one conversation"
                    .to_string(),
            );
        }
        if !(1..=256).contains(&self.source.workers) {
            problems.push("source.workers: must be 1 to 256".to_string());
        }
        if self.flow.shards > 256 || self.flow.queue_batches == 0 {
            problems.push(
                "flow.shards, flow.queue_batches: shards must be 0 to 256, queue_batches at least 1"
                    .to_string(),
            );
        }
        if self.flow.shards == 0 && self.source.workers > 1 {
            problems.push(
                "flow.shards: several receive workers need shard threads (flow.shards >= 1)"
                    .to_string(),
            );
        }
        if self.flow.idle_timeout_s == 0 || self.flow.tick_s == 0 {
            problems.push("flow.idle_timeout_s, flow.tick_s: must be at least 1".to_string());
        }
        let ladder = &self.rules.long_lived_foreign.ladder_s;
        if ladder.is_empty() || ladder.windows(2).any(|w| w[0] >= w[1]) || ladder.len() > 8 {
            problems.push(
                "rules.long_lived_foreign.ladder_s: 1 to 8 durations, increasing".to_string(),
            );
        }
        if self.rules.bulk_egress.window_s == 0
            || self
                .rules
                .dns_tunnel
                .windows()
                .iter()
                .any(|w| w.window_s == 0)
            || self.rules.spread_egress.window_s == 0
            || self.rules.low_and_slow.window_s == 0
        {
            problems.push("rules.*.window_s: must be at least 1".to_string());
        }
        let slow_windows = self.rules.dns_tunnel.slow_windows.len();
        if slow_windows >= crate::detect::dns_tunnel::MAX_WINDOWS {
            problems.push(format!(
                "rules.dns_tunnel.slow_windows: {slow_windows} given, at most {}",
                crate::detect::dns_tunnel::MAX_WINDOWS - 1
            ));
        }
        if !(0.0..=1.0).contains(&self.rules.beacon.score_threshold) {
            problems.push(format!(
                "rules.beacon.score_threshold: {} is outside 0..1",
                self.rules.beacon.score_threshold
            ));
        }
        let peak_factor = self.rules.egress_anomaly.peak_factor;
        if !(peak_factor.is_finite() && peak_factor >= 1.0) {
            problems.push(format!(
                "rules.egress_anomaly.peak_factor: {peak_factor} must be at least 1"
            ));
        }
        if self.rules.profile.max_hosts == 0
            || self.rules.spread_egress.max_windows == 0
            || self.rules.low_and_slow.max_windows == 0
        {
            problems.push(
                "rules.profile.max_hosts, rules.*.max_windows: must be at least 1".to_string(),
            );
        }
        if self.rules.beacon.min_occurrences < 4 {
            problems.push(
                "rules.beacon.min_occurrences: at least 4 are needed to judge regularity"
                    .to_string(),
            );
        }
        if self.sampling.overrides.values().any(|&rate| rate == 0)
            || self.sampling.default_rate == Some(0)
        {
            problems.push("sampling: a rate is 1-in-N with N at least 1".to_string());
        }
        if self.source.state_save_interval_s == 0 {
            problems.push("source.state_save_interval_s: must be at least 1".to_string());
        }
        if self.listen.is_empty() {
            problems.push("listen: at least one address is needed".to_string());
        }
        if let Some(kafka) = &self.sink.kafka {
            if kafka.brokers.trim().is_empty()
                || kafka.brokers.split(',').any(|b| !is_host_port(b.trim()))
            {
                problems.push(format!(
                    "sink.kafka.brokers: '{}' is not a comma-separated list of host:port",
                    kafka.brokers
                ));
            }
            for (key, topic) in [
                ("topic", Some(&kafka.topic)),
                ("flows_topic", kafka.flows_topic.as_ref()),
                ("ocsf_topic", kafka.ocsf_topic.as_ref()),
            ] {
                let Some(topic) = topic else { continue };
                if topic.is_empty()
                    || topic.len() > 249
                    || !topic
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    problems.push(format!(
                        "sink.kafka.{key}: '{topic}' is not a valid Kafka topic name"
                    ));
                }
            }
            if kafka.ocsf_topic.as_ref() == Some(&kafka.topic) {
                problems.push(format!(
                    "sink.kafka.ocsf_topic: '{}' is the alert topic; OCSF findings need a topic of their own",
                    kafka.topic
                ));
            }
            if kafka.queue_alerts == 0 || kafka.spool_max_bytes == 0 {
                problems.push(
                    "sink.kafka.queue_alerts, sink.kafka.spool_max_bytes: must be at least 1"
                        .to_string(),
                );
            }
        }
        problems.extend(self.scaleout.problems());
        if problems.is_empty() {
            return Ok(());
        }
        bail!("invalid config: {}", problems.join("; "))
    }
}

fn is_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_records_s_is_still_read_as_max_lateness_s() {
        let config = Config::from_toml("[flow]\nlate_records_s = 7200\n", "test").unwrap();
        assert_eq!(config.flow.max_lateness_s, 7200);
        let config = Config::from_toml(
            "[flow]\nmax_lateness_s = 600\nmax_clock_skew_s = 60\n\n[source]\nexporters = [\"192.0.2.0/24\"]\n",
            "test",
        )
        .unwrap();
        assert_eq!(
            (config.flow.max_lateness_s, config.flow.max_clock_skew_s),
            (600, 60)
        );
        assert_eq!(
            config.source.exporters,
            vec!["192.0.2.0/24".parse().unwrap()]
        );
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = Config::from_toml("", "test").unwrap();
        assert_eq!(config, Config::default());
        config.validate().unwrap();
        assert_eq!(config.inside.len(), 5);
        assert_eq!(config.listen.len(), 3);
        assert_eq!(config.rules.bulk_egress.min_bytes_out, 100_000_000);
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
            inside = ["10.10.0.0/16", "2001:db8:10::/48"]
            home_countries = ["NL"]
            watch_countries = ["kp"]
            resolvers = ["10.10.0.53"]
            listen = ["127.0.0.1:2055"]
            [sampling]
            default_rate = 1
            overrides = { "192.0.2.1" = 1000 }
            [allow]
            asns = [15169]
            [rules.bulk_egress]
            min_bytes_out = 50_000_000
            allow = { countries = ["DE"] }
            [rules.beacon]
            enabled = false
            [sink.kafka]
            brokers = "kafka1:9092,kafka2:9092"
        "#;
        let config = Config::from_toml(text, "test").unwrap();
        config.validate().unwrap();
        assert_eq!(config.home_countries, vec!["NL".parse().unwrap()]);
        assert_eq!(config.watch_countries, vec!["KP".parse().unwrap()]);
        assert_eq!(
            config.sampling.overrides[&"192.0.2.1".parse::<IpAddr>().unwrap()],
            1000
        );
        assert_eq!(
            config.rules.bulk_egress.allow.countries,
            vec!["DE".parse().unwrap()]
        );
        assert!(!config.rules.beacon.enabled);
        assert_eq!(
            config.sink.kafka.as_ref().unwrap().topic,
            "exflow.alerts.v1"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_place() {
        let error =
            Config::from_toml("[rules.bulk_egress]\nmin_bytes = 5\n", "'x.toml'").unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("line 2") && text.contains("unknown field `min_bytes`"),
            "{text}"
        );
        let error =
            Config::from_toml("home_countries = [\"Netherlands\"]", "'x.toml'").unwrap_err();
        assert!(format!("{error:#}").contains("Netherlands"), "{error:#}");
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        let mut config = Config::default();
        config.rules.long_lived_foreign.ladder_s = vec![3600, 60];
        let slow = config.rules.dns_tunnel.slow_windows[0].clone();
        config.rules.dns_tunnel.slow_windows = vec![slow; 4];
        config.sink.kafka = Some(KafkaConfig {
            topic: "bad topic".into(),
            ..KafkaConfig::new("kafka1")
        });
        let text = config.validate().unwrap_err().to_string();
        assert!(text.contains("rules.long_lived_foreign.ladder_s"), "{text}");
        assert!(text.contains("sink.kafka.brokers: 'kafka1'"), "{text}");
        assert!(text.contains("sink.kafka.topic: 'bad topic'"), "{text}");
        assert!(
            text.contains("rules.dns_tunnel.slow_windows: 4 given, at most 3"),
            "{text}"
        );
    }

    #[test]
    fn ocsf_findings_need_a_topic_of_their_own() {
        let mut config = Config::default();
        config.sink.kafka = Some(KafkaConfig {
            ocsf_topic: Some("exflow.alerts.v1".into()),
            ..KafkaConfig::new("127.0.0.1:9092")
        });
        let text = config.validate().unwrap_err().to_string();
        assert!(
            text.contains("sink.kafka.ocsf_topic: 'exflow.alerts.v1'"),
            "{text}"
        );
        let args = Overrides {
            ocsf_topic: Some("exflow.findings.ocsf.v1".into()),
            ..Overrides::default()
        };
        config.apply(&args);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = Overrides {
            inside: vec!["192.0.2.0/24".parse().unwrap()],
            home_countries: vec!["DE".parse().unwrap()],
            kafka_brokers: Some("127.0.0.1:9092".into()),
            ..Overrides::default()
        };
        let mut config = Config::from_toml("home_countries = [\"NL\"]", "test").unwrap();
        config.apply(&args);
        assert_eq!(
            config.inside,
            vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(config.home_countries, vec!["DE".parse().unwrap()]);
        assert_eq!(config.sink.kafka.unwrap().brokers, "127.0.0.1:9092");
    }
}
