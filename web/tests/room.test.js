// Three browsers in one conference room: media, leave, reload, mute, screen share.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { startPrism, launchBrowser, waitFor, remoteTiles, sleep } from "./harness.js";

let prism, browser;
const pages = {};

before(async () => {
  prism = await startPrism();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  prism?.stop();
});

async function open(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error: ${e.message}`));
  // 640×360 (two layers): three 1280×720 publishers with three layers each
  // are more than two cores encode and decode in real time.
  await page.goto(`${prism.http}/room/standup?name=${name}&video=640x360`);
  pages[name] = page;
  return page;
}

/** Each remote tile's decoded frame count keeps increasing. */
async function framesGrow(page, count) {
  const a = await waitFor(`${count} remote videos decoding`, async () => {
    const t = await remoteTiles(page);
    return t.filter((x) => x.frames > 0).length >= count && t;
  }, 40000);
  await sleep(1500);
  const b = await remoteTiles(page);
  for (const tile of a.filter((x) => x.frames > 0)) {
    const now = b.find((x) => x.key === tile.key);
    assert.ok(now && now.frames > tile.frames, `${tile.name}: frames ${tile.frames} → ${now && now.frames}`);
  }
  return b;
}

test("three participants see and hear each other", async () => {
  for (const n of ["Ana", "Bo", "Cy"]) await open(n);
  for (const n of ["Ana", "Bo", "Cy"]) {
    const tiles = await framesGrow(pages[n], 2);
    assert.equal(tiles.length, 2, `${n} shows exactly two remote tiles`);
    const names = tiles.map((t) => t.name).sort();
    assert.deepEqual(names, ["Ana", "Bo", "Cy"].filter((x) => x !== n).sort());
  }
  mkdirSync(new URL("../../docs/screenshots/", import.meta.url), { recursive: true });
  await pages.Ana.screenshot({ path: new URL("../../docs/screenshots/room.png", import.meta.url).pathname });
});

test("mute shows at the others, unmute clears it", async () => {
  await pages.Bo.click("#mute-mic");
  for (const n of ["Ana", "Cy"]) {
    await waitFor(`${n} sees Bo muted`, async () => (await remoteTiles(pages[n])).find((t) => t.name === "Bo" && t.muted.includes("mic off")), 5000);
  }
  await pages.Bo.click("#mute-mic");
  for (const n of ["Ana", "Cy"]) {
    await waitFor(`${n} sees Bo unmuted`, async () => (await remoteTiles(pages[n])).find((t) => t.name === "Bo" && !t.muted.includes("mic off")), 5000);
  }
});

test("screen share publishes a second video track the others receive", async () => {
  await pages.Cy.click("#share");
  for (const n of ["Ana", "Bo"]) {
    await waitFor(`${n} receives Cy's screen`, async () => {
      const t = await remoteTiles(pages[n]);
      const screen = t.find((x) => x.key.endsWith(":screen"));
      return screen && screen.frames > 0;
    }, 20000);
  }
  await pages.Cy.click("#share");
  for (const n of ["Ana", "Bo"]) {
    await waitFor(`${n} drops Cy's screen tile`, async () => !(await remoteTiles(pages[n])).some((x) => x.key.endsWith(":screen")), 10000);
  }
});

test("a reload leaves no duplicate tile and media resumes", async () => {
  await pages.Bo.reload();
  await sleep(3000);
  for (const n of ["Ana", "Cy"]) {
    const tiles = await framesGrow(pages[n], 2);
    assert.equal(tiles.length, 2, `${n}: ${JSON.stringify(tiles)}`);
    assert.equal(tiles.filter((t) => t.name === "Bo").length, 1);
  }
  await framesGrow(pages.Bo, 2);
});

test("leaving removes the tile at the others within 5 s", async () => {
  const started = Date.now();
  await pages.Cy.click("#leave");
  for (const n of ["Ana", "Bo"]) {
    await waitFor(`${n} removes Cy`, async () => !(await remoteTiles(pages[n])).some((t) => t.name === "Cy"), 5000, 100);
  }
  assert.ok(Date.now() - started < 5000);
});
