#!/usr/bin/env bash
# A real Kafka-protocol broker for the tests: tansu (Apache Kafka-compatible, from
# crates.io), on loopback, in memory.
#
#   scripts/kafka.sh install        install tansu 0.6.0 unless a working one is there
#   scripts/kafka.sh start PORT     start it on 127.0.0.1:PORT, wait until it answers
#   scripts/kafka.sh stop PORT      stop the one started on PORT
set -euo pipefail
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"
run_dir="${TMPDIR:-/tmp}/exflow-kafka"

tansu_ok() {
  command -v tansu >/dev/null 2>&1 \
    && tansu --version 2>/dev/null | grep -q "tansu $TANSU_VERSION" \
    && tansu --help 2>/dev/null | grep -q 'Storage engines:.*dynostore'
}

case "${1:-}" in
  install)
    if tansu_ok; then
      exit 0
    fi
    echo "installing the tansu Kafka broker $TANSU_VERSION from crates.io: about 10-25 minutes once, on 2 cores" >&2
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore >&2
    tansu_ok || { echo "tansu installed but has no dynostore storage engine" >&2; exit 1; }
    ;;
  start)
    port="${2:?port}"
    mkdir -p "$run_dir"
    tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ >"$run_dir/tansu-$port.log" 2>&1 &
    echo $! >"$run_dir/tansu-$port.pid"
    for _ in $(seq 1 200); do
      if tansu topic list --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1; then
        exit 0
      fi
      sleep 0.05
    done
    echo "tansu did not answer on 127.0.0.1:$port; its log:" >&2
    cat "$run_dir/tansu-$port.log" >&2
    exit 1
    ;;
  stop)
    port="${2:?port}"
    pid_file="$run_dir/tansu-$port.pid"
    if [ -f "$pid_file" ]; then
      kill "$(cat "$pid_file")" 2>/dev/null || true
      rm -f "$pid_file"
    fi
    ;;
  *)
    echo "usage: $0 install | start PORT | stop PORT" >&2
    exit 2
    ;;
esac
