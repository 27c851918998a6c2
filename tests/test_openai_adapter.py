"""The OpenAI Realtime adapter end to end: BidiAgent -> adapter -> a real
WebSocket on 127.0.0.1 -> the simulator, on asyncio and Trio.

The simulator checks every message our client sends against the openai
package's own Param types (extra keys forbidden); the ``simulator`` fixture
fails a test whose client sent anything the oracle rejected.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario, ToolCall, loud, silence
from bidi_core import (
    BidiAgent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiProviderError,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ReconnectPolicy,
    tool,
)
from ports.events import BidiAudioInputEvent, BidiOutputEvent
from ports.io import AgentView, PlaybackReport
from tests.support import RecordingOutput, Texts, assert_no_secret, our_tasks, run_until

KEY = "sk-test-not-a-real-key-0123456789"
FAST_RETRY = ReconnectPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[OpenAIRealtimeSimulator]:
    marker = request.node.get_closest_marker("scenario")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    async with OpenAIRealtimeSimulator(api_key=KEY, **kwargs) as sim:
        yield sim
        assert sim.client_errors == [], "our client sent messages the service would reject"
        assert sim.oracle_failures == []


def model_for(sim: OpenAIRealtimeSimulator, **kwargs: Any) -> BidiOpenAIRealtimeModel:
    return BidiOpenAIRealtimeModel(api_key=KEY, base_url=sim.base_url, **kwargs)


def received_types(sim: OpenAIRealtimeSimulator, connection: int | None = None) -> list[str]:
    return [
        r.message.get("type")
        for r in sim.received
        if isinstance(r.message, dict) and (connection is None or r.connection == connection)
    ]


def user_texts(sim: OpenAIRealtimeSimulator) -> list[str]:
    texts = []
    for r in sim.received:
        m = r.message
        if isinstance(m, dict) and m.get("type") == "conversation.item.create":
            item = m["item"]
            if item.get("type") == "message" and item.get("role") == "user":
                texts += [c["text"] for c in item["content"] if c.get("type") == "input_text"]
    return texts


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


@tool
async def get_weather(location: str) -> str:
    """Weather for a place.

    Args:
        location: A city.
    """
    return f"sunny in {location}"


@pytest.mark.scenario(
    scenario=Scenario(
        rules=[
            Rule(
                text_contains="weather",
                reply=Reply(
                    tool_calls=[
                        ToolCall("get_weather", {"location": "Paris"}),
                        ToolCall("get_weather", {"location": "Oslo"}),
                    ]
                ),
            )
        ]
    )
)
async def test_parallel_tool_calls_get_one_response_create(simulator: OpenAIRealtimeSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator), tools=[get_weather])
    out = RecordingOutput()
    texts = Texts(["weather please"])
    await run_until(agent, [texts], [out, texts.observe], lambda: len(out.of(BidiResponseCompleteEvent)) >= 2)
    types = received_types(simulator)
    outputs = [i for i, t in enumerate(types) if t == "conversation.item.create"][1:]
    creates = [i for i, t in enumerate(types) if t == "response.create"]
    assert len(outputs) == 2
    # One response.create for the user's text, one after both outputs: never one per output.
    assert len(creates) == 2
    assert creates[1] > max(outputs)
    final = [t.text for t in out.of(BidiTranscriptStreamEvent) if t.is_final][-1]
    assert "sunny in Paris" in final
    assert "sunny in Oslo" in final
    assert [c.stop_reason for c in out.of(BidiResponseCompleteEvent)] == ["tool_use", "complete"]


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


@pytest.mark.scenario(scenario=Scenario(rules=[Rule(text_contains="drop", times=1, reply=Reply(drop=True))]))
async def test_abrupt_close_reconnects_with_history_and_loses_no_input(simulator: OpenAIRealtimeSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator), reconnect=FAST_RETRY)
    out = RecordingOutput()
    texts = Texts(["first", "please drop", "after the drop"])

    async def release_after_restart(event: BidiOutputEvent) -> None:
        if isinstance(event, BidiConnectionRestartEvent):
            texts.ready.set()  # the dropped turn never completes; the user goes on talking

    def done() -> bool:
        finals = [t.text for t in out.of(BidiTranscriptStreamEvent) if t.is_final and t.role == "assistant"]
        return any("after the drop" in f for f in finals)

    await run_until(agent, [texts], [out, texts.observe, release_after_restart], done)
    assert len(simulator.connections) == 2
    assert out.of(BidiConnectionRestartEvent)[0].reason == "connection_lost"
    # Every line reached the service exactly once, and the new connection was seeded with the history.
    seeded = [m for m in simulator.connections[1].received if m.get("type") == "conversation.item.create"]
    seeded_texts = [c.get("text") for m in seeded for c in m["item"].get("content", [])]
    assert "first" in seeded_texts
    assert "You said: first" in seeded_texts
    assert user_texts(simulator).count("after the drop") == 1


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


# ---------------------------------------------------------------- errors and secrets


async def test_wrong_key_is_a_provider_error_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-key-abcdefghijklmnop"
    async with OpenAIRealtimeSimulator(api_key=KEY) as sim:
        model = BidiOpenAIRealtimeModel(api_key=wrong, base_url=sim.base_url)
        out = RecordingOutput()
        with pytest.raises(BidiProviderError) as caught, anyio.fail_after(10):
            await BidiAgent(model=model, reconnect=FAST_RETRY).run(outputs=[out])
    assert len(sim.rejected) == 1  # not retried
    assert wrong not in str(caught.value)
    assert isinstance(out.events[-1], BidiConnectionCloseEvent)
    assert_no_secret(caplog, wrong)


async def test_key_never_logged_during_a_conversation(
    simulator: OpenAIRealtimeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    agent = BidiAgent(model=model_for(simulator))
    out = RecordingOutput()
    texts = Texts(["hello"])
    await run_until(agent, [texts], [out, texts.observe], lambda: bool(out.of(BidiResponseCompleteEvent)))
    assert caplog.records
    assert_no_secret(caplog, KEY)


async def test_unreachable_endpoint_retries_then_fails_with_a_connection_error() -> None:
    with anyio.fail_after(10):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # nothing listens there any more
    model = BidiOpenAIRealtimeModel(api_key=KEY, base_url=f"ws://127.0.0.1:{port}/v1")
    from bidi_core import BidiConnectionError

    with pytest.raises(BidiConnectionError), anyio.fail_after(10):
        await BidiAgent(model=model, reconnect=FAST_RETRY).run(outputs=[RecordingOutput()])
