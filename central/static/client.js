// The client page: /static/client.html?id=<client id>. Who and where, devices, schedule, contacts, notes and
// one timeline. Opening a record no alert of yours concerns asks for a reason (the API answers 428); the
// reason goes in the X-Access-Reason header, so it stays out of URLs. Data is only ever set as textContent.
"use strict";

// The words are English; the one translation table (i18n.js) holds the Dutch. The codes the API sends
// (device kinds, relations, alert kinds, states, outcomes …) are named here, then translated.
const i18n = window.carealarmI18n;
const t = i18n.t;
const { ApiError } = window.carealarmApi;
const KINDS = { alarm_button: "Alarm pendant", dispenser: "Medication dispenser", video: "Video device" };
const RELATIONS = { informal_carer: "informal carer", family: "family", neighbour: "neighbour", gp: "GP", pharmacy: "pharmacy", other: "other" };
// The record's fields shown under "Who and where" (the edit form, client-edit.js, has one input each).
const DETAILS = [["phone", "Phone"], ["birth_date", "Date of birth"], ["language", "Language"], ["gp", "Family doctor (GP)"], ["pharmacy", "Pharmacy"], ["conditions", "Conditions"], ["allergies", "Allergies"], ["mobility", "Mobility"], ["pets", "Pets"]];
const ALERT_KINDS = { alarm: "Alarm", missed_dose: "Missed dose", offline: "Device offline", battery_low: "Battery low", stock_low: "Dispenser nearly empty", visit_overdue: "Visit overdue", dispense_error: "Dispenser error", tamper: "Dispenser opened or tampered with", power: "Power lost", device_fault: "Device fault" };
const STATES = { open: "open", acknowledged: "in progress", resolved: "resolved" };
const OUTCOMES = { false_alarm: "false alarm", reassured: "reassured", contact_attended: "contact attended", district_nurse_attended: "district nurse attended", ambulance: "ambulance", fire_service: "fire service", no_response_visit: "no response, visit", talked_to_client: "talked to the client", nurse_sent: "nurse sent", emergency_services: "emergency services", cancelled_by_client: "cancelled by the client", other: "other", back_online: "back online", power_restored: "power restored", battery_ok: "battery ok", dose_taken_late: "dose taken late", nurse_arrived: "nurse arrived" };
const DOSE_STATES = { taken: "taken", missed: "missed", taken_late: "taken late" };
const CALL_KINDS = { video: "Video call", monitoring: "Video monitoring" };
const DIRECTIONS = { outbound: "by the care station", inbound: "by the client" };
const VISIT_STATES = { underway: "on the way", arrived: "arrived", cancelled: "cancelled" };
const NONE = "—";
// A code's English name, translated; an unknown code as it is.
const named = (names, code) => (names[code] ? t(names[code]) : code);

const params = new URLSearchParams(location.search);
const clientId = /^\d{1,15}$/.test(params.get("id") || "") ? params.get("id") : null;
let reason = null; // kept in memory only: never in the URL or storage
let nextBefore = null;
let lastRecord = null;
let timelineItems = [];

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function applyStatic() {
  document.documentElement.lang = i18n.lang;
  i18n.apply(document);
  for (const b of document.querySelectorAll("[data-lang]")) {
    b.setAttribute("aria-pressed", String(b.dataset.lang === i18n.lang));
  }
  document.title = `carealarm — ${t("client record")}`;
}

function when(ms) {
  if (!ms) return t("never");
  return new Intl.DateTimeFormat(i18n.lang === "nl" ? "nl-NL" : "en-GB", {
    day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
  }).format(new Date(ms));
}

// The one API wrapper (api.js), with the reason for opening the record when one was given.
function api(path, options = {}) {
  const headers = reason ? { "X-Access-Reason": encodeURIComponent(reason) } : {};
  return window.carealarmApi.api(options.method || "GET", path, options.body, { headers });
}


function show(section) {
  for (const id of ["finder", "reason", "record"]) $(id).hidden = id !== section;
}

function message(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function handle(err) {
  if (!(err instanceof ApiError)) return message(t("Something went wrong: ") + err.message);
  if (err.status === 401) {
    show(null);
    return message(t("You are not signed in. Sign in on the console first."));
  }
  if (err.status === 428) {
    show("reason");
    $("reason-text").focus();
    return message("");
  }
  if (err.status === 403) {
    show(null);
    return message(t("You may not open this record: ") + err.message);
  }
  if (err.status === 404) {
    show(null);
    return message(t("This client does not exist."));
  }
  message(t("Something went wrong: ") + err.message);
}

// -- finder -------------------------------------------------------------------------------------------

function renderClientList(items) {
  const list = $("client-list");
  list.replaceChildren();
  for (const c of items) {
    const li = el("li");
    const a = el("a", c.name);
    a.href = `/static/client.html?id=${encodeURIComponent(c.id)}`;
    li.append(a, el("span", ` — ${c.address}`, "muted"), el("span", ` (${c.district})`, "muted"));
    list.append(li);
  }
  $("client-list-empty").hidden = items.length > 0;
}

async function loadFinder() {
  show("finder");
  try {
    renderClientList((await api("/api/clients?limit=200")).items);
  } catch (err) {
    handle(err);
  }
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = $("search").value.trim();
  try {
    // A POST: the name searched for never appears in a URL.
    const result = q ? await api("/api/clients/search", { method: "POST", body: { q, limit: 50 } })
      : await api("/api/clients?limit=200");
    renderClientList(result.items);
  } catch (err) {
    handle(err);
  }
});

