"""Recording a session: every frame both ways, with its time, as JSON Lines (``docs/recording.md``).

``ConnectionOptions(record_to="call.jsonl")`` makes any provider's model
write one: a header line (the provider, the model and the settings a replay
rebuilds it from), then for each connection an ``open`` line, one ``frame``
line per message each way (``dir`` ``out``: ours to the provider; ``in``: the
provider's to us), each with ``t``, seconds since the recording started on
the monotonic clock, and the decoded provider message, and an ``end`` line
(who ended it, and how) or a ``refused`` line (the connection never opened).
``adapters.testing.replay`` plays a recording back and prints its timeline.

What never reaches the file: credentials. Headers are not recorded at all
(the API key, ``Authorization``, SigV4 signatures and session tokens travel
there), nor are Nova's per-event signatures (the recorded message is the
event inside the signed envelope); the secrets the model connects with are
replaced wherever they appear; values under keys that name credentials
(``client_secret``, ``access_token``, ...) and credential-like URL query
parameters are replaced too. Audio is kept (base64, as on the wire) or, with
``record_audio=False``, replaced by ``{"dropped_audio_bytes": N}``.

Each record is written with one ``write`` to a file opened in append mode for
that connection, and the file is closed when the connection ends: nothing
stays open after a conversation, a crash loses at most the line being written,
and the lines of two connections that overlap (a rotation) never interleave.
The writes are small and synchronous (a local file: microseconds), the cost of
recording only while it is on; a model without ``record_to`` pays nothing.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import IO, Any, Protocol

from ports.errors import BidiConnectionError, BidiError, BidiProviderError, redact

__all__ = [
    "FORMAT",
    "REDACTED",
    "VERSION",
    "AudioFields",
    "FrameCodec",
    "JsonFrames",
    "Recording",
    "Tap",
    "dropped_audio",
    "error_record",
    "record_connection",
    "scrub",
]

FORMAT = "bidi-core-recording"
VERSION = 1
REDACTED = "[redacted]"

AudioFields = Callable[[Any], Iterable[tuple[Any, str]]]
"""Where a provider's decoded message holds base64 audio: ``(container, key)`` pairs (each provider's wire)."""

_CREDENTIAL_KEYS = frozenset(
    {
        "authorization",
        "api_key",
        "apikey",
        "x-goog-api-key",
        "key",
        "client_secret",
        "secret",
        "secret_key",
        "secret_access_key",
        "access_token",
        "session_token",
        "token",
        "x-amz-security-token",
        "password",
        "ephemeral_key",
        ":chunk-signature",
        "signature",
    }
)
"""Keys whose values are credentials wherever they appear in a message (compared lower-cased)."""

_TOKEN_SHAPES = re.compile(r"\b(?:sk-(?:proj-)?|ek_)[A-Za-z0-9_-]{12,}")
"""OpenAI API and ephemeral keys, should one appear where we were not told to expect it."""


def dropped_audio(size: int) -> dict[str, int]:
    """What a recording without audio keeps of a block: its length in bytes."""
    return {"dropped_audio_bytes": size}


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "=" in text or "sk-" in text or "ek_" in text:
        text = _TOKEN_SHAPES.sub(REDACTED, redact(text))
    return text


def scrub(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """``value`` (decoded JSON) with credentials replaced by ``[redacted]`` (see the module docstring)."""
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, dict):
        return {
            key: (REDACTED if isinstance(key, str) and key.lower() in _CREDENTIAL_KEYS else scrub(item, secrets))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [scrub(item, secrets) for item in value]
    return value


def error_record(error: BaseException, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """An error as a record says it (and a replay raises it again): its type, message and what it carries."""
    record: dict[str, Any] = {"type": type(error).__name__, "message": _scrub_text(str(error), secrets)}
    for name in ("code", "reason"):
        value = getattr(error, name, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            record[name] = _scrub_text(value, secrets) if isinstance(value, str) else value
    if isinstance(error, BidiConnectionError | BidiProviderError):
        record["retryable"] = error.retryable
    return record


class FrameCodec(Protocol):
    """How one transport's frames become records and back (one instance per connection: it may buffer)."""

    def client_frames(self, frame: str | bytes) -> list[dict[str, Any]]:
        """What we wrote, as records (``kind`` and ``message``, and ``headers`` where the wire has them)."""
        ...

    def server_frames(self, data: str | bytes) -> list[dict[str, Any]]:
        """What the provider sent, as records (a piece of a message gives none until the message is whole)."""
        ...

    def server_wire(self, record: Mapping[str, Any]) -> str | bytes:
        """The provider's frame again, from its record (the replay sends it)."""
        ...


class JsonFrames:
    """WebSocket messages (OpenAI, Gemini): text or binary frames, each holding one JSON message."""

    @staticmethod
    def _record(frame: str | bytes) -> dict[str, Any]:
        kind = "text" if isinstance(frame, str) else "binary"
        try:
            return {"kind": kind, "message": json.loads(frame)}
        except ValueError:
            if isinstance(frame, str):
                return {"kind": kind, "text": frame}
            return {"kind": kind, "data": base64.b64encode(frame).decode("ascii")}

    def client_frames(self, frame: str | bytes) -> list[dict[str, Any]]:
        return [self._record(frame)]

    def server_frames(self, data: str | bytes) -> list[dict[str, Any]]:
        return [self._record(data)]

    def server_wire(self, record: Mapping[str, Any]) -> str | bytes:
        return self.wire(record)

    @staticmethod
    def wire(record: Mapping[str, Any]) -> str | bytes:
        """A frame from its record (either direction)."""
        if "message" in record:
            text = json.dumps(record["message"], separators=(",", ":"), ensure_ascii=False)
        elif "text" in record:
            text = record["text"]
        else:
            try:
                return base64.b64decode(record["data"], validate=True)
            except (KeyError, binascii.Error, TypeError) as exc:
                raise ValueError(f"a frame record needs message, text or data: {exc}") from None
        return text if record.get("kind") == "text" else text.encode("utf-8")


