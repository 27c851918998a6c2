"""OpenAI Realtime's errors as typed errors: a refused upgrade, an in-band ``error`` event, a close frame.

* The upgrade is refused with an HTTP status (401 bad key, 403, 404 unknown
  model, 429 quota or rate, 5xx): :func:`error_for_response`.
* Inside a session, the service reports errors as ``error`` events. Most are
  about one client message and become a ``BidiErrorEvent``; a few end the
  session and no retry can help (:data:`FATAL_ERROR_CODES`), and the
  session-expiry one (after 60 minutes) asks for a new connection:
  :func:`in_band_error`.
* The service ends a session with close code 1000 (a normal end); any other
  close, or none, is a transport fault: :func:`close_error`.

Secrets are redacted from every message.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.openai import wire
from adapters.websocket import WebSocketClosed, upgrade_refusal
from ports.errors import BidiConnectionError, BidiError, BidiProviderError

__all__ = ["EXPIRY_ERROR_CODES", "FATAL_ERROR_CODES", "close_error", "error_for_response", "in_band_error"]

FATAL_ERROR_CODES = frozenset({"beta_api_shape_disabled", "invalid_api_key", "insufficient_quota", "model_not_found"})
"""In-band errors after which the service closes the session and a retry cannot help."""
EXPIRY_ERROR_CODES = frozenset({"session_expired"})
"""In-band errors that end a session at its time limit: a new connection continues."""


def error_for_response(
    status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...] = ()
) -> Exception:
    """The error for a refused upgrade (401/403 not retryable, 429 retryable, 5xx a connection fault)."""
    return upgrade_refusal(status, headers, body, secrets, credential="API key")


def in_band_error(error: wire.ErrorDetail) -> BidiError | None:
    """The error that ends the connection for this ``error`` event, or None if it is only reported."""
    code = error.code or error.type or "error"
    if code in FATAL_ERROR_CODES:
        return BidiProviderError(error.message, code=code)
    if code in EXPIRY_ERROR_CODES or "maximum duration" in error.message:
        return BidiConnectionError(f"the session expired: {error.message}")
    return None


def close_error(closed: WebSocketClosed) -> BidiError | None:
    """The error for a close frame, or None for the normal end (1000)."""
    if closed.code == 1000:
        return None
    return closed  # a retryable BidiConnectionError that names the code and reason
