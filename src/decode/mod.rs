//! decode: the stateful decoder. Datagram bytes in, `FlowRecord`s out: recognises NetFlow v5,
//! v9, IPFIX and sFlow v5 by the version field, keeps template, clock, sampler and sequence state per
//! exporter and observation domain, holds data that arrives before its template, and counts
//! every record it could not decode by why.
//!
//! Synchronous and single-threaded: the daemon gives each worker its own `Decoder` for the
//! exporters it owns, and `exflow decode` / `replay` drive one directly.

pub mod connections;
pub mod directory;
pub mod exporter;
pub mod layout;
pub mod record;
#[cfg(test)]
mod round_trip;
pub mod sflow;
pub mod state;
pub mod stats;

use foldhash::HashMap;
use std::net::IpAddr;

use connections::Connections;
use exporter::{DomainKey, Exporter, PendingSet, SequenceCheck, SequenceUnit};
use layout::{Layout, LayoutError, RecordFacts, TimeUnit};
pub use record::{FlowKind, FlowRecord};
pub use stats::{DecodeCounters, DecodeError, ErrorCounts};

use crate::wire::template::{Dialect, TemplateKind, TemplateRecords};
use crate::wire::{Version, ipfix, netflow_v5, netflow_v9};

/// Bounds on everything an exporter controls. Hitting one drops or evicts, and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderLimits {
    pub max_exporters: usize,
    pub max_templates_per_exporter: usize,
    pub max_fields_per_template: usize,
    pub max_pending_sets_per_exporter: usize,
    pub max_pending_bytes_per_exporter: usize,
    /// Flows whose earlier reports are remembered, over all exporters, to count running
    /// totals and firewall events once (see `connections`); about 100 bytes each.
    pub max_tracked_connections: usize,
    /// Interfaces whose sFlow counters are kept per agent (for the interface metrics).
    pub max_sflow_interfaces_per_agent: usize,
    /// Interface names and descriptions from options data (IE 82/83) kept over all
    /// exporters, each at most 2 x 64 bytes of text (about 250 bytes with its key).
    pub max_interface_names: usize,
    /// Take the exporter's address from exporterIPv4Address / exporterIPv6Address (IE
    /// 130/131, in options or data records) instead of the datagram's source, for
    /// datagrams that come through a relay (samplicator, a load balancer). Off by default:
    /// any sender could otherwise claim to be any exporter.
    pub exporter_address_from_options: bool,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        DecoderLimits {
            max_exporters: 4096,
            max_templates_per_exporter: 1024,
            max_fields_per_template: 256,
            max_pending_sets_per_exporter: 64,
            max_pending_bytes_per_exporter: 256 * 1024,
            max_tracked_connections: 262_144,
            max_sflow_interfaces_per_agent: 256,
            max_interface_names: 65_536,
            exporter_address_from_options: false,
        }
    }
}

/// Sampling rates the operator sets: per-exporter overrides win over what the exporter
/// says; the default applies where the exporter says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SamplingConfig {
    pub default_rate: Option<u32>,
    pub overrides: HashMap<IpAddr, u32>,
}

/// The `[sampling]` section: the same rates as the configuration file writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSection {
    /// 1-in-N rate for exporters that announce none. Unset: counters are taken as they are.
    pub default_rate: Option<u32>,
    /// Per-exporter rates that win over what the exporter announces.
    pub overrides: std::collections::BTreeMap<IpAddr, u32>,
}

