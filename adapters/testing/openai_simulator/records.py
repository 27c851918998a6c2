"""What the simulator saw and did, for tests to assert on.

Records are plain data appended as things happen; nothing in them is needed to
run the protocol. Secrets never enter them: the ``Authorization`` header and a
browser-style ``openai-insecure-api-key.*`` subprotocol are redacted.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

__all__ = ["ClientError", "ConnectionRecord", "OracleFailure", "ReceivedMessage", "RejectedHandshake", "Truncation"]


@attrs.define
class ConnectionRecord:
    """One accepted WebSocket connection.

    ``received`` holds every client message as parsed JSON (a string if it was
    not JSON); ``sent`` every server event, in wire order.
    """

    index: int
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    model: str
    subprotocol: str | None = None
    received: list[Any] = attrs.field(factory=list)
    sent: list[dict[str, Any]] = attrs.field(factory=list)
    closed: bool = False
    close_reason: str | None = None
    """``"client"`` (close frame or EOF from the client), ``"dropped"``, ``"reset"``, ``"session_limit"``,
    ``"beta"``, ``"server"`` (simulator shut down)."""
    opened_at: float = attrs.field(factory=time.monotonic)
    """When the upgrade was accepted (``time.monotonic()``)."""

    def sent_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.sent]

    def received_types(self) -> list[str]:
        return [str(m.get("type")) if isinstance(m, dict) else "<invalid>" for m in self.received]


@attrs.frozen
class RejectedHandshake:
    """A WebSocket upgrade the simulator refused (wrong key, wrong path, not a WebSocket request, a
    :class:`~adapters.testing._simulator_kit.websocket_server.Refusal` fault)."""

    path: str
    headers: dict[str, str]
    status: int
    body: dict[str, Any]
    at: float = attrs.field(factory=time.monotonic)
    """When the upgrade was refused (``time.monotonic()``)."""


@attrs.frozen
class ReceivedMessage:
    """A client message, with the index of the connection it came on."""

    connection: int
    message: Any


@attrs.frozen
class Truncation:
    """An accepted ``conversation.item.truncate``; ``audio_ms`` is what the item had before."""

    connection: int
    item_id: str
    content_index: int
    audio_end_ms: int
    audio_ms: int


@attrs.frozen
class ClientError:
    """A client message the service would refuse, and the ``error`` event sent for it."""

    connection: int
    message: Any
    error: dict[str, Any]


@attrs.frozen
class OracleFailure:
    """A server event the official types reject: a bug in the simulator."""

    connection: int
    event: dict[str, Any]
    detail: str


SENSITIVE_HEADERS = frozenset({"authorization", "openai-api-key", "api-key"})


def redact_headers(headers: list[tuple[bytes, bytes]], subprotocols: list[str]) -> dict[str, str]:
    """Request headers as a lower-case dict, with credentials replaced."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in SENSITIVE_HEADERS:
            scheme, _, _secret = value.partition(" ")
            value = f"{scheme} <redacted>" if _secret else "<redacted>"
        out[name] = f"{out[name]}, {value}" if name in out else value
    if subprotocols:
        out["sec-websocket-protocol"] = ", ".join(
            "openai-insecure-api-key.<redacted>" if p.startswith("openai-insecure-api-key.") else p
            for p in subprotocols
        )
    return out
