//! cli: the subcommands, parsed into plain data by clap, then handed to the library.

mod decode;

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
