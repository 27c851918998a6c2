"""Faults the fault matrix found in the transport, pinned down one by one below it.

A server that reads nothing: once the TCP buffers are full our write blocks,
and when the connection ends under it the write must fail, not report success
for bytes that never left.
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from adapters import _asyncio_stream

BIG = 64 << 20
"""More than the loopback's TCP buffers hold in both directions."""


async def _read_nothing(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await anyio.sleep_forever()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_asyncio_write_the_connection_ends_under_fails() -> None:
    """Before: a write waiting for the transport's buffer to drain returned normally when the connection
    ended instead (our close, or a reset), as if its bytes had been written."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    outcome: list[str] = []
    done = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _read_nothing)
        stream = await _asyncio_stream.connect("127.0.0.1", port, None, tls_hostname=None)

        async def write() -> None:
            try:
                await stream.send(b"x" * BIG)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
                outcome.append(type(exc).__name__)
            else:
                outcome.append("returned")
            done.set()

        tg.start_soon(write)
        await anyio.wait_all_tasks_blocked()  # the write is waiting for the buffer to drain
        with anyio.move_on_after(0.2):  # the peer reads nothing: closing gives up on the buffer
            await stream.aclose()
        with anyio.fail_after(10):
            await done.wait()
        tg.cancel_scope.cancel()
    await listener.aclose()
    assert outcome == ["ClosedResourceError"]
