//! source: where datagrams come from, the front of the data path: capture files for
//! `decode` and `replay`, UDP sockets for the daemon.

pub mod batch;
pub mod capture;
mod config;
pub mod udp;

pub use config::SourceConfig;
