"""The OpenAI adapter's configuration and wire encoding, without a socket.

Every client message we build is checked against the strict oracle (the
simulator's: the ``openai`` package's ``*Param`` types with extra keys
forbidden, docs/protocols/openai.md#schema-oracle), so a typo in our encoder fails here.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.openai import BidiOpenAIRealtimeModel, wire
from adapters.openai.config import parse_provider_config
from adapters.openai.history import history_items
from adapters.openai.wire import build_setup
from adapters.testing.openai_simulator import check_client_event
from ports.errors import BidiUsageError
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage
from ports.model import ConnectRequest, ToolSpec


def assert_valid(message: str | dict[str, Any]) -> None:
    """The simulator's strict oracle: the openai Param types, extra keys
    forbidden, strict types, lazily typed fields read through."""
    data = json.loads(message) if isinstance(message, str) else message
    error = check_client_event(data)
    assert error is None, error


WEATHER = ToolSpec(
    "get_weather",
    "Get the weather.",
    {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)


def test_the_oracle_rejects_typos() -> None:
    bad = {"type": "session.update", "session": {"type": "realtime", "turn_detecton": {}}}
    with pytest.raises(AssertionError):
        assert_valid(bad)


@pytest.mark.parametrize(
    "provider_config",
    [
        None,
        {"audio": {"voice": "cedar", "input_rate": 24000, "output_rate": 24000, "speed": 1.2}},
        {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}},
        {"turn_detection": {"threshold": 0.7, "interrupt_response": False}},
        {"turn_detection": None, "transcription": None},
        {"transcription": {"model": "gpt-4o-transcribe", "language": "fr"}},
        {"noise_reduction": "far_field", "output_modalities": ["text"], "max_output_tokens": 500},
        {"inference": {"max_output_tokens": "inf", "tool_choice": "required"}},
        {"tool_choice": {"type": "function", "name": "get_weather"}},
    ],
)
def test_session_update_matches_the_ga_schema(provider_config: dict[str, Any] | None) -> None:
    config = parse_provider_config(provider_config)
    request = ConnectRequest(system_prompt="Be brief.", tools=(WEATHER,))
    event = build_setup("gpt-realtime", config, request)
    assert_valid(wire.encode_client_event(event))
    session = event.session
    assert session["instructions"] == "Be brief."
    assert session["tools"][0]["name"] == "get_weather"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_history_seeds_are_valid_items_and_skip_orphan_results() -> None:
    history = (
        TextMessage("user", "What's the weather?"),
        ToolCallMessage("call_1", "get_weather", {"location": "Oslo"}),
        ToolResultMessage("call_1", "get_weather", "success", {"temp": 3}),
        ToolResultMessage("call_orphan", "get_weather", "success", "lost"),
        TextMessage("assistant", "It is 3 degrees."),
    )
    items = history_items(history)
    for item in items:
        assert_valid(wire.encode_client_event(item))
    kinds = [i.item["type"] for i in items]
    assert kinds == ["message", "function_call", "function_call_output", "message"]
    assert items[2].item["output"] == '{"temp": 3}'


@pytest.mark.parametrize(
    "event",
    [
        wire.ResponseCreate(),
        wire.ResponseCancel(response_id="resp_1"),
        wire.ConversationItemTruncate(item_id="item_1", audio_end_ms=1200),
        wire.InputAudioBufferAppend(audio="AAAA"),
    ],
)
def test_control_events_are_valid(event: Any) -> None:
    assert_valid(wire.encode_client_event(event))


def test_audio_fast_path_equals_the_converter() -> None:
    assert json.loads(wire.audio_append("AAAA")) == json.loads(
        wire.encode_client_event(wire.InputAudioBufferAppend(audio="AAAA"))
    )


@pytest.mark.parametrize(
    ("provider_config", "message"),
    [
        ({"audio": {"input_rate": 16000}}, "24000 Hz only"),
        ({"audio": {"output_rate": 48000}}, "24000 Hz only"),
        ({"turn_detection": {"type": "server_vad", "eagerness": "high"}}, "unknown turn_detection"),
        ({"turn_detection": {"type": "push_to_talk"}}, "not one of"),
        ({"output_modalities": ["audio", "text"]}, "one, not both"),
        ({"max_output_tokens": 0}, "1 to 4096"),
        ({"noise_reduction": "loud"}, "near_field"),
        ({"inference": {"temperature": 0.8}}, "unknown provider_config\\['inference'\\] key"),
    ],
)
def test_invalid_config_is_refused_before_connecting(provider_config: dict[str, Any], message: str) -> None:
    with pytest.raises(BidiUsageError, match=message):
        BidiOpenAIRealtimeModel(api_key="sk-test", provider_config=provider_config)


def test_defaults_are_not_mutated_by_a_config() -> None:
    first = parse_provider_config({"turn_detection": {"threshold": 0.9}})
    second = parse_provider_config(None)
    assert first.turn_detection is not None
    assert second.turn_detection is not None
    assert first.turn_detection["threshold"] == 0.9
    assert second.turn_detection["threshold"] == 0.5


def test_missing_key_and_bad_base_url_are_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BidiUsageError, match="OPENAI_API_KEY"):
        BidiOpenAIRealtimeModel()
    with pytest.raises(BidiUsageError, match="base_url"):
        BidiOpenAIRealtimeModel(api_key="sk-test", base_url="ftp://example")


def test_base_url_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_REALTIME_BASE_URL", raising=False)
    assert BidiOpenAIRealtimeModel(api_key="k" * 8).url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    model = BidiOpenAIRealtimeModel(api_key="k" * 8, base_url="http://127.0.0.1:9/v1/")
    assert model.url == "ws://127.0.0.1:9/v1/realtime?model=gpt-realtime"
    monkeypatch.setenv("OPENAI_BASE_URL", "https://proxy.example/openai/v1")
    assert BidiOpenAIRealtimeModel(api_key="k" * 8).url.startswith("wss://proxy.example/openai/v1/realtime")


def test_the_key_is_not_in_the_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    model = BidiOpenAIRealtimeModel(api_key="sk-very-secret-key")
    assert "sk-very-secret-key" not in repr(model)
    assert "sk-very-secret-key" not in repr(vars(model).get("config"))


def test_capabilities_follow_the_config() -> None:
    interrupting = BidiOpenAIRealtimeModel(api_key="sk-test")
    assert interrupting.capabilities.cancels_on_speech
    assert interrupting.capabilities.can_truncate
    assert interrupting.capabilities.input_audio.sample_rate == 24000
    manual = BidiOpenAIRealtimeModel(
        api_key="sk-test", provider_config={"turn_detection": {"interrupt_response": False}}
    )
    assert not manual.capabilities.cancels_on_speech


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.dictionaries(
            st.text(max_size=20), st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c))
        ).map(json.dumps),
        st.sampled_from(sorted(wire._SERVER_TYPES)).flatmap(
            lambda t: st.dictionaries(
                st.sampled_from(["response_id", "item_id", "delta", "response", "error", "transcript", "session"]),
                st.none() | st.integers() | st.text(max_size=10) | st.dictionaries(st.text(max_size=5), st.integers()),
            ).map(lambda d: json.dumps({"type": t, **d}))
        ),
    )
)
def test_malformed_server_messages_decode_or_raise_a_typed_error(frame: str | bytes) -> None:
    try:
        event = wire.decode_server_event(frame)
    except wire.MalformedServerEvent:
        return
    assert hasattr(event, "type")
