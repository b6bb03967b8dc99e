/* carealarm reports page: three reports, each an SVG chart built here, a table and a CSV download.
 * Plain DOM and SVG: nothing is fetched but our own API. Text from the API only ever goes into textContent.
 * Under each table, every figure's definition as the API gives it (translated: the English is the key).
 */
(function () {
  "use strict";
  const i18n = window.carealarmI18n;
  const t = i18n.t;
  const api = window.carealarmApi.api; // the one API wrapper (api.js)
  const SVG = "http://www.w3.org/2000/svg";
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const $ = (id) => document.getElementById(id);
  let data = null; // the last answers, kept so a language switch redraws without asking again

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const pct = (share, digits) => (share === null || share === undefined ? "–" : i18n.number(share * 100, digits === undefined ? 1 : digits) + "%");
  const secs = (s) => (s === null || s === undefined ? "–" : i18n.number(s, 0) + " s");
  const hours = (ms) => i18n.number(ms / 3_600_000, 1) + " h";

  /* A vertical bar chart of shares (0..1): items [{label, value, title}], an optional target line. */
  function barChart(items, opts) {
    const width = 900, height = 260, left = 48, right = 92, top = 18, bottom = items.length > 10 ? 70 : 40;
    const plotW = width - left - right, plotH = height - top - bottom;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": opts.label });
    const y = (share) => top + plotH * (1 - share);
    for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
      root.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(tick), y2: y(tick) }));
      root.append(svg("text", { class: "axis", x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, pct(tick, 0)));
    }
    const slot = plotW / Math.max(items.length, 1);
    const barW = Math.min(56, slot * 0.7);
    items.forEach((item, i) => {
      const cx = left + slot * (i + 0.5);
      const value = item.value;
      const cls = value === null ? "bar-none" : opts.classify(value);
      const h = value === null ? 2 : Math.max(1, plotH * value);
      const bar = svg("rect", { class: "bar " + cls, x: cx - barW / 2, y: top + plotH - h, width: barW, height: h });
      bar.append(svg("title", {}, item.title || `${item.label}: ${pct(value)}`));
      root.append(bar);
      if (value !== null && items.length <= 20) {
        root.append(svg("text", { class: "value", x: cx, y: top + plotH - h - 4, "text-anchor": "middle" }, pct(value, value === 1 ? 0 : 1)));
      }
      const label = item.label.length > 18 ? item.label.slice(0, 17) + "…" : item.label;
      const ly = top + plotH + 16;
      const text = svg("text", { class: "axis x-label", x: cx, y: ly, "text-anchor": items.length > 10 ? "end" : "middle" }, label);
      if (items.length > 10) text.setAttribute("transform", `rotate(-40 ${cx} ${ly})`);
      root.append(text);
    });
    if (opts.target !== undefined) {
      root.append(svg("line", { class: "target", x1: left, x2: width - right, y1: y(opts.target), y2: y(opts.target) }));
      root.append(svg("text", { class: "target-label", x: width - right + 6, y: y(opts.target) + 4, "text-anchor": "start" },
        t("target {pct}", { pct: pct(opts.target) })));
    }
    return root;
  }

  function chartInto(id, items, opts) {
    const box = $(id);
    box.replaceChildren(items.length ? barChart(items, opts) : el("p", { class: "empty" }, t("No data in this period.")));
  }

  /* headers: [label, numeric?, field whose definition the API sends]; the definitions go into dl#defs-<id>. */
  function table(id, headers, rows, definitions) {
    const defined = headers.filter(([, , field]) => field && definitions[field]);
    const head = el("tr", {}, ...headers.map(([text, num, field]) => {
      const attrs = num ? { class: "num" } : {};
      if (field && definitions[field]) attrs.title = t(definitions[field]);
      return el("th", attrs, t(text));
    }));
    const body = rows.map((r) => el("tr", r.cls ? { class: r.cls } : {}, ...r.cells.map((c, i) =>
      el("td", headers[i][1] ? { class: "num" + (c.bad ? " below" : "") } : {}, c.text === undefined ? c : c.text))));
    $("table-" + id).replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
    $("defs-" + id).replaceChildren(...defined.flatMap(([text, , field]) =>
      [el("dt", {}, t(text)), el("dd", {}, t(definitions[field]))]));
  }

  function drawAnswer(body) {
    const target = body.targets.within_60;
    chartInto("chart-answer", body.days.map((d) => ({ label: d.day, value: d.within_60,
      title: `${d.day}: ${pct(d.within_60)} (${d.answered})` })), {
      label: t("Share of alarms answered within 60 s, per day"), target: target,
      classify: (v) => (v >= target ? "bar-ok" : v >= 0.9 ? "bar-mid" : "bar-bad"),
    });
    const rows = [];
    for (const day of body.days) {
      rows.push({ cls: "total", cells: answerCells(day, day.day, t("all nurses"), body.targets) });
      for (const n of body.nurses.filter((r) => r.day === day.day)) rows.push({ cls: "sub", cells: answerCells(n, "", n.nurse, body.targets) });
    }
    table("answer", [["Day"], ["Nurse", 0, "nurse"], ["Answered", 1, "answered"], ["Unanswered", 1, "unanswered"],
      ["Cancelled by client", 1, "cancelled_by_client"], ["Within 60 s", 1, "within_60"], ["Within 180 s", 1, "within_180"],
      ["Median", 1, "median_s"], ["p90", 1, "p90_s"]], rows, body.definitions);
  }

  function answerCells(r, day, nurse, targets) {
    return [day, nurse, r.answered, r.unanswered, r.cancelled_by_client,
      { text: pct(r.within_60), bad: r.within_60 !== null && r.within_60 < targets.within_60 },
      { text: pct(r.within_180), bad: r.within_180 !== null && r.within_180 < targets.within_180 },
      secs(r.median_s), secs(r.p90_s)];
  }

  function drawAdherence(body) {
    chartInto("chart-adherence", body.clients.map((c) => ({ label: c.client_name, value: c.adherence })), {
      label: t("Adherence per client"), classify: (v) => (v >= 0.95 ? "bar-ok" : v >= 0.8 ? "bar-mid" : "bar-bad"),
    });
    table("adherence", [["Client"], ["Due", 1, "due"], ["Taken", 1, "taken"], ["Taken late", 1, "taken_late"], ["Missed", 1, "missed"],
      ["Pending", 1, "pending"], ["Not in schedule", 1, "unscheduled"], ["Adherence", 1, "adherence"], ["On time", 1, "on_time"]],
    body.clients.map((c) => ({ cells: [c.client_name, c.due, c.taken, c.taken_late, c.missed, c.pending, c.unscheduled,
      pct(c.adherence), pct(c.on_time)] })), body.definitions);
  }

  function drawUptime(body) {
    const name = (d) => d.label ? `${d.label} (${d.device_id})` : d.device_id;
    chartInto("chart-uptime", body.devices.map((d) => ({ label: d.device_id, value: d.share_online,
      title: `${name(d)} — ${d.client_name}: ${pct(d.share_online)}` })), {
      label: t("Share of time online per device"), classify: (v) => (v >= 0.99 ? "bar-ok" : v >= 0.95 ? "bar-mid" : "bar-bad"),
    });
    table("uptime", [["Device"], ["Client"], ["Kind"], ["Online", 1, "share_online"], ["Time online", 1, "online_ms"],
      ["Time offline", 1, "offline_ms"], ["No report", 1, "unknown_ms"], ["Service down", 1, "service_down_ms"], ["Changes", 1, "changes"]],
    body.devices.map((d) => ({ cells: [name(d), d.client_name, t(d.kind), pct(d.share_online), hours(d.online_ms),
      hours(d.offline_ms), hours(d.unknown_ms), hours(d.service_down_ms), d.changes] })), body.definitions);
  }

  function redraw() {
    if (!data) return;
    drawAnswer(data.answer);
    drawAdherence(data.adherence);
    drawUptime(data.uptime);
  }

  function query(format) {
    const params = new URLSearchParams({ since: $("since").value, until: $("until").value, tz: tz });
    if (format) params.set("format", format);
    return params.toString();
  }

  async function load() {
    $("range-error").textContent = "";
    for (const name of ["answer-times", "adherence", "uptime"]) {
      $("csv-" + name.split("-")[0]).href = `/api/reports/${name}?${query("csv")}`;
    }
    let answer, adherence, uptime;
    try {
      [answer, adherence, uptime] = await Promise.all(["answer-times", "adherence", "uptime"].map((name) =>
        api("GET", `/api/reports/${name}?${query()}`)));
    } catch (err) {
      return failed(err);
    }
    data = { answer, adherence, uptime };
    redraw();
    document.body.dataset.loaded = "true";
  }

  function failed(err) {
    if (err.status === 401) return show("login");
    if (err.status === 403) return show("forbidden");
    $("range-error").textContent = err.message;
  }

  function show(which) {
    $("login").hidden = which !== "login";
    $("forbidden").hidden = which !== "forbidden";
    $("reports").hidden = which !== "reports";
    $("who").hidden = which === "login";
  }

  const isoDay = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;

  async function start() {
    let user;
    try { user = await api("GET", "/api/me"); } catch (_) { return show("login"); }
    $("who-name").textContent = `${user.display_name} · ${t(user.role)}`;
    const today = new Date();
    $("until").value = $("until").value || isoDay(today);
    $("since").value = $("since").value || isoDay(new Date(today.getTime() - 6 * 86_400_000));
    show("reports");
    await load();
  }

  $("range").addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const signedIn = await api("POST", "/api/session", { username: $("username").value, password: $("password").value })
      .then(() => true, () => false);
    $("login-error").textContent = signedIn ? "" : t("Unknown user name or wrong password.");
    if (signedIn) start();
  });
  $("sign-out").addEventListener("click", async () => {
    await api("DELETE", "/api/session").catch(() => {});
    data = null;
    show("login");
  });
  i18n.onChange(() => {
    redraw();
    if (data) api("GET", "/api/me").then((u) => { $("who-name").textContent = `${u.display_name} · ${t(u.role)}`; }, () => {});
  });
  start();
})();
