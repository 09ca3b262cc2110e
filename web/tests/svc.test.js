// A Chromium room page that publishes its 960×540 camera as SVC
// (`?svc=L3T3_KEY`: spatial layers 240×135, 480×270 and 960×540 in one
// SSRC) — as VP9 (layers in the payload descriptor) and as AV1
// (`&codec=av1`: layers in the dependency descriptor header extension) —
// and two WHEP watch pages that ask for different sizes: each decodes the
// spatial layer that fits it, keeps decoding, and reports no decode errors.
// Before Prism forwarded SVC per subscriber, every viewer got the whole
// stream (and the top layer's size).
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

/** The watch page's inbound video: codec, decoded frames, size, errors. */
const inbound = (page) =>
  page.evaluate(async () => {
    if (!window.prismWatch) return null;
    const report = await window.prismWatch.pc.getStats();
    let out = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out = {
          frames: s.framesDecoded || 0,
          width: s.frameWidth,
          height: s.frameHeight,
          dropped: s.framesDropped || 0,
          codec: report.get(s.codecId)?.mimeType,
          keyframes: s.keyFramesDecoded || 0,
          plis: s.pliCount || 0,
          freezes: s.freezeCount || 0,
        };
      }
    });
    return out;
  });

/** The room page's outbound camera: codec, scalability mode, size. */
const outbound = (page) =>
  page.evaluate(async () => {
    const l = window.prismRoom?.local.find((x) => x.source === "camera");
    if (!l?.transceiver) return null;
    const report = await l.transceiver.sender.getStats();
    let out = null;
    report.forEach((s) => {
      if (s.type === "outbound-rtp") {
        out = {
          codec: report.get(s.codecId)?.mimeType,
          mode: s.scalabilityMode,
          width: s.frameWidth,
          height: s.frameHeight,
          frames: s.framesEncoded || 0,
          limited: s.qualityLimitationReason,
        };
      }
    });
    return out;
  });


/** The codecs under test: VP9 and AV1 SVC share every step but these. */
const CODECS = [
  { name: "VP9", mime: "video/VP9", room: "svc", query: "", dd: false },
  { name: "AV1", mime: "video/AV1", room: "av1", query: "&codec=av1", dd: true },
];

/** Sets a room page's remote tile width (CSS pixels). */
const tileWidth = (page, width) =>
  page.evaluate((width) => {
    let style = document.getElementById("test-tile");
    if (!style) {
      style = document.createElement("style");
      style.id = "test-tile";
      document.head.appendChild(style);
    }
    style.textContent = `.grid { grid-template-columns: ${width}px !important; } .tile { width: ${width}px; }`;
  }, width);

/** A room page's received video: frames decoded, size, PLIs sent. */
const roomVideoIn = (page) =>
  page.evaluate(async () => {
    const pc = window.prismRoom?.sub;
    let out = null;
    if (!pc) return out;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out = { frames: s.framesDecoded || 0, width: s.frameWidth, height: s.frameHeight, plis: s.pliCount || 0 };
      }
    });
    return out;
  });

