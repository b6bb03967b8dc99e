"""A small asyncio MQTT 3.1.1 / 5 client, so one process can hold ten thousand device connections.

paho runs one network thread per client, which does not scale to a fleet. This client is an
:class:`asyncio.Protocol`: no thread, no task per connection, a few kilobytes each. It does what a device
does and nothing more: CONNECT (user name, password, Last Will, keep-alive, clean or persistent session),
PUBLISH at QoS 0 or 1 with PUBACK tracking (unacknowledged QoS 1 packets are sent again with DUP set
after a reconnect), SUBSCRIBE, PINGREQ keep-alive, DISCONNECT. QoS 2 is not implemented: the protocol
uses QoS 1 everywhere.

For the simulator it can also misbehave on purpose: :meth:`MqttClient.abort` drops the network without a
DISCONNECT (the broker then publishes the Will at once), :meth:`MqttClient.freeze` stops all traffic
while the socket stays open (the broker notices after 1.5 x keep-alive).

Exceptions::

    MqttError               every failure of this client
     └── ConnectRefused     the broker answered CONNECT with a non-zero return/reason code
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["ConnectRefused", "MqttClient", "MqttError", "Will", "decode_remaining_length", "encode_packet"]

log = logging.getLogger(__name__)

MQTT_311: Final = 4
MQTT_5: Final = 5

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 1, 2, 3, 4
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 8, 9, 12, 13, 14
# MQTT 5 property identifiers this client writes.
_PROP_SESSION_EXPIRY: Final = 0x11
_PROP_RECEIVE_MAXIMUM: Final = 0x21


class MqttError(Exception):
    """Any failure of the MQTT client (connection lost, protocol error, timeout)."""


class ConnectRefused(MqttError):
    """The broker refused CONNECT; ``code`` is the MQTT 3.1.1 return code or the MQTT 5 reason code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"broker refused the connection (code {code:#04x})")
        self.code = code


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def encode_packet(first_byte: int, body: bytes) -> bytes:
    """Return a whole MQTT packet: fixed header (type/flags byte, remaining length) and ``body``."""
    return bytes((first_byte,)) + _varint(len(body)) + body


