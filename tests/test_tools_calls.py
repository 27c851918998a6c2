"""Tools: how calls run: argument checking, threads, timeouts, failures, cancellation."""

from __future__ import annotations

import threading
from typing import Any, Literal

import anyio
import anyio.from_thread
import pytest

from bidi_core.tools import BidiTool, ToolOutcome, ToolRegistry, stop_conversation, tool
from ports.errors import BidiToolError
from tests.tools_support import (
    Priority,
    Unit,
    call,
    google,
    rest,
    run,
)

# ---------------------------------------------------------------- running calls


async def test_sync_tool_runs_in_a_worker_thread() -> None:
    seen: list[int] = []

    @tool
    def where(city: str) -> str:
        """Where it ran."""
        seen.append(threading.get_ident())
        return f"sunny in {city}"

    outcome = await run(where, {"city": "Paris"})
    assert outcome.result.status == "success"
    assert outcome.result.content == "sunny in Paris"
    assert outcome.result.tool_use_id == "t1"
    assert outcome.result.name == "where"
    assert outcome.error is None
    assert not outcome.ends_conversation
    assert len(seen) == 1
    assert seen[0] != threading.get_ident()


async def test_async_tool_is_awaited_in_the_event_loop_and_json_stays_json() -> None:
    seen: list[int] = []

    @tool
    async def forecast(city: str, days: int = 2) -> dict[str, Any]:
        """Forecast."""
        await anyio.lowlevel.checkpoint()
        seen.append(threading.get_ident())
        return {"city": city, "days": [1] * days, "ok": True, "note": None}

    outcome = await run(forecast, {"city": "Oslo"})
    assert outcome.result.status == "success"
    assert outcome.result.content == {"city": "Oslo", "days": [1, 1], "ok": True, "note": None}
    assert seen == [threading.get_ident()]


class Reading:
    def __str__(self) -> str:
        return "21 degrees"


READING = Reading()


@pytest.mark.parametrize(
    ("value", "content"),
    [
        (READING, "21 degrees"),
        ({"when": READING}, str({"when": READING})),
        ((1, 2), [1, 2]),
        (None, None),
        (3.5, 3.5),
        (float("nan"), "nan"),
    ],
    ids=["object", "dict-with-object", "tuple", "none", "float", "nan"],
)
async def test_return_values_become_json_or_text(value: Any, content: Any) -> None:
    @tool
    def give() -> Any:
        """Give."""
        return value

    outcome = await run(give)
    assert outcome.result.status == "success"
    assert outcome.result.content == content


@tool
def weather(
    location: str,
    days: int = 1,
    unit: Unit = Unit.CELSIUS,
    mode: Literal["brief", "full"] = "brief",
    hours: list[int] | None = None,
    limits: dict[str, float] | None = None,
) -> str:
    """Weather."""
    called.append((location, days, unit, mode, hours, limits))
    return "ok"


called: list[tuple[Any, ...]] = []


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "'location' is required"),
        ({"location": "Paris", "city": "Paris"}, "unknown argument 'city'"),
        ({"location": "Paris", "days": True}, "'days' must be an integer, got boolean"),
        ({"location": "Paris", "days": "2"}, "'days' must be an integer, got string"),
        ({"location": "Paris", "days": 2.5}, "'days' must be an integer, got number"),
        ({"location": None}, "'location' must be a string, got null"),
        ({"location": "Paris", "unit": "kelvin"}, '\'unit\' must be one of "celsius", "fahrenheit", got "kelvin"'),
        ({"location": "Paris", "mode": "long"}, '\'mode\' must be one of "brief", "full", got "long"'),
        ({"location": "Paris", "hours": [1, "2"]}, "'hours[1]' must be an integer, got string"),
        ({"location": "Paris", "limits": {"rain": "a lot"}}, "'limits['rain']' must be a number, got string"),
        ({"location": "Paris", "limits": [1.0]}, "'limits' must be an object, got array"),
        (["Paris"], "expected an object, got array"),
    ],
    ids=[
        "missing",
        "unknown",
        "bool-for-int",
        "str-for-int",
        "fraction-for-int",
        "none-for-str",
        "bad-enum",
        "bad-literal",
        "list-item",
        "dict-value",
        "list-for-dict",
        "not-an-object",
    ],
)
async def test_bad_arguments_are_refused_before_the_call(arguments: Any, problem: str) -> None:
    called.clear()
    outcome = await run(weather, arguments)
    assert outcome.result.status == "error"
    assert outcome.result.content.startswith("Invalid arguments for weather: ")
    assert problem in outcome.result.content
    assert isinstance(outcome.error, BidiToolError)
    assert str(outcome.error) == outcome.result.content
    assert called == []


