"""What ``BidiAgent.receive()`` returns, and how ``run()`` unwraps its task groups' failures."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from bidi_core.queues import OutputQueue
from ports.events import BidiOutputEvent

__all__ = ["Receiver", "unwrap"]


class Receiver:
    """The iterator ``receive()`` returns: a plain iterator (``break`` needs no cleanup)
    that ends after the close event, raising what closed the conversation, if anything."""

    def __init__(self, queue: OutputQueue, raise_close_error: Callable[[], None]) -> None:
        self._queue = queue
        self._raise_close_error = raise_close_error

    def __aiter__(self) -> Receiver:
        return self

    async def __anext__(self) -> BidiOutputEvent:
        event = await self._queue.get()
        if event is None:
            self._raise_close_error()
            raise StopAsyncIteration
        return event


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """One real failure: that failure. Several: one flat group of them."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        elif not isinstance(exc, anyio.get_cancelled_exc_class()):
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1:
        return leaves[0]
    errors = [leaf for leaf in leaves if isinstance(leaf, Exception)]
    if leaves and len(errors) == len(leaves):
        return ExceptionGroup("several inputs or outputs failed", errors)
    return group
