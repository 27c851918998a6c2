"""The Gemini Live simulator, over real sockets (TLS and plain), on asyncio and Trio.

Driven by a minimal wsproto client written here (not our adapter), and once by
the official ``google-genai`` client (docs/protocols/gemini.md#official-client), so nothing in it can be
tailored to our code. Each test names the protocol rule it checks (a heading of
docs/protocols/gemini.md, or the proto). Every test that uses the ``sim`` fixture ends by
asserting that every message the simulator sent passes the server oracle.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSStream
from hypothesis import given, settings
from hypothesis import strategies as st
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
    check_client_message,
    check_server_message,
    loud,
    silence,
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


@pytest.fixture
async def clients() -> AsyncIterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for c in opened:
        await c.aclose()


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


@pytest.fixture(params=[True, False], ids=["tls", "plain"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[GeminiLiveSimulator]:
    async with GeminiLiveSimulator(api_key=KEY, scenario=SCENARIO, tls=request.param) as s:
        yield s
        assert_oracle_clean(s)


def pcm_of(messages: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(part["inlineData"]["data"])
        for m in messages
        for part in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
        if "inlineData" in part
    )


def transcript_of(messages: Sequence[dict[str, Any]]) -> str:
    return "".join(m.get("serverContent", {}).get("outputTranscription", {}).get("text", "") for m in messages)


# ---------------------------------------------------------------------- handshake and auth
# docs/protocols/gemini.md#connection


@pytest.mark.parametrize("version", ["v1", "v1beta", "v1alpha"])
async def test_versioned_paths_are_served_over_tls_with_binary_frames(version: str, clients: list[RawClient]) -> None:
    """google-genai defaults to v1, the docs say v1beta: all three versions answer; server frames are binary."""
    async with GeminiLiveSimulator(api_key=KEY, tls=True) as sim:
        client = await connect(sim, clients, version=version)
        assert await client.setup() == {"setupComplete": {}}
        assert client.frame_types == ["binary"]
        assert sim.connections[0].api_version == version
        await client.aclose()
        await sim.wait_until(lambda: sim.connections[0].closed)
        assert (sim.connections[0].closed_by, sim.connections[0].client_close_code) == ("client", 1000)
        assert sim.connections[0].headers["x-goog-api-key"] == "<redacted>"
        assert_oracle_clean(sim)


async def test_tls_needs_the_simulator_ca() -> None:
    """The certificate is issued by the simulator's own CA for 127.0.0.1: a default context refuses it."""
    async with GeminiLiveSimulator(tls=True) as sim:
        assert "BEGIN CERTIFICATE" in await anyio.Path(sim.ca_cert_pem_path).read_text()
        with pytest.raises(ssl.SSLCertVerificationError):
            await RawClient.connect(sim, ssl_context=ssl.create_default_context())
        client = await RawClient.connect(sim, ssl_context=ssl.create_default_context(cafile=sim.ca_cert_pem_path))
        await client.setup()
        await client.aclose()


async def test_unknown_path_is_404() -> None:
    async with GeminiLiveSimulator(tls=False) as sim:
        with pytest.raises(Refused) as info:
            await RawClient.connect(sim, target="/ws/google.ai.generativelanguage.v2.GenerativeService.Nope")
        assert info.value.status == 404
        assert info.value.body["error"]["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("key", "code", "words"),
    [(None, 1008, "unregistered callers"), ("wrong-key", 1007, "API key not valid")],
    ids=["missing", "wrong"],
)
async def test_bad_key_closes_after_the_first_message(
    key: str | None, code: int, words: str, clients: list[RawClient]
) -> None:
    """The service reports auth failures as close frames (docs/protocols/gemini.md#errors): 1007 for a bad key."""
    async with GeminiLiveSimulator(api_key=KEY, tls=False) as sim:
        client = await connect(sim, clients, key=key)
        await client.send({"setup": {"model": MODEL}})
        closed = await client.expect_closed()
        assert (closed.code, words in closed.reason) == (code, True)
        assert len(closed.reason.encode()) <= 123
        assert sim.sessions == []


async def test_key_in_the_query_is_accepted_and_redacted(clients: list[RawClient]) -> None:
    async with GeminiLiveSimulator(api_key=KEY, tls=False) as sim:
        client = await connect(sim, clients, query_key=True)
        await client.setup()
        assert sim.connections[0].query == {"key": "<redacted>"}


# ---------------------------------------------------------------------- the oracle
# docs/protocols/gemini.md#schema-oracle

