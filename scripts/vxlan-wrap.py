#!/usr/bin/env python3
# Wraps every Ethernet frame of a pcap in VXLAN (RFC 7348), as an underlay link carries an
# overlay fabric's traffic: 192.0.2.1 -> 192.0.2.2, UDP 4789, VNI 5001. Made
# tests/data/sflow/pmacct_sfprobe_vxlan_border_mix.pcap (see tests/data/README.md):
#   scripts/vxlan-wrap.py tests/data/border_mix.pcap /tmp/border_mix_vxlan.pcap
import struct, sys
src = open(sys.argv[1], 'rb').read()
out = open(sys.argv[2], 'wb')
magic, vmaj, vmin, tz, sig, snap, link = struct.unpack('<IHHiIII', src[:24])
assert magic == 0xa1b2c3d4 and link == 1
out.write(struct.pack('<IHHiIII', magic, vmaj, vmin, tz, sig, 65535, link))
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
off, n = 24, 0
while off < len(src):
    ts, tu, cap, orig = struct.unpack('<IIII', src[off:off + 16])
    frame = src[off + 16:off + 16 + cap]; off += 16 + cap
    vx = bytes([8, 0, 0, 0, 0x00, 0x13, 0x89, 0]) + frame
    udp_len = 8 + 8 + orig
    udp = struct.pack('!HHHH', 49152 + n % 1024, 4789, udp_len & 0xffff, 0)
    ip_len = 20 + udp_len
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, min(ip_len, 65535), n & 0xffff, 0, 64, 17, 0, bytes([192,0,2,1]), bytes([192,0,2,2]))
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    eth = bytes([0,0x1c,0x73,0,0,2, 0,0x1c,0x73,0,0,1, 8, 0])
    pkt = eth + ip + udp + vx
    out.write(struct.pack('<IIII', ts, tu, len(pkt), orig + 50))
    out.write(pkt); n += 1
print(n)
