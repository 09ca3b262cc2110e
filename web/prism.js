// Prism web client library: plain ES module, standard APIs only.
//
//   import { PrismRoom, publishWhip, watchWhep } from "/static/prism.js";
//
// PrismRoom speaks the WebSocket protocol of docs/signaling.md: it joins a
// room, publishes local tracks on its publish leg (it offers), receives the
// others' tracks on its subscribe leg (the server offers), and reconnects
// after a network drop or a page reload (a stable identity per tab makes the
// server replace the old connection instead of showing a duplicate).
// See docs/web-client.md for the events and examples.

const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
/** A tile's size settles (drag, layout) before its wish goes to the server. */
const TILE_DEBOUNCE_MS = 250;

import { svcEncoding, negotiateDependencyDescriptor, simulcastLayers, tileWish } from "./encodings.js";

export { svcEncoding, negotiateDependencyDescriptor, simulcastLayers, tileWish };

function defaultUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/ws`;
}

/**
 * A random identifier. `crypto.randomUUID` exists only in secure contexts
 * (HTTPS or localhost); `crypto.getRandomValues` exists everywhere, so a page
 * served over plain HTTP from a LAN address or a host name works too.
 */
export function randomId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** A stable identity for this browser tab (survives reloads, not new tabs). */
export function tabIdentity(prefix = "web") {
  const key = "prism.identity";
  let id = sessionStorage.getItem(key);
  if (!id) {
    id = `${prefix}-${randomId()}`;
    sessionStorage.setItem(key, id);
  }
  return id;
}

/**
 * Why this page cannot use the camera, microphone or screen, or null when it
 * can. Browsers expose `navigator.mediaDevices` only in a secure context:
 * HTTPS, or http://localhost / http://127.0.0.1. Watching needs no secure
 * context; publishing does.
 */
export function captureUnavailableReason() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return (
      `This browser allows the camera, microphone and screen only on secure pages: open this page over HTTPS ` +
      `(https://${location.host}${location.pathname}) or on http://localhost. ` +
      `Operators: put Prism behind a TLS proxy (see docs/operations.md, "TLS"). You can still see and hear the others.`
    );
  }
  return null;
}

export class PrismError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * A conference room connection.
 *
 * Events (EventTarget, `event.detail`):
 * - `joined` {participantId, participants}
 * - `participant-joined` {participant}, `participant-left` {participantId, reason}
 * - `track` {participantId, trackId, kind, source, track, stream, muted}
 * - `track-removed` {participantId, trackId}
 * - `track-muted` / `track-unmuted` {participantId, trackId}
 * - `published` {trackId, source, kind}
 * - `track-paused` {participantId, trackId, reason} / `track-resumed`
 *   {participantId, trackId}: the server stopped sending a track because
 *   its lowest layer does not fit this subscriber's bandwidth, and resumed it
 * - `layers-wanted` {trackId, rids}: the layers of a local simulcast track
 *   someone takes; the others were switched off (dynacast)
 * - `state` {state: "connecting" | "connected" | "reconnecting" | "closed"}
 * - `error` {code, message}
 * - `draining` {deadlineSecs}
 */
export class PrismRoom extends EventTarget {
  constructor({ room, name = "", token, identity, url } = {}) {
    super();
    this.url = url || defaultUrl();
    this.room = room;
    this.name = name;
    this.token = token;
    this.identity = identity || tabIdentity();
    this.participantId = null;
    /** id → {id, identity, name, tracks: Map(trackId → info)} */
    this.participants = new Map();
    /** Local tracks to (re)publish: {track, source, stream, trackId?} */
    this.local = [];
    this.state = "closed";
    this._closing = false;
    this._attempt = 0;
    this._nextId = 1;
    this._pending = new Map();
    this._negotiation = Promise.resolve();
    this._subTracks = new Map(); // mid → trackId on the subscribe leg
    /** trackId → what this subscriber wants of it, as last set (wire names) */
    this._wishes = new Map();
    /** trackId → the same, as the server last heard it on this connection */
    this._wishesSent = new Map();
    /** Remote tracks the server paused for bandwidth. */
    this.paused = new Set();
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state) {
    this.state = state;
    this._emit("state", { state });
  }

