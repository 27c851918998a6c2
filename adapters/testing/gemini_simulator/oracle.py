"""The schema oracle: the provider's published protobuf messages (docs/protocols/gemini.md#schema-oracle).

Every client message goes through ``BidiGenerateContentClientMessage.from_json``
with unknown fields refused, which catches misspelled keys, wrong enum names,
bad types and two members of the ``message_type`` oneof; both lowerCamelCase and
snake_case keys pass, as the service accepts both (docs/protocols/gemini.md#field-names). On top of the schema,
the rules the service enforces that the proto cannot express: exactly one
member, no deprecated ``realtimeInput.mediaChunks`` (newer models close 1007,
docs/protocols/gemini.md#client-messages), base64 that really is base64. The service answers a violation by closing
with 1007 and a readable reason; :func:`check_client_message` returns that reason.

The simulator's own output goes through ``BidiGenerateContentServerMessage``
strictly, so it never emits a field the real schema lacks (the package is a
snapshot; the real service may send newer fields, which clients must tolerate).

``sessionResumption.transparent`` and ``lastConsumedClientMessageIndex`` are
Vertex AI fields, absent from the v1beta proto: they pass only when the
simulator is told to accept them (``transparent=True``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from typing import Any

from google.ai import generativelanguage_v1beta as glm
from google.protobuf.json_format import ParseError  # type: ignore[import-untyped,unused-ignore]

__all__ = ["ONEOF", "SimulatorBug", "check_client_message", "check_server_message", "decode_bytes", "field", "has"]

_B64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


class SimulatorBug(AssertionError):
    """The simulator was about to send a message the provider's schema rejects."""


ONEOF = ("setup", "clientContent", "realtimeInput", "toolResponse")


def snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` under its lowerCamelCase or snake_case spelling (both are valid proto3 JSON)."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(snake(name), default)


def has(obj: Any, name: str) -> bool:
    return isinstance(obj, dict) and (name in obj or snake(name) in obj)


def _strip_transparent(message: dict[str, Any]) -> dict[str, Any]:
    message = copy.deepcopy(message)
    setup = field(message, "setup")
    resumption = field(setup, "sessionResumption")
    if isinstance(resumption, dict):
        resumption.pop("transparent", None)
    return message


def check_client_message(raw: str | bytes, *, transparent: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and validate one client message: ``(message, None)`` if the service would take it,
    else ``(message or None, reason)`` with the reason of the 1007 close the service would send."""
    try:
        message = json.loads(raw)
    except ValueError as exc:
        return None, f"Invalid JSON payload received. {exc}"
    if not isinstance(message, dict):
        return None, "Invalid JSON payload received. Expected an object."
    checked = _strip_transparent(message) if transparent else message
    try:
        glm.BidiGenerateContentClientMessage.from_json(json.dumps(checked), ignore_unknown_fields=False)
    except ParseError as exc:
        return message, f"Invalid JSON payload received. {exc}"
    members = [name for name in ONEOF if has(message, name)]
    if len(members) != 1:
        return message, "Request must contain exactly one of setup, client_content, realtime_input, tool_response."
    realtime = field(message, "realtimeInput")
    if field(realtime, "mediaChunks"):  # an empty list is absent in proto3 JSON
        return message, "realtime_input.media_chunks is deprecated. Use audio, video, or text instead."
    for blob_name in ("audio", "video"):
        blob = field(realtime, blob_name)
        if blob is not None and decode_bytes(field(blob, "data", "")) is None:
            return message, f"Invalid value at 'realtime_input.{blob_name}.data' (TYPE_BYTES), Base64 decoding failed."
    return message, None


def decode_bytes(data: Any) -> bytes | None:
    """Proto3 JSON ``bytes``: standard or URL-safe base64, padded or not; None if it is not."""
    if not isinstance(data, str) or not _B64.fullmatch(data):
        return None
    body = data.rstrip("=")
    if len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def check_server_message(message: dict[str, Any], *, transparent: bool = False) -> str | None:
    """None if ``message`` is a valid ``BidiGenerateContentServerMessage``, else what is wrong with it."""
    checked = message
    update = message.get("sessionResumptionUpdate")
    if transparent and isinstance(update, dict) and "lastConsumedClientMessageIndex" in update:
        checked = copy.deepcopy(message)
        del checked["sessionResumptionUpdate"]["lastConsumedClientMessageIndex"]
    try:
        glm.BidiGenerateContentServerMessage.from_json(json.dumps(checked), ignore_unknown_fields=False)
    except ParseError as exc:
        return str(exc)
    members = [k for k in checked if k != "usageMetadata"]
    if len(members) > 1:
        return f"several oneof members: {members}"
    return None
