#!/usr/bin/env python3
"""gen_day.py: exflow's labelled evaluation day, the INPUT of the detection-quality measurement.

Writes what a border gateway's inside interface saw over a 36-hour "day" (Tuesday 00:00 UTC to
Wednesday 12:00 UTC, two nights and one and a half working days, home country NL) as a pcap
(`day.pcap`), and `labels.json`, which says for every inside<->outside conversation and every
attack scenario which rules must, may and must not fire. `export.py` feeds the pcap to the real
exporters (softflowd, pmacctd); `score.py` replays their exports through exflow and scores the
alerts against the labels.

    python3 benches/eval/gen_day.py --scale full OUTDIR     # 1,208 hosts, 41,264 benign conversations, 66 MB
    python3 benches/eval/gen_day.py --scale ci OUTDIR       # the reduced day of tests/data/eval/ (158 hosts)

Needs scapy (`pip install scapy`: its pcap writer). Deterministic: the seed (--seed, default
20260301) gives the same bytes. The techniques are those of the shared corpus' gen_traffic.py (which made
tests/data/border_mix.pcap): big TCP (and UDP media) transfers are GRO super-frames of up to
64 KB captured with a short snaplen, so the IP length fields and the pcap wire length carry the
full volume (exporters count those) while the file stays small.

Background (benign): web/QUIC browsing of 1,200 workstations (a working-day shape, heavy-tailed
per-host activity and sizes, uploads included), a forwarding resolver, and the tricky legitimate
classes: push keepalives (Apple :5223, Google :5228, exact and deferred timers), a one-hour video
call, a nightly cloud backup, git pushes, a public inside web server serving large downloads to
clients abroad, a site-to-site WireGuard tunnel with keepalives, an SSH bastion, monitoring pings.
Attacks: one scenario of each kind, in gen_attacks() below. Outside ends are public addresses of real
providers; the countries are those the embedded GeoIP database (data/geoip) gives them (checked
with `--check-geo`, which needs the `maxminddb` package); ASNs are the providers' real ones (the
embedded database has none: they are in the labels for rules that learn ASNs elsewhere).
"""
import argparse
import json
import math
import os
import random
import sys

import socket
import struct

from scapy.utils import RawPcapWriter

T0 = 1741564800.0          # 2025-03-10 00:00:00 UTC is a Monday; the day starts Tuesday 00:00
T0 += 86400.0              # 2025-03-11 00:00:00 UTC (Tuesday)
HOUR = 3600.0
DAY_HOURS = 36             # to Wednesday 12:00 UTC
T_END = T0 + DAY_HOURS * HOUR
ROUTER_MAC = "02:00:5e:20:00:01"
SNAP_PAYLOAD = 16          # payload bytes kept for big (truncated) segments
SMALL_FULL = 96            # payloads up to this size are captured in full
SUPER = 64000              # GRO super-frame payload

INSIDE = ["10.20.0.0/16", "2001:db8:20::/48"]
HOME = "NL"
WATCH = ["IR", "KP"]
RESOLVER = "10.20.0.53"

rng = random.Random()


# -------------------------------------------------------------------------------------------
# packet plumbing. Frames are packed with struct: building each one with scapy's layers costs
# 0.2-5 ms (the machine is shared), which is hours for a day of half a million frames.

FLAGS = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
_addr_cache = {}
_mac_cache = {}


def addr_bytes(a):
    b = _addr_cache.get(a)
    if b is None:
        b = socket.inet_pton(socket.AF_INET6, a) if ":" in a else socket.inet_aton(a)
        _addr_cache[a] = b
    return b


def host_mac(ip):
    m = _mac_cache.get(ip)
    if m is None:
        h = sum(ord(c) * 131 ** i for i, c in enumerate(ip)) & 0xffffffff
        m = bytes([0x02, 0x20]) + struct.pack("!I", h)
        _mac_cache[ip] = m
    return m


ROUTER = bytes.fromhex(ROUTER_MAC.replace(":", ""))


def payload(n):
    """captured payload bytes for an L4 payload of true size n"""
    return rng.randbytes(n if n <= SMALL_FULL else SNAP_PAYLOAD)


def ip_checksum(header):
    s = sum(struct.unpack("!10H", header))
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


class Capture:
    """Collects (time, raw frame, wire length) for the whole day."""

    def __init__(self):
        self.frames = []

    def add(self, t, src, dst, proto, l4, payload_len, inside_ip, outbound, ttl=64, data=None):
        """One frame: l4 is the L4 header, payload_len the true payload size (the IP length
        fields say it), `data` the captured payload (default: payload(payload_len))."""
        body = l4 + (payload(payload_len) if data is None else data)
        mac = host_mac(inside_ip)
        eth = (ROUTER + mac) if not outbound else (mac + ROUTER)
        if ":" in src:
            plen = len(l4) + payload_len
            hdr = struct.pack("!IHBB", 0x60000000, plen, proto, ttl) + addr_bytes(src) + addr_bytes(dst)
            raw = eth + b"\x86\xdd" + hdr + body
            wire = 14 + 40 + plen
        else:
            total = 20 + len(l4) + payload_len
            hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, rng.getrandbits(16), 0x4000, ttl, proto, 0,
                              addr_bytes(src), addr_bytes(dst))
            hdr = hdr[:10] + struct.pack("!H", ip_checksum(hdr)) + hdr[12:]
            raw = eth + b"\x08\x00" + hdr + body
            wire = 14 + total
        self.frames.append((t, raw, wire))


