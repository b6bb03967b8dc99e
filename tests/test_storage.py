"""The system of record on SQLite and PostgreSQL: migrations, idempotent storage, alerts and their actions."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, inspect, select

from care.alert_store import apply_action
from care.alerts import Action, IllegalTransition
from central.auth import hash_password
from gateway.ingest import Inbound, plan_batch
from gateway.store import known_device_ids, store_plan
from monitor.events import handle_pending_events
from storage.db import SessionFactory, downgrade, make_engine, upgrade
from storage.models import Alert, AlertChange, DeadLetter, DeviceEvent
from storage.registry import RegistryError, add_client, add_device, add_user

NOW = 1_800_000_000_000


def _register(sessions: SessionFactory) -> tuple[int, int]:
    with sessions.begin() as s:
        client = add_client(s, name="Mevr. Test", now_ms=NOW)
        add_device(s, device_id="btn-1", client_id=client.id, kind="alarm_button", now_ms=NOW)
        user = add_user(
            s,
            username="n",
            display_name="Nurse",
            role="care_nurse",
            password_hash=hash_password("pw"),
            now_ms=NOW,
        )
        return client.id, user.id


def _alarm(msg_id: str, device: str = "btn-1") -> Inbound:
    payload = f'{{"msg_id":"{msg_id}","ts":{NOW}}}'.encode()
    return Inbound(f"carealarm/v1/devices/{device}/alarm", payload, 1, 1, NOW)


def _store(sessions: SessionFactory, *inbound: Inbound) -> set[tuple[str, str]]:
    with sessions.begin() as s:
        known = known_device_ids(s)
        return store_plan(s, plan_batch(inbound, known.__contains__, NOW), [])


def test_migrations_create_every_table_and_downgrade_cleanly(db_url: str) -> None:
    """Alembic upgrade creates the schema; downgrade to base removes it; upgrade again works."""
    upgrade(db_url)
    engine = make_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {
        "clients",
        "devices",
        "users",
        "device_events",
        "dead_letters",
        "alerts",
        "alert_changes",
    } <= tables
    downgrade(db_url, "base")
    assert "alerts" not in set(inspect(engine).get_table_names())
    engine.dispose()
    upgrade(db_url)


def test_same_message_twice_is_stored_once(sessions: SessionFactory) -> None:
    """A resent (device, msg_id) is stored once, in one batch or across batches."""
    _register(sessions)
    assert _store(sessions, _alarm("m1"), _alarm("m1")) == {("btn-1", "m1")}
    assert _store(sessions, _alarm("m1")) == set()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(DeviceEvent)) == 1


def test_bad_and_unknown_messages_become_dead_letters(sessions: SessionFactory) -> None:
    """Malformed JSON and unknown devices are kept with their raw bytes and reason."""
    _register(sessions)
    bad = Inbound("carealarm/v1/devices/btn-1/alarm", b"{oops", 2, 1, NOW)
    _store(sessions, bad, _alarm("x1", device="ghost-9"))
    with sessions() as s:
        letters = {(d.reason, d.device_id, d.payload) for d in s.scalars(select(DeadLetter))}
    assert ("bad_json", "btn-1", b"{oops") in letters
    assert any(reason == "unknown_device" and dev == "ghost-9" for reason, dev, _ in letters)


def test_alarm_event_opens_one_alert_and_repeats_count(sessions: SessionFactory) -> None:
    """The first alarm opens a critical alert; a second one while it is open raises its count."""
    client_id, _ = _register(sessions)
    _store(sessions, _alarm("m1"))
    with sessions.begin() as s:
        assert handle_pending_events(s, NOW + 10).handled == 1
    _store(sessions, _alarm("m2"))
    with sessions.begin() as s:
        assert handle_pending_events(s, NOW + 20).handled == 1
        assert handle_pending_events(s, NOW + 30).handled == 0
    with sessions() as s:
        alerts = list(s.scalars(select(Alert)))
        changes = [c.change for c in s.scalars(select(AlertChange).order_by(AlertChange.seq))]
    assert len(alerts) == 1
    assert (alerts[0].client_id, alerts[0].priority, alerts[0].count, alerts[0].state) == (
        client_id,
        1,
        2,
        "open",
    )
    assert changes == ["opened", "repeated"]


def test_acknowledge_then_resolve_records_who_and_when(sessions: SessionFactory) -> None:
    """Acknowledge and resolve record the actor, the times and the outcome, with one change row each."""
    _, user_id = _register(sessions)
    _store(sessions, _alarm("m1"))
    with sessions.begin() as s:
        handle_pending_events(s, NOW)
        alert_id = s.scalars(select(Alert.id)).one()
    with sessions.begin() as s:
        acked = apply_action(
            s, alert_id=alert_id, action=Action.ACKNOWLEDGE, actor_id=user_id, now_ms=NOW + 42_000
        )
    assert (acked.state, acked.acknowledged_by, acked.acknowledged_ms) == (
        "acknowledged",
        user_id,
        NOW + 42_000,
    )
    with sessions.begin() as s:
        done = apply_action(
            s,
            alert_id=alert_id,
            action=Action.RESOLVE,
            actor_id=user_id,
            now_ms=NOW + 99_000,
            outcome="talked_to_client",
        )
    assert (done.state, done.outcome) == ("resolved", "talked_to_client")
    with sessions.begin() as s, pytest.raises(IllegalTransition):
        apply_action(s, alert_id=alert_id, action=Action.ACKNOWLEDGE, actor_id=user_id, now_ms=NOW + 100_000)


def test_new_alert_after_resolve(sessions: SessionFactory) -> None:
    """Once resolved, the next alarm of the same client opens a new alert (not a repeat of the old)."""
    _, user_id = _register(sessions)
    _store(sessions, _alarm("m1"))
    with sessions.begin() as s:
        handle_pending_events(s, NOW)
        first = s.scalars(select(Alert.id)).one()
        apply_action(
            s, alert_id=first, action=Action.RESOLVE, actor_id=user_id, now_ms=NOW, outcome="false_alarm"
        )
    _store(sessions, _alarm("m2"))
    with sessions.begin() as s:
        handle_pending_events(s, NOW + 1)
    with sessions() as s:
        assert [a.state for a in s.scalars(select(Alert).order_by(Alert.id))] == ["resolved", "open"]


def test_acknowledge_and_resolve_at_once_have_one_outcome(sessions: SessionFactory) -> None:
    """Two consoles acting on one alert at the same moment: both actions apply in some order, once each,
    or the later is refused; the alert never ends acknowledged-after-resolved, and no change is lost."""
    _, user_id = _register(sessions)
    _store(sessions, _alarm("m1"))
    with sessions.begin() as s:
        handle_pending_events(s, NOW)
        alert_id = s.scalars(select(Alert.id)).one()
    results: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def act(action: Action) -> None:
        barrier.wait()
        try:
            with sessions.begin() as s:
                apply_action(
                    s,
                    alert_id=alert_id,
                    action=action,
                    actor_id=user_id,
                    now_ms=NOW + 5,
                    outcome="other" if action is Action.RESOLVE else None,
                )
            results[action.value] = "applied"
        except IllegalTransition:
            results[action.value] = "refused"

    threads = [threading.Thread(target=act, args=(a,)) for a in (Action.ACKNOWLEDGE, Action.RESOLVE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sessions() as s:
        alert = s.get(Alert, alert_id)
        changes = [c.change for c in s.scalars(select(AlertChange).order_by(AlertChange.seq))]
    assert alert is not None and alert.state == "resolved"
    assert results["resolve"] == "applied"
    expected = (
        ["opened", "acknowledged", "resolved"]
        if results["acknowledge"] == "applied"
        else ["opened", "resolved"]
    )
    assert changes == expected


def test_registry_refuses_duplicates_and_bad_ids(sessions: SessionFactory) -> None:
    """Provisioning refuses a second device with the same id, a bad id and an unknown kind."""
    client_id, _ = _register(sessions)
    with sessions.begin() as s:
        with pytest.raises(RegistryError, match="exists"):
            add_device(s, device_id="btn-1", client_id=client_id, kind="alarm_button", now_ms=NOW)
        with pytest.raises(RegistryError, match="device id"):
            add_device(s, device_id="a/b", client_id=client_id, kind="alarm_button", now_ms=NOW)
        with pytest.raises(RegistryError, match="kind"):
            add_device(s, device_id="x-1", client_id=client_id, kind="toaster", now_ms=NOW)


def test_migrations_match_the_models(db_url: str) -> None:
    """After `upgrade`, Alembic finds no difference between the database and the ORM models."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from storage.models import Base

    upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
