"""Notifications off the console: real SMTP (aiosmtpd) and HTTP receivers, on SQLite and PostgreSQL.

Time is driven through ``now_ms``: backoff is checked by stepping the clock, never by waiting for it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from helpers import free_port
from sqlalchemy import select, update

from care.channels import (
    ChannelError,
    EmailChannel,
    FakeChannel,
    NotificationMessage,
    WebhookChannel,
    channels_from_settings,
    sign_webhook,
    verify_webhook_signature,
)
from care.notifier import (
    MAX_ATTEMPTS,
    SENDING_LEASE_MS,
    Notifier,
    deliver_due,
    gives_up,
    next_try_after,
    recover_stuck,
)
from carealarm.settings import Settings
from storage.db import SessionFactory, make_engine, make_session_factory
from storage.models import Alert, Notification
from storage.registry import add_client

NOW = 1_800_000_000_000
SECRET = "webhook-test-secret-0123456789abcdef"
SENDER = "carealarm@care.example"
MESSAGE = NotificationMessage(1, 2, 1, "webhook", "ops", "Alarm", "Mevr. Jansen pressed her alarm")


# --- real servers -------------------------------------------------------------------------------------


class _Inbox:
    """aiosmtpd handler: keeps each envelope; ``refuse_next`` answers DATA with a temporary failure."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.refuse_next = 0

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return "451 4.3.0 try again later"
        self.envelopes.append(envelope)
        return "250 2.0.0 accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[EmailChannel, _Inbox]]:
    """A real SMTP server on 127.0.0.1 and an e-mail channel pointing at it."""
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, server_hostname="smtp.test")
    controller.start()
    try:
        yield EmailChannel("127.0.0.1", port, SENDER, timeout_s=5), inbox
    finally:
        controller.stop()


@dataclass
class _Receiver:
    """What the HTTP receiver saw: verified payloads, refused requests, and the status it answers."""

    url: str = ""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    """A real HTTP server that verifies the signature as the module docstring tells receivers to."""
    seen = _Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            timestamp = self.headers.get("X-Carealarm-Timestamp", "")
            expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
            fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 300
            signed = hmac.compare_digest(f"sha256={expected}", self.headers.get("X-Carealarm-Signature", ""))
            ok = fresh and signed and self.headers["Content-Type"] == "application/json"
            with seen.lock:
                if ok and seen.status == 200:
                    seen.accepted.append(json.loads(body))
                elif not ok:
                    seen.refused += 1
            status = seen.status if ok else 401
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen.url = f"http://127.0.0.1:{server.server_address[1]}/carealarm"
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- rows -----------------------------------------------------------------------------------------------


def _alert(sessions: SessionFactory) -> int:
    with sessions.begin() as s:
        client = add_client(s, name="Mevr. Jansen", now_ms=NOW)
        alert = Alert(
            client_id=client.id, kind="alarm", priority=1, state="open", opened_ms=NOW, last_event_ms=NOW
        )
        s.add(alert)
        s.flush()
        return alert.id


def _notify(sessions: SessionFactory, alert_id: int, channel: str, recipient: str, **kw: Any) -> int:
    values: dict[str, Any] = {
        "alert_id": alert_id,
        "level": 1,
        "channel": channel,
        "recipient": recipient,
        "subject": "Alarm: Mevr. Jansen",
        "body": "Mevr. Jansen pressed her alarm.\nNiemand heeft gereageerd — please call.",
        "state": "pending",
        "attempts": 0,
        "created_ms": NOW,
        "next_try_ms": NOW,
    }
    values.update(kw)
    with sessions.begin() as s:
        row = Notification(**values)
        s.add(row)
        s.flush()
        return row.id


def _row(sessions: SessionFactory, notification_id: int) -> Notification:
    with sessions() as s:
        row = s.get(Notification, notification_id)
        assert row is not None
        return row


def _webhook(receiver: _Receiver, secret: str = SECRET) -> WebhookChannel:
    return WebhookChannel(receiver.url, secret, timeout_s=5)


# --- pure rules -----------------------------------------------------------------------------------------


def test_backoff_is_1s_5s_30s_2min_10min() -> None:
    """The delays after the first five failures are 1 s, 5 s, 30 s, 2 min and 10 min."""
    assert [next_try_after(n) for n in range(1, 6)] == [1_000, 5_000, 30_000, 120_000, 600_000]


