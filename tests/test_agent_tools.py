"""Tool calls through the agent (BidiAgent over the ScriptedModel): a call the
agent has no tool for, a failing ``stop_conversation``, a sync tool with a
timeout whose call is cancelled, and a rotation that waits for running tools."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import pytest

from adapters.testing import Expect, ScriptedModel, ScriptedSession, Step
from bidi_core import (
    BidiAgent,
    BidiConnectionCloseEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    stop_conversation,
    tool,
)
from bidi_core.conversation import Phase, orphaned_result_text
from ports.events import (
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiToolCancelEvent,
    BidiUsageEvent,
)
from ports.messages import ToolResultMessage
from ports.model import BidiSendNowait, ConnectRequest, ModelInput
from tests.support import our_tasks, response, transcript
from tests.tools_support import slow_lookup_tool


@tool
def get_weather(location: str) -> str:
    """Get the weather.

    Args:
        location: City name.
    """
    return f"Sunny in {location}"


async def receive_until(agent: BidiAgent, done: Callable[[BidiOutputEvent], bool]) -> list[BidiOutputEvent]:
    """Events from ``receive()`` up to and including the first for which ``done`` holds."""
    seen: list[BidiOutputEvent] = []
    with anyio.fail_after(10):
        async for event in agent.receive():
            seen.append(event)
            if done(event):
                return seen
    raise AssertionError(f"the conversation closed first: {seen}")


class WriteAttempts(ScriptedModel):
    """Also records every write the agent starts, with its connection: a
    transport may put bytes on the wire before send() first yields.

    ``at_once=True``: its sessions also write at once (``ports.model.BidiSendNowait``), as
    OpenAI's and Gemini's do on asyncio; what ``send_nowait`` takes is recorded the same way,
    then handed to the scripted session's own ``send`` (which checks it against the script)
    by a task of the connection's."""

    def __init__(self, *args: Any, at_once: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_once = at_once
        self.attempts: list[tuple[str, ModelInput]] = []
        self.received_before: list[int] = []  # for each attempt: the events the agent had received by then

    @asynccontextmanager
    async def connect(self, request: ConnectRequest) -> AsyncIterator[ScriptedSession]:
        async with super().connect(request) as session, anyio.create_task_group() as tg:
            send = session.send

            def record(item: ModelInput) -> None:
                self.attempts.append((session.connection_id, item))
                self.received_before.append(session.received)

            async def attempt(item: ModelInput) -> None:
                record(item)
                await send(item)

            def send_nowait(item: ModelInput) -> bool:
                record(item)
                tg.start_soon(send, item)
                return True

            session.send = attempt  # type: ignore[method-assign]
            if self.at_once:
                session.send_nowait = send_nowait  # type: ignore[attr-defined]
                assert isinstance(session, BidiSendNowait)
            yield session
            tg.cancel_scope.cancel()


USAGE = BidiUsageEvent(input_tokens=10, output_tokens=20, total_tokens=30)


def completes(rid: str) -> Callable[[BidiOutputEvent], bool]:
    return lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == rid


async def test_a_call_of_an_unknown_tool_answers_the_model_with_an_error_and_the_conversation_goes_on() -> None:
    model = ScriptedModel(
        [
            Step(emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "get_stock_price", {"symbol": "X"})]),
            Step(
                expect=Expect(BidiToolResultEvent, tool_use_id="t1", status="error"),
                emit=[BidiResponseCompleteEvent("r1", "tool_use"), *response("r2", transcript("Sorry.", rid="r2"))],
            ),
            Step(expect=Expect(BidiTextInputEvent, text="still there?"), emit=response("r3", transcript("Yes."))),
        ]
    )
    agent = BidiAgent(model=model, tools=[get_weather])
    async with agent:
        seen = await receive_until(agent, completes("r2"))
        assert agent.phase is Phase.LISTENING
        await agent.send("still there?")
        seen += await receive_until(agent, completes("r3"))
    message = "Unknown tool 'get_stock_price'. Available tools: get_weather"
    (sent,) = [i for i in model.sent if isinstance(i, BidiToolResultEvent)]
    assert (sent.tool_use_id, sent.status, sent.content) == ("t1", "error", message)
    errors = [e for e in seen if isinstance(e, BidiErrorEvent)]
    assert [(e.code, e.message, e.details) for e in errors] == [("tool_error", message, "BidiToolError")]
    assert not any(isinstance(e, BidiConnectionCloseEvent) for e in seen)
    model.assert_done()


async def test_an_instant_tool_is_answered_before_the_reader_takes_the_events_behind_the_call() -> None:
    """A provider sends a call together with what follows it (its response's usage and
    end, more events); the reader lets the tool and then the writer go first, so the
    result is being written before the reader takes the first event behind the call
    (the tool round trip in benchmarks/README.md), and nothing is lost or reordered."""

    @tool
    async def clock() -> str:
        """The time."""
        return "12:00"

    call = [BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "clock", {})]
    behind = [USAGE, BidiResponseCompleteEvent("r1", "tool_use"), transcript("ok", rid="r1")]
    model = WriteAttempts(
        [
            Step(emit=[*call, *behind]),
            Step(expect=Expect(BidiToolResultEvent, tool_use_id="t1"), emit=response("r2", transcript("Noon."))),
        ]
    )
    agent = BidiAgent(model=model, tools=[clock])
    async with agent:
        seen = await receive_until(agent, completes("r2"))
    (at,) = [n for (_, item), n in zip(model.attempts, model.received_before, strict=True) if item == result_of(seen)]
    assert at == len(call)
    assert [type(e) for e in seen if not isinstance(e, BidiToolResultEvent)][: len(call) + len(behind) + 1] == [
        BidiConnectionStartEvent,
        *(type(e) for e in call),
        *(type(e) for e in behind),
    ]
    model.assert_done()


