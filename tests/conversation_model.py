"""An independent model of what a conversation should know, for the stateful
property test (``tests/test_conversation_properties.py``).

The property test never computes an expectation from the implementation's
own state: it steps this model with the same events and compares. The model
is deliberately plain (mutable, lists and dicts, no table): what phase the
conversation is in follows from what it knows (offline, a response open,
interrupted, tools pending, closed), not from a stored phase. After each step
it also says what that step did (``Step``): what was handed to the connection,
which connection was left and why, whether a new one is opened now or after a
backoff, whether the conversation closed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from bidi_core.conversation import (
    BACKOFF_TIMER,
    CONNECTION_AGE_TIMER,
    ROTATION_TIMER,
    STABLE_TIMER,
    ConversationConfig,
    Phase,
    orphaned_result_text,
)
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
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
from ports.errors import BidiError, BidiProtocolError, BidiResumptionRejectedError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionExpiringEvent,
    BidiErrorEvent,
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
from ports.messages import Message, TextMessage, ToolResultMessage
from ports.model import ModelCapabilities

__all__ = ["MODEL_EVENTS", "Expected", "Item", "Stage", "Step"]

MODEL_EVENTS = (
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
FENCE = 16
UNCONFIRMED_SLACK = 256
CANCELLED = "The tool call was cancelled."


class Stage(enum.Enum):
    WAITING = "waiting"
    IN_FLIGHT = "in flight"
    WRITTEN = "written"  # reached a connection
    RECORDED = "recorded"  # a cancelled result of a gone call: recorded, never sent
    DROPPED = "dropped"  # audio over the cap
    DISCARDED = "discarded"  # the conversation ended first


@dataclass
class Item:
    """One accepted input or tool result. ``record``: what the history gets for
    it (``None``: audio, images); ``issued_on``: for a tool result, the
    connection that issued the call."""

    seq: int
    item: Any
    record: Message | None
    issued_on: str | None
    stage: Stage = Stage.WAITING
    written_once: bool = False
    lost_by_cap: bool = False  # written, then dropped from the unconfirmed to make room for newer audio
    handed_while: Stage | None = None  # the stage it was in when the conversation ended

    @property
    def is_audio(self) -> bool:
        return isinstance(self.item, BidiAudioInputEvent)


@dataclass
class Step:
    """What one step did, in the model's terms."""

    handed: list[tuple[int, Any, Message | None]] = field(default_factory=list)  # (seq, item sent, recorded first)
    recorded_only: list[tuple[int, Message | None]] = field(default_factory=list)  # (seq, recorded now)
    interruption: tuple[str, bool, int | None, list[str]] | None = None  # rid, cancel, truncate at, tools cancelled
    interrupted_old: bool = False  # the answer silenced came over an earlier connection
    interrupted_uncounted: bool = False  # its audio went uncounted (an output reported undeclared)
    left: str | None = None  # the reason the connection was left
    cut: tuple[str, str] | None = None  # (response id, stop reason) cut off by leaving
    retracted: list[Message] = field(default_factory=list)  # records taken back on leaving, latest first
    reopen: bool = False  # a new connection is asked for now
    backoff: float | None = None
    closing: str | None = None
    closed_with: tuple[str | None, str | None, str | None, list[str]] | None = (
        None  # audible, response, connection, tools
    )
    protocol_error: bool = False
    rejected: bool = False  # a resumption was refused: a fresh session is asked for


