// How the web client sends video (simulcast layers, SVC encodings, the
// AV1 dependency descriptor) and which layer a tile asks for: the encoding
// side of prism.js, which re-exports all of it (docs/web-client.md).

/**
 * The one encoding and the codec order to send a video track as SVC
 * (`mode`: a scalability mode such as "L3T3_KEY": 3 spatial layers, each
 * half the size of the next, 3 temporal layers, layers predicting from the
 * one below only at keyframes) in `codec` ("VP9", the default, or "AV1":
 * its layers travel in the dependency descriptor header extension, which
 * the server negotiates). `codecs`: the browser's codec of that name first
 * (profile 0 when it has several), then every other codec; empty when the
 * browser has no such codec, and then the encoding carries no scalability
 * mode either.
 */
export function svcEncoding(mode, codec = "VP9") {
  const caps = (typeof RTCRtpSender !== "undefined" && RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities("video")) || { codecs: [] };
  const mime = `video/${codec}`.toLowerCase();
  const isIt = (c) => c.mimeType.toLowerCase() === mime;
  const chosen = caps.codecs.filter(isIt).sort((a, b) => profile(a) - profile(b));
  if (!chosen.length) return { encoding: {}, codecs: [] };
  return { encoding: { scalabilityMode: mode }, codecs: [...chosen, ...caps.codecs.filter((c) => !isIt(c))] };
}

/** The AV1 dependency descriptor header extension (layers of AV1 SVC). */
const DEPENDENCY_DESCRIPTOR = "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/**
 * Lets a receiving video transceiver negotiate the dependency descriptor.
 * Chromium offers it only on transceivers that send SVC and drops it from
 * the answers of the others, and without it a receiver cannot tell an AV1
 * SVC stream's spatial layers apart: a subscriber sent more than the lowest
 * layer decodes nothing ("invalid spatial index order"). No-op where the
 * browser lacks `setHeaderExtensionsToNegotiate` or the extension.
 */
export function negotiateDependencyDescriptor(transceiver) {
  if (!transceiver.getHeaderExtensionsToNegotiate || !transceiver.setHeaderExtensionsToNegotiate) return;
  const exts = transceiver.getHeaderExtensionsToNegotiate();
  if (!exts.some((e) => e.uri === DEPENDENCY_DESCRIPTOR && e.direction === "stopped")) return;
  try {
    transceiver.setHeaderExtensionsToNegotiate(exts.map((e) => (e.uri === DEPENDENCY_DESCRIPTOR ? { ...e, direction: "sendrecv" } : e)));
  } catch {
    // An older browser that refuses the change: the stream still plays
    // (as one layer for AV1 SVC).
  }
}

/** A codec capability's profile (VP9 profile-id, AV1 profile; 0 when its fmtp does not say). */
function profile(c) {
  const m = /profile(?:-id)?=(\d+)/.exec(c.sdpFmtpLine || "");
  return m ? Number(m[1]) : 0;
}

/**
 * The simulcast encodings to send a video track as, lowest first:
 * [{rid, scaleResolutionDownBy, width, height, maxBitrate}], or [] for one
 * plain encoding.
 *
 * Camera: q/h/f at 1/4, 1/2 and full size from 960 pixels wide (a 1280×720
 * camera sends 320×180, 640×360 and 1280×720), h/f from 480 (Chromium sends
 * at most two layers below 960×540 and one below 480×270, dropping the top
 * ones: asking for more would lose the full-size layer). Screen: h/f from
 * 1280 wide, else one layer; text needs the full size, and the half-size
 * layer is what a weak viewer or a small tile gets instead of a pause.
 */
export function simulcastLayers(source, width, height) {
  if (!width || !height) return [];
  let ladder;
  // A screen share goes out as one encoding: with a second simulcast
  // track on the same publish leg the server stopped forwarding the
  // camera (seen with Prism at 028a86e; see docs/web-client.md).
  if (source === "screen") ladder = [];
  else ladder = width >= 960 ? [4, 2, 1] : width >= 480 ? [2, 1] : [];
  const rids = { 4: "q", 2: "h", 1: "f" };
  return ladder.map((scale) => {
    const w = Math.floor(width / scale), h = Math.floor(height / scale);
    return { rid: rids[scale], scaleResolutionDownBy: scale, width: w, height: h, maxBitrate: layerBitrate(source, w, h) };
  });
}

/** The encoder's ceiling for one layer of this size, bits/s. */
function layerBitrate(source, width, height) {
  const px = width * height;
  // Rows: the largest picture of each class (10% slack for odd sizes).
  const table = source === "screen"
    ? [[640 * 360, 300_000], [960 * 540, 600_000], [1280 * 720, 1_200_000], [Infinity, 2_000_000]]
    : [[160 * 90, 80_000], [320 * 180, 150_000], [640 * 360, 500_000], [960 * 540, 1_000_000], [1280 * 720, 1_500_000], [Infinity, 2_500_000]];
  return table.find(([max]) => px <= max * 1.1)[1];
}

/**
 * The wish to send for a video tile of `width`×`height` device pixels: the
 * size of the smallest layer that covers the tile (a layer up to 10% smaller
 * still counts), else the largest; the server then sends that layer (it
 * sends the largest layer that fits the wish). Without layers: the tile's
 * size itself.
 */
export function tileWish(layers, width, height) {
  const w = Math.max(1, Math.round(width)), h = Math.max(1, Math.round(height));
  if (!layers || !layers.length) return { maxWidth: w, maxHeight: h };
  const sorted = [...layers].sort((a, b) => a.width * a.height - b.width * b.height);
  const l = sorted.find((x) => x.width >= w * 0.9 && x.height >= h * 0.9) || sorted.at(-1);
  return { maxWidth: l.width, maxHeight: l.height };
}