async def test_every_problem_is_reported_at_once() -> None:
    outcome = await run(weather, {"days": False, "town": "x"})
    content = outcome.result.content
    assert "'location' is required" in content
    assert "'days' must be an integer" in content
    assert "unknown argument 'town' (accepted: 'location', 'days', 'unit', 'mode', 'hours', 'limits')" in content


async def test_valid_json_is_converted_to_the_hinted_python_types() -> None:
    called.clear()
    arguments = {"location": "Rome", "days": 3.0, "unit": "fahrenheit", "mode": "full", "hours": [6, 18]}
    outcome = await run(weather, {**arguments, "limits": {"wind": 5}})
    assert outcome.result.status == "success"
    assert called == [("Rome", 3, Unit.FAHRENHEIT, "full", [6, 18], {"wind": 5.0})]
    (_, days, unit, _, _, limits) = called[0]
    assert type(days) is int
    assert type(unit) is Unit
    assert type(limits["wind"]) is float


async def test_int_for_float_becomes_float_and_null_for_optional_is_none() -> None:
    got: list[Any] = []

    @tool
    def f(x: float, y: int | None, p: Priority = Priority.LOW) -> None:
        """F."""
        got.extend([x, y, p])

    outcome = await run(f, {"x": 2, "y": None, "p": 2})
    assert outcome.result.status == "success"
    assert got == [2.0, None, Priority.HIGH]
    assert type(got[0]) is float
    assert type(got[2]) is Priority


async def test_positional_only_parameters_are_passed_positionally() -> None:
    @tool
    def f(a: int, b: int = 10, /, c: int = 100) -> int:
        """F."""
        return a + b + c

    assert (await run(f, {"a": 1})).result.content == 111
    assert (await run(f, {"a": 1, "b": 2, "c": 3})).result.content == 6


async def test_raising_tool_gives_an_error_outcome_with_the_exception() -> None:
    error = ValueError("bad city")

    @tool
    def get_weather(location: str) -> str:
        """Weather."""
        raise error

    outcome = await run(get_weather, {"location": "Atlantis"})
    assert outcome.result.status == "error"
    assert outcome.result.content == "get_weather failed: ValueError: bad city"
    assert outcome.error is error
    assert outcome.result.tool_use_id == "t1"


class Fatal(BaseException):
    pass


async def test_base_exceptions_that_are_not_exceptions_propagate() -> None:
    @tool
    async def explode() -> None:
        """Explode."""
        raise Fatal

    @tool
    def explode_in_thread() -> None:
        """Explode in a thread."""
        raise Fatal

    with pytest.raises(Fatal):
        await run(explode)
    with pytest.raises(Fatal):
        await run(explode_in_thread)


async def test_async_tool_past_its_timeout_gives_an_error_outcome() -> None:
    never = anyio.Event()
    cancelled: list[bool] = []

    @tool(timeout=0.05)
    async def get_weather() -> str:
        """Weather."""
        try:
            await never.wait()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise
        return "never"

    outcome = await run(get_weather)
    assert outcome.result.status == "error"
    assert outcome.result.content == "get_weather timed out after 0.05s"
    assert isinstance(outcome.error, BidiToolError)
    assert cancelled == [True]


async def test_sync_tool_can_stop_at_its_timeout_by_checking_for_cancellation() -> None:
    stop = threading.Event()  # never set: only the timeout ends the loop

    @tool(timeout=0.05)
    def crunch() -> str:
        """Crunch."""
        while not stop.wait(0.005):
            anyio.from_thread.check_cancelled()
        return "never"

    outcome = await run(crunch)
    assert outcome.result.content == "crunch timed out after 0.05s"
    assert isinstance(outcome.error, BidiToolError)


