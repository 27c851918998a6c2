"""Gemini Live's errors as typed errors: a refused upgrade and close frames.

Gemini reports errors by closing the WebSocket (docs/protocols/gemini.md#errors):
1007 an invalid argument (a refused resumption handle, when it comes before
``setupComplete`` on a connection that sent one), 1008 a policy refusal, 1011
an internal error worth a new connection, 1000 a normal end (after
``goAway``, or the service's own). An upgrade refused with an HTTP status is
mapped as for every WebSocket provider. Secrets are redacted from every message.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.websocket import WebSocketClosed, upgrade_refusal
from ports.errors import BidiConnectionError, BidiError, BidiProviderError, BidiResumptionRejectedError, redact

__all__ = ["close_error", "error_for_response"]


def error_for_response(
    status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...] = ()
) -> Exception:
    """The error for a refused upgrade (401/403 not retryable, 429 retryable, 5xx a connection fault)."""
    return upgrade_refusal(status, headers, body, secrets, credential="API key or access token")


def close_error(exc: WebSocketClosed, secrets: tuple[str, ...], *, resuming_before_setup: bool = False) -> BidiError:
    """The typed error for a close frame (a normal 1000 included: callers that expect it check first)."""
    reason = redact(exc.reason or "no reason given", *secrets)
    code = exc.code
    if code == 1007 and resuming_before_setup:
        return BidiResumptionRejectedError(f"Gemini refused the session resumption handle (1007): {reason}")
    if code == 1007:
        return BidiProviderError(
            f"Gemini rejected the request (1007 invalid argument): {reason}", code="invalid_argument"
        )
    if code == 1008:
        return BidiProviderError(f"Gemini refused by policy (1008): {reason}", code="policy_violation")
    if code == 1011:
        return BidiProviderError(f"Gemini internal error (1011): {reason}", code="internal_error", retryable=True)
    if code == 1006:
        return BidiConnectionError(redact(str(exc), *secrets))
    return BidiConnectionError(f"Gemini closed the connection ({code}): {reason}")
