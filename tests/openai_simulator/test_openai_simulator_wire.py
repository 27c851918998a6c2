"""The OpenAI Realtime simulator's wire: the handshake, client validation, the oracles, the audio helpers.

Over real sockets, on asyncio and Trio, driven by the raw client of
``client.py`` and once by the official ``openai`` client
(docs/protocols/openai.md#official-client). Each test names the protocol rule it
checks (a docs/protocols/openai.md heading or an openai type).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.testing.openai_simulator import (
    OpenAIRealtimeSimulator,
    Reply,
    Rule,
    Scenario,
    ServiceError,
    SimulatorBug,
    check_client_event,
    check_server_event,
    loud,
    silence,
)
from adapters.testing.openai_simulator.audio import EnergyVAD, chunk_plan, split_words
from tests.openai_simulator.client import (
    BOUND,
    WEATHER_TOOL,
    RawClient,
    Refused,
    assert_oracle_clean,
    connect,
    user_text,
)

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
