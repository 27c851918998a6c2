"""The conversation state machine: events in, new state and effects out.

Rule 1 of this module: it does no I/O, reads no clock and imports no async
library. Everything the conversation knows is in one frozen
:class:`Conversation`; everything it wants done is returned as plain
:data:`Effect` values that the shell (:mod:`bidi_core.agent`) carries out in
order. Time is an event too: the core asks for a :class:`StartTimer` and the
shell feeds back :class:`TimerFired`.

Rule 2: transitions are data. :data:`TRANSITIONS` maps ``(phase, event type)``
to a handler; a pair missing from the table is illegal, and :func:`step`
raises :class:`IllegalTransition` and changes nothing. ``scripts/
render_state_diagram.py`` draws ``docs/state-diagram.md`` from the same table.

Phases::

    CONNECTING -> LISTENING <-> RESPONDING -> INTERRUPTED -> LISTENING
    RESPONDING/LISTENING -> TOOL_CALLING -> RESPONDING | LISTENING
    any live phase -> RESTARTING -> LISTENING | TOOL_CALLING
    any phase -> CLOSED (absorbing)

``TOOL_CALLING`` means tools are running and no response is being generated;
tools may also run while ``RESPONDING`` (their ids are in ``pending_tools``).

Invariants (checked by ``tests/test_conversation_properties.py``):

* no audio of a response is emitted after that response was interrupted;
* every :class:`RunTool` ends in exactly one tool result sent to the model or
  one cancellation the provider asked for;
* ``CLOSED`` is absorbing;
* user input accepted while connecting or restarting is sent to the next
  connection, in order, exactly once;
* an illegal event raises and changes nothing.

History: the core records what the model said (final transcripts, tool
calls). What the user said (text) and tool results enter the history when the
shell has written them to a connection, so a history replayed after a
reconnect never duplicates an item still waiting to be sent.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import attrs

from bidi_core.machine_io import (
    CancelTimer,
    CancelTool,
    ClearPlayback,
    Close,
    ConfirmDelivery,
    Connected,
    ConnectionLost,
    Effect,
    Emit,
    Event,
    PlaybackProgress,
    Reconnect,
    Record,
    ResumptionRejected,
    RunTool,
    SendToModel,
    StartTimer,
    StopRequested,
    TimerFired,
    ToolCancelled,
    ToolFinished,
    UserInput,
)
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiImageInputEvent,
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
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage
from ports.model import CancelResponse, ModelCapabilities, ModelInput, TruncateResponse

__all__ = [
    "LIVE_PHASES",
    "TRANSITIONS",
    "CancelTimer",
    "CancelTool",
    "ClearPlayback",
    "Close",
    "ConfirmDelivery",
    "Connected",
    "ConnectionLost",
    "Conversation",
    "Effect",
    "Emit",
    "Event",
    "IllegalTransition",
    "Phase",
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

ROTATION_TIMER = "rotate"
"""Timer that forces a pending rotation even in the middle of a turn."""
CONNECTION_AGE_TIMER = "connection_age"
"""Timer that starts a rotation before the provider's connection limit."""


class IllegalTransition(Exception):
    """``event`` cannot happen in ``phase``. The state is unchanged."""

    def __init__(self, phase: Phase, event: object) -> None:
        super().__init__(f"{type(event).__name__} is not allowed while {phase.value}")
        self.phase = phase
        self.event = event


# --------------------------------------------------------------------------- state


@attrs.frozen
class ToolCall:
    tool_use_id: str
    name: str


