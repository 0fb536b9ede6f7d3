//! source: batch receive with recvmmsg(2), many datagrams per system call, each with the
//! kernel's running count of datagrams it dropped on this socket (SO_RXQ_OVFL). Linux only;
//! the unsafe FFI of recvmmsg and its control messages lives here (the only other unsafe
//! call of the receive side is `udp.rs`'s poll(2) over a worker's sockets).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

/// Datagrams per system call.
pub const BATCH: usize = 64;
/// Room for the largest UDP payload.
const SLOT: usize = 65_536;
/// Control-message room per datagram: one `cmsghdr` with a `u32`, 8-byte aligned.
const CONTROL_WORDS: usize = 8;

/// Asks the kernel to attach its drop counter to every received datagram.
pub fn enable_drop_counter(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd and a pointer to a c_int of the size given.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Buffers for one `recvmmsg` call, reused call after call.
pub struct BatchReceiver {
    buffers: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    headers: Vec<libc::mmsghdr>,
    received: usize,
    /// The kernel's drop count for the socket, from the last call's datagrams when one
    /// carried it (the kernel attaches it only once it is non-zero).
    kernel_dropped: Option<u32>,
}

impl Default for BatchReceiver {
    fn default() -> Self {
        BatchReceiver {
            buffers: vec![0; BATCH * SLOT],
            // SAFETY (zeroed): plain C structs for which all-zero is a valid value.
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
            controls: vec![[0; CONTROL_WORDS]; BATCH],
            headers: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            received: 0,
            kernel_dropped: None,
        }
    }
}

impl BatchReceiver {
    /// Receives up to [`BATCH`] datagrams: blocks for the first (up to the socket's receive
    /// timeout) and takes what else is already queued. Returns how many.
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.receive_with(fd, libc::MSG_WAITFORONE)
    }

    /// Takes up to [`BATCH`] datagrams the kernel already holds, without blocking.
    pub fn receive_ready(&mut self, fd: RawFd) -> io::Result<usize> {
        self.receive_with(fd, libc::MSG_DONTWAIT)
    }

    fn receive_with(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        // The pointers are rebuilt on every call, so moving `self` can never leave them stale.
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.buffers[i * SLOT..].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let header = &mut self.headers[i].msg_hdr;
            header.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            header.msg_control = self.controls[i].as_mut_ptr().cast();
            header.msg_controllen = CONTROL_WORDS * 8;
            header.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` of the sizes given.
        let count = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            self.received = 0;
            return Err(io::Error::last_os_error());
        }
        self.received = count as usize;
        self.kernel_dropped = (0..self.received).rev().find_map(|i| self.drop_count(i));
        Ok(self.received)
    }

    /// The `i`th datagram of the last call: its source and payload (`None` for a source that
    /// is not IPv4 or IPv6).
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.received {
            return None;
        }
        let length = (self.headers[i].msg_len as usize).min(SLOT);
        let source = socket_addr(&self.names[i])?;
        Some((source, &self.buffers[i * SLOT..i * SLOT + length]))
    }

    /// The kernel's cumulative count of datagrams dropped on the socket (full buffer), as
    /// the last call's datagrams carried it (`None` when none did).
    pub fn kernel_dropped(&self) -> Option<u32> {
        self.kernel_dropped
    }

    fn drop_count(&self, i: usize) -> Option<u32> {
        let header = &self.headers[i].msg_hdr;
        // SAFETY: the kernel filled the control buffer and set msg_controllen; the CMSG
        // macros walk it within that length.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(header);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL
                {
                    return Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u32>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(header, cmsg);
            }
        }
        None
    }
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(v6.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_a_batch_with_sources_and_the_drop_counter() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_drop_counter(&socket).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            sender
                .send_to(&[i; 10], socket.local_addr().unwrap())
                .unwrap();
        }
        let mut receiver = BatchReceiver::default();
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = receiver.receive(socket.as_raw_fd()).unwrap();
            for i in 0..n {
                let (source, payload) = receiver.datagram(i).unwrap();
                assert_eq!(source, sender.local_addr().unwrap());
                got.push(payload.to_vec());
            }
        }
        assert_eq!(got, vec![vec![0; 10], vec![1; 10], vec![2; 10]]);
        assert_eq!(receiver.kernel_dropped(), None);
        assert!(receiver.datagram(3).is_none());
    }

    #[test]
    fn counts_what_the_kernel_dropped() {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        socket.set_recv_buffer_size(1).unwrap(); // the kernel's minimum
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        enable_drop_counter(&socket).unwrap();
        let target = socket.local_addr().unwrap().as_socket().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            sender.send_to(&[7; 1000], target).unwrap();
        }
        let mut receiver = BatchReceiver::default();
        let first = receiver.receive(socket.as_raw_fd()).unwrap();
        assert!((1..200).contains(&first));
        // What fitted was queued before the drops; the next datagram carries the count.
        sender.send_to(&[8; 10], target).unwrap();
        let mut dropped = None;
        let mut seen_last = false;
        while !seen_last {
            let n = receiver.receive(socket.as_raw_fd()).unwrap();
            seen_last = (0..n).any(|i| receiver.datagram(i).unwrap().1 == [8; 10]);
            dropped = receiver.kernel_dropped().or(dropped);
        }
        assert!(dropped.is_some_and(|d| d >= 100), "{dropped:?}");
    }
}
