//! daemon::sockets: every socket `exflow run` (and `exflow collect`) receives on, bound
//! by the CLI before anything slow starts and handed to [`super::run`]: UDP per receive
//! worker, one lock per port, the metrics listener.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::Config;
use crate::source::udp::{self, Listener, PortLock, SourceCounters};

/// The daemon's sockets, bound before anything slow starts (the sink, state files), so no
/// datagram is refused meanwhile: the kernel queues them. The CLI binds them and hands them
/// to [`run`](super::run); ports given as 0 are resolved, so a caller learns what it got.
pub struct BoundSockets {
    /// Each receive worker's sockets, one per listen address.
    pub(super) workers: Vec<WorkerListeners>,
    /// Each listen address as bound, with the counters its workers' sockets share.
    pub(super) sources: Vec<(SocketAddr, Arc<SourceCounters>)>,
    /// Where `/metrics` is served.
    pub(super) metrics: TcpListener,
    /// One per UDP port, held until `run` returns: no second exflow takes the ports.
    pub(super) locks: Vec<PortLock>,
}

impl BoundSockets {
    /// Binds every listen address once per receive worker (SO_REUSEPORT when there are
    /// several), each port under a [`PortLock`], then the metrics listener.
    pub fn bind(config: &Config) -> anyhow::Result<BoundSockets> {
        let workers = config.source.workers.max(1);
        let reuse_port = workers > 1;
        let mut per_worker: Vec<WorkerListeners> = (0..workers).map(|_| Vec::new()).collect();
        let mut sources = Vec::with_capacity(config.listen.len());
        let mut locks: Vec<PortLock> = Vec::new();
        let mut lock = |port: u16, address: SocketAddr| -> anyhow::Result<()> {
            // Several listen addresses may share a port: one lock covers them.
            if !locks.iter().any(|l| l.port == port) {
                locks.push(PortLock::acquire(port, address)?);
            }
            Ok(())
        };
        for &asked in &config.listen {
            if asked.port() != 0 {
                lock(asked.port(), asked)?;
            }
            let counters = Arc::new(SourceCounters::default());
            // Port 0 means "any": the other workers join the port the first one got.
            let mut address = asked;
            for sockets in &mut per_worker {
                let listener = udp::bind(address, config.source.receive_buffer_bytes, reuse_port)?;
                address = listener.address;
                sockets.push((listener, counters.clone()));
            }
            lock(address.port(), address)?;
            let granted = per_worker[0]
                .last()
                .map_or(0, |(l, _)| l.receive_buffer_bytes);
            // Linux reports twice what it grants; compare with what was asked.
            if granted / 2 < config.source.receive_buffer_bytes {
                warn!(
                    "udp {address}: receive buffer capped at {} bytes (asked {}); raise the cap \
                     with `sysctl -w net.core.rmem_max={}`",
                    granted / 2,
                    config.source.receive_buffer_bytes,
                    config.source.receive_buffer_bytes
                );
            }
            info!(listen = %address, "receiving NetFlow v5/v9, IPFIX and sFlow v5");
            sources.push((address, counters));
        }
        let metrics = TcpListener::bind(config.metrics_listen)
            .with_context(|| format!("cannot serve metrics on {}", config.metrics_listen))?;
        Ok(BoundSockets {
            workers: per_worker,
            sources,
            metrics,
            locks,
        })
    }

    /// The UDP addresses as bound, in the order of `listen`.
    pub fn listen_addresses(&self) -> Vec<SocketAddr> {
        self.sources.iter().map(|(address, _)| *address).collect()
    }

    /// The metrics address as bound.
    pub fn metrics_address(&self) -> std::io::Result<SocketAddr> {
        self.metrics.local_addr()
    }

    /// The parts, for a command that receives as the daemon does on a loop of its own
    /// (`exflow collect`): every worker's sockets in one list, the listen addresses with
    /// their counters, the metrics listener, and the port locks (hold them while receiving).
    pub fn into_parts(self) -> SocketParts {
        SocketParts {
            sockets: self.workers.into_iter().flatten().collect(),
            sources: self.sources,
            metrics: self.metrics,
            locks: self.locks,
        }
    }
}

/// [`BoundSockets`] taken apart.
pub struct SocketParts {
    pub sockets: Vec<(Listener, Arc<SourceCounters>)>,
    pub sources: Vec<(SocketAddr, Arc<SourceCounters>)>,
    pub metrics: TcpListener,
    pub locks: Vec<PortLock>,
}

/// Each worker's listeners.
type WorkerListeners = Vec<(Listener, Arc<SourceCounters>)>;
