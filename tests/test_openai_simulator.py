"""The OpenAI Realtime simulator, over real sockets, on asyncio and Trio.

The simulator is driven by a minimal wsproto client written here (not our
adapter), and once by the official ``openai`` client (docs/protocols/openai.md#official-client), so
nothing in it can be tailored to our code. Each test names the protocol rule it
checks (a docs/protocols/openai.md heading or an openai type). Every test ends by asserting that
all server events passed the server oracle (the ``sim`` fixture does it).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
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
    ErrorOn,
    OpenAIRealtimeSimulator,
    Reply,
    Rule,
    Scenario,
    ServiceError,
    SimulatorBug,
    ToolCall,
    check_client_event,
    check_server_event,
    loud,
    silence,
)
from adapters.testing.openai_simulator.audio import BYTES_PER_MS, EnergyVAD, chunk_plan, rms, split_words

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


@pytest.fixture
async def client_factory() -> AsyncIterator[list[RawClient]]:
    clients: list[RawClient] = []
    yield clients
    for c in clients:
        await c.aclose()


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


@pytest.fixture
async def sim() -> AsyncIterator[OpenAIRealtimeSimulator]:
    async with OpenAIRealtimeSimulator(api_key="sk-test", scenario=SCENARIO) as s:
        yield s
        assert_oracle_clean(s)


def audio_ms(event: dict[str, Any]) -> float:
    return len(base64.b64decode(event["delta"])) / BYTES_PER_MS


# ---------------------------------------------------------------------- handshake (docs/protocols/openai.md#connection)


@pytest.mark.parametrize(
    ("key", "code"),
    [(None, None), ("sk-wrong-key-1234", "invalid_api_key")],
    ids=["missing", "wrong"],
)
async def test_bad_key_is_refused_with_401_and_the_rest_error_body(key: str | None, code: str | None) -> None:
    """Bearer auth: the upgrade is refused with HTTP 401 and the REST error JSON; no secret is recorded
    (docs/protocols/openai.md#connection)."""
    async with OpenAIRealtimeSimulator(api_key="sk-test") as sim:
        refused = await RawClient.open(sim.port, key=key)
        assert isinstance(refused, Refused)
        assert refused.status == 401
        error = refused.body["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == code
        assert ("Incorrect API key provided" if key else "You didn't provide an API key") in error["message"]
        if key is not None:
            assert key not in error["message"]  # the service masks the key it shows
        assert sim.connections == []
        assert [r.status for r in sim.rejected] == [401]
        assert "sk-wrong-key-1234" not in repr(sim.rejected)
        assert "sk-test" not in repr(sim.rejected)


async def test_unknown_path_is_404() -> None:
    async with OpenAIRealtimeSimulator() as sim:
        refused = await RawClient.open(sim.port, target="/v1/realtimex?model=gpt-realtime")
        assert isinstance(refused, Refused)
        assert refused.status == 404
        assert refused.body["error"]["message"] == "Invalid URL (GET /v1/realtimex)"


async def test_beta_header_gets_beta_api_shape_disabled_then_close_4000(client_factory: list[RawClient]) -> None:
    """``OpenAI-Beta: realtime=v1`` is accepted, told ``beta_api_shape_disabled`` and closed with 4000
    (docs/protocols/openai.md#retired-beta)."""
    async with OpenAIRealtimeSimulator() as sim:
        client = await RawClient.connect(sim.port, headers=[("OpenAI-Beta", "realtime=v1")])
        client_factory.append(client)
        first = await client.recv()
        assert first["type"] == "error"
        assert first["error"]["code"] == "beta_api_shape_disabled"
        assert first["error"]["param"] is None
        closed = await client.expect_closed()
        assert closed.code == 4000
        assert closed.reason == "invalid_request_error.beta_api_shape_disabled"
        await sim.wait_until(lambda: sim.connections[0].closed)
        assert sim.connections[0].close_reason == "beta"
        assert_oracle_clean(sim)


async def test_session_created_comes_first_with_the_ga_defaults(client_factory: list[RawClient]) -> None:
    """``SessionCreatedEvent``: GA session, 24 kHz PCM both ways, server_vad defaults; request recorded
    (docs/protocols/openai.md#connection)."""
    async with OpenAIRealtimeSimulator() as sim:
        client = await RawClient.connect(sim.port, target="/v1/realtime?model=gpt-realtime-mini")
        client_factory.append(client)
        created = await client.recv()
        assert created["type"] == "session.created"
        assert created["event_id"].startswith("event_")
        session = created["session"]
        assert session["type"] == "realtime"
        assert session["object"] == "realtime.session"
        assert session["id"].startswith("sess_")
        assert session["model"] == "gpt-realtime-mini"
        assert session["output_modalities"] == ["audio"]
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["output"]["voice"] == "marin"
        td = session["audio"]["input"]["turn_detection"]
        assert td["type"] == "server_vad"
        assert (td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"]) == (0.5, 300, 500)
        assert td["create_response"] is True
        assert td["interrupt_response"] is True
        record = sim.connections[0]
        assert record.path == "/v1/realtime"
        assert record.query == {"model": "gpt-realtime-mini"}
        assert record.model == "gpt-realtime-mini"
        assert record.headers["authorization"] == "Bearer <redacted>"
        assert "sk-test" not in repr(record)
        assert_oracle_clean(sim)


async def test_leaving_the_context_closes_the_listener_and_every_connection() -> None:
    """Structured concurrency: nothing of the simulator outlives ``async with``."""
    async with OpenAIRealtimeSimulator() as sim:
        port = sim.port
        client = await RawClient.connect(port)
        assert (await client.recv())["type"] == "session.created"
    assert (await client.expect_closed()).code is None
    await client.aclose()
    assert sim.connections[0].closed
    assert sim.connections[0].close_reason == "server"
    with pytest.raises(OSError):
        await anyio.connect_tcp("127.0.0.1", port)


# ---------------------------------------------------------------------- client validation
# docs/protocols/openai.md#schema-oracle

INVALID_CLIENT_EVENTS = [
    pytest.param(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detecton": None}}}},
        "unknown_parameter",
        "session.audio.input.turn_detecton",
        id="typo-turn_detecton",
    ),
    pytest.param(
        {"type": "conversation.item.truncate", "item_id": "item_1", "audio_end_ms": 10},
        "missing_required_parameter",
        "content_index",
        id="truncate-without-content_index",
    ),
    pytest.param(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"format": "pcm16"}}}},
        "invalid_type",
        "session.audio.input.format",
        id="beta-pcm16-format",
    ),
    pytest.param(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}},
        },
        "invalid_value",
        "session.audio.output.format.rate",
        id="pcm-at-16k",
    ),
    pytest.param(
        {"type": "session.update", "session": {"modalities": ["audio"], "voice": "alloy"}},
        "missing_required_parameter",
        "session.type",
        id="beta-session-shape",
    ),
    pytest.param({"type": "response.audio.delta", "delta": ""}, "invalid_value", "type", id="beta-event-name"),
    pytest.param(
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": "10"},
        "invalid_type",
        "audio_end_ms",
        id="string-for-integer",
    ),
    pytest.param(
        {"type": "response.create", "response": {"tools": [{"type": "function", "nme": "x"}]}},
        "unknown_parameter",
        "response.tools[0].nme",
        id="lazy-iterable-field",
    ),
]