async def test_sync_tool_that_overruns_is_waited_for_and_still_times_out() -> None:
    finished: list[bool] = []

    @tool(timeout=0.01)
    def slow() -> str:
        """Slow: takes far longer than its timeout and cannot be interrupted."""
        threading.Event().wait(0.2)
        finished.append(True)
        return "too late"

    outcome = await run(slow)
    assert finished == [True]  # the thread was waited for, not abandoned
    assert outcome.result.status == "error"
    assert outcome.result.content == "slow timed out after 0.01s"


async def test_a_tool_raising_timeout_error_itself_is_a_failure_not_a_timeout() -> None:
    @tool(timeout=30)
    async def fetch() -> str:
        """Fetch."""
        raise TimeoutError("upstream took too long")

    outcome = await run(fetch)
    assert outcome.result.content == "fetch failed: TimeoutError: upstream took too long"
    assert isinstance(outcome.error, TimeoutError)


async def test_cancelling_the_caller_propagates_out_of_an_async_tool() -> None:
    started = anyio.Event()
    never = anyio.Event()
    tool_saw_cancel: list[bool] = []

    @tool
    async def wait_forever() -> str:
        """Wait."""
        started.set()
        try:
            await never.wait()
        except anyio.get_cancelled_exc_class():
            tool_saw_cancel.append(True)
            raise
        return "never"

    registry = ToolRegistry([wait_forever])
    outcomes: list[ToolOutcome] = []
    scope = anyio.CancelScope()

    async def execute() -> None:
        with scope:
            outcomes.append(await registry.execute(call("wait_forever")))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(execute)
            await started.wait()
            scope.cancel()
    assert scope.cancel_called
    assert scope.cancelled_caught
    assert outcomes == []
    assert tool_saw_cancel == [True]


async def test_cancelling_the_caller_of_a_sync_tool_waits_for_it_then_propagates() -> None:
    started = anyio.Event()
    release = threading.Event()
    returned: list[bool] = []

    @tool
    def blocking() -> str:
        """Block until released."""
        anyio.from_thread.run_sync(started.set)
        release.wait()
        returned.append(True)
        return "done"

    registry = ToolRegistry([blocking])
    outcomes: list[ToolOutcome] = []
    scope = anyio.CancelScope()

    async def execute() -> None:
        with scope:
            outcomes.append(await registry.execute(call("blocking")))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(execute)
            await started.wait()
            scope.cancel()
            await anyio.lowlevel.checkpoint()
            assert returned == []  # still blocked: cancelling cannot kill a thread
            release.set()
    assert returned == [True]
    assert scope.cancelled_caught
    assert outcomes == []  # the late value is dropped, no result for a cancelled call


async def test_unknown_tool_gives_an_error_outcome_listing_the_tools() -> None:
    registry = ToolRegistry([google, rest])
    outcome = await registry.execute(call("numpy", {"location": "x"}, tool_use_id="t9"))
    assert outcome.result.status == "error"
    assert outcome.result.content == "Unknown tool 'numpy'. Available tools: google, rest"
    assert (outcome.result.tool_use_id, outcome.result.name) == ("t9", "numpy")
    assert isinstance(outcome.error, BidiToolError)


async def test_stop_conversation_ends_the_conversation() -> None:
    assert stop_conversation.name == "stop_conversation"
    assert stop_conversation.input_schema["properties"] == {}
    assert "end the conversation" in stop_conversation.description
    outcome = await run(stop_conversation)
    assert outcome.result.status == "success"
    assert outcome.result.content == "Ending the conversation."
    assert outcome.ends_conversation is True
    assert outcome.error is None


async def test_hand_built_tool_gets_its_arguments_as_they_come() -> None:
    def raw(**kwargs: Any) -> Any:
        return kwargs

    t = BidiTool(
        name="raw",
        description="Raw.",
        input_schema={"type": "object", "properties": {"q": {"type": "string"}}},
        func=raw,
    )
    outcome = await run(t, {"q": "x", "n": [1]})
    assert outcome.result.content == {"q": "x", "n": [1]}


async def test_callable_object_becomes_a_tool_named_after_its_class() -> None:
    class Lookup:
        """Look a word up."""

        def __call__(self, word: str) -> str:
            return word.upper()

    outcome = await run(Lookup(), {"word": "hi"})
    assert outcome.result.content == "HI"
    assert ToolRegistry([Lookup()]).specs[0].description == "Look a word up."