def test_no_retry_after_the_sixth_attempt() -> None:
    """Six failed attempts give up; five do not; there is no delay to ask for after six."""
    assert MAX_ATTEMPTS == 6 and gives_up(6) and not gives_up(5)
    with pytest.raises(ValueError):
        next_try_after(6)
    with pytest.raises(ValueError):
        next_try_after(0)


def test_signature_with_another_secret_does_not_verify() -> None:
    """A body signed with another secret is refused by verify_webhook_signature."""
    body = b'{"id":1}'
    assert verify_webhook_signature(SECRET, body, "1000", sign_webhook(SECRET, 1000, body), 1000)
    assert not verify_webhook_signature(SECRET, body, "1000", sign_webhook("other", 1000, body), 1000)


def test_signature_older_than_five_minutes_does_not_verify() -> None:
    """A correctly signed request whose timestamp is more than 5 minutes old is refused."""
    body = b'{"id":1}'
    assert not verify_webhook_signature(SECRET, body, "1000", sign_webhook(SECRET, 1000, body), 1301)


# --- channels on their own ------------------------------------------------------------------------------


def test_webhook_server_error_raises_channel_error(receiver: _Receiver) -> None:
    """A 5xx answer is a ChannelError naming the status."""
    receiver.status = 503
    with pytest.raises(ChannelError, match="HTTP 503"):
        _webhook(receiver).send(MESSAGE)


def test_webhook_redirect_is_not_followed(receiver: _Receiver) -> None:
    """A redirect is a failure, not a POST silently turned into a GET elsewhere."""
    receiver.status = 302
    with pytest.raises(ChannelError, match="HTTP 302"):
        _webhook(receiver).send(MESSAGE)


def test_webhook_connection_refused_raises_channel_error() -> None:
    """Nothing listening at the URL is a ChannelError."""
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/x", SECRET, timeout_s=2)
    with pytest.raises(ChannelError, match="webhook"):
        channel.send(MESSAGE)


def test_email_connection_refused_raises_channel_error() -> None:
    """No SMTP server at the address is a ChannelError."""
    with pytest.raises(ChannelError, match="smtp"):
        EmailChannel("127.0.0.1", free_port(), SENDER, timeout_s=2).send(MESSAGE)


def test_settings_with_webhook_url_but_no_secret_are_refused() -> None:
    """A webhook URL without a secret is refused at start-up rather than sending unsigned requests."""
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        channels_from_settings(Settings(webhook_url="https://hooks.example/x", webhook_secret=""))


def test_settings_build_only_the_configured_channels() -> None:
    """E-mail comes with smtp_host, the webhook with webhook_url, nothing without either."""
    assert channels_from_settings(Settings(smtp_host="", webhook_url="")) == {}
    both = channels_from_settings(
        Settings(smtp_host="relay.example", webhook_url="https://hooks.example/x", webhook_secret=SECRET)
    )
    assert isinstance(both["email"], EmailChannel) and isinstance(both["webhook"], WebhookChannel)


# --- delivery through the database ----------------------------------------------------------------------


def test_email_is_delivered_with_subject_body_and_recipient(
    sessions: SessionFactory, smtp: tuple[EmailChannel, _Inbox]
) -> None:
    """A due e-mail notification reaches the SMTP server intact and is marked sent."""
    channel, inbox = smtp
    nid = _notify(sessions, _alert(sessions), "email", "nurse@care.example")
    assert deliver_due(sessions, {"email": channel}, NOW) == 1
    [envelope] = inbox.envelopes
    assert envelope.mail_from == SENDER and envelope.rcpt_tos == ["nurse@care.example"]
    mail = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert mail["Subject"] == "Alarm: Mevr. Jansen" and mail["To"] == "nurse@care.example"
    assert mail.get_content().strip().endswith("Niemand heeft gereageerd — please call.")
    assert mail["X-Carealarm-Notification"] == str(nid) and mail["Message-ID"] and mail["Date"]
    row = _row(sessions, nid)
    assert (row.state, row.attempts, row.sent_ms) == ("sent", 1, NOW)


