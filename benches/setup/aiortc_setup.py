#!/usr/bin/env python3
"""Connection-setup timings of aiortc against a WHIP/WHEP server.

For each of N connections: POST (offer sent) -> ICE connected -> DTLS
connected (connectionState "connected") -> first RTP packet received (WHEP
only). Prints one JSON object per connection on stdout, then p50/p95.

  aiortc_setup.py --url http://127.0.0.1:8080 --room bench --mode whep -n 20

WHEP needs a publisher in the room: `--mode whep` starts one aiortc WHIP
publisher (synthetic video) first and keeps it for the whole run.
`--mode loopback` connects two aiortc peers to each other in this process
(no server): the floor aiortc's own stack sets on this machine.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time

import urllib.request
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver

# First RTP packet per receiver: aiortc decodes before handing frames to the
# track, so hook the packet handler rather than time the first frame.
_first_rtp = {}
_orig_handle = RTCRtpReceiver._handle_rtp_packet


async def _hooked(self, packet, arrival_time_ms):
    _first_rtp.setdefault(id(self), time.monotonic())
    return await _orig_handle(self, packet, arrival_time_ms)


RTCRtpReceiver._handle_rtp_packet = _hooked


def now():
    return time.monotonic()


class Timings:
    def __init__(self, pc):
        self.t0 = now()
        self.ice = None
        self.dtls = None
        self.done = asyncio.Event()

        @pc.on("iceconnectionstatechange")
        def _ice():
            if pc.iceConnectionState in ("connected", "completed") and self.ice is None:
                self.ice = now()

        @pc.on("connectionstatechange")
        def _conn():
            if pc.connectionState == "connected" and self.dtls is None:
                self.dtls = now()
                self.done.set()
            elif pc.connectionState == "failed":
                self.done.set()

    def ms(self, t):
        return None if t is None else round((t - self.t0) * 1000, 1)


def _http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/sdp")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read().decode(), r.headers.get("Location")


class Http:
    """The few requests the benchmark makes (standard library only)."""

    async def post(self, url, sdp):
        status, text, loc = await asyncio.to_thread(_http, "POST", url, sdp.encode())
        if status != 201:
            raise RuntimeError(f"POST {url}: {status} {text}")
        return text, loc

    async def delete(self, url):
        try:
            await asyncio.to_thread(_http, "DELETE", url)
        except Exception:  # the session may be gone already
            pass


async def post(session, url, sdp):
    return await session.post(url, sdp)


async def whip(session, base, room):
    pc = RTCPeerConnection()
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    t = Timings(pc)
    await pc.setLocalDescription(await pc.createOffer())
    t.t0 = now()  # the POST leaves now (aiortc gathers before createOffer returns)
    answer, loc = await post(session, f"{base}/whip/{room}", pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await asyncio.wait_for(t.done.wait(), 10)
    return pc, t, loc


async def whep(session, base, room):
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    t = Timings(pc)
    await pc.setLocalDescription(await pc.createOffer())
    t.t0 = now()
    answer, loc = await post(session, f"{base}/whep/{room}", pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await asyncio.wait_for(t.done.wait(), 10)
    rtp = None
    for _ in range(200):  # up to 2 s for the first packet
        recv = [tr.receiver for tr in pc.getTransceivers()]
        hits = [_first_rtp.get(id(r)) for r in recv if id(r) in _first_rtp]
        if hits:
            rtp = min(hits)
            break
        await asyncio.sleep(0.01)
    return pc, t, loc, rtp


async def loopback():
    """Two aiortc peers, offer/answer in memory: aiortc's own floor."""
    a, b = RTCPeerConnection(), RTCPeerConnection()
    a.addTransceiver(VideoStreamTrack(), direction="sendonly")
    ta = Timings(a)
    await a.setLocalDescription(await a.createOffer())
    ta.t0 = now()
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await asyncio.wait_for(ta.done.wait(), 10)
    await a.close()
    await b.close()
    return ta


def pct(xs, p):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, round(p / 100 * len(xs) + 0.5) - 1))
    return xs[k]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--room", default="setup-bench")
    ap.add_argument("--mode", choices=["whip", "whep", "loopback"], default="whep")
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--gap", type=float, default=0.2, help="seconds between connections")
    args = ap.parse_args()

    rows = []
    if True:
        session = Http()
        publisher = None
        if args.mode == "whep":
            publisher, _, pub_loc = await whip(session, args.url, args.room)
            await asyncio.sleep(1.0)  # a keyframe reaches the server's cache
        for i in range(args.n):
            if args.mode == "loopback":
                t = await loopback()
                row = {"ice_ms": t.ms(t.ice), "dtls_ms": t.ms(t.dtls)}
            elif args.mode == "whip":
                pc, t, loc = await whip(session, args.url, args.room)
                row = {"ice_ms": t.ms(t.ice), "dtls_ms": t.ms(t.dtls)}
                await pc.close()
                if loc:
                    await session.delete(args.url + loc)
            else:
                pc, t, loc, rtp = await whep(session, args.url, args.room)
                row = {"ice_ms": t.ms(t.ice), "dtls_ms": t.ms(t.dtls), "rtp_ms": t.ms(rtp)}
                await pc.close()
                if loc:
                    await session.delete(args.url + loc)
            row["i"] = i
            rows.append(row)
            print(json.dumps(row), flush=True)
            await asyncio.sleep(args.gap)
        if publisher:
            await publisher.close()
            if pub_loc:
                await session.delete(args.url + pub_loc)
    summary = {"client": "aiortc", "mode": args.mode, "n": len(rows)}
    for k in ("ice_ms", "dtls_ms", "rtp_ms"):
        xs = [r.get(k) for r in rows]
        if any(x is not None for x in xs):
            summary[k] = {"p50": pct(xs, 50), "p95": pct(xs, 95)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
