//! source: UDP receive, the front of the daemon. Each receive worker polls sockets of its
//! own (one per listen address, joined with SO_REUSEPORT when there are several workers)
//! and takes datagrams in batches with recvmmsg, straight from the receive slots into its
//! decoder: no copy and no queue before decoding. The kernel's socket buffer
//! (`source.receive_buffer_bytes`) absorbs bursts, and its drops are counted (SO_RXQ_OVFL).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::batch::{BATCH, BatchReceiver, enable_drop_counter};

/// Batches taken from one socket per poll round, so one busy socket cannot starve another.
const BATCHES_PER_ROUND: usize = 16;

/// Shorter waits are not worth a sleep.
const GATHER_MIN: Duration = Duration::from_micros(50);
/// How long arrivals are counted for each estimate of the arrival rate.
const RATE_WINDOW: Duration = Duration::from_millis(10);

/// Paces the receive rounds by the measured arrival rate. A round that drains the sockets
/// with a partial batch would otherwise be followed by a wake-up per datagram or two at
/// moderate rates, each a context switch that costs more than the datagram; instead the
/// worker sleeps about as long as [`BATCH`] datagrams take to arrive (at most `max`,
/// `source.gather_max_us`) and takes them in one call. The socket buffer holds them meanwhile (the
/// 32 MiB default holds well over a hundred milliseconds of any rate one worker keeps up
/// with), and a round that fills its batches never waits.
#[derive(Debug)]
struct Gather {
    /// The longest wait: the latency it may add to a datagram (zero: never wait).
    max: Duration,
    /// Datagrams per second, from the last complete window (0 until one).
    rate_per_s: f64,
    window_start: Instant,
    window_datagrams: u64,
    /// How long to sleep before the next poll (`None`: poll at once).
    pause: Option<Duration>,
}

impl Gather {
    fn new(max: Duration) -> Gather {
        Gather {
            max,
            rate_per_s: 0.0,
            window_start: Instant::now(),
            window_datagrams: 0,
            pause: None,
        }
    }

    /// Notes a round that took `received` datagrams; `drained` when every socket that was
    /// ready gave a partial batch (the kernel held no more).
    fn note(&mut self, received: usize, drained: bool) {
        self.window_datagrams += received as u64;
        let elapsed = self.window_start.elapsed();
        if elapsed >= RATE_WINDOW {
            self.rate_per_s = self.window_datagrams as f64 / elapsed.as_secs_f64();
            self.window_start = Instant::now();
            self.window_datagrams = 0;
        }
        self.pause = None;
        // Nothing came: the next poll blocks anyway. A full batch: more is waiting.
        if received == 0 || !drained || received >= BATCH {
            return;
        }
        let wanted = (BATCH - received) as f64;
        let pause = if self.rate_per_s > 0.0 {
            Duration::from_secs_f64((wanted / self.rate_per_s).min(self.max.as_secs_f64()))
        } else {
            self.max
        };
        if pause >= GATHER_MIN {
            self.pause = Some(pause);
        }
    }
}

/// Counters of one listening socket, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    /// Receive errors other than timeouts.
    pub receive_errors: AtomicU64,
    /// Datagrams the kernel dropped because the socket buffer was full (SO_RXQ_OVFL).
    pub kernel_dropped: AtomicU64,
}

/// A bound socket and what the kernel granted.
pub struct Listener {
    pub socket: Socket,
    pub address: SocketAddr,
    /// The receive buffer the kernel granted (Linux reports twice the usable size).
    pub receive_buffer_bytes: usize,
}

/// Binds `address` and asks for a `receive_buffer_bytes` buffer. With `reuse_port`, other
/// sockets may bind the same address: the kernel then spreads datagrams over them by a
/// hash of the sender's address and port, so each exporter stays with one socket. No
/// `SO_REUSEADDR`: UDP has no TIME_WAIT to skip, and with it a second process could bind
/// the same address and take its datagrams. (`SO_REUSEPORT` would let one in too: the
/// daemon holds a [`PortLock`] per port against that.)
pub fn bind(
    address: SocketAddr,
    receive_buffer_bytes: usize,
    reuse_port: bool,
) -> anyhow::Result<Listener> {
    use anyhow::Context;
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_recv_buffer_size(receive_buffer_bytes).ok();
    socket
        .bind(&address.into())
        .with_context(|| format!("cannot listen on udp {address}"))?;
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

/// Held for the life of the daemon: while it lives, no other exflow receives on this UDP
/// port (on any address: a socket on 0.0.0.0 and one on 127.0.0.1 share the loopback
/// traffic just the same). It is a unix datagram socket bound in the abstract namespace
/// (Linux) under a name made of the port: binding that name fails while another process
/// holds it, and the kernel frees it when the process ends, even killed, so no stale lock
/// file is ever left. Like UDP ports, abstract names are per network namespace.
#[derive(Debug)]
pub struct PortLock {
    /// Bound to the lock's name; closing it releases the lock.
    _socket: std::os::unix::net::UnixDatagram,
    pub port: u16,
}

impl PortLock {
    /// Takes the lock of `port`, or says which address another exflow holds it for.
    pub fn acquire(port: u16, address: SocketAddr) -> anyhow::Result<PortLock> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
        let name = UnixAddr::from_abstract_name(format!("exflow/udp/{port}"))?;
        match UnixDatagram::bind_addr(&name) {
            Ok(socket) => Ok(PortLock {
                _socket: socket,
                port,
            }),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse => anyhow::bail!(
                "cannot listen on udp {address}: another exflow already receives on port {port}"
            ),
            Err(error) => Err(anyhow::Error::new(error)
                .context(format!("cannot take the lock of udp port {port}"))),
        }
    }
}

