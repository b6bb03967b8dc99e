"""Demo data: a few clients of a Dutch home-care team, their devices and the care-station staff.

Seeding happens once, into an empty database; a later start never touches the registry. In particular it
never issues new broker passwords: every device (demo or not) keeps the one it was given. The simulated
fleet's passwords are written to the fleet file when the demo devices are created and reused from there.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from central.auth import hash_password
from devices.simulator.device import Credentials
from devices.simulator.fleet import load_fleet, save_fleet
from messaging.accounts import BrokerAdminError, DynsecAccounts, verify_mosquitto_hash
from messaging.mqtt import MqttConfig
from storage.db import SessionFactory
from storage.models import Client, Contact, Device
from storage.registry import add_client, add_device, add_user, broker_logins

from .settings import Settings

__all__ = ["DEMO_USERS", "DemoSeed", "demo_device_ids", "seed_demo", "start_demo"]

# An external broker that does not answer must not hold up the start for long (the demo runs without it).
_EXTERNAL_BROKER_TIMEOUT_S = 3.0

log = logging.getLogger(__name__)

# (username, password, display name, role, district) — development only; `carealarm run` refuses to seed
# these in production.
DEMO_USERS = (
    ("nurse", "nurse", "Anna de Vries", "care_nurse", ""),
    ("nurse2", "nurse2", "Joost Bakker", "care_nurse", ""),
    ("supervisor", "supervisor", "Mirjam Visser", "supervisor", ""),
    ("wijk", "wijk", "Fatima El Amrani", "district_nurse", "Zwolle-Zuid"),
)

_CLIENTS = (
    ("Mevr. J. (Johanna) Jansen", "Assendorperstraat 12, Zwolle", "Zwolle-Zuid", True),
    ("Dhr. P. (Piet) de Boer", "Thorbeckegracht 40, Zwolle", "Zwolle-Centrum", True),
    ("Mevr. W. (Wilhelmina) Smit", "Dobbestraat 3, Zwolle", "Zwolle-Zuid", False),
    ("Dhr. H. (Henk) Mulder", "Wipstrikkerallee 88, Zwolle", "Zwolle-Oost", True),
    ("Mevr. A. (Aaltje) Bos", "Kamperpoort 5, Zwolle", "Zwolle-Centrum", False),
    ("Dhr. G. (Gerrit) Meijer", "Stadshagenallee 21, Zwolle", "Stadshagen", True),
)


# What the record says of the first clients, so the demo's record page, handling and key-safe reveal have
# something to show (invented people; 06-1234xxxx numbers are not in use).
_RECORDS: dict[int, dict[str, str]] = {
    1: {
        "phone": "038 123 4501",
        "birth_date": "1936-11-05",
        "language": "Nederlands",
        "gp": "Huisartsenpraktijk Assendorp, 038 123 9900",
        "pharmacy": "Apotheek Zwolle-Zuid",
        "conditions": "Hartfalen, diabetes type 2",
        "allergies": "Penicilline",
        "mobility": "Rollator; valt soms 's nachts",
        "access_notes": "Sleutelkluis links van de voordeur",
        "key_safe_code": "4711",
        "care_notes": "Slechthorend: spreek langzaam en duidelijk.",
    },
    2: {
        "phone": "038 123 4502",
        "birth_date": "1941-02-17",
        "gp": "Huisarts Van Dijk, 038 123 9911",
        "conditions": "COPD",
        "pets": "Kat (Minoes)",
        "access_notes": "Buurvrouw op nr. 38 heeft een sleutel",
    },
}
# (client number, name, relation, phone, keyholder, when reachable, gets missed-dose messages)
_CONTACTS = (
    (1, "Els Jansen (dochter)", "informal_carer", "06 1234 0001", True, "werkdagen na 17:00, weekend", True),
    (1, "Kees Jansen (zoon)", "family", "06 1234 0002", False, "altijd", False),
    (2, "Mevr. Hoekstra (buurvrouw)", "other", "06 1234 0003", True, "overdag", False),
)


def _demo_devices() -> list[tuple[int, str, str, str]]:
    """(client number, device id, kind, label) of every demo device."""
    devices = []
    for i, (_name, _address, _district, has_dispenser) in enumerate(_CLIENTS, start=1):
        devices.append((i, f"btn-{i:03d}", "alarm_button", "Alarm pendant"))
        if i <= 3:  # beeldzorg: a tablet for video contact with the care station
            devices.append((i, f"tv-{i:03d}", "video", "Video tablet"))
        if has_dispenser:
            devices.append((i, f"med-{i:03d}", "dispenser", "Medication dispenser"))
    return devices


def demo_device_ids() -> list[str]:
    return [device_id for _i, device_id, _kind, _label in _demo_devices()]


@dataclass(frozen=True)
class DemoSeed:
    """What ``seed_demo`` did, and whether the simulated fleet can run."""

    created: bool  # the demo registry was created now
    issued: tuple[Credentials, ...]  # the passwords issued now (only when created; also in the fleet file)
    fleet_ready: bool  # the fleet file is there for the simulator
    fleet_problem: str | None  # what is wrong with the fleet file and how to fix it (said at start)


def start_demo(sessions: SessionFactory, settings: Settings, now_ms: int) -> bool:
    """Seed the demo (``seed_demo``), tell an external broker of the devices created now, and say on
    standard error what keeps the simulated fleet from running. Return whether its fleet file is there."""
    fleet_file = settings.data_dir / "fleet.json"
    with sessions.begin() as session:
        seed = seed_demo(session, fleet_file, now_ms)
    if seed.created and settings.mqtt_url:  # the embedded broker loads them from the database at its start
        ca = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
        broker = DynsecAccounts(
            MqttConfig.from_url(settings.mqtt_url, ca_file=ca), timeout_s=_EXTERNAL_BROKER_TIMEOUT_S
        )
        try:
            broker.put_many(
                [
                    (username, c.password, client_id)
                    for c in seed.issued
                    for username, client_id in broker_logins(c.device_id, c.kind)
                ]
            )
        except BrokerAdminError as exc:
            print(
                f"carealarm: the broker was not told of the demo devices: {exc}", file=sys.stderr, flush=True
            )
    if seed.fleet_problem:
        print(f"carealarm: {seed.fleet_problem}", file=sys.stderr, flush=True)
    return seed.fleet_ready


def seed_demo(session: Session, fleet_file: Path, now_ms: int) -> DemoSeed:
    """Create the demo registry and its fleet file if the database is empty; otherwise change nothing and
    check that the fleet file's passwords are still the devices' own."""
    # The service's own probe client does not make a database non-empty.
    if session.scalars(select(Client.id).where(Client.system.is_(False)).limit(1)).first() is not None:
        return _check_fleet(session, fleet_file)
    for username, password, display, role, district in DEMO_USERS:
        add_user(
            session,
            username=username,
            display_name=display,
            role=role,
            password_hash=hash_password(password),
            district=district,
            now_ms=now_ms,
        )
    clients = [
        add_client(session, name=name, address=address, district=district, now_ms=now_ms)
        for name, address, district, _has_dispenser in _CLIENTS
    ]
    for number, fields in _RECORDS.items():
        for name, value in fields.items():
            setattr(clients[number - 1], name, value)
    for position, (number, name, relation, phone, keyholder, reachable, doses) in enumerate(_CONTACTS):
        contact = Contact(client_id=clients[number - 1].id, name=name, relation=relation, phone=phone)
        contact.position, contact.keyholder, contact.reachable = position, keyholder, reachable
        contact.notify_missed_dose = doses
        session.add(contact)
    creds = []
    for i, device_id, kind, label in _demo_devices():
        client = clients[i - 1]
        _device, password = add_device(
            session, device_id=device_id, client_id=client.id, kind=kind, label=label, now_ms=now_ms
        )
        creds.append(Credentials(device_id, password, kind, client.name))
    save_fleet(fleet_file, creds)
    log.info("demo: created %d clients and %d users; fleet in %s", len(_CLIENTS), len(DEMO_USERS), fleet_file)
    return DemoSeed(created=True, issued=tuple(creds), fleet_ready=True, fleet_problem=None)


def _check_fleet(session: Session, fleet_file: Path) -> DemoSeed:
    live = {
        device.id: device
        for device in session.scalars(select(Device).where(Device.decommissioned_ms.is_(None)))
    }
    if not fleet_file.exists():
        ids = [device_id for device_id in demo_device_ids() if device_id in live]
        return DemoSeed(
            created=False,
            issued=(),
            fleet_ready=False,
            fleet_problem=(
                f"{fleet_file} is missing, and the database's devices keep their broker passwords (a start "
                "never issues new ones), so the simulated fleet cannot run. To give the demo devices new "
                "passwords and write them there: carealarm devices rotate "
                f"{' '.join(ids) or 'DEVICE_ID ...'} --fleet {fleet_file}"
            ),
        )
    stale = [
        c.device_id
        for c in load_fleet(fleet_file)
        if c.device_id not in live
        or not verify_mosquitto_hash(c.password, live[c.device_id].mqtt_password_hash)
    ]
    problem = None
    if stale:
        rotatable = " ".join(s for s in stale if s in live) or "..."
        problem = (
            f"the simulated devices {' '.join(stale)} cannot connect: their passwords in {fleet_file} are "
            "not the ones in the database (rotated, removed, or another database). To give them new ones: "
            f"carealarm devices rotate {rotatable} --fleet {fleet_file}"
        )
    return DemoSeed(created=False, issued=(), fleet_ready=True, fleet_problem=problem)
