"""The state machine's invariants under random event sequences (hypothesis).

A :class:`RuleBasedStateMachine` feeds the conversation "legal-ish" events:
what a shell and a provider could plausibly send, including events that are
illegal in the current phase (those must raise and change nothing). The test
keeps its own record of every effect and checks the invariants listed in
:mod:`bidi_core.conversation`:

1. no audio of a response is emitted after that response was interrupted
   (an interruption event or a ``ClearPlayback`` for its id) on the same
   connection; response ids belong to a connection, so a new connection may
   reuse one (``interrupted_ids`` is emptied on ``Connected``);
2. every ``RunTool`` ends in exactly one tool result sent to the model, or
   the provider withdrew the call (then the history records a "withdrawn"
   result instead, exactly once), or the conversation closed; never two
   results for one id, never a result for an id no tool ran for;
3. ``CLOSED`` is absorbing;
4. user input accepted while connecting or restarting is sent after the next
   ``Connected``, in order, exactly once (audio beyond
   ``max_pending_audio_chunks`` drops oldest-first; text is never dropped);
5. an illegal event raises and changes nothing.

Besides, the model checks how a response and a connection end: every response
start gets exactly one completion (also when a restart or the close cuts it
off); leaving a connection silences and forgets a response in flight, but lets
a finished answer still playing play on (``audible_elsewhere``: a barge-in
then silences it without truncating it on a connection that never saw it);
only a graceful close (``user_request``, ``complete``) lets the outputs play
out, any other close silences them; the connection-age timer keeps a margin of
at most a tenth of the limit.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Any

import attrs
import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bidi_core.conversation import (
    CONNECTION_AGE_TIMER,
    LIVE_PHASES,
    ROTATION_TIMER,
    TRANSITIONS,
    CancelTool,
    Close,
    Connected,
    ConnectionLost,
    Conversation,
    Effect,
    Emit,
    IllegalTransition,
    Phase,
    PlaybackProgress,
    Reconnect,
    Record,
    RunTool,
    SendToModel,
    StartTimer,
    StopRequested,
    TimerFired,
    ToolCancelled,
    ToolFinished,
    UserInput,
    step,
)
from bidi_core.conversation import ClearPlayback as ClearPlaybackEffect
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiImageInputEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
)
from ports.io import PlaybackReport
from ports.messages import ToolResultMessage
from ports.model import CancelResponse, ModelCapabilities, TruncateResponse

MAX_PENDING_AUDIO = 2
INTERRUPTED_FENCE = 16
WITHDRAWN_CONTENT = "The model withdrew this call."
INPUT_TYPES = (BidiTextInputEvent, BidiAudioInputEvent, BidiImageInputEvent)
GRACEFUL = frozenset({"user_request", "complete"})  # close reasons that let the outputs play out
OFFLINE = frozenset({Phase.CONNECTING, Phase.RESTARTING})

capabilities = st.builds(
    ModelCapabilities,
    can_truncate=st.booleans(),
    cancels_on_speech=st.booleans(),
    max_connection_s=st.sampled_from([None, 20.0, 600.0]),
)
# Events that end the conversation fire only when this gate is open, so that
# most runs live long enough to reach the interesting phases. It shrinks
# towards "closed gate", i.e. towards fewer closes.
close_gate = st.integers(min_value=0, max_value=9).map(lambda n: n == 9)


class ConversationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conversation(max_pending_audio_chunks=MAX_PENDING_AUDIO, interruptible_tools=frozenset({"slow"}))
        self.ids = itertools.count(1)
        self.response_ids: list[str] = []
        self.connection_response_ids: set[str] = set()  # started on the current connection
        # 1: responses whose audio must never be emitted again on this
        # connection; audio emitted per response; responses an output reported
        # played to the end.
        self.fenced: set[str] = set()
        self.received_ms: defaultdict[str, float] = defaultdict(float)
        self.drained: set[str] = set()
        # 2: tools.
        self.ran: dict[str, str] = {}  # tool_use_id -> name
        self.results_sent: Counter[str] = Counter()
        self.withdrawn: set[str] = set()
        self.results_recorded: Counter[str] = Counter()  # Record(ToolResultMessage) per tool id
        # Responses: the one started and not yet completed.
        self.open_response: str | None = None
        # Connections left so far, and how many had been left when the latest
        # response started: if fewer than now, that response is from an
        # earlier connection ("audible elsewhere").
        self.connections_left = 0
        self.started_after = 0
        # 3: closing.
        self.closes = 0
        # 4: user input.
        self.expected_buffer: list[Any] = []
        self.expected_dropped = 0
        self.inputs_sent: Counter[Any] = Counter()
        # Statistics (pytest --hypothesis-show-statistics): legal and illegal steps, phases reached.
        self.illegal = 0
        self.phases_seen: set[Phase] = {self.conv.phase}
        self.barged_in_elsewhere = False

    # ------------------------------------------------------------------ stepping and checking

    def apply(self, event: object) -> tuple[Effect, ...] | None:
        """Step the conversation with ``event``; check every invariant the step touches.

        Returns the effects, or None when the event was illegal here.
        """
        before = self.conv
        snapshot = attrs.evolve(before)
        error: IllegalTransition | None = None
        try:
            new, effects = step(before, event)
        except IllegalTransition as exc:
            error = exc
        if error is not None:
            # 5. an illegal event raises and changes nothing.
            assert (before.phase, type(event)) not in TRANSITIONS
            assert error.phase is before.phase
            assert error.event is event
            assert before == snapshot
            for field in attrs.fields(Conversation):
                assert getattr(before, field.name) is getattr(snapshot, field.name)
            self.illegal += 1
            return None
        assert (before.phase, type(event)) in TRANSITIONS
        assert before == snapshot  # frozen: stepping never touches the old state
        assert isinstance(new, Conversation)
        assert isinstance(effects, tuple)

        # 3. CLOSED is absorbing and quiet.
        if before.phase is Phase.CLOSED:
            assert new.phase is Phase.CLOSED
            assert effects == ()

        self._check_effects(before, event, new, effects)
        self.conv = new
        self.phases_seen.add(new.phase)
        return effects

    def teardown(self) -> None:
        hypothesis.event("some illegal events" if self.illegal else "no illegal events")
        hypothesis.event(f"{len(self.phases_seen)} phases reached")
        hypothesis.event("INTERRUPTED reached" if Phase.INTERRUPTED in self.phases_seen else "INTERRUPTED not reached")
        hypothesis.event(
            "barge-in on an answer of an earlier connection"
            if self.barged_in_elsewhere
            else "no barge-in on an answer of an earlier connection"
        )

    def _check_effects(
        self, before: Conversation, event: object, new: Conversation, effects: tuple[Effect, ...]
    ) -> None:
        sent_items = [e.item for e in effects if isinstance(e, SendToModel)]
        if isinstance(event, Connected) and before.phase in OFFLINE:
            # A new connection: its response ids say nothing of the old one's.
            # What is known of an answer of an earlier connection still
            # playing stays known (under its id, until a response reuses it).
            elsewhere = before.audible_id if before.audible_elsewhere else None
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
            self._check_connected(before, event, new, effects)
        # An answer of an earlier connection silenced now is not fenced on this one.
        earlier = before.audible_id if before.audible_elsewhere and before.phase in LIVE_PHASES else None
        if earlier is not None and isinstance(event, BidiSpeechStartedEvent):
            self.barged_in_elsewhere = True
        self._check_truncation(before, effects)
        for effect in effects:
            # 1. no audio after an interruption or a ClearPlayback of its response.
            if isinstance(effect, ClearPlaybackEffect):
                if effect.response_id != earlier:
                    self.fenced.add(effect.response_id)
            elif isinstance(effect, Emit) and isinstance(effect.event, BidiInterruptionEvent):
                rid = effect.event.response_id
                assert rid is not None
                if rid != earlier:
                    self.fenced.add(rid)
                if before.phase is not Phase.RESPONDING:
                    # Speech interrupts a response that is no longer generating
                    # only while its audio may still be playing.
                    assert before.tracks_playback
                    assert self.received_ms[rid] > 0, f"interrupted {rid}, which had no audio"
                    assert rid not in self.drained, f"interrupted {rid}, which was played to the end"
            elif isinstance(effect, Emit) and isinstance(effect.event, BidiResponseStartEvent):
                assert self.open_response is None, (
                    f"{effect.event.response_id} started before {self.open_response} completed"
                )
                self.open_response = effect.event.response_id
                self.connection_response_ids.add(effect.event.response_id)
                self.started_after = self.connections_left
                # A new response: an earlier one of that id (another connection's) is no longer measured.
                self.received_ms[effect.event.response_id] = 0.0
                self.drained.discard(effect.event.response_id)
            elif isinstance(effect, Emit) and isinstance(effect.event, BidiResponseCompleteEvent):
                assert self.open_response is not None, f"{effect.event.response_id} completed, none was open"
                assert effect.event.response_id == self.open_response, "completion of another response"
                self.open_response = None
            elif isinstance(effect, Emit) and isinstance(effect.event, BidiAudioStreamEvent):
                rid = effect.event.response_id
                assert rid is not None
                assert rid not in self.fenced, f"audio of {rid} emitted after it was interrupted"
                assert rid == before.response_id
                self.received_ms[rid] += effect.event.duration_ms
                self.drained.discard(rid)
            # 2. tools.
            elif isinstance(effect, RunTool):
                tid = effect.call.tool_use_id
                assert tid not in self.ran, f"RunTool twice for {tid}"
                self.ran[tid] = effect.call.name
            elif isinstance(effect, SendToModel) and isinstance(effect.item, BidiToolResultEvent):
                tid = effect.item.tool_use_id
                assert tid in self.ran, f"result sent for {tid}, which never ran"
                assert tid not in self.withdrawn, f"result sent for {tid}, which the provider withdrew"
                self.results_sent[tid] += 1
                assert self.results_sent[tid] == 1, f"two results sent for {tid}"
            elif isinstance(effect, Record) and isinstance(effect.message, ToolResultMessage):
                message = effect.message
                tid = message.tool_use_id
                assert tid in self.ran, f"result recorded for {tid}, which never ran"
                assert message.name == self.ran[tid]
                self.results_recorded[tid] += 1
                assert self.results_recorded[tid] == 1, f"two results recorded for {tid}"
                if not (isinstance(event, ToolFinished) and event.ends_conversation):
                    # The core records a result itself only for a call the provider withdrew.
                    assert tid in self.withdrawn, f"result recorded for {tid}, which was not withdrawn"
                    assert message == ToolResultMessage(tid, message.name, "cancelled", WITHDRAWN_CONTENT)
            elif isinstance(effect, Close):
                self.closes += 1
                assert self.closes == 1
                assert new.phase is Phase.CLOSED
                assert effect is effects[-1], "Close is the last effect"
        emitted = [e.event for e in effects if isinstance(e, Emit)]
        if any(isinstance(e, BidiConnectionCloseEvent) for e in emitted):
            assert isinstance(emitted[-1], BidiConnectionCloseEvent), "the close event is the last event"
        # Every response start gets exactly one completion, however the response ends.
        assert self.open_response == new.response_id
        if any(isinstance(e, Reconnect) for e in effects):
            self.connections_left += 1
            self._check_restart(before, event, new, effects)
        if any(isinstance(e, Close) for e in effects):
            self._check_close(before, new, effects)
        self._check_fence(before, new, effects)

        if isinstance(event, PlaybackProgress):
            report = event.report
            if report.finished and report.played_ms >= self.received_ms[report.response_id]:
                self.drained.add(report.response_id)
        if isinstance(event, BidiToolCancelEvent):
            self.withdrawn |= before.tool_ids() & set(event.tool_use_ids)

        # 4. user input: buffered while offline, flushed on Connected in order, exactly once.
        for item in sent_items:
            if isinstance(item, INPUT_TYPES):
                self.inputs_sent[item] += 1
                assert self.inputs_sent[item] == 1, f"{item!r} sent twice"
        if isinstance(event, UserInput):
            if before.phase in OFFLINE:
                assert not sent_items
                self._expect_buffered(event.event)
            else:
                assert sent_items == [event.event]
        if isinstance(event, Connected):
            flushed = [item for item in sent_items if isinstance(item, INPUT_TYPES)]
            assert flushed == self.expected_buffer
            assert sent_items == list(before.pending_input)
            self.expected_buffer = []
        elif not isinstance(event, UserInput):
            # Nothing but Connected and user input sends user input.
            assert not [item for item in sent_items if isinstance(item, INPUT_TYPES)]
        if new.phase is Phase.CLOSED:
            self.expected_buffer = []  # no next connection: the buffer is discarded

    def _check_connected(
        self, before: Conversation, event: Connected, new: Conversation, effects: tuple[Effect, ...]
    ) -> None:
        assert new.interrupted_ids == (), "response ids belong to a connection"
        assert effects[0] == Emit(BidiConnectionStartEvent(event.connection_id, event.model))
        timers = [e for e in effects if isinstance(e, StartTimer)]
        limit = event.capabilities.max_connection_s
        if limit is None:
            assert timers == []
        else:
            assert timers == [StartTimer(CONNECTION_AGE_TIMER, limit - min(before.rotation_margin_s, limit / 10))]
            assert 0 < timers[0].seconds < limit

    def _check_restart(
        self, before: Conversation, event: object, new: Conversation, effects: tuple[Effect, ...]
    ) -> None:
        """Leaving a connection: a response in flight is silenced, completed
        first and forgotten; a finished answer still playing plays on, now
        audible from an earlier connection."""
        assert new.phase is Phase.RESTARTING
        assert new.response_id is None
        # The restart says why the connection is left, whatever was in flight.
        reason = "connection_lost" if isinstance(event, ConnectionLost) else "expiring"
        restarts = [e.event for e in effects if isinstance(e, Emit) and isinstance(e.event, BidiConnectionRestartEvent)]
        assert [r.reason for r in restarts] == [reason]
        assert effects[-1] == Reconnect(reason)
        clears = [e for e in effects if isinstance(e, ClearPlaybackEffect)]
        if before.response_id is not None and not isinstance(event, BidiResponseCompleteEvent):
            rid = before.response_id
            stop = "interrupted" if before.phase is Phase.INTERRUPTED else "error"
            assert effects[:2] == (ClearPlaybackEffect(rid), Emit(BidiResponseCompleteEvent(rid, stop)))
            assert clears == [ClearPlaybackEffect(rid)]
            assert new.interrupted_ids[-1] == rid
            assert (new.audible_id, new.played_ms, new.received_ms) == (None, 0.0, 0.0)
        else:
            audible = before.audible_id
            if isinstance(event, BidiResponseCompleteEvent) and not (
                before.tracks_playback and before.played_ms < before.received_ms
            ):
                audible = None  # the response just completed, and nothing of it is left to play
            # Audio of the last answer still playing (also at a rotation's turn
            # boundary): not silenced, not fenced, still measured; it is now
            # audible from an earlier connection.
            assert clears == []
            assert new.interrupted_ids == before.interrupted_ids
            assert (new.audible_id, new.played_ms, new.received_ms) == (audible, before.played_ms, before.received_ms)
            if audible is not None:
                assert new.audible_elsewhere

    def _check_close(self, before: Conversation, new: Conversation, effects: tuple[Effect, ...]) -> None:
        """Closing: silence what is audible (unless the close is graceful: then
        it plays out), complete the response in flight, then cancel the tools."""
        close = effects[-1]
        assert isinstance(close, Close)
        clears = [i for i, e in enumerate(effects) if isinstance(e, ClearPlaybackEffect)]
        cancels = [i for i, e in enumerate(effects) if isinstance(e, CancelTool)]
        completions = [
            i for i, e in enumerate(effects) if isinstance(e, Emit) and isinstance(e.event, BidiResponseCompleteEvent)
        ]
        silenced = before.audible_id is not None and close.reason not in GRACEFUL
        assert [effects[i] for i in clears] == ([ClearPlaybackEffect(before.audible_id)] if silenced else [])
        if before.response_id is not None:
            assert [effects[i] for i in completions] == [
                Emit(BidiResponseCompleteEvent(before.response_id, "interrupted"))
            ]
        else:
            assert completions == []
        assert max(clears, default=-1) < min(completions, default=len(effects))
        assert max(clears + completions, default=-1) < min(cancels, default=len(effects))
        assert new.audible_id is None
        assert not new.audible_elsewhere

    def _check_truncation(self, before: Conversation, effects: tuple[Effect, ...]) -> None:
        """A barge-in truncates what was heard of the response it cuts short,
        when the provider can and playback is tracked; never a response of an
        earlier connection (the provider never saw it), which is not cancelled either."""
        interrupted = [
            e.event.response_id for e in effects if isinstance(e, Emit) and isinstance(e.event, BidiInterruptionEvent)
        ]
        truncates = [e.item for e in effects if isinstance(e, SendToModel) and isinstance(e.item, TruncateResponse)]
        cancels = [e.item for e in effects if isinstance(e, SendToModel) and isinstance(e.item, CancelResponse)]
        if not interrupted:
            assert truncates == []
            return
        assert len(interrupted) == 1
        rid = interrupted[0]
        assert rid == before.audible_id
        elsewhere = before.audible_elsewhere
        if elsewhere:
            assert before.phase is not Phase.RESPONDING  # a response generating is this connection's
        if before.capabilities.can_truncate and before.tracks_playback and not elsewhere:
            assert truncates == [TruncateResponse(rid, int(min(before.played_ms, before.received_ms)))]
        else:
            assert truncates == []
        if elsewhere:
            assert cancels == []

    def _check_fence(self, before: Conversation, new: Conversation, effects: tuple[Effect, ...]) -> None:
        fence = new.interrupted_ids
        assert isinstance(fence, tuple)
        assert len(fence) == len(set(fence)) <= INTERRUPTED_FENCE
        interruptions = [
            e.event.response_id for e in effects if isinstance(e, Emit) and isinstance(e.event, BidiInterruptionEvent)
        ]
        for rid in interruptions:
            if before.audible_elsewhere and rid == before.audible_id:
                # An earlier connection's answer: the current connection's ids are not fenced.
                assert fence == before.interrupted_ids
                continue
            # The most recent last; the older ones keep their order.
            assert fence[-1] == rid
            older = [i for i in before.interrupted_ids if i != rid]
            assert list(fence[:-1]) == older[len(older) - len(fence) + 1 :]

    def _expect_buffered(self, item: Any) -> None:
        self.expected_buffer.append(item)
        audio = [i for i, x in enumerate(self.expected_buffer) if isinstance(x, BidiAudioInputEvent)]
        if len(audio) > MAX_PENDING_AUDIO:
            del self.expected_buffer[audio[0]]
            self.expected_dropped += 1

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"

    def some_response_id(self, data: st.DataObject) -> str | None:
        choices: list[str | None] = [self.conv.response_id, self.conv.audible_id, None]
        if self.response_ids:
            choices.append(data.draw(st.sampled_from(self.response_ids), label="old response id"))
        return data.draw(st.sampled_from(choices), label="response id")

    # ------------------------------------------------------------------ the shell

    @initialize(caps=capabilities, early_input=st.integers(min_value=0, max_value=3), connect=st.booleans())
    def begin(self, caps: ModelCapabilities, early_input: int, connect: bool) -> None:
        """Most runs start connected (with some input typed while connecting)."""
        for _ in range(early_input):
            self.apply(UserInput(BidiTextInputEvent(self.fresh("early-"))))
        if connect:
            self.apply(Connected(self.fresh("c"), "test-model", caps))

    # Rules carry preconditions only to spend the steps where they matter;
    # ``stray_event`` sends anything anywhere, so illegal pairs still occur.

    @precondition(lambda self: self.conv.phase is not Phase.CLOSED)
    @rule(caps=capabilities)
    def connect(self, caps: ModelCapabilities) -> None:
        self.apply(Connected(self.fresh("c"), "test-model", caps))

    @rule()
    def user_text(self) -> None:
        self.apply(UserInput(BidiTextInputEvent(self.fresh("text-"))))

    @precondition(lambda self: self.conv.phase is not Phase.CLOSED)
    @rule(chunks=st.integers(min_value=1, max_value=3))
    def user_audio(self, chunks: int) -> None:
        for _ in range(chunks):
            n = next(self.ids)
            self.apply(UserInput(BidiAudioInputEvent(n.to_bytes(4, "little") * 40)))

    @precondition(lambda self: self.conv.phase is not Phase.CLOSED)
    @rule()
    def user_image(self) -> None:
        self.apply(UserInput(BidiImageInputEvent(next(self.ids).to_bytes(4, "little"))))

    @precondition(lambda self: self.conv.audible_id is not None or self.conv.response_id is not None)
    @rule(data=st.data(), played=st.sampled_from([0.0, 10.0, 30.0, 1000.0]), finished=st.booleans())
    def playback_progress(self, data: st.DataObject, played: float, finished: bool) -> None:
        rid = self.some_response_id(data) or "r-none"
        self.apply(PlaybackProgress(PlaybackReport(rid, played, finished)))

    @precondition(lambda self: bool(self.conv.pending_tools))
    @rule(data=st.data(), status=st.sampled_from(["success", "error"]))
    def tool_finished(self, data: st.DataObject, status: str) -> None:
        tid = data.draw(st.sampled_from(sorted(self.conv.tool_ids())), label="pending tool id")
        self.apply(ToolFinished(BidiToolResultEvent(tid, self.ran[tid], status, {"n": 1})))  # type: ignore[arg-type]

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

    @rule(name=st.sampled_from([ROTATION_TIMER, CONNECTION_AGE_TIMER, "other"]))
    def timer_fired(self, name: str) -> None:
        self.apply(TimerFired(name))

    @precondition(lambda self: self.conv.phase is not Phase.CLOSED)
    @rule(gate=close_gate)
    def connection_lost(self, gate: bool) -> None:
        # While offline, ConnectionLost means the shell gave up: it closes.
        if self.conv.phase in LIVE_PHASES or gate:
            self.apply(ConnectionLost("network"))

    @rule(gate=close_gate)
    def connection_failed(self, gate: bool) -> None:
        if gate:
            self.apply(ConnectionLost("auth", retryable=False, error=RuntimeError("denied")))

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
        effects = self.apply(BidiResponseStartEvent(rid))
        assert effects is not None
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
        caps=capabilities,
        answer=st.booleans(),
        leave=st.sampled_from(["lost", "expiring"]),
        played=st.sampled_from([None, 5.0, 1000.0]),
        speech=st.booleans(),
    )
    def reconnect_while_an_answer_plays(
        self, caps: ModelCapabilities, answer: bool, leave: str, played: float | None, speech: bool
    ) -> None:
        """Perhaps answer (half of it played when it completes), leave the
        connection, open the next one, perhaps hear more of the answer, perhaps
        talk over it."""
        if answer:
            self.turn(chunks=2, played=0.5, finished=False, end="complete")
        self.apply(ConnectionLost("network") if leave == "lost" else BidiConnectionExpiringEvent(10.0))
        if self.conv.phase is not Phase.RESTARTING:
            return  # expiring mid-turn: the rotation waits for the turn boundary
        self.apply(Connected(self.fresh("c"), "test-model", caps))
        if played is not None and self.conv.audible_id is not None:
            self.apply(PlaybackProgress(PlaybackReport(self.conv.audible_id, played)))
        if speech:
            self.apply(BidiSpeechStartedEvent())

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
        self.apply(BidiToolUseEvent(self.fresh("t"), name, {"q": 1}))

    @precondition(lambda self: self.conv.phase in LIVE_PHASES and bool(self.conv.pending_tools))
    @rule(data=st.data())
    def duplicate_tool_use(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(sorted(self.conv.tool_ids())), label="pending id")
        effects = self.apply(BidiToolUseEvent(tid, "lookup"))
        assert effects is not None
        assert not any(isinstance(e, RunTool) for e in effects)

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

    @rule(data=st.data())
    def stray_event(self, data: st.DataObject) -> None:
        """Any event in any phase: model traffic is illegal unless a connection is open."""
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
                ]
            ),
            label="stray event",
        )
        if isinstance(event, BidiResponseStartEvent):
            self.response_ids.append(event.response_id)
        self.apply(event)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def closed_is_absorbing(self) -> None:
        if self.closes:
            assert self.conv.phase is Phase.CLOSED

    @invariant()
    def every_tool_call_settles_once(self) -> None:
        pending = self.conv.tool_ids()
        assert pending <= set(self.ran)
        for tid in set(self.ran) - pending:
            buffered = sum(isinstance(p, BidiToolResultEvent) and p.tool_use_id == tid for p in self.conv.pending_input)
            total = self.results_sent[tid] + buffered
            if self.conv.phase is Phase.CLOSED:
                assert total <= 1
                assert self.results_recorded[tid] <= 1
            elif tid in self.withdrawn:
                assert total == 0, f"withdrawn tool {tid} got a result"
                # The history still pairs the call with an outcome.
                assert self.results_recorded[tid] == 1, f"withdrawn tool {tid} has no recorded result"
            else:
                assert total == 1, f"tool {tid} settled with {total} results"
                assert self.results_recorded[tid] == 0

    @invariant()
    def input_buffer_matches_the_model(self) -> None:
        buffered_input = [p for p in self.conv.pending_input if isinstance(p, INPUT_TYPES)]
        assert buffered_input == self.expected_buffer
        assert self.conv.dropped_audio_chunks == self.expected_dropped
        assert sum(isinstance(p, BidiAudioInputEvent) for p in self.conv.pending_input) <= MAX_PENDING_AUDIO

    @invariant()
    def audible_elsewhere_means_an_earlier_connection(self) -> None:
        """The audible response came over an earlier connection exactly when
        a connection was left since it started."""
        conv = self.conv
        if conv.audible_id is not None:
            assert conv.audible_elsewhere == (self.started_after < self.connections_left)
            if conv.audible_elsewhere:
                assert conv.response_id is None

    @invariant()
    def phases_are_consistent(self) -> None:
        conv = self.conv
        if conv.phase is not Phase.RESTARTING and conv.phase is not Phase.CONNECTING:
            assert conv.pending_input == ()
        if conv.phase is Phase.LISTENING:
            assert not conv.pending_tools
        if conv.phase is Phase.TOOL_CALLING:
            assert conv.pending_tools
        assert (conv.response_id is not None) == (conv.phase in {Phase.RESPONDING, Phase.INTERRUPTED})
        if conv.phase in LIVE_PHASES:
            assert conv.connection_id is not None
        if conv.phase in OFFLINE:
            assert conv.connection_id is None
        if conv.phase is Phase.CLOSED:
            assert not conv.pending_tools
            assert conv.audible_id is None
            assert not conv.audible_elsewhere
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
