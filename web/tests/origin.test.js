// The pages served from an origin that is not a secure context (plain HTTP on
// a host name, as on a LAN): watching works, publishing pages explain why the
// camera is unavailable instead of crashing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPrism, launchBrowser, waitFor, remoteTiles, sleep } from "./harness.js";

let prism, browser, insecure;
before(async () => {
  prism = await startPrism();
  // prism.test resolves to the server's loopback address, but the origin
  // http://prism.test:PORT is not potentially trustworthy: no secure context.
  browser = await launchBrowser(["--host-resolver-rules=MAP prism.test 127.0.0.1"]);
  insecure = prism.http.replace("127.0.0.1", "prism.test");
});
after(async () => {
  await browser?.close();
  prism?.stop();
});

/** A page on `url` whose uncaught errors are collected. */
async function open(url) {
  const page = await (await browser.newContext()).newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(url);
  return { page, errors };
}

const frames = (page) => page.evaluate(() => document.getElementById("player").getVideoPlaybackQuality().totalVideoFrames);

test("the origin under test is not a secure context", async () => {
  const { page } = await open(`${insecure}/`);
  assert.equal(await page.evaluate(() => window.isSecureContext), false);
  assert.equal(await page.evaluate(() => typeof crypto.randomUUID), "undefined");
});

test("home page works on a plain-HTTP host name", async () => {
  const { page, errors } = await open(`${insecure}/`);
  await sleep(500);
  assert.deepEqual(errors, []);
});

test("watch page on a plain-HTTP host name plays a broadcast", async () => {
  // The studio publishes from a secure origin (localhost); the viewer is not.
  const studio = await open(`${prism.http.replace("127.0.0.1", "localhost")}/broadcast/lan`);
  await studio.page.click("#camera");
  await waitFor("live", async () => (await studio.page.textContent("#state")) === "live", 20000);
  const viewer = await open(`${insecure}/watch/lan`);
  await waitFor("the viewer decodes", async () => (await frames(viewer.page)) > 10, 40000);
  const a = await frames(viewer.page);
  await sleep(1000);
  assert.ok((await frames(viewer.page)) > a, "the viewer keeps decoding");
  assert.deepEqual(viewer.errors, []);
  assert.deepEqual(studio.errors, []);
});

test("broadcast page on a plain-HTTP host name explains that it needs HTTPS", async () => {
  const { page, errors } = await open(`${insecure}/broadcast/lan2`);
  await waitFor("the explanation", async () => (await page.textContent("#error")).includes("HTTPS"), 5000);
  assert.ok(await page.isDisabled("#camera"), "the camera button is disabled");
  assert.deepEqual(errors, []);
});

test("room page on a plain-HTTP host name joins, receives, and explains the camera", async () => {
  const ana = await open(`${prism.http.replace("127.0.0.1", "localhost")}/room/lan?name=Ana`);
  const bo = await open(`${insecure}/room/lan?name=Bo`);
  await waitFor("Bo's page explains", async () => (await bo.page.textContent("#error")).includes("HTTPS"), 10000);
  await waitFor("Bo is connected", async () => (await bo.page.textContent("#state")) === "connected", 10000);
  // Bo cannot publish, but sees and hears Ana.
  await waitFor("Bo decodes Ana", async () => (await remoteTiles(bo.page)).some((t) => t.name === "Ana" && t.frames > 5), 40000);
  await waitFor("Ana lists Bo", async () => (await remoteTiles(ana.page)).some((t) => t.name === "Bo"), 10000);
  assert.deepEqual(bo.errors, []);
  assert.deepEqual(ana.errors, []);
});

test("prism.js stops a WHIP session on another server (base URL) at that server", async () => {
  // The page comes from one server; it publishes to a second one through
  // `base`. stop() must DELETE the session at the second server (its
  // Location is relative to the POST, not to the page).
  const other = await startPrism();
  try {
    const { page, errors } = await open(`${prism.http.replace("127.0.0.1", "localhost")}/`);
    const sessions = async () => {
      const text = await (await fetch(`${other.http}/metrics`)).text();
      return Number(/^prism_whip_whep_sessions (\d+)/m.exec(text)[1]);
    };
    await page.evaluate(async (base) => {
      const { publishWhip } = await import("/static/prism.js");
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      window.session = await publishWhip("elsewhere", stream, { base });
    }, other.http);
    await waitFor("the session exists on the other server", async () => (await sessions()) === 1, 10000);
    assert.ok((await page.evaluate(() => window.session.location)).startsWith(other.http), "an absolute Location");
    await page.evaluate(() => window.session.stop());
    // Well inside the peer timeout: the DELETE ended it, not silence.
    await waitFor("the DELETE reached the other server", async () => (await sessions()) === 0, 2000, 100);
    assert.deepEqual(errors, []);
  } finally {
    other.stop();
  }
});