impl From<&SamplingSection> for SamplingConfig {
    fn from(section: &SamplingSection) -> Self {
        SamplingConfig {
            default_rate: section.default_rate,
            overrides: section.overrides.iter().map(|(a, r)| (*a, *r)).collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecoderConfig {
    pub limits: DecoderLimits,
    pub sampling: SamplingConfig,
}

/// The export header facts a data record needs, kept with held data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    pub kind: FlowKind,
    pub received_ns: u64,
    pub sequence: u32,
    pub domain_id: u32,
    /// Export time from the header, in nanoseconds since the epoch.
    pub export_ns: u64,
    /// NetFlow v9's sysUpTime at export (ms), the base of its relative flow times.
    pub sys_uptime_ms: Option<u32>,
}

/// The stateful NetFlow/IPFIX decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    config: DecoderConfig,
    exporters: HashMap<IpAddr, Exporter>,
    /// Datagrams seen, the clock of the exporters' `last_seen`.
    datagrams: u64,
    /// Counts for exporters no longer tracked (evicted), so totals never go backwards.
    evicted_counters: DecodeCounters,
    /// Running totals and firewall connections already accounted, all exporters.
    connections: Connections,
    /// Interface names held over all exporters (bounded by `max_interface_names`).
    interface_names: usize,
    /// Where the names are shared with the shards, for alerts (`share_interface_names`).
    directory: Option<directory::InterfaceDirectory>,
}

/// The set header (id and length) before each set's body.
const SET_HEADER_LEN: usize = 4;

/// Nanoseconds between the NTP epoch (1900) and the UNIX epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

impl Decoder {
    pub fn new(config: DecoderConfig) -> Self {
        Decoder {
            config,
            ..Decoder::default()
        }
    }

    /// Decodes one datagram from `exporter`, appending its flow records (and any held ones
    /// its templates unlock) to `out`. Returns how many records were appended, or the error
    /// that stopped decoding: records before the error are kept, and every error is counted.
    pub fn decode(
        &mut self,
        exporter: IpAddr,
        received_ns: u64,
        datagram: &[u8],
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, DecodeError> {
        self.datagrams += 1;
        let before = out.len();
        let config = &self.config;
        let state = exporter_entry(
            &mut self.exporters,
            &mut self.evicted_counters,
            &mut self.interface_names,
            self.directory.as_ref(),
            config,
            exporter,
            self.datagrams,
        );
        state.counters.datagrams += 1;
        let result = match Version::of(datagram) {
            Some(Version::NetflowV5 | Version::NetflowV1 | Version::NetflowV7) => {
                decode_v5(state, exporter, received_ns, datagram, out)
            }
            Some(Version::NetflowV9) => decode_templated(
                state,
                config,
                &mut self.connections,
                &mut self.interface_names,
                self.directory.as_ref(),
                self.datagrams,
                exporter,
                received_ns,
                datagram,
                Dialect::V9,
                out,
            ),
            Some(Version::Ipfix) => decode_templated(
                state,
                config,
                &mut self.connections,
                &mut self.interface_names,
                self.directory.as_ref(),
                self.datagrams,
                exporter,
                received_ns,
                datagram,
                Dialect::Ipfix,
                out,
            ),
            Some(Version::Sflow5) => {
                sflow::decode(state, config, exporter, received_ns, datagram, out)
            }
            Some(Version::Unknown(_)) => Err(DecodeError::UnknownVersion),
            None => Err(DecodeError::Truncated),
        };
        let added = out.len() - before;
        state.counters.records += added as u64;
        match result {
            Ok(()) => Ok(added),
            Err(error) => {
                state.counters.errors.add(error);
                Err(error)
            }
        }
    }

    /// Counters summed over all exporters, evicted ones included.
    pub fn totals(&self) -> DecodeCounters {
        let mut total = self.evicted_counters;
        for exporter in self.exporters.values() {
            total.merge(&exporter.counters);
        }
        total
    }

    /// Per-exporter counters, in no particular order.
    pub fn exporters(&self) -> impl Iterator<Item = (IpAddr, &DecodeCounters)> {
        self.exporters
            .iter()
            .map(|(address, e)| (*address, &e.counters))
    }

    /// The latest interface counters of every sFlow agent, in no particular order.
    pub fn sflow_interfaces(&self) -> impl Iterator<Item = (IpAddr, &exporter::InterfaceCounters)> {
        self.exporters
            .iter()
            .flat_map(|(address, e)| e.interfaces.iter().map(move |c| (*address, c)))
    }

    /// The name and description `exporter` (the datagrams' source) announced for
    /// `if_index` in an observation domain (a record's `kind` and
    /// `observation_domain_id`), if it did.
    pub fn interface_name(
        &self,
        exporter: IpAddr,
        domain: (FlowKind, u32),
        if_index: u32,
    ) -> Option<&exporter::InterfaceName> {
        self.exporters
            .get(&exporter)?
            .interface_names
            .get(&(domain, if_index))
            .map(|names| &**names)
    }

    /// `record` (from the datagrams of `exporter`) with the names its exporter gave its
    /// interfaces; no lookup at all while no exporter has announced any.
    pub fn named<'a>(
        &'a self,
        exporter: IpAddr,
        record: &'a FlowRecord,
    ) -> record::NamedRecord<'a> {
        let (in_if, out_if) = if self.interface_names == 0 {
            (None, None)
        } else {
            let domain = (record.kind, record.observation_domain_id);
            (
                self.interface_name(exporter, domain, record.in_if),
                self.interface_name(exporter, domain, record.out_if),
            )
        };
        record::NamedRecord {
            record,
            in_if,
            out_if,
        }
    }

