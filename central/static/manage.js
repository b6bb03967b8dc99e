/* carealarm management page: clients, devices, medication schedules, duty roster, users and the devices'
 * recent rejections.
 * Text from the API only ever goes into textContent. Admin-only forms are hidden for supervisors (the API
 * refuses them anyway).
 */
(function () {
  "use strict";
  const i18n = window.carealarmI18n;
  const t = i18n.t;
  const $ = (id) => document.getElementById(id);
  const state = { user: null, tab: "clients", clients: [], users: [], schedule: null };
  const STATE_TEXT = {
    awaiting_confirmation: "sent, awaiting confirmation",
    confirmed: "confirmed by the dispenser",
    refused: "refused by the dispenser",
    failed: "failed on the dispenser",
    not_sent: "not sent: broker unreachable",
    no_dispenser: "no dispenser for this client",
    none: "never sent",
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
    return node;
  }

  function table(id, headers, rows) {
    $(id).replaceChildren(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h ? t(h) : "")))),
      el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c))))));
  }

  // The one API wrapper (api.js); through api() this page signs in again on a 401 and says any other refusal.
  const quiet = window.carealarmApi.api;
  async function api(method, url, body) {
    try {
      return await quiet(method, url, body);
    } catch (err) {
      if (err.status === 401) show("login");
      else say(err.message);
      throw err;
    }
  }

  function say(text, ok) {
    $("message").textContent = text;
    $("message").className = ok ? "ok-message" : "error";
  }

  const when = (ms) => new Date(ms).toLocaleString(i18n.lang === "nl" ? "nl-NL" : "en-GB", { dateStyle: "short", timeStyle: "short" });
  const clientName = (id) => (state.clients.find((c) => c.id === id) || { name: `#${id}` }).name;

  async function loadClients() {
    state.clients = await api("GET", "/api/manage/clients");
    table("clients-table", ["Name", "Address", "District", ""], state.clients.map((c) => [c.name, c.address, c.district,
      el("button", { type: "button", onclick: () => editClient(c) }, t("Edit"))]));
    document.querySelectorAll(".client-select").forEach((select) => {
      const keep = select.value;
      select.replaceChildren(...state.clients.map((c) => el("option", { value: c.id }, c.name)));
      if (keep) select.value = keep;
    });
  }

  function editClient(c) {
    $("client-id").value = c.id;
    $("client-name").value = c.name;
    $("client-address").value = c.address;
    $("client-district").value = c.district;
    $("client-name").focus();
  }

  async function loadDevices() {
    const devices = await api("GET", "/api/manage/devices");
    table("devices-table", ["Device id", "Client", "Kind", "Label", "Online"], devices.map((d) => [d.id, clientName(d.client_id), t(d.kind), d.label,
      d.online === null ? t("unknown") : t(d.online ? "Online" : "Offline")]));
  }

  async function loadSchedule() {
    const id = $("schedule-client").value;
    if (!id) return;
    state.schedule = await api("GET", `/api/clients/${id}/schedule`);
    drawSchedule();
  }

  function drawSchedule() {
    const s = state.schedule;
    const badge = $("schedule-state");
    badge.className = "state state-" + s.command.state;
    badge.textContent = t(STATE_TEXT[s.command.state] || s.command.state) + (s.dispenser_id ? ` (${s.dispenser_id})` : "");
    table("schedule-table", ["Dose id", "Time", "Medication", ""], s.doses.map((d, i) => [
      el("input", { value: d.dose_id, "aria-label": t("Dose id"), oninput: (e) => { d.dose_id = e.target.value; } }),
      el("input", { type: "time", value: d.at, "aria-label": t("Time"), oninput: (e) => { d.at = e.target.value; } }),
      el("input", { value: d.label || "", "aria-label": t("Medication"), oninput: (e) => { d.label = e.target.value; } }),
      el("button", { type: "button", onclick: () => { s.doses.splice(i, 1); drawSchedule(); } }, t("Delete")),
    ]));
  }

  async function sendSchedule() {
    const doses = state.schedule.doses.map((d) => ({ dose_id: d.dose_id, at: d.at, label: d.label || null }));
    state.schedule = await api("PUT", `/api/clients/${$("schedule-client").value}/schedule`, { doses });
    drawSchedule();
    say("");
  }

  async function loadRoster() {
    state.users = await api("GET", "/api/manage/users");
    $("shift-user").replaceChildren(...state.users.map((u) => el("option", { value: u.id }, u.display_name)));
    const shifts = await api("GET", "/api/manage/shifts");
    table("roster-table", ["Person", "Role", "District", "Starts", "Ends", ""], shifts.map((s) => [s.user_name, t(s.role), s.district,
      when(s.starts_ms), when(s.ends_ms),
      el("button", { type: "button", onclick: async () => { await api("DELETE", `/api/manage/shifts/${s.id}`); loadRoster(); } }, t("Delete"))]));
  }

  async function loadUsers() {
    state.users = await api("GET", "/api/manage/users");
    table("users-table", ["User name", "Display name", "Role", "District", "E-mail"],
      state.users.map((u) => [u.username, u.display_name, t(u.role), u.district, u.email || ""]));
  }

  // Refused device messages (GET /api/rejections): a row per device with its counts by reason, then its
  // newest refusals. The preview is the payload's first bytes made printable by the server; still text only.
  function preview(text) {
    const code = el("code", {}, text);
    // 64 characters without a space: two lines in a column of its own, never a page-wide table.
    code.style.wordBreak = "break-all";
    code.style.display = "inline-block";
    code.style.minWidth = "18em";
    return code;
  }

  async function loadRejections() {
    const hours = Number($("rejections-period").value);
    const params = new URLSearchParams({ since: String(Date.now() - hours * 3600000), limit: "5" });
    const device = $("rejections-device").value.trim();
    if (device) params.set("device_id", device);
    const data = await api("GET", `/api/rejections?${params}`);
    const headers = ["Device id", "Refused", "Time", "Topic", "Reason", "Detail", "Size", "SHA-256", "First bytes"];
    const body = [];
    for (const d of data.devices) {
      const reasons = Object.entries(d.by_reason).map(([reason, n]) => `${reason} × ${n}`).join(", ");
      d.latest.forEach((r, i) => {
        const cells = i === 0
          ? [el("td", { rowspan: d.latest.length, class: "device" }, d.device_id === null ? t("(no valid device id)") : d.device_id),
            el("td", { rowspan: d.latest.length, class: "counts" }, `${d.total}: ${reasons}`)]
          : [];
        cells.push(el("td", {}, when(r.received_ms)), el("td", {}, r.topic), el("td", { class: "reason" }, r.reason),
          el("td", {}, r.detail),
          el("td", {}, r.size === null ? t("{n} counted, not kept", { n: r.refusals }) : `${r.size} B`),
          el("td", { title: r.sha256 || "" }, r.sha256 ? r.sha256.slice(0, 12) + "…" : ""),
          el("td", {}, r.preview === null ? "" : preview(r.preview)));
        body.push(el("tr", { "data-device": d.device_id || "" }, ...cells));
      });
    }
    $("rejections-table").replaceChildren(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, t(h))))), el("tbody", {}, ...body));
    $("rejections-empty").hidden = data.devices.length > 0;
  }

  const loaders = { clients: loadClients, devices: loadDevices, schedule: loadSchedule, roster: loadRoster, users: loadUsers,
    rejections: loadRejections };

  async function open(tab) {
    state.tab = tab;
    document.querySelectorAll("[data-tab]").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.tab === tab)));
    document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== "panel-" + tab; });
    say("");
    if (!state.clients.length && tab !== "clients") await loadClients();
    await loaders[tab]();
  }

  function show(which) {
    $("login").hidden = which !== "login";
    $("forbidden").hidden = which !== "forbidden";
    $("manage").hidden = which !== "manage";
    $("who").hidden = which === "login";
  }

  async function start() {
    try { state.user = await quiet("GET", "/api/me"); } catch (_) { return show("login"); }
    $("who-name").textContent = `${state.user.display_name} · ${t(state.user.role)}`;
    if (state.user.role !== "admin" && state.user.role !== "supervisor") return show("forbidden");
    document.querySelectorAll(".admin-only").forEach((f) => { f.hidden = state.user.role !== "admin"; });
    show("manage");
    await open(state.tab);
    document.body.dataset.loaded = "true";
  }

  function form(id, handler) {
    $(id).addEventListener("submit", (e) => { e.preventDefault(); handler().catch(() => {}); });
  }

  form("client-form", async () => {
    const body = { name: $("client-name").value, address: $("client-address").value, district: $("client-district").value };
    const id = $("client-id").value;
    await api(id ? "PATCH" : "POST", id ? `/api/manage/clients/${id}` : "/api/manage/clients", body);
    $("client-form").reset();
    $("client-id").value = "";
    say(t("Saved."), true);
    await loadClients();
  });
  $("client-new").addEventListener("click", () => { $("client-form").reset(); $("client-id").value = ""; });
  form("device-form", async () => {
    const device = await api("POST", "/api/manage/devices", { device_id: $("device-id").value,
      client_id: Number($("device-client").value), kind: $("device-kind").value, label: $("device-label").value });
    const notice = $("device-password");
    notice.replaceChildren(t("Password for the device (shown once): "), el("code", {}, device.password));
    notice.hidden = false;
    $("device-form").reset();
    await loadDevices();
  });
  form("shift-form", async () => {
    await api("POST", "/api/manage/shifts", { user_id: Number($("shift-user").value), role: $("shift-role").value,
      district: $("shift-district").value, starts_ms: new Date($("shift-starts").value).getTime(),
      ends_ms: new Date($("shift-ends").value).getTime() });
    say(t("Saved."), true);
    await loadRoster();
  });
  form("user-form", async () => {
    await api("POST", "/api/manage/users", { username: $("user-username").value, display_name: $("user-display").value,
      role: $("user-role").value, district: $("user-district").value, email: $("user-email").value || null,
      password: $("user-password").value });
    $("user-form").reset();
    say(t("Saved."), true);
    await loadUsers();
  });
  form("rejections-form", loadRejections);
  $("schedule-client").addEventListener("change", () => loadSchedule().catch(() => {}));
  $("dose-add").addEventListener("click", () => { state.schedule.doses.push({ dose_id: "", at: "08:00", label: "" }); drawSchedule(); });
  $("schedule-send").addEventListener("click", () => sendSchedule().catch(() => {}));
  document.querySelectorAll("[data-tab]").forEach((b) => b.addEventListener("click", () => open(b.dataset.tab).catch(() => {})));
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const signedIn = await quiet("POST", "/api/session", { username: $("username").value, password: $("password").value })
      .then(() => true, () => false);
    $("login-error").textContent = signedIn ? "" : t("Unknown user name or wrong password.");
    if (signedIn) start();
  });
  $("sign-out").addEventListener("click", async () => { await quiet("DELETE", "/api/session").catch(() => {}); show("login"); });
  i18n.onChange(() => {
    if (!state.user) return;
    $("who-name").textContent = `${state.user.display_name} · ${t(state.user.role)}`;
    if (state.tab === "schedule" && state.schedule) drawSchedule(); else loaders[state.tab]().catch(() => {});
  });
  start();
})();
