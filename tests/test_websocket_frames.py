"""The WebSocket's own frame splitter agrees with wsproto, frame by frame.

``WebSocketConnection`` decodes whole single-frame messages itself and hands every
other frame to wsproto. Here a wsproto *server* writes random messages
(text and binary, whole or fragmented, sizes around the length encodings'
edges, pings in between) and the bytes reach the client cut at random places;
the client must return exactly the messages sent, answer every ping, and
end with the server's close code, in its normal mode and with wsproto
parsing everything. Malformed frames end with wsproto's close codes.
"""

from __future__ import annotations

import itertools
from collections import deque

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from adapters.websocket import WebSocketClosed, WebSocketConnection
from ports.errors import BidiConnectionError


class ReplayStream(anyio.abc.ByteStream):
    """The server's bytes, in the given pieces; what the client sends is kept."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = deque(pieces)
        self.sent = bytearray()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.lowlevel.checkpoint()
        if not self.pieces:
            raise anyio.EndOfStream
        return self.pieces.popleft()

    async def send(self, item: bytes) -> None:
        self.sent += item

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def opened() -> tuple[Connection, WSConnection]:
    """wsproto's client connection after a handshake, and the server's end."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    list(client.events())
    assert client.connection is not None
    return client.connection, server


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


SIZES = st.sampled_from([0, 1, 125, 126, 127, 1429, 65535, 65536, 70000]) | st.integers(0, 3000)
message = st.tuples(
    st.booleans(),  # text?
    SIZES,
    st.integers(1, 3),  # fragments
    st.booleans(),  # a ping before it?
)


async def run_client(pieces: list[bytes], wsproto_only: bool) -> tuple[list[str | bytes], int, bytes]:
    connection, _ = opened()
    stream = ReplayStream(pieces)
    ws = WebSocketConnection(stream, connection)
    ws._wsproto_only = wsproto_only
    got: list[str | bytes] = []
    with pytest.raises(WebSocketClosed) as closed:
        while True:
            got.append(await ws.receive())
    return got, closed.value.code, bytes(stream.sent)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(message, max_size=8), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_random_frames_cut_anywhere_arrive_as_sent(
    anyio_backend: str, messages: list[tuple[bool, int, int, bool]], cuts: list[int]
) -> None:
    _, server = opened()
    wire = bytearray()
    sent: list[str | bytes] = []
    pings = 0
    for i, (text, size, fragments, ping) in enumerate(messages):
        payload: str | bytes = ("é" if i % 2 else "a") * (size // 2) if text else bytes([i % 256]) * size
        sent.append(payload)
        step = max(1, len(payload) // fragments)
        parts = [payload[k : k + step] for k in range(0, len(payload), step)] or [payload]
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            event: Event = (
                TextMessage(part, message_finished=last) if text else BytesMessage(part, message_finished=last)
            )  # type: ignore[arg-type]
            wire += server.send(event)
            if ping and n == 0:
                wire += server.send(Ping(f"ping {i}".encode()))
                pings += 1
    close = server.send(CloseConnection(4000, "done"))  # alone, so that every ping is read before it
    for wsproto_only in (False, True):
        pieces = [*cut(bytes(wire), cuts), close]
        got, code, client_bytes = anyio.run(run_client, pieces, wsproto_only, backend=anyio_backend)
        assert got == sent
        assert code == 4000
        _, server_view = opened()
        server_view.receive_data(client_bytes)
        answers = list(server_view.events())
        assert [e.payload for e in answers if isinstance(e, Pong)] == [
            f"ping {i}".encode() for i, m in enumerate(messages) if m[3]
        ]
        assert isinstance(answers[-1], CloseConnection) and answers[-1].code == 4000


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x81\x02\xff\xfe", 1007),  # text that is not UTF-8
        (b"\x81\x82abcd\x00\x00", 1002),  # a masked frame from the server
        (b"\xc1\x00", 1002),  # a reserved bit without an extension
        (b"\x83\x00", 1002),  # a reserved opcode
        (b"\x00\x01x", 1002),  # a continuation with no message to continue
        (b"\x89\x7e\x00\x7e" + b"x" * 126, 1002),  # a control frame longer than 125 bytes
    ],
)
async def test_malformed_frames_close_as_wsproto_says(frame: bytes, code: int) -> None:
    ok = b"\x81\x02hi"
    got, closed, _ = await run_client([ok + frame + ok], wsproto_only=False)
    assert got == ["hi"]
    assert closed == code