def test_webhook_is_delivered_with_a_valid_signature(sessions: SessionFactory, receiver: _Receiver) -> None:
    """A due webhook notification is POSTed, its signature verifies, and it is marked sent."""
    alert_id = _alert(sessions)
    nid = _notify(sessions, alert_id, "webhook", "ops-room")
    assert deliver_due(sessions, {"webhook": _webhook(receiver)}, NOW) == 1
    assert receiver.refused == 0
    [payload] = receiver.accepted
    assert payload == {
        "id": nid,
        "alert_id": alert_id,
        "level": 1,
        "recipient": "ops-room",
        "subject": "Alarm: Mevr. Jansen",
        "body": "Mevr. Jansen pressed her alarm.\nNiemand heeft gereageerd — please call.",
    }
    assert _row(sessions, nid).state == "sent"


def test_webhook_signed_with_a_wrong_secret_is_refused(sessions: SessionFactory, receiver: _Receiver) -> None:
    """The receiver refuses a request signed with another secret; the notification stays pending."""
    nid = _notify(sessions, _alert(sessions), "webhook", "ops-room")
    deliver_due(sessions, {"webhook": _webhook(receiver, secret="not-the-shared-secret")}, NOW)
    assert receiver.accepted == [] and receiver.refused == 1
    row = _row(sessions, nid)
    assert (row.state, row.attempts, row.next_try_ms) == ("pending", 1, NOW + 1_000)
    assert row.last_error is not None and "HTTP 401" in row.last_error


def test_failing_channel_backs_off_then_fails_for_good(
    sessions: SessionFactory, smtp: tuple[EmailChannel, _Inbox]
) -> None:
    """A server refusing every try is retried after 1 s, 5 s, 30 s, 2 min, 10 min, then marked failed."""
    channel, inbox = smtp
    inbox.refuse_next = 100
    nid = _notify(sessions, _alert(sessions), "email", "nurse@care.example")
    now = NOW
    assert deliver_due(sessions, {"email": channel}, now) == 1
    for delay in (1_000, 5_000, 30_000, 120_000, 600_000):
        assert _row(sessions, nid).next_try_ms == now + delay
        assert deliver_due(sessions, {"email": channel}, now + delay - 1) == 0  # not due yet
        now += delay
        assert deliver_due(sessions, {"email": channel}, now) == 1
    row = _row(sessions, nid)
    assert (row.state, row.attempts, row.sent_ms) == ("failed", 6, None)
    assert row.last_error is not None and "451" in row.last_error
    assert deliver_due(sessions, {"email": channel}, now + 10**9) == 0
    assert inbox.envelopes == []


def test_channel_that_recovers_delivers_on_retry(
    sessions: SessionFactory, smtp: tuple[EmailChannel, _Inbox]
) -> None:
    """Two refusals, then the third try (after 1 s and 5 s) is delivered and counted."""
    channel, inbox = smtp
    inbox.refuse_next = 2
    nid = _notify(sessions, _alert(sessions), "email", "nurse@care.example")
    for now in (NOW, NOW + 1_000, NOW + 6_000):
        assert deliver_due(sessions, {"email": channel}, now) == 1
    row = _row(sessions, nid)
    assert (row.state, row.attempts, row.sent_ms) == ("sent", 3, NOW + 6_000)
    assert len(inbox.envelopes) == 1


def test_cancelled_notification_is_never_sent(
    sessions: SessionFactory, smtp: tuple[EmailChannel, _Inbox]
) -> None:
    """A notification cancelled (alert acknowledged) before its turn is not sent."""
    channel, inbox = smtp
    nid = _notify(sessions, _alert(sessions), "email", "nurse@care.example")
    with sessions.begin() as s:
        s.execute(update(Notification).where(Notification.id == nid).values(state="cancelled"))
    assert deliver_due(sessions, {"email": channel}, NOW) == 0
    assert inbox.envelopes == [] and _row(sessions, nid).state == "cancelled"


def test_acknowledgement_during_a_batch_stops_the_rest(sessions: SessionFactory) -> None:
    """Cancelling while the batch's first message is being sent keeps the second one from going out."""
    alert_id = _alert(sessions)

    def acknowledge(_message: NotificationMessage) -> None:
        with sessions.begin() as s:  # what the acknowledgement does, from another transaction
            s.execute(
                update(Notification)
                .where(Notification.alert_id == alert_id, Notification.state == "pending")
                .values(state="cancelled")
            )

    fake = FakeChannel("email", on_send=acknowledge)
    first = _notify(sessions, alert_id, "email", "a@care.example")
    second = _notify(sessions, alert_id, "email", "b@care.example")
    assert deliver_due(sessions, {"email": fake}, NOW) == 1
    assert [m.id for m in fake.sent] == [first]
    assert (_row(sessions, first).state, _row(sessions, second).state) == ("sent", "cancelled")


