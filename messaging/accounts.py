"""Broker accounts: who may connect to the broker and what each may do (Mosquitto's dynamic security).

Device accounts live in Mosquitto's dynamic-security plugin, the broker's own way to manage clients, roles
and client ids while it runs. The database is the source of truth (``devices.mqtt_password_hash``, a
Mosquitto ``$7$`` PBKDF2-SHA512 hash):

- at start, the embedded broker (``carealarm.broker``) loads ``dynamic-security.json`` written from the
  database (:func:`dynsec_config`): the service account as the plugin's admin, and per device a client per
  login (each tied to one client id, its user name) with a role of its own that confines it to its own topic
  tree (docs/protocol.md §1). A video tablet has two logins: its id, and ``{id}/video`` for its video
  endpoint (:func:`video_login`);
- at run time, whichever process provisions, rotates or removes a device (central's admin API, the
  command line) tells the broker over ``$CONTROL/dynamic-security/v1`` as the service account
  (:class:`DynsecAccounts`) and waits for the plugin's answer. So a change takes effect at once whether
  the components run in one process or apart, and on an external broker configured with the plugin.

The plugin's run-time commands take passwords, not hashes, and it reads its file only at start (a SIGHUP
does not reload it): a caller that holds only hashes (tests, benchmarks) restarts the embedded broker
(``EmbeddedBroker.reload``).

Exceptions::

    BrokerError                  the embedded broker could not be started
    └── BrokerAdminError         the broker did not carry out an account change
        └── BrokerUnreachable    no connection as the service account (not running, wrong address, refused)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .mqtt import MqttConfig, make_client

__all__ = [
    "CONTROL_TOPIC",
    "MAX_PACKET_SIZE",
    "SERVICE_ROLE",
    "SERVICE_USER",
    "VIDEO_LOGIN_SUFFIX",
    "BrokerAdminError",
    "BrokerError",
    "BrokerUnreachable",
    "DeviceAccount",
    "DynsecAccounts",
    "device_role",
    "dynsec_config",
    "dynsec_password",
    "login_owner",
    "mosquitto_hash",
    "service_password",
    "verify_mosquitto_hash",
    "video_login",
]

log = logging.getLogger(__name__)

SERVICE_USER = "carealarm"
SERVICE_ROLE = "carealarm-service"
_DEVICE_ROLE = "carealarm-device-"
# A video tablet's second login, for its video endpoint: ``{device id}/video``. A device id never holds a
# '/' (storage.registry), so this name can be no device's id nor a service's (carealarm…), and its owner
# is read back from it without doubt (:func:`login_owner`).
VIDEO_LOGIN_SUFFIX = "/video"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
_RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
# Mosquitto 2's own default iteration count for ``$7$`` (PBKDF2-SHA512) hashes. Every device CONNECT
# verifies one hash; a fleet of 10,000 reconnecting after a broker restart must not stall the broker.
_PBKDF2_ITERATIONS = 101
# The plugin keeps a 64-byte SHA-512 digest and at most 12 bytes of salt (mosquitto_passwd's length); a
# client in its file with anything else is dropped without a word, so such a hash is refused here, loudly.
_DIGEST_BYTES = 64
_MAX_SALT_BYTES = 12
# The largest MQTT packet the broker takes from a client, whole packet: a device payload is at most 4,096
# bytes (protocol MAX_PAYLOAD_BYTES), its topic at most 97 (five levels, a 64-character id), the fixed
# header 5, the packet id 2 and MQTT 5 properties a few more. Twice the payload limit leaves room for every
# legitimate packet (the service's largest, a dynamic-security request for one device, is about 2 KiB)
# while a packet of garbage is refused by the broker, which disconnects the sender, before it reaches
# anyone. Between 4 and 8 KiB the gateway still refuses a payload with a reason (too_large).
MAX_PACKET_SIZE = 8192

# A device's own topics (docs/protocol.md §1) and what it may do with each: send (publish), receive
# (subscribe and be delivered). The roles below are built from this table alone.
_SEND, _RECEIVE = "send", "receive"
_DEVICE_TOPICS: tuple[tuple[str, frozenset[str]], ...] = (
    ("heartbeat", frozenset({_SEND})),
    ("alarm", frozenset({_SEND})),
    ("dose", frozenset({_SEND})),
    ("dispenser", frozenset({_SEND})),
    ("schedule", frozenset({_SEND})),
    ("fault", frozenset({_SEND})),
    ("cmdack", frozenset({_SEND})),
    ("status", frozenset({_SEND, _RECEIVE})),
    ("ack", frozenset({_RECEIVE})),
    ("cmd", frozenset({_RECEIVE})),
)
# As Mosquitto's ACL files did: any subscription is granted and what is delivered is checked against the
# receiver's roles (a device subscribed to ``carealarm/v1/devices/+/ack`` gets its own acks only); nothing
# is published or delivered unless a role allows it. The plugin never falls through to ``$CONTROL``.
_DEFAULT_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": True,
    "unsubscribe": True,
}


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


class BrokerAdminError(BrokerError):
    """The broker did not carry out an account change (no plugin, not its admin, a refused command)."""


class BrokerUnreachable(BrokerAdminError):
    """No connection to the broker as the service account."""


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """Return a Mosquitto 2 password hash (``$7$iterations$salt$digest``) for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(_MAX_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _DIGEST_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(password: str, pw_hash: str) -> bool:
    """True when ``password`` is the one ``pw_hash`` (a ``$7$`` hash) was made from."""
    try:
        fields = dynsec_password(pw_hash)
    except ValueError:
        return False
    salt, digest = base64.b64decode(fields["salt"]), base64.b64decode(fields["password"])
    mine = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, fields["iterations"], _DIGEST_BYTES)
    return hmac.compare_digest(mine, digest)


