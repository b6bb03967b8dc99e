"""Editing the client record (#14 item 2) on SQLite and PostgreSQL: the fields, the key-safe code (hidden,
revealed on its own request, audited), the ordered contact list, the district rule, and migration 0011."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text
from test_clients_api import World, world  # noqa: F401

from storage.db import downgrade, make_engine, upgrade

CODE = "C0DE-4711"
FIELDS = {
    "phone": "038 421 00 00",
    "birth_date": "1938-04-02",
    "language": "Nederlands (Sallands)",
    "gp": "Dr. Kok, 038 123 45 67",
    "pharmacy": "Apotheek Assendorp",
    "conditions": "COPD, diabetes type 2",
    "allergies": "penicillin",
    "mobility": "rollator; stairs with help",
    "pets": "a cat (Mies)",
    "access_notes": "key safe left of the back door",
    "care_notes": "hard of hearing: speak slowly",
}


def _edit(w: World, who: str, client: str, body: dict[str, Any], **params: str) -> Any:
    url = f"/api/clients/{w.ids[client]}"
    return w.as_(who).put(url, json=body, params=params or {"reason": "updating the record"})


def _record(w: World, who: str = "care", client: str = "jansen") -> dict[str, Any]:
    answer = w.as_(who).get(f"/api/clients/{w.ids[client]}", params={"reason": "reading back"})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_the_fields_are_saved_and_read_back(world: World) -> None:  # noqa: F811
    """A care nurse fills every field; the record reads them back, and the audit row names the fields."""
    answer = _edit(world, "care", "jansen", FIELDS)
    assert answer.status_code == 200, answer.text
    assert answer.json()["changed"] == sorted(FIELDS)
    record = _record(world)
    assert {k: record[k] for k in FIELDS} == FIELDS
    [row] = world.audit("client.edit")
    assert (row.user_id, row.client_id, row.reason) == (
        world.ids["care"],
        world.ids["jansen"],
        "updating the record",
    )
    assert "phone" in row.detail and "038" not in row.detail


def test_only_the_fields_sent_change(world: World) -> None:  # noqa: F811
    """Fields left out keep their value; sending the same value again changes nothing."""
    _edit(world, "care", "jansen", {"phone": "038 1"})
    assert _edit(world, "care", "jansen", {"phone": "038 1"}).json()["changed"] == []
    record = _record(world)
    assert (record["phone"], record["care_notes"]) == ("038 1", "Hard of hearing")
    assert world.audit("client.edit")[-1].detail == "changed: nothing"


def test_bad_values_are_refused(world: World) -> None:  # noqa: F811
    """A date that is no date, letters in a phone number, or an unknown field: 422, nothing stored."""
    for body in ({"birth_date": "1938-02-30"}, {"phone": "call Els"}, {"shoe_size": "38"}):
        assert _edit(world, "care", "jansen", body).status_code == 422, body
    assert _record(world)["phone"] == ""


def test_the_key_safe_code_is_never_in_a_read_or_the_log(world: World) -> None:  # noqa: F811
    """The record says only whether a code is set; the edit's audit row names the field, not the code."""
    assert _record(world)["key_safe_set"] is False
    assert _edit(world, "care", "jansen", {"key_safe_code": CODE}).json() == {
        "changed": ["key_safe_code"],
        "key_safe_set": True,
    }
    record = world.as_("care").get(f"/api/clients/{world.ids['jansen']}", params={"reason": "reading"})
    assert record.json()["key_safe_set"] is True
    assert CODE not in record.text
    contacts = world.as_("care").get(
        f"/api/clients/{world.ids['jansen']}/contacts", params={"reason": "x" * 5}
    )
    assert CODE not in contacts.text
    assert all(CODE not in (r.detail + (r.reason or "")) for r in world.audit())


def test_a_reveal_needs_a_reason_without_an_alert_and_is_audited(world: World) -> None:  # noqa: F811
    """No alert of hers: 428 (refusal audited); with a reason: the code and a client.key_safe.reveal row."""
    _edit(world, "care", "jansen", {"key_safe_code": CODE})
    url = f"/api/clients/{world.ids['jansen']}/key-safe/reveal"
    refused = world.as_("care").post(url)
    assert refused.status_code == 428
    assert world.audit("client.key_safe.reveal.refused")
    answer = world.as_("care").post(url, headers={"X-Access-Reason": "Els%20locked%20out"})
    assert answer.status_code == 200
    assert answer.json() == {"code": CODE}
    assert answer.headers["cache-control"] == "no-store"
    [row] = world.audit("client.key_safe.reveal")
    assert (row.user_id, row.client_id, row.reason, row.detail) == (
        world.ids["care"],
        world.ids["jansen"],
        "Els locked out",
        "revealed",
    )


def test_an_alert_of_hers_lets_her_reveal_without_a_reason(world: World) -> None:  # noqa: F811
    """The nurse who took the client's alarm reveals the code at once; each reveal is its own row."""
    _edit(world, "care", "jansen", {"key_safe_code": CODE})
    alert_id = world.alert("jansen")
    assert world.as_("care").post(f"/api/alerts/{alert_id}/acknowledge").status_code == 200
    url = f"/api/clients/{world.ids['jansen']}/key-safe/reveal"
    assert world.as_("care").post(url).json() == {"code": CODE}
    assert world.as_("care").post(url).status_code == 200
    assert len(world.audit("client.key_safe.reveal")) == 2


