// carealarm care-station console: a live queue over a WebSocket, keyed by alert id and version,
// so a reconnect (fresh snapshot) or a change received twice never loses or doubles an alert.
//
// A second alarm is never silent. The console sounds when a critical (priority 1) open alert is new, or when
// its count or latest press moved on since this console last showed it: a client pressing again while still
// waiting is heard like a new alarm, and so is an alarm pressed while an earlier one of the client is in
// progress (that one is a new alert, carrying `incident`: who has the running alarm, since when).
//
// Order of the open queue (what a nurse needs): priority first. Within a priority, alarms the client raised
// again come first: a second press says "still waiting, and maybe worse" (a fall detected after a button
// press), so it goes where the next nurse looks and where ↓ then `a` lands. Within each group, longest waiting
// first (by first press: the answer clock runs from it, and a repeat must not reset anyone's place). The cost:
// a client who pressed once — and may be unable to press again — sits below one who pressed twice. It is
// bounded: that alarm keeps its red answer timer, and the server escalates every alarm on its own clock
// whatever its place on screen. An alarm pressed while the client's earlier one is in progress is a new alert
// and waits its turn by its press: someone is with that client already (the line under it says who), and a
// client nobody has answered comes first. The same order on every console: it depends on the alerts alone,
// not on what one console has seen.
"use strict";

const ANSWER_TARGET_S = 60;   // UK TEC Quality: 97.5% of alarm calls answered within 60 s
const ANSWER_LIMIT_S = 180;   // ... and 99% within 180 s
const STALE_AFTER_MS = 40000; // the server pings every 15 s; silence this long means the link is dead
// Windows change rarely and are not news (they never quiet an alarm): a poll is enough.
const WINDOWS_POLL_MS = 30000;

const state = {
  alerts: new Map(),   // id -> alert view
  seen: new Map(),     // id -> {count, last} as last shown: new or raised again since means a sound
  windows: [],         // running and planned maintenance windows
  targets: null,       // clients and their devices, for the window form (loaded when it is opened)
  selected: null,
  clockOffset: 0,      // server time minus browser time
  ws: null,
  lastMessage: 0,
  retryMs: 500,
  user: null,
};

const $ = (id) => document.getElementById(id);
// English text is its own key; i18n.js holds the Dutch (and falls back to the key).
const T = (key, vars) => (window.carealarmI18n ? window.carealarmI18n.t(key, vars) : key);

// The one API wrapper (api.js): JSON in and out; a refusal rejects with its status and detail.
const { api } = window.carealarmApi;
// Closing an alarm (outcome + note dialog, undo, conflicts in the page) and the handover (closing.js).
const closing = window.carealarmClosing;
// Sounds, reminders, mute, desktop notifications and screen-reader announcements (sound.js).
const sound = window.carealarmSound;

function showLogin(message) {
  $("console").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  sound.stop();
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
  sound.start();
  connect();
  watchCalls();
}

// The watchdog's verdict on the whole alarm chain (broker, gateway, database, monitor, the probe alarm):
// a red banner naming each problem, on every console, for as long as the chain is broken.
function showHealth(health) {
  state.health = health;
  const banner = $("chain-banner");
  const broken = health && health.status !== "ok";
  banner.hidden = !broken;
  document.body.classList.toggle("chain-broken", Boolean(broken));
  const list = $("chain-problems");
  list.replaceChildren();
  if (!broken) return;
  for (const p of health.problems) {
    const li = document.createElement("li");
    const key = "problem:" + p.code;
    const translated = T(key);
    li.textContent = translated === key ? p.text : translated;
    li.dataset.code = p.code;
    list.appendChild(li);
  }
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
  ws.onopen = () => { state.retryMs = 500; clearTimeout(state.offlineTimer); };
  ws.onmessage = (ev) => {
    state.lastMessage = Date.now();
    const msg = JSON.parse(ev.data);
    if (msg.server_ms) state.clockOffset = msg.server_ms - Date.now();
    if (msg.type === "snapshot") {
      // Connected again: the console's own "cut off" banner goes (the server's health follows at once).
      if (state.health && state.health.problems.some((p) => p.code === "console_offline")) {
        showHealth({ status: "ok", problems: [] });
      }
      // A snapshot is the whole truth: it replaces what we had (this is how a reconnect catches up).
      const fresh = new Map();
      for (const a of msg.alerts) fresh.set(a.id, a);
      state.alerts = fresh;
      setConn(true, T("live"));
      render();
      loadWindows();
    } else if (msg.type === "alert") {
      upsert(msg.alert);
      render();
    } else if (msg.type === "health") {
      showHealth(msg.health);
    }
  };
  ws.onclose = (ev) => {
    state.ws = null;
    // Still cut off after a few seconds: this console cannot be told of alarms — say so as loudly as a
    // broken chain (the server's own health replaces this when the connection is back).
    clearTimeout(state.offlineTimer);
    state.offlineTimer = setTimeout(() => {
      if (state.ws && state.ws.readyState === WebSocket.OPEN) return;
      showHealth({ status: "broken", problems: [{ code: "console_offline",
        text: "this console has lost its connection to the care-station server: new alarms are not shown here" }] });
    }, 3000);
    if (ev.code === 4401) { showLogin("Your session has ended; please sign in again."); return; }
    setConn(false, T("connection lost — reconnecting…"));
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 5000);
  };
}

