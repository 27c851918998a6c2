"""The conversation state machine: events in, new state and effects out.

Rule 1: it does no I/O, reads no clock and imports no async library.
Everything the conversation knows is one frozen :class:`Conversation`;
everything it wants done comes back as :mod:`bidi_core.effects` values that
the shell (:mod:`bidi_core.agent`) carries out in order, choosing nothing.
Time is an event too: the core asks for a timer and the shell reports
:class:`~bidi_core.shell_events.TimerFired`.

Rule 2: the table says where each event leads. :data:`TRANSITIONS` maps
``(phase, event type)`` to a :class:`Transition`: the handler that computes
the effects and the phases it may lead to (none: it stays). A pair missing
from the table is illegal: :func:`step` raises :class:`IllegalTransition` and
changes nothing. After every handler, the :data:`SETTLING_RULES` (h11's
state-triggered transitions) apply what follows from the state alone: tools
pending while listening is tool-calling; a rotation waiting for a turn
boundary starts at the boundary. ``scripts/render_state_diagram.py`` draws
``docs/state-diagram.md`` from the table and the rules, nothing else.

Phases: ``CONNECTING`` (the first connection), ``LISTENING``, ``RESPONDING``,
``INTERRUPTED`` (a response cut short, its completion not yet seen),
``TOOL_CALLING`` (tools running, nothing generating), ``RESTARTING`` (between
connections) and ``CLOSED`` (absorbing: stragglers are accepted and ignored).

The decisions that live here and nowhere else: what an event means in each
phase; when to connect, reconnect, back off and give up (the
:class:`~bidi_core.reconnect.ReconnectPolicy`); which failures are worth
another connection; what the user said that still has to reach the provider,
and what joins the history and when (the :class:`~bidi_core.outbox.Outbox`);
what a tool result becomes when the connection that asked for it is gone;
which error events the user sees.

Invariants (``tests/test_conversation_properties.py``): no audio of a
response after it was interrupted; every tool call ends in exactly one result
for the model, or a withdrawal the provider asked for; every accepted input
reaches a connection exactly once, in order (audio beyond the cap dropped
oldest-first and counted); ``CLOSED`` is absorbing; an illegal event raises
and changes nothing.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import attrs

from bidi_core.effects import (
    AppendHistory,
    CancelTimer,
    CancelTool,
    ClearPlayback,
    Close,
    CloseConnection,
    Effect,
    Emit,
    OpenConnection,
    RetractHistory,
    RunTool,
    SendToModel,
    StartTimer,
)
from bidi_core.outbox import Entry, Outbox
from bidi_core.reconnect import ReconnectPolicy
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
    Event,
    InvalidInput,
    PlaybackProgress,
    Started,
    StopRequested,
    TimerFired,
    ToolCancelled,
    ToolFinished,
    UserInput,
    Written,
)
from ports.errors import BidiConnectionError, BidiError, BidiProtocolError, BidiResumptionRejectedError
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    StopReason,
)
from ports.messages import Message, TextMessage, ToolCallMessage, ToolResultMessage
from ports.model import CancelResponse, ModelCapabilities, TruncateResponse

__all__ = [
    "BACKOFF_TIMER",
    "CONNECTION_AGE_TIMER",
    "LIVE_PHASES",
    "ROTATION_TIMER",
    "SETTLING_RULES",
    "STABLE_TIMER",
    "TRANSITIONS",
    "Conversation",
    "ConversationConfig",
    "IllegalTransition",
    "Phase",
    "SettlingRule",
    "ToolCall",
    "Transition",
    "orphaned_result_text",
    "step",
]


class Phase(enum.Enum):
    CONNECTING = "connecting"
    LISTENING = "listening"
    RESPONDING = "responding"
    INTERRUPTED = "interrupted"
    TOOL_CALLING = "tool_calling"
    RESTARTING = "restarting"
    CLOSED = "closed"


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
_CONNECTION_TIMERS = (ROTATION_TIMER, CONNECTION_AGE_TIMER, STABLE_TIMER)

_INTERRUPTED_MEMORY = 16
"""How many interrupted response ids to remember (late audio arrives within
a few messages; an unbounded set would grow for hours)."""

_UNCONFIRMED_SLACK = 256
"""Room for text and tool results among the items a resumable provider has
not confirmed, beyond the audio cap."""

_GRACEFUL = frozenset({"user_request", "complete", "provider_closed"})
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
    shown it works (the provider said something, or it lasted).
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

    def tool_ids(self) -> frozenset[str]:
        return frozenset(c.tool_use_id for c in self.pending_tools)

    def tool_call(self, tool_use_id: str) -> ToolCall | None:
        return next((c for c in self.pending_tools if c.tool_use_id == tool_use_id), None)


Result: TypeAlias = tuple[Conversation, tuple[Effect, ...]]
Handler: TypeAlias = Callable[[Conversation, Any], Result]


# --------------------------------------------------------------------------- the outbox, connections, history


def _margin(margin_s: float, limit_s: float) -> float:
    """How long before a connection limit to start rotating: the configured
    margin, but never more than a tenth of the limit (a short limit would
    otherwise rotate the moment a connection opens, forever)."""
    return min(margin_s, limit_s / 10)


def orphaned_result_text(result: BidiToolResultEvent) -> str:
    """What the model reads when a tool outlived the connection that called it.

    A new connection (a fresh session, or a resumed one, whose provider issues
    no resumption handle while calls are pending) never issued that call and
    refuses a result naming it; the history tells the model the call was made,
    so its outcome goes in as the user's text.
    """
    content = result.content
    body = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)
    return f"(The tool {result.name} returned {result.status}: {body})"


def _history_of(item: object) -> Message | None:
    """What an outbox item adds to the history when it is written."""
    if isinstance(item, BidiTextInputEvent):
        return TextMessage(role="user", text=item.text)
    if isinstance(item, BidiToolResultEvent):
        return ToolResultMessage(item.tool_use_id, item.name, item.status, item.content)
    return None


def _accept(conv: Conversation, item: Any, issued_on: str | None = None) -> Result:
    """Take ``item`` into the outbox; hand it to the connection if one is open."""
    box = conv.outbox.accept(item, conv.config.max_buffered_audio, _history_of(item), issued_on)
    return _hand_off(attrs.evolve(conv, outbox=box))


def _hand_off(conv: Conversation) -> Result:
    """Give the open connection's writer what waits, up to the send window."""
    if conv.phase not in LIVE_PHASES:
        return conv, ()
    box, entries = conv.outbox.hand(conv.config.send_window)
    conv = attrs.evolve(conv, outbox=box)
    effects: list[Effect] = []
    for entry in entries:
        effects += _send_entry(conv, entry)
    settled = _settle_unsent(conv)
    if len(settled.outbox.in_flight) < len(conv.outbox.in_flight) and settled.outbox.waiting:
        settled, more = _hand_off(settled)  # the window has room again
        effects += more
    return settled, tuple(effects)