@pytest.mark.parametrize(("message", "code", "param"), INVALID_CLIENT_EVENTS)
async def test_invalid_client_event_gets_the_service_error_and_the_connection_stays_open(
    sim: OpenAIRealtimeSimulator,
    client_factory: list[RawClient],
    message: dict[str, Any],
    code: str,
    param: str,
) -> None:
    """Strict oracle; ``error`` arrives in-band, echoes the client's event_id, the socket stays open
    (docs/protocols/openai.md#schema-oracle, docs/protocols/openai.md#errors)."""
    client = await connect(sim, client_factory)
    await client.send({**message, "event_id": "evt_client_1"})
    error = await client.recv()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == code
    assert error["error"]["param"] == param
    assert error["error"]["event_id"] == "evt_client_1"
    assert sim.client_errors[0].error == error
    assert sim.client_errors[0].message["event_id"] == "evt_client_1"
    await client.send({"type": "session.update", "session": {"type": "realtime", "instructions": "still here"}})
    updated = await client.recv()
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] == "still here"


async def test_non_json_frame_is_an_error_and_the_connection_stays_open(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    client = await connect(sim, client_factory)
    await client.send("this is not json")
    error = await client.recv()
    assert error["type"] == "error"
    assert error["error"]["code"] == "invalid_json"
    assert sim.connections[0].received == ["this is not json"]


async def test_session_update_merges_and_answers_the_effective_session(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    """``session.updated`` carries the whole effective session; objects merge, null switches VAD off
    (docs/protocols/openai.md#session-configuration)."""
    client = await connect(sim, client_factory)
    await client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 200}}},
                "tools": [WEATHER_TOOL],
            },
        }
    )
    session = (await client.recv())["session"]
    assert session["instructions"] == "Be brief."
    td = session["audio"]["input"]["turn_detection"]
    assert td["silence_duration_ms"] == 200
    assert td["threshold"] == 0.5  # kept
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}  # untouched
    assert session["tools"] == [WEATHER_TOOL]
    await client.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}}
    )
    session = (await client.recv())["session"]
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["instructions"] == "Be brief."