GOOD_MESSAGES = [
    {"setup": {"model": MODEL, "generationConfig": {"responseModalities": ["AUDIO"]}}},
    {
        "setup": {
            "model": MODEL,
            "generation_config": {"speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Puck"}}}},
        }
    },
    {"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/pcm;rate=16000"}}},
    {"realtime_input": {"audio_stream_end": True}},
    {"realtimeInput": {"text": "hello"}},
    {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": True}},
    {"tool_response": {"function_responses": [{"id": "fc_1", "name": "f", "response": {"ok": 1}}]}},
]

BAD_MESSAGES = {
    "mediaChunks": {"realtimeInput": {"mediaChunks": [{"mimeType": "audio/pcm;rate=16000", "data": "AAAA"}]}},
    "unknown field": {"setup": {"model": MODEL, "turn_detecton": {}}},
    "wrong enum": {"setup": {"model": MODEL, "realtimeInputConfig": {"activityHandling": "SPEECH"}}},
    "two oneof members": {"setup": {"model": MODEL}, "clientContent": {"turnComplete": True}},
    "no member": {},
    "bad base64": {"realtimeInput": {"audio": {"data": "!!!", "mimeType": "audio/pcm"}}},
    "not json": "{setup",
}


@pytest.mark.parametrize("message", GOOD_MESSAGES, ids=range(len(GOOD_MESSAGES)))
def test_oracle_accepts_good_messages_in_either_case(message: dict[str, Any]) -> None:
    assert check_client_message(json.dumps(message)) == (message, None)


@pytest.mark.parametrize("name", list(BAD_MESSAGES))
async def test_oracle_violation_closes_1007(name: str, clients: list[RawClient]) -> None:
    """Bad input gets close 1007 (invalid argument) with a readable reason, like the service; mediaChunks too."""
    bad = BAD_MESSAGES[name]
    async with GeminiLiveSimulator(api_key=KEY, tls=False) as sim:
        client = await connect(sim, clients)
        if name in ("mediaChunks", "bad base64"):
            await client.setup()
        await client.send(bad if isinstance(bad, str) else json.dumps(bad))
        closed = await client.expect_closed()
        assert closed.code == 1007
        assert closed.reason
        assert [f.direction for f in sim.oracle_failures] == ["client"]
        assert sim.connections[0].oracle_errors == [sim.oracle_failures[0].detail]
        assert sim.connections[0].close_code == 1007


# ---------------------------------------------------------------------- turns (docs/protocols/gemini.md#turn-order)


@pytest.mark.parametrize("how", ["realtime_text", "client_content"])
async def test_text_turn_message_order(how: str, sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """A completed turn: modelTurn audio (24 kHz) with outputTranscription → generationComplete → turnComplete
    carrying usageMetadata; the last outputTranscription precedes generationComplete."""
    client = await connect(sim, clients)
    await client.setup(outputAudioTranscription={}, generationConfig={"responseModalities": ["AUDIO"]})
    if how == "realtime_text":
        await client.send({"realtimeInput": {"text": "hello"}})
    else:
        turns = [{"role": "user", "parts": [{"text": "hello"}]}]
        await client.send({"client_content": {"turns": turns, "turn_complete": True}})
    messages = await client.until_turn_complete()
    assert kinds(messages)[-2:] == ["serverContent.generationComplete", "serverContent.turnComplete"]
    assert set(kinds(messages)[:-2]) == {"serverContent.modelTurn", "serverContent.outputTranscription"}
    assert transcript_of(messages) == "You said: hello"
    parts = [p for m in messages for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])]
    assert {p["inlineData"]["mimeType"] for p in parts} == {"audio/pcm;rate=24000"}
    assert len(pcm_of(messages)) > 0 and len(pcm_of(messages)) % 2 == 0
    usage = messages[-1]["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"] > 0
    expected = ("text", "hello") if how == "realtime_text" else ("history", (("user", "hello"),))
    assert sim.user_inputs == [expected]


async def test_text_modality_answers_in_text_parts(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup(generationConfig={"responseModalities": ["TEXT"]})
    await client.send({"realtimeInput": {"text": "hi"}})
    messages = await client.until_turn_complete()
    texts = [p["text"] for m in messages for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])]
    assert "".join(texts) == "You said: hi"
    assert kinds(messages) == [
        "serverContent.modelTurn",
        "serverContent.generationComplete",
        "serverContent.turnComplete",
    ]


async def test_audio_turn_by_server_vad(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """16 kHz PCM16 in (rate from the MIME type): speech then ~silence ends the turn; the transcript of spoken
    turn 0 comes as inputTranscription and the reply follows."""
    client = await connect(sim, clients)
    await client.setup(
        inputAudioTranscription={},
        outputAudioTranscription={},
        realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 300}},
    )
    pcm = silence(200) + loud(400) + silence(400)
    await client.audio(pcm)
    messages = await client.until_turn_complete()
    assert kinds(messages)[0] == "serverContent.inputTranscription"
    assert messages[0]["serverContent"]["inputTranscription"]["text"] == "hello there"
    assert transcript_of(messages) == "I heard you."
    assert kinds(messages)[-2:] == ["serverContent.generationComplete", "serverContent.turnComplete"]
    assert b"".join(v for k, v in sim.user_inputs if k == "audio") == pcm
    assert sim.sessions[0].spoken_turns == 1


