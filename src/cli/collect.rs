//! cli: `exflow collect`, the front half on UDP publishing to the flows topic, with
//! SIGTERM/SIGINT (drain, publish the end of input, stop) wired to its control flag.

use exflow::daemon::{self, Control};
use signal_hook::consts::{SIGINT, SIGTERM};

use super::CollectArgs;
use super::run::write_ready_file;

pub fn run(args: CollectArgs) -> anyhow::Result<()> {
    let mut config = args.shared.load()?;
    if let Some(id) = args.collector_id {
        config.scaleout.collector_id = Some(id);
        config.validate()?;
    }
    let control = Control::default();
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, control.shutdown.clone())?;
    }
    let sockets = daemon::BoundSockets::bind(&config)?;
    if let Some(path) = &args.ready_file {
        write_ready_file(
            path,
            &sockets.listen_addresses(),
            sockets.metrics_address()?,
        )?;
    }
    let result = exflow::scaleout::collect::run(&config, sockets, control);
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result
}