@pytest.mark.parametrize(
    ("update", "code"),
    [
        ({"output_modalities": ["audio", "text"]}, "invalid_value"),
        ({"audio": {"output": {"format": {"type": "audio/pcmu"}}}}, "unsupported_by_simulator"),
    ],
    ids=["both-modalities", "pcmu"],
)
async def test_session_update_semantic_checks(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient], update: dict[str, Any], code: str
) -> None:
    """One output modality only; the simulator speaks audio/pcm only (and says so rather than pretend)
    (docs/protocols/openai.md#session-configuration)."""
    client = await connect(sim, client_factory)
    await client.send({"type": "session.update", "session": {"type": "realtime", **update}})
    error = await client.recv()
    assert error["type"] == "error"
    assert error["error"]["code"] == code


async def test_voice_is_frozen_after_the_first_audio(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    """``AudioOutput.voice``: it cannot change once the model has responded with audio."""
    client = await connect(sim, client_factory)
    voice = {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}}
    await client.send(voice)
    assert (await client.recv())["session"]["audio"]["output"]["voice"] == "cedar"
    await client.send(user_text("hi"))
    await client.send({"type": "response.create"})
    await client.until("response.done")
    await client.send({**voice, "session": {"type": "realtime", "audio": {"output": {"voice": "marin"}}}})
    assert (await client.recv())["error"]["code"] == "cannot_update_voice"


