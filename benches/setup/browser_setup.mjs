// Connection-setup timings of a browser against Prism's WHIP/WHEP endpoints.
//
//   node benches/setup/browser_setup.mjs --url http://127.0.0.1:8080 --mode whep -n 20
//   node benches/setup/browser_setup.mjs --browser firefox --url http://10.78.0.1:8080 ...
//   node benches/setup/browser_setup.mjs --mode loopback -n 20   # two local peers, no server
//
// For each of N connections, measured in the page (performance.now()): the
// POST leaving (after ICE gathering completed: the offer carries its
// candidates) -> iceConnectionState "connected" -> connectionState
// "connected" (DTLS done) -> the remote track's first `unmute` (the first RTP
// packet; WHEP only). Prints one JSON line per connection, then p50/p95.
// Run from web/tests (its node_modules has playwright-core and puppeteer-core).
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.resolve(process.env.PRISM_WEB_TESTS || "web/tests", "package.json"));

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("-")) acc.push([a.replace(/^-+/, ""), all[i + 1] && !all[i + 1].startsWith("-") ? all[i + 1] : true]);
    return acc;
  }, []),
);
const url = args.url || "http://127.0.0.1:8080";
const mode = args.mode || "whep";
const n = Number(args.n || 20);
const room = args.room || "setup-bench";
const browserName = args.browser || "chromium";
// A Prism with keys (not loopback: Firefox) needs a bearer token (publish and
// subscribe grants) on each POST.
const token = args.token || process.env.PRISM_TOKEN || "";
// WHEP mode: the publisher's own token (another identity: one identity joining
// twice replaces the first).
const pubToken = args["pub-token"] || token;

async function launch() {
  if (browserName === "firefox") {
    // Firefox over WebDriver BiDi (puppeteer-core); pairs only non-loopback
    // addresses, so --url must name a non-loopback address of this host.
    const puppeteer = require("puppeteer-core");
    const browser = await puppeteer.launch({
      browser: "firefox",
      executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
      headless: true,
      extraPrefsFirefox: {
        "media.navigator.streams.fake": true,
        "media.navigator.permission.disabled": true,
        "media.peerconnection.ice.obfuscate_host_addresses": false,
      },
    });
    return { newPage: () => browser.newPage(), close: () => browser.close() };
  }
  const { chromium } = require("playwright-core");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--allow-loopback-in-peer-connection",
    ],
  });
  return { newPage: () => browser.newPage(), close: () => browser.close() };
}

// Runs in the page. Returns timings in ms from the POST.
async function connectInPage({ mode, room, token }) {
  const pc = new RTCPeerConnection();
  const t = {};
  if (mode === "whip" || mode === "publish") {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true });
    pc.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
  } else {
    pc.addTransceiver("video", { direction: "recvonly" });
  }
  pc.ontrack = (e) => {
    e.track.onunmute = () => { t.rtp ??= performance.now(); };
  };
  pc.oniceconnectionstatechange = () => {
    if (["connected", "completed"].includes(pc.iceConnectionState)) t.ice ??= performance.now();
  };
  const connected = new Promise((resolve, reject) => {
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") { t.dtls ??= performance.now(); resolve(); }
      if (pc.connectionState === "failed") reject(new Error("connection failed"));
    };
  });
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((r) => {
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") r(); };
      setTimeout(r, 3000);
    });
  }
  const t0 = performance.now();
  const resp = await fetch(`/${mode === "publish" ? "whip" : mode}/${room}`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: pc.localDescription.sdp,
  });
  if (resp.status !== 201) throw new Error(`POST: ${resp.status} ${await resp.text()}`);
  t.answer = performance.now();
  const location = resp.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  await Promise.race([connected, new Promise((_, rej) => setTimeout(() => rej(new Error("no connection in 10 s")), 10000))]);
  if (mode === "whep") {
    for (let i = 0; i < 200 && t.rtp === undefined; i++) await new Promise((r) => setTimeout(r, 10));
  }
  const ms = (x) => (x === undefined ? null : Math.round((x - t0) * 10) / 10);
  const out = { answer_ms: ms(t.answer), ice_ms: ms(t.ice), dtls_ms: ms(t.dtls), rtp_ms: ms(t.rtp) };
  if (mode === "publish") { window.__publisher = pc; return out; }
  pc.close();
  if (location) await fetch(location, { method: "DELETE", headers: token ? { Authorization: `Bearer ${token}` } : {} }).catch(() => {});
  return out;
}

// Two peers in one page, offer/answer in memory: the browser's own floor.
async function loopbackInPage() {
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  // about:blank is not a secure context (no getUserMedia): a canvas track.
  const canvas = Object.assign(document.createElement("canvas"), { width: 320, height: 240 });
  const ctx = canvas.getContext("2d");
  const draw = setInterval(() => { ctx.fillStyle = `hsl(${Date.now() % 360},50%,50%)`; ctx.fillRect(0, 0, 320, 240); }, 33);
  const stream = canvas.captureStream(30);
  a.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
  const t = {};
  const rtp = new Promise((r) => { b.ontrack = (e) => { e.track.onunmute = () => { t.rtp ??= performance.now(); r(); }; }; });
  a.oniceconnectionstatechange = () => {
    if (["connected", "completed"].includes(a.iceConnectionState)) t.ice ??= performance.now();
  };
  const connected = new Promise((r) => { a.onconnectionstatechange = () => { if (a.connectionState === "connected") { t.dtls ??= performance.now(); r(); } }; });
  const t0 = performance.now();
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  await Promise.race([Promise.all([connected, rtp]), new Promise((r) => setTimeout(r, 5000))]);
  a.close(); b.close();
  clearInterval(draw);
  stream.getTracks().forEach((x) => x.stop());
  const ms = (x) => (x === undefined ? null : Math.round((x - t0) * 10) / 10);
  return { ice_ms: ms(t.ice), dtls_ms: ms(t.dtls), rtp_ms: ms(t.rtp) };
}

function pct(xs, p) {
  const v = xs.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
  if (!v.length) return null;
  return v[Math.max(0, Math.min(v.length - 1, Math.ceil((p / 100) * v.length) - 1))];
}

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(mode === "loopback" ? "about:blank" : `${url}/`);
  if (mode === "whep") {
    const pub = await browser.newPage();
    await pub.goto(`${url}/`);
    const r = await pub.evaluate(connectInPage, { mode: "publish", room, token: pubToken });
    console.error(`publisher: ${JSON.stringify(r)}`);
    await new Promise((r) => setTimeout(r, 1500)); // a keyframe reaches the cache
  }
  const rows = [];
  for (let i = 0; i < n; i++) {
    const row = mode === "loopback" ? await page.evaluate(loopbackInPage) : await page.evaluate(connectInPage, { mode, room, token });
    row.i = i;
    rows.push(row);
    console.log(JSON.stringify(row));
    await new Promise((r) => setTimeout(r, 200));
  }
  const summary = { client: browserName, mode, n: rows.length };
  for (const k of ["answer_ms", "ice_ms", "dtls_ms", "rtp_ms"]) {
    const xs = rows.map((r) => r[k]);
    if (xs.some((x) => x !== null)) summary[k] = { p50: pct(xs, 50), p95: pct(xs, 95) };
  }
  console.log(JSON.stringify(summary));
} finally {
  await browser.close();
}