class TcpConn:
    """One TCP connection; `cli_is_inside` says which end is the inside host."""

    def __init__(self, cap, cli, cport, srv, sport, cli_is_inside=True):
        self.cap, self.cli, self.cport, self.srv, self.sport = cap, cli, cport, srv, sport
        self.cseq, self.sseq = rng.getrandbits(32), rng.getrandbits(32)
        self.cli_is_inside = cli_is_inside
        self.inside = cli if cli_is_inside else srv

    def pkt(self, t, from_cli, flags, n=0):
        sp, dp = (self.cport, self.sport) if from_cli else (self.sport, self.cport)
        src, dst = (self.cli, self.srv) if from_cli else (self.srv, self.cli)
        seq, ack = (self.cseq, self.sseq) if from_cli else (self.sseq, self.cseq)
        bits = sum(FLAGS[f] for f in flags)
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xffffffff, (ack & 0xffffffff) if bits & 16 else 0,
                          5 << 4, bits, 64240, 0, 0)
        outbound = from_cli == self.cli_is_inside
        self.cap.add(t, src, dst, 6, tcp, n, self.inside, outbound, 64 if outbound else 52)
        adv = n + (1 if bits & 3 else 0)
        if from_cli:
            self.cseq += adv
        else:
            self.sseq += adv

    def open(self, t, rtt):
        self.pkt(t, True, "S")
        self.pkt(t + rtt, False, "SA")
        self.pkt(t + rtt + 0.0002, True, "A")
        return t + rtt + 0.0002

    def close(self, t, rtt, cli_first=True):
        self.pkt(t, cli_first, "FA")
        self.pkt(t + rtt, not cli_first, "FA")
        self.pkt(t + rtt + 0.0002, cli_first, "A")
        return t + rtt

    def send(self, t, from_cli, nbytes, rtt, duration=None):
        """nbytes as super-frames, an ACK every second one; spread over `duration` seconds
        (default: as fast as 50 Mbit/s). Returns the time after the last ACK."""
        frames = max(1, math.ceil(nbytes / SUPER))
        if duration is None:
            duration = nbytes / 6.25e6
        step = duration / frames
        sent, i = 0, 0
        while sent < nbytes:
            n = min(SUPER, nbytes - sent)
            self.pkt(t, from_cli, "PA" if sent + n >= nbytes else "A", n)
            sent += n
            i += 1
            if i % 2 == 0 or sent >= nbytes:
                self.pkt(t + rtt / 2, not from_cli, "A")
            t += step * rng.uniform(0.7, 1.3) if frames > 1 else 0.0003
        return t + rtt / 2


def udp(cap, t, src, sport, dst, dport, n, inside, outbound, ttl=64, data=None):
    cap.add(t, src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + n, 0), n, inside, outbound, ttl, data)


def icmp_echo(cap, t, src, dst, reply, ident, seq, inside):
    cap.add(t, src, dst, 1, struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq & 0xffff), 56,
            inside, not reply, 118 if reply else 64)


def udp_stream(cap, t0, t1, a, ap, b, bp, bytes_a, bytes_b, inside):
    """A UDP flow a<->b between t0 and t1 carrying bytes_a from a and bytes_b from b, as
    super-frames (UDP GRO) of up to 60 KB."""
    for src, sp, dst, dp, total in ((a, ap, b, bp, bytes_a), (b, bp, a, ap, bytes_b)):
        frames = max(1, math.ceil(total / 60000))
        step = (t1 - t0) / frames
        t = t0 + rng.uniform(0, 0.02)
        left = total
        while left > 0:
            n = min(60000, left)
            udp(cap, t, src, sp, dst, dp, n, inside, src == inside)
            left -= n
            t += step * rng.uniform(0.8, 1.2)


def eport():
    return rng.randint(32768, 60999)


def dns_name(qname):
    return b"".join(bytes([len(p)]) + p.encode() for p in qname.split(".")) + b"\x00"


QTYPES = {"A": 1, "TXT": 16, "NULL": 10}


def dns_message(qid, qname, qtype, answer=None):
    """a DNS query (answer None) or response with one answer record (RFC 1035 section 4.1):
    answer is an IPv4 address for A, text for TXT"""
    t = QTYPES[qtype]
    question = dns_name(qname) + struct.pack("!HH", t, 1)
    if answer is None:
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
    if qtype == "A":
        rdata = socket.inet_aton(answer)
    else:
        rdata = bytes([len(answer)]) + answer.encode()
    rr = b"\xc0\x0c" + struct.pack("!HHIH", t, 1, 0, len(rdata)) + rdata
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + rr


def dns_pair(cap, t, cli, cport, srv, qname, qtype="A", answer="93.184.216.34", rtt=0.02):
    """one DNS query from inside host cli and its answer"""
    qid = rng.getrandbits(16)
    q = dns_message(qid, qname, qtype)
    r = dns_message(qid, qname, qtype, answer)
    udp(cap, t, cli, cport, srv, 53, len(q), cli, True, data=q)
    udp(cap, t + rtt, srv, 53, cli, cport, len(r), cli, False, 56, data=r)


# -------------------------------------------------------------------------------------------
# outside ends: public addresses of real providers, with the embedded database's country

