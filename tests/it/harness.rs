//! Test harness for the parts that run as processes: `exflow run` as a child, a real
//! Kafka-protocol broker (`EXFLOW_TEST_KAFKA_BROKERS`, e.g. a user's Apache Kafka or the
//! tansu `scripts/test.sh` starts, or else a tansu started here), a Kafka consumer.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};

/// A tansu broker on loopback, stopped when dropped.
pub struct Tansu {
    child: Child,
    pub brokers: String,
}

fn tansu_binary() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let installed = home.join(".cargo/bin/tansu");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("tansu")
    }
}

impl Tansu {
    pub fn start(port: u16) -> Tansu {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu runs (scripts/kafka.sh install puts it in ~/.cargo/bin)");
        let tansu = Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
        };
        wait_until("tansu answers", Duration::from_secs(20), || {
            Command::new(tansu_binary())
                .args(["topic", "list", "--broker", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        tansu
    }
}

impl Tansu {
    /// Sends `signal` to the broker (SIGSTOP / SIGCONT to freeze and thaw it).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on (TCP and UDP), for a broker, whose port the test
/// must choose (racy: the daemon binds port 0 instead).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `condition` until it holds; fails the test with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shared broker of the run: `EXFLOW_TEST_KAFKA_BROKERS`, or one tansu for this
/// process (left to the OS at exit).
pub fn shared_brokers() -> String {
    if let Ok(brokers) = std::env::var("EXFLOW_TEST_KAFKA_BROKERS") {
        return brokers;
    }
    static SHARED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let tansu = Tansu::start(free_port());
            let brokers = tansu.brokers.clone();
            std::mem::forget(tansu);
            brokers
        })
        .clone()
}

/// A topic name of its own for a test.
pub fn topic_name(prefix: &str) -> String {
    format!("{prefix}.{}.{}", std::process::id(), unique())
}

/// Creates a topic of its own for a test.
pub fn create_topic(brokers: &str, prefix: &str, partitions: i32) -> String {
    let topic = topic_name(prefix);
    create_named_topic(brokers, &topic, partitions);
    topic
}

pub fn create_named_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results =
        futures_executor::block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One consumed message.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
    pub headers: HashMap<String, String>,
    pub alert: serde_json::Value,
}

/// Consumes `topic` from the start with a fresh consumer group until `expected` messages
/// arrived and the topic is read to its end, or `timeout` passes.
pub fn consume(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Consumed> {
    let consumer = raw_consumer(brokers, topic);
    drain(&consumer, expected, timeout, |message| {
        let mut headers = HashMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                let value = header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                headers.insert(header.key.to_string(), value);
            }
        }
        Consumed {
            key: key_of(message),
            partition: message.partition(),
            offset: message.offset(),
            headers,
            alert: serde_json::from_slice(message.payload().unwrap_or_default())
                .expect("alerts are JSON"),
        }
    })
}

fn key_of(message: &BorrowedMessage<'_>) -> String {
    message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default()
}

/// A consumer of `topic` from its start, in a fresh group.
pub fn raw_consumer(brokers: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("exflow-test-{}-{}", std::process::id(), unique()),
        )
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// (key, payload) of messages until `expected` arrived and the topic is read to its end,
/// or `timeout` passes.
pub fn consume_raw(
    consumer: &BaseConsumer,
    expected: usize,
    timeout: Duration,
) -> Vec<(String, Vec<u8>)> {
    drain(consumer, expected, timeout, |message| {
        (
            key_of(message),
            message.payload().unwrap_or_default().to_vec(),
        )
    })
}

/// Polls until `expected` messages arrived and every partition the consumer owns reported
/// its end since its last message (so duplicates already written are read too), or
/// `timeout`. The end is the fetch's partition EOF, not ListOffsets: tansu 0.6 answers
/// "latest" with its newest batch's first offset + 1.
fn drain<T>(
    consumer: &BaseConsumer,
    expected: usize,
    timeout: Duration,
    mut convert: impl FnMut(&BorrowedMessage<'_>) -> T,
) -> Vec<T> {
    let mut messages = Vec::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                messages.push(convert(&message));
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(error)) => panic!("consuming: {error}"),
            None => {}
        }
        if messages.len() >= expected && owns_only(consumer, &at_end) {
            break;
        }
    }
    messages
}