def _record_only(conv: Conversation, entry: Entry) -> bool:
    """A cancelled result for a call of an earlier connection: nobody on this
    connection waits for it, so it is recorded (the history keeps the pair) and
    never sent."""
    item = entry.item
    return (
        isinstance(item, BidiToolResultEvent) and item.status == "cancelled" and entry.issued_on != conv.connection_id
    )


def _send_entry(conv: Conversation, entry: Entry) -> tuple[Effect, ...]:
    """Hand one entry to the writer; its history is recorded now, so the
    history keeps the order things were said in."""
    recorded: tuple[Effect, ...] = (AppendHistory(entry.history),) if entry.history is not None else ()
    if _record_only(conv, entry):
        return recorded
    item = entry.item
    if isinstance(item, BidiToolResultEvent) and entry.issued_on != conv.connection_id:
        item = BidiTextInputEvent(text=orphaned_result_text(item))
    return (*recorded, SendToModel(item, entry.seq))


def _settle_unsent(conv: Conversation) -> Conversation:
    """Record-only entries leave the outbox once everything handed before them
    was written (until then a lost connection retracts them with the others,
    so the history keeps its order); they never count as written."""
    box = conv.outbox
    while box.in_flight and _record_only(conv, box.in_flight[0]):
        box = box.withdraw(box.in_flight[0].seq)
    return conv if box is conv.outbox else attrs.evolve(conv, outbox=box)


def _written(conv: Conversation, seq: int) -> Result:
    """Entry ``seq`` reached the provider: forget it (or keep it for a resumed
    session until the provider confirms it). One whose connection ended while
    it was being written had its history retracted: it did arrive, so the
    record comes back."""
    keep = conv.config.max_buffered_audio + _UNCONFIRMED_SLACK if conv.capabilities.resumable else None
    box, entry, returned = conv.outbox.mark_written(seq, keep)
    conv = _settle_unsent(attrs.evolve(conv, outbox=box))
    if returned and entry is not None and entry.history is not None:
        return conv, (AppendHistory(entry.history),)
    return conv, ()