for (const c of CODECS) {
  test(`${c.name} SVC: each WHEP viewer decodes the spatial layer that fits it`, async (t) => {
    const publisher = await (await browser.newContext()).newPage();
    await publisher.goto(`${prism.http}/room/${c.room}?name=pub&video=960x540&svc=L3T3_KEY${c.query}`);
    // Chromium starts with the layers its first bandwidth estimate allows
    // and adds the top one as the estimate grows (REMB from Prism: an SVC
    // publisher is asked for up to max_publish_bitrate).
    const sent = await waitFor(`the camera goes out as ${c.name} L3T3_KEY at 960x540`, async () => {
      const o = await outbound(publisher);
      return o && o.frames > 10 && o.width === 960 && o;
    }, 30000);
    t.diagnostic(`publisher: ${JSON.stringify(sent)}`);
    assert.equal(sent.codec, c.mime, `the server's answer kept ${c.name}`);
    assert.equal(sent.mode, "L3T3_KEY");
    assert.equal(`${sent.width}x${sent.height}`, "960x540");
    const dd = /a=extmap:\d+ https:\/\/aomediacodec\.github\.io\/av1-rtp-spec\/#dependency-descriptor-rtp-header-extension/;
    if (c.dd) {
      // AV1's layers travel in the dependency descriptor (docs/simulcast.md).
      const pubAnswer = await publisher.evaluate(() => window.prismRoom?.pub?.currentRemoteDescription?.sdp || "");
      assert.match(pubAnswer, dd, "the server's answer keeps the dependency descriptor");
    }

    const viewers = [];
    for (const q of ["?max_width=240", ""]) {
      const p = await (await browser.newContext()).newPage();
      await p.goto(`${prism.http}/watch/${c.room}${q}`);
      viewers.push(p);
    }
    // The 240×135 layer may be reported as 240×136 (an even height): heights
    // within a row.
    const wants = [[240, 135], [960, 540]];
    const fits = (s, [w, h]) => !!s && s.width === w && Math.abs(s.height - h) <= 1;
    // A new viewer starts on the lowest layer and climbs as its bandwidth
    // estimate grows (from ~1 Mbit/s, about 8% a second; the top layer with
    // the two below costs ~1.1 Mbit/s): wait until each holds its layer for
    // three seconds, so the window below sees the steady state.
    for (const [i, v] of viewers.entries()) {
      let held = 0;
      await waitFor(`viewer ${i} holds ${wants[i].join("x")} for 3 s`, async () => {
        const s = await inbound(v);
        held = s?.frames > 30 && fits(s, wants[i]) ? held + 1 : 0;
        return held >= 4;
      }, 60000, 1000);
    }
    for (const [i, v] of viewers.entries()) {
      if (!c.dd) break;
      const answer = await v.evaluate(() => window.prismWatch?.pc?.currentRemoteDescription?.sdp || "");
      assert.match(answer, dd, `viewer ${i} is sent the dependency descriptor`);
    }
    const samples = viewers.map(() => []);
    const sending = [];
    for (let s = 0; s < 6; s++) {
      for (const [i, v] of viewers.entries()) samples[i].push(await inbound(v));
      sending.push(await outbound(publisher));
      await sleep(1000);
    }
    t.diagnostic(`publisher while sampled: ${JSON.stringify(sending)}`);
    const counters = (await (await fetch(`${prism.http}/metrics`)).text())
      .split("\n")
      .filter((l) => /^prism_(layer_switches_total|allocator_\w+_bps|keyframe_requests_total\{direction="out")/.test(l));
    t.diagnostic(`server: ${counters.join(", ")}`);
    for (const [i, seen] of samples.entries()) {
      t.diagnostic(`viewer ${i}: ${JSON.stringify(seen)}`);
      assert.equal(seen.at(-1).codec, c.mime, `viewer ${i} is offered ${c.name}`);
      for (let s = 1; s < seen.length; s++) {
        assert.ok(seen[s].frames > seen[s - 1].frames, `viewer ${i} keeps decoding: ${JSON.stringify(seen)}`);
        assert.ok(fits(seen[s], wants[i]), `viewer ${i} stays at ${wants[i].join("x")}: ${JSON.stringify(seen)}`);
      }
      const fps = (seen.at(-1).frames - seen[0].frames) / (seen.length - 1);
      assert.ok(fps >= 10, `viewer ${i} decodes ${fps} frames/s: ${JSON.stringify(seen)}`);
    }
    // No decode errors: a decoder that cannot decode what it gets asks for
    // a keyframe again and again (PLI); these ask at most once in the window.
    for (const [i, seen] of samples.entries()) {
      const plis = seen.at(-1).plis - seen[0].plis;
      assert.ok(plis <= 1, `viewer ${i} sent ${plis} PLIs while watching: ${JSON.stringify(seen)}`);
    }
    // The low viewer's upper layers were skipped (not counted as drops).
    // A room page viewer (the WebSocket subscribe leg, offered by the
    // server with every codec): its answer keeps the codec and its tile decodes.
    const member = await (await browser.newContext()).newPage();
    await member.goto(`${prism.http}/room/${c.room}?name=viewer&publish=none`);
    const got = await waitFor(`the room page viewer decodes ${c.name}`, () =>
      member.evaluate(async () => {
        const pc = window.prismRoom?.sub;
        if (!pc) return null;
        let out = null;
        (await pc.getStats()).forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 30) out = s;
        });
        if (!out) return null;
        const report = await pc.getStats();
        return { codec: report.get(out.codecId)?.mimeType, frames: out.framesDecoded, width: out.frameWidth };
      }), 40000);
    t.diagnostic(`room page viewer: ${JSON.stringify(got)}`);
    assert.equal(got.codec, c.mime);
    const metrics = await (await fetch(`${prism.http}/metrics`)).text();
    const skipped = Number(/^prism_layer_skipped_packets_total (\d+)/m.exec(metrics)?.[1] || 0);
    t.diagnostic(`prism_layer_skipped_packets_total ${skipped}`);
    assert.ok(skipped > 100, "the low viewer's upper layers were skipped");
  });

  test(`${c.name} SVC: a room tile switches up at a keyframe and down at once, decoding throughout`, async (t) => {
    const open = async (query) => {
      const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
      await page.goto(`${prism.http}/room/${c.room}-tiles?${query}`);
      return page;
    };
    const publisher = await open(`name=pub&video=960x540&svc=L3T3_KEY${c.query}`);
    await waitFor("the camera goes out with its top layer", async () => (await outbound(publisher))?.width === 960, 30000);
    const viewer = await open("name=viewer&publish=none");
    // A 250-pixel tile: the largest layer no wider is 240×135.
    await tileWidth(viewer, 250);
    await waitFor("the small tile decodes 240 wide", async () => (await roomVideoIn(viewer))?.width === 240, 30000);
    // Full width: up one layer at a time (the allocator's hold), each at a
    // keyframe the server asks for.
    await tileWidth(viewer, 1248);
    const enlarged = Date.now();
    await waitFor("the enlarged tile decodes 960 wide", async () => (await roomVideoIn(viewer))?.width === 960, 40000);
    t.diagnostic(`up to 960 after ${Date.now() - enlarged} ms`);
    const a = await roomVideoIn(viewer);
    await sleep(3000);
    const b = await roomVideoIn(viewer);
    assert.ok(b.frames - a.frames >= 30, `decodes after switching up: ${JSON.stringify([a, b])}`);
    await tileWidth(viewer, 250);
    const shrunk = Date.now();
    await waitFor("the small tile decodes 240 wide again", async () => (await roomVideoIn(viewer))?.width === 240, 20000);
    t.diagnostic(`down to 240 after ${Date.now() - shrunk} ms`);
    const small = await roomVideoIn(viewer);
    await sleep(3000);
    const d = await roomVideoIn(viewer);
    t.diagnostic(`after the switches: ${JSON.stringify([a, b, small, d])}`);
    assert.ok(d.frames - small.frames >= 30, `decodes after switching down: ${JSON.stringify([small, d])}`);
    assert.equal(d.width, 240);
    assert.ok(d.plis - small.plis <= 1, `no decode trouble after switching down: ${JSON.stringify([small, d])}`);
  });
}
