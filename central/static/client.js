// The client page: /static/client.html?id=<client id>. Who and where, devices, schedule, contacts, notes and
// one timeline. Opening a record no alert of yours concerns asks for a reason (the API answers 428); the
// reason goes in the X-Access-Reason header, so it stays out of URLs. Data is only ever set as textContent.
"use strict";

const STRINGS = {
  en: {
    title: "client record", backToConsole: "← Console", findClient: "Find a client", search: "Search",
    searchPlaceholder: "Part of the client's name", noClients: "No clients found.",
    reasonTitle: "Why do you open this record?",
    reasonExplain: "No alert of yours concerns this client. Your reason is recorded in the audit log.",
    reasonLabel: "Reason (at least 5 characters)", reasonSubmit: "Open the record", cancel: "Cancel",
    reasonTooShort: "Please give a reason of at least 5 characters.",
    whoWhere: "Who and where", district: "District", accessNotes: "Access to the home",
    careNotes: "Care notes", none: "—", openAlerts: "Open alerts", noOpenAlerts: "No open alerts.",
    devices: "Devices", device: "Device", status: "Status", battery: "Battery", lastSeen: "Last seen",
    never: "never", schedule: "Medication schedule", noSchedule: "No medication schedule.",
    contacts: "Contact persons", noContacts: "No contact persons.", call: "Call", mail: "E-mail",
    addNote: "Care note", notePlaceholder: "What happened, what was agreed…", save: "Add note",
    noteFailed: "The note was not saved: ", timeline: "Timeline", timelineEmpty: "Nothing on the timeline yet.",
    more: "Older entries", notSignedIn: "You are not signed in. Sign in on the console first.",
    forbidden: "You may not open this record: ", notFound: "This client does not exist.",
    failed: "Something went wrong: ", by: "by",
    online: "online", offline: "offline", unknown: "unknown",
    kinds: { alarm_button: "Alarm pendant", dispenser: "Medication dispenser", video: "Video device" },
    relations: { informal_carer: "informal carer", gp: "GP", pharmacy: "pharmacy", family: "family",
      other: "other" },
    alertKinds: { alarm: "Alarm", missed_dose: "Missed dose", offline: "Device offline",
      battery_low: "Battery low", stock_low: "Dispenser nearly empty", visit_overdue: "Visit overdue",
      dispense_error: "Dispenser error", tamper: "Dispenser opened or tampered with", power: "Power lost",
      device_fault: "Device fault" },
    states: { open: "open", acknowledged: "in progress", resolved: "resolved" },
    outcomes: { false_alarm: "false alarm", talked_to_client: "talked to the client", nurse_sent: "nurse sent",
      emergency_services: "emergency services", cancelled_by_client: "cancelled by the client", other: "other",
      back_online: "back online", power_restored: "power restored", battery_ok: "battery ok",
      dose_taken_late: "dose taken late", nurse_arrived: "nurse arrived" },
    answeredIn: (s) => `answered in ${s} s`, notAnswered: "not answered",
    dose: (id) => `Medication: ${id}`, doseReport: (id) => `Dispenser reports: ${id}`,
    doseStates: { taken: "taken", missed: "missed", taken_late: "taken late" },
    callKinds: { video: "Video call", monitoring: "Video monitoring" },
    directions: { outbound: "by the care station", inbound: "by the client" },
    callOutcome: (o, d) => `${o || "ended"}, ${d} s talked`,
    alertNote: "Note on an alert", clientNote: "Care note",
    visit: (who) => `Visit: ${who}`, visitStates: { underway: "on the way", arrived: "arrived",
      cancelled: "cancelled" },
    window: (reason) => `Maintenance window: ${reason}`, windowEnd: (reason) => `Maintenance window over: ${reason}`,
    wholeClient: "whole client", onDevice: (d) => `device ${d}`, until: (t) => `until ${t}`, running: "running",
    endedEarly: (by) => (by ? `ended early by ${by}` : "ended early"), asPlanned: "as planned",
    suppressed: (kind) => `Held back by a maintenance window: ${kind}`,
    alarmsThrough: "device-state and dose alerts held back; alarms always come through",
  },
  nl: {
    title: "cliëntdossier", backToConsole: "← Meldkamer", findClient: "Cliënt zoeken", search: "Zoeken",
    searchPlaceholder: "Deel van de naam van de cliënt", noClients: "Geen cliënten gevonden.",
    reasonTitle: "Waarom opent u dit dossier?",
    reasonExplain: "Geen melding van u betreft deze cliënt. Uw reden wordt vastgelegd in het auditlogboek.",
    reasonLabel: "Reden (minstens 5 tekens)", reasonSubmit: "Dossier openen", cancel: "Annuleren",
    reasonTooShort: "Geef een reden van minstens 5 tekens.",
    whoWhere: "Wie en waar", district: "Wijk", accessNotes: "Toegang tot de woning",
    careNotes: "Zorgnotities", none: "—", openAlerts: "Open meldingen", noOpenAlerts: "Geen open meldingen.",
    devices: "Apparatuur", device: "Apparaat", status: "Status", battery: "Batterij", lastSeen: "Laatst gezien",
    never: "nooit", schedule: "Medicatieschema", noSchedule: "Geen medicatieschema.",
    contacts: "Contactpersonen", noContacts: "Geen contactpersonen.", call: "Bellen", mail: "E-mailen",
    addNote: "Zorgnotitie", notePlaceholder: "Wat er gebeurde, wat er is afgesproken…", save: "Notitie toevoegen",
    noteFailed: "De notitie is niet opgeslagen: ", timeline: "Tijdlijn", timelineEmpty: "Nog niets op de tijdlijn.",
    more: "Oudere items", notSignedIn: "U bent niet aangemeld. Meld u eerst aan op de meldkamer.",
    forbidden: "U mag dit dossier niet openen: ", notFound: "Deze cliënt bestaat niet.",
    failed: "Er ging iets mis: ", by: "door",
    online: "online", offline: "offline", unknown: "onbekend",
    kinds: { alarm_button: "Alarmhanger", dispenser: "Medicijndispenser", video: "Beeldbelapparaat" },
    relations: { informal_carer: "mantelzorger", gp: "huisarts", pharmacy: "apotheek", family: "familie",
      other: "overig" },
    alertKinds: { alarm: "Alarm", missed_dose: "Medicatie niet ingenomen", offline: "Apparaat offline",
      battery_low: "Batterij bijna leeg", stock_low: "Dispenser bijna leeg", visit_overdue: "Bezoek te laat",
      dispense_error: "Storing dispenser", tamper: "Dispenser geopend of gemanipuleerd", power: "Stroom uitgevallen",
      device_fault: "Apparaatstoring" },
    states: { open: "open", acknowledged: "in behandeling", resolved: "afgehandeld" },
    outcomes: { false_alarm: "loos alarm", talked_to_client: "cliënt gesproken", nurse_sent: "zorgverlener gestuurd",
      emergency_services: "hulpdiensten (112)", cancelled_by_client: "door cliënt geannuleerd", other: "overig",
      back_online: "weer online", power_restored: "stroom terug", battery_ok: "batterij in orde",
      dose_taken_late: "medicatie te laat ingenomen", nurse_arrived: "zorgverlener aangekomen" },
    answeredIn: (s) => `beantwoord in ${s} s`, notAnswered: "niet beantwoord",
    dose: (id) => `Medicatie: ${id}`, doseReport: (id) => `Dispenser meldt: ${id}`,
    doseStates: { taken: "ingenomen", missed: "niet ingenomen", taken_late: "te laat ingenomen" },
    callKinds: { video: "Beeldbellen", monitoring: "Beeldmonitoring" },
    directions: { outbound: "door de meldkamer", inbound: "door de cliënt" },
    callOutcome: (o, d) => `${o || "beëindigd"}, ${d} s gesproken`,
    alertNote: "Notitie bij een melding", clientNote: "Zorgnotitie",
    visit: (who) => `Bezoek: ${who}`, visitStates: { underway: "onderweg", arrived: "aangekomen",
      cancelled: "geannuleerd" },
    window: (reason) => `Meldingspauze: ${reason}`, windowEnd: (reason) => `Meldingspauze voorbij: ${reason}`,
    wholeClient: "hele cliënt", onDevice: (d) => `apparaat ${d}`, until: (t) => `tot ${t}`, running: "loopt",
    endedEarly: (by) => (by ? `eerder beëindigd door ${by}` : "eerder beëindigd"), asPlanned: "zoals gepland",
    suppressed: (kind) => `Tegengehouden door een meldingspauze: ${kind}`,
    alarmsThrough: "apparaat- en medicatiemeldingen tegengehouden; alarmen komen altijd door",
  },
};