def _retryable(error: BaseException) -> bool:
    """Whether another connection may help after ``error``. A message we
    could not understand is worth a fresh connection; an exception that is no
    :class:`BidiError` is a bug in an adapter, and hiding it would hide the bug."""
    if isinstance(error, BidiProtocolError):
        return True
    if isinstance(error, BidiError):
        return bool(getattr(error, "retryable", False))
    return False


def _open(conv: Conversation) -> Effect:
    return OpenConnection(conv.resume_handle)


def _retry_later(conv: Conversation, error: BaseException, effects: Iterable[Effect]) -> Result:
    """Count a failed attempt: back off before the next one, or, after
    ``max_attempts`` in a row, give up with ``error``."""
    failures = conv.failures + 1
    policy = conv.config.reconnect
    conv = attrs.evolve(conv, failures=failures)
    if failures >= policy.max_attempts:
        return _close(conv, "error", error, effects)
    wait = policy.delay(failures, getattr(error, "retry_after_s", None))
    return conv, (*effects, StartTimer(BACKOFF_TIMER, wait))


# --------------------------------------------------------------------------- handlers: connections


def _started(conv: Conversation, ev: Started) -> Result:
    declared = ev.outputs_report_playback
    conv = attrs.evolve(conv, tracks_playback=declared is True, audio_unobserved=declared is False)
    return conv, (_open(conv),)


def _connected(conv: Conversation, ev: Connected) -> Result:
    resumed = conv.resume_handle is not None
    effects: list[Effect] = [Emit(BidiConnectionStartEvent(connection_id=ev.connection_id, model=ev.model))]
    limit = ev.capabilities.max_connection_s
    if limit is not None:
        effects.append(StartTimer(CONNECTION_AGE_TIMER, limit - _margin(conv.config.rotation_margin_s, limit)))
    effects.append(StartTimer(STABLE_TIMER, conv.config.reconnect.stable_after_s))
    conv = attrs.evolve(
        conv,
        phase=Phase.LISTENING,
        capabilities=ev.capabilities,
        connection_id=ev.connection_id,
        response_id=None,
        interrupted_ids=(),  # response ids belong to a connection
        rotation_due=None,
        connection_proven=False,
        outbox=conv.outbox.begin_connection(resumed),
    )
    conv, sent = _hand_off(conv)
    return conv, (*effects, *sent)


def _connect_failed(conv: Conversation, ev: ConnectFailed) -> Result:
    if isinstance(ev.error, BidiResumptionRejectedError):
        # Not a failure: the provider is there, it only forgot the session. The
        # next attempt, at once, opens a fresh one seeded with the history.
        details = f"{ev.error}; starting a fresh session seeded with the history"
        conv = attrs.evolve(conv, resume_handle=None)
        return conv, (Emit(BidiConnectionRestartEvent(reason="resumption_rejected", details=details)), _open(conv))
    if not _retryable(ev.error):
        return _close(conv, "error", ev.error, ())
    return _retry_later(conv, ev.error, ())


def _connection_ended(conv: Conversation, ev: ConnectionEnded) -> Result:
    if ev.connection_id != conv.connection_id:
        return conv, ()  # a connection the core had already left
    if ev.error is None:
        # The service ended the session for good (the adapter tells that from the
        # endings a new connection may continue): so does the conversation.
        return _close(conv, "provider_closed", None, ())
    if not _retryable(ev.error):
        return _close(conv, "error", ev.error, ())
    details = str(ev.error)
    proven = conv.connection_proven
    conv, effects = _leave(conv, "connection_lost", details)
    if proven:
        return conv, (*effects, _open(conv))
    # Lost before the provider said anything, and soon: back off as for a failed connect.
    error = BidiConnectionError(f"the connection failed {conv.failures + 1} times in a row: {details}")
    return _retry_later(conv, error, effects)


def _stable(conv: Conversation, ev: TimerFired) -> Result:
    return attrs.evolve(conv, connection_proven=True, failures=0), ()


def _backoff_over(conv: Conversation, ev: TimerFired) -> Result:
    return conv, (_open(conv),)


