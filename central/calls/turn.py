"""Short-lived TURN credentials, one set per call and side: coturn's REST-API scheme (``use-auth-secret``).

The TURN server and central share a secret (``CAREALARM_TURN_SECRET`` and coturn's
``--static-auth-secret``); nobody else holds a long-term TURN password. For each call central hands each
side a user name ``"<expiry unix time>:<who>"`` and the password ``base64(HMAC-SHA1(secret, user name))``,
which coturn checks by computing the same, and refuses after the expiry. A credential a nurse or a device
kept is useless a few hours later, and names who it was issued to in coturn's log.

Pure: time is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

__all__ = ["TURN_TTL_S", "turn_credential", "with_turn_credentials"]

# Long enough for the longest call we expect (a monitoring session over a night shift is not a use), short
# enough that a credential copied from a browser is dead by the next day.
TURN_TTL_S = 4 * 3600


def turn_credential(secret: str, who: str, now_s: int, ttl_s: int = TURN_TTL_S) -> tuple[str, str]:
    """(user name, password) valid until ``now_s + ttl_s`` for ``who`` (no ``:`` in it)."""
    username = f"{now_s + ttl_s}:{who.replace(':', '_')}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def _is_turn(server: dict[str, Any]) -> bool:
    urls = server.get("urls") or []
    listed = [urls] if isinstance(urls, str) else urls
    return any(str(url).startswith(("turn:", "turns:")) for url in listed)


def with_turn_credentials(
    ice_servers: list[dict[str, Any]], secret: str, who: str, now_s: int, ttl_s: int = TURN_TTL_S
) -> list[dict[str, Any]]:
    """The ICE servers as handed to one side of a call: each TURN server without credentials of its own gets
    a fresh short-lived pair (without a secret, the servers are handed on as configured)."""
    if not secret:
        return [dict(server) for server in ice_servers]
    username, credential = turn_credential(secret, who, now_s, ttl_s)
    out = []
    for server in ice_servers:
        server = dict(server)
        if _is_turn(server) and "username" not in server:
            server.update(username=username, credential=credential)
        out.append(server)
    return out
