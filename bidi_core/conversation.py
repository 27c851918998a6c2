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

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from bidi_core.connection_rules import (
    backoff_over,
    connect_failed,
    connected,
    connection_age,
    connection_ended,
    expiring,
    resume_handle,
    rotate,
    rotation_deadline,
    stable,
    started,
    stop,
)
from bidi_core.effects import (
    Effect,
)
from bidi_core.outbox_rules import (
    invalid_input,
    item_written,
    orphaned_result_text,
    user_input,
)
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
    Event,
    HookFailed,
    InvalidInput,
    PlaybackProgress,
    Started,
    StopRequested,
    TimerFired,
    ToolCancelled,
    ToolFinished,
    ToolRefused,
    UserInput,
    Written,
)
from bidi_core.state import (
    BACKOFF_TIMER,
    CONNECTION_AGE_TIMER,
    LIVE_PHASES,
    OFFLINE_PHASES,
    ROTATION_TIMER,
    STABLE_TIMER,
    Conversation,
    ConversationConfig,
    Handler,
    IllegalTransition,
    Phase,
    Result,
    ToolCall,
)
from bidi_core.turn_rules import (
    audio,
    emit,
    hook_failed,
    ignore,
    interrupted_complete,
    playback,
    response_complete,
    response_start,
    speech_while_idle,
    speech_while_responding,
    tool_cancelled,
    tool_finished,
    tool_refused,
    tool_use,
    tool_withdrawn,
    transcript,
    unexpected,
    usage,
)
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionExpiringEvent,
    BidiErrorEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiSpeechStoppedEvent,
    BidiToolCancelEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)

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
        lambda c: rotate(c, f"{c.rotation_due}; rotating at a turn boundary"),
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
    BidiSpeechStoppedEvent,
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
        return handlers.get(ev.name, ignore)(conv, ev)

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
    add({Phase.CONNECTING}, Started, started)
    add(offline, Connected, connected, Phase.LISTENING)
    add(offline, ConnectFailed, connect_failed, C)
    add(live, ConnectionEnded, connection_ended, R, C)
    add(offline, ConnectionEnded, ignore)
    add(offline, TimerFired, _on_timer({BACKOFF_TIMER: backoff_over}))
    live_timers = {STABLE_TIMER: stable, CONNECTION_AGE_TIMER: connection_age, ROTATION_TIMER: rotation_deadline}
    add(live, TimerFired, _on_timer(live_timers), R)

    # The user.
    add(not_closed, UserInput, user_input)
    add(not_closed, Written, item_written)
    add(not_closed, InvalidInput, invalid_input)
    add(not_closed, PlaybackProgress, playback)
    add(not_closed, StopRequested, stop, C)

    # The model.
    model: list[tuple[Iterable[Phase], type, Handler, tuple[Phase, ...]]] = [
        (live, BidiResponseStartEvent, response_start, (Phase.RESPONDING,)),
        ({Phase.RESPONDING}, BidiResponseCompleteEvent, response_complete, (Phase.LISTENING,)),
        ({Phase.INTERRUPTED}, BidiResponseCompleteEvent, interrupted_complete, (Phase.LISTENING,)),
        (listening_or_tools, BidiResponseCompleteEvent, ignore, ()),
        (live, BidiAudioStreamEvent, audio, ()),
        (live, BidiTranscriptStreamEvent, transcript, ()),
        (live, BidiUsageEvent, usage, ()),
        (live, BidiErrorEvent, emit, ()),
        ({Phase.RESPONDING}, BidiSpeechStartedEvent, speech_while_responding, (Phase.INTERRUPTED,)),
        (listening_or_tools | {Phase.INTERRUPTED}, BidiSpeechStartedEvent, speech_while_idle, ()),
        (live, BidiSpeechStoppedEvent, ignore, ()),  # a mark for timing (the shell's), nothing to decide
        (live, BidiToolUseEvent, tool_use, ()),
        (live, BidiToolCancelEvent, tool_withdrawn, ()),
        (live, BidiResumptionUpdateEvent, resume_handle, ()),
        (live, BidiConnectionExpiringEvent, expiring, ()),
    ]
    for phases, event_type, handler, targets in model:
        add(phases, event_type, _proves_connection(handler), *targets)
    for event_type in _MODEL_EVENTS:
        add(offline, event_type, unexpected)

    # Tools.
    add(not_closed, ToolFinished, tool_finished, C)
    add(not_closed, ToolCancelled, tool_cancelled)
    add(not_closed, ToolRefused, tool_refused)
    add(not_closed, HookFailed, hook_failed)

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
        ToolRefused,
        HookFailed,
        PlaybackProgress,
        TimerFired,
        StopRequested,
        *_MODEL_EVENTS,
    )
    for late in stragglers:
        add({C}, late, ignore)
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
    if new.phase is not conv.phase and new.phase not in transition.targets:  # a table bug
        raise AssertionError(f"{conv.phase.name} x {type(event).__name__} led to {new.phase.name}, not in the table")
    if new.phase is Phase.LISTENING or new.phase is Phase.TOOL_CALLING:
        return _settle(new, effects)
    return new, effects