def service_password(broker_dir: Path) -> str:
    """Return the services' broker password, creating it (mode 0600) on first use."""
    path = broker_dir / "service.secret"
    if not path.exists():
        broker_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def video_login(device_id: str) -> str:
    """The user name (and client id) of a video tablet's video endpoint."""
    return device_id + VIDEO_LOGIN_SUFFIX


def login_owner(username: str) -> str:
    """The device a broker login belongs to: ``x`` for ``x/video``, else the user name itself."""
    return username.removesuffix(VIDEO_LOGIN_SUFFIX)


@dataclass(frozen=True, slots=True)
class DeviceAccount:
    """What the broker must know of one device.

    ``client_id`` is the one MQTT client id the device may connect with (None: any). ``logins``, when
    given, replaces ``(device_id, client_id)``: every (user name, client id) the device connects as, each
    with the same password and the device's role (a video tablet: its id, and :func:`video_login`).
    ``disabled`` refuses every login whatever it presents (a decommissioned device). A bare
    ``(device_id, password_hash)`` pair, as tests and tools pass, stands for an enabled account tied to no
    client id.
    """

    device_id: str
    password_hash: str = ""
    client_id: str | None = None
    disabled: bool = False
    logins: tuple[tuple[str, str | None], ...] = ()

    def all_logins(self) -> tuple[tuple[str, str | None], ...]:
        """Every (user name, client id) of the device."""
        return self.logins or ((self.device_id, self.client_id),)


