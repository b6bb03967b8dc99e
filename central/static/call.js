// carealarm: the nurse's video call page. /static/call.html?client=ID calls a client (or looks in, where
// consent is recorded); ?call=ID joins a call, e.g. takes an incoming call from a client.
// Media goes peer to peer; central only relays the signalling (docs/video-calls.md).
"use strict";

// The words are English; the one translation table (i18n.js) holds the Dutch.
const t = window.carealarmI18n.t;
// How each call ended, by the end reason the server sends.
const REASONS = { declined: "The client declined the call.", no_answer: "No answer.", connect_failed: "The video connection could not be set up.", hangup_nurse: "You hung up.", hangup_client: "The client hung up.", peer_lost_nurse: "This page lost its connection.", peer_lost_client: "The client's device is no longer reachable.", device_unreachable: "The client's device could not be reached.", server_shutdown: "The care-station server stopped.", signalling_lost: "The connection to the care station was lost.", refused: "Another nurse has taken this call, or it is over." };

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PING_MS = 3000;           // central ends a call after 10 s of silence from a peer
const STATS_MS = 2000;          // quality sample period
const RECONNECT_FOR_MS = 7000;  // central waits 8 s for a lost signalling socket

// What the tests and the benchmark read; nothing else depends on it.
const probe = (window.callProbe = { state: "idle", endReason: null, clickMs: null, firstFrameMs: null,
                                    framesDecoded: 0, fps: 0, lossPct: 0, rttMs: null, callId: null });

// The decoded frames of the client's video right now (the tests sample it every second).
window.callFrames = async () => {
  if (!pc) return 0;
  let frames = 0;
  (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0; });
  return frames;
};

let call = null, ws = null, pc = null, localStream = null, iceServers = [], ended = false;
let pingTimer = null, statsTimer = null, clockTimer = null, disconnectTimer = null, lastStats = null;

function setStatus(text, isEnd = false) {
  $("status").textContent = text;
  $("status").classList.toggle("ended", isEnd);
}

// The one API wrapper (api.js); signed out, the nurse goes to the console to sign in.
async function api(method, path, body) {
  try {
    return await window.carealarmApi.api(method, path, body);
  } catch (err) {
    if (err.status === 401) location.href = "/";
    throw err;
  }
}

async function ensureMedia() {
  if (localStream) return localStream;
  try {
    localStream = await navigator.mediaDevices.getUserMedia({
      video: { width: 320, height: 240, frameRate: 20 }, audio: true,
    });
    $("local").srcObject = localStream;
  } catch (err) {
    setStatus(t("No camera or microphone: check the browser's permissions."), true);
    throw err;
  }
  return localStream;
}

// -- starting ---------------------------------------------------------------------------------------

