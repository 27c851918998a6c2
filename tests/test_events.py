"""Events: JSON-safe dict forms that round-trip, clear errors for bad ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ports.errors import BidiProviderError, BidiUsageError, redact
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiEvent,
    BidiImageInputEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiSpeechStoppedEvent,
    BidiTextInputEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ModalityUsage,
    ResponseTiming,
    event_from_dict,
)
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage, message_from_dict

SAMPLES: list[BidiEvent] = [
    BidiTextInputEvent("hello"),
    BidiAudioInputEvent(b"\x01\x00\x02\x00", sample_rate=16000),
    BidiImageInputEvent(b"\x89PNG", mime_type="image/png"),
    BidiConnectionStartEvent("c1", "gpt-realtime"),
    BidiConnectionRestartEvent("connection_lost", "reset by peer"),
    BidiResponseStartEvent("r1"),
    BidiAudioStreamEvent(b"\x00\x01" * 3, sample_rate=24000, response_id="r1"),
    BidiTranscriptStreamEvent(delta="lo", text="hello", role="assistant", is_final=False, response_id="r1"),
    BidiInterruptionEvent("user_speech", "r1"),
    BidiResponseCompleteEvent("r1", "interrupted"),
    BidiResponseCompleteEvent("r2", "complete", ResponseTiming(1.5, 0.25, 0.75, "speech", 1200.0)),
    BidiUsageEvent(10, 20, 30, (ModalityUsage("audio", 5, 15, 3),), cache_read_input_tokens=2),
    BidiConnectionCloseEvent("user_request", "c1"),
    BidiErrorEvent("rate limited", code="rate_limit_exceeded"),
    BidiToolUseEvent("t1", "get_weather", {"location": "Paris", "days": [1, 2]}),
    BidiToolResultEvent("t1", "get_weather", "success", {"temp": 22}),
    BidiSpeechStartedEvent(),
    BidiSpeechStoppedEvent(),
    BidiToolCancelEvent(("t1", "t2")),
    BidiConnectionExpiringEvent(12.5),
    BidiResumptionUpdateEvent("handle-123"),
]


def test_every_event_type_has_a_sample() -> None:
    from ports import events

    assert {type(s).type for s in SAMPLES} == set(events._REGISTRY)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_dict_form_is_json_safe_and_round_trips(event: BidiEvent) -> None:
    data = event.to_dict()
    assert data["type"] == type(event).type
    wire = json.loads(json.dumps(data))
    assert event_from_dict(wire) == event
    assert type(event).from_dict(wire) == event
    # The agent's timing takes no part in equality, but it survives the round trip.
    assert getattr(event_from_dict(wire), "timing", None) == getattr(event, "timing", None)


def test_audio_is_bytes_inside_and_base64_only_in_the_dict_form() -> None:
    event = BidiAudioStreamEvent(b"\xff\x7f\x00\x80", response_id="r1")
    assert event.to_dict()["audio"] == "/38AgA=="
    assert event.duration_ms == pytest.approx(2 / 24)
    assert "bytes" in repr(event) and "\\xff" not in repr(event)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "bidi_nope"}, "unknown event type"),
        ({"text": "no type"}, "unknown event type"),
        ({"type": "bidi_text_input"}, "text"),
        ({"type": "bidi_text_input", "text": 3}, "expected str"),
        ({"type": "bidi_text_input", "text": "x", "colour": "red"}, "unknown field"),
        ({"type": "bidi_audio_input", "audio": "not base64!"}, "base64"),
        ({"type": "bidi_audio_input", "audio": "AAAA", "sample_rate": 0}, "positive"),
        ({"type": "bidi_interruption", "reason": "boredom"}, "not one of"),
        ({"type": "bidi_audio_input", "audio": "AAAA", "sample_rate": True}, "expected int"),
    ],
)
def test_bad_dicts_raise_usage_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(BidiUsageError, match=message):
        event_from_dict(data)


def test_from_dict_checks_the_type_tag() -> None:
    with pytest.raises(BidiUsageError, match="expected 'bidi_text_input'"):
        BidiTextInputEvent.from_dict({"type": "bidi_audio_input", "audio": ""})


@pytest.mark.parametrize(
    "message",
    [
        TextMessage("user", "hi"),
        ToolCallMessage("t1", "get_weather", {"location": "Oslo"}),
        ToolResultMessage("t1", "get_weather", "success", "sunny"),
        ToolResultMessage("t1", "get_weather", "error", {"error": "down"}),
    ],
)
def test_messages_round_trip_through_the_converse_shape(message: Any) -> None:
    assert message_from_dict(json.loads(json.dumps(message.to_dict()))) == message


def test_unsupported_messages_are_refused() -> None:
    with pytest.raises(BidiUsageError):
        message_from_dict({"role": "user", "content": [{"image": {}}]})
    with pytest.raises(BidiUsageError):
        message_from_dict({"role": "user"})


def test_secrets_are_redacted_from_messages() -> None:
    key = "sk-live-abcdef123456"
    text = f"GET wss://api.example/v1?key={key}&model=m failed; header Bearer {key}"
    cleaned = redact(text, key)
    assert key not in cleaned
    assert "model=m" in cleaned
    assert "key=***" in cleaned
    assert str(BidiProviderError("bad key", code="invalid_api_key")) == "[invalid_api_key] bad key"
