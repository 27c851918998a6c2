"""Fuzz a tool exactly as the model calls it: arguments drawn from the tool's own JSON schema."""

from __future__ import annotations

from typing import Any, Literal

from hypothesis import given

from adapters.testing.strategies import invalid_tool_arguments, tool_arguments
from bidi_core import BidiToolUseEvent, tool
from bidi_core.tools import ToolRegistry


@tool
def book_table(restaurant: str, guests: int, time: Literal["19:00", "20:00", "21:00"] = "20:00") -> str:
    """Book a table at a restaurant.

    Args:
        restaurant: The restaurant's name.
        guests: How many people are coming.
        time: When.
    """
    if not 1 <= guests <= 12:
        raise ValueError("we seat 1 to 12 guests")
    return f"A table for {guests} at {restaurant}, {time}."


registry = ToolRegistry([book_table])


@given(arguments=tool_arguments(book_table))
async def test_every_call_the_model_can_make_gets_an_answer(arguments: dict[str, Any]) -> None:
    outcome = await registry.execute(BidiToolUseEvent("call_1", "book_table", arguments))
    if 1 <= arguments["guests"] <= 12:
        assert outcome.result.status == "success"
    else:
        assert outcome.result.status == "error"
        assert "we seat 1 to 12 guests" in outcome.result.content


@given(arguments=invalid_tool_arguments(book_table))
async def test_a_malformed_call_is_refused_before_the_tool_runs(arguments: dict[str, Any]) -> None:
    outcome = await registry.execute(BidiToolUseEvent("call_1", "book_table", arguments))
    assert outcome.result.status == "error"
    assert "we seat" not in outcome.result.content  # the arguments were refused: book_table never ran
