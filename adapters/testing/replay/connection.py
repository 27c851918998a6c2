"""One replayed connection: the provider's recorded frames out, the client's frames checked as they come.

A provider frame is handed to the client once the client has sent every
frame it had sent before it read that frame on the recorded call (so an
answer never comes before its question) and, at a ``speed``, once as much
time has passed since the connection opened as had then (``speed=1`` real
pace, ``2`` twice as fast; ``None`` as fast as possible). A client frame is
compared with the next one recorded (``matching.py``); the first that differs
is a :class:`ReplayMismatch`. :class:`ReplaySocket` (OpenAI, Gemini) and
:class:`ReplayStream` (Nova Sonic) put this behind the transports' own
interfaces, so the providers' real sessions run over it unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from adapters.recording import AudioFields, FrameCodec
from adapters.testing.replay.matching import IdMap, difference, restore_audio, with_live_ids
from adapters.testing.replay.recording_file import ConnectionScript
from adapters.websocket import WebSocketClosed
from ports.errors import BidiConnectionError, BidiProtocolError, BidiProviderError

__all__ = ["ReplayConnection", "ReplayMismatch", "ReplaySocket", "ReplayStream", "error_from_record"]


def _short(record: Mapping[str, Any] | None, limit: int = 300) -> str:
    if record is None:
        return "nothing"
    text = json.dumps(record.get("message", record.get("text", record.get("kind"))), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReplayMismatch(Exception):
    """The client did not do what it did on the recorded call: the first difference.

    ``connection`` is the recorded connection's number, ``frame`` the client
    frame's (1-based, within the connection), ``expected`` the recorded
    frame's record (``None``: the recording has no more), ``actual`` the
    client's (``None``: it never sent one), ``where`` the first differing
    path in the message, and ``t`` when the recorded frame was sent.
    Not a :class:`~ports.errors.BidiError`: an agent replaying ends with it
    rather than reconnecting.
    """

    def __init__(
        self,
        why: str,
        *,
        connection: int,
        frame: int | None = None,
        expected: Mapping[str, Any] | None = None,
        actual: Mapping[str, Any] | None = None,
        where: str | None = None,
    ) -> None:
        self.connection = connection
        self.frame = frame
        self.expected = expected
        self.actual = actual
        self.where = where
        self.t = None if expected is None else expected.get("t")
        lines = [f"connection {connection}" + (f", client frame {frame}" if frame else "") + f": {why}"]
        if expected is not None or actual is not None:
            lines.append(f"  recorded: {_short(expected)}")
            lines.append(f"  now:      {_short(actual)}")
        super().__init__("\n".join(lines))


def error_from_record(record: Mapping[str, Any]) -> Exception:
    """The error a recorded ``end`` (or refusal) names, raised again (its provider-specific subclass becomes
    the port's error of the same kind)."""
    kind = str(record.get("type", ""))
    message = str(record.get("message", "the recorded connection failed"))
    if kind == "WebSocketClosed":
        return WebSocketClosed(int(record.get("code", 1006)), str(record.get("reason", "")))
    if "Provider" in kind or "Resumption" in kind:
        return BidiProviderError(message, code=record.get("code"), retryable=bool(record.get("retryable", False)))
    if kind == "BidiProtocolError":
        return BidiProtocolError(message)
    return BidiConnectionError(message, retryable=bool(record.get("retryable", True)))


class ReplayConnection:
    """The engine behind one replayed connection (see the module docstring)."""

    def __init__(
        self,
        script: ConnectionScript,
        codec: FrameCodec,
        *,
        audio_fields: AudioFields,
        speed: float | None,
        match_audio: str,
        ignore_keys: Collection[str],
        wait_timeout_s: float,
        raise_mismatch: bool,
        mismatches: list[ReplayMismatch],
        lenient: bool = False,
    ) -> None:
        self.script = script
        self._lenient = lenient  # reading a recording (the timeline): nothing checked, nothing waited for
        self.last_t = script.t_open  # when the provider item handed over last was recorded
        self._codec = codec
        self._audio_fields = audio_fields
        self._speed = speed
        self._match_audio = match_audio
        self._ignore = ignore_keys
        self._wait_timeout_s = wait_timeout_s
        self._raise = raise_mismatch
        self.mismatches = mismatches
        self._expected = script.client_frames
        self.sent = 0  # client frames taken so far
        self.ids = IdMap()
        # Each provider item (a frame or the end) with how many client frames came before it.
        self._server: list[tuple[int, Mapping[str, Any]]] = []
        count = 0
        for frame in script.frames:
            if frame["dir"] == "out":
                count += 1
            else:
                self._server.append((count, frame))
        if script.end is not None and script.end.get("by") != "client":
            self._server.append((count, script.end))
        self._next = 0
        self._progress = anyio.Event()
        self._opened_at = time.monotonic()
        self.closed = False

    # ------------------------------------------------------------------ the client's side

    def _mismatch(self, mismatch: ReplayMismatch) -> None:
        self.mismatches.append(mismatch)
        if self._raise:
            raise mismatch

    def client_sent(self, frame: str | bytes) -> None:
        """Check one frame the client wrote against the recording."""
        if self._lenient:
            return
        for live in self._codec.client_frames(frame):
            number = self.sent + 1
            if self.sent >= len(self._expected):
                self.sent += 1
                self._mismatch(
                    ReplayMismatch(
                        "the client sent a frame the recording does not have",
                        connection=self.script.number,
                        frame=number,
                        actual=live,
                    )
                )
                continue
            expected = self._expected[self.sent]
            self.sent += 1
            where = difference(
                expected,
                live,
                self.ids,
                audio_fields=self._audio_fields,
                match_audio=self._match_audio,
                ignore_keys=self._ignore,
            )
            self._progress.set()
            self._progress = anyio.Event()
            if where is not None:
                self._mismatch(
                    ReplayMismatch(
                        f"the client's frame differs at {where}",
                        connection=self.script.number,
                        frame=number,
                        expected=expected,
                        actual=live,
                        where=where,
                    )
                )

    def client_closed(self) -> None:
        """The client left the connection: it must have sent everything it sent then."""
        self.closed = True
        if any(m.connection == self.script.number for m in self.mismatches):
            return  # the first difference is what matters; what follows it says nothing more
        if self.sent < len(self._expected):
            missing = self._expected[self.sent]
            self.mismatches.append(
                ReplayMismatch(
                    f"the client closed the connection having sent {self.sent} of the {len(self._expected)} "
                    "frames it sent then",
                    connection=self.script.number,
                    frame=self.sent + 1,
                    expected=missing,
                )
            )

    # ------------------------------------------------------------------ the provider's side

    async def next_item(self) -> Mapping[str, Any] | None:
        """The provider's next frame or end (``None``: the recording ends here, the client ended it)."""
        if self._next >= len(self._server):
            if self._lenient:
                raise anyio.EndOfStream
            return None
        needs, item = self._server[self._next]
        if self.sent < needs and not self._lenient:
            with anyio.move_on_after(self._wait_timeout_s):
                while self.sent < needs:
                    await self._progress.wait()
            if self.sent < needs:
                mismatch = ReplayMismatch(
                    f"the client has not sent this frame within {self._wait_timeout_s:g} s, and the recording "
                    "has the provider wait for it",
                    connection=self.script.number,
                    frame=self.sent + 1,
                    expected=self._expected[self.sent],
                )
                self.mismatches.append(mismatch)
                raise mismatch
        if self._speed is not None:
            due = (float(item["t"]) - self.script.t_open) / self._speed
            wait = due - (time.monotonic() - self._opened_at)
            if wait > 0:
                await anyio.sleep(wait)
        self._next += 1
        self.last_t = float(item["t"])
        return item

    def wire(self, frame: Mapping[str, Any]) -> str | bytes:
        """A recorded provider frame as the client reads it (dropped audio as silence, the live identifiers)."""
        record = dict(frame)
        if "message" in record:
            record["message"] = with_live_ids(restore_audio(record["message"]), self.ids)
        return self._codec.server_wire(record)

    @property
    def ends_with_response_error(self) -> bool:
        end = self.script.end
        return end is not None and end.get("by") == "error" and end.get("during") == "response"


class ReplaySocket:
    """A :class:`~adapters.message_socket.MessageSocket` playing a recorded provider (OpenAI, Gemini)."""

    def __init__(self, connection: ReplayConnection) -> None:
        self._connection = connection

    async def send_text(self, text: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._connection.client_sent(text)

    async def send_bytes(self, data: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        self._connection.client_sent(data)

    def send_now(self, build: Callable[[], Sequence[str]]) -> bool:
        return False  # every message goes through send_text, a checkpoint, as a socket's write is

    async def receive(self) -> str | bytes:
        item = await self._connection.next_item()
        if item is None:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")
        if item["record"] == "frame":
            return self._connection.wire(item)
        if item.get("by") == "server":
            raise WebSocketClosed(int(item.get("close_code", 1000)), str(item.get("reason", "")))
        raise error_from_record(item.get("error") or {})


class ReplayStream:
    """A Nova Sonic :class:`~adapters.nova_sonic.h2transport.RequestStream` playing a recorded stream."""

    def __init__(self, connection: ReplayConnection, request_id: str = "replay") -> None:
        self._connection = connection
        self._ended = False
        self._failed = False
        self.response_headers: dict[str, str] = {"x-amzn-requestid": request_id}

    @property
    def usable(self) -> bool:
        return not self._ended and not self._failed

    async def send(self, data: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        self._connection.client_sent(data)

    async def end(self) -> None:
        self._ended = True

    async def receive(self) -> bytes | None:
        item = await self._connection.next_item()
        if item is None:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")
        if item["record"] == "frame":
            wire = self._connection.wire(item)
            return wire if isinstance(wire, bytes) else wire.encode()
        if item.get("by") == "server":
            return None
        self._failed = True
        raise error_from_record(item.get("error") or {})

    async def wait_response(self) -> int:
        if self._connection.ends_with_response_error:
            item = await self._connection.next_item()
            while item is not None and item["record"] == "frame":  # a refusal comes before any event
                item = await self._connection.next_item()
            self._failed = True
            raise error_from_record((item or {}).get("error") or {})
        return 200
