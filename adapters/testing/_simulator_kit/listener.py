"""The loopback listener every simulator runs, and the wake-up its records give to tests.

A simulator is an async context manager: entering opens a TCP listener (port 0
picks a free one) and a task group that serves each connection; leaving cancels
that group, so no connection task outlives the ``async with``, and closes the
listener even if that is cancelled. What is on top of TCP (plain WebSocket,
TLS, HTTP/2) and what else a simulator sets up or tears down is its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc

from adapters._exceptions import sole_exception

__all__ = ["Changes", "Serving"]

_Stream = TypeVar("_Stream")


class Serving:
    """A simulator's listener and the task group that serves it, owned by the simulator's ``async with``.

    :meth:`serve` enters :func:`_serving` (the task group nested inside the
    listener's lifetime) on an exit stack; :meth:`stop` leaves it with the
    exception the simulator's block raised, so the task group's exit sees the
    real exception rather than none.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._stack: AsyncExitStack | None = None

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
        stack = AsyncExitStack()
        await stack.enter_async_context(_serving(listener, handler))
        self._stack = stack

    async def stop(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        """Cancel every connection task and wait for them, then close the listener (shielded).

        The body's own failure (an assertion in a test, say) comes out as itself,
        not wrapped in a group with nothing else in it.
        """
        assert self._stack is not None, "not entered"
        stack, self._stack = self._stack, None
        return await stack.__aexit__(exc_type, exc, tb)


@asynccontextmanager
async def _serving(
    listener: anyio.abc.Listener[_Stream], handler: Callable[[_Stream], Awaitable[Any]]
) -> AsyncIterator[None]:
    body_error: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler, tg)
            try:
                yield
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Only the body's own failure is unwrapped: a connection task's (a SimulatorBug) stays in its group.
        if body_error is not None and sole_exception(group) is body_error:
            raise body_error from None
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()


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