/// Whether the consumer owns partitions and each is in `partitions`.
fn owns_only(consumer: &BaseConsumer, partitions: &HashSet<i32>) -> bool {
    consumer.assignment().is_ok_and(|assignment| {
        let owned = assignment.elements();
        !owned.is_empty() && owned.iter().all(|p| partitions.contains(&p.partition()))
    })
}

/// What [`Daemon::loadgen`] ran and saw.
pub struct LoadgenRun {
    /// loadgen's human-readable report, for failure messages.
    pub stdout: String,
    /// loadgen's `--report-json` report.
    pub report: serde_json::Value,
    /// Records loadgen sent.
    pub records: f64,
    /// Datagrams the kernel dropped at the daemon's socket (loadgen's or flushes).
    pub kernel_dropped: f64,
    /// Flush datagrams the harness sent after the run.
    pub flushes: u64,
}

/// `exflow run` as a child process, stopped with SIGTERM (or killed) by the test.
pub struct Daemon {
    child: Option<Child>,
    pub metrics: String,
    pub udp_port: u16,
    log: PathBuf,
    /// The `--ready-file`, removed by the daemon when it stops.
    ready: PathBuf,
}

impl Daemon {
    /// Starts `exflow run` with `config` (TOML) and flags, on ports the kernel picks (port
    /// 0, learnt from `--ready-file`); waits until it serves metrics.
    pub fn start(config: &str, args: &[&str]) -> Daemon {
        let daemon = Daemon::spawn(config, args);
        wait_until("the daemon serves metrics", Duration::from_secs(20), || {
            daemon.scrape().is_some()
        });
        daemon
    }

    /// Starts `exflow run` like [`start`](Self::start) but returns as soon as its sockets
    /// are bound (the ready file is written), before it need answer anything.
    pub fn spawn(config: &str, args: &[&str]) -> Daemon {
        Daemon::spawn_command("run", config, args)
    }

    /// Starts `exflow COMMAND` (`run`, `collect` or `detect`) like [`start`](Self::start).
    pub fn start_command(command: &str, config: &str, args: &[&str]) -> Daemon {
        let daemon = Daemon::spawn_command(command, config, args);
        wait_until(
            "the process serves metrics",
            Duration::from_secs(20),
            || daemon.scrape().is_some(),
        );
        daemon
    }