def _leave(conv: Conversation, reason: str, details: str | None) -> Result:
    """Leave the current connection. A response in flight is cut off: its
    audio is discarded and it completes with ``error`` (``interrupted`` if it
    was). The audio of a finished response plays on (a rotation at a turn
    boundary must not cut off the answer the user is hearing); it now belongs
    to an earlier connection. What the writer had not written waits again."""
    effects: list[Effect] = []
    if conv.response_id is not None:
        rid = conv.response_id
        cut: StopReason = "interrupted" if conv.phase is Phase.INTERRUPTED else "error"
        effects += [ClearPlayback(rid), Emit(BidiResponseCompleteEvent(response_id=rid, stop_reason=cut))]
        conv = attrs.evolve(
            conv, interrupted_ids=_remember_interrupted(conv, rid), audible_id=None, played_ms=0.0, received_ms=0.0
        )
    elif conv.audible_id is not None:
        conv = attrs.evolve(conv, audible_from_old_connection=True)
    effects += [CancelTimer(name) for name in _CONNECTION_TIMERS]
    effects += [Emit(BidiConnectionRestartEvent(reason=reason, details=details)), CloseConnection(reason)]
    effects += [RetractHistory(e.history) for e in reversed(conv.outbox.in_flight) if e.history is not None]
    conv = attrs.evolve(
        conv,
        phase=Phase.RESTARTING,
        response_id=None,
        rotation_due=None,
        connection_id=None,
        outbox=conv.outbox.leave_connection(),
    )
    return conv, tuple(effects)


def _rotate(conv: Conversation, details: str) -> Result:
    """Replace a healthy connection now (its limit is near)."""
    conv, effects = _leave(conv, "expiring", details)
    return conv, (*effects, _open(conv))


def _expiring(conv: Conversation, ev: BidiConnectionExpiringEvent) -> Result:
    """Rotate at the next turn boundary (a settling rule), but before the deadline."""
    grace = max(ev.time_left_s - 1.0, 0.0)
    why = f"provider closes in {ev.time_left_s:g}s"
    return attrs.evolve(conv, rotation_due=why), (StartTimer(ROTATION_TIMER, grace),)


def _connection_age(conv: Conversation, ev: TimerFired) -> Result:
    limit = conv.capabilities.max_connection_s or conv.config.rotation_margin_s
    return _expiring(conv, BidiConnectionExpiringEvent(time_left_s=_margin(conv.config.rotation_margin_s, limit)))


def _rotation_deadline(conv: Conversation, ev: TimerFired) -> Result:
    if conv.rotation_due is None:
        return conv, ()
    return _rotate(conv, "connection limit reached mid-turn")


def _resume_handle(conv: Conversation, ev: BidiResumptionUpdateEvent) -> Result:
    return attrs.evolve(conv, resume_handle=ev.handle, outbox=conv.outbox.confirm(ev.inputs_included)), ()


def _close(conv: Conversation, reason: Any, error: BaseException | None, effects: Iterable[Effect]) -> Result:
    """End the conversation. A graceful end lets the last words play out; any
    other end silences the outputs."""
    effects = list(effects)
    if conv.audible_id is not None and reason not in _GRACEFUL:
        effects.append(ClearPlayback(conv.audible_id))
    if conv.response_id is not None:
        # Every response start gets its completion, also when the conversation ends mid-response.
        effects.append(Emit(BidiResponseCompleteEvent(response_id=conv.response_id, stop_reason="interrupted")))
    effects += [CancelTool(c.tool_use_id) for c in sorted(conv.pending_tools, key=lambda c: c.tool_use_id)]
    effects += [CancelTimer(name) for name in (*_CONNECTION_TIMERS, BACKOFF_TIMER)]
    effects += [Emit(BidiConnectionCloseEvent(reason=reason, connection_id=conv.connection_id)), Close(reason, error)]
    new = attrs.evolve(
        conv,
        phase=Phase.CLOSED,
        response_id=None,
        audible_id=None,
        audible_from_old_connection=False,
        pending_tools=frozenset(),
        withdrawn_tools=frozenset(),
        outbox=conv.outbox.clear(),
        rotation_due=None,
    )
    return new, tuple(effects)


def _stop(conv: Conversation, ev: StopRequested) -> Result:
    return _close(conv, ev.reason, None, ())


# --------------------------------------------------------------------------- handlers: user input


def _user_input(conv: Conversation, ev: UserInput) -> Result:
    return _accept(conv, ev.event)


