#!/usr/bin/env bash
# Records per CPU-second of `exflow collect` and `exflow detect`, and datagram-to-alert
# latency at a fixed rate, against a running broker.
#
#   benches/scaleout.sh BROKER [RECORDS]      e.g. benches/scaleout.sh 127.0.0.1:9092 1000000
#
# Creates topics of its own (tansu's CLI, or set TOPIC_CREATE to a command taking NAME
# PARTITIONS), starts a release `exflow collect` on loopback, drives it with `exflow loadgen`
# (IPFIX, flat out, --count RECORDS), then one `exflow detect` that owns every partition
# and reads the topic from the start. Reports each process's CPU time (user + system, all
# its threads, from /proc/PID/stat) and records per CPU-second. The broker shares the
# machine: only exflow's own CPU time is counted. Then, on topics of their own, a detector
# and a collector with loadgen at LAG_RATE records/s (default 20000) for 20 s, three
# bulk_egress scenarios injected, read back from the alerts topic: datagram to alert.
# Needs target/release/exflow.
#
# A run used to hang at random: `loadgen | head -3` closed the pipe on loadgen's fourth
# line, loadgen failed on the write, `set -e -o pipefail` ended the script, and the
# collector left running in the background kept the caller's stdout open. Now loadgen's
# output goes to a file, every process started is stopped on exit, and none holds stdout.
set -euo pipefail
broker="${1:?broker host:port}"
records="${2:-1000000}"
partitions="${PARTITIONS:-4}"
exflow="${EXFLOW:-target/release/exflow}"
dir="$(mktemp -d)"
run="bench.$$"
children=()
cleanup() {
  for pid in "${children[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
create() {
  if [ -n "${TOPIC_CREATE:-}" ]; then $TOPIC_CREATE "$1" "$2"; else
    tansu topic create "$1" --broker "tcp://$broker" --partitions "$2" >/dev/null; fi
}
create "$run.flows" "$partitions"; create "$run.alerts" 3; create "$run.state" 1
cat >"$dir/exflow.toml" <<TOML
inside = ["10.0.0.0/8", "2001:db8:10::/48"]
[sink.kafka]
brokers = "$broker"
topic = "$run.alerts"
flows_topic = "$run.flows"
spool_dir = "$dir/spool"
[scaleout]
group = "$run.group"
state_topic = "$run.state"
static_membership = false
session_timeout_ms = 6000
TOML
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
ready() { for _ in $(seq 200); do [ -s "$1" ] && return; sleep 0.1; done; echo "no $1" >&2; exit 1; }

"$exflow" collect --config "$dir/exflow.toml" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --ready-file "$dir/collect.json" >/dev/null 2>"$dir/collect.log" &
collect=$!
children+=($collect)
ready "$dir/collect.json"
udp=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['listen'][0])" "$dir/collect.json")
cm=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['metrics_listen'])" "$dir/collect.json")
c0=$(cpu $collect)
"$exflow" loadgen --target "$udp" --count "$records" --duration 600 --metrics "$cm" >"$dir/loadgen.txt"
head -3 "$dir/loadgen.txt"
# Wait until the producer has delivered what it queued (the count stays put for 2 s).
published=-1
while :; do
  now=$(metric "$cm" exflow_collect_published_records_total)
  [ "$now" = "$published" ] && break
  published=$now; sleep 2
done
c1=$(cpu $collect)
decoded=$(metric "$cm" exflow_decode_records_total)
kill -TERM $collect; wait $collect || true
python3 - "$published" "$decoded" "$c0" "$c1" "$hz" <<'PY'
import sys
n, decoded, c0, c1, hz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu = (c1 - c0) / hz
print(f"collect: {decoded} records decoded, {n} published, {cpu:.2f} CPU-s: {n / cpu:,.0f} records per CPU-second")
PY

"$exflow" detect --config "$dir/exflow.toml" --metrics-listen 127.0.0.1:0 \
  --ready-file "$dir/detect.json" >/dev/null 2>"$dir/detect.log" &
detect=$!
children+=($detect)
ready "$dir/detect.json"
dm=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['metrics_listen'])" "$dir/detect.json")
d0=$(cpu $detect)
start=$(date +%s.%N)
for _ in $(seq 3000); do  # 10 minutes at most
  [ "$(metric "$dm" exflow_consume_records_total)" = "$published" ] && break; sleep 0.2
done
d1=$(cpu $detect)
end=$(date +%s.%N)
kill -TERM $detect; wait $detect || true
python3 - "$published" "$d0" "$d1" "$hz" "$start" "$end" <<'PY'
import sys
n, d0, d1, hz, start, end = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
cpu = (d1 - d0) / hz
print(f"detect: {n} records in {end - start:.1f} s wall, {cpu:.2f} CPU-s: {n / cpu:,.0f} records per CPU-second")
PY

# Datagram to alert at a fixed rate, on topics of their own.
lag="$run.lag"
create "$lag.flows" "$partitions"; create "$lag.alerts" 3; create "$lag.state" 1
sed -e "s/$run.flows/$lag.flows/; s/$run.alerts/$lag.alerts/; s/$run.state/$lag.state/" \
  -e "s/$run.group/$lag.group/; s|$dir/spool|$dir/spool-lag|" "$dir/exflow.toml" >"$dir/lag.toml"
"$exflow" detect --config "$dir/lag.toml" --metrics-listen 127.0.0.1:0 \
  --ready-file "$dir/lag-detect.json" >/dev/null 2>"$dir/lag-detect.log" &
children+=($!)
ready "$dir/lag-detect.json"
lm=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['metrics_listen'])" "$dir/lag-detect.json")
for _ in $(seq 300); do
  [ "$(metric "$lm" exflow_consume_partitions)" = "$partitions" ] && break; sleep 0.2
done
sed -e "s|$dir/spool-lag|$dir/spool-lag-collect|" "$dir/lag.toml" >"$dir/lag-collect.toml"
"$exflow" collect --config "$dir/lag-collect.toml" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --ready-file "$dir/lag-collect.json" >/dev/null 2>"$dir/lag-collect.log" &
children+=($!)
ready "$dir/lag-collect.json"
udp=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['listen'][0])" "$dir/lag-collect.json")
cm=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['metrics_listen'])" "$dir/lag-collect.json")
"$exflow" loadgen --target "$udp" --metrics "$cm" --rate "${LAG_RATE:-20000}" --duration 20 \
  --scenario bulk_egress@5 --scenario bulk_egress@10 --scenario bulk_egress@15 \
  --detect-timeout 120 --kafka-brokers "$broker" --kafka-topic "$lag.alerts" >"$dir/lag.txt" || true
grep -E '^(sent|loss|scenario)' "$dir/lag.txt"
