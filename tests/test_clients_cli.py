"""``carealarm clients edit`` and ``carealarm contacts add|list|remove`` (#14 item 2): the same changes as
the console, on behalf of a named user, under the same role and district rules, each audited."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select

from carealarm.cli import main
from storage.db import make_engine, make_session_factory
from storage.models import Client, Contact
from storage.records_models import AuditEntry
from storage.registry import add_client, add_user

NOW = 1_800_000_000_000


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """An embedded database: a care nurse, a Zuid district nurse, a client in Zuid and one in Noord."""
    monkeypatch.setenv("CAREALARM_DATA_DIR", str(tmp_path))
    assert main(["db", "upgrade"]) == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'carealarm.sqlite3'}")
    with make_session_factory(engine).begin() as s:
        for username, role, district in (("anna", "care_nurse", ""), ("fatima", "district_nurse", "Zuid")):
            add_user(
                s,
                username=username,
                display_name=username,
                role=role,
                district=district,
                password_hash="x",
                now_ms=NOW,
            )
        zuid = add_client(s, name="Mevr. Zuid", district="Zuid", now_ms=NOW).id
        noord = add_client(s, name="Dhr. Noord", district="Noord", now_ms=NOW).id
    engine.dispose()
    return {"zuid": zuid, "noord": noord}


def _db(tmp_path: Path) -> tuple[list[AuditEntry], Client, list[Contact]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'carealarm.sqlite3'}")
    with make_session_factory(engine)() as s:
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        client = s.scalars(select(Client).where(Client.name == "Mevr. Zuid")).one()
        contacts = list(s.scalars(select(Contact).order_by(Contact.position)))
        s.expunge_all()
    engine.dispose()
    return rows, client, contacts


def test_clients_edit_sets_the_fields_and_audits_their_names(
    data: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`clients edit ID --phone --gp --key-safe-stdin` stores them; the audit row names fields, not values."""
    monkeypatch.setattr("sys.stdin", io.StringIO("9876\n"))
    args = ["clients", "edit", str(data["zuid"]), "--by", "anna", "--phone", "038 1", "--gp", "Dr. Kok"]
    assert main([*args, "--key-safe-stdin"]) == 0
    assert "changed gp, key_safe_code, phone" in capsys.readouterr().out
    rows, client, _ = _db(tmp_path)
    assert (client.phone, client.gp, client.key_safe_code) == ("038 1", "Dr. Kok", "9876")
    [row] = [r for r in rows if r.action == "client.edit"]
    assert (row.detail, row.reason) == ("changed: gp, key_safe_code, phone", "command line")
    assert "9876" not in row.detail


def test_contacts_add_list_remove(
    data: dict[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Contacts are added at the end, listed in order with keyholders marked, and removed; each audited."""
    client = str(data["zuid"])
    assert main(["contacts", "add", client, "--by", "fatima", "--name", "Els", "--phone", "06 1"]) == 0
    keyholder = ["--name", "Kees", "--relation", "neighbour", "--keyholder", "--reachable", "evenings"]
    assert main(["contacts", "add", client, "--by", "fatima", *keyholder]) == 0
    capsys.readouterr()
    assert main(["contacts", "list", client, "--by", "fatima"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1. [") and "Els (family) 06 1" in lines[0]
    assert "Kees (neighbour) - evenings keyholder" in lines[1]
    _, _, contacts = _db(tmp_path)
    assert main(["contacts", "remove", client, str(contacts[0].id), "--by", "fatima"]) == 0
    rows, _, contacts = _db(tmp_path)
    assert [c.name for c in contacts] == ["Kees"]
    actions = [r.action for r in rows]
    assert actions == [
        "client.contact.add",
        "client.contact.add",
        "client.contacts.read",
        "client.contacts.change",
    ]


def test_the_district_and_the_rules_of_the_api_hold(
    data: dict[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another district's client, an unknown user and a date that is no date are refused (exit 1)."""
    assert main(["clients", "edit", str(data["noord"]), "--by", "fatima", "--pets", "dog"]) == 1
    assert "outside the district of fatima" in capsys.readouterr().err
    assert main(["clients", "edit", str(data["zuid"]), "--by", "nobody", "--pets", "dog"]) == 1
    assert main(["clients", "edit", str(data["zuid"]), "--by", "anna", "--birth-date", "1938-02-30"]) == 1
    assert main(["contacts", "remove", str(data["zuid"]), "999", "--by", "anna"]) == 1
    rows, client, _ = _db(tmp_path)
    assert (client.pets, client.birth_date, rows) == ("", "", [])
