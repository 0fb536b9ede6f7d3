//! decode: templates, exporter clocks and sampling state saved to a file and loaded at
//! start, so data that arrives after a restart, before the exporter re-sends its
//! templates, still decodes; and the tracked connections (running totals, firewall
//! events), so a restart does not count a total twice. Written atomically (temporary
//! file, fsync, rename).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::connections::SavedConnection;
use super::exporter::{Domain, Samplers};
use super::layout::Layout;
use super::record::FlowKind;
use super::{Decoder, insert_template};
use crate::wire::template::{Dialect, FieldSpec, TemplateKind};

/// Bumped on any incompatible change; a file of another version is ignored with a warning.
const STATE_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct SavedState {
    version: u32,
    exporters: Vec<SavedExporter>,
    /// Flows reported many times (running totals, firewall connections) and what was
    /// counted of each, so a restart does not count a running total whole again. Absent
    /// in files written before it was kept.
    #[serde(default)]
    connections: Vec<SavedConnection>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedExporter {
    address: IpAddr,
    domains: Vec<SavedDomain>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedDomain {
    /// "netflow_v9" or "ipfix" (v5 and sFlow have no state worth keeping).
    protocol: String,
    domain_id: u32,
    #[serde(default)]
    system_init_ms: Option<u64>,
    #[serde(default)]
    samplers: Vec<(u64, u32)>,
    #[serde(default)]
    latest_sampling_rate: Option<u32>,
    templates: Vec<SavedTemplate>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedTemplate {
    id: u16,
    options: bool,
    #[serde(default)]
    scope_field_count: u16,
    fields: Vec<FieldSpec>,
}

fn protocol_name(kind: FlowKind) -> &'static str {
    match kind {
        FlowKind::NetflowV5 => "netflow_v5",
        FlowKind::NetflowV1 => "netflow_v1",
        FlowKind::NetflowV7 => "netflow_v7",
        FlowKind::NetflowV9 => "netflow_v9",
        FlowKind::Ipfix => "ipfix",
        FlowKind::Sflow5 => "sflow_5",
    }
}

impl Decoder {
    /// Writes templates, clocks and samplers of every exporter, and the tracked
    /// connections, to `path`, atomically: a
    /// reader (or a crash) sees the old file or the new one, never half of one.
    pub fn save_state(&self, path: &Path) -> anyhow::Result<()> {
        let mut exporters = Vec::new();
        for (address, exporter) in &self.exporters {
            let domains: Vec<SavedDomain> = exporter
                .domains
                .iter()
                .filter(|((kind, _), _)| {
                    !matches!(
                        kind,
                        FlowKind::NetflowV1
                            | FlowKind::NetflowV5
                            | FlowKind::NetflowV7
                            | FlowKind::Sflow5
                    )
                })
                .map(|((kind, domain_id), domain)| SavedDomain {
                    protocol: protocol_name(*kind).to_string(),
                    domain_id: *domain_id,
                    system_init_ms: domain.system_init_ms,
                    samplers: domain.samplers.rates.clone(),
                    latest_sampling_rate: domain.samplers.latest,
                    templates: domain
                        .templates
                        .values()
                        .map(|layout| SavedTemplate {
                            id: layout.template_id,
                            options: layout.kind == TemplateKind::Options,
                            scope_field_count: layout.scope_field_count,
                            fields: layout.specs.to_vec(),
                        })
                        .collect(),
                })
                .collect();
            if !domains.is_empty() {
                exporters.push(SavedExporter {
                    address: *address,
                    domains,
                });
            }
        }
        exporters.sort_by_key(|e| e.address);
        let state = SavedState {
            version: STATE_VERSION,
            exporters,
            connections: self.connections.saved(),
        };
        let json = serde_json::to_vec(&state).expect("state serialises: plain data");
        write_atomically(path, &json)
            .with_context(|| format!("cannot write state file '{}'", path.display()))
    }

    /// Loads what [`save_state`](Self::save_state) wrote. A missing file is not an error
    /// (first start); returns how many templates were restored. Limits still apply.
    pub fn load_state(&mut self, path: &Path) -> anyhow::Result<usize> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read state file '{}'", path.display()));
            }
        };
        let state: SavedState = serde_json::from_slice(&bytes).with_context(|| {
            format!("state file '{}' is not valid exflow state", path.display())
        })?;
        anyhow::ensure!(
            state.version == STATE_VERSION,
            "state file '{}' has version {}, this exflow reads version {STATE_VERSION}",
            path.display(),
            state.version
        );
        let limits = self.config.limits;
        let mut restored = 0;
        for saved in state.exporters.into_iter().take(limits.max_exporters) {
            let exporter = self.exporters.entry(saved.address).or_default();
            for domain in saved.domains {
                let (kind, dialect) = match domain.protocol.as_str() {
                    "netflow_v9" => (FlowKind::NetflowV9, Dialect::V9),
                    "ipfix" => (FlowKind::Ipfix, Dialect::Ipfix),
                    _ => continue,
                };
                let key = (kind, domain.domain_id);
                let state: &mut Domain = exporter.domain_mut(key);
                state.system_init_ms = domain.system_init_ms;
                state.samplers = Samplers {
                    rates: domain.samplers,
                    latest: domain.latest_sampling_rate,
                };
                state.samplers.rates.truncate(super::exporter::MAX_SAMPLERS);
                for template in domain.templates {
                    let template_kind = if template.options {
                        TemplateKind::Options
                    } else {
                        TemplateKind::Data
                    };
                    let Ok(layout) = Layout::compile(
                        template.id,
                        template_kind,
                        dialect,
                        template.scope_field_count,
                        &template.fields,
                        limits.max_fields_per_template,
                    ) else {
                        continue;
                    };
                    if insert_template(exporter, key, layout, &limits) {
                        restored += 1;
                    }
                }
            }
        }
        self.connections
            .restore(state.connections, limits.max_tracked_connections);
        Ok(restored)
    }
}

/// Temporary file in the same directory, fsync, rename over the target, fsync the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(directory)?.sync_all()
}
