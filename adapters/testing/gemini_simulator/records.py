"""What the simulator saw and did, for tests to assert on.

Plain data appended as things happen; nothing here is needed to run the
protocol. The API key never enters a record: the ``x-goog-api-key`` header and
the ``key`` query parameter are redacted.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

__all__ = ["ConnectionRecord", "OracleFailure", "RejectedHandshake", "UserInput", "redact_headers"]

UserInput = tuple[str, Any]
"""One input in a session's state: ``("text", str)`` (``realtimeInput.text``), ``("audio", bytes)`` (one
``realtimeInput.audio`` chunk, decoded PCM), ``("tool_response", id)`` (one ``functionResponses`` entry),
``("history", ((role, text), ...))`` (one ``clientContent``: each turn's role and its text parts joined)."""


@attrs.define
class ConnectionRecord:
    """One accepted WebSocket connection.

    ``received``: every client message as parsed JSON (a string if it was not JSON), in order;
    ``sent``: every server message, in wire order; ``setup``: the setup message's body;
    ``resumed_handle``: the handle the setup asked to resume; ``close_code``/``close_reason``: the close frame
    the server sent (None: none sent); ``closed_by``: ``"client"``, ``"server"``, ``"dropped"`` or ``"shutdown"``;
    ``client_close_code``: the code of the client's close frame, if it sent one;
    ``oracle_errors``: why client messages on this connection were refused.
    """

    index: int
    path: str
    api_version: str
    query: dict[str, str]
    headers: dict[str, str]
    received: list[Any] = attrs.field(factory=list)
    sent: list[dict[str, Any]] = attrs.field(factory=list)
    setup: dict[str, Any] | None = None
    resumed_handle: str | None = None
    session_id: int | None = None
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: str | None = None
    client_close_code: int | None = None
    closed: bool = False
    oracle_errors: list[str] = attrs.field(factory=list)
    opened_at: float = attrs.field(factory=time.monotonic)
    """When the upgrade was accepted (``time.monotonic()``)."""

    def sent_kinds(self) -> list[str]:
        """The oneof member of each sent message, with ``serverContent`` flags spelled out
        (``"serverContent.modelTurn"``, ``"serverContent.turnComplete"``, ...)."""
        kinds: list[str] = []
        for message in self.sent:
            for key, value in message.items():
                if key == "usageMetadata":
                    continue
                if key == "serverContent":
                    kinds.extend(f"serverContent.{k}" for k in value)
                else:
                    kinds.append(key)
        return kinds


@attrs.frozen
class RejectedHandshake:
    """A WebSocket upgrade the simulator refused with an HTTP status (wrong path, not a WebSocket request,
    a :class:`~adapters.testing._simulator_kit.websocket_server.Refusal` fault)."""

    path: str
    status: int
    body: dict[str, Any]
    at: float = attrs.field(factory=time.monotonic)
    """When the upgrade was refused (``time.monotonic()``)."""


@attrs.frozen
class OracleFailure:
    """A message the protobuf oracle rejected: ``direction`` is ``"client"`` (the client's fault, closed 1007)
    or ``"server"`` (a simulator bug)."""

    connection: int
    direction: str
    message: Any
    detail: str


SENSITIVE_HEADERS = frozenset({"x-goog-api-key", "authorization"})


def redact_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers as a lower-case dict, with credentials replaced."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in SENSITIVE_HEADERS:
            scheme, _, secret = value.partition(" ")
            value = f"{scheme} <redacted>" if secret and name == "authorization" else "<redacted>"
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out