def test_two_racing_deliverers_send_each_notification_once(
    sessions: SessionFactory, receiver: _Receiver
) -> None:
    """Two threads delivering the same due rows at once: every notification arrives exactly once."""
    alert_id = _alert(sessions)
    ids = [_notify(sessions, alert_id, "webhook", f"ops-{i}") for i in range(20)]
    channels = {"webhook": _webhook(receiver)}
    start = threading.Barrier(2)
    claimed: list[int] = []

    def deliverer() -> None:
        start.wait(5)
        claimed.append(deliver_due(sessions, channels, NOW))

    threads = [threading.Thread(target=deliverer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(p["id"] for p in receiver.accepted) == ids
    assert sum(claimed) == 20
    with sessions() as s:
        assert set(s.scalars(select(Notification.state))) == {"sent"}


def test_missing_channel_fails_clearly(sessions: SessionFactory) -> None:
    """A notification for a channel that is not configured is failed at once, saying so."""
    nid = _notify(sessions, _alert(sessions), "webhook", "ops-room")
    assert deliver_due(sessions, {"email": FakeChannel("email")}, NOW) == 1
    row = _row(sessions, nid)
    assert (row.state, row.last_error, row.attempts) == ("failed", "channel webhook is not configured", 0)


class _Crash(BaseException):
    """The process dying mid-send (nothing catches a BaseException subclass)."""


def test_send_left_by_a_crash_is_retried_after_the_lease(sessions: SessionFactory) -> None:
    """A row left 'sending' by a crash goes back to pending after 60 s and is then delivered."""
    nid = _notify(sessions, _alert(sessions), "email", "nurse@care.example")

    def crash(_message: NotificationMessage) -> None:
        raise _Crash

    with pytest.raises(_Crash):
        deliver_due(sessions, {"email": FakeChannel("email", on_send=crash)}, NOW)
    assert _row(sessions, nid).state == "sending"
    assert recover_stuck(sessions, NOW + SENDING_LEASE_MS - 1) == 0
    assert recover_stuck(sessions, NOW + SENDING_LEASE_MS) == 1
    fake = FakeChannel("email")
    assert deliver_due(sessions, {"email": fake}, NOW + SENDING_LEASE_MS) == 1
    assert [m.id for m in fake.sent] == [nid] and _row(sessions, nid).state == "sent"


# --- the loop -------------------------------------------------------------------------------------------


def test_notifier_wake_delivers_without_waiting_for_the_interval(sessions: SessionFactory) -> None:
    """wake() from another thread makes the loop deliver at once, though its interval is a minute."""
    nid = _notify(sessions, _alert(sessions), "email", "nurse@care.example", next_try_ms=NOW + 1_000)
    clock = [NOW]
    reads: list[int] = []

    def clock_ms() -> int:
        reads.append(clock[0])
        return clock[0]

    fake = FakeChannel("email")
    notifier = Notifier(sessions=sessions, channels={"email": fake}, interval_s=60, clock_ms=clock_ms)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.run(stop))
        while len(reads) < 2:  # the first round has read its time: the notification was not due then
            await asyncio.sleep(0.01)
        clock[0] = NOW + 1_000
        threading.Thread(target=notifier.wake).start()
        for _ in range(500):
            if fake.sent:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert [m.id for m in fake.sent] == [nid]


def test_notifier_survives_an_unreachable_database(caplog: pytest.LogCaptureFixture) -> None:
    """With the database away the loop logs, backs off and keeps running until stopped."""
    engine = make_engine(f"postgresql+psycopg://carealarm@127.0.0.1:{free_port()}/none")
    notifier = Notifier(sessions=make_session_factory(engine), channels={})

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.run(stop))
        await asyncio.sleep(0.5)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 5)

    with caplog.at_level(logging.ERROR, logger="care.notifier"):
        asyncio.run(main())
    engine.dispose()
    assert sum("database unavailable" in r.getMessage() for r in caplog.records) >= 2


def test_fake_channel_fails_the_next_n_sends() -> None:
    """FakeChannel.fail_next(n) makes exactly the next n sends raise."""
    fake = FakeChannel()
    fake.fail_next(2)
    for _ in range(2):
        with pytest.raises(ChannelError):
            fake.send(MESSAGE)
    fake.send(MESSAGE)
    assert fake.sent == [MESSAGE] and fake.attempts == 3
