// Starts the real prism binary and headless Chromium for browser tests.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/**
 * Starts prism on free ports (loopback unless `httpAddr` says otherwise;
 * `env` is added to the environment, e.g. PRISM_KEYS); resolves with
 * {http, proc, stop()}.
 */
export async function startPrism(extra = [], { httpAddr = "127.0.0.1:0", env = {} } = {}) {
  const bin = process.env.PRISM_BIN;
  if (!bin) throw new Error("PRISM_BIN must name the prism binary (scripts/test.sh sets it)");
  const proc = spawn(bin, ["--http-addr", httpAddr, "--udp-port", "0", "--peer-timeout", "5s", ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.PRISM_TEST_LOG || "info,rtc=warn,ice=warn,dtls=warn", ...env },
  });
  let log = "";
  proc.stderr.on("data", (d) => { log += d; });
  const http = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`prism did not start:\n${log}`)), 30000);
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const m = /^PRISM_READY http=(\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on("exit", (code) => reject(new Error(`prism exited (${code}):\n${log}`)));
  });
  // A failing test file ends with a non-zero exit code: show what the server
  // said (CI keeps only this output).
  process.on("exit", (code) => {
    if (code || process.exitCode) process.stderr.write(`\n--- prism log (last 150 lines) ---\n${log.split("\n").slice(-Number(process.env.PRISM_TEST_LOG_LINES || 150)).join("\n")}\n`);
  });
  return { http: `http://${http}`, proc, log: () => log, stop: () => proc.kill("SIGKILL") };
}

/**
 * Headless Chromium with fake camera, microphone and screen; `extra` flags
 * appended; `executablePath` to start it through a wrapper (a network
 * namespace).
 */
export function launchBrowser(extra = [], { executablePath = CHROMIUM } = {}) {
  return chromium.launch({
    executablePath,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--allow-loopback-in-peer-connection",
      "--auto-accept-this-tab-capture", "--auto-select-desktop-capture-source=Entire screen",
      "--autoplay-policy=no-user-gesture-required",
      ...extra,
    ],
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function waitFor(what, fn, ms = 20000, every = 250) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

/** Remote tiles on a room page: key, participant, decoded frames, badges. */
export function remoteTiles(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll(".tile:not([data-self])")].map((t) => {
      const v = t.querySelector("video");
      return {
        key: t.dataset.key,
        participant: t.dataset.participant,
        name: t.querySelector(".name").textContent,
        frames: v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
        muted: t.dataset.muted || "",
      };
    }),
  );
}
