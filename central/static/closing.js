/* carealarm console: closing an alarm properly (#14) and the shift's handover.
 *
 * - The close form is an in-page dialog: an outcome chosen from the codes care stations report on (none is
 *   chosen until the nurse chooses) and a closing note, both required. The same dialog, without outcomes,
 *   takes a note on an alert. No native prompt() or alert(): a refusal is shown in the page.
 * - After closing, the nurse who closed it sees "Undo" for UNDO_MS: the alarm goes back in progress.
 * - Conflicts (another nurse took or closed it first: 409) are shown in the dialog or on the page's
 *   message line, with the server's words.
 * - The handover lists the shift's alerts (last N hours): client, what, opened, answered, closed, by whom,
 *   outcome and every note. It is read when opened and kept fresh while open.
 *
 * window.carealarmClosing = { init(hooks), resolve(alert), note(alert), problem(text), changed(alert),
 *                            outcomeLabel(code) }
 * hooks: { shown(alertView): the console shows the alert's new state, signedOut(): the session ended }
 */
(function () {
  "use strict";

  // How long the nurse who closed an alarm may take it back: care.alerts.UNDO_WINDOW_MS (the server checks
  // it too; this is how long the button is shown).
  const UNDO_MS = 30000;
  // The handover follows the queue: a change refreshes it at most this often (each read is audited).
  const HANDOVER_REFRESH_MS = 5000;
  // care.alerts.OUTCOMES, in the console's order; English labels are the i18n keys.
  const OUTCOMES = [
    ["false_alarm", "False alarm"],
    ["reassured", "Reassured — no help needed"],
    ["contact_attended", "Contact attended"],
    ["district_nurse_attended", "District nurse attended"],
    ["ambulance", "Ambulance"],
    ["fire_service", "Fire service"],
    ["no_response_visit", "No response — visit"],
  ];
  // Codes on older alerts, and those the monitor closes with: shown in the handover, never offered.
  const OTHER_OUTCOMES = {
    talked_to_client: "Talked to client", nurse_sent: "Nurse sent", emergency_services: "Emergency services called",
    cancelled_by_client: "Cancelled by client", other: "Other", back_online: "Back online",
    power_restored: "Power restored", battery_ok: "Battery ok", dose_taken_late: "Dose taken late",
    nurse_arrived: "Nurse arrived", device_removed: "Device removed",
  };

  const $ = (id) => document.getElementById(id);
  const T = (key, vars) => (window.carealarmI18n ? window.carealarmI18n.t(key, vars) : key);
  const { api } = window.carealarmApi;
  let hooks = { shown: () => {}, signedOut: () => {} };
  let current = null;  // {alert, mode: "resolve" | "note"} while the dialog is open
  let undo = null;     // {alert, until, timer} while an undo is offered
  let handoverTimer = null;

  function outcomeLabel(code) {
    const known = OUTCOMES.find(([c]) => c === code);
    if (known) return T(known[1]);
    return OTHER_OUTCOMES[code] ? T(OTHER_OUTCOMES[code]) : code || "—";
  }

  function time(ms) {
    const lang = window.carealarmI18n ? window.carealarmI18n.lang : "en";
    return new Intl.DateTimeFormat(lang === "nl" ? "nl-NL" : "en-GB", { hour: "2-digit", minute: "2-digit" })
      .format(new Date(ms));
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // -- the dialog -----------------------------------------------------------------------------------------

  function fillOutcomes() {
    const chosen = ($("close-form").elements.namedItem("outcome") || {}).value || "";
    $("close-outcome-list").replaceChildren(...OUTCOMES.map(([code, label]) => {
      const item = el("label", "outcome");
      const radio = el("input");
      radio.type = "radio";
      radio.name = "outcome";
      radio.value = code;
      radio.checked = code === chosen;
      item.append(radio, " ", el("span", "", T(label)));
      return item;
    }));
  }

  function open(alert, mode) {
    current = { alert, mode };
    const resolving = mode === "resolve";
    $("close-form").reset();
    fillOutcomes();
    $("close-outcomes").hidden = !resolving;
    $("close-title").textContent = resolving ? T("Close alarm") : T("Note on this alert");
    $("close-who").textContent = `${alert.client.name} — ${alert.detail}`;
    $("close-note-label").textContent = resolving
      ? T("Closing note (required): what happened, what was done")
      : T("Note (shown on the client's timeline)");
    $("close-submit").textContent = resolving ? T("Close alarm") : T("Add note");
    $("close-error").textContent = "";
    $("close-dialog").showModal();
    (resolving ? $("close-outcome-list").querySelector("input") : $("close-note")).focus();
  }

  function shut() {
    current = null;
    if ($("close-dialog").open) $("close-dialog").close();
  }

  async function submit(ev) {
    ev.preventDefault();
    if (!current) return;
    const { alert, mode } = current;
    const note = $("close-note").value.trim();
    const outcome = ($("close-form").elements.namedItem("outcome") || {}).value || "";
    if (mode === "resolve" && !outcome) { $("close-error").textContent = T("Choose an outcome."); return; }
    if (!note) {
      $("close-error").textContent = T("Write a closing note: what happened, what was done.");
      $("close-note").focus();
      return;
    }
    $("close-submit").disabled = true;
    try {
      if (mode === "resolve") {
        const done = await api("POST", `/api/alerts/${alert.id}/resolve`, { outcome, note });
        shut();
        hooks.shown(done);
        offerUndo(done);
      } else {
        await api("POST", `/api/alerts/${alert.id}/notes`, { text: note });
        shut();
      }
      refreshHandoverSoon(0);
    } catch (e) {
      if (e.status === 401) { shut(); hooks.signedOut(); return; }
      const what = mode === "resolve" ? T("Could not close the alarm") : T("Could not add the note");
      const why = e.status === 409 ? T("another nurse changed it first") : "";
      $("close-error").textContent = `${what}: ${e.message}${why ? ` (${why})` : ""}`;
    } finally {
      $("close-submit").disabled = false;
    }
  }

  // -- undo -----------------------------------------------------------------------------------------------

  function offerUndo(alert) {
    clearUndo();
    undo = { alert, until: Date.now() + UNDO_MS, timer: setInterval(showUndo, 1000) };
    showUndo();
  }

  function showUndo() {
    if (!undo) return;
    const left = Math.ceil((undo.until - Date.now()) / 1000);
    if (left <= 0) { clearUndo(); return; }
    $("undo-text").textContent = T("Closed: {client} — {outcome}. Undo for {s} s.", {
      client: undo.alert.client.name, outcome: outcomeLabel(undo.alert.outcome), s: left,
    });
    $("undo-bar").hidden = false;
  }

  function clearUndo() {
    if (undo) clearInterval(undo.timer);
    undo = null;
    $("undo-bar").hidden = true;
  }

  async function undoNow() {
    if (!undo) return;
    const { alert } = undo;
    clearUndo();
    try {
      hooks.shown(await api("POST", `/api/alerts/${alert.id}/undo`));
      refreshHandoverSoon(0);
    } catch (e) {
      if (e.status === 401) { hooks.signedOut(); return; }
      problem(`${T("Could not undo")}: ${e.message}`);
    }
  }

  // -- the page's message line (instead of alert()) -------------------------------------------------------

  function problem(text) {
    $("action-error-text").textContent = text;
    $("action-error").hidden = false;
  }

  // -- handover -------------------------------------------------------------------------------------------

  async function loadHandover() {
    const hours = Number($("handover-hours").value) || 12;
    const since = Date.now() - hours * 3600000;
    let page;
    try { page = await api("GET", `/api/handover?since_ms=${Math.max(0, Math.floor(since))}`); }
    catch (e) {
      if (e.status === 401) { hooks.signedOut(); return; }
      $("handover-error").textContent = `${T("Could not load the handover")}: ${e.message}`;
      return;
    }
    $("handover-error").textContent = "";
    renderHandover(page.alerts);
  }

  let lastHandover = [];
  function renderHandover(alerts) {
    lastHandover = alerts;
    $("handover-body").replaceChildren(...alerts.map(handoverRow));
    $("handover-empty").hidden = alerts.length > 0;
  }

  function handoverRow(a) {
    const tr = el("tr", `handover-row h-${a.state}`);
    tr.dataset.id = a.id;
    const td = (...children) => { const c = el("td"); c.append(...children); tr.append(c); return c; };
    td(el("span", "", time(a.opened_ms)));
    td(el("span", "client", a.client.name));
    const what = td(el("span", "", a.detail));
    if (a.count > 1) what.append(" ", el("span", "muted", `×${a.count}`));
    td(a.acknowledged_ms ? el("span", "", `${time(a.acknowledged_ms)} · ${a.acknowledged_by || "—"}`)
      : el("span", "muted", T("not answered")));
    if (a.state === "resolved") td(el("span", "", `${time(a.resolved_ms)} · ${a.resolved_by || T("the service")}`));
    else td(el("span", "running", a.state === "open" ? T("open") : T("in progress")));
    td(el("span", a.outcome ? "outcome-code" : "muted", a.outcome ? outcomeLabel(a.outcome) : "—"));
    const notes = td();
    const list = el("ul", "handover-notes");
    for (const n of a.notes) {
      const li = el("li");
      li.append(el("span", "muted", `${time(n.at_ms)} ${n.by || T("the service")}: `), el("span", "", n.text));
      list.append(li);
    }
    notes.append(a.notes.length ? list : el("span", "muted", "—"));
    return tr;
  }

  function refreshHandoverSoon(delay) {
    if (!$("handover-box").open) return;
    clearTimeout(handoverTimer);
    handoverTimer = setTimeout(loadHandover, delay === undefined ? HANDOVER_REFRESH_MS : delay);
  }

  // -- wiring ---------------------------------------------------------------------------------------------

  function init(given) {
    hooks = { ...hooks, ...given };
    $("close-form").addEventListener("submit", submit);
    $("close-form").addEventListener("change", () => { $("close-error").textContent = ""; });
    $("close-cancel").addEventListener("click", shut);
    $("close-dialog").addEventListener("close", () => { current = null; });
    $("undo-btn").addEventListener("click", undoNow);
    $("action-error-close").addEventListener("click", () => { $("action-error").hidden = true; });
    $("handover-box").addEventListener("toggle", () => { if ($("handover-box").open) loadHandover(); });
    $("handover-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadHandover(); });
    $("handover-hours").addEventListener("change", loadHandover);
    if (window.carealarmI18n) {
      window.carealarmI18n.onChange(() => {
        if (current) fillOutcomes();
        showUndo();
        renderHandover(lastHandover);
      });
    }
  }

  window.carealarmClosing = {
    init,
    resolve: (alert) => open(alert, "resolve"),
    note: (alert) => open(alert, "note"),
    problem,
    changed: () => refreshHandoverSoon(),
    outcomeLabel,
  };
})();
