// The broadcast page publishes over WHIP; five watch pages decode it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPrism, launchBrowser, waitFor, sleep } from "./harness.js";

let prism, browser;
before(async () => {
  prism = await startPrism();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  prism?.stop();
});

const frames = (page) => page.evaluate(() => document.getElementById("player").getVideoPlaybackQuality().totalVideoFrames);

test("broadcast page → five watch pages", async () => {
  const ctx = await browser.newContext();
  // A watch page opened first waits for the broadcast and retries.
  const early = await ctx.newPage();
  await early.goto(`${prism.http}/watch/show`);
  await waitFor("the early viewer waits", async () => (await early.textContent("#state")).includes("waiting"), 10000);

  const studio = await ctx.newPage();
  await studio.goto(`${prism.http}/broadcast/show`);
  await studio.click("#camera");
  await waitFor("live", async () => (await studio.textContent("#state")) === "live", 20000);

  const viewers = [early];
  for (let i = 0; i < 4; i++) {
    const p = await (await browser.newContext()).newPage();
    await p.goto(`${prism.http}/watch/show`);
    viewers.push(p);
  }
  for (const [i, v] of viewers.entries()) {
    await waitFor(`viewer ${i} decodes`, async () => (await frames(v)) > 10, 40000);
  }
  await sleep(1500);
  for (const [i, v] of viewers.entries()) {
    const a = await frames(v);
    await sleep(1000);
    assert.ok((await frames(v)) > a, `viewer ${i} keeps decoding`);
  }
  await waitFor("latency shown", async () => (await viewers[1].textContent("#metrics")).includes("latency"), 10000);
  await viewers[1].screenshot({ path: new URL("../../docs/screenshots/watch.png", import.meta.url).pathname });
});

test("a watch page keeps playing across the broadcaster's restart, without reloading", async () => {
  const studio = await (await browser.newContext()).newPage();
  await studio.goto(`${prism.http}/broadcast/again`);
  await studio.click("#camera");
  await waitFor("live", async () => (await studio.textContent("#state")) === "live", 20000);
  const viewer = await (await browser.newContext()).newPage();
  await viewer.goto(`${prism.http}/watch/again`);
  await waitFor("the viewer decodes", async () => (await frames(viewer)) > 10, 40000);
  const pcBefore = await viewer.evaluate(() => window.prismWatch.location);
  // The broadcaster stops (DELETE) and goes live again (a new POST).
  // The server's events say so on the watch page: live, paused, live.
  await waitFor("the viewer shows live", async () => (await viewer.textContent("#state")).startsWith("live"), 10000);
  await waitFor("the viewer count", async () => (await viewer.textContent("#state")).includes("1 watching"), 10000);
  await studio.click("#stop");
  await waitFor("stopped", async () => (await studio.textContent("#state")) === "not live", 5000);
  await waitFor("the viewer shows paused", async () => (await viewer.textContent("#state")).startsWith("paused"), 10000);
  await sleep(1000);
  await studio.click("#camera");
  await waitFor("live again", async () => (await studio.textContent("#state")) === "live", 20000);
  await waitFor("the viewer shows live again", async () => (await viewer.textContent("#state")).startsWith("live"), 10000);
  const afterRestart = await frames(viewer);
  await waitFor("the same viewer decodes the new broadcast", async () => (await frames(viewer)) > afterRestart + 20, 20000);
  assert.equal(await viewer.evaluate(() => window.prismWatch.location), pcBefore, "the same WHEP session, no reconnect");
  assert.deepEqual(
    await viewer.evaluate(() => window.prismStatus.phase),
    "active",
    "the last event said active",
  );
});
