"""What each way a tool call can end comes to (ToolRegistry.execute): the
result, the error behind it, whether the conversation ends, and the log
lines that tell the story, exactly."""

from __future__ import annotations

import logging
import re
import threading
import time

import anyio
import anyio.from_thread
import attrs
import pytest

from bidi_core import BidiToolError, stop_conversation, tool
from bidi_core.tools import BidiTool, ToolOutcome, ToolRegistry
from tests.tools_support import call, run

LOGGER = "bidi_core.tools"


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def elapsed_in(message: str) -> float:
    found = re.search(r" in (\d+\.\d{3})s$", message)
    assert found, message
    return float(found.group(1))


def ending(t: BidiTool) -> BidiTool:
    """``t``, ending the conversation when called (as stop_conversation does)."""
    return attrs.evolve(t, ends_conversation=True)


@tool
def greet(name: str) -> str:
    """Greet someone.

    Args:
        name: Who.
    """
    return f"Hello {name}"


@tool
def explode() -> str:
    """Always fails."""
    raise ValueError("kaboom")


@tool
def explode_silently() -> str:
    """Fails with an exception that says nothing."""
    raise ValueError


# ---------------------------------------------------------------- outcomes and their log lines


async def test_success_logs_start_and_end_at_debug_with_the_time_it_took(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    before = time.monotonic()
    outcome = await run(greet, {"name": "Ada"})
    took = time.monotonic() - before
    assert outcome == ToolOutcome(outcome.result)
    assert (outcome.result.status, outcome.result.content) == ("success", "Hello Ada")
    (start, end) = records(caplog)
    assert start == (logging.DEBUG, "tool greet (t1) started")
    assert end[0] == logging.DEBUG
    assert end[1].startswith("tool greet (t1) finished: success in ")
    assert 0 <= elapsed_in(end[1]) <= took + 0.001


async def test_bad_arguments_log_the_problem_at_debug_and_the_tool_never_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    outcome = await run(greet, {"nom": "Ada"})
    problem = "Invalid arguments for greet: 'name' is required; unknown argument 'nom' (accepted: 'name')"
    assert (outcome.result.status, outcome.result.content) == ("error", problem)
    assert isinstance(outcome.error, BidiToolError)
    assert str(outcome.error) == problem
    assert not outcome.ends_conversation
    assert records(caplog) == [(logging.DEBUG, f"tool greet (t1): {problem}")]


async def test_an_unknown_tool_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    outcome = await ToolRegistry([greet]).execute(call("nope", tool_use_id="t7"))
    assert outcome.result.content == "Unknown tool 'nope'. Available tools: greet"
    assert str(outcome.error) == "Unknown tool 'nope'. Available tools: greet"
    assert not outcome.ends_conversation
    assert records(caplog) == [(logging.DEBUG, "unknown tool 'nope' (t7)")]


async def test_an_unknown_tool_when_there_are_none() -> None:
    outcome = await ToolRegistry().execute(call("nope"))
    assert outcome.result.content == "Unknown tool 'nope'. Available tools: none"


async def test_a_raising_tool_is_a_warning_naming_the_exception_type_and_a_debug_line_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    outcome = await run(explode)
    assert (outcome.result.status, outcome.result.content) == ("error", "explode failed: ValueError: kaboom")
    assert isinstance(outcome.error, ValueError)
    logged = records(caplog)
    assert logged[:2] == [
        (logging.DEBUG, "tool explode (t1) started"),
        (logging.WARNING, "tool explode (t1) raised ValueError"),
    ]
    assert logged[2][1].startswith("tool explode (t1) finished: error in ")
    assert len(logged) == 3
    (debug,) = [r for r in caplog.records if r.exc_info]
    assert debug.exc_info is not None
    assert debug.exc_info[1] is outcome.error


async def test_an_exception_without_a_message_is_named_by_its_type() -> None:
    outcome = await run(explode_silently)
    assert outcome.result.content == "explode_silently failed: ValueError"


async def test_a_timeout_is_a_warning_and_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    @tool(timeout=0.01)
    async def hang() -> str:
        """Hangs."""
        await anyio.sleep_forever()
        return "never"  # pragma: no cover

    outcome = await run(hang)
    assert (outcome.result.status, outcome.result.content) == ("error", "hang timed out after 0.01s")
    assert isinstance(outcome.error, BidiToolError)
    assert str(outcome.error) == "hang timed out after 0.01s"
    assert outcome.error.__cause__ is None
    logged = records(caplog)
    assert logged[:2] == [
        (logging.DEBUG, "tool hang (t1) started"),
        (logging.WARNING, "tool hang (t1) timed out after 0.01s"),
    ]
    assert logged[2][1].startswith("tool hang (t1) finished: timeout in ")
    assert len(logged) == 3


async def test_a_sync_tool_that_overruns_and_then_raises_is_a_timeout_caused_by_its_exception() -> None:
    never = threading.Event()

    @tool(timeout=0.01)
    def overrun() -> str:
        """Overruns, then fails."""
        while True:  # until the deadline has cancelled the call
            try:
                anyio.from_thread.check_cancelled()
            except BaseException:
                break
            never.wait(0.001)
        raise OSError("disk gone")

    outcome = await run(overrun)
    assert outcome.result.content == "overrun timed out after 0.01s"
    assert isinstance(outcome.error, BidiToolError)
    assert isinstance(outcome.error.__cause__, OSError)
    assert str(outcome.error.__cause__) == "disk gone"


# ---------------------------------------------------------------- a tool that ends the conversation


@pytest.mark.parametrize(
    ("arguments", "content"),
    [({}, "Ending the conversation."), ({"reason": "bye"}, "unknown argument 'reason'")],
    ids=["fine", "bad-arguments"],
)
async def test_stop_conversation_ends_the_conversation_whether_or_not_its_call_is_valid(
    arguments: dict[str, str], content: str
) -> None:
    outcome = await run(stop_conversation, arguments)
    assert content in str(outcome.result.content)
    assert outcome.ends_conversation


async def test_a_tool_that_ends_the_conversation_ends_it_when_it_fails_and_when_it_times_out() -> None:
    @tool(timeout=0.01)
    async def hang_up_slowly() -> str:
        """Hangs."""
        await anyio.sleep_forever()
        return "never"  # pragma: no cover

    failed = await run(ending(explode))
    assert (failed.result.status, failed.ends_conversation) == ("error", True)
    timed_out = await run(ending(hang_up_slowly))
    assert (timed_out.result.status, timed_out.ends_conversation) == ("error", True)
    assert not (await run(explode)).ends_conversation


# ---------------------------------------------------------------- how the function is called


async def test_an_async_tool_gets_positional_only_parameters_positionally() -> None:
    @tool
    async def scale(value: float, /, factor: float = 2.0) -> float:
        """Scale."""
        return value * factor

    outcome = await run(scale, {"value": 3, "factor": 3})
    assert outcome.result.content == 9.0


async def test_cancelling_the_caller_of_a_sync_tool_with_a_timeout_waits_for_it_then_propagates() -> None:
    """The deadline's own scope must not swallow a cancellation that came from
    outside, nor turn the late value into a success."""
    started = anyio.Event()
    release = threading.Event()
    returned: list[bool] = []

    @tool(timeout=30)
    def blocking() -> str:
        """Block until released."""
        anyio.from_thread.run_sync(started.set)
        release.wait(10)
        returned.append(True)
        return "done"

    registry = ToolRegistry([blocking])
    outcomes: list[ToolOutcome] = []
    scope = anyio.CancelScope()

    async def execute() -> None:
        with scope:
            outcomes.append(await registry.execute(call("blocking")))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(execute)
            await started.wait()
            scope.cancel()
            release.set()
    assert returned == [True]
    assert scope.cancelled_caught
    assert outcomes == []
