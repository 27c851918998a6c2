"""``agent.hooks``: the application's code at the conversation's turning points.

Notification hooks see the core's events in order; a ``before_tool_call``
hook approves, refuses (the model hears why) or waits for a person while
the conversation goes on, audio included; an ``after_tool_call`` hook
rewrites the result; a hook that raises is reported and ends nothing.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from adapters.testing.scripted import Expect, ScriptedModel, Step
from bidi_core import (
    Allow,
    BidiAgent,
    BidiErrorEvent,
    BidiResponseCompleteEvent,
    BidiToolResultEvent,
    Refuse,
    tool,
)
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolUseEvent,
)
from tests.support import audio, our_tasks, response, transcript

ran: list[str] = []


@tool
async def book_flight(to: str) -> str:
    """Book a flight.

    Args:
        to: Where to.
    """
    ran.append(to)
    return f"booked to {to}"


def booking(then: list[Step] | None = None) -> ScriptedModel:
    """The model asks to book a flight, then says what the result said."""
    return ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="Book me a flight to Oslo."),
                emit=response("r1", BidiToolUseEvent("t1", "book_flight", {"to": "Oslo"}), stop="tool_use"),
            ),
            *(then or []),
        ]
    )


def answered(model: ScriptedModel) -> dict[str, Any]:
    """What the model was sent for each tool call."""
    return {r.tool_use_id: (r.status, r.content) for r in model.sent if isinstance(r, BidiToolResultEvent)}


async def receive_until(agent: BidiAgent, done: Any, seen: list[BidiOutputEvent] | None = None) -> list[Any]:
    seen = [] if seen is None else seen
    with anyio.fail_after(10):
        async for event in agent.receive():
            seen.append(event)
            if done(event):
                break
    return seen


@pytest.fixture(autouse=True)
def _nothing_ran() -> None:
    ran.clear()


async def test_notification_hooks_see_the_core_events_in_order_sync_and_async() -> None:
    model = ScriptedModel([Step(expect=Expect(BidiTextInputEvent, text="Hi"), emit=response("r1", audio("r1")))])
    agent = BidiAgent(model=model)
    seen: list[str] = []

    @agent.hooks.on_connection_started
    def started(event: BidiConnectionStartEvent) -> None:
        seen.append(f"started {event.connection_id}")

    @agent.hooks.on_response_started
    async def response_started(event: BidiResponseStartEvent) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(f"response {event.response_id}")

    @agent.hooks.on_response_completed
    async def completed(event: BidiResponseCompleteEvent) -> None:
        assert event.timing is not None and event.timing.first_audio_s is not None
        seen.append(f"completed {event.response_id} {event.stop_reason}")

    agent.hooks.on_connection_closed(lambda event: seen.append(f"closed {event.reason}"))
    async with agent:
        await agent.send("Hi")
        await receive_until(agent, lambda e: isinstance(e, BidiResponseCompleteEvent))
    assert seen == ["started scripted-1", "response r1", "completed r1 complete", "closed client_disconnect"]
    assert our_tasks() == set()


async def test_a_refusal_is_what_the_model_hears_and_the_tool_never_runs() -> None:
    model = booking([Step(expect=Expect(BidiToolResultEvent), emit=response("r2", transcript("No flight.", rid="r2")))])
    agent = BidiAgent(model=model, tools=[book_flight])
    agent.hooks.before_tool_call(lambda call: Refuse("The user does not want to fly today."))
    async with agent:
        await agent.send("Book me a flight to Oslo.")
        seen = await receive_until(agent, lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r2")
    assert ran == []
    assert answered(model) == {"t1": ("error", "The user does not want to fly today.")}
    results = [e for e in seen if isinstance(e, BidiToolResultEvent)]
    assert [(r.status, r.content) for r in results] == [("error", "The user does not want to fly today.")]
    assert not [e for e in seen if isinstance(e, BidiErrorEvent)]  # a refusal is no error
    model.assert_done()


async def test_a_tool_waits_for_a_persons_yes_while_audio_keeps_flowing() -> None:
    """The model goes on talking (and the user too) while the hook waits; the tool runs after the yes."""
    model = ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="Book me a flight to Oslo."),
                emit=[
                    BidiResponseStartEvent("r1"),
                    BidiToolUseEvent("t1", "book_flight", {"to": "Oslo"}),
                    BidiResponseCompleteEvent("r1", "tool_use"),
                ],
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="Are you still there?"),
                emit=response("r2", *[audio("r2") for _ in range(10)], transcript("I am waiting for you.", rid="r2")),
            ),
            Step(expect=Expect(BidiToolResultEvent), emit=response("r3", transcript("Booked.", rid="r3"))),
        ]
    )
    agent = BidiAgent(model=model, tools=[book_flight])
    asked, yes = anyio.Event(), anyio.Event()

    @agent.hooks.before_tool_call
    async def ask_first(call: BidiToolUseEvent) -> Allow:
        asked.set()
        await yes.wait()  # a person confirms in the app's UI
        return Allow()

    async with agent:
        await agent.send("Book me a flight to Oslo.")
        with anyio.fail_after(10):
            await asked.wait()
        await agent.send("Are you still there?")
        seen = await receive_until(agent, lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r2")
        # A whole answer arrived, its audio included, while the call waited for the yes.
        assert len([e for e in seen if isinstance(e, BidiAudioStreamEvent)]) == 10
        assert ran == [] and answered(model) == {}
        yes.set()
        await receive_until(agent, lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r3", seen)
    assert ran == ["Oslo"]
    assert answered(model) == {"t1": ("success", "booked to Oslo")}
    model.assert_done()
    assert our_tasks() == set()


async def test_a_wait_for_a_yes_ends_with_the_call_when_the_user_barges_in() -> None:
    """A cancel_on_interruption tool: the barge-in cancels the call, its waiting hook too."""
    interruptible = tool(book_flight, cancel_on_interruption=True)
    model = ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="Book me a flight to Oslo."),
                emit=[BidiResponseStartEvent("r1"), BidiToolUseEvent("t1", "book_flight", {"to": "Oslo"}), audio("r1")],
            ),
            Step(expect=Expect(BidiTextInputEvent, text="Stop."), emit=[BidiSpeechStartedEvent()]),
            Step(expect=Expect(BidiToolResultEvent)),
        ]
    )
    agent = BidiAgent(model=model, tools=[interruptible])
    asked, cancelled = anyio.Event(), anyio.Event()

    @agent.hooks.before_tool_call
    async def never_answered(call: BidiToolUseEvent) -> None:
        asked.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with agent:
        await agent.send("Book me a flight to Oslo.")
        with anyio.fail_after(10):
            await asked.wait()
        await agent.send("Stop.")
        await receive_until(agent, lambda e: isinstance(e, BidiToolResultEvent))
        with anyio.fail_after(10):
            await model.consumed()
    assert cancelled.is_set() and ran == []
    assert answered(model)["t1"][0] == "cancelled"
    assert our_tasks() == set()


async def test_an_after_hook_rewrites_the_result() -> None:
    model = booking([Step(expect=Expect(BidiToolResultEvent))])
    agent = BidiAgent(model=model, tools=[book_flight])

    @agent.hooks.after_tool_call
    def redact(call: BidiToolUseEvent, result: BidiToolResultEvent) -> BidiToolResultEvent:
        return BidiToolResultEvent(result.tool_use_id, result.name, result.status, result.content.upper())

    agent.hooks.after_tool_call(lambda call, result: None)  # keeps what the one before it left
    async with agent:
        await agent.send("Book me a flight to Oslo.")
        seen = await receive_until(agent, lambda e: isinstance(e, BidiToolResultEvent))
        with anyio.fail_after(10):
            await model.consumed()
    assert answered(model) == {"t1": ("success", "BOOKED TO OSLO")}
    assert [e.content for e in seen if isinstance(e, BidiToolResultEvent)] == ["BOOKED TO OSLO"]


async def test_a_failing_check_is_reported_and_never_lets_the_call_run() -> None:
    model = booking([Step(expect=Expect(BidiToolResultEvent))])
    agent = BidiAgent(model=model, tools=[book_flight])

    @agent.hooks.before_tool_call
    def broken(call: BidiToolUseEvent) -> None:
        raise KeyError("approver")

    async with agent:
        await agent.send("Book me a flight to Oslo.")
        seen = await receive_until(agent, lambda e: isinstance(e, BidiToolResultEvent))
        with anyio.fail_after(10):
            await model.consumed()
    assert ran == []
    (error,) = [e for e in seen if isinstance(e, BidiErrorEvent)]
    assert (error.code, error.details) == ("hook_error", "KeyError")
    assert "approver" in error.message
    status, content = answered(model)["t1"]
    assert status == "error" and "not run" in content and "approver" not in content  # the model sees no internals


@pytest.mark.parametrize("kind", ["after_tool_call", "on_response_started", "on_interruption"])
async def test_a_hook_that_raises_is_reported_and_the_conversation_goes_on(kind: str) -> None:
    model = ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="Book me a flight to Oslo."),
                emit=[
                    BidiResponseStartEvent("r1"),
                    BidiToolUseEvent("t1", "book_flight", {"to": "Oslo"}),
                    audio("r1"),
                    BidiSpeechStartedEvent(),
                    BidiResponseCompleteEvent("r1", "interrupted"),
                ],
            ),
            Step(expect=Expect(BidiToolResultEvent), emit=response("r2", transcript("Done.", rid="r2"))),
        ]
    )
    agent = BidiAgent(model=model, tools=[book_flight])

    def broken(*args: Any) -> None:
        raise RuntimeError("hook bug")

    getattr(agent.hooks, kind)(broken)
    async with agent:
        await agent.send("Book me a flight to Oslo.")
        seen = await receive_until(agent, lambda e: isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r2")
        if not any(isinstance(e, BidiErrorEvent) for e in seen):
            # A notification hook runs in the hooks' own task: its failure may be reported after
            # what the model said next (the tool's result goes out before the rest of the burst).
            seen += await receive_until(agent, lambda e: isinstance(e, BidiErrorEvent))
    errors = [e for e in seen if isinstance(e, BidiErrorEvent)]
    assert [(e.code, e.details) for e in errors] == [("hook_error", "RuntimeError")]
    assert kind in errors[0].message
    assert answered(model) == {"t1": ("success", "booked to Oslo")}  # after a failed after-hook: the tool's own
    assert any(isinstance(e, BidiInterruptionEvent) for e in seen)
    assert any(isinstance(e, BidiResponseCompleteEvent) and e.response_id == "r2" for e in seen)  # it went on
    assert not any(isinstance(e, BidiConnectionCloseEvent) for e in seen)
