"""Nothing of ours outlives run(), stop() or a cancellation, wherever it lands."""

from __future__ import annotations

import threading

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.testing import Expect, ScriptedModel, Step
from bidi_core import (
    BidiAgent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    stop_conversation,
    tool,
)
from ports.events import BidiResponseCompleteEvent
from tests.support import RecordingOutput, ScriptedInput, audio, our_tasks, response, transcript

running_tools = 0
running_lock = threading.Lock()


@tool
def slow_lookup(query: str) -> str:
    """A blocking lookup (runs in a worker thread).

    Args:
        query: What to look up.
    """
    global running_tools
    with running_lock:
        running_tools += 1
    try:
        threading.Event().wait(0.002)
        return f"found {query}"
    finally:
        with running_lock:
            running_tools -= 1


@tool
async def async_lookup(query: str) -> str:
    """A lookup that waits on the network (here: on the event loop).

    Args:
        query: What to look up.
    """
    global running_tools
    running_tools += 1
    try:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        return f"async {query}"
    finally:
        running_tools -= 1


def conversation() -> ScriptedModel:
    return ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="look things up"),
                emit=[
                    BidiResponseStartEvent("r1"),
                    *[audio("r1") for _ in range(5)],
                    BidiToolUseEvent("t1", "slow_lookup", {"query": "a"}),
                    BidiToolUseEvent("t2", "async_lookup", {"query": "b"}),
                ],
            ),
            Step(
                expect=[Expect(BidiToolResultEvent, tool_use_id="t1"), Expect(BidiToolResultEvent, tool_use_id="t2")],
                emit=[
                    BidiResponseCompleteEvent("r1", "tool_use"),
                    *response("r2", *[audio("r2") for _ in range(5)], transcript("Found both.", rid="r2")),
                    BidiToolUseEvent("t3", "stop_conversation", {}),
                ],
            ),
        ],
        match=(BidiTextInputEvent, BidiToolResultEvent),
    )


async def test_run_ends_by_itself_and_leaves_nothing_running() -> None:
    model = conversation()
    out = RecordingOutput()
    inp = ScriptedInput(["look things up"])
    with anyio.fail_after(10):
        await BidiAgent(model=model, tools=[slow_lookup, async_lookup, stop_conversation]).run([inp], [out])
    model.assert_done()
    assert out.events[-1].type == "bidi_connection_close"
    assert our_tasks() == set()
    assert model.open_connections == 0
    assert running_tools == 0
    assert inp.stopped and out.stopped


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(checkpoints=st.integers(min_value=0, max_value=400))
async def test_cancellation_at_any_point_leaves_nothing_running(checkpoints: int) -> None:
    model = conversation()
    out = RecordingOutput()
    inp = ScriptedInput(["look things up"])
    agent = BidiAgent(model=model, tools=[slow_lookup, async_lookup, stop_conversation])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def cancel_later(scope: anyio.CancelScope) -> None:
                for _ in range(checkpoints):
                    await anyio.lowlevel.checkpoint()
                scope.cancel()

            with anyio.CancelScope() as scope:
                tg.start_soon(cancel_later, scope)
                await agent.run([inp], [out])
            tg.cancel_scope.cancel()
    assert our_tasks() == set()
    assert model.open_connections == 0
    assert running_tools == 0
    assert inp.stopped and out.stopped
    # Whatever was cut short, the agent is finished: it cannot be used again.
    assert agent.phase.value == "closed"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(checkpoints=st.integers(min_value=0, max_value=300))
async def test_cancelling_the_manual_style_at_any_point(checkpoints: int) -> None:
    model = conversation()
    agent = BidiAgent(model=model, tools=[slow_lookup, async_lookup, stop_conversation])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:

                async def cancel_later() -> None:
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                tg.start_soon(cancel_later)
                async with agent:
                    await agent.send("look things up")
                    async for _event in agent.receive():
                        pass
            tg.cancel_scope.cancel()
    assert our_tasks() == set()
    assert model.open_connections == 0
    assert running_tools == 0
