//! source: UDP receive, the front of the daemon. One thread per socket receives datagrams in
//! batches (blocking for the first, then whatever the kernel already holds) into one shared
//! buffer split into `Bytes` slices, and hands each batch to the pipeline over a bounded
//! channel. A full channel drops the batch and counts it: the socket is never left unread.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use socket2::{Domain, Protocol, Socket, Type};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams per batch at most.
pub const BATCH: usize = 64;
/// How long a receive blocks before the thread looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);

/// One received datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub exporter: IpAddr,
    pub received_ns: u64,
    pub payload: Bytes,
}

/// Counters of one listening socket, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    /// Datagrams dropped because the pipeline's queue was full.
    pub queue_dropped: AtomicU64,
    /// Receive errors other than timeouts.
    pub receive_errors: AtomicU64,
}

/// A bound socket and what the kernel granted.
pub struct Listener {
    pub socket: Socket,
    pub address: SocketAddr,
    /// The receive buffer the kernel granted (Linux reports twice the usable size).
    pub receive_buffer_bytes: usize,
}

/// Binds `address` with `SO_REUSEADDR` and asks for a `receive_buffer_bytes` buffer.
pub fn bind(address: SocketAddr, receive_buffer_bytes: usize) -> anyhow::Result<Listener> {
    use anyhow::Context;
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_recv_buffer_size(receive_buffer_bytes).ok();
    socket
        .bind(&address.into())
        .with_context(|| format!("cannot listen on udp {address}"))?;
    socket.set_read_timeout(Some(POLL))?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    let address = socket
        .local_addr()?
        .as_socket()
        .context("bound to a non-IP address")?;
    Ok(Listener {
        socket,
        address,
        receive_buffer_bytes: granted,
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Receives until `shutdown` is set, sending batches to `queue`.
pub fn receive(
    listener: Listener,
    queue: SyncSender<Vec<Datagram>>,
    counters: Arc<SourceCounters>,
    shutdown: Arc<AtomicBool>,
) {
    let socket = listener.socket;
    let mut buffer = BytesMut::with_capacity(BATCH * 2048);
    while !shutdown.load(Ordering::Relaxed) {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            if buffer.capacity() - buffer.len() < MAX_DATAGRAM {
                buffer.reserve(MAX_DATAGRAM.max(BATCH * 2048));
            }
            // Block for the first datagram of a batch; then take only what is already there.
            let flags = if batch.is_empty() {
                0
            } else {
                libc::MSG_DONTWAIT
            };
            let spare = &mut buffer.spare_capacity_mut()[..MAX_DATAGRAM];
            match socket.recv_from_with_flags(spare, flags) {
                Ok((length, from)) => {
                    let Some(from) = from.as_socket() else {
                        continue;
                    };
                    // SAFETY: `length` bytes were just written by the kernel.
                    unsafe { buffer.set_len(buffer.len() + length) };
                    let payload = buffer.split_to(buffer.len()).freeze();
                    counters.bytes.fetch_add(length as u64, Ordering::Relaxed);
                    batch.push(Datagram {
                        exporter: from.ip().to_canonical(),
                        received_ns: now_ns(),
                        payload,
                    });
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    counters.receive_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let count = batch.len() as u64;
        counters.datagrams.fetch_add(count, Ordering::Relaxed);
        match queue.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                counters.queue_dropped.fetch_add(count, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}