async def test_a_frame_split_in_its_header_and_a_large_one_in_many_pieces() -> None:
    _, server = opened()
    big = bytes(range(256)) * 4000  # ~1 MB: 64-bit length
    wire = server.send(TextMessage("small")) + server.send(BytesMessage(big)) + server.send(CloseConnection(1000))
    pieces = [wire[:1], wire[1:8], wire[8:9]] + [wire[k : k + 4096] for k in range(9, len(wire), 4096)]
    got, code, _ = await run_client(pieces, wsproto_only=False)
    assert got == ["small", big]
    assert code == 1000


async def test_a_ping_read_together_with_the_close_is_not_answered_after_it() -> None:
    _, server = opened()
    wire = server.send(TextMessage("last")) + server.send(Ping(b"p")) + server.send(CloseConnection(1001, "away"))
    got, code, sent = await run_client([wire], wsproto_only=False)
    assert (got, code) == (["last"], 1001)
    _, server_view = opened()
    server_view.receive_data(sent)
    assert [type(e) for e in server_view.events()] == [CloseConnection]  # the close's answer, no pong after it


class StuckStream(ReplayStream):
    """A socket whose peer stopped reading: a write hands over part of its bytes, then waits for room."""

    async def send(self, item: bytes) -> None:
        self.sent += item[: len(item) // 2]
        await anyio.sleep_forever()


async def test_a_write_cut_off_half_way_leaves_nothing_to_interleave_with() -> None:
    """A frame cut off mid-write (its sender cancelled) leaves part of it on the wire: any later frame, from
    another task or the close, would be read as its rest. The connection refuses every later write."""
    connection, _ = opened()
    stream = StuckStream([])
    ws = WebSocketConnection(stream, connection)
    with anyio.move_on_after(0.05) as scope:
        await ws.send_text("x" * 1000)
    assert scope.cancelled_caught
    torn = bytes(stream.sent)
    with pytest.raises(BidiConnectionError, match="cut off half-way"):
        await ws.send_text("from the reader")
    await ws.aclose()  # no close frame either
    assert bytes(stream.sent) == torn


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.tuples(st.booleans(), SIZES), max_size=8))
def test_messages_sent_reach_a_wsproto_server_as_sent_each_with_its_own_mask(
    anyio_backend: str, messages: list[tuple[bool, int]]
) -> None:
    """Whole messages going up are framed by adapters/_ws_frames.py, not wsproto: a wsproto server reads them."""
    payloads: list[str | bytes] = [
        ("é" if i % 2 else "a") * (size // 2) if text else bytes([i % 256]) * size
        for i, (text, size) in enumerate(messages)
    ]

    async def send_all() -> bytes:
        connection, _ = opened()
        stream = ReplayStream([])
        ws = WebSocketConnection(stream, connection)
        assert ws._own_frames
        for payload in payloads:
            await (ws.send_text(payload) if isinstance(payload, str) else ws.send_bytes(payload))
        await ws.send_bytes(b"\xff" * 8)
        await ws.send_bytes(b"\xff" * 8)
        return bytes(stream.sent)

    sent = anyio.run(send_all, backend=anyio_backend)
    _, server = opened()
    server.receive_data(sent)
    events = list(server.events())
    assert all(e.message_finished for e in events)  # type: ignore[attr-defined]
    assert [e.data for e in events] == [*payloads, b"\xff" * 8, b"\xff" * 8]  # type: ignore[attr-defined]
    first, second = sent[-28:-14], sent[-14:]  # the two 8-byte frames: 2 header bytes, the key, the payload
    assert first[2:6] != second[2:6]  # a fresh masking key per frame
