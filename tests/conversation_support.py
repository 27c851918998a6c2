"""Helpers for the step-by-step conversation tests (``tests/test_conversation_*.py``).

Like h11's ``tests/test_state.py``: :func:`expect` steps the conversation and
compares the complete new :class:`Conversation` value with the expected one
(built with ``attrs.evolve`` from the previous expectation) and the effects
tuple in full, order included. The other helpers take a conversation through
the common steps (start, connect, a response begins, audio arrives, the user
says something and the writer writes it), each checked the same way.
"""

from __future__ import annotations

import attrs

from bidi_core.conversation import (
    BACKOFF_TIMER,
    CONNECTION_AGE_TIMER,
    ROTATION_TIMER,
    STABLE_TIMER,
    Conversation,
    ConversationConfig,
    Phase,
    ToolCall,
    step,
)
from bidi_core.effects import (
    AppendHistory,
    CancelTimer,
    ClearPlayback,
    CloseConnection,
    Effect,
    Emit,
    OpenConnection,
    RunTool,
    SendToModel,
    StartTimer,
)
from bidi_core.outbox import Entry
from bidi_core.shell_events import Connected, Started, UserInput, Written
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
)
from ports.messages import TextMessage, ToolCallMessage
from ports.model import ModelCapabilities

__all__ = [
    "CAPS",
    "CLOSE_TIMERS",
    "LEAVE_TIMERS",
    "audio_out",
    "connected",
    "cut_off",
    "evolve",
    "expect",
    "heard",
    "left",
    "responding",
    "result",
    "say",
    "started",
    "text",
    "tool_use",
    "with_audio",
]

evolve = attrs.evolve
CAPS = ModelCapabilities()
LEAVE_TIMERS: tuple[Effect, ...] = (
    CancelTimer(ROTATION_TIMER),
    CancelTimer(CONNECTION_AGE_TIMER),
    CancelTimer(STABLE_TIMER),
)
"""The timers of a connection, cancelled when the core leaves it."""
CLOSE_TIMERS: tuple[Effect, ...] = (*LEAVE_TIMERS, CancelTimer(BACKOFF_TIMER))
"""Every timer, cancelled when the conversation closes."""


def expect(conv: Conversation, event: object, state: Conversation, effects: tuple[Effect, ...] = ()) -> Conversation:
    """Step and compare everything; return the new state for the next step."""
    new, got = step(conv, event)  # type: ignore[arg-type]
    assert got == effects, f"effects:\n  got      {got}\n  expected {effects}"
    assert new == state, "state differs: " + "; ".join(
        f"{f.name}: got {getattr(new, f.name)!r}, expected {getattr(state, f.name)!r}"
        for f in attrs.fields(Conversation)
        if getattr(new, f.name) != getattr(state, f.name)
    )
    return new


