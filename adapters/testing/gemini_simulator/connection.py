"""One accepted WebSocket connection: frames in and out, the oracle at both ends, closes and drops.

wsproto (sans-I/O) on an AnyIO byte stream (TCP, or TLS over TCP), so it runs on
asyncio and on Trio. Client frames may be text or binary (UTF-8 JSON); server
frames are binary, as the service's are (docs/protocols/gemini.md#binary-frames). Every client message
passes the protobuf oracle before the session sees it, and a violation closes
the connection 1007 with the parser's reason, as the service does; every server
message passes the strict server oracle before it is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping
from wsproto.utilities import RemoteProtocolError

from adapters.testing.gemini_simulator.oracle import check_client_message, check_server_message
from adapters.testing.gemini_simulator.records import ConnectionRecord
from adapters.testing.gemini_simulator.session import LiveSession

if TYPE_CHECKING:
    from adapters.testing.gemini_simulator.server import GeminiLiveSimulator

__all__ = ["Connection", "fit_reason"]

logger = logging.getLogger("adapters.testing.gemini_simulator")

CLOSE_WAIT_S = 2.0
"""After our close frame, how long the client has to answer with its own before the TCP connection goes."""
WRITE_TIMEOUT_S = 10.0
"""A client that stops reading for this long is dropped (a write cannot be abandoned halfway through a frame)."""


def fit_reason(reason: str) -> str:
    """A close reason that fits a control frame (123 bytes of UTF-8), cut on a character boundary."""
    data = reason.encode("utf-8")
    if len(data) <= 123:
        return reason
    return data[:123].decode("utf-8", errors="ignore")


class Connection:
    """The :class:`~.session.Link` a :class:`~.session.LiveSession` talks through."""

    def __init__(
        self,
        sim: GeminiLiveSimulator,
        record: ConnectionRecord,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        refusal: tuple[int, str] | None,
    ) -> None:
        self.sim = sim
        self.index = record.index
        self.record = record
        self.stream = stream
        self.ws = ws
        self.closing = False
        self.finished = anyio.Event()
        self.scope = anyio.CancelScope()
        self._tg: anyio.abc.TaskGroup | None = None
        self._write_lock = anyio.Lock()
        self.session = LiveSession(self, sim._ctx, refusal=refusal)

    # ------------------------------------------------------------------ Link

    async def send(self, message: dict[str, Any], *, unless: Callable[[], bool] | None = None) -> bool:
        """Check ``message`` with the server oracle and write it as a binary frame; False if not written."""
        if self.closing:
            return False
        detail = check_server_message(message, transparent=self.sim.transparent_resumption)
        if detail is not None:
            self.sim._server_oracle_failure(self.index, message, detail)
        data = json.dumps(message).encode("utf-8")
        async with self._write_lock:
            if self.closing or (unless is not None and unless()):
                return False
            if self.ws.state is not ConnectionState.OPEN:
                self._mark_closed_by_client()
                return False
            self.record.sent.append(message)
            self.sim._notify()
            await self._write_locked(self.ws.send(BytesMessage(data=data)))
            return True

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame (the service's way of reporting errors), then end the connection."""
        reason = fit_reason(reason)
        async with self._write_lock:
            if self.closing:
                return
            self.closing = True
            self.record.close_code = code
            self.record.close_reason = reason
            self.record.closed_by = "server"
            logger.info("connection %d: closing %d %s", self.index, code, reason)
            if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                await self._write_locked(self.ws.send(CloseConnection(code=code, reason=reason)))
        self.sim._notify()
        if self._tg is not None:
            self._tg.start_soon(self._close_after_grace)

    async def drop(self) -> None:
        """Close the TCP connection without a close frame."""
        self.end("dropped")
        await anyio.lowlevel.checkpoint()

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._tg is not None and not self.closing:
            self._tg.start_soon(fn)

    # ------------------------------------------------------------------ running

    def end(self, why: str) -> None:
        """Stop everything of this connection now; the socket closes without a close frame."""
        if not self.closing:
            self.closing = True
            self.record.closed_by = why
        self.scope.cancel()

    async def run(self) -> None:
        try:
            with self.scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self.session.start_lifetime)
                    await self._read_loop()
                    tg.cancel_scope.cancel()
        finally:
            self.closing = True
            self.record.closed = True
            if self.record.closed_by is None:
                self.record.closed_by = "shutdown"
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()
            logger.info("connection %d closed (%s)", self.index, self.record.closed_by)
            self.finished.set()
            self.sim._notify()

    async def _close_after_grace(self) -> None:
        await anyio.sleep(CLOSE_WAIT_S)
        self.scope.cancel()

    async def _write_locked(self, data: bytes) -> None:
        with anyio.move_on_after(WRITE_TIMEOUT_S, shield=True) as timeout:
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.end(self.record.closed_by or "client")
        if timeout.cancelled_caught:
            self.end("dropped")

    async def _read_loop(self) -> None:
        parts: list[bytes] = []
        while True:
            try:
                data: bytes | None = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                data = None
            try:
                self.ws.receive_data(data)
                events = list(self.ws.events())
            except RemoteProtocolError:
                self.end(self.record.closed_by or "client")
                return
            for event in events:
                if isinstance(event, Message):
                    parts.append(bytes(event.data) if isinstance(event, BytesMessage) else event.data.encode("utf-8"))
                    if event.message_finished:
                        raw = b"".join(parts)
                        parts.clear()
                        await self._on_message(raw)
                elif isinstance(event, Ping):
                    async with self._write_lock:
                        if not self.closing and self.ws.state is ConnectionState.OPEN:
                            await self._write_locked(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if data is not None:  # with no data, wsproto stands in 1006 for a connection without a frame
                        self.record.client_close_code = event.code
                    async with self._write_lock:
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._write_locked(self.ws.send(event.response()))
                        self._mark_closed_by_client()
                    return
            if data is None:
                self._mark_closed_by_client()
                return

    def _mark_closed_by_client(self) -> None:
        if not self.closing:
            self.closing = True
            self.record.closed_by = "client"

    async def _on_message(self, raw: bytes) -> None:
        if self.closing:
            return
        message, reason = check_client_message(raw, transparent=self.sim.transparent_resumption)
        self.record.received.append(message if message is not None else raw.decode("utf-8", errors="replace"))
        self.sim._notify()
        if reason is not None:
            self.record.oracle_errors.append(reason)
            self.sim._client_oracle_failure(self.index, self.record.received[-1], reason)
            await self.close(1007, reason)
            return
        assert message is not None
        await self.session.handle(message)