@attrs.frozen
class Conversation:
    """Everything the conversation knows.

    ``audible_id`` is the response whose audio the user may still be hearing
    (after the model finished generating it, outputs can still be playing it);
    ``received_ms``/``played_ms`` measure that audio. ``tracks_playback`` is
    True when some output reports playback; without it nothing is assumed
    heard after a response completes. ``audio_unobserved`` is set by the shell
    when no output declared that it reports playback: received audio is then
    not counted (the count would never be read, and copying the state for
    every audio chunk is the hottest path's main cost). ``audible_elsewhere`` says the audible
    response came over an earlier connection: a barge-in still silences it,
    but the provider is told nothing of a response it never saw.
    ``interrupted_ids`` fences late audio of responses cut short (the most
    recent last; cleared for a new connection). ``pending_input`` holds user
    input while no connection is open. ``rotate_pending`` is set when the
    connection should be replaced at the next turn boundary.
    """

    phase: Phase = Phase.CONNECTING
    capabilities: ModelCapabilities = ModelCapabilities()
    connection_id: str | None = None
    response_id: str | None = None
    audible_id: str | None = None
    audible_elsewhere: bool = False
    received_ms: float = 0.0
    played_ms: float = 0.0
    tracks_playback: bool = False
    audio_unobserved: bool = False
    interrupted_ids: tuple[str, ...] = ()
    pending_tools: frozenset[ToolCall] = frozenset()
    withdrawn_tools: frozenset[str] = frozenset()
    interruptible_tools: frozenset[str] = frozenset()
    pending_input: tuple[ModelInput, ...] = ()
    dropped_audio_chunks: int = 0
    max_pending_audio_chunks: int = 1500
    rotate_pending: bool = False
    rotation_margin_s: float = 30.0
    resume_handle: str | None = attrs.field(default=None, repr=False)

    def tool_ids(self) -> frozenset[str]:
        return frozenset(c.tool_use_id for c in self.pending_tools)


Transition: TypeAlias = tuple[Conversation, tuple[Effect, ...]]
Handler: TypeAlias = Callable[[Conversation, Any], Transition]

_INTERRUPTED_FENCE = 16
"""How many interrupted response ids to remember (late audio arrives within
a few messages; an unbounded set would grow for hours)."""


# --------------------------------------------------------------------------- handlers


def _margin(margin_s: float, limit_s: float) -> float:
    """How long before a connection limit to start rotating: the configured
    margin, but never more than a tenth of the limit (a short limit would
    otherwise rotate the moment a connection opens, forever)."""
    return min(margin_s, limit_s / 10)


def _connected(conv: Conversation, ev: Connected) -> Transition:
    phase = Phase.TOOL_CALLING if conv.pending_tools else Phase.LISTENING
    effects: list[Effect] = [Emit(BidiConnectionStartEvent(connection_id=ev.connection_id, model=ev.model))]
    effects += [SendToModel(item) for item in conv.pending_input]
    limit = ev.capabilities.max_connection_s
    if limit is not None:
        effects.append(StartTimer(CONNECTION_AGE_TIMER, limit - _margin(conv.rotation_margin_s, limit)))
    new = attrs.evolve(
        conv,
        phase=phase,
        capabilities=ev.capabilities,
        connection_id=ev.connection_id,
        response_id=None,
        interrupted_ids=(),  # response ids belong to a connection
        pending_input=(),
        rotate_pending=False,
    )
    return new, tuple(effects)


def _send_input(conv: Conversation, ev: UserInput) -> Transition:
    return conv, (SendToModel(ev.event),)


def _buffer_input(conv: Conversation, ev: UserInput) -> Transition:
    return _buffer(conv, ev.event)


def _buffer(conv: Conversation, item: ModelInput) -> Transition:
    """Keep ``item`` for the next connection. Audio beyond the bound drops
    oldest-first (a few seconds of stale speech is worth less than what the
    user says now); text and tool results are never dropped."""
    pending = (*conv.pending_input, item)
    dropped = conv.dropped_audio_chunks
    audio_count = sum(isinstance(p, BidiAudioInputEvent) for p in pending)
    if audio_count > conv.max_pending_audio_chunks:
        first_audio = next(i for i, p in enumerate(pending) if isinstance(p, BidiAudioInputEvent))
        pending = pending[:first_audio] + pending[first_audio + 1 :]
        dropped += 1
    return attrs.evolve(conv, pending_input=pending, dropped_audio_chunks=dropped), ()


