#!/usr/bin/env bash
# Puts exflow beside other collectors on the same machine, in the same run: nfcapd (nfdump),
# nfacctd (pmacct) and, where its binary is on PATH, GoFlow2. All of them listen at once on
# loopback, each on its own port, with a 32 MiB socket buffer; for every generator, protocol,
# rate and repetition each collector in turn gets the same stream (the order rotates from one
# repetition to the next), so a ratio compares runs taken seconds apart under the same load.
#
# Generators: `flowgen` (../shared/tools/flowgen: random addresses, large volumes, ~35,000
# conversations, one exporter; built into target/flowgen when missing) and `loadgen`
# (`exflow loadgen`: 16 exporters, 128,000 conversations replayed in a cycle). Reported per
# measurement: the loss (datagrams the kernel dropped at the collector's socket, from
# /proc/net/udp, over those sent; for exflow also the records its shard queues dropped,
# `exflow_flow_queue_dropped_records_total`, over those sent), records taken per CPU-second
# (records sent less the lost ones, over the collector's user+system time from
# /proc/PID/stat, sending and one second of draining) and the 1-minute load average when it
# started; then, per generator, protocol and rate, each collector's range and the ratio
# exflow / nfcapd (and / nfacctd) of each repetition. Absolute figures depend on the machine and its load: quote the ratios.
#
#   benches/compare.sh [RATE ...]          default rates: 1000000 2000000 3000000
#
# Environment: DURATION (s per measurement, 5), REPEAT (3), GENERATORS ("flowgen loadgen"),
# PROTOS ("ipfix"; also v5 v9), COLLECTORS ("exflow nfcapd nfacctd"), EXFLOW (a built
# binary; default: cargo build --release), EXFLOW_ARGS (more `exflow run` flags, e.g.
# `--config threaded.toml`), OUT (keep the raw rows in this file). More exflows beside the
# first: a collector `exflow-TAG` runs the binary $EXFLOW_TAG (default $EXFLOW) with the
# flags $EXFLOW_ARGS_TAG, e.g. COLLECTORS="exflow exflow-old nfcapd" EXFLOW_old=/tmp/exflow.
#
# Installs pmacct and nfdump from Debian when missing (root). Raises net.core.rmem_max to
# 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a RATES <<<"${*:-1000000 2000000 3000000}"
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-3}
read -r -a GENERATORS <<<"${GENERATORS:-flowgen loadgen}"
read -r -a PROTOS <<<"${PROTOS:-ipfix}"
read -r -a COLLECTORS <<<"${COLLECTORS:-exflow nfcapd nfacctd}"
PORT=${PORT:-24800}
work=$(mktemp -d)
pids=()
cleanup() { # each collector leads its own process group (nfacctd forks its plugins)
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do # exflow drains its socket first; nfacctd may ignore TERM
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

command -v nfcapd >/dev/null && command -v nfacctd >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pmacct nfdump >/dev/null
}
command -v curl >/dev/null || { echo "compare.sh reads exflow's queue drops with curl: install it" >&2; exit 1; }
sysctl -qw net.core.rmem_max=67108864 || true
# shellcheck source=benches/binaries.sh
. benches/binaries.sh
exflow_binary
if [[ " ${GENERATORS[*]} " == *" flowgen "* ]]; then
  flowgen_binary
fi

drops() { # kernel drops of the UDP socket bound to port $1 (hex in /proc/net/udp)
  local hex; hex=$(printf '%04X' "$1")
  awk -v p=":$hex" '$2 ~ p"$" {d+=$NF} END {print d+0}' /proc/net/udp /proc/net/udp6
}
queue_drops() { # records exflow's shard queues dropped ($1: name, $2: its port); 0 for others
  case "$1" in
    exflow | exflow-*)
      curl -sf "http://127.0.0.1:$(($2 + 100))/metrics" |
        awk '/^exflow_flow_queue_dropped_records_total/ {d=$2} END {print d+0}'
      ;;
    *) echo 0 ;;
  esac
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
load1() { cut -d' ' -f1 /proc/loadavg; }

start() { # name port -> pid of a collector listening on 127.0.0.1:port
  local name=$1 port=$2
  case "$name" in
    exflow | exflow-*)
      # exflow-TAG: the binary $EXFLOW_TAG (default $EXFLOW) with the flags $EXFLOW_ARGS_TAG.
      local tag=${name#exflow} binary=$EXFLOW args=${EXFLOW_ARGS:-}
      if [ -n "$tag" ]; then
        tag=${tag#-} binary_var=EXFLOW_${tag} args_var=EXFLOW_ARGS_${tag}
        binary=${!binary_var:-$EXFLOW} args=${!args_var:-}
      fi
      # shellcheck disable=SC2086 # the flags are a list
      setsid "$binary" run --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$((port + 100))" $args \
        >/dev/null 2>"$work/$name.log" &
      ;;
    nfcapd)
      mkdir -p "$work/nfcapd"
      setsid nfcapd -b 127.0.0.1 -p "$port" -w "$work/nfcapd" -B 33554432 >/dev/null 2>&1 &
      ;;
    nfacctd)
      cat >"$work/nfacctd.conf" <<CONF
nfacctd_ip: 127.0.0.1
nfacctd_port: $port
nfacctd_pipe_size: 33554432
plugins: print
aggregate: src_host, dst_host
print_output_file: $work/nfacctd.out
print_refresh_time: 60
CONF
      setsid nfacctd -f "$work/nfacctd.conf" >/dev/null 2>&1 &
      ;;
    goflow2)
      setsid goflow2 -listen "netflow://127.0.0.1:$port" -format bin -transport file \
        -transport.file /dev/null >/dev/null 2>&1 &
      ;;
  esac
  echo $!
}

