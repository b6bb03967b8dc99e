// carealarm care-station console: a live queue over a WebSocket, keyed by alert id and version,
// so a reconnect (fresh snapshot) or a change received twice never loses or doubles an alert.
"use strict";

const ANSWER_TARGET_S = 60;   // UK TEC Quality: 97.5% of alarm calls answered within 60 s
const ANSWER_LIMIT_S = 180;   // ... and 99% within 180 s
const STALE_AFTER_MS = 40000; // the server pings every 15 s; silence this long means the link is dead

const state = {
  alerts: new Map(),   // id -> alert view
  seen: new Set(),     // ids shown before (a sound plays once, for new critical alarms only)
  selected: null,
  clockOffset: 0,      // server time minus browser time
  ws: null,
  lastMessage: 0,
  retryMs: 500,
  user: null,
};

const $ = (id) => document.getElementById(id);
// English text is its own key; i18n.js holds the Dutch (and falls back to the key).
const T = (key) => (window.carealarmI18n ? window.carealarmI18n.t(key) : key);

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    credentials: "same-origin",
  });
  let data = null;
  try { data = await res.json(); } catch (_) { /* empty body */ }
  if (!res.ok) {
    const err = new Error((data && data.detail) ? String(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

function showLogin(message) {
  $("console").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setConn(false, "signed out");
  $("username").focus();
}

function showConsole(user) {
  state.user = user;
  $("login").hidden = true;
  $("console").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = `${user.display_name} (${user.role.replace("_", " ")})`;
  connect();
  watchCalls();
}

function setConn(up, text) {
  const el = $("conn");
  el.className = "conn " + (up ? "conn-up" : "conn-down");
  el.textContent = text;
}

function connect() {
  if (state.ws) return;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/api/live`);
  state.ws = ws;
  ws.onopen = () => { state.retryMs = 500; };
  ws.onmessage = (ev) => {
    state.lastMessage = Date.now();
    const msg = JSON.parse(ev.data);
    if (msg.server_ms) state.clockOffset = msg.server_ms - Date.now();
    if (msg.type === "snapshot") {
      // A snapshot is the whole truth: it replaces what we had (this is how a reconnect catches up).
      const fresh = new Map();
      for (const a of msg.alerts) fresh.set(a.id, a);
      state.alerts = fresh;
      setConn(true, T("live"));
      render(msg.alerts.filter((a) => !state.seen.has(a.id)));
    } else if (msg.type === "alert") {
      const isNew = upsert(msg.alert);
      render(isNew ? [msg.alert] : []);
    }
  };
  ws.onclose = (ev) => {
    state.ws = null;
    if (ev.code === 4401) { showLogin("Your session has ended; please sign in again."); return; }
    setConn(false, T("connection lost — reconnecting…"));
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 5000);
  };
}

function upsert(alert) {
  const known = state.alerts.get(alert.id);
  if (known && known.version > alert.version) return false; // an older copy arrived late
  if (alert.state === "resolved") state.alerts.delete(alert.id);
  else state.alerts.set(alert.id, alert);
  return !known && !state.seen.has(alert.id);
}

function render(newAlerts) {
  const all = [...state.alerts.values()].sort((a, b) => a.priority - b.priority || a.opened_ms - b.opened_ms || a.id - b.id);
  const open = all.filter((a) => a.state === "open");
  const progress = all.filter((a) => a.state === "acknowledged");
  fill($("open-body"), open, false);
  fill($("progress-body"), progress, true);
  $("open-empty").hidden = open.length > 0;
  $("progress-empty").hidden = progress.length > 0;
  $("count-open").textContent = open.length;
  $("count-progress").textContent = progress.length;
  document.title = open.length ? `(${open.length}) carealarm console` : "carealarm console";
  if (newAlerts.some((a) => a.priority === 1 && a.state === "open")) beep();
  for (const a of newAlerts) state.seen.add(a.id);
  if (state.selected !== null && !state.alerts.has(state.selected)) state.selected = null;
  highlight();
  tick();
}

function fill(tbody, alerts, inProgress) {
  const rows = new Map([...tbody.children].map((tr) => [Number(tr.dataset.id), tr]));
  const wanted = new Set(alerts.map((a) => a.id));
  for (const [id, tr] of rows) if (!wanted.has(id)) tr.remove();
  alerts.forEach((a, i) => {
    let tr = rows.get(a.id);
    if (!tr || tr.dataset.version !== String(a.version)) {
      const fresh = row(a, inProgress);
      if (!tr && !state.seen.has(a.id)) fresh.classList.add("flash");
      if (tr) tr.replaceWith(fresh);
      tr = fresh;
    }
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
}

function cell(tr, ...children) {
  const td = document.createElement("td");
  for (const c of children) td.append(c);
  tr.append(td);
  return td;
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

const PRIORITY = { 1: "CRITICAL", 2: "HIGH", 3: "NORMAL", 4: "LOW" };  // translated when shown

function row(a, inProgress) {
  const tr = document.createElement("tr");
  tr.dataset.id = a.id;
  tr.dataset.version = a.version;
  tr.tabIndex = 0;
  tr.className = "alert-row";
  tr.addEventListener("click", () => { state.selected = a.id; highlight(); });
  cell(tr, span(`prio prio-${a.priority}`, T(PRIORITY[a.priority] || String(a.priority))));
  const timer = span("timer", "");
  timer.dataset.opened = a.opened_ms;
  if (inProgress) timer.dataset.answered = a.acknowledged_ms;
  cell(tr, timer);
  const who = cell(tr, span("client", a.client.name));
  who.append(document.createElement("br"), span("muted", a.client.address || ""));
  const dev = a.device ? `${a.device.label || a.device.kind}` : "—";
  const devCell = cell(tr, span("", dev));
  if (a.device) devCell.append(document.createElement("br"), span("muted", a.device.id));
  const what = cell(tr, span("", a.detail));
  if (a.count > 1) what.append(span("count", `×${a.count}`));
  if (a.level > 0) what.append(" ", span("escalated", `${T("escalated · level")} ${a.level}`));
  if (inProgress) cell(tr, span("", a.acknowledged_by || "—"));
  const actions = cell(tr);
  const tools = document.createElement("span");
  tools.className = "tools";
  tools.append(link(`/static/client.html?id=${a.client.id}`, T("Client"), "_blank"),
    link(`/static/call.html?client=${a.client.id}`, T("Video call"), "_blank"));
  const note = document.createElement("button");
  note.type = "button";
  note.className = "note-btn";
  note.textContent = T("Note");
  note.addEventListener("click", (ev) => { ev.stopPropagation(); addNote(a.id); });
  tools.append(note);
  actions.append(tools, " ");
  if (!inProgress) {
    const b = document.createElement("button");
    b.className = "primary";
    b.textContent = T("Acknowledge");
    b.addEventListener("click", (ev) => { ev.stopPropagation(); acknowledge(a.id); });
    actions.append(b);
  } else {
    const sel = document.createElement("select");
    sel.setAttribute("aria-label", "Outcome");
    for (const [v, label] of [["talked_to_client", "Talked to client"], ["nurse_sent", "Nurse sent"],
      ["emergency_services", "Emergency services called"], ["false_alarm", "False alarm"], ["other", "Other"]]) {
      const o = document.createElement("option"); o.value = v; o.textContent = T(label); sel.append(o);
    }
    const b = document.createElement("button");
    b.textContent = T("Resolve");
    b.addEventListener("click", (ev) => { ev.stopPropagation(); resolve(a.id, sel.value); });
    actions.append(sel, " ", b);
  }
  return tr;
}

function link(href, text, target) {
  const el = document.createElement("a");
  el.href = href;
  el.textContent = text;
  el.className = "tool";
  if (target) { el.target = target; el.rel = "noopener"; }
  return el;
}

// Incoming video calls from clients: any nurse on duty can take one; the first to take it gets it.
function watchCalls() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/api/calls/live`);
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type !== "calls") return;
    const ringing = msg.calls.filter((c) => c.direction === "inbound" && c.state === "ringing");
    const box = $("incoming");
    box.replaceChildren(...ringing.map((c) => {
      const div = document.createElement("div");
      div.className = "incoming-call";
      div.append(span("", `${T("Incoming video call from")} ${c.client_name} `),
        link(`/static/call.html?call=${encodeURIComponent(c.id)}`, T("Take call"), "_blank"));
      return div;
    }));
    box.hidden = ringing.length === 0;
    if (ringing.length) beep();
  };
  ws.onclose = (ev) => { if (ev.code !== 4401 && !$("console").hidden) setTimeout(watchCalls, 2000); };
}

