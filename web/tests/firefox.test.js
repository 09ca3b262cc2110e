// Firefox ESR as a client: a room of three Firefox pages, the broadcast and
// watch pages in Firefox, and a room where Firefox and Chromium meet. Prism
// runs in a network namespace with keys (tokens required), as in production:
// see firefox.js for why and how.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, waitFor, sleep } from "./harness.js";
import { createNamespace, startPrismInNamespace, launchFirefox, firefoxPage, tiles as remoteTiles, playerFrames as frames } from "./firefox.js";

let ns, prism, firefox, chromium;
const errors = [];

before(async () => {
  ns = createNamespace();
  prism = await startPrismInNamespace(ns);
  firefox = await launchFirefox();
});

after(async () => {
  await firefox?.close().catch(() => {});
  await chromium?.close().catch(() => {});
  prism?.stop();
  ns?.remove();
  assert.ok(!ns || !ns.exists(), "the test namespace is gone");
});

/** A real click; Firefox delivers input only to the window in front. */
async function click(page, selector) {
  await page.bringToFront();
  await page.click(selector);
}

// 640×360 (two simulcast layers): three 1280×720 publishers are more than
// two cores encode and decode in real time.
const roomUrl = (room, identity, name) => `${prism.http}/room/${room}?name=${name}&video=640x360&token=${prism.token(room, identity, name)}`;

/** Each remote tile's decoded frame count keeps increasing; resolves with the tiles. */
async function framesGrow(page, who, count) {
  const a = await waitFor(`${who}: ${count} remote videos decoding`, async () => {
    const t = await remoteTiles(page);
    return t.filter((x) => x.frames > 0).length >= count && t;
  }, 40000);
  await sleep(1500);
  const b = await remoteTiles(page);
  for (const tile of a.filter((x) => x.frames > 0)) {
    const now = b.find((x) => x.key === tile.key);
    assert.ok(now && now.frames > tile.frames, `${who} ← ${tile.name}: frames ${tile.frames} → ${now && now.frames}`);
  }
  return b;
}

/** Every page shows exactly the others' tiles, all decoding. */
async function everyoneSeesEveryone(pages) {
  const names = Object.keys(pages);
  for (const n of names) {
    const tiles = await framesGrow(pages[n], n, names.length - 1);
    assert.equal(tiles.length, names.length - 1, `${n}: ${JSON.stringify(tiles)}`);
    assert.deepEqual(tiles.map((t) => t.name).sort(), names.filter((x) => x !== n).sort());
  }
}

async function muteShows(pages, who) {
  const others = Object.keys(pages).filter((n) => n !== who);
  await click(pages[who], "#mute-mic");
  for (const n of others) {
    await waitFor(`${n} sees ${who} muted`, async () => (await remoteTiles(pages[n])).find((t) => t.name === who && t.muted.includes("mic off")), 5000);
  }
  await click(pages[who], "#mute-mic");
  for (const n of others) {
    await waitFor(`${n} sees ${who} unmuted`, async () => (await remoteTiles(pages[n])).find((t) => t.name === who && !t.muted.includes("mic off")), 5000);
  }
}

async function leaveRemoves(pages, who) {
  const others = Object.keys(pages).filter((n) => n !== who);
  for (const n of others) assert.ok((await remoteTiles(pages[n])).some((t) => t.name === who), `${n} shows ${who} before the leave`);
  const started = Date.now();
  await click(pages[who], "#leave");
  for (const n of others) {
    await waitFor(`${n} removes ${who}`, async () => !(await remoteTiles(pages[n])).some((t) => t.name === who), 5000, 100);
  }
  assert.ok(Date.now() - started < 5000);
}

const ff = {};

test("Firefox: three participants decode each other", async () => {
  for (const [id, n] of [["ana", "Ana"], ["bo", "Bo"], ["cy", "Cy"]]) ff[n] = await firefoxPage(firefox, roomUrl("fox", id, n), errors, n);
  await everyoneSeesEveryone(ff);
});

test("Firefox: mute shows at the others, unmute clears it", async () => {
  await muteShows(ff, "Bo");
});

test("Firefox: leaving removes the tile at the others within 5 s", async () => {
  await leaveRemoves(ff, "Cy");
  // The two who stay keep decoding each other.
  delete ff.Cy;
  await everyoneSeesEveryone(ff);
  for (const p of Object.values(ff)) await p.browserContext().close();
});

test("Firefox: broadcast page → three watch pages", async () => {
  const watch = (i) => `${prism.http}/watch/show?token=${prism.token("show", `viewer-${i}`, "", "--subscribe")}`;
  // A watch page opened first waits for the broadcast and retries.
  const early = await firefoxPage(firefox, watch(0), errors, "viewer 0");
  await waitFor("the early viewer waits", async () => (await early.$eval("#state", (e) => e.textContent)).includes("waiting"), 10000);

  const studio = await firefoxPage(firefox, `${prism.http}/broadcast/show?token=${prism.token("show", "studio", "Studio", "--publish")}`, errors, "studio");
  await click(studio, "#camera");
  await waitFor("live", async () => (await studio.$eval("#state", (e) => e.textContent)) === "live", 20000);

  const viewers = [early];
  for (let i = 1; i < 3; i++) viewers.push(await firefoxPage(firefox, watch(i), errors, `viewer ${i}`));
  for (const [i, v] of viewers.entries()) {
    await waitFor(`viewer ${i} decodes`, async () => (await frames(v)) > 10, 40000);
  }
  await sleep(1000);
  for (const [i, v] of viewers.entries()) {
    const a = await frames(v);
    await sleep(1000);
    assert.ok((await frames(v)) > a, `viewer ${i} keeps decoding`);
  }
  await waitFor("latency shown", async () => (await viewers[1].$eval("#metrics", (e) => e.textContent)).includes("latency"), 10000);
  await click(studio, "#stop");
  for (const p of [studio, ...viewers]) await p.browserContext().close();
});

test("Firefox and Chromium in one room decode each other; mute and leave", async () => {
  chromium = await launchBrowser();
  const pages = {};
  pages.Fern = await firefoxPage(firefox, roomUrl("mixed", "fern", "Fern"), errors, "Fern");
  const context = await chromium.newContext({ viewport: { width: 1280, height: 800 } });
  pages.Cole = await context.newPage();
  pages.Cole.on("pageerror", (e) => errors.push(`[Cole] ${e.message}`));
  await pages.Cole.goto(roomUrl("mixed", "cole", "Cole"));
  pages.Fay = await firefoxPage(firefox, roomUrl("mixed", "fay", "Fay"), errors, "Fay");
  await everyoneSeesEveryone(pages);
  await muteShows(pages, "Cole");
  await muteShows(pages, "Fern");
  await leaveRemoves(pages, "Cole");
});

test("no page errors", () => {
  assert.deepEqual(errors, []);
});
