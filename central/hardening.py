"""Browser and server hardening, as one ASGI middleware that :func:`central.app.create_app` puts first.

- every HTTP answer carries a Content-Security-Policy without inline script or style, ``frame-ancestors
  'none'`` and ``X-Frame-Options: DENY``, ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
  no-referrer``;
- a state-changing request (POST, PUT, PATCH, DELETE) or a WebSocket upgrade whose ``Origin`` is present and
  is not the service's own (the ``Host`` it was asked at, or one of :attr:`WebSecurity.allowed_origins`,
  e.g. ``CAREALARM_PUBLIC_URL``) is refused with 403 — a page of another site cannot act with a nurse's
  cookie. Devices and scripts send no ``Origin`` and are not affected;
- ``/metrics`` in production needs ``Authorization: Bearer <CAREALARM_METRICS_TOKEN>`` (401 otherwise), and
  is not there at all (404) without a token; in development it is open.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HardeningMiddleware", "WebSecurity", "content_security_policy", "origin_allowed"]

_UNSAFE: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# A Host header that may be written into the policy: a name or address and a port, nothing else.
_HOST: Final = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
# FastAPI's interactive API docs load Swagger UI / ReDoc from a CDN with an inline start-up script.
_DOCS: Final = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
_DOCS_CSP: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


@dataclass(frozen=True, slots=True)
class WebSecurity:
    """What the hardening needs from the settings (the runner fills it in; the defaults suit development)."""

    production: bool = False
    # CAREALARM_METRICS_TOKEN: the bearer token of /metrics in production ("" there: no /metrics at all).
    metrics_token: str = ""
    # Origins besides the request's own Host that may send state-changing requests, e.g.
    # ("https://care.example.org",): CAREALARM_PUBLIC_URL and CAREALARM_ALLOWED_ORIGINS.
    allowed_origins: tuple[str, ...] = ()


def _origin_key(scheme: str, host: str, port: int | None) -> tuple[str, str, int]:
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return scheme, host.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme, 0)


def _parse_origin(origin: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(origin.strip())
        if not parts.scheme or not parts.hostname:
            return None
        return _origin_key(parts.scheme.lower(), parts.hostname, parts.port)
    except ValueError:
        return None


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str] = ()) -> bool:
    """Whether a request with this ``Origin`` (None: none sent) asked at ``host`` comes from the service."""
    if origin is None:
        return True
    mine = _parse_origin(origin)
    if mine is None:  # "null" (a sandboxed frame, a file:// page) or garbage
        return False
    if host and _HOST.fullmatch(host):
        # The Host carries no scheme: it is compared with the origin's own (a TLS proxy in front is fine).
        own = _parse_origin(f"{mine[0]}://{host}")
        if own == mine:
            return True
    return any(_parse_origin(a) == mine for a in allowed if a)


def content_security_policy(host: str | None, path: str = "/") -> str:
    """The policy of an answer: only this service's own scripts, styles, images and connections."""
    if path in _DOCS:
        return _DOCS_CSP
    sockets = f" ws://{host} wss://{host}" if host and _HOST.fullmatch(host) else ""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"media-src 'self' blob: mediastream:; connect-src 'self'{sockets}; font-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class HardeningMiddleware:
    """Security headers, the Origin check and the /metrics gate (see the module's docstring)."""

    def __init__(self, app: ASGIApp, security: WebSecurity) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host, origin = headers.get("host"), headers.get("origin")
        path: str = scope.get("path", "")
        if scope["type"] == "websocket":
            if not origin_allowed(origin, host, self.security.allowed_origins):
                await send({"type": "websocket.close", "code": 1008, "reason": "origin not allowed"})
                return
            await self.app(scope, receive, send)
            return
        status = self._refusal(scope["method"], path, origin, host, headers.get("authorization"))
        if status is not None:
            await _answer(send, status[0], status[1], content_security_policy(host), status[2])
            return
        policy = content_security_policy(host, path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_security_headers(policy)]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(
        self, method: str, path: str, origin: str | None, host: str | None, authorization: str | None
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        if method in _UNSAFE and not origin_allowed(origin, host, self.security.allowed_origins):
            return 403, "the request comes from another site (Origin not allowed)", []
        if path == "/metrics" and self.security.production:
            token = self.security.metrics_token
            if not token:
                return 404, "Not Found", []
            given = (authorization or "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return 401, "a metrics token is needed", [(b"www-authenticate", b"Bearer")]
        return None


def _security_headers(policy: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]


async def _answer(
    send: Send, status: int, detail: str, policy: str, extra: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *_security_headers(policy),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
