"""Handing audio between a device's thread and the event loop without waiting.

The device's callback must never wait for the event loop: a callback that
waits is late, and a late callback is a click, or a gap in what the model
hears. ``anyio.from_thread.run_sync`` waits for the loop to run the function,
so it is out. What the callback does instead: put the block in a buffer
(under a lock held for a few list operations, never across a wait) and, only
if a task is waiting, ask the loop to wake it with the backend's own
non-waiting call: ``loop.call_soon_threadsafe`` on asyncio,
``TrioToken.run_sync_soon`` on Trio. Both append to a queue and poke the
loop's wakeup descriptor; neither waits for anything.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import anyio

from ports.errors import BidiUsageError

__all__ = ["Doorbell", "LoopCaller", "Waiter", "current_loop_caller"]

logger = logging.getLogger("bidi_core.adapters.audio")

LoopCaller = Callable[[Callable[[], object]], object]
"""Schedules a function on the event loop's thread from any thread, without waiting."""


def current_loop_caller() -> LoopCaller:
    """The running event loop's "call this soon, from any thread" function.

    Call it from a task; the result may be called from any thread. anyio has
    no public non-waiting version of ``from_thread.run_sync``, so this picks
    the backend's own: Trio's token when Trio runs this task, else asyncio's
    loop.
    """
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass  # trio is imported, but this task runs on asyncio
        else:
            caller: LoopCaller = token.run_sync_soon
            return caller
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise BidiUsageError("audio I/O must be started from a task of a running asyncio or Trio event loop") from None
    return loop.call_soon_threadsafe


class Doorbell:
    """Runs ``on_ring`` on the event loop soon after :meth:`ring`, from any thread.

    Rings while a call is already scheduled are merged into it: ``on_ring``
    reads the current state, so one call serves them all, and a device that
    fires a thousand callbacks while the loop is busy schedules one call, not
    a thousand.
    """

    def __init__(self, call_soon: LoopCaller, on_ring: Callable[[], None]) -> None:
        self._call_soon = call_soon
        self._on_ring = on_ring
        self._scheduled = False
        self.rings = 0
        """How many calls were scheduled (for tests and benchmarks)."""

    def ring(self) -> None:
        """Schedule ``on_ring`` on the loop. Never waits, never raises."""
        if self._scheduled:
            return
        self._scheduled = True
        try:
            self._call_soon(self._run)
            self.rings += 1
        except Exception:
            # The loop is closed (the stream outlived it): nobody is left to wake.
            self._scheduled = False

    def _run(self) -> None:
        self._scheduled = False
        try:
            self._on_ring()
        except Exception:
            # Raised into the loop's own machinery this would crash Trio's run loop;
            # the handlers keep their failures for the next call of their owner instead.
            logger.exception("handling a wakeup from the audio device failed")


class Waiter:
    """Lets tasks wait for a condition that a device thread makes true.

    A task calls :meth:`wait_until` with the condition; the thread, after
    changing the state, checks :attr:`armed` and rings a doorbell whose
    handler calls :meth:`wake`, which lets every waiting task check its
    condition again. A task arms before its last check, so a change made
    between that check and the wait is never missed.
    """

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    @property
    def armed(self) -> bool:
        """A task is waiting (or about to): ring the doorbell after changing the state."""
        return self._event is not None

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            event = self._event
            if event is None:
                event = self._event = anyio.Event()
            if ready():
                return
            await event.wait()

    def wake(self) -> None:
        """On the loop's thread: let the waiting tasks check their conditions again."""
        event, self._event = self._event, None
        if event is not None:
            event.set()
