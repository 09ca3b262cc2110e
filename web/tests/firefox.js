// Firefox in the browser suite: a network namespace for prism, a loopback
// proxy for the pages, tokens, and headless Firefox ESR over WebDriver BiDi.
//
// Firefox gathers only its interfaces' addresses, never loopback, so prism
// cannot listen on 127.0.0.1 for it. Each test file therefore creates a
// network namespace with a veth pair (host 10.77.N.1, namespace 10.77.N.2),
// runs prism inside it on 10.77.N.2 with access-token keys (production mode:
// a non-loopback address needs them), and a default route back to the host so
// that Firefox's candidates on other interfaces (eth0) reach it too. The pages
// need a secure context for the camera (getUserMedia), so the browser loads
// them through a TCP proxy on 127.0.0.1; media (UDP) goes straight to
// 10.77.N.2. Needs root (ip netns) and Debian's firefox-esr
// (scripts/test.sh installs it).
import { spawn, execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import puppeteer from "puppeteer-core";
import { alive, removeNamespace, run, tryRun } from "./netns.js";

export const FIREFOX = process.env.FIREFOX || "/usr/bin/firefox-esr";
const NS_PREFIX = "prismff-";

const ip = (...args) => run("ip", ...args);
const tryIp = (...args) => tryRun("ip", ...args);

function pidsUsing(path) {
  const pids = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").includes(path)) pids.push(Number(d));
    } catch {}
  }
  return pids;
}

/**
 * What a test process that no longer runs (a crashed or killed run) left:
 * its namespace (and prism inside), veth ends, Firefox and its profile
 * directory, all named after that process's pid.
 */
function removeStale() {
  for (const entry of readdirSync(tmpdir())) {
    const m = /^prismff-(\d+)-profile-/.exec(entry);
    if (!m || alive(Number(m[1]))) continue;
    const dir = join(tmpdir(), entry);
    for (const pid of pidsUsing(dir)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  }
  for (const line of tryIp("netns", "list").split("\n")) {
    const m = new RegExp(`^${NS_PREFIX}(\\d+)\\b`).exec(line.trim());
    if (m && !alive(Number(m[1]))) removeNamespace(`${NS_PREFIX}${m[1]}`, `pfh${m[1]}`);
  }
  for (const line of tryIp("-o", "link", "show").split("\n")) {
    const m = /^\d+:\s+pf[hn](\d+)[@:]/.exec(line);
    if (m && !alive(Number(m[1]))) tryIp("link", "del", `pfh${m[1]}`) || tryIp("link", "del", `pfn${m[1]}`);
  }
}

/**
 * Creates this process's namespace: veth pfh<pid> (host, 10.77.N.1/24) ↔
 * pfn<pid> (namespace, 10.77.N.2/24), lo up, default route via the host.
 * Removed by `remove()`, and at process exit whatever happens.
 */
export function createNamespace() {
  if (process.getuid && process.getuid() !== 0) throw new Error("the Firefox tests need root (ip netns)");
  removeStale();
  const pid = process.pid;
  const name = `${NS_PREFIX}${pid}`;
  const hostIf = `pfh${pid}`, nsIf = `pfn${pid}`;
  removeNamespace(name, hostIf);
  const used = new Set([...tryIp("-4", "-o", "addr", "show").matchAll(/inet 10\.77\.(\d+)\./g)].map((m) => Number(m[1])));
  let n = pid % 250;
  for (let i = 0; i < 250 && used.has(n); i++) n = (n + 1) % 250;
  if (used.has(n)) throw new Error("no free 10.77.N.0/24 subnet for the test namespace");
  const host = `10.77.${n}.1`, addr = `10.77.${n}.2`;
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    removeNamespace(name, hostIf);
  };
  process.on("exit", remove);
  for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143]]) process.once(sig, () => { remove(); process.exit(code); });
  try {
    ip("netns", "add", name);
    ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf);
    ip("link", "set", nsIf, "netns", name);
    ip("addr", "add", `${host}/24`, "dev", hostIf);
    ip("link", "set", hostIf, "up");
    ip("-n", name, "link", "set", "lo", "up");
    ip("-n", name, "addr", "add", `${addr}/24`, "dev", nsIf);
    ip("-n", name, "link", "set", nsIf, "up");
    ip("-n", name, "route", "add", "default", "via", host);
  } catch (e) {
    remove();
    throw new Error(`cannot create the test namespace: ${e.stderr || e.message}`);
  }
  return { name, addr, host, hostIf, remove, exists: () => tryIp("netns", "list").split("\n").some((l) => l.split(" ")[0] === name) };
}

