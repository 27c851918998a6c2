"""What every provider adapter does, tested once for the three, end to end against their simulators.

BidiAgent -> adapter -> the provider's simulator on 127.0.0.1, for OpenAI
Realtime, Gemini Live and Nova Sonic, on asyncio and Trio: a tool round trip,
barge-in, a dropped connection that loses and repeats no input, an endpoint
that does not answer, bad ``provider_config`` refused before connecting, wrong
credentials refused without retrying, and no secret in any log. The
simulators speak one scenario language (``adapters.testing._simulator_kit``),
so a test scripts the model once; a :class:`Provider` says how to start that
provider's simulator, build its model, read what the service received, and
what only that provider's wire shows (each check named for its provider).
What one provider alone does stays in its own test files.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from botocore.credentials import Credentials

from adapters.gemini import BidiGeminiLiveModel
from adapters.nova_sonic import BidiNovaSonicModel, NovaSonicProviderError
from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing import gemini_simulator, nova_sonic_simulator, openai_simulator
from adapters.testing.pytest_plugin import (
    GEMINI_TEST_KEY,
    NOVA_TEST_ACCESS_KEY,
    NOVA_TEST_SECRET_KEY,
    OPENAI_TEST_KEY,
    assert_gemini_simulator_clean,
    assert_nova_sonic_simulator_clean,
    assert_openai_simulator_clean,
)
from bidi_core import (
    BidiAgent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionError,
    BidiConnectionRestartEvent,
    BidiInterruptionEvent,
    BidiProviderError,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiToolUseEvent,
    BidiUsageError,
    ReconnectPolicy,
    tool,
)
from ports.events import BidiAudioInputEvent, BidiOutputEvent
from ports.model import BidiModel
from tests.support import RecordingOutput, Texts, assert_no_aws_secret, assert_no_secret, finals, run_until

FAST_RETRY = ReconnectPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)
OPENAI_KEY = OPENAI_TEST_KEY
GEMINI_KEY = GEMINI_TEST_KEY
AKID = NOVA_TEST_ACCESS_KEY
NOVA_SECRET = NOVA_TEST_SECRET_KEY
NOVA_TOKEN = "session-token-0123456789"


@attrs.frozen
class Provider:
    """One provider as the common tests see it: its simulator, its model and what its wire shows."""

    name: str
    sim: Any  # the simulator's module: Scenario, Rule, Reply, ToolCall, loud, silence and the simulator class
    input_rate: int
    secrets: tuple[str, ...]
    start: Callable[..., Any]  # (**simulator options) -> the simulator, an async context manager
    model: Callable[..., BidiModel]  # (simulator, **model options) -> a model connected to it
    model_class: Callable[..., BidiModel]  # (provider_config=...) -> a model, no simulator needed
    dead_model: Callable[[int], BidiModel]  # a model for a port nothing listens on
    wrong_model: Callable[[Any], tuple[BidiModel, str]]  # a model with wrong credentials, and the wrong secret
    clean: Callable[[Any], None]  # asserts the service refused nothing our client sent
    typed_texts: Callable[[Any], list[str]]  # the user's typed lines the service took as new input, in order
    tool_results: Callable[[Any], dict[str, str]]  # call id -> the result the service received
    tool_stops: tuple[str, ...] = ("tool_use",)  # how the responses of a turn with two calls end
    checks: dict[str, Callable[..., None]] = attrs.field(factory=dict)  # what only this provider's wire shows

    def check(self, what: str, *args: Any) -> None:
        if what in self.checks:
            self.checks[what](*args)

    def assert_no_secret(self, caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
        if self.name == "nova_sonic":
            assert_no_aws_secret(caplog, *secrets)  # the stronger check: hpack's Huffman-coded logs, signatures
        else:
            for secret in secrets:
                assert_no_secret(caplog, secret)


# ---------------------------------------------------------------- OpenAI Realtime


def _openai_typed(sim: Any) -> list[str]:
    """User texts of ``conversation.item.create`` events answered by the ``response.create`` right after them
    (a seeded history item is not followed by one)."""
    typed: list[str] = []
    for record in sim.connections:
        messages = [m for m in record.received if isinstance(m, dict)]
        for message, after in zip(messages, [*messages[1:], {}][: len(messages)], strict=True):
            item = message.get("item", {})
            answered = message.get("type") == "conversation.item.create" and after.get("type") == "response.create"
            if answered and item.get("type") == "message" and item.get("role") == "user":
                typed += [c["text"] for c in item["content"] if c.get("type") == "input_text"]
    return typed


def _openai_tool_results(sim: Any) -> dict[str, str]:
    items = [r.message.get("item", {}) for r in sim.received if isinstance(r.message, dict)]
    return {i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"}


def _openai_one_response_create_after_the_outputs(sim: Any) -> None:
    types = [r.message.get("type") for r in sim.received if isinstance(r.message, dict)]
    outputs = [i for i, t in enumerate(types) if t == "conversation.item.create"][1:]
    creates = [i for i, t in enumerate(types) if t == "response.create"]
    assert len(outputs) == 2
    # One response.create for the user's text, one after both outputs: never one per output.
    assert len(creates) == 2
    assert creates[1] > max(outputs)


def _openai_seeded_with_the_history(sim: Any) -> None:
    seeded = [m for m in sim.connections[1].received if m.get("type") == "conversation.item.create"]
    seeded_texts = [c.get("text") for m in seeded for c in m["item"].get("content", [])]
    assert "first" in seeded_texts
    assert "You said: first" in seeded_texts


def _openai_wrong_model(sim: Any) -> tuple[BidiModel, str]:
    wrong = "sk-wrong-key-abcdefghijklmnop"
    return BidiOpenAIRealtimeModel(api_key=wrong, base_url=sim.base_url), wrong


def _openai_refused_once(sim: Any, error: BidiProviderError) -> None:
    assert len(sim.rejected) == 1  # not retried


OPENAI = Provider(
    name="openai",
    sim=openai_simulator,
    input_rate=24000,
    secrets=(OPENAI_KEY,),
    start=lambda **kw: openai_simulator.OpenAIRealtimeSimulator(api_key=OPENAI_KEY, **kw),
    model=lambda sim, **kw: BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=sim.base_url, **kw),
    model_class=lambda **kw: BidiOpenAIRealtimeModel(api_key="sk-test", **kw),
    dead_model=lambda port: BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=f"ws://127.0.0.1:{port}/v1"),
    wrong_model=_openai_wrong_model,
    clean=assert_openai_simulator_clean,
    typed_texts=_openai_typed,
    tool_results=_openai_tool_results,
    checks={
        "tools": _openai_one_response_create_after_the_outputs,
        "reconnected": _openai_seeded_with_the_history,
        "refused": _openai_refused_once,
    },
)


# ---------------------------------------------------------------- Gemini Live


def _gemini_responses(sim: Any) -> list[dict[str, Any]]:
    return [
        r
        for c in sim.connections
        for m in c.received
        if isinstance(m, dict) and "toolResponse" in m
        for r in m["toolResponse"]["functionResponses"]
    ]


def _gemini_answered_by_id_and_name(sim: Any, uses: list[BidiToolUseEvent]) -> None:
    responses = _gemini_responses(sim)
    assert sorted((r["id"], r["name"]) for r in responses) == sorted((u.tool_use_id, "get_weather") for u in uses)
    assert sorted(r["response"]["output"] for r in responses) == ["sunny in Oslo", "sunny in Paris"]


def _gemini_interrupted(sim: Any) -> None:
    assert "serverContent.interrupted" in sim.connections[0].sent_kinds()


def _gemini_resumed(sim: Any) -> None:
    assert sim.connections[1].resumed_handle


def _gemini_refused_once(sim: Any, error: BidiProviderError) -> None:
    assert len(sim.connections) == 1  # not retried
    assert error.retryable is False
    assert "API key not valid" in str(error)


def _gemini_logged(sim: Any, agent: BidiAgent, caplog: pytest.LogCaptureFixture) -> None:
    assert any(r.name.startswith("bidi_core.adapters.gemini") for r in caplog.records)
    assert GEMINI_KEY not in repr(agent.model)


GEMINI = Provider(
    name="gemini",
    sim=gemini_simulator,
    input_rate=16000,
    secrets=(GEMINI_KEY,),
    start=lambda **kw: gemini_simulator.GeminiLiveSimulator(api_key=GEMINI_KEY, **{"tls": False, **kw}),
    model=lambda sim, **kw: BidiGeminiLiveModel(api_key=GEMINI_KEY, base_url=sim.ws_base_url, **kw),
    model_class=lambda **kw: BidiGeminiLiveModel(api_key=GEMINI_KEY, **kw),
    dead_model=lambda port: BidiGeminiLiveModel(api_key=GEMINI_KEY, base_url=f"ws://127.0.0.1:{port}"),
    wrong_model=lambda sim: (
        BidiGeminiLiveModel(api_key="AIza-wrong-key-abcdefghijklmnop", base_url=sim.ws_base_url),
        "AIza-wrong-key-abcdefghijklmnop",
    ),
    clean=assert_gemini_simulator_clean,
    typed_texts=lambda sim: [value for kind, value in sim.user_inputs if kind == "text"],
    tool_results=lambda sim: {r["id"]: r["response"]["output"] for r in _gemini_responses(sim)},
    checks={
        "tools": lambda sim: None,
        "tool_ids": _gemini_answered_by_id_and_name,
        "interrupted": _gemini_interrupted,
        "reconnected": _gemini_resumed,
        "refused": _gemini_refused_once,
        "logged": _gemini_logged,
    },
)


# ---------------------------------------------------------------- Nova Sonic


def _nova_model(sim: Any, **kwargs: Any) -> BidiModel:
    kwargs.setdefault("credentials", Credentials(AKID, NOVA_SECRET, NOVA_TOKEN))
    return BidiNovaSonicModel(endpoint_url=sim.endpoint_url, region="us-east-1", verify=sim.ca_cert_pem_path, **kwargs)


class _Static:
    """Credentials that are never looked up (a model that only validates its config)."""

    def get_frozen_credentials(self) -> Credentials:
        return Credentials(AKID, NOVA_SECRET)


def _nova_tool_schema_is_a_string(sim: Any) -> None:
    prompt = sim.streams[0].events[1]["event"]["promptStart"]
    assert isinstance(prompt["toolConfiguration"]["tools"][0]["toolSpec"]["inputSchema"]["json"], str)


def _nova_says_the_results_as_received(sim: Any, final: str) -> None:
    results = [i[2] for i in sim.user_inputs if i[0] == "tool_result"]
    assert sorted(results) == ['{"result": "sunny in Oslo"}', '{"result": "sunny in Paris"}']
    assert final == f"It is {'; '.join(results)}."


def _nova_seeded_with_the_history(sim: Any) -> None:
    history = [i[1:] for i in sim.user_inputs if i[0] == "history"]
    assert any(role == "USER" and "first" in text.split("\n") for role, text in history)  # Nova merges a role's turns
    assert ("ASSISTANT", "You said: first") in history


def _nova_wrong_model(sim: Any) -> tuple[BidiModel, str]:
    wrong = "wrong-secret-key-0000000000000000"
    return _nova_model(sim, credentials=Credentials(AKID, wrong, NOVA_TOKEN)), wrong


def _nova_refused_once(sim: Any, error: BidiProviderError) -> None:
    assert len(sim.refused) == 1  # not retried
    assert sim.refused[0].status == 403
    assert sim.schema_failures == []
    assert isinstance(error, NovaSonicProviderError) and not error.retryable
    assert error.request_id and error.request_id in str(error)


NOVA_SONIC = Provider(
    name="nova_sonic",
    sim=nova_sonic_simulator,
    input_rate=16000,
    secrets=(NOVA_SECRET, NOVA_TOKEN),
    start=lambda **kw: nova_sonic_simulator.NovaSonicSimulator(
        credentials={AKID: NOVA_SECRET}, session_tokens={AKID: NOVA_TOKEN}, **kw
    ),
    model=_nova_model,
    model_class=lambda **kw: BidiNovaSonicModel(region="us-east-1", credentials=_Static(), **kw),
    dead_model=lambda port: BidiNovaSonicModel(
        endpoint_url=f"https://127.0.0.1:{port}", region="us-east-1", credentials=Credentials(AKID, NOVA_SECRET)
    ),
    wrong_model=_nova_wrong_model,
    clean=assert_nova_sonic_simulator_clean,
    typed_texts=lambda sim: [i[1] for i in sim.user_inputs if i[0] == "text"],
    tool_results=lambda sim: {i[1]: i[2] for i in sim.user_inputs if i[0] == "tool_result"},
    tool_stops=("tool_use", "tool_use"),  # Nova: one response per assistant turn, and each tool use ends one
    checks={
        "tools": _nova_tool_schema_is_a_string,
        "tool_final": _nova_says_the_results_as_received,
        "reconnected": _nova_seeded_with_the_history,
        "refused": _nova_refused_once,
    },
)

PROVIDERS = [OPENAI, GEMINI, NOVA_SONIC]


@pytest.fixture(params=PROVIDERS, ids=[p.name for p in PROVIDERS])
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param  # type: ignore[no-any-return]


@asynccontextmanager
async def simulator(provider: Provider, **options: Any) -> AsyncIterator[Any]:
    """The provider's simulator; on the way out, it must have refused nothing our client sent."""
    async with provider.start(**options) as sim:
        yield sim
        provider.clean(sim)


