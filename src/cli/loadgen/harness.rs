//! cli: the bench harness behind `exflow loadgen` (the binary's, not the library's). Sends realistic NetFlow v5 /
//! v9 / IPFIX from many simulated exporters (distinct source addresses in 127.0.0.0/8) at a
//! target rate or flat out, reads exflow's `/metrics` before and after, and reports what
//! was sent, received, decoded and dropped at each stage. `--find-max` steps the rate up to
//! the highest one with less than 0.01% loss. Only loopback targets are allowed.
//!
//! Exfiltration scenarios ([`Scenario`]) can be injected at known times into one
//! exporter's stream; a [`Watch`] thread polls `/metrics` until the scenario's rule counts
//! an alert and reports how long that took.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::scenario::Scenario;
use exflow::decode::FlowKind;
use exflow::synth;
use exflow::telemetry::scrape::{fetch, samples, sum_where};
use exflow::wire::emit::{self, Exporter};

/// The event time of the background records (and of injected scenarios), ms.
const EVENT_START_MS: u64 = 1_710_230_400_000;
/// The export time in every header, ms.
const EXPORT_MS: u64 = 1_710_230_460_000;

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
    /// Scenarios to inject, in the order of their times.
    pub scenarios: Vec<Planned>,
}

/// A scenario to inject this far into the run: `NAME@SECONDS` on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    pub scenario: Scenario,
    pub at: Duration,
}

impl FromStr for Planned {
    type Err = String;

    fn from_str(text: &str) -> Result<Planned, String> {
        let (name, at) = text
            .split_once('@')
            .ok_or_else(|| format!("expected NAME@SECONDS, e.g. bulk_egress@2, not {text:?}"))?;
        let scenario = Scenario::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.rule()).collect();
            format!("no scenario {name:?} (there are: {})", known.join(", "))
        })?;
        let at = at
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("{at:?} is not a number of seconds"))?;
        Ok(Planned { scenario, at })
    }
}

/// One scenario as it was sent.
#[derive(Debug, Clone, Copy)]
pub struct Injected {
    pub scenario: Scenario,
    /// The host that exfiltrates: a different one for every scenario of every run, so the
    /// daemon's suppression and rule state (from earlier runs too) do not hide it.
    pub inside: Ipv4Addr,
    /// The simulated exporter that sent it.
    pub exporter: IpAddr,
    /// When its last datagram was sent, and how far into the run.
    pub sent: Instant,
    pub sent_after: Duration,
    /// Whether every datagram of it was sent without an error.
    pub sent_ok: bool,
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
        let records = background(index);
        let exporter =
            Exporter::new(spec.kind, u32::from(index)).template_every(spec.template_every);
        Ok(SimulatedExporter {
            socket,
            datagrams: encode(spec.kind, exporter, &records),
            next: 0,
            kind: spec.kind,
            sequence: 0,
        })
    }

    /// Sends the next datagram; returns the records it carried.
    fn send_next(&mut self) -> std::io::Result<u32> {
        let (datagram, records) = &mut self.datagrams[self.next];
        let records = *records;
        stamp_and_send(
            &self.socket,
            self.kind,
            &mut self.sequence,
            datagram,
            records,
        )?;
        self.next = (self.next + 1) % self.datagrams.len();
        Ok(records)
    }
}

/// Records per simulated exporter, sent in a cycle.
const BACKGROUND_RECORDS: usize = 8_000;

/// One exporter's background: ordinary traffic that must raise no alert. The harness sends
/// every conversation again each cycle (tens of times a second at millions of records a
/// second) on the same event time, so each record carries web-sized volume (64 to 1564
/// bytes, a packet or two): at full speed a pair then adds up to tens of kB a second, far
/// from `bulk_egress`'s 100 MB an hour, and what is measured is the collector, not an
/// alert storm on its sink.
fn background(index: u16) -> Vec<exflow::decode::FlowRecord> {
    let mut records =
        synth::background_records(BACKGROUND_RECORDS, u64::from(index) + 1, EVENT_START_MS);
    for record in &mut records {
        record.bytes = 64 + record.bytes / 1000;
        record.packets = 1 + record.packets / 500;
    }
    records
}

