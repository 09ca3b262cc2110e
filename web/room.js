// The conference room page: /room/{room}?name=...
import { PrismRoom, captureUnavailableReason } from "/static/prism.js";

const roomName = decodeURIComponent(location.pathname.split("/")[2] || "");
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
$("title").textContent = `Room ${roomName}`;
document.title = `${roomName} · Prism`;

const grid = $("grid");
/** tile key (participantId or participantId:screen) → element */
const tiles = new Map();
let room;
let camTrack, micTrack, screenTrack;

function showError(text) {
  $("error").textContent = text || "";
}

function tile(key, label, local = false) {
  let el = tiles.get(key);
  if (!el) {
    el = document.createElement("div");
    el.className = "tile";
    el.dataset.key = key;
    el.dataset.participant = key.split(":")[0];
    el.innerHTML = `<video autoplay playsinline ${local ? "muted" : ""}></video>
      <span class="name"></span><span class="badges"></span><span class="stats"></span>
      <span class="notice" role="status" hidden></span>`;
    grid.appendChild(el);
    tiles.set(key, el);
  }
  el.querySelector(".name").textContent = label;
  return el;
}

function removeTile(key) {
  const el = tiles.get(key);
  if (el) {
    el.stopObserving?.();
    el.remove();
    tiles.delete(key);
  }
}

function setBadges(participantId) {
  const p = room.participants.get(participantId);
  const el = tiles.get(participantId);
  if (!p || !el) return;
  const badges = [];
  for (const t of p.tracks.values()) {
    if (t.muted && t.source === "microphone") badges.push("mic off");
    if (t.muted && t.source === "camera") badges.push("camera off");
  }
  el.querySelector(".badges").innerHTML = badges.map((b) => `<span class="badge" data-badge="${b}">${b}</span>`).join("");
  el.dataset.muted = badges.join(",");
}

/** The tile showing a remote video track, if any. */
function tileOfTrack(trackId) {
  return [...tiles.values()].find((t) => t.dataset.trackId === trackId && !t.dataset.self);
}

/** The server stopped (or resumed) a track to fit this viewer's bandwidth. */
function setPaused(trackId, paused) {
  const el = tileOfTrack(trackId);
  if (!el) return;
  const notice = el.querySelector(".notice");
  notice.textContent = paused ? "paused: low bandwidth" : "";
  notice.hidden = !paused;
  if (paused) el.dataset.paused = "bandwidth";
  else delete el.dataset.paused;
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [sel, kind, current] of [[$("camera-select"), "videoinput", camTrack], [$("mic-select"), "audioinput", micTrack]]) {
    sel.innerHTML = "";
    for (const d of devices.filter((d) => d.kind === kind)) {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || kind;
      if (current && current.getSettings().deviceId === d.deviceId) o.selected = true;
      sel.appendChild(o);
    }
  }
}

async function startMedia() {
  const insecure = captureUnavailableReason();
  if (insecure) {
    // Join anyway: watching and listening need no secure context.
    showError(insecure);
    for (const id of ["camera-select", "mic-select", "mute-mic", "mute-cam", "share"]) $(id).disabled = true;
    return;
  }
  try {
    // 1280×720 when the camera can, sent as three simulcast layers
    // (320×180, 640×360, 1280×720), each viewer getting the one that fits
    // its tile and its bandwidth (prism.js, simulcastLayers); ?simulcast=0
    // sends one encoding.
    // ?video=640x360 asks for another size (a slow machine, a test).
    const [vw, vh] = (params.get("video") || "1280x720").split("x").map(Number);
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: vw || 1280 }, height: { ideal: vh || 720 } } });
    camTrack = stream.getVideoTracks()[0];
    micTrack = stream.getAudioTracks()[0];
    const self = tile(room.participantId || "self", `${room.name} (you)`, true);
    self.dataset.self = "true";
    self.querySelector("video").srcObject = new MediaStream([camTrack]);
    await room.publish(micTrack, "microphone", stream);
    // ?svc=L3T3_KEY sends the camera as VP9 SVC instead, and
    // ?svc=L3T3_KEY&codec=av1 as AV1 SVC (docs/web-client.md).
    await room.publish(camTrack, "camera", stream, {
      simulcast: params.get("simulcast") !== "0",
      svc: params.get("svc"),
      codec: (params.get("codec") || "VP9").toUpperCase(),
    });
    await listDevices();
  } catch (e) {
    if (e.name === "NotAllowedError") {
      showError("Camera and microphone access was denied. You can still see and hear the others; allow access in the browser and reload to be seen.");
    } else if (e.name === "NotFoundError") {
      showError("No camera or microphone was found. You can still see and hear the others.");
    } else {
      showError(`Could not start camera or microphone: ${e.message}`);
    }
  }
}