/** A TCP proxy on 127.0.0.1 (a secure-context origin for the pages) to `host:port`. */
export async function startProxy(host, port) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => { client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => server.listen(0, "127.0.0.1", resolve).on("error", reject));
  return {
    port: server.address().port,
    stop: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/**
 * Prism inside the namespace on `ns.addr`, with fresh keys (tokens required),
 * and the loopback proxy to its HTTP port. Resolves with {http (the page
 * origin), media, token(), log(), stop()}.
 */
export async function startPrismInNamespace(ns, extra = []) {
  const bin = process.env.PRISM_BIN;
  if (!bin) throw new Error("PRISM_BIN must name the prism binary (scripts/test.sh sets it)");
  const keys = randomBytes(48).toString("base64");
  const env = { ...process.env, PRISM_KEYS: keys, RUST_LOG: process.env.PRISM_TEST_LOG || "info,rtc=warn,ice=warn,dtls=warn" };
  const proc = spawn("ip", ["netns", "exec", ns.name, bin, "--http-addr", `${ns.addr}:8080`, "--media-ip", ns.addr, "--udp-port", "0", "--peer-timeout", "5s", ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
    env,
  });
  let log = "";
  proc.stderr.on("data", (d) => { log += d; });
  let exited = false;
  proc.on("exit", () => { exited = true; });
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`prism did not start:\n${log}`)), 30000);
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const m = /^PRISM_READY http=(\S+) media=(\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve({ http: m[1], media: m[2] }); }
    });
    proc.on("exit", (code) => { clearTimeout(timer); reject(new Error(`prism exited (${code}):\n${log}`)); });
  });
  const [host, port] = [ready.http.replace(/:\d+$/, ""), Number(ready.http.split(":").pop())];
  const proxy = await startProxy(host, port);
  const stop = () => {
    proxy.stop();
    if (!exited) proc.kill("SIGKILL");
  };
  process.on("exit", (code) => {
    stop();
    if (code || process.exitCode) process.stderr.write(`\n--- prism log (last 150 lines) ---\n${log.split("\n").slice(-Number(process.env.PRISM_TEST_LOG_LINES || 150)).join("\n")}\n`);
  });
  /** A token for `room`: `grants` are prism token flags such as "--publish". */
  const token = (room, identity, name, ...grants) =>
    execFileSync(bin, ["token", "--room", room, "--identity", identity, ...(name ? ["--name", name] : []), "--ttl", "1h", ...grants], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    }).toString().trim();
  return { http: `http://127.0.0.1:${proxy.port}`, direct: `http://${ready.http}`, media: ready.media, proc, token, log: () => log, stop };
}

/**
 * Headless Firefox ESR over WebDriver BiDi with a fake camera and microphone
 * and no permission prompts. Its profile directory carries this process's pid,
 * so a later run can find and stop a Firefox this one left behind (it
 * survives a SIGKILL of the test process); `close()` and process exit stop it
 * and remove the profile.
 */
export async function launchFirefox() {
  if (!existsSync(FIREFOX)) throw new Error(`${FIREFOX} is missing: install Debian's firefox-esr (scripts/test.sh does)`);
  removeStale();
  const profile = mkdtempSync(join(tmpdir(), `prismff-${process.pid}-profile-`));
  let browser;
  const cleanup = () => {
    const pid = browser?.process()?.pid;
    if (pid && alive(pid)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    rmSync(profile, { recursive: true, force: true });
  };
  process.on("exit", cleanup);
  try {
    browser = await puppeteer.launch({
      browser: "firefox",
      executablePath: FIREFOX,
      protocol: "webDriverBiDi",
      headless: true,
      userDataDir: profile,
      extraPrefsFirefox: {
        "media.navigator.streams.fake": true,
        "media.navigator.permission.disabled": true,
        "media.autoplay.default": 0,
        "media.autoplay.blocking_policy": 0,
        // No traffic to Mozilla's services.
        "app.update.enabled": false,
        "browser.safebrowsing.malware.enabled": false,
        "browser.safebrowsing.phishing.enabled": false,
        "datareporting.healthreport.uploadEnabled": false,
        "network.captive-portal-service.enabled": false,
        "network.connectivity-service.enabled": false,
      },
    });
  } catch (e) {
    cleanup();
    throw e;
  }
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close().catch(() => {});
    cleanup();
  };
  return browser;
}

/**
 * A page in its own browser context (its own storage) and its own window of a
 * puppeteer Firefox; page errors are collected. Own windows, because Firefox
 * stops painting video in tabs that are not in front (hidden pages).
 */
export async function firefoxPage(browser, url, errors, name) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage({ type: "window" });
  page.on("pageerror", (e) => {
    errors.push(`[${name}] ${e.message}`);
    console.error(`[${name}] page error: ${e.message}`);
  });
  await page.goto(url);
  return page;
}

/**
 * Frames a video element has shown, counted in the page. Chromium counts them
 * in getVideoPlaybackQuality(); Firefox leaves that at 0 for a MediaStream
 * source (srcObject) and counts painted frames in mozPaintedFrames instead.
 */
export function tiles(page) {
  return page.evaluate(() => {
    const frames = (v) => (v ? Math.max(v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0, v.mozPaintedFrames || 0) : 0);
    return [...document.querySelectorAll(".tile:not([data-self])")].map((t) => ({
      key: t.dataset.key,
      participant: t.dataset.participant,
      name: t.querySelector(".name").textContent,
      frames: frames(t.querySelector("video")),
      muted: t.dataset.muted || "",
    }));
  });
}

/** Frames shown by the watch page's player (as in `tiles`). */
export function playerFrames(page) {
  return page.evaluate(() => {
    const v = document.getElementById("player");
    return Math.max(v.getVideoPlaybackQuality().totalVideoFrames, v.mozPaintedFrames || 0);
  });
}