def _item_written(conv: Conversation, ev: Written) -> Result:
    conv, recorded = _written(conv, ev.seq)
    conv, sent = _hand_off(conv)
    return conv, recorded + sent


def _invalid_input(conv: Conversation, ev: InvalidInput) -> Result:
    # A bad message from a client (say, a browser socket) must not end the conversation.
    return conv, (Emit(BidiErrorEvent(message=ev.message, code="invalid_input")),)


# --------------------------------------------------------------------------- handlers: responses


def _response_start(conv: Conversation, ev: BidiResponseStartEvent) -> Result:
    effects: list[Effect] = []
    if conv.response_id is not None and conv.response_id != ev.response_id:
        # The provider moved on without closing the previous response.
        effects.append(Emit(BidiResponseCompleteEvent(response_id=conv.response_id, stop_reason="interrupted")))
    effects.append(Emit(ev))
    new = attrs.evolve(
        conv,
        phase=Phase.RESPONDING,
        response_id=ev.response_id,
        audible_id=ev.response_id,
        audible_from_old_connection=False,
        received_ms=0.0,
        played_ms=0.0,
    )
    return new, tuple(effects)


def _audio(conv: Conversation, ev: BidiAudioStreamEvent) -> Result:
    rid = ev.response_id if ev.response_id is not None else conv.response_id
    if rid is None or rid != conv.response_id or rid in conv.interrupted_ids:
        return conv, ()  # late audio of a response that ended or was cut short
    if ev.response_id is None:
        ev = attrs.evolve(ev, response_id=rid)
    if conv.audio_unobserved:
        return conv, (Emit(ev),)
    return attrs.evolve(conv, received_ms=conv.received_ms + ev.duration_ms), (Emit(ev),)


def _transcript(conv: Conversation, ev: BidiTranscriptStreamEvent) -> Result:
    if ev.is_final and ev.text:
        return conv, (Emit(ev), AppendHistory(TextMessage(role=ev.role, text=ev.text)))
    return conv, (Emit(ev),)


def _emit(conv: Conversation, ev: BidiUsageEvent | BidiErrorEvent) -> Result:
    return conv, (Emit(ev),)


def _ignore(conv: Conversation, ev: object) -> Result:
    """Accepted and without consequence (a straggler of something already settled)."""
    return conv, ()


def _unexpected(conv: Conversation, ev: object) -> Result:
    """A provider event that makes no sense now (an adapter bug, or a provider
    that broke its protocol): reported, otherwise ignored."""
    message = f"unexpected provider event: {type(ev).__name__} is not allowed while {conv.phase.value}"
    return conv, (Emit(BidiErrorEvent(message=message, code="protocol_error")),)


def _response_complete(conv: Conversation, ev: BidiResponseCompleteEvent) -> Result:
    if ev.response_id != conv.response_id:
        return conv, ()  # completion of a response already closed locally
    if not conv.tracks_playback or conv.played_ms >= conv.received_ms:
        # Nothing of it can still be playing: no output reports playback, or
        # everything received was already played (or it had no audio at all).
        conv = attrs.evolve(conv, audible_id=None)
    return attrs.evolve(conv, phase=Phase.LISTENING, response_id=None), (Emit(ev),)


def _interrupted_complete(conv: Conversation, ev: BidiResponseCompleteEvent) -> Result:
    if ev.response_id != conv.response_id:
        return conv, ()
    completed = Emit(attrs.evolve(ev, stop_reason="interrupted"))
    return attrs.evolve(conv, phase=Phase.LISTENING, response_id=None), (completed,)


def _remember_interrupted(conv: Conversation, rid: str) -> tuple[str, ...]:
    """``interrupted_ids`` with ``rid`` added as the most recent, bounded."""
    kept = [i for i in conv.interrupted_ids if i != rid][-(_INTERRUPTED_MEMORY - 1) :]
    return (*kept, rid)


