#!/usr/bin/env bash
# fuzz-smoke: seeds every fuzz target's corpus with datagrams from real captures, then runs
# each target for FUZZ_SECONDS (default 60); exits non-zero if any target finds a crash.
#
# Run from anywhere (it moves to the repo root). Environment:
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   space-separated subset of targets (default: all seven)
#   FUZZ_CAPTURES  directory with the shared captures (default: ../shared/captures)
#   FUZZ_SEED_ONLY=1  build the corpora and stop
# Seeds: every UDP datagram of tests/data/**/*.pcap, the sFlow datagrams tests/data/sflow/*.bin,
# logstash's one-payload fixtures tests/data/logstash/*.dat (a device's in one decoder seed)
# and, when present, of
# $FUZZ_CAPTURES/exports/*/export.pcap and $FUZZ_CAPTURES/public/**/*.pcap (pcap and pcapng).
# Corpora live in fuzz/corpus/<target>/ (git-ignored; what libFuzzer adds is kept for the
# next run), crash reproducers in fuzz/artifacts/<target>/, run logs next to them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-wire_v5 wire_v9 wire_ipfix wire_template wire_sflow decoder decoder_sflow}
FUZZ_CAPTURES=${FUZZ_CAPTURES:-../shared/captures}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# --- (a) seed corpora -----------------------------------------------------------------------
python3 - "$FUZZ_CAPTURES" <<'PY'
"""Extract UDP payloads from classic pcap / pcapng files into fuzz/corpus/<target>/."""
import glob
import hashlib
import os
import struct
import sys

captures = sys.argv[1]
files = sorted(glob.glob("tests/data/**/*.pcap", recursive=True))
files += sorted(glob.glob("tests/data/sflow/*.bin"))
if os.path.isdir(captures):
    files += sorted(glob.glob(os.path.join(captures, "exports/*/export.pcap")))
    files += sorted(glob.glob(os.path.join(captures, "public/**/*.pcap"), recursive=True))

DECODER_DATAGRAMS = 20  # datagrams per capture in a decoder seed


def ip_payload(proto, data):
    """(source address, UDP payload) of an IPv4/IPv6 packet, or None."""
    if proto == 0x0800 and len(data) >= 20 and data[0] >> 4 == 4:
        ihl = (data[0] & 0x0F) * 4
        frag = struct.unpack_from(">H", data, 6)[0]
        if data[9] != 17 or frag & 0x1FFF or len(data) < ihl + 8:
            return None
        src, udp = data[12:16], data[ihl:]
    elif proto == 0x86DD and len(data) >= 48 and data[0] >> 4 == 6:
        if data[6] != 17:  # no extension headers in these captures
            return None
        src, udp = data[8:24], data[40:]
    else:
        return None
    length = struct.unpack_from(">H", udp, 4)[0]
    end = min(len(udp), length) if length >= 8 else len(udp)
    return src, udp[8:end]


def frame_payload(linktype, frame):
    if linktype == 1:  # Ethernet, VLAN tags skipped
        at = 12
        while len(frame) >= at + 2:
            etype = struct.unpack_from(">H", frame, at)[0]
            if etype in (0x8100, 0x88A8):
                at += 4
                continue
            return ip_payload(etype, frame[at + 2:])
        return None
    if linktype == 113 and len(frame) >= 16:  # Linux cooked
        return ip_payload(struct.unpack_from(">H", frame, 14)[0], frame[16:])
    if linktype == 276 and len(frame) >= 20:  # Linux cooked v2
        return ip_payload(struct.unpack_from(">H", frame, 0)[0], frame[20:])
    if linktype == 0 and len(frame) >= 4:  # BSD loopback: address family, host order
        family = struct.unpack_from("<I", frame, 0)[0]
        if family > 0xFFFF:
            family = struct.unpack_from(">I", frame, 0)[0]
        proto = 0x0800 if family == 2 else 0x86DD if family in (10, 24, 28, 30) else 0
        return ip_payload(proto, frame[4:])
    if linktype in (12, 101, 228, 229) and frame:  # raw IP
        return ip_payload(0x0800 if frame[0] >> 4 == 4 else 0x86DD, frame)
    return None


