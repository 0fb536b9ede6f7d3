//! cli: `exflow run`, the daemon, with SIGTERM/SIGINT (drain and stop) and SIGHUP (reload
//! the threat-intel file) wired to its control flags. The sockets are bound here, first,
//! and `--ready-file` says where they were bound (ports given as 0 resolved); the file
//! is removed when the daemon stops.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use exflow::daemon::{self, Control};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::RunArgs;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.shared.load()?;
    let control = Control::default();
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, control.shutdown.clone())?;
    }
    signal_hook::flag::register(SIGHUP, control.reload.clone())?;
    if config.home_countries.is_empty() {
        tracing::warn!(
            "no home country configured (--home-country): a destination counts as foreign when its \
             country differs from the inside host's, or, for private inside addresses, whenever it is known"
        );
    }
    let sockets = daemon::BoundSockets::bind(&config)?;
    if let Some(path) = &args.ready_file {
        write_ready_file(
            path,
            &sockets.listen_addresses(),
            sockets.metrics_address()?,
        )?;
    }
    let result = daemon::run(&config, sockets, control);
    if let Some(path) = &args.ready_file {
        // The addresses are no longer served: a stale file would mislead.
        let _ = std::fs::remove_file(path);
    }
    result
}

/// `{"listen": ["ADDR:PORT", ...], "metrics_listen": "ADDR:PORT"}`, written whole (a
/// temporary file renamed into place), so a reader never sees half of it.
pub(super) fn write_ready_file(
    path: &Path,
    listen: &[SocketAddr],
    metrics: SocketAddr,
) -> anyhow::Result<()> {
    let ready = serde_json::json!({ "listen": listen, "metrics_listen": metrics });
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, format!("{ready}\n"))
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("cannot write the ready file '{}'", path.display()))
}
