"""The web protocol's messages, both directions, as data (docs/web-protocol.md).

Pure: no socket, no clock. :mod:`adapters.web.io` moves these over a
WebSocket; the browser client (``static/bidi-web.js``) speaks the same.

Client to server: binary frames are PCM16 audio at the input rate the server
declared; text frames are JSON objects with a ``type``: ``start``,
``playback``, ``stop``, or an input event's dict form (``bidi_text_input``,
``bidi_image_input``). Server to client: ``session`` (once, first), ``audio``
(says which response the binary frames after it belong to), every output event
as its ``to_dict()`` form except audio, ``error``, ``draining`` and ``closing``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ports.audio import AudioFormat

__all__ = [
    "PROTOCOL_VERSION",
    "ClientError",
    "PlaybackMessage",
    "StartMessage",
    "TokenBucket",
    "audio_header",
    "closing_message",
    "draining_message",
    "error_message",
    "parse_json_object",
    "parse_playback",
    "parse_start",
    "session_message",
]

PROTOCOL_VERSION: Final = 1
ENCODING: Final = "pcm_s16le"

# Error codes sent to a client (``{"type": "error", "code": ...}``); the list is docs/web-protocol.md's.
BAD_JSON: Final = "bad_json"
BAD_MESSAGE: Final = "bad_message"
UNKNOWN_MESSAGE: Final = "unknown_message"
WRONG_RATE: Final = "wrong_rate"
FRAME_TOO_LARGE: Final = "frame_too_large"
AUDIO_MUST_BE_BINARY: Final = "audio_must_be_binary"
NOT_STARTED: Final = "not_started"
ALREADY_STARTED: Final = "already_started"
ODD_LENGTH: Final = "odd_length"
RATE_LIMITED: Final = "rate_limited"
INVALID_INPUT: Final = "invalid_input"


class ClientError(Exception):
    """A client message the server refuses: ``code`` goes back to the client, the conversation goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class StartMessage:
    """The client's ``start``: the input format it will send, and whether it reports playback."""

    input_audio: AudioFormat
    reports_playback: bool


@attrs.frozen
class PlaybackMessage:
    """The client's ``playback`` report: how much of a response it has played."""

    response_id: str
    played_ms: float
    finished: bool


def _format(fmt: AudioFormat) -> dict[str, Any]:
    return {"encoding": ENCODING, "sample_rate": fmt.sample_rate, "channels": fmt.channels}


def session_message(
    input_audio: AudioFormat, output_audio: AudioFormat, limits: Mapping[str, float | int | None]
) -> dict[str, Any]:
    """The server's first message: the audio formats both ways and the limits that apply."""
    return {
        "type": "session",
        "protocol": PROTOCOL_VERSION,
        "input_audio": _format(input_audio),
        "output_audio": _format(output_audio),
        "limits": dict(limits),
    }


def audio_header(response_id: str | None, fmt: AudioFormat) -> dict[str, Any]:
    """Said before binary frames of audio whose response or format differs from the previous ones."""
    return {"type": "audio", "response_id": response_id, **_format(fmt)}


def error_message(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def draining_message(deadline_s: float) -> dict[str, Any]:
    """The server is shutting down: the conversation may go on for ``deadline_s`` more seconds."""
    return {"type": "draining", "deadline_s": deadline_s}


def closing_message(reason: str) -> dict[str, Any]:
    """The server is ending this conversation (``reason``: see docs/web-protocol.md); a close frame follows."""
    return {"type": "closing", "reason": reason}


def parse_json_object(text: str) -> dict[str, Any]:
    """A text frame as a JSON object with a string ``type``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ClientError(BAD_JSON, f"a text frame must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ClientError(BAD_JSON, "a text frame must be a JSON object")
    if not isinstance(value.get("type"), str):
        raise ClientError(BAD_MESSAGE, "a message needs a string 'type'")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClientError(BAD_MESSAGE, f"{where} must be a finite number")
    return float(value)


def parse_start(message: Mapping[str, Any], expected: AudioFormat) -> StartMessage:
    """Check a ``start`` against the model's input format; the client must send exactly that."""
    unknown = set(message) - {"type", "input_audio", "reports_playback"}
    if unknown:
        raise ClientError(BAD_MESSAGE, f"start: unknown field(s) {sorted(unknown)}")
    audio = message.get("input_audio", {})
    if not isinstance(audio, Mapping):
        raise ClientError(BAD_MESSAGE, "start.input_audio must be an object")
    encoding = audio.get("encoding", ENCODING)
    if encoding != ENCODING:
        raise ClientError(BAD_MESSAGE, f"start.input_audio.encoding must be {ENCODING!r}")
    rate = audio.get("sample_rate", expected.sample_rate)
    channels = audio.get("channels", expected.channels)
    if rate != expected.sample_rate or channels != expected.channels:
        raise ClientError(
            WRONG_RATE,
            f"input audio must be {expected.sample_rate} Hz, {expected.channels} channel(s) "
            f"(as the session message says), not {rate!r} Hz, {channels!r} channel(s)",
        )
    reports = message.get("reports_playback", False)
    if not isinstance(reports, bool):
        raise ClientError(BAD_MESSAGE, "start.reports_playback must be true or false")
    return StartMessage(expected, reports)


def parse_playback(message: Mapping[str, Any]) -> PlaybackMessage:
    unknown = set(message) - {"type", "response_id", "played_ms", "finished"}
    if unknown:
        raise ClientError(BAD_MESSAGE, f"playback: unknown field(s) {sorted(unknown)}")
    rid = message.get("response_id")
    if not isinstance(rid, str) or not rid:
        raise ClientError(BAD_MESSAGE, "playback.response_id must be a non-empty string")
    played = _number(message.get("played_ms"), "playback.played_ms")
    if played < 0:
        raise ClientError(BAD_MESSAGE, "playback.played_ms must not be negative")
    finished = message.get("finished", False)
    if not isinstance(finished, bool):
        raise ClientError(BAD_MESSAGE, "playback.finished must be true or false")
    return PlaybackMessage(rid, played, finished)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. The caller passes the time (seconds)."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend ``amount`` tokens if there are that many; False (and nothing spent) if not."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False