def _interrupt(conv: Conversation, rid: str, cancel: bool) -> Result:
    """Cut ``rid`` short: discard its audio everywhere, tell the user and the model."""
    effects: list[Effect] = [ClearPlayback(rid), Emit(BidiInterruptionEvent(reason="user_speech", response_id=rid))]
    if cancel and not conv.capabilities.cancels_on_speech:
        effects.append(SendToModel(CancelResponse(rid)))
    if conv.capabilities.can_truncate and conv.tracks_playback and not conv.audible_from_old_connection:
        heard = min(conv.played_ms, conv.received_ms)
        effects.append(SendToModel(TruncateResponse(response_id=rid, audio_end_ms=int(heard))))
    for call in sorted(conv.pending_tools, key=lambda c: c.tool_use_id):
        if call.name in conv.config.interruptible_tools:
            effects.append(CancelTool(call.tool_use_id))
    # An answer from an earlier connection is not remembered as interrupted: the
    # current connection numbers its own responses and may reuse that id.
    remembered = conv.interrupted_ids if conv.audible_from_old_connection else _remember_interrupted(conv, rid)
    conv = attrs.evolve(
        conv,
        audible_id=None,
        audible_from_old_connection=False,
        interrupted_ids=remembered,
        played_ms=0.0,
        received_ms=0.0,
    )
    return conv, tuple(effects)


def _speech_while_responding(conv: Conversation, ev: BidiSpeechStartedEvent) -> Result:
    assert conv.response_id is not None
    conv, effects = _interrupt(conv, conv.response_id, cancel=True)
    return attrs.evolve(conv, phase=Phase.INTERRUPTED), effects


def _speech_while_idle(conv: Conversation, ev: BidiSpeechStartedEvent) -> Result:
    """Speech with no response generating interrupts only audio still playing."""
    if conv.audible_id is None:
        return conv, ()
    return _interrupt(conv, conv.audible_id, cancel=False)


def _playback(conv: Conversation, ev: PlaybackProgress) -> Result:
    report = ev.report
    if conv.audio_unobserved:
        # An output that did not declare ``reports_playback`` reports after all: what
        # the current response received went uncounted, so it counts as unbounded
        # (audible until the output says it finished; a truncate says what was played).
        received = math.inf if conv.response_id is not None else conv.received_ms
        conv = attrs.evolve(conv, audio_unobserved=False, received_ms=received)
    if not conv.tracks_playback:
        conv = attrs.evolve(conv, tracks_playback=True)
    if report.response_id != conv.audible_id:
        return conv, ()
    conv = attrs.evolve(conv, played_ms=max(conv.played_ms, report.played_ms))
    if report.finished and conv.response_id != report.response_id:
        conv = attrs.evolve(conv, audible_id=None)
    return conv, ()


# --------------------------------------------------------------------------- handlers: tools


def _tool_use(conv: Conversation, ev: BidiToolUseEvent) -> Result:
    if ev.tool_use_id in conv.tool_ids():
        return conv, (
            Emit(BidiErrorEvent(message=f"duplicate tool call id {ev.tool_use_id!r}", code="protocol_error")),
        )
    call = ToolCall(ev.tool_use_id, ev.name, conv.connection_id)
    new = attrs.evolve(conv, pending_tools=conv.pending_tools | {call})
    return new, (Emit(ev), AppendHistory(ToolCallMessage(ev.tool_use_id, ev.name, dict(ev.input))), RunTool(ev))


def _settle_tool(conv: Conversation, call: ToolCall, result: BidiToolResultEvent) -> Result:
    """The call is over: the model hears its outcome (now or on the next
    connection), unless the provider withdrew it."""
    withdrawn = call.tool_use_id in conv.withdrawn_tools
    conv = attrs.evolve(
        conv, pending_tools=conv.pending_tools - {call}, withdrawn_tools=conv.withdrawn_tools - {call.tool_use_id}
    )
    if withdrawn:
        # Never sent; the history keeps calls and results in pairs (providers refuse
        # a replayed call with no outcome).
        note = ToolResultMessage(call.tool_use_id, call.name, "cancelled", "The model withdrew this call.")
        return conv, (Emit(result), AppendHistory(note))
    conv, sent = _accept(conv, result, issued_on=call.issued_on)
    return conv, (Emit(result), *sent)


def _tool_finished(conv: Conversation, ev: ToolFinished) -> Result:
    r = ev.result
    call = conv.tool_call(r.tool_use_id)
    if call is None:
        return conv, ()  # cancelled meanwhile; its cancellation already settled it
    effects: list[Effect] = []
    if ev.error_type is not None:
        effects.append(Emit(BidiErrorEvent(message=str(r.content), code="tool_error", details=ev.error_type)))
    if ev.ends_conversation:
        # Not sent: the conversation ends here. Kept so a later session knows.
        conv = attrs.evolve(conv, pending_tools=conv.pending_tools - {call})
        effects += [Emit(r), AppendHistory(ToolResultMessage(r.tool_use_id, r.name, r.status, r.content))]
        return _close(conv, "user_request", None, effects)
    conv, settled = _settle_tool(conv, call, r)
    return conv, (*effects, *settled)


