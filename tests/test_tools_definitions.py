"""Tool definitions @tool, BidiTool and ToolRegistry refuse, each with the
BidiUsageError that says why (bidi_core/tools.py), and the ones they accept
that look odd (a lambda given a name, a partial, a callable object)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bidi_core import BidiUsageError, stop_conversation, tool
from bidi_core.tools import BidiTool, ToolRegistry
from tests.tools_support import Point, google, rest, run


def plain(city: str) -> str:
    """Plain."""
    return city


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize(
    "timeout",
    [True, False, math.inf, -math.inf, math.nan, -1, -0.5, 0, 0.0, "5", [5]],
    ids=["True", "False", "inf", "-inf", "nan", "-1", "-0.5", "0", "0.0", "str", "list"],
)
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused(timeout: Any) -> None:
    message = f"a tool timeout must be a positive number of seconds or None, got {timeout!r}"
    with pytest.raises(BidiUsageError, match=re.escape(message)):
        tool(plain, timeout=timeout)
    with pytest.raises(BidiUsageError, match=re.escape(message)):
        tool(tool(plain), timeout=timeout)  # re-configuring a tool checks it too
    with pytest.raises(BidiUsageError, match=re.escape(message)):
        BidiTool(name="plain", description="Plain.", input_schema={}, func=plain, timeout=timeout)


@pytest.mark.parametrize("timeout", [None, 0.001, 1, 2.5, 86400])
def test_positive_finite_timeouts_and_none_are_accepted(timeout: float | None) -> None:
    assert tool(plain, timeout=timeout).timeout == timeout


# ---------------------------------------------------------------- names


def test_a_name_of_64_characters_is_accepted_and_one_of_65_refused() -> None:
    assert tool(plain, name="a" * 64).name == "a" * 64
    message = (
        f"tool name {'a' * 65!r} is not accepted by the providers: use 1 to 64 letters, digits, '_' or '-' "
        "(pass name=... to @tool)"
    )
    with pytest.raises(BidiUsageError, match=re.escape(message)):
        tool(plain, name="a" * 65)


@pytest.mark.parametrize("name", ["", "get weather", "wetter.heute", "météo", "a/b", 42, None])
def test_names_the_providers_refuse_are_refused(name: Any) -> None:
    with pytest.raises(BidiUsageError, match=re.escape(f"tool name {name!r} is not accepted by the providers")):
        BidiTool(name=name, description="D.", input_schema={}, func=plain)


def test_a_lambda_needs_a_name_and_then_needs_no_docstring() -> None:
    """@tool asks for no docstring (without one the description is the name in
    words); a lambda only lacks a name the providers take."""
    with pytest.raises(BidiUsageError, match=re.escape("tool name '<lambda>' is not accepted")):
        tool(lambda city: city)
    named = tool(lambda: "pong", name="ping_server")
    assert (named.name, named.description) == ("ping_server", "Ping server")
    assert named.input_schema["properties"] == {}


def test_the_tool_name_is_in_the_errors_about_its_parameters() -> None:
    def locate(where: Point) -> None:
        """Locate."""

    with pytest.raises(BidiUsageError, match=re.escape("tool locate: parameter 'where' has an unsupported type")):
        tool(locate)
    with pytest.raises(BidiUsageError, match=re.escape("tool find: parameter 'where' has an unsupported type")):
        tool(locate, name="find")


# ---------------------------------------------------------------- what is not a function returning one value


def generate(city: str) -> Iterator[str]:
    """Yield forecasts."""
    yield city


async def agenerate(city: str) -> AsyncIterator[str]:
    """Yield forecasts."""
    yield city


class Forecaster:
    """A class: calling it makes an object, not a result."""

    def __init__(self, city: str) -> None:
        self.city = city


class Streaming:
    """A callable object whose call yields."""

    def __call__(self, city: str) -> Iterator[str]:
        yield city


class Station:
    """An object whose method yields: the bound method is a generator function too."""

    def readings(self, city: str) -> Iterator[str]:
        """Yield readings."""
        yield city


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (generate, "tool 'generate': a tool returns one value; it cannot be a generator"),
        (agenerate, "tool 'agenerate': a tool returns one value; it cannot be a generator"),
        (functools.partial(generate, "Paris"), "tool 'generate': a tool returns one value; it cannot be a generator"),
        (Streaming(), "tool 'Streaming': a tool returns one value; it cannot be a generator"),
        (Station().readings, "tool 'readings': a tool returns one value; it cannot be a generator"),
        (Forecaster, f"@tool takes a function, got {Forecaster!r}"),
        (Point, f"@tool takes a function, got {Point!r}"),
        (42, "@tool takes a function, got 42"),
        ("plain", "@tool takes a function, got 'plain'"),
    ],
    ids=[
        "generator",
        "async-generator",
        "partial-generator",
        "generator-object",
        "generator-method",
        "class",
        "class2",
        "int",
        "str",
    ],
)
def test_what_does_not_return_one_value_is_refused(func: Any, message: str) -> None:
    with pytest.raises(BidiUsageError, match=re.escape(message)):
        tool(func)


def test_a_func_that_is_not_callable_is_refused_by_bidi_tool() -> None:
    with pytest.raises(BidiUsageError, match=re.escape("a tool's func must be callable, got int")):
        BidiTool(name="n", description="D.", input_schema={}, func=42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- what is accepted


async def test_a_partial_is_named_and_described_after_its_function() -> None:
    t = tool(functools.partial(google, units="imperial"))
    assert t.name == "google"
    assert t.description == "Get the weather.\n\nLooks it up in the sky."
    nested = tool(functools.partial(functools.partial(rest), units="metric"))
    assert nested.name == "rest"


def test_a_callable_object_is_named_after_its_class() -> None:
    class Lookup:
        def __call__(self, word: str) -> str:
            return word

    assert tool(Lookup()).name == "Lookup"


def test_re_decorating_a_tool_changes_only_what_is_given() -> None:
    base = tool(plain)
    assert tool(base) is base  # nothing to change
    assert tool(base, name="city").name == "city"
    assert tool(base, description="Say the city.").description == "Say the city."
    interruptible = tool(base, cancel_on_interruption=True)
    assert interruptible.cancel_on_interruption
    assert (interruptible.name, interruptible.description, interruptible.timeout) == ("plain", "Plain.", None)
    assert interruptible.input_schema == base.input_schema
    # stop_conversation stays what it is, only slower to give up.
    patient = tool(stop_conversation, timeout=3)
    assert patient.ends_conversation
    assert (patient.name, patient.timeout) == ("stop_conversation", 3)


async def test_a_reconfigured_tool_keeps_checking_its_arguments() -> None:
    renamed = tool(tool(plain), name="city")
    outcome = await run(renamed, {"city": 3})
    assert outcome.result.status == "error"
    assert outcome.result.content == "Invalid arguments for city: 'city' must be a string, got integer"


# ---------------------------------------------------------------- the registry


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        (plain, "tools must be a list of functions or BidiTools, got function"),
        (tool(plain), "tools must be a list of functions or BidiTools, got BidiTool"),
        ("plain", "tools must be a list of functions or BidiTools, got str"),
        (b"plain", "tools must be a list of functions or BidiTools, got bytes"),
        (42, "tools must be a list of functions or BidiTools, got int"),
        ([plain, 42], "a tool must be a function or a BidiTool, got 42"),
        ([Forecaster], f"a tool must be a function or a BidiTool, got {Forecaster!r}"),
    ],
    ids=["function", "tool", "str", "bytes", "int", "int-in-list", "class-in-list"],
)
def test_the_registry_refuses_what_is_not_a_list_of_tools(tools: Any, message: str) -> None:
    with pytest.raises(BidiUsageError, match=re.escape(message)):
        ToolRegistry(tools)


def test_a_callable_list_is_taken_for_one_function_and_refused() -> None:
    class Toolbox(list[Any]):
        def __call__(self) -> None:
            """A list that can be called."""

    with pytest.raises(BidiUsageError, match="tools must be a list of functions or BidiTools, got Toolbox"):
        ToolRegistry(Toolbox([plain]))


def test_the_registry_names_its_tools_sorted() -> None:
    assert repr(ToolRegistry([rest, google])) == "<ToolRegistry ['google', 'rest']>"
    assert repr(ToolRegistry()) == "<ToolRegistry []>"
