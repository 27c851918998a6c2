"""Whatever the server sends, the OpenAI session yields port events, error
events or a typed error, and ends: never another exception, never a hang.

The frames come from hypothesis: garbage, JSON of the wrong shape, known event
types with fields missing or of the wrong type, unknown types. They go through
the real session over a real WebSocket: a tiny wsproto server on 127.0.0.1
sends them and then closes normally.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.abc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

from adapters.openai import BidiOpenAIRealtimeModel, wire
from ports.errors import BidiError
from ports.events import BidiErrorEvent, BidiEvent
from ports.model import ConnectRequest
from tests.support import receive_until_end

KNOWN_TYPES = sorted(wire._SERVER_TYPES)
FIELDS = ["response_id", "item_id", "delta", "response", "error", "transcript", "text", "call_id", "name", "arguments"]
VALUES = st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.lists(st.integers(), max_size=3)

frames = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    st.sampled_from(KNOWN_TYPES).flatmap(
        lambda t: (
            st.dictionaries(st.sampled_from(FIELDS), VALUES | st.dictionaries(st.sampled_from(FIELDS), VALUES))
            .map(lambda d: {"type": t, **d})
            .map(json.dumps)
        )
    ),
    st.text(min_size=1, max_size=20).map(lambda t: json.dumps({"type": "x." + t, "anything": [1, 2]})),
)


async def serve_frames(listener: anyio.abc.SocketListener, to_send: list[str | bytes]) -> None:
    stream = await listener.accept()
    async with stream:
        ws = WSConnection(ConnectionType.SERVER)
        while True:
            ws.receive_data(await stream.receive())
            if any(isinstance(e, Request) for e in ws.events()):
                break
        await stream.send(ws.send(AcceptConnection()))
        # The service's first event on every connection: the session is open (then anything may come).
        await stream.send(ws.send(TextMessage(data='{"type": "session.created", "session": {}}')))
        for frame in to_send:
            message = BytesMessage(data=frame) if isinstance(frame, bytes) else TextMessage(data=frame)
            await stream.send(ws.send(message))
        await stream.send(ws.send(CloseConnection(code=1000)))
        try:
            while True:  # drain the client's messages and its close reply
                ws.receive_data(await stream.receive())
                list(ws.events())
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(frames, min_size=1, max_size=8))
async def test_any_server_frames_end_in_events_or_a_typed_error(to_send: list[Any]) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    model = BidiOpenAIRealtimeModel(api_key="sk-fuzz", base_url=f"ws://127.0.0.1:{port}/v1")
    seen: list[BidiEvent] = []
    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(serve_frames, listener.listeners[0], to_send)
            try:
                async with model.connect(ConnectRequest()) as session:
                    await receive_until_end(session, seen)
            except BidiError:
                pass  # a typed error is an acceptable ending (e.g. a fatal in-band error)
    assert all(isinstance(event, BidiEvent) for event in seen)
    malformed = [f for f in to_send if _malformed(f)]
    if malformed:
        assert any(isinstance(e, BidiErrorEvent) for e in seen)


def _malformed(frame: str | bytes) -> bool:
    try:
        wire.decode_server_event(frame)
    except wire.MalformedServerEvent:
        return True
    return False