/// Encodes records into datagrams, each with the records it carries.
fn encode(
    kind: FlowKind,
    mut exporter: Exporter,
    records: &[exflow::decode::FlowRecord],
) -> Vec<(Vec<u8>, u32)> {
    let mut encoded = Vec::new();
    exporter.encode(records, EXPORT_MS, &mut encoded);
    encoded
        .into_iter()
        .map(|d| {
            let count = emit::record_count(kind, &d);
            (d, count)
        })
        .collect()
}

/// Writes the exporter's next sequence number into a datagram's header, sends it, and
/// moves the sequence on (v5/IPFIX count records, v9 datagrams), so the collector sees one
/// continuous stream whatever is interleaved.
fn stamp_and_send(
    socket: &UdpSocket,
    kind: FlowKind,
    sequence: &mut u32,
    datagram: &mut [u8],
    records: u32,
) -> std::io::Result<()> {
    let at = match kind {
        FlowKind::NetflowV5 | FlowKind::NetflowV1 | FlowKind::NetflowV7 => 16,
        FlowKind::NetflowV9 => 12,
        FlowKind::Ipfix => 8,
        FlowKind::Sflow5 => 16,
    };
    datagram[at..at + 4].copy_from_slice(&sequence.to_be_bytes());
    socket.send(datagram)?;
    *sequence = sequence.wrapping_add(if matches!(kind, FlowKind::NetflowV9 | FlowKind::Sflow5) {
        1
    } else {
        records
    });
    Ok(())
}

/// The datagrams of one scenario from simulated exporter `index`: encoded afresh, so they
/// carry the templates first (the same ones as the background's), then the data.
fn scenario_datagrams(
    kind: FlowKind,
    index: u16,
    scenario: Scenario,
    inside: Ipv4Addr,
) -> Vec<(Vec<u8>, u32)> {
    encode(
        kind,
        Exporter::new(kind, u32::from(index)),
        &scenario.records(inside, EVENT_START_MS),
    )
}

/// The exfiltrating host of scenario `instance` of run `run`: in 10.0.0.0/8, as the
/// background's inside hosts are (whose conversations never go to the scenarios' address).
fn scenario_host(run: u32, instance: usize) -> Ipv4Addr {
    let host = run.wrapping_add((instance as u32).wrapping_mul(7919)) & 0x00ff_ffff;
    Ipv4Addr::from(0x0a00_0000 | host)
}

/// A number that differs between runs (wall clock and process id), for [`scenario_host`].
fn run_number() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mixed = (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 32) as u32
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
    send_injecting(spec, |_| {})
}