function upsert(alert) {
  const known = state.alerts.get(alert.id);
  if (known && known.version > alert.version) return; // an older copy arrived late
  closing.changed(alert);
  if (alert.state === "resolved") state.alerts.delete(alert.id);
  else state.alerts.set(alert.id, alert);
}

// New to this console, or raised again since it last showed the alert (a repeat press counts on it).
function isNews(a) {
  const before = state.seen.get(a.id);
  return !before || a.count > before.count || a.last_event_ms > before.last;
}

const raisedAgain = (a) => (a.kind === "alarm" && a.count > 1 ? 1 : 0);
// See the top of this file for why this order.
const openOrder = (a, b) => a.priority - b.priority || raisedAgain(b) - raisedAgain(a) || a.opened_ms - b.opened_ms || a.id - b.id;
const progressOrder = (a, b) => a.priority - b.priority || a.opened_ms - b.opened_ms || a.id - b.id;

function render() {
  const all = [...state.alerts.values()];
  const open = all.filter((a) => a.state === "open").sort(openOrder);
  const progress = all.filter((a) => a.state === "acknowledged").sort(progressOrder);
  const news = new Set(all.filter(isNews).map((a) => a.id));
  fill($("open-body"), open, false, news);
  fill($("progress-body"), progress, true, news);
  $("open-empty").hidden = open.length > 0;
  $("progress-empty").hidden = progress.length > 0;
  $("count-open").textContent = open.length;
  $("count-progress").textContent = progress.length;
  document.title = open.length ? `(${open.length}) carealarm console` : "carealarm console";
  // Sound, reminders, screen readers and the desktop (sound.js): what is open, what is news, seen before.
  sound.queue(open, open.filter((a) => news.has(a.id)), (a) => state.seen.has(a.id), state.clockOffset);
  for (const a of all) state.seen.set(a.id, { count: a.count, last: a.last_event_ms });
  if (state.selected !== null && !state.alerts.has(state.selected)) state.selected = null;
  highlight();
  tick();
}

