"""Who may open a conversation: the handshake an auth hook sees, its answer, the Origin check, a token hook.

An auth hook is any callable (sync or async) taking a :class:`Handshake` and
returning :class:`Accept` or :class:`Refuse`. It sees the headers, the query
and the subprotocols the client offered, never a parsed body. Nothing here
logs or reprs a header value, a query value or a subprotocol: tokens travel
in them.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TypeAlias
from urllib.parse import urlsplit

import attrs

__all__ = [
    "TOKEN_SUBPROTOCOL_PREFIX",
    "Accept",
    "AuthHook",
    "Handshake",
    "Refuse",
    "is_loopback",
    "origin_allowed",
    "token_auth",
]

TOKEN_SUBPROTOCOL_PREFIX = "bidi-token."
"""A browser cannot set headers on a WebSocket; it may offer the token as the subprotocol ``bidi-token.<token>``."""


@attrs.frozen
class Handshake:
    """A WebSocket upgrade request, as an auth hook sees it (header names lower case).

    ``headers``, ``query`` and ``subprotocols`` are left out of the repr: they may hold secrets.
    """

    path: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    query: Mapping[str, str] = attrs.field(repr=False)
    subprotocols: tuple[str, ...] = attrs.field(repr=False)
    client: tuple[str, int] | None = None

    @property
    def origin(self) -> str | None:
        return self.headers.get("origin")


@attrs.frozen
class Accept:
    """Let the client in. ``identity`` is kept with the conversation (never a secret: it may be logged);
    ``subprotocol`` is the one the server answers with (it must be one the client offered)."""

    identity: str | None = None
    subprotocol: str | None = None


@attrs.frozen
class Refuse:
    """Turn the client away with this HTTP status (401 or 403, usually); ``reason`` is a short word for
    logs and metrics, never a secret."""

    status: int = 403
    reason: str = "forbidden"


AuthHook: TypeAlias = Callable[[Handshake], "Accept | Refuse | Awaitable[Accept | Refuse]"]


def token_auth(token: str) -> AuthHook:
    """An auth hook accepting clients that present ``token``.

    As ``Authorization: Bearer <token>``, as the subprotocol
    ``bidi-token.<token>`` (what a browser can do; the server then answers
    with that subprotocol, as RFC 6455 requires), or as the query parameter
    ``token`` (last resort: query strings end up in proxies' access logs).
    Compared in constant time.
    """
    if len(token) < 8:
        raise ValueError("a token of fewer than 8 characters protects nothing")
    expected = token.encode()

    def same(candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode(), expected)

    def check(handshake: Handshake) -> Accept | Refuse:
        scheme, _, value = handshake.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and same(value.strip()):
            return Accept(identity="token")
        for proto in handshake.subprotocols:
            if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX) and same(proto[len(TOKEN_SUBPROTOCOL_PREFIX) :]):
                return Accept(identity="token", subprotocol=proto)
        if same(handshake.query.get("token", "")):
            return Accept(identity="token")
        return Refuse(401, "bad_token")

    return check


def origin_allowed(handshake: Handshake, allowed: Collection[str] | None) -> bool:
    """Whether the request's ``Origin`` may open a conversation.

    No ``Origin`` header (not a browser) is allowed: a non-browser client can
    send any Origin it likes, so the check protects browsers' users, and the
    auth hook protects the server. ``allowed=None`` allows the page's own
    origin only (``Origin`` naming the ``Host`` the request went to); a list
    allows those origins (``scheme://host[:port]``) and the same origin;
    ``"*"`` in it allows any.
    """
    origin = handshake.origin
    if origin is None:
        return True
    if allowed is not None and ("*" in allowed or origin.rstrip("/") in {o.rstrip("/") for o in allowed}):
        return True
    host = handshake.headers.get("host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
