//! exflow: a NetFlow v5 / v9 / IPFIX collector that detects data exfiltration.
//!
//! The data path, one module per stage: `source` (UDP sockets, capture files) -> `wire`
//! (zero-copy views) and `decode` (stateful decoder) -> `flow` (sharded conversation
//! tables) -> `detect` (rules on event time) -> `sink` (JSON lines, Kafka).

pub mod alloc;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod detect;
pub mod enrich;
pub mod flow;
pub mod pipeline;
mod prefetch;
pub mod scaleout;
pub mod sink;
pub mod source;
/// Test tooling, not the product: the record mixes `exflow loadgen` and the benchmarks send
/// (the `loadgen` feature, on by default; absent from `--no-default-features`).
#[cfg(any(test, feature = "loadgen"))]
pub mod synth;
pub mod telemetry;
pub mod time;
pub mod wire;