async function init() {
  document.title = `carealarm — ${t("video call")}`;
  $("title").textContent = t("video call");
  $("call-btn").textContent = t("Video call");
  $("monitor-btn").textContent = t("Look in (monitoring)");
  $("take-btn").textContent = t("Take the call");
  $("mute-btn").textContent = t("Mute");
  $("camera-btn").textContent = t("Camera off");
  $("hangup-btn").textContent = t("Hang up");
  setStatus(t("Loading…"));
  $("call-btn").addEventListener("click", () => start("video"));
  $("monitor-btn").addEventListener("click", () => start("monitoring"));
  $("take-btn").addEventListener("click", take);
  $("hangup-btn").addEventListener("click", hangup);
  $("mute-btn").addEventListener("click", () => toggle("audio", $("mute-btn"), t("Mute"), t("Unmute")));
  $("camera-btn").addEventListener("click", () => toggle("video", $("camera-btn"), t("Camera off"), t("Camera on")));
  $("remote").addEventListener("playing", () => noteFirstFrame(), { once: true });
  try {
    if (params.get("client")) {
      const info = await api("GET", `/api/clients/${encodeURIComponent(params.get("client"))}/video`);
      $("who").textContent = info.client_name;
      $("call-btn").hidden = false;
      $("monitor-btn").hidden = !info.consent.monitoring_allowed;
      setStatus(t("Ready to call."));
      ensureMedia().catch(() => {});
    } else if (params.get("call")) {
      const active = await api("GET", "/api/calls/active");
      call = active.find((c) => c.id === params.get("call"));
      if (!call) { setStatus(t(REASONS.no_answer), true); return; }
      $("who").textContent = call.client_name;
      if (call.direction === "inbound" && call.state === "ringing") {
        $("take-btn").hidden = false;
        setStatus(t("Incoming call from the client."));
        ensureMedia().catch(() => {});
      } else {
        await ensureMedia();
        connect(call.id, false);
      }
    }
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function start(kind) {
  probe.clickMs = performance.now();
  $("call-btn").disabled = $("monitor-btn").disabled = true;
  try {
    if (kind === "video") await ensureMedia();
    call = await api("POST", "/api/calls", { client_id: Number(params.get("client")), kind });
    connect(call.id, false);
  } catch (err) {
    setStatus(err.message, true);
    $("call-btn").disabled = $("monitor-btn").disabled = false;
  }
}

async function take() {
  probe.clickMs = performance.now();
  $("take-btn").disabled = true;
  try { await ensureMedia(); } catch (err) { $("take-btn").disabled = false; return; }
  connect(call.id, true);
}

// -- signalling -------------------------------------------------------------------------------------

function connect(callId, taking, since = null) {
  probe.callId = callId;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/api/calls/${callId}/nurse`);
  const socket = ws;
  socket.onopen = () => {
    if (taking) send({ type: "take" });
    clearInterval(pingTimer);
    pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
  };
  socket.onmessage = (ev) => handle(JSON.parse(ev.data));
  socket.onclose = (ev) => {
    if (socket !== ws || ended) return;
    if (ev.code === 4401 || ev.code === 4404) { finish("refused"); return; }  // trying again cannot help
    // A network change: come back into the same call within central's grace period.
    const first = since ?? Date.now();
    if (Date.now() - first > RECONNECT_FOR_MS) { finish("signalling_lost"); return; }
    setStatus(t("Lost the connection to the care station; retrying…"));
    setTimeout(() => connect(callId, false, first), 700);
  };
}

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

async function handle(msg) {
  if (msg.type === "hello") iceServers = msg.ice_servers || [];
  if (msg.type === "hello" || msg.type === "state") {
    call = msg.call;
    render();
    if (msg.reconnect) closePeer();
    if (call.state === "accepted" && !pc) await startPeer();
  } else if (msg.type === "answer") {
    await pc?.setRemoteDescription({ type: "answer", sdp: msg.sdp });
  } else if (msg.type === "candidate" && pc && msg.candidate) {
    await pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex });
  } else if (msg.type === "ended") {
    call = msg.call;
    finish(call.end_reason);
  } else if (msg.type === "error") {
    setStatus(msg.detail, !call || call.state === "ringing");
  }
}

function render() {
  probe.state = call.state;
  $("who").textContent = call.client_name;
  $("take-btn").hidden = true;
  $("call-btn").hidden = $("monitor-btn").hidden = true;
  $("hangup-btn").disabled = false;
  const monitoring = call.kind === "monitoring";
  $("monitoring-badge").hidden = !monitoring;
  $("monitoring-badge").textContent = t("MONITORING — the client's device shows that you are looking in");
  $("local").hidden = monitoring;
  $("mute-btn").disabled = $("camera-btn").disabled = monitoring;
  const texts = { ringing: t("Ringing…"), accepted: call.restarts ? t("The connection was interrupted; reconnecting…") : t("Connecting…"), connected: t("Connected.") };
  setStatus(texts[call.state] || "");
  if (call.state === "connected" && !clockTimer) {
    const t0 = Date.now();
    clockTimer = setInterval(() => {
      const s = Math.floor((Date.now() - t0) / 1000);
      $("timer").textContent = `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
    }, 500);
  }
}

// -- WebRTC -----------------------------------------------------------------------------------------

