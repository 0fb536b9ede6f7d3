//! loadgen: the bench harness operators load-test exflow with. Sends realistic NetFlow v5 /
//! v9 / IPFIX from many simulated exporters (distinct source addresses in 127.0.0.0/8) at a
//! target rate or flat out, reads exflow's `/metrics` before and after, and reports what
//! was sent, received, decoded and dropped at each stage. `--find-max` steps the rate up to
//! the highest one with less than 0.01% loss. Only loopback targets are allowed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::decode::FlowKind;
use crate::synth;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub kind: FlowKind,
    pub exporters: u16,
    /// Records per second; `None` sends flat out.
    pub rate: Option<u64>,
    pub duration: Duration,
    /// Stop after this many records, if sooner.
    pub count: Option<u64>,
    /// Templates re-sent every this many datagrams per exporter.
    pub template_every: u32,
}

/// One exporter's stream: prepared datagrams sent in a cycle, the header's sequence
/// number patched on each send so the collector sees a continuous, loss-free stream.
struct SimulatedExporter {
    socket: UdpSocket,
    datagrams: Vec<(Vec<u8>, u32)>,
    next: usize,
    kind: FlowKind,
    /// v5/IPFIX: records sent; v9: datagrams sent.
    sequence: u32,
}

impl SimulatedExporter {
    fn new(index: u16, spec: &LoadSpec) -> anyhow::Result<Self> {
        let address = exporter_address(index);
        let socket = UdpSocket::bind((address, 0))
            .with_context(|| format!("cannot bind exporter address {address}"))?;
        socket
            .connect(spec.target)
            .with_context(|| format!("cannot reach {}", spec.target))?;
        let records = synth::background_records(8_000, u64::from(index) + 1, 1_710_230_400_000);
        let mut encoded = Vec::new();
        let mut exporter =
            synth::Exporter::new(spec.kind, u32::from(index)).template_every(spec.template_every);
        exporter.encode(&records, 1_710_230_460_000, &mut encoded);
        let datagrams = encoded
            .into_iter()
            .map(|d| {
                let count = synth::record_count(spec.kind, &d);
                (d, count)
            })
            .collect();
        Ok(SimulatedExporter {
            socket,
            datagrams,
            next: 0,
            kind: spec.kind,
            sequence: 0,
        })
    }

    /// Sends the next datagram; returns the records it carried.
    fn send_next(&mut self) -> std::io::Result<u32> {
        let (datagram, records) = &mut self.datagrams[self.next];
        let at = match self.kind {
            FlowKind::NetflowV5 => 16,
            FlowKind::NetflowV9 => 12,
            FlowKind::Ipfix => 8,
        };
        datagram[at..at + 4].copy_from_slice(&self.sequence.to_be_bytes());
        self.socket.send(datagram)?;
        self.sequence = self
            .sequence
            .wrapping_add(if self.kind == FlowKind::NetflowV9 {
                1
            } else {
                *records
            });
        let records = *records;
        self.next = (self.next + 1) % self.datagrams.len();
        Ok(records)
    }
}

/// What one run sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    pub datagrams: u64,
    pub records: u64,
    pub send_errors: u64,
    pub elapsed: Duration,
}

/// Sends per `spec`. Paced in 1 ms slices so the rate holds without busy-waiting.
pub fn send(spec: &LoadSpec) -> anyhow::Result<Sent> {
    if !spec.target.ip().is_loopback() {
        bail!(
            "loadgen only sends to loopback addresses (127.0.0.0/8, ::1), not {}",
            spec.target.ip()
        );
    }
    let mut exporters = (0..spec.exporters.max(1))
        .map(|i| SimulatedExporter::new(i, spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sent = Sent::default();
    let start = Instant::now();
    let limit = spec.count.unwrap_or(u64::MAX);
    let mut turn = 0usize;
    while start.elapsed() < spec.duration && sent.records < limit {
        let allowed = match spec.rate {
            Some(rate) => (start.elapsed().as_secs_f64() * rate as f64) as u64,
            None => u64::MAX,
        };
        if sent.records >= allowed {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        // A burst of up to 64 datagrams round-robin over the exporters, then re-check.
        for _ in 0..64 {
            if sent.records >= allowed || sent.records >= limit {
                break;
            }
            let count = exporters.len();
            let exporter = &mut exporters[turn % count];
            turn += 1;
            match exporter.send_next() {
                Ok(records) => {
                    sent.datagrams += 1;
                    sent.records += u64::from(records);
                }
                Err(_) => sent.send_errors += 1,
            }
        }
    }
    sent.elapsed = start.elapsed();
    Ok(sent)
}

/// Fetches a Prometheus text page and sums each metric over its labels.
pub fn scrape(address: SocketAddr) -> anyhow::Result<HashMap<String, f64>> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .with_context(|| format!("cannot reach exflow's metrics at {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: exflow\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut sums = HashMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        if let Ok(value) = value.parse::<f64>() {
            *sums.entry(name.to_string()).or_insert(0.0) += value;
        }
    }
    Ok(sums)
}

/// Stage by stage, what exflow did with one run (differences of its counters).
#[derive(Debug, Clone, Copy, Default)]
pub struct Received {
    pub datagrams: f64,
    pub records: f64,
    pub kernel_dropped: f64,
    pub decode_errors: f64,
    pub lost_records: f64,
}

impl Received {
    pub fn between(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> Received {
        let delta = |name: &str| {
            after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
        };
        Received {
            datagrams: delta("exflow_source_datagrams_total"),
            records: delta("exflow_decode_records_total"),
            kernel_dropped: delta("exflow_source_kernel_dropped_datagrams_total"),
            decode_errors: delta("exflow_decode_errors_total"),
            lost_records: delta("exflow_decode_lost_records_total"),
        }
    }

    /// Fraction of sent records that were not decoded.
    pub fn loss(&self, sent: &Sent) -> f64 {
        if sent.records == 0 {
            0.0
        } else {
            (1.0 - self.records / sent.records as f64).max(0.0)
        }
    }
}

/// Waits until exflow's decoded-record counter stops moving (the queue has drained).
pub fn settle(metrics: SocketAddr) -> anyhow::Result<HashMap<String, f64>> {
    let mut last = scrape(metrics)?;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = scrape(metrics)?;
        if now.get("exflow_decode_records_total") == last.get("exflow_decode_records_total") {
            return Ok(now);
        }
        last = now;
    }
}

/// The source address of simulated exporter `index`: 127.1.0.1, 127.1.0.2, ... one each.
pub fn exporter_address(index: u16) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (index / 250) as u8,
        0,
        1 + (index % 250) as u8,
    ))
}
