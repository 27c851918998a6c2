"""Reading an HTTP ``Retry-After`` header (RFC 9110 §10.2.3,
<https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3>): a refusal that says
how long to wait (429, 503) is retried no sooner than that. Every transport's
refusal (the WebSocket upgrade, Nova's HTTP/2 request) reads it here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

__all__ = ["retry_after_s"]


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delay-seconds or an HTTP-date;
    header names lower-case), or None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # here: an HTTP-date is rare, and email.utils costs more to import than all of this

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)
