//! cli: the subcommands, parsed into plain data by clap, then handed to the library.

mod decode;
mod replay;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// exflow: a NetFlow v5 / v9 / IPFIX collector that detects data exfiltration.
#[derive(Debug, Parser)]
#[command(name = "exflow", version, about, propagate_version = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode the NetFlow/IPFIX datagrams in capture files and print every flow record.
    ///
    /// Reads pcap and pcapng (Ethernet, VLAN, Linux SLL/SLL2, raw IP), takes every UDP
    /// payload on any port, recognises NetFlow v5, v9 and IPFIX by their version field and
    /// keeps template state per exporter as the daemon does. Records go to stdout, one per
    /// line; a summary goes to stderr.
    Decode(DecodeArgs),
    /// Run the whole pipeline over capture files on event time and print alerts.
    ///
    /// Decodes every NetFlow/IPFIX datagram in the captures, stitches records into
    /// conversations, runs the detection rules on the exporters' clocks and flushes all
    /// state at the end. Alerts go to stdout as JSON lines (or to `sink.file`); a summary
    /// goes to stderr. The same datagrams give the same alerts as the live daemon.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub shared: exflow::config::SharedArgs,
    /// Flow-table shards (the daemon uses one per worker); alerts do not depend on it.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub shards: usize,
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
