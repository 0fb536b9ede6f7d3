#!/usr/bin/env python3
"""export.py: the evaluation day through the real exporters, the MIDDLE of the measurement.

Feeds `day.pcap` (from gen_day.py) to softflowd, to pmacct's pmacctd and to nfdump's nfpcapd
(Debian's packages, as the integration tests run them) exporting to a UDP socket on loopback
that this script holds, and writes what each exporter sent as a pcap of its datagrams
(Ethernet/IPv4/UDP from 127.0.0.1, the received time) beside the day: what `exflow replay` and
score.py read.

    python3 benches/eval/export.py OUTDIR            # every export of EXPORTS
    python3 benches/eval/export.py OUTDIR pmacct_v9_latecache

Reading a capture, softflowd and pmacct's nfprobe never expire a flow on time, idle or active
(both: `check_expired(..., capfile == NULL ? CE_EXPIRE_NORMAL : CE_EXPIRE_FORCED)`): a flow
leaves their cache when the cache is full, when a packet takes it past `maxlife`, or at the end
of the capture, where the rest are flushed in the order they would have expired (so without
maxlife their records come nearly in time order). nfpcapd is the one that runs its active and
inactive timeouts on the packets' times when reading a file, as a router does on the wall clock.

Exports (the exporters' command lines are written to OUTDIR/exporters.log):
- softflowd_ipfix: softflowd 1.1.0, IPFIX, a cache big enough for the day (`-m 65536`); `-a`
  stamps flows with the capture's times rather than the wall clock
- softflowd_ipfix_sampled10: the same, 1-in-10 packet sampling (`-s 10`)
- pmacct_ipfix: pmacctd + nfprobe, IPFIX, a 65,536-flow cache
- pmacct_v9_latecache: pmacctd + nfprobe, NetFlow v9, pmacct's default 8,192-flow cache: on the
  full day it overflows and records come late
- nfpcapd_v9_active1800: a router's timeouts, on the capture's time: nfdump 1.7.1's nfpcapd
  reads the day with a 30-minute active and a 15-second inactive timeout (`-e 1800,15`, Cisco's
  inactive default) into nfcapd files, one an hour in time order, and nfreplay sends each as
  NetFlow v9; a long flow is a record every 30 minutes, a connection idle for 15 s is split.
  Records come at most ~40 s behind the newest flow end
- pmacct_v9_maxlife1800: NetFlow v9 with pmacct's `maxlife=1800`: reading a capture (above)
  pmacctd exports a long flow mid-capture at its first packet past 30 minutes and holds every
  short one to the end, a median of ~18 h behind the newest flow end: not what a router sends,
  a stress test of records beyond `flow.max_lateness_s` (score.py marks it "stress")

Nothing leaves loopback. Standard library only.
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time

PMACCT_COMMON = """daemonize: false
pidfile: {dir}/pmacctd.pid
pcap_savefile: {pcap}
plugins: nfprobe[exp]
nfprobe_receiver[exp]: 127.0.0.1:{port}
aggregate[exp]: src_host, dst_host, src_port, dst_port, proto, tos, tcpflags
"""

EXPORTS = {
    "softflowd_ipfix": ("softflowd", ["-v", "10", "-m", "65536"]),
    "softflowd_ipfix_sampled10": ("softflowd", ["-v", "10", "-m", "65536", "-s", "10"]),
    "pmacct_ipfix": ("pmacctd", "nfprobe_version[exp]: 10\nnfprobe_maxflows[exp]: 65536\n"),
    "pmacct_v9_latecache": ("pmacctd", "nfprobe_version[exp]: 9\n"),
    "pmacct_v9_maxlife1800": ("pmacctd", "nfprobe_version[exp]: 9\nnfprobe_maxflows[exp]: 65536\n"
                                         "nfprobe_timeouts[exp]: maxlife=1800\n"),
    "nfpcapd_v9_active1800": ("nfpcapd", ["-e", "1800,15"]),
}


class Receiver(threading.Thread):
    """Holds a loopback UDP socket and keeps every datagram with its sender and time."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.datagrams = []
        self.last = time.time()
        self.stop = False

    def run(self):
        while not self.stop:
            try:
                data, (addr, port) = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            self.last = time.time()
            self.datagrams.append((self.last, addr, port, data))

    def finish(self, quiet_s=2.0):
        while time.time() - self.last < quiet_s:
            time.sleep(0.2)
        self.stop = True
        self.join()


