"""The loopback listener every simulator runs, and the wake-up its records give to tests.

A simulator is an async context manager: entering opens a TCP listener (port 0
picks a free one) and a task group that serves each connection; leaving cancels
that group, so no connection task outlives the ``async with``, and closes the
listener even if that is cancelled. What is on top of TCP (plain WebSocket,
TLS, HTTP/2) and what else a simulator sets up or tears down is its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc

__all__ = ["Changes", "Serving"]

_Stream = TypeVar("_Stream")


class Serving:
    """A simulator's listener and the task group that serves it, owned by the simulator's ``async with``."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._listener: anyio.abc.Listener[Any] | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def port(self) -> int:
        """The port the listener got (the requested one, or the free one port 0 picked)."""
        if self._port is None:
            raise RuntimeError("the simulator is not running: use `async with`")
        return self._port

    async def tcp(self) -> anyio.abc.Listener[anyio.abc.SocketStream]:
        """Open the TCP listener on the requested address; a simulator may wrap it (in TLS) before :meth:`serve`."""
        listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._requested_port)
        self._port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        return listener

    async def serve(self, listener: anyio.abc.Listener[_Stream], handler: Callable[[_Stream], Awaitable[Any]]) -> None:
        """Accept on ``listener`` in a task group of ours, each connection in its own task of that group."""
        self._listener = listener
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(listener.serve, handler, tg)

    async def stop(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        """Cancel every connection task and wait for them, then close the listener (shielded).

        The body's own failure (an assertion in a test, say) comes out as itself,
        not wrapped in a group with nothing else in it.
        """
        assert self._tg is not None and self._listener is not None, "not entered"
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                raise exc from None
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._listener.aclose()
            self._tg = None


class Changes:
    """Wakes whoever waits for a simulator's records to change: tests wait on conditions, never sleep."""

    def __init__(self) -> None:
        self._changed = anyio.Event()

    def notify(self) -> None:
        """A record changed: wake every waiter (each re-checks its predicate)."""
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checked whenever :meth:`notify` is called; unbounded."""
        while not predicate():
            await self._changed.wait()
