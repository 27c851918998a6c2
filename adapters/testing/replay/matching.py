"""Comparing what the client sends now with what it sent then, and putting recorded frames back on the wire.

A client frame matches its recorded twin when their decoded messages are
equal, except for:

* **identifiers the client makes up** (UUIDs, such as Nova's prompt and
  content names): a UUID where the recording has another is learned as the
  same identifier the first time, and must stay the same afterwards; the
  provider's frames of the replay carry the live ones;
* **audio**: compared byte for byte when the recording kept it and
  ``match_audio="bytes"``, else by length only (a recording without audio
  knows nothing else);
* **redacted values** (``[redacted]`` in the recording) match anything;
* **keys the test names** in ``ignore_keys`` (a timing-dependent value, say
  OpenAI's ``audio_end_ms``), wherever they appear.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Collection, Mapping
from typing import Any

from adapters.recording import REDACTED, AudioFields, dropped_audio

__all__ = ["IdMap", "difference", "restore_audio", "with_live_ids"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class IdMap:
    """Recorded identifiers the client made up, and the live ones standing for them (one to one)."""

    def __init__(self) -> None:
        self.live: dict[str, str] = {}
        self._recorded: dict[str, str] = {}

    def same(self, recorded: str, live: str) -> bool:
        if recorded in self.live or live in self._recorded:
            return self.live.get(recorded) == live
        self.live[recorded] = live
        self._recorded[live] = recorded
        return True


def _audio_length(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dropped_audio(len(base64.b64decode(value, validate=True)))
        except ValueError:
            return value
    return value


def _comparable(message: Any, audio_fields: AudioFields, by_length: bool) -> Any:
    if by_length:
        for container, key in list(audio_fields(message)):
            container[key] = _audio_length(container.get(key))
    return message


def difference(
    recorded: Mapping[str, Any],
    live: Mapping[str, Any],
    ids: IdMap,
    *,
    audio_fields: AudioFields,
    match_audio: str,
    ignore_keys: Collection[str],
) -> str | None:
    """Where ``live`` (a client frame's record) first differs from ``recorded`` (a path), or ``None``."""
    if recorded.get("kind") != live.get("kind"):
        return "kind"
    by_length = match_audio != "bytes" or _has_dropped_audio(recorded.get("message"))
    expected = _comparable(_copy(recorded.get("message")), audio_fields, by_length)
    actual = _comparable(_copy(live.get("message")), audio_fields, by_length)
    for key in ("text", "data"):
        if recorded.get(key) != live.get(key):
            return key
    return _diff(expected, actual, ids, ignore_keys, "message")


def _has_dropped_audio(value: Any) -> bool:
    if isinstance(value, dict):
        return "dropped_audio_bytes" in value or any(_has_dropped_audio(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_dropped_audio(v) for v in value)
    return False


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _diff(expected: Any, actual: Any, ids: IdMap, ignore: Collection[str], path: str) -> str | None:
    if isinstance(expected, str) and expected == REDACTED:
        return None
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in [*expected, *(k for k in actual if k not in expected)]:
            if key in ignore:
                continue
            if key not in expected or key not in actual:
                return f"{path}.{key}"
            found = _diff(expected[key], actual[key], ids, ignore, f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{path} (length {len(actual)}, not {len(expected)})"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found = _diff(e, a, ids, ignore, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if isinstance(expected, str) and isinstance(actual, str) and expected != actual:
        if _UUID.match(expected) and _UUID.match(actual) and ids.same(expected, actual):
            return None
        return path
    if type(expected) is not type(actual) or expected != actual:
        return path
    return None


def with_live_ids(value: Any, ids: IdMap) -> Any:
    """A recorded provider message with the identifiers the client made up replaced by the live ones."""
    if not ids.live:
        return value
    if isinstance(value, str):
        return ids.live.get(value, value)
    if isinstance(value, dict):
        return {k: with_live_ids(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [with_live_ids(v, ids) for v in value]
    return value


def restore_audio(value: Any) -> Any:
    """Dropped audio (``{"dropped_audio_bytes": N}``) back as N bytes of silence, base64 as on the wire."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("dropped_audio_bytes"), int):
            return base64.b64encode(bytes(value["dropped_audio_bytes"])).decode("ascii")
        return {k: restore_audio(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_audio(v) for v in value]
    return value
