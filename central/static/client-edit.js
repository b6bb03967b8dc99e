// The client page's edit mode and the key-safe reveal. Loaded after client.js, whose top-level helpers it
// uses (api, loadRecord, lastRecord, el, $, t, named, RELATIONS, handle). The fields are saved with one
// PUT /api/clients/{id} (only those that changed), the contact list with one PUT .../contacts (the whole
// list, in its order). The key-safe code is never filled in: an empty box leaves it as it is.
"use strict";

const EDIT_FIELDS = ["phone", "birth_date", "language", "gp", "pharmacy", "conditions", "allergies", "mobility", "pets", "access_notes", "care_notes"];
// How long a revealed key-safe code stays on the screen.
const REVEAL_SHOWN_MS = 60_000;
let revealTimer = null;

function contactRow(c) {
  const li = el("li", null, "contact-edit");
  if (c.id) li.dataset.contactId = c.id;
  const field = (key, label, input) => {
    const wrap = el("label", null, `cf cf-${key}`);
    wrap.append(el("span", t(label)), input);
    return wrap;
  };
  const text = (key, value, max, type) => {
    const input = el("input");
    input.dataset.key = key;
    input.maxLength = max;
    input.value = value || "";
    if (type) input.type = type;
    return input;
  };
  const check = (key, value, label) => {
    const wrap = el("label", null, "check");
    const input = el("input");
    input.type = "checkbox";
    input.dataset.key = key;
    input.checked = Boolean(value);
    wrap.append(input, el("span", ` ${t(label)}`));
    return wrap;
  };
  const relation = el("select");
  relation.dataset.key = "relation";
  for (const [code, name] of Object.entries(RELATIONS)) {
    const option = el("option", t(name));
    option.value = code;
    relation.append(option);
  }
  relation.value = c.relation || "family";
  const name = text("name", c.name, 200);
  name.required = true;
  const email = text("email", c.email, 200, "email");
  li.append(
    field("name", "Name", name), field("relation", "Relation", relation),
    field("phone", "Phone", text("phone", c.phone, 50, "tel")), field("reachable", "When reachable", text("reachable", c.reachable, 200)),
    field("email", "E-mail", email),
    check("keyholder", c.keyholder, "Keyholder"), check("notify_missed_dose", c.notify_missed_dose, "Gets missed-dose messages"),
  );
  const tools = el("div", null, "contact-tools");
  for (const [act, symbol, label] of [["up", "↑", "Move up"], ["down", "↓", "Move down"], ["remove", "✕", "Remove"]]) {
    const b = el("button", symbol);
    b.type = "button";
    b.dataset.act = act;
    b.setAttribute("aria-label", `${t(label)}: ${c.name || t("new contact")}`);
    b.title = t(label);
    tools.append(b);
  }
  li.append(tools);
  return li;
}

function readRows() {
  return [...$("contacts-edit").children].map((li) => {
    const item = li.dataset.contactId ? { id: Number(li.dataset.contactId) } : {};
    for (const input of li.querySelectorAll("[data-key]")) {
      item[input.dataset.key] = input.type === "checkbox" ? input.checked : input.value.trim();
    }
    return item;
  });
}

function renderRows(items) {
  $("contacts-edit").replaceChildren(...items.map(contactRow));
}

function openEdit() {
  const r = lastRecord;
  for (const name of EDIT_FIELDS) $(`f-${name}`).value = r[name] || "";
  $("f-key_safe_code").value = "";
  $("f-key_safe_clear").checked = false;
  $("f-key_safe_clear").disabled = !r.key_safe_set;
  renderRows(r.contacts);
  $("edit-error").textContent = "";
  $("edit").hidden = false;
  $("edit-open").hidden = true;
  $("f-phone").focus();
}

function closeEdit() {
  $("edit").hidden = true;
  $("edit-open").hidden = false;
}

$("edit-open").addEventListener("click", openEdit);
$("edit-cancel").addEventListener("click", closeEdit);
$("contact-add").addEventListener("click", () => {
  const items = readRows();
  items.push({ relation: "family" });
  renderRows(items);
  $("contacts-edit").lastElementChild.querySelector("[data-key=name]").focus();
});

$("contacts-edit").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-act]");
  if (!button) return;
  const li = button.closest("li");
  const list = $("contacts-edit");
  if (button.dataset.act === "remove") li.remove();
  else if (button.dataset.act === "up" && li.previousElementSibling) list.insertBefore(li, li.previousElementSibling);
  else if (button.dataset.act === "down" && li.nextElementSibling) list.insertBefore(li.nextElementSibling, li);
  const again = li.isConnected && li.querySelector(`button[data-act=${button.dataset.act}]`);
  if (again) again.focus();
});

$("edit").addEventListener("submit", async (event) => {
  event.preventDefault();
  const changes = {};
  for (const name of EDIT_FIELDS) {
    const value = $(`f-${name}`).value.trim();
    if (value !== (lastRecord[name] || "")) changes[name] = value;
  }
  const code = $("f-key_safe_code").value.trim();
  if ($("f-key_safe_clear").checked) changes.key_safe_code = "";
  else if (code) changes.key_safe_code = code;
  const items = readRows();
  if (items.some((c) => !c.name)) {
    $("edit-error").textContent = t("Every contact person needs a name.");
    return;
  }
  try {
    if (Object.keys(changes).length) await api(`/api/clients/${clientId}`, { method: "PUT", body: changes });
    await api(`/api/clients/${clientId}/contacts`, { method: "PUT", body: { items } });
    closeEdit();
    await loadRecord();
  } catch (err) {
    $("edit-error").textContent = t("Not saved: ") + err.message;
  }
});

$("key-reveal").addEventListener("click", async () => {
  try {
    const { code } = await api(`/api/clients/${clientId}/key-safe/reveal`, { method: "POST" });
    $("c-key-safe").textContent = code || t("not set");
    $("c-key-safe").classList.add("revealed");
    $("key-reveal").hidden = true;
    $("key-error").textContent = t("Shown for one minute; your look is recorded in the audit log.");
    clearTimeout(revealTimer);
    revealTimer = setTimeout(() => {
      $("c-key-safe").classList.remove("revealed");
      if (lastRecord) renderRecord(lastRecord);
    }, REVEAL_SHOWN_MS);
  } catch (err) {
    $("key-error").textContent = t("The code was not revealed: ") + err.message;
  }
});

i18n.onChange(() => {
  if (!$("edit").hidden) renderRows(readRows());
});