def write_pcap(path, datagrams, dport):
    """Ethernet/IPv4/UDP frames from each sender to 127.0.0.1:dport"""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
        for t, addr, sport, data in datagrams:
            udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                             socket.inet_aton(addr), socket.inet_aton("127.0.0.1"))
            s = sum(struct.unpack("!10H", ip))
            s = (s & 0xffff) + (s >> 16)
            ip = ip[:10] + struct.pack("!H", ~((s & 0xffff) + (s >> 16)) & 0xffff) + ip[12:]
            frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
            sec = int(t)
            f.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(frame), len(frame)))
            f.write(frame)


def nfpcapd(outdir, name, pcap, opts, port):
    """nfpcapd reads the day into hourly nfcapd files (its timeouts on packet time), then
    nfreplay sends them in time order as NetFlow v9: (the last failed or final process, the
    command lines)"""
    flows = os.path.join(outdir, name + ".nfcapd")
    if os.path.isdir(flows):
        for f in os.listdir(flows):
            os.remove(os.path.join(flows, f))
    else:
        os.mkdir(flows)
    cmd = ["nfpcapd", "-r", pcap, "-w", flows, "-t", "3600"] + opts
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shown = [" ".join(cmd)]
    if result.returncode != 0:
        return result, shown[0]
    files = sorted(f for f in os.listdir(flows) if f.startswith("nfcapd.2"))
    output = result.stdout
    for f in files:
        # -d: microseconds between datagrams, so that the receiver keeps up
        replay = ["nfreplay", "-r", os.path.join(flows, f), "-H", "127.0.0.1", "-p", str(port), "-v", "9",
                  "-d", "100"]
        result = subprocess.run(replay, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output += result.stdout
        if result.returncode != 0:
            break
    shown.append("for each of %d files FLOWS/nfcapd.* in order: nfreplay -r FILE -H 127.0.0.1 -p PORT -v 9 -d 100"
                 % len(files))
    result.stdout = output
    return result, "; ".join(shown)


def export(outdir, name, log):
    tool, opts = EXPORTS[name]
    pcap = os.path.join(outdir, "day.pcap")
    rx = Receiver()
    rx.start()
    started = time.time()
    if tool == "nfpcapd":
        result, shown = nfpcapd(outdir, name, pcap, opts, rx.port)
    elif tool == "softflowd":
        cmd = ["softflowd", "-d", "-a", "-r", pcap, "-n", "127.0.0.1:%d" % rx.port,
               "-p", os.path.join(outdir, "softflowd.pid")] + opts
        shown = " ".join(cmd)
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    else:
        conf = os.path.join(outdir, name + ".pmacctd.conf")
        with open(conf, "w") as f:
            f.write(PMACCT_COMMON.format(dir=outdir, pcap=pcap, port=rx.port) + opts)
        cmd = ["pmacctd", "-f", conf]
        shown = "pmacctd -f %s  # %s" % (conf, (PMACCT_COMMON.format(dir=outdir, pcap=pcap, port="PORT") + opts)
                                           .replace("\n", "; "))
        result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rx.finish()
    path = os.path.join(outdir, name + ".pcap")
    write_pcap(path, rx.datagrams, rx.port)
    log.write("+ %s\n%s\nexit %d; %d datagrams, %d bytes in %.0f s -> %s\n\n" % (
        shown, result.stdout, result.returncode, len(rx.datagrams), sum(len(d[3]) for d in rx.datagrams),
        time.time() - started, path))
    log.flush()
    if result.returncode != 0:
        sys.exit("export.py: %s failed (exit %d), see exporters.log" % (tool, result.returncode))
    print("%-26s %6d datagrams %9d bytes" % (name, len(rx.datagrams), sum(len(d[3]) for d in rx.datagrams)))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    outdir = os.path.abspath(sys.argv[1])
    names = sys.argv[2:] or list(EXPORTS)
    with open(os.path.join(outdir, "exporters.log"), "a") as log:
        for name in names:
            export(outdir, name, log)


if __name__ == "__main__":
    main()
