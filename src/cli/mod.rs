//! cli: the subcommands, parsed into plain data by clap, then handed to the library.

mod check_config;
mod collect;
mod decode;
mod detect;
#[cfg(feature = "loadgen")]
mod loadgen;
mod replay;
mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use exflow::config::{Config, Overrides};
use exflow::enrich::CountryCode;
use ipnet::IpNet;
use std::net::SocketAddr;

/// exflow: a NetFlow v5 / v9 / IPFIX collector that detects data exfiltration.
#[derive(Debug, Parser)]
#[command(name = "exflow", version, about, propagate_version = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode the NetFlow/IPFIX/sFlow datagrams in capture files and print every flow record.
    ///
    /// Reads pcap and pcapng (Ethernet, VLAN, Linux SLL/SLL2, raw IP), takes every UDP
    /// payload on any port, recognises NetFlow v5, v9 and IPFIX by their version field and
    /// keeps template state per exporter as the daemon does. Records go to stdout, one per
    /// line; a summary goes to stderr.
    Decode(DecodeArgs),
    /// Run the whole pipeline over capture files on event time and print alerts.
    ///
    /// Decodes every NetFlow/IPFIX/sFlow datagram in the captures, stitches records into
    /// conversations, runs the detection rules on the exporters' clocks and flushes all
    /// state at the end. Alerts go to stdout as JSON lines (or to `sink.file`); a summary
    /// goes to stderr. The same datagrams give the same alerts as the live daemon.
    Replay(ReplayArgs),
    /// Run the collector daemon: receive NetFlow/IPFIX/sFlow on UDP, detect, emit alerts.
    ///
    /// Listens on 0.0.0.0:2055, 0.0.0.0:4739 and 0.0.0.0:6343 (sFlow) by default (any
    /// protocol on any port), serves Prometheus metrics on 127.0.0.1:9102, and writes
    /// alerts as JSON lines to stdout (or `sink.file`, or Kafka). SIGTERM/SIGINT drain and stop; SIGHUP reloads the
    /// threat-intel file.
    Run(RunArgs),
    /// Receive, decode and orient NetFlow/IPFIX/sFlow on UDP and publish every record to
    /// the flows topic, partitioned by inside host, with this collector's clock.
    ///
    /// The front half of `run` on a machine of its own: `exflow detect` members of a
    /// consumer group run the back half. The flows topic (--flows-topic, default
    /// exflow.flows.v1) must exist; its partitions are the slices of inside hosts.
    /// SIGTERM/SIGINT drain the sockets, publish the end of this collector's input and stop.
    Collect(CollectArgs),
    /// Join the detectors' consumer group and detect on the partitions of the flows topic
    /// this member owns; alerts go to the alert sink (Kafka through the spool).
    ///
    /// Each owned partition gets its own flow table and rules, run on the partition's clock
    /// (the lowest recent collector watermark). A partition taken over is rebuilt from its
    /// first offset; alerts below the committed offset are not sent again.
    /// SIGTERM/SIGINT deliver the last alerts, commit and stop.
    Detect(DetectArgs),
    /// Validate the configuration and print it as exflow understands it.
    CheckConfig(CheckConfigArgs),
    /// Load-test a running exflow: send realistic NetFlow/IPFIX from many simulated
    /// exporters over loopback and report what it received, decoded and dropped.
    #[cfg(feature = "loadgen")]
    Loadgen(LoadgenArgs),
}

#[cfg(feature = "loadgen")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    V5,
    V9,
    Ipfix,
    /// sFlow v5, one flow sample per record.
    Sflow,
}

#[cfg(feature = "loadgen")]
#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// Where exflow listens (loopback only).
    #[arg(long, default_value = "127.0.0.1:4739", value_name = "ADDR:PORT")]
    pub target: std::net::SocketAddr,
    #[arg(long, value_enum, default_value_t = Protocol::Ipfix)]
    pub protocol: Protocol,
    /// Simulated exporters, each from its own 127.x address.
    #[arg(long, default_value_t = 16)]
    pub exporters: u16,
    /// Records per second (default: flat out).
    #[arg(long, value_name = "RECORDS_PER_S")]
    pub rate: Option<u64>,
    /// How long to send, in seconds.
    #[arg(long = "duration", default_value_t = 10.0, value_name = "SECONDS")]
    pub duration_s: f64,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Re-send templates every this many datagrams per exporter.
    #[arg(long, default_value_t = 64)]
    pub template_every: u32,
    /// exflow's metrics address, to report what it received and dropped.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Step the rate up and report the highest with loss below --max-loss.
    #[arg(long)]
    pub find_max: bool,
    /// Loss allowed by --find-max (a fraction: 0.0001 = 0.01%).
    #[arg(long, default_value_t = 0.0001)]
    pub max_loss: f64,
    /// Inject exfiltration scenario NAME this many SECONDS into the run (repeatable), from
    /// one simulated exporter, amid its background: `bulk_egress` (an inside host uploads
    /// 300 MB to a foreign address) or `long_lived_foreign` (an hour-long connection to a
    /// foreign address that sent 5 MB), each caught by the rule of its name with the default
    /// configuration. Reports each one's detection latency, read from the rule's alert
    /// counter at --metrics (or from the alerts topic with --kafka-brokers); a scenario not
    /// detected makes the command fail.
    #[arg(
        long = "scenario",
        value_name = "NAME@SECONDS",
        conflicts_with = "find_max"
    )]
    pub scenarios: Vec<loadgen::harness::Planned>,
    /// Read the scenarios' alerts from the alerts topic at these brokers instead of the
    /// counters at --metrics: for `exflow collect` as the target, with `exflow detect`
    /// members raising the alerts; the latency is then from datagram to alert on the topic.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub kafka_brokers: Option<String>,
    /// The alerts topic read with --kafka-brokers.
    #[arg(
        long,
        default_value = "exflow.alerts.v1",
        value_name = "TOPIC",
        requires = "kafka_brokers"
    )]
    pub kafka_topic: String,
    /// How long after the run a scenario's alert is waited for before it counts as missed.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub detect_timeout: f64,
    /// Also write the report as one JSON object to FILE (sent, received and dropped
    /// counters, each scenario's outcome), written before a missed scenario fails the run.
    #[arg(long, value_name = "FILE", conflicts_with = "find_max")]
    pub report_json: Option<PathBuf>,
}

