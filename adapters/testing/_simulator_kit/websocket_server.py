"""The WebSocket server loop the OpenAI and Gemini simulators share: wsproto (server side) on an AnyIO byte stream.

Sans-I/O wsproto plus AnyIO streams, so a simulator runs on asyncio and on Trio
alike. This module does what any WebSocket service does and nothing of either
provider's protocol: read the upgrade request (bounded), refuse it with an HTTP
status, headers and a JSON body (:class:`Refusal`, for faults), accept it; then,
per connection, reassemble messages, answer pings, write frames one at a time
under a lock (a client that stops reading is dropped after
:data:`WRITE_TIMEOUT_S`), send close frames and give the client
:data:`CLOSE_WAIT_S` to answer. Faults: drop the TCP connection without a close
frame, reset it (RST), fall silent (read on, answer nothing, pings included),
stop reading (the client's writes block once the TCP buffers are full), write
raw bytes that are no well-formed frame. Each simulator subclasses
:class:`WebSocketConnection` for its frames' content (OpenAI: JSON text frames;
Gemini: binary frames, close codes as errors) and its records.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from adapters.testing._simulator_kit.tcp import reset_on_close

__all__ = [
    "CLOSE_WAIT_S",
    "HANDSHAKE_TIMEOUT_S",
    "WRITE_TIMEOUT_S",
    "Refusal",
    "Refusals",
    "WebSocketConnection",
    "accept",
    "drop_all",
    "fit_reason",
    "read_request",
    "reject",
    "send_raw_response",
]

HANDSHAKE_TIMEOUT_S = 10.0
"""How long a client has to send its whole upgrade request."""
CLOSE_WAIT_S = 2.0
"""After our close frame, how long the client has to answer with its own before the TCP connection goes."""
WRITE_TIMEOUT_S = 10.0
"""A client that stops reading for this long is dropped (a write cannot be abandoned halfway through a frame)."""

_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def fit_reason(reason: str) -> str:
    """A close reason that fits a control frame (123 bytes of UTF-8), cut on a character boundary."""
    data = reason.encode("utf-8")
    if len(data) <= 123:
        return reason
    return data[:123].decode("utf-8", errors="ignore")


async def read_request(stream: anyio.abc.ByteStream, ws: WSConnection) -> Request | RemoteProtocolError | None:
    """The client's upgrade request; the parser's error if it is malformed; None if the client went or was slow."""
    request: Request | None = None
    with anyio.move_on_after(HANDSHAKE_TIMEOUT_S):
        try:
            while request is None:
                data = await stream.receive(65536)
                ws.receive_data(data)
                request = next((e for e in ws.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            return exc
        except _GONE:
            return None
    return request


async def _send_quietly(stream: anyio.abc.ByteStream, data: bytes) -> None:
    with anyio.move_on_after(WRITE_TIMEOUT_S):
        with contextlib.suppress(*_GONE):
            await stream.send(data)


@attrs.frozen
class Refusal:
    """A fault: the service refuses the WebSocket upgrade with HTTP ``status``, ``headers`` (e.g.
    ``{"Retry-After": "2"}``) and ``body`` (JSON; None: the simulator's own error body for that
    status), for the next ``times`` handshakes."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: Mapping[str, Any] | None = None
    times: int = 1


