"""The shell and the provider that the stateful property test plays, and the
checks of every step (``tests/test_conversation_properties.py`` holds the
rules and the invariants).

:class:`CheckedConversation` steps the conversation and the independent model
(:class:`tests.conversation_model.Expected`) with each event, checks the
effects against what the model says the step did, carries the effects out as
a shell would (the connection asked for, the timers, each connection's writer
queue, the history list), keeps a provider's session (what it holds, what
each resumption handle holds), and checks that the whole conversation agrees
with the model.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import attrs
import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine

from bidi_core.conversation import (
    BACKOFF_TIMER,
    CONNECTION_AGE_TIMER,
    ROTATION_TIMER,
    STABLE_TIMER,
    TRANSITIONS,
    Conversation,
    ConversationConfig,
    IllegalTransition,
    Phase,
    step,
)
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
from bidi_core.reconnect import ReconnectPolicy
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    PlaybackProgress,
    Written,
)
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiToolResultEvent,
)
from ports.messages import Message
from ports.model import CancelResponse, TruncateResponse
from tests.conversation_model import Expected, Step

CONFIG = ConversationConfig(
    max_buffered_audio=2,
    send_window=3,
    reconnect=ReconnectPolicy(max_attempts=3),
    interruptible_tools=frozenset({"slow"}),
)
WITHDRAWN = "The model withdrew this call."
GRACEFUL = frozenset({"user_request", "complete", "provider_closed"})  # close reasons that let the outputs play out
OFFLINE = frozenset({Phase.CONNECTING, Phase.RESTARTING})
CLOSE_TIMERS = [CancelTimer(n) for n in (ROTATION_TIMER, CONNECTION_AGE_TIMER, STABLE_TIMER, BACKOFF_TIMER)]


class CheckedConversation(RuleBasedStateMachine):
    """Steps, checks and plays the shell; the rules live in the subclass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = Conversation(config=CONFIG)
        self.model = Expected(CONFIG)
        self.ids = itertools.count(1)
        self.resumable = False
        # The shell: the connection asked for, the timers running, each writer's queue.
        self.requested = False
        self.timers: dict[str, float] = {}
        self.writer: list[int] = []  # handed to the open connection, not yet written
        self.old_writer: list[int] = []  # the connection just left may still write its first one
        # The provider's session: what it holds, what this connection wrote, what a handle holds.
        self.session: list[int] = []
        self.base: list[int] = []
        self.sent_here: list[int] = []
        self.included = 0  # how many of them the latest handle holds
        self.snapshots: dict[str, list[int]] = {}
        self.history: list[Message] = []
        # 1: responses whose audio must never be emitted again on this connection; the
        # audio emitted per response; responses an output reported played to the end.
        self.response_ids: list[str] = []
        self.connection_response_ids: set[str] = set()
        self.fenced: set[str] = set()
        self.received_ms: defaultdict[str, float] = defaultdict(float)
        self.drained: set[str] = set()
        self.open_response: str | None = None
        # How many connections were left, and how many when the latest response started.
        self.connections_left = 0
        self.started_after = 0
        # 2: tools.
        self.ran: dict[str, str] = {}
        self.withdrawn: set[str] = set()  # ever withdrawn by the provider
        self.recorded_only: set[int] = set()  # results of a gone call, cancelled: recorded, never sent
        self.closes = 0
        # Statistics (pytest --hypothesis-show-statistics).
        self.illegal = 0
        self.phases_seen: set[Phase] = {self.conv.phase}
        self.seen: set[str] = set()

    # ------------------------------------------------------------------ stepping and checking

    def apply(self, event: object) -> tuple[Effect, ...] | None:
        """Step the conversation and the model with ``event``; play the shell's
        part of the effects; check everything the step touches. Returns the
        effects, or None when the event was illegal here."""
        before = self.conv
        snapshot = attrs.evolve(before)
        try:
            new, effects = step(before, event)  # type: ignore[arg-type]
        except IllegalTransition as error:
            # 7. an illegal event raises and changes nothing.
            assert (before.phase, type(event)) not in TRANSITIONS
            assert (error.phase, error.event) == (before.phase, event)
            assert before == snapshot
            for f in attrs.fields(Conversation):
                assert getattr(before, f.name) is getattr(snapshot, f.name)
            self.illegal += 1
            return None
        assert (before.phase, type(event)) in TRANSITIONS
        assert before == snapshot  # frozen: stepping never touches the old state
        assert isinstance(effects, tuple)
        if before.phase is Phase.CLOSED:  # 3. absorbing and quiet
            assert (new.phase, effects) == (Phase.CLOSED, ())
        did = self.model.step(event)
        self._check_effects(before, event, new, effects, did)
        self._play_shell(before, event, effects)
        self.conv = new
        self.phases_seen.add(new.phase)
        self._agree()
        return effects

    def _agree(self) -> None:
        """The conversation knows what the model says it should."""
        conv, m = self.conv, self.model
        assert conv.phase is m.phase
        assert (conv.connection_id, conv.response_id, conv.audible_id) == (m.connection, m.response, m.audible)
        assert conv.audible_from_old_connection == m.audible_old
        if m.audible is not None or m.response is not None:
            assert (conv.played_ms, conv.received_ms) == (m.played, m.received)
        assert (conv.tracks_playback, conv.audio_unobserved) == (m.tracks, m.unobserved)
        assert conv.interrupted_ids == tuple(m.fence)
        assert {(c.tool_use_id, c.name, c.issued_on) for c in conv.pending_tools} == {
            (t, name, on) for t, (name, on) in m.tools.items()
        }
        assert conv.withdrawn_tools == m.withdrawn
        assert (conv.failures, conv.connection_proven) == (m.failures, m.proven)
        assert conv.resume_handle == m.handle
        assert (conv.rotation_due is not None) == m.rotation_due
        box = conv.outbox
        assert [e.seq for e in box.waiting] == m.waiting
        assert [e.seq for e in box.in_flight] == m.in_flight
        assert [e.seq for e in box.unconfirmed] == m.unconfirmed
        assert [e.item for e in (*box.waiting, *box.in_flight)] == [m.items[s].item for s in m.waiting + m.in_flight]
        assert (box.next_seq, box.dropped_audio, box.audio) == (len(m.items), m.dropped, m.held_audio)
        if conv.phase is not Phase.CLOSED:
            assert (box.written, box.confirmed) == (m.written, m.confirmed)
        assert conv.capabilities == m.caps

    def _check_effects(
        self, before: Conversation, event: object, new: Conversation, effects: tuple[Effect, ...], did: Step
    ) -> None:
        m = self.model
        # 4. the outbox hand-off: what the model hands over, in order, each
        # recorded right before it is handed (a resent unconfirmed item is not: the
        # history invariant counts).
        numbered = [(i, e) for i, e in enumerate(effects) if isinstance(e, SendToModel) and e.seq is not None]
        assert [(e.seq, e.item) for _, e in numbered] == [(seq, item) for seq, item, _ in did.handed]
        for (i, _), (_, _, record) in zip(numbered, did.handed, strict=True):
            if record is not None:
                assert effects[i - 1] == AppendHistory(record)
        for seq, _, _ in did.handed:
            if isinstance(result := m.items[seq].item, BidiToolResultEvent):
                assert result.tool_use_id in self.ran, f"result sent for {result.tool_use_id}, which never ran"
                assert result.tool_use_id not in self.withdrawn, f"result sent for {result.tool_use_id}, withdrawn"
        for _, record in did.recorded_only:
            if record is not None:
                assert AppendHistory(record) in effects
            self.seen.add("a result of a gone call only recorded")
        self._check_interruption(before, effects, did)
        # 6. reconnecting, backing off, giving up: as the model counts.
        opens = [e for e in effects if isinstance(e, OpenConnection)]
        assert opens == ([OpenConnection(m.handle)] if did.reopen else [])
        if opens:
            assert effects[-1] == opens[0]
        backoffs = [e for e in effects if isinstance(e, StartTimer) and e.name == BACKOFF_TIMER]
        assert backoffs == ([StartTimer(BACKOFF_TIMER, did.backoff)] if did.backoff is not None else [])
        assert [e for e in effects if isinstance(e, CloseConnection)] == (
            [CloseConnection(did.left)] if did.left else []
        )
        if did.protocol_error:
            message = f"unexpected provider event: {type(event).__name__} is not allowed while {new.phase.value}"
            assert effects == (Emit(BidiErrorEvent(message, code="protocol_error")),)
        if isinstance(event, Connected) and before.phase in OFFLINE:
            self._check_connected(event, new, effects)
        for effect in effects:
            self._check_effect(event, effect)
        emitted = [e.event for e in effects if isinstance(e, Emit)]
        if any(isinstance(e, BidiConnectionCloseEvent) for e in emitted):
            assert isinstance(emitted[-1], BidiConnectionCloseEvent), "the close event is the last event"
        assert self.open_response == new.response_id  # every start gets exactly one completion
        if did.left:
            self.connections_left += 1
            self._check_restart(effects, did)
        else:
            restarts = [
                e.event for e in effects if isinstance(e, Emit) and isinstance(e.event, BidiConnectionRestartEvent)
            ]
            assert [r.reason for r in restarts] == (["resumption_rejected"] if did.rejected else [])
        if did.closing:
            self._check_close(effects, did)
        if isinstance(event, PlaybackProgress):
            report = event.report
            if report.finished and report.played_ms >= self.received_ms[report.response_id]:
                self.drained.add(report.response_id)
        self.withdrawn |= m.withdrawn
        self.recorded_only |= {seq for seq, _ in did.recorded_only}

    def _check_effect(self, event: object, effect: Effect) -> None:
        if isinstance(effect, ClearPlayback):
            if self._interrupted_from_old() != effect.response_id:
                self.fenced.add(effect.response_id)
        elif isinstance(effect, Emit) and isinstance(effect.event, BidiInterruptionEvent):
            rid = effect.event.response_id
            assert rid is not None
            if self._interrupted_from_old() != rid:
                self.fenced.add(rid)
        elif isinstance(effect, Emit) and isinstance(effect.event, BidiResponseStartEvent):
            assert self.open_response is None, f"{effect.event.response_id} started before {self.open_response} ended"
            self.open_response = effect.event.response_id
            self.connection_response_ids.add(effect.event.response_id)
            self.started_after = self.connections_left
            self.received_ms[effect.event.response_id] = 0.0
            self.drained.discard(effect.event.response_id)
        elif isinstance(effect, Emit) and isinstance(effect.event, BidiResponseCompleteEvent):
            assert effect.event.response_id == self.open_response, "completion of a response not open"
            self.open_response = None
        elif isinstance(effect, Emit) and isinstance(effect.event, BidiAudioStreamEvent):
            # 1. no audio after an interruption or a ClearPlayback of its response.
            rid = effect.event.response_id
            assert rid is not None
            assert rid not in self.fenced, f"audio of {rid} emitted after it was interrupted"
            self.received_ms[rid] += effect.event.duration_ms
            self.drained.discard(rid)
        elif isinstance(effect, RunTool):
            tid = effect.call.tool_use_id
            assert tid not in self.ran, f"RunTool twice for {tid}"
            self.ran[tid] = effect.call.name
        elif isinstance(effect, SendToModel) and isinstance(effect.item, BidiToolResultEvent):
            tid = effect.item.tool_use_id
            assert tid in self.ran, f"result sent for {tid}, which never ran"
            assert tid not in self.withdrawn, f"result sent for {tid}, which the provider withdrew"
        elif isinstance(effect, Close):
            self.closes += 1
            assert self.closes == 1

    def _interrupted_from_old(self) -> str | None:
        """The response a barge-in of this step silenced if it was an earlier connection's."""
        interruption = self.model.last.interruption
        return interruption[0] if interruption is not None and self.model.last.interrupted_old else None

    def _check_interruption(self, before: Conversation, effects: tuple[Effect, ...], did: Step) -> None:
        """A barge-in silences, reports, cancels (unless the provider does),
        truncates to what was heard (when the provider can and playback is
        tracked; never an earlier connection's answer) and cancels the
        interruptible tools. Speech interrupts a response no longer generating
        only while its audio may still be playing."""
        control = [e.item for e in effects if isinstance(e, SendToModel) and e.seq is None]
        interruptions = [e for e in effects if isinstance(e, Emit) and isinstance(e.event, BidiInterruptionEvent)]
        if did.interruption is None:
            assert (control, interruptions) == ([], [])
            return
        rid, cancel, truncate, tools = did.interruption
        if before.phase is not Phase.RESPONDING:
            assert self.model.tracks, f"interrupted {rid}, though nobody reports what is playing"
            # Unless its audio went uncounted (an output that never declared it
            # reports playback reported mid-response): then it is audible until
            # that output says it finished after the response completed.
            if not did.interrupted_uncounted:
                assert self.received_ms[rid] > 0, f"interrupted {rid}, which had no audio"
                assert rid not in self.drained, f"interrupted {rid}, which was played to the end"
        expected: list[Any] = [CancelResponse(rid)] if cancel else []
        if truncate is not None:
            expected.append(TruncateResponse(rid, truncate))
        assert control == expected
        assert effects[:2] == (ClearPlayback(rid), Emit(BidiInterruptionEvent("user_speech", rid)))
        assert [e for e in effects if isinstance(e, CancelTool)] == [CancelTool(t) for t in tools]

    def _check_connected(self, event: Connected, new: Conversation, effects: tuple[Effect, ...]) -> None:
        assert new.interrupted_ids == (), "response ids belong to a connection"
        assert effects[0] == Emit(BidiConnectionStartEvent(event.connection_id, event.model))
        timers = [e for e in effects if isinstance(e, StartTimer)]
        limit = event.capabilities.max_connection_s
        stable = StartTimer(STABLE_TIMER, CONFIG.reconnect.stable_after_s)
        if limit is None:
            assert timers == [stable]
        else:
            age = StartTimer(CONNECTION_AGE_TIMER, limit - min(CONFIG.rotation_margin_s, limit / 10))
            assert timers == [age, stable]
            assert 0 < age.seconds < limit

    def _check_restart(self, effects: tuple[Effect, ...], did: Step) -> None:
        """Leaving a connection: a response in flight is silenced and completed
        first; a finished answer still playing is not silenced; the records of
        what was handed over and not written are taken back, latest first."""
        restarts = [e.event for e in effects if isinstance(e, Emit) and isinstance(e.event, BidiConnectionRestartEvent)]
        assert [r.reason for r in restarts] == [did.left]
        at = effects.index(CloseConnection(did.left))  # type: ignore[arg-type]
        assert effects[at - 1] == Emit(restarts[0])
        assert effects[at - 4 : at - 1] == tuple(CLOSE_TIMERS[:3])
        retracts = [e.message for e in effects if isinstance(e, RetractHistory)]
        assert retracts == did.retracted
        assert all(isinstance(e, RetractHistory) for e in effects[at + 1 : at + 1 + len(retracts)])
        clears = [e for e in effects[: at - 4] if isinstance(e, ClearPlayback)]
        if did.cut is not None:
            rid, stop = did.cut
            cut = (ClearPlayback(rid), Emit(BidiResponseCompleteEvent(rid, stop)))  # type: ignore[arg-type]
            assert effects[at - 6 : at - 4] == cut
            assert clears == [ClearPlayback(rid)]
        else:
            assert clears == []

    def _check_close(self, effects: tuple[Effect, ...], did: Step) -> None:
        """Closing: silence what is audible (unless the close is graceful: then
        it plays out), complete the response in flight, cancel the tools and
        every timer; the close event, then the close, come last."""
        assert did.closed_with is not None and did.closing is not None
        audible, response, connection, tools = did.closed_with
        tail: list[Effect] = []
        if audible is not None and did.closing not in GRACEFUL:
            tail.append(ClearPlayback(audible))
        if response is not None:
            tail.append(Emit(BidiResponseCompleteEvent(response, "interrupted")))
        tail += [CancelTool(t) for t in tools] + CLOSE_TIMERS
        tail += [Emit(BidiConnectionCloseEvent(did.closing, connection)), Close(did.closing)]  # type: ignore[arg-type]
        assert list(effects[-len(tail) :]) == tail
        close = effects[-1]
        assert isinstance(close, Close)
        # 6. giving up (or a failure no connection can help) closes with the error.
        assert (close.error is not None) == (did.closing == "error")
        if self.model.failures >= CONFIG.reconnect.max_attempts:
            assert did.closing == "error"
            self.seen.add("gave up")

    def _play_shell(self, before: Conversation, event: object, effects: tuple[Effect, ...]) -> None:
        """The shell carries out the effects; the provider's session follows."""
        if isinstance(event, Connected) and before.phase in OFFLINE:
            self.requested = False
            self.old_writer, self.writer = [], []
            if self.model.handle is not None:
                self.session = list(self.snapshots[self.model.handle])  # resumed
                self.seen.add("resumed a session")
            self.base, self.sent_here, self.included = list(self.session), [], 0
            self._new_connection()
        if isinstance(event, ConnectFailed):
            self.requested = False
        for effect in effects:
            if isinstance(effect, SendToModel) and effect.seq is not None:
                self.writer.append(effect.seq)
            elif isinstance(effect, CloseConnection):
                self.old_writer, self.writer = self.writer, []
            elif isinstance(effect, OpenConnection):
                self.requested = True
            elif isinstance(effect, StartTimer):
                self.timers[effect.name] = effect.seconds
            elif isinstance(effect, CancelTimer):
                self.timers.pop(effect.name, None)
            elif isinstance(effect, AppendHistory):
                self.history.append(effect.message)
            elif isinstance(effect, RetractHistory):
                assert effect.message in self.history, f"retracted {effect.message!r}, never recorded"
                del self.history[len(self.history) - 1 - self.history[::-1].index(effect.message)]
            elif isinstance(effect, Close):
                self.requested, self.timers, self.writer, self.old_writer = False, {}, [], []

    def _new_connection(self) -> None:
        """A new connection: its response ids say nothing of the old one's.
        What is known of an answer of an earlier connection still playing
        stays known (under its id, until a response reuses it)."""
        elsewhere = self.model.audible if self.model.audible_old else None
        kept_ms = self.received_ms.get(elsewhere, 0.0) if elsewhere is not None else 0.0
        kept_drained = elsewhere in self.drained
        self.fenced.clear()
        self.received_ms.clear()
        self.drained.clear()
        self.connection_response_ids.clear()
        if elsewhere is not None:
            self.received_ms[elsewhere] = kept_ms
            if kept_drained:
                self.drained.add(elsewhere)

    def write(self, seq: int, late: bool = False) -> None:
        """The shell's writer wrote item ``seq`` (on the open connection, or,
        ``late``, on the one just left as it ended)."""
        assert seq not in self.session, f"item {seq} reached the provider's session twice"
        assert not self.session or seq > self.session[-1], f"item {seq} reached the session after {self.session[-1]}"
        self.session.append(seq)
        if not late:
            self.sent_here.append(seq)
        self.apply(Written(seq))
        if late:
            self.seen.add("late write")

    def teardown(self) -> None:
        hypothesis.event("some illegal events" if self.illegal else "no illegal events")
        hypothesis.event(f"{len(self.phases_seen)} phases reached")
        for what in ("gave up", "resumed a session", "late write", "a result of a gone call only recorded"):
            hypothesis.event(what if what in self.seen else f"not: {what}")

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def some_response_id(self, data: st.DataObject) -> str | None:
        choices: list[str | None] = [self.conv.response_id, self.conv.audible_id, None]
        if self.response_ids:
            choices.append(data.draw(st.sampled_from(self.response_ids), label="old response id"))
        return data.draw(st.sampled_from(choices), label="response id")
