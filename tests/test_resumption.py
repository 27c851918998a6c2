"""Session resumption without loss, through the agent: handles,
confirmations and refused handles (the outbox itself: tests/test_outbox.py).

A provider that resumes sessions (Gemini Live) restores, on a new connection,
the state its handle names: whatever reached the old connection after that
point is gone unless the client sends it again. ``ResumingProvider`` below is a
small in-memory provider with exactly those semantics (a fake of the provider,
not of our code), so the tests can break a connection anywhere and check that
every input ends up in the session exactly once, in order.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bidi_core import BidiAgent, ReconnectPolicy
from ports.errors import BidiConnectionError, BidiResumptionRejectedError
from ports.events import (
    BidiConnectionRestartEvent,
    BidiResumptionUpdateEvent,
    BidiTextInputEvent,
    ModelEvent,
)
from ports.messages import TextMessage
from ports.model import ConnectRequest, ModelCapabilities, ModelInput

FAST_RETRY = ReconnectPolicy(max_attempts=5, initial_backoff_s=0.0)


def _unsent(agent: BidiAgent) -> bool:
    """Whether the agent's outbox still holds items no connection has written."""
    outbox = agent.conversation.outbox
    return bool(outbox.waiting or outbox.in_flight)


# ---------------------------------------------------------------- through the agent


class ResumingProvider:
    """An in-memory provider whose sessions outlive connections.

    The session state is the list of user texts it took in. Every
    ``handle_every`` inputs it issues a handle naming the current state (with
    the count of this connection's inputs it holds); resuming restores the
    state the handle names. The first connection breaks right after its
    ``break_after``-th input: the reader learns it after the updates already
    sent, and what is written meanwhile is lost, as with a dead TCP peer.
    With ``forget_handles`` every handle is refused.
    """

    model_id = "resuming-fake"
    capabilities = ModelCapabilities(resumable=True)

    def __init__(self, *, break_after: int, handle_every: int, forget_handles: bool = False) -> None:
        self.break_after = break_after
        self.handle_every = handle_every
        self.forget_handles = forget_handles
        self.state: list[str] = []
        self.requests: list[ConnectRequest] = []
        self.changed = anyio.Event()
        self._handles: dict[str, int] = {}
        self._ids = itertools.count(1)

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def wait_for_state(self, length: int) -> None:
        while len(self.state) < length:
            await self.changed.wait()

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[_Connection]:
        self.requests.append(request)
        if request.resume_handle is not None:
            if self.forget_handles or request.resume_handle not in self._handles:
                raise BidiResumptionRejectedError("the handle is unknown or expired")
            del self.state[self._handles[request.resume_handle] :]
        else:
            self.state = [m.text for m in request.history if isinstance(m, TextMessage) and m.role == "user"]
        send, receive = anyio.create_memory_object_stream[ModelEvent | BaseException](100)
        connection = _Connection(self, len(self.requests), send, receive)
        self._changed()
        try:
            yield connection
        finally:
            send.close()
            receive.close()

    def issue_handle(self) -> str:
        handle = f"h{next(self._ids)}"
        self._handles[handle] = len(self.state)
        return handle


class _Connection:
    def __init__(
        self,
        provider: ResumingProvider,
        index: int,
        events_in: anyio.abc.ObjectSendStream[ModelEvent | BaseException],
        events_out: anyio.abc.ObjectReceiveStream[ModelEvent | BaseException],
    ) -> None:
        self.provider = provider
        self.connection_id = f"c{index}"
        self.capabilities = provider.capabilities
        self._first = index == 1
        self._received = 0
        self._broken = False
        self._in = events_in
        self._out = events_out

    async def send(self, item: ModelInput) -> None:
        if self._broken:
            return  # written into a connection that is already dead: the provider never sees it
        provider = self.provider
        if isinstance(item, BidiTextInputEvent):
            provider.state.append(item.text)
            provider._changed()
        self._received += 1
        if self._received % provider.handle_every == 0:
            update = BidiResumptionUpdateEvent(provider.issue_handle(), inputs_included=self._received)
            self._in.send_nowait(update)
        if self._first and self._received == provider.break_after:
            self._broken = True
            self._in.send_nowait(BidiConnectionError("connection reset"))

    async def receive(self) -> ModelEvent:
        try:
            event = await self._out.receive()  # EndOfStream once the provider's side is closed
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None
        if isinstance(event, BaseException):
            raise event
        return event


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(min_value=2, max_value=12),
    data=st.data(),
)
async def test_every_input_reaches_a_resumed_session_exactly_once_in_order(count: int, data: st.DataObject) -> None:
    """Wherever the connection breaks, and however stale the last handle is,
    the resumed session ends up holding each input once, in the order sent."""
    break_after = data.draw(st.integers(min_value=1, max_value=count), label="break_after")
    handle_every = data.draw(st.integers(min_value=1, max_value=5), label="handle_every")
    provider = ResumingProvider(break_after=break_after, handle_every=handle_every)
    texts = [f"t{i}" for i in range(count)]
    async with BidiAgent(model=provider, reconnect=FAST_RETRY) as agent:
        for text in texts:
            await agent.send(text)
        with anyio.fail_after(5):
            # The second connection is open and has taken in everything queued for it.
            while (
                len(provider.requests) < 2
                or len(provider.state) < count
                or agent.conversation.outbox.waiting
                or agent.conversation.outbox.in_flight
            ):
                await provider.changed.wait()
        assert provider.state == texts
        # The history records each input once, replays included.
        assert [m.text for m in agent.messages if isinstance(m, TextMessage) and m.role == "user"] == texts
    assert len(provider.requests) == 2


async def test_a_refused_handle_starts_a_fresh_session_seeded_with_the_history() -> None:
    provider = ResumingProvider(break_after=3, handle_every=1, forget_handles=True)
    texts = [f"t{i}" for i in range(5)]
    restarts: list[BidiConnectionRestartEvent] = []
    async with BidiAgent(model=provider, reconnect=FAST_RETRY) as agent:
        for text in texts:
            await agent.send(text)
        with anyio.fail_after(5):
            await provider.wait_for_state(len(texts))
            while _unsent(agent):
                await provider.changed.wait()
        assert provider.state == texts
        with anyio.fail_after(5):
            async for event in agent.receive():
                if isinstance(event, BidiConnectionRestartEvent):
                    restarts.append(event)
                    if len(restarts) == 2:
                        break
    # connection 1, the refused resumption, then a fresh session with the history
    assert [r.resume_handle is not None for r in provider.requests] == [False, True, False]
    fresh = provider.requests[2]
    seeded = [m.text for m in fresh.history if isinstance(m, TextMessage)]
    assert seeded == texts[: len(seeded)]
    assert len(seeded) >= 3  # at least what the first connection took in
    assert [r.reason for r in restarts] == ["connection_lost", "resumption_rejected"]
    assert "fresh session seeded with the history" in (restarts[1].details or "")