async function switchDevice(kind, deviceId) {
  const old = kind === "video" ? camTrack : micTrack;
  if (!old) return;
  const stream = await navigator.mediaDevices.getUserMedia(kind === "video" ? { video: { deviceId: { exact: deviceId } } } : { audio: { deviceId: { exact: deviceId } } });
  const track = stream.getTracks()[0];
  const entry = room.local.find((l) => l.track === old);
  if (entry && entry.transceiver) await entry.transceiver.sender.replaceTrack(track);
  if (entry) entry.track = track;
  old.stop();
  if (kind === "video") {
    camTrack = track;
    const self = [...tiles.values()].find((t) => t.dataset.self);
    if (self) self.querySelector("video").srcObject = new MediaStream([track]);
  } else {
    micTrack = track;
  }
}

function wire() {
  room.addEventListener("state", (e) => {
    const s = e.detail.state;
    $("state").textContent = { connecting: "connecting…", connected: "connected", reconnecting: "connection lost, reconnecting…", closed: "left the room" }[s] || s;
  });
  room.addEventListener("joined", () => {
    // Keep the self tile keyed by our current participant id.
    const self = [...tiles.values()].find((t) => t.dataset.self);
    if (self) {
      tiles.delete(self.dataset.key);
      self.dataset.key = self.dataset.participant = room.participantId;
      tiles.set(room.participantId, self);
    }
  });
  room.addEventListener("participant-joined", (e) => {
    const p = e.detail.participant;
    tile(p.id, p.name || p.identity);
    setBadges(p.id);
  });
  room.addEventListener("participant-left", (e) => {
    const id = e.detail.participantId;
    for (const key of [...tiles.keys()]) if (key === id || key.startsWith(`${id}:`)) removeTile(key);
  });
  room.addEventListener("track", (e) => {
    const { participantId, source, track, kind } = e.detail;
    const p = room.participants.get(participantId);
    const label = p ? p.name || p.identity : participantId;
    if (kind === "video") {
      const key = source === "screen" ? `${participantId}:screen` : participantId;
      const el = tile(key, source === "screen" ? `${label} (screen)` : label);
      const video = el.querySelector("video");
      if (el.dataset.trackId !== e.detail.trackId || !el.stopObserving) {
        // Ask the server for what this tile shows: its size, nothing while
        // hidden or scrolled away.
        el.stopObserving?.();
        el.stopObserving = room.observeVideo(e.detail.trackId, video);
      }
      el.dataset.trackId = e.detail.trackId;
      video.srcObject = new MediaStream([track]);
      setPaused(e.detail.trackId, room.paused.has(e.detail.trackId));
    } else {
      let audio = document.querySelector(`audio[data-track="${e.detail.trackId}"]`);
      if (!audio) {
        audio = document.createElement("audio");
        audio.autoplay = true;
        audio.dataset.track = e.detail.trackId;
        document.body.appendChild(audio);
      }
      audio.srcObject = new MediaStream([track]);
    }
    setBadges(participantId);
  });
  room.addEventListener("track-removed", (e) => {
    const { participantId, trackId } = e.detail;
    const screen = tiles.get(`${participantId}:screen`);
    if (screen && screen.dataset.trackId === trackId) removeTile(`${participantId}:screen`);
    document.querySelector(`audio[data-track="${trackId}"]`)?.remove();
  });
  room.addEventListener("track-paused", (e) => setPaused(e.detail.trackId, true));
  room.addEventListener("track-resumed", (e) => setPaused(e.detail.trackId, false));
  for (const ev of ["track-muted", "track-unmuted"]) room.addEventListener(ev, (e) => setBadges(e.detail.participantId));
  room.addEventListener("error", (e) => showError(`${e.detail.message} (${e.detail.code})`));
  room.addEventListener("draining", () => showError("The server is restarting; you will be reconnected."));
}