# ---------------------------------------------------------------- tools


@tool
async def get_weather(location: str) -> str:
    """Weather for a place.

    Args:
        location: A city.
    """
    return f"sunny in {location}"


async def test_a_tool_round_trip(provider: Provider) -> None:
    """Two calls in one turn: each runs, each result reaches the service under its call id, then the answer."""
    s = provider.sim
    calls = [
        s.ToolCall("get_weather", {"location": "Paris"}, "call-1"),
        s.ToolCall("get_weather", {"location": "Oslo"}, "call-2"),
    ]
    scenario = s.Scenario(
        rules=[
            s.Rule(text_contains="weather", reply=s.Reply(tool_calls=calls)),
            s.Rule(tool_result_for="get_weather", reply=s.Reply(say="It is {result}.")),
        ]
    )
    async with simulator(provider, scenario=scenario) as sim:
        agent = BidiAgent(model=provider.model(sim), tools=[get_weather])
        out = RecordingOutput()
        texts = Texts(["weather please"])

        def answered() -> bool:
            completed = any(c.stop_reason == "complete" for c in out.of(BidiResponseCompleteEvent))
            return completed and bool(finals(out, "assistant"))  # Nova's final text comes after the audio's end

        await run_until(agent, [texts], [out, texts.observe], answered)
        uses = out.of(BidiToolUseEvent)
        assert sorted((u.tool_use_id, u.name, dict(u.input)) for u in uses) == [
            ("call-1", "get_weather", {"location": "Paris"}),
            ("call-2", "get_weather", {"location": "Oslo"}),
        ]
        results = provider.tool_results(sim)
        assert sorted(results) == ["call-1", "call-2"]
        assert "sunny in Paris" in results["call-1"] and "sunny in Oslo" in results["call-2"]
        final = finals(out, "assistant")[-1]
        assert final.startswith("It is ")
        assert "sunny in Paris" in final and "sunny in Oslo" in final
        assert [c.stop_reason for c in out.of(BidiResponseCompleteEvent)] == [*provider.tool_stops, "complete"]
        provider.check("tools", sim)
        provider.check("tool_ids", sim, uses)
        provider.check("tool_final", sim, final)