WEB = [  # (address, port, provider, country, asn, weight)
    ("142.250.185.78", 443, "Google", "US", 15169, 10), ("142.250.179.206", 443, "Google", "US", 15169, 6),
    ("172.217.16.142", 443, "Google", "US", 15169, 5), ("216.58.1.1", 443, "Google", "CA", 15169, 1),
    ("13.107.42.14", 443, "Microsoft", "US", 8068, 8), ("20.190.159.2", 443, "Microsoft", "IE", 8075, 6),
    ("40.126.32.74", 443, "Microsoft", "NL", 8075, 5), ("52.169.118.173", 443, "Microsoft", "IE", 8075, 3),
    ("20.82.1.1", 443, "Microsoft", "NL", 8075, 3), ("204.79.197.200", 443, "Microsoft Bing", "US", 8068, 3),
    ("104.16.132.229", 443, "Cloudflare", "US", 13335, 6), ("104.18.32.47", 443, "Cloudflare", "US", 13335, 4),
    ("151.101.65.140", 443, "Fastly", "US", 54113, 5), ("151.101.0.223", 443, "Fastly", "US", 54113, 3),
    ("95.101.72.10", 443, "Akamai", "NL", 20940, 4), ("2.16.1.1", 443, "Akamai", "NL", 20940, 3),
    ("23.54.1.1", 443, "Akamai", "US", 16625, 2), ("31.13.72.36", 443, "Meta", "IE", 32934, 4),
    ("157.240.221.35", 443, "Meta", "US", 32934, 3), ("185.60.216.35", 443, "Meta", "IE", 32934, 2),
    ("91.198.174.192", 443, "Wikimedia", "NL", 14907, 3), ("185.15.59.224", 443, "Wikimedia", "NL", 14907, 2),
    ("52.84.1.1", 443, "Amazon CloudFront", "US", 16509, 4), ("13.32.1.1", 443, "Amazon CloudFront", "US", 16509, 3),
    ("3.64.1.1", 443, "AWS eu-central-1", "DE", 16509, 2), ("35.156.1.1", 443, "AWS eu-central-1", "DE", 16509, 2),
    ("140.82.121.4", 443, "GitHub", "US", 36459, 2), ("185.199.108.153", 443, "GitHub Pages", "US", 54113, 2),
    ("194.109.6.66", 443, "XS4ALL", "NL", 3265, 2), ("195.121.1.1", 443, "KPN", "NL", 1136, 2),
    ("213.75.1.1", 443, "KPN", "NL", 1136, 1), ("212.58.244.20", 80, "BBC", "GB", 2818, 2),
    ("185.125.190.36", 80, "Canonical", "GB", 41231, 1), ("77.88.55.88", 443, "Yandex", "RU", 13238, 1),
    ("202.89.233.100", 443, "Microsoft China", "CN", 23724, 1), ("81.1.1.1", 443, "Orange", "FR", 3215, 1),
    ("2.21.1.1", 443, "Akamai", "DE", 20940, 1), ("162.125.1.1", 443, "Dropbox", "US", 19679, 2),
]
WEB_V6 = [
    ("2a00:1450:4001:82b::200e", 443, "Google", "IE", 15169, 4), ("2620:1ec:c11::200", 443, "Microsoft", "US", 8068, 3),
    ("2a03:2880:f12f:83:face:b00c:0:25de", 443, "Meta", "IE", 32934, 2), ("2606:4700::6810:84e5", 443, "Cloudflare", "US", 13335, 2),
]
QUIC = [("142.250.185.78", "US"), ("172.217.16.142", "US"), ("157.240.221.35", "US")]
UPLOAD_DSTS = [("162.125.1.1", "US"), ("20.190.159.2", "IE"), ("142.250.179.206", "US"), ("40.126.32.74", "NL")]
UPSTREAMS = [("8.8.8.8", "US"), ("8.8.4.4", "US"), ("1.1.1.1", "AU"), ("9.9.9.9", "US")]
APPLE_PUSH = ["17.57.144.%d" % i for i in range(10, 40)] + ["17.57.146.%d" % i for i in range(10, 40)]
GOOGLE_PUSH = ["64.233.184.188", "74.125.140.188", "142.250.102.188", "108.177.15.188"]
CLIENTS_ABROAD = [  # consumer networks downloading from the public web server
    ("73.%d.%d.%d", "US"), ("24.%d.%d.%d", "US"), ("79.%d.%d.%d", "DE"), ("177.%d.%d.%d", "BR"),
    ("122.%d.%d.%d", "IN"), ("126.%d.%d.%d", "JP"), ("86.1.%d.%d", "GB"), ("81.1.%d.%d", "FR"),
    ("1.160.%d.%d", "TW"), ("41.1.%d.%d", "ZA"), ("181.%d.%d.%d", "AR"), ("49.%d.%d.%d", "KR"),
]
CHECK_GEO = {}             # address -> country the labels claim, for --check-geo
CHECK_ABROAD = set()       # addresses that must not be in the home country


def claim(addr, country):
    CHECK_GEO[addr] = country
    return addr


# -------------------------------------------------------------------------------------------
# the day

class Day:
    def __init__(self, scale):
        self.cap = Capture()
        self.scale = scale
        self.benign = []           # [inside, outside, proto, outside_port, start, end, class]
        self.scenarios = []

    def conv(self, inside, outside, proto, port, start, end, cls):
        self.benign.append([inside, outside, proto, port, round(start, 3), round(end, 3), cls])


def shape(t):
    """working-day activity (0..1) at UTC time t: NL office hours 08:00-18:00 CET, lunch dip"""
    h = ((t - T0) / HOUR) % 24
    table = [0.03, 0.02, 0.02, 0.02, 0.02, 0.04, 0.15, 0.55, 0.95, 1.0, 1.0, 0.75,
             0.6, 0.95, 1.0, 0.95, 0.7, 0.35, 0.15, 0.1, 0.08, 0.06, 0.05, 0.04]
    return table[int(h)]


def office_time():
    """a time drawn from the working-day shape"""
    while True:
        t = rng.uniform(T0, T_END)
        if rng.random() < shape(t):
            return t