def decode_remaining_length(buf: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """Read the variable-length integer at ``start``; return (value, bytes used) or None if incomplete."""
    value, shift = 0, 0
    for i in range(4):
        if start + i >= len(buf):
            return None
        byte = buf[start + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise MqttError("malformed variable-length integer")


class MqttClient(asyncio.Protocol):
    """One MQTT connection (which may be re-established with :meth:`connect` after a loss)."""

    def __init__(
        self,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        will: Will | None = None,
        keepalive_s: int = 30,
        clean: bool = True,
        session_expiry_s: int = 0,
        protocol: int = MQTT_311,
        receive_maximum: int | None = None,
        on_message: Callable[[str, bytes, int, bool], None] | None = None,
        on_lost: Callable[[MqttClient, Exception | None], None] | None = None,
    ) -> None:
        if protocol not in (MQTT_311, MQTT_5):
            raise ValueError("protocol must be 4 (MQTT 3.1.1) or 5 (MQTT 5)")
        self.client_id = client_id
        self.username = username
        self.password = password
        self.will = will
        self.keepalive_s = keepalive_s
        self.clean = clean
        self.session_expiry_s = session_expiry_s
        self.protocol = protocol
        self.receive_maximum = receive_maximum
        self.on_message = on_message
        self.on_lost = on_lost
        self.connected = False
        self.session_present = False
        self.frozen = False
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._connack: asyncio.Future[tuple[bool, int]] | None = None
        # QoS 1 packets sent and not yet PUBACKed: id -> (packet without the DUP flag, future).
        self._inflight: dict[int, tuple[bytes, asyncio.Future[int]]] = {}
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._next_id = 0
        self._last_out = 0.0
        self._ping_timer: asyncio.TimerHandle | None = None
        self._closing = False

    # -- connection ------------------------------------------------------------------------------
    async def connect(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, timeout_s: float = 15.0
    ) -> bool:
        """Open the connection and wait for CONNACK; return the broker's session-present flag."""
        loop = asyncio.get_running_loop()
        self._closing = False
        self.frozen = False
        self._buf.clear()
        self._connack = loop.create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(lambda: self, host, port, ssl=ssl_context)
                present, code = await self._connack
        except (OSError, TimeoutError) as exc:
            self._drop_transport()
            raise MqttError(f"cannot connect to {host}:{port}: {exc!r}") from exc
        if code != 0:
            self._drop_transport()
            raise ConnectRefused(code)
        self.connected = True
        self.session_present = present
        if not self.clean or present:
            # Unacknowledged QoS 1 packets go again, flagged DUP, in their original order.
            for packet, _fut in list(self._inflight.values()):
                self._write(bytes((packet[0] | 0x08,)) + packet[1:])
        else:
            self._fail_inflight(MqttError("session was not kept"))
        self._arm_ping()
        return present

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._connect_packet())
        self._last_out = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        was_connected = self.connected
        self.connected = False
        self._transport = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError(f"connection closed before CONNACK: {exc!r}"))
        for fut in self._subacks.values():
            if not fut.done():
                fut.set_exception(MqttError("connection lost"))
        self._subacks.clear()
        if self.clean:
            self._fail_inflight(MqttError("connection lost"))
        if was_connected and not self._closing and self.on_lost is not None:
            self.on_lost(self, exc)

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker then discards the Will) and close."""
        self._closing = True
        if self._transport is not None and self.connected:
            body = b"\x00" if self.protocol == MQTT_5 else b""
            self._transport.write(encode_packet(_DISCONNECT << 4, body))
            self._transport.close()
        self.connected = False

    def abort(self) -> None:
        """Drop the network like a pulled cable (no DISCONNECT): the broker publishes the Will."""
        self._closing = True
        self.connected = False
        if self._transport is not None:
            self._transport.abort()

    def freeze(self) -> None:
        """Stop every packet in both directions while the socket stays open (a hung device or link)."""
        self.frozen = True
        if self._transport is not None:
            self._transport.pause_reading()

    def thaw(self) -> None:
        self.frozen = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- operations ------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> asyncio.Future[int]:
        """Send a PUBLISH; the future resolves with the PUBACK reason code (QoS 0: at once, with 0).

        A QoS 1 message published while disconnected (persistent session) is kept and sent at the next
        connect; with a clean session it fails.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        if qos not in (0, 1):
            raise ValueError("only QoS 0 and 1 are supported")
        props = b"\x00" if self.protocol == MQTT_5 else b""
        first = (_PUBLISH << 4) | (qos << 1) | int(retain)
        if qos == 0:
            if self.connected and not self.frozen:
                self._write(encode_packet(first, _str(topic) + props + payload))
            fut.set_result(0)
            return fut
        packet_id = self._packet_id()
        packet = encode_packet(first, _str(topic) + struct.pack("!H", packet_id) + props + payload)
        self._inflight[packet_id] = (packet, fut)
        if self.connected and not self.frozen:
            self._write(packet)
        elif self.clean:
            del self._inflight[packet_id]
            fut.set_exception(MqttError("not connected"))
        return fut

    async def subscribe(self, topics: list[tuple[str, int]], timeout_s: float = 10.0) -> list[int]:
        """Subscribe and wait for SUBACK; return the granted QoS / reason code per topic."""
        if self._transport is None or not self.connected:
            raise MqttError("not connected")
        packet_id = self._packet_id()
        body = struct.pack("!H", packet_id) + (b"\x00" if self.protocol == MQTT_5 else b"")
        for topic, qos in topics:
            body += _str(topic) + bytes((qos,))
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._subacks[packet_id] = fut
        self._write(encode_packet((_SUBSCRIBE << 4) | 0x02, body))
        async with asyncio.timeout(timeout_s):
            return await fut

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # -- internals -------------------------------------------------------------------------------
    def _connect_packet(self) -> bytes:
        flags = 0x02 if self.clean else 0
        if self.will is not None:
            flags |= 0x04 | (self.will.qos << 3) | (0x20 if self.will.retain else 0)
        if self.username is not None:
            flags |= 0x80
        if self.password is not None:
            flags |= 0x40
        body = _str("MQTT") + bytes((self.protocol, flags)) + struct.pack("!H", self.keepalive_s)
        if self.protocol == MQTT_5:
            props = b""
            if self.session_expiry_s:
                props += bytes((_PROP_SESSION_EXPIRY,)) + struct.pack("!I", self.session_expiry_s)
            if self.receive_maximum:
                props += bytes((_PROP_RECEIVE_MAXIMUM,)) + struct.pack("!H", self.receive_maximum)
            body += _varint(len(props)) + props
        body += _str(self.client_id)
        if self.will is not None:
            if self.protocol == MQTT_5:
                body += b"\x00"  # no will properties
            body += _str(self.will.topic) + _str(self.will.payload)
        if self.username is not None:
            body += _str(self.username)
        if self.password is not None:
            body += _str(self.password)
        return encode_packet(_CONNECT << 4, body)

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._inflight and self._next_id not in self._subacks:
                return self._next_id
        raise MqttError("no free packet id: 65535 messages in flight")

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self.frozen:
            self._transport.write(data)
            self._last_out = time.monotonic()

    def _drop_transport(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    def _fail_inflight(self, exc: Exception) -> None:
        for _packet, fut in self._inflight.values():
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # a dropped QoS 1 message of a clean session is not an unhandled error
        self._inflight.clear()

    def _arm_ping(self) -> None:
        if self.keepalive_s <= 0:
            return
        # Check twice per keep-alive period: a packet goes out at least every keep-alive seconds.
        half = self.keepalive_s / 2
        self._ping_timer = asyncio.get_running_loop().call_later(half, self._ping_check)

    def _ping_check(self) -> None:
        self._ping_timer = None
        if not self.connected:
            return
        if not self.frozen and time.monotonic() - self._last_out >= self.keepalive_s / 2:
            self._write(bytes((_PINGREQ << 4, 0)))
        self._arm_ping()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        try:
            while len(buf) - pos >= 2:
                header = decode_remaining_length(buf, pos + 1)
                if header is None:
                    break
                length, size = header
                start = pos + 1 + size
                end = start + length
                if end > len(buf):
                    break
                self._handle(buf[pos], bytes(buf[start:end]))
                pos = end
        except (MqttError, struct.error, IndexError, UnicodeDecodeError) as exc:
            log.warning("mqtt %s: malformed packet from the broker (%s); closing", self.client_id, exc)
            if self._transport is not None:
                self._transport.abort()
        del buf[:pos]

    def _handle(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == _PUBLISH:
            self._on_publish(first, body)
        elif kind == _PUBACK:
            (packet_id,) = struct.unpack_from("!H", body)
            code = body[2] if len(body) > 2 else 0
            entry = self._inflight.pop(packet_id, None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(code)
        elif kind == _CONNACK:
            present, code = bool(body[0] & 1), body[1]
            if self._connack is not None and not self._connack.done():
                self._connack.set_result((present, code))
        elif kind == _SUBACK:
            (packet_id,) = struct.unpack_from("!H", body)
            pos = 2
            if self.protocol == MQTT_5:
                pos = self._skip_properties(body, pos)
            fut = self._subacks.pop(packet_id, None)
            if fut is not None and not fut.done():
                fut.set_result(list(body[pos:]))
        elif kind == _DISCONNECT:  # MQTT 5: the broker tells us why it closes
            log.info("mqtt %s: broker sent DISCONNECT %r", self.client_id, body[:1])
        # PINGRESP needs nothing: any incoming byte is enough for us.

    @staticmethod
    def _skip_properties(body: bytes, pos: int) -> int:
        header = decode_remaining_length(body, pos)
        if header is None:
            raise MqttError("truncated properties")
        return pos + header[1] + header[0]

    def _on_publish(self, first: int, body: bytes) -> None:
        qos = (first >> 1) & 0x03
        (tlen,) = struct.unpack_from("!H", body)
        topic = body[2 : 2 + tlen].decode()
        pos = 2 + tlen
        packet_id = 0
        if qos:
            (packet_id,) = struct.unpack_from("!H", body, pos)
            pos += 2
        if self.protocol == MQTT_5:
            pos = self._skip_properties(body, pos)
        payload = body[pos:]
        if self.on_message is not None:
            try:
                self.on_message(topic, payload, qos, bool(first & 1))
            except Exception:
                log.exception("mqtt %s: message handler failed", self.client_id)
        if qos == 1:
            self._write(encode_packet(_PUBACK << 4, struct.pack("!H", packet_id)))
        elif qos == 2:
            raise MqttError("QoS 2 is not supported by this client")


async def close_quietly(client: MqttClient) -> None:
    """Disconnect, ignoring a connection that is already gone."""
    with contextlib.suppress(Exception):
        await client.disconnect()
