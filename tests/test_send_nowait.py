"""Writing without the writer's hop, and the guarantees that path keeps.

The shell writes an item from the task that stepped it (a microphone's, a
tool's, the reader) when the send FIFO is idle and the session can take it
without waiting (``ports.model.BidiSendNowait``); on asyncio the WebSocket
can, through ``transport.write``. Held here: one write at a time and in
order, however the two paths interleave; an error still reaches the writer's
path; a full socket buffer stops the shortcut, with nothing lost or
reordered; Trio's streams never take it. The provider suites cover the rest:
every OpenAI test on asyncio sends its input this way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
import sniffio
from wsproto import ConnectionType, WSConnection
from wsproto import events as ev

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.testing.gemini_simulator import GeminiLiveSimulator, Reply, Rule, ToolCall
from adapters.testing.gemini_simulator import Scenario as GeminiScenario
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator
from adapters.testing.pytest_plugin import GEMINI_TEST_KEY, gemini_model_for, openai_model_for
from adapters.websocket import open_websocket
from bidi_core import (
    BidiAgent,
    BidiTextInputEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
)
from ports.events import BidiAudioInputEvent, BidiConnectionExpiringEvent
from ports.model import BidiSendNowait, ConnectRequest, ModelCapabilities, ModelInput
from tests.tools_support import slow_lookup_tool

BLOCKS = [BidiAudioInputEvent(audio=bytes([i]) * 960, sample_rate=24000) for i in range(10)]


class GatedSession:
    """A session that takes items at once unless told to refuse one, and whose writer's
    ``send`` waits while ``gate`` is shut: the two paths, steered by the test."""

    connection_id = "gated-1"
    capabilities = ModelCapabilities()

    def __init__(self) -> None:
        self.wire: list[ModelInput] = []  # what reached the connection, in order
        self.at_once: list[ModelInput] = []
        self.refuse: set[int] = set()  # blocks send_nowait declines (a full buffer, say)
        self.fail: set[int] = set()  # blocks send_nowait raises for
        self.gate = anyio.Event()
        self.gate.set()
        self.sending = anyio.Event()  # the writer is inside send()
        self._grew = anyio.Event()

    def _put(self, item: ModelInput) -> None:
        self.wire.append(item)
        self._grew.set()

    async def until_written(self, count: int) -> None:
        while len(self.wire) < count:
            self._grew = anyio.Event()
            await self._grew.wait()

    def send_nowait(self, item: ModelInput) -> bool:
        index = BLOCKS.index(item)  # type: ignore[arg-type]
        if index in self.fail:
            raise RuntimeError("cannot encode this one")
        if index in self.refuse:
            return False
        self._put(item)
        self.at_once.append(item)
        return True

    async def send(self, item: ModelInput) -> None:
        self.sending.set()
        await self.gate.wait()
        self._put(item)

    async def receive(self) -> object:
        await anyio.sleep_forever()
        raise AssertionError


class GatedModel:
    model_id = "gated"
    capabilities = ModelCapabilities()

    def __init__(self, session: GatedSession) -> None:
        self.session = session

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[GatedSession]:
        yield self.session


def test_the_gated_session_is_what_the_shell_looks_for() -> None:
    assert isinstance(GatedSession(), BidiSendNowait)


async def speak(session: GatedSession, count: int, before: Callable[[int], Awaitable[None]]) -> BidiAgent:
    """Run an agent whose microphone hands ``BLOCKS[:count]`` one by one, awaiting ``before(i)``
    before block ``i``; it stops once all of them reached the connection."""
    agent = BidiAgent(model=GatedModel(session))  # type: ignore[arg-type]
    handed = 0

    async def microphone() -> BidiAudioInputEvent:
        nonlocal handed
        await before(handed)
        if handed == count:
            await session.until_written(count)
            agent.request_stop()
            raise EOFError
        handed += 1
        return BLOCKS[handed - 1]

    with anyio.fail_after(10):
        await agent.run(inputs=[microphone])
    return agent


async def test_at_once_and_queued_writes_stay_in_order_one_at_a_time() -> None:
    session = GatedSession()
    session.refuse = {2}  # block 2 must wait: the writer takes it, and its send is held
    session.gate = anyio.Event()

    async def before(index: int) -> None:
        if index == 3:
            await session.sending.wait()  # 3-5 come while the writer is held inside block 2's send
        if index == 6:
            session.gate.set()
            await session.until_written(6)  # the writer drains 2-5, then 6-9 may go at once again

    await speak(session, len(BLOCKS), before)
    assert session.wire == BLOCKS
    assert session.at_once == [BLOCKS[i] for i in (0, 1, 6, 7, 8, 9)]  # never past a queued block


async def test_an_item_the_shortcut_cannot_encode_goes_through_send() -> None:
    session = GatedSession()
    session.fail = {1}
    # Each block once the one before is out: the writer is idle for every one.
    agent = await speak(session, 3, session.until_written)
    assert session.wire == BLOCKS[:3]  # each once, in order
    assert session.at_once == [BLOCKS[0], BLOCKS[2]]
    assert agent.conversation.outbox.in_flight == ()  # every write reported


# ---------------------------------------------------------------- a step that also leaves the connection
# (the scripted case: tests/test_agent_tools.py::test_no_rotation_while_a_tool_runs_then_one_when_it_ends[at-once])


class Expiry:
    """An observer that tells when the core has read the provider's warning of its connection's end."""

    observes_audio = False

    def __init__(self) -> None:
        self.read = anyio.Event()

    def on_start(self, info: object) -> None: ...

    def on_event(self, event: object) -> None:
        if isinstance(event, BidiConnectionExpiringEvent):
            self.read.set()

    def on_playback(self, report: object) -> None: ...

    def on_end(self) -> None: ...


async def test_gemini_a_result_that_lands_on_the_rotation_is_answered_on_the_next_connection() -> None:
    """The same over the wire: Gemini without resumption (so it writes at once on asyncio), goAway
    while a tool runs; the result is asked on the next connection and answered there."""
    release = anyio.Event()
    scenario = GeminiScenario(
        rules=[
            Rule(text_contains="look", times=1, reply=Reply(tool_calls=[ToolCall("slow_lookup", {"query": "x"})])),
            Rule(text_contains="found x", reply=Reply(say="Heard found x.")),
        ]
    )
    async with GeminiLiveSimulator(api_key=GEMINI_TEST_KEY, tls=False, go_away_lead_s=30.0, scenario=scenario) as sim:
        expiry = Expiry()
        agent = BidiAgent(
            model=gemini_model_for(sim, provider_config={"session_resumption": None}),
            tools=[slow_lookup_tool(release)],
            observers=[expiry],
        )
        with anyio.fail_after(10):
            async with agent:
                await agent.send(BidiTextInputEvent("look it up"))
                async for event in agent.receive():
                    if isinstance(event, BidiToolUseEvent):
                        await sim.go_away_all()
                        await expiry.read.wait()
                        release.set()
                    if isinstance(event, BidiTranscriptStreamEvent) and event.is_final and event.role == "assistant":
                        break
        assert event.text == "Heard found x."
    client = [(c.index, next(iter(m))) for c in sim.connections for m in c.received if isinstance(m, dict)]
    assert (0, "toolResponse") not in client
    assert len(sim.connections) == 2


async def test_the_openai_session_writes_at_once_on_asyncio_only(openai_sim: OpenAIRealtimeSimulator) -> None:
    model: BidiOpenAIRealtimeModel = openai_model_for(openai_sim)
    on_asyncio = sniffio.current_async_library() == "asyncio"
    with anyio.fail_after(10):
        async with model.connect(ConnectRequest()) as session:
            assert isinstance(session, BidiSendNowait)
            assert session.send_nowait(BLOCKS[0]) is on_asyncio
            if not on_asyncio:
                await session.send(BLOCKS[0])
            await openai_sim.wait_until(
                lambda: "input_audio_buffer.append" in openai_sim.connections[0].received_types()
            )
    appends = [m for m in openai_sim.connections[0].received if m.get("type") == "input_audio_buffer.append"]
    assert len(appends) == 1


# ---------------------------------------------------------------- the WebSocket's send_now


@asynccontextmanager
async def quiet_peer(read: anyio.Event, got: list[str], last: anyio.Event) -> AsyncIterator[str]:
    """A WebSocket server that accepts, then reads nothing until ``read`` is set; then every text
    message, until one says ``last``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        async with stream:
            while not any(isinstance(e, ev.Request) for e in ws.events()):
                ws.receive_data(await stream.receive())
            await stream.send(ws.send(ev.AcceptConnection()))
            await read.wait()
            parts: list[str] = []
            try:
                while True:
                    ws.receive_data(await stream.receive())
                    for event in ws.events():
                        if isinstance(event, ev.TextMessage):
                            parts.append(event.data)
                            if event.message_finished:
                                got.append("".join(parts))
                                parts.clear()
                                if got[-1] == "last":
                                    last.set()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"ws://127.0.0.1:{port}/"
        tg.cancel_scope.cancel()


def _never_built() -> list[str]:
    pytest.fail("send_now built messages it could not write at once")


async def test_send_now_stops_at_a_full_buffer_and_nothing_is_lost_or_reordered() -> None:
    read, got, last = anyio.Event(), [], anyio.Event()
    on_asyncio = sniffio.current_async_library() == "asyncio"
    payload = "x" * 65536
    with anyio.fail_after(20):
        async with quiet_peer(read, got, last) as url, open_websocket(url, {}) as ws:
            written = 0
            # The peer reads nothing: the kernel's buffers fill, then asyncio's, past its mark.
            while written < 4000 and ws.send_now(lambda n=written: [f"{n}:{payload}"]):  # type: ignore[misc]
                written += 1
            assert not ws.send_now(_never_built)
            if on_asyncio:
                assert 0 < written < 4000  # it wrote at once, then stopped at the mark
            else:
                assert written == 0  # anyio's stream (Trio's) has no write that never waits
            read.set()
            await ws.send_text("last")  # through the writer's path: waits for the buffer to drain
            await last.wait()
    assert [message.split(":")[0] for message in got[:-1]] == [str(n) for n in range(written)]
    assert all(message.endswith(payload) for message in got[:-1])