# ---------------------------------------------------------------- barge-in


class Mic:
    """Says ``audio`` once ``when`` is set, then stays quiet."""

    def __init__(self, audio: bytes, when: anyio.Event, rate: int) -> None:
        self.audio, self.when, self.rate, self.said = audio, when, rate, False

    async def __call__(self) -> BidiAudioInputEvent:
        if self.said:
            await anyio.sleep_forever()
        await self.when.wait()
        self.said = True
        return BidiAudioInputEvent(self.audio, sample_rate=self.rate)


async def test_barge_in_interrupts_the_answer_and_drops_its_late_audio(provider: Provider) -> None:
    s = provider.sim
    scenario = s.Scenario(rules=[s.Rule(text_contains="story", reply=s.Reply(say="Once upon a time", audio_ms=8000))])
    async with simulator(provider, scenario=scenario, speedup=4.0) as sim:
        agent = BidiAgent(model=provider.model(sim))
        audio_flowing = anyio.Event()

        class Speaker(RecordingOutput):
            async def __call__(self, event: BidiOutputEvent) -> None:
                await super().__call__(event)
                if sum(a.duration_ms for a in self.of(BidiAudioStreamEvent)) >= 400:
                    audio_flowing.set()

        speaker = Speaker()
        rate = provider.input_rate
        mic = Mic(s.loud(400, **_at(provider)) + s.silence(700, **_at(provider)), audio_flowing, rate)

        def interrupted() -> bool:  # and the interrupted response completed (Nova completes it after its marker)
            return bool(speaker.of(BidiInterruptionEvent)) and len(speaker.of(BidiResponseCompleteEvent)) >= 1

        await run_until(agent, [Texts(["tell me a story"]), mic], [speaker], interrupted)
        interruption = speaker.of(BidiInterruptionEvent)[0]
        assert interruption.reason == "user_speech"
        first = speaker.of(BidiResponseStartEvent)[0].response_id
        assert interruption.response_id == first
        completes = [c for c in speaker.of(BidiResponseCompleteEvent) if c.response_id == first]
        assert [c.stop_reason for c in completes] == ["interrupted"]
        after = speaker.events[speaker.events.index(interruption) :]
        assert not [e for e in after if isinstance(e, BidiAudioStreamEvent) and e.response_id == first]
        assert sum(a.duration_ms for a in speaker.of(BidiAudioStreamEvent)) < 8000
        # The interrupted marker (Nova's) is never shown as what the assistant said.
        assert not [f for f in finals(speaker) if "interrupted" in f]
        provider.check("interrupted", sim)


