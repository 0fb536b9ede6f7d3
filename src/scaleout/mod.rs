//! scaleout: the pipeline across machines on Kafka. `exflow collect` runs the front half
//! (receive, decode, orient, exporters' clocks) and publishes every oriented record to the
//! flows topic, partitioned by inside host, with its clock as watermarks; `exflow detect`
//! runs the back half (flow table, rules) per partition as a member of a consumer group.
//! Files: `config` (the `[scaleout]` section), `encoding` (the flows-topic messages),
//! `clock` (a partition's event clock from the watermarks), `checkpoint` (the state
//! topic's records), `collect`, `detect`, `metrics`.

pub mod checkpoint;
pub mod clock;
pub mod collect;
pub mod config;
pub mod detect;
pub mod encoding;
pub mod metrics;

pub use config::ScaleoutConfig;
