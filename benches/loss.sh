#!/usr/bin/env bash
# Does exflow lose records well below saturation? Runs a fresh `exflow run` (default
# configuration, or EXFLOW_ARGS) RUNS times; each time flowgen (../shared/tools/flowgen) sends
# RATE records/s for DURATION seconds, and the daemon's metrics give what it decoded, what its
# shard queues dropped and what the kernel dropped at its socket. One line per run, then the
# runs that lost anything.
#
#   benches/loss.sh [RATE]          default 1000000
#
# Environment: RUNS (10), DURATION (6), PROTO (ipfix; v5, v9), EXFLOW (a built binary;
# default: cargo build --release). Raises net.core.rmem_max to 64 MiB, as compare.sh does,
# so the socket gets its 32 MiB buffer.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-1000000}
RUNS=${RUNS:-10}
DURATION=${DURATION:-6}
PROTO=${PROTO:-ipfix}
PORT=${PORT:-24900}
METRICS=$((PORT + 1))
command -v curl >/dev/null || { echo "loss.sh reads exflow's metrics with curl: install it" >&2; exit 1; }
sysctl -qw net.core.rmem_max=67108864 || true
# shellcheck source=benches/binaries.sh
. benches/binaries.sh
exflow_binary
flowgen_binary

pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT
metric() { # sum of the samples of metric $1
  curl -sf "http://127.0.0.1:$METRICS/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}'
}
lossy=0
for run in $(seq "$RUNS"); do
  # shellcheck disable=SC2086
  "$EXFLOW" run --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$METRICS" ${EXFLOW_ARGS:-} >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$METRICS/metrics" >/dev/null && break; sleep 0.1; done
  sent=$((RATE * DURATION))
  "$FLOWGEN" --proto "$PROTO" --port "$PORT" --rate "$RATE" --records "$sent" >/dev/null 2>&1
  decoded=0
  for _ in $(seq 100); do # until it has decoded what came, or stops moving
    now=$(metric exflow_decode_records_total)
    [ "$now" = "$decoded" ] && break
    decoded=$now
    sleep 0.2
  done
  queue=$(metric exflow_flow_queue_dropped_records_total)
  kernel=$(metric exflow_source_kernel_dropped_datagrams_total)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  echo "run $run: $PROTO at $RATE/s, records decoded $decoded, dropped at the shard queue $queue, datagrams dropped by the kernel $kernel"
  if [ "$queue" != 0 ] || [ "$kernel" != 0 ]; then lossy=$((lossy + 1)); fi
done
echo "$lossy of $RUNS runs lost records"
