#!/usr/bin/env bash
# Soak: `exflow run` for DURATION seconds under legitimate traffic with injected
# exfiltration (`exflow loadgen --scenario`, a bulk_egress and a long_lived_foreign every
# 20 s) mixed with hostile datagrams from 16 other loopback senders: random bytes, valid
# headers with truncated bodies, sets whose lengths lie, and 60 kB datagrams. Alerts go to
# Kafka (a tansu broker started here, on loopback) and the broker is killed (SIGKILL) at a
# quarter of the run, while alerts still come often, and restarted 10 s later (memory
# storage: empty, the topic is recreated); a consumer reads the topic throughout. Reports alerts raised vs acknowledged vs read back
# (each alert id once?), RSS sampled every 5 s, and every drop and error counter that moved.
# To give the sink a load, `watchlist` reports any traffic to Brazil (`--watch-country BR`,
# min_bytes 1).
#
#   benches/soak.sh [DURATION_S] [RATE_RECORDS_PER_S] [HOSTILE_DATAGRAMS_PER_S]
#                   defaults 120 50000 2000
#
# EXFLOW=path/to/exflow picks the binary (default: target/release/exflow, built if
# missing); TANSU=path/to/tansu the broker (default ~/.cargo/bin/tansu, see
# scripts/kafka.sh). The consumer is Python's confluent-kafka (`pip install
# confluent-kafka`). KAFKA=0, or either missing, runs the soak with the file sink and no
# broker. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-120}
RATE=${2:-50000}
HOSTILE=${3:-2000}
if [[ -z ${EXFLOW:-} ]]; then
  [[ -x target/release/exflow ]] || cargo build --release --quiet
  EXFLOW=target/release/exflow
fi
TANSU=${TANSU:-$HOME/.cargo/bin/tansu}
kafka=${KAFKA:-1}
if [[ $kafka == 1 ]] && ! { [[ -x $TANSU ]] && python3 -c 'import confluent_kafka' 2>/dev/null; }; then
  echo "no tansu at $TANSU or no python3 confluent_kafka: the file sink, no broker" >&2
  kafka=0
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # The broker the restart started (in a subshell, so not in `pids`).
  [[ -s $work/broker.pid ]] && kill "$(cat "$work/broker.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

scrape() { curl -s --max-time 5 "http://$metrics/metrics"; }
value() { # sum of every sample of metric $1 (any labels) in scrape text on stdin
  awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%d\n", s}'
}

broker_pid=
start_broker() {
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$broker_port" \
    --advertised-listener-url "tcp://127.0.0.1:$broker_port" \
    --storage-engine memory://tansu/ >>"$work/tansu.log" 2>&1 &
  broker_pid=$!
  echo "$broker_pid" >"$work/broker.pid"
  for _ in $(seq 200); do
    "$TANSU" topic list --broker "tcp://127.0.0.1:$broker_port" >/dev/null 2>&1 && break
    sleep 0.05
  done
  "$TANSU" topic create "$topic" --broker "tcp://127.0.0.1:$broker_port" --partitions 3 >/dev/null
}
if [[ $kafka == 1 ]]; then
  broker_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  topic=exflow.alerts.soak
  start_broker
  echo "[rules.watchlist]
min_bytes = 1

[sink.kafka]
brokers = \"127.0.0.1:$broker_port\"
topic = \"$topic\"
spool_dir = \"$work/spool\"
message_timeout_ms = 3000" >"$work/exflow.toml"
  watch=(--watch-country BR)
  # Reads the topic throughout (a new consumer reads the recreated topic from its start once
  # $work/consumer.restart exists) until $work/consumer.stop exists and every partition is
  # read to its end; prints messages, distinct alert ids and ids read at two offsets.
  python3 - "127.0.0.1:$broker_port" "$topic" "$work/consumer.stop" >"$work/consumer.txt" 2>"$work/consumer.log" <<'EOF' &
import os, sys
from confluent_kafka import Consumer, KafkaError
brokers, topic, stop = sys.argv[1:]
restart = stop.replace("stop", "restart")
def consumer(generation):
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"exflow-soak-{os.getpid()}-{generation}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": True,
                  "auto.commit.interval.ms": 500, "enable.partition.eof": True,
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                  "topic.metadata.refresh.interval.ms": 1000, "log_level": 0})
    c.subscribe([topic])
    return c
c, restarted = consumer(0), False
seen, ids, at_end = set(), set(), set()
from_first = 0
while True:
    if not restarted and os.path.exists(restart):
        c.close()
        from_first = len(ids)
        c, restarted, at_end = consumer(1), True, set()
    m = c.poll(0.2)
    if m is not None and m.error() is None:
        at_end.discard(m.partition())
        alert_id = m.value().split(b'"alert_id":"', 1)[1].split(b'"', 1)[0]
        # A re-read after a rebalance has the same offset; a re-sent alert does not.
        seen.add((m.partition(), m.offset(), alert_id))
        ids.add(alert_id)
    elif m is not None and m.error().code() == KafkaError._PARTITION_EOF:
        at_end.add(m.partition())
    elif m is None and os.path.exists(stop) and len(at_end) >= 3:
        break