/// [`send`], injecting `spec.scenarios` between bursts when their time comes, each from
/// one exporter (the i-th scenario from exporter i), stamped with that exporter's sequence
/// numbers; `injected` is told of each right after its last datagram.
pub fn send_injecting(spec: &LoadSpec, mut injected: impl FnMut(Injected)) -> anyhow::Result<Sent> {
    if !spec.target.ip().is_loopback() {
        bail!(
            "loadgen only sends to loopback addresses (127.0.0.0/8, ::1), not {}",
            spec.target.ip()
        );
    }
    let mut exporters = (0..spec.exporters.max(1))
        .map(|i| SimulatedExporter::new(i, spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let run = run_number();
    let mut sent = Sent::default();
    let start = Instant::now();
    let limit = spec.count.unwrap_or(u64::MAX);
    let mut turn = 0usize;
    let mut next_scenario = 0;
    while start.elapsed() < spec.duration && sent.records < limit {
        while let Some(planned) = spec.scenarios.get(next_scenario) {
            if start.elapsed() < planned.at {
                break;
            }
            let index = next_scenario % exporters.len();
            let inside = scenario_host(run, next_scenario);
            let exporter = &mut exporters[index];
            let mut sent_ok = true;
            for (mut datagram, records) in
                scenario_datagrams(spec.kind, index as u16, planned.scenario, inside)
            {
                match stamp_and_send(
                    &exporter.socket,
                    exporter.kind,
                    &mut exporter.sequence,
                    &mut datagram,
                    records,
                ) {
                    Ok(()) => {
                        sent.datagrams += 1;
                        sent.records += u64::from(records);
                    }
                    Err(_) => {
                        sent.send_errors += 1;
                        sent_ok = false;
                    }
                }
            }
            injected(Injected {
                scenario: planned.scenario,
                inside,
                exporter: exporter_address(index as u16),
                sent: Instant::now(),
                sent_after: start.elapsed(),
                sent_ok,
            });
            next_scenario += 1;
        }
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
    let page = fetch(address)?;
    let mut sums = HashMap::new();
    for (name, _, value) in samples(&page) {
        *sums.entry(name.to_string()).or_insert(0.0) += value;
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
    /// Decoded, then dropped at a full flow-table shard queue.
    pub queue_dropped: f64,
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
            queue_dropped: delta("exflow_flow_queue_dropped_records_total"),
        }
    }

    /// Fraction of sent records that did not reach the flow tables (not decoded, or
    /// dropped at a full shard queue).
    pub fn loss(&self, sent: &Sent) -> f64 {
        if sent.records == 0 {
            0.0
        } else {
            (1.0 - (self.records - self.queue_dropped) / sent.records as f64).max(0.0)
        }
    }
}

/// How long [`settle`] waits for a run's datagrams to be accounted for.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`settle`] reads `/metrics`.
const SETTLE_POLL: Duration = Duration::from_millis(100);

/// What [`settle`] saw last.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The last scrape.
    pub metrics: HashMap<String, f64>,
    /// Datagrams of the run neither received nor dropped by the kernel (0 when settled).
    pub unaccounted_datagrams: f64,
    /// Datagrams received and not yet decoded or rejected (0 when settled).
    pub in_flight_datagrams: f64,
}

impl Settled {
    pub fn is_settled(&self) -> bool {
        self.unaccounted_datagrams <= 0.0 && self.in_flight_datagrams <= 0.0
    }
}

/// Waits until exflow's own counters account for every datagram of a run that `sent`,
/// counted from the scrape `before` it: each one received or dropped by the kernel
/// (received + kernel-dropped >= sent, as differences), and every datagram received
/// decoded or rejected (none still in a receive worker). Gives up after `timeout` and
/// returns what it saw: a kernel drop is reported with the next datagram its socket takes,
/// so drops at the very end of a run can stay unreported until then.
pub fn settle(
    metrics: SocketAddr,
    before: &HashMap<String, f64>,
    sent: &Sent,
    timeout: Duration,
) -> anyhow::Result<Settled> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = scrape(metrics)?;
        let value = |name: &str| now.get(name).copied().unwrap_or(0.0);
        let delta = |name: &str| value(name) - before.get(name).copied().unwrap_or(0.0);
        let received = value("exflow_source_datagrams_total");
        let unaccounted = sent.datagrams as f64
            - delta("exflow_source_datagrams_total")
            - delta("exflow_source_kernel_dropped_datagrams_total");
        // A process that does not decode (no such counter) has nothing in flight.
        let in_flight = if now.contains_key("exflow_decode_datagrams_total") {
            received
                - value("exflow_decode_datagrams_total")
                - value("exflow_source_rejected_datagrams_total")
        } else {
            0.0
        };
        let settled = Settled {
            metrics: now,
            unaccounted_datagrams: unaccounted.max(0.0),
            in_flight_datagrams: in_flight.max(0.0),
        };
        if settled.is_settled() || Instant::now() >= deadline {
            return Ok(settled);
        }
        std::thread::sleep(SETTLE_POLL);
    }
}

/// The counter the watch reads, by its `rule` label.
const ALERTS: &str = "exflow_detect_alerts_total";
/// How often the watch polls `/metrics` while a scenario is due or not yet detected.
const WATCH_POLL: Duration = Duration::from_millis(10);
/// The watch starts polling this long before a scenario is due, for a baseline.
const WATCH_LEAD: Duration = Duration::from_millis(300);

/// What became of one injected scenario.
#[derive(Debug, Clone, Copy)]
pub struct Detection {
    pub injected: Injected,
    /// From its last datagram sent to the end of the first scrape that counted its alert.
    pub latency: Option<Duration>,
}

