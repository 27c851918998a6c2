"""A byte stream straight on an asyncio transport, for the WebSocket on asyncio.

anyio's asyncio socket stream pauses the transport's reading whenever its
queue is empty and resumes it around every wait: two ``epoll_ctl`` system
calls for every message that arrives on its own, which is every message of a
real-time voice session. The benchmarks measured its share of the
client's CPU at 100 real-time sessions (``benchmarks/README.md``). This
stream keeps reading on and pauses only when data piles up unread (flow
control), and uses asyncio's own TLS (``loop.create_connection(ssl=...)``) over a
socket it connects itself (:func:`_open_socket`).

It is an :class:`anyio.abc.ByteStream` with anyio's semantics where the
WebSocket relies on them: ``receive`` raises ``EndOfStream`` at the end,
``BrokenResourceError`` when the connection broke and ``ClosedResourceError``
once closed (also for a receive pending while another task closes it), and
is a checkpoint. ``send`` blocks only while the transport's write buffer is
above its high-water mark, and raises if the connection ends while it waits
(``ClosedResourceError`` when we closed it, else ``BrokenResourceError``): the
bytes still buffered then never left. Beyond anyio's interface,
:meth:`AsyncioStream.writable_now` and :meth:`AsyncioStream.write_now` let a
caller that must not wait write at once (``transport.write`` never blocks):
the WebSocket's ``send_now``. On Trio the WebSocket uses ``anyio.connect_tcp``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import deque
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.abc

__all__ = ["AsyncioStream", "WritesAtOnce", "connect", "on_asyncio"]

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


@runtime_checkable
class WritesAtOnce(Protocol):
    """A byte stream that can also write without waiting: :class:`AsyncioStream` (and a benchmark's)."""

    def writable_now(self) -> bool: ...

    def write_now(self, data: bytes) -> None: ...


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

    def writable_now(self) -> bool:
        """Whether the transport takes bytes now: open, unbroken, not above its high-water mark.

        A write may take the buffer over the mark; the next write then waits for it to drain
        (:meth:`send`), so the flow control only moves one write later."""
        return not (
            self._closed
            or self._protocol.writing_paused
            or self._protocol.error is not None
            or self._transport.is_closing()
        )

    def write_now(self, data: bytes) -> None:
        """Write at once; only right after :meth:`writable_now` said True (no await between)."""
        self._transport.write(data)

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
    """A TCP (TLS with ``ssl_context``) connection as an :class:`AsyncioStream`.

    TLS starts on the connected transport (``loop.start_tls``) rather than inside
    ``create_connection(ssl=...)``: cut during the handshake, ``start_tls`` closes the socket's own
    transport, where ``create_connection`` only closes the TLS layer, which then says goodbye over a
    socket left open for up to its 30 s shutdown timeout."""
    loop = asyncio.get_running_loop()
    sock = await _open_socket(loop, host, port)
    try:
        transport, protocol = await loop.create_connection(lambda: _Protocol(loop), sock=sock)
    except BaseException:
        sock.close()  # cut before the transport took it (a transport that did is closing already)
        raise
    if ssl_context is not None:
        try:
            tls = await loop.start_tls(transport, protocol, ssl_context, server_hostname=tls_hostname)
        except BaseException:
            transport.abort()  # start_tls closed it gracefully; nothing is left to say
            raise
        assert tls is not None
        transport = protocol.transport = tls
    return AsyncioStream(transport, protocol)


_NEXT_ATTEMPT_AFTER_S = 0.25
"""RFC 8305's "Connection Attempt Delay": the next address is tried when the previous failed, or after this."""


async def _open_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected TCP socket to ``host``: its addresses tried one after the other, the next started
    when the previous failed or after 250 ms, the families alternating (RFC 8305), in a task group.

    Not ``loop.create_connection(happy_eyeballs_delay=...)``: asyncio's race (``staggered_race``, as of
    Python 3.13) leaves the winning socket open when it is cancelled just as an attempt succeeds, a
    descriptor nobody closes until the collector does (the cancellation sweep found it). Here every
    socket an attempt opened is closed unless it is the one returned."""
    infos = _numeric(host, port) or await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    winner: socket.socket | None = None

    async def attempt(info: Any, failed: anyio.Event, tg: anyio.abc.TaskGroup) -> None:
        nonlocal winner
        family, kind, proto, _, address = info
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:  # a family this host cannot use (IPv6 switched off): try the next address
            errors.append(exc)
            failed.set()
            return
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            failed.set()
            return
        except BaseException:
            sock.close()
            raise
        if winner is None:
            winner = sock
            tg.cancel_scope.cancel()  # the other attempts, and the wait for the next one
        else:
            sock.close()

    try:
        async with anyio.create_task_group() as tg:
            for info in _interleaved(infos):
                failed = anyio.Event()
                tg.start_soon(attempt, info, failed, tg)
                with anyio.move_on_after(_NEXT_ATTEMPT_AFTER_S):
                    await failed.wait()
    except BaseException:
        if winner is not None:
            winner.close()
        raise
    if winner is not None:
        return winner
    if not errors:
        raise OSError(f"no address for {host!r}")
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")


def _numeric(host: str, port: int) -> list[Any] | None:
    """An address given as digits needs no resolver: ``loop.getaddrinfo`` would still ask one in a
    worker thread (a thread that then stays), where ``create_connection`` used to skip it."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    if version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


def _interleaved(infos: list[Any]) -> list[Any]:
    """The resolver's addresses with their families alternating, each family's in the resolver's order."""
    by_family: dict[int, list[Any]] = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    out: list[Any] = []
    while queues:
        out += [q.pop(0) for q in queues]
        queues = [q for q in queues if q]
    return out