    /// Shares every interface name this decoder holds or learns with `directory` (and
    /// withdraws an exporter's when it is forgotten), for the alerts of the shards.
    pub fn share_interface_names(&mut self, directory: directory::InterfaceDirectory) {
        for (address, exporter) in &self.exporters {
            let published = exporter.published_address(*address);
            for ((domain, if_index), names) in &exporter.interface_names {
                directory.set(published(*domain), *domain, *if_index, names.clone());
            }
        }
        self.directory = Some(directory);
    }

    /// Interface names held, all exporters.
    pub fn interface_name_count(&self) -> usize {
        self.interface_names
    }

    /// Exporters currently tracked.
    pub fn exporter_count(&self) -> usize {
        self.exporters.len()
    }

    /// Flows whose earlier reports are remembered (running totals, firewall connections).
    pub fn tracked_connections(&self) -> usize {
        self.connections.len()
    }

    /// Template records currently held, all exporters.
    pub fn template_count(&self) -> usize {
        self.exporters.values().map(|e| e.template_count).sum()
    }
}

/// Datagrams after which an exporter is no longer on probation in the exporter table.
const PROVEN_DATAGRAMS: u64 = 16;

/// The exporter's state, created on first sight; at `max_exporters` one is forgotten (and
/// counted) to make room: of those that sent fewest datagrams, the least recently heard.
fn exporter_entry<'a>(
    exporters: &'a mut HashMap<IpAddr, Exporter>,
    evicted: &mut DecodeCounters,
    interface_names: &mut usize,
    directory: Option<&directory::InterfaceDirectory>,
    config: &DecoderConfig,
    address: IpAddr,
    now: u64,
) -> &'a mut Exporter {
    if exporters.len() >= config.limits.max_exporters.max(1) && !exporters.contains_key(&address) {
        // Two tiers: exporters still on probation (fewer than PROVEN_DATAGRAMS datagrams,
        // as every spoofed one-off source is) go first, least recently heard first; one
        // that sends steadily is forgotten only when every other is proven too.
        let oldest = exporters
            .iter()
            .min_by_key(|(a, e)| (e.counters.datagrams.min(PROVEN_DATAGRAMS), e.last_seen, **a))
            .map(|(a, _)| *a);
        if let Some((gone_address, gone)) =
            oldest.and_then(|a| exporters.remove(&a).map(|gone| (a, gone)))
        {
            *interface_names -= gone.interface_names.len();
            if let Some(directory) = directory.filter(|_| !gone.interface_names.is_empty()) {
                let published = gone.published_address(gone_address);
                for (domain, _) in &gone.domains {
                    directory.forget(published(*domain));
                }
                directory.forget(gone_address);
            }
            evicted.merge(&gone.counters);
            evicted.errors.add(DecodeError::ExporterEvicted);
        }
    }
    let state = exporters.entry(address).or_default();
    state.last_seen = now;
    state
}

