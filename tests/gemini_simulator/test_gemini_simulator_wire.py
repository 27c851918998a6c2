"""The Gemini Live simulator's wire: the handshake and auth, the oracle, setup rules, the audio helpers, the
official client and the demo server.

Over real sockets (TLS and plain), on asyncio and Trio, driven by the raw client of
``client.py`` and once by the official ``google-genai`` client
(docs/protocols/gemini.md#official-client). Each test names the protocol rule it
checks (a heading of docs/protocols/gemini.md, or the proto).
"""

from __future__ import annotations

import json
import ssl
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
    Request,
)

from adapters.testing.gemini_simulator import (
    GeminiLiveSimulator,
    check_client_message,
    loud,
    silence,
)
from tests.gemini_simulator.client import (
    BOUND,
    KEY,
    MODEL,
    SCENARIO,
    RawClient,
    Refused,
    assert_oracle_clean,
    connect,
    pcm_of,
    transcript_of,
)
from tests.support import with_default_sigint

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
    # Started as from a shell prompt, even when pytest itself inherited an ignored SIGINT.
    async with await anyio.open_process(with_default_sigint([*command, "--backend", anyio_backend])) as process:
        try:
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
            hello = transcript_of(await client.until_turn_complete())
            assert hello == "Hello! I am the bidi-core Gemini Live simulator."
            await client.aclose()
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(BOUND):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:  # failed: leave no server running behind the test
                process.kill()
    assert not await anyio.Path(ca).exists()  # the throwaway CA went with the server
