//! enrich: what the detectors know about an endpoint (country, ASN, inside or not, listed or not).
//!
//! Everything here is built once at startup from config and files, then only read: lookups take
//! `&self`, allocate nothing and are safe to share between flow-table shards behind an `Arc`.
//! - [`geo`]: country (embedded database, optionally MaxMind files) and ASN (MaxMind file).
//! - [`netset`]: sets of CIDRs for inside networks and allow- and watch-lists.
//! - [`endpoint`]: the `Enricher` that combines them into a conversation's `Destination`.

pub mod endpoint;
pub mod geo;
pub mod netset;

pub use endpoint::{Allow, AllowList, Destination, EndpointSettings, Enricher, load_threat_intel};
pub use geo::{CountryCode, Geo, GeoSources};
pub use netset::NetSet;