def _tool_cancelled(conv: Conversation, ev: ToolCancelled) -> Result:
    call = conv.tool_call(ev.tool_use_id)
    if call is None:
        return conv, ()
    # We cancelled it (barge-in) or the provider withdrew it; either way the call is answered.
    result = BidiToolResultEvent(
        tool_use_id=call.tool_use_id, name=call.name, status="cancelled", content="The tool call was cancelled."
    )
    return _settle_tool(conv, call, result)


def _tool_withdrawn(conv: Conversation, ev: BidiToolCancelEvent) -> Result:
    ids = conv.tool_ids() & set(ev.tool_use_ids)
    new = attrs.evolve(conv, withdrawn_tools=conv.withdrawn_tools | ids)
    return new, tuple(CancelTool(i) for i in sorted(ids))


# --------------------------------------------------------------------------- settling rules


@attrs.frozen
class SettlingRule:
    """What follows from the state alone, whatever event led there (h11's
    state-triggered transitions): in ``phase``, when ``applies``, ``apply``
    moves the conversation to ``target``."""

    name: str
    phase: Phase
    target: Phase
    applies: Callable[[Conversation], bool]
    apply: Callable[[Conversation], Result]


SETTLING_RULES: tuple[SettlingRule, ...] = (
    SettlingRule(
        "tools pending",
        Phase.LISTENING,
        Phase.TOOL_CALLING,
        lambda c: bool(c.pending_tools),
        lambda c: (attrs.evolve(c, phase=Phase.TOOL_CALLING), ()),
    ),
    SettlingRule(
        "no tool pending",
        Phase.TOOL_CALLING,
        Phase.LISTENING,
        lambda c: not c.pending_tools,
        lambda c: (attrs.evolve(c, phase=Phase.LISTENING), ()),
    ),
    SettlingRule(
        "rotation due at a turn boundary",
        Phase.LISTENING,
        Phase.RESTARTING,
        lambda c: c.rotation_due is not None,
        lambda c: _rotate(c, f"{c.rotation_due}; rotating at a turn boundary"),
    ),
)
"""Applied in order after every handler, each at most once."""


def _settle(conv: Conversation, effects: tuple[Effect, ...]) -> Result:
    for rule in SETTLING_RULES:
        if conv.phase is rule.phase and rule.applies(conv):
            conv, more = rule.apply(conv)
            effects += more
    return conv, effects


# --------------------------------------------------------------------------- the table


@attrs.frozen
class Transition:
    """One entry of the table: the handler and the phases it may lead to
    (empty: the phase stays; the settling rules may still move it)."""

    handler: Handler
    targets: frozenset[Phase] = frozenset()


_MODEL_EVENTS: tuple[type, ...] = (
    BidiResponseStartEvent,
    BidiAudioStreamEvent,
    BidiTranscriptStreamEvent,
    BidiResponseCompleteEvent,
    BidiUsageEvent,
    BidiErrorEvent,
    BidiToolUseEvent,
    BidiSpeechStartedEvent,
    BidiToolCancelEvent,
    BidiConnectionExpiringEvent,
    BidiResumptionUpdateEvent,
)
"""Events only an open connection produces."""


def _proves_connection(handler: Handler) -> Handler:
    """A provider that said something is there: its connection has proven
    itself, and the count of failed attempts starts again."""

    @functools.wraps(handler)
    def heard(conv: Conversation, ev: Any) -> Result:
        if not conv.connection_proven:
            conv = attrs.evolve(conv, connection_proven=True, failures=0)
        return handler(conv, ev)

    return heard


def _on_timer(handlers: Mapping[str, Handler]) -> Handler:
    """Dispatch a timer by name; a timer nobody handles in this phase is a
    straggler (it belonged to a connection already gone)."""

    def timer(conv: Conversation, ev: TimerFired) -> Result:
        return handlers.get(ev.name, _ignore)(conv, ev)

    timer.__name__ = "_timer(" + ", ".join(handlers) + ")"
    return timer


