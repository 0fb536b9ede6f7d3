#!/usr/bin/env python3
"""export.py: the evaluation day through the real exporters, the MIDDLE of the measurement.

Feeds `day.pcap` (from gen_day.py) to softflowd and to pmacct's pmacctd (Debian's packages,
as the integration tests run them) exporting to a UDP socket on loopback that this script
holds, and writes what each exporter sent as a pcap of its datagrams (Ethernet/IPv4/UDP from
127.0.0.1, the received time) beside the day: what `exflow replay` and score.py read.

    python3 benches/eval/export.py OUTDIR            # every export of EXPORTS
    python3 benches/eval/export.py OUTDIR pmacct_v9_latecache

Exports (the exporters' command lines are written to OUTDIR/exporters.log), all with the
exporters' default timeouts (reading a capture, softflowd and pmacctd export a flow promptly when it
ends or idles out):
- softflowd_ipfix: softflowd 1.1.0, IPFIX, a cache big enough for the day (`-m 65536`); `-a`
  stamps flows with the capture's times rather than the wall clock
- softflowd_ipfix_sampled10: the same, 1-in-10 packet sampling (`-s 10`)
- pmacct_ipfix: pmacctd + nfprobe, IPFIX, a 65,536-flow cache
- pmacct_v9_latecache: pmacctd + nfprobe, NetFlow v9, pmacct's default 8,192-flow cache: on the
  full day it overflows and records come late
- pmacct_v9_maxlife1800: NetFlow v9 with a 30-minute active timeout (`maxlife=1800`, what routers
  use): reading a capture, pmacctd then holds most records for hours (measured: a median of
  ~18 h behind the newest flow end on the reduced day), a stress test of late records

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


def export(outdir, name, log):
    tool, opts = EXPORTS[name]
    pcap = os.path.join(outdir, "day.pcap")
    rx = Receiver()
    rx.start()
    if tool == "softflowd":
        cmd = ["softflowd", "-d", "-a", "-r", pcap, "-n", "127.0.0.1:%d" % rx.port,
               "-p", os.path.join(outdir, "softflowd.pid")] + opts
        shown = " ".join(cmd)
    else:
        conf = os.path.join(outdir, name + ".pmacctd.conf")
        with open(conf, "w") as f:
            f.write(PMACCT_COMMON.format(dir=outdir, pcap=pcap, port=rx.port) + opts)
        cmd = ["pmacctd", "-f", conf]
        shown = "pmacctd -f %s  # %s" % (conf, (PMACCT_COMMON.format(dir=outdir, pcap=pcap, port="PORT") + opts)
                                           .replace("\n", "; "))
    started = time.time()
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