/// What the watch saw.
#[derive(Debug, Clone, Default)]
pub struct Detections {
    /// In the order the scenarios were sent.
    pub scenarios: Vec<Detection>,
    /// Per rule watched: how much its alert counter rose while watched. More than the
    /// scenarios of the rule means other traffic raised it too.
    pub rises: Vec<(&'static str, f64)>,
    /// The last error reading `/metrics`, if any.
    pub last_error: Option<String>,
}

/// Watches exflow's alert counters on a thread of its own while scenarios are injected, so
/// the send pacing is not disturbed: polls `/metrics` every 10 ms from shortly before a
/// scenario is due until its rule's counter rises past what it was before the scenario was
/// sent (plus one for each earlier scenario of the rule not yet counted then).
pub struct Watch {
    sender: mpsc::Sender<Injected>,
    thread: std::thread::JoinHandle<Detections>,
}

impl Watch {
    /// Starts watching for `plan` (times from now); after the sending ends, scenarios get
    /// `timeout` more to be detected.
    pub fn start(
        metrics: SocketAddr,
        plan: &[Planned],
        timeout: Duration,
    ) -> anyhow::Result<Watch> {
        let mut rules: Vec<&'static str> = plan.iter().map(|p| p.scenario.rule()).collect();
        rules.sort_unstable();
        rules.dedup();
        let first = Scrape::take(metrics, &rules)?;
        let due = plan.iter().map(|p| p.at).collect();
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("loadgen-watch".into())
            .spawn(move || watch(metrics, rules, first, due, receiver, timeout))?;
        Ok(Watch { sender, thread })
    }

    /// Tells the watch a scenario was sent.
    pub fn injected(&self, injected: Injected) {
        let _ = self.sender.send(injected);
    }

