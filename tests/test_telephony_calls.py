"""Phone calls end to end: the carrier simulator calls the Twilio bridge on a real hypercorn, whose agents talk
to the OpenAI simulator, on asyncio and Trio.

The properties about time are measured on the carrier simulator's own
accounting, which the bridge cannot fake: what it had buffered when each chunk
arrived (never more than the lead plus one chunk) and what the caller had heard
when things happened. Nothing here asserts how long anything took.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario
from adapters.testing.twilio_simulator import tone_8k
from ports.events import BidiInterruptionEvent
from ports.messages import TextMessage
from tests.telephony_support import phone_server
from tests.web_support import SIM_KEY

REPLY_MS = 1200
LONG_MS = 4000
CHUNK_MS = 20

SCENARIO = Scenario(
    rules=[
        Rule(text_contains="pressed 7", reply=Reply(say="You pressed seven.", audio_ms=200)),
        Rule(spoken_turn=0, reply=Reply(say="It is nine o'clock.", audio_ms=REPLY_MS)),
        Rule(spoken_turn=1, reply=Reply(say="Sorry, go on.", audio_ms=200)),
    ],
    transcripts=["what time is it", "wait, one thing"],
)


@pytest.fixture
async def sim() -> AsyncIterator[OpenAIRealtimeSimulator]:
    async with OpenAIRealtimeSimulator(api_key=SIM_KEY, scenario=SCENARIO) as s:
        yield s
        assert not s.oracle_failures


async def test_the_question_reaches_the_model_and_the_reply_is_heard_at_play_pace_with_the_lead(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with phone_server(sim, anyio_backend, lead_ms=100) as served:
        with anyio.fail_after(30):
            async with served.carrier.call() as call:
                call.say(tone_8k(400))
                await call.wait_heard(REPLY_MS - 1)
            record = call.record
    assert record.webhook_status == 200 and record.handshake_status == 101
    assert not record.violations
    # The question reached the model: its turn detection heard the caller (the simulator's transcript of that
    # turn is in the history) and it answered it.
    assert any(m.message.get("type") == "input_audio_buffer.append" for m in sim.received)
    said = [m.text for m in served.agents[0].messages if isinstance(m, TextMessage) and m.role == "user"]
    assert said == ["what time is it"]
    # The whole reply reached the caller (resampled to 8 kHz: within a sample or two).
    assert abs(record.heard_ms - REPLY_MS) <= 1
    # Never more than the lead plus one chunk waiting at the carrier.
    assert record.max_buffered_ms <= 100 + CHUNK_MS, record.max_buffered_ms
    print(f"largest buffered lead at the carrier: {record.max_buffered_ms:.1f} ms")


async def test_a_barge_in_clears_the_carrier_and_truncates_the_model_at_what_the_caller_heard(
    anyio_backend: str,
) -> None:
    scenario = Scenario(
        rules=[
            Rule(spoken_turn=0, reply=Reply(say="A long answer to talk over.", audio_ms=LONG_MS)),
            Rule(spoken_turn=1, reply=Reply(say="Yes?", audio_ms=200)),
        ],
        transcripts=["tell me everything", "stop"],
    )
    async with OpenAIRealtimeSimulator(api_key=SIM_KEY, scenario=scenario) as sim:
        async with phone_server(sim, anyio_backend) as served:
            with anyio.fail_after(30):
                async with served.carrier.call() as call:
                    call.say(tone_8k(400))
                    await call.wait_heard(600)
                    barge_in = call.say(tone_8k(600))
                    await call.wait_clear()
                    await call.wait_speech_done(barge_in)
                    await sim.wait_until(lambda: bool(sim.truncations))
                record = call.record
        assert not sim.oracle_failures
    assert not record.violations
    clear = record.clears[0]
    assert barge_in.started_at is not None and barge_in.heard_ms_at_start is not None
    # The model is told what the caller heard: no more than had played when the clear came, and at least
    # what had played when the caller began to speak (less the chunk whose mark was still on its way).
    truncated = sim.truncations[0].audio_end_ms
    assert barge_in.heard_ms_at_start - CHUNK_MS - 1 <= truncated <= clear.heard_ms + 1, (truncated, clear)
    # What the clear threw away was at most the lead and one chunk, and no audio of the interrupted reply
    # came after it: the next audio is the answer to the barge-in, after the caller stopped speaking.
    assert clear.discarded_ms <= 100 + CHUNK_MS
    later = [m["at"] for m in record.received if m["event"] == "media" and m["at"] > clear.at]
    assert barge_in.ended_at is not None
    assert all(at > barge_in.ended_at for at in later)
    assert any(isinstance(e, BidiInterruptionEvent) for e in served.events)
    print(
        f"barge-in to silence at the caller: {(clear.at - barge_in.started_at) * 1000:.0f} ms "
        f"(heard {clear.heard_ms - barge_in.heard_ms_at_start:.0f} ms after speaking up; "
        f"truncated at {truncated} ms, heard {clear.heard_ms:.0f} ms)"
    )


async def test_dtmf_reaches_the_app_and_the_model_as_input(sim: OpenAIRealtimeSimulator, anyio_backend: str) -> None:
    async with phone_server(sim, anyio_backend) as served:
        with anyio.fail_after(30):
            async with served.carrier.call() as call:
                await call.press("7")
                await call.wait_heard(198)
    phone = served.calls[0]
    assert [d.digit for d in phone.digits] == ["7"]
    # The key went to the model as the caller's text, and the model's answer to it was heard.
    said = [m.text for m in served.agents[0].messages if isinstance(m, TextMessage) and m.role == "user"]
    assert said == ["The caller pressed 7 on the keypad."]
    assert any("pressed 7" in str(m.message) for m in sim.received)
    assert call.record.heard_ms >= 198


async def test_frames_the_bridge_cannot_use_are_counted_and_the_call_goes_on(
    sim: OpenAIRealtimeSimulator, anyio_backend: str
) -> None:
    async with phone_server(sim, anyio_backend) as served:
        with anyio.fail_after(30):
            async with served.carrier.call() as call:
                for frame in ["not json", '{"event": "media", "media": {"payload": "***"}}', '{"event": "mark"}']:
                    await call.send_raw(frame)
                call.say(tone_8k(400))
                await call.wait_heard(REPLY_MS - 1)
    assert served.calls[0].stream.protocol_errors == 3
    metrics = served.app.metrics.render().decode()
    assert 'bidi_web_errors_total{type="client_carrier_protocol"} 3.0' in metrics
