"""A minimal raw wsproto client for the OpenAI Realtime simulator, and the helpers its tests share.

Not our adapter: the simulator's tests drive it with this client written for them
(and once with the official ``openai`` client), so nothing in the simulator can be
tailored to our code. The ``sim`` fixture ends every test by asserting that all
server events passed the server oracle.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from adapters.testing.openai_simulator import (
    OpenAIRealtimeSimulator,
    Reply,
    Rule,
    Scenario,
    ToolCall,
    check_server_event,
)
from adapters.testing.openai_simulator.audio import BYTES_PER_MS

BOUND = 5  # seconds: a generous upper bound for any single wait on loopback


# ---------------------------------------------------------------------- a minimal raw client


@attrs.define
class Refused:
    status: int
    body: dict[str, Any]


class Closed(Exception):
    """The server closed: ``code`` is None when the TCP connection ended without a close frame."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class RawClient:
    """Just enough WebSocket client (wsproto over an AnyIO TCP stream) to talk to the simulator."""

    def __init__(self, stream: anyio.abc.SocketStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.seen: list[dict[str, Any]] = []
        self._text: list[str] = []

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        key: str | None = "sk-test",
        target: str = "/v1/realtime?model=gpt-realtime",
        headers: Sequence[tuple[str, str]] = (),
    ) -> RawClient | Refused:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        extra = [(k.encode(), v.encode()) for k, v in headers]
        if key is not None:
            extra.append((b"authorization", f"Bearer {key}".encode()))
        await stream.send(ws.send(Request(host=f"127.0.0.1:{port}", target=target, extra_headers=extra)))
        status: int | None = None
        body = b""
        while True:
            ws.receive_data(await stream.receive())
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    return cls(stream, ws)
                if isinstance(event, RejectConnection):
                    status = event.status_code
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        await stream.aclose()
                        assert status is not None
                        return Refused(status, json.loads(body))

    @classmethod
    async def connect(cls, port: int, **kwargs: Any) -> RawClient:
        client = await cls.open(port, **kwargs)
        assert isinstance(client, RawClient), client
        return client

    async def send(self, event: dict[str, Any] | str) -> None:
        text = event if isinstance(event, str) else json.dumps(event)
        await self.stream.send(self.ws.send(TextMessage(data=text)))

    async def append(self, pcm: bytes, chunk_ms: int = 100) -> None:
        step = chunk_ms * BYTES_PER_MS
        for i in range(0, len(pcm), step):
            await self.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + step]).decode()}
            )

    async def recv(self) -> dict[str, Any]:
        """The next server event; :class:`Closed` when the connection ends."""
        while not self.inbox:
            try:
                data: bytes | None = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = None
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        self.inbox.append(json.loads("".join(self._text)))
                        self._text.clear()
                elif isinstance(event, Ping):
                    await self.stream.send(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if data is None:  # wsproto's stand-in (1006) for a connection that ended without a frame
                        raise Closed(None)
                    await self.stream.send(self.ws.send(event.response()))
                    raise Closed(event.code, event.reason or "")
            if data is None and not self.inbox:
                raise Closed(None)
        received = self.inbox.pop(0)
        self.seen.append(received)
        return received

    async def until(self, *types: str) -> list[dict[str, Any]]:
        """Events up to and including the first whose type is one of ``types``."""
        out = []
        with anyio.fail_after(BOUND):
            while True:
                out.append(await self.recv())
                if out[-1]["type"] in types:
                    return out

    async def expect_closed(self) -> Closed:
        with anyio.fail_after(BOUND), pytest.raises(Closed) as info:
            while True:
                await self.recv()
        return info.value

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):  # already closed by the server: fine
                await self.stream.send(self.ws.send(CloseConnection(code=1000)))
            await self.stream.aclose()


async def connect(sim: OpenAIRealtimeSimulator, clients: list[RawClient], **kwargs: Any) -> RawClient:
    """A connected client that has read ``session.created``."""
    client = await RawClient.connect(sim.port, **kwargs)
    clients.append(client)
    first = await client.recv()
    assert first["type"] == "session.created"
    return client


def user_text(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
        **extra,
    }


def types(events: Sequence[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def collapse(names: Sequence[str]) -> list[str]:
    """Runs of the same delta type as one entry: the order of kinds, not their count."""
    out: list[str] = []
    for name in names:
        if not (out and out[-1] == name and name.endswith(".delta")):
            out.append(name)
    return out


def assert_oracle_clean(sim: OpenAIRealtimeSimulator) -> None:
    assert sim.oracle_failures == []
    for conn in sim.connections:
        for event in conn.sent:
            assert check_server_event(event) is None, event["type"]


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

SCENARIO = Scenario(
    rules=[
        Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])),
        Rule(tool_result_for="get_weather", reply=Reply(say="It is sunny in Paris.")),
        Rule(text_equals="long", reply=Reply(say="A long story that goes on and on.", audio_ms=3000)),
        Rule(spoken_turn=0, reply=Reply(say="I heard you.")),
    ],
    transcripts=["hello there"],
)


def audio_ms(event: dict[str, Any]) -> float:
    return len(base64.b64decode(event["delta"])) / BYTES_PER_MS