class Hosts:
    def __init__(self, n):
        self.v4 = ["10.20.%d.%d" % (10 + i // 250, 1 + i % 250) for i in range(n)]
        # heavy-tailed activity: Pareto weights
        self.weight = [min(50.0, rng.paretovariate(1.3)) for _ in range(n)]
        self.v6 = {h: "2001:db8:20:%x::%x" % (10 + i // 250, 1 + i % 250)
                   for i, h in enumerate(self.v4) if rng.random() < 0.3}
        self.cum = []
        s = 0.0
        for w in self.weight:
            s += w
            self.cum.append(s)

    def pick(self):
        import bisect
        return self.v4[bisect.bisect_left(self.cum, rng.uniform(0, self.cum[-1]))]


def pick_weighted(items):
    total = sum(i[-1] for i in items)
    x = rng.uniform(0, total)
    for i in items:
        x -= i[-1]
        if x <= 0:
            return i
    return items[-1]


def web_conversation(day, host, t, v6addr=None):
    cap = day.cap
    if v6addr and rng.random() < 0.5:
        dst, port, _, cc, _, _ = pick_weighted(WEB_V6)
        cli = v6addr
    elif rng.random() < 0.08:
        dst, cc = rng.choice(QUIC)
        claim(dst, cc)
        sp = eport()
        dur = rng.uniform(1, 40)
        down = int(min(5e7, rng.lognormvariate(11, 1.5)))
        up = int(rng.uniform(2000, 6000) + down * 0.03)
        udp_stream(cap, t, t + dur, host, sp, dst, 443, up, down, host)
        day.conv(host, dst, 17, 443, t, t + dur, "web")
        return
    else:
        dst, port, _, cc, _, _ = pick_weighted(WEB)
        cli = host
    claim(dst, cc)
    c = TcpConn(cap, cli, eport(), dst, port)
    rtt = rng.uniform(0.005, 0.12)
    start = t
    t = c.open(t, rtt)
    for _ in range(min(20, int(rng.paretovariate(1.5)) + (rng.random() < 0.3))):
        req = int(rng.uniform(300, 2500))
        if rng.random() < 0.03:   # an upload: a form, an attachment, a photo
            req = int(min(25e6, 40_000 * rng.paretovariate(1.2)))
        t = c.send(t, True, req, rtt)
        resp = int(min(3e8, rng.lognormvariate(9.3, 1.8)))
        t = c.send(t + rtt, False, resp, rtt)
        t += rng.expovariate(1 / 3.0)
    end = c.close(t + rng.uniform(0.05, 20), rtt, cli_first=rng.random() < 0.6)
    day.conv(cli, dst, 6, port, start, end, "web")
    # the forwarding resolver asked upstream for the name (a cache miss half the time)
    if rng.random() < 0.5:
        up, ucc = rng.choice(UPSTREAMS)
        claim(up, ucc)
        tq = start - rng.uniform(0.03, 0.3)
        dns_pair(cap, tq, RESOLVER, eport(), up, "www%d.example-%d.com" % (rng.randint(1, 9), rng.randint(1, 4000)),
                 rtt=rng.uniform(0.005, 0.04))
        day.conv(RESOLVER, up, 17, 53, tq, tq + 0.05, "resolver")


def gen_background(day, hosts, n_conv):
    for _ in range(n_conv):
        t = office_time()
        h = hosts.pick()
        web_conversation(day, h, t, hosts.v6.get(h))


def gen_push(day, hosts, share):
    """one TCP connection per device to Apple :5223 or Google :5228; a keepalive every 15-28
    min, exact (a fixed period) or deferred (the OS postpones it to batch wake-ups); a few
    notifications arrive on it. Devices are on site office hours, some always on."""
    n_exact = n_deferred = 0
    for h in hosts.v4:
        if rng.random() >= share:
            continue
        if rng.random() < 0.15:   # always on: one connection all day and night
            spans = [(T0 + rng.uniform(0, 600), T_END - rng.uniform(0, 600))]
        else:                     # on site in office hours, both days
            spans = [(d + rng.gauss(7.2, 0.6) * HOUR, min(T_END - 60, d + rng.gauss(16.3, 0.8) * HOUR))
                     for d in (T0, T0 + 24 * HOUR)]
        for t_on, t_off in spans:
            n = push_connection(day, h, t_on, t_off)
            n_exact += n
            n_deferred += 1 - n
    return n_exact, n_deferred


def push_connection(day, h, t_on, t_off):
    """one device's push connection from t_on to t_off; 1 if its timer is exact"""
    apple = rng.random() < 0.55
    srv = rng.choice(APPLE_PUSH) if apple else rng.choice(GOOGLE_PUSH)
    claim(srv, "US")
    port = 5223 if apple else 5228
    exact = rng.random() < 0.5
    period = (rng.choice([15, 20, 25]) if apple else 28) * 60.0
    c = TcpConn(day.cap, h, eport(), srv, port)
    rtt = rng.uniform(0.02, 0.12)
    t = c.open(t_on, rtt)
    t = c.send(t, True, rng.randint(500, 900), rtt)
    t = c.send(t + rtt, False, rng.randint(3000, 5000), rtt)
    while True:
        t += (period + rng.uniform(-0.5, 0.5)) if exact else rng.uniform(15 * 60, 28 * 60)
        if t >= t_off:
            break
        c.pkt(t, True, "PA", rng.choice([53, 53, 85]))
        c.pkt(t + rtt, False, "PA", 53)
        c.pkt(t + rtt + 0.0003, True, "A")
        if rng.random() < 0.08:   # a notification
            tn = t + rng.uniform(30, 300)
            c.send(tn, False, rng.randint(400, 4000), rtt)
    c.close(t_off, rtt)
    day.conv(h, srv, 6, port, t_on, t_off, "push_keepalive_exact" if exact else "push_keepalive_deferred")
    return int(exact)


def gen_video_call(day, host, start, minutes):
    """Teams-like media: symmetric UDP, ~1 Mbit/s each way, to a media relay"""
    relay = claim("52.112.0.1", "US")
    sp = eport()
    end = start + minutes * 60
    per_way = int(minutes * 60 * 1.0e6 / 8)
    udp_stream(day.cap, start, end, host, sp, relay, 3479, int(per_way * rng.uniform(0.9, 1.1)),
               int(per_way * rng.uniform(0.9, 1.1)), host)
    day.conv(host, relay, 17, 3479, start, end, "video_call")


def gen_backup(day, host, night, first):
    """nightly backup to S3 eu-central-1 (DE), 01:00 UTC, ~0.9 GB in one connection"""
    s3 = claim("52.219.170.1", "DE")
    start = T0 + night * 24 * HOUR + 1 * HOUR + rng.uniform(0, 120)
    size = int(rng.uniform(0.8e9, 1.0e9) / (4 if day.scale == "ci" else 1))
    c = TcpConn(day.cap, host, eport(), s3, 443)
    t = c.open(start, 0.012)
    t = c.send(t, True, size, 0.012, duration=size / 250e3)
    end = c.close(t + 1, 0.012)
    day.conv(host, s3, 6, 443, start, end, "cloud_backup_first_night" if first else "cloud_backup")


def gen_git_pushes(day, devs):
    gh = claim("140.82.121.3", "US")
    for h in devs:
        for _ in range(rng.randint(0, 4)):
            t = office_time()
            size = int(min(40e6, 30_000 * rng.paretovariate(1.0)))
            c = TcpConn(day.cap, h, eport(), gh, 22)
            t1 = c.open(t, 0.09)
            t1 = c.send(t1, False, 2000, 0.09)
            t1 = c.send(t1 + 0.1, True, size, 0.09, duration=size / 2e6 + 1)
            t1 = c.send(t1 + 0.2, False, 3000, 0.09)
            end = c.close(t1 + 0.5, 0.09)
            day.conv(h, gh, 6, 22, t, end, "git_push")
    # the monorepo's big push
    h = devs[0]
    t = T0 + 14.2 * HOUR
    c = TcpConn(day.cap, h, eport(), gh, 22)
    t1 = c.open(t, 0.09)
    t1 = c.send(t1, True, 70_000_000, 0.09, duration=90)
    end = c.close(t1 + 0.5, 0.09)
    day.conv(h, gh, 6, 22, t, end, "git_push")


def client_abroad():
    fmt, cc = rng.choice(CLIENTS_ABROAD)
    n = fmt.count("%d")
    addr = fmt % tuple([rng.randint(1, 254) for _ in range(n)])
    CHECK_ABROAD.add(addr)
    return addr


def gen_web_server(day, server, until, pages, downloads, cls):
    """a public inside web server: clients abroad connect in; pages and large downloads"""
    for _ in range(pages):
        t = office_time()
        if t >= until:
            continue
        cli = client_abroad()
        c = TcpConn(day.cap, cli, eport(), server, 443, cli_is_inside=False)
        rtt = rng.uniform(0.02, 0.3)
        t1 = c.open(t, rtt)
        t1 = c.send(t1, True, rng.randint(400, 1500), rtt)
        t1 = c.send(t1 + rtt, False, int(min(2e7, rng.lognormvariate(10, 1.5))), rtt)
        end = c.close(t1 + rng.uniform(0.1, 5), rtt)
        day.conv(server, cli, 6, 443, t, end, cls)
    for _ in range(downloads):
        t = rng.uniform(T0 + 8 * HOUR, min(until, T0 + 30 * HOUR) - 3600)
        cli = client_abroad()
        size = int(rng.uniform(150e6, 400e6) / (4 if day.scale == "ci" else 1))
        c = TcpConn(day.cap, cli, eport(), server, 443, cli_is_inside=False)
        t1 = c.open(t, 0.15)
        t1 = c.send(t1, True, 600, 0.15)
        t1 = c.send(t1 + 0.15, False, size, 0.15, duration=size / 1.5e6)
        end = c.close(t1 + 0.5, 0.15)
        day.conv(server, cli, 6, 443, t, end, cls + "_download")


def gen_wireguard(day, gw):
    """site-to-site WireGuard (UDP 51820) to a partner site in DE: persistent keepalive 25 s
    when idle, bursts of file traffic in office hours; one 5-tuple for the whole day"""
    peer = claim("85.214.132.117", "DE")
    t = T0 + 5
    while t < T_END - 30:
        if rng.random() < shape(t) * 0.08:
            size_out = int(min(3e7, 40_000 * rng.paretovariate(1.3)))
            size_in = int(min(3e7, 40_000 * rng.paretovariate(1.3)))
            dur = rng.uniform(2, 60)
            udp_stream(day.cap, t, t + dur, gw, 51820, peer, 51820, size_out, size_in, gw)
            t += dur
        else:
            udp(day.cap, t, gw, 51820, peer, 51820, 32, gw, True)
            udp(day.cap, t + rng.uniform(0.01, 2), peer, 51820, gw, 51820, 32, gw, False, 55)
            t += 25.0
    day.conv(gw, peer, 17, 51820, T0 + 5, T_END - 30, "wireguard_vpn")


def gen_bastion(day, bastion, sessions):
    """an SSH bastion: admins' interactive sessions to cloud servers (DE), 0.5-6 h, and the odd
    deployment copy; admins connect in from home (NL)"""
    servers = ["18.184.%d.%d" % (rng.randint(0, 255), rng.randint(1, 254)) for _ in range(8)]
    for _ in range(sessions):
        srv = claim(rng.choice(servers), "DE")
        start = office_time()
        dur = min(rng.uniform(0.5, 6) * HOUR, T_END - start - 60)
        c = TcpConn(day.cap, bastion, eport(), srv, 22)
        t = c.open(start, 0.01)
        t = c.send(t, False, 2000, 0.01)
        while t < start + dur:
            t += rng.expovariate(1 / 60.0)
            if rng.random() < 0.01:
                t = c.send(t, True, int(rng.uniform(5e6, 40e6)), 0.01)   # scp of a release
            else:
                c.pkt(t, True, "PA", rng.choice([36, 36, 52, 100]))
                c.pkt(t + 0.011, False, "PA", rng.randint(36, 1400))
                c.pkt(t + 0.012, True, "A")
        end = c.close(t + 1, 0.01)
        day.conv(bastion, srv, 6, 22, start, end, "ssh_bastion")
        home = claim("195.121.%d.%d" % (rng.randint(0, 255), rng.randint(1, 254)), "NL")
        c = TcpConn(day.cap, home, eport(), bastion, 22, cli_is_inside=False)
        t = c.open(start - 30, 0.008)
        t = c.send(t, False, 2500, 0.008)
        t = c.send(t + 1, True, 20000, 0.008)
        end = c.close(start + dur + 5, 0.008)
        day.conv(bastion, home, 6, 22, start - 30, end, "ssh_bastion")


def gen_monitoring(day, mon, period):
    targets = [("8.8.8.8", "US"), ("1.1.1.1", "AU"), ("85.214.132.117", "DE")]
    for dst, cc in targets:
        claim(dst, cc)
        t, seq = T0 + rng.uniform(0, 10), 0
        ident = rng.getrandbits(16)
        while t < T_END - 5:
            seq += 1
            icmp_echo(day.cap, t, mon, dst, False, ident, seq, mon)
            icmp_echo(day.cap, t + 0.01, dst, mon, True, ident, seq, mon)
            t += period
        day.conv(mon, dst, 1, 0, T0, T_END, "monitoring_ping")


def gen_ntp(day, host):
    srv = claim("162.159.200.1", "US")
    t = T0 + 7
    while t < T_END:
        udp(day.cap, t, host, 123, srv, 123, 48, host, True)
        udp(day.cap, t + 0.011, srv, 123, host, 123, 48, host, False)
        t += 1024
    day.conv(host, srv, 17, 123, T0 + 7, T_END, "ntp")


# -------------------------------------------------------------------------------------------
# attacks: one of each kind. `caught_by`: a scenario counts as caught when one of these rules
# alerts on it (names of rules that do not exist yet are the proposals; a rule of
# another name shows up in the scorer's "by any rule" column). `may`: other rules that are
# right to fire on it.

B32 = "abcdefghijklmnopqrstuvwxyz234567"


def b32(n):
    return "".join(rng.choice(B32) for _ in range(n))


def scenario(day, sid, kind, inside, outside, start, end, caught_by, what, may=(), asn=None,
             country=None, any_outside=False):
    day.scenarios.append({
        "id": sid, "kind": kind, "inside": inside, "outside": list(outside), "asn": asn,
        "country": country, "any_outside": any_outside, "start": round(start, 3),
        "end": round(end, 3), "caught_by": list(caught_by), "may": list(may), "what": what})


def upload_conn(day, host, dst, port, t, size, duration, rtt=0.05):
    c = TcpConn(day.cap, host, eport(), dst, port)
    t1 = c.open(t, rtt)
    t1 = c.send(t1, True, 517, rtt)
    t1 = c.send(t1 + rtt, False, 4000, rtt)
    t1 = c.send(t1 + 0.1, True, size, rtt, duration=duration)
    return c.close(t1 + 0.5, rtt)


def gen_attacks(day, hosts):
    cap = day.cap
    # eleven ordinary workstations (not the developers or the video caller) turn attacker;
    # each also browses as usual on both days, so it has a history
    attackers = [hosts.v4[-1 - 3 * k] for k in range(11)]
    for h in attackers:
        for k in range(40):
            t = office_time()
            web_conversation(day, h, t if k % 4 else min(t, T0 + 20 * HOUR), hosts.v6.get(h))
    a = iter(attackers)

    h = next(a)
    dst = claim("5.255.255.77", "RU")
    t = T0 + 14 * HOUR + 600
    end = upload_conn(day, h, dst, 443, t, 400_000_000, 20 * 60)
    scenario(day, "bulk_upload", "bulk_upload", h, [dst], t, end, ["bulk_egress"],
             "400 MB to Yandex (RU) in 20 min", may=["long_lived_foreign", "egress_anomaly", "new_destination"],
             asn=13238, country="RU")

    h = next(a)
    dst = claim("39.156.66.10", "CN")
    t = T0 + 11 * HOUR
    end = upload_conn(day, h, dst, 443, t, 30_000_000, 3 * HOUR)
    scenario(day, "long_lived_foreign", "long_lived_foreign", h, [dst], t, end, ["long_lived_foreign"],
             "3 h TLS channel to Baidu (CN), 30 MB up", may=["egress_anomaly", "quiet_long_flow", "low_and_slow", "new_destination"],
             asn=55967, country="CN")

    h = next(a)
    dst = claim("185.220.101.45", "DE")
    period = 300.0
    t = T0 + 9 * HOUR
    first = t
    beats = 0
    while t < T0 + 17 * HOUR:
        t += period * rng.uniform(0.7, 1.3)
        if rng.random() < 0.15:   # a missed beat
            continue
        c = TcpConn(cap, h, eport(), dst, 443)
        rtt = rng.uniform(0.02, 0.04)
        t1 = c.open(t, rtt)
        t1 = c.send(t1, True, rng.randint(250, 900), rtt)      # check-in with varying payload
        t1 = c.send(t1 + rtt, False, rng.choice([150, 150, 180, 2400]), rtt)
        c.close(t1 + 0.01, rtt)
        beats += 1
    scenario(day, "beacon_jitter", "beacon", h, [dst], first, t, ["beacon"],
             "%d TLS check-ins to 185.220.101.45 (DE) every 5 min +-30%%, 15%% missed, 8 h" % beats,
             may=["new_destination"], asn=60729, country="DE")

    h = next(a)
    dst = claim("77.88.8.8", "RU")
    t = T0 + 15 * HOUR
    first = t
    for _ in range(1500 if day.scale == "full" else 800):
        qn = ".".join([b32(63), b32(63), b32(40), "t.exfil-c2.example"])
        dns_pair(cap, t, h, 53211, dst, qn, "TXT", b32(150), rtt=0.035)
        t += rng.uniform(0.2, 0.45)
    scenario(day, "dns_tunnel_fast", "dns_tunnel", h, [dst], first, t, ["dns_tunnel"],
             "iodine-like TXT tunnel to Yandex DNS (RU), ~3 queries/s for minutes", asn=13238, country="RU")

    h = next(a)
    dst = claim("114.114.114.114", "CN")
    t = T0 + 19 * HOUR
    first = t
    hours = 3 if day.scale == "full" else 2
    while t < first + hours * HOUR:
        qn = ".".join([b32(rng.randint(30, 50)), "s.exfil-c2.example"])
        dns_pair(cap, t, h, 41234, dst, qn, "A", "10.%d.%d.%d" % (
            rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)), rtt=0.09)
        t += rng.uniform(0.8, 1.2)
    scenario(day, "dns_tunnel_slow", "dns_tunnel", h, [dst], first, t, ["dns_tunnel"],
             "a short query a second for %d h to 114DNS (CN), one source port" % hours, asn=21859, country="CN",
             may=["beacon", "long_lived_foreign", "quiet_long_flow"])

    h = next(a)
    dst = claim("2.176.10.10", "IR")
    t = T0 + 11.5 * HOUR
    end = upload_conn(day, h, dst, 443, t, 2_000_000, 40)
    scenario(day, "watchlist_country", "watchlist", h, [dst], t, end, ["watchlist"],
             "2 MB to an Iranian host", asn=58224, country="IR", may=["new_destination"])

    h = next(a)
    dst = claim("200.147.35.149", "BR")
    t = T0 + 33 * HOUR
    end = upload_conn(day, h, dst, 443, t, 30_000_000, 300)
    scenario(day, "new_destination", "new_destination", h, [dst], t, end, ["new_destination"],
             "30 MB to UOL (BR) on day 2, a country this host never used", asn=7162, country="BR",
             may=["egress_anomaly"])

    h = next(a)
    hetzner = [claim(x, "DE") for x in [
        "5.9.10.10", "88.198.21.4", "136.243.4.40", "144.76.9.7", "148.251.3.3", "178.63.15.1",
        "159.69.4.9", "168.119.3.60", "195.201.8.2", "49.12.7.50", "116.203.5.5", "128.140.3.9",
        "157.90.12.4", "162.55.9.19", "167.235.1.3", "188.40.8.8", "23.88.2.22", "46.4.11.8",
        "78.46.7.77", "138.201.5.55"]]
    t = T0 + 34 * HOUR
    first = t
    for dst in hetzner:
        end = upload_conn(day, h, dst, 443, t, 30_000_000, 150)
        t = end + rng.uniform(5, 30)
    scenario(day, "spread_exfil", "spread_exfil", h, hetzner, first, end, ["bulk_egress", "spread_egress"],
             "600 MB within an hour to 20 Hetzner (AS24940, DE) addresses, 30 MB each", asn=24940,
             country="DE", may=["egress_anomaly", "new_destination", "low_and_slow"])

    # role change: a second public web server, only answering inbound connections until day 2
    server = "10.20.2.81"
    gen_web_server(day, server, T0 + 32 * HOUR, 300 if day.scale == "full" else 80, 0, "public_web_server")
    dst = claim("175.24.1.1", "CN")
    t = T0 + 32.5 * HOUR
    c = TcpConn(cap, server, eport(), dst, 8443)
    t1 = c.open(t, 0.2)
    t1 = c.send(t1, True, 50_000_000, 0.2, duration=20 * 60)
    end = c.close(t1 + 0.5, 0.2)
    scenario(day, "role_change", "role_change", server, [dst], t, end, ["role_change"],
             "public web server 10.20.2.81 (only inbound since T0) opens a connection to Tencent (CN) and sends 50 MB",
             asn=45090, country="CN", may=["new_destination", "egress_anomaly", "bulk_egress"])

    # egress anomaly: a workstation whose own foreign egress is a few MB an hour sends 80 MB
    h = next(a)
    for k in range(40):   # its ordinary day: uploads of 0.2-3 MB to the office suite
        tk = T0 + 8 * HOUR + k * 0.22 * HOUR + rng.uniform(0, 600)
        dst, cc = rng.choice(UPLOAD_DSTS)
        claim(dst, cc)
        e = upload_conn(day, h, dst, 443, tk, int(rng.uniform(2e5, 3e6)), 20)
        day.conv(h, dst, 6, 443, tk, e, "web")
    drop = [claim("162.125.64.%d" % i, "US") for i in (3, 7, 11, 15)]
    t = T0 + 34.5 * HOUR
    first = t
    for k in range(8):
        end = upload_conn(day, h, drop[k % 4], 443, t, 10_000_000, 200)
        t = end + rng.uniform(60, 240)
    scenario(day, "egress_anomaly", "egress_anomaly", h, drop, first, end, ["egress_anomaly"],
             "80 MB to Dropbox (US) in under an hour from a host whose usual foreign egress is a few MB an hour",
             asn=19679, country="US", any_outside=True, may=["new_destination"])

    # low and slow: 1-1.8 MB every ~7 min for 22 h to one host
    h = next(a)
    dst = claim("47.88.1.7", "US")
    t = T0 + 10 * HOUR
    first = t
    total = 0
    while t < T0 + 32 * HOUR:
        size = int(rng.uniform(1.0e6, 1.8e6))
        total += size
        upload_conn(day, h, dst, 443, t, size, 4)
        t += rng.uniform(300, 540)
    scenario(day, "low_and_slow", "low_and_slow", h, [dst], first, t, ["low_and_slow"],
             "%d MB over 22 h to Alibaba Cloud (US) in ~190 small connections" % (total // 1_000_000),
             asn=45102, country="US", may=["beacon", "egress_anomaly"])

    # quiet long flow: one TCP connection open 11.5 h, a few hundred bytes now and then
    h = next(a)
    dst = claim("95.216.1.9", "FI")
    t = T0 + 20 * HOUR
    first = t
    c = TcpConn(cap, h, eport(), dst, 443)
    t = c.open(t, 0.03)
    while t < first + 11.5 * HOUR:
        t += rng.expovariate(1 / 400.0)
        c.pkt(t, True, "PA", rng.randint(60, 600))
        c.pkt(t + 0.03, False, "PA", rng.randint(40, 200))
    end = c.close(t + 1, 0.03)
    scenario(day, "quiet_long_flow", "quiet_long_flow", h, [dst], first, end, ["quiet_long_flow", "long_lived_foreign"],
             "one TCP connection to Hetzner (FI) open 11.5 h, irregular small packets, well under 1 MB",
             asn=24940, country="FI", may=["beacon"])


# -------------------------------------------------------------------------------------------

def write_pcap(path, frames):
    frames.sort(key=lambda f: f[0])
    w = RawPcapWriter(path, linktype=1, snaplen=65535, sync=False)
    w.write_header(None)
    for t, raw, wl in frames:
        sec = int(t)
        usec = int(round((t - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        w.write_packet(raw, sec=sec, usec=usec, caplen=len(raw), wirelen=wl)
    w.close()


SCALES = {  # hosts, web conversations, push share, bastion sessions, web server pages/downloads, ping period
    "full": dict(hosts=1200, conversations=26000, push=0.35, sessions=10, pages=1500, downloads=6, ping=60.0, devs=30),
    "ci": dict(hosts=150, conversations=2200, push=0.35, sessions=3, pages=150, downloads=2, ping=120.0, devs=6),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--scale", choices=SCALES, default="full")
    ap.add_argument("--seed", type=int, default=20260301)
    ap.add_argument("--check-geo", action="store_true",
                    help="check every outside address's country against data/geoip (needs maxminddb)")
    args = ap.parse_args()
    rng.seed("%s/%d" % (args.scale, args.seed))
    s = SCALES[args.scale]
    os.makedirs(args.outdir, exist_ok=True)
    day = Day(args.scale)
    hosts = Hosts(s["hosts"])
    gen_background(day, hosts, s["conversations"])
    n_exact, n_deferred = gen_push(day, hosts, s["push"])
    gen_video_call(day, hosts.v4[7], T0 + 10 * HOUR + 300, 60)
    gen_backup(day, "10.20.0.30", 0, True)
    gen_backup(day, "10.20.0.30", 1, False)
    gen_git_pushes(day, hosts.v4[100:100 + s["devs"]])
    gen_web_server(day, "10.20.2.80", T_END, s["pages"], s["downloads"], "public_web_server")
    gen_wireguard(day, "10.20.0.2")
    gen_bastion(day, "10.20.0.22", s["sessions"])
    gen_monitoring(day, "10.20.0.10", s["ping"])
    gen_ntp(day, "10.20.0.123")
    gen_attacks(day, hosts)

    if args.check_geo:
        import maxminddb
        db = maxminddb.open_database(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "../../data/geoip/geo-whois-asn-country.mmdb"))
        bad = [(a, c, (db.get(a) or {}).get("country_code")) for a, c in CHECK_GEO.items()
               if (db.get(a) or {}).get("country_code") != c]
        bad += [(a, "not " + HOME, HOME) for a in sorted(CHECK_ABROAD)
                if (db.get(a) or {}).get("country_code") in (HOME, None)]
        for a, c, got in bad:
            print("geo: %s is %s in data/geoip, the labels say %s" % (a, got, c), file=sys.stderr)
        if bad:
            sys.exit(1)

    attack_hosts = {sc["inside"] for sc in day.scenarios}
    classes = {}
    for conv in day.benign:
        classes[conv[6]] = classes.get(conv[6], 0) + 1
    labels = {
        "what": "exflow evaluation day: generated by benches/eval/gen_day.py",
        "semantics": "scenarios: one of caught_by must fire on the scenario's inside host and outside "
                     "address(es) in [start - 60 s, end + 3 h]; may: other rules right to fire on it. "
                     "benign conversations: no rule may fire (must not) except the class's may list.",
        "scale": args.scale, "seed": args.seed, "t0": T0, "t_end": T_END,
        "inside": INSIDE, "home_countries": [HOME], "watch_countries": WATCH, "resolvers": [RESOLVER],
        "inside_hosts": len(hosts.v4) + 8,
        "benign_conversations": len(day.benign),
        "benign_classes": {
            # rules that may fire on a benign class without counting as a false alert
            "cloud_backup_first_night": {"may": ["bulk_egress", "long_lived_foreign", "new_destination", "egress_anomaly"],
                                          "why": "the first night's backup abroad has no history to tell it from exfiltration"},
        },
        "class_counts": classes,
        "push_timers": {"exact": n_exact, "deferred": n_deferred},
        "scenarios": day.scenarios,
        "attack_hosts": sorted(attack_hosts),
        # [inside, outside, proto, outside port, start, end, class]: every benign conversation
        "benign": day.benign,
    }
    with open(os.path.join(args.outdir, "labels.json"), "w") as f:
        json.dump(labels, f, separators=(",", ":"))
    write_pcap(os.path.join(args.outdir, "day.pcap"), day.cap.frames)
    print("%d frames, %d benign conversations (%s), %d scenarios, %d inside hosts" % (
        len(day.cap.frames), len(day.benign),
        ", ".join("%s %d" % kv for kv in sorted(classes.items())), len(day.scenarios), len(hosts.v4) + 8))


if __name__ == "__main__":
    main()