/// The flags every pipeline command shares (`replay`, `run`, `collect`, `detect`,
/// `check-config`), parsed into the configuration's [`Overrides`]; each has an
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
    /// Kafka topic of the flow records (sets `sink.kafka.flows_topic`): what `run`
    /// publishes every decoded record to, `collect` publishes to and `detect` reads
    /// (default for those two: exflow.flows.v1).
    #[arg(long, env = "EXFLOW_FLOWS_TOPIC", value_name = "TOPIC")]
    pub flows_topic: Option<String>,
    /// Kafka topic of each alert as an OCSF Detection Finding (sets
    /// `sink.kafka.ocsf_topic`; off when unset), e.g. exflow.findings.ocsf.v1.
    #[arg(long, env = "EXFLOW_OCSF_TOPIC", value_name = "TOPIC")]
    pub ocsf_topic: Option<String>,
}

impl SharedArgs {
    /// The configuration file (when given) with these flags laid over it, validated.
    pub fn load(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            inside: self.inside.clone(),
            home_countries: self.home_countries.clone(),
            watch_countries: self.watch_countries.clone(),
            listen: self.listen.clone(),
            metrics_listen: self.metrics_listen,
            kafka_brokers: self.kafka_brokers.clone(),
            kafka_topic: self.kafka_topic.clone(),
            flows_topic: self.flows_topic.clone(),
            ocsf_topic: self.ocsf_topic.clone(),
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub shared: SharedArgs,
    /// Once the sockets are bound, write where to this file as JSON: `{"listen":
    /// ["ADDR:PORT", ...], "metrics_listen": "ADDR:PORT"}`, ports given as 0 resolved.
    #[arg(long, env = "EXFLOW_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    #[command(flatten)]
    pub shared: SharedArgs,
    /// This collector's name in its watermarks (sets `scaleout.collector_id`; default the
    /// host name).
    #[arg(long, env = "EXFLOW_COLLECTOR_ID", value_name = "ID")]
    pub collector_id: Option<String>,
    /// Once the sockets are bound, write where to this file as JSON (as `run` does).
    #[arg(long, env = "EXFLOW_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    #[command(flatten)]
    pub shared: SharedArgs,
    /// The detectors' consumer group (sets `scaleout.group`).
    #[arg(long, env = "EXFLOW_GROUP", value_name = "GROUP")]
    pub group: Option<String>,
    /// This member's static id in the group (sets `scaleout.instance_id`; default the host
    /// name): unique per detector, the same across its restarts.
    #[arg(long, env = "EXFLOW_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,
    /// Once the metrics listener is bound, write where to this file as JSON (`listen` is
    /// empty: a detector receives no UDP).
    #[arg(long, env = "EXFLOW_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub shared: SharedArgs,
    /// Also connect to the Kafka broker and check that the topic is there.
    #[arg(long)]
    pub connect: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub shared: SharedArgs,
    /// Flow-table shards (the daemon uses one per worker); alerts do not depend on it.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub shards: usize,
    /// Alerts as exflow's JSON (`schemas/alert.schema.json`) or as OCSF 1.3.0 Detection
    /// Findings (`schemas/ocsf-detection-finding.v1.md`).
    #[arg(long, value_enum, default_value_t = exflow::sink::AlertFormat::Json)]
    pub format: exflow::sink::AlertFormat,
    /// Capture files (pcap or pcapng), replayed in order through one pipeline.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Output format: JSON lines with GoFlow2's field names, or an aligned table.
    #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
    pub format: OutputFormat,
    /// Capture files (pcap or pcapng), read in order with one decoder state.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Jsonl,
    Table,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Decode(decode) => decode::run(decode),
        Command::Replay(replay) => replay::run(replay),
        Command::Run(args) => run::run(args),
        Command::Collect(args) => collect::run(args),
        Command::Detect(args) => detect::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        #[cfg(feature = "loadgen")]
        Command::Loadgen(args) => loadgen::run(args),
    }
}

/// A closed stdout (`exflow decode x.pcap | head`) ends the program quietly.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