function pickLang() {
  const saved = localStorage.getItem("lang");
  if (saved && STRINGS[saved]) return saved;
  return (navigator.language || "en").toLowerCase().startsWith("nl") ? "nl" : "en";
}

let lang = pickLang();
let T = STRINGS[lang];
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
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = T[node.dataset.i18n];
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = T[node.dataset.i18nPlaceholder];
  }
  for (const b of document.querySelectorAll("[data-lang]")) {
    b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
  }
  document.title = `carealarm — ${T.title}`;
}

function when(ms) {
  if (!ms) return T.never;
  return new Intl.DateTimeFormat(lang === "nl" ? "nl-NL" : "en-GB", {
    day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
  }).format(new Date(ms));
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (reason) headers["X-Access-Reason"] = encodeURIComponent(reason);
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : response.statusText;
    throw new ApiError(response.status, detail);
  }
  return body;
}

function show(section) {
  for (const id of ["finder", "reason", "record"]) $(id).hidden = id !== section;
}

function message(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function handle(err) {
  if (!(err instanceof ApiError)) return message(T.failed + err.message);
  if (err.status === 401) {
    show(null);
    return message(T.notSignedIn);
  }
  if (err.status === 428) {
    show("reason");
    $("reason-text").focus();
    return message("");
  }
  if (err.status === 403) {
    show(null);
    return message(T.forbidden + err.message);
  }
  if (err.status === 404) {
    show(null);
    return message(T.notFound);
  }
  message(T.failed + err.message);
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
    const result = q ? await api("/api/clients/search", { method: "POST", body: JSON.stringify({ q, limit: 50 }) })
      : await api("/api/clients?limit=200");
    renderClientList(result.items);
  } catch (err) {
    handle(err);
  }
});