def _response_start(conv: Conversation, ev: BidiResponseStartEvent) -> Transition:
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
        audible_elsewhere=False,
        received_ms=0.0,
        played_ms=0.0,
    )
    return new, tuple(effects)


def _audio(conv: Conversation, ev: BidiAudioStreamEvent) -> Transition:
    rid = ev.response_id if ev.response_id is not None else conv.response_id
    if rid is None or rid != conv.response_id or rid in conv.interrupted_ids:
        return conv, ()  # late audio of a response that ended or was cut short
    if ev.response_id is None:
        ev = attrs.evolve(ev, response_id=rid)
    if conv.audio_unobserved:
        return conv, (Emit(ev),)
    return attrs.evolve(conv, received_ms=conv.received_ms + ev.duration_ms), (Emit(ev),)


def _drop(conv: Conversation, ev: object) -> Transition:
    return conv, ()


def _transcript(conv: Conversation, ev: BidiTranscriptStreamEvent) -> Transition:
    effects: list[Effect] = [Emit(ev)]
    if ev.is_final and ev.text:
        effects.append(Record(TextMessage(role=ev.role, text=ev.text)))
    return conv, tuple(effects)


def _emit(conv: Conversation, ev: BidiUsageEvent | BidiErrorEvent) -> Transition:
    return conv, (Emit(ev),)


def _after_turn(conv: Conversation, effects: list[Effect]) -> Transition:
    """The model is not generating: settle into LISTENING or TOOL_CALLING, and
    rotate the connection now if a rotation was waiting for this boundary."""
    phase = Phase.TOOL_CALLING if conv.pending_tools else Phase.LISTENING
    conv = attrs.evolve(conv, phase=phase, response_id=None)
    if conv.rotate_pending and phase is Phase.LISTENING:
        return _begin_restart(conv, "expiring", "rotating at a turn boundary", effects)
    return conv, tuple(effects)


def _response_complete(conv: Conversation, ev: BidiResponseCompleteEvent) -> Transition:
    if ev.response_id != conv.response_id:
        return conv, ()  # completion of a response already closed locally
    if not conv.tracks_playback or conv.played_ms >= conv.received_ms:
        # Nothing of it can still be playing: no output reports playback, or
        # everything received was already played (or it had no audio at all).
        conv = attrs.evolve(conv, audible_id=None)
    return _after_turn(conv, [Emit(ev)])


def _interrupted_complete(conv: Conversation, ev: BidiResponseCompleteEvent) -> Transition:
    if ev.response_id != conv.response_id:
        return conv, ()
    effects: list[Effect] = [Emit(attrs.evolve(ev, stop_reason="interrupted"))]
    return _after_turn(conv, effects)


def _fence(conv: Conversation, rid: str) -> tuple[str, ...]:
    """``interrupted_ids`` with ``rid`` added as the most recent, bounded."""
    kept = [i for i in conv.interrupted_ids if i != rid][-(_INTERRUPTED_FENCE - 1) :]
    return (*kept, rid)


def _interrupt(conv: Conversation, rid: str, cancel: bool) -> tuple[Conversation, list[Effect]]:
    """Cut ``rid`` short: discard its audio everywhere, tell the user and the model."""
    effects: list[Effect] = [ClearPlayback(rid), Emit(BidiInterruptionEvent(reason="user_speech", response_id=rid))]
    if cancel and not conv.capabilities.cancels_on_speech:
        effects.append(SendToModel(CancelResponse(rid)))
    if conv.capabilities.can_truncate and conv.tracks_playback and not conv.audible_elsewhere:
        heard = min(conv.played_ms, conv.received_ms)
        effects.append(SendToModel(TruncateResponse(response_id=rid, audio_end_ms=int(heard))))
    for call in sorted(conv.pending_tools, key=lambda c: c.tool_use_id):
        if call.name in conv.interruptible_tools:
            effects.append(CancelTool(call.tool_use_id))
    # An answer from an earlier connection is not fenced: the current connection
    # numbers its own responses and may reuse that id.
    fence = conv.interrupted_ids if conv.audible_elsewhere else _fence(conv, rid)
    conv = attrs.evolve(
        conv,
        audible_id=None,
        audible_elsewhere=False,
        interrupted_ids=fence,
        played_ms=0.0,
        received_ms=0.0,
    )
    return conv, effects