async def test_audio_at_another_rate_and_quiet_noise(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """The rate comes from the MIME type (24 kHz here); silence alone is no turn."""
    client = await connect(sim, clients)
    await client.setup(realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 200}})
    await client.audio(silence(600, rate=24000), rate=24000)
    await client.send({"realtimeInput": {"text": "ping"}})
    first = await client.until_turn_complete()
    assert transcript_of(first) == ""  # no transcription asked
    assert sim.sessions[0].spoken_turns == 0
    await client.audio(loud(300, rate=24000) + silence(300, rate=24000), rate=24000)
    await client.until_turn_complete()
    assert sim.sessions[0].spoken_turns == 1


async def test_audio_stream_end_ends_the_spoken_turn(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup()
    await client.audio(loud(300))
    await client.send({"realtimeInput": {"audioStreamEnd": True}})
    messages = await client.until_turn_complete()
    assert "serverContent.generationComplete" in kinds(messages)
    assert sim.sessions[0].spoken_turns == 1


async def test_manual_activity_signals(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """With automaticActivityDetection disabled, activityStart/activityEnd bound the turn; without, they are 1007."""
    client = await connect(sim, clients)
    await client.setup(realtimeInputConfig={"automaticActivityDetection": {"disabled": True}})
    await client.send({"realtimeInput": {"activityStart": {}}})
    await client.audio(silence(200))
    await client.send({"realtimeInput": {"activityEnd": {}}})
    messages = await client.until_turn_complete()
    assert "serverContent.generationComplete" in kinds(messages)
    other = await connect(sim, clients)
    await other.setup()
    await other.send({"realtimeInput": {"activityStart": {}}})
    assert (await other.expect_closed()).code == 1007


# ---------------------------------------------------------------------- tools (docs/protocols/gemini.md#tools)


async def test_several_function_calls_then_responses(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """One toolCall carries both functionCalls; the model answers after every response (id and name) arrived,
    in the same turn (no turnComplete before)."""
    client = await connect(sim, clients)
    await client.setup(tools=[WEATHER_TOOL], outputAudioTranscription={})
    await client.send({"realtimeInput": {"text": "weather and time please"}})
    messages = await client.until(lambda m: "toolCall" in m)
    assert "serverContent.turnComplete" not in kinds(messages)
    calls = messages[-1]["toolCall"]["functionCalls"]
    assert [(c["name"], c["args"]) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Paris"}),
    ]
    assert len({c["id"] for c in calls}) == 2
    first, second = calls
    await client.send(
        {
            "toolResponse": {
                "functionResponses": [{"id": first["id"], "name": first["name"], "response": {"sky": "sun"}}]
            }
        }
    )
    await client.send(
        {"tool_response": {"function_responses": [{"id": second["id"], "name": second["name"], "response": {"t": 12}}]}}
    )
    answer = await client.until_turn_complete()
    assert transcript_of(answer) == "It is sunny in Paris at noon."
    assert kinds(answer)[-2:] == ["serverContent.generationComplete", "serverContent.turnComplete"]
    assert sim.user_inputs == [
        ("text", "weather and time please"),
        ("tool_response", first["id"]),
        ("tool_response", second["id"]),
    ]


@pytest.mark.parametrize(
    "response",
    [
        {"name": "get_weather", "response": {}},
        {"id": "CALL", "response": {}},
        {"id": "function-call-unknown", "name": "get_weather", "response": {}},
        {"id": "CALL", "name": "get_time", "response": {}},
    ],
    ids=["no id", "no name", "unknown id", "wrong name"],
)
async def test_bad_tool_responses_close_1007(
    response: dict[str, Any], sim: GeminiLiveSimulator, clients: list[RawClient]
) -> None:
    client = await connect(sim, clients)
    await client.setup(tools=[WEATHER_TOOL])
    await client.send({"realtimeInput": {"text": "weather and time"}})
    (call, _) = (await client.until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"]
    if response.get("id") == "CALL":
        response = {**response, "id": call["id"]}
    await client.send({"toolResponse": {"functionResponses": [response]}})
    assert (await client.expect_closed()).code == 1007
    assert ("tool_response", call["id"]) not in sim.user_inputs


async def test_undeclared_tool_is_spoken_about(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup(outputAudioTranscription={})
    await client.send({"realtimeInput": {"text": "weather and time"}})
    messages = await client.until_turn_complete()
    assert "toolCall" not in kinds(messages)
    assert "no such tool is declared" in transcript_of(messages)


# ---------------------------------------------------------------------- interruptions
# docs/protocols/gemini.md#barge-in


async def test_speech_interrupts_a_reply(clients: list[RawClient]) -> None:
    """User speech during a reply: interrupted → turnComplete, no generationComplete, no audio after."""
    async with GeminiLiveSimulator(tls=False, scenario=SCENARIO, speedup=2.0) as sim:
        client = await connect(sim, clients)
        await client.setup(realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 200}})
        await client.send({"realtimeInput": {"text": "long"}})
        await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await client.audio(loud(100))
        messages = await client.until(lambda m: m.get("serverContent", {}).get("interrupted"))
        after = await client.until_turn_complete()
        assert kinds(after) == ["serverContent.turnComplete"]
        assert "serverContent.generationComplete" not in kinds(messages)
        assert len(pcm_of(client.seen)) < 3000 * 48  # cut short of the 3 s answer
        await client.audio(silence(300))  # the user's turn ends: a new reply
        reply = await client.until_turn_complete()
        assert kinds(reply)[-2:] == ["serverContent.generationComplete", "serverContent.turnComplete"]
        assert_oracle_clean(sim)


async def test_interruption_cancels_pending_tool_calls(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """Barge-in while the model waits for tools: interrupted, toolCallCancellation(ids), turnComplete; a late
    response to a cancelled call is ignored (not in the session state, the connection stays open)."""
    client = await connect(sim, clients)
    await client.setup(tools=[WEATHER_TOOL])
    await client.send({"realtimeInput": {"text": "weather and time"}})
    calls = (await client.until(lambda m: "toolCall" in m))[-1]["toolCall"]["functionCalls"]
    await client.audio(loud(100))
    messages = await client.until_turn_complete()
    assert kinds(messages) == ["serverContent.interrupted", "toolCallCancellation", "serverContent.turnComplete"]
    assert messages[1]["toolCallCancellation"]["ids"] == [c["id"] for c in calls]
    late = {"id": calls[0]["id"], "name": calls[0]["name"], "response": {}}
    await client.send({"toolResponse": {"functionResponses": [late]}})
    await client.send({"realtimeInput": {"text": "still there?"}})
    await client.until_turn_complete()
    assert not [i for i in sim.user_inputs if i[0] == "tool_response"]


async def test_no_interruption_mode_answers_after_the_current_turn(clients: list[RawClient]) -> None:
    async with GeminiLiveSimulator(tls=False, scenario=SCENARIO, speedup=4.0) as sim:
        client = await connect(sim, clients)
        await client.setup(
            realtimeInputConfig={
                "activityHandling": "NO_INTERRUPTION",
                "automaticActivityDetection": {"silenceDurationMs": 100},
            }
        )
        await client.send({"realtimeInput": {"text": "long"}})
        await client.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await client.audio(loud(100) + silence(200))
        first = await client.until_turn_complete()
        second = await client.until_turn_complete()
        assert "serverContent.interrupted" not in kinds(first + second)
        assert (
            kinds(first)[-2:]
            == kinds(second)[-2:]
            == ["serverContent.generationComplete", "serverContent.turnComplete"]
        )
        assert_oracle_clean(sim)


# ---------------------------------------------------------------------- resumption
# docs/protocols/gemini.md#session-resumption


def handle_of(message: dict[str, Any]) -> str | None:
    update = message.get("sessionResumptionUpdate")
    return update.get("newHandle") if update is not None and update.get("resumable") else None


async def test_resumption_continues_the_session_as_of_the_handle(
    sim: GeminiLiveSimulator, clients: list[RawClient]
) -> None:
    """Handles come at resumable points only (after setup, after turnComplete); while generating the update is
    empty (not resumable). Resuming from a handle restores the state as of that handle: what came after is gone."""
    client = await connect(sim, clients)
    await client.setup(sessionResumption={})
    h0 = handle_of(await client.recv())
    assert h0
    await client.send({"realtimeInput": {"text": "one"}})
    turn_one = await client.until(handle_of)
    assert turn_one[0] == {"sessionResumptionUpdate": {}}  # consumed while the model starts generating
    assert kinds(turn_one)[-3:] == [
        "serverContent.generationComplete",
        "serverContent.turnComplete",
        "sessionResumptionUpdate",
    ]
    h1 = handle_of(turn_one[-1])
    await client.send({"realtimeInput": {"text": "two"}})
    await client.until(handle_of)
    await client.send({"realtimeInput": {"text": "lost"}})  # consumed, but no handle covers it
    await client.until(lambda m: m.get("sessionResumptionUpdate") == {})
    assert sim.user_inputs == [("text", "one"), ("text", "two"), ("text", "lost")]
    await sim.drop_all()

    again = await connect(sim, clients)
    await again.setup(sessionResumption={"handle": h1})
    assert handle_of(await again.recv())
    assert sim.connections[1].resumed_handle == h1
    assert sim.connections[1].session_id == sim.connections[0].session_id
    assert sim.user_inputs == [("text", "one")]
    await again.send({"realtimeInput": {"text": "three"}})
    await again.until(handle_of)
    assert sim.user_inputs == [("text", "one"), ("text", "three")]


async def test_unknown_or_stale_handle_is_1007(clients: list[RawClient]) -> None:
    async with GeminiLiveSimulator(tls=False, handle_ttl_s=0.05) as sim:
        client = await connect(sim, clients)
        await client.send({"setup": {"model": MODEL, "sessionResumption": {"handle": "never-issued"}}})
        closed = await client.expect_closed()
        assert closed.code == 1007 and "handle" in closed.reason
        fresh = await connect(sim, clients)
        await fresh.setup(sessionResumption={})
        handle = handle_of(await fresh.recv())
        await anyio.sleep(0.1)  # the handle ages past its time to live
        stale = await connect(sim, clients)
        await stale.send({"setup": {"model": MODEL, "sessionResumption": {"handle": handle}}})
        assert (await stale.expect_closed()).code == 1007
        assert len(sim.sessions) == 1
        assert_oracle_clean(sim)


async def test_resuming_with_another_model_is_1007(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup(sessionResumption={})
    handle = handle_of(await client.recv())
    other = await connect(sim, clients)
    await other.send({"setup": {"model": "models/another", "sessionResumption": {"handle": handle}}})
    assert (await other.expect_closed()).code == 1007


async def test_idle_audio_gets_handles_and_speech_does_not(clients: list[RawClient]) -> None:
    """Audio consumed while idle is covered by a handle every ``audio_handle_every_ms``; a turn in progress is
    not resumable, so the state resumed after a drop mid-speech lacks that speech."""
    async with GeminiLiveSimulator(tls=False, audio_handle_every_ms=200) as sim:
        client = await connect(sim, clients)
        await client.setup(sessionResumption={})
        await client.recv()
        quiet = silence(400)
        await client.audio(quiet)
        handles = [handle_of(m) for m in await client.until(handle_of)]
        await client.audio(loud(300))  # speech starts: no handle covers it
        await sim.wait_until(lambda: sum(1 for k, _ in sim.user_inputs if k == "audio") == 7)
        await sim.drop_all()
        again = await connect(sim, clients)
        await again.setup(sessionResumption={"handle": handles[-1]})
        audio = b"".join(v for k, v in sim.user_inputs if k == "audio")
        assert audio == quiet[: len(audio)] and len(audio) >= 200 * 32
        assert_oracle_clean(sim)


async def test_transparent_resumption_reports_the_last_consumed_index(clients: list[RawClient]) -> None:
    """Vertex AI's ``transparent`` is not in the v1beta proto: refused (1007) unless the simulator accepts it,
    and then updates carry lastConsumedClientMessageIndex (setup = 0)."""
    async with GeminiLiveSimulator(tls=False, transparent_resumption=True) as sim:
        client = await connect(sim, clients)
        await client.setup(sessionResumption={"transparent": True})
        assert (await client.recv())["sessionResumptionUpdate"]["lastConsumedClientMessageIndex"] == "0"
        await client.send({"realtimeInput": {"text": "one"}})
        last = (await client.until(handle_of))[-1]
        assert last["sessionResumptionUpdate"]["lastConsumedClientMessageIndex"] == "1"
        assert sim.oracle_failures == []
    async with GeminiLiveSimulator(tls=False) as strict:
        client = await connect(strict, clients)
        await client.send({"setup": {"model": MODEL, "sessionResumption": {"transparent": True}}})
        assert (await client.expect_closed()).code == 1007


# ---------------------------------------------------------------------- goAway and faults
# docs/protocols/gemini.md#session-limits


async def test_go_away_then_the_lifetime_close(clients: list[RawClient]) -> None:
    """``goAway`` with timeLeft = the lead, then the close at the end of the connection's lifetime."""
    async with GeminiLiveSimulator(tls=False, connection_lifetime_s=0.3, go_away_lead_s=0.2) as sim:
        client = await connect(sim, clients)
        await client.setup()
        assert await client.recv() == {"goAway": {"timeLeft": "0.200s"}}
        closed = await client.expect_closed()
        assert (closed.code, closed.reason) == (1011, "Deadline expired before operation could complete.")
        assert sim.connections[0].closed_by == "server"
        assert_oracle_clean(sim)


async def test_reply_go_away_and_go_away_all(clients: list[RawClient]) -> None:
    scenario = Scenario(rules=[Rule(text_equals="bye", reply=Reply(say="Bye.", go_away=True))])
    async with GeminiLiveSimulator(tls=False, scenario=scenario, go_away_lead_s=0.2, lifetime_close=(1000, "")) as sim:
        client = await connect(sim, clients)
        await client.setup()
        await client.send({"realtimeInput": {"text": "bye"}})
        messages = await client.until_turn_complete()
        assert messages[0] == {"goAway": {"timeLeft": "0.200s"}}
        assert (await client.expect_closed()).code == 1000
        other = await connect(sim, clients)
        await other.setup()
        await sim.go_away_all()
        assert "goAway" in await other.recv()
        assert_oracle_clean(sim)


async def test_reply_close_1011_and_close_all(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    client = await connect(sim, clients)
    await client.setup()
    await client.send({"realtimeInput": {"text": "crash"}})
    closed = await client.expect_closed()
    assert (closed.code, closed.reason) == (1011, "Internal error occurred.")
    other = await connect(sim, clients)
    await other.setup()
    await sim.close_all(1011, "Deadline expired before operation could complete.")
    assert (await other.expect_closed()).code == 1011
    await sim.wait_until(lambda: all(c.closed for c in sim.connections))
    assert [(c.close_code, c.closed_by) for c in sim.connections] == [(1011, "server"), (1011, "server")]


async def test_abrupt_drops(clients: list[RawClient]) -> None:
    """``Reply(drop=True)`` and ``drop_all`` end the TCP connection without a close frame, mid-reply too."""
    async with GeminiLiveSimulator(tls=True, scenario=SCENARIO, speedup=1.0) as sim:
        client = await connect(sim, clients)
        await client.setup()
        await client.send({"realtimeInput": {"text": "vanish"}})
        assert (await client.expect_closed()).code is None
        other = await connect(sim, clients)
        await other.setup()
        await other.send({"realtimeInput": {"text": "long"}})
        await other.until(lambda m: "modelTurn" in m.get("serverContent", {}))
        await sim.drop_all()
        assert (await other.expect_closed()).code is None
        assert [c.closed_by for c in sim.connections] == ["dropped", "dropped"]
        assert [c.close_code for c in sim.connections] == [None, None]
        assert_oracle_clean(sim)


async def test_leaving_the_context_closes_everything() -> None:
    async with GeminiLiveSimulator(tls=True) as sim:
        client = await RawClient.connect(sim)
        await client.setup()
        path = sim.ca_cert_pem_path
    assert sim.connections[0].closed
    assert not await anyio.Path(path).exists()
    with pytest.raises(Closed):
        with anyio.fail_after(BOUND):
            await client.recv()
    await client.aclose()


# ---------------------------------------------------------------------- the official client
# docs/protocols/gemini.md#official-client


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_official_google_genai_client_talks_to_the_simulator(anyio_backend: str) -> None:
    """Not tailored to our client: google-genai (asyncio-only) connects over TLS with its own setup (mixed case),
    sends text, runs a tool round trip and resumes with a handle; its typed models parse everything we send."""
    genai = pytest.importorskip("google.genai", reason="the cross-check needs google-genai")
    from google.genai import types

    async with GeminiLiveSimulator(api_key=KEY, scenario=SCENARIO, tls=True) as sim:
        client = genai.Client(
            api_key=KEY,
            http_options={"base_url": sim.https_base_url, "async_client_args": {"ssl": sim.client_ssl_context()}},
        )
        tool = types.Tool(
            function_declarations=[
                types.FunctionDeclaration(
                    name="get_weather", description="Weather.", parameters_json_schema={"type": "object"}
                ),
                types.FunctionDeclaration(
                    name="get_time", description="Time.", parameters_json_schema={"type": "object"}
                ),
            ]
        )
        config = types.LiveConnectConfig(
            response_modalities=[types.Modality.AUDIO],
            output_audio_transcription=types.AudioTranscriptionConfig(),
            input_audio_transcription=types.AudioTranscriptionConfig(),
            tools=[tool],
            session_resumption=types.SessionResumptionConfig(),
            speech_config=types.SpeechConfig(
                voice_config=types.VoiceConfig(prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Puck"))
            ),
        )
        handle: str | None = None
        with anyio.fail_after(BOUND * 2):
            async with client.aio.live.connect(
                model="gemini-2.5-flash-native-audio-preview-09-2025", config=config
            ) as session:
                await session.send_realtime_input(text="hello")
                heard: list[str] = []
                audio = b""
                async for message in session.receive():  # ends at turnComplete
                    content = message.server_content
                    if content and content.output_transcription and content.output_transcription.text:
                        heard.append(content.output_transcription.text)
                    if message.data:
                        audio += message.data
                    if message.session_resumption_update and message.session_resumption_update.new_handle:
                        handle = message.session_resumption_update.new_handle
                    if message.usage_metadata:
                        assert message.usage_metadata.total_token_count
                assert "".join(heard) == "You said: hello"
                assert audio and len(audio) % 2 == 0

                await session.send_realtime_input(text="weather and time")
                answered = False
                async for message in session.receive():
                    if message.tool_call and message.tool_call.function_calls:
                        await session.send_tool_response(
                            function_responses=[
                                types.FunctionResponse(id=call.id, name=call.name, response={"ok": True})
                                for call in message.tool_call.function_calls
                            ]
                        )
                    content = message.server_content
                    if content and content.output_transcription and content.output_transcription.text:
                        answered = answered or "sunny" in content.output_transcription.text
                    if message.session_resumption_update and message.session_resumption_update.new_handle:
                        handle = message.session_resumption_update.new_handle
                assert answered
                await session.send_realtime_input(
                    audio=types.Blob(data=loud(300) + silence(600), mime_type="audio/pcm;rate=16000")
                )
                said = ""
                async for message in session.receive():  # starts with the update that followed the tool turn
                    content = message.server_content
                    if content and content.input_transcription and content.input_transcription.text:
                        said += content.input_transcription.text
                    if message.session_resumption_update and message.session_resumption_update.new_handle:
                        handle = message.session_resumption_update.new_handle
                assert said == "hello there"

            assert handle is not None
            resumed = config.model_copy(update={"session_resumption": types.SessionResumptionConfig(handle=handle)})
            async with client.aio.live.connect(
                model="gemini-2.5-flash-native-audio-preview-09-2025", config=resumed
            ) as session:
                await session.send_client_content(
                    turns=types.Content(role="user", parts=[types.Part(text="again")]), turn_complete=True
                )
                async for _ in session.receive():
                    pass
        await client.aio.aclose()

        first, second = sim.connections
        assert first.api_version == "v1"  # google-genai's default
        assert first.setup is not None and first.setup["model"].startswith("models/")
        assert second.resumed_handle == handle and second.session_id == first.session_id
        # The handle was issued after the tool turn: the spoken turn after it is not in the resumed state.
        kinds_in_state = [kind for kind, _ in sim.user_inputs]
        assert kinds_in_state == ["text", "text", "tool_response", "tool_response", "history"]
        assert sim.user_inputs[0] == ("text", "hello")
        assert sim.user_inputs[-1] == ("history", (("user", "again"),))
        assert_oracle_clean(sim)


async def test_setup_must_come_first_and_once(sim: GeminiLiveSimulator, clients: list[RawClient]) -> None:
    """``setup`` comes first; the simulator refuses anything else (and a second setup) with 1007
    (docs/protocols/gemini.md#client-messages)."""
    client = await connect(sim, clients)
    await client.send({"realtimeInput": {"text": "too early"}})
    assert (await client.expect_closed()).code == 1007
    other = await connect(sim, clients)
    await other.setup()
    await other.send({"setup": {"model": MODEL}})
    assert (await other.expect_closed()).code == 1007
    assert sim.oracle_failures == []  # valid messages, wrong order: not a schema violation


ODD_BUT_VALID = [
    {"toolResponse": {}},
    {"clientContent": {}},
    {"realtimeInput": {}},
    {"realtimeInput": {"video": {"data": "AAAA", "mimeType": "image/jpeg"}}},
    {"realtimeInput": {"audioStreamEnd": True}},
    {"clientContent": {"turns": [{"role": "model", "parts": [{"text": "earlier answer"}]}], "turnComplete": False}},
]


@pytest.mark.parametrize("message", ODD_BUT_VALID, ids=range(len(ODD_BUT_VALID)))
async def test_odd_but_valid_messages_keep_the_session_going(message: dict[str, Any], clients: list[RawClient]) -> None:
    """Schema-valid edge cases are consumed quietly; the next text turn still completes."""
    async with GeminiLiveSimulator(tls=False) as sim:
        client = await connect(sim, clients)
        await client.setup(
            tools=[{"googleSearch": {}}],
            generationConfig={"responseModalities": [3]},  # enums may be numbers in proto3 JSON: 3 is AUDIO
            realtimeInputConfig={"activityHandling": 1, "automaticActivityDetection": {"silenceDurationMs": "300"}},
            sessionResumption={"handle": ""},
        )
        await client.send(message)
        await client.send({"realtimeInput": {"text": "still here"}})
        messages = await client.until_turn_complete()
        assert transcript_of(messages) == ""  # no transcription asked
        assert pcm_of(messages)
        assert sim.user_inputs[-1] == ("text", "still here")
        assert_oracle_clean(sim)


# ---------------------------------------------------------------------- audio helpers


def test_vad_at_16_and_24_khz() -> None:
    from adapters.testing.gemini_simulator.audio import EnergyVAD

    for rate in (16000, 24000):
        vad = EnergyVAD(silence_duration_ms=200)
        pcm = silence(500, rate=rate) + loud(300, rate=rate) + silence(300, rate=rate)
        assert [(e.kind, e.at_ms) for e in vad.feed(pcm, rate)] == [("started", 500), ("stopped", 1000)]


@given(st.integers(min_value=1, max_value=20_000))
@settings(max_examples=30, deadline=None)
def test_chunk_plan_covers_the_total_in_20_to_200_ms_chunks(total: int) -> None:
    from adapters.testing.gemini_simulator.audio import chunk_plan

    plan = chunk_plan(total)
    assert sum(plan) == total
    assert all(20 <= size <= 200 for size in plan[:-1]) and 0 < plan[-1] <= 200


@given(st.text(alphabet=st.sampled_from("ab \n"), max_size=40), st.integers(min_value=1, max_value=12))
@settings(max_examples=30, deadline=None)
def test_split_words_joins_back(text: str, parts: int) -> None:
    from adapters.testing.gemini_simulator.audio import split_words

    pieces = split_words(text, parts)
    assert len(pieces) == parts and "".join(pieces) == text


def test_pcm_rate_from_the_mime_type() -> None:
    from adapters.testing.gemini_simulator.audio import pcm_rate

    assert pcm_rate("audio/pcm;rate=16000") == 16000
    assert pcm_rate("audio/pcm; rate=24000") == 24000
    assert pcm_rate("audio/pcm") == 16000
    assert pcm_rate("audio/opus") is None


# ---------------------------------------------------------------------- the demo server


async def test_the_demo_server_runs_and_answers(anyio_backend: str) -> None:
    """``python -m adapters.testing.gemini_simulator`` prints its URL and CA, and plays the demo scenario."""
    import signal
    import sys

    command = [sys.executable, "-m", "adapters.testing.gemini_simulator", "--port", "0", "--speedup", "1000"]
    async with await anyio.open_process([*command, "--backend", anyio_backend]) as process:
        assert process.stdout is not None
        text = ""
        with anyio.fail_after(BOUND * 2):
            while "Ctrl+C" not in text:
                text += (await process.stdout.receive()).decode()
        url = text.split("Gemini Live simulator: ", 1)[1].split()[0]
        ca = text.split("CA certificate to trust: ", 1)[1].split()[0]
        port = int(url.split(":")[2].split("/")[0])
        ctx = ssl.create_default_context(cafile=ca)
        tcp = await anyio.connect_tcp("127.0.0.1", port)
        stream = await TLSStream.wrap(tcp, hostname="127.0.0.1", ssl_context=ctx, standard_compatible=False)
        ws = WSConnection(ConnectionType.CLIENT)
        target = url.split(str(port), 1)[1]
        headers = [(b"x-goog-api-key", b"test-key")]
        await stream.send(ws.send(Request(host=f"127.0.0.1:{port}", target=target, extra_headers=headers)))
        with anyio.fail_after(BOUND):
            while not any(isinstance(e, AcceptConnection) for e in ws.events()):
                ws.receive_data(await stream.receive())
        client = RawClient(stream, ws)
        await client.setup(outputAudioTranscription={})
        await client.send({"realtimeInput": {"text": "hello"}})
        assert transcript_of(await client.until_turn_complete()) == "Hello! I am the bidi-core Gemini Live simulator."
        await client.aclose()
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(BOUND):
            assert await process.wait() == 0
    assert not await anyio.Path(ca).exists()  # the throwaway CA went with the server


@pytest.mark.parametrize(
    ("close", "code"), [((1011, "Internal error occurred."), 1011), (None, None)], ids=["1011", "drop"]
)
async def test_fault_in_the_middle_of_a_reply(
    close: tuple[int, str] | None, code: int | None, clients: list[RawClient]
) -> None:
    """docs/protocols/gemini.md#errors: 1011 or an abrupt drop after some audio of a turn, before its turnComplete."""
    reply = Reply(say="A reply that breaks.", audio_ms=1000, close=close, drop=close is None, after_chunks=2)
    async with GeminiLiveSimulator(tls=False, scenario=Scenario(rules=[Rule(reply=reply)])) as sim:
        client = await connect(sim, clients)
        await client.setup()
        await client.send({"realtimeInput": {"text": "go"}})
        closed = await client.expect_closed()
        assert closed.code == code
        assert kinds(client.seen[1:]) == ["serverContent.modelTurn"]
        assert len([m for m in client.seen if "serverContent" in m]) == 2
        assert_oracle_clean(sim)
