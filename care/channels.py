"""Channels that carry a notification to a person off the console: e-mail over SMTP and a signed webhook.

A channel sends one message and either returns or raises; retries, backoff and bookkeeping belong to
``care.notifier``. ``FakeChannel`` is the in-repo fake for unit tests.

Exceptions::

    ChannelError(RuntimeError)   a send failed (refused, timed out, non-2xx answer); the notifier retries
    ValueError                   a channel cannot be built from the settings given (refused at start-up)

Webhook signature, for receivers
--------------------------------
Each POST carries ``X-Carealarm-Timestamp: <unix seconds>`` and
``X-Carealarm-Signature: sha256=<hex>``, where ``<hex>`` is HMAC-SHA256, keyed with the shared secret
(UTF-8), of the bytes ``<timestamp> + "." + <raw request body>``. A receiver:

1. reads the raw body bytes *before* parsing any JSON (re-serialising changes the bytes);
2. recomputes the HMAC and compares it with the header's hex in constant time
   (``hmac.compare_digest``), refusing the request (401) on a mismatch or a missing header;
3. refuses a timestamp more than 5 minutes away from its own clock, so that a captured request cannot be
   replayed later (the timestamp is covered by the signature, so it cannot be altered);
4. deduplicates on the JSON ``id``: after a crash of carealarm mid-send the same notification can arrive
   twice (see ``care.notifier.recover_stuck``).

``verify_webhook_signature`` below does steps 2 and 3 for Python receivers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Protocol

from .errors import CareError

log = logging.getLogger(__name__)

__all__ = [
    "SIGNATURE_TOLERANCE_S",
    "Channel",
    "ChannelError",
    "EmailChannel",
    "FakeChannel",
    "NotificationMessage",
    "WebhookChannel",
    "channels_from_settings",
    "send_now",
    "sign_webhook",
    "verify_webhook_signature",
]

# How far a webhook timestamp may be from the receiver's clock: long enough for clock skew and a slow
# network, short enough that a captured request is useless soon after.
SIGNATURE_TOLERANCE_S = 300
_USER_AGENT = "carealarm-webhook/1"


class ChannelError(CareError, RuntimeError):
    """A message could not be handed over; the notifier retries it later."""


@dataclass(frozen=True, slots=True)
class NotificationMessage:
    """What a channel needs of one ``notifications`` row."""

    id: int
    alert_id: int
    level: int
    channel: str
    recipient: str
    subject: str
    body: str


class Channel(Protocol):
    """Hands one message to the outside world."""

    name: str

    def send(self, message: NotificationMessage) -> None:
        """Deliver ``message`` or raise ``ChannelError``."""
        ...


class EmailChannel:
    """Plain-text UTF-8 e-mail through an SMTP relay (smtplib; STARTTLS and login when configured)."""

    name: str = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        timeout_s: float = 10,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout_s = timeout_s

    def build(self, message: NotificationMessage) -> EmailMessage:
        """Return the e-mail for ``message`` (separate from sending so that it can be inspected)."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.recipient
        # A header may not span lines; a subject built from device or client data must not break it.
        mail["Subject"] = " ".join(message.subject.split())
        mail["Date"] = formatdate(usegmt=True)
        # Random, not derived from the notification id alone: a mail service that sees a Message-ID again
        # may drop the message as a duplicate, and ids repeat across databases (a rebuilt test system).
        mail["Message-ID"] = make_msgid(idstring=f"carealarm.{message.id}", domain=self._domain())
        mail["X-Carealarm-Notification"] = str(message.id)
        mail.set_content(message.body, charset="utf-8")
        return mail

    def send(self, message: NotificationMessage) -> None:
        try:
            mail = self.build(message)
        except ValueError as exc:  # a recipient or header the e-mail library refuses
            raise ChannelError(f"cannot build e-mail: {exc}") from exc
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(mail, from_addr=parseaddr(self.sender)[1], to_addrs=[message.recipient])
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"smtp {self.host}:{self.port}: {exc.__class__.__name__}: {exc}") from exc

    def _domain(self) -> str:
        # make_msgid() without a domain asks the resolver for this host's FQDN, which can hang.
        return parseaddr(self.sender)[1].rpartition("@")[2] or "carealarm.invalid"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without the body; a 2xx from there would be a false
    # success. A webhook URL that redirects is a configuration error and must show as a failure.
    def redirect_request(self, *_args: object, **_kwargs: object) -> None:
        return None


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``X-Carealarm-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify_webhook_signature(
    secret: str,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    now_s: float,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
) -> bool:
    """Return True when a received webhook is signed with ``secret`` and its timestamp is recent."""
    if not timestamp_header or not signature_header or not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    if abs(now_s - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign_webhook(secret, timestamp, body), signature_header)