def _speech_while_responding(conv: Conversation, ev: BidiSpeechStartedEvent) -> Transition:
    assert conv.response_id is not None
    conv, effects = _interrupt(conv, conv.response_id, cancel=True)
    return attrs.evolve(conv, phase=Phase.INTERRUPTED), tuple(effects)


def _speech_while_idle(conv: Conversation, ev: BidiSpeechStartedEvent) -> Transition:
    """Speech with no response generating interrupts only audio still playing."""
    if conv.audible_id is None:
        return conv, ()
    conv, effects = _interrupt(conv, conv.audible_id, cancel=False)
    return conv, tuple(effects)


def _tool_use(conv: Conversation, ev: BidiToolUseEvent) -> Transition:
    if ev.tool_use_id in conv.tool_ids():
        return conv, (
            Emit(BidiErrorEvent(message=f"duplicate tool call id {ev.tool_use_id!r}", code="protocol_error")),
        )
    call = ToolCall(ev.tool_use_id, ev.name)
    phase = Phase.TOOL_CALLING if conv.phase is Phase.LISTENING else conv.phase
    new = attrs.evolve(conv, phase=phase, pending_tools=conv.pending_tools | {call})
    return new, (Emit(ev), Record(ToolCallMessage(ev.tool_use_id, ev.name, dict(ev.input))), RunTool(ev))


def _finish_tool(conv: Conversation, tool_use_id: str) -> Conversation:
    remaining = frozenset(c for c in conv.pending_tools if c.tool_use_id != tool_use_id)
    conv = attrs.evolve(conv, pending_tools=remaining, withdrawn_tools=conv.withdrawn_tools - {tool_use_id})
    if conv.phase is Phase.TOOL_CALLING and not remaining:
        conv = attrs.evolve(conv, phase=Phase.LISTENING)
    return conv


def _deliver_result(conv: Conversation, result: BidiToolResultEvent) -> Transition:
    """Tell the model a tool's outcome: now, or on the next connection."""
    if conv.phase is Phase.RESTARTING:
        return _buffer(conv, result)
    return conv, (SendToModel(result),)


def _tool_finished(conv: Conversation, ev: ToolFinished) -> Transition:
    rid = ev.result.tool_use_id
    if rid not in conv.tool_ids():
        return conv, ()  # cancelled meanwhile; its cancellation already settled it
    withdrawn = rid in conv.withdrawn_tools
    r = ev.result
    effects: list[Effect] = [Emit(r)]
    conv = _finish_tool(conv, rid)
    if ev.ends_conversation:
        # Not sent: the conversation ends here. Kept so a later session knows.
        effects.append(Record(ToolResultMessage(r.tool_use_id, r.name, r.status, r.content)))
        return _close(conv, "user_request", None, effects)
    if withdrawn:
        effects.append(_withdrawn_record(r.tool_use_id, r.name))
    else:
        conv, sent = _deliver_result(conv, r)
        effects += sent
    if conv.rotate_pending and conv.phase is Phase.LISTENING:
        return _begin_restart(conv, "expiring", "rotating at a turn boundary", effects)
    return conv, tuple(effects)


