"""What the shell tells the conversation state machine.

Model events and user input come from :mod:`ports.events`; these are the
facts only the shell can observe: a connection opened or ended, an item was
written, a tool finished, a timer fired, the application asked to stop. Each
is a plain frozen record of something that *happened*; what it means for the
conversation is decided by :func:`bidi_core.conversation.step`, never here.
Like the machine, this module does no I/O and imports no async library.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from ports.events import BidiInputEvent, BidiToolResultEvent, ModelEvent
from ports.io import PlaybackReport
from ports.model import ModelCapabilities

__all__ = [
    "ConnectFailed",
    "Connected",
    "ConnectionEnded",
    "Event",
    "InvalidInput",
    "PlaybackProgress",
    "ShellEvent",
    "Started",
    "StopRequested",
    "TimerFired",
    "HookFailed",
    "ToolCancelled",
    "ToolFinished",
    "ToolRefused",
    "UserInput",
    "Written",
]


@attrs.frozen
class Started:
    """The agent started. ``outputs_report_playback``: whether some output
    declared that it reports playback (``run()`` knows its outputs; ``None``
    when it cannot know, as with ``start()``/``receive()``)."""

    outputs_report_playback: bool | None = None


@attrs.frozen
class Connected:
    """The connection the core asked for is open."""

    connection_id: str
    model: str
    capabilities: ModelCapabilities = ModelCapabilities()


@attrs.frozen
class ConnectFailed:
    """Opening a connection failed with ``error`` (raised by ``model.connect()``)."""

    error: BaseException = attrs.field(eq=False)


@attrs.frozen
class ConnectionEnded:
    """The open connection ``connection_id`` ended without the core asking:
    ``error`` is what the session raised, ``None`` when the service ended the
    session for good (``receive()`` raised ``anyio.EndOfStream``)."""

    connection_id: str
    error: BaseException | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Written:
    """The item the core numbered ``seq`` was written to the connection."""

    seq: int


@attrs.frozen
class UserInput:
    """The user (an input, or :meth:`BidiAgent.send`) said something."""

    event: BidiInputEvent


@attrs.frozen
class InvalidInput:
    """An input produced something that is not an input event (a browser sent bad JSON)."""

    message: str


@attrs.frozen
class ToolFinished:
    """A tool ended with a result (success or error). ``ends_conversation``
    is set for :func:`stop_conversation`; ``error_type`` names the exception
    a failing tool raised."""

    result: BidiToolResultEvent
    ends_conversation: bool = False
    error_type: str | None = None


@attrs.frozen
class ToolCancelled:
    """A tool's scope was cancelled and it has stopped."""

    tool_use_id: str


@attrs.frozen
class ToolRefused:
    """A ``before_tool_call`` hook kept the call from running: it refused with
    ``message`` for the model, or it raised ``error_type`` (``detail`` says how)."""

    tool_use_id: str
    message: str | None = None
    error_type: str | None = None
    detail: str | None = None


@attrs.frozen
class HookFailed:
    """A hook raised (``hook`` names its kind); what it was watching went on."""

    hook: str
    error_type: str
    detail: str = ""


@attrs.frozen
class PlaybackProgress:
    """An output reported how much of a response it has played."""

    report: PlaybackReport


@attrs.frozen
class TimerFired:
    name: str


@attrs.frozen
class StopRequested:
    """The application asked to end the conversation."""

    reason: str = "client_disconnect"


ShellEvent: TypeAlias = (
    Started
    | Connected
    | ConnectFailed
    | ConnectionEnded
    | Written
    | UserInput
    | InvalidInput
    | ToolFinished
    | ToolCancelled
    | ToolRefused
    | HookFailed
    | PlaybackProgress
    | TimerFired
    | StopRequested
)
"""Everything the shell reports."""

Event: TypeAlias = ModelEvent | ShellEvent
"""Everything :func:`bidi_core.conversation.step` accepts."""
