"""Twilio Media Streams messages, both directions, as data (docs/protocols/twilio.md#messages-from-twilio).

Pure: no socket, no clock. Every message is one JSON text frame with an
``event``. From Twilio: ``connected``, ``start``, ``media``, ``dtmf``,
``mark``, ``stop``; to Twilio: ``media``, ``mark``, ``clear``
(docs/protocols/twilio.md#messages-to-twilio). A frame that is not JSON, lacks
a field we use or has it of the wrong type raises :class:`CarrierProtocolError`
(the stream logs it, counts it and reads on); an unknown ``event`` parses to
``None`` (Twilio may add events).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs

__all__ = [
    "CarrierMessage",
    "CarrierProtocolError",
    "Connected",
    "Dtmf",
    "Mark",
    "Media",
    "Start",
    "Stop",
    "clear_message",
    "mark_message",
    "media_message",
    "parse",
]


class CarrierProtocolError(ValueError):
    """A carrier frame we cannot use (not JSON, a missing or mistyped field)."""


@attrs.frozen
class Connected:
    protocol: str
    version: str


@attrs.frozen
class Start:
    """The stream's metadata, sent once after ``connected``."""

    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: Mapping[str, str] = attrs.field(repr=False)  # the app's parameters may be personal data
    encoding: str
    sample_rate: int
    channels: int


@attrs.frozen
class Media:
    """Caller audio: mu-law bytes (base64 on the wire)."""

    payload: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    track: str | None = None
    chunk: str | None = None
    timestamp: str | None = None


@attrs.frozen
class Dtmf:
    digit: str
    track: str | None = None


@attrs.frozen
class Mark:
    """A mark of ours, echoed once the audio sent before it has played (or a ``clear`` dropped it)."""

    name: str


@attrs.frozen
class Stop:
    """The stream is over (the caller hung up, or the call left the ``<Connect>``)."""

    call_sid: str | None = None


CarrierMessage: TypeAlias = Connected | Start | Media | Dtmf | Mark | Stop


def parse(text: str) -> CarrierMessage | None:
    """One frame from the carrier; ``None`` for an event we do not know."""
    try:
        message = json.loads(text)
    except ValueError:
        raise CarrierProtocolError("a frame that is not JSON") from None
    if not isinstance(message, dict):
        raise CarrierProtocolError("a frame that is not a JSON object")
    event = message.get("event")
    if event == "media":
        media = _object(message, "media")
        try:
            payload = base64.b64decode(_string(media, "payload", "media"), validate=True)
        except (binascii.Error, ValueError):
            raise CarrierProtocolError("media.payload is not base64") from None
        return Media(payload, _opt_string(media, "track"), _opt_string(media, "chunk"), _opt_string(media, "timestamp"))
    if event == "mark":
        return Mark(_string(_object(message, "mark"), "name", "mark"))
    if event == "dtmf":
        dtmf = _object(message, "dtmf")
        return Dtmf(_string(dtmf, "digit", "dtmf"), _opt_string(dtmf, "track"))
    if event == "start":
        start = _object(message, "start")
        fmt = start.get("mediaFormat", {})
        if not isinstance(fmt, dict):
            raise CarrierProtocolError("start.mediaFormat is not an object")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise CarrierProtocolError("start.customParameters is not an object of strings")
        tracks = start.get("tracks", [])
        if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
            raise CarrierProtocolError("start.tracks is not a list of strings")
        stream_sid = _opt_string(start, "streamSid") or _string(message, "streamSid", "start")
        return Start(
            stream_sid=stream_sid,
            call_sid=_string(start, "callSid", "start"),
            account_sid=_opt_string(start, "accountSid") or "",
            tracks=tuple(tracks),
            custom_parameters=dict(params),
            encoding=str(fmt.get("encoding", "audio/x-mulaw")),
            sample_rate=_int(fmt.get("sampleRate", 8000), "start.mediaFormat.sampleRate"),
            channels=_int(fmt.get("channels", 1), "start.mediaFormat.channels"),
        )
    if event == "connected":
        return Connected(str(message.get("protocol", "")), str(message.get("version", "")))
    if event == "stop":
        stop = message.get("stop")
        return Stop(_opt_string(stop, "callSid") if isinstance(stop, dict) else None)
    if not isinstance(event, str):
        raise CarrierProtocolError("a frame without an 'event' string")
    return None


def media_message(stream_sid: str, mulaw: bytes) -> str:
    """Audio for the caller: mu-law 8 kHz mono, base64, no file header (docs/protocols/twilio.md#messages-to-twilio)."""
    payload = base64.b64encode(mulaw).decode("ascii")
    return f'{{"event":"media","streamSid":{json.dumps(stream_sid)},"media":{{"payload":"{payload}"}}}}'


def mark_message(stream_sid: str, name: str) -> str:
    """A mark after the audio sent so far: Twilio echoes it once that audio has played."""
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}, separators=(",", ":"))


def clear_message(stream_sid: str) -> str:
    """Drop every bit of audio Twilio holds for the caller; the pending marks come back at once."""
    return json.dumps({"event": "clear", "streamSid": stream_sid}, separators=(",", ":"))


def _object(message: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise CarrierProtocolError(f"{message.get('event')}: '{key}' is not an object")
    return value


def _string(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise CarrierProtocolError(f"{where}.{key} is not a string")
    return value


def _opt_string(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise CarrierProtocolError(f"{where} is not a number")
    try:
        return int(value)
    except ValueError:
        raise CarrierProtocolError(f"{where} is not a number") from None