// -- record -------------------------------------------------------------------------------------------

function renderRecord(r) {
  $("c-name").textContent = r.name;
  $("c-address").textContent = r.address || NONE;
  $("c-district").textContent = r.district || NONE;
  $("c-access").textContent = r.access_notes || NONE;
  $("c-care").textContent = r.care_notes || NONE;
  renderDetails(r);

  const alerts = $("alerts");
  alerts.replaceChildren();
  for (const a of r.open_alerts) {
    const li = el("li", `${named(ALERT_KINDS, a.kind)} — ${named(STATES, a.state)}`);
    li.append(el("span", ` · ${when(a.opened_ms)}`, "muted"));
    alerts.append(li);
  }
  if (!r.open_alerts.length) alerts.append(el("li", t("No open alerts."), "muted"));

  const devices = $("devices");
  devices.replaceChildren();
  for (const d of r.devices) {
    const tr = el("tr");
    tr.append(el("td", d.label || named(KINDS, d.kind)));
    const status = el("td");
    status.append(el("span", t(d.status), `badge s-${d.status}`));
    const battery = el("td", d.battery === null ? NONE : `${d.battery}%`,
      d.battery !== null && d.battery < 20 ? "batt-low" : "");
    tr.append(status, battery, el("td", when(d.last_seen_ms)));
    devices.append(tr);
  }

  const schedule = $("schedule");
  schedule.replaceChildren();
  for (const dose of r.schedule) schedule.append(el("li", `${dose.at} — ${dose.label || dose.dose_id}`));
  if (!r.schedule.length) schedule.append(el("li", t("No medication schedule."), "muted"));

  renderContacts(r.contacts);
}

// A phone number as a link for the desk phone (digits and + only in the tel: URL).
function telLink(phone, text) {
  const a = el("a", text || phone);
  a.href = `tel:${phone.replace(/[^0-9+]/g, "")}`;
  return a;
}

// "1936-11-05" as "5 November 1936" (noon UTC, so no time zone moves the day).
function birthDate(iso) {
  return new Intl.DateTimeFormat(i18n.lang === "nl" ? "nl-NL" : "en-GB", {
    day: "numeric", month: "long", year: "numeric", timeZone: "UTC",
  }).format(new Date(`${iso}T12:00:00Z`));
}

function renderDetails(r) {
  const list = $("c-details");
  list.replaceChildren();
  for (const [name, label] of DETAILS) {
    const value = el("dd", null, "pre");
    value.dataset.field = name;
    if (name === "phone" && r.phone) value.append(telLink(r.phone));
    else if (name === "birth_date" && r.birth_date) value.textContent = birthDate(r.birth_date);
    else value.textContent = r[name] || NONE;
    list.append(el("dt", t(label)), value);
  }
  // The code itself is never in the record: only whether one is set; "Reveal code" asks for it.
  $("c-key-safe").textContent = r.key_safe_set ? t("set") : t("not set");
  $("key-reveal").hidden = !r.key_safe_set;
  $("key-error").textContent = "";
}

function renderContacts(items) {
  const contacts = $("contacts");
  contacts.replaceChildren();
  for (const c of items) {
    const li = el("li");
    li.dataset.contactId = c.id;
    li.append(el("strong", c.name), el("span", named(RELATIONS, c.relation), "rel"));
    if (c.keyholder) li.append(el("span", t("Keyholder"), "badge keyholder"));
    li.append(el("br"));
    if (c.tel) li.append(telLink(c.phone, `${t("Call")} ${c.phone}`));
    if (c.mailto) {
      const a = el("a", `${t("E-mail")} ${c.email}`);
      a.href = c.mailto;
      li.append(a);
    }
    if (c.reachable) li.append(el("div", `${t("Reachable")}: ${c.reachable}`, "muted small"));
    if (c.notify_missed_dose) li.append(el("div", t("Gets missed-dose messages"), "muted small"));
    contacts.append(li);
  }
  if (!items.length) contacts.append(el("li", t("No contact persons."), "muted"));
}