def _tool_cancelled(conv: Conversation, ev: ToolCancelled) -> Transition:
    call = next((c for c in conv.pending_tools if c.tool_use_id == ev.tool_use_id), None)
    if call is None:
        return conv, ()
    withdrawn = ev.tool_use_id in conv.withdrawn_tools
    result = BidiToolResultEvent(
        tool_use_id=call.tool_use_id, name=call.name, status="cancelled", content="The tool call was cancelled."
    )
    effects: list[Effect] = [Emit(result)]
    conv = _finish_tool(conv, ev.tool_use_id)
    if withdrawn:
        effects.append(_withdrawn_record(call.tool_use_id, call.name))
    else:
        # We cancelled it (barge-in): the model still needs an answer for the call.
        conv, sent = _deliver_result(conv, result)
        effects += sent
    if conv.rotate_pending and conv.phase is Phase.LISTENING:
        return _begin_restart(conv, "expiring", "rotating at a turn boundary", effects)
    return conv, tuple(effects)


def _withdrawn_record(tool_use_id: str, name: str) -> Record:
    """A withdrawn call's result is never sent, but the history keeps calls and
    results in pairs (providers refuse a replayed call with no outcome)."""
    return Record(ToolResultMessage(tool_use_id, name, "cancelled", "The model withdrew this call."))


def _tool_withdrawn(conv: Conversation, ev: BidiToolCancelEvent) -> Transition:
    ids = conv.tool_ids() & set(ev.tool_use_ids)
    new = attrs.evolve(conv, withdrawn_tools=conv.withdrawn_tools | ids)
    return new, tuple(CancelTool(i) for i in sorted(ids))


def _playback(conv: Conversation, ev: PlaybackProgress) -> Transition:
    report = ev.report
    if conv.audio_unobserved:
        # An output that did not declare ``reports_playback`` reports after all: what
        # the current response received went uncounted, so it counts as unbounded
        # (audible until the output says it finished; a truncate says what was played).
        received = math.inf if conv.response_id is not None else conv.received_ms
        conv = attrs.evolve(conv, audio_unobserved=False, received_ms=received)
    conv = attrs.evolve(conv, tracks_playback=True)
    if report.response_id != conv.audible_id:
        return conv, ()
    conv = attrs.evolve(conv, played_ms=max(conv.played_ms, report.played_ms))
    if report.finished and conv.response_id != report.response_id:
        conv = attrs.evolve(conv, audible_id=None)
    return conv, ()


def _resume_handle(conv: Conversation, ev: BidiResumptionUpdateEvent) -> Transition:
    return attrs.evolve(conv, resume_handle=ev.handle), (ConfirmDelivery(ev.inputs_included),)


def _resumption_rejected(conv: Conversation, ev: ResumptionRejected) -> Transition:
    """The handle is stale: forget it, so the next attempt opens a fresh
    session seeded with the history, and tell the application."""
    details = f"{ev.reason}; starting a fresh session seeded with the history"
    restart = Emit(BidiConnectionRestartEvent(reason="resumption_rejected", details=details))
    return attrs.evolve(conv, resume_handle=None), (restart,)


def _expiring(conv: Conversation, ev: BidiConnectionExpiringEvent) -> Transition:
    """Rotate now if between turns; else at the next boundary, but before the deadline."""
    if conv.phase is Phase.LISTENING:
        return _begin_restart(conv, "expiring", f"provider closes in {ev.time_left_s:g}s", [])
    grace = max(ev.time_left_s - 1.0, 0.0)
    return attrs.evolve(conv, rotate_pending=True), (StartTimer(ROTATION_TIMER, grace),)


def _timer(conv: Conversation, ev: TimerFired) -> Transition:
    if conv.phase not in LIVE_PHASES:
        return conv, ()  # a timer of a connection that is already gone
    if ev.name == CONNECTION_AGE_TIMER:
        limit = conv.capabilities.max_connection_s or conv.rotation_margin_s
        return _expiring(conv, BidiConnectionExpiringEvent(time_left_s=_margin(conv.rotation_margin_s, limit)))
    if ev.name == ROTATION_TIMER and conv.rotate_pending:
        return _begin_restart(conv, "expiring", "connection limit reached mid-turn", [])
    return conv, ()


