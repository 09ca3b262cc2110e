// A network namespace for one browser whose downlink a test throttles.
//
// veth pbh<pid> (root namespace, 10.78.N.1/24) ↔ pbn<pid> (namespace,
// 10.78.N.2/24). Prism listens on 10.78.N.1, so browsers in the root
// namespace (a local address) and the one in the namespace (over the veth)
// all reach it. `throttle(rate)` puts a token bucket on the root end's
// egress: what the server sends to the namespaced browser, its downlink.
// A Chromium runs inside through a wrapper script (`ip netns exec NS
// chromium "$@"`) used as playwright's executablePath: playwright talks to
// it over a pipe, which crosses namespaces. Needs root. Everything carries
// this process's pid and is removed by `remove()`, at process exit, and by
// the next run when a killed run left it.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM } from "./harness.js";

const NS_PREFIX = "prismbw-";

export const run = (cmd, ...args) => execFileSync(cmd, args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
export const tryRun = (cmd, ...args) => {
  try {
    return run(cmd, ...args);
  } catch {
    return "";
  }
};
export const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === "EPERM";
  }
};

/** Kills the processes left in a namespace (a crashed run's) and deletes it with its veth pair. */
export function removeNamespace(name, hostIf) {
  for (const pid of tryRun("ip", "netns", "pids", name).split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  tryRun("ip", "netns", "del", name);
  if (tryRun("ip", "link", "show", hostIf)) tryRun("ip", "link", "del", hostIf);
}

/** What runs that no longer live left: namespaces, veth ends, wrapper directories. */
function removeStale() {
  for (const line of tryRun("ip", "netns", "list").split("\n")) {
    const m = new RegExp(`^${NS_PREFIX}(\\d+)\\b`).exec(line.trim());
    if (m && !alive(Number(m[1]))) removeNamespace(`${NS_PREFIX}${m[1]}`, `pbh${m[1]}`);
  }
  for (const line of tryRun("ip", "-o", "link", "show").split("\n")) {
    const m = /^\d+:\s+pb[hn](\d+)[@:]/.exec(line);
    if (m && !alive(Number(m[1]))) tryRun("ip", "link", "del", `pbh${m[1]}`) || tryRun("ip", "link", "del", `pbn${m[1]}`);
  }
  for (const entry of readdirSync(tmpdir())) {
    const m = /^prismbw-(\d+)-/.exec(entry);
    if (m && !alive(Number(m[1]))) rmSync(join(tmpdir(), entry), { recursive: true, force: true });
  }
}

/**
 * Creates the namespace. Resolves with {name, host (10.78.N.1), addr
 * (10.78.N.2), hostIf, chromium (the wrapper's path), throttle(rate),
 * unthrottle(), qdisc(), remove(), exists()}.
 */
export function createThrottledNamespace() {
  if (process.getuid && process.getuid() !== 0) throw new Error("the allocation test needs root (ip netns, tc)");
  removeStale();
  const pid = process.pid;
  const name = `${NS_PREFIX}${pid}`;
  const hostIf = `pbh${pid}`, nsIf = `pbn${pid}`;
  removeNamespace(name, hostIf);
  const used = new Set([...tryRun("ip", "-4", "-o", "addr", "show").matchAll(/inet 10\.78\.(\d+)\./g)].map((m) => Number(m[1])));
  let n = pid % 250;
  for (let i = 0; i < 250 && used.has(n); i++) n = (n + 1) % 250;
  if (used.has(n)) throw new Error("no free 10.78.N.0/24 subnet for the test namespace");
  const host = `10.78.${n}.1`, addr = `10.78.${n}.2`;
  const dir = mkdtempSync(join(tmpdir(), `prismbw-${pid}-`));
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    removeNamespace(name, hostIf);
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", remove);
  for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143]]) process.once(sig, () => { remove(); process.exit(code); });
  try {
    run("ip", "netns", "add", name);
    run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", nsIf);
    run("ip", "link", "set", nsIf, "netns", name);
    run("ip", "addr", "add", `${host}/24`, "dev", hostIf);
    run("ip", "link", "set", hostIf, "up");
    run("ip", "-n", name, "link", "set", "lo", "up");
    run("ip", "-n", name, "addr", "add", `${addr}/24`, "dev", nsIf);
    run("ip", "-n", name, "link", "set", nsIf, "up");
    run("ip", "-n", name, "route", "add", "default", "via", host);
  } catch (e) {
    remove();
    throw new Error(`cannot create the test namespace: ${e.stderr || e.message}`);
  }
  const chromium = join(dir, "chromium-in-netns");
  writeFileSync(chromium, `#!/bin/sh\nexec ip netns exec ${name} ${CHROMIUM} "$@"\n`);
  chmodSync(chromium, 0o755);
  return {
    name,
    host,
    addr,
    hostIf,
    chromium,
    /** Limits what reaches the namespace (its downlink) to `rate`, e.g. "300kbit". */
    throttle: (rate) => run("tc", "qdisc", "replace", "dev", hostIf, "root", "tbf", "rate", rate, "burst", "16kb", "latency", "400ms"),
    /**
     * Lifts the limit the way a link that widens does: the token bucket's
     * rate goes to 1 Gbit/s and what it holds drains. (Deleting the qdisc
     * would also throw away the up to 400 ms of packets it queues: a burst
     * of loss no real link recovery has.)
     */
    unthrottle: () => run("tc", "qdisc", "change", "dev", hostIf, "root", "tbf", "rate", "1gbit", "burst", "4mb", "latency", "400ms"),
    /** The root end's qdisc with its counters (sent, dropped, overlimits). */
    qdisc: () => tryRun("tc", "-s", "qdisc", "show", "dev", hostIf),
    remove,
    exists: () => tryRun("ip", "netns", "list").split("\n").some((l) => l.split(" ")[0] === name),
  };
}

/**
 * Drops every UDP datagram into and out of namespace `name` except on its
 * loopback (nftables, counted): a network that allows only TCP. Returns a
 * function that reads how many datagrams the rules dropped (in + out).
 */
export function blockUdp(name) {
  const rules = `table inet prismreach {
  chain in { type filter hook input priority 0; policy accept; iifname != "lo" meta l4proto udp counter drop; }
  chain out { type filter hook output priority 0; policy accept; oifname != "lo" meta l4proto udp counter drop; }
}
`;
  execFileSync("ip", ["netns", "exec", name, "nft", "-f", "-"], { input: rules, stdio: ["pipe", "pipe", "pipe"] });
  return () =>
    [...run("ip", "netns", "exec", name, "nft", "list", "table", "inet", "prismreach").matchAll(/counter packets (\d+)/g)]
      .reduce((sum, m) => sum + Number(m[1]), 0);
}
