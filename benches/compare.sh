#!/usr/bin/env bash
# Puts exflow beside other collectors on the same machine and workload: nfacctd (pmacct),
# nfcapd (nfdump) and, where its binary is on PATH, GoFlow2. Each listens on loopback and
# gets the same IPFIX from `exflow loadgen` (16 exporters, ~1400-byte datagrams of ~17
# records) at each rate for DURATION seconds. Reported per collector and rate: the loss
# (datagrams the kernel dropped at the collector's socket, from /proc/net/udp, over those
# sent) and records per CPU-second (the collector's user+system time).
#
#   benches/compare.sh [RATE ...]          default rates: 1000000 2000000 3000000 4000000
#
# Installs pmacct and nfdump from Debian when missing (root). Raises net.core.rmem_max to
# 64 MiB and gives every collector a 32 MiB socket buffer where it has a setting for it.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=("${@:-1000000 2000000 3000000 4000000}")
read -r -a RATES <<<"${RATES[*]}"
DURATION=${DURATION:-5}
PORT=${PORT:-24800}
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT

command -v nfcapd >/dev/null && command -v nfacctd >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pmacct nfdump >/dev/null
}
sysctl -qw net.core.rmem_max=67108864 || true
cargo build --release --quiet
exflow=target/release/exflow

drops() { # kernel drops of the UDP socket bound to $PORT (hex in /proc/net/udp)
  local hex; hex=$(printf '%04X' "$PORT")
  awk -v p=":$hex" '$2 ~ p"$" {d+=$NF} END {print d+0}' /proc/net/udp /proc/net/udp6
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

start() { # name -> pid of a collector listening on 127.0.0.1:$PORT
  case "$1" in
    exflow)
      "$exflow" run --listen "127.0.0.1:$PORT" --metrics-listen 127.0.0.1:0 >/dev/null 2>"$work/exflow.log" &
      ;;
    nfcapd)
      mkdir -p "$work/nfcapd"
      nfcapd -b 127.0.0.1 -p "$PORT" -w "$work/nfcapd" -B 33554432 >/dev/null 2>&1 &
      ;;
    nfacctd)
      cat >"$work/nfacctd.conf" <<CONF
nfacctd_ip: 127.0.0.1
nfacctd_port: $PORT
nfacctd_pipe_size: 33554432
plugins: print
aggregate: src_host, dst_host
print_output_file: $work/nfacctd.out
print_refresh_time: 60
CONF
      nfacctd -f "$work/nfacctd.conf" >/dev/null 2>&1 &
      ;;
    goflow2)
      goflow2 -listen "netflow://127.0.0.1:$PORT" -format bin -transport file -transport.file /dev/null >/dev/null 2>&1 &
      ;;
  esac
  echo $!
}

collectors=(exflow nfcapd nfacctd)
command -v goflow2 >/dev/null && collectors+=(goflow2)
echo "| collector | offered records/s | loss | records per CPU-second |"
echo "|---|---|---|---|"
base_port=$PORT
for index in "${!collectors[@]}"; do
  name=${collectors[$index]}
  PORT=$((base_port + index)) # each its own port: no waiting for the last one to let go
  pid=$(start "$name")
  sleep 1
  [ -d "/proc/$pid" ] || { echo "| $name | did not start | | |"; continue; }
  for rate in "${RATES[@]}"; do
    d0=$(drops); c0=$(cpu_ticks "$pid")
    out=$("$exflow" loadgen --target "127.0.0.1:$PORT" --rate "$rate" --duration "$DURATION" --exporters 16)
    sleep 1
    d1=$(drops); c1=$(cpu_ticks "$pid")
    datagrams=$(echo "$out" | awk '/^sent:/ {print $5}')
    records=$(echo "$out" | awk '/^sent:/ {print $2}')
    ticks=$((c1 - c0)); hz=$(getconf CLK_TCK)
    awk -v n="$name" -v r="$rate" -v d="$((d1 - d0))" -v s="$datagrams" -v rec="$records" -v t="$ticks" -v hz="$hz" \
      'BEGIN { cpu = t / hz; printf "| %s | %.1fM | %.3f%% | %s |\n", n, r/1e6, 100*d/s, (cpu > 0 ? sprintf("%.1fM", rec/cpu/1e6) : "n/a") }'
  done
  kill "$pid" 2>/dev/null || true
  while [ -d "/proc/$pid" ]; do sleep 0.1; done
done
