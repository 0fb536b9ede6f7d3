//! exflow's integration tests, one binary (see Cargo.toml): real exporters' captures
//! through the real decoder, the CLI as a user runs it, and the pipeline end to end.

mod cli;
mod decode;
mod replay;
mod support;