// -- record -------------------------------------------------------------------------------------------

function renderRecord(r) {
  $("c-name").textContent = r.name;
  $("c-address").textContent = r.address || T.none;
  $("c-district").textContent = r.district || T.none;
  $("c-access").textContent = r.access_notes || T.none;
  $("c-care").textContent = r.care_notes || T.none;

  const alerts = $("alerts");
  alerts.replaceChildren();
  for (const a of r.open_alerts) {
    const li = el("li", `${T.alertKinds[a.kind] || a.kind} — ${T.states[a.state] || a.state}`);
    li.append(el("span", ` · ${when(a.opened_ms)}`, "muted"));
    alerts.append(li);
  }
  if (!r.open_alerts.length) alerts.append(el("li", T.noOpenAlerts, "muted"));

  const devices = $("devices");
  devices.replaceChildren();
  for (const d of r.devices) {
    const tr = el("tr");
    tr.append(el("td", d.label || T.kinds[d.kind] || d.kind));
    const status = el("td");
    status.append(el("span", T[d.status] || d.status, `badge s-${d.status}`));
    const battery = el("td", d.battery === null ? T.none : `${d.battery}%`,
      d.battery !== null && d.battery < 20 ? "batt-low" : "");
    tr.append(status, battery, el("td", when(d.last_seen_ms)));
    devices.append(tr);
  }

  const schedule = $("schedule");
  schedule.replaceChildren();
  for (const dose of r.schedule) schedule.append(el("li", `${dose.at} — ${dose.label || dose.dose_id}`));
  if (!r.schedule.length) schedule.append(el("li", T.noSchedule, "muted"));

  const contacts = $("contacts");
  contacts.replaceChildren();
  for (const c of r.contacts) {
    const li = el("li");
    li.append(el("strong", c.name), el("span", T.relations[c.relation] || c.relation, "rel"), el("br"));
    if (c.tel) {
      const a = el("a", `${T.call} ${c.phone}`);
      a.href = c.tel;
      li.append(a);
    }
    if (c.mailto) {
      const a = el("a", `${T.mail} ${c.email}`);
      a.href = c.mailto;
      li.append(a);
    }
    contacts.append(li);
  }
  if (!r.contacts.length) contacts.append(el("li", T.noContacts, "muted"));
}

