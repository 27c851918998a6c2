"""The Gemini Live adapter end to end: BidiAgent -> adapter -> a real WebSocket
on 127.0.0.1 -> the Gemini simulator, on asyncio and Trio.

The simulator checks every client message against the provider's published
protobuf messages; the ``simulator`` fixture fails a test whose client sent
anything the oracle rejected. Plain ``ws://`` for speed; TLS where TLS is what
is tested.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.audio import BidiAudioIO
from adapters.gemini import BidiGeminiLiveModel
from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing import FakeAudioDevice
from adapters.testing.gemini_simulator import GeminiLiveSimulator, Reply, Rule, Scenario, ToolCall, loud, silence
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator
from adapters.testing.pytest_plugin import GEMINI_TEST_KEY, assert_gemini_simulator_clean, gemini_model_for
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
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ReconnectPolicy,
    tool,
)
from ports.events import BidiAudioInputEvent, BidiOutputEvent
from tests.support import RecordingOutput, Texts, finals, our_tasks, run_quickstart_offline, run_until

KEY = GEMINI_TEST_KEY
FAST_RETRY = ReconnectPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def simulator(gemini_sim: GeminiLiveSimulator) -> GeminiLiveSimulator:
    """The plugin's simulator (plain WebSocket unless ``@pytest.mark.scenario(tls=True)``); it must refuse
    nothing our client sends."""
    return gemini_sim


assert_oracle_clean = assert_gemini_simulator_clean


def model_for(sim: GeminiLiveSimulator, **kwargs: Any) -> BidiGeminiLiveModel:
    model: BidiGeminiLiveModel = gemini_model_for(sim, **kwargs)
    return model


def kinds(sim: GeminiLiveSimulator, connection: int) -> list[str]:
    """The oneof member of each client message on one connection."""
    return [next(iter(m)) for m in sim.connections[connection].received if isinstance(m, dict)]


def texts_in_state(sim: GeminiLiveSimulator) -> list[str]:
    return [value for kind, value in sim.user_inputs if kind == "text"]


class Mic:
    """Says ``audio`` once (when ``when`` is set, if given), then stays quiet."""

    def __init__(self, audio: bytes, when: anyio.Event | None = None, rate: int = 16000) -> None:
        self.audio, self.when, self.rate, self.said = audio, when, rate, False

    async def __call__(self) -> BidiAudioInputEvent:
        if self.said:
            await anyio.sleep_forever()
        if self.when is not None:
            await self.when.wait()
        self.said = True
        return BidiAudioInputEvent(self.audio, sample_rate=self.rate)


# ---------------------------------------------------------------- turns


async def test_text_turn(simulator: GeminiLiveSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator), system_prompt="Be brief.")
    out = RecordingOutput()
    texts = Texts(["hello there"])
    await run_until(agent, [texts], [out, texts.observe], lambda: bool(out.of(BidiResponseCompleteEvent)))
    assert isinstance(out.events[0], BidiConnectionStartEvent)
    assert len(out.of(BidiResponseStartEvent)) == 1
    audio = out.of(BidiAudioStreamEvent)
    assert audio
    assert {a.sample_rate for a in audio} == {24000}
    assert {a.response_id for a in audio} == {out.of(BidiResponseStartEvent)[0].response_id}
    assert finals(out) == ["You said: hello there"]
    usage = out.of(BidiUsageEvent)
    assert usage
    assert usage[0].total_tokens == usage[0].input_tokens + usage[0].output_tokens > 0
    assert out.of(BidiResponseCompleteEvent)[0].stop_reason == "complete"
    record = simulator.connections[0]
    assert record.setup is not None
    assert record.setup["model"] == "models/gemini-2.5-flash-native-audio-preview-09-2025"
    assert record.setup["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert record.setup["contextWindowCompression"] == {"slidingWindow": {}}
    assert kinds(simulator, 0) == ["setup", "realtimeInput"]
    assert record.received[1] == {"realtimeInput": {"text": "hello there"}}
    assert record.headers["x-goog-api-key"] == "<redacted>"  # sent, in the header
    assert our_tasks() == set()


@pytest.mark.scenario(
    scenario=Scenario(transcripts=["what time is it"], rules=[Rule(spoken_turn=0, reply=Reply(say="Noon."))])
)
async def test_audio_turn_through_server_vad(simulator: GeminiLiveSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator))
    out = RecordingOutput()
    await run_until(agent, [Mic(loud(600) + silence(900))], [out], lambda: bool(out.of(BidiResponseCompleteEvent)))
    assert finals(out, "user") == ["what time is it"]
    assert finals(out, "assistant") == ["Noon."]
    # The user's turn is final before the answer starts, as on OpenAI.
    user_final = next(e for e in out.events if isinstance(e, BidiTranscriptStreamEvent) and e.role == "user")
    assert out.events.index(user_final) < out.events.index(out.of(BidiResponseStartEvent)[0])
    assert out.of(BidiInterruptionEvent) == []  # speech while nothing played is no interruption
    audio_in = [m["realtimeInput"]["audio"] for m in simulator.connections[0].received if "realtimeInput" in m]
    assert {a["mimeType"] for a in audio_in} == {"audio/pcm;rate=16000"}


@pytest.mark.scenario(scenario=Scenario(rules=[Rule(spoken_turn=0, reply=Reply(say="Heard you."))]))
async def test_48k_input_is_sent_as_is_with_its_rate(simulator: GeminiLiveSimulator) -> None:
    model = model_for(simulator, provider_config={"audio": {"input_rate": 48000}})
    assert model.capabilities.input_audio.sample_rate == 48000
    agent = BidiAgent(model=model)
    out = RecordingOutput()
    mic = Mic(loud(600, rate=48000) + silence(900, rate=48000), rate=48000)
    await run_until(agent, [mic], [out], lambda: bool(out.of(BidiResponseCompleteEvent)))
    assert finals(out, "assistant") == ["Heard you."]
    audio_in = [m["realtimeInput"]["audio"] for m in simulator.connections[0].received if "realtimeInput" in m]
    assert {a["mimeType"] for a in audio_in} == {"audio/pcm;rate=48000"}


async def test_text_modality(simulator: GeminiLiveSimulator) -> None:
    model = model_for(simulator, provider_config={"response_modalities": ["TEXT"]})
    agent = BidiAgent(model=model)
    out = RecordingOutput()
    texts = Texts(["hi"])
    await run_until(agent, [texts], [out, texts.observe], lambda: bool(out.of(BidiResponseCompleteEvent)))
    assert out.of(BidiAudioStreamEvent) == []
    assert finals(out, "assistant") == ["You said: hi"]


@pytest.mark.scenario(tls=True)
async def test_tls_with_a_custom_ca(simulator: GeminiLiveSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator))
    out = RecordingOutput()
    texts = Texts(["over TLS"])
    await run_until(agent, [texts], [out, texts.observe], lambda: bool(out.of(BidiResponseCompleteEvent)))
    assert finals(out) == ["You said: over TLS"]


@pytest.mark.scenario(tls=True)
async def test_ssl_cert_file_is_honoured(simulator: GeminiLiveSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", simulator.ca_cert_pem_path)
    model = BidiGeminiLiveModel(api_key=KEY, base_url=simulator.ws_base_url)
    out = RecordingOutput()
    texts = Texts(["trusted by SSL_CERT_FILE"])
    await run_until(BidiAgent(model=model), [texts], [out, texts.observe], lambda: bool(finals(out)))
    assert finals(out) == ["You said: trusted by SSL_CERT_FILE"]


@pytest.mark.scenario(transparent_resumption=True)
async def test_vertex_configuration_speaks_the_same_protocol(simulator: GeminiLiveSimulator) -> None:
    """A Vertex-configured model (express mode: an API key) against the simulator's endpoint given in
    full: the model path, transparent resumption and the handle's message index are Vertex's."""
    model = BidiGeminiLiveModel(
        "gemini-live-2.5-flash",
        vertexai=True,
        project="proj",
        location="us-east1",
        api_key=KEY,
        base_url=simulator.url(),
    )
    out = RecordingOutput()
    texts = Texts(["from vertex"])
    await run_until(BidiAgent(model=model), [texts], [out, texts.observe], lambda: bool(finals(out)))
    setup = simulator.connections[0].setup
    assert setup is not None
    assert setup["model"] == "projects/proj/locations/us-east1/publishers/google/models/gemini-live-2.5-flash"
    assert setup["sessionResumption"] == {"transparent": True}


# ---------------------------------------------------------------- same events as OpenAI


def shape(events: list[BidiOutputEvent]) -> list[str]:
    """The response-level event sequence, with runs of audio/transcript deltas collapsed into one token
    (chunk sizes and interleaving differ between providers; their order relative to the rest must not)."""
    tokens: list[str] = []
    for event in events:
        if isinstance(event, BidiResponseStartEvent):
            token = "start"
        elif isinstance(event, BidiAudioStreamEvent):
            token = "content"
        elif isinstance(event, BidiTranscriptStreamEvent):
            token = "content" if not event.is_final else f"final:{event.role}"
        elif isinstance(event, BidiUsageEvent):
            token = "usage"
        elif isinstance(event, BidiResponseCompleteEvent):
            token = f"complete:{event.stop_reason}"
        elif isinstance(event, BidiToolUseEvent):
            token = f"tool_use:{event.name}"
        elif isinstance(event, BidiToolResultEvent):
            token = f"tool_result:{event.name}"
        else:
            continue
        if not (tokens and tokens[-1] == token == "content"):
            tokens.append(token)
    return tokens


@tool
async def get_weather(location: str) -> str:
    """Weather for a place.

    Args:
        location: A city.
    """
    return f"sunny in {location}"


async def run_text_scenario(model: Any, lines: list[str], responses: int) -> list[BidiOutputEvent]:
    agent = BidiAgent(model=model, tools=[get_weather])
    out = RecordingOutput()
    texts = Texts(lines)
    await run_until(agent, [texts], [out, texts.observe], lambda: len(out.of(BidiResponseCompleteEvent)) >= responses)
    return out.events


async def test_the_event_sequence_equals_openais_for_the_same_scenario() -> None:
    """A plain turn, then a turn with two parallel tool calls: the app sees the same events on both.

    Two differences are the providers' and are compared apart: when our own tools report their results
    (timing: OpenAI announces each call separately, so a fast tool may finish before the next call is
    announced), and usage, which Gemini reports once per turn at ``turnComplete`` and OpenAI once per
    response (so a tool-calling response has usage on OpenAI only). On both, usage comes right before
    the completion of the turn's last response.
    """
    from adapters.testing import openai_simulator as osim

    lines = ["hello", "weather in two cities"]
    calls = [ToolCall("get_weather", {"location": "Paris"}), ToolCall("get_weather", {"location": "Oslo"})]
    gemini_rules = [Rule(text_contains="weather", reply=Reply(tool_calls=calls))]
    openai_rules = [
        osim.Rule(
            text_contains="weather",
            reply=osim.Reply(tool_calls=[osim.ToolCall(c.name, dict(c.arguments)) for c in calls]),
        )
    ]
    async with GeminiLiveSimulator(api_key=KEY, tls=False, scenario=Scenario(rules=gemini_rules)) as sim:
        gemini = shape(await run_text_scenario(model_for(sim), lines, 3))
        assert_oracle_clean(sim)
    async with OpenAIRealtimeSimulator(api_key="sk-test-key", scenario=osim.Scenario(rules=openai_rules)) as osimu:
        openai_model = BidiOpenAIRealtimeModel(api_key="sk-test-key", base_url=osimu.base_url)
        openai = shape(await run_text_scenario(openai_model, lines, 3))

    def core(tokens: list[str]) -> list[str]:
        return [t for t in tokens if t != "usage" and not t.startswith("tool_result")]

    assert core(gemini) == core(openai)
    assert core(gemini) == [
        "start",
        "content",
        "final:assistant",
        "complete:complete",
        "start",
        "tool_use:get_weather",
        "tool_use:get_weather",
        "complete:tool_use",
        "start",
        "content",
        "final:assistant",
        "complete:complete",
    ]
    for tokens in (gemini, openai):
        ends = [i for i, t in enumerate(tokens) if t == "complete:complete"]
        assert [tokens[i - 1] for i in ends] == ["usage", "usage"]
        assert tokens.count("tool_result:get_weather") == 2


# ---------------------------------------------------------------- tools


@pytest.mark.scenario(
    scenario=Scenario(rules=[Rule(text_contains="slow", reply=Reply(tool_calls=[ToolCall("slow_lookup", {"q": "x"})]))])
)
async def test_tool_call_cancellation_cancels_the_tool_and_sends_nothing(simulator: GeminiLiveSimulator) -> None:
    started, cancelled = anyio.Event(), anyio.Event()

    @tool
    async def slow_lookup(q: str) -> str:
        """A lookup that takes forever.

        Args:
            q: What to look up.
        """
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return q

    agent = BidiAgent(model=model_for(simulator), tools=[slow_lookup])
    out = RecordingOutput()
    texts = Texts(["something slow"])
    mic = Mic(loud(400) + silence(700), when=started)  # the user speaks while the tool runs
    await run_until(agent, [texts, mic], [out, texts.observe], cancelled.is_set)
    sent = [m for m in simulator.connections[0].sent if "toolCallCancellation" in m]
    assert sent and sent[0]["toolCallCancellation"]["ids"] == [out.of(BidiToolUseEvent)[0].tool_use_id]
    await simulator.wait_until(lambda: len(simulator.connections[0].received) >= 3)
    assert not [m for m in simulator.connections[0].received if "toolResponse" in m]


@pytest.mark.parametrize("handle", ["resumed", "stale"])
async def test_a_tool_that_outlives_its_connection_answers_on_the_next(handle: str) -> None:
    """The connection drops while a tool runs; its result comes after the reconnect. The new session
    never issued that call (no handle is issued while calls are pending; a fresh session only has the
    history), so a toolResponse for it would be refused with 1007 and end the conversation."""
    scenario = Scenario(
        rules=[
            Rule(text_contains="weather", times=1, reply=Reply(tool_calls=[ToolCall("slow_weather", {"city": "Oslo"})]))
        ]
    )
    ttl = 0.0 if handle == "stale" else 600.0
    async with GeminiLiveSimulator(api_key=KEY, tls=False, scenario=scenario, handle_ttl_s=ttl) as sim:
        started, release = anyio.Event(), anyio.Event()

        @tool
        async def slow_weather(city: str) -> str:
            """Weather, slowly.

            Args:
                city: A city.
            """
            started.set()
            await release.wait()
            return f"rainy in {city}"

        agent = BidiAgent(model=model_for(sim), tools=[slow_weather], reconnect=FAST_RETRY)
        out = RecordingOutput()

        connections = 0

        async def release_when_reconnected(event: BidiOutputEvent) -> None:
            nonlocal connections
            if isinstance(event, BidiConnectionStartEvent):
                connections += 1
                if connections == 2:
                    release.set()

        async def drop_while_the_tool_runs() -> None:
            await started.wait()
            await sim.drop_all()

        async with anyio.create_task_group() as tg:
            tg.start_soon(drop_while_the_tool_runs)
            await run_until(
                agent,
                [Texts(["weather in Oslo?"])],
                [out, release_when_reconnected],
                lambda: any("rainy in Oslo" in f for f in finals(out, "assistant")),
            )
        assert_oracle_clean(sim)
    assert [c.close_code for c in sim.connections if c.close_code not in (None, 1007)] == []
    if handle == "stale":
        assert "resumption_rejected" in [r.reason for r in out.of(BidiConnectionRestartEvent)]
    first_call = out.of(BidiToolUseEvent)[0].tool_use_id
    later = [m for c in sim.connections[1:] for m in c.received]
    assert not [m for m in later if first_call in json.dumps(m.get("toolResponse", {}))]
    assert any("rainy in Oslo" in m.get("realtimeInput", {}).get("text", "") for m in later)


# ---------------------------------------------------------------- barge-in


@pytest.mark.scenario(
    scenario=Scenario(
        rules=[Rule(text_contains="story", reply=Reply(say="Once upon a time...", audio_ms=6000))],
        transcripts=["Stop, please."],
    )
)
async def test_speech_over_a_finished_answer_still_playing_silences_it(simulator: GeminiLiveSimulator) -> None:
    """Gemini generates faster than real time and reports barge-in only while
    generating. The user talks over an answer that is fully generated but
    still playing: the first words of the new user turn stop the playback."""
    speakers = BidiAudioIO(backend=FakeAudioDevice(pace=1.0))  # plays in real time, reports playback
    output = speakers.output()
    agent = BidiAgent(model=model_for(simulator))
    out = RecordingOutput()
    generated = anyio.Event()

    async def watch(event: BidiOutputEvent) -> None:
        if isinstance(event, BidiResponseCompleteEvent):
            generated.set()

    mic = Mic(loud(400) + silence(700), when=generated)
    inputs = [Texts(["tell me a story"]), mic]
    await run_until(agent, inputs, [output, out, watch], lambda: bool(out.of(BidiInterruptionEvent)))
    story = out.of(BidiResponseCompleteEvent)[0]
    assert story.stop_reason == "complete"  # the user spoke after it was fully generated...
    assert "serverContent.interrupted" not in simulator.connections[0].sent_kinds()  # ...so Gemini said nothing
    interruption = out.of(BidiInterruptionEvent)[0]
    assert (interruption.reason, interruption.response_id) == ("user_speech", story.response_id)
    assert output.stats.interruptions == 1
    assert output.stats.discarded_ms > 0  # the rest of the story was dropped, not played
    assert output.stats.played_ms < 6000


# ---------------------------------------------------------------- sessions without loss


@pytest.mark.scenario(
    go_away_lead_s=3.0,
    scenario=Scenario(
        rules=[Rule(text_contains="two", times=1, reply=Reply(say="Two, and goodbye soon.", go_away=True))]
    ),
)
async def test_go_away_rotates_at_the_turn_boundary_and_resumes(simulator: GeminiLiveSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator), reconnect=FAST_RETRY)
    out = RecordingOutput()
    lines = ["one", "two", "three", "four"]
    texts = Texts(lines)
    await run_until(agent, [texts], [out, texts.observe], lambda: len(finals(out, "assistant")) >= 4)
    assert out.of(BidiConnectionRestartEvent)[0].reason == "expiring"
    assert len(simulator.connections) == 2
    second = simulator.connections[1]
    assert second.resumed_handle  # resumed, not re-seeded
    assert "clientContent" not in kinds(simulator, 1)
    assert second.closed_by != "server"  # rotated before the service cut it
    assert texts_in_state(simulator) == lines  # every input exactly once, in order


# With transparent resumption each handle says which client message it covers, so an abrupt drop at any
# moment loses nothing and repeats nothing: hypothesis picks the moment (after how many inputs arrived)
# and whether the user waits for each answer. A last line, typed once the new connection is up, proves
# every replay was sent before it (the send queue is in order), so the state's list is complete.
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drop_after=st.integers(min_value=0, max_value=5), pace=st.booleans())
async def test_abrupt_drop_at_any_moment_loses_and_repeats_nothing(drop_after: int, pace: bool) -> None:
    lines = [f"line {i}" for i in range(6)]
    async with GeminiLiveSimulator(api_key=KEY, tls=False, transparent_resumption=True) as sim:
        model = model_for(sim, provider_config={"session_resumption": {"transparent": True}})
        agent = BidiAgent(model=model, reconnect=FAST_RETRY)
        user = PacedUser(lines, pace=pace)

        async def drop_once() -> None:
            await sim.wait_until(lambda: bool(sim.connections) and len(texts_in_state(sim)) >= drop_after)
            await sim.drop_all()

        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, [user], [user.observe])
            tg.start_soon(drop_once)
            await sim.wait_until(lambda: PacedUser.LAST in texts_in_state(sim), limit_s=15)
            state = texts_in_state(sim)
            agent.request_stop()
        assert state == [*lines, PacedUser.LAST]
        assert len(sim.connections) >= 2  # resumed, or fresh when the drop came before the first handle
        assert_oracle_clean(sim)


class PacedUser:
    """Types ``lines`` (each after the previous answer, or all at once), then one last line once a
    second connection is up."""

    LAST = "the last line"

    def __init__(self, lines: list[str], *, pace: bool) -> None:
        self.lines = list(lines)
        self.pace = pace
        self.answered = anyio.Event()
        self.answered.set()
        self.reconnected = anyio.Event()
        self.done = False

    async def __call__(self) -> str:
        if self.lines:
            if self.pace:
                await self.answered.wait()
                self.answered = anyio.Event()
            return self.lines.pop(0)
        await self.reconnected.wait()
        if self.done:
            await anyio.sleep_forever()
        self.done = True
        return self.LAST

    async def observe(self, event: BidiOutputEvent) -> None:
        if isinstance(event, BidiResponseCompleteEvent) and event.stop_reason == "complete":
            self.answered.set()
        if isinstance(event, BidiConnectionRestartEvent):
            self.answered.set()  # a drop may have taken the answer with it
        if isinstance(event, BidiConnectionStartEvent) and event.connection_id != self.first_connection:
            self.reconnected.set()
        if isinstance(event, BidiConnectionStartEvent) and not self.first_connection:
            self.first_connection = event.connection_id

    first_connection = ""


@pytest.mark.scenario(
    handle_ttl_s=0.0, scenario=Scenario(rules=[Rule(text_contains="drop", times=1, reply=Reply(drop=True))])
)
async def test_a_stale_handle_falls_back_to_a_fresh_session_with_the_history(simulator: GeminiLiveSimulator) -> None:
    agent = BidiAgent(model=model_for(simulator), reconnect=FAST_RETRY)
    out = RecordingOutput()
    texts = Texts(["remember me", "now drop", "still there?"])

    async def release_after_restart(event: BidiOutputEvent) -> None:
        if isinstance(event, BidiConnectionRestartEvent):
            texts.ready.set()

    await run_until(
        agent,
        [texts],
        [out, texts.observe, release_after_restart],
        lambda: any("still there?" in f for f in finals(out, "assistant")),
    )
    reasons = [r.reason for r in out.of(BidiConnectionRestartEvent)]
    assert "resumption_rejected" in reasons
    rejected = [c for c in simulator.connections if c.close_code == 1007]
    assert rejected and rejected[0].resumed_handle
    fresh = simulator.connections[-1]
    assert fresh.resumed_handle is None
    seeded = [m["clientContent"] for m in fresh.received if "clientContent" in m]
    assert seeded and seeded[0]["turns"][0] == {"role": "user", "parts": [{"text": "remember me"}]}
    assert "turnComplete" not in seeded[0]  # seeding the history must not make the model answer it


# ---------------------------------------------------------------- close codes, errors, secrets


@pytest.mark.parametrize(
    ("code", "error_code"), [(1007, "invalid_argument"), (1008, "policy_violation")], ids=["1007", "1008"]
)
async def test_fatal_close_codes_end_the_conversation_with_the_reason(code: int, error_code: str) -> None:
    scenario = Scenario(rules=[Rule(text_contains="fail", reply=Reply(close=(code, "Request contains an invalid x.")))])
    async with GeminiLiveSimulator(api_key=KEY, tls=False, scenario=scenario) as sim:
        out = RecordingOutput()
        agent = BidiAgent(model=model_for(sim), reconnect=FAST_RETRY)
        with pytest.raises(BidiProviderError) as caught, anyio.fail_after(10):
            await agent.run([Texts(["please fail"])], [out])
        assert_oracle_clean(sim)
    assert caught.value.code == error_code
    assert caught.value.retryable is False
    assert "Request contains an invalid x." in str(caught.value)
    assert len(sim.connections) == 1  # not retried
    assert isinstance(out.events[-1], BidiConnectionCloseEvent)


@pytest.mark.parametrize("fault", ["1011", "drop"])
async def test_retryable_faults_reconnect(fault: str) -> None:
    reply = Reply(close=(1011, "Internal error occurred.")) if fault == "1011" else Reply(drop=True)
    scenario = Scenario(rules=[Rule(text_contains="fault", times=1, reply=reply)])
    async with GeminiLiveSimulator(api_key=KEY, tls=False, scenario=scenario) as sim:
        agent = BidiAgent(model=model_for(sim), reconnect=FAST_RETRY)
        out = RecordingOutput()
        texts = Texts(["a fault now", "and then?"])

        async def release_after_restart(event: BidiOutputEvent) -> None:
            if isinstance(event, BidiConnectionRestartEvent):
                texts.ready.set()

        await run_until(agent, [texts], [out, texts.observe, release_after_restart], lambda: bool(finals(out)))
        assert finals(out) == ["You said: and then?"]
        assert len(sim.connections) == 2
        assert sim.connections[1].resumed_handle
        assert_oracle_clean(sim)


async def test_go_away_while_idle_rotates_at_once_and_resumes() -> None:
    """goAway with nothing in progress: the core rotates now (a turn boundary), resuming with the handle.
    (The session ending on the service's close 1000 is tested in test_gemini_session_robustness.py.)"""
    async with GeminiLiveSimulator(api_key=KEY, tls=False, go_away_lead_s=5.0) as sim:
        agent = BidiAgent(model=model_for(sim), reconnect=FAST_RETRY)
        out = RecordingOutput()

        async def go_away_when_connected(event: BidiOutputEvent) -> None:
            if isinstance(event, BidiConnectionStartEvent) and len(sim.connections) == 1:
                await sim.wait_until(lambda: bool(sim.connections[0].sent[1:]))  # the first handle went out
                await sim.go_away_all()

        await run_until(agent, [], [out, go_away_when_connected], lambda: len(out.of(BidiConnectionStartEvent)) >= 2)
        assert out.of(BidiConnectionRestartEvent)[0].reason == "expiring"
        assert sim.connections[0].closed_by == "client"  # long before the service's cut
        assert sim.connections[1].resumed_handle
        assert_oracle_clean(sim)


async def test_many_connection_lifetimes_lose_and_repeat_nothing() -> None:
    """Connections that last a fraction of a second, each ended by goAway and the service's cut: a long
    conversation crosses several of them (transparent mode, so even a cut mid-turn loses nothing)."""
    lines = [f"line {i}" for i in range(10)]
    async with GeminiLiveSimulator(
        api_key=KEY,
        tls=False,
        transparent_resumption=True,
        connection_lifetime_s=0.25,
        go_away_lead_s=0.1,
        speedup=10.0,  # an answer takes about 0.1 s: the conversation spans several connections
    ) as sim:
        model = model_for(sim, provider_config={"session_resumption": {"transparent": True}})
        agent = BidiAgent(model=model, reconnect=FAST_RETRY)
        user = PacedUser(lines, pace=True)
        user.reconnected.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.run, [user], [user.observe])
            await sim.wait_until(lambda: PacedUser.LAST in texts_in_state(sim) and len(sim.connections) >= 3, 15)
            state = texts_in_state(sim)  # now: stopping may leave a rotation half done, its replays unsent
            agent.request_stop()
        assert state == [*lines, PacedUser.LAST]
        assert all(c.resumed_handle for c in sim.connections[1:])
        typed_on = [c.index for c in sim.connections if any("realtimeInput" in m for m in c.received)]
        assert len(typed_on) >= 3
        assert_oracle_clean(sim)


# ---------------------------------------------------------------- the example


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_gemini_quickstart_runs_offline(backend: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_API_KEY", "GEMINI_API_KEY")}
    lines = run_quickstart_offline("gemini_quickstart", backend, tmp_path / "reply.wav", env)
    assert any(line.startswith("No GOOGLE_API_KEY") for line in lines)
