//! cli: `exflow run`, the daemon, with SIGTERM/SIGINT (drain and stop) and SIGHUP (reload
//! the threat-intel file) wired to its control flags.

use exflow::config::Config;
use exflow::daemon::{self, Control};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use super::RunArgs;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.shared)?;
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
    daemon::run(&config, control)
}
