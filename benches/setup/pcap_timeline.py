#!/usr/bin/env python3
"""Prints a setup timeline (STUN / DTLS / RTP / RTCP datagrams) from a pcap
of the server's UDP port, per client address. Evidence for docs/performance.md:

  tcpdump -i any -w setup.pcap udp port 50000   # while clients connect
  pcap_timeline.py setup.pcap 50000
"""
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        gh = f.read(24)
        magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", gh)
        nano = magic == 0xA1B23C4D
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, frac, incl, _ = struct.unpack("<IIII", h)
            data = f.read(incl)
            t = sec + frac / (1e9 if nano else 1e6)
            off = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype, 0)
            ip = data[off:]
            if ip[0] >> 4 == 4:
                ihl = (ip[0] & 15) * 4
                src = ".".join(map(str, ip[12:16]))
                dst = ".".join(map(str, ip[16:20]))
                udp = ip[ihl:]
            else:
                continue
            sp, dp = struct.unpack(">HH", udp[:4])
            yield t, (src, sp), (dst, dp), udp[8:]


def kind(p):
    b = p[0]
    if b < 2:
        cls = {0x0001: "req", 0x0101: "ok", 0x0111: "err"}.get(struct.unpack(">H", p[:2])[0], "?")
        use = b"\x00\x25" in p[20:]  # USE-CANDIDATE attribute type (rough)
        return f"STUN {cls}{' USE-CANDIDATE' if use and cls == 'req' else ''}"
    if 20 <= b <= 63:
        ct = {20: "ChangeCipherSpec", 21: "Alert", 22: "Handshake", 23: "AppData"}.get(b, "?")
        if b == 22 and len(p) > 13:
            ht = {1: "ClientHello", 2: "ServerHello", 3: "HelloVerifyRequest", 11: "Certificate",
                  12: "ServerKeyExchange", 13: "CertificateRequest", 14: "ServerHelloDone",
                  15: "CertificateVerify", 16: "ClientKeyExchange", 20: "Finished"}.get(p[13], "enc")
            epoch = struct.unpack(">H", p[3:5])[0]
            ct += f" {ht if epoch == 0 else 'encrypted'}"
        return f"DTLS {ct}"
    if 128 <= b <= 191:
        return "RTCP" if 192 <= p[1] <= 223 else "RTP"
    return f"? {b}"


def main():
    path, port = sys.argv[1], int(sys.argv[2])
    t0 = {}
    seen_rtp = set()
    for t, src, dst, p in packets(path):
        peer = dst if src[1] == port else src
        arrow = "<-" if src[1] == port else "->"
        k = kind(p)
        if k in ("RTP", "RTCP"):
            if (peer, k, arrow) in seen_rtp:
                continue
            seen_rtp.add((peer, k, arrow))
            k = "first " + k
        t0.setdefault(peer, t)
        print(f"{peer[0]}:{peer[1]:<6} +{(t - t0[peer]) * 1000:8.1f} ms  server {arrow} {k}")


main()
