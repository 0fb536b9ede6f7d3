#!/usr/bin/env bash
# Soak: `exflow run` for DURATION seconds under legitimate traffic with injected
# exfiltration (`exflow loadgen --scenario`, a bulk_egress and a long_lived_foreign every
# 20 s) mixed with hostile datagrams from 16 other loopback senders: random bytes, valid
# headers with truncated bodies, sets whose lengths lie, and 60 kB datagrams. Reports
# alerts raised vs delivered (lines in the file sink), RSS sampled every 5 s, and every
# drop and error counter that moved.
#
#   benches/soak.sh [DURATION_S] [RATE_RECORDS_PER_S] [HOSTILE_DATAGRAMS_PER_S]
#                   defaults 120 50000 2000
#
# EXFLOW=path/to/exflow picks the binary (default: target/release/exflow, built if
# missing). Alerts go to the file sink: no broker is involved (a Kafka broker restart is
# not part of this soak yet). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-120}
RATE=${2:-50000}
HOSTILE=${3:-2000}
if [[ -z ${EXFLOW:-} ]]; then
  [[ -x target/release/exflow ]] || cargo build --release --quiet
  EXFLOW=target/release/exflow
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

scrape() { curl -s --max-time 5 "http://$metrics/metrics"; }
value() { # sum of every sample of metric $1 (any labels) in scrape text on stdin
  awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {printf "%d\n", s}'
}

echo "[sink]
file = \"$work/alerts.jsonl\"" >"$work/exflow.toml"
EXFLOW_LOG=warn "$EXFLOW" run --config "$work/exflow.toml" --inside 10.0.0.0/8 \
  --home-country NL --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --ready-file "$work/ready.json" >/dev/null 2>"$work/exflow.log" &
exflow_pid=$!
pids+=("$exflow_pid")
for _ in $(seq 100); do [[ -s $work/ready.json ]] && break; sleep 0.1; done
read -r target metrics < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["listen"][0], r["metrics_listen"])' "$work/ready.json")
echo "$($EXFLOW --version) pid $exflow_pid: udp $target, metrics $metrics"
echo "soak: ${DURATION} s, legitimate ${RATE} records/s, hostile ${HOSTILE} datagrams/s"

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
pids+=($!)

# RSS every 5 s.
(
  while kill -0 "$exflow_pid" 2>/dev/null; do
    awk -v t="$SECONDS" '/^VmRSS/ {printf "%d s %d MB\n", t, $2 / 1024}' "/proc/$exflow_pid/status"
    sleep 5
  done
) >"$work/rss.txt" 2>/dev/null &
pids+=($!)

scenarios=()
for ((t = 5; t + 5 < DURATION; t += 20)); do
  scenarios+=(--scenario "bulk_egress@$t" --scenario "long_lived_foreign@$((t + 3))")
done
"$EXFLOW" loadgen --target "$target" --metrics "$metrics" --rate "$RATE" \
  --duration "$DURATION" --exporters 8 --detect-timeout 20 "${scenarios[@]}" \
  >"$work/loadgen.txt" || echo "loadgen exited $? (a scenario missed?)"
wait "${pids[1]}" # the hostile sender

# Settle: until the decoded count stops moving for 2 s (at most 30 s).
last=-1
for _ in $(seq 60); do
  now=$(scrape | value exflow_decode_records_total)
  [[ $now == "$last" ]] && break
  last=$now
  sleep 2
done
final=$(scrape)
raised=$(value exflow_detect_alerts_total <<<"$final")
written=$(value exflow_sink_alerts_total <<<"$final")
delivered=$(wc -l <"$work/alerts.jsonl")
kill -TERM "$exflow_pid"
wait "$exflow_pid" || echo "exflow exited $?"
after_stop=$(wc -l <"$work/alerts.jsonl")

echo
echo "legitimate: $(grep -E '^(sent|received|loss):' "$work/loadgen.txt" | tr -s ' ' | paste -sd ';' -)"
grep -E '^scenario:' "$work/loadgen.txt" |
  awk '{n++; if ($8 == "yes") d++} END {printf "scenarios:  %d injected, %d detected\n", n, d}'
echo "hostile:    $(cat "$work/hostile.txt")"
echo "alerts:     raised $raised, written by the sink $written, in the file $delivered before the stop, $after_stop after it (the stop ends every conversation)"
echo "rss:        $(paste -sd ',' "$work/rss.txt" | sed 's/,/, /g')"
echo "counters that moved (drops, errors, losses):"
grep -vE '^#|^exflow_decode_exporter_' <<<"$final" | grep -E '_(dropped|errors|lost|failed|refused|misses)' |
  awk '$2 != 0 {printf "  %s %s\n", $1, $2}'
echo "log:        $(grep -cE 'WARN|ERROR' "$work/exflow.log" || true) warnings or errors"
