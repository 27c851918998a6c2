"""How a provider's ending of a connection ends (or continues) the conversation,
end to end over real sockets against the simulators, on asyncio and Trio.

The rule (docs/protocols/openai.md#ending-a-session, docs/protocols/gemini.md#ending-a-session):
a close the service means as the end of the session ends the conversation with
``BidiConnectionCloseEvent(reason="provider_closed")`` and ``run()`` returns; a
close a new connection may continue (going away, server errors, a connection
limit) reconnects, and the conversation goes on.
"""

from __future__ import annotations

import anyio
import pytest

from adapters.gemini import BidiGeminiLiveModel
from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing import gemini_simulator, openai_simulator
from bidi_core import (
    BidiAgent,
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiOutputEvent,
    BidiTranscriptStreamEvent,
    ReconnectPolicy,
)
from ports.errors import BidiConnectionError
from ports.events import BidiConnectionExpiringEvent
from ports.model import ConnectRequest
from tests.support import RecordingOutput, Texts, our_tasks

OPENAI_KEY = "sk-test-not-a-real-key-0123456789"
GEMINI_KEY = "AIza-test-not-a-real-key-0123456789"
FAST_RETRY = ReconnectPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


def _openai_rules(close: tuple[int, str]) -> openai_simulator.Scenario:
    return openai_simulator.Scenario(
        rules=[openai_simulator.Rule(text_contains="bye", times=1, reply=openai_simulator.Reply(close=close))]
    )


async def test_openai_closing_normally_ends_the_conversation() -> None:
    async with openai_simulator.OpenAIRealtimeSimulator(
        api_key=OPENAI_KEY, scenario=_openai_rules((1000, "session ended"))
    ) as sim:
        agent = BidiAgent(
            model=BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=sim.base_url), reconnect=FAST_RETRY
        )
        out = RecordingOutput()
        texts = Texts(["hello", "bye now"])
        with anyio.fail_after(10):
            await agent.run([texts], [out, texts.observe])  # returns by itself
    closes = out.of(BidiConnectionCloseEvent)
    assert [c.reason for c in closes] == ["provider_closed"]
    assert out.of(BidiConnectionRestartEvent) == []
    assert len(sim.connections) == 1
    assert our_tasks() == set()


@pytest.mark.parametrize("code", [1001, 1011, 1012])
async def test_openai_going_away_or_failing_reconnects_and_the_conversation_goes_on(code: int) -> None:
    async with openai_simulator.OpenAIRealtimeSimulator(
        api_key=OPENAI_KEY, scenario=_openai_rules((code, "try again"))
    ) as sim:
        agent = BidiAgent(
            model=BidiOpenAIRealtimeModel(api_key=OPENAI_KEY, base_url=sim.base_url), reconnect=FAST_RETRY
        )
        seen: list[BidiOutputEvent] = []
        with anyio.fail_after(10):
            async with agent:
                await agent.send("bye now")
                async for event in agent.receive():
                    seen.append(event)
                    starts = sum(isinstance(e, BidiConnectionStartEvent) for e in seen)
                    if isinstance(event, BidiConnectionStartEvent) and starts == 2:
                        await agent.send("still there?")
                    if isinstance(event, BidiTranscriptStreamEvent) and event.is_final:
                        break
    restarts = [e for e in seen if isinstance(e, BidiConnectionRestartEvent)]
    assert [r.reason for r in restarts] == ["connection_lost"]
    assert str(code) in (restarts[0].details or "")
    # The new session was seeded with the history, the unanswered "bye now" included.
    assert [e.text for e in seen if isinstance(e, BidiTranscriptStreamEvent) and e.is_final] == [
        "You said: bye now still there?"
    ]
    assert not any(isinstance(e, BidiConnectionCloseEvent) for e in seen)
    assert len(sim.connections) == 2


def _gemini_bye() -> gemini_simulator.Scenario:
    rule = gemini_simulator.Rule(text_contains="bye", times=1, reply=gemini_simulator.Reply(close=(1000, "")))
    return gemini_simulator.Scenario(rules=[rule])


async def test_gemini_closing_normally_without_go_away_ends_the_conversation() -> None:
    async with gemini_simulator.GeminiLiveSimulator(api_key=GEMINI_KEY, tls=False, scenario=_gemini_bye()) as sim:
        agent = BidiAgent(model=BidiGeminiLiveModel(api_key=GEMINI_KEY, base_url=sim.ws_base_url), reconnect=FAST_RETRY)
        out = RecordingOutput()
        texts = Texts(["hello", "bye now"])
        with anyio.fail_after(10):
            await agent.run([texts], [out, texts.observe])  # returns by itself
    assert [c.reason for c in out.of(BidiConnectionCloseEvent)] == ["provider_closed"]
    assert out.of(BidiConnectionRestartEvent) == []
    assert len(sim.connections) == 1
    assert our_tasks() == set()


@pytest.mark.parametrize("after_go_away", [False, True])
async def test_a_gemini_session_tells_a_normal_end_from_the_announced_connection_limit(after_go_away: bool) -> None:
    """Gemini closes with 1000 both when it ends a session and when a connection reaches the limit it
    announced with ``goAway``: only the first ends the session (``EndOfStream``); the second is a
    retryable loss, so the core continues the session on a new connection."""
    async with gemini_simulator.GeminiLiveSimulator(
        api_key=GEMINI_KEY, tls=False, go_away_lead_s=0.05, lifetime_close=(1000, "")
    ) as sim:
        model = BidiGeminiLiveModel(api_key=GEMINI_KEY, base_url=sim.ws_base_url)
        async with model.connect(ConnectRequest()) as session:
            await sim.wait_until(lambda: len(sim.connections) == 1)
            if after_go_away:
                await sim.go_away_all()
            else:
                await sim.close_all(1000, "")
            seen = []
            with anyio.fail_after(5):
                if after_go_away:
                    with pytest.raises(BidiConnectionError, match="goAway") as info:
                        while True:
                            seen.append(await session.receive())
                    assert info.value.retryable
                else:
                    with pytest.raises(anyio.EndOfStream):
                        while True:
                            seen.append(await session.receive())
    assert any(isinstance(e, BidiConnectionExpiringEvent) for e in seen) == after_go_away