async def test_items_can_be_retrieved_and_deleted(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    client = await connect(sim, client_factory)
    await client.send(user_text("keep me", event_id="e1"))
    item = (await client.until("conversation.item.done"))[-1]["item"]
    await client.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
    assert (await client.recv())["item"] == item
    await client.send({"type": "conversation.item.delete", "item_id": item["id"]})
    deleted = await client.recv()
    assert (deleted["type"], deleted["item_id"]) == ("conversation.item.deleted", item["id"])
    await client.send({"type": "conversation.item.delete", "item_id": item["id"]})
    assert (await client.recv())["type"] == "error"


async def test_out_of_band_response_uses_its_own_input(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    """``response.create`` with ``conversation: "none"`` and ``input`` answers that input, not the pending one."""
    client = await connect(sim, client_factory)
    await client.send(user_text("pending words"))
    await client.until("conversation.item.done")
    oob = {"conversation": "none", "input": [user_text("side question")["item"]], "metadata": {"k": "v"}}
    await client.send({"type": "response.create", "response": oob})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["conversation_id"] is None
    assert done["metadata"] == {"k": "v"}
    assert done["output"][0]["content"][0]["transcript"] == "You said: side question"
    await client.send({"type": "response.create"})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["output"][0]["content"][0]["transcript"] == "You said: pending words"


async def test_a_plain_http_request_is_refused_with_400() -> None:
    async with OpenAIRealtimeSimulator() as sim:
        stream = await anyio.connect_tcp("127.0.0.1", sim.port)
        async with stream:
            await stream.send(b"GET /v1/realtime HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            reply = b""
            with anyio.fail_after(BOUND):
                while b"\r\n\r\n" not in reply:
                    reply += await stream.receive()
        assert reply.startswith(b"HTTP/1.1 400")
        await sim.wait_until(lambda: bool(sim.rejected))
        assert sim.rejected[0].status == 400
        assert sim.connections == []


# ---------------------------------------------------------------------- a text turn
# docs/protocols/openai.md#responses

AUDIO_RESPONSE = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio.delta",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


async def test_text_turn_produces_the_full_ga_event_sequence(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    """Response order; audio deltas of 50-150 ms carrying response_id and item_id; usage in ``response.done``
    (docs/protocols/openai.md#responses, docs/protocols/openai.md#output-chunk-sizes)."""
    client = await connect(sim, client_factory)
    await client.send(user_text("hello simulator"))
    added, done = await client.recv(), await client.recv()
    assert (added["type"], done["type"]) == ("conversation.item.added", "conversation.item.done")
    assert added["item"]["role"] == "user"
    assert added["item"]["id"].startswith("item_")
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    names = types(events)
    assert collapse(names)[:5] == AUDIO_RESPONSE[:5]
    assert collapse(names)[-8:] == AUDIO_RESPONSE[-8:]
    first_audio_done = names.index("response.output_audio.done")
    assert set(names[4:first_audio_done]) == {
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
    }
    response_id = events[0]["response"]["id"]
    item_id = events[1]["item"]["id"]
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert len(deltas) >= 2
    for delta in deltas:
        assert delta["response_id"] == response_id
        assert delta["item_id"] == item_id
        assert (delta["output_index"], delta["content_index"]) == (0, 0)
        assert 50 <= audio_ms(delta) <= 150
    pcm = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    assert rms(pcm) > 0.1  # it is a tone, not silence
    transcript = "".join(e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta")
    assert transcript == "You said: hello simulator"
    assert events[names.index("response.output_audio_transcript.done")]["transcript"] == transcript
    final = events[-1]["response"]
    assert final["id"] == response_id
    assert final["status"] == "completed"
    assert final["output"] == [
        {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_audio", "transcript": transcript}],
        }
    ]
    usage = final["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert usage["output_token_details"]["audio_tokens"] > 0
    assert usage["output_token_details"]["text_tokens"] > 0
    details = usage["input_token_details"]
    assert details["text_tokens"] + details["audio_tokens"] + details["image_tokens"] == usage["input_tokens"]
    assert [m.message["type"] for m in sim.received] == ["conversation.item.create", "response.create"]
    assert {m.connection for m in sim.received} == {0}


async def test_text_modality_streams_output_text(sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]) -> None:
    """``output_modalities: ["text"]`` gives ``response.output_text.*`` and no audio
    (docs/protocols/openai.md#responses)."""
    client = await connect(sim, client_factory)
    await client.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    await client.until("session.updated")
    await client.send(user_text("typing only"))
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    names = types(events)
    assert not any("audio" in n for n in names)
    assert "response.output_text.delta" in names
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "You said: typing only"
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "output_text", "text": text}]


async def test_response_create_while_active_is_refused(client_factory: list[RawClient]) -> None:
    """``conversation_already_has_active_response`` (openai-agents-python#1466)."""
    async with OpenAIRealtimeSimulator(scenario=SCENARIO, speedup=10) as sim:
        client = await connect(sim, client_factory)
        await client.send(user_text("long"))
        await client.send({"type": "response.create"})
        await client.send({"type": "response.create", "event_id": "evt_second"})
        events = await client.until("response.done")
        error = next(e for e in events if e["type"] == "error")["error"]
        assert error["code"] == "conversation_already_has_active_response"
        assert error["event_id"] == "evt_second"
        assert events[-1]["response"]["id"] in error["message"]
        assert events[-1]["response"]["status"] == "completed"
        assert_oracle_clean(sim)


async def test_response_cancel_cancels_the_active_response(client_factory: list[RawClient]) -> None:
    """``response.cancel``: ``response.done`` status cancelled, reason client_cancelled; no delta after it."""
    async with OpenAIRealtimeSimulator(scenario=SCENARIO, speedup=10) as sim:
        client = await connect(sim, client_factory)
        await client.send({"type": "response.cancel"})
        assert (await client.recv())["error"]["code"] == "response_cancel_not_active"
        await client.send(user_text("long"))
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await client.send({"type": "response.cancel"})
        events = await client.until("response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["output"][0]["status"] == "incomplete"
        assert types(events)[-6:] == AUDIO_RESPONSE[-6:]
        heard = sum(audio_ms(e) for e in client.seen if e["type"] == "response.output_audio.delta")
        assert heard < 3000
        assert_oracle_clean(sim)


# ---------------------------------------------------------------------- function calls
# docs/protocols/openai.md#responses


async def test_function_call_flow(sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]) -> None:
    """A function_call item with argument deltas, then the client's output and ``response.create`` get the answer."""
    client = await connect(sim, client_factory)
    await client.send({"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER_TOOL]}})
    await client.until("session.updated")
    await client.send(user_text("What's the weather like?"))
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    names = collapse(types(events))
    start = names.index("response.created")
    assert names[start:] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert args_done["name"] == "get_weather"
    assert json.loads(args_done["arguments"]) == {"city": "Paris"}
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert streamed == args_done["arguments"]
    call_id = args_done["call_id"]
    item = events[-1]["response"]["output"][0]
    assert item["type"] == "function_call"
    assert (item["call_id"], item["name"], item["arguments"], item["status"]) == (
        call_id,
        "get_weather",
        args_done["arguments"],
        "completed",
    )
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": '{"sky": "clear"}'},
        }
    )
    await client.until("conversation.item.done")
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert transcript == "It is sunny in Paris."


async def test_an_undeclared_tool_is_not_called(sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]) -> None:
    """A real model only calls tools it was given: without ``session.tools`` the call becomes words."""
    client = await connect(sim, client_factory)
    await client.send(user_text("weather?"))
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    assert "response.function_call_arguments.done" not in types(events)
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert "no such tool is declared" in transcript


async def test_function_call_output_for_an_unknown_call_is_refused(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    client = await connect(sim, client_factory)
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_x", "output": "1"},
        }
    )
    error = await client.recv()
    assert error["error"]["param"] == "item.call_id"


# ---------------------------------------------------------------------- input audio and VAD
# docs/protocols/openai.md#turn-detection


async def test_vad_turn_from_loud_then_quiet_audio(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    """server_vad on energy: speech_started (with prefix padding), speech_stopped (with the silence), committed,
    the user item, its transcription (from the scenario) and an automatic response."""
    client = await connect(sim, client_factory)
    await client.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                    }
                },
            },
        }
    )
    await client.until("session.updated")
    await client.append(silence(1000) + loud(600) + silence(400))
    events = await client.until("response.done")
    names = types(events)
    assert names[:5] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    started, stopped, committed, added = events[:4]
    assert started["audio_start_ms"] == 1000 - 300
    assert stopped["audio_end_ms"] == 1600 + 300
    item_id = started["item_id"]
    assert stopped["item_id"] == committed["item_id"] == added["item"]["id"] == item_id
    assert added["item"]["role"] == "user"
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    deltas = [e["delta"] for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    completed = next(e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert "".join(deltas) == completed["transcript"] == "hello there"
    assert completed["item_id"] == item_id
    assert names.index("conversation.item.input_audio_transcription.completed") < names.index("response.created")
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert transcript == "I heard you."  # Rule(spoken_turn=0)


async def test_quiet_noise_is_not_speech(sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]) -> None:
    client = await connect(sim, client_factory)
    await client.append(loud(1000, amplitude=0.005))
    await client.send({"type": "input_audio_buffer.clear"})
    assert (await client.recv())["type"] == "input_audio_buffer.cleared"


async def test_manual_commit_when_turn_detection_is_off(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    """With ``turn_detection: null`` the client commits; under 100 ms is ``input_audio_buffer_commit_empty``
    (docs/protocols/openai.md#input-audio)."""
    client = await connect(sim, client_factory)
    await client.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}}
    )
    await client.until("session.updated")
    await client.append(loud(50))
    await client.send({"type": "input_audio_buffer.commit"})
    error = await client.recv()
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    await client.append(loud(500) + silence(1000))
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.until("conversation.item.done")
    assert types(events) == ["input_audio_buffer.committed", "conversation.item.added", "conversation.item.done"]
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    assert "input_audio_buffer.speech_started" not in types(client.seen)
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert transcript == "I heard you."


