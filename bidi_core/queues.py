"""The two kinds of queue the shell uses, both bounded and both single-consumer.

They are plain deques with an :class:`anyio.Event` to wake the consumer, not
memory object streams: putting never waits (the state machine's effects are
applied synchronously, which is what keeps them in step order without a
lock), and an output's queue must be reachable from inside: an interruption
removes every queued audio block (so no stale sample is played). An output
queue's bound is enforced where waiting is harmless (the reader waits for
room before reading the next provider message); the send FIFO's bound holds
because the core hands it no more than its send window. What to drop when the
connection cannot keep up is the core's outbox's decision, not a queue's.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

from ports.events import BidiAudioStreamEvent, BidiOutputEvent
from ports.model import ModelInput

__all__ = ["OutputQueue", "SendFifo"]

logger = logging.getLogger("bidi_core.queues")

T = TypeVar("T")


class _Queue(Generic[T]):
    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._closed = False
        self._wakeup: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None

    def close(self) -> None:
        """No more items will come; the consumer gets what is left, then the end."""
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    async def _wait_nonempty(self) -> bool:
        """Wait until there is an item (True) or the queue is closed and empty (False)."""
        while not self._items:
            if self._closed:
                return False
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return True

    def _remove_where(self, predicate: Callable[[T], bool]) -> int:
        kept = deque(item for item in self._items if not predicate(item))
        removed = len(self._items) - len(kept)
        self._items = kept
        return removed


class OutputQueue(_Queue[BidiOutputEvent]):
    """Events waiting for one output (or for ``receive()``).

    ``maxsize`` is soft: :meth:`put` never waits, and producers that can wait
    call :meth:`wait_for_room` first.

    With ``offer`` (a :class:`ports.io.BidiInlineOutput`'s), :meth:`put` hands
    the event to the output on the spot while nothing is queued and the
    consumer is not in the middle of an event (between :meth:`get` and
    :meth:`task_done`), so the event loop need not wake the consumer for it;
    what ``offer`` declines is queued, and so is everything after it until
    the consumer has caught up: order is kept. An exception from ``offer``
    ends the queue: :meth:`get` raises it in the consumer.
    """

    def __init__(self, maxsize: int, name: str, offer: Callable[[BidiOutputEvent], bool] | None = None) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.name = name
        self._room: anyio.Event | None = None
        self._offer = offer
        self._busy = False  # the consumer holds an event it has not finished with
        self._failure: Exception | None = None

    def close(self) -> None:
        """As for every queue, and a producer waiting for room stops waiting: no room will come."""
        super().close()
        if self._room is not None:
            self._room.set()
            self._room = None

    @property
    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put(self, event: BidiOutputEvent) -> None:
        if self._closed:
            return
        if self._offer is not None and not self._items and not self._busy:
            try:
                if self._offer(event):
                    return
            except Exception as exc:
                self._failure = exc
                self._items.clear()
                self.close()
                return
        self._items.append(event)
        self._wake()

    async def get(self) -> BidiOutputEvent | None:
        """The next event, or None once the queue is closed and drained.

        Raises what the output's ``offer`` raised, if it did."""
        if not await self._wait_nonempty():
            if self._failure is not None:
                raise self._failure
            return None
        item = self._items.popleft()
        self._busy = self._offer is not None
        if self._room is not None and len(self._items) < self.maxsize:
            self._room.set()
            self._room = None
        return item

    def task_done(self) -> None:
        """The consumer finished the event :meth:`get` gave it: ``offer`` may take the next ones."""
        self._busy = False

    async def wait_for_room(self) -> None:
        while self.full and not self._closed:
            if self._room is None:
                self._room = anyio.Event()
                logger.debug("output %s is full (%d events); waiting", self.name, len(self._items))
            await self._room.wait()

    def discard_audio(self) -> int:
        """Remove every queued block of assistant audio; return how many."""
        return self._remove_where(lambda e: isinstance(e, BidiAudioStreamEvent))


class SendFifo(_Queue[tuple[ModelInput, int | None]]):
    """What one connection's writer has to write: ``(item, seq)`` pairs in
    step order. Plain and bounded: the core hands over at most its send
    window of outbox items, plus the few control items a barge-in sends, so
    :meth:`put` never waits and never needs to drop. What it still holds
    when its connection ends is simply forgotten: the core's outbox knows
    which items were not written and sends them again.

    :attr:`idle` tells the shell when an item may bypass the FIFO (written at
    once by the stepping task) without overtaking one: nothing queued, the
    writer not in the middle of a write (between :meth:`get` and
    :meth:`task_done`), the connection not left.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize
        self._writing = False

    @property
    def idle(self) -> bool:
        return not self._items and not self._writing and not self._closed

    def task_done(self) -> None:
        """The writer finished writing what :meth:`get` gave it."""
        self._writing = False

    def put(self, item: ModelInput, seq: int | None) -> None:
        if self._closed:
            return
        if len(self._items) >= self.maxsize:
            raise RuntimeError(f"send FIFO over its bound of {self.maxsize}: the core handed out too much")
        self._items.append((item, seq))
        self._wake()

    def close(self) -> None:
        """The connection is gone: what is still here is forgotten, not written."""
        self._items.clear()
        super().close()

    async def get(self) -> tuple[ModelInput, int | None] | None:
        """The oldest pair, or None once closed."""
        if not await self._wait_nonempty():
            return None
        self._writing = True
        return self._items.popleft()
