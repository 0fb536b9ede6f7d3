//! enrich: the `Enricher`, built once from the operator's settings, answering per conversation what the
//! detectors need to know about its endpoints: inside or not, country, ASN, foreign or not,
//! watch-listed or not, allow-listed or not.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{CountryCode, Geo, NetSet};

/// Traffic that is never alerted on: any match allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowList {
    /// Outside (or inside) networks.
    pub cidrs: Vec<IpNet>,
    /// Outside autonomous systems.
    pub asns: Vec<u32>,
    /// Outside countries.
    pub countries: Vec<CountryCode>,
    /// Outside ports.
    pub ports: Vec<u16>,
}

/// Reads a threat-intel file: one CIDR or address per line, `#` comments.
pub fn load_threat_intel(path: &Path) -> anyhow::Result<NetSet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read threat_intel_file '{}'", path.display()))?;
    NetSet::parse_list(&text).with_context(|| format!("threat_intel_file '{}'", path.display()))
}

/// An allow-list compiled for lookups.
#[derive(Debug, Clone)]
pub struct Allow {
    /// Nothing is listed: every check is false without a look at the lists (the default,
    /// checked by several rules per record).
    empty: bool,
    nets: NetSet,
    asns: Box<[u32]>,
    countries: Box<[CountryCode]>,
    ports: Box<[u16]>,
}

impl Default for Allow {
    fn default() -> Self {
        Allow::new(&AllowList::default())
    }
}

impl Allow {
    pub fn new(list: &AllowList) -> Self {
        Allow {
            empty: list.cidrs.is_empty()
                && list.asns.is_empty()
                && list.countries.is_empty()
                && list.ports.is_empty(),
            nets: NetSet::from_nets(list.cidrs.iter().copied()),
            asns: list.asns.clone().into(),
            countries: list.countries.clone().into(),
            ports: list.ports.clone().into(),
        }
    }

    /// Whether the conversation between `inside` and this destination is allowed: either
    /// address in the networks, or the outside's AS, country or port listed.
    pub fn allows(
        &self,
        inside: IpAddr,
        outside: IpAddr,
        outside_port: u16,
        destination: &Destination,
    ) -> bool {
        !self.empty
            && (self.nets.contains(outside)
                || self.nets.contains(inside)
                || destination
                    .asn
                    .is_some_and(|asn| self.asns.contains(&asn.get()))
                || destination
                    .country
                    .is_some_and(|cc| self.countries.contains(&cc))
                || self.ports.contains(&outside_port))
    }
}

/// What is known about a conversation's outside end. `Copy`, kept in the conversation so
/// it is looked up once, not per record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Destination {
    pub country: Option<CountryCode>,
    /// Non-zero: AS 0 is reserved, so `None` costs no extra bytes in every conversation.
    pub asn: Option<NonZeroU32>,
    /// The country is known and not home.
    pub foreign: bool,
    /// A watch-listed country or a threat-intel network.
    pub watched: bool,
    /// The global allow-list matches: no rule looks at this conversation.
    pub allowed: bool,
}

/// Endpoint facts for the whole pipeline; cheap to clone (shared behind `Arc`s).
#[derive(Debug, Clone)]
pub struct Enricher {
    geo: Arc<Geo>,
    inside: NetSet,
    home: Box<[CountryCode]>,
    watch: Box<[CountryCode]>,
    threat_intel: Arc<NetSet>,
    resolvers: Box<[IpAddr]>,
    allow: Allow,
}

/// What the operator says about its own networks (the configuration's top-level keys).
#[derive(Debug, Clone, Copy)]
pub struct EndpointSettings<'a> {
    pub inside: &'a [IpNet],
    pub home_countries: &'a [CountryCode],
    pub watch_countries: &'a [CountryCode],
    pub resolvers: &'a [IpAddr],
    pub allow: &'a AllowList,
}

impl Enricher {
    pub fn new(geo: Arc<Geo>, settings: &EndpointSettings<'_>, threat_intel: NetSet) -> Enricher {
        Enricher {
            geo,
            inside: NetSet::from_nets(settings.inside.iter().copied()),
            home: settings.home_countries.into(),
            watch: settings.watch_countries.into(),
            threat_intel: Arc::new(threat_intel),
            resolvers: settings.resolvers.into(),
            allow: Allow::new(settings.allow),
        }
    }

    /// Replaces the threat-intel networks (SIGHUP); shared by every shard's enricher.
    pub fn set_threat_intel(&mut self, networks: Arc<NetSet>) {
        self.threat_intel = networks;
    }

    pub fn is_inside(&self, address: IpAddr) -> bool {
        self.inside.contains(address)
    }

    pub fn is_resolver(&self, address: IpAddr) -> bool {
        self.resolvers.contains(&address)
    }

    pub fn country(&self, address: IpAddr) -> Option<CountryCode> {
        self.geo.country(address)
    }

    /// The facts about `outside` as seen from `inside`. `record_asn` is the AS number the
    /// exporter sent (0: none), preferred over the ASN database.
    pub fn destination(
        &self,
        inside: IpAddr,
        outside: IpAddr,
        outside_port: u16,
        record_asn: u32,
    ) -> Destination {
        let country = self.geo.country(outside);
        let asn =
            NonZeroU32::new(record_asn).or_else(|| self.geo.asn(outside).and_then(NonZeroU32::new));
        let foreign = match country {
            None => false,
            Some(cc) if !self.home.is_empty() => !self.home.contains(&cc),
            // No home configured: foreign means another country than the inside host's;
            // for an inside host without one (private space), any known country.
            Some(cc) => self.geo.country(inside) != Some(cc),
        };
        let watched = country.is_some_and(|cc| self.watch.contains(&cc))
            || self.threat_intel.contains(outside);
        let mut destination = Destination {
            country,
            asn,
            foreign,
            watched,
            allowed: false,
        };
        destination.allowed = self
            .allow
            .allows(inside, outside, outside_port, &destination);
        destination
    }
}