def _begin_restart(conv: Conversation, reason: str, details: str | None, effects: list[Effect]) -> Transition:
    """Leave the current connection. A response in flight is cut off: its
    audio is discarded and it completes with ``error`` (``interrupted`` if it
    was). The audio of a finished response plays on (a rotation at a turn
    boundary must not cut off the answer the user is hearing); it now belongs
    to an earlier connection."""
    effects = list(effects)
    if conv.response_id is not None:
        rid = conv.response_id
        cut: StopReason = "interrupted" if conv.phase is Phase.INTERRUPTED else "error"
        effects += [ClearPlayback(rid), Emit(BidiResponseCompleteEvent(response_id=rid, stop_reason=cut))]
        conv = attrs.evolve(conv, interrupted_ids=_fence(conv, rid), audible_id=None, played_ms=0.0, received_ms=0.0)
    elif conv.audible_id is not None:
        conv = attrs.evolve(conv, audible_elsewhere=True)
    effects += [
        CancelTimer(ROTATION_TIMER),
        CancelTimer(CONNECTION_AGE_TIMER),
        Emit(BidiConnectionRestartEvent(reason=reason, details=details)),
        Reconnect(reason),
    ]
    new = attrs.evolve(conv, phase=Phase.RESTARTING, response_id=None, rotate_pending=False, connection_id=None)
    return new, tuple(effects)


def _connection_lost(conv: Conversation, ev: ConnectionLost) -> Transition:
    if ev.retryable:
        return _begin_restart(conv, "connection_lost", ev.reason, [])
    return _close(conv, "error", ev.error, [])


def _connect_failed(conv: Conversation, ev: ConnectionLost) -> Transition:
    """No connection could be opened (the shell has exhausted its retries)."""
    return _close(conv, "error", ev.error, [])


_GRACEFUL = frozenset({"user_request", "complete"})
"""Close reasons after which the outputs play out what they hold (a goodbye)."""


def _close(conv: Conversation, reason: Any, error: BaseException | None, effects: list[Effect]) -> Transition:
    """End the conversation. A graceful end lets the last words play out; any
    other end silences the outputs."""
    effects = list(effects)
    if conv.audible_id is not None and reason not in _GRACEFUL:
        effects.append(ClearPlayback(conv.audible_id))
    if conv.response_id is not None:
        # Every response start gets its completion, also when the conversation ends mid-response.
        effects.append(Emit(BidiResponseCompleteEvent(response_id=conv.response_id, stop_reason="interrupted")))
    effects += [CancelTool(c.tool_use_id) for c in sorted(conv.pending_tools, key=lambda c: c.tool_use_id)]
    effects += [
        CancelTimer(ROTATION_TIMER),
        CancelTimer(CONNECTION_AGE_TIMER),
        Emit(BidiConnectionCloseEvent(reason=reason, connection_id=conv.connection_id)),
        Close(reason, error),
    ]
    new = attrs.evolve(
        conv,
        phase=Phase.CLOSED,
        response_id=None,
        audible_id=None,
        audible_elsewhere=False,
        pending_tools=frozenset(),
        withdrawn_tools=frozenset(),
        pending_input=(),
        rotate_pending=False,
    )
    return new, tuple(effects)


def _stop(conv: Conversation, ev: StopRequested) -> Transition:
    return _close(conv, ev.reason, None, [])


def _tool_settled_after_close(conv: Conversation, ev: object) -> Transition:
    return conv, ()


# --------------------------------------------------------------------------- the table

