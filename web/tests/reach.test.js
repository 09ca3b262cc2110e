// Issue 14's acceptance, first part: clients on networks that drop every
// UDP datagram still join and exchange media, over ICE-TCP (RFC 6544: the
// server's passive candidates, RFC 4571 framing on the shard's TCP port).
//
// - Chromium: the client's own namespace drops all UDP (nftables); its
//   Chromium runs inside it (netns.js) and meets a Chromium outside.
// - Firefox: puppeteer's WebDriver BiDi connection cannot reach a browser
//   inside a namespace, so here Prism runs in the namespace and that
//   namespace drops all UDP: every client's path to the server is TCP only.
//
// Each test checks the selected candidate pair of both of the blocked
// client's peer connections is TCP, that media flows both ways, and that
// the UDP the browser tried was dropped (the nftables counters).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { startPrism, launchBrowser, waitFor, remoteTiles, sleep } from "./harness.js";
import { createThrottledNamespace, blockUdp } from "./netns.js";
import { createNamespace, startPrismInNamespace, launchFirefox, firefoxPage, tiles as firefoxTiles } from "./firefox.js";

const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** The local candidate of each of the room page's peer connections' selected pair: "tcp/host", "udp/relay", … */
const selectedPairs = (page) =>
  page.evaluate(async () => {
    const out = {};
    for (const [leg, pc] of [["publish", window.prismRoom.pub], ["subscribe", window.prismRoom.sub]]) {
      if (!pc) continue;
      const stats = await pc.getStats();
      let pair = null;
      stats.forEach((s) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
      });
      if (!pair) {
        stats.forEach((s) => {
          if (s.type === "candidate-pair" && (s.selected || (s.nominated && s.state === "succeeded"))) pair = s;
        });
      }
      const local = pair && stats.get(pair.localCandidateId);
      const remote = pair && stats.get(pair.remoteCandidateId);
      out[leg] = local ? `${local.protocol}/${local.candidateType}→${remote ? `${remote.protocol}/${remote.candidateType}` : "?"}` : null;
    }
    return out;
  });

/** Waits until `page` decodes `count` remote videos whose frame counts keep growing. */
async function decodes(page, who, count, tiles = remoteTiles) {
  const a = await waitFor(`${who}: ${count} remote videos decoding`, async () => {
    const t = await tiles(page);
    return t.filter((x) => x.frames > 0).length >= count && t;
  }, 40000);
  await sleep(1500);
  const b = await tiles(page);
  for (const tile of a.filter((x) => x.frames > 0)) {
    const now = b.find((x) => x.key === tile.key);
    assert.ok(now && now.frames > tile.frames, `${who} ← ${tile.name}: frames ${tile.frames} → ${now && now.frames}`);
  }
}

test("Chromium in a namespace that drops all UDP joins a room over ICE-TCP, media both ways", async (t) => {
  const ns = createThrottledNamespace();
  cleanups.push(() => ns.remove());
  const udpDropped = blockUdp(ns.name);
  const keys = randomBytes(48).toString("base64");
  const prism = await startPrism(["--media-ip", ns.host], { httpAddr: `${ns.host}:0`, env: { PRISM_KEYS: keys } });
  cleanups.push(() => prism.stop());
  const secure = `--unsafely-treat-insecure-origin-as-secure=${prism.http}`;
  const blocked = await launchBrowser([secure], { executablePath: ns.chromium });
  const open = await launchBrowser([secure]);
  cleanups.push(() => blocked.close().catch(() => {}), () => open.close().catch(() => {}));
  const token = (identity) =>
    execFileSync(process.env.PRISM_BIN, ["token", "--room", "tcp", "--identity", identity, "--name", identity, "--ttl", "1h"], {
      env: { ...process.env, PRISM_KEYS: keys },
      stdio: ["ignore", "pipe", "pipe"],
    }).toString().trim();
  const page = async (browser, who) => {
    const p = await (await browser.newContext()).newPage();
    p.on("pageerror", (e) => console.error(`[${who}] page error: ${e.message}`));
    await p.goto(`${prism.http}/room/tcp?name=${who}&video=640x360&token=${token(who)}`);
    return p;
  };
  const tcpUser = await page(blocked, "tcpuser");
  const udpUser = await page(open, "udpuser");
  await decodes(tcpUser, "tcpuser", 1);
  await decodes(udpUser, "udpuser", 1);
  const pairs = await selectedPairs(tcpUser);
  t.diagnostic(`tcpuser's pairs: ${JSON.stringify(pairs)}; UDP datagrams dropped by the namespace: ${udpDropped()}`);
  assert.match(pairs.publish, /^tcp\/\w+→tcp\/host$/, "the publish leg runs over TCP to the passive candidate");
  assert.match(pairs.subscribe, /^tcp\/\w+→tcp\/host$/, "the subscribe leg runs over TCP to the passive candidate");
  assert.ok(udpDropped() > 0, "the browser tried UDP and the namespace dropped it");
  const other = await selectedPairs(udpUser);
  t.diagnostic(`udpuser's pairs: ${JSON.stringify(other)}`);
  assert.match(other.publish, /^udp\//, "a client that can use UDP still does (TCP candidates rank lower)");
});

test("Firefox and Chromium whose path to Prism drops all UDP meet over ICE-TCP", async (t) => {
  const ns = createNamespace();
  cleanups.push(() => ns.remove());
  const udpDropped = blockUdp(ns.name);
  const prism = await startPrismInNamespace(ns);
  cleanups.push(() => prism.stop());
  const firefox = await launchFirefox();
  const chromium = await launchBrowser();
  cleanups.push(() => firefox.close().catch(() => {}), () => chromium.close().catch(() => {}));
  const url = (who) => `${prism.http}/room/tcpff?name=${who}&video=640x360&token=${prism.token("tcpff", who, who)}`;
  const errors = [];
  const ff = await firefoxPage(firefox, url("ffuser"), errors, "ffuser");
  const cr = await (await chromium.newContext()).newPage();
  await cr.goto(url("cruser"));
  await decodes(ff, "ffuser", 1, firefoxTiles);
  await decodes(cr, "cruser", 1);
  const ffPairs = await selectedPairs(ff);
  const crPairs = await selectedPairs(cr);
  t.diagnostic(`Firefox pairs: ${JSON.stringify(ffPairs)}; Chromium pairs: ${JSON.stringify(crPairs)}; UDP dropped: ${udpDropped()}`);
  for (const [who, pairs] of [["Firefox", ffPairs], ["Chromium", crPairs]]) {
    assert.match(pairs.publish, /^tcp\//, `${who}'s publish leg runs over TCP`);
    assert.match(pairs.subscribe, /^tcp\//, `${who}'s subscribe leg runs over TCP`);
  }
  assert.deepEqual(errors, []);
});
