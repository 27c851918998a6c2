"""What the tool tests share: enums and a type with no JSON form for the hints, one tool documented in each
docstring style (Google, numpy, reST), and helpers that build a call and run it through a registry.
"""

from __future__ import annotations

import enum
from typing import Any

import anyio
import anyio.from_thread

from bidi_core.tools import BidiTool, ToolOutcome, ToolRegistry, tool
from ports.events import BidiToolUseEvent


class Unit(enum.StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Point:
    """A type with no JSON form."""


def schema_of(t: BidiTool, param: str) -> dict[str, Any]:
    return dict(t.input_schema["properties"][param])


def call(name: str, arguments: Any = None, tool_use_id: str = "t1") -> BidiToolUseEvent:
    return BidiToolUseEvent(tool_use_id, name, {} if arguments is None else arguments)


async def run(t: BidiTool | Any, arguments: Any = None) -> ToolOutcome:
    registry = ToolRegistry([t])
    (name,) = registry.names
    with anyio.fail_after(5):
        return await registry.execute(call(name, arguments))


def google(location: str, units: str = "metric") -> str:
    """Get the weather.

    Looks it up in the sky.

    Args:
        location: City name
            or region.
        units: Metric or imperial.

    Returns:
        A sentence.
    """
    return location


def numpy(location: str, units: str = "metric") -> str:
    """Get the weather.

    Looks it up in the sky.

    Parameters
    ----------
    location : str
        City name or region.
    units : str, optional
        Metric or imperial.

    Returns
    -------
    str
        A sentence.
    """
    return location


def rest(location: str, units: str = "metric") -> str:
    """Get the weather.

    Looks it up in the sky.

    :param location: City name or region.
    :param units: Metric or imperial.
    :returns: A sentence.
    """
    return location


def slow_lookup_tool(release: anyio.Event) -> BidiTool:
    """A ``slow_lookup`` tool that answers ``found <query>`` once ``release`` is set."""

    @tool
    async def slow_lookup(query: str) -> str:
        """Look up, slowly.

        Args:
            query: What to look up.
        """
        await release.wait()
        return f"found {query}"

    return slow_lookup
