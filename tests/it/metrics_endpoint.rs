//! The daemon's `/metrics` endpoint under abuse: idle, trickling and oversized clients
//! neither delay a scrape nor grow memory.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::{Daemon, wait_until};

/// A daemon writing its alerts nowhere in particular: these tests look at the endpoint only.
fn daemon() -> Daemon {
    Daemon::start("[sink]\nfile = \"/dev/null\"\n", &[])
}

/// One scrape that must be answered within `deadline` (a client-side read timeout):
/// returns the status line and the body.
pub fn scrape_within(metrics: &str, deadline: Duration) -> (String, String) {
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream.set_read_timeout(Some(deadline)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: exflow\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .expect("the scrape is answered before the deadline");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

/// Whether the server still holds `stream` open: a read finds no data and no end of file.
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!((&*stream).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

/// Five clients that connect and send nothing and five that send their request a byte at
/// a time hold their connections while a scrape is answered in full. The old endpoint
/// served one connection at a time with a 2 s read timeout each: this scrape waited 20 s.
/// The deadline (3 s) is generous but shorter than the server's 5 s limit on a request
/// head, so the other clients are provably still connected when the scrape completes.
#[test]
fn a_scrape_is_answered_while_idle_and_trickling_clients_hold_connections() {
    let daemon = daemon();
    let idle: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(&daemon.metrics).unwrap())
        .collect();
    let trickling: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut stream = TcpStream::connect(&daemon.metrics).unwrap();
            stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let trickler = {
        let streams: Vec<TcpStream> = trickling.iter().map(|s| s.try_clone().unwrap()).collect();
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for mut stream in &streams {
                    // A header that never ends, one byte per round.
                    let _ = stream.write_all(b"x");
                }
                rounds.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Every client is connected, and the tricklers trickling, before the scrape.
    wait_until(
        "the tricklers have sent bytes",
        Duration::from_secs(10),
        || rounds.load(Ordering::Relaxed) >= 2,
    );
    assert!(idle.iter().all(still_open));
    assert!(trickling.iter().all(still_open));

    let (status, body) = scrape_within(&daemon.metrics, Duration::from_secs(3));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("\nexflow_decode_records_total 0\n"), "{body}");
    let still_idle = idle.iter().filter(|s| still_open(s)).count();
    let still_trickling = trickling.iter().filter(|s| still_open(s)).count();
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    assert_eq!(
        (still_idle, still_trickling),
        (5, 5),
        "the scrape completed while every other client was still connected"
    );

    // A trickler cannot hold its connection for ever: the head has a deadline.
    wait_until(
        "the server closes the trickling connections",
        Duration::from_secs(30),
        || trickling.iter().all(|s| !still_open(s)),
    );
    daemon.stop();
}

/// A 1 GiB request line is cut off after the server's 16 KiB head limit: the daemon's
/// peak RSS (`VmHWM`) does not grow past a bound, and the endpoint serves on. The old
/// endpoint buffered the whole line: RSS grew to 1.06 GB.
#[test]
fn an_oversized_request_is_refused_without_growing_memory() {
    let daemon = daemon();
    let peak_before = daemon.status_bytes("VmHWM");
    let mut stream = TcpStream::connect(&daemon.metrics).unwrap();
    stream.write_all(b"GET /").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut written = 0u64;
    let refused = loop {
        if written >= 1 << 30 {
            break false;
        }
        match stream.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(_) => break true,
        }
    };
    assert!(
        refused,
        "the server closed the connection before 1 GiB arrived"
    );
    assert!(written < 1 << 30, "{written}");
    let peak_after = daemon.status_bytes("VmHWM");
    assert!(
        peak_after < peak_before + (32 << 20),
        "peak RSS grew from {peak_before} to {peak_after} bytes"
    );
    let (status, _) = scrape_within(&daemon.metrics, Duration::from_secs(10));
    assert_eq!(status, "HTTP/1.1 200 OK");
    daemon.stop();
}

/// The endpoint holds at most 128 connections: with 128 idle clients connected, one more
/// is closed at once, unserved, and counted in `exflow_telemetry_refused_connections_total`
/// (read once the idle clients have gone: a scrape may itself be refused until the server
/// has seen them go, so only "at least one" is certain); the endpoint then serves again.
#[test]
fn connections_beyond_the_cap_are_closed_and_counted() {
    let daemon = daemon();
    let held: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect(&daemon.metrics).unwrap())
        .collect();
    // The server may still be accepting the 128: try again until one more is refused.
    wait_until(
        "a connection beyond the cap is closed unserved",
        Duration::from_secs(10),
        || {
            let mut extra = TcpStream::connect(&daemon.metrics).unwrap();
            extra
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\nHost: exflow\r\n\r\n");
            let mut reply = Vec::new();
            // Closed unserved: end of file with no reply, or a reset.
            match extra.read_to_end(&mut reply) {
                Ok(_) => reply.is_empty(),
                Err(e) => e.kind() == ErrorKind::ConnectionReset,
            }
        },
    );
    assert!(held.iter().all(still_open));
    drop(held);
    wait_until("the refusals are counted", Duration::from_secs(10), || {
        daemon.metric("exflow_telemetry_refused_connections_total") >= 1.0
    });
    daemon.stop();
}