#[allow(clippy::too_many_arguments)]
fn decode_templated(
    exporter: &mut Exporter,
    config: &DecoderConfig,
    connections: &mut Connections,
    interface_names: &mut usize,
    directory: Option<&directory::InterfaceDirectory>,
    datagram_count: u64,
    address: IpAddr,
    received_ns: u64,
    datagram: &[u8],
    dialect: Dialect,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let (header, sets) = match dialect {
        Dialect::V9 => {
            let packet = netflow_v9::Packet::new_checked(datagram)?;
            let header = HeaderInfo {
                kind: FlowKind::NetflowV9,
                received_ns,
                sequence: packet.sequence(),
                domain_id: packet.source_id(),
                export_ns: u64::from(packet.unix_secs()) * 1_000_000_000,
                sys_uptime_ms: Some(packet.sys_uptime()),
            };
            (
                header,
                crate::wire::set::Sets::new(&datagram[netflow_v9::HEADER_LEN..]),
            )
        }
        Dialect::Ipfix => {
            let message = ipfix::Message::new_checked(datagram)?;
            let header = HeaderInfo {
                kind: FlowKind::Ipfix,
                received_ns,
                sequence: message.sequence(),
                domain_id: message.observation_domain_id(),
                export_ns: u64::from(message.export_time()) * 1_000_000_000,
                sys_uptime_ms: None,
            };
            let end = usize::from(message.length());
            (
                header,
                crate::wire::set::Sets::new(&datagram[ipfix::HEADER_LEN..end]),
            )
        }
    };
    let (template_set, options_set) = match dialect {
        Dialect::V9 => (
            netflow_v9::TEMPLATE_SET_ID,
            netflow_v9::OPTIONS_TEMPLATE_SET_ID,
        ),
        Dialect::Ipfix => (ipfix::TEMPLATE_SET_ID, ipfix::OPTIONS_TEMPLATE_SET_ID),
    };
    let key: DomainKey = (header.kind, header.domain_id);
    let limits = config.limits;
    let mut context = DataContext {
        rate_override: config.sampling.overrides.get(&address).copied(),
        default_rate: config.sampling.default_rate,
        connections,
        max_connections: limits.max_tracked_connections,
        now: datagram_count,
        interface_names,
        max_interface_names: limits.max_interface_names,
        directory,
        exporter_address_from_options: limits.exporter_address_from_options,
    };
    let mut data_records = 0u32;
    let mut flow_records = 0u32;
    let mut count_known = true;
    let mut result = Ok(());
    for set in sets {
        let set = match set {
            Ok(set) => set,
            Err(error) => {
                result = Err(error.into());
                break;
            }
        };
        if set.id == template_set || set.id == options_set {
            let kind = if set.id == template_set {
                TemplateKind::Data
            } else {
                TemplateKind::Options
            };
            for template_id in learn_templates(exporter, key, dialect, kind, set.body, &limits) {
                decode_pending(exporter, address, key, template_id, &mut context, out);
            }
        } else if set.id >= ipfix::MIN_DATA_SET_ID {
            let decoded = decode_data_set(
                exporter,
                address,
                key,
                set.id,
                &header,
                set.body,
                &mut context,
                out,
            );
            match decoded {
                Some((records, flows)) => {
                    data_records += records;
                    flow_records += flows;
                }
                None => {
                    count_known = false;
                    hold_pending(exporter, key, set.id, header, set.body, &limits);
                }
            }
        } else {
            exporter.counters.errors.add(DecodeError::ReservedSet);
        }
    }
    let domain = exporter.domain_mut(key);
    if !count_known || result.is_err() {
        domain.sequence.resync();
    } else {
        let unit = if dialect == Dialect::V9 {
            SequenceUnit::Datagrams
        } else {
            SequenceUnit::Records
        };
        match domain
            .sequence
            .observe(unit, header.sequence, data_records, flow_records)
        {
            SequenceCheck::InOrder => {}
            SequenceCheck::Lost(n) if unit == SequenceUnit::Datagrams => {
                exporter.counters.lost_datagrams += n
            }
            SequenceCheck::Lost(n) => exporter.counters.lost_records += n,
            SequenceCheck::Reset => exporter.counters.sequence_resets += 1,
        }
    }
    result
}