def _build_table() -> dict[tuple[Phase, type], Transition]:
    t: dict[tuple[Phase, type], Transition] = {}

    def add(phases: Iterable[Phase], event_type: type, handler: Handler, *targets: Phase) -> None:
        for phase in phases:
            t[(phase, event_type)] = Transition(handler, frozenset(targets) - {phase})

    live, offline = LIVE_PHASES, OFFLINE_PHASES
    not_closed = live | offline
    listening_or_tools = {Phase.LISTENING, Phase.TOOL_CALLING}
    R, C = Phase.RESTARTING, Phase.CLOSED

    # The connection.
    add({Phase.CONNECTING}, Started, _started)
    add(offline, Connected, _connected, Phase.LISTENING)
    add(offline, ConnectFailed, _connect_failed, C)
    add(live, ConnectionEnded, _connection_ended, R, C)
    add(offline, ConnectionEnded, _ignore)
    add(offline, TimerFired, _on_timer({BACKOFF_TIMER: _backoff_over}))
    live_timers = {STABLE_TIMER: _stable, CONNECTION_AGE_TIMER: _connection_age, ROTATION_TIMER: _rotation_deadline}
    add(live, TimerFired, _on_timer(live_timers), R)

    # The user.
    add(not_closed, UserInput, _user_input)
    add(not_closed, Written, _item_written)
    add(not_closed, InvalidInput, _invalid_input)
    add(not_closed, PlaybackProgress, _playback)
    add(not_closed, StopRequested, _stop, C)

    # The model.
    model: list[tuple[Iterable[Phase], type, Handler, tuple[Phase, ...]]] = [
        (live, BidiResponseStartEvent, _response_start, (Phase.RESPONDING,)),
        ({Phase.RESPONDING}, BidiResponseCompleteEvent, _response_complete, (Phase.LISTENING,)),
        ({Phase.INTERRUPTED}, BidiResponseCompleteEvent, _interrupted_complete, (Phase.LISTENING,)),
        (listening_or_tools, BidiResponseCompleteEvent, _ignore, ()),
        (live, BidiAudioStreamEvent, _audio, ()),
        (live, BidiTranscriptStreamEvent, _transcript, ()),
        (live, BidiUsageEvent, _emit, ()),
        (live, BidiErrorEvent, _emit, ()),
        ({Phase.RESPONDING}, BidiSpeechStartedEvent, _speech_while_responding, (Phase.INTERRUPTED,)),
        (listening_or_tools | {Phase.INTERRUPTED}, BidiSpeechStartedEvent, _speech_while_idle, ()),
        (live, BidiToolUseEvent, _tool_use, ()),
        (live, BidiToolCancelEvent, _tool_withdrawn, ()),
        (live, BidiResumptionUpdateEvent, _resume_handle, ()),
        (live, BidiConnectionExpiringEvent, _expiring, ()),
    ]
    for phases, event_type, handler, targets in model:
        add(phases, event_type, _proves_connection(handler), *targets)
    for event_type in _MODEL_EVENTS:
        add(offline, event_type, _unexpected)

    # Tools.
    add(not_closed, ToolFinished, _tool_finished, C)
    add(not_closed, ToolCancelled, _tool_cancelled)

    # CLOSED is absorbing: stragglers of the shutdown are accepted and ignored (a
    # connection that opened while the conversation was closing is one of them).
    # User input there is illegal: the conversation is over.
    stragglers = (
        Connected,
        ConnectFailed,
        ConnectionEnded,
        Written,
        InvalidInput,
        ToolFinished,
        ToolCancelled,
        PlaybackProgress,
        TimerFired,
        StopRequested,
        *_MODEL_EVENTS,
    )
    for late in stragglers:
        add({C}, late, _ignore)
    return t


TRANSITIONS: Mapping[tuple[Phase, type], Transition] = _build_table()
"""``(phase, event type) -> Transition``; a pair not in the table is illegal."""


def step(conv: Conversation, event: Event) -> Result:
    """Apply ``event`` to ``conv``; return the new state and the effects to run.

    Raises :class:`IllegalTransition` (and changes nothing, since the state is
    immutable) when the table has no entry for ``(conv.phase, type(event))``.
    """
    transition = TRANSITIONS.get((conv.phase, type(event)))
    if transition is None:
        raise IllegalTransition(conv.phase, event)
    new, effects = transition.handler(conv, event)
    if new.phase is not conv.phase and new.phase not in transition.targets:  # pragma: no cover - a table bug
        raise AssertionError(f"{conv.phase.name} x {type(event).__name__} led to {new.phase.name}, not in the table")
    if new.phase is Phase.LISTENING or new.phase is Phase.TOOL_CALLING:
        return _settle(new, effects)
    return new, effects