def dynsec_password(pw_hash: str) -> dict[str, Any]:
    """Mosquitto's ``$7$iterations$salt$digest`` as the plugin's ``password``, ``salt`` and ``iterations``."""
    parts = pw_hash.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        raise ValueError("not a Mosquitto $7$ (PBKDF2-SHA512) hash")
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        digest = base64.b64decode(parts[4], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("a $7$ hash with a bad iteration count or base64") from None
    if iterations < 1 or not 0 < len(salt) <= _MAX_SALT_BYTES or len(digest) != _DIGEST_BYTES:
        raise ValueError(
            f"a $7$ hash the plugin cannot take ({len(salt)}-byte salt, {len(digest)}-byte digest)"
        )
    return {"password": parts[4], "salt": parts[3], "iterations": iterations}


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def device_role(device_id: str) -> dict[str, Any]:
    """The device's own role: its topic tree as docs/protocol.md §1 allows, nothing else.

    The plugin of Mosquitto 2.0 has no ``%u`` in publish ACLs, hence a role per device with literal topics.
    """
    acls = []
    for kind, access in _DEVICE_TOPICS:
        topic = f"carealarm/v1/devices/{device_id}/{kind}"
        if _SEND in access:
            acls.append(_acl("publishClientSend", topic))
        if _RECEIVE in access:
            acls.append(_acl("publishClientReceive", topic))
            # Redundant with the default (any subscription granted), so the role also holds on a broker
            # whose default refuses subscriptions.
            acls.append(_acl("subscribeLiteral", topic))
    return {"rolename": _DEVICE_ROLE + device_id, "acls": acls}


def _service_role() -> dict[str, Any]:
    """The services' role: all of carealarm/, and the plugin's control topics (the service is its admin)."""
    acls = []
    for tree in ("carealarm/#", "$CONTROL/dynamic-security/#"):
        acls += [
            _acl(kind, tree) for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
        ]
    return {"rolename": SERVICE_ROLE, "acls": acls}


def _as_account(item: DeviceAccount | tuple[str, str]) -> DeviceAccount:
    return item if isinstance(item, DeviceAccount) else DeviceAccount(item[0], item[1])


def dynsec_config(service_hash: str, accounts: Iterable[DeviceAccount | tuple[str, str]]) -> dict[str, Any]:
    """The plugin's file: the service account as its admin, and each device's client and role."""
    clients: list[dict[str, Any]] = [
        {"username": SERVICE_USER, **dynsec_password(service_hash), "roles": [{"rolename": SERVICE_ROLE}]}
    ]
    roles = [_service_role()]
    for account in map(_as_account, accounts):
        if account.device_id == SERVICE_USER:
            log.error("broker: a device may not be called %s; it is left out", SERVICE_USER)
            continue
        if account.disabled:
            clients += [{"username": name, "disabled": True, "roles": []} for name, _ in account.all_logins()]
            continue
        try:
            password = dynsec_password(account.password_hash)
        except ValueError as exc:  # the device is refused, and says why in the log
            log.error("broker: device %s cannot connect: its password hash is %s", account.device_id, exc)
            password = {}
        role = device_role(account.device_id)
        for username, client_id in account.all_logins():
            entry: dict[str, Any] = {
                "username": username,
                **password,
                "roles": [{"rolename": role["rolename"]}],
            }
            if client_id:
                entry["clientid"] = client_id
            clients.append(entry)
        roles.append(role)
    return {"defaultACLAccess": dict(_DEFAULT_ACCESS), "clients": clients, "groups": [], "roles": roles}


class DynsecAccounts:
    """Device accounts on a running broker, changed over ``$CONTROL/dynamic-security/v1``.

    Each call opens a short connection as the service account, sends its commands and waits for the plugin's
    answer, so the change has taken effect when the call returns (provisioning is rare; there is no
    connection to keep alive). Blocking: call it from a thread, not the event loop. A failure raises
    :class:`BrokerAdminError` (:class:`BrokerUnreachable` when there was no connection).
    """

    def __init__(self, mqtt: MqttConfig, *, timeout_s: float = 5.0) -> None:
        self.mqtt = mqtt
        self.timeout_s = timeout_s

    def put(self, device_id: str, password: str, *, client_id: str | None) -> None:
        """Let the login ``device_id`` (a device id, or a :func:`video_login`) connect with ``password`` (and
        only ``client_id``, if given) from now on, with its device's role."""
        self.put_many([(device_id, password, client_id)])

    def put_many(self, devices: Sequence[tuple[str, str, str | None]]) -> None:
        """Create each login's device role and client; a client the broker knows already is set to this
        password, client id and role and enabled (a connected one is disconnected)."""
        commands: list[dict[str, Any]] = []
        for username, password, client_id in devices:
            role = device_role(login_owner(username))
            client: dict[str, Any] = {
                "command": "createClient",
                "username": username,
                "password": password,
                "roles": [{"rolename": role["rolename"]}],
            }
            if client_id:
                client["clientid"] = client_id
            commands += [{"command": "createRole", **role}, client]
        answers = self.run(commands)
        again: list[dict[str, Any]] = []
        for (username, password, client_id), (role_answer, client_answer) in zip(
            devices, zip(answers[::2], answers[1::2], strict=True), strict=True
        ):
            _check(role_answer, allowed={"Role already exists"})
            if client_answer.get("error") == "Client already exists":
                again += [
                    {
                        "command": "modifyClient",
                        "username": username,
                        "password": password,
                        "clientid": client_id or "",  # "" unties it
                        "roles": [{"rolename": _DEVICE_ROLE + login_owner(username)}],
                    },
                    {"command": "enableClient", "username": username},
                ]
            else:
                _check(client_answer)
        for answer in self.run(again) if again else []:
            _check(answer)

    def set_password(self, device_id: str, password: str, *, client_id: str | None) -> None:
        """Rotate the login ``device_id``: the broker refuses its old password from now on and disconnects
        it if connected. A login the broker does not know (it missed the provisioning) is created.
        """
        (answer,) = self.run([{"command": "setClientPassword", "username": device_id, "password": password}])
        if answer.get("error") == "Client not found":
            self.put(device_id, password, client_id=client_id)
            return
        _check(answer)

    def revoke(self, device_id: str) -> None:
        """Refuse the login ``device_id`` from now on, whatever it presents; a connected one is disconnected.

        Its client is disabled rather than deleted: a deleted one would leave the decision to whatever else
        the broker checks (a password file beside the plugin), a disabled one is refused by the plugin. Its
        role is left in place: Mosquitto 2.0.11-2.0.15 crash at the next change after a role still held
        by a client is deleted (eclipse-mosquitto/mosquitto#2660); the embedded broker drops it at its
        next start.
        """
        disable = {"command": "disableClient", "username": device_id}
        (disabled,) = self.run([disable])
        if disabled.get("error") == "Client not found":
            created, disabled = self.run([{"command": "createClient", "username": device_id}, disable])
            _check(created, allowed={"Client already exists"})
        _check(disabled)

    def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` (in as few requests as fit a packet); return the plugin's answer to each, in
        order."""
        request = uuid.uuid4().hex[:12]
        tagged = [{**command, "correlationData": f"{request}:{i}"} for i, command in enumerate(commands)]
        wanted = {command["correlationData"] for command in tagged}
        answers: dict[str, dict[str, Any]] = {}
        seen: dict[str, Any] = {}
        client, _ = make_client(self.mqtt, f"carealarm-admin-{request}")
        client.on_connect = lambda _c, _u, _f, reason, _p: seen.__setitem__("connack", reason)
        client.on_subscribe = lambda _c, _u, _m, codes, _p: seen.__setitem__("suback", codes)
        client.on_publish = lambda _c, _u, _m, reason, _p: seen.__setitem__("puback", reason)

        def on_message(_c: object, _u: object, msg: Any) -> None:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            for answer in body.get("responses", []) if isinstance(body, dict) else []:
                if isinstance(answer, dict) and answer.get("correlationData") in wanted:
                    answers[answer["correlationData"]] = answer

        client.on_message = on_message
        deadline = time.monotonic() + self.timeout_s
        where = f"{self.mqtt.host}:{self.mqtt.port}"
        try:
            client.connect(self.mqtt.host, self.mqtt.port, keepalive=30)
        except OSError as exc:
            raise BrokerUnreachable(f"no connection to the broker at {where}: {exc}") from None
        try:
            _until(
                client,
                lambda: "connack" in seen,
                deadline,
                f"an answer to CONNECT from {where}",
                unreachable=True,
            )
            if getattr(seen["connack"], "is_failure", False):
                raise BrokerUnreachable(
                    f"the broker at {where} refused {self.mqtt.username}: {seen['connack']}"
                )
            client.subscribe(_RESPONSE_TOPIC, qos=0)
            _until(client, lambda: "suback" in seen, deadline, "SUBACK")
            if any(getattr(code, "is_failure", False) for code in seen["suback"]):
                raise BrokerAdminError(f"{self.mqtt.username} may not read {_RESPONSE_TOPIC}: {_NOT_ADMIN}")
            for request_body in _requests(tagged):
                seen.pop("puback", None)
                client.publish(CONTROL_TOPIC, request_body, qos=1)
                _until(client, lambda: "puback" in seen, deadline, "PUBACK")
                if getattr(seen["puback"], "is_failure", False):
                    raise BrokerAdminError(f"the broker refused the request ({seen['puback']}): {_NOT_ADMIN}")
            _until(client, lambda: len(answers) == len(wanted), deadline, f"an answer on {_RESPONSE_TOPIC}")
        finally:
            client.disconnect()
            leftover = client.socket()  # still open when the broker never answered CONNECT
            if leftover is not None:
                leftover.close()
        return [answers[command["correlationData"]] for command in tagged]


def _requests(commands: list[dict[str, Any]]) -> list[bytes]:
    """The commands as request payloads, each well under the broker's packet limit (the plugin carries out a
    request's commands in order, and the requests are sent in order)."""
    requests: list[list[dict[str, Any]]] = [[]]
    size = 0
    for command in commands:
        length = len(json.dumps(command)) + 2
        if requests[-1] and size + length > MAX_PACKET_SIZE * 3 // 4:
            requests.append([])
            size = 0
        requests[-1].append(command)
        size += length
    return [json.dumps({"commands": batch}).encode() for batch in requests if batch]


_NOT_ADMIN = (
    "is Mosquitto's dynamic-security plugin loaded, and does the service account have the "
    f"{SERVICE_ROLE} role? (docs/operations.md, 'The broker')"
)


def _until(
    client: Any, done: Callable[[], bool], deadline: float, what: str, *, unreachable: bool = False
) -> None:
    while not done():
        if time.monotonic() >= deadline:
            error = BrokerUnreachable if unreachable else BrokerAdminError
            hint = "" if unreachable else f"; {_NOT_ADMIN}"
            raise error(f"no {what} in time{hint}")
        client.loop(timeout=0.05)


def _check(answer: dict[str, Any], *, allowed: frozenset[str] | set[str] = frozenset()) -> None:
    error = answer.get("error")
    if error and error not in allowed:
        raise BrokerAdminError(f"{answer.get('command')}: {error}")
