"""The OpenAI Realtime simulator's turns: text turns, function calls, input audio and VAD, barge-in, truncation.

Over real sockets, on asyncio and Trio, driven by the raw client of
``client.py``; each test names the protocol rule it
checks (a docs/protocols/openai.md heading or an openai type).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from adapters.testing.openai_simulator import (
    OpenAIRealtimeSimulator,
    loud,
    silence,
)
from adapters.testing.openai_simulator.audio import rms
from tests.openai_simulator.client import (
    SCENARIO,
    WEATHER_TOOL,
    RawClient,
    assert_oracle_clean,
    audio_ms,
    collapse,
    connect,
    types,
    user_text,
)

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
