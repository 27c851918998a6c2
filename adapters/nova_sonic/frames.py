"""Nova Sonic's stream as records and back: what a recording keeps and a replay sends (``docs/recording.md``).

What we write is one signed event-stream message per event: the outer
message carries ``:date`` and ``:chunk-signature`` (SigV4, never recorded)
and, as its payload, the inner ``chunk`` message whose payload is
``{"bytes": "<base64 of the event JSON>"}``; the empty signed message ends
the input. A record keeps the event JSON itself (``kind`` ``event``), or
``end_of_input``. What the service sends is a stream of event-stream
messages, split anywhere: a ``chunk`` event becomes its event JSON with the
message's headers; an exception or error message keeps its headers and its
JSON payload (``kind`` its ``:message-type``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from adapters.nova_sonic.eventstream import EventStreamDecoder, Message, encode_message
from adapters.nova_sonic.wire import decode_chunk

__all__ = ["NovaFrames"]


def _headers(message: Message) -> dict[str, Any]:
    return {
        name: value if isinstance(value, str | int | bool) else repr(value)
        for name, value in message.headers.items()
        if name not in (":date", ":chunk-signature")
    }


def _payload(message: Message) -> dict[str, Any]:
    try:
        return {"message": json.loads(message.payload)}
    except ValueError:
        return {"text": message.payload.decode("utf-8", "replace")}


class NovaFrames:
    """A :class:`~adapters.recording.FrameCodec` for one Nova Sonic stream."""

    def __init__(self) -> None:
        self._out = EventStreamDecoder()
        self._in = EventStreamDecoder()

    def client_frames(self, frame: str | bytes) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for signed in self._out.feed(frame if isinstance(frame, bytes) else frame.encode()):
            if not signed.payload:
                records.append({"kind": "end_of_input"})
                continue
            for inner in EventStreamDecoder().feed(signed.payload):
                try:
                    records.append({"kind": "event", "message": decode_chunk(inner.payload)})
                except ValueError:
                    records.append({"kind": "unreadable", "headers": _headers(inner), **_payload(inner)})
        return records

    def server_frames(self, data: str | bytes) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for message in self._in.feed(data if isinstance(data, bytes) else data.encode()):
            headers = _headers(message)
            if headers.get(":message-type") == "event" and headers.get(":event-type") == "chunk":
                try:
                    records.append({"kind": "event", "headers": headers, "message": decode_chunk(message.payload)})
                    continue
                except ValueError:
                    pass
            records.append(
                {"kind": str(headers.get(":message-type", "unknown")), "headers": headers, **_payload(message)}
            )
        return records

    def server_wire(self, record: Mapping[str, Any]) -> bytes:
        headers = dict(record.get("headers") or {":message-type": "event", ":event-type": "chunk"})
        if record.get("kind") == "event":
            event = json.dumps(record["message"], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            payload = json.dumps({"bytes": base64.b64encode(event).decode("ascii")}).encode()
            headers.setdefault(":content-type", "application/json")
        elif "message" in record:
            payload = json.dumps(record["message"]).encode("utf-8")
        else:
            payload = str(record.get("text", "")).encode("utf-8")
        return encode_message(headers, payload)
