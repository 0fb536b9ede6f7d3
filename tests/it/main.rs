//! exflow's integration tests, one binary (see Cargo.toml): real exporters' captures
//! through the real decoder, the CLI as a user runs it, and the pipeline end to end.

mod alerts_to_kafka;
mod cli;
mod clock;
mod daemon;
mod decode;
mod eval;
mod fold;
mod harness;
mod kafka_faults;
mod loadgen;
mod memory;
mod metrics_endpoint;
mod replay;
mod scaleout;
mod scenarios;
mod sflow;
mod support;
mod vendors;
