// The web client's simulcast in a room: a publisher sends its 1280×720
// camera as q/h/f; a viewer's tile asks for the layer its size needs (and
// for nothing while hidden), and the publisher switches off the layers
// nobody takes (dynacast, `layers_wanted`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startPrism, launchBrowser, waitFor, sleep } from "./harness.js";

let prism, browser, publisher, viewer;

before(async () => {
  prism = await startPrism();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  prism?.stop();
});

async function open(name, query = "") {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error: ${e.message}`));
  await page.goto(`${prism.http}/room/tiles?name=${name}${query}`);
  return page;
}

/** Sets the viewer's remote tile size (CSS pixels) or hides it (null). */
const tileSize = (page, size) =>
  page.evaluate((size) => {
    let style = document.getElementById("test-tile");
    if (!style) {
      style = document.createElement("style");
      style.id = "test-tile";
      document.head.appendChild(style);
    }
    style.textContent = size
      ? `.grid { grid-template-columns: ${size.width}px !important; } .tile { width: ${size.width}px; }`
      : `.tile:not([data-self]) { display: none !important; }`;
  }, size);

/** The viewer's received video: bytes, frames, decoded size. */
const videoIn = (page) =>
  page.evaluate(async () => {
    const room = window.prismRoom;
    let out = null;
    if (!room || !room.sub) return out;
    (await room.sub.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out = { bytes: s.bytesReceived || 0, frames: s.framesDecoded || 0, size: `${s.frameWidth}x${s.frameHeight}` };
      }
    });
    return out;
  });

/** The publisher's camera encodings: rid → {active, bytesSent}. */
const encodings = (page) =>
  page.evaluate(async () => {
    const cam = window.prismRoom.local.find((l) => l.source === "camera");
    const sender = cam.transceiver.sender;
    const out = {};
    for (const e of sender.getParameters().encodings) out[e.rid] = { active: e.active, bytesSent: 0 };
    (await sender.getStats()).forEach((s) => {
      if (s.type === "outbound-rtp" && s.rid && out[s.rid]) out[s.rid].bytesSent = s.bytesSent;
    });
    return out;
  });

/** Whether the publisher still sends rid `f`: its bytes over 2 s. */
async function sendsFull(page) {
  const a = await encodings(page);
  await sleep(2000);
  const b = await encodings(page);
  return { active: b.f.active, grew: b.f.bytesSent - a.f.bytesSent };
}

test("a small tile gets the low layer, a large one the full layer, a hidden one nothing; unused layers are switched off", async (t) => {
  publisher = await open("pub", "&simulcast=1");
  await waitFor("the camera is published with three layers", () =>
    publisher.evaluate(() => {
      const cam = window.prismRoom.local.find((l) => l.source === "camera");
      if (!cam || !cam.trackId) return false;
      // A fixed resolution under CPU load: a size change is a layer switch.
      cam.track.contentHint = "detail";
      return cam.layers.length === 3;
    }), 20000);

  viewer = await open("viewer", "&publish=none");
  await tileSize(viewer, { width: 160, height: 90 });
  await waitFor("the 160×90 tile decodes the 320×180 layer", async () => (await videoIn(viewer))?.size === "320x180", 30000);
  // (A new leg starts on the low layer; the tile's wish follows its first
  // layout, debounced: wait for it rather than read it at once.)
  const wishOf = () =>
    viewer.evaluate(() => {
      const room = window.prismRoom;
      for (const p of room.participants.values()) for (const [id, tr] of p.tracks) if (tr.kind === "video") return room.trackSettings(id);
    });
  await waitFor("the small tile's wish is sent", async () => JSON.stringify(await wishOf()) === JSON.stringify({ max_width: 320, max_height: 180, enabled: true }), 10000);
  t.diagnostic(`small tile's wish: ${JSON.stringify(await wishOf())}`);

  // Nobody takes h or f: the publisher stops encoding them.
  await waitFor("the publisher switches h and f off", async () => {
    const e = await encodings(publisher);
    return e.q.active && !e.h.active && !e.f.active && e;
  }, 10000);
  const off = await sendsFull(publisher);
  t.diagnostic(`while nobody wants f: ${JSON.stringify(off)}`);
  assert.equal(off.grew, 0, "rid f sends nothing");

  await tileSize(viewer, { width: 1248, height: 702 });
  const enlarged = Date.now();
  await waitFor("the enlarged tile decodes 1280×720", async () => (await videoIn(viewer))?.size === "1280x720", 30000);
  t.diagnostic(`enlarged tile at 1280x720 after ${Date.now() - enlarged} ms`);
  const on = await sendsFull(publisher);
  t.diagnostic(`while the viewer takes f: ${JSON.stringify(on)}`);
  assert.ok(on.active && on.grew > 0, "rid f is on again");

  await tileSize(viewer, null);
  await sleep(2000); // the wish is debounced, the allocator runs each second
  const h1 = await videoIn(viewer);
  await sleep(2000);
  const h2 = await videoIn(viewer);
  t.diagnostic(`hidden: ${h2.bytes - h1.bytes} bytes, ${h2.frames - h1.frames} frames in 2 s`);
  assert.equal(h2.bytes - h1.bytes, 0, "a hidden tile receives nothing");

  await tileSize(viewer, { width: 1248, height: 702 });
  const shown = Date.now();
  await waitFor("the shown tile decodes again", async () => {
    const a = await videoIn(viewer);
    await sleep(500);
    const b = await videoIn(viewer);
    return b.frames > a.frames && b.frames > h2.frames;
  }, 15000);
  t.diagnostic(`shown again: decoding after ${Date.now() - shown} ms`);
});
