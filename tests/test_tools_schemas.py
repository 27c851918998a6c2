"""Tools: schemas read from type hints and docstrings, the registry, and what a tool call logs."""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any, Literal, Optional

import pytest

from bidi_core.tools import BidiTool, ToolRegistry, stop_conversation, tool
from ports.errors import BidiUsageError
from ports.model import ToolSpec
from tests.tools_support import (
    Point,
    Priority,
    Unit,
    google,
    numpy,
    rest,
    run,
    schema_of,
)

# ---------------------------------------------------------------- schemas


def test_scalar_hints_become_json_types_and_are_required() -> None:
    @tool
    def f(s: str, i: int, x: float, b: bool) -> None:
        """F."""

    assert f.input_schema == {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "x": {"type": "number"},
            "b": {"type": "boolean"},
        },
        "required": ["s", "i", "x", "b"],
        "additionalProperties": False,
    }


def test_optional_allows_null_and_is_required_only_without_default() -> None:
    @tool
    def f(a: str | None, b: Optional[int] = None, c: str = None) -> None:  # type: ignore[assignment]  # noqa: UP045, RUF013
        """F."""

    def null_or(json_type: str) -> dict[str, Any]:
        return {"anyOf": [{"type": json_type}, {"type": "null"}]}

    assert schema_of(f, "a") == null_or("string")
    assert schema_of(f, "b") == {**null_or("integer"), "default": None}
    # `c: str = None` is taken to mean "a string or nothing", as Python used to.
    assert schema_of(f, "c") == {**null_or("string"), "default": None}
    assert f.input_schema["required"] == ["a"]


def test_list_and_dict_hints() -> None:
    @tool
    def f(tags: list[str], scores: dict[str, float], anything: list, mapping: dict) -> None:  # type: ignore[type-arg]
        """F."""

    assert schema_of(f, "tags") == {"type": "array", "items": {"type": "string"}}
    assert schema_of(f, "scores") == {"type": "object", "additionalProperties": {"type": "number"}}
    assert schema_of(f, "anything") == {"type": "array"}
    assert schema_of(f, "mapping") == {"type": "object"}


def test_literal_and_enum_hints_become_enums_with_a_type() -> None:
    @tool
    def f(mode: Literal["fast", "slow"], level: Literal[1, 2, 3], unit: Unit, priority: Priority) -> None:
        """F."""

    assert schema_of(f, "mode") == {"type": "string", "enum": ["fast", "slow"]}
    assert schema_of(f, "level") == {"type": "integer", "enum": [1, 2, 3]}
    assert schema_of(f, "unit") == {"type": "string", "enum": ["celsius", "fahrenheit"]}
    assert schema_of(f, "priority") == {"type": "integer", "enum": [1, 2]}


def test_defaults_are_shown_and_not_required() -> None:
    @tool
    def f(city: str, days: int = 3, unit: Unit = Unit.CELSIUS, tags: list[str] | None = None) -> None:
        """F."""

    assert f.input_schema["required"] == ["city"]
    assert schema_of(f, "days") == {"type": "integer", "default": 3}
    assert schema_of(f, "unit")["default"] == "celsius"  # the JSON value, not the member
    assert schema_of(f, "tags")["default"] is None


def test_annotated_description_and_unannotated_parameter() -> None:
    @tool
    def f(days: Annotated[int, "How many days ahead"], free, other: Any = 1) -> None:  # type: ignore[no-untyped-def]
        """F.

        Args:
            days: overridden by Annotated.
            free: no type at all.
        """

    assert schema_of(f, "days") == {"type": "integer", "description": "How many days ahead"}
    assert schema_of(f, "free") == {"description": "no type at all."}
    assert schema_of(f, "other") == {"default": 1}


@pytest.mark.parametrize("func", [google, numpy, rest], ids=["google", "numpy", "rest"])
def test_descriptions_come_from_the_docstring_in_every_style(func: Any) -> None:
    t = tool(func)
    assert t.description == "Get the weather.\n\nLooks it up in the sky."
    assert schema_of(t, "location")["description"] == "City name or region."
    assert schema_of(t, "units")["description"] == "Metric or imperial."


def test_no_docstring_gives_the_name_in_words() -> None:
    def get_current_weather(city: str) -> str:
        return city

    def getWeatherNow(city: str) -> str:
        return city

    assert tool(get_current_weather).description == "Get current weather"
    assert tool(getWeatherNow).description == "Get weather now"


def star_args(*cities: str) -> None:
    """F."""