/// What decoding a data set needs beyond the exporter's own state.
struct DataContext<'a> {
    /// The operator's rate for this exporter, winning over what it announces.
    rate_override: Option<u32>,
    /// The rate where the exporter announces none.
    default_rate: Option<u32>,
    connections: &'a mut Connections,
    max_connections: usize,
    /// The decoder's datagram counter: the clock of the tracked connections' staleness.
    now: u64,
    /// Interface names held over all exporters, and their bound.
    interface_names: &'a mut usize,
    max_interface_names: usize,
    /// Where a changed name is shared for alerts, when the pipeline shares them.
    directory: Option<&'a directory::InterfaceDirectory>,
    /// `decoder.exporter_address_from_options`.
    exporter_address_from_options: bool,
}

/// Decodes the held data sets a new template unlocks, in arrival order.
fn decode_pending(
    exporter: &mut Exporter,
    address: IpAddr,
    key: DomainKey,
    template_id: u16,
    context: &mut DataContext<'_>,
    out: &mut Vec<FlowRecord>,
) {
    if exporter.pending.is_empty() {
        return;
    }
    let pending = std::mem::take(&mut exporter.pending);
    for held in pending {
        if held.domain == key && held.template_id == template_id {
            exporter.pending_bytes -= held.body.len();
            let before = out.len();
            let _ = decode_data_set(
                exporter,
                address,
                key,
                template_id,
                &held.header,
                &held.body,
                context,
                out,
            );
            exporter.counters.pending_records += (out.len() - before) as u64;
        } else {
            exporter.pending.push_back(held);
        }
    }
}

/// Compiles the template records of one set into the domain's templates. Returns the ids
/// of the templates learned, for releasing held data.
fn learn_templates(
    exporter: &mut Exporter,
    key: DomainKey,
    dialect: Dialect,
    kind: TemplateKind,
    body: &[u8],
    limits: &DecoderLimits,
) -> Vec<u16> {
    let mut learned = Vec::new();
    let mut specs = Vec::new();
    for record in TemplateRecords::new(body, dialect, kind) {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                exporter.counters.errors.add(error.into());
                break;
            }
        };
        if record.is_withdrawal() {
            withdraw(exporter, key, kind, record.template_id);
            exporter.counters.template_withdrawals += 1;
            continue;
        }
        if record.template_id < ipfix::MIN_DATA_SET_ID {
            exporter.counters.errors.add(DecodeError::BadTemplate);
            continue;
        }
        specs.clear();
        specs.extend(record.fields());
        let known = exporter
            .domain(key)
            .and_then(|d| d.templates.get(&record.template_id));
        if let Some(layout) = known
            && layout.kind == kind
            && *layout.specs == specs[..]
        {
            exporter.counters.templates += 1; // a re-send: nothing to compile
            continue;
        }
        let compiled = Layout::compile(
            record.template_id,
            kind,
            dialect,
            record.scope_field_count,
            &specs,
            limits.max_fields_per_template,
        );
        let layout = match compiled {
            Ok(layout) => layout,
            Err(LayoutError::TooManyFields) => {
                exporter.counters.errors.add(DecodeError::TooManyFields);
                continue;
            }
            Err(LayoutError::Empty) => {
                exporter.counters.errors.add(DecodeError::BadTemplate);
                continue;
            }
        };
        if insert_template(exporter, key, layout, limits) {
            exporter.counters.templates += 1;
            learned.push(record.template_id);
        }
    }
    learned
}

/// Adds or replaces a template; `false` (counted) when the exporter is at its cap.
fn insert_template(
    exporter: &mut Exporter,
    key: DomainKey,
    layout: Layout,
    limits: &DecoderLimits,
) -> bool {
    let at_cap = exporter.template_count >= limits.max_templates_per_exporter;
    let domain = exporter.domain_mut(key);
    let is_new = !domain.templates.contains_key(&layout.template_id);
    if is_new && at_cap {
        exporter.counters.errors.add(DecodeError::TemplateLimit);
        return false;
    }
    domain.templates.insert(layout.template_id, layout);
    if is_new {
        exporter.template_count += 1;
    }
    true
}

/// RFC 7011 section 8.1: id 2 (3) in a template (options template) set withdraws all data
/// (options) templates of the domain; any other id withdraws that template.
fn withdraw(exporter: &mut Exporter, key: DomainKey, kind: TemplateKind, template_id: u16) {
    let domain = exporter.domain_mut(key);
    let before = domain.templates.len();
    if template_id == ipfix::TEMPLATE_SET_ID || template_id == ipfix::OPTIONS_TEMPLATE_SET_ID {
        domain.templates.retain(|_, layout| layout.kind != kind);
    } else {
        domain.templates.remove(&template_id);
    }
    let removed = before - domain.templates.len();
    exporter.template_count -= removed;
}