class _File:
    """Appends whole lines to the recording (one ``write`` each), until closed."""

    def __init__(self, path: str, *, truncate: bool) -> None:
        self._file: IO[bytes] | None = open(path, "wb" if truncate else "ab", buffering=0)  # noqa: SIM115

    def write(self, record: Mapping[str, Any]) -> None:
        if self._file is not None:
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
            self._file.write(line.encode("utf-8"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Tap:
    """One connection's recorder: the transport reports every frame and how the connection ended."""

    def __init__(
        self,
        recording: Recording,
        file: _File,
        number: int,
        codec: FrameCodec,
        secrets: tuple[str, ...],
    ) -> None:
        self._recording = recording
        self._file = file
        self.number = number
        self._codec = codec
        self._secrets = secrets
        self.ended = False

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(
            {"record": record.pop("record"), "t": self._recording.now(), "connection": self.number, **record}
        )

    def _frame(self, direction: str, record: dict[str, Any]) -> None:
        message = record.get("message")
        if message is not None:
            if not self._recording.keep_audio:
                for container, key in list(self._recording.audio_fields(message)):
                    data = container.get(key)
                    if isinstance(data, str):
                        container[key] = dropped_audio(len(data) * 3 // 4 - data.endswith("=") - data.endswith("=="))
            record["message"] = scrub(message, self._secrets)
        if "headers" in record:
            record["headers"] = scrub(record["headers"], self._secrets)
        self._write({"record": "frame", "dir": direction, **record})

    def sent(self, frame: str | bytes) -> None:
        """We wrote ``frame`` (whole) to the provider."""
        for record in self._codec.client_frames(frame):
            self._frame("out", record)

    def received(self, data: str | bytes) -> None:
        """The provider sent ``data`` (a message, or a piece of the stream)."""
        for record in self._codec.server_frames(data):
            self._frame("in", record)

    def server_ended(self, **how: Any) -> None:
        """The provider ended the connection normally (``how``: a close code and reason, an end of stream)."""
        if not self.ended:
            self.ended = True
            self._write({"record": "end", "by": "server", **scrub(how, self._secrets)})

    def failed(self, error: BaseException, *, during: str | None = None) -> None:
        """The connection failed: a fault of the transport or the provider's refusal (``during`` what, if not
        reading: Nova's ``response`` to the request)."""
        if not self.ended:
            self.ended = True
            record = {"record": "end", "by": "error", "error": error_record(error, self._secrets)}
            self._write(record if during is None else {**record, "during": during})

    def client_ended(self) -> None:
        if not self.ended:
            self.ended = True
            self._write({"record": "end", "by": "client"})


class Recording:
    """One model's recording: its connections, numbered in the order they open, in one file.

    Made by each model from its :class:`~adapters.connection.ConnectionOptions`
    (:meth:`from_options`). The first connection starts the file afresh (a
    header line), later ones append; a model shared by concurrent conversations
    records them all in one file, told apart only by connection number, so give
    each conversation its own model to replay it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        provider: str,
        model_id: str,
        settings: Mapping[str, Any],
        keep_audio: bool,
        audio_fields: AudioFields,
        codec: Callable[[], FrameCodec],
    ) -> None:
        self.path = os.fspath(path)
        self.provider = provider
        self.model_id = model_id
        self.settings = dict(settings)
        self.keep_audio = keep_audio
        self.audio_fields = audio_fields
        self._codec = codec
        self._numbers = itertools.count(1)
        self._t0: float | None = None

    @classmethod
    def from_options(cls, options: Any, **kwargs: Any) -> Recording | None:
        """The recording ``options.record_to`` asks for (``None``: not recording)."""
        if options.record_to is None:
            return None
        return cls(options.record_to, keep_audio=options.record_audio, **kwargs)

    def now(self) -> float:
        assert self._t0 is not None
        return round(time.monotonic() - self._t0, 6)

    def _header(self) -> dict[str, Any]:
        return {
            "record": "recording",
            "format": FORMAT,
            "version": VERSION,
            "provider": self.provider,
            "model_id": self.model_id,
            "settings": scrub(self.settings),
            "audio": "kept" if self.keep_audio else "dropped",
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        }

    @contextmanager
    def connection(self, connection_id: str, url: str, secrets: tuple[str, ...] = ()) -> Iterator[Tap]:
        """Record one connection: an ``open`` line now, an ``end`` line when it is over (see :class:`Tap`)."""
        first = self._t0 is None
        if first:
            self._t0 = time.monotonic()
        file = _File(self.path, truncate=first)
        try:
            if first:
                file.write(self._header())
            tap = Tap(self, file, next(self._numbers), self._codec(), secrets)
            tap._write({"record": "open", "connection_id": connection_id, "url": _scrub_text(url, secrets)})
            try:
                yield tap
            except BaseException as exc:
                if isinstance(exc, BidiError | OSError):
                    tap.failed(exc)
                tap.client_ended()
                raise
            tap.client_ended()
        finally:
            file.close()


def record_connection(recording: Recording | None, connection_id: str, url: str, secrets: tuple[str, ...] = ()) -> Any:
    """``recording.connection(...)``, or a context yielding ``None`` when the model is not recording."""
    if recording is None:
        return nullcontext(None)
    return recording.connection(connection_id, url, secrets)
