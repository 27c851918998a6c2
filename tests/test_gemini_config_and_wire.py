"""The Gemini adapter's configuration, endpoints and wire encoding, without a socket.

Every client message we build is checked against the simulator's oracle, the
provider's published protobuf messages (``google-ai-generativelanguage``,
unknown fields refused, docs/protocols/gemini.md#schema-oracle), so a misspelled key or a
wrong enum name fails here before any socket is opened.
"""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import anyio
import anyio.abc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.gemini import BidiGeminiLiveModel, wire
from adapters.gemini.config import parse_provider_config
from adapters.gemini.history import history_turns
from adapters.gemini.session import GeminiLiveSession
from adapters.gemini.wire import build_setup, tool_response_body
from adapters.testing.gemini_simulator import check_client_message
from ports.errors import BidiConnectionError, BidiProviderError, BidiUsageError
from ports.events import BidiAudioInputEvent, BidiImageInputEvent, BidiTextInputEvent, BidiToolResultEvent
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage
from ports.model import CancelResponse, ConnectRequest, ModelCapabilities, ToolSpec, TruncateResponse

KEY = "AIza-test-key-not-real-0123456789"
WEATHER = ToolSpec(
    "get_weather",
    "Get the weather.",
    {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)


def assert_valid(message: str | dict[str, Any], *, transparent: bool = False) -> dict[str, Any]:
    raw = message if isinstance(message, str) else json.dumps(message)
    parsed, reason = check_client_message(raw, transparent=transparent)
    assert reason is None, reason
    assert parsed is not None
    return parsed


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"):
        monkeypatch.delenv(name, raising=False)


def test_the_oracle_rejects_typos_and_media_chunks() -> None:
    with pytest.raises(AssertionError):
        assert_valid({"setup": {"model": "models/x", "generationConfg": {}}})
    with pytest.raises(AssertionError):
        assert_valid({"realtimeInput": {"mediaChunks": [{"mimeType": "audio/pcm", "data": "AAAA"}]}})


# ---------------------------------------------------------------- setup and config


@pytest.mark.parametrize(
    "provider_config",
    [
        None,
        {"audio": {"input_rate": 48000, "output_rate": 24000, "voice": "Kore", "language": "en-US"}},
        {"response_modalities": ["TEXT"], "transcription": None},
        {"transcription": {"input": False, "output": True}},
        {
            "turn_detection": {
                "start_of_speech_sensitivity": "start_sensitivity_low",
                "end_of_speech_sensitivity": "END_SENSITIVITY_HIGH",
                "prefix_padding_ms": 20,
                "silence_duration_ms": 500,
            },
            "activity_handling": "NO_INTERRUPTION",
            "turn_coverage": "TURN_INCLUDES_ALL_INPUT",
        },
        {"inference": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_output_tokens": 512, "seed": 7}},
        {"context_window_compression": {"trigger_tokens": 25600, "target_tokens": 12800}},
        {"context_window_compression": None, "session_resumption": None},
    ],
)
def test_setup_matches_the_published_schema(provider_config: dict[str, Any] | None) -> None:
    config = parse_provider_config(provider_config)
    request = ConnectRequest(system_prompt="Be brief.", tools=(WEATHER,))
    setup = build_setup("models/gemini-2.5-flash-native-audio-preview-09-2025", config, request, "handle-1")
    data = assert_valid(wire.encode_client_message(setup))["setup"]
    assert data["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    declaration = data["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert declaration["parametersJsonSchema"] == dict(WEATHER.input_schema)
    assert "mediaChunks" not in json.dumps(data)
    if config.resumption:
        assert data["sessionResumption"] == {"handle": "handle-1"}
    else:
        assert "sessionResumption" not in data


def test_defaults_ask_for_audio_transcripts_compression_and_resumption() -> None:
    config = parse_provider_config(None)
    data = json.loads(wire.encode_client_message(build_setup("models/m", config, ConnectRequest(), None)))["setup"]
    assert data == {
        "model": "models/m",
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "sessionResumption": {},
        "contextWindowCompression": {"slidingWindow": {}},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
    }


def test_transparent_resumption_is_vertex_only_by_default() -> None:
    assert parse_provider_config(None).transparent is False
    assert parse_provider_config(None, vertex=True).transparent is True
    assert parse_provider_config({"session_resumption": {"transparent": False}}, vertex=True).transparent is False
    config = parse_provider_config({"session_resumption": {"transparent": True}})
    setup = build_setup("models/m", config, ConnectRequest(), None)
    raw = wire.encode_client_message(setup)
    assert json.loads(raw)["setup"]["sessionResumption"] == {"transparent": True}
    assert_valid(raw, transparent=True)
    with pytest.raises(AssertionError):
        assert_valid(raw)  # not in the Gemini API's v1beta schema


@pytest.mark.parametrize(
    ("provider_config", "match"),
    [
        ({"audio": {"input_rate": 4000}}, "from 8000 to 48000"),
        ({"audio": {"input_rate": "16000"}}, "input_rate"),
        ({"audio": {"output_rate": 16000}}, "24000 Hz PCM only"),
        ({"audio": {"voice": ""}}, "non-empty string"),
        ({"response_modalities": ["AUDIO", "TEXT"]}, "one modality"),
        ({"response_modalities": "AUDIO"}, "must be a list"),
        ({"transcription": {"input": "yes"}}, "True or False"),
        ({"turn_detection": {"disabled": True}}, "activityStart/activityEnd"),
        ({"turn_detection": {"start_of_speech_sensitivity": "LOW"}}, "is not one of"),
        ({"turn_detection": {"silence_duration_ms": -1}}, "non-negative integer"),
        ({"activity_handling": "SOMETIMES"}, "is not one of"),
        ({"inference": {"temperature": 3}}, "from 0 to 2"),
        ({"inference": {"top_k": True}}, "positive integer"),
        ({"inference": {"temprature": 1}}, "unknown"),
        ({"context_window_compression": {"trigger_tokens": 100, "target_tokens": 200}}, "below trigger_tokens"),
        ({"context_window_compression": {"window": 1}}, "unknown"),
        ({"session_resumption": {"transparent": "yes"}}, "True or False"),
        ({"session_resumption": {"handle": "x"}}, "unknown"),
    ],
)
def test_invalid_config_is_refused_before_connecting(provider_config: Any, match: str) -> None:
    with pytest.raises(BidiUsageError, match=match):
        BidiGeminiLiveModel(api_key=KEY, provider_config=provider_config)


def test_config_is_not_mutated() -> None:
    given_config = {"audio": {"voice": "Puck"}, "context_window_compression": {"trigger_tokens": 9000}}
    snapshot = json.dumps(given_config, sort_keys=True)
    parse_provider_config(given_config)
    assert json.dumps(given_config, sort_keys=True) == snapshot


# ---------------------------------------------------------------- model, endpoints, credentials


def test_key_from_the_environment_google_first(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BidiUsageError, match="GOOGLE_API_KEY"):
        BidiGeminiLiveModel()
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-env-key-123")
    assert BidiGeminiLiveModel()._api_key == "gemini-env-key-123"
    monkeypatch.setenv("GOOGLE_API_KEY", "google-env-key-456")
    assert BidiGeminiLiveModel()._api_key == "google-env-key-456"


@pytest.mark.parametrize(
    ("model_id", "path"),
    [
        ("gemini-2.5-flash-native-audio-preview-09-2025", "models/gemini-2.5-flash-native-audio-preview-09-2025"),
        ("models/gemini-live-2.5-flash-preview", "models/gemini-live-2.5-flash-preview"),
    ],
)
def test_model_ids_with_or_without_the_models_prefix(model_id: str, path: str) -> None:
    model = BidiGeminiLiveModel(model_id, api_key=KEY)
    assert model.model_path == path
    assert model.model_id == model_id


def test_bad_model_ids_and_urls() -> None:
    with pytest.raises(BidiUsageError, match="non-empty"):
        BidiGeminiLiveModel("", api_key=KEY)
    with pytest.raises(BidiUsageError, match="models/gemini"):
        BidiGeminiLiveModel("publishers/google/models/x", api_key=KEY)
    with pytest.raises(BidiUsageError, match="ws://, wss://"):
        BidiGeminiLiveModel(api_key=KEY, base_url="ftp://example.com")
    with pytest.raises(BidiUsageError, match="api_version"):
        BidiGeminiLiveModel(api_key=KEY, api_version="v1/../x")


def test_endpoints() -> None:
    model = BidiGeminiLiveModel(api_key=KEY)
    assert model.url == (
        "wss://generativelanguage.googleapis.com/ws/"
        "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    )
    local = BidiGeminiLiveModel(api_key=KEY, base_url="http://127.0.0.1:8080/", api_version="v1alpha")
    assert local.url == (
        "ws://127.0.0.1:8080/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"
    )
    full = "wss://proxy.example/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent"
    assert BidiGeminiLiveModel(api_key=KEY, base_url=full).url == full


def test_vertex_endpoint_model_path_and_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BidiUsageError, match="project"):
        BidiGeminiLiveModel("gemini-live-2.5-flash", vertexai=True, access_token="ya29.token")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    model = BidiGeminiLiveModel(
        "gemini-live-2.5-flash", vertexai=True, location="europe-west4", access_token="ya29.secret-token"
    )
    assert model.url == (
        "wss://europe-west4-aiplatform.googleapis.com/ws/"
        "google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
    )
    assert model.model_path == (
        "projects/my-project/locations/europe-west4/publishers/google/models/gemini-live-2.5-flash"
    )
    assert model.config.transparent is True
    assert "ya29.secret-token" not in repr(model)
    glob = BidiGeminiLiveModel("models/x", vertexai=True, project="p", location="global", access_token="t0ken")
    assert glob.url.startswith("wss://aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1beta1.")
    assert glob.model_path == "projects/p/locations/global/publishers/google/models/x"


async def test_vertex_headers_take_a_token_function_sync_or_async() -> None:
    calls: list[str] = []

    async def fresh_token() -> str:
        calls.append("async")
        return f"ya29.token-{len(calls)}"

    model = BidiGeminiLiveModel("m", vertexai=True, project="p", access_token=fresh_token)
    headers, secrets = await model._headers()
    assert headers == {"Authorization": "Bearer ya29.token-1"}
    assert "ya29.token-1" in secrets
    headers, _ = await model._headers()
    assert headers["Authorization"] == "Bearer ya29.token-2"  # a fresh one per connection
    sync = BidiGeminiLiveModel("m", vertexai=True, project="p", access_token=lambda: "")
    with pytest.raises(BidiUsageError, match="non-empty"):
        await sync._headers()
    express = BidiGeminiLiveModel("m", vertexai=True, api_key=KEY)
    assert (await express._headers())[0] == {"x-goog-api-key": KEY}


def _service_account_file(directory: Any, token_uri: str) -> str:
    """A real service-account key file (a fresh RSA key) whose token endpoint is ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "sa@p.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = directory / "service-account.json"
    path.write_text(json.dumps(info))
    return str(path)


async def test_application_default_credentials_that_cannot_refresh_now_are_retryable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token is fetched for every connection, rotations included: a network fault reaching the token
    endpoint must let the core reconnect, not end the conversation; missing credentials must not retry."""
    pytest.importorskip("google.auth")
    with socket.socket() as probe:  # a port nothing listens on: the token request is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = _service_account_file(tmp_path, f"http://127.0.0.1:{port}/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
    model = BidiGeminiLiveModel("m", vertexai=True, project="p")
    with pytest.raises(BidiConnectionError) as caught:
        await model._headers()
    assert caught.value.retryable is True
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(BidiProviderError) as missing:
        await model._headers()
    assert (missing.value.code, missing.value.retryable) == ("authentication_failed", False)


async def test_a_token_endpoint_that_never_answers_does_not_hold_up_cancellation(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-auth waits up to two minutes for the token endpoint, in a thread: a caller that gives up
    (stop(), Ctrl+C) must not wait for it."""
    pytest.importorskip("google.auth")
    accepted = anyio.Event()
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        monkeypatch.setenv(
            "GOOGLE_APPLICATION_CREDENTIALS", _service_account_file(tmp_path, f"http://127.0.0.1:{port}/t")
        )
        model = BidiGeminiLiveModel("m", vertexai=True, project="p")
        held: list[anyio.abc.ByteStream] = []

        async def hold(stream: anyio.abc.ByteStream) -> None:
            held.append(stream)  # read nothing, answer nothing
            accepted.set()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, hold)
                async with anyio.create_task_group() as caller:
                    caller.start_soon(model._headers)
                    await accepted.wait()
                    caller.cancel_scope.cancel()
                tg.cancel_scope.cancel()
        for stream in held:
            await stream.aclose()  # the abandoned thread's request fails now and the thread ends


def test_capabilities() -> None:
    caps = BidiGeminiLiveModel(api_key=KEY, provider_config={"audio": {"input_rate": 48000}}).capabilities
    assert caps.input_audio.sample_rate == 48000
    assert caps.output_audio.sample_rate == 24000
    assert (caps.cancels_on_speech, caps.can_truncate, caps.resumable) == (True, False, True)
    off = BidiGeminiLiveModel(api_key=KEY, provider_config={"session_resumption": None}).capabilities
    assert off.resumable is False


def test_key_never_in_repr_even_in_a_query_string() -> None:
    model = BidiGeminiLiveModel(api_key=KEY, base_url=f"wss://proxy.example/live?key={KEY}&x=1")
    assert KEY not in repr(model)
    assert "key=***" in repr(model)
    other = BidiGeminiLiveModel(api_key=KEY, base_url="wss://proxy.example/live?key=a-different-secret")
    assert "a-different-secret" not in repr(other)


def test_a_query_in_base_url_stays_after_the_path() -> None:
    model = BidiGeminiLiveModel(api_key=KEY, base_url="https://proxy.example/live/?key=k-1234&x=1")
    path = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    assert model.url == f"wss://proxy.example/live{path}?key=k-1234&x=1"
    full = BidiGeminiLiveModel(api_key=KEY, base_url=f"wss://proxy.example{path}?key=k-1234")
    assert full.url == f"wss://proxy.example{path}?key=k-1234"


# ---------------------------------------------------------------- client messages


class FakeWebSocket:
    """Collects what a session writes (the session's only use of the socket in these tests)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(text)


def session_on(ws: FakeWebSocket, provider_config: dict[str, Any] | None = None) -> GeminiLiveSession:
    config = parse_provider_config(provider_config)
    return GeminiLiveSession(ws, "gemini-test", ModelCapabilities(), config)  # type: ignore[arg-type]


async def test_every_input_item_encodes_to_a_valid_message() -> None:
    ws = FakeWebSocket()
    session = session_on(ws)
    pcm = bytes(range(256)) * 4
    await session.send(BidiAudioInputEvent(pcm, sample_rate=48000))
    await session.send(BidiTextInputEvent("hello"))
    await session.send(BidiImageInputEvent(b"\xff\xd8jpeg", mime_type="image/jpeg"))
    issue_calls(session, "call-1", "call-2")
    await session.send(BidiToolResultEvent("call-1", "get_weather", "success", {"temp": 21}))
    await session.send(BidiToolResultEvent("call-2", "get_weather", "error", "no such city"))
    await session.send(CancelResponse("r1"))
    await session.send(TruncateResponse("r1", 200))
    messages = [assert_valid(m) for m in ws.sent]
    assert len(messages) == 5  # cancel and truncate have no Gemini message
    audio = messages[0]["realtimeInput"]["audio"]
    assert audio["mimeType"] == "audio/pcm;rate=48000"  # Gemini resamples; we name the rate
    assert base64.b64decode(audio["data"]) == pcm
    assert messages[1] == {"realtimeInput": {"text": "hello"}}
    assert base64.b64decode(messages[2]["realtimeInput"]["video"]["data"]) == b"\xff\xd8jpeg"
    assert messages[3]["toolResponse"]["functionResponses"] == [
        {"id": "call-1", "name": "get_weather", "response": {"output": {"temp": 21}}}
    ]
    assert messages[4]["toolResponse"]["functionResponses"][0]["response"] == {"error": "no such city"}


def issue_calls(session: GeminiLiveSession, *ids: str) -> None:
    """The service calls ``get_weather`` once per id on this connection."""
    calls = [{"id": i, "name": "get_weather", "args": {"location": "Oslo"}} for i in ids]
    message = wire.decode_server_message(json.dumps({"toolCall": {"functionCalls": calls}}))
    assert isinstance(message, wire.ServerMessage)
    session._translate(message)


async def test_only_calls_this_connection_issued_get_a_tool_response_and_once() -> None:
    """The service refuses a toolResponse naming an id it did not issue (close 1007, the end of the
    conversation), so a session never writes one: the core sends the outcome of a call of an earlier
    connection as text, and a result for an unknown or already answered id is a usage error."""
    ws = FakeWebSocket()
    session = session_on(ws)
    issue_calls(session, "call-new")
    with pytest.raises(BidiUsageError, match="call-old"):
        await session.send(BidiToolResultEvent("call-old", "get_weather", "success", {"temp": 21}))
    await session.send(BidiToolResultEvent("call-new", "get_weather", "success", "sunny"))
    with pytest.raises(BidiUsageError, match="call-new"):
        await session.send(BidiToolResultEvent("call-new", "get_weather", "success", "again"))
    messages = [assert_valid(m) for m in ws.sent]
    assert [m["toolResponse"]["functionResponses"] for m in messages] == [
        [{"id": "call-new", "name": "get_weather", "response": {"output": "sunny"}}]
    ]


async def test_a_result_that_crossed_the_services_cancellation_is_dropped() -> None:
    """The tool finished just as the service cancelled its call: nothing waits for the result."""
    ws = FakeWebSocket()
    session = session_on(ws)
    issue_calls(session, "call-1")
    cancel = wire.decode_server_message(json.dumps({"toolCallCancellation": {"ids": ["call-1"]}}))
    assert isinstance(cancel, wire.ServerMessage)
    session._translate(cancel)
    await session.send(BidiToolResultEvent("call-1", "get_weather", "success", "sunny"))
    assert ws.sent == []


async def test_stereo_audio_is_a_usage_error() -> None:
    session = session_on(FakeWebSocket())
    with pytest.raises(BidiUsageError, match="mono"):
        await session.send(BidiAudioInputEvent(b"\x00" * 8, sample_rate=16000, channels=2))


async def test_inputs_included_counts_items_whose_messages_were_consumed() -> None:
    """Wire indexes: setup 0, then one per item; cancel/truncate take the previous message's index."""
    session = session_on(FakeWebSocket(), {"session_resumption": {"transparent": True}})
    session._next_index = 1  # as after the setup
    await session.send(BidiTextInputEvent("a"))  # message 1
    await session.send(CancelResponse("r"))  # no message: included with message 1
    await session.send(BidiTextInputEvent("b"))  # message 2
    await session.send(BidiAudioInputEvent(b"\x00\x00" * 10))  # message 3
    assert [session.items_included(i) for i in (0, 1, 2, 3, 9)] == [0, 2, 3, 4, 4]
    await session.send(BidiTextInputEvent("d"))  # message 4
    assert session.items_included(3) == 4  # an index that does not move counts nothing new
    assert session.items_included(4) == 5


def test_history_turns_are_valid_and_skip_orphan_results() -> None:
    history = (
        TextMessage("user", "What's the weather?"),
        ToolCallMessage("call_1", "get_weather", {"location": "Oslo"}),
        ToolResultMessage("call_1", "get_weather", "success", {"temp": 3}),
        ToolResultMessage("call_orphan", "get_weather", "success", "lost"),
        TextMessage("assistant", "It is 3 degrees."),
    )
    turns = history_turns(history)
    assert_valid(wire.encode_client_message(wire.ClientContent(turns=turns)))
    assert [t["role"] for t in turns] == ["user", "model", "user", "model"]
    assert turns[1]["parts"][0]["functionCall"] == {"id": "call_1", "name": "get_weather", "args": {"location": "Oslo"}}
    assert turns[2]["parts"][0]["functionResponse"]["response"] == {"output": {"temp": 3}}
    assert "call_orphan" not in json.dumps(turns)


async def test_empty_text_is_neither_seeded_nor_sent() -> None:
    """Gemini refuses an empty text part ("Unable to submit request because it has an empty text
    parameter"): a blank transcript in the history or a blank typed line would end the conversation."""
    turns = history_turns((TextMessage("user", "hi"), TextMessage("assistant", ""), TextMessage("user", "  ")))
    assert turns == [{"role": "user", "parts": [{"text": "hi"}]}]
    ws = FakeWebSocket()
    session = session_on(ws)
    await session.send(BidiTextInputEvent(""))
    await session.send(BidiTextInputEvent(" \n"))
    await session.send(BidiTextInputEvent("ok"))
    assert [json.loads(m) for m in ws.sent] == [{"realtimeInput": {"text": "ok"}}]


def test_each_seeded_call_is_followed_by_its_response_and_unanswered_calls_are_left_out() -> None:
    """Gemini refuses a function call turn not followed by as many function responses. The history
    records results when they were sent: after other turns, or not yet for a tool still running."""
    history = (
        TextMessage("user", "Weather in Oslo and Paris?"),
        ToolCallMessage("c1", "get_weather", {"location": "Oslo"}),
        ToolCallMessage("c2", "get_weather", {"location": "Paris"}),
        TextMessage("user", "Hurry up."),
        ToolResultMessage("c2", "get_weather", "success", "sunny"),
        ToolResultMessage("c1", "get_weather", "error", "no data"),
        ToolCallMessage("c3", "get_weather", {"location": "Rome"}),  # still running
        TextMessage("assistant", "Paris is sunny."),
    )
    turns = history_turns(history)
    assert_valid(wire.encode_client_message(wire.ClientContent(turns=turns)))
    for i, turn in enumerate(turns):
        for part in turn["parts"]:
            if "functionCall" in part:
                following = turns[i + 1]["parts"]
                assert [p["functionResponse"]["id"] for p in following] == [part["functionCall"]["id"]]
    shown = [next(iter(t["parts"][0])) + ":" + json.dumps(t["parts"][0])[-30:] for t in turns]
    assert [t["role"] for t in turns] == ["user", "model", "user", "model", "user", "user", "model"], shown
    assert "c3" not in json.dumps(turns)
    assert turns[2]["parts"][0]["functionResponse"]["response"] == {"error": "no data"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=30, deadline=None)
@given(
    status=st.sampled_from(["success", "error", "cancelled"]),
    content=json_values,
    text=st.text(max_size=40),
)
def test_any_tool_result_and_text_encode_validly(status: str, content: Any, text: str) -> None:
    body = tool_response_body(status, content)
    assert_valid(wire.encode_client_message(wire.ToolResponse([wire.FunctionResponse("id-1", "f", body)])))
    assert_valid(wire.encode_client_message(wire.RealtimeInput(text=text)))
    turns = history_turns([TextMessage("user", text), ToolCallMessage("c", "f", {"q": text})])
    assert_valid(wire.encode_client_message(wire.ClientContent(turns=turns)))


# ---------------------------------------------------------------- server messages


def test_server_messages_in_either_case() -> None:
    camel = {
        "serverContent": {"outputTranscription": {"text": "hi"}, "turnComplete": True},
        "usageMetadata": {"promptTokenCount": 3, "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}]},
    }
    snake = {
        "server_content": {"output_transcription": {"text": "hi"}, "turn_complete": True},
        "usage_metadata": {
            "prompt_token_count": 3,
            "response_tokens_details": [{"modality": "AUDIO", "token_count": 5}],
        },
    }
    assert wire.decode_server_message(json.dumps(camel)) == wire.decode_server_message(json.dumps(snake))
    update = wire.decode_server_message(
        b'{"sessionResumptionUpdate":{"newHandle":"h1","resumable":true,"lastConsumedClientMessageIndex":"12"}}'
    )
    assert isinstance(update, wire.ServerMessage)
    assert update.session_resumption_update == wire.SessionResumptionUpdate("h1", True, 12)


def test_audio_chunks_take_the_fast_path_in_either_case() -> None:
    for key, turn, inline, mime in (
        ("serverContent", "modelTurn", "inlineData", "mimeType"),
        ("server_content", "model_turn", "inline_data", "mime_type"),
    ):
        frame = json.dumps({key: {turn: {"parts": [{inline: {mime: "audio/pcm;rate=24000", "data": "AAAA"}}]}}})
        assert wire.decode_server_message(frame.encode()) == wire.AudioChunks(
            (wire.Blob("audio/pcm;rate=24000", "AAAA"),)
        )


@pytest.mark.parametrize(
    "frame",
    [
        {"serverContent": {"turnComplete": "yes"}},
        {"toolCall": {"functionCalls": [{"id": 1, "name": "f"}]}},
        {"toolCall": {"functionCalls": [{"id": "a"}]}},
        {"toolCall": {"functionCalls": [{"name": "f", "args": [1]}]}},
        {"usageMetadata": {"promptTokenCount": True}},
        {"goAway": []},
    ],
)
def test_known_fields_of_the_wrong_shape_are_malformed(frame: dict[str, Any]) -> None:
    with pytest.raises(wire.MalformedServerMessage):
        wire.decode_server_message(json.dumps(frame))


@pytest.mark.parametrize("frame", [b"\xff\xfe", "not json", "[1, 2]", '"text"'])
def test_non_objects_are_not_json(frame: str | bytes) -> None:
    with pytest.raises(wire.NotJSON):
        wire.decode_server_message(frame)


def test_unknown_fields_are_named_not_fatal() -> None:
    message = wire.decode_server_message('{"sessionStats": {"x": 1}, "serverContent": {"newFlag": true}}')
    assert isinstance(message, wire.ServerMessage)
    assert message.unknown == ("sessionStats",)
    assert message.server_content == wire.ServerContent()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("50s", 50.0), ("1.5s", 1.5), ("0.000001s", 1e-6), ("0s", 0.0), (12, 12.0), ({"seconds": "3", "nanos": 5e8}, 3.5)],
)
def test_durations(value: Any, seconds: float) -> None:
    assert wire.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["50", "s", "1.5 seconds", None, True, [1]])
def test_bad_durations(value: Any) -> None:
    assert wire.parse_duration(value) is None
