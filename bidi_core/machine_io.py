"""What the conversation state machine takes in and gives out.

The shell's events (a connection opened, a tool finished, a timer fired...)
and the effects :func:`bidi_core.conversation.step` returns (emit an event,
send to the model, run a tool...): plain frozen data, like h11's
``_events.py`` beside its ``_state.py``. Model and user events come from
:mod:`ports.events` unchanged. Like the machine itself, this module does no
I/O and imports no async library.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs

from ports.events import BidiInputEvent, BidiOutputEvent, BidiToolResultEvent, BidiToolUseEvent
from ports.io import PlaybackReport
from ports.messages import Message
from ports.model import ModelCapabilities, ModelInput

__all__ = [
    "CancelTimer",
    "CancelTool",
    "ClearPlayback",
    "Close",
    "ConfirmDelivery",
    "Connected",
    "ConnectionLost",
    "Effect",
    "Emit",
    "Event",
    "PlaybackProgress",
    "Reconnect",
    "Record",
    "ResumptionRejected",
    "RunTool",
    "SendToModel",
    "StartTimer",
    "StopRequested",
    "TimerFired",
    "ToolCancelled",
    "ToolFinished",
    "UserInput",
]


# --------------------------------------------------------------------------- events the shell feeds in
# Model events and user input events come straight from ports.events. These
# are the ones only the shell can produce.


@attrs.frozen
class Connected:
    """A connection is open."""

    connection_id: str
    model: str
    capabilities: ModelCapabilities = ModelCapabilities()


@attrs.frozen
class ConnectionLost:
    """The connection ended. ``retryable``: a new connection may continue the
    conversation; else the conversation closes with ``error``. While no
    connection is open (connecting, restarting) the shell reports only its
    final failure, after its own retries, so there it always closes."""

    reason: str
    retryable: bool = True
    error: BaseException | None = attrs.field(default=None, eq=False)


@attrs.frozen
class ResumptionRejected:
    """The provider refused the resumption handle while connecting; the next
    attempt must start a fresh session seeded with the history."""

    reason: str


@attrs.frozen
class UserInput:
    """The user (an input, or :meth:`BidiAgent.send`) said something."""

    event: BidiInputEvent


@attrs.frozen
class ToolFinished:
    """A tool ended with a result (success or error). ``ends_conversation``
    is set for :func:`stop_conversation`."""

    result: BidiToolResultEvent
    ends_conversation: bool = False


@attrs.frozen
class ToolCancelled:
    """A tool's scope was cancelled and it has stopped."""

    tool_use_id: str


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


Event: TypeAlias = Any
"""Anything :func:`step` accepts: a model event from :mod:`ports.events`, or
one of the shell events above. The table is the authority."""


# --------------------------------------------------------------------------- effects


@attrs.frozen
class Emit:
    """Deliver ``event`` to every output and to ``receive()``."""

    event: BidiOutputEvent


@attrs.frozen
class SendToModel:
    """Send ``item`` on the current connection (in step order)."""

    item: ModelInput


@attrs.frozen
class RunTool:
    call: BidiToolUseEvent


@attrs.frozen
class CancelTool:
    tool_use_id: str


@attrs.frozen
class ClearPlayback:
    """Silence the outputs: discard every queued and playing sample of assistant
    audio. ``response_id`` is the response cut short (a newer response's audio
    queued behind it would be just as unwelcome after a barge-in)."""

    response_id: str


@attrs.frozen
class StartTimer:
    name: str
    seconds: float


@attrs.frozen
class CancelTimer:
    name: str


@attrs.frozen
class Reconnect:
    """Close the current connection and open a new one."""

    reason: str


@attrs.frozen
class ConfirmDelivery:
    """The provider's session holds the first ``inputs_included`` items sent on
    this connection (None: all sent so far); forget them from the ledger of
    items to send again on a resumed connection."""

    inputs_included: int | None


@attrs.frozen
class Record:
    """Append ``message`` to the history a new connection is seeded with."""

    message: Message


@attrs.frozen
class Close:
    """End the conversation. ``error`` is raised to the caller of ``run()``."""

    reason: str
    error: BaseException | None = attrs.field(default=None, eq=False)


Effect: TypeAlias = (
    Emit
    | SendToModel
    | RunTool
    | CancelTool
    | ClearPlayback
    | StartTimer
    | CancelTimer
    | Reconnect
    | Record
    | ConfirmDelivery
    | Close
)