def star_kwargs(city: str, **options: str) -> None:
    """F."""


def custom_type(where: Point) -> None:
    """F."""


def int_keys(table: dict[int, str]) -> None:
    """F."""


@pytest.mark.parametrize(
    ("func", "fragment"),
    [
        (star_args, "*args and **kwargs"),
        (star_kwargs, "*args and **kwargs"),
        (custom_type, "parameter 'where' has an unsupported type"),
        (int_keys, "dict keys must be str"),
        (lambda x: x, "'<lambda>' is not accepted"),
    ],
    ids=["args", "kwargs", "custom-class", "int-keys", "lambda-name"],
)
def test_what_the_model_cannot_be_told_about_fails_at_decoration(func: Any, fragment: str) -> None:
    with pytest.raises(BidiUsageError, match=re.escape(fragment)):
        tool(func)


def test_bare_and_configured_decorator_forms() -> None:
    @tool
    def plain(city: str) -> str:
        """Plain."""
        return city

    @tool(name="weather", description="Say the weather.", timeout=2.5, cancel_on_interruption=True)
    def configured(city: str) -> str:
        """Ignored, the description is given."""
        return city

    assert isinstance(plain, BidiTool)
    assert (plain.name, plain.description, plain.timeout) == ("plain", "Plain.", None)
    assert not plain.cancel_on_interruption
    assert isinstance(configured, BidiTool)
    assert (configured.name, configured.description, configured.timeout) == ("weather", "Say the weather.", 2.5)
    assert configured.cancel_on_interruption
    assert not plain.ends_conversation
    assert configured.spec == ToolSpec("weather", "Say the weather.", configured.input_schema)
    # Re-configuring a tool keeps its schema and its argument checking.
    slower = tool(plain, timeout=9)
    assert (slower.name, slower.timeout, slower.input_schema) == ("plain", 9, plain.input_schema)


def test_bad_timeout_is_refused() -> None:
    def f() -> None:
        """F."""

    with pytest.raises(BidiUsageError, match="timeout"):
        tool(f, timeout=0)


async def test_direct_call_passes_through_to_the_function() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    @tool
    async def double(a: int) -> int:
        """Double."""
        return 2 * a

    assert add(2, 3) == 5
    assert add(a=1, b=1) == 2
    assert await double(4) == 8


# ---------------------------------------------------------------- the registry


def test_registry_wraps_plain_functions_and_keeps_order() -> None:
    registry = ToolRegistry([rest, stop_conversation, google])
    assert [s.name for s in registry.specs] == ["rest", "stop_conversation", "google"]
    assert registry.names == frozenset({"rest", "stop_conversation", "google"})
    found = registry.get("google")
    assert isinstance(found, BidiTool)
    assert found.func is google
    assert registry.get("numpy") is None


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(BidiUsageError, match="two tools are named 'google'"):
        ToolRegistry([google, tool(numpy, name="google")])


@pytest.mark.parametrize(
    "tools",
    [[google, 42], [Point], google, stop_conversation],
    ids=["number-in-list", "class-in-list", "one-function", "one-tool"],
)
def test_things_that_are_not_tools_are_refused(tools: Any) -> None:
    with pytest.raises(BidiUsageError):
        ToolRegistry(tools)


def test_interruptible_lists_the_tools_cancelled_on_barge_in() -> None:
    @tool(cancel_on_interruption=True)
    def search(query: str) -> str:
        """Search."""
        return query

    registry = ToolRegistry([google, search, stop_conversation])
    assert registry.interruptible == frozenset({"search"})
    assert ToolRegistry().interruptible == frozenset()


# ---------------------------------------------------------------- logging


async def test_logs_start_and_end_at_debug_and_never_argument_values_above(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bidi_core.tools")

    @tool
    def lookup(secret: str) -> str:
        """Fails, quoting its argument."""
        raise ValueError(f"no such place: {secret}")

    outcome = await run(lookup, {"secret": "hunter2-Paris"})
    assert outcome.result.status == "error"
    records = [r for r in caplog.records if r.name == "bidi_core.tools"]
    debug = "\n".join(r.getMessage() for r in records if r.levelno == logging.DEBUG)
    assert "tool lookup (t1) started" in debug
    assert "tool lookup (t1) finished: error" in debug
    assert any(r.exc_info for r in records)
    loud = [r for r in records if r.levelno >= logging.INFO]
    assert loud  # the failure is visible at WARNING
    for record in loud:
        assert "hunter2" not in record.getMessage()
        assert record.exc_info is None
