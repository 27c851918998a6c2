"""Whole messages each way over a WebSocket, as a provider session sees them; and the recording of them.

The sessions of OpenAI and Gemini read a :class:`MessageSocket`: the real
:class:`~adapters.websocket.WebSocketConnection`, a :class:`RecordedSocket` around it when the model
records (``record_to``), or ``adapters.testing.replay``'s player of a recorded provider.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from adapters.recording import Tap
from adapters.websocket import WebSocketClosed
from ports.errors import BidiError

__all__ = ["MessageSocket", "RecordedSocket", "recorded"]


class MessageSocket(Protocol):
    """What a provider session needs of its WebSocket: whole messages each way.

    :class:`WebSocketConnection` is the real one; :class:`RecordedSocket` records
    one; ``adapters.testing.replay`` plays a recorded provider's side.
    """

    async def send_text(self, text: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    def send_now(self, build: Callable[[], Sequence[str]]) -> bool:
        """Write ``build()``'s text messages at once and whole, or call nothing and return False."""
        ...

    async def receive(self) -> str | bytes: ...


def recorded(ws: MessageSocket, tap: Tap | None) -> MessageSocket:
    """``ws`` itself, or with a ``tap`` (a model's recording) a :class:`RecordedSocket` around it."""
    return ws if tap is None else RecordedSocket(ws, tap)


class RecordedSocket:
    """A :class:`MessageSocket` that tells a recording (``adapters/recording.py``) every message and the end.

    Only a model with ``record_to`` gets one: the sessions of every other model
    read their :class:`WebSocketConnection` directly.
    """

    def __init__(self, inner: MessageSocket, tap: Tap) -> None:
        self._inner = inner
        self._tap = tap

    async def send_text(self, text: str) -> None:
        await self._inner.send_text(text)
        self._tap.sent(text)

    async def send_bytes(self, data: bytes) -> None:
        await self._inner.send_bytes(data)
        self._tap.sent(data)

    def send_now(self, build: Callable[[], Sequence[str]]) -> bool:
        def build_and_record() -> Sequence[str]:
            # Recorded as built, just before the write (which cannot fail then): a recording that
            # raises leaves nothing written, as send_now promises, and the writer's path takes over.
            texts = build()
            for text in texts:
                self._tap.sent(text)
            return texts

        return self._inner.send_now(build_and_record)

    async def receive(self) -> str | bytes:
        try:
            message = await self._inner.receive()
        except WebSocketClosed as exc:
            if exc.code == 1000:
                self._tap.server_ended(close_code=exc.code, reason=exc.reason)
            else:
                self._tap.failed(exc)
            raise
        except BidiError as exc:
            self._tap.failed(exc)
            raise
        self._tap.received(message)
        return message
