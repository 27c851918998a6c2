"""Representative conversation states and events, for every phase and every
event type the state machine knows.

Used by ``tests/test_conversation_table.py`` (every phase x every event
type, checked against the targets the table declares). Every state here is
reached from a fresh :class:`Conversation` through legal steps only, so a
sample can never be a state the machine itself could not produce.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import attrs

import ports.events
from bidi_core import shell_events
from bidi_core.conversation import (
    BACKOFF_TIMER,
    CONNECTION_AGE_TIMER,
    ROTATION_TIMER,
    STABLE_TIMER,
    TRANSITIONS,
    Conversation,
    Phase,
    step,
)
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
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
from ports.errors import BidiConnectionError, BidiProviderError, BidiResumptionRejectedError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiEvent,
    BidiImageInputEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiSpeechStoppedEvent,
    BidiTextInputEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)
from ports.io import PlaybackReport
from ports.model import ModelCapabilities

__all__ = [
    "SHELL_EVENT_TYPES",
    "Sample",
    "all_event_types",
    "audio_out",
    "drive",
    "representative_event",
    "representative_state",
    "sample_events",
    "sample_states",
]

SHELL_EVENT_TYPES: tuple[type, ...] = (
    Started,
    Connected,
    ConnectFailed,
    ConnectionEnded,
    Written,
    UserInput,
    InvalidInput,
    ToolFinished,
    ToolCancelled,
    ToolRefused,
    HookFailed,
    PlaybackProgress,
    TimerFired,
    StopRequested,
)
"""The events only the shell produces (:mod:`bidi_core.shell_events`)."""


@attrs.frozen
class Sample:
    """A labelled sample value (a state or an event)."""

    label: str
    value: object


def audio_out(rid: str | None, ms: int = 20, rate: int = 24000) -> BidiAudioStreamEvent:
    """``ms`` milliseconds of model audio (16-bit mono PCM)."""
    return BidiAudioStreamEvent(audio=b"\x01\x00" * (rate * ms // 1000), sample_rate=rate, response_id=rid)


def drive(conv: Conversation, *events: object) -> Conversation:
    """Step ``conv`` through ``events`` (each must be legal) and return the result."""
    for event in events:
        conv, _ = step(conv, event)
    return conv


def _lost(conv: Conversation) -> Conversation:
    """The open connection dropped (retryable)."""
    assert conv.connection_id is not None
    return drive(conv, ConnectionEnded(conv.connection_id, BidiConnectionError("network")))


def _listening(**capabilities: object) -> Conversation:
    caps = ModelCapabilities(**capabilities)  # type: ignore[arg-type]
    return drive(Conversation(), Started(), Connected("c1", "test-model", caps))


def _responding(**capabilities: object) -> Conversation:
    return drive(_listening(**capabilities), BidiResponseStartEvent("r1"), audio_out("r1", 40))


def _tool_calling() -> Conversation:
    return drive(_listening(), BidiToolUseEvent("t1", "lookup", {"q": "x"}))


def _answer_still_playing() -> Conversation:
    """LISTENING: r1 completed with half of its audio played."""
    return drive(
        _responding(can_truncate=True),
        PlaybackProgress(PlaybackReport("r1", 20.0)),
        BidiResponseCompleteEvent("r1", "complete"),
    )


_STATE_BUILDERS: dict[Phase, list[tuple[str, Callable[[], Conversation]]]] = {
    Phase.CONNECTING: [
        ("initial", Conversation),
        ("started", lambda: drive(Conversation(), Started())),
        ("with buffered input", lambda: drive(Conversation(), Started(), UserInput(BidiTextInputEvent("early")))),
    ],
    Phase.LISTENING: [
        ("after Connected", _listening),
        ("audio of the last response still playing", _answer_still_playing),
        (
            "an answer of the previous connection still playing",
            lambda: drive(
                _lost(drive(_answer_still_playing(), TimerFired(STABLE_TIMER))),
                Connected("c2", "test-model", ModelCapabilities(can_truncate=True)),
            ),
        ),
    ],
    Phase.RESPONDING: [
        ("after a response start", _responding),
        ("with a tool running", lambda: drive(_responding(), BidiToolUseEvent("t1", "lookup"))),
        ("rotation pending", lambda: drive(_responding(), BidiConnectionExpiringEvent(30.0))),
    ],
    Phase.INTERRUPTED: [
        ("after speech while responding", lambda: drive(_responding(), BidiSpeechStartedEvent())),
        (
            "with a tool running",
            lambda: drive(_responding(), BidiToolUseEvent("t1", "lookup"), BidiSpeechStartedEvent()),
        ),
        (
            "rotation pending",
            lambda: drive(_responding(), BidiConnectionExpiringEvent(30.0), BidiSpeechStartedEvent()),
        ),
    ],
    Phase.TOOL_CALLING: [
        ("listening + tool use", _tool_calling),
        ("two tools running", lambda: drive(_tool_calling(), BidiToolUseEvent("t2", "lookup"))),
        ("tool withdrawn by the provider", lambda: drive(_tool_calling(), BidiToolCancelEvent(("t1",)))),
        ("rotation pending", lambda: drive(_tool_calling(), BidiConnectionExpiringEvent(30.0))),
    ],
    Phase.RESTARTING: [
        ("a quiet connection dropped (backing off)", lambda: _lost(_listening())),
        ("response cut off", lambda: _lost(_responding())),
        ("with a tool running", lambda: _lost(_tool_calling())),
        ("the last answer still playing", lambda: _lost(_answer_still_playing())),
        ("with buffered input", lambda: drive(_lost(_listening()), UserInput(BidiTextInputEvent("meanwhile")))),
    ],
    Phase.CLOSED: [
        ("after StopRequested", lambda: drive(_listening(), StopRequested())),
        ("stopped mid-response", lambda: drive(_responding(), StopRequested())),
        ("stopped while connecting", lambda: drive(Conversation(), StopRequested())),
    ],
}


def sample_states(phase: Phase) -> list[Sample]:
    """Several states in ``phase``, the first being the representative one."""
    out = [Sample(label, build()) for label, build in _STATE_BUILDERS[phase]]
    for sample in out:
        assert isinstance(sample.value, Conversation), sample.label
        assert sample.value.phase is phase, (phase, sample.label)
    return out


def representative_state(phase: Phase) -> Conversation:
    state = sample_states(phase)[0].value
    assert isinstance(state, Conversation)
    return state


def all_event_types() -> list[type]:
    """Every event type the machine knows of: the table's, the shell's and
    every event class of :mod:`ports.events` (most of those are illegal
    everywhere: output events and raw, unwrapped input events)."""
    types: set[type] = {t for (_, t) in TRANSITIONS}
    types.update(SHELL_EVENT_TYPES)
    for _, obj in inspect.getmembers(ports.events, inspect.isclass):
        if issubclass(obj, BidiEvent) and obj is not BidiEvent:
            types.add(obj)
    return sorted(types, key=lambda t: (t.__module__ != shell_events.__name__, t.__name__))


def _pending_ids(conv: Conversation) -> list[str]:
    return sorted(conv.tool_ids()) or ["t-unknown"]


def _result(tool_use_id: str) -> BidiToolResultEvent:
    return BidiToolResultEvent(tool_use_id=tool_use_id, name="lookup", status="success", content="42")


def _samples_for(event_type: type, conv: Conversation) -> list[tuple[str, object]]:
    """(label, event) pairs of ``event_type`` that make sense in ``conv``."""
    rid = conv.response_id or conv.audible_id or "r-old"
    tid = _pending_ids(conv)[0]
    if event_type is Connected:
        return [
            ("", Connected("c2", "test-model")),
            ("age limit", Connected("c2", "test-model", ModelCapabilities(max_connection_s=600.0))),
        ]
    if event_type is ConnectionEnded:
        cid = conv.connection_id or "c-old"
        return [
            ("retryable", ConnectionEnded(cid, BidiConnectionError("network"))),
            ("ended by the provider", ConnectionEnded(cid, None)),
            ("fatal", ConnectionEnded(cid, BidiProviderError("bad key", code="auth", retryable=False))),
            ("an adapter bug", ConnectionEnded(cid, ValueError("bug"))),
            ("an earlier connection", ConnectionEnded("c-old", BidiConnectionError("network"))),
        ]
    if event_type is ConnectFailed:
        return [
            ("retryable", ConnectFailed(BidiConnectionError("refused"))),
            ("fatal", ConnectFailed(BidiProviderError("bad key", code="auth", retryable=False))),
            ("resumption refused", ConnectFailed(BidiResumptionRejectedError("handle expired"))),
        ]
    if event_type is Started:
        return [("", Started()), ("outputs report playback", Started(outputs_report_playback=True))]
    if event_type is Written:
        entries = conv.outbox.in_flight + conv.outbox.waiting
        return [("", Written(entries[0].seq if entries else 99))]
    if event_type is InvalidInput:
        return [("", InvalidInput("not an input"))]
    if event_type is UserInput:
        return [
            ("text", UserInput(BidiTextInputEvent("hello"))),
            ("audio", UserInput(BidiAudioInputEvent(b"\x00\x00" * 160))),
            ("image", UserInput(BidiImageInputEvent(b"\xff\xd8"))),
        ]
    if event_type is ToolFinished:
        return [
            ("", ToolFinished(_result(tid))),
            ("stop_conversation", ToolFinished(_result(tid), ends_conversation=True)),
            ("raised", ToolFinished(_result(tid), error_type="ValueError")),
        ]
    if event_type is ToolCancelled:
        return [("", ToolCancelled(tid))]
    if event_type is ToolRefused:
        return [
            ("refused", ToolRefused(tid, message="The user said no.")),
            ("hook raised", ToolRefused(tid, error_type="KeyError", detail="KeyError: 'who'")),
        ]
    if event_type is HookFailed:
        return [("", HookFailed("on_response_started", "ValueError", "ValueError: boom"))]
    if event_type is PlaybackProgress:
        return [
            ("", PlaybackProgress(PlaybackReport(rid, 10.0))),
            ("finished", PlaybackProgress(PlaybackReport(rid, 40.0, finished=True))),
        ]
    if event_type is TimerFired:
        return [
            ("rotate", TimerFired(ROTATION_TIMER)),
            ("connection age", TimerFired(CONNECTION_AGE_TIMER)),
            ("backoff", TimerFired(BACKOFF_TIMER)),
            ("stable", TimerFired(STABLE_TIMER)),
        ]
    if event_type is StopRequested:
        return [("", StopRequested())]
    return [("", _model_or_port_event(event_type, conv, rid, tid))]


def _model_or_port_event(event_type: type, conv: Conversation, rid: str, tid: str) -> object:
    factories: dict[type, Callable[[], object]] = {
        BidiResponseStartEvent: lambda: BidiResponseStartEvent("r-new"),
        BidiResponseCompleteEvent: lambda: BidiResponseCompleteEvent(rid, "complete"),
        BidiAudioStreamEvent: lambda: audio_out(conv.response_id),
        BidiTranscriptStreamEvent: lambda: BidiTranscriptStreamEvent("Hi.", "Hi.", "assistant", True, rid),
        BidiUsageEvent: lambda: BidiUsageEvent(10, 20, 30),
        BidiErrorEvent: lambda: BidiErrorEvent("provider hiccup", code="x"),
        BidiToolUseEvent: lambda: BidiToolUseEvent("t-new", "lookup", {"q": "y"}),
        BidiToolCancelEvent: lambda: BidiToolCancelEvent(tuple(_pending_ids(conv))),
        BidiResumptionUpdateEvent: lambda: BidiResumptionUpdateEvent("handle-2", inputs_included=3),
        BidiConnectionExpiringEvent: lambda: BidiConnectionExpiringEvent(20.0),
        BidiSpeechStartedEvent: BidiSpeechStartedEvent,
        BidiSpeechStoppedEvent: BidiSpeechStoppedEvent,
        # Never legal input to the machine: raw input events (the shell wraps
        # them in UserInput) and output events (the machine only emits them).
        BidiTextInputEvent: lambda: BidiTextInputEvent("raw"),
        BidiAudioInputEvent: lambda: BidiAudioInputEvent(b"\x00\x00"),
        BidiImageInputEvent: lambda: BidiImageInputEvent(b"\xff\xd8"),
        BidiConnectionStartEvent: lambda: BidiConnectionStartEvent("c9", "test-model"),
        BidiConnectionRestartEvent: lambda: BidiConnectionRestartEvent("expiring"),
        BidiConnectionCloseEvent: lambda: BidiConnectionCloseEvent("complete"),
        BidiInterruptionEvent: lambda: BidiInterruptionEvent("user_speech", rid),
        BidiToolResultEvent: lambda: _result(tid),
    }
    try:
        factory = factories[event_type]
    except KeyError:
        raise LookupError(
            f"no sample event for {event_type.__name__}; add one to tests/conversation_samples.py"
        ) from None
    return factory()


def sample_events(event_type: type, conv: Conversation) -> list[Sample]:
    """Events of ``event_type`` that make sense in ``conv`` (ids of its pending
    tools, of its current response, ...); the first is the representative one."""
    return [Sample(label, event) for label, event in _samples_for(event_type, conv)]


def representative_event(event_type: type, conv: Conversation) -> object:
    return sample_events(event_type, conv)[0].value