  /** Connects and joins; resolves with the `joined` message. */
  async join() {
    this._closing = false;
    this._setState("connecting");
    return this._connect();
  }

  async _connect() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new PrismError("network", "cannot reach the server"));
    });
    ws.onmessage = (e) => this._onMessage(JSON.parse(e.data));
    ws.onclose = () => this._onClose(ws);
    const joined = await this._request({
      type: "join",
      room: this.room,
      name: this.name,
      identity: this.identity,
      ...(this.token ? { token: this.token } : {}),
    });
    this._attempt = 0;
    this.participantId = joined.participant_id;
    this.participants.clear();
    for (const p of joined.participants) this._addParticipant(p);
    this._setupSubscribeLeg();
    // A new connection is a new subscriber to the server: tell it again
    // what we want of the tracks that are still there.
    this._wishesSent.clear();
    this.paused.clear();
    for (const trackId of this._wishes.keys()) {
      if (this._trackOwner(trackId)) this._sendWish(trackId);
      else this._wishes.delete(trackId);
    }
    this._setState("connected");
    this._emit("joined", { participantId: this.participantId, participants: [...this.participants.values()] });
    if (this.local.length) await this._negotiatePublish();
    return joined;
  }

  _send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  /** Sends a message with an id; resolves with the reply (or rejects on `error`). */
  _request(msg) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      this._send({ ...msg, id });
    });
  }

  _onClose(ws) {
    if (ws !== this.ws) return;
    for (const { reject } of this._pending.values()) reject(new PrismError("network", "connection closed"));
    this._pending.clear();
    this._closePeers();
    if (this._closing) {
      this._setState("closed");
      return;
    }
    // A network drop, a server restart, or being replaced elsewhere: retry.
    const delay = RECONNECT_DELAYS_MS[Math.min(this._attempt, RECONNECT_DELAYS_MS.length - 1)];
    this._attempt++;
    this._setState("reconnecting");
    setTimeout(() => {
      if (this._closing) return;
      this._connect().catch((e) => {
        this._emit("error", { code: e.code || "network", message: e.message });
        if (this.ws && this.ws.readyState !== WebSocket.CLOSED) this.ws.close();
        else this._onClose(this.ws);
      });
    }, delay);
  }

  _closePeers() {
    for (const pc of [this.pub, this.sub]) if (pc) pc.close();
    this.pub = null;
    this.sub = null;
    for (const [pid] of this.participants) this._removeParticipant(pid, "disconnected");
    for (const l of this.local) l.trackId = undefined;
  }

  _onMessage(m) {
    if (m.id !== undefined && this._pending.has(m.id)) {
      const p = this._pending.get(m.id);
      this._pending.delete(m.id);
      if (m.type === "error") p.reject(new PrismError(m.code, m.message));
      else p.resolve(m);
      return;
    }
    switch (m.type) {
      case "participant_joined":
        this._addParticipant(m.participant);
        break;
      case "participant_left":
        this._removeParticipant(m.participant_id, m.reason);
        break;
      case "track_published": {
        const p = this.participants.get(m.track.participant_id);
        if (p) p.tracks.set(m.track.id, { ...m.track });
        break;
      }
      case "track_unpublished": {
        const p = this.participants.get(m.participant_id);
        if (p) p.tracks.delete(m.track_id);
        this._forgetTrack(m.track_id);
        this._emit("track-removed", { participantId: m.participant_id, trackId: m.track_id });
        break;
      }
      case "track_muted":
      case "track_unmuted": {
        const muted = m.type === "track_muted";
        const p = this.participants.get(m.participant_id);
        const t = p && p.tracks.get(m.track_id);
        if (t) t.muted = muted;
        this._emit(muted ? "track-muted" : "track-unmuted", { participantId: m.participant_id, trackId: m.track_id });
        break;
      }
      case "offer":
        this._onSubscribeOffer(m);
        break;
      case "track_paused":
      case "track_resumed": {
        const paused = m.type === "track_paused";
        if (paused) this.paused.add(m.track_id);
        else this.paused.delete(m.track_id);
        const participantId = this._trackOwner(m.track_id);
        this._emit(paused ? "track-paused" : "track-resumed", {
          participantId,
          trackId: m.track_id,
          ...(paused ? { reason: m.reason } : {}),
        });
        break;
      }
      case "layers_wanted":
        this._onLayersWanted(m.track_id, m.rids);
        break;
      case "draining":
        this._emit("draining", { deadlineSecs: m.deadline_secs });
        break;
      case "left":
        // Replaced by another connection of ours (another tab took over) or
        // timed out: do not fight it unless it was a timeout.
        if (m.reason === "replaced") this._closing = true;
        break;
      case "error":
        this._emit("error", { code: m.code, message: m.message });
        break;
    }
  }

  _addParticipant(info) {
    const p = { id: info.id, identity: info.identity, name: info.name, tracks: new Map() };
    for (const t of info.tracks || []) p.tracks.set(t.id, { ...t });
    this.participants.set(p.id, p);
    this._emit("participant-joined", { participant: p });
  }

  _removeParticipant(id, reason) {
    const p = this.participants.get(id);
    if (!p) return;
    for (const trackId of p.tracks.keys()) {
      this._forgetTrack(trackId);
      this._emit("track-removed", { participantId: id, trackId });
    }
    this.participants.delete(id);
    this._emit("participant-left", { participantId: id, reason });
  }

  _newPeer(leg) {
    const pc = new RTCPeerConnection();
    pc.onicecandidate = (e) => this._send({ type: "candidate", leg, candidate: e.candidate ? e.candidate.toJSON() : null });
    return pc;
  }

  _setupSubscribeLeg() {
    this.sub = this._newPeer("subscribe");
    this._subTracks.clear();
    this.sub.ontrack = (e) => {
      const mid = e.transceiver.mid;
      const trackId = this._subTracks.get(mid);
      const stream = e.streams[0] || new MediaStream([e.track]);
      const participantId = stream.id;
      const p = this.participants.get(participantId);
      const info = p && p.tracks.get(trackId);
      this._emit("track", {
        participantId,
        trackId,
        kind: e.track.kind,
        source: info ? info.source : e.track.kind === "audio" ? "microphone" : "camera",
        muted: info ? info.muted : false,
        track: e.track,
        stream,
      });
    };
  }

  async _onSubscribeOffer(m) {
    if (!this.sub) this._setupSubscribeLeg();
    for (const t of m.tracks) this._subTracks.set(t.mid, t.track_id);
    try {
      await this.sub.setRemoteDescription({ type: "offer", sdp: m.sdp });
      // The server offers the AV1 dependency descriptor; answer it.
      for (const t of this.sub.getTransceivers()) if (t.receiver.track.kind === "video") negotiateDependencyDescriptor(t);
      await this.sub.setLocalDescription(await this.sub.createAnswer());
      this._send({ type: "answer", leg: "subscribe", sdp: this.sub.localDescription.sdp });
    } catch (e) {
      this._emit("error", { code: "negotiation", message: `subscribe leg: ${e.message}` });
    }
  }

  /**
   * Publishes a local track. `source`: camera, microphone, screen, screen_audio.
   * Resolves with the server's track id. A camera or screen track is sent as
   * simulcast layers (see `simulcastLayers`) unless `{simulcast: false}`.
   * `{svc: "L3T3_KEY"}` (a video track) sends it instead as VP9 with
   * spatial and temporal layers in one stream (see `svcEncoding`), or as
   * AV1 with `{svc: "L3T3_KEY", codec: "AV1"}`; the server forwards each
   * subscriber the layers that fit it. Where the browser cannot send that,
   * the track goes out as one plain encoding.
   */
  async publish(track, source, stream = new MediaStream([track]), { simulcast = true, svc = null, codec = "VP9" } = {}) {
    const entry = { track, source, stream, simulcast, svc: track.kind === "video" ? svc : null, svcCodec: codec };
    this.local.push(entry);
    if (this.state === "connected") await this._negotiatePublish();
    return entry.trackId;
  }

  /** Stops publishing a local track. */
  async unpublish(track) {
    const entry = this.local.find((l) => l.track === track);
    if (!entry) return;
    this.local = this.local.filter((l) => l !== entry);
    if (this.pub && entry.transceiver) {
      entry.transceiver.sender.replaceTrack(null);
      entry.transceiver.direction = "inactive";
      await this._negotiatePublish();
    }
  }

  /** Renegotiates the publish leg (serialized: one offer at a time). */
  _negotiatePublish() {
    this._negotiation = this._negotiation.then(() => this._doNegotiatePublish()).catch((e) => {
      this._emit("error", { code: e.code || "negotiation", message: e.message });
    });
    return this._negotiation;
  }

  async _doNegotiatePublish() {
    if (!this.pub) this.pub = this._newPeer("publish");
    for (const l of this.local) {
      if (!l.transceiver || l.transceiver.currentDirection === "stopped") {
        const init = { direction: "sendonly", streams: [l.stream] };
        const size = l.track.kind === "video" && l.track.getSettings ? l.track.getSettings() : {};
        const svc = l.svc ? svcEncoding(l.svc, l.svcCodec) : null;
        l.layers = !svc && l.simulcast && l.track.kind === "video" ? simulcastLayers(l.source, size.width, size.height) : [];
        if (l.layers.length) {
          init.sendEncodings = l.layers.map(({ rid, scaleResolutionDownBy, maxBitrate }) => ({ rid, scaleResolutionDownBy, maxBitrate }));
        } else if (svc) {
          init.sendEncodings = [svc.encoding];
        }
        l.transceiver = this.pub.addTransceiver(l.track, init);
        // VP9 (or AV1) first, so the offer (and the server's answer) picks
        // it for the SVC encoding; the other codecs stay as fallbacks.
        if (svc && svc.codecs.length) l.transceiver.setCodecPreferences(svc.codecs);
        l.setParams = Promise.resolve();
        l.keepsResolution = false;
      }
    }
    await this.pub.setLocalDescription(await this.pub.createOffer());
    // The layers' sizes tell the server their order (lowest first) and what
    // a subscriber's tile size means in layers.
    const tracks = this.local
      .filter((l) => l.transceiver.mid)
      .map((l) => ({
        mid: l.transceiver.mid,
        source: l.source,
        ...(l.layers && l.layers.length
          ? { layers: l.layers.map((x) => ({ rid: x.rid, width: x.width, height: x.height, max_bitrate: x.maxBitrate })) }
          : {}),
      }));
    const answer = await this._request({ type: "offer", leg: "publish", sdp: this.pub.localDescription.sdp, tracks });
    await this.pub.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    // Simulcast and SVC alike: under CPU load Chromium would lower the input
    // size and with it drop the top layers a viewer may be on.
    for (const l of this.local) if (((l.layers && l.layers.length) || l.svc) && !l.keepsResolution) this._keepResolution(l);
    for (const t of answer.tracks) {
      const l = this.local.find((x) => x.transceiver && x.transceiver.mid === t.mid);
      if (l && l.trackId !== t.track_id) {
        l.trackId = t.track_id;
        this._emit("published", { trackId: t.track_id, source: l.source, kind: l.track.kind });
        if (!l.track.enabled) this._send({ type: "mute", track_id: t.track_id });
      }
    }
  }

  /** Mutes (or unmutes) a local track: stops sending and tells the others. */
  setMuted(track, muted) {
    const l = this.local.find((x) => x.track === track);
    if (!l) return;
    track.enabled = !muted;
    if (l.trackId) this._send({ type: muted ? "mute" : "unmute", track_id: l.trackId });
  }

  /**
   * Dynacast: switches off the encodings of a local simulcast track that no
   * subscriber takes, and back on those listed again. The browser then
   * spends neither CPU nor uplink on them.
   */
  _onLayersWanted(trackId, rids) {
    const l = this.local.find((x) => x.trackId === trackId);
    if (!l || !l.transceiver) return;
    l.wantedRids = rids;
    const sender = l.transceiver.sender;
    // getParameters/setParameters is a transaction: one at a time per sender.
    l.setParams = (l.setParams || Promise.resolve())
      .then(async () => {
        const params = sender.getParameters();
        if (!params.encodings || params.encodings.length < 2) return;
        let changed = false;
        for (const e of params.encodings) {
          const on = !e.rid || rids.includes(e.rid);
          if (e.active !== on) {
            e.active = on;
            changed = true;
          }
        }
        if (changed) await sender.setParameters(params);
        this._emit("layers-wanted", { trackId, rids: [...rids] });
      })
      .catch((e) => this._emit("error", { code: "layers", message: `switching layers of ${trackId}: ${e.message}` }));
  }

  /**
   * Under CPU load a browser lowers the input resolution, and with it the
   * number of simulcast layers (Chromium drops the top ones): a subscriber
   * on such a layer would see it vanish. Lowering the frame rate keeps every
   * layer; the server already fits each viewer by choosing layers.
   */
  _keepResolution(l) {
    l.keepsResolution = true;
    const sender = l.transceiver.sender;
    l.setParams = (l.setParams || Promise.resolve())
      .then(async () => {
        const params = sender.getParameters();
        if (params.degradationPreference === "maintain-resolution") return;
        params.degradationPreference = "maintain-resolution";
        await sender.setParameters(params);
      })
      .catch(() => {}); // not supported (Firefox): the default applies
  }

  /** The participant id that publishes a track, if known. */
  _trackOwner(trackId) {
    for (const [pid, p] of this.participants) if (p.tracks.has(trackId)) return pid;
    return undefined;
  }

  _forgetTrack(trackId) {
    this._wishes.delete(trackId);
    this._wishesSent.delete(trackId);
    this.paused.delete(trackId);
  }

  /**
   * What this subscriber wants of a remote track: `quality` ("low" |
   * "medium" | "high"), `maxWidth`/`maxHeight` (device pixels: the server
   * sends the largest simulcast layer that fits; 0 = no limit) and
   * `enabled` (false: send nothing, e.g. a hidden tile). Absent fields keep
   * their value. Only changes go to the server; kept across reconnects.
   */
  setTrackSettings(trackId, { quality, maxWidth, maxHeight, enabled } = {}) {
    const wish = { ...(this._wishes.get(trackId) || {}) };
    if (quality !== undefined) wish.quality = quality;
    if (maxWidth !== undefined) wish.max_width = Math.round(maxWidth);
    if (maxHeight !== undefined) wish.max_height = Math.round(maxHeight);
    if (enabled !== undefined) wish.enabled = !!enabled;
    this._wishes.set(trackId, wish);
    this._sendWish(trackId);
  }

  /** What was last set for a track (wire names), or undefined. */
  trackSettings(trackId) {
    const w = this._wishes.get(trackId);
    return w && { ...w };
  }

  _sendWish(trackId) {
    const wish = this._wishes.get(trackId) || {};
    const sent = this._wishesSent.get(trackId) || {};
    const changed = {};
    for (const [k, v] of Object.entries(wish)) if (sent[k] !== v) changed[k] = v;
    if (!Object.keys(changed).length) return;
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this._send({ type: "track_settings", track_id: trackId, ...changed });
    this._wishesSent.set(trackId, { ...sent, ...changed });
  }

  /**
   * Keeps a remote video track's settings in step with the element that
   * shows it: its size in device pixels (ResizeObserver, debounced; see
   * `tileWish`), and `enabled: false` while it is hidden, off-screen or the
   * page is in the background (IntersectionObserver, page visibility).
   * Returns a function that stops watching.
   */
  observeVideo(trackId, element) {
    let size = null;
    let onScreen = true;
    let timer = null;
    const apply = () => {
      timer = null;
      const visible = onScreen && document.visibilityState !== "hidden" && size && size.width >= 1 && size.height >= 1;
      if (!visible) {
        this.setTrackSettings(trackId, { enabled: false });
        return;
      }
      const p = this.participants.get(this._trackOwner(trackId));
      const info = p && p.tracks.get(trackId);
      this.setTrackSettings(trackId, { enabled: true, ...tileWish(info && info.layers, size.width, size.height) });
    };
    const later = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(apply, TILE_DEBOUNCE_MS);
    };
    const resize = new ResizeObserver((entries) => {
      const e = entries[entries.length - 1];
      const dp = e.devicePixelContentBoxSize && e.devicePixelContentBoxSize[0];
      const dpr = window.devicePixelRatio || 1;
      size = dp
        ? { width: dp.inlineSize, height: dp.blockSize }
        : { width: e.contentRect.width * dpr, height: e.contentRect.height * dpr };
      later();
    });
    try {
      resize.observe(element, { box: "device-pixel-content-box" });
    } catch {
      resize.observe(element);
    }
    const intersect = new IntersectionObserver((entries) => {
      onScreen = entries[entries.length - 1].isIntersecting;
      later();
    });
    intersect.observe(element);
    document.addEventListener("visibilitychange", later);
    return () => {
      if (timer) clearTimeout(timer);
      resize.disconnect();
      intersect.disconnect();
      document.removeEventListener("visibilitychange", later);
    };
  }

  /** Stop receiving these tracks (or receive them again). */
  setSubscribed(trackIds, subscribed) {
    this._send({ type: subscribed ? "subscribe" : "unsubscribe", track_ids: trackIds });
  }

  /** The subscribe leg's inbound statistics per track id: bitrate, loss, resolution, fps. */
  async inboundStats() {
    const out = new Map();
    if (!this.sub) return out;
    const report = await this.sub.getStats();
    const now = performance.now();
    this._lastStats = this._lastStats || new Map();
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const trackId = this._subTracks.get(s.mid);
      if (!trackId) return;
      const prev = this._lastStats.get(s.id);
      const bitrate = prev ? ((s.bytesReceived - prev.bytes) * 8 * 1000) / (now - prev.at) : 0;
      this._lastStats.set(s.id, { bytes: s.bytesReceived, at: now });
      out.set(trackId, {
        kind: s.kind,
        bitrate,
        packetsLost: s.packetsLost || 0,
        packetsReceived: s.packetsReceived || 0,
        width: s.frameWidth,
        height: s.frameHeight,
        fps: s.framesPerSecond,
      });
    });
    return out;
  }

  /** Leaves the room for good (no reconnect). */
  leave() {
    this._closing = true;
    this._send({ type: "leave" });
    this._closePeers();
    if (this.ws) this.ws.close();
    this._setState("closed");
  }
}

