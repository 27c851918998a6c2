"""What the simulator saw and did, for tests to assert on.

Plain data appended as things happen; nothing here is needed to run the
protocol. Secrets never enter the records: the ``Authorization`` and
``x-amz-security-token`` headers are redacted, and chunk signatures are counted,
not kept.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["RefusedRequest", "SchemaFailure", "SignatureFailure", "StreamRecord", "redact_headers"]

SENSITIVE_HEADERS = frozenset({"authorization", "x-amz-security-token"})


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers with credentials replaced (the access key id in ``Credential=`` is not secret)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name == "authorization":
            credential = next((p.strip() for p in value.split(",") if "Credential=" in p), "")
            out[name] = f"AWS4-HMAC-SHA256 {credential.split(' ')[-1]}, Signature=<redacted>"
        elif name in SENSITIVE_HEADERS:
            out[name] = "<redacted>"
        else:
            out[name] = value
    return out


@attrs.define
class StreamRecord:
    """One accepted ``InvokeModelWithBidirectionalStream`` request (HTTP 200).

    ``events`` are the decoded input events (``{"event": {...}}`` dicts) in wire
    order, the rejected one included; ``sent`` the output events and exceptions
    the simulator wrote (``{"event": {...}}`` or ``{"exception": type, "message": ...}``).
    ``ended_by``: None while open, then ``"client"`` (clean close), ``"client_reset"``,
    ``"rst"`` (a fault), ``"goaway"``, ``"reset"`` (TCP RST, a fault), ``"dropped"`` (TCP closed, a
    fault), ``"end_stream"`` (END_STREAM with no exception, a fault), ``"exception"`` (an exception
    message ended it), ``"connection_lost"`` or ``"server"`` (the simulator shut down).
    """

    index: int
    request_index: int
    model_id: str
    access_key_id: str
    path: str
    headers: dict[str, str]
    events: list[dict[str, Any]] = attrs.field(factory=list)
    sent: list[dict[str, Any]] = attrs.field(factory=list)
    signatures_verified: int = 0
    window_waits: int = 0
    """How often the simulator had to wait for the client's WINDOW_UPDATE before it could send."""
    system_prompt: str | None = None
    ended_by: str | None = None
    exception: dict[str, str] | None = None
    """The exception that ended the stream, ``{"type": ..., "message": ...}``."""
    opened_at: float = attrs.field(factory=time.monotonic)
    """When the request was accepted (``time.monotonic()``)."""

    def event_names(self) -> list[str]:
        return [next(iter(e["event"])) for e in self.events if isinstance(e.get("event"), dict) and e["event"]]

    def sent_names(self) -> list[str]:
        return [next(iter(e["event"])) if "event" in e else f"!{e['exception']}" for e in self.sent]

    def sent_events(self, name: str) -> list[dict[str, Any]]:
        """The bodies of every sent output event called ``name``."""
        return [e["event"][name] for e in self.sent if "event" in e and name in e["event"]]


@attrs.frozen
class RefusedRequest:
    """A request answered with an HTTP error before any stream: status, error type and message."""

    request_index: int
    path: str
    headers: dict[str, str]
    status: int
    error_type: str
    message: str
    at: float = attrs.field(factory=time.monotonic)
    """When the request was refused (``time.monotonic()``)."""


@attrs.frozen
class SchemaFailure:
    """An input event the service would refuse (schema or order), and why."""

    stream: int
    event: Any
    detail: str


@attrs.frozen
class SignatureFailure:
    """A chunk whose signature did not verify (``event_number``: 1-based position in the stream)."""

    stream: int
    event_number: int
    detail: str