    /// Starts `exflow COMMAND` like [`spawn`](Self::spawn); `udp_port` is 0 for a command
    /// that receives no UDP (`detect`).
    pub fn spawn_command(command: &str, config: &str, args: &[&str]) -> Daemon {
        let dir = temp_dir("daemon-config");
        let config_path = dir.join("exflow.toml");
        std::fs::write(&config_path, config).unwrap();
        let ready_path = dir.join("ready.json");
        let log = dir.join("exflow.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_exflow"))
            .arg(command)
            .arg("--config")
            .arg(&config_path)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready_path)
            .args([
                "--inside",
                "10.10.0.0/16",
                "--inside",
                "2001:db8:10::/48",
                "--home-country",
                "NL",
            ])
            .args(args)
            .env("EXFLOW_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_until(
            "the daemon has bound its sockets",
            Duration::from_secs(20),
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("exflow {command} exited with {status} at start: {log}");
                }
                ready_path.exists()
            },
        );
        let ready: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ready_path).unwrap()).unwrap();
        let udp_port = ready["listen"][0]
            .as_str()
            .map_or(0, |udp| udp.parse::<std::net::SocketAddr>().unwrap().port());
        Daemon {
            child: Some(child),
            metrics: ready["metrics_listen"].as_str().unwrap().to_string(),
            udp_port,
            log,
            ready: ready_path,
        }
    }

    /// The daemon's metrics, or `None` while it does not answer.
    pub fn scrape(&self) -> Option<HashMap<String, f64>> {
        use exflow::telemetry::scrape::{fetch, samples};
        let page = fetch(self.metrics.parse().ok()?).ok()?;
        Some(
            samples(&page)
                .map(|(name, labels, value)| match labels {
                    "" => (name.to_string(), value),
                    _ => (format!("{name}{{{labels}}}"), value),
                })
                .collect(),
        )
    }

    pub fn metric(&self, name: &str) -> f64 {
        self.scrape()
            .and_then(|m| m.get(name).copied())
            .unwrap_or(-1.0)
    }

    /// Polls until the metric `name` is `value`; past `timeout` fails the test with its
    /// last value (`None`: the scrape failed or lacked it) and the datagrams the kernel
    /// dropped at the daemon's sockets (what a sender faster than a busy machine's daemon
    /// leaves short), so that a timeout says which it was.
    pub fn wait_for_metric(&self, what: &str, name: &str, value: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.scrape().unwrap_or_default();
            let last = metrics.get(name).copied();
            if last == Some(value) {
                return;
            }
            if Instant::now() >= deadline {
                let dropped: f64 = metrics
                    .iter()
                    .filter(|(k, _)| k.starts_with("exflow_source_kernel_dropped_datagrams_total"))
                    .map(|(_, v)| v)
                    .sum();
                panic!(
                    "timed out waiting until {what}: {name} is {last:?}, not {value}; the \
                     kernel dropped {dropped} datagrams at the daemon's sockets"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `exflow loadgen` against the daemon with `args`; asserts that it succeeded and
    /// that every datagram it sent is accounted for within a deadline: received by the
    /// socket or counted as dropped by the kernel. The kernel reports a socket's drops with
    /// the next datagram received (SO_RXQ_OVFL), so drops at the very end of the run would
    /// stay unseen: the harness sends a 5-byte "flush" datagram (not NetFlow: a decode
    /// error of kind `unknown_version`) every second until the sums meet. Loss is not
    /// asserted away, as it may happen on a busy machine, but it is never uncounted.
    pub fn loadgen(&self, args: &[&str]) -> LoadgenRun {
        let report_json = temp_dir("loadgen-report").join("report.json");
        let output = Command::new(env!("CARGO_BIN_EXE_exflow"))
            .arg("loadgen")
            .args(["--target", &format!("127.0.0.1:{}", self.udp_port)])
            .args(["--metrics", &self.metrics])
            .arg("--report-json")
            .arg(&report_json)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report_json).unwrap()).unwrap();
        let counter = |name: &str| {
            report["sent"][name]
                .as_f64()
                .unwrap_or_else(|| panic!("no sent.{name} in the report: {report}"))
        };
        let (records, datagrams) = (counter("records"), counter("datagrams"));
        assert!(records > 0.0 && datagrams > 0.0, "{stdout}");
        let listen = format!("{{listen=\"127.0.0.1:{}\"}}", self.udp_port);
        let received = format!("exflow_source_datagrams_total{listen}");
        let dropped = format!("exflow_source_kernel_dropped_datagrams_total{listen}");
        let flusher = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut flushes = 0u64;
        let mut last_flush: Option<Instant> = None;
        let mut seen = (0.0, 0.0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.0 + seen.1 != datagrams + flushes as f64 {
            assert!(
                Instant::now() < deadline,
                "of {datagrams} datagrams sent and {flushes} flushes, {} received and {} \
                 dropped by the kernel: {stdout}",
                seen.0,
                seen.1
            );
            if last_flush.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                flusher
                    .send_to(b"flush", ("127.0.0.1", self.udp_port))
                    .unwrap();
                flushes += 1;
                last_flush = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(50));
            if let Some(m) = self.scrape() {
                let value = |name: &str| m.get(name).copied().unwrap_or(0.0);
                seen = (value(&received), value(&dropped));
            }
        }
        LoadgenRun {
            stdout,
            report,
            records,
            kernel_dropped: seen.1,
            flushes,
        }
    }

    /// Sends every UDP payload of a capture to the daemon, as the exporter sent them.
    pub fn send_capture(&self, capture: &Path) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        exflow::source::capture::for_each_datagram(capture, |d| {
            socket
                .send_to(d.payload, ("127.0.0.1", self.udp_port))
                .unwrap();
        })
        .unwrap();
    }

    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// A `kB` figure of the daemon's `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
    pub fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
        kib * 1024
    }

    /// Whether the daemon's log (stderr) so far contains `text`.
    pub fn log_contains(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text))
    }

    /// SIGTERM and wait: returns (stdout, log).
    pub fn stop(mut self) -> (String, String) {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let (status, stdout) = wait_with_timeout(&mut child, Duration::from_secs(30));
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "exflow run exited with {status:?}: {log}");
        assert!(!self.ready.exists(), "the ready file outlives the daemon");
        (stdout, log)
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `exflow ARGS` and expects it to exit within `timeout` (killed and failed if not):
/// returns its exit status and stderr.
pub fn exflow_exits(args: &[&str], timeout: Duration) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_exflow"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exflow {args:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, err.join().unwrap())
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> (std::process::ExitStatus, String) {
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).ok();
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "exflow did not stop within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap())
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("exflow-{name}-{}-{}", std::process::id(), unique()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
