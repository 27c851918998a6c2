"""A byte stream straight on an asyncio transport, for the WebSocket on asyncio.

anyio's asyncio socket stream pauses the transport's reading whenever its
queue is empty and resumes it around every wait: two ``epoll_ctl`` system
calls for every message that arrives on its own, which is every message of a
real-time voice session. The benchmarks measured its share of the
client's CPU at 100 real-time sessions (``benchmarks/README.md``). This
stream keeps reading on and pauses only when data piles up unread (flow
control), and uses asyncio's own TLS (``loop.create_connection(ssl=...)``).

It is an :class:`anyio.abc.ByteStream` with anyio's semantics where the
WebSocket relies on them: ``receive`` raises ``EndOfStream`` at the end,
``BrokenResourceError`` when the connection broke and ``ClosedResourceError``
once closed (also for a receive pending while another task closes it), and
is a checkpoint. ``send`` blocks only while the transport's write buffer is
above its high-water mark, and raises if the connection ends while it waits
(``ClosedResourceError`` when we closed it, else ``BrokenResourceError``): the
bytes still buffered then never left. On Trio the WebSocket uses
``anyio.connect_tcp``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import anyio
import anyio.abc

__all__ = ["connect", "on_asyncio"]

_PAUSE_ABOVE = 1 << 20  # unread bytes at which reading pauses (the reader fell behind)
_RESUME_BELOW = 1 << 18


def on_asyncio() -> bool:
    """Whether the current task runs on asyncio (as anyio decides it)."""
    try:
        import sniffio
    except ImportError:  # anyio then assumes asyncio whenever a loop runs
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.unread = 0
        self.reading_paused = False
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drain: asyncio.Future[None] | None = None
        self.writing_paused = False
        self.lost: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.unread += len(data)
        if self.unread > _PAUSE_ABOVE and not self.reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        self.wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self.wake()
        self.resume_writing()
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drain is not None and not self.drain.done():
            self.drain.set_result(None)

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class AsyncioStream(anyio.abc.ByteStream):
    """An anyio byte stream over one asyncio transport (see the module docstring)."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        protocol = self._protocol
        if protocol.chunks:
            await asyncio.sleep(0)  # a checkpoint, as every anyio receive is
        elif not protocol.eof and not self._closed:
            if protocol.waiter is not None:
                raise anyio.BusyResourceError("reading from")
            protocol.waiter = waiter = protocol.loop.create_future()
            try:
                await waiter
            finally:
                protocol.waiter = None
        else:
            await asyncio.sleep(0)
        if self._closed:
            raise anyio.ClosedResourceError
        if not protocol.chunks:
            if protocol.error is not None:
                raise anyio.BrokenResourceError from protocol.error
            raise anyio.EndOfStream
        chunk = protocol.chunks.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            protocol.chunks.appendleft(rest)
        protocol.unread -= len(chunk)
        if protocol.reading_paused and protocol.unread < _RESUME_BELOW:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        protocol = self._protocol
        if protocol.error is not None or self._transport.is_closing():
            raise anyio.BrokenResourceError from protocol.error
        self._transport.write(item)
        while protocol.writing_paused and not self._transport.is_closing():
            protocol.drain = drain = protocol.loop.create_future()
            try:
                await drain
            finally:
                protocol.drain = None
            # Woken by the end of the connection rather than by the buffer draining: what was
            # still buffered never left, so the write failed (a peer that stopped reading, then
            # our close or a reset). Returning would tell the caller it was written.
            if self._closed:
                raise anyio.ClosedResourceError
            if protocol.lost.done():
                raise anyio.BrokenResourceError from protocol.error

    async def send_eof(self) -> None:
        self._transport.write_eof()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.close()
            self._protocol.wake()
        try:
            await asyncio.shield(self._protocol.lost)
        except BaseException:
            self._transport.abort()  # cancelled or timed out while TLS said goodbye
            raise


async def connect(host: str, port: int, ssl_context: ssl.SSLContext | None, *, tls_hostname: str | None) -> Any:
    """A TCP (TLS with ``ssl_context``) connection as an :class:`AsyncioStream`."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: _Protocol(loop),
        host,
        port,
        ssl=ssl_context,
        server_hostname=tls_hostname if ssl_context is not None else None,
        happy_eyeballs_delay=0.25,
    )
    return AsyncioStream(transport, protocol)