/// Holds a data set until its template arrives, dropping the oldest held sets (counted)
/// to stay within the exporter's limits.
fn hold_pending(
    exporter: &mut Exporter,
    key: DomainKey,
    template_id: u16,
    header: HeaderInfo,
    body: &[u8],
    limits: &DecoderLimits,
) {
    exporter.counters.template_misses += 1;
    if body.len() > limits.max_pending_bytes_per_exporter
        || limits.max_pending_sets_per_exporter == 0
    {
        exporter.counters.errors.add(DecodeError::PendingDropped);
        return;
    }
    while exporter.pending.len() >= limits.max_pending_sets_per_exporter
        || exporter.pending_bytes + body.len() > limits.max_pending_bytes_per_exporter
    {
        let Some(dropped) = exporter.pending.pop_front() else {
            break;
        };
        exporter.pending_bytes -= dropped.body.len();
        exporter.counters.errors.add(DecodeError::PendingDropped);
    }
    exporter.pending_bytes += body.len();
    exporter.pending.push_back(PendingSet {
        domain: key,
        template_id,
        header,
        body: body.into(),
    });
}

/// Decodes a data set with its template. `None` when the template is unknown; otherwise
/// the number of data records read and how many of them were flow (not options) records.
#[allow(clippy::too_many_arguments)]
fn decode_data_set(
    exporter: &mut Exporter,
    address: IpAddr,
    key: DomainKey,
    template_id: u16,
    header: &HeaderInfo,
    body: &[u8],
    context: &mut DataContext<'_>,
    out: &mut Vec<FlowRecord>,
) -> Option<(u32, u32)> {
    let counters = &mut exporter.counters;
    let index = exporter.domains.iter().position(|(k, _)| *k == key)?;
    let domain = &mut exporter.domains[index].1;
    let layout = domain.templates.get(&template_id)?;
    let mut rest = body;
    let mut records = 0u32;
    if layout.kind == TemplateKind::Options {
        let mut announced = Vec::new();
        while let Some((record, tail)) = layout.split_record(rest) {
            rest = tail;
            records += 1;
            announced.push(layout.decode_options(record));
        }
        counters.options_records += u64::from(records);
        for options in announced {
            if let Some(init) = options.system_init_ms {
                domain.system_init_ms = Some(init);
            }
            if let Some(rate) = options.sampling_rate() {
                domain.samplers.set(options.sampler_id.unwrap_or(0), rate);
            }
            if context.exporter_address_from_options
                && let Some(address) = options.exporter_address.filter(|a| !a.is_unspecified())
            {
                domain.exporter_address = Some(address);
            }
            if let (Some(if_index), true) = (
                options.if_index,
                options.interface_name.is_some() || options.interface_description.is_some(),
            ) {
                let names = &mut exporter.interface_names;
                let held = names.get(&(key, if_index));
                let known = held.is_some();
                if known || *context.interface_names < context.max_interface_names {
                    let mut entry = held.map(|held| (**held).clone()).unwrap_or_default();
                    if let Some(name) = options.interface_name {
                        entry.name = exporter::InterfaceName::text(name);
                    }
                    if let Some(description) = options.interface_description {
                        entry.description = exporter::InterfaceName::text(description);
                    }
                    // Routers resend their interface table unchanged: only a change is
                    // stored anew and shared.
                    if held.is_none_or(|held| **held != entry) {
                        let entry = std::sync::Arc::new(entry);
                        if let Some(directory) = context.directory {
                            let published = domain.exporter_address.unwrap_or(address);
                            directory.set(published, key, if_index, entry.clone());
                        }
                        names.insert((key, if_index), entry);
                    }
                    *context.interface_names += usize::from(!known);
                    counters.interface_names += u64::from(!known);
                } else {
                    counters.interface_names_refused += 1;
                }
            }
        }
        count_leftover(counters, body.len(), rest);
        return Some((records, 0));
    }
    let exporter_address = domain
        .exporter_address
        .filter(|_| context.exporter_address_from_options)
        .unwrap_or(address);
    let base = FlowRecord {
        kind: header.kind,
        time_received_ns: header.received_ns,
        sequence_num: header.sequence,
        sampler_address: exporter_address,
        observation_domain_id: header.domain_id,
        ..FlowRecord::default()
    };
    let clock = Clock {
        header,
        system_init_ms: domain.system_init_ms,
    };
    while let Some((record, tail)) = layout.split_record(rest) {
        rest = tail;
        records += 1;
        // Decode in place at the end of `out`: one copy of `base`, none of the record.
        out.push(base);
        let flow = out.last_mut().expect("just pushed");
        let mut facts = RecordFacts::default();
        layout.decode_flow(record, flow, &mut facts);
        if context.exporter_address_from_options
            && let Some(address) = facts.exporter_address.filter(|a| !a.is_unspecified())
        {
            flow.sampler_address = address;
        }
        if !clock.stamp(flow, &facts) {
            counters.times_from_header += 1;
        }
        flow.sampling_rate = context
            .rate_override
            .or_else(|| {
                facts
                    .sampler_id
                    .and_then(|id| domain.samplers.rate_for(Some(id)))
            })
            .or_else(|| {
                facts
                    .sampling_interval
                    .and_then(|r| u32::try_from(r).ok())
                    .filter(|&r| r > 0)
            })
            .or_else(|| domain.samplers.rate_for(None))
            .or(context.default_rate)
            .unwrap_or(0);
        counters.connections_evicted += context.connections.account(
            flow,
            facts.counters,
            facts.flow_id,
            context.now,
            context.max_connections,
        );
        counters.continued_records += u64::from(flow.continues_flow);
        counters.packet_section_records += u64::from(facts.from_packet_section);
    }
    count_leftover(counters, body.len(), rest);
    Some((records, records))
}

