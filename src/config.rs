//! config: the whole configuration tree, read from TOML (`--config FILE`), overlaid with
//! command-line flags and their `EXFLOW_*` environment twins, then validated into the
//! objects the pipeline uses. Every key has a documented default, so an empty file (or no
//! file) runs; unknown keys are errors that name their path.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::decode::DecoderLimits;
pub use crate::detect::low_and_slow::LowAndSlowConfig;
pub use crate::detect::profile::{EgressAnomalyConfig, ProfileConfig, RoleChangeConfig};
pub use crate::detect::spread_egress::SpreadEgressConfig;
use crate::enrich::CountryCode;
pub use crate::sink::kafka::{FlowsFormat, KafkaConfig};

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
        }
    }
}

/// The daemon's receive side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `SO_RCVBUF` asked for on each socket; the kernel caps it at `net.core.rmem_max`.
    pub receive_buffer_bytes: usize,
    /// How often (wall clock) templates and sampling state are saved to `state_file`.
    pub state_save_interval_s: u64,
    /// Receive workers: threads that each own a socket per listen address (SO_REUSEPORT;
    /// the kernel keeps each exporter on one of them, so its templates stay with one
    /// decoder) and decode what arrives there.
    pub workers: usize,
    /// The exporters accepted (networks; RFC 7011 section 11: a collector should accept
    /// only known exporters). Datagrams from any other address are dropped and counted
    /// (`exflow_source_rejected_datagrams_total`) before decoding. Empty: every sender.
    pub exporters: Vec<IpNet>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            receive_buffer_bytes: 32 << 20,
            state_save_interval_s: 60,
            workers: 1,
            exporters: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoipConfig {
    /// MaxMind GeoIP2/GeoLite2 Country (or City) databases, consulted first.
    pub country_db: Vec<PathBuf>,
    /// A MaxMind ASN database, for destinations whose exporter sends no AS numbers.
    pub asn_db: Option<PathBuf>,
    /// Fall back to the embedded geo-whois-asn-country database.
    pub embedded: bool,
}