function describe(e) {
  switch (e.type) {
    case "alert": {
      const parts = [T.states[e.state] || e.state];
      if (e.outcome) parts.push(T.outcomes[e.outcome] || e.outcome);
      parts.push(e.answer_ms === null ? T.notAnswered : T.answeredIn(Math.round(e.answer_ms / 1000)));
      if (e.acknowledged_by) parts.push(`${T.by} ${e.acknowledged_by}`);
      return [T.alertKinds[e.kind] || e.kind, parts.join(" · "), e.alarm ? "t-alarm" : "t-alert"];
    }
    case "alert_note": return [T.alertNote, `${e.text}${e.by ? ` — ${e.by}` : ""}`, "t-note"];
    case "client_note": return [T.clientNote, `${e.text} — ${e.by}`, "t-note"];
    case "dose": return [T.dose(e.dose_id), T.doseStates[e.state] || e.state, `t-dose-${e.state}`];
    case "dose_report": return [T.doseReport(e.dose_id), T.doseStates[e.state] || e.state, `t-dose-${e.state}`];
    case "call": {
      const outcome = T.callOutcome(e.outcome, e.duration_s);
      const by = e.by ? ` · ${T.by} ${e.by}` : "";
      return [T.callKinds[e.kind] || e.kind, `${T.directions[e.direction] || e.direction} · ${outcome}${by}`, "t-call"];
    }
    case "visit": return [T.visit(e.visitor), T.visitStates[e.state] || e.state, "t-visit"];
    case "window": {
      const parts = [e.device_id ? T.onDevice(e.device_label || e.device_id) : T.wholeClient, T.until(when(e.ends_ms))];
      if (e.running) parts.push(T.running);
      if (e.by) parts.push(`${T.by} ${e.by}`);
      parts.push(T.alarmsThrough);
      return [T.window(e.reason), parts.join(" · "), "t-window"];
    }
    case "window_end": {
      const scope = e.device_id ? T.onDevice(e.device_label || e.device_id) : T.wholeClient;
      return [T.windowEnd(e.reason), `${scope} · ${e.early ? T.endedEarly(e.ended_by) : T.asPlanned}`, "t-window"];
    }
    case "suppression": {
      const parts = [e.detail];
      if (e.device_id) parts.push(T.onDevice(e.device_id));
      parts.push(e.window_reason);
      return [T.suppressed(T.alertKinds[e.kind] || e.kind), parts.join(" · "), "t-suppressed"];
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
    $("reason-error").textContent = T.reasonTooShort;
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
    await api(`/api/clients/${clientId}/notes`, { method: "POST", body: JSON.stringify({ text }) });
    $("note-text").value = "";
    $("note-error").textContent = "";
    await loadTimeline(false);
  } catch (err) {
    $("note-error").textContent = T.noteFailed + err.message;
  }
});

$("more").addEventListener("click", () => loadTimeline(true).catch(handle));

for (const b of document.querySelectorAll("[data-lang]")) {
  b.addEventListener("click", () => {
    lang = b.dataset.lang;
    T = STRINGS[lang];
    localStorage.setItem("lang", lang);
    applyStatic();
    if (lastRecord) {
      renderRecord(lastRecord);
      renderTimeline();
    }
  });
}

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