    /// The sending is over: waits for the scenarios still undetected, up to the timeout.
    pub fn finish(self) -> Detections {
        drop(self.sender);
        self.thread.join().expect("the watch thread does not panic")
    }
}

/// One read of the alert counters of the rules watched.
struct Scrape {
    done: Instant,
    alerts: Vec<f64>,
}

impl Scrape {
    fn take(metrics: SocketAddr, rules: &[&str]) -> anyhow::Result<Scrape> {
        let page = fetch(metrics)?;
        Ok(Scrape {
            done: Instant::now(),
            alerts: rules
                .iter()
                .map(|rule| sum_where(&page, ALERTS, "rule", rule))
                .collect(),
        })
    }
}

/// A scenario being watched: detected at the first scrape from `from` on whose counter
/// for `rule` reached `threshold`.
struct Watched {
    injected: Injected,
    rule: usize,
    threshold: f64,
    from: usize,
    latency: Option<Duration>,
}

fn watch(
    metrics: SocketAddr,
    rules: Vec<&'static str>,
    first: Scrape,
    due: Vec<Duration>,
    receiver: mpsc::Receiver<Injected>,
    timeout: Duration,
) -> Detections {
    let started = Instant::now();
    let mut scrapes = vec![first];
    let mut watched: Vec<Watched> = Vec::new();
    // Per rule, the count that the latest scenario's alert makes.
    let mut claimed = vec![0.0f64; rules.len()];
    let mut deadline = None;
    let mut last_error = None;
    loop {
        loop {
            match receiver.try_recv() {
                Ok(injected) => {
                    let rule = rules
                        .iter()
                        .position(|r| *r == injected.scenario.rule())
                        .expect("every planned rule is watched");
                    // The last scrape that ended before the scenario was sent cannot count it.
                    let base = scrapes
                        .iter()
                        .rposition(|s| s.done < injected.sent)
                        .unwrap_or(0);
                    let threshold = scrapes[base].alerts[rule].max(claimed[rule]) + 1.0;
                    if injected.sent_ok {
                        claimed[rule] = threshold;
                    }
                    watched.push(Watched {
                        injected,
                        rule,
                        threshold,
                        from: base + 1,
                        latency: None,
                    });
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    deadline.get_or_insert(Instant::now() + timeout);
                    break;
                }
            }
        }
        for w in watched
            .iter_mut()
            .filter(|w| w.latency.is_none() && w.injected.sent_ok)
        {
            if let Some(s) = scrapes[w.from..]
                .iter()
                .find(|s| s.alerts[w.rule] >= w.threshold)
            {
                w.latency = Some(s.done.saturating_duration_since(w.injected.sent));
            }
            w.from = scrapes.len();
        }
        let waiting = watched
            .iter()
            .any(|w| w.latency.is_none() && w.injected.sent_ok);
        if deadline.is_some_and(|d| !waiting || Instant::now() >= d) {
            break;
        }
        let soon = due
            .get(watched.len())
            .is_some_and(|&at| started.elapsed() + WATCH_LEAD >= at);
        if waiting || soon {
            match Scrape::take(metrics, &rules) {
                Ok(scrape) => scrapes.push(scrape),
                Err(error) => last_error = Some(format!("{error:#}")),
            }
        }
        std::thread::sleep(WATCH_POLL);
    }
    let last = scrapes.last().expect("the first scrape is there");
    Detections {
        scenarios: watched
            .iter()
            .map(|w| Detection {
                injected: w.injected,
                latency: w.latency,
            })
            .collect(),
        rises: rules
            .iter()
            .enumerate()
            .map(|(i, rule)| (*rule, last.alerts[i] - scrapes[0].alerts[i]))
            .collect(),
        last_error,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use exflow::config::Config;
    use exflow::pipeline::Pipeline;
    use std::io::{Read, Write};

    #[test]
    fn scenarios_parse_as_name_at_seconds() {
        let planned: Planned = "long_lived_foreign@2.5".parse().unwrap();
        assert_eq!(
            planned,
            Planned {
                scenario: Scenario::LongLivedForeign,
                at: Duration::from_millis(2500)
            }
        );
        for bad in ["bulk_egress", "bulk_egress@", "bulk_egress@-1", "nope@1"] {
            assert!(bad.parse::<Planned>().is_err(), "{bad}");
        }
    }

    /// The harness's own stream, a scenario injected into it, run through the pipeline with
    /// the default configuration: the rule fires once, for the injected host, with no
    /// record missing by sequence, no template miss, and event time where the background's is.
    #[test]
    fn an_injected_scenario_fires_its_rule_without_loss_or_template_miss() {
        for kind in [FlowKind::NetflowV5, FlowKind::NetflowV9, FlowKind::Ipfix] {
            let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
            collector
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let spec = LoadSpec {
                target: collector.local_addr().unwrap(),
                kind,
                exporters: 2,
                rate: Some(200_000),
                duration: Duration::from_secs(5),
                count: Some(2_000),
                template_every: 64,
                scenarios: vec![Planned {
                    scenario: Scenario::BulkEgress,
                    at: Duration::from_millis(4),
                }],
            };
            let (done, expected) = mpsc::channel();
            let receiving = std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                let (mut datagrams, mut want) = (Vec::new(), None);
                let mut buffer = [0u8; 2048];
                while want != Some(datagrams.len()) {
                    assert!(Instant::now() < deadline, "{} received", datagrams.len());
                    want = want.or(expected.try_recv().ok());
                    if let Ok((n, from)) = collector.recv_from(&mut buffer) {
                        datagrams.push((from.ip(), buffer[..n].to_vec()));
                    }
                }
                datagrams
            });
            let mut injected = Vec::new();
            let sent = send_injecting(&spec, |i| injected.push(i)).unwrap();
            done.send(sent.datagrams as usize).unwrap();
            let datagrams = receiving.join().unwrap();
            assert_eq!(injected.len(), 1, "{kind:?}");
            assert!(injected[0].sent_ok);
            assert_eq!(injected[0].exporter, exporter_address(0));

            let config = Config::default();
            let mut pipeline = Pipeline::new(&config, config.enricher().unwrap(), 1);
            let mut alerts = Vec::new();
            for (exporter, datagram) in &datagrams {
                pipeline.push_datagram(*exporter, 1, datagram, &mut alerts);
            }
            let fired: Vec<_> = alerts
                .iter()
                .filter(|a| a.rule == "bulk_egress")
                .map(|a| a.inside_addr)
                .collect();
            assert_eq!(fired, [IpAddr::from(injected[0].inside)], "{kind:?}");
            let decode = pipeline.counters().decode;
            assert_eq!(decode.records, sent.records, "{kind:?}");
            assert_eq!(
                (
                    decode.lost_records,
                    decode.lost_datagrams,
                    decode.template_misses
                ),
                (0, 0, 0),
                "{kind:?}"
            );
            assert!(pipeline.now_ms() < EVENT_START_MS + 60_000, "{kind:?}");
        }
    }