_MODEL_STREAM = (
    BidiAudioStreamEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    BidiErrorEvent,
    BidiToolUseEvent,
    BidiToolCancelEvent,
    BidiResumptionUpdateEvent,
    BidiConnectionExpiringEvent,
    BidiResponseStartEvent,
    BidiResponseCompleteEvent,
    BidiSpeechStartedEvent,
)
"""Events only an open connection produces."""


def _build_table() -> dict[tuple[Phase, type], Handler]:
    t: dict[tuple[Phase, type], Handler] = {}

    def add(phases: frozenset[Phase] | set[Phase], event_type: type, handler: Handler) -> None:
        for phase in phases:
            t[(phase, event_type)] = handler

    live = set(LIVE_PHASES)
    offline = {Phase.CONNECTING, Phase.RESTARTING}
    not_closed = live | offline

    add(offline, Connected, _connected)
    add(offline, ConnectionLost, _connect_failed)
    add(offline, ResumptionRejected, _resumption_rejected)
    add(offline, UserInput, _buffer_input)
    add(live, UserInput, _send_input)

    add(
        {Phase.LISTENING, Phase.TOOL_CALLING, Phase.INTERRUPTED, Phase.RESPONDING},
        BidiResponseStartEvent,
        _response_start,
    )
    add({Phase.RESPONDING}, BidiResponseCompleteEvent, _response_complete)
    add({Phase.INTERRUPTED}, BidiResponseCompleteEvent, _interrupted_complete)
    add({Phase.LISTENING, Phase.TOOL_CALLING}, BidiResponseCompleteEvent, _drop)
    add(live, BidiAudioStreamEvent, _audio)
    add(live, BidiTranscriptStreamEvent, _transcript)
    add(live, BidiUsageEvent, _emit)
    add(live, BidiErrorEvent, _emit)
    add({Phase.RESPONDING}, BidiSpeechStartedEvent, _speech_while_responding)
    add({Phase.LISTENING, Phase.TOOL_CALLING, Phase.INTERRUPTED}, BidiSpeechStartedEvent, _speech_while_idle)
    add(live, BidiToolUseEvent, _tool_use)
    add(live, BidiToolCancelEvent, _tool_withdrawn)
    add(live, BidiResumptionUpdateEvent, _resume_handle)
    add(live, BidiConnectionExpiringEvent, _expiring)
    add(live, ConnectionLost, _connection_lost)

    add(not_closed, ToolFinished, _tool_finished)
    add(not_closed, ToolCancelled, _tool_cancelled)
    add(not_closed, PlaybackProgress, _playback)
    add(not_closed, TimerFired, _timer)
    add(not_closed, StopRequested, _stop)

    # CLOSED is absorbing: stragglers of the shutdown are accepted and ignored.
    # User input and model traffic there are illegal: the shell must not send them.
    # A connection that opened while the conversation was closing is one of them.
    for late in (ToolFinished, ToolCancelled, PlaybackProgress, TimerFired, StopRequested, ConnectionLost, Connected):
        t[(Phase.CLOSED, late)] = _tool_settled_after_close
    return t


TRANSITIONS: Mapping[tuple[Phase, type], Handler] = _build_table()
"""``(phase, event type) -> handler``; a pair not in the table is illegal."""


def step(conv: Conversation, event: Event) -> Transition:
    """Apply ``event`` to ``conv``; return the new state and the effects to run.

    Raises :class:`IllegalTransition` (and changes nothing, since the state is
    immutable) when the table has no entry for ``(conv.phase, type(event))``.
    """
    handler = TRANSITIONS.get((conv.phase, type(event)))
    if handler is None:
        raise IllegalTransition(conv.phase, event)
    return handler(conv, event)


def accepts_input(conv: Conversation) -> bool:
    """Whether user input is accepted now (anything but CLOSED)."""
    return conv.phase is not Phase.CLOSED


# Input event classes the shell may wrap in UserInput.
INPUT_EVENT_TYPES: tuple[type, ...] = (BidiTextInputEvent, BidiAudioInputEvent, BidiImageInputEvent)