send() { # generator proto rate port -> "records datagrams" sent
  local generator=$1 proto=$2 rate=$3 port=$4 out
  case "$generator" in
    flowgen)
      out=$("$FLOWGEN" --proto "$proto" --port "$port" --rate "$rate" \
        --records "$((rate * DURATION))")
      field() { echo "$out" | sed -E "s/.*\"$1\":([0-9]+).*/\\1/"; }
      echo "$(field records) $(($(field data_packets) + $(field template_packets)))"
      ;;
    loadgen)
      out=$("$EXFLOW" loadgen --target "127.0.0.1:$port" --protocol "$proto" --rate "$rate" \
        --duration "$DURATION" --exporters 16)
      echo "$out" | awk '/^sent:/ {print $2, $5}'
      ;;
  esac
}

command -v goflow2 >/dev/null && [[ " ${COLLECTORS[*]} " != *" goflow2 "* ]] && COLLECTORS+=(goflow2)
declare -A port_of pid_of
for index in "${!COLLECTORS[@]}"; do
  name=${COLLECTORS[$index]}
  port_of[$name]=$((PORT + index))
  pid_of[$name]=$(start "$name" "${port_of[$name]}")
  pids+=("${pid_of[$name]}")
done
sleep 1
for name in "${COLLECTORS[@]}"; do
  [ -d "/proc/${pid_of[$name]}" ] || { echo "$name did not start" >&2; exit 1; }
done

rows=${OUT:-$work/rows}
: >"$rows"
hz=$(getconf CLK_TCK)
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; $(date -u '+%F %H:%M UTC'); exflow $(git describe --always --dirty 2>/dev/null || echo '?')"
echo "| generator | protocol | offered records/s | run | collector | load | loss | records per CPU-second |"
echo "|---|---|---|---|---|---|---|---|"
for generator in "${GENERATORS[@]}"; do
  for proto in "${PROTOS[@]}"; do
    for rate in "${RATES[@]}"; do
      for run in $(seq 1 "$REPEAT"); do
        count=${#COLLECTORS[@]}
        for step in $(seq 0 $((count - 1))); do
          name=${COLLECTORS[$(((step + run - 1) % count))]}
          port=${port_of[$name]} pid=${pid_of[$name]}
          [ -d "/proc/$pid" ] || { echo "$name has stopped" >&2; exit 1; }
          load=$(load1)
          d0=$(drops "$port"); q0=$(queue_drops "$name" "$port"); c0=$(cpu_ticks "$pid")
          read -r records datagrams < <(send "$generator" "$proto" "$rate" "$port")
          sleep 1
          d1=$(drops "$port"); q1=$(queue_drops "$name" "$port"); c1=$(cpu_ticks "$pid")
          awk -v g="$generator" -v p="$proto" -v r="$rate" -v run="$run" -v n="$name" \
            -v load="$load" -v d="$((d1 - d0))" -v s="$datagrams" -v rec="$records" \
            -v q="$((q1 - q0))" -v t="$((c1 - c0))" -v hz="$hz" 'BEGIN {
              loss = s > 0 ? d / s : 0; cpu = t / hz
              if (rec > 0) loss += q / rec
              if (loss > 1) loss = 1
              per = cpu > 0 ? rec * (1 - loss) / cpu : 0
              printf "%s %s %s %s %s %s %.6f %.0f\n", g, p, r, run, n, load, loss, per
            }' | tee -a "$rows" | awk '{
              printf "| %s | %s | %.1fM | %s | %s | %s | %.3f%% | %.2fM |\n",
                $1, $2, $3/1e6, $4, $5, $6, 100*$7, $8/1e6 }'
        done
      done
    done
  done
done

echo
echo "| generator | protocol | offered records/s | collector | loss | records per CPU-second | exflow / this, each run |"
echo "|---|---|---|---|---|---|---|"
awk '
  { key = $1 " " $2 " " $3; k[key] = 1; c[$5] = 1
    id = key SUBSEP $5
    if (!(id in n)) { lmin[id] = $7; lmax[id] = $7; pmin[id] = $8; pmax[id] = $8 }
    n[id]++
    if ($7 < lmin[id]) lmin[id] = $7; if ($7 > lmax[id]) lmax[id] = $7
    if ($8 < pmin[id]) pmin[id] = $8; if ($8 > pmax[id]) pmax[id] = $8
    per[key SUBSEP $4 SUBSEP $5] = $8; runs[key SUBSEP $4] = 1 }
  END {
    for (key in k) for (name in c) {
      id = key SUBSEP name
      if (!(id in n)) continue
      split(key, f, " ")
      ratios = ""
      if (name != "exflow") for (r in runs) {
        split(r, rr, SUBSEP); if (rr[1] != key) continue
        a = per[key SUBSEP rr[2] SUBSEP "exflow"]; b = per[key SUBSEP rr[2] SUBSEP name]
        if (a > 0 && b > 0) ratios = ratios (ratios == "" ? "" : " ") sprintf("%.2f", a / b)
      }
      printf "| %s | %s | %.1fM | %s | %.3f-%.3f%% | %.2f-%.2fM | %s |\n",
        f[1], f[2], f[3]/1e6, name, 100*lmin[id], 100*lmax[id], pmin[id]/1e6, pmax[id]/1e6, ratios
    }
  }' "$rows" | sort -t'|' -k2,2 -k3,3 -k4,4n -k5,5
