"""The state machine's invariants under random event sequences (hypothesis).

A :class:`RuleBasedStateMachine` plays the shell and the provider: it feeds
the conversation what they could plausibly send, including events that are
illegal in the current phase (those must raise and change nothing). It plays
the shell for real: it carries out the effects (opens a connection only when
asked, runs the timers it was asked for, holds each connection's writer queue
of ``SendToModel`` items and decides which of them are ``Written`` before a
connection is lost, applies ``AppendHistory``/``RetractHistory`` to a list)
and it plays a provider's session (what the session holds, what a resumption
handle includes).

Expectations never come from the implementation's state: an independent
model (:class:`tests.conversation_model.Expected`) is stepped with the same
events, and after every step the whole conversation must agree with it. The
invariants listed in :mod:`bidi_core.conversation`, and more:

1. no audio of a response is emitted after that response was interrupted
   (an interruption event or a ``ClearPlayback`` for its id) on the same
   connection; response ids belong to a connection, so a new connection may
   reuse one;
2. every ``RunTool`` ends in exactly one tool result for the model (as user
   text if the connection that issued the call is gone), or the provider
   withdrew the call (the history then records a "withdrawn" result, exactly
   once), or the conversation closed; never a result for a withdrawn call;
3. ``CLOSED`` is absorbing, ``Close`` is the last effect, the close event the
   last event;
4. every accepted input reaches the provider's session exactly once and in
   order, across any sequence of lost connections, rotations, late writes and
   resumed sessions (audio beyond the cap is dropped oldest-first, never one
   the writer holds); the held audio never exceeds ``max_buffered_audio``;
5. every user text and tool result is in the history exactly once from the
   moment it is handed to a connection (retracted if that connection ends
   before writing it), in the order it was said;
6. failures are counted as the model counts them, never beyond
   ``max_attempts``; giving up closes with reason ``error`` and the error;
7. an illegal event raises and changes nothing.

Besides: every response start gets exactly one completion; leaving a
connection silences and forgets a response in flight but lets a finished
answer play on (a barge-in then silences it without truncating it); only a
graceful close lets the outputs play out.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from bidi_core.conversation import (
    BACKOFF_TIMER,
    CONNECTION_AGE_TIMER,
    LIVE_PHASES,
    ROTATION_TIMER,
    STABLE_TIMER,
    Phase,
)
from bidi_core.effects import (
    Emit,
    OpenConnection,
)
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
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
from ports.errors import BidiConnectionError, BidiProtocolError, BidiProviderError, BidiResumptionRejectedError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionExpiringEvent,
    BidiErrorEvent,
    BidiImageInputEvent,
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
)
from ports.io import PlaybackReport
from ports.messages import ToolCallMessage, ToolResultMessage
from ports.model import ModelCapabilities
from tests.conversation_model import Stage
from tests.conversation_shell import CONFIG, OFFLINE, WITHDRAWN, CheckedConversation

# Events that end the conversation fire only when this gate is open, so that
# most runs live long enough to reach the interesting phases. It shrinks
# towards "closed gate", i.e. towards fewer closes.
close_gate = st.integers(min_value=0, max_value=9).map(lambda n: n == 9)
ended_by = st.sampled_from([BidiConnectionError("reset"), BidiProtocolError("garbled")])


def capabilities(resumable: bool) -> st.SearchStrategy[ModelCapabilities]:
    """A provider's capabilities; whether it resumes sessions never changes within a run."""
    return st.builds(
        ModelCapabilities,
        can_truncate=st.booleans(),
        cancels_on_speech=st.booleans(),
        max_connection_s=st.sampled_from([None, 20.0, 600.0]),
        resumable=st.just(resumable),
    )


