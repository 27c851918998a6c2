"""How inputs and outputs plug into the agent.

Inputs and outputs follow the reference's protocols (``start(agent)``,
``__call__``, ``stop()``; see :mod:`ports.io`), and plain async callables are
accepted too, so ``websocket.receive_json`` can be an input. What an input
produces may be an input event, its dict form or a string; this module turns
each into an input event or a clear :class:`BidiUsageError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

from ports.errors import BidiUsageError
from ports.events import (
    BidiAudioInputEvent,
    BidiImageInputEvent,
    BidiInputEvent,
    BidiOutputEvent,
    BidiTextInputEvent,
    event_from_dict,
)
from ports.io import BidiInput, BidiOutput

__all__ = [
    "InputLike",
    "OutputLike",
    "adapt_input",
    "adapt_output",
    "coerce_input",
    "inline_offer",
    "reports_playback",
]

InputLike: TypeAlias = BidiInput | Callable[[], Awaitable[Any]]
"""A :class:`ports.io.BidiInput` or a plain async callable returning an input."""
OutputLike: TypeAlias = BidiOutput | Callable[[BidiOutputEvent], Awaitable[Any]]
"""A :class:`ports.io.BidiOutput` or a plain async callable taking an event."""

_INPUT_TYPES = (BidiTextInputEvent, BidiAudioInputEvent, BidiImageInputEvent)


def coerce_input(value: object) -> BidiInputEvent:
    """Accept what the reference's ``send()`` accepts: a string, an input
    event, or an input event's dict form."""
    if isinstance(value, str):
        return BidiTextInputEvent(text=value)
    if isinstance(value, _INPUT_TYPES):
        return value
    if isinstance(value, Mapping):
        event = event_from_dict(value)
        if not isinstance(event, _INPUT_TYPES):
            raise BidiUsageError(f"send() takes input events; {event.type!r} is an output event")
        return event
    raise BidiUsageError(
        f"send() takes a str, a BidiTextInputEvent/BidiAudioInputEvent/BidiImageInputEvent or its dict form, "
        f"not {type(value).__name__}"
    )


class _CallableInput:
    """A plain async callable used as an input."""

    def __init__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self._fn = fn

    async def start(self, agent: Any) -> None:
        return None

    async def __call__(self) -> Any:
        return await self._fn()

    async def stop(self) -> None:
        return None


class _CallableOutput:
    """A plain async callable used as an output."""

    reports_playback = False

    def __init__(self, fn: Callable[[BidiOutputEvent], Awaitable[Any]]) -> None:
        self._fn = fn

    async def start(self, agent: Any) -> None:
        return None

    async def __call__(self, event: BidiOutputEvent) -> None:
        await self._fn(event)

    async def stop(self) -> None:
        return None


def _has_lifecycle(obj: object) -> bool:
    return callable(getattr(obj, "start", None)) and callable(getattr(obj, "stop", None))


def _adapt(obj: Any, kind: str, wrapper: Callable[[Any], Any]) -> Any:
    if _has_lifecycle(obj) and callable(obj):
        return obj
    if callable(obj):
        return wrapper(obj)
    raise BidiUsageError(f"{kind} {obj!r} is neither a Bidi{kind.title()} nor an async callable")


def reports_playback(output: BidiOutput) -> bool:
    """Whether ``output`` declared that it reports playback (an output written
    for the reference has no ``reports_playback`` and does not)."""
    return bool(getattr(output, "reports_playback", False))


def inline_offer(output: BidiOutput) -> Callable[[BidiOutputEvent], bool] | None:
    """The output's ``offer`` if it is a :class:`ports.io.BidiInlineOutput` (found
    by the method alone: an output written for the reference may lack
    ``reports_playback``), else None."""
    offer = getattr(output, "offer", None)
    return offer if callable(offer) else None


def adapt_input(obj: InputLike) -> Any:
    """A :class:`ports.io.BidiInput` as it is, or a plain async callable wrapped as one."""
    return _adapt(obj, "input", _CallableInput)


def adapt_output(obj: OutputLike) -> Any:
    """A :class:`ports.io.BidiOutput` as it is, or a plain async callable wrapped as one."""
    return _adapt(obj, "output", _CallableOutput)