    /// A loopback `/metrics` that serves the page `page` makes at each request.
    fn serve_page(page: impl Fn() -> String + Send + 'static) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let response = format!("HTTP/1.1 200 OK\r\n\r\n{}", page());
                let _ = stream.write_all(response.as_bytes());
            }
        });
        address
    }

    /// A loopback `/metrics` that serves one bulk_egress alert counter the test sets.
    fn fake_metrics(alerts: Arc<AtomicU64>) -> SocketAddr {
        serve_page(move || {
            format!(
                "exflow_detect_alerts_total{{rule=\"bulk_egress\",severity=\"high\"}} {}\n",
                alerts.load(Ordering::SeqCst)
            )
        })
    }

    /// A daemon's source and decode counters, as the test sets them.
    #[derive(Default)]
    struct Counters {
        received: AtomicU64,
        kernel_dropped: AtomicU64,
        decoded: AtomicU64,
    }

    fn counters_page(counters: Arc<Counters>) -> SocketAddr {
        serve_page(move || {
            format!(
                "exflow_source_datagrams_total{{listen=\"127.0.0.1:1\"}} {}\n\
                 exflow_source_kernel_dropped_datagrams_total{{listen=\"127.0.0.1:1\"}} {}\n\
                 exflow_source_rejected_datagrams_total 0\n\
                 exflow_decode_datagrams_total {}\n",
                counters.received.load(Ordering::SeqCst),
                counters.kernel_dropped.load(Ordering::SeqCst),
                counters.decoded.load(Ordering::SeqCst),
            )
        })
    }

    /// settle returns once every datagram sent is received or dropped by the kernel and
    /// every one received is decoded, not at the first unchanged scrape; the metrics it
    /// returns are those of that moment.
    #[test]
    fn settle_waits_until_the_counters_account_for_every_datagram() {
        let counters = Arc::new(Counters::default());
        counters.received.store(10, Ordering::SeqCst);
        counters.decoded.store(10, Ordering::SeqCst);
        let metrics = counters_page(counters.clone());
        let before = scrape(metrics).unwrap();
        let sent = Sent {
            datagrams: 100,
            ..Sent::default()
        };
        // 90 received, 5 dropped by the kernel, 95 decoded: 5 datagrams still on their way.
        counters.received.store(100, Ordering::SeqCst);
        counters.kernel_dropped.store(5, Ordering::SeqCst);
        counters.decoded.store(95, Ordering::SeqCst);
        let pending = settle(metrics, &before, &sent, Duration::from_millis(300)).unwrap();
        assert!(!pending.is_settled());
        assert_eq!(
            (pending.unaccounted_datagrams, pending.in_flight_datagrams),
            (5.0, 5.0)
        );
        let late = {
            let counters = counters.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(400));
                counters.received.store(105, Ordering::SeqCst);
                counters.decoded.store(105, Ordering::SeqCst);
            })
        };
        let settled = settle(metrics, &before, &sent, Duration::from_secs(20)).unwrap();
        late.join().unwrap();
        assert!(settled.is_settled());
        assert_eq!(settled.metrics["exflow_decode_datagrams_total"], 105.0);
    }
    fn injected_now(scenario: Scenario) -> Injected {
        Injected {
            scenario,
            inside: Ipv4Addr::new(10, 0, 0, 1),
            exporter: exporter_address(0),
            sent: Instant::now(),
            sent_after: Duration::ZERO,
            sent_ok: true,
        }
    }

    /// Alerts counted before a scenario was sent do not detect it; one more does, and a
    /// second scenario of the same rule needs a second one.
    #[test]
    fn the_watch_waits_for_a_rise_past_the_baseline() {
        let alerts = Arc::new(AtomicU64::new(5));
        let metrics = fake_metrics(alerts.clone());
        let plan = [Planned {
            scenario: Scenario::BulkEgress,
            at: Duration::ZERO,
        }; 2];
        let watch = Watch::start(metrics, &plan, Duration::from_millis(300)).unwrap();
        watch.injected(injected_now(Scenario::BulkEgress));
        watch.injected(injected_now(Scenario::BulkEgress));
        alerts.store(6, Ordering::SeqCst);
        let detections = watch.finish();
        let latencies: Vec<bool> = detections
            .scenarios
            .iter()
            .map(|d| d.latency.is_some())
            .collect();
        assert_eq!(
            latencies,
            [true, false],
            "the second waited for a 7th alert"
        );
        assert_eq!(detections.rises, [("bulk_egress", 1.0)]);
    }
}