async def test_bad_base64_audio_is_refused(sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]) -> None:
    client = await connect(sim, client_factory)
    await client.send({"type": "input_audio_buffer.append", "audio": "not base64!"})
    error = await client.recv()
    assert (error["error"]["code"], error["error"]["param"]) == ("invalid_value", "audio")


async def test_barge_in_cancels_the_response_with_turn_detected(client_factory: list[RawClient]) -> None:
    """``interrupt_response`` (default true): speech cancels the response, status_details reason turn_detected,
    and no delta of it follows ``speech_started``."""
    async with OpenAIRealtimeSimulator(scenario=SCENARIO, speedup=10) as sim:
        client = await connect(sim, client_factory)
        await client.send(user_text("long"))
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await client.append(loud(100))
        events = await client.until("response.done")
        names = types(events)
        started = names.index("input_audio_buffer.speech_started")
        after = names[started + 1 :]
        assert "response.output_audio.delta" not in after
        assert "response.output_audio_transcript.delta" not in after
        assert after == [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert done["output"][0]["status"] == "incomplete"
        sent = sum(audio_ms(e) for e in client.seen if e["type"] == "response.output_audio.delta")
        assert 0 < sent < 3000
        assert_oracle_clean(sim)


# ---------------------------------------------------------------------- truncation
# docs/protocols/openai.md#truncation


async def test_truncate_is_validated_and_recorded(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    """Only assistant audio, never past its length ("Audio content of Xms is already shorter than Yms")."""
    client = await connect(sim, client_factory)
    await client.send(user_text("hello"))
    user_item = (await client.until("conversation.item.done"))[-1]["item"]["id"]
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    item_id = events[-1]["response"]["output"][0]["id"]
    length = round(sum(audio_ms(e) for e in events if e["type"] == "response.output_audio.delta"))

    async def truncate(item: str, end_ms: int) -> dict[str, Any]:
        await client.send(
            {"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": end_ms}
        )
        return await client.recv()

    too_long = await truncate(item_id, length + 1)
    assert too_long["error"]["message"] == f"Audio content of {length}ms is already shorter than {length + 1}ms"
    assert (await truncate(user_item, 10))["error"]["code"] == "unsupported_content_type"
    assert (await truncate("item_nope", 10))["error"]["param"] == "item_id"
    truncated = await truncate(item_id, 120)
    assert truncated["type"] == "conversation.item.truncated"
    assert (truncated["item_id"], truncated["content_index"], truncated["audio_end_ms"]) == (item_id, 0, 120)
    assert [(t.connection, t.item_id, t.audio_end_ms, t.audio_ms) for t in sim.truncations] == [
        (0, item_id, 120, length)
    ]
    assert (await truncate(item_id, 121))["type"] == "error"  # the item is now 120 ms long
    assert len(sim.client_errors) == 4


# ---------------------------------------------------------------------- faults (docs/protocols/openai.md#errors)


async def test_session_limit_expires_with_the_service_error_and_a_close(client_factory: list[RawClient]) -> None:
    """The limit (scaled down here) ends with ``error`` "Your session hit the maximum duration …" and a close
    (docs/protocols/openai.md#session-limits)."""
    async with OpenAIRealtimeSimulator(session_limit_s=0.3) as sim:
        client = await connect(sim, client_factory)
        error = await client.recv()
        assert error["type"] == "error"
        assert error["error"]["code"] == "session_expired"
        assert error["error"]["message"] == "Your session hit the maximum duration of 60 minutes."
        closed = await client.expect_closed()
        assert closed.code == 1000
        await sim.wait_until(lambda: sim.connections[0].closed)
        assert sim.connections[0].close_reason == "session_limit"
        assert_oracle_clean(sim)


async def test_drop_all_closes_without_a_close_frame(
    sim: OpenAIRealtimeSimulator, client_factory: list[RawClient]
) -> None:
    first = await connect(sim, client_factory)
    second = await connect(sim, client_factory)
    await sim.drop_all()
    assert (await first.expect_closed()).code is None
    assert (await second.expect_closed()).code is None
    assert [c.close_reason for c in sim.connections] == ["dropped", "dropped"]
    third = await connect(sim, client_factory)  # the server still accepts
    await third.send(user_text("hi"))
    assert (await third.recv())["type"] == "conversation.item.added"


async def test_drop_after_messages_per_connection(client_factory: list[RawClient]) -> None:
    async with OpenAIRealtimeSimulator(drop_after_messages=[2, None]) as sim:
        first = await connect(sim, client_factory)
        await first.send(user_text("one"))
        await first.send(user_text("two"))
        assert (await first.expect_closed()).code is None
        assert types(first.seen) == ["session.created"] + ["conversation.item.added", "conversation.item.done"] * 2
        second = await connect(sim, client_factory)
        for n in range(3):
            await second.send(user_text(f"m{n}"))
            await second.until("conversation.item.done")
        assert sim.connections[1].closed is False
        assert [(m.connection, m.message["item"]["content"][0]["text"]) for m in sim.received] == [
            (0, "one"),
            (0, "two"),
            (1, "m0"),
            (1, "m1"),
            (1, "m2"),
        ]


FAULTS = Scenario(
    rules=[
        Rule(text_equals="boom", times=1, reply=Reply(error=ServiceError("Boom.", "server_error", "server_error"))),
        Rule(text_equals="fail", reply=Reply(fail=ServiceError("Upstream failed.", "server_error", "server_error"))),
        Rule(text_equals="crash", reply=Reply(drop=True)),
        Rule(text_equals="crash later", reply=Reply(say="One two three four five six seven.", drop_after_deltas=2)),
        Rule(text_equals="time", reply=Reply(session_limit=True)),
    ],
    error_on=[ErrorOn(event_type="session.update", nth=1, error=ServiceError("Not now.", "invalid_value"))],
)


async def test_rule_faults(client_factory: list[RawClient]) -> None:
    """Scenario faults as data: an ``error`` once, a failed response, an abrupt drop (before or mid-response),
    a session-limit reply, and an ``ErrorOn`` for the first ``session.update``."""
    async with OpenAIRealtimeSimulator(scenario=FAULTS) as sim:
        client = await connect(sim, client_factory)
        await client.send({"type": "session.update", "session": {"type": "realtime"}})
        assert (await client.recv())["error"]["message"] == "Not now."
        await client.send({"type": "session.update", "session": {"type": "realtime"}})
        assert (await client.recv())["type"] == "session.updated"

        await client.send(user_text("boom"))
        await client.send({"type": "response.create"})
        error = (await client.until("error"))[-1]["error"]
        assert (error["type"], error["code"], error["message"]) == ("server_error", "server_error", "Boom.")
        await client.send(user_text("boom"))  # times=1: now the default echo
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert next(e for e in events if e["type"] == "response.output_audio_transcript.done")["transcript"] == (
            "You said: boom"
        )

        await client.send(user_text("fail"))
        await client.send({"type": "response.create"})
        done = (await client.until("response.done"))[-1]["response"]
        assert done["status"] == "failed"
        assert done["status_details"]["error"]["code"] == "server_error"

        await client.send(user_text("crash"))
        await client.send({"type": "response.create"})
        assert (await client.expect_closed()).code is None

        client = await connect(sim, client_factory)
        await client.send(user_text("crash later"))
        await client.send({"type": "response.create"})
        assert (await client.expect_closed()).code is None
        assert types(client.seen).count("response.output_audio.delta") == 2

        client = await connect(sim, client_factory)
        await client.send(user_text("time"))
        await client.send({"type": "response.create"})
        events = await client.until("error")
        assert events[-1]["error"]["code"] == "session_expired"
        assert (await client.expect_closed()).code == 1000
        assert_oracle_clean(sim)


# ---------------------------------------------------------------------- the oracles themselves
# docs/protocols/openai.md#schema-oracle

VALID_CLIENT_EVENTS = [
    {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}}},
    {"type": "input_audio_buffer.append", "audio": "AAAA"},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    user_text("hi", event_id="e1"),
    {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c", "output": "{}"}},
    {"type": "response.create", "response": {"output_modalities": ["text"], "tools": [WEATHER_TOOL]}},
    {"type": "response.cancel"},
    {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 0},
]


@pytest.mark.parametrize("message", VALID_CLIENT_EVENTS, ids=lambda m: m["type"])
def test_client_oracle_accepts_ga_events(message: dict[str, Any]) -> None:
    assert check_client_event(message) is None


@pytest.mark.parametrize(("message", "code", "param"), INVALID_CLIENT_EVENTS)
def test_client_oracle_rejects_known_bad_input(message: dict[str, Any], code: str, param: str) -> None:
    error = check_client_event(message)
    assert error is not None
    assert (error.code, error.param) == (code, param)


@pytest.mark.parametrize(
    "event",
    [
        {
            "type": "response.audio.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "",
        },
        {
            "type": "response.output_audio.delta",
            "event_id": "e",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "",
        },
        {"type": "session.created", "event_id": "e", "session": {"object": "realtime.session", "id": "s"}},
        {"type": "error", "event_id": "e", "error": {"message": "no type"}},
    ],
    ids=["beta-name", "no-response_id", "session-without-type", "error-without-type"],
)
def test_server_oracle_rejects_known_bad_events(event: dict[str, Any]) -> None:
    assert check_server_event(event) is not None


async def test_a_bad_server_event_is_a_simulator_bug(client_factory: list[RawClient]) -> None:
    """The server oracle is live: an event the official types reject is recorded, and raised when strict."""
    broken = Scenario(rules=[Rule(reply=Reply(error=ServiceError("x", type=None)))])  # type: ignore[arg-type]
    async with OpenAIRealtimeSimulator(scenario=broken, strict=False) as sim:
        client = await connect(sim, client_factory)
        await client.send({"type": "response.create"})
        await client.until("error")
        assert [f.event["type"] for f in sim.oracle_failures] == ["error"]
    with pytest.raises(ExceptionGroup) as info:
        async with OpenAIRealtimeSimulator(scenario=broken) as sim:
            client = await connect(sim, client_factory)
            await client.send({"type": "response.create"})
            with anyio.fail_after(BOUND):
                await anyio.sleep_forever()
    assert info.group_contains(SimulatorBug)


# ---------------------------------------------------------------------- audio helpers


@given(st.integers(min_value=50, max_value=30_000))
def test_chunk_plan_deltas_are_50_to_150_ms(total: int) -> None:
    plan = chunk_plan(total)
    assert sum(plan) == total
    assert all(50 <= size <= 150 for size in plan)


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=40), st.integers(min_value=1, max_value=12))
def test_split_words_joins_back(text: str, parts: int) -> None:
    pieces = split_words(text, parts)
    assert len(pieces) == parts
    assert "".join(pieces) == text