async function postSdp(url, sdp, token) {
  const headers = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(url, { method: "POST", headers, body: sdp });
  if (r.status !== 201) {
    let detail = r.statusText;
    try {
      detail = (await r.json()).detail || detail;
    } catch {}
    throw new PrismError(r.status, detail);
  }
  // The Location header is relative to the request URL (which may be on another
  // origin when `base` is set), not to this page.
  const location = new URL(r.headers.get("Location"), new URL(url, document.baseURI)).href;
  return { answer: await r.text(), location, links: parseLinks(r.headers.get("Link"), location) };
}

/** The WHEP draft's server-sent events extension (its Link relation). */
export const WHEP_EVENTS_REL = "urn:ietf:params:whep:ext:core:server-sent-events";

/**
 * Parses a Link header (several links, comma-joined by fetch) into
 * [{url, params}], URLs resolved against `base`. Parameter values may hold
 * commas (events="active,inactive"), so links are split at `<`, not `,`.
 */
export function parseLinks(header, base) {
  if (!header) return [];
  const out = [];
  for (const m of header.matchAll(/<([^>]*)>([^<]*)/g)) {
    const params = {};
    for (const p of m[2].matchAll(/;\s*([^=;,\s]+)\s*(?:=\s*(?:"([^"]*)"|([^;,\s]*)))?/g)) {
      params[p[1].toLowerCase()] = p[2] ?? p[3] ?? "";
    }
    out.push({ url: new URL(m[1], base).href, params });
  }
  return out;
}

/**
 * Subscribes to a WHEP session's server-sent events: POSTs the event list
 * to the extension's URL, then reads the stream its Location names with an
 * EventSource. `onstatus({phase, viewers})` is called on every change:
 * phase is "active" (the broadcast is live), "inactive" (no publisher: the
 * session waits for the next one) or "ended" (the session is closed).
 * Resolves with {close()}, or null when the server does not offer events.
 */
export async function whepEvents(links, onstatus, { token } = {}) {
  const link = links.find((l) => l.params.rel === WHEP_EVENTS_REL);
  if (!link) return null;
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch(link.url, {
    method: "POST",
    headers,
    body: JSON.stringify(["active", "inactive", "viewercount", "ended"]),
  });
  if (r.status !== 201) return null;
  const es = new EventSource(new URL(r.headers.get("Location"), link.url).href);
  const status = { phase: "active", viewers: 0 };
  const set = (change) => {
    Object.assign(status, change);
    onstatus({ ...status });
  };
  es.addEventListener("active", () => set({ phase: "active" }));
  es.addEventListener("inactive", () => set({ phase: "inactive" }));
  es.addEventListener("viewercount", (e) => {
    try {
      set({ viewers: JSON.parse(e.data).viewercount });
    } catch {}
  });
  es.addEventListener("ended", () => {
    es.close();
    set({ phase: "ended" });
  });
  return { close: () => es.close() };
}

/**
 * Publishes a MediaStream to a room over WHIP. Resolves with
 * {pc, stop()} once the answer is applied.
 */
export async function publishWhip(room, stream, { token, base = "" } = {}) {
  const pc = new RTCPeerConnection();
  for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: "sendonly", streams: [stream] });
  await pc.setLocalDescription(await pc.createOffer());
  await waitForCandidates(pc);
  const { answer, location } = await postSdp(`${base}/whip/${encodeURIComponent(room)}`, pc.localDescription.sdp, token);
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  return {
    pc,
    location,
    async stop() {
      pc.close();
      await fetch(location, { method: "DELETE", headers: token ? { Authorization: `Bearer ${token}` } : {} }).catch(() => {});
    },
  };
}

