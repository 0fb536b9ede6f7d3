//! daemon::state: the decoders' templates and the rules' learned state, restored at start
//! and saved while running and at the end, one file per receive worker and per shard.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use crate::pipeline::{Ingest, Shard};
use crate::telemetry::FaultCounters;

/// Worker 0 keeps `state_file` itself; worker N its own `state_file.N`.
pub(super) fn state_path(path: &Path, worker: usize) -> PathBuf {
    if worker == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{worker}"));
    PathBuf::from(name)
}

/// Loads every worker's saved templates: after a restart the kernel may hand an exporter
/// to another worker than before. A file that cannot be read is moved aside to
/// `PATH.corrupt` (so the next save does not overwrite what an operator may want to look
/// at), logged and counted; the daemon starts without it.
pub(super) fn restore_state(
    ingest: &mut Ingest,
    path: &Path,
    workers: usize,
    faults: &FaultCounters,
) {
    for worker in 0..workers {
        let path = state_path(path, worker);
        if worker > 0 && !path.exists() {
            continue;
        }
        match ingest.decoder().load_state(&path) {
            Ok(restored) => {
                info!(templates = restored, path = %path.display(), "restored decoder state")
            }
            Err(error) => {
                faults.state_load_failures.fetch_add(1, Ordering::Relaxed);
                let mut aside = path.as_os_str().to_owned();
                aside.push(".corrupt");
                let aside = PathBuf::from(aside);
                match std::fs::rename(&path, &aside) {
                    Ok(()) => warn!(
                        "{error:#}; starting without saved templates, the file is kept as '{}'",
                        aside.display()
                    ),
                    // The directory refuses the rename: it refuses the atomic save too.
                    Err(rename) => warn!(
                        "{error:#}; starting without saved templates (cannot keep the file as \
                         '{}': {rename})",
                        aside.display()
                    ),
                }
            }
        }
    }
}

/// Gives shard `index` of `shards` the hosts it owns from every rules state file beside
/// `path` (whatever the sharding that wrote them).
pub(super) fn restore_rules_state(shard: &mut Shard, path: &Path, index: usize, shards: usize) {
    for file in crate::detect::state::rules_state_paths(path) {
        match shard.load_rules_state(&file, index, shards) {
            Ok(restored) => {
                info!(entries = restored, shard = index, path = %file.display(), "restored rules state")
            }
            Err(error) => warn!("{error:#}; this shard starts without it"),
        }
    }
}

pub(super) fn save_state(ingest: &mut Ingest, path: &Path) {
    if let Err(error) = ingest.decoder().save_state(path) {
        warn!("{error:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_keeps_its_own_state_file() {
        let path = Path::new("/var/lib/exflow/state.json");
        assert_eq!(state_path(path, 0), path);
        assert_eq!(
            state_path(path, 2),
            Path::new("/var/lib/exflow/state.json.2")
        );
    }
}