def pcap_frames(blob):
    """(linktype, frame) for every packet of a classic pcap or pcapng file."""
    magic = blob[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = "<" if magic[0] in (0xD4, 0x4D) else ">"
        linktype = struct.unpack_from(end + "I", blob, 20)[0] & 0xFFFF
        at = 24
        while at + 16 <= len(blob):
            incl = struct.unpack_from(end + "I", blob, at + 8)[0]
            yield linktype, blob[at + 16:at + 16 + incl]
            at += 16 + incl
    elif magic == b"\x0a\x0d\x0d\x0a":
        end, linktypes, at = "<", [], 0
        while at + 12 <= len(blob):
            if blob[at:at + 4] == b"\x0a\x0d\x0d\x0a":
                end = "<" if blob[at + 8:at + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                linktypes = []
            kind, length = struct.unpack_from(end + "II", blob, at)
            if length < 12:
                break
            body = blob[at + 8:at + length - 4]
            if kind == 1 and len(body) >= 2:  # interface description
                linktypes.append(struct.unpack_from(end + "H", body, 0)[0])
            elif kind == 6 and len(body) >= 20:  # enhanced packet
                iface, _, _, caplen = struct.unpack_from(end + "IIII", body, 0)
                if iface < len(linktypes):
                    yield linktypes[iface], body[20:20 + caplen]
            elif kind == 3 and len(body) >= 4 and linktypes:  # simple packet
                yield linktypes[0], body[4:]
            at += length


def write(target, blob):
    directory = os.path.join("fuzz/corpus", target)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, hashlib.sha1(blob).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(blob)
        return 1
    return 0


def is_sflow(payload):
    return payload[:4] == b"\x00\x00\x00\x05"


def datagrams_of(path):
    if path.endswith(".bin"):  # one UDP payload (telegraf's fixtures)
        with open(path, "rb") as f:
            return [(b"\x7f\x00\x00\x01", f.read())]
    with open(path, "rb") as f:
        blob = f.read()
    out = []
    for linktype, frame in pcap_frames(blob):
        got = frame_payload(linktype, frame)
        if got and (is_sflow(got[1]) or len(got[1]) >= 2 and got[1][1] in (5, 9, 10) and got[1][0] == 0):
            out.append(got)
    return out


def decoder_script(flags, datagrams):
    """The decoder target's format: config byte, then (control, u16 length, bytes) each."""
    sources, script = [], bytearray([flags])
    for src, payload in datagrams:
        if src not in sources:
            sources.append(src)
        exporter = 0 if sources.index(src) == 0 else 1
        script += bytes([exporter | 2]) + struct.pack(">H", len(payload)) + payload
    return bytes(script)


TEMPLATE_SETS = {9: {0: 0, 1: 2}, 10: {2: 1, 3: 3}}  # version: set id -> wire_template selector
added, per_file = {}, {}
for path in files:
    try:
        grams = datagrams_of(path)
    except (OSError, struct.error) as e:
        print(f"fuzz-smoke: skipping {path}: {e}", file=sys.stderr)
        continue
    per_file[path] = grams
    for _, payload in grams:
        if is_sflow(payload):
            added["wire_sflow"] = added.get("wire_sflow", 0) + write("wire_sflow", payload)
            added["decoder_sflow"] = added.get("decoder_sflow", 0) + write("decoder_sflow", payload[4:])
            continue
        version = payload[1]
        target = {5: "wire_v5", 9: "wire_v9", 10: "wire_ipfix"}[version]
        added[target] = added.get(target, 0) + write(target, payload)
        if version == 5:
            continue
        # Template and options-template set bodies, with the selector byte in front.
        start = 20 if version == 9 else 16
        end = len(payload) if version == 9 else min(len(payload), struct.unpack_from(">H", payload, 2)[0] if len(payload) >= 4 else 0)
        at = start
        while at + 4 <= end:
            set_id, length = struct.unpack_from(">HH", payload, at)
            if length < 4:
                break
            if set_id in TEMPLATE_SETS[version]:
                body = payload[at + 4:min(at + length, end)]
                added["wire_template"] = added.get("wire_template", 0) + write(
                    "wire_template", bytes([TEMPLATE_SETS[version][set_id]]) + body)
            at += length
    if grams:
        seed = grams[:DECODER_DATAGRAMS]
        added["decoder"] = added.get("decoder", 0) + write("decoder", decoder_script(0, seed))
        added["decoder"] += write("decoder", decoder_script(3, seed))  # tight limits, sampling

# akvorado-style split fixtures: X-template.pcap then X-data.pcap, as one exporter.
for path, grams in per_file.items():
    if "template" not in os.path.basename(path):
        continue
    data_path = os.path.join(os.path.dirname(path), os.path.basename(path).replace("template", "data"))
    if data_path in per_file and per_file[data_path]:
        seed = grams[:DECODER_DATAGRAMS] + per_file[data_path][:DECODER_DATAGRAMS]
        src = seed[0][0]
        added["decoder"] = added.get("decoder", 0) + write("decoder", decoder_script(0, [(src, p) for _, p in seed]))

# logstash-codec-netflow's fixtures: one UDP payload per file, a device's templates then its
# data (tpl sorts before data), as one exporter: NSEL events, NAT, padding, variable length.
devices = {}
for path in sorted(glob.glob("tests/data/logstash/*.dat")):
    name = os.path.basename(path)
    device = name.split("_tpl")[0].split("_data")[0]
    with open(path, "rb") as f:
        payload = f.read()
    devices.setdefault(device, []).append(payload)
    if len(payload) >= 2 and payload[1] in (9, 10):
        target = {9: "wire_v9", 10: "wire_ipfix"}[payload[1]]
        added[target] = added.get(target, 0) + write(target, payload)
for device, payloads in devices.items():
    seed = [(b"\xc0\x00\x02\x07", p) for p in payloads]
    added["decoder"] = added.get("decoder", 0) + write("decoder", decoder_script(0, seed))
    added["decoder"] += write("decoder", decoder_script(1, seed))  # tight limits

total = sum(len(g) for g in per_file.values())
print(f"fuzz-smoke: {len(files)} captures, {total} datagrams; new seeds: "
      + ", ".join(f"{t} {n}" for t, n in sorted(added.items())))
PY

if [[ ${FUZZ_SEED_ONLY:-0} == 1 ]]; then
    exit 0
fi

# --- (b) run every target -------------------------------------------------------------------
# `-s none`: no sanitizer, so stable Rust builds it; panics and overflow checks (debug
# assertions are on in cargo-fuzz's default build) are what we look for in safe Rust.
start=$(date +%s)
cargo fuzz build -s none
echo "fuzz-smoke: build took $(($(date +%s) - start)) s"

failed=()
summary=()
for target in $FUZZ_TARGETS; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/artifacts/$target/smoke.log"
    echo "fuzz-smoke: $target for ${FUZZ_SECONDS}s (log: $log)"
    status=0
    cargo fuzz run -s none "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    if [[ $status -ne 0 ]]; then
        failed+=("$target")
        if grep -q "Test unit written to" "$log"; then
            what="CRASH"
        elif grep -q "failed to build fuzz script" "$log"; then
            what="BUILD FAILED" # src/ changed under the run and no longer compiles
        else
            what="ERROR"
        fi
        summary+=("$target: $what (exit $status), see $log and fuzz/artifacts/$target/")
        grep -E "panicked at|^SUMMARY|Test unit written to|^error" "$log" | head -n 5 >&2 || tail -n 20 "$log" >&2
    else
        summary+=("$target: ok, ${runs:-?} runs, ${execs:-?} exec/s, corpus $corpus")
    fi
done

echo "fuzz-smoke: done in $(($(date +%s) - start)) s"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz-smoke: failed: ${failed[*]}" >&2
    exit 1
fi
