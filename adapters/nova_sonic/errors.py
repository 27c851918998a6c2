"""Bedrock's refusals as typed errors, with AWS's message and request id.

Two places refuse: the HTTP response (403 bad signature, 400 unknown model,
429, 5xx, before any stream: :func:`error_for_response`) and messages inside
the stream, modeled exceptions (``:message-type exception``) and errors
(``:message-type error``): :func:`error_for_message`. Both become
:class:`NovaSonicProviderError`,
a :class:`BidiProviderError` whose ``retryable`` tells the core whether a new
stream, seeded with the history, may help. Secrets are redacted from every
message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from adapters.retry_after import retry_after_s as read_retry_after
from ports.errors import BidiProviderError, redact

__all__ = [
    "RETRYABLE_EXCEPTIONS",
    "SILENCE_TIMEOUT_CODE",
    "NovaSonicProviderError",
    "error_for_exception",
    "error_for_message",
    "error_for_response",
]

RETRYABLE_EXCEPTIONS = frozenset(
    {
        "modelTimeoutException",
        "throttlingException",
        "serviceUnavailableException",
        "internalServerException",
        "modelStreamErrorException",
    }
)
_MAX_RAW_MESSAGE = 300
"""A body that is not JSON is quoted only this far (it may be an HTML page from a proxy)."""
SILENCE_TIMEOUT_CODE = "InternalErrorCode=531"
"""In a ValidationException's message: no input for about 175 s. A new stream, seeded with the history, continues."""


class NovaSonicProviderError(BidiProviderError):
    """Bedrock refused or failed, with AWS's exception name as ``code``, its
    message, and the request id (``x-amzn-requestid``) to quote to AWS support."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None,
        retryable: bool,
        request_id: str | None,
        retry_after_s: float | None = None,
    ) -> None:
        text = f"{message} (request id {request_id})" if request_id else message
        super().__init__(text, code=code, retryable=retryable, retry_after_s=retry_after_s)
        self.request_id = request_id


def _exception_name(kind: str) -> str:
    """``validationException`` / ``ValidationException:http://...`` -> ``ValidationException``."""
    name = kind.split(":", 1)[0].strip()
    return name[:1].upper() + name[1:]


def error_for_exception(
    kind: str, message: str, request_id: str | None, secrets: tuple[str, ...] = (), *, max_length: int | None = None
) -> NovaSonicProviderError:
    """The error for a modeled exception the service sent inside the stream.

    ``max_length`` cuts the message, after redaction (a secret cut in two would
    no longer be found whole)."""
    name = _exception_name(kind)
    lowered = name[:1].lower() + name[1:]
    message = redact(message or name, *secrets)[:max_length]
    retryable = lowered in RETRYABLE_EXCEPTIONS or (
        lowered == "validationException" and SILENCE_TIMEOUT_CODE in message
    )
    return NovaSonicProviderError(message, code=name, retryable=retryable, request_id=request_id)


def error_for_message(
    headers: Mapping[str, Any], payload: bytes, request_id: str | None, secrets: tuple[str, ...] = ()
) -> NovaSonicProviderError | None:
    """The error an in-stream event-stream message carries, or None for an ordinary event.

    ``exception`` messages hold AWS's JSON (``message``); ``error`` messages say it
    in their ``:error-code`` and ``:error-message`` headers (never retryable)."""
    kind = headers.get(":message-type")
    if kind == "exception":
        text, cut = "", None
        try:
            body = json.loads(payload) if payload else {}
            if isinstance(body, dict):
                text = str(body.get("message") or body.get("Message") or "")
        except ValueError:
            text, cut = payload.decode("utf-8", "replace"), _MAX_RAW_MESSAGE  # cut after redaction
        return error_for_exception(
            str(headers.get(":exception-type", "exception")), text, request_id, secrets, max_length=cut
        )
    if kind == "error":
        code = str(headers.get(":error-code", "error"))
        text = redact(str(headers.get(":error-message", "")), *secrets)
        return NovaSonicProviderError(text or code, code=code, retryable=False, request_id=request_id)
    return None


def error_for_response(
    status: int, headers: Mapping[str, str], body: bytes, secrets: tuple[str, ...] = ()
) -> NovaSonicProviderError:
    """The error for a request refused before the stream started (403 bad signature, 400, 429, 5xx).

    A 401 or 403 names the credential (the AWS credentials), whatever the body says, never its secret."""
    request_id = headers.get("x-amzn-requestid")
    kind = headers.get("x-amzn-errortype", "")
    message = ""
    try:
        parsed = json.loads(body) if body else {}
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or parsed.get("Message") or "")
            kind = kind or str(parsed.get("__type") or "")
    except ValueError:
        # Redacted before it is cut: a secret cut in two would no longer be found whole.
        message = redact(body.decode("utf-8", "replace"), *secrets)[:_MAX_RAW_MESSAGE]
    name = _exception_name(kind) if kind else f"HTTP{status}"
    why = ""
    if status in (401, 403):  # AWS's own text may not say what was refused (a gateway's may be empty)
        refused = "may not do this" if name == "AccessDeniedException" else "were not accepted"
        why = f" (the AWS credentials {refused})"
    message = redact(f"HTTP {status}{why}: {message or 'the request was refused'}", *secrets)
    retryable = status == 429 or status >= 500 or name in ("ExpiredTokenException", "ThrottlingException")
    return NovaSonicProviderError(
        message, code=name, retryable=retryable, request_id=request_id, retry_after_s=read_retry_after(headers)
    )
