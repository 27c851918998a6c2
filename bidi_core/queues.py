"""The two kinds of queue the shell uses, both bounded and both single-consumer.

They are plain deques with an :class:`anyio.Event` to wake the consumer, not
memory object streams, because the conversation needs to reach inside them:
an interruption removes every queued audio block of the interrupted response
(so no stale sample is played), and audio waiting to be sent is dropped
oldest-first when the connection cannot keep up. Putting never waits: the
state machine's effects are applied synchronously, which is what keeps them in
step order without a lock. The bound is enforced where waiting is harmless (the
reader waits for room before reading the next provider message).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

from ports.events import BidiAudioInputEvent, BidiAudioStreamEvent, BidiOutputEvent
from ports.model import ModelInput

__all__ = ["OutputQueue", "SendQueue"]

logger = logging.getLogger("bidi_core.queues")

T = TypeVar("T")

_LEDGER_SLACK = 256
"""Room in the delivery ledger for items other than audio (text, tool results)."""


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
    """

    def __init__(self, maxsize: int, name: str) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.name = name
        self._room: anyio.Event | None = None

    @property
    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put(self, event: BidiOutputEvent) -> None:
        if not self._closed:
            self._items.append(event)
            self._wake()

    async def get(self) -> BidiOutputEvent | None:
        """The next event, or None once the queue is closed and drained."""
        if not await self._wait_nonempty():
            return None
        item = self._items.popleft()
        if self._room is not None and len(self._items) < self.maxsize:
            self._room.set()
            self._room = None
        return item

    async def wait_for_room(self) -> None:
        while self.full and not self._closed:
            if self._room is None:
                self._room = anyio.Event()
                logger.debug("output %s is full (%d events); waiting", self.name, len(self._items))
            await self._room.wait()

    def discard_audio(self) -> int:
        """Remove every queued block of assistant audio; return how many."""
        return self._remove_where(lambda e: isinstance(e, BidiAudioStreamEvent))


class SendQueue(_Queue[ModelInput]):
    """Items waiting to be written to the model connection, in step order.

    It outlives connections: what the old connection did not write goes to the
    next one first. Audio beyond ``max_audio`` blocks is dropped oldest-first
    and counted (``dropped_audio``); nothing else is ever dropped.

    For providers that resume sessions it also keeps a **delivery ledger**:
    the items written since the provider last confirmed what its session
    state holds (:meth:`confirm`, driven by resumption updates). A provider
    drops what it had not yet taken in when a connection breaks, so a resumed
    session gets those items again, first, in order (:meth:`begin_connection`);
    a fresh session gets the history instead and the ledger is forgotten.
    """

    def __init__(self, max_audio: int) -> None:
        super().__init__()
        self.max_audio = max_audio
        self.dropped_audio = 0
        self._audio = 0
        self._ledger: deque[ModelInput] | None = None  # None: this connection keeps no ledger
        self._confirmed = 0  # items of this connection the provider confirmed or we stopped tracking
        self._written = 0  # items written on this connection
        self._replays: set[int] = set()  # ids of re-queued items (written once already)

    def put(self, item: ModelInput) -> None:
        if isinstance(item, BidiAudioInputEvent):
            if self._audio >= self.max_audio:
                self._drop_oldest_audio()
            self._audio += 1
        self._items.append(item)
        self._wake()

    def _drop_oldest_audio(self) -> None:
        for i, queued in enumerate(self._items):
            if isinstance(queued, BidiAudioInputEvent):
                del self._items[i]
                self._replays.discard(id(queued))
                self._audio -= 1
                self.dropped_audio += 1
                if self.dropped_audio in (1, 10, 100) or self.dropped_audio % 1000 == 0:
                    logger.warning("model connection is slow: dropped %d audio blocks so far", self.dropped_audio)
                return

    async def peek(self) -> ModelInput | None:
        """The oldest item without removing it, or None once closed and empty."""
        if not await self._wait_nonempty():
            return None
        return self._items[0]

    def done(self, item: ModelInput) -> None:
        """Remove ``item`` after it was written (unless already dropped)."""
        if self._items and self._items[0] is item:
            self._items.popleft()
            self._replays.discard(id(item))
            if isinstance(item, BidiAudioInputEvent):
                self._audio -= 1
            self._written += 1
            if self._ledger is not None:
                self._ledger.append(item)
                if len(self._ledger) > self.max_audio + _LEDGER_SLACK:
                    # A provider that stops confirming must not make us hold the whole conversation.
                    self._ledger.popleft()
                    self._confirmed += 1

    def is_replay(self, item: ModelInput) -> bool:
        """Whether ``item`` was written on an earlier connection and is being sent again."""
        return id(item) in self._replays

    # ------------------------------------------------------------------ the delivery ledger

    def begin_connection(self, *, resuming: bool, keep_ledger: bool) -> int:
        """Start counting for a new connection; return how many items are replayed.

        ``resuming``: the new connection continues the provider's session, so
        the items it never confirmed go first. ``keep_ledger``: the provider
        confirms deliveries (it issues resumption handles), so keep one.
        """
        replayed = 0
        if not resuming and self._replays:
            # Replays queued for a resumption that the provider refused: a fresh
            # session gets the history instead (text and tool results are in it).
            stale = self._replays
            self._remove_where(lambda item: id(item) in stale)
            self._audio = sum(isinstance(item, BidiAudioInputEvent) for item in self._items)
            self._replays = set()
        if resuming and self._ledger:
            replay = list(self._ledger)
            replayed = len(replay)
            for item in reversed(replay):
                self._items.appendleft(item)
                self._replays.add(id(item))
                if isinstance(item, BidiAudioInputEvent):
                    self._audio += 1
            while self._audio > self.max_audio:
                self._drop_oldest_audio()
            self._wake()
        self._ledger = deque() if keep_ledger else None
        self._confirmed = 0
        self._written = 0
        return replayed

    def confirm(self, inputs_included: int | None) -> None:
        """The provider's session now holds the first ``inputs_included`` items
        written on this connection (None: everything written so far)."""
        if self._ledger is None:
            return
        target = self._written if inputs_included is None else min(inputs_included, self._written)
        while self._confirmed < target and self._ledger:
            self._ledger.popleft()
            self._confirmed += 1
