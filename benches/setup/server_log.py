#!/usr/bin/env python3
"""p50/p95 of the server's own setup timings from a Prism log at
prism_server=debug: `ice connected ... ice_ms=` and `media connected ...
setup_ms=` (both measured from the peer's creation, i.e. the POST or the
offer), per leg."""
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
rows = {}
for line in open(sys.argv[1], errors="replace"):
    line = ANSI.sub("", line)
    m = re.search(r'(ice connected|media connected) participant=(\S+) leg="(\w+)" (?:ice_ms|setup_ms)=(\d+)', line)
    if m:
        what, pid, leg, ms = m.groups()
        rows.setdefault((leg, what), []).append(int(ms))


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, -(-p * len(xs) // 100) - 1))]


for (leg, what), xs in sorted(rows.items()):
    print(f"{leg:9} {what:15} n={len(xs):3} p50={pct(xs, 50)} ms p95={pct(xs, 95)} ms")
