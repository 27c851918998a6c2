"""The WebSocket's liveness: a silent server is pinged, a dead one is dropped.

A tiny wsproto server on 127.0.0.1 accepts the upgrade and then either
answers pings (alive but quiet) or ignores everything (dead with the socket
open). The read timeout is the connection's own option (pings go out after
two thirds of it).
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request

from adapters.connection import ConnectionOptions
from adapters.websocket import open_websocket
from ports.errors import BidiConnectionError

SHORT = ConnectionOptions(read_timeout_s=0.3)


async def serve(listener: anyio.abc.SocketListener, *, answer_pings: bool, pings: list[bytes]) -> None:
    stream = await listener.accept()
    async with stream:
        ws = WSConnection(ConnectionType.SERVER)
        try:
            while True:
                ws.receive_data(await stream.receive())
                for event in ws.events():
                    if isinstance(event, Request):
                        await stream.send(ws.send(AcceptConnection()))
                    elif isinstance(event, Ping):
                        pings.append(event.payload)
                        if answer_pings:
                            await stream.send(ws.send(event.response()))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


async def test_a_silent_dead_server_is_dropped_after_the_read_timeout() -> None:
    pings: list[bytes] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    with anyio.fail_after(5):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve(listener.listeners[0], answer_pings=False, pings=pings))
            started = anyio.current_time()
            async with open_websocket(f"ws://127.0.0.1:{port}/", {}, options=SHORT) as ws:
                with pytest.raises(BidiConnectionError, match="sent nothing"):
                    await ws.receive()
            waited = anyio.current_time() - started
            tg.cancel_scope.cancel()
    assert pings  # it asked before it gave up
    assert waited >= SHORT.read_timeout_s


async def test_a_quiet_server_that_answers_pings_stays_connected() -> None:
    pings: list[bytes] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    with anyio.fail_after(5):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve(listener.listeners[0], answer_pings=True, pings=pings))
            async with open_websocket(f"ws://127.0.0.1:{port}/", {}, options=SHORT) as ws:
                # Three read timeouts of silence but for the pongs: still alive.
                with anyio.move_on_after(3 * SHORT.read_timeout_s) as scope:
                    await ws.receive()
                assert scope.cancelled_caught
            tg.cancel_scope.cancel()
    assert len(pings) >= 2