/// Bytes after the last whole record are padding when zero, or when fewer than 4 that end
/// a set of a length divisible by 4 (alignment padding, RFC 7011 section 3.3.1, which
/// MikroTik RouterOS fills with stray bytes); a truncated record otherwise.
fn count_leftover(counters: &mut DecodeCounters, body_len: usize, rest: &[u8]) {
    let alignment = rest.len() < 4 && (body_len + SET_HEADER_LEN).is_multiple_of(4);
    if !alignment && rest.iter().any(|&b| b != 0) {
        counters.errors.add(DecodeError::Truncated);
    }
}

/// Turns a record's raw time fields into absolute nanoseconds.
struct Clock<'a> {
    header: &'a HeaderInfo,
    system_init_ms: Option<u64>,
}

impl Clock<'_> {
    fn resolve(&self, unit: TimeUnit, value: u64) -> Option<u64> {
        Some(match unit {
            TimeUnit::Seconds => value.saturating_mul(1_000_000_000),
            TimeUnit::Milliseconds => value.saturating_mul(1_000_000),
            TimeUnit::NtpMicroseconds | TimeUnit::NtpNanoseconds => ntp_to_unix_ns(value),
            TimeUnit::DeltaMicroseconds => self
                .header
                .export_ns
                .saturating_sub(value.saturating_mul(1_000)),
            TimeUnit::SysUpTime => match (self.header.sys_uptime_ms, self.system_init_ms) {
                // v9: the header pairs sysUpTime with wall time; the signed difference
                // tolerates uptime wrap and records stamped just after the header.
                (Some(uptime), _) => {
                    let age_ms = i64::from((uptime.wrapping_sub(value as u32)) as i32);
                    let export_ms = (self.header.export_ns / 1_000_000) as i64;
                    (export_ms - age_ms).max(0) as u64 * 1_000_000
                }
                (None, Some(init_ms)) => init_ms.saturating_add(value).saturating_mul(1_000_000),
                (None, None) => return None,
            },
        })
    }

    /// Sets the record's start and end. `false` when they had to come from the export header
    /// because the record's own times could not be resolved.
    fn stamp(&self, flow: &mut FlowRecord, times: &RecordFacts) -> bool {
        let start = times.start.and_then(|(unit, v)| self.resolve(unit, v));
        let end = times.end.and_then(|(unit, v)| self.resolve(unit, v));
        let observed = times.observed_ms.map(|ms| ms.saturating_mul(1_000_000));
        let end = end.or(if times.duration_ns.is_none() {
            observed.filter(|&o| start.is_none_or(|s| o >= s))
        } else {
            None
        });
        let start = start.or(if end.is_none() { observed } else { None });
        let duration = times.duration_ns.unwrap_or(0);
        let (start, end, resolved) = match (start, end) {
            (Some(s), Some(e)) => (s, e, true),
            (Some(s), None) => (s, s.saturating_add(duration), true),
            (None, Some(e)) => (e.saturating_sub(duration), e, true),
            (None, None) => {
                let asked = times.start.is_some() || times.end.is_some();
                (self.header.export_ns, self.header.export_ns, !asked)
            }
        };
        flow.time_flow_start_ns = start;
        flow.time_flow_end_ns = end;
        resolved
    }
}