async function startPeer() {
  const peer = (pc = new RTCPeerConnection({ iceServers }));
  if (call.kind === "monitoring") {
    peer.addTransceiver("video", { direction: "recvonly" });
    peer.addTransceiver("audio", { direction: "recvonly" });
  } else {
    for (const track of localStream.getTracks()) peer.addTrack(track, localStream);
  }
  const remote = new MediaStream();
  $("remote").srcObject = remote;
  peer.ontrack = (ev) => {
    remote.addTrack(ev.track);
    if (ev.track.kind === "video" && "requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      $("remote").requestVideoFrameCallback(() => noteFirstFrame());
    }
  };
  peer.onicecandidate = (ev) => {
    const c = ev.candidate;
    send({ type: "candidate", candidate: c ? c.candidate : "", sdpMid: c?.sdpMid ?? null, sdpMLineIndex: c?.sdpMLineIndex ?? null });
  };
  peer.onconnectionstatechange = () => {
    if (peer !== pc) return;
    clearTimeout(disconnectTimer);
    if (peer.connectionState === "connected") {
      send({ type: "media", up: true });
      clearInterval(statsTimer);
      statsTimer = setInterval(sampleStats, STATS_MS);
    } else if (peer.connectionState === "failed") {
      send({ type: "reconnect" });
    } else if (peer.connectionState === "disconnected") {
      // Often a short blip; if it lasts, renegotiate on fresh connections (a network change).
      disconnectTimer = setTimeout(() => peer === pc && send({ type: "reconnect" }), 4000);
    }
  };
  await peer.setLocalDescription(await peer.createOffer());
  send({ type: "offer", sdp: peer.localDescription.sdp });
}

function noteFirstFrame() {
  if (probe.firstFrameMs === null && pc) probe.firstFrameMs = performance.now();
}

function closePeer() {
  clearInterval(statsTimer);
  if (pc) { pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = null; pc.close(); }
  pc = null;
  lastStats = null;
}

async function sampleStats() {
  if (!pc) return;
  const report = await pc.getStats();
  let video = null, pair = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") video = s;
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
  });
  if (!video) return;
  const now = performance.now();
  const sample = { t: now, frames: video.framesDecoded || 0, lost: video.packetsLost || 0, received: video.packetsReceived || 0 };
  probe.framesDecoded = sample.frames;
  if (lastStats) {
    const dt = (now - lastStats.t) / 1000;
    const lost = sample.lost - lastStats.lost, got = sample.received - lastStats.received;
    probe.fps = Math.round(((sample.frames - lastStats.frames) / dt) * 10) / 10;
    probe.lossPct = lost + got > 0 ? Math.round((1000 * lost) / (lost + got)) / 10 : 0;
    probe.rttMs = pair && pair.currentRoundTripTime !== undefined ? Math.round(pair.currentRoundTripTime * 1000) : null;
    send({ type: "stats", fps: probe.fps, loss_pct: probe.lossPct, rtt_ms: probe.rttMs });
    const level = probe.lossPct > 5 || probe.fps < 5 ? "poor" : probe.lossPct > 1 || probe.fps < 12 ? "fair" : "good";
    const q = $("quality");
    q.className = `quality q-${level}`;
    q.textContent = t("{fps} fps · loss {loss} % · RTT {rtt}", { fps: probe.fps, loss: probe.lossPct, rtt: probe.rttMs === null ? "–" : `${probe.rttMs} ms` });
    q.title = t(level);
  }
  lastStats = sample;
}

// -- controls and the end ------------------------------------------------------------------------------

function toggle(kind, button, onLabel, offLabel) {
  if (!localStream) return;
  const tracks = kind === "audio" ? localStream.getAudioTracks() : localStream.getVideoTracks();
  const off = button.getAttribute("aria-pressed") !== "true";
  for (const track of tracks) track.enabled = !off;
  button.setAttribute("aria-pressed", String(off));
  button.textContent = off ? offLabel : onLabel;
}

function hangup() {
  if (ws && ws.readyState === WebSocket.OPEN) send({ type: "hangup" });
  else finish("hangup_nurse");
}

function finish(reason) {
  if (ended) return;
  ended = true;
  probe.state = "ended";
  probe.endReason = reason;
  clearInterval(pingTimer);
  clearInterval(clockTimer);
  closePeer();
  if (localStream) for (const track of localStream.getTracks()) track.stop();
  if (ws) ws.close();
  $("hangup-btn").disabled = $("mute-btn").disabled = $("camera-btn").disabled = true;
  $("monitoring-badge").hidden = true;
  setStatus(`${t("Call ended")}: ${(REASONS[reason] ? t(REASONS[reason]) : reason)}`, true);
}

init();