function describe(e) {
  switch (e.type) {
    case "alert": {
      const parts = [named(STATES, e.state)];
      if (e.outcome) parts.push(named(OUTCOMES, e.outcome));
      parts.push(e.answer_ms === null ? t("not answered") : t("answered in {s} s", { s: Math.round(e.answer_ms / 1000) }));
      if (e.acknowledged_by) parts.push(`${t("by")} ${e.acknowledged_by}`);
      return [named(ALERT_KINDS, e.kind), parts.join(" · "), e.alarm ? "t-alarm" : "t-alert"];
    }
    case "alert_note": return [t("Note on an alert"), `${e.text}${e.by ? ` — ${e.by}` : ""}`, "t-note"];
    case "client_note": return [t("Care note"), `${e.text} — ${e.by}`, "t-note"];
    case "dose": return [t("Medication: {id}", { id: e.dose_id }), named(DOSE_STATES, e.state), `t-dose-${e.state}`];
    case "dose_report": return [t("Dispenser reports: {id}", { id: e.dose_id }), named(DOSE_STATES, e.state), `t-dose-${e.state}`];
    case "call": {
      const outcome = t("{outcome}, {d} s talked", { outcome: e.outcome || t("ended"), d: e.duration_s });
      const by = e.by ? ` · ${t("by")} ${e.by}` : "";
      return [named(CALL_KINDS, e.kind), `${named(DIRECTIONS, e.direction)} · ${outcome}${by}`, "t-call"];
    }
    case "visit": return [t("Visit: {who}", { who: e.visitor }), named(VISIT_STATES, e.state), "t-visit"];
    case "window": {
      const parts = [e.device_id ? t("device {d}", { d: e.device_label || e.device_id }) : t("whole client"), t("until {t}", { t: when(e.ends_ms) })];
      if (e.running) parts.push(t("running"));
      if (e.by) parts.push(`${t("by")} ${e.by}`);
      parts.push(t("device-state and dose alerts held back; alarms always come through"));
      return [t("Maintenance window: {reason}", { reason: e.reason }), parts.join(" · "), "t-window"];
    }
    case "window_end": {
      const scope = e.device_id ? t("device {d}", { d: e.device_label || e.device_id }) : t("whole client");
      return [t("Maintenance window over: {reason}", { reason: e.reason }), `${scope} · ${e.early ? (e.ended_by ? t("ended early by {by}", { by: e.ended_by }) : t("ended early")) : t("as planned")}`, "t-window"];
    }
    case "suppression": {
      const parts = [e.detail];
      if (e.device_id) parts.push(t("device {d}", { d: e.device_id }));
      parts.push(e.window_reason);
      return [t("Held back by a maintenance window: {kind}", { kind: named(ALERT_KINDS, e.kind) }), parts.join(" · "), "t-suppressed"];
    }
    default: return [e.type, "", ""];
  }
}

function renderTimeline() {
  const list = $("timeline");
  list.replaceChildren();
  for (const e of timelineItems) {
    const [what, detail, cls] = describe(e);
    const li = el("li", null, cls);
    li.dataset.type = e.type;
    const body = el("div");
    body.append(el("div", what, "what"), el("div", detail, "detail"));
    li.append(el("div", when(e.at_ms), "when"), body);
    list.append(li);
  }
  $("timeline-empty").hidden = timelineItems.length > 0;
  $("more").hidden = !nextBefore;
}

async function loadTimeline(more) {
  const before = more && nextBefore ? `&before=${encodeURIComponent(nextBefore)}` : "";
  const page = await api(`/api/clients/${clientId}/timeline?limit=30${before}`);
  timelineItems = more ? timelineItems.concat(page.items) : page.items;
  nextBefore = page.next_before;
  renderTimeline();
}

async function loadRecord() {
  try {
    lastRecord = await api(`/api/clients/${clientId}`);
    message("");
    show("record");
    renderRecord(lastRecord);
    await loadTimeline(false);
  } catch (err) {
    handle(err);
  }
}

$("reason-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("reason-text").value.trim();
  if (text.length < 5) {
    $("reason-error").textContent = t("Please give a reason of at least 5 characters.");
    return;
  }
  $("reason-error").textContent = "";
  reason = text;
  loadRecord();
});

$("note-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("note-text").value.trim();
  if (!text) return;
  try {
    await api(`/api/clients/${clientId}/notes`, { method: "POST", body: { text } });
    $("note-text").value = "";
    $("note-error").textContent = "";
    await loadTimeline(false);
  } catch (err) {
    $("note-error").textContent = t("The note was not saved: ") + err.message;
  }
});

$("more").addEventListener("click", () => loadTimeline(true).catch(handle));

for (const b of document.querySelectorAll("[data-lang]")) {
  b.addEventListener("click", () => i18n.setLang(b.dataset.lang));
}
i18n.onChange(() => {
  applyStatic();
  if (lastRecord) {
    renderRecord(lastRecord);
    renderTimeline();
  }
});

async function start() {
  applyStatic();
  try {
    const me = await api("/api/me");
    $("who-name").textContent = me.display_name;
  } catch (err) {
    return handle(err);
  }
  if (clientId) await loadRecord();
  else await loadFinder();
}

start();
