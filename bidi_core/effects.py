"""What the conversation state machine asks the shell to do.

:func:`bidi_core.conversation.step` returns these plain frozen values; the
shell (:mod:`bidi_core.agent`) carries them out, in order, without awaiting
and without choosing: like h11's events beside its ``_state.py``, they are
data. Like the machine, this module does no I/O and imports no async library.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from ports.events import BidiOutputEvent, BidiToolUseEvent
from ports.messages import Message
from ports.model import ModelInput

__all__ = [
    "AppendHistory",
    "CancelTimer",
    "CancelTool",
    "ClearPlayback",
    "Close",
    "CloseConnection",
    "Effect",
    "Emit",
    "OpenConnection",
    "RetractHistory",
    "RunTool",
    "SendToModel",
    "StartTimer",
]


@attrs.frozen
class Emit:
    """Deliver ``event`` to every output and to ``receive()``."""

    event: BidiOutputEvent


@attrs.frozen
class SendToModel:
    """Write ``item`` on the current connection, after what was sent before.

    ``seq`` numbers an item of the outbox: once it is written, the shell
    reports :class:`~bidi_core.shell_events.Written` with that number. Control
    items (cancel, truncate) belong to the connection and carry none.
    """

    item: ModelInput
    seq: int | None = None


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
    """Fire :class:`~bidi_core.shell_events.TimerFired` after ``seconds``
    (a timer of the same name is replaced)."""

    name: str
    seconds: float


@attrs.frozen
class CancelTimer:
    name: str


@attrs.frozen
class OpenConnection:
    """Open a connection now, resuming the provider's session with
    ``resume_handle`` when there is one, else seeding it with the history."""

    resume_handle: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class CloseConnection:
    """Leave the current connection (what it did not write is the core's to resend)."""

    reason: str


@attrs.frozen
class AppendHistory:
    """Append ``message`` to the history a fresh connection is seeded with."""

    message: Message


@attrs.frozen
class RetractHistory:
    """Remove ``message`` again (the most recent equal one): it was recorded
    when handed to a connection that ended before writing it, and it will be
    recorded again when it is sent."""

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
    | OpenConnection
    | CloseConnection
    | AppendHistory
    | RetractHistory
    | Close
)