class ConversationMachine(CheckedConversation):
    """The rules (what a shell and a provider may send) and the invariants."""

    # ------------------------------------------------------------------ the shell

    @initialize(
        resumable=st.booleans(),
        early_input=st.integers(min_value=0, max_value=3),
        reports_playback=st.sampled_from([None, True, False]),
        connect=st.booleans(),
        data=st.data(),
    )
    def begin(
        self, resumable: bool, early_input: int, reports_playback: bool | None, connect: bool, data: st.DataObject
    ) -> None:
        """Some input typed before the agent starts; the start asks for a
        connection; most runs connect at once."""
        self.resumable = resumable
        for _ in range(early_input):
            self.user_text()
        effects = self.apply(Started(reports_playback))
        assert effects == (OpenConnection(None),)
        if connect:
            self.connect(data)

    # Rules carry preconditions only to spend the steps where they matter;
    # ``stray_event`` sends anything anywhere, so illegal pairs still occur.

    @precondition(lambda self: self.requested and self.conv.phase in OFFLINE)
    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        self.apply(Connected(self.fresh("c"), "test-model", data.draw(capabilities(self.resumable), label="caps")))

    @precondition(lambda self: self.requested and self.conv.phase in OFFLINE)
    @rule(kind=st.sampled_from(["refused", "garbled", "rejected", "fatal"]), gate=close_gate)
    def connect_failed(self, kind: str, gate: bool) -> None:
        if kind == "rejected" and self.model.handle is None:
            kind = "refused"  # only a resumption can be rejected
        if kind == "fatal" and not gate:
            return
        error: BaseException = {
            "refused": BidiConnectionError("refused"),
            "garbled": BidiProtocolError("garbled handshake"),
            "rejected": BidiResumptionRejectedError("handle expired"),
            "fatal": BidiProviderError("invalid api key", code="401"),
        }[kind]
        self.apply(ConnectFailed(error))

    @precondition(lambda self: bool(self.timers))
    @rule(data=st.data())
    def timer_fires(self, data: st.DataObject) -> None:
        """A timer the core asked for fires."""
        name = data.draw(st.sampled_from(sorted(self.timers)), label="timer")
        del self.timers[name]
        self.apply(TimerFired(name))

    @rule(name=st.sampled_from([ROTATION_TIMER, CONNECTION_AGE_TIMER, STABLE_TIMER, "other"]))
    def stray_timer(self, name: str) -> None:
        """A timer fires late (it belonged to a connection already gone) or is unknown."""
        self.apply(TimerFired(name))

    @precondition(lambda self: bool(self.writer))
    @rule(count=st.integers(min_value=1, max_value=4))
    def writer_writes(self, count: int) -> None:
        for _ in range(min(count, len(self.writer))):
            self.write(self.writer.pop(0))

    @precondition(lambda self: bool(self.old_writer) and self.conv.phase is Phase.RESTARTING)
    @rule()
    def late_write(self) -> None:
        """The writer of the connection just left wrote its item as the connection ended."""
        seq, self.old_writer = self.old_writer[0], []
        self.write(seq, late=True)

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(
        written_first=st.integers(min_value=0, max_value=3),
        error=ended_by,
        fatal=close_gate,
        for_good=st.booleans(),
    )
    def connection_ends(self, written_first: int, error: BaseException, fatal: bool, for_good: bool) -> None:
        """The writer writes some of what it holds, then the connection ends:
        a fault another connection may cure; rarely one it cannot, or the
        service ending the session for good (no error: ``provider_closed``)."""
        for _ in range(min(written_first, len(self.writer))):
            self.write(self.writer.pop(0))
        ended: BaseException | None = error
        if fatal:
            ended = None if for_good else BidiConnectionError("TLS certificate rejected", retryable=False)
        assert self.conv.connection_id is not None
        self.apply(ConnectionEnded(self.conv.connection_id, ended))

    @rule(error=st.one_of(st.none(), ended_by))
    def stale_connection_ends(self, error: BaseException | None) -> None:
        """The end of a connection the core already left: ignored."""
        assert self.apply(ConnectionEnded("c-gone", error)) in (None, ())

    @rule()
    def user_text(self) -> None:
        self.apply(UserInput(BidiTextInputEvent(self.fresh("text-"))))

    @precondition(lambda self: self.conv.phase is not Phase.CLOSED)
    @rule(chunks=st.integers(min_value=1, max_value=3))
    def user_audio(self, chunks: int) -> None:
        for _ in range(chunks):
            self.apply(UserInput(BidiAudioInputEvent(next(self.ids).to_bytes(4, "little") * 40)))

    @precondition(lambda self: self.conv.phase is not Phase.CLOSED)
    @rule()
    def user_image(self) -> None:
        self.apply(UserInput(BidiImageInputEvent(next(self.ids).to_bytes(4, "little"))))

    @rule()
    def invalid_input(self) -> None:
        effects = self.apply(InvalidInput("not JSON"))
        assert effects in ((), (Emit(BidiErrorEvent("not JSON", code="invalid_input")),))
        assert (effects == ()) == (self.conv.phase is Phase.CLOSED)

    @precondition(lambda self: self.conv.audible_id is not None or self.conv.response_id is not None)
    @rule(data=st.data(), played=st.sampled_from([0.0, 10.0, 30.0, 1000.0]), finished=st.booleans())
    def playback_progress(self, data: st.DataObject, played: float, finished: bool) -> None:
        rid = self.some_response_id(data) or "r-none"
        self.apply(PlaybackProgress(PlaybackReport(rid, played, finished)))

    @precondition(lambda self: bool(self.conv.pending_tools))
    @rule(data=st.data(), outcome=st.sampled_from(["success", "error", "raised"]))
    def tool_finished(self, data: st.DataObject, outcome: str) -> None:
        tid = data.draw(st.sampled_from(sorted(self.conv.tool_ids())), label="pending tool id")
        status = "success" if outcome == "success" else "error"
        result = BidiToolResultEvent(tid, self.ran[tid], status, {"n": 1})  # type: ignore[arg-type]
        effects = self.apply(ToolFinished(result, error_type="ValueError" if outcome == "raised" else None))
        assert effects is not None
        # A tool that raised is reported to the user first; the model gets the error result.
        raised = Emit(BidiErrorEvent(str(result.content), code="tool_error", details="ValueError"))
        assert (effects[:2] == (raised, Emit(result))) == (outcome == "raised")

    @precondition(lambda self: bool(self.conv.pending_tools))
    @rule(data=st.data())
    def tool_cancelled(self, data: st.DataObject) -> None:
        self.apply(ToolCancelled(data.draw(st.sampled_from(sorted(self.conv.tool_ids())), label="pending tool id")))

    @rule(data=st.data(), cancelled=st.booleans())
    def tool_settles_twice_or_unknown(self, data: st.DataObject, cancelled: bool) -> None:
        """A tool id that is not pending (settled before, or never run) settles: nothing happens."""
        tid = data.draw(st.sampled_from([*sorted(set(self.ran) - self.conv.tool_ids()), "t-never"]), label="tool id")
        effects = self.apply(
            ToolCancelled(tid) if cancelled else ToolFinished(BidiToolResultEvent(tid, "lookup", "success"))
        )
        assert effects in (None, ())

    @precondition(lambda self: bool(self.conv.pending_tools))
    @rule(data=st.data(), gate=close_gate)
    def tool_ends_conversation(self, data: st.DataObject, gate: bool) -> None:
        if gate:
            tid = data.draw(st.sampled_from(sorted(self.conv.tool_ids())), label="pending tool id")
            self.apply(ToolFinished(BidiToolResultEvent(tid, self.ran[tid], "success", "bye"), ends_conversation=True))

    @rule(gate=close_gate)
    def stop(self, gate: bool) -> None:
        if gate:
            self.apply(StopRequested())

    # ------------------------------------------------------------------ the provider

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule()
    def response_start(self) -> None:
        rid = self.fresh("r")
        self.response_ids.append(rid)
        self.apply(BidiResponseStartEvent(rid))

    @precondition(
        lambda self: self.conv.phase in LIVE_PHASES and bool(set(self.response_ids) - self.connection_response_ids)
    )
    @rule(data=st.data())
    def response_start_reusing_an_id(self, data: st.DataObject) -> None:
        """A new connection numbers its responses afresh: an id of an earlier
        connection comes back for a new response, whose audio must be heard."""
        candidates = sorted(set(self.response_ids) - self.connection_response_ids)
        rid = data.draw(st.sampled_from(candidates), label="id of an earlier connection")
        assert self.apply(BidiResponseStartEvent(rid)) is not None
        chunk = BidiAudioStreamEvent(audio=b"\x01\x00" * 480, response_id=rid)
        assert self.apply(chunk) == (Emit(chunk),), f"audio of the new response {rid} was dropped"

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(
        chunks=st.integers(min_value=0, max_value=3),
        played=st.sampled_from([None, 0.0, 0.5, 1.0]),
        finished=st.booleans(),
        end=st.sampled_from(["open", "complete", "barge-in"]),
    )
    def turn(self, chunks: int, played: float | None, finished: bool, end: str) -> None:
        """A response with some audio, an output reporting some or all of it
        played, then perhaps its completion or the user talking over it."""
        self.response_start()
        rid = self.conv.response_id
        assert rid is not None
        for _ in range(chunks):
            self.apply(BidiAudioStreamEvent(audio=b"\x01\x00" * 480, response_id=rid))
        if played is not None:
            self.apply(PlaybackProgress(PlaybackReport(rid, played * 20.0 * chunks, finished)))
        if end == "complete":
            self.apply(BidiResponseCompleteEvent(rid, "complete"))
        elif end == "barge-in":
            self.apply(BidiSpeechStartedEvent())

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(
        data=st.data(),
        answer=st.booleans(),
        handle=st.booleans(),
        leave=st.sampled_from(["lost", "expiring"]),
        played=st.sampled_from([None, 5.0, 1000.0]),
        speech=st.booleans(),
    )
    def reconnect_while_an_answer_plays(
        self, data: st.DataObject, answer: bool, handle: bool, leave: str, played: float | None, speech: bool
    ) -> None:
        """Perhaps answer (half of it played when it completes), perhaps issue
        a resumption handle, leave the connection, open the next one (after the
        backoff, if it comes to that), perhaps hear more of the answer, perhaps
        talk over it."""
        if answer:
            self.turn(chunks=2, played=0.5, finished=False, end="complete")
        if handle and self.resumable and self.conv.phase in LIVE_PHASES:
            self.resumption_update(data, counted=True)
        if self.conv.phase not in LIVE_PHASES:
            return
        assert self.conv.connection_id is not None
        lost = ConnectionEnded(self.conv.connection_id, BidiConnectionError("reset"))
        self.apply(lost if leave == "lost" else BidiConnectionExpiringEvent(10.0))
        if self.conv.phase is not Phase.RESTARTING:
            return  # expiring mid-turn: the rotation waits for the turn boundary
        self.reconnect(data)
        if played is not None and self.conv.audible_id is not None:
            self.apply(PlaybackProgress(PlaybackReport(self.conv.audible_id, played)))
        if speech:
            self.apply(BidiSpeechStartedEvent())

    def reconnect(self, data: st.DataObject) -> None:
        """Wait out the backoff, if there is one, and open the next connection."""
        if BACKOFF_TIMER in self.timers:
            del self.timers[BACKOFF_TIMER]
            self.apply(TimerFired(BACKOFF_TIMER))
        self.connect(data)

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(
        data=st.data(),
        name=st.sampled_from(["lookup", "slow"]),
        outcome=st.sampled_from(["finished", "cancelled", "after"]),
        said=st.booleans(),
    )
    def tool_outlives_its_connection(self, data: st.DataObject, name: str, outcome: str, said: bool) -> None:
        """A tool runs when its connection is lost; it ends before the next
        connection opens or after; perhaps the user says something first."""
        tid = self.call_tool(name)
        assert self.conv.connection_id is not None
        self.apply(ConnectionEnded(self.conv.connection_id, BidiConnectionError("reset")))
        if said:
            self.user_text()
        if self.conv.phase is not Phase.RESTARTING:
            return
        ends = ToolCancelled(tid) if outcome == "cancelled" else ToolFinished(BidiToolResultEvent(tid, name, "success"))
        if outcome != "after":
            self.apply(ends)
        self.reconnect(data)
        if outcome == "after":
            self.apply(ends)

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(data=st.data(), ms=st.sampled_from([10, 20, 40]), chunks=st.integers(min_value=1, max_value=3))
    def model_audio(self, data: st.DataObject, ms: int, chunks: int) -> None:
        rid = self.some_response_id(data)
        for _ in range(chunks):
            self.apply(BidiAudioStreamEvent(audio=b"\x01\x00" * (24 * ms), response_id=rid))

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(data=st.data(), final=st.booleans(), role=st.sampled_from(["user", "assistant"]))
    def transcript(self, data: st.DataObject, final: bool, role: str) -> None:
        rid = self.some_response_id(data)
        self.apply(BidiTranscriptStreamEvent("hi", "hi", role, final, rid))  # type: ignore[arg-type]

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(data=st.data(), reason=st.sampled_from(["complete", "tool_use", "interrupted", "error"]))
    def response_complete(self, data: st.DataObject, reason: str) -> None:
        rid = self.some_response_id(data) or "r-none"
        self.apply(BidiResponseCompleteEvent(rid, reason))  # type: ignore[arg-type]

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule()
    def speech_started(self) -> None:
        self.apply(BidiSpeechStartedEvent())

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(name=st.sampled_from(["lookup", "slow"]))
    def tool_use(self, name: str) -> None:
        self.call_tool(name)

    def call_tool(self, name: str) -> str:
        tid = self.fresh("t")
        self.apply(BidiToolUseEvent(tid, name, {"q": 1}))
        return tid

    @precondition(lambda self: self.conv.phase in LIVE_PHASES and bool(self.conv.pending_tools))
    @rule(data=st.data())
    def duplicate_tool_use(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.conv.tool_ids())), label="pending id")
        effects = self.apply(BidiToolUseEvent(tid, "lookup"))
        assert effects == (Emit(BidiErrorEvent(f"duplicate tool call id {tid!r}", code="protocol_error")),)

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(data=st.data())
    def provider_tool_cancel(self, data: st.DataObject) -> None:
        candidates = [*sorted(self.conv.tool_ids()), *sorted(self.ran), "t-never"]
        ids = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique=True), label="ids")
        self.apply(BidiToolCancelEvent(tuple(ids)))

    @precondition(lambda self: self.conv.phase in LIVE_PHASES)
    @rule(time_left=st.sampled_from([0.5, 10.0, 60.0]))
    def expiring(self, time_left: float) -> None:
        self.apply(BidiConnectionExpiringEvent(time_left))

    @precondition(lambda self: self.conv.phase is not Phase.CLOSED)
    @rule(kind=st.sampled_from(["usage", "error"]))
    def usage_or_error(self, kind: str) -> None:
        """Token counts and the provider's non-fatal errors reach the user
        unchanged; with no connection open, they are a protocol error."""
        live = self.conv.phase in LIVE_PHASES
        event: BidiUsageEvent | BidiErrorEvent = (
            BidiUsageEvent(input_tokens=3, output_tokens=5, total_tokens=8)
            if kind == "usage"
            else BidiErrorEvent("slow down", code="rate_limit")
        )
        effects = self.apply(event)
        if live:
            assert effects == (Emit(event),)
            assert self.conv.connection_proven

    @precondition(lambda self: self.resumable and self.conv.phase is not Phase.CLOSED)
    @rule(data=st.data(), counted=st.booleans())
    def resumption_update(self, data: st.DataObject, counted: bool) -> None:
        """The provider issues a handle: its session holds the first
        ``inputs_included`` items written on this connection (or all of them)."""
        # A later handle never holds less than an earlier one.
        included = None
        if counted:
            most = len(self.sent_here) + 1
            included = data.draw(st.integers(min_value=min(self.included, most), max_value=most), label="included")
        handle = self.fresh("h")
        if self.conv.phase in LIVE_PHASES:
            self.included = len(self.sent_here) if included is None else min(included, len(self.sent_here))
            self.snapshots[handle] = self.base + self.sent_here[: self.included]
        self.apply(BidiResumptionUpdateEvent(handle, inputs_included=included))

    @rule(data=st.data())
    def stray_event(self, data: st.DataObject) -> None:
        """Any event in any phase: provider traffic with no connection open is a
        protocol error; user input after the end, a second start, a connection
        nobody asked for while one is open, are illegal."""
        rid = self.some_response_id(data)
        event = data.draw(
            st.sampled_from(
                [
                    BidiResponseStartEvent(self.fresh("r")),
                    BidiAudioStreamEvent(audio=b"\x01\x00" * 240, response_id=rid),
                    BidiResponseCompleteEvent(rid or "r-none", "complete"),
                    BidiSpeechStartedEvent(),
                    BidiToolUseEvent(self.fresh("t"), "lookup"),
                    BidiConnectionExpiringEvent(5.0),
                    PlaybackProgress(PlaybackReport(rid or "r-none", 5.0, finished=True)),
                    Connected(self.fresh("c"), "test-model"),
                    Started(),
                    Written(10_000),
                ]
            ),
            label="stray event",
        )
        if isinstance(event, BidiResponseStartEvent):
            self.response_ids.append(event.response_id)
        if isinstance(event, Connected) and self.resumable:
            event = attrs.evolve(event, capabilities=ModelCapabilities(resumable=True))
        self.apply(event)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def closed_is_absorbing(self) -> None:
        if self.closes:
            assert self.conv.phase is Phase.CLOSED

    @invariant()
    def held_audio_stays_under_the_cap(self) -> None:
        assert self.conv.outbox.audio <= CONFIG.max_buffered_audio
        assert (
            sum(e.is_audio for e in (*self.conv.outbox.waiting, *self.conv.outbox.in_flight)) <= self.conv.outbox.audio
        )

    @invariant()
    def failures_stay_under_the_limit(self) -> None:
        assert 0 <= self.conv.failures <= CONFIG.reconnect.max_attempts
        if self.conv.failures == CONFIG.reconnect.max_attempts:
            assert self.conv.phase is Phase.CLOSED

    @invariant()
    def every_input_reaches_the_session_or_waits(self) -> None:
        """4. Each accepted item is held by the provider's session, or waits in
        the outbox for the next write, or was dropped (audio over the cap), or
        only recorded (a cancelled result of a gone call), or discarded by the
        end of the conversation."""
        held = set(self.session)
        for seq, item in self.model.items.items():
            if item.stage is Stage.WRITTEN:
                assert seq in held or seq in self.recorded_only or item.lost_by_cap, f"item {seq} never arrived"
            elif item.stage in (Stage.WAITING, Stage.IN_FLIGHT):
                assert seq not in held or item.written_once, f"item {seq} arrived and waits to be sent again"

    @invariant()
    def the_history_has_each_thing_said_once_in_order(self) -> None:
        """5. What the user said and what tools returned is in the history
        once from its hand-off (not while it waits), in the order it was said."""
        order = []
        for seq, item in self.model.items.items():
            if item.record is None:
                continue
            count = self.history.count(item.record)
            if item.stage is Stage.DISCARDED:
                expected = int(item.written_once or item.handed_while is Stage.IN_FLIGHT)
            else:
                expected = int(item.written_once or item.stage is Stage.IN_FLIGHT)
            assert count == expected, f"{item.record!r} in the history {count} times, not {expected}"
            if count:
                order.append((self.history.index(item.record), seq))
        assert [seq for _, seq in sorted(order)] == sorted(seq for _, seq in order), "the history changed the order"

    @invariant()
    def every_tool_call_settles_once(self) -> None:
        """2. Each call is recorded once and answered once: by one result for
        the model, or, withdrawn, by a "withdrawn" note in the history."""
        pending = self.conv.tool_ids()
        assert pending <= set(self.ran)
        for tid in self.ran:
            calls = [h for h in self.history if isinstance(h, ToolCallMessage) and h.tool_use_id == tid]
            assert len(calls) == 1, f"the call {tid} is in the history {len(calls)} times"
            if tid in pending:
                continue
            results = [i for i in self.model.items.values() if getattr(i.item, "tool_use_id", None) == tid]
            recorded = [h for h in self.history if isinstance(h, ToolResultMessage) and h.tool_use_id == tid]
            assert len(results) <= 1 and len(recorded) <= 1
            if self.conv.phase is Phase.CLOSED:
                continue
            if tid in self.withdrawn:
                assert results == [], f"withdrawn tool {tid} got a result"
                assert [r.content for r in recorded] == [WITHDRAWN], f"withdrawn tool {tid} has no note"
            else:
                assert len(results) == 1, f"tool {tid} settled with {len(results)} results"

    @invariant()
    def audible_from_old_connection_means_an_earlier_connection(self) -> None:
        """The audible response came over an earlier connection exactly when
        a connection was left since it started."""
        conv = self.conv
        if conv.audible_id is not None:
            assert conv.audible_from_old_connection == (self.started_after < self.connections_left)
            if conv.audible_from_old_connection:
                assert conv.response_id is None

    @invariant()
    def phases_are_consistent(self) -> None:
        conv = self.conv
        if conv.phase in OFFLINE or conv.phase is Phase.CLOSED:
            assert conv.outbox.in_flight == ()
        if conv.phase is Phase.CLOSED:
            assert conv.outbox.waiting == conv.outbox.unconfirmed == ()
            assert not conv.pending_tools
            assert conv.audible_id is None
            assert not conv.audible_from_old_connection
        assert len(conv.outbox.in_flight) <= CONFIG.send_window
        assert conv.withdrawn_tools <= conv.tool_ids()
        if conv.phase is Phase.INTERRUPTED:
            assert conv.response_id in conv.interrupted_ids
            assert conv.audible_id is None
        if conv.phase is Phase.RESPONDING:
            assert conv.response_id not in conv.interrupted_ids


ConversationMachine.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestConversationMachine = ConversationMachine.TestCase
# All CPU, no waiting: about 20 s alone, several times that beside CPU hogs (nox -s stress-suite). The suite's
# 60 s guard is for hangs; this one's is proportionate to the work, so only a real hang trips it.
TestConversationMachine.pytestmark = [pytest.mark.timeout(600)]
