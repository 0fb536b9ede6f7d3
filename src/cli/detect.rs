//! cli: `exflow detect`, a member of the detectors' consumer group, with SIGTERM/SIGINT
//! (deliver, commit, stop) wired to its control flag.

use std::net::TcpListener;

use anyhow::Context;
use exflow::daemon::Control;
use signal_hook::consts::{SIGINT, SIGTERM};

use super::DetectArgs;
use super::run::write_ready_file;

pub fn run(args: DetectArgs) -> anyhow::Result<()> {
    let mut config = args.shared.load()?;
    if let Some(group) = args.group {
        config.scaleout.group = group;
    }
    if let Some(id) = args.instance_id {
        config.scaleout.instance_id = Some(id);
    }
    config.validate()?;
    let control = Control::default();
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register(signal, control.shutdown.clone())?;
    }
    let metrics = TcpListener::bind(config.metrics_listen)
        .with_context(|| format!("cannot serve metrics on {}", config.metrics_listen))?;
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &[], metrics.local_addr()?)?;
    }
    let result = exflow::scaleout::detect::run(&config, metrics, control);
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result
}