def test_vad_prefix_padding_and_silence() -> None:
    vad = EnergyVAD(silence_duration_ms=200)
    events = list(vad.feed(silence(500) + loud(300) + silence(300)))
    assert [(e.kind, e.at_ms) for e in events] == [("started", 200), ("stopped", 1000)]


# ---------------------------------------------------------------------- the official client
# docs/protocols/openai.md#official-client


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_official_openai_client_talks_to_the_simulator(anyio_backend: str) -> None:
    """Not tailored to our client: ``openai``'s own ``realtime.connect`` (asyncio-only) sends its GA events,
    and reads ours back as its typed models."""
    pytest.importorskip("websockets", reason="the openai client needs openai[realtime] (websockets)")
    from openai import AsyncOpenAI
    from openai.types.realtime import ResponseAudioDeltaEvent, ResponseDoneEvent, SessionUpdatedEvent

    scenario = Scenario(rules=[Rule(text_contains="hello", reply=Reply(say="Hello from the simulator."))])
    async with OpenAIRealtimeSimulator(api_key="sk-test", scenario=scenario) as sim:
        client = AsyncOpenAI(api_key="sk-test", websocket_base_url=sim.base_url)
        seen: list[Any] = []
        with anyio.fail_after(BOUND):
            async with client.realtime.connect(model="gpt-realtime") as conn:
                await conn.session.update(
                    session={"type": "realtime", "output_modalities": ["audio"], "instructions": "Hi."}
                )
                await conn.conversation.item.create(
                    item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
                )
                await conn.response.create()
                async for event in conn:
                    seen.append(event)
                    if event.type == "response.done":
                        break
        await client.close()
        assert seen[0].type == "session.created"
        assert isinstance(seen[1], SessionUpdatedEvent)
        assert any(isinstance(e, ResponseAudioDeltaEvent) for e in seen)
        done = seen[-1]
        assert isinstance(done, ResponseDoneEvent)
        assert done.response.status == "completed"
        assert done.response.usage is not None and done.response.usage.output_tokens
        record = sim.connections[0]
        assert record.path == "/v1/realtime"
        assert record.model == "gpt-realtime"
        assert record.headers["authorization"] == "Bearer <redacted>"
        assert "openai-beta" not in record.headers
        assert record.received_types() == ["session.update", "conversation.item.create", "response.create"]
        assert sim.client_errors == []
        assert_oracle_clean(sim)