def audio_out(rid: str | None, ms: int = 20, rate: int = 24000) -> BidiAudioStreamEvent:
    """``ms`` milliseconds of model audio (16-bit mono PCM)."""
    return BidiAudioStreamEvent(audio=b"\x01\x00" * (rate * ms // 1000), sample_rate=rate, response_id=rid)


def text(s: str) -> UserInput:
    return UserInput(BidiTextInputEvent(s))


def result(tool_use_id: str, name: str, content: object = "ok") -> BidiToolResultEvent:
    return BidiToolResultEvent(tool_use_id=tool_use_id, name=name, status="success", content=content)


def started(config: ConversationConfig | None = None, reports_playback: bool | None = None) -> Conversation:
    """A fresh conversation after ``Started``: it asks for its first connection."""
    conv = Conversation() if config is None else Conversation(config=config)
    return expect(
        conv,
        Started(reports_playback),
        evolve(conv, tracks_playback=reports_playback is True, audio_unobserved=reports_playback is False),
        (OpenConnection(None),),
    )


def connected(
    caps: ModelCapabilities = CAPS, conv: Conversation | None = None, connection_id: str = "c1"
) -> Conversation:
    """A started conversation (or ``conv``, offline with nothing to send) after
    ``Connected``, checked in full. The connection has no age limit and is not
    proven yet."""
    conv = started() if conv is None else conv
    assert caps.max_connection_s is None
    assert not conv.outbox.waiting
    assert not conv.outbox.unconfirmed
    return expect(
        conv,
        Connected(connection_id, "m", caps),
        evolve(
            conv,
            phase=Phase.LISTENING,
            capabilities=caps,
            connection_id=connection_id,
            interrupted_ids=(),
            connection_proven=False,
            outbox=evolve(conv.outbox, written=0, confirmed=0),
        ),
        (
            Emit(BidiConnectionStartEvent(connection_id, "m")),
            StartTimer(STABLE_TIMER, conv.config.reconnect.stable_after_s),
        ),
    )


def heard(conv: Conversation) -> Conversation:
    """``conv`` after the provider said something: its connection is proven."""
    return evolve(conv, connection_proven=True, failures=0)


def responding(conv: Conversation, rid: str = "r1") -> Conversation:
    return expect(
        conv,
        BidiResponseStartEvent(rid),
        evolve(
            heard(conv),
            phase=Phase.RESPONDING,
            response_id=rid,
            audible_id=rid,
            audible_from_old_connection=False,
            received_ms=0.0,
            played_ms=0.0,
        ),
        (Emit(BidiResponseStartEvent(rid)),),
    )


def with_audio(conv: Conversation, rid: str, ms: int) -> Conversation:
    chunk = audio_out(rid, ms)
    return expect(conv, chunk, evolve(heard(conv), received_ms=conv.received_ms + ms), (Emit(chunk),))


def tool_use(conv: Conversation, tool_use_id: str, name: str, **inputs: object) -> Conversation:
    """The model calls a tool: it is shown, recorded and run. Listening, the
    conversation moves on to tool calling."""
    call = BidiToolUseEvent(tool_use_id, name, inputs)
    phase = Phase.TOOL_CALLING if conv.phase is Phase.LISTENING else conv.phase
    return expect(
        conv,
        call,
        evolve(
            heard(conv),
            phase=phase,
            pending_tools=conv.pending_tools | {ToolCall(tool_use_id, name, conv.connection_id)},
        ),
        (Emit(call), AppendHistory(ToolCallMessage(tool_use_id, name, inputs)), RunTool(call)),
    )


def say(conv: Conversation, s: str) -> Conversation:
    """The user types ``s`` on an open connection with nothing in flight: it is
    recorded and handed to the writer; then the writer reports it written
    (a provider that does not resume sessions: the outbox forgets it)."""
    box = conv.outbox
    assert not box.in_flight
    assert not conv.capabilities.resumable
    item, message = BidiTextInputEvent(s), TextMessage("user", s)
    conv = expect(
        conv,
        text(s),
        evolve(conv, outbox=evolve(box, in_flight=(Entry(box.next_seq, item, message),), next_seq=box.next_seq + 1)),
        (AppendHistory(message), SendToModel(item, box.next_seq)),
    )
    return expect(
        conv,
        Written(box.next_seq),
        evolve(conv, outbox=evolve(box, next_seq=box.next_seq + 1, written=box.written + 1)),
    )


def left(reason: str, details: str) -> tuple[Effect, ...]:
    """The effects of leaving a connection with no response in flight and nothing unwritten."""
    return (*LEAVE_TIMERS, Emit(BidiConnectionRestartEvent(reason, details)), CloseConnection(reason))


def cut_off(rid: str, stop_reason: str, reason: str, details: str) -> tuple[Effect, ...]:
    """The effects of leaving a connection while ``rid`` is in flight."""
    return (
        ClearPlayback(rid),
        Emit(BidiResponseCompleteEvent(rid, stop_reason)),  # type: ignore[arg-type]
        *left(reason, details),
    )
