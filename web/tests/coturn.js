// Debian's coturn (`turnserver`) as the external TURN server of a test:
// TURN REST credentials (use-auth-secret) with the secret Prism is given,
// relaying only to Prism's media address, on an address and port the test
// chooses; its own config and log in a temp directory; stopped by PID.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import { sleep } from "./harness.js";

export const TURNSERVER = process.env.TURNSERVER || "/usr/bin/turnserver";

/**
 * Starts coturn on `ip:port` (UDP and TCP) that relays only to `peerIp`
 * (Prism's media address). `netns`: run it inside that namespace. Resolves
 * with {url(transport), log(), stop()} once its TCP port accepts.
 */
export async function startCoturn({ ip, port, secret, peerIp, netns = null, realm = "prism" }) {
  if (!existsSync(TURNSERVER)) throw new Error(`${TURNSERVER} is missing: install Debian's coturn (scripts/test.sh does)`);
  const dir = mkdtempSync(join(tmpdir(), `prismturn-${process.pid}-`));
  const logFile = join(dir, "turnserver.log");
  const conf = [
    `listening-ip=${ip}`,
    `relay-ip=${ip}`,
    `listening-port=${port}`,
    `realm=${realm}`,
    "use-auth-secret",
    `static-auth-secret=${secret}`,
    "fingerprint",
    "no-tls",
    "no-dtls",
    "no-cli",
    "no-multicast-peers",
    // Relay to Prism's media address only (the configuration docs/nat.md shows).
    "denied-peer-ip=0.0.0.0-255.255.255.255",
    `allowed-peer-ip=${peerIp}`,
    `log-file=${logFile}`,
    "simple-log",
    "no-stdout-log",
    `pidfile=${join(dir, "turnserver.pid")}`,
    `userdb=${join(dir, "turndb")}`,
  ].join("\n");
  writeFileSync(join(dir, "turnserver.conf"), `${conf}\n`);
  const cmd = netns ? "ip" : TURNSERVER;
  const args = [...(netns ? ["netns", "exec", netns, TURNSERVER] : []), "-c", join(dir, "turnserver.conf")];
  const proc = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => { stderr += d; });
  let exited = false;
  proc.on("exit", () => { exited = true; });
  const log = () => (existsSync(logFile) ? readFileSync(logFile, "utf8") : "") + stderr;
  const stop = () => {
    if (!exited) proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", stop);
  // Ready when its TCP listener accepts (bounded wait).
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`turnserver exited:\n${log()}`);
    const ok = netns ? true : await new Promise((resolve) => {
      const s = net.connect(port, ip, () => { s.destroy(); resolve(true); });
      s.on("error", () => resolve(false));
    });
    if (ok && (netns ? /listener opened|Total General servers/.test(log()) : true)) break;
    if (i >= 100) { stop(); throw new Error(`turnserver did not start:\n${log()}`); }
    await sleep(100);
  }
  return { url: (transport) => `turn:${ip}:${port}?transport=${transport}`, log, stop, pid: proc.pid };
}
