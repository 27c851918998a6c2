"""One accepted WebSocket connection: Gemini's frames, the oracle at both ends, close codes as errors.

The WebSocket loop itself (reading, pings, writes under a lock, close frames,
drops) is the kit's (:mod:`adapters.testing._simulator_kit.websocket_server`),
shared with the OpenAI simulator. What is Gemini's is here: client frames may be
text or binary (UTF-8 JSON); server frames are binary, as the service's are
(docs/protocols/gemini.md#binary-frames). Every client message passes the protobuf oracle before the
session sees it, and a violation closes the connection 1007 with the parser's
reason, as the service does; every server message passes the strict server
oracle before it is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.abc
from wsproto import WSConnection

from adapters.testing._simulator_kit.websocket_server import WebSocketConnection, fit_reason
from adapters.testing.gemini_simulator.oracle import check_client_message, check_server_message
from adapters.testing.gemini_simulator.records import ConnectionRecord
from adapters.testing.gemini_simulator.session import LiveSession

if TYPE_CHECKING:
    from adapters.testing.gemini_simulator.server import GeminiLiveSimulator

__all__ = ["Connection", "fit_reason"]

logger = logging.getLogger("adapters.testing.gemini_simulator")


class Connection(WebSocketConnection):
    """The :class:`~.session.Link` a :class:`~.session.LiveSession` talks through."""

    def __init__(
        self,
        sim: GeminiLiveSimulator,
        record: ConnectionRecord,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        refusal: tuple[int, str] | None,
    ) -> None:
        super().__init__(stream, ws, notify=sim._notify, logger=logger)
        self.sim = sim
        self.index = record.index
        self.record = record
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

        def record() -> None:
            self.record.sent.append(message)
            self.sim._notify()

        return await self.send_message(data, unless=unless, on_write=record)

    async def send_frame(self, data: str | bytes) -> bool:
        """One frame as it is, unchecked (a fault: not JSON, a wrong shape)."""
        return await self.send_message(data)

    # ------------------------------------------------------------------ the WebSocket loop's hooks

    async def on_open(self) -> None:
        if self.index in self.sim.silent_connections:
            self.silence()  # accepted, then nothing: no setupComplete, no pong
            return
        self.spawn(self.session.start_lifetime)

    def on_ending(self, why: str, close: tuple[int, str] | None) -> None:
        self.record.closed_by = why
        if close is not None:
            self.record.close_code, self.record.close_reason = close
            logger.info("connection %d: closing %d %s", self.index, *close)

    def on_client_close(self, code: int) -> None:
        self.record.client_close_code = code

    def on_finished(self) -> None:
        self.record.closed = True
        if self.record.closed_by is None:
            self.record.closed_by = "shutdown"
        logger.info("connection %d closed (%s)", self.index, self.record.closed_by)

    async def on_message(self, data: str | bytes) -> None:
        if self.closing:
            return
        raw = data.encode("utf-8") if isinstance(data, str) else data
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
