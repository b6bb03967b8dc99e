"""Demo data: a few clients of a Dutch home-care team, their devices and the care-station staff."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from central.auth import hash_password
from devices.simulator.device import Credentials
from devices.simulator.fleet import save_fleet
from storage.models import Client, Device
from storage.registry import add_client, add_device, add_user

from .broker import mosquitto_hash

__all__ = ["DEMO_USERS", "seed_demo"]

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


def seed_demo(session: Session, fleet_file: Path, now_ms: int) -> bool:
    """Create the demo registry if the database is empty; (re)write the simulator's credentials file.

    Returns True when the registry was created now.
    """
    created = session.scalars(select(Client.id).limit(1)).first() is None
    if created:
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
        for i, (name, address, district, has_dispenser) in enumerate(_CLIENTS, start=1):
            client = add_client(session, name=name, address=address, district=district, now_ms=now_ms)
            add_device(
                session,
                device_id=f"btn-{i:03d}",
                client_id=client.id,
                kind="alarm_button",
                label="Alarm pendant",
                now_ms=now_ms,
            )
            if i <= 3:  # beeldzorg: a tablet for video contact with the care station
                add_device(
                    session,
                    device_id=f"tv-{i:03d}",
                    client_id=client.id,
                    kind="video",
                    label="Video tablet",
                    now_ms=now_ms,
                )
            if has_dispenser:
                add_device(
                    session,
                    device_id=f"med-{i:03d}",
                    client_id=client.id,
                    kind="dispenser",
                    label="Medication dispenser",
                    now_ms=now_ms,
                )
        log.info("demo: created %d clients and %d users", len(_CLIENTS), len(DEMO_USERS))
    # The simulator needs the devices' passwords, which the database does not keep: issue fresh ones.
    creds = []
    for device, client_name in session.execute(
        select(Device, Client.name).join(Client, Client.id == Device.client_id).order_by(Device.id)
    ):
        password = secrets.token_urlsafe(12)
        session.execute(
            update(Device).where(Device.id == device.id).values(mqtt_password_hash=mosquitto_hash(password))
        )
        creds.append(Credentials(device.id, password, device.kind, client_name))
    save_fleet(fleet_file, creds)
    return created