/// NTP timestamp (seconds since 1900 in the high 32 bits, binary fraction in the low 32)
/// to UNIX nanoseconds.
fn ntp_to_unix_ns(ntp: u64) -> u64 {
    let seconds = (ntp >> 32).saturating_sub(NTP_UNIX_OFFSET_S);
    let fraction_ns = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
    seconds * 1_000_000_000 + fraction_ns
}

fn decode_v5(
    exporter: &mut Exporter,
    address: IpAddr,
    received_ns: u64,
    datagram: &[u8],
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let packet = netflow_v5::Packet::new_checked(datagram)?;
    let domain_id = u32::from(packet.engine_type()) << 8 | u32::from(packet.engine_id());
    let export_ms =
        u64::from(packet.unix_secs()) * 1000 + u64::from(packet.unix_nsecs() / 1_000_000);
    let uptime = packet.sys_uptime();
    let at = |switched: u32| -> u64 {
        let age_ms = i64::from(uptime.wrapping_sub(switched) as i32);
        (export_ms as i64 - age_ms).max(0) as u64 * 1_000_000
    };
    let kind = match packet.format() {
        netflow_v5::Format::V1 => FlowKind::NetflowV1,
        netflow_v5::Format::V5 => FlowKind::NetflowV5,
        netflow_v5::Format::V7 => FlowKind::NetflowV7,
    };
    let base = FlowRecord {
        kind,
        time_received_ns: received_ns,
        sequence_num: packet.flow_sequence(),
        sampling_rate: u32::from(packet.sampling_interval()),
        sampler_address: address,
        observation_domain_id: domain_id,
        etype: record::ETYPE_IPV4,
        ..FlowRecord::default()
    };
    for r in packet.records() {
        out.push(FlowRecord {
            time_flow_start_ns: at(r.first()),
            time_flow_end_ns: at(r.last()),
            bytes: u64::from(r.d_octets()),
            packets: u64::from(r.d_pkts()),
            src_addr: IpAddr::V4(r.src_addr()),
            dst_addr: IpAddr::V4(r.dst_addr()),
            proto: r.prot(),
            src_port: r.src_port(),
            dst_port: r.dst_port(),
            in_if: u32::from(r.input()),
            out_if: u32::from(r.output()),
            src_as: u32::from(r.src_as()),
            dst_as: u32::from(r.dst_as()),
            next_hop: IpAddr::V4(r.next_hop()),
            tcp_flags: r.tcp_flags(),
            ip_tos: r.tos(),
            ..base
        });
    }
    if kind == FlowKind::NetflowV1 {
        return Ok(()); // v1 has no sequence numbers
    }
    let count = u32::from(packet.count());
    let domain = exporter.domain_mut((kind, domain_id));
    match domain
        .sequence
        .observe(SequenceUnit::Records, packet.flow_sequence(), count, count)
    {
        SequenceCheck::InOrder => {}
        SequenceCheck::Lost(n) => exporter.counters.lost_records += n,
        SequenceCheck::Reset => exporter.counters.sequence_resets += 1,
    }
    Ok(())
}