print(f"{len(seen)} {len(ids)} {len(seen) - len(ids)} {from_first}")
EOF
  consumer_pid=$!
  pids+=("$consumer_pid")
else
  echo "[sink]
file = \"$work/alerts.jsonl\"" >"$work/exflow.toml"
  watch=()
fi
EXFLOW_LOG=warn "$EXFLOW" run --config "$work/exflow.toml" --inside 10.0.0.0/8 \
  --home-country NL "${watch[@]}" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --ready-file "$work/ready.json" >/dev/null 2>"$work/exflow.log" &
exflow_pid=$!
pids+=("$exflow_pid")
for _ in $(seq 100); do [[ -s $work/ready.json ]] && break; sleep 0.1; done
read -r target metrics < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["listen"][0], r["metrics_listen"])' "$work/ready.json")
echo "$($EXFLOW --version) pid $exflow_pid: udp $target, metrics $metrics"
echo "soak: ${DURATION} s, legitimate ${RATE} records/s, hostile ${HOSTILE} datagrams/s, $([[ $kafka == 1 ]] && echo "Kafka on 127.0.0.1:$broker_port, killed at $((DURATION / 4)) s" || echo "file sink")"

# Hostile senders: 16 loopback addresses, a mix of what a broken or malicious exporter sends.
python3 - "$target" "$DURATION" "$HOSTILE" >"$work/hostile.txt" <<'EOF' &
import os, random, socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
duration, rate = float(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(16):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((f"127.2.0.{i + 1}", 0))
    socks.append(s)
def ipfix(body, length=None):
    return struct.pack("!HHIII", 10, length or 16 + len(body), int(time.time()), 1, 7) + body
kinds = {
    "random": lambda: os.urandom(random.randint(1, 1500)),
    "v5 truncated": lambda: struct.pack("!HHIIIIBBH", 5, 30, 1, 0, 0, 0, 0, 0, 0) + os.urandom(100),
    "v9 truncated": lambda: struct.pack("!HHIIII", 9, 10, 1, 0, 0, 0) + os.urandom(7),
    "ipfix length lies": lambda: ipfix(os.urandom(64), length=1400),
    "ipfix set length lies": lambda: ipfix(struct.pack("!HH", 2, 60000) + os.urandom(40)),
    "ipfix data without template": lambda: ipfix(struct.pack("!HH", 999, 84) + os.urandom(80)),
    "oversized 60 kB": lambda: ipfix(os.urandom(60000 - 16)),
}
names = list(kinds)
sent = dict.fromkeys(names, 0)
start = time.monotonic()
n = 0
while time.monotonic() - start < duration:
    name = names[n % len(names)]
    try:
        socks[n % 16].sendto(kinds[name](), (host, int(port)))
        sent[name] += 1
    except OSError:
        pass
    n += 1
    # Pace to `rate`, sleeping in 10 ms steps.
    ahead = n / rate - (time.monotonic() - start)
    if ahead > 0.01:
        time.sleep(ahead)
print(", ".join(f"{k} {v}" for k, v in sent.items()), f"= {sum(sent.values())} datagrams")
EOF
hostile_pid=$!
pids+=("$hostile_pid")

# RSS and the alerts the sink took, every 5 s.
(
  while kill -0 "$exflow_pid" 2>/dev/null; do
    taken=$(scrape | value exflow_sink_alerts_total)
    awk -v t="$SECONDS" -v a="$taken" '/^VmRSS/ {printf "%d s %d MB %d alerts\n", t, $2 / 1024, a}' "/proc/$exflow_pid/status"
    sleep 5
  done
) >"$work/rss.txt" 2>/dev/null &
pids+=($!)

# The broker restart: SIGKILL at a quarter of the run, back (empty) 10 s later.
if [[ $kafka == 1 ]]; then
  (
    sleep $((DURATION / 4))
    kill -KILL "$broker_pid"
    acked=$(scrape | value exflow_sink_kafka_delivered_alerts_total)
    echo "$acked" >"$work/acked-at-kill"
    echo "killed at $SECONDS s with $acked alerts acknowledged"
    sleep 10
    start_broker
    touch "$work/consumer.restart"
    echo "restarted at $SECONDS s"
  ) >"$work/restart.txt" 2>&1 &
  restarter=$!
fi

scenarios=()
for ((t = 5; t + 5 < DURATION; t += 20)); do
  scenarios+=(--scenario "bulk_egress@$t" --scenario "long_lived_foreign@$((t + 3))")
done
"$EXFLOW" loadgen --target "$target" --metrics "$metrics" --rate "$RATE" \
  --duration "$DURATION" --exporters 8 --detect-timeout 20 "${scenarios[@]}" \
  --report-json "$work/loadgen.json" >"$work/loadgen.txt" ||
  echo "loadgen exited $? (a scenario missed?)"
wait "$hostile_pid"
[[ $kafka == 1 ]] && wait "$restarter"

# Settle: until the decoded count stops moving for 2 s (at most 30 s).
last=-1
for _ in $(seq 60); do
  now=$(scrape | value exflow_decode_records_total)
  [[ $now == "$last" ]] && break
  last=$now
  sleep 2
done
if [[ $kafka == 1 ]]; then
  # Until the spool is empty and every alert taken is acknowledged, skipped as already on
  # the topic, dead-lettered or dropped (at most 60 s).
  for _ in $(seq 120); do
    m=$(scrape)
    settled=$(($(value exflow_sink_kafka_delivered_alerts_total <<<"$m") \
      + $(value exflow_sink_kafka_skipped_duplicate_alerts_total <<<"$m") \
      + $(value exflow_sink_kafka_dead_lettered_alerts_total <<<"$m") \
      + $(value exflow_sink_spool_dropped_alerts_total <<<"$m")))
    [[ $(value exflow_sink_spool_alerts <<<"$m") == 0 && $settled -ge $(value exflow_sink_alerts_total <<<"$m") ]] && break
    sleep 0.5
  done
fi
final=$(scrape)
raised=$(value exflow_detect_alerts_total <<<"$final")
written=$(value exflow_sink_alerts_total <<<"$final")
if [[ $kafka == 1 ]]; then
  touch "$work/consumer.stop"
  wait "$consumer_pid" || true
  read -r messages distinct twice from_first <"$work/consumer.txt"
  kill -TERM "$exflow_pid"
  wait "$exflow_pid" || echo "exflow exited $?"
else
  delivered=$(wc -l <"$work/alerts.jsonl")
  kill -TERM "$exflow_pid"
  wait "$exflow_pid" || echo "exflow exited $?"
  after_stop=$(wc -l <"$work/alerts.jsonl")
fi

echo
# loadgen's --report-json: what it sent, what exflow received and dropped, the scenarios.
python3 - "$work/loadgen.json" <<'EOF' || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"legitimate: no loadgen report ({e})")
s = r["sent"]
line = (f"sent {s['records']} records in {s['datagrams']} datagrams over {s['seconds']:.1f} s"
        f" ({s['send_errors']} send errors)")