def result_of(events: list[BidiOutputEvent]) -> BidiToolResultEvent:
    (result,) = [e for e in events if isinstance(e, BidiToolResultEvent)]
    return result


async def test_a_stop_conversation_call_that_fails_still_ends_the_conversation() -> None:
    """The model calls ``stop_conversation`` with an argument it does not take:
    the call fails, but the user asked to hang up, so the conversation ends."""
    model = ScriptedModel([Step(emit=[BidiToolUseEvent("t1", "stop_conversation", {"reason": "user said bye"})])])
    agent = BidiAgent(model=model, tools=[stop_conversation])
    async with agent:
        with anyio.fail_after(10):
            seen = [e async for e in agent.receive()]
    close = seen[-1]
    assert isinstance(close, BidiConnectionCloseEvent)
    assert close.reason == "user_request"
    (result,) = [e for e in seen if isinstance(e, BidiToolResultEvent)]
    assert (result.name, result.status) == ("stop_conversation", "error")
    assert "unknown argument 'reason'" in str(result.content)
    assert [e.code for e in seen if isinstance(e, BidiErrorEvent)] == ["tool_error"]
    assert not any(isinstance(i, BidiToolResultEvent) for i in model.sent)  # recorded, not sent
    assert agent.messages[-1] == ToolResultMessage("t1", "stop_conversation", "error", result.content)
    assert model.open_connections == 0
    assert our_tasks() == set()


@pytest.mark.parametrize("tool_timeout", [None, 30.0], ids=["no-timeout", "timeout"])
async def test_a_withdrawn_sync_tool_is_reported_cancelled_not_a_success(tool_timeout: float | None) -> None:
    """A thread cannot be stopped: the agent waits for the function to return,
    and its value, come too late, is not taken for the result."""
    started = threading.Event()
    release = threading.Event()

    @tool(timeout=tool_timeout)
    def lookup(query: str) -> str:
        """Look up, blocking.

        Args:
            query: What to look up.
        """
        started.set()
        release.wait(10)
        return f"found {query}"

    model = ScriptedModel(
        [
            Step(emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "lookup", {"query": "x"})]),
            Step(
                expect=Expect(BidiTextInputEvent, text="never mind"),
                emit=[BidiToolCancelEvent(["t1"]), BidiResponseCompleteEvent("r1", "interrupted")],
            ),
        ]
    )
    agent = BidiAgent(model=model, tools=[lookup])
    async with agent:
        await receive_until(agent, lambda e: isinstance(e, BidiToolUseEvent))
        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(started.wait)
            await agent.send("never mind")
            await model.consumed()  # the withdrawal was read: the call is cancelled
        release.set()
        seen = await receive_until(agent, lambda e: isinstance(e, BidiToolResultEvent))
    result = seen[-1]
    assert isinstance(result, BidiToolResultEvent)
    assert (result.tool_use_id, result.status) == ("t1", "cancelled")
    assert not any(isinstance(i, BidiToolResultEvent) for i in model.sent)  # withdrawn: nothing to answer
    assert ToolResultMessage("t1", "lookup", "cancelled", "The model withdrew this call.") in agent.messages
    assert not any(isinstance(e, BidiErrorEvent) for e in seen)


@pytest.mark.parametrize("at_once", [False, True], ids=["writer", "at-once"])
async def test_no_rotation_while_a_tool_runs_then_one_when_it_ends(at_once: bool) -> None:
    """The provider warns that the connection will end; the answer is over but
    a tool still runs: no turn boundary yet. When the tool ends, the core
    rotates, and the next connection hears the tool's result. Also with a
    session that writes at once: the step of the result both hands it out and
    leaves the connection, and the result must not go to the one being left."""
    release = anyio.Event()
    model = WriteAttempts(
        at_once=at_once,
        connections=[
            [
                Step(
                    emit=[
                        BidiResponseStartEvent("r1"),
                        BidiToolUseEvent("t1", "slow_lookup", {"query": "x"}),
                        BidiResponseCompleteEvent("r1", "tool_use"),
                        BidiConnectionExpiringEvent(time_left_s=600),
                        USAGE,  # the user sees it: the warning before it was taken
                    ]
                ),
            ],
            [Step(expect=Expect(BidiTextInputEvent, where=lambda i: "found x" in i.text))],
        ],
    )
    agent = BidiAgent(model=model, tools=[slow_lookup_tool(release)])
    async with agent:
        await receive_until(agent, lambda e: e == USAGE)
        assert agent.phase is Phase.TOOL_CALLING
        assert agent.conversation.rotation_due is not None
        assert len(model.requests) == 1  # no new connection while the tool runs
        release.set()
        seen = await receive_until(agent, lambda e: isinstance(e, BidiConnectionStartEvent))
        with anyio.fail_after(10):
            await model.consumed()
    restarts = [e for e in seen if isinstance(e, BidiConnectionRestartEvent)]
    assert [r.reason for r in restarts] == ["expiring"]
    assert [type(e) for e in seen[-3:]] == [BidiToolResultEvent, BidiConnectionRestartEvent, BidiConnectionStartEvent]
    assert len(model.requests) == 2
    # Handed to the writer in the step that left the connection: not even tried on
    # it, written to the next one only (as the user's text: it never made the call).
    said = BidiTextInputEvent(orphaned_result_text(BidiToolResultEvent("t1", "slow_lookup", "success", "found x")))
    assert model.attempts == [("scripted-2", said)]
    assert model.sent == [said]
    model.assert_done()
