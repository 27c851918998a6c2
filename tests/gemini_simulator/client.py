"""A minimal raw wsproto client for the Gemini Live simulator, and the helpers its tests share.

Not our adapter: the simulator's tests drive it with this client written for them
(and once with the official ``google-genai`` client), so nothing in the simulator
can be tailored to our code.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSStream
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from adapters.testing.gemini_simulator import (
    GeminiLiveSimulator,
    Reply,
    Rule,
    Scenario,
    ToolCall,
    check_server_message,
)

BOUND = 5  # seconds: a generous upper bound for any single wait on loopback
MODEL = "models/gemini-2.5-flash-native-audio-preview-09-2025"
KEY = "test-key"


# ---------------------------------------------------------------------- a minimal raw client


class Closed(Exception):
    """The server closed: ``code`` is None when the connection ended without a close frame."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"refused: HTTP {status}")
        self.status = status
        self.body = body


class RawClient:
    """Just enough WebSocket client (wsproto over an AnyIO stream, TLS or not) to talk to the simulator."""

    def __init__(self, stream: anyio.abc.ByteStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.inbox: list[dict[str, Any]] = []
        self.seen: list[dict[str, Any]] = []
        self.frame_types: list[str] = []
        self._parts: list[bytes] = []

    @classmethod
    async def connect(
        cls,
        sim: GeminiLiveSimulator,
        *,
        key: str | None = KEY,
        version: str = "v1beta",
        target: str | None = None,
        query_key: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> RawClient:
        tcp = await anyio.connect_tcp("127.0.0.1", sim.port)
        stream: anyio.abc.ByteStream = tcp
        if sim.tls:
            ctx = ssl_context or sim.client_ssl_context()
            try:
                stream = await TLSStream.wrap(tcp, hostname="127.0.0.1", ssl_context=ctx, standard_compatible=False)
            except BaseException:
                await tcp.aclose()
                raise
        ws = WSConnection(ConnectionType.CLIENT)
        path = target or sim.url(version).split(str(sim.port), 1)[1]
        headers: list[tuple[bytes, bytes]] = []
        if key is not None and not query_key:
            headers.append((b"x-goog-api-key", key.encode()))
        if key is not None and query_key:
            path += f"?key={key}"
        await stream.send(ws.send(Request(host=f"127.0.0.1:{sim.port}", target=path, extra_headers=headers)))
        status = 0
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
                        raise Refused(status, json.loads(body))

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.stream.send(self.ws.send(TextMessage(data=text)))

    async def setup(self, **fields: Any) -> dict[str, Any]:
        """Send a setup and return setupComplete."""
        await self.send({"setup": {"model": MODEL, **fields}})
        first = await self.recv()
        assert "setupComplete" in first, first
        return first

    async def audio(self, pcm: bytes, chunk_ms: int = 100, rate: int = 16000) -> None:
        step = chunk_ms * rate // 1000 * 2
        for i in range(0, len(pcm), step):
            data = base64.b64encode(pcm[i : i + step]).decode()
            await self.send({"realtimeInput": {"audio": {"data": data, "mimeType": f"audio/pcm;rate={rate}"}}})

    async def recv(self) -> dict[str, Any]:
        """The next server message; :class:`Closed` when the connection ends."""
        while not self.inbox:
            try:
                data: bytes | None = await self.stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError, OSError):
                data = None
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Message):
                    self.frame_types.append("binary" if isinstance(event, BytesMessage) else "text")
                    data_bytes = event.data if isinstance(event, BytesMessage) else event.data.encode()
                    self._parts.append(bytes(data_bytes))
                    if event.message_finished:
                        self.inbox.append(json.loads(b"".join(self._parts)))
                        self._parts.clear()
                elif isinstance(event, Ping):
                    await self.stream.send(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if data is None:  # wsproto's stand-in (1006) for a connection that ended without a frame
                        raise Closed(None)
                    with contextlib.suppress(Exception):
                        await self.stream.send(self.ws.send(event.response()))
                    raise Closed(event.code, event.reason or "")
            if data is None and not self.inbox:
                raise Closed(None)
        received = self.inbox.pop(0)
        self.seen.append(received)
        return received

    async def until(self, predicate: Any) -> list[dict[str, Any]]:
        """Messages up to and including the first for which ``predicate(message)`` holds."""
        out = []
        with anyio.fail_after(BOUND):
            while True:
                out.append(await self.recv())
                if predicate(out[-1]):
                    return out

    async def until_turn_complete(self) -> list[dict[str, Any]]:
        return await self.until(lambda m: m.get("serverContent", {}).get("turnComplete"))

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


async def connect(sim: GeminiLiveSimulator, opened: list[RawClient], **kwargs: Any) -> RawClient:
    client = await RawClient.connect(sim, **kwargs)
    opened.append(client)
    return client


def kinds(messages: Sequence[dict[str, Any]]) -> list[str]:
    """Each message's oneof member, with serverContent's fields spelled out; runs of one kind collapsed."""
    out: list[str] = []
    for m in messages:
        for key, value in m.items():
            if key == "usageMetadata":
                continue
            names = [f"serverContent.{k}" for k in value] if key == "serverContent" else [key]
            for name in names:
                if not (
                    out and out[-1] == name and name in ("serverContent.modelTurn", "serverContent.outputTranscription")
                ):
                    out.append(name)
    return out


def assert_oracle_clean(sim: GeminiLiveSimulator) -> None:
    assert sim.oracle_failures == []
    for conn in sim.connections:
        for message in conn.sent:
            assert check_server_message(message) is None, message


WEATHER_TOOL = {
    "functionDeclarations": [
        {
            "name": "get_weather",
            "description": "Weather for a city.",
            "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "get_time", "description": "Time in a city.", "parameters": {"type": "OBJECT"}},
    ]
}

SCENARIO = Scenario(
    rules=[
        Rule(
            text_contains="weather and time",
            reply=Reply(
                tool_calls=[ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time", {"city": "Paris"})]
            ),
        ),
        Rule(tool_result_for="get_weather", reply=Reply(say="It is sunny in Paris at noon.")),
        Rule(text_equals="long", reply=Reply(say="A long story that goes on and on.", audio_ms=3000)),
        Rule(text_equals="crash", reply=Reply(close=(1011, "Internal error occurred."))),
        Rule(text_equals="vanish", reply=Reply(drop=True)),
        Rule(spoken_turn=0, reply=Reply(say="I heard you.")),
    ],
    transcripts=["hello there"],
)


def pcm_of(messages: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(part["inlineData"]["data"])
        for m in messages
        for part in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
        if "inlineData" in part
    )


def transcript_of(messages: Sequence[dict[str, Any]]) -> str:
    return "".join(m.get("serverContent", {}).get("outputTranscription", {}).get("text", "") for m in messages)