def test_admins_edit_but_do_not_reveal(world: World) -> None:  # noqa: F811
    """Letting someone into a home is care work: an admin's reveal is 403; her edit is allowed."""
    assert _edit(world, "admin", "jansen", {"pets": "dog"}).status_code == 200
    url = f"/api/clients/{world.ids['jansen']}/key-safe/reveal"
    answer = world.as_("admin").post(url, params={"reason": "curious admin"})
    assert answer.status_code == 403
    assert world.as_("sup").post(url, params={"reason": "keyholder asked"}).status_code == 200


def test_a_district_nurse_edits_her_own_district_only(world: World) -> None:  # noqa: F811
    """Zuid's district nurse edits Jansen (Zuid); De Boer (Centrum) is 403, audited as refused."""
    assert _edit(world, "wijk", "jansen", {"mobility": "wheelchair"}).status_code == 200
    answer = _edit(world, "wijk", "boer", {"mobility": "wheelchair"})
    assert answer.status_code == 403
    [row] = world.audit("client.edit.refused")
    assert row.client_id == world.ids["boer"]
    contact = {"name": "Piet", "relation": "neighbour"}
    url = f"/api/clients/{world.ids['boer']}/contacts"
    assert world.as_("wijk").post(url, json=contact, params={"reason": "new neighbour"}).status_code == 403
    assert _record(world, client="boer")["mobility"] == ""


def test_contacts_are_added_at_the_end_and_read_in_order(world: World) -> None:  # noqa: F811
    """A new contact comes last, with keyholder, when reachable and missed-dose messages kept."""
    body = {
        "name": "Kees (neighbour)",
        "relation": "neighbour",
        "phone": "+31 6 9999 0000",
        "keyholder": True,
        "reachable": "evenings",
        "notify_missed_dose": True,
    }
    url = f"/api/clients/{world.ids['jansen']}/contacts"
    answer = world.as_("care").post(url, json=body, params={"reason": "new keyholder"})
    assert answer.status_code == 201, answer.text
    added = answer.json()
    assert (added["tel"], added["keyholder"], added["reachable"]) == ("tel:+31699990000", True, "evenings")
    names = [c["name"] for c in _record(world)["contacts"]]
    assert names == ["Els", "Dr. Kok", "Kees (neighbour)"]
    [row] = world.audit("client.contact.add")
    assert row.detail == f"added {added['id']}"


def test_the_whole_list_is_edited_reordered_and_trimmed(world: World) -> None:  # noqa: F811
    """PUT the list: reorder, change a field, add one (no id), leave one out (removed); audited by id."""
    els, kok = _record(world)["contacts"]
    url = f"/api/clients/{world.ids['jansen']}/contacts"
    mies = {"name": "Mies", "relation": "family", "phone": "06 1", "keyholder": True}
    items = [{**_contact_in(kok), "phone": "038 2"}, mies, _contact_in(els)]
    answer = world.as_("care").put(url, json={"items": items}, params={"reason": "daughter moved in"})
    assert answer.status_code == 200, answer.text
    after = _record(world)["contacts"]
    assert [(c["name"], c["phone"], c["keyholder"]) for c in after] == [
        ("Dr. Kok", "038 2", False),
        ("Mies", "06 1", True),
        ("Els", "06 1234 5678", False),
    ]
    detail = world.audit("client.contacts.change")[-1].detail
    assert detail == f"changed {kok['id']}: phone; added {after[1]['id']}; reordered"
    items = [_contact_in(c) for c in after[:2]]
    answer = world.as_("care").put(url, json={"items": items}, params={"reason": "Els moved away"})
    assert [c["name"] for c in answer.json()["items"]] == ["Dr. Kok", "Mies"]
    assert world.audit("client.contacts.change")[-1].detail == f"removed {els['id']}"


def test_a_contact_of_another_client_is_not_touched(world: World) -> None:  # noqa: F811
    """An id that is not this client's contact is 404, and the list stays as it was."""
    kok = _record(world)["contacts"][1]
    url = f"/api/clients/{world.ids['boer']}/contacts"
    items = [_contact_in(kok)]
    answer = world.as_("care").put(url, json={"items": items}, params={"reason": "mistake"})
    assert answer.status_code == 404
    assert len(_record(world)["contacts"]) == 2


def _contact_in(view: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "relation", "keyholder", "reachable", "notify_missed_dose")
    return {**{k: view[k] for k in keys}, "phone": view["phone"] or "", "email": view["email"] or ""}


def test_migration_0011_adds_the_fields_and_keeps_the_contacts_order(db_url: str) -> None:
    """From 0010 the rows stay (fields "", contacts in id order); the downgrade to 0010 drops the columns."""
    upgrade(db_url, "0010")
    engine = make_engine(db_url)
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO clients (id, name, address, district, created_ms, access_notes, care_notes,"
                " system) VALUES (1, 'A', '', '', 0, '', '', false)"
            )
        )
        for cid in (1, 2):
            c.execute(
                text(
                    "INSERT INTO contacts (id, client_id, name, relation, notify_missed_dose)"
                    f" VALUES ({cid}, 1, 'c{cid}', 'family', false)"
                )
            )
    upgrade(db_url, "0011")
    with engine.begin() as c:
        row = c.execute(text("SELECT phone, key_safe_code, gp FROM clients")).one()
        assert tuple(row) == ("", "", "")
        rows = c.execute(text("SELECT id, position, keyholder, reachable FROM contacts ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, 1, False, ""), (2, 2, False, "")]
    downgrade(db_url, "0010")
    columns = {col["name"] for col in inspect(engine).get_columns("contacts")}
    assert "keyholder" not in columns and "name" in columns
    assert "key_safe_code" not in {col["name"] for col in inspect(engine).get_columns("clients")}
    engine.dispose()
    upgrade(db_url)
