//! exflow: a NetFlow v5 / v9 / IPFIX collector that detects data exfiltration.
//!
//! The data path, one module per stage: `source` (UDP sockets, capture files) -> `wire`
//! (zero-copy views) and `decode` (stateful decoder) -> `flow` (sharded conversation
//! tables) -> `detect` (rules on event time) -> `sink` (JSON lines, Kafka).

pub mod decode;
pub mod enrich;
pub mod source;
pub mod synth;
pub mod time;
pub mod wire;
