"""The OpenAI Realtime adapter end to end: BidiAgent -> adapter -> a real
WebSocket on 127.0.0.1 -> the simulator, on asyncio and Trio.

The simulator checks every message our client sends against the openai
package's own Param types (extra keys forbidden); the ``simulator`` fixture
fails a test whose client sent anything the oracle rejected.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario, loud, silence
from adapters.testing.pytest_plugin import OPENAI_TEST_KEY, openai_model_for
from bidi_core import (
    BidiAgent,
    BidiAudioStreamEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ReconnectPolicy,
)
from ports.events import BidiAudioInputEvent, BidiOutputEvent
from ports.io import AgentView, PlaybackReport
from tests.support import RecordingOutput, Texts, our_tasks, run_until

KEY = OPENAI_TEST_KEY
FAST_RETRY = ReconnectPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def simulator(openai_sim: OpenAIRealtimeSimulator) -> OpenAIRealtimeSimulator:
    """The plugin's simulator (``@pytest.mark.scenario(...)``); it must refuse nothing our client sends."""
    return openai_sim


def model_for(sim: OpenAIRealtimeSimulator, **kwargs: Any) -> BidiOpenAIRealtimeModel:
    model: BidiOpenAIRealtimeModel = openai_model_for(sim, **kwargs)
    return model


# ---------------------------------------------------------------- turns


async def test_text_turn(simulator: OpenAIRealtimeSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator), system_prompt="Be brief.")
    out = RecordingOutput()
    texts = Texts(["hello there"])
    await run_until(agent, [texts], [out, texts.observe], lambda: bool(out.of(BidiResponseCompleteEvent)))
    assert isinstance(out.events[0], BidiConnectionStartEvent)
    assert len(out.of(BidiResponseStartEvent)) == 1
    audio = out.of(BidiAudioStreamEvent)
    assert audio
    assert {a.sample_rate for a in audio} == {24000}
    assert all(50 <= a.duration_ms <= 150 for a in audio)
    finals = [t for t in out.of(BidiTranscriptStreamEvent) if t.is_final]
    assert [t.text for t in finals] == ["You said: hello there"]
    assert out.of(BidiUsageEvent)
    assert out.of(BidiResponseCompleteEvent)[0].stop_reason == "complete"
    session = simulator.connections[0].received[0]
    assert session["type"] == "session.update"
    assert session["session"]["instructions"] == "Be brief."
    assert our_tasks() == set()


@pytest.mark.scenario(
    scenario=Scenario(transcripts=["what time is it"], rules=[Rule(spoken_turn=0, reply=Reply(say="Noon."))])
)
async def test_audio_turn_through_server_vad(simulator: OpenAIRealtimeSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator))
    out = RecordingOutput()
    speech = loud(600) + silence(900)

    class Mic:
        sent = False

        async def __call__(self) -> BidiAudioInputEvent:
            if Mic.sent:
                await anyio.sleep_forever()
            Mic.sent = True
            return BidiAudioInputEvent(speech, sample_rate=24000)

    await run_until(agent, [Mic()], [out], lambda: bool(out.of(BidiResponseCompleteEvent)))
    finals = [(t.role, t.text) for t in out.of(BidiTranscriptStreamEvent) if t.is_final]
    assert ("user", "what time is it") in finals
    assert ("assistant", "Noon.") in finals
    # Speech while nothing was playing is not an interruption.
    assert out.of(BidiInterruptionEvent) == []


# ---------------------------------------------------------------- barge-in


class SlowSpeaker(RecordingOutput):
    """An output that plays audio slower than it arrives: it reports having
    played ``plays_ms`` of each response, however much it received."""

    reports_playback = True

    def __init__(self, plays_ms: float) -> None:
        super().__init__()
        self.plays_ms = plays_ms
        self.audio_started = anyio.Event()
        self.agent: AgentView | None = None

    async def start(self, agent: AgentView) -> None:
        self.agent = agent

    async def __call__(self, event: BidiOutputEvent) -> None:
        await super().__call__(event)
        if isinstance(event, BidiAudioStreamEvent) and event.response_id:
            received = sum(e.duration_ms for e in self.of(BidiAudioStreamEvent) if e.response_id == event.response_id)
            assert self.agent is not None
            self.agent.report_playback(PlaybackReport(event.response_id, min(self.plays_ms, received)))
            if received >= 400:
                self.audio_started.set()


@pytest.mark.parametrize("speedup", [None, 4.0], ids=["response-done-first", "response-in-flight"])
async def test_barge_in_truncates_to_what_was_played(speedup: float | None) -> None:
    scenario = Scenario(rules=[Rule(text_contains="story", reply=Reply(say="Once upon a time", audio_ms=8000))])
    async with OpenAIRealtimeSimulator(api_key=KEY, scenario=scenario, speedup=speedup) as sim:
        agent = BidiAgent(model=model_for(sim))
        speaker = SlowSpeaker(plays_ms=320)
        texts = Texts(["tell me a story"])

        class Mic:
            async def __call__(self) -> BidiAudioInputEvent:
                await speaker.audio_started.wait()
                await speaker.audio_started.wait()  # then talk over the assistant
                if getattr(self, "done", False):
                    await anyio.sleep_forever()
                self.done = True
                return BidiAudioInputEvent(loud(400) + silence(100), sample_rate=24000)

        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, [texts, Mic()], [speaker])
            with anyio.fail_after(10):
                await sim.wait_until(lambda: bool(sim.truncations))
            agent.request_stop()
        assert sim.client_errors == []
    interruption = speaker.of(BidiInterruptionEvent)[0]
    assert sim.truncations[0].audio_end_ms == 320
    # Nothing of the interrupted response reached the speaker after the interruption.
    after = speaker.events[speaker.events.index(interruption) :]
    assert not [e for e in after if isinstance(e, BidiAudioStreamEvent) and e.response_id == interruption.response_id]


# ---------------------------------------------------------------- reconnects


async def test_session_limit_rotates_at_a_turn_boundary() -> None:
    async with OpenAIRealtimeSimulator(api_key=KEY) as sim:
        agent = BidiAgent(model=model_for(sim, max_connection_s=1.0), reconnect=FAST_RETRY)
        out = RecordingOutput()
        texts = Texts(["one"])
        await run_until(agent, [texts], [out, texts.observe], lambda: len(out.of(BidiConnectionStartEvent)) >= 2)
        restart = out.of(BidiConnectionRestartEvent)
        assert restart[0].reason == "expiring"
        assert len(sim.connections) == 2
        assert sim.client_errors == []


@pytest.mark.scenario(session_limit_s=0.5)
async def test_service_session_expiry_reconnects(simulator: OpenAIRealtimeSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator, max_connection_s=None), reconnect=FAST_RETRY)
    out = RecordingOutput()
    await run_until(agent, [], [out], lambda: len(out.of(BidiConnectionStartEvent)) >= 2)
    assert out.of(BidiConnectionRestartEvent)[0].reason == "connection_lost"
