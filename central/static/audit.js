/* carealarm audit page (supervisors and admins): who read or changed which client's data, when and why.
 * Filters person, client, action and period map onto GET /api/audit; "Download CSV" is the same query with
 * format=csv. Text from the API only ever goes into textContent.
 */
(function () {
  "use strict";
  const i18n = window.carealarmI18n;
  const t = i18n.t;
  const api = window.carealarmApi.api; // the one API wrapper (api.js)
  const $ = (id) => document.getElementById(id);
  const clients = new Map(); // id -> name, for the table
  let nextBefore = null;
  let shown = []; // the rows on the page, kept so a language switch redraws without asking (and auditing) again

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function dayStartMs(value, plusDays) {
    if (!value) return null;
    const [y, m, d] = value.split("-").map(Number);
    return new Date(y, m - 1, d + plusDays).getTime();
  }

  function query(extra) {
    const params = new URLSearchParams();
    if ($("f-user").value) params.set("user_id", $("f-user").value);
    if ($("f-client").value) params.set("client_id", $("f-client").value);
    if ($("f-action").value) params.set("action", $("f-action").value);
    const since = dayStartMs($("since").value, 0);
    const until = dayStartMs($("until").value, 1); // the whole "to" day
    if (since !== null) params.set("since", String(since));
    if (until !== null) params.set("until", String(until));
    for (const [k, v] of Object.entries(extra || {})) params.set(k, v);
    return params.toString();
  }

  function row(item) {
    const when = new Date(item.at_ms).toLocaleString(i18n.lang === "nl" ? "nl-NL" : "en-GB");
    const client = item.client_id === null ? "–" : `${clients.get(item.client_id) || ""} #${item.client_id}`.trim();
    return el("tr", {},
      el("td", {}, when),
      el("td", {}, `${item.user_name} (${t(item.user_role)})`),
      el("td", {}, el("code", {}, item.action)),
      el("td", {}, client),
      el("td", {}, item.reason || ""),
      el("td", {}, item.detail || ""));
  }

  async function load(more) {
    $("filter-error").textContent = "";
    $("csv").href = `/api/audit?${query({ format: "csv" })}`;
    const extra = more && nextBefore ? { before_id: String(nextBefore) } : {};
    let page;
    try {
      page = await api("GET", `/api/audit?${query(extra)}`);
    } catch (err) {
      return failed(err);
    }
    shown = more ? shown.concat(page.items) : page.items;
    nextBefore = page.next_before_id;
    redraw();
    document.body.dataset.loaded = "true";
  }

  function redraw() {
    $("rows").tBodies[0].replaceChildren(...shown.map(row));
    $("older").hidden = nextBefore === null;
    $("empty").hidden = shown.length > 0;
    $("count").textContent = t("{n} rows shown", { n: shown.length });
  }

  function failed(err) {
    if (err.status === 401) return show("login");
    if (err.status === 403) return show("forbidden");
    $("filter-error").textContent = err.message;
  }

  function show(which) {
    $("login").hidden = which !== "login";
    $("forbidden").hidden = which !== "forbidden";
    $("audit").hidden = which !== "audit";
    $("who").hidden = which === "login";
  }

  async function options() {
    // People and clients for the filters; a page that cannot list them still filters by the rest.
    const [users, page] = await Promise.all([
      api("GET", "/api/manage/users").catch(() => []),
      api("GET", "/api/clients?limit=200").catch(() => ({ items: [] })),
    ]);
    $("f-user").replaceChildren($("f-user").options[0], ...users.map((u) => el("option", { value: String(u.id) }, `${u.display_name} (${u.username})`)));
    for (const c of page.items) clients.set(c.id, c.name);
    $("f-client").replaceChildren($("f-client").options[0], ...page.items.map((c) => el("option", { value: String(c.id) }, c.name)));
  }

  async function start() {
    let user;
    try { user = await api("GET", "/api/me"); } catch (_) { return show("login"); }
    $("who-name").textContent = `${user.display_name} · ${t(user.role)}`;
    if (user.role !== "supervisor" && user.role !== "admin") return show("forbidden");
    show("audit");
    await options();
    await load(false);
  }

  $("filters").addEventListener("submit", (e) => { e.preventDefault(); load(false); });
  $("older").addEventListener("click", () => load(true));
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const signedIn = await api("POST", "/api/session", { username: $("username").value, password: $("password").value })
      .then(() => true, () => false);
    $("login-error").textContent = signedIn ? "" : t("Unknown user name or wrong password.");
    if (signedIn) start();
  });
  $("sign-out").addEventListener("click", async () => {
    await api("DELETE", "/api/session").catch(() => {});
    show("login");
  });
  i18n.onChange(() => {
    redraw();
    api("GET", "/api/me").then((u) => { $("who-name").textContent = `${u.display_name} · ${t(u.role)}`; }, () => {});
  });
  start();
})();