async function addNote(id) {
  const text = window.prompt(T("Note for this alert (shown on the client's timeline):"));
  if (!text || !text.trim()) return;
  try { await api("POST", `/api/alerts/${id}/notes`, { text: text.trim() }); }
  catch (e) { if (e.status === 401) showLogin(); else alert(`${T("Could not add the note")}: ${e.message}`); }
}

async function acknowledge(id) {
  try { upsert(await api("POST", `/api/alerts/${id}/acknowledge`)); render([]); }
  catch (e) { if (e.status === 401) showLogin(); else alert(`Could not acknowledge: ${e.message}`); }
}

async function resolve(id, outcome) {
  try { upsert(await api("POST", `/api/alerts/${id}/resolve`, { outcome })); render([]); }
  catch (e) { if (e.status === 401) showLogin(); else alert(`Could not resolve: ${e.message}`); }
}

function fmt(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return s < 3600 ? `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}` : `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}`;
}

function tick() {
  const now = Date.now() + state.clockOffset;
  for (const t of document.querySelectorAll(".timer")) {
    const end = t.dataset.answered ? Number(t.dataset.answered) : now;
    const secs = (end - Number(t.dataset.opened)) / 1000;
    t.textContent = fmt(secs);
    t.className = "timer " + (secs < ANSWER_TARGET_S ? "t-ok" : secs < ANSWER_LIMIT_S ? "t-warn" : "t-bad");
  }
  if (state.ws && state.lastMessage && Date.now() - state.lastMessage > STALE_AFTER_MS) {
    setConn(false, T("connection lost — reconnecting…"));
    state.ws.close();
  }
}