class WebhookChannel:
    """POST the notification as JSON, signed with HMAC-SHA256 (see the module docstring)."""

    name: str = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        timeout_s: float = 5,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            # urllib would also open file:// and ftp:// URLs; a webhook is HTTP only.
            raise ValueError(f"webhook URL must be http:// or https://, not {url!r}")
        if not secret:
            raise ValueError("a webhook needs a secret to sign with")
        self.url = url
        self._secret = secret
        self.timeout_s = timeout_s
        self._clock_s = clock_s
        self._opener = urllib.request.build_opener(_NoRedirect())

    def request(self, message: NotificationMessage) -> urllib.request.Request:
        """Return the signed HTTP request for ``message``."""
        body = json.dumps(
            {
                "id": message.id,
                "alert_id": message.alert_id,
                "level": message.level,
                "recipient": message.recipient,
                "subject": message.subject,
                "body": message.body,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        timestamp = int(self._clock_s())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            "X-Carealarm-Timestamp": str(timestamp),
            "X-Carealarm-Signature": sign_webhook(self._secret, timestamp, body),
        }
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def send(self, message: NotificationMessage) -> None:
        try:
            with self._opener.open(self.request(message), timeout=self.timeout_s) as response:
                status = int(response.status)
                response.read(4096)  # let the server finish its answer before we hang up
        except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx
            exc.close()
            raise ChannelError(f"webhook {self._safe_url()}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ChannelError(f"webhook {self._safe_url()}: {exc.__class__.__name__}: {exc}") from exc
        if not 200 <= status < 300:
            raise ChannelError(f"webhook {self._safe_url()}: HTTP {status}")

    def _safe_url(self) -> str:
        # The URL may carry a token in its query or credentials; errors end up in the database and logs.
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


class FakeChannel:
    """Records what it is given; ``fail_next(n)`` makes the next ``n`` sends raise ``ChannelError``."""

    def __init__(self, name: str = "fake", on_send: Callable[[NotificationMessage], None] | None = None):
        self.name = name
        self.sent: list[NotificationMessage] = []
        self.attempts = 0
        self._on_send = on_send
        self._failures = 0
        self._lock = threading.Lock()  # the racing-deliverers tests send from two threads

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._failures = n

    def send(self, message: NotificationMessage) -> None:
        if self._on_send is not None:
            self._on_send(message)
        with self._lock:
            self.attempts += 1
            if self._failures > 0:
                self._failures -= 1
                raise ChannelError(f"{self.name}: told to fail")
            self.sent.append(message)


def send_now(channels: dict[str, Channel], emails: list[str], role: str, subject: str, body: str) -> int:
    """Send one message now, outside the notifications table (for pages that must not wait on the database:
    the chain watchdog, the insider watch): by e-mail to each address, and once to the webhook naming
    ``role``. A failure is logged; returns how many went out."""
    messages: list[tuple[Channel, NotificationMessage]] = []
    if "email" in channels:
        messages += [
            (channels["email"], NotificationMessage(0, 0, 0, "email", e, subject, body)) for e in emails
        ]
    if "webhook" in channels:
        messages.append((channels["webhook"], NotificationMessage(0, 0, 0, "webhook", role, subject, body)))
    sent = 0
    for channel, message in messages:
        try:
            channel.send(message)
            sent += 1
        except ChannelError as exc:
            log.error("page to %s failed: %s", message.recipient, exc)
    return sent


class ChannelSettings(Protocol):
    """What the channels read from the program's settings (``carealarm.settings.Settings`` has it all)."""

    @property
    def smtp_host(self) -> str: ...
    @property
    def smtp_port(self) -> int: ...
    @property
    def smtp_from(self) -> str: ...
    @property
    def smtp_username(self) -> str: ...
    @property
    def smtp_password(self) -> str: ...
    @property
    def smtp_starttls(self) -> bool: ...
    @property
    def webhook_url(self) -> str: ...
    @property
    def webhook_secret(self) -> str: ...


def channels_from_settings(settings: ChannelSettings) -> dict[str, Channel]:
    """Build the configured channels by name: e-mail if ``smtp_host`` is set, webhook if ``webhook_url``."""
    channels: dict[str, Channel] = {}
    if settings.smtp_host:
        channels["email"] = EmailChannel(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )
    if settings.webhook_url:
        if not settings.webhook_secret:
            raise ValueError("CAREALARM_WEBHOOK_URL is set: CAREALARM_WEBHOOK_SECRET must be set too")
        channels["webhook"] = WebhookChannel(settings.webhook_url, settings.webhook_secret)
    return channels