if "received" in r:
    g = r["received"]
    line += (f"; received {g['records']:.0f} records in {g['datagrams']:.0f} datagrams,"
             f" kernel-dropped {g['kernel_dropped_datagrams']:.0f} datagrams,"
             f" queue-dropped {g['queue_dropped_records']:.0f} records,"
             f" decode errors {g['decode_errors']:.0f}, lost {g['lost_records']:.0f} records;"
             f" loss {100 * g['loss']:.4f}%")
print(f"legitimate: {line}")
results = r.get("scenarios", {}).get("results", [])
detected = sum(1 for x in results if x["detected"])
print(f"scenarios:  {len(results)} injected, {detected} detected")
EOF
echo "hostile:    $(cat "$work/hostile.txt")"
if [[ $kafka == 1 ]]; then
  echo "broker:     $(paste -sd ';' "$work/restart.txt" | sed 's/;/; /g')"
  echo "alerts:     raised $raised, taken by the sink $written:" \
    "acknowledged $(value exflow_sink_kafka_delivered_alerts_total <<<"$final")," \
    "skipped as already on the topic $(value exflow_sink_kafka_skipped_duplicate_alerts_total <<<"$final")," \
    "dead-lettered $(value exflow_sink_kafka_dead_lettered_alerts_total <<<"$final")," \
    "dropped $(($(value exflow_sink_spool_dropped_alerts_total <<<"$final") + $(value exflow_sink_queue_dropped_alerts_total <<<"$final")))," \
    "left in the spool $(value exflow_sink_spool_alerts <<<"$final")"
  echo "read back:  $messages messages, $distinct distinct alert ids, $twice sent twice;" \
    "$from_first read from the first broker, which acknowledged $(cat "$work/acked-at-kill")" \
    "before it was killed (the rest of those died with its memory storage)," \
    "$((distinct - from_first)) from the second; $((written - distinct)) taken but not read back"
  echo "sink:       producers replaced $(value exflow_sink_kafka_producer_recreated_total <<<"$final")," \
    "failed deliveries $(value exflow_sink_kafka_failed_deliveries_total <<<"$final")"
else
  echo "alerts:     raised $raised, written by the sink $written, in the file $delivered before the stop, $after_stop after it (the stop ends every conversation)"
fi
echo "rss:        $(paste -sd ',' "$work/rss.txt" | sed 's/,/, /g') (alerts: taken by the sink so far)"
echo "counters that moved (drops, errors, losses):"
grep -vE '^#|^exflow_decode_exporter_' <<<"$final" | grep -E '_(dropped|errors|lost|failed|refused|misses)' |
  awk '$2 != 0 {printf "  %s %s\n", $1, $2}'
echo "log:        $(grep -cE 'WARN|ERROR' "$work/exflow.log" || true) warnings or errors"