/// One receive worker's listening sockets, polled together.
pub struct Sockets {
    listeners: Vec<(Listener, Arc<SourceCounters>)>,
    /// Each socket's kernel drop count as last seen, so shared counters get the increase.
    kernel_dropped: Vec<u32>,
    receiver: BatchReceiver,
    gather: Gather,
}

impl Sockets {
    /// Sockets polled together; after a round that drained them short of a batch, the
    /// next waits up to `gather_max` for a fuller one (see [`Gather`]).
    pub fn new(listeners: Vec<(Listener, Arc<SourceCounters>)>, gather_max: Duration) -> Self {
        for (listener, _) in &listeners {
            if enable_drop_counter(&listener.socket).is_err() {
                tracing::warn!(listen = %listener.address, "the kernel does not report socket drops (SO_RXQ_OVFL)");
            }
        }
        Sockets {
            kernel_dropped: vec![0; listeners.len()],
            listeners,
            receiver: BatchReceiver::default(),
            gather: Gather::new(gather_max),
        }
    }

    /// Waits up to `timeout` for datagrams, then hands every one that is ready to
    /// `datagram(exporter, received_ns, payload)`. Returns how many there were. After a
    /// round that drained the sockets short of a batch, it first lets a batch gather (see
    /// [`Gather`]), unless `timeout` is zero.
    pub fn receive(
        &mut self,
        timeout: Duration,
        mut datagram: impl FnMut(IpAddr, u64, &[u8]),
    ) -> io::Result<usize> {
        if let Some(pause) = self.gather.pause.take()
            && !timeout.is_zero()
        {
            std::thread::sleep(pause.min(timeout));
        }
        let mut fds: Vec<libc::pollfd> = self
            .listeners
            .iter()
            .map(|(l, _)| libc::pollfd {
                fd: l.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of pollfd of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(error)
            };
        }
        let mut total = 0;
        let mut drained = true;
        for (index, (pollfd, (listener, counters))) in fds.iter().zip(&self.listeners).enumerate() {
            if pollfd.revents == 0 {
                continue;
            }
            for round in 0..BATCHES_PER_ROUND {
                let count = match self.receiver.receive_ready(listener.socket.as_raw_fd()) {
                    Ok(count) => count,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        counters.receive_errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                let received_ns = crate::time::wall_clock_ns();
                let mut bytes = 0;
                for i in 0..count {
                    if let Some((source, payload)) = self.receiver.datagram(i) {
                        bytes += payload.len() as u64;
                        datagram(source.ip().to_canonical(), received_ns, payload);
                    }
                }
                counters
                    .datagrams
                    .fetch_add(count as u64, Ordering::Relaxed);
                counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                if let Some(dropped) = self.receiver.kernel_dropped() {
                    let before = std::mem::replace(&mut self.kernel_dropped[index], dropped);
                    counters
                        .kernel_dropped
                        .fetch_add(u64::from(dropped.wrapping_sub(before)), Ordering::Relaxed);
                }
                total += count;
                if count < BATCH {
                    break;
                }
                if round + 1 == BATCHES_PER_ROUND {
                    drained = false;
                }
            }
        }
        self.gather.note(total, drained);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port's lock is held once: a second taker is refused, naming the address, until
    /// the first lets go.
    #[test]
    fn a_port_lock_is_held_once() {
        // An ephemeral port nobody else locks in this test run.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        let first = PortLock::acquire(port, address).unwrap();
        let error = PortLock::acquire(port, address).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "cannot listen on udp {address}: another exflow already receives on port {port}"
            )
        );
        drop(first);
        PortLock::acquire(port, address).unwrap();
    }
}
