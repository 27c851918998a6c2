"""Faults the fault matrix found in the transport, pinned down one by one below it.

A server that accepts a WebSocket and then reads nothing: once the TCP buffers
are full our write blocks. The read timeout must still end it (the watchdog
may not wait behind that write to ping), and the write must fail, not report
success for bytes that never left. A server that sends a message larger than
any client should hold: refused before it is buffered.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import anyio
import anyio.abc
import pytest

from adapters import _asyncio_stream
from adapters.connection import ConnectionOptions
from adapters.websocket import open_websocket
from ports.errors import BidiConnectionError, BidiProtocolError

BIG = 64 << 20
"""More than the loopback's TCP buffers hold in both directions."""


async def _accept_then_read_nothing(stream: anyio.abc.SocketStream) -> None:
    """Answer the upgrade, then never read again."""
    async with stream:
        await _accept(stream)
        await anyio.sleep_forever()


def _accepting_then_sending(*frames: bytes) -> Any:
    """A server that answers the upgrade, writes ``frames`` (raw bytes), then waits, reading nothing."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await _accept(stream)
            for frame in frames:
                await stream.send(frame)
            await anyio.sleep_forever()

    return serve


async def _accept(stream: anyio.abc.SocketStream) -> None:
    """Read the upgrade request and accept it (RFC 6455's accept key)."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += await stream.receive()
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    await stream.send(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


async def _read_nothing(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await anyio.sleep_forever()


async def test_a_write_to_a_server_that_reads_nothing_fails_within_the_read_timeout() -> None:
    """Before: the watchdog's ping waited for the write lock the blocked write held, so nothing ever
    declared the silent server dead and the write hung forever."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    options = ConnectionOptions(read_timeout_s=0.5, close_timeout_s=0.5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _accept_then_read_nothing)
        with anyio.fail_after(10):  # a bound for the test, not a timing claim: the watchdog acts at 0.5 s
            async with open_websocket(f"ws://127.0.0.1:{port}/", {}, options=options) as ws:
                with pytest.raises(BidiConnectionError) as failed:
                    await ws.send_text("x" * BIG)
        tg.cancel_scope.cancel()
    await listener.aclose()
    # Why it failed, not how ("sending failed: ClosedResourceError"): the user sees this in the restart.
    assert str(failed.value) == "the server sent nothing for 0.5 s"


def _frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """An unmasked server frame (RFC 6455 5.2)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    if len(payload) < 65536:
        return head + bytes([126]) + len(payload).to_bytes(2, "big") + payload
    return head + bytes([127]) + len(payload).to_bytes(8, "big") + payload


@pytest.mark.parametrize(
    "frames",
    [
        # A frame header claiming 64 MiB, and two bytes of it: refused at the header, nothing more awaited.
        pytest.param([bytes([0x82, 127]) + (64 << 20).to_bytes(8, "big") + b"{}"], id="one-frame"),
        # Seventeen fragments of 1 MiB: each frame is small, the message is not.
        pytest.param(
            [_frame(0x2, b"x" * (1 << 20), fin=False)] + [_frame(0x0, b"x" * (1 << 20), fin=False)] * 16,
            id="fragments",
        ),
    ],
)
async def test_a_message_over_the_size_limit_is_a_protocol_error(frames: list[bytes]) -> None:
    """Before: the client buffered whatever length a frame claimed (the one-frame case waited for 64 MiB
    until the read timeout called the server silent; fragments were joined without limit)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    options = ConnectionOptions(read_timeout_s=5, close_timeout_s=0.5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _accepting_then_sending(*frames))
        with anyio.fail_after(10):
            async with open_websocket(f"ws://127.0.0.1:{port}/", {}, options=options) as ws:
                with pytest.raises(BidiProtocolError, match="larger than the 16 MiB a message may have"):
                    await ws.receive()
                with pytest.raises(BidiProtocolError):
                    await ws.receive()  # and the connection stays done
        tg.cancel_scope.cancel()
    await listener.aclose()


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