/**
 * Watches a room's broadcast over WHEP. Resolves with {pc, stream, stop()};
 * rejects with a PrismError whose code is 404 when there is no broadcast yet.
 * `quality` ("low" | "medium" | "high"), `maxWidth`, `maxHeight`: the most
 * this viewer wants of a simulcast broadcast.
 * `onstatus({phase, viewers})`, if given, follows the broadcast over the
 * server's events (see whepEvents): the session stays up while the
 * publisher restarts ("inactive", then "active" again) until "ended".
 */
export async function watchWhep(room, { token, base = "", participant, quality, maxWidth, maxHeight, onstatus } = {}) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("audio", { direction: "recvonly" });
  negotiateDependencyDescriptor(pc.addTransceiver("video", { direction: "recvonly" }));
  const stream = new MediaStream();
  pc.ontrack = (e) => stream.addTrack(e.track);
  await pc.setLocalDescription(await pc.createOffer());
  await waitForCandidates(pc);
  // Simulcast: what this viewer wants (docs/simulcast.md); the server
  // sends the best layer that fits it and the viewer's bandwidth.
  const params = new URLSearchParams();
  if (participant) params.set("participant", participant);
  if (quality) params.set("quality", quality);
  if (maxWidth) params.set("max_width", String(maxWidth));
  if (maxHeight) params.set("max_height", String(maxHeight));
  const q = params.size ? `?${params}` : "";
  let res;
  try {
    res = await postSdp(`${base}/whep/${encodeURIComponent(room)}${q}`, pc.localDescription.sdp, token);
  } catch (e) {
    pc.close();
    throw e;
  }
  await pc.setRemoteDescription({ type: "answer", sdp: res.answer });
  const events = onstatus ? await whepEvents(res.links, onstatus, { token }).catch(() => null) : null;
  return {
    pc,
    stream,
    location: res.location,
    events,
    async stop() {
      events?.close();
      pc.close();
      await fetch(res.location, { method: "DELETE", headers: token ? { Authorization: `Bearer ${token}` } : {} }).catch(() => {});
    },
  };
}

/** Waits (briefly) for ICE gathering, so the offer carries our candidates. */
function waitForCandidates(pc, limitMs = 1000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, limitMs);
  });
}
