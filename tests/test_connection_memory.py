"""A connection that ended is freed at once, by reference counting, not by the garbage collector.

A connection lives for minutes, so its objects (socket, transport, parser,
buffers) sit in the collector's oldest generation, which it scans rarely: if
anything of a dead connection is part of a reference cycle, the connection
waits for that scan, and a long conversation that reconnects every minute
grows in memory between scans (the soak found it: ``benchmarks/README.md``,
"The soak"). The cycles were errors kept and raised again by the connection
(their tracebacks hold its frames), errors kept in a local of the frame their
traceback holds, and the watchdog's task being cancelled (anyio's task group
keeps a cancelled task's error, and its frames, in a cycle of its own).

The same holds for Nova Sonic's HTTP/2 stream (``H2Stream``) and its session:
kept failures raised again as copies, the watchdog stopped and the reader
ended rather than cancelled, the service's in-stream exception never in a
local of the frame that raises it.

Each test runs with the collector off and counts the live objects of the
kind that must be gone.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Iterator

import anyio
import pytest
from wsproto import events as ev

from adapters.nova_sonic.h2transport import H2Stream
from adapters.nova_sonic.session import NovaSonicSession
from adapters.openai import BidiOpenAIRealtimeModel
from adapters.openai.session import OpenAIRealtimeSession
from adapters.testing import openai_simulator
from adapters.testing.nova_sonic_simulator import Fault, NovaSonicSimulator
from adapters.testing.pytest_plugin import NOVA_TEST_ACCESS_KEY, NOVA_TEST_SECRET_KEY, nova_sonic_model_for
from adapters.websocket import WebSocketClosed, WebSocketConnection, open_websocket
from bidi_core import BidiAgent, BidiConnectionStartEvent, BidiOutputEvent, BidiTranscriptStreamEvent, ReconnectPolicy
from ports.events import BidiResponseCompleteEvent, BidiTextInputEvent
from ports.model import ConnectRequest
from tests.test_websocket_client import Peer, accept_then, serving

KEY = "sk-test-not-a-real-key-0123456789"


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The garbage collector off for the test: what is still alive then is held by a cycle (or a reference)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


RETRY = ReconnectPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


async def live_after_the_reconnect(agent: BidiAgent, session: type, transport: type) -> list[tuple[int, int]]:
    """Say goodbye (the provider then ends the connection), say something on the next connection,
    and count the live sessions and transports once its answer is final: the first connection
    ended a while ago by then."""
    seen: list[BidiOutputEvent] = []
    counts: list[tuple[int, int]] = []
    with anyio.fail_after(10):
        async with agent:
            await agent.send("bye now")
            async for event in agent.receive():
                seen.append(event)
                if isinstance(event, BidiConnectionStartEvent) and len(seen) > 1:
                    await agent.send("still there?")
                if isinstance(event, BidiTranscriptStreamEvent) and event.is_final and event.role == "assistant":
                    counts.append((live(session), live(transport)))
                    break
    return counts


async def _lost(peer: Peer) -> None:
    await peer.send(ev.AcceptConnection(), ev.TextMessage("bye"))
    await peer.stream.aclose()
    raise anyio.ClosedResourceError


async def _code(call: Awaitable[object]) -> int | None:
    """The close code ``call`` raised (the error itself is not kept: its traceback holds the connection)."""
    try:
        await call
    except WebSocketClosed as exc:
        return exc.code
    return None


@pytest.mark.parametrize("ending", ["close frame", "connection lost"])
async def test_a_websocket_the_server_ended_is_freed_without_the_collector(ending: str, no_collector: None) -> None:
    talk = accept_then(ev.TextMessage("bye"), ev.CloseConnection(1011, "restart")) if ending == "close frame" else _lost
    before = live(WebSocketConnection)
    async with serving(talk) as server:
        with anyio.fail_after(10):
            async with open_websocket(server.url(), {}) as ws:
                assert await ws.receive() == "bye"
                # The kept close is raised again on every later call.
                codes = [await _code(ws.receive()), await _code(ws.receive()), await _code(ws.send_text("late"))]
                del ws
        assert codes == [1011] * 3 if ending == "close frame" else [1006] * 3
        assert live(WebSocketConnection) == before


async def test_a_reconnected_conversation_keeps_only_its_live_connection(no_collector: None) -> None:
    rules = [openai_simulator.Rule(text_contains="bye", times=1, reply=openai_simulator.Reply(close=(1011, "again")))]
    async with openai_simulator.OpenAIRealtimeSimulator(
        api_key=KEY, scenario=openai_simulator.Scenario(rules=rules)
    ) as sim:
        agent = BidiAgent(model=BidiOpenAIRealtimeModel(api_key=KEY, base_url=sim.base_url), reconnect=RETRY)
        counts = await live_after_the_reconnect(agent, OpenAIRealtimeSession, WebSocketConnection)
    assert len(sim.connections) == 2
    assert counts == [(1, 1)]


# ---------------------------------------------------------------- Nova Sonic (HTTP/2)

NOVA_FAULTS: dict[str, list[Fault]] = {
    "closed by us": [],
    "stream reset": [Fault("rst", after_events=8)],
    "connection dropped": [Fault("drop", after_events=8)],
    "service exception": [Fault("model_timeout", after_events=8)],
}
LATER_CALLS = {
    "closed by us": [],
    # A broken stream raises its failure again on every later call.
    "stream reset": ["BidiConnectionError"] * 3,
    "connection dropped": ["BidiConnectionError"] * 3,
    # The service ends its side after its exception and still reads ours (we may send our goodbye).
    "service exception": ["NovaSonicProviderError", "EndOfStream", None],
}


async def _failure(call: Awaitable[object]) -> str | None:
    """The kind of error ``call`` raised (the error itself is not kept: its traceback holds the connection)."""
    try:
        await call
    except (Exception, anyio.EndOfStream) as exc:
        return type(exc).__name__
    return None


async def _to_the_end(session: NovaSonicSession) -> None:
    while True:
        await session.receive()


@pytest.mark.parametrize("ending", list(NOVA_FAULTS))
async def test_a_nova_stream_is_freed_without_the_collector(ending: str, no_collector: None) -> None:
    before = (live(NovaSonicSession), live(H2Stream))
    async with NovaSonicSimulator(
        credentials={NOVA_TEST_ACCESS_KEY: NOVA_TEST_SECRET_KEY}, faults=NOVA_FAULTS[ending]
    ) as sim:
        with anyio.fail_after(10):
            async with nova_sonic_model_for(sim).connect(ConnectRequest(system_prompt="Be brief.")) as session:
                await session.send(BidiTextInputEvent("hello"))
                if ending == "closed by us":
                    while not isinstance(await session.receive(), BidiResponseCompleteEvent):
                        pass
                    failures = []
                else:
                    failures = [await _failure(_to_the_end(session)), await _failure(session.receive())]
                    failures.append(await _failure(session.send(BidiTextInputEvent("late"))))
                del session
        assert failures == LATER_CALLS[ending]
        assert (live(NovaSonicSession), live(H2Stream)) == before


@pytest.mark.parametrize("ending", ["stream reset", "service exception"])
async def test_a_reconnected_nova_conversation_keeps_only_its_live_stream(ending: str, no_collector: None) -> None:
    async with NovaSonicSimulator(
        credentials={NOVA_TEST_ACCESS_KEY: NOVA_TEST_SECRET_KEY}, faults=NOVA_FAULTS[ending]
    ) as sim:
        agent = BidiAgent(model=nova_sonic_model_for(sim), reconnect=RETRY)
        counts = await live_after_the_reconnect(agent, NovaSonicSession, H2Stream)
    assert len(sim.streams) == 2
    assert counts == [(1, 1)]
