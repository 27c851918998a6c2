"""The conversation's state: its phases, its settings and the one frozen value
that holds everything it knows. Pure, like the rest of the machine: no I/O, no
clock, no async library."""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

from bidi_core.effects import (
    Effect,
)
from bidi_core.outbox import Outbox
from bidi_core.reconnect import ReconnectPolicy
from bidi_core.usage import Usage
from ports.model import ModelCapabilities


class Phase(enum.Enum):
    CONNECTING = "connecting"
    LISTENING = "listening"
    RESPONDING = "responding"
    INTERRUPTED = "interrupted"
    TOOL_CALLING = "tool_calling"
    RESTARTING = "restarting"
    CLOSED = "closed"

    # Members are singletons, compared by identity: hashing them by identity too keeps the table's
    # lookup (every step hashes ``(phase, event type)``) off Enum's Python-level ``__hash__``.
    __hash__ = object.__hash__


LIVE_PHASES = frozenset({Phase.LISTENING, Phase.RESPONDING, Phase.INTERRUPTED, Phase.TOOL_CALLING})
"""Phases with an open connection."""
OFFLINE_PHASES = frozenset({Phase.CONNECTING, Phase.RESTARTING})
"""Phases waiting for a connection."""

ROTATION_TIMER = "rotate"
"""Forces a rotation that waited for a turn boundary too long."""
CONNECTION_AGE_TIMER = "connection_age"
"""Starts a rotation before the provider's connection limit."""
BACKOFF_TIMER = "backoff"
"""Ends the wait before the next connection attempt."""
STABLE_TIMER = "stable"
"""Marks a quiet connection as healthy after ``stable_after_s``."""
CONNECTION_TIMERS = (ROTATION_TIMER, CONNECTION_AGE_TIMER, STABLE_TIMER)

INTERRUPTED_MEMORY = 16
"""How many interrupted response ids to remember (late audio arrives within
a few messages; an unbounded set would grow for hours)."""

UNCONFIRMED_SLACK = 256
"""Room for text and tool results among the items a resumable provider has
not confirmed, beyond the audio cap."""

GRACEFUL = frozenset({"user_request", "complete", "provider_closed"})
"""Close reasons after which the outputs play out what they hold (a goodbye)."""


class IllegalTransition(Exception):
    """``event`` cannot happen in ``phase``. The state is unchanged."""

    def __init__(self, phase: Phase, event: object) -> None:
        super().__init__(f"{type(event).__name__} is not allowed while {phase.value}")
        self.phase = phase
        self.event = event


# --------------------------------------------------------------------------- state


@attrs.frozen
class ConversationConfig:
    """What never changes during a conversation.

    ``max_buffered_audio``: audio blocks the outbox may hold (the memory
    ceiling for user audio). ``send_window``: items handed to the connection's
    writer at once. ``rotation_margin_s``: how long before a connection limit
    to rotate. ``interruptible_tools``: tools a barge-in cancels.
    """

    max_buffered_audio: int = 1500
    send_window: int = 16
    rotation_margin_s: float = 30.0
    reconnect: ReconnectPolicy = ReconnectPolicy()
    interruptible_tools: frozenset[str] = frozenset()


@attrs.frozen
class ToolCall:
    """A call in progress; ``issued_on`` is the connection whose model made it."""

    tool_use_id: str
    name: str
    issued_on: str | None = None


@attrs.frozen
class Conversation:
    """Everything the conversation knows.

    ``audible_id`` is the response whose audio the user may still be hearing
    (outputs play a response after the model finished generating it);
    ``received_ms``/``played_ms`` measure that audio. ``tracks_playback``:
    some output reports playback; without it nothing is assumed heard after a
    response completes. ``audio_unobserved``: no output declared that it
    reports playback, so received audio is not counted (the count would never
    be read, and copying the state per audio chunk is the hottest path's main
    cost). ``audible_from_old_connection``: the audible response came over an
    earlier connection, so a barge-in silences it but tells the provider
    nothing of a response it never saw. ``interrupted_ids``: responses cut
    short whose late audio is dropped (most recent last; a new connection
    starts with none). ``rotation_due``: why the connection should be
    replaced at the next turn boundary. ``failures``: connection attempts
    that failed in a row; ``connection_proven``: the open connection has
    shown it works (the provider said something, or it lasted). ``usage``:
    every usage report of every connection, summed.
    """

    config: ConversationConfig = ConversationConfig()
    phase: Phase = Phase.CONNECTING
    capabilities: ModelCapabilities = ModelCapabilities()
    connection_id: str | None = None
    response_id: str | None = None
    audible_id: str | None = None
    audible_from_old_connection: bool = False
    received_ms: float = 0.0
    played_ms: float = 0.0
    tracks_playback: bool = False
    audio_unobserved: bool = False
    interrupted_ids: tuple[str, ...] = ()
    pending_tools: frozenset[ToolCall] = frozenset()
    withdrawn_tools: frozenset[str] = frozenset()
    outbox: Outbox = Outbox()
    rotation_due: str | None = None
    resume_handle: str | None = attrs.field(default=None, repr=False)
    failures: int = 0
    connection_proven: bool = False
    usage: Usage = Usage()

    def tool_ids(self) -> frozenset[str]:
        return frozenset(c.tool_use_id for c in self.pending_tools)

    def tool_call(self, tool_use_id: str) -> ToolCall | None:
        return next((c for c in self.pending_tools if c.tool_use_id == tool_use_id), None)


def _around(cls: type, name: str) -> tuple[Callable[[Any], tuple[Any, ...]], Callable[[Any], tuple[Any, ...]]]:
    """Getters of the fields before and after ``name``, in ``__init__`` order
    (``operator.attrgetter`` with one name returns a value, not a tuple; none
    of Conversation's fields is alone on its side)."""
    fields = attrs.fields(cls)
    assert all(field.init for field in fields)  # with_outbox passes every field positionally
    names = [field.name for field in fields]
    index = names.index(name)
    return operator.attrgetter(*names[:index]), operator.attrgetter(*names[index + 1 :])


_BEFORE_OUTBOX, _AFTER_OUTBOX = _around(Conversation, "outbox")


def with_outbox(conv: Conversation, outbox: Outbox) -> Conversation:
    """``attrs.evolve(conv, outbox=outbox)`` at about half the cost: every
    microphone block changes the outbox twice (accepted, then written), and
    ``attrs.evolve`` reads the 19 fields one by one in Python
    (``benchmarks/README.md``, "The duplex up path")."""
    return Conversation(*(*_BEFORE_OUTBOX(conv), outbox, *_AFTER_OUTBOX(conv)))


Result: TypeAlias = tuple[Conversation, tuple[Effect, ...]]
Handler: TypeAlias = Callable[[Conversation, Any], Result]


def remember_interrupted(conv: Conversation, rid: str) -> tuple[str, ...]:
    """``interrupted_ids`` with ``rid`` added as the most recent, bounded."""
    kept = [i for i in conv.interrupted_ids if i != rid][-(INTERRUPTED_MEMORY - 1) :]
    return (*kept, rid)
