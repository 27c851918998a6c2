"""One liveness watchdog per connection, for every transport (WebSocket, HTTP/2).

A provider can go silent with the socket still open (a dead NAT mapping, a
stuck server): a read then waits forever. The watchdog turns that into a
failure. The transport's reader sets :attr:`Watchdog.last_rx` whenever bytes
arrive; a task of the transport's own runs :meth:`Watchdog.run`, which pings a
connection quiet for ``ping_interval_s`` (once per quiet spell: a pong is
bytes, and ends the spell) and, once nothing at all arrived for
``read_timeout_s``, calls ``on_silence`` with a retryable
:class:`BidiConnectionError` and returns. ``on_silence`` closes the stream, so
the pending read fails with that error.

One timer per connection rather than a timeout around every read: a timeout
costs a cancel scope and a timer per message, a large share of the reader's
time at real-time pace (``benchmarks/README.md``). ``time.monotonic()``
rather than the event loop's clock: the reader sets it for every message.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from ports.errors import BidiConnectionError

__all__ = ["Watchdog"]

_MAX_PING_INTERVAL_S = 10.0


class Watchdog:
    """When bytes last arrived on one connection, and what to do when they stop."""

    __slots__ = ("_stopped", "last_rx", "ping_interval_s", "read_timeout_s")

    def __init__(self, read_timeout_s: float) -> None:
        self.read_timeout_s = read_timeout_s
        self.ping_interval_s = min(_MAX_PING_INTERVAL_S, read_timeout_s * 2 / 3)
        self.last_rx = time.monotonic()
        self._stopped: anyio.Event | None = None

    def stop(self) -> None:
        """Make :meth:`run` return at its next wait, for a connection that ends.

        Returning rather than being cancelled matters for memory: on asyncio,
        anyio's task group keeps a cancelled task's ``CancelledError`` in a
        reference cycle (its done callback's frame), and that error's traceback
        holds this task's frames, which hold the connection: its socket, parser
        and buffers would then wait for the garbage collector's rare full pass
        (``benchmarks/README.md``, "The soak")."""
        if self._stopped is None:
            self._stopped = anyio.Event()
        self._stopped.set()

    def received(self) -> None:
        """Bytes arrived (hot paths may set :attr:`last_rx` themselves)."""
        self.last_rx = time.monotonic()

    async def run(
        self,
        ping: Callable[[], Awaitable[None]],
        on_silence: Callable[[BidiConnectionError], Awaitable[None]],
    ) -> None:
        """Ping a quiet connection; hand a silent one to ``on_silence`` and return (or return once stopped).

        ``ping`` must not raise for a connection that cannot send any more
        (it suppresses its transport's errors); the silence then still ends
        the connection.
        """
        pinged_at = -1.0
        if self._stopped is None:
            self._stopped = anyio.Event()
        stopped = self._stopped
        while not stopped.is_set():
            now = time.monotonic()
            quiet = now - self.last_rx
            if quiet >= self.read_timeout_s:
                await on_silence(BidiConnectionError(f"the server sent nothing for {self.read_timeout_s:g} s"))
                return
            if quiet >= self.ping_interval_s and pinged_at < self.last_rx:
                pinged_at = now
                await ping()
            until = self.ping_interval_s if quiet < self.ping_interval_s else self.read_timeout_s
            with anyio.move_on_after(max(until - quiet, 0.01)):
                await stopped.wait()