def _at(provider: Provider) -> dict[str, int]:
    """The ``rate`` argument of the simulator's ``loud``/``silence`` (OpenAI's take none: 24 kHz only)."""
    return {} if provider.name == "openai" else {"rate": provider.input_rate}


# ---------------------------------------------------------------- reconnects


async def test_a_dropped_connection_loses_and_repeats_no_input(provider: Provider) -> None:
    """The service drops the connection when the second line arrives (no close frame, no GOAWAY): the agent
    reconnects, and every line the user typed reached the service exactly once, in order."""
    s = provider.sim
    scenario = s.Scenario(rules=[s.Rule(text_contains="drop", times=1, reply=s.Reply(drop=True))])
    async with simulator(provider, scenario=scenario) as sim:
        agent = BidiAgent(model=provider.model(sim), reconnect=FAST_RETRY)
        out = RecordingOutput()
        lines = ["first", "please drop", "after the drop"]
        texts = Texts(lines)

        async def release_after_restart(event: BidiOutputEvent) -> None:
            if isinstance(event, BidiConnectionRestartEvent):
                texts.ready.set()  # the dropped turn never completes; the user goes on talking

        await run_until(
            agent,
            [texts],
            [out, texts.observe, release_after_restart],
            lambda: any("after the drop" in f for f in finals(out, "assistant")),
        )
        assert out.of(BidiConnectionRestartEvent)[0].reason == "connection_lost"
        assert provider.typed_texts(sim) == lines
        provider.check("reconnected", sim)


