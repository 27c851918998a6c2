"""How often the event loop wakes and how many task steps it runs: counted, not timed.

At real time the cost of a chunk is dominated by scheduling, not parsing:
every queue between the socket and the sink is one more task step per chunk,
and every step costs a few microseconds on asyncio and more on Trio. Counts
do not drift with the load of other processes the way CPU time does, so they
tell whether a change removed a hop even on a busy machine.

* **task steps**: on asyncio, the callbacks the loop runs (``Handle._run``:
  each step of a task is one, as are ``call_soon`` callbacks and I/O
  callbacks); on Trio, ``before_task_step`` of an instrument.
* **loop wake-ups**: iterations of the loop that polled for I/O (asyncio's
  ``_run_once``; Trio's ``before_io_wait``), each a trip through the selector.

Standard library only (the reference client imports this module from its own
virtualenv); Trio is imported only when counting on Trio. The counters cost a
Python call per step, the same for every client.
"""

from __future__ import annotations

import asyncio.base_events
import asyncio.events
from typing import Any


class SchedulerCounts:
    """Counters of this process's event loop. ``install`` before the loop starts."""

    def __init__(self) -> None:
        self.steps = 0
        self.wakeups = 0
        self.installed = ""

    def snapshot(self) -> tuple[int, int]:
        return self.steps, self.wakeups

    def install(self, backend: str) -> None:
        if self.installed:
            return
        if backend == "trio":
            self._install_trio()
        else:
            self._install_asyncio()
        self.installed = backend

    def _install_asyncio(self) -> None:
        counts = self
        handle_run = asyncio.events.Handle._run
        run_once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]

        def counted_run(handle: asyncio.events.Handle) -> None:
            counts.steps += 1
            handle_run(handle)

        def counted_run_once(loop: Any) -> None:
            counts.wakeups += 1
            run_once(loop)

        asyncio.events.Handle._run = counted_run  # type: ignore[method-assign]
        asyncio.base_events.BaseEventLoop._run_once = counted_run_once  # type: ignore[attr-defined]

    def _install_trio(self) -> None:
        import trio.abc
        import trio.lowlevel

        counts = self

        class Counter(trio.abc.Instrument):
            def before_task_step(self, task: Any) -> None:
                counts.steps += 1

            def before_io_wait(self, timeout: float) -> None:
                counts.wakeups += 1

        instrument = Counter()
        original_run = trio.run

        def run_counted(*args: Any, **kwargs: Any) -> Any:
            kwargs["instruments"] = (*kwargs.get("instruments", ()), instrument)
            return original_run(*args, **kwargs)

        trio.run = run_counted  # anyio.run(backend="trio") calls trio.run with its options


COUNTS = SchedulerCounts()
"""The process's one counter; a client installs it for its backend at start."""