impl Default for GeoipConfig {
    fn default() -> Self {
        GeoipConfig {
            country_db: Vec::new(),
            asn_db: None,
            embedded: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSection {
    /// 1-in-N rate for exporters that announce none. Unset: counters are taken as they are.
    pub default_rate: Option<u32>,
    /// Per-exporter rates that win over what the exporter announces.
    pub overrides: BTreeMap<IpAddr, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// Conversations tracked at most; beyond it the longest-idle are evicted (counted).
    pub max_conversations: usize,
    /// Memory the conversation tables may take, at the measured 120 bytes per tracked
    /// conversation (see README): the stricter of this and `max_conversations` applies.
    pub max_memory_bytes: u64,
    /// Records of the same 5-tuple that start within this long (event time) after the
    /// conversation's last activity are stitched into it.
    pub idle_timeout_s: u64,
    /// How late an exporter may deliver a record: one that ended up to this long before
    /// its exporter's clock (the latest flow end that exporter sent) still feeds its
    /// conversation and the rules' windows; later ones are counted and dropped
    /// (`exflow_flow_late_dropped_records_total`). Flow caches export long flows at their
    /// active timeout and short ones when the cache flushes: an hour is normal. A
    /// conversation ends when idle for `idle_timeout_s + max_lateness_s`, and the rules
    /// keep their windows that much longer. (Was `late_records_s`, still read.)
    #[serde(alias = "late_records_s")]
    pub max_lateness_s: u64,
    /// A record dated more than this after its datagram was received (wall clock live,
    /// capture time in a replay) is not believed: counted and dropped
    /// (`exflow_flow_clock_skewed_records_total`).
    pub max_clock_skew_s: u64,
    /// How often (event time) expiry and windowed rules run.
    pub tick_s: u64,
    /// Flow-table shard threads, each with its slice of the table (by inside host) and its
    /// rules' state, fed by the receive workers through bounded queues. 0: the one receive
    /// worker runs the table and the rules itself, with no hand-over (the fastest on a
    /// machine of a few cores; needs `source.workers = 1`).
    pub shards: usize,
    /// Record batches that may wait for each shard; a receive worker that finds the queue
    /// full drops the batch and counts it (`exflow_flow_queue_dropped_records_total`).
    pub queue_batches: usize,
}

/// Bytes one tracked conversation takes in the table at most, measured from 7 to 10
/// million (`cargo bench --bench flow_memory`): a 104-byte slab entry, its 4-byte handle in
/// the index at the index's load factor, and its 4-byte link in the timer wheel.
pub const BYTES_PER_CONVERSATION: u64 = 120;

impl FlowConfig {
    /// The conversations the tables may hold: `max_conversations`, or fewer when
    /// `max_memory_bytes` says so.
    pub fn conversation_limit(&self) -> usize {
        let by_memory =
            usize::try_from(self.max_memory_bytes / BYTES_PER_CONVERSATION).unwrap_or(usize::MAX);
        self.max_conversations.min(by_memory).max(1)
    }
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_conversations: 2_000_000,
            max_memory_bytes: 1 << 30,
            idle_timeout_s: 1800,
            max_lateness_s: 3600,
            max_clock_skew_s: 600,
            tick_s: 60,
            shards: 0,
            queue_batches: 256,
        }
    }
}

/// Traffic that is never alerted on: any match allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowList {
    /// Outside (or inside) networks.
    pub cidrs: Vec<IpNet>,
    /// Outside autonomous systems.
    pub asns: Vec<u32>,
    /// Outside countries.
    pub countries: Vec<CountryCode>,
    /// Outside ports.
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Memory each rule's per-key state (windows, series, pairs) may take, over all shards.
    /// A rule at its bound evicts its stalest keys and counts them in
    /// `exflow_detect_state_dropped_total{rule=...}`.
    pub max_state_bytes: u64,
    pub long_lived_foreign: LongLivedForeignConfig,
    pub bulk_egress: BulkEgressConfig,
    pub new_destination: NewDestinationConfig,
    pub beacon: BeaconConfig,
    pub dns_tunnel: DnsTunnelConfig,
    pub watchlist: WatchlistConfig,
    /// The per-host profiles `role_change` and `egress_anomaly` judge hosts by.
    pub profile: ProfileConfig,
    pub role_change: RoleChangeConfig,
    pub egress_anomaly: EgressAnomalyConfig,
    pub spread_egress: SpreadEgressConfig,
    pub low_and_slow: LowAndSlowConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            max_state_bytes: 64 << 20,
            long_lived_foreign: LongLivedForeignConfig::default(),
            bulk_egress: BulkEgressConfig::default(),
            new_destination: NewDestinationConfig::default(),
            beacon: BeaconConfig::default(),
            dns_tunnel: DnsTunnelConfig::default(),
            watchlist: WatchlistConfig::default(),
            profile: ProfileConfig::default(),
            role_change: RoleChangeConfig::default(),
            egress_anomaly: EgressAnomalyConfig::default(),
            spread_egress: SpreadEgressConfig::default(),
            low_and_slow: LowAndSlowConfig::default(),
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkEgressConfig {
    pub enabled: bool,
    /// Upload from one inside host to one outside address within `window_s`.
    pub min_bytes_out: u64,
    pub window_s: u64,
    pub allow: AllowList,
}

impl Default for BulkEgressConfig {
    fn default() -> Self {
        BulkEgressConfig {
            enabled: true,
            min_bytes_out: 100_000_000,
            window_s: 3600,
            allow: AllowList::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewDestinationConfig {
    pub enabled: bool,
    /// Event time from the first record during which each host's usual countries and
    /// networks are learned.
    pub learning_s: u64,
    /// Upload to a never-seen country or ASN that is reported after learning.
    pub min_bytes_out: u64,
    /// Hosts whose destinations are remembered at most (the rest are not baselined).
    pub max_hosts: usize,
    pub allow: AllowList,
}

impl Default for NewDestinationConfig {
    fn default() -> Self {
        NewDestinationConfig {
            enabled: true,
            learning_s: 24 * 3600,
            min_bytes_out: 1_000_000,
            max_hosts: 200_000,
            allow: AllowList::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeaconConfig {
    pub enabled: bool,
    /// Connections (or, in one quiet flow, packets) needed before a score is given.
    pub min_occurrences: u32,
    /// Regularity score (0..1) at or above which a beacon is reported.
    pub score_threshold: f64,
    /// Shortest median interval between connections, or between packets of one flow, that
    /// can be a beacon: faster is interactive or bulk traffic.
    pub quiet_min_interval_s: u64,
    /// Skip well-known keepalive services (Apple and Google push, VPN endpoints, ICMP
    /// echo: see `detect::keepalive`), whose timers are regular by design.
    pub skip_keepalive_services: bool,
    pub allow: AllowList,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        BeaconConfig {
            enabled: true,
            min_occurrences: 20,
            score_threshold: 0.8,
            quiet_min_interval_s: 10,
            skip_keepalive_services: true,
            // NTP clients poll servers like clockwork; a beacon on port 123 needs it removed.
            allow: AllowList {
                ports: vec![123],
                ..AllowList::default()
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsTunnelConfig {
    pub enabled: bool,
    pub window_s: u64,
    /// Volume: bytes sent to one outside resolver within the window...
    pub min_bytes_out: u64,
    /// ...or queries (packets) sent within the window...
    pub min_queries: u64,
    /// ...or at least `min_queries_for_ratio` queries averaging this many bytes (long names).
    pub min_bytes_per_query: u64,
    pub min_queries_for_ratio: u64,
    /// Longer windows beside `window_s`, for slow tunnels (a query a second for hours),
    /// each with its own thresholds (the same `min_bytes_per_query`).
    pub slow_windows: Vec<DnsSlowWindow>,
    pub allow: AllowList,
}

/// A longer `dns_tunnel` window and its thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSlowWindow {
    pub window_s: u64,
    pub min_bytes_out: u64,
    pub min_queries: u64,
    pub min_queries_for_ratio: u64,
}

impl DnsTunnelConfig {
    /// The configuration of each window: this one, then one per `slow_windows` entry.
    pub fn windows(&self) -> Vec<DnsTunnelConfig> {
        let mut windows = vec![self.clone()];
        windows.extend(self.slow_windows.iter().map(|slow| DnsTunnelConfig {
            window_s: slow.window_s,
            min_bytes_out: slow.min_bytes_out,
            min_queries: slow.min_queries,
            min_queries_for_ratio: slow.min_queries_for_ratio,
            slow_windows: Vec::new(),
            ..self.clone()
        }));
        windows
    }
}

impl Default for DnsTunnelConfig {
    fn default() -> Self {
        DnsTunnelConfig {
            enabled: true,
            window_s: 600,
            min_bytes_out: 100_000,
            min_queries: 500,
            min_bytes_per_query: 160,
            min_queries_for_ratio: 100,
            // Rates the 10 minutes (500 queries, 100 kB) do not see: an hour at 0.4
            // queries a second or 400 kB; a day at 0.17 a second or 4 MB.
            slow_windows: vec![
                DnsSlowWindow {
                    window_s: 3600,
                    min_bytes_out: 400_000,
                    min_queries: 1_500,
                    min_queries_for_ratio: 300,
                },
                DnsSlowWindow {
                    window_s: 86_400,
                    min_bytes_out: 4_000_000,
                    min_queries: 15_000,
                    min_queries_for_ratio: 2_000,
                },
            ],
            allow: AllowList::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchlistConfig {
    pub enabled: bool,
    /// Traffic (both directions) between a host and a listed destination before it is reported.
    pub min_bytes: u64,
    pub allow: AllowList,
}

impl Default for WatchlistConfig {
    fn default() -> Self {
        WatchlistConfig {
            enabled: true,
            min_bytes: 100_000,
            allow: AllowList::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// After an alert, the same (rule, host, destination, step) stays quiet this long.
    pub cooldown_s: u64,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        SuppressionConfig {
            cooldown_s: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Alerts as JSON lines to this file (appended); default stdout.
    pub file: Option<PathBuf>,
    pub kafka: Option<KafkaConfig>,
}

/// The flags every pipeline command shares (`replay`, `run`, `check-config`); each has an
/// `EXFLOW_*` environment twin and wins over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SharedArgs {
    /// TOML configuration file.
    #[arg(long, env = "EXFLOW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Inside network (repeatable; replaces the config's `inside`).
    #[arg(
        long = "inside",
        env = "EXFLOW_INSIDE",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub inside: Vec<IpNet>,
    /// Home country, ISO 3166 alpha-2 (repeatable; replaces `home_countries`).
    #[arg(
        long = "home-country",
        env = "EXFLOW_HOME_COUNTRY",
        value_delimiter = ',',
        value_name = "CC"
    )]
    pub home_countries: Vec<CountryCode>,
    /// Watch-listed country (repeatable; replaces `watch_countries`).
    #[arg(
        long = "watch-country",
        env = "EXFLOW_WATCH_COUNTRY",
        value_delimiter = ',',
        value_name = "CC"
    )]
    pub watch_countries: Vec<CountryCode>,
    /// UDP address to receive on (repeatable; replaces `listen`).
    #[arg(
        long = "listen",
        env = "EXFLOW_LISTEN",
        value_delimiter = ',',
        value_name = "ADDR:PORT"
    )]
    pub listen: Vec<SocketAddr>,
    /// Prometheus metrics address (replaces `metrics_listen`).
    #[arg(long, env = "EXFLOW_METRICS_LISTEN", value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Kafka bootstrap brokers, comma-separated (sets `sink.kafka.brokers`).
    #[arg(long, env = "EXFLOW_KAFKA_BROKERS", value_name = "HOST:PORT,...")]
    pub kafka_brokers: Option<String>,
    /// Kafka topic for alerts (sets `sink.kafka.topic`).
    #[arg(long, env = "EXFLOW_KAFKA_TOPIC", value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
}

impl Config {
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
    pub fn load(args: &SharedArgs) -> anyhow::Result<Config> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file '{}'", path.display()))?;
                Config::from_toml(&text, &format!("'{}'", path.display()))?
            }
            None => Config::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, args: &SharedArgs) {
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
        if args.kafka_brokers.is_some() || args.kafka_topic.is_some() {
            let kafka = self.sink.kafka.get_or_insert_with(|| KafkaConfig::new(""));
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
            if kafka.queue_alerts == 0 || kafka.spool_max_bytes == 0 {
                problems.push(
                    "sink.kafka.queue_alerts, sink.kafka.spool_max_bytes: must be at least 1"
                        .to_string(),
                );
            }
        }
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

/// Reads a threat-intel file: one CIDR or address per line, `#` comments.
pub fn load_threat_intel(path: &Path) -> anyhow::Result<crate::enrich::NetSet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read threat_intel_file '{}'", path.display()))?;
    crate::enrich::NetSet::parse_list(&text)
        .with_context(|| format!("threat_intel_file '{}'", path.display()))
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
        config.sink.kafka = Some(KafkaConfig {
            topic: "bad topic".into(),
            ..KafkaConfig::new("kafka1")
        });
        let text = config.validate().unwrap_err().to_string();
        assert!(text.contains("rules.long_lived_foreign.ladder_s"), "{text}");
        assert!(text.contains("sink.kafka.brokers: 'kafka1'"), "{text}");
        assert!(text.contains("sink.kafka.topic: 'bad topic'"), "{text}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = SharedArgs {
            inside: vec!["192.0.2.0/24".parse().unwrap()],
            home_countries: vec!["DE".parse().unwrap()],
            kafka_brokers: Some("127.0.0.1:9092".into()),
            ..SharedArgs::default()
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
