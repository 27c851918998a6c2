"""WebSocket URLs: built from a base the user gave, and shown without their secrets.

Users give base URLs in whatever scheme they have at hand (``https://`` from
a dashboard, ``ws://`` for a local simulator); a base may carry a path (a
proxy's prefix) and a query (``?api-version=...``, ``?key=...``). The
providers append their own path and query parameters to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from ports.errors import BidiUsageError, redact

__all__ = ["redacted_url", "websocket_url"]

_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def websocket_url(
    base: str, *, path: str = "", query: Mapping[str, str] | None = None, argument: str = "base_url"
) -> str:
    """``base`` as a ``ws://``/``wss://`` URL with ``path`` appended to its path and ``query`` to its query.

    ``http://`` becomes ``ws://`` and ``https://`` ``wss://``; a trailing ``/``
    of the base's path is dropped before ``path`` is appended; the base's own
    query stays, first. ``query`` values are percent-encoded whole (a model id
    with a ``/`` stays one value). Anything else than those four schemes, or
    no host, raises :class:`BidiUsageError` naming ``argument`` (the URL is
    redacted: a query may hold a key).
    """
    if not isinstance(base, str):
        raise BidiUsageError(f"{argument} must be a string, got {type(base).__name__}")
    parts = urlsplit(base.strip())
    scheme = _WS_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise BidiUsageError(f"{argument} must start with ws://, wss://, http:// or https://, got {redact(base)!r}")
    full_path = parts.path.rstrip("/") + path
    full_query = parts.query
    if query:
        extra = urlencode(query, quote_via=quote, safe="")
        full_query = f"{full_query}&{extra}" if full_query else extra
    return urlunsplit((scheme, parts.netloc, full_path, full_query, ""))


def redacted_url(url: str, *secrets: str | None, with_query: bool = True) -> str:
    """``url`` fit for a log line or a repr: every secret and credential-like query value as ``***``.

    ``with_query=False`` drops the query altogether (an error message says
    where, not with what)."""
    if not with_query:
        parts = urlsplit(url)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
    return redact(url, *secrets)