async def test_an_unreachable_endpoint_is_retried_then_a_connection_error(provider: Provider) -> None:
    with anyio.fail_after(10):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # nothing listens there any more
    with pytest.raises(BidiConnectionError), anyio.fail_after(10):
        await BidiAgent(model=provider.dead_model(port), reconnect=FAST_RETRY).run(outputs=[RecordingOutput()])


# ---------------------------------------------------------------- configuration


BAD_CONFIGS = [
    pytest.param({"no_such_key": {}}, r"unknown provider_config key.*'no_such_key'", id="unknown-key"),
    pytest.param({"audio": {"voise": "x"}}, r"unknown provider_config\['audio'\] key.*'voise'", id="unknown-audio-key"),
    pytest.param({"audio": {"channels": 2}}, "mono", id="stereo"),
    pytest.param({"audio": "24000"}, "must be a dict", id="not-a-dict"),
]


@pytest.mark.parametrize(("provider_config", "match"), BAD_CONFIGS)
@pytest.mark.parametrize("name", [p.name for p in PROVIDERS])
def test_bad_config_is_a_usage_error_before_connecting(name: str, provider_config: Any, match: str) -> None:
    """Building the model refuses it: no simulator runs, so nothing could have connected."""
    provider = next(p for p in PROVIDERS if p.name == name)
    with pytest.raises(BidiUsageError, match=match):
        provider.model_class(provider_config=provider_config)


# ---------------------------------------------------------------- credentials and secrets


async def test_wrong_credentials_are_a_provider_error_without_the_secret(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with simulator(provider) as sim:
        model, wrong = provider.wrong_model(sim)
        out = RecordingOutput()
        with pytest.raises(BidiProviderError) as caught, anyio.fail_after(15):
            await BidiAgent(model=model, reconnect=FAST_RETRY).run(outputs=[out])
        provider.check("refused", sim, caught.value)
    assert wrong not in str(caught.value)
    assert isinstance(out.events[-1], BidiConnectionCloseEvent)
    provider.assert_no_secret(caplog, wrong)


async def test_secrets_are_never_logged_during_a_conversation(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """A turn and a reconnect (the service drops the connection) at DEBUG: no log record holds a secret."""
    caplog.set_level(logging.DEBUG)
    s = provider.sim
    scenario = s.Scenario(rules=[s.Rule(text_contains="drop", times=1, reply=s.Reply(drop=True))])
    async with simulator(provider, scenario=scenario) as sim:
        agent = BidiAgent(model=provider.model(sim), reconnect=FAST_RETRY)
        out = RecordingOutput()
        texts = Texts(["hello", "now drop", "hello again"])

        async def release_after_restart(event: BidiOutputEvent) -> None:
            if isinstance(event, BidiConnectionRestartEvent):
                texts.ready.set()

        await run_until(
            agent,
            [texts],
            [out, texts.observe, release_after_restart],
            lambda: any("hello again" in f for f in finals(out, "assistant")),
        )
        assert caplog.records
        provider.assert_no_secret(caplog, *provider.secrets)
        provider.check("logged", sim, agent, caplog)