async function statsLoop() {
  if (!room || !document.body.classList.contains("show-stats")) return;
  const stats = await room.inboundStats();
  for (const [pid, p] of room.participants) {
    const lines = [];
    for (const [trackId, t] of p.tracks) {
      const s = stats.get(trackId);
      if (!s) continue;
      const kbps = (s.bitrate / 1000).toFixed(0);
      const lossPct = s.packetsReceived ? ((100 * s.packetsLost) / (s.packetsLost + s.packetsReceived)).toFixed(1) : "0.0";
      lines.push(t.kind === "video" ? `video ${kbps} kb/s ${s.width || "?"}x${s.height || "?"} ${s.fps || 0} fps loss ${lossPct}%` : `audio ${kbps} kb/s loss ${lossPct}%`);
    }
    const el = tiles.get(pid);
    if (el) el.querySelector(".stats").textContent = lines.join("\n");
  }
}
setInterval(statsLoop, 1000);

function toggle(button, on, [offText, onText]) {
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? onText : offText;
}

async function start(name) {
  room = new PrismRoom({ room: roomName, name, token: params.get("token") || undefined });
  window.prismRoom = room; // for debugging and tests
  wire();
  $("controls").hidden = false;
  try {
    await room.join();
  } catch (e) {
    showError(`Could not join: ${e.message}`);
    return;
  }
  // ?publish=none: join to watch and listen only.
  if (params.get("publish") !== "none") await startMedia();
  $("mute-mic").onclick = () => {
    const on = $("mute-mic").getAttribute("aria-pressed") !== "true";
    if (micTrack) room.setMuted(micTrack, on);
    toggle($("mute-mic"), on, ["Mute microphone", "Unmute microphone"]);
  };
  $("mute-cam").onclick = () => {
    const on = $("mute-cam").getAttribute("aria-pressed") !== "true";
    if (camTrack) room.setMuted(camTrack, on);
    toggle($("mute-cam"), on, ["Stop camera", "Start camera"]);
  };
  $("share").onclick = async () => {
    if (screenTrack) {
      await room.unpublish(screenTrack);
      screenTrack.stop();
      screenTrack = null;
      removeTile("self:screen");
      toggle($("share"), false, ["Share screen", "Stop sharing"]);
      return;
    }
    try {
      const s = await navigator.mediaDevices.getDisplayMedia({ video: true });
      screenTrack = s.getVideoTracks()[0];
      screenTrack.onended = () => $("share").click();
      const el = tile("self:screen", "your screen", true);
      el.querySelector("video").srcObject = s;
      await room.publish(screenTrack, "screen", s);
      toggle($("share"), true, ["Share screen", "Stop sharing"]);
    } catch (e) {
      showError(`Screen sharing failed: ${e.message}`);
    }
  };
  $("stats").onclick = () => {
    const on = document.body.classList.toggle("show-stats");
    $("stats").setAttribute("aria-pressed", String(on));
  };
  $("camera-select").onchange = (e) => switchDevice("video", e.target.value);
  $("mic-select").onchange = (e) => switchDevice("audio", e.target.value);
  $("leave").onclick = () => {
    room.leave();
    for (const t of [camTrack, micTrack, screenTrack]) t && t.stop();
    location.href = "/";
  };
}

const preset = params.get("name") || localStorage.getItem("prism.name");
if (params.get("name")) {
  start(params.get("name"));
} else {
  $("prejoin").hidden = false;
  $("name").value = preset || "";
  $("prejoin").onsubmit = (e) => {
    e.preventDefault();
    localStorage.setItem("prism.name", $("name").value);
    $("prejoin").hidden = true;
    start($("name").value);
  };
}