function beep() {
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    for (const [start, freq] of [[0, 880], [0.25, 660], [0.5, 880]]) {
      const o = ctx.createOscillator(); const g = ctx.createGain();
      o.frequency.value = freq; o.connect(g); g.connect(ctx.destination);
      g.gain.setValueAtTime(0.2, ctx.currentTime + start);
      o.start(ctx.currentTime + start); o.stop(ctx.currentTime + start + 0.2);
    }
  } catch (_) { /* audio may be blocked until the nurse has interacted with the page */ }
}

function rowsInOrder() { return [...document.querySelectorAll("tr.alert-row")]; }

function highlight() {
  for (const tr of rowsInOrder()) tr.classList.toggle("selected", Number(tr.dataset.id) === state.selected);
}

document.addEventListener("keydown", (ev) => {
  if ($("console").hidden || ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  const rows = rowsInOrder();
  const idx = rows.findIndex((tr) => Number(tr.dataset.id) === state.selected);
  if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
    const next = rows[Math.min(rows.length - 1, Math.max(0, idx + (ev.key === "ArrowDown" ? 1 : -1)))];
    if (next) { state.selected = Number(next.dataset.id); next.focus(); highlight(); ev.preventDefault(); }
  } else if (ev.key === "a" && state.selected !== null) {
    const a = state.alerts.get(state.selected);
    if (a && a.state === "open") acknowledge(a.id);
  } else if (ev.key === "r" && state.selected !== null) {
    const tr = rows[idx];
    const sel = tr && tr.querySelector("select");
    if (sel) sel.focus();
  }
});

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const user = await api("POST", "/api/session", { username: $("username").value, password: $("password").value });
    $("password").value = "";
    showConsole(user);
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

$("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/api/session"); } catch (_) { /* already gone */ }
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  state.alerts.clear();
  showLogin();
});

setInterval(tick, 1000);

if (window.carealarmI18n) {
  window.carealarmI18n.onChange(() => {
    // Rows carry translated words: build them again in the new language.
    $("open-body").replaceChildren();
    $("progress-body").replaceChildren();
    render([]);
    if (state.ws) setConn(true, T("live"));
  });
}

(async () => {
  try { showConsole(await api("GET", "/api/me")); }
  catch (_) { showLogin(); }
})();