class Expected:
    """What the conversation should know. Mutable; ``step`` applies one legal event."""

    def __init__(self, config: ConversationConfig) -> None:
        self.config = config
        self.caps = ModelCapabilities()
        self.ever_connected = False
        self.closed = False
        self.connection: str | None = None
        self.response: str | None = None
        self.interrupted = False
        self.audible: str | None = None
        self.audible_old = False
        self.received = 0.0
        self.played = 0.0
        self.tracks = False
        self.unobserved = False
        self.fence: list[str] = []
        self.tools: dict[str, tuple[str, str | None]] = {}
        self.withdrawn: set[str] = set()
        self.failures = 0
        self.proven = False
        self.handle: str | None = None
        self.rotation_due = False
        # The outbox: every item by number, and the numbers in each stage.
        self.items: dict[int, Item] = {}
        self.waiting: list[int] = []
        self.in_flight: list[int] = []
        self.unconfirmed: list[int] = []
        self.written = 0
        self.confirmed = 0
        self.dropped = 0
        self.last = Step()

    @property
    def phase(self) -> Phase:
        if self.closed:
            return Phase.CLOSED
        if self.connection is None:
            return Phase.RESTARTING if self.ever_connected else Phase.CONNECTING
        if self.response is not None:
            return Phase.INTERRUPTED if self.interrupted else Phase.RESPONDING
        return Phase.TOOL_CALLING if self.tools else Phase.LISTENING

    @property
    def held_audio(self) -> int:
        return sum(self.items[s].is_audio for s in (*self.waiting, *self.in_flight, *self.unconfirmed))

    # ------------------------------------------------------------------ the outbox

    def accept(self, item: Any, record: Message | None, issued_on: str | None = None) -> None:
        seq = len(self.items)
        self.items[seq] = Item(seq, item, record, issued_on)
        self.waiting.append(seq)
        if self.items[seq].is_audio and self.held_audio > self.config.max_buffered_audio:
            # The oldest audio the writer does not hold goes: written but unconfirmed first.
            old = next((s for s in self.unconfirmed if self.items[s].is_audio), None)
            if old is not None:
                self.unconfirmed.remove(old)
                self.items[old].lost_by_cap = True
                self.confirmed += 1
            else:
                old = next(s for s in self.waiting if self.items[s].is_audio)
                self.waiting.remove(old)
                self.items[old].stage = Stage.DROPPED
            self.dropped += 1
        self.hand()

    def hand(self) -> None:
        if self.connection is None or self.closed:
            return
        handed = []
        while self.waiting and len(self.in_flight) + len(handed) < self.config.send_window:
            handed.append(self.waiting.pop(0))
        self.in_flight += handed
        for seq in handed:
            entry = self.items[seq]
            entry.stage = Stage.IN_FLIGHT
            record = None if entry.written_once else entry.record
            sent = entry.item
            if self._record_only(seq):
                # Nobody waits for it: recorded now, never sent; it leaves once all
                # before it was written (a lost connection retracts it with them).
                self.last.recorded_only.append((seq, record))
                continue
            if isinstance(sent, BidiToolResultEvent) and entry.issued_on != self.connection:
                sent = BidiTextInputEvent(orphaned_result_text(sent))
            self.last.handed.append((seq, sent, record))
        self._settle_record_only()

    def _record_only(self, seq: int) -> bool:
        item = self.items[seq]
        result = item.item
        return (
            isinstance(result, BidiToolResultEvent)
            and result.status == "cancelled"
            and item.issued_on != self.connection
        )

    def _settle_record_only(self) -> None:
        settled = False
        while self.in_flight and self._record_only(self.in_flight[0]):
            seq = self.in_flight.pop(0)
            self.items[seq].stage, self.items[seq].written_once = Stage.RECORDED, True
            settled = True
        if settled and self.waiting:
            self.hand()

    def mark_written(self, seq: int) -> None:
        if seq in self.in_flight:
            self.in_flight.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)  # written as its connection ended
        else:
            return
        entry = self.items[seq]
        entry.stage, entry.written_once = Stage.WRITTEN, True
        self.written += 1
        if self.caps.resumable:
            self.unconfirmed.append(seq)
            if len(self.unconfirmed) > self.config.max_buffered_audio + UNCONFIRMED_SLACK:
                self.unconfirmed.pop(0)
                self.confirmed += 1
        self._settle_record_only()

    def confirm(self, included: int | None) -> None:
        target = self.written if included is None else min(included, self.written)
        count = min(max(target - self.confirmed, 0), len(self.unconfirmed))
        del self.unconfirmed[:count]
        self.confirmed += count

    # ------------------------------------------------------------------ stepping

    def step(self, event: object) -> Step:
        self.last = Step()
        if self.closed:
            return self.last
        if isinstance(event, MODEL_EVENTS):
            if self.connection is None:
                self.last.protocol_error = True
                return self.last
            self.proven, self.failures = True, 0
            self._model_event(event)
        else:
            self._shell_event(event)
        if self.phase is Phase.LISTENING and self.rotation_due:
            self._leave("expiring")
            self.last.reopen = True
        return self.last

    def _shell_event(self, ev: object) -> None:
        if isinstance(ev, Started):
            self.tracks, self.unobserved = ev.outputs_report_playback is True, ev.outputs_report_playback is False
            self.last.reopen = True
        elif isinstance(ev, Connected):
            resumed = self.handle is not None
            self.connection, self.ever_connected, self.caps = ev.connection_id, True, ev.capabilities
            self.fence, self.rotation_due, self.proven = [], False, False
            if resumed:
                for seq in self.unconfirmed:
                    self.items[seq].stage = Stage.WAITING
                self.waiting = self.unconfirmed + self.waiting
            self.unconfirmed, self.written, self.confirmed = [], 0, 0
            self.hand()
        elif isinstance(ev, ConnectFailed):
            if isinstance(ev.error, BidiResumptionRejectedError):
                self.handle = None
                self.last.rejected = self.last.reopen = True
            elif not _retryable(ev.error):
                self._close("error")
            else:
                self._retry_later()
        elif isinstance(ev, ConnectionEnded):
            if self.connection is None or ev.connection_id != self.connection:
                return
            if ev.error is None:  # the service ended the session for good
                self._close("provider_closed")
                return
            if not _retryable(ev.error):
                self._close("error")
                return
            proven = self.proven
            self._leave("connection_lost")
            if proven:
                self.last.reopen = True
            else:
                self._retry_later()
        elif isinstance(ev, TimerFired):
            self._timer(ev.name)
        elif isinstance(ev, UserInput):
            record = TextMessage("user", ev.event.text) if isinstance(ev.event, BidiTextInputEvent) else None
            self.accept(ev.event, record)
        elif isinstance(ev, Written):
            self.mark_written(ev.seq)
            self.hand()
        elif isinstance(ev, PlaybackProgress):
            self._playback(ev)
        elif isinstance(ev, StopRequested):
            self._close(ev.reason)
        elif isinstance(ev, ToolFinished):
            if ev.result.tool_use_id not in self.tools:
                return
            if ev.ends_conversation:
                del self.tools[ev.result.tool_use_id]
                self._close("user_request")
            else:
                self._settle_tool(ev.result)
        elif isinstance(ev, ToolCancelled) and ev.tool_use_id in self.tools:
            name = self.tools[ev.tool_use_id][0]
            self._settle_tool(BidiToolResultEvent(ev.tool_use_id, name, "cancelled", CANCELLED))
        elif isinstance(ev, ToolRefused) and ev.tool_use_id in self.tools:
            name = self.tools[ev.tool_use_id][0]
            if ev.error_type is not None:
                content = f"The tool call was not run: the check before it failed ({ev.error_type})."
            else:
                content = ev.message or f"The call to {name} was refused."
            self._settle_tool(BidiToolResultEvent(ev.tool_use_id, name, "error", content))

    def _timer(self, name: str) -> None:
        if self.connection is None:
            self.last.reopen = name == BACKOFF_TIMER
        elif name == STABLE_TIMER:
            self.proven, self.failures = True, 0
        elif name == CONNECTION_AGE_TIMER:
            self.rotation_due = True
        elif name == ROTATION_TIMER and self.rotation_due:
            self._leave("expiring")
            self.last.reopen = True

    def _playback(self, ev: PlaybackProgress) -> None:
        report = ev.report
        if self.unobserved:
            self.unobserved = False
            if self.response is not None:
                self.received = math.inf  # what it received went uncounted
        self.tracks = True
        if report.response_id != self.audible:
            return
        self.played = max(self.played, report.played_ms)
        if report.finished and self.response != report.response_id:
            self.audible = None

    def _model_event(self, ev: object) -> None:
        if isinstance(ev, BidiResponseStartEvent):
            self.response, self.interrupted = ev.response_id, False
            self.audible, self.audible_old, self.received, self.played = ev.response_id, False, 0.0, 0.0
        elif isinstance(ev, BidiAudioStreamEvent):
            rid = ev.response_id if ev.response_id is not None else self.response
            if rid is not None and rid == self.response and rid not in self.fence and not self.unobserved:
                self.received += ev.duration_ms
        elif isinstance(ev, BidiResponseCompleteEvent):
            if self.response is None or ev.response_id != self.response:
                return
            if not self.interrupted and (not self.tracks or self.played >= self.received):
                self.audible = None
            self.response, self.interrupted = None, False
        elif isinstance(ev, BidiSpeechStartedEvent):
            if self.response is not None and not self.interrupted:
                self._interrupt(self.response, cancel=True)
                self.interrupted = True
            elif self.audible is not None:
                self._interrupt(self.audible, cancel=False)
        elif isinstance(ev, BidiToolUseEvent):
            self.tools.setdefault(ev.tool_use_id, (ev.name, self.connection))
        elif isinstance(ev, BidiToolCancelEvent):
            self.withdrawn |= self.tools.keys() & set(ev.tool_use_ids)
        elif isinstance(ev, BidiResumptionUpdateEvent):
            self.handle = ev.handle
            self.confirm(ev.inputs_included)
        elif isinstance(ev, BidiConnectionExpiringEvent):
            self.rotation_due = True

    def _interrupt(self, rid: str, cancel: bool) -> None:
        truncate = None
        if self.caps.can_truncate and self.tracks and not self.audible_old:
            truncate = int(min(self.played, self.received))
        tools = sorted(t for t, (name, _) in self.tools.items() if name in self.config.interruptible_tools)
        self.last.interruption = (rid, cancel and not self.caps.cancels_on_speech, truncate, tools)
        self.last.interrupted_old = self.audible_old
        self.last.interrupted_uncounted = self.received == math.inf
        if not self.audible_old:
            self._fence(rid)
        self.audible, self.audible_old, self.played, self.received = None, False, 0.0, 0.0

    def _fence(self, rid: str) -> None:
        self.fence = [*(r for r in self.fence if r != rid), rid][-FENCE:]

    def _settle_tool(self, result: BidiToolResultEvent) -> None:
        name, issued_on = self.tools.pop(result.tool_use_id)
        if result.tool_use_id in self.withdrawn:
            self.withdrawn.discard(result.tool_use_id)
            return
        record = ToolResultMessage(result.tool_use_id, name, result.status, result.content)
        self.accept(result, record, issued_on)

    def _retry_later(self) -> None:
        self.failures += 1
        if self.failures >= self.config.reconnect.max_attempts:
            self._close("error")
        else:
            self.last.backoff = self.config.reconnect.delay(self.failures)

    def _leave(self, reason: str) -> None:
        self.last.left = reason
        if self.response is not None:
            self.last.cut = (self.response, "interrupted" if self.interrupted else "error")
            self._fence(self.response)
            self.audible, self.played, self.received = None, 0.0, 0.0
        elif self.audible is not None:
            self.audible_old = True
        self.response, self.interrupted, self.rotation_due, self.connection = None, False, False, None
        self.last.retracted = [
            r
            for s in reversed(self.in_flight)
            if (r := self.items[s].record) is not None and not self.items[s].written_once
        ]
        for seq in self.in_flight:
            self.items[seq].stage = Stage.WAITING
        self.waiting = self.in_flight + self.waiting
        self.in_flight = []

    def _close(self, reason: str) -> None:
        self.last.closing = reason
        self.last.closed_with = (self.audible, self.response, self.connection, sorted(self.tools))
        for seq in (*self.waiting, *self.in_flight):
            self.items[seq].handed_while = self.items[seq].stage
            self.items[seq].stage = Stage.DISCARDED
        self.waiting, self.in_flight, self.unconfirmed = [], [], []
        self.closed, self.response, self.interrupted, self.audible, self.audible_old = True, None, False, None, False
        self.tools, self.withdrawn, self.rotation_due = {}, set(), False


def _retryable(error: BaseException) -> bool:
    """Worth another connection: the provider sent something unreadable, or
    it said so; never an exception that is no BidiError (a bug in an adapter)."""
    if isinstance(error, BidiProtocolError):
        return True
    return isinstance(error, BidiError) and bool(getattr(error, "retryable", False))
