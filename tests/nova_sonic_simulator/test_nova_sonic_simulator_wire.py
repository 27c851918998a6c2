"""The Nova Sonic simulator's wire: SigV4 and chunk signatures, the request, the input schema and event order,
and properties of the framing and the signature chain.

Driven by the independent client of ``client.py``; each test names the source it follows.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.testing.nova_sonic_simulator import (
    NovaSonicSimulator,
    Reply,
    Rule,
    Scenario,
    SchemaError,
    parse_event,
)
from adapters.testing.nova_sonic_simulator.eventstream import MessageDecoder
from adapters.testing.nova_sonic_simulator.sigv4 import ChunkChain, RequestAuth
from tests.nova_sonic_simulator.client import (
    AKID,
    AUDIO_START,
    MODEL,
    PROMPT,
    PROMPT_START,
    SECRET,
    SPOKEN_REPLY,
    ChunkSigner,
    MiniClient,
    _event,
    _frame,
    _str_header,
    connect,
    stages,
)

# ---------------------------------------------------------------------------- signatures and the request


async def test_text_turn_and_clean_close() -> None:
    """A signed session, a typed turn answered with text and 24 kHz audio, a clean close
    (docs/protocols/nova_sonic.md#signing to docs/protocols/nova_sonic.md#output-events)."""
    scenario = Scenario(rules=[Rule(text_contains="hello", reply=Reply(say="Hi there!"))])
    async with NovaSonicSimulator(scenario=scenario) as sim, connect(sim) as client:
        await client.open()
        await client.start()
        await client.text_content("USER", "hello")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        await client.close()
        await client.wait_for(lambda: client.ended)
        assert client.status == 200
        assert client.response_headers["content-type"] == "application/vnd.amazon.eventstream"
        assert stages(client) == ["completionStart", *SPOKEN_REPLY, "usageEvent", "completionEnd"]
        texts = [b["content"] for b in client.bodies("textOutput")]
        assert texts == ["Hi there!", "Hi there!"]
        audio_start = client.bodies("contentStart")[1]
        assert audio_start["audioOutputConfiguration"]["sampleRateHertz"] == 24000
        assert all(
            {"sessionId", "promptName", "completionId"} <= set(b) for e in client.received for b in e["event"].values()
        )
        pcm = b"".join(base64.b64decode(b["content"]) for b in client.bodies("audioOutput"))
        assert len(pcm) == 2 * 24 * 60 * len("Hi there!")
        record = sim.streams[0]
        assert record.ended_by == "client"
        assert record.signatures_verified == len(record.events) + 1  # every event and the empty end frame
        assert record.system_prompt == "You are a test."
        assert record.model_id == MODEL and record.access_key_id == AKID
        assert "secret" not in repr(record) and "Signature=<redacted>" in record.headers["authorization"]
        assert sim.user_inputs == [("text", "hello")]
        assert not sim.schema_failures and not sim.signature_failures


@pytest.mark.parametrize(
    ("kwargs", "status", "error_type"),
    [
        ({"secret": "wrong-secret"}, 403, "InvalidSignatureException"),
        ({"access_key": "AKIDUNKNOWN"}, 403, "UnrecognizedClientException"),
        ({"model": "amazon.titan-text-v1"}, 400, "ValidationException"),
    ],
)
async def test_request_refused_before_the_stream(kwargs: dict[str, str], status: int, error_type: str) -> None:
    """SigV4 and the model id are checked before the stream: an HTTP error with the AWS headers
    (docs/protocols/nova_sonic.md#signing, docs/protocols/nova_sonic.md#connection)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open(**kwargs)
        await client.wait_for(lambda: client.ended)
        assert client.status == status
        assert client.response_headers["x-amzn-errortype"] == error_type
        assert client.response_headers["x-amzn-requestid"]
        assert json.loads(client.body)["message"]
        assert not sim.streams
        assert [(r.status, r.error_type) for r in sim.refused] == [(status, error_type)]


async def test_path_with_an_empty_query_is_the_same_operation() -> None:
    """The official SDK requests ``.../invoke-with-bidirectional-stream?`` (seen in scripts/nova_sdk_crosscheck.py)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open(query="?")
        await client.start()
        await sim.wait_until(lambda: bool(sim.streams) and sim.streams[0].signatures_verified == 5)
        assert client.status == 200 and not sim.refused


async def test_session_token_is_required_when_configured() -> None:
    """Temporary credentials: the signed ``x-amz-security-token`` must match
    (docs/protocols/nova_sonic.md#connection)."""
    async with NovaSonicSimulator(session_tokens={AKID: "tok"}) as sim:
        async with connect(sim) as client:
            await client.open()
            await client.wait_for(lambda: client.ended)
            assert client.status == 403
        async with connect(sim) as client:
            await client.open(token="tok")
            await client.start()
            await sim.wait_until(lambda: sim.streams[0].signatures_verified == 5)
            assert sim.streams[0].headers["x-amz-security-token"] == "<redacted>"


@pytest.mark.parametrize("how", ["tampered", "wrong_secret"])
async def test_bad_chunk_signature_ends_the_stream(how: str) -> None:
    """Every event's signature must continue the chain seeded by the request signature
    (docs/protocols/nova_sonic.md#signing)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open()
        await client.send("sessionStart", {"inferenceConfiguration": {"maxTokens": 10}})
        if how == "wrong_secret":
            client.signer.secret = "wrong-secret"
        await client.send("sessionStart", {"inferenceConfiguration": {}}, tamper=how == "tampered")
        await client.wait_for(lambda: client.ended)
        assert [t for t, _ in client.exceptions] == ["validationException"]
        assert "signature" in client.exceptions[0][1]
        assert [(f.stream, f.event_number) for f in sim.signature_failures] == [(0, 2)]
        assert sim.streams[0].signatures_verified == 1
        assert sim.streams[0].ended_by == "exception"


# ---------------------------------------------------------------------------- the schema and the order


@pytest.mark.parametrize(
    ("name", "body", "fragment"),
    [
        ("connectionEnd", {}, "Unknown input event 'connectionEnd'"),
        ("sessionStart", {}, "inferenceConfiguration"),
        ("sessionStart", {"inferenceConfiguration": {"maxTokens": "1024"}}, "expected int"),
        ("sessionStart", {"inferenceConfiguration": {"topP": 1.5}}, "topP"),
        ("sessionStart", {"inferenceConfiguration": {}, "turnDetection": {}}, "extra fields"),
        (
            "contentStart",
            {
                **AUDIO_START,
                "contentName": "a",
                "audioInputConfiguration": {**AUDIO_START["audioInputConfiguration"], "sampleRateHertz": 24000},
            },
            "sampleRateHertz",
        ),
        ("contentStart", {**AUDIO_START, "contentName": "a", "interactive": 1}, "expected bool"),
        (
            "contentStart",
            {k: v for k, v in AUDIO_START.items() if k != "audioInputConfiguration"} | {"contentName": "a"},
            "requires audioInputConfiguration",
        ),
        ("audioInput", {"promptName": "p", "contentName": "a", "content": "not base64!"}, "base64"),
        ("toolResult", {"promptName": "p", "contentName": "a"}, "content"),
    ],
)
def test_schema_rejects(name: str, body: dict[str, Any], fragment: str) -> None:
    """Unknown events, missing fields, wrong types and undocumented values are refused
    (docs/protocols/nova_sonic.md#input-events, docs/protocols/nova_sonic.md#no-published-schema)."""
    with pytest.raises(SchemaError, match=fragment):
        parse_event(_event(name, body))


async def _connection_end(client: MiniClient) -> None:
    await client.start()
    await client.send("connectionEnd", {})


async def _prompt_first(client: MiniClient) -> None:
    await client.send("promptStart", PROMPT_START)


async def _audio_before_system(client: MiniClient) -> None:
    await client.send("sessionStart", {"inferenceConfiguration": {}})
    await client.send("promptStart", PROMPT_START)
    await client.audio_start()


async def _unknown_tool_result(client: MiniClient) -> None:
    await client.start()
    await client.tool_result("never-issued", "{}")


async def _prompt_end_with_open_audio(client: MiniClient) -> None:
    await client.start()
    await client.audio_start()
    await client.send("promptEnd", {"promptName": PROMPT})


async def _end_without_session_end(client: MiniClient) -> None:
    await client.start()
    await client.send_data(b"", end_stream=True)


async def _wrong_prompt_name(client: MiniClient) -> None:
    await client.start()
    await client.send("promptEnd", {"promptName": "other"})


async def _v1_turn_detection(client: MiniClient) -> None:
    await client.send(
        "sessionStart",
        {"inferenceConfiguration": {}, "turnDetectionConfiguration": {"endpointingSensitivity": "HIGH"}},
    )


async def _two_audio_contents(client: MiniClient) -> None:
    await client.start()
    await client.audio_start()
    await client.audio_start()


async def _history_text_input_over_1_kb(client: MiniClient) -> None:
    await client.start()
    await client.text_content("USER", "é" * 600, interactive=False)  # 1200 bytes in one textInput


async def _history_over_40_kb(client: MiniClient) -> None:
    await client.start()
    for i in range(41):  # 41 x 1 KB, each textInput within its limit
        await client.text_content("USER" if i % 2 == 0 else "ASSISTANT", "x" * 1024, interactive=False)


@pytest.mark.parametrize(
    ("script", "fragment", "model"),
    [
        (_connection_end, "connectionEnd", MODEL),
        (_prompt_first, "before sessionStart", MODEL),
        (_audio_before_system, "SYSTEM", MODEL),
        (_unknown_tool_result, "does not match a tool use", MODEL),
        (_prompt_end_with_open_audio, "is open", MODEL),
        (_end_without_session_end, "ended before sessionEnd", MODEL),
        (_wrong_prompt_name, "names prompt", MODEL),
        (_v1_turn_detection, "not supported by amazon.nova-sonic-v1:0", "amazon.nova-sonic-v1:0"),
        (_two_audio_contents, "only one at a time", MODEL),
        (_history_text_input_over_1_kb, "at most 1KB", MODEL),
        (_history_over_40_kb, "exceeds 40KB", MODEL),
    ],
)
async def test_stream_refuses_bad_input_with_a_validation_exception(
    script: Callable[[MiniClient], Any], fragment: str, model: str
) -> None:
    """A schema or order violation is answered with a validationException that ends the stream
    (docs/protocols/nova_sonic.md#exceptions, docs/protocols/nova_sonic.md#input-events)."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open(model=model)
        await script(client)
        await client.wait_for(lambda: client.ended)
        assert [t for t, _ in client.exceptions] == ["validationException"]
        assert fragment in client.exceptions[0][1]
        assert len(sim.schema_failures) == 1 and fragment in sim.schema_failures[0].detail
        assert sim.streams[0].ended_by == "exception"


async def test_history_is_recorded_after_the_system_prompt() -> None:
    """docs/protocols/nova_sonic.md#history: non-interactive USER/ASSISTANT text after the system prompt is history."""
    async with NovaSonicSimulator() as sim, connect(sim) as client:
        await client.open()
        await client.start()
        await client.text_content("USER", "earlier question", interactive=False)
        await client.text_content("ASSISTANT", "earlier answer", interactive=False)
        await client.text_content("USER", "now")
        await client.wait_for(lambda: client.count("usageEvent") == 1)
        assert sim.user_inputs == [
            ("history", "USER", "earlier question"),
            ("history", "ASSISTANT", "earlier answer"),
            ("text", "now"),
        ]
        await client.text_content("ASSISTANT", "late history", interactive=False)
        await client.wait_for(lambda: client.ended)
        assert "before any interactive content" in client.exceptions[0][1]


# ---------------------------------------------------------------------------- properties of the framing and the chain


@settings(max_examples=25, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40),
)
def test_decoder_reassembles_messages_however_they_are_cut(payloads: list[bytes], cuts: list[int]) -> None:
    """Messages straddle DATA frames; cutting the bytes anywhere decodes the same messages
    (docs/protocols/nova_sonic.md#event-stream-framing)."""
    wire = b"".join(_frame(_str_header(":event-type", "chunk"), p) for p in payloads)
    decoder = MessageDecoder()
    decoded: list[bytes] = []
    pos, i = 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        decoded += [m.payload for m in decoder.feed(wire[pos : pos + step])]
        pos, i = pos + step, i + 1
    assert decoded == payloads and decoder.pending == 0


@settings(max_examples=25, deadline=None)
@given(inners=st.lists(st.binary(max_size=200), min_size=1, max_size=5), flip=st.integers(min_value=0))
def test_chunk_chain_accepts_a_correct_signer_and_nothing_else(inners: list[bytes], flip: int) -> None:
    """The chain verifies what a correct signer makes, and a flipped bit anywhere breaks it
    (docs/protocols/nova_sonic.md#signing)."""
    seed = "ab" * 32
    auth = RequestAuth(access_key_id=AKID, secret=SECRET, region="us-east-1", seed_signature=seed)
    signer = ChunkSigner(seed)
    frames = [signer.sign(inner) for inner in inners]
    good = ChunkChain(auth)
    for frame in frames:
        (message,) = MessageDecoder().feed(frame)
        date, signature = message.headers[":date"].value, message.headers[":chunk-signature"].value
        assert good.verify(date, signature, message.payload)
    victim = flip % len(frames)
    bad = ChunkChain(auth)
    results = []
    for n, frame in enumerate(frames):
        (message,) = MessageDecoder().feed(frame)
        date, signature = message.headers[":date"].value, message.headers[":chunk-signature"].value
        if n == victim:
            signature = bytes([signature[0] ^ (1 << (flip % 8))]) + signature[1:]
        results.append(bad.verify(date, signature, message.payload))
    assert results[victim] is False and all(results[:victim])