function fill(tbody, alerts, inProgress, news) {
  const rows = new Map([...tbody.children].map((tr) => [Number(tr.dataset.id), tr]));
  const wanted = new Set(alerts.map((a) => a.id));
  for (const [id, tr] of rows) if (!wanted.has(id)) tr.remove();
  alerts.forEach((a, i) => {
    let tr = rows.get(a.id);
    if (!tr || tr.dataset.version !== String(a.version)) {
      const fresh = row(a, inProgress);
      if (news.has(a.id) && !inProgress) fresh.classList.add("flash");
      if (tr) tr.replaceWith(fresh);
      tr = fresh;
    }
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
}

// Rows carry translated words and window badges: build them again (no sound: nothing is news).
function rebuildRows() {
  $("open-body").replaceChildren();
  $("progress-body").replaceChildren();
  render();
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

function hhmm(ms) {
  const lang = window.carealarmI18n ? window.carealarmI18n.lang : "en";
  return new Intl.DateTimeFormat(lang === "nl" ? "nl-NL" : "en-GB", { hour: "2-digit", minute: "2-digit" })
    .format(new Date(ms));
}

function dayTime(ms) {
  const lang = window.carealarmI18n ? window.carealarmI18n.lang : "en";
  return new Intl.DateTimeFormat(lang === "nl" ? "nl-NL" : "en-GB", {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
  }).format(new Date(ms));
}

// The alarm a later press arrived during: who has it and since when, fresh from the queue when we can.
function incidentLine(a) {
  const running = state.alerts.get(a.incident.id) || null;
  const by = (running && running.acknowledged_by) || a.incident.acknowledged_by || "—";
  const since = (running && running.acknowledged_ms) || a.incident.acknowledged_ms || a.incident.opened_ms;
  const vars = { name: by, time: hhmm(since) };
  const text = running && running.state === "acknowledged"
    ? T("Client already being helped — alarm in progress by {name} since {time}", vars)
    : T("Pressed while an earlier alarm was in progress (by {name} since {time}); that alarm is closed now", vars);
  const div = span("incident", text);
  div.dataset.incident = a.incident.id;
  return div;
}

function windowFor(a) {
  const now = Date.now() + state.clockOffset;
  return state.windows.find((w) => w.starts_ms <= now && now < w.ends_ms
    && (w.device ? a.device && a.device.id === w.device.id : w.client.id === a.client.id)) || null;
}

function row(a, inProgress) {
  const tr = document.createElement("tr");
  tr.dataset.id = a.id;
  tr.dataset.version = a.version;
  tr.tabIndex = 0;
  tr.className = "alert-row";
  if (raisedAgain(a)) tr.classList.add("raised-again");
  if (a.incident) tr.classList.add("in-incident");
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
  const what = cell(tr, span("detail", a.detail));
  if (a.count > 1) {
    what.append(span("count", T("×{count} · last {time}", { count: a.count, time: hhmm(a.last_event_ms) })));
  }
  if (a.level > 0) what.append(" ", span("escalated", `${T("escalated · level")} ${a.level}`));
  if (a.incident) what.append(incidentLine(a));
  const quiet = windowFor(a);
  if (quiet) what.append(span("window-badge", T("Window: {reason}", { reason: quiet.reason })));
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
  note.addEventListener("click", (ev) => { ev.stopPropagation(); closing.note(a); });
  tools.append(note);
  actions.append(tools, " ");
  if (!inProgress) {
    const b = document.createElement("button");
    b.className = "primary";
    b.textContent = T("Acknowledge");
    b.addEventListener("click", (ev) => { ev.stopPropagation(); acknowledge(a.id); });
    actions.append(b);
  } else {
    const b = document.createElement("button");
    b.className = "resolve-btn";
    b.textContent = T("Close alarm…");
    b.addEventListener("click", (ev) => { ev.stopPropagation(); closing.resolve(a); });
    actions.append(b);
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
    if (ringing.length) sound.call();
  };
  ws.onclose = (ev) => { if (ev.code !== 4401 && !$("console").hidden) setTimeout(watchCalls, 2000); };
}

async function acknowledge(id) {
  try { upsert(await api("POST", `/api/alerts/${id}/acknowledge`)); render(); }
  catch (e) { if (e.status === 401) showLogin(); else closing.problem(`${T("Could not acknowledge")}: ${e.message}`); }
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
  // A window that ended leaves the list, one that began is running: no need to wait for the next poll.
  if (state.windows.some((w) => w.ends_ms <= now || (w.state === "upcoming" && w.starts_ms <= now))) {
    setWindows(state.windows.filter((w) => w.ends_ms > now)
      .map((w) => (w.starts_ms <= now ? { ...w, state: "active" } : w)));
  }
}

// -- maintenance windows ----------------------------------------------------------------------------------

async function loadWindows() {
  let page;
  try { page = await api("GET", "/api/windows"); }
  catch (e) { if (e.status === 401) showLogin(); return; }
  setWindows(page.items);
}

// Alert rows show the window their client or device is in: rebuild them only when the windows changed, so a
// poll never resets an outcome a nurse is choosing.
function setWindows(windows) {
  const key = (ws) => ws.map((w) => `${w.id}:${w.state}:${w.ends_ms}:${w.suppressed}`).join(",");
  const changed = key(windows) !== key(state.windows);
  state.windows = windows;
  renderWindows();
  if (changed) rebuildRows();
}

function renderWindows() {
  const body = $("windows-body");
  body.replaceChildren(...state.windows.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.window = w.id;
    tr.className = `window-row w-${w.state}`;
    cell(tr, span("client", w.client.name));
    cell(tr, span("", w.device ? `${w.device.label || T(w.device.kind)} (${w.device.id})` : T("Whole client")));
    cell(tr, span("", w.reason));
    const from = cell(tr, span("", dayTime(w.starts_ms)));
    if (w.state === "upcoming") from.append(" ", span("muted", T("planned")));
    cell(tr, span("", dayTime(w.ends_ms)));
    cell(tr, span("", String(w.suppressed)));
    const end = document.createElement("button");
    end.type = "button";
    end.textContent = T("End");
    end.addEventListener("click", () => endWindow(w.id));
    cell(tr, end);
    return tr;
  }));
  $("windows-empty").hidden = state.windows.length > 0;
}

async function endWindow(id) {
  if (!window.confirm(T("End this maintenance window now? Alerts come through again from now on."))) return;
  try { await api("POST", `/api/windows/${id}/end`); }
  catch (e) { if (e.status === 401) return showLogin(); closing.problem(`${T("Could not end the window")}: ${e.message}`); }
  await loadWindows();
}

async function loadTargets() {
  if (state.targets) return;
  try { state.targets = (await api("GET", "/api/windows/targets")).clients; }
  catch (e) { $("w-error").textContent = e.message; return; }
  fillTargets();
}

// The form's choices (built again in a new language, keeping what was chosen).
function fillTargets() {
  const sel = $("w-client");
  const chosen = sel.value;
  const none = document.createElement("option");
  none.value = ""; none.textContent = T("Choose a client");
  sel.replaceChildren(none, ...(state.targets || []).map((c) => {
    const o = document.createElement("option"); o.value = c.id; o.textContent = c.name; return o;
  }));
  sel.value = chosen;
  fillDevices();
}

function fillDevices() {
  const client = (state.targets || []).find((c) => String(c.id) === $("w-client").value);
  const chosen = $("w-device").value;
  const whole = document.createElement("option");
  whole.value = ""; whole.textContent = T("Whole client");
  $("w-device").replaceChildren(whole, ...(client ? client.devices : []).map((d) => {
    const o = document.createElement("option");
    o.value = d.id; o.textContent = `${d.label || T(d.kind)} (${d.id})`; return o;
  }));
  $("w-device").value = client && client.devices.some((d) => d.id === chosen) ? chosen : "";
}

// datetime-local gives the browser's local time without a zone: Date reads it as local, as the nurse meant.
const localMs = (value) => (value ? new Date(value).getTime() : null);

async function addWindow(ev) {
  ev.preventDefault();
  const device = $("w-device").value;
  const body = { reason: $("w-reason").value, ends_ms: localMs($("w-until").value) };
  if (device) body.device_id = device; else body.client_id = Number($("w-client").value);
  const from = localMs($("w-from").value);
  if (from !== null) body.starts_ms = from;
  try {
    await api("POST", "/api/windows", body);
  } catch (e) {
    if (e.status === 401) return showLogin();
    $("w-error").textContent = `${T("Could not add the window")}: ${e.message}`;
    return;
  }
  $("w-error").textContent = "";
  $("window-form").reset();
  fillDevices();
  await loadWindows();
}

$("window-add").addEventListener("toggle", () => { if ($("window-add").open) loadTargets(); });
$("w-client").addEventListener("change", fillDevices);
$("window-form").addEventListener("submit", addWindow);
setInterval(() => { if (!$("console").hidden) loadWindows(); }, WINDOWS_POLL_MS);

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
    const a = state.alerts.get(state.selected);
    if (a && a.state === "acknowledged") { ev.preventDefault(); closing.resolve(a); }
  }
});

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sound.unlock(); // signing in is a touch of the page: the browser lets the alarm sound from now on
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
  state.windows = [];
  showLogin();
});

setInterval(tick, 1000);
closing.init({ shown: (a) => { upsert(a); render(); }, signedOut: () => showLogin() });

if (window.carealarmI18n) {
  window.carealarmI18n.onChange(() => {
    rebuildRows();
    renderWindows();
    fillTargets();
    if (state.ws) setConn(true, T("live"));
  });
}

(async () => {
  try { showConsole(await api("GET", "/api/me")); }
  catch (_) { showLogin(); }
})();