class Refusals:
    """The refusals a simulator was given, used up in order: each one for ``times`` handshakes."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        self._left = [(refusal, refusal.times) for refusal in refusals]

    def next(self) -> Refusal | None:
        """The refusal for the handshake now arriving (counted now), or None: accept it."""
        while self._left:
            refusal, times = self._left[0]
            if times > 0:
                self._left[0] = (refusal, times - 1)
                return refusal
            self._left.pop(0)
        return None


async def reject(
    stream: anyio.abc.ByteStream,
    ws: WSConnection,
    status: int,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> None:
    """Refuse the upgrade with HTTP ``status``, ``headers`` and ``body`` as JSON (a client that went is no error)."""
    payload = json.dumps(body).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    fields += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    reply = ws.send(RejectConnection(status_code=status, headers=fields, has_body=True))
    reply += ws.send(RejectData(data=payload))
    await _send_quietly(stream, reply)


async def send_raw_response(stream: anyio.abc.ByteStream, status: int, body: dict[str, Any]) -> None:
    """An HTTP error response written by hand, for a request wsproto could not parse (it cannot answer one)."""
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} Bad Request\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
    ).encode()
    await _send_quietly(stream, head + payload)


async def accept(stream: anyio.abc.ByteStream, ws: WSConnection, subprotocol: str | None = None) -> bool:
    """Accept the upgrade; False if the client is already gone."""
    try:
        await stream.send(ws.send(AcceptConnection(subprotocol=subprotocol)))
    except _GONE:
        return False
    return True


class WebSocketConnection:
    """One accepted WebSocket connection: the read loop, frame writes, close frames and drops.

    A subclass says what a message means (:meth:`on_message`), what runs beside
    the reader (:meth:`on_open`), and keeps its records (:meth:`on_ending`,
    :meth:`on_finished`). "Why" a connection ended is the first reason given:
    ``"client"`` (its close frame, its EOF, a protocol error or a failed write),
    ``"dropped"`` (:meth:`drop`, or a client that stopped reading), or what the
    simulator passed to :meth:`close` or :meth:`end` (``"reset"`` for :meth:`reset`).

    Faults besides those: :meth:`silence` (the service is stuck: it reads on and
    answers nothing, pings included), :meth:`deafen` (it stops reading: once the
    TCP buffers are full the client's writes block) and :meth:`send_raw` (bytes
    that are no well-formed frame).
    """

    def __init__(
        self, stream: anyio.abc.ByteStream, ws: WSConnection, *, notify: Callable[[], None], logger: logging.Logger
    ) -> None:
        self.stream = stream
        self.ws = ws
        self.closing = False
        self.silent = False
        self.deaf = False
        self.finished = anyio.Event()
        self.scope = anyio.CancelScope()
        self._notify = notify
        self._logger = logger
        self._tg: anyio.abc.TaskGroup | None = None
        self._write_lock = anyio.Lock()

    # ------------------------------------------------------------------ what a simulator adds

    async def on_open(self) -> None:
        """Runs in the connection's task group before the first read (start timers with :meth:`spawn`)."""

    async def on_message(self, data: str | bytes) -> None:
        """One whole client message: ``str`` from text frames, ``bytes`` from binary ones."""
        raise NotImplementedError

    def on_ending(self, why: str, close: tuple[int, str] | None) -> None:
        """The connection started to end, for ``why`` (once); ``close`` is the close frame we send, if any."""

    def on_client_close(self, code: int) -> None:
        """The client's close frame carried ``code``."""

    def on_stop(self) -> None:
        """Nothing more will be written: stop producing (called on a drop, the client's close and the end)."""

    def on_finished(self) -> None:
        """The connection is over (before its socket closes); record it."""

    # ------------------------------------------------------------------ what the session uses

    async def send_message(
        self,
        data: str | bytes,
        *,
        unless: Callable[[], bool] | None = None,
        on_write: Callable[[], None] | None = None,
        then: Callable[[], None] | None = None,
    ) -> bool:
        """Write one text (``str``) or binary (``bytes``) message; False if nothing was written.

        Under the write lock ``unless()`` can still withdraw it, ``on_write()`` runs
        just before the write (to record it) and ``then()`` right after it, so no
        other message can slip in between.
        """
        async with self._write_lock:
            if self.closing or self.silent or (unless is not None and unless()):  # may have changed meanwhile
                return False
            if self.ws.state is not ConnectionState.OPEN:
                # The client's close frame was parsed but the reader has not handled it yet.
                self._closed_by_client()
                return False
            if on_write is not None:
                on_write()
            frame = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
            await self._write_locked(self.ws.send(frame))
            if then is not None:
                then()
            return True

    async def close(self, code: int, reason: str, why: str = "server") -> None:
        """Send a close frame, then end the connection when the client answers or :data:`CLOSE_WAIT_S` later."""
        reason = fit_reason(reason)
        async with self._write_lock:
            if self.closing:
                return
            self._begin_end(why, (code, reason))
            if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                await self._write_locked(self.ws.send(CloseConnection(code=code, reason=reason)))
        self._notify()
        if self._tg is not None:
            self._tg.start_soon(self._close_after_grace)

    async def drop(self) -> None:
        """Close the TCP connection without a close frame (a network fault)."""
        self.end("dropped")
        await anyio.lowlevel.checkpoint()

    async def reset(self) -> None:
        """Reset the TCP connection (RST, no close frame): an abrupt network fault."""
        reset_on_close(self.stream)
        self.end("reset")
        await anyio.lowlevel.checkpoint()

    def silence(self) -> None:
        """From now on write nothing and answer nothing (pings included); keep reading and the socket open."""
        self.silent = True
        self.on_stop()
        self._notify()

    def deafen(self) -> None:
        """Stop reading the socket (after the message being handled) and write nothing more."""
        self.deaf = True
        self.silence()

    async def send_raw(self, data: bytes) -> bool:
        """Write ``data`` as it is, under the write lock: bytes that need not be a frame. False if closing."""
        async with self._write_lock:
            if self.closing or self.silent:
                return False
            await self._write_locked(data)
            return True

    def end(self, why: str) -> None:
        """Stop everything of this connection now; the socket closes without a close frame."""
        if not self.closing:
            self._begin_end(why, None)
        self.on_stop()
        self.scope.cancel()

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn`` in the connection's task group (not once it is closing)."""
        if self._tg is not None and not self.closing:
            self._tg.start_soon(fn)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Serve the connection until it ends; the socket is closed on the way out."""
        try:
            with self.scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await self.on_open()
                    await self._read_loop()
                    tg.cancel_scope.cancel()
        finally:
            self.closing = True
            self.on_stop()
            self.on_finished()
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()
            self.finished.set()
            self._notify()

    def _begin_end(self, why: str, close: tuple[int, str] | None) -> None:
        self.closing = True
        self.on_ending(why, close)

    def _closed_by_client(self) -> None:
        """The client closed: nothing more may be written (wsproto would refuse it anyway)."""
        if not self.closing:
            self._begin_end("client", None)
        self.on_stop()

    async def _close_after_grace(self) -> None:
        await anyio.sleep(CLOSE_WAIT_S)
        self.scope.cancel()

    async def _write_locked(self, data: bytes) -> None:
        with anyio.move_on_after(WRITE_TIMEOUT_S, shield=True) as timeout:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.end("client")
        if timeout.cancelled_caught:
            self.end("dropped")

    async def _read_loop(self) -> None:
        parts: list[str | bytes] = []
        while True:
            if self.deaf:
                await anyio.sleep_forever()  # until the connection ends: nothing more is read
            try:
                data: bytes | None = await self.stream.receive(65536)
            except _GONE:
                data = None
            try:
                self.ws.receive_data(data)
                events = list(self.ws.events())
            except RemoteProtocolError:
                self.end("client")
                return
            for event in events:
                if self.silent or self.deaf:
                    break  # a stuck service: what it reads changes nothing
                if isinstance(event, Message):
                    parts.append(bytes(event.data) if isinstance(event, BytesMessage) else event.data)
                    if event.message_finished:
                        if isinstance(event, BytesMessage):
                            message: str | bytes = b"".join(p for p in parts if isinstance(p, bytes))
                        else:
                            message = "".join(p for p in parts if isinstance(p, str))
                        parts.clear()
                        await self.on_message(message)
                elif isinstance(event, Ping):
                    async with self._write_lock:
                        if not self.closing and self.ws.state is ConnectionState.OPEN:
                            await self._write_locked(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if data is not None:  # with no data, wsproto stands in 1006 for a connection without a frame
                        self.on_client_close(event.code)
                    async with self._write_lock:
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._write_locked(self.ws.send(event.response()))
                        self._closed_by_client()
                    return
            if data is None:
                self._closed_by_client()
                return


async def drop_all(connections: Sequence[WebSocketConnection]) -> None:
    """Drop every connection (no close frame) and wait until each is gone."""
    live = list(connections)
    for conn in live:
        conn.end("dropped")
    for conn in live:
        await conn.finished.wait()
