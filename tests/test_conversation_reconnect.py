"""Losing a connection and opening the next, step by step: what a restart does
to a response in flight (cut off, completed, fenced) and to an answer still
playing (it plays on, from an earlier connection: a barge-in silences it but
neither cancels nor truncates it), input waiting for the next connection,
and the core's retry counting: a proven connection reconnects at once, an
unproven one backs off (``BACKOFF_TIMER``), ``max_attempts`` failures in a
row give up, a rejected resumption starts a fresh session at once, and
failures no connection can help close the conversation.

Every step compares the whole :class:`Conversation` and the exact effects
(:func:`tests.conversation_support.expect`).
"""

from __future__ import annotations

import pytest

from bidi_core.conversation import (
    BACKOFF_TIMER,
    CONNECTION_AGE_TIMER,
    ROTATION_TIMER,
    STABLE_TIMER,
    Conversation,
    ConversationConfig,
    Phase,
    orphaned_result_text,
    step,
)
from bidi_core.effects import AppendHistory, ClearPlayback, Close, Emit, OpenConnection, SendToModel, StartTimer
from bidi_core.outbox import Entry, Outbox
from bidi_core.reconnect import ReconnectPolicy
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
    PlaybackProgress,
    TimerFired,
    ToolFinished,
    UserInput,
    Written,
)
from ports.errors import (
    BidiConnectionError,
    BidiProtocolError,
    BidiProviderError,
    BidiResumptionRejectedError,
    BidiUsageError,
)
from ports.events import (
    BidiAudioInputEvent,
    BidiConnectionCloseEvent,
    BidiConnectionExpiringEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
)
from ports.io import PlaybackReport
from ports.messages import TextMessage, ToolResultMessage
from ports.model import CancelResponse, ModelCapabilities, TruncateResponse
from tests.conversation_support import (
    CLOSE_TIMERS,
    audio_out,
    connected,
    cut_off,
    evolve,
    expect,
    heard,
    left,
    responding,
    result,
    started,
    text,
    tool_use,
    with_audio,
)

RESET = BidiConnectionError("reset")


def lost(connection_id: str = "c1") -> ConnectionEnded:
    return ConnectionEnded(connection_id, RESET)


def _restarted_mid_response(conv: Conversation) -> Conversation:
    """``conv`` (with ``r1`` in flight) after leaving its connection: ``r1`` is
    cut off and fenced, nothing is audible and no audio is measured."""
    return evolve(
        conv,
        phase=Phase.RESTARTING,
        connection_id=None,
        response_id=None,
        audible_id=None,
        interrupted_ids=("r1",),
        received_ms=0.0,
        played_ms=0.0,
        rotation_due=None,
    )


def _interrupted() -> Conversation:
    conv = with_audio(responding(connected()), "r1", 20)
    return expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(conv, phase=Phase.INTERRUPTED, audible_id=None, interrupted_ids=("r1",), received_ms=0.0),
        (ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1"))),
    )


def _answer_still_playing(caps: ModelCapabilities) -> Conversation:
    """r1 (100 ms, 40 ms of it played) completed and is still playing."""
    conv = with_audio(responding(connected(caps)), "r1", 100)
    conv = expect(
        conv, PlaybackProgress(PlaybackReport("r1", 40.0)), evolve(conv, tracks_playback=True, played_ms=40.0)
    )
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )
    assert conv.audible_id == "r1"
    return conv


# --------------------------------------------------------------------------- a connection lost


def test_connection_lost_mid_response_restarts_buffers_and_flushes_in_order() -> None:
    config = ConversationConfig(max_buffered_audio=1)
    conv = with_audio(responding(connected(conv=started(config))), "r1", 20)
    conv = tool_use(conv, "t1", "lookup")
    conv = expect(
        conv,
        ConnectionEnded("c1", BidiConnectionError("socket closed")),
        _restarted_mid_response(conv),
        (*cut_off("r1", "error", "connection_lost", "socket closed"), OpenConnection(None)),
    )
    # Provider traffic without a connection is reported and otherwise ignored.
    stray = "unexpected provider event: BidiAudioStreamEvent is not allowed while restarting"
    conv = expect(conv, audio_out("r1"), conv, (Emit(BidiErrorEvent(stray, code="protocol_error")),))

    first, second = BidiTextInputEvent("first"), BidiTextInputEvent("second")
    e_first = Entry(0, first, TextMessage("user", "first"))
    a1, a2 = BidiAudioInputEvent(b"\x01\x00" * 8), BidiAudioInputEvent(b"\x02\x00" * 8)
    conv = expect(conv, UserInput(first), evolve(conv, outbox=Outbox((e_first,), next_seq=1)))
    conv = expect(conv, UserInput(a1), evolve(conv, outbox=Outbox((e_first, Entry(1, a1)), next_seq=2, audio=1)))
    # The tool ends meanwhile: its result waits for the new connection, in step order.
    r = result("t1", "lookup")
    e_r = Entry(2, r, ToolResultMessage("t1", "lookup", "success", "ok"), "c1")
    conv = expect(
        conv,
        ToolFinished(r),
        evolve(conv, pending_tools=frozenset(), outbox=Outbox((e_first, Entry(1, a1), e_r), next_seq=3, audio=1)),
        (Emit(r),),
    )
    assert conv.phase is Phase.RESTARTING
    # Over the audio bound (1): a1 is dropped, a2 kept.
    conv = expect(
        conv,
        UserInput(a2),
        evolve(conv, outbox=Outbox((e_first, e_r, Entry(3, a2)), next_seq=4, audio=1, dropped_audio=1)),
    )
    e_second = Entry(4, second, TextMessage("user", "second"))
    conv = expect(
        conv,
        UserInput(second),
        evolve(conv, outbox=evolve(conv.outbox, waiting=(*conv.outbox.waiting, e_second), next_seq=5)),
    )
    # The new connection starts with an empty fence: response ids belong to a
    # connection. The result of c1's call reaches c2 as the user's text.
    in_flight = (e_first, e_r, Entry(3, a2), e_second)
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(
            conv,
            phase=Phase.LISTENING,
            connection_id="c2",
            interrupted_ids=(),
            connection_proven=False,
            outbox=Outbox((), in_flight, next_seq=5, audio=1, dropped_audio=1),
        ),
        (
            Emit(BidiConnectionStartEvent("c2", "m")),
            StartTimer(STABLE_TIMER, 10.0),
            AppendHistory(TextMessage("user", "first")),
            SendToModel(first, 0),
            AppendHistory(e_r.history),  # type: ignore[arg-type]
            SendToModel(BidiTextInputEvent(orphaned_result_text(r)), 2),
            SendToModel(a2, 3),
            AppendHistory(TextMessage("user", "second")),
            SendToModel(second, 4),
        ),
    )
    for seq in (0, 2, 3, 4):
        conv, effects = step(conv, Written(seq))
        assert effects == ()
    assert conv == Conversation(
        config=config,
        phase=Phase.LISTENING,
        connection_id="c2",
        outbox=Outbox(next_seq=5, written=4, dropped_audio=1),
    )


def test_restart_from_interrupted_completes_the_response_as_interrupted() -> None:
    conv = _interrupted()
    expect(
        conv,
        lost(),
        _restarted_mid_response(conv),
        (*cut_off("r1", "interrupted", "connection_lost", "reset"), OpenConnection(None)),
    )


@pytest.mark.parametrize("interrupted", [False, True], ids=["responding", "interrupted"])
@pytest.mark.parametrize("trigger", ["connection-lost", "rotation-timer"])
def test_a_response_cut_off_by_a_restart_completes_before_the_restart(interrupted: bool, trigger: str) -> None:
    conv = _interrupted() if interrupted else with_audio(responding(connected()), "r1", 20)
    if trigger == "connection-lost":
        event: object = lost()
        reason, details = "connection_lost", "reset"
    else:
        conv = expect(
            conv,
            BidiConnectionExpiringEvent(5.0),
            evolve(conv, rotation_due="provider closes in 5s"),
            (StartTimer(ROTATION_TIMER, 4.0),),
        )
        event = TimerFired(ROTATION_TIMER)
        reason, details = "expiring", "connection limit reached mid-turn"
    # A response cut short by the user is "interrupted"; one cut off by the connection is an "error".
    stop_reason = "interrupted" if interrupted else "error"
    conv = expect(
        conv,
        event,
        _restarted_mid_response(conv),
        (*cut_off("r1", stop_reason, reason, details), OpenConnection(None)),
    )
    # Timers of the old connection firing now are ignored.
    for name in (ROTATION_TIMER, CONNECTION_AGE_TIMER, STABLE_TIMER):
        conv = expect(conv, TimerFired(name), conv)
    conv = connected(conv=conv, connection_id="c2")


@pytest.mark.parametrize("trigger", ["connection-lost", "expiring"])
def test_restart_from_listening_keeps_the_last_answer_playing(trigger: str) -> None:
    caps = ModelCapabilities(can_truncate=True, cancels_on_speech=False)
    conv = _answer_still_playing(caps)
    if trigger == "connection-lost":
        event: object = lost()
        effects = (*left("connection_lost", "reset"), OpenConnection(None))
    else:
        # Listening is a turn boundary: the rotation starts at once.
        event = BidiConnectionExpiringEvent(10.0)
        details = "provider closes in 10s; rotating at a turn boundary"
        effects = (StartTimer(ROTATION_TIMER, 9.0), *left("expiring", details), OpenConnection(None))
    # Leaving the connection does not cut off the answer the user is hearing:
    # r1 stays audible (and measured), now from an earlier connection. Not fenced.
    conv = expect(
        conv,
        event,
        evolve(conv, phase=Phase.RESTARTING, connection_id=None, audible_from_old_connection=True),
        effects,
    )
    assert (conv.audible_id, conv.played_ms, conv.received_ms) == ("r1", 40.0, 100.0)
    assert conv.interrupted_ids == ()
    # r1 plays on while the next connection opens: its reports still count.
    conv = expect(conv, PlaybackProgress(PlaybackReport("r1", 60.0)), evolve(conv, played_ms=60.0))
    conv = connected(caps, conv, "c2")
    # r1 played to the end: nothing is audible any more, speech interrupts nothing, truncates nothing.
    conv = expect(
        conv,
        PlaybackProgress(PlaybackReport("r1", 100.0, finished=True)),
        evolve(conv, played_ms=100.0, audible_id=None),
    )
    conv = expect(conv, BidiSpeechStartedEvent(), heard(conv))


@pytest.mark.parametrize("cancels_on_speech", [True, False], ids=["provider-cancels", "core-cancels"])
@pytest.mark.parametrize("trigger", ["connection-lost", "expiring"])
def test_barge_in_on_an_answer_from_the_previous_connection_silences_it_without_truncating(
    trigger: str, cancels_on_speech: bool
) -> None:
    caps = ModelCapabilities(can_truncate=True, cancels_on_speech=cancels_on_speech)
    conv = _answer_still_playing(caps)
    conv, _ = step(conv, lost() if trigger == "connection-lost" else BidiConnectionExpiringEvent(10.0))
    assert (conv.phase, conv.audible_id, conv.audible_from_old_connection) == (Phase.RESTARTING, "r1", True)
    conv = connected(caps, conv, "c2")
    conv = expect(conv, PlaybackProgress(PlaybackReport("r1", 60.0)), evolve(conv, played_ms=60.0))
    # The user talks over r1: it is silenced and the interruption reported, but
    # c2 never saw r1, so it is neither cancelled nor truncated (even though
    # the provider truncates and playback is tracked), nor fenced (c2 may
    # number a response of its own r1).
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(
            heard(conv),
            audible_id=None,
            audible_from_old_connection=False,
            interrupted_ids=(),
            played_ms=0.0,
            received_ms=0.0,
        ),
        (ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1"))),
    )
    assert conv.phase is Phase.LISTENING
    conv = expect(conv, BidiSpeechStartedEvent(), conv)
    # c2's own next answer is c2's again: a barge-in on it truncates as usual.
    conv = with_audio(responding(conv, "r2"), "r2", 100)
    conv = expect(conv, PlaybackProgress(PlaybackReport("r2", 30.0)), evolve(conv, played_ms=30.0))
    cancel = () if cancels_on_speech else (SendToModel(CancelResponse("r2")),)
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(
            conv,
            phase=Phase.INTERRUPTED,
            audible_id=None,
            interrupted_ids=("r2",),
            played_ms=0.0,
            received_ms=0.0,
        ),
        (
            ClearPlayback("r2"),
            Emit(BidiInterruptionEvent("user_speech", "r2")),
            *cancel,
            SendToModel(TruncateResponse("r2", 30)),
        ),
    )


def test_barge_in_on_an_answer_from_the_previous_connection_does_not_fence_the_new_connections_ids() -> None:
    caps = ModelCapabilities(can_truncate=True)
    conv = with_audio(responding(connected(caps)), "r1", 100)
    conv, _ = step(conv, PlaybackProgress(PlaybackReport("r1", 40.0)))
    conv, _ = step(conv, BidiResponseCompleteEvent("r1", "complete"))
    conv, _ = step(conv, lost())
    conv, _ = step(conv, Connected("c2", "m", caps))
    conv, effects = step(conv, BidiSpeechStartedEvent())
    assert effects == (ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1")))
    # c2's own first response happens to be called r1 too: its audio must be heard.
    conv = responding(conv, "r1")
    with_audio(conv, "r1", 20)


def test_restart_from_listening_with_nothing_audible_clears_nothing() -> None:
    conv = with_audio(responding(connected()), "r1", 20)
    # Nobody reports playback: nothing is audible after the completion.
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )
    # Nothing audible: nothing to clear, and nothing "from an old connection" to remember.
    conv = expect(
        conv,
        lost(),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*left("connection_lost", "reset"), OpenConnection(None)),
    )
    assert (conv.audible_id, conv.audible_from_old_connection, conv.received_ms) == (None, False, 20.0)


def test_a_new_connection_forgets_the_interrupted_ids_of_the_old_one() -> None:
    conv = _interrupted()
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "interrupted")),),
    )
    # On this connection r1 stays fenced.
    conv = expect(conv, audio_out("r1"), conv)
    conv = expect(
        conv,
        lost(),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*left("connection_lost", "reset"), OpenConnection(None)),
    )
    assert conv.interrupted_ids == ("r1",)
    conv = connected(conv=conv, connection_id="c2")
    assert conv.interrupted_ids == ()
    # The new connection numbers its responses afresh: its r1 is another response, and its audio is heard.
    conv = responding(conv, "r1")
    conv = with_audio(conv, "r1", 20)
    conv = expect(conv, audio_out(None, 20), evolve(conv, received_ms=40.0), (Emit(audio_out("r1", 20)),))


def test_reconnect_with_a_tool_still_running_resumes_tool_calling() -> None:
    conv = tool_use(connected(), "t1", "lookup")
    conv = expect(conv, BidiResumptionUpdateEvent("h1"), evolve(conv, resume_handle="h1"))
    conv = expect(
        conv,
        lost(),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*left("connection_lost", "reset"), OpenConnection("h1")),
    )
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(conv, phase=Phase.TOOL_CALLING, connection_id="c2", connection_proven=False),
        (Emit(BidiConnectionStartEvent("c2", "m")), StartTimer(STABLE_TIMER, 10.0)),
    )
    assert conv.resume_handle == "h1"
    r = result("t1", "lookup")
    history = ToolResultMessage("t1", "lookup", "success", "ok")
    conv = expect(
        conv,
        ToolFinished(r),
        evolve(
            conv,
            phase=Phase.LISTENING,
            pending_tools=frozenset(),
            outbox=Outbox((), (Entry(0, r, history, "c1"),), next_seq=1),
        ),
        (Emit(r), AppendHistory(history), SendToModel(BidiTextInputEvent(orphaned_result_text(r)), 0)),
    )


def test_the_end_of_a_connection_already_left_is_ignored() -> None:
    conv = responding(connected())
    # The shell reports the end of a connection the core no longer uses.
    conv = expect(conv, ConnectionEnded("c0", RESET), conv)
    conv = expect(conv, ConnectionEnded("c0"), conv)
    conv, _ = step(conv, lost())
    # And the end of the one it just left, reported late.
    conv = expect(conv, lost(), conv)
    conv = expect(conv, ConnectionEnded("c1"), conv)


# --------------------------------------------------------------------------- retry counting


def _failed(conv: Conversation, error: BaseException, delay: float) -> Conversation:
    """A connection attempt failed: one more failure, and a wait before the next."""
    return expect(
        conv, ConnectFailed(error), evolve(conv, failures=conv.failures + 1), (StartTimer(BACKOFF_TIMER, delay),)
    )


def _gave_up(conv: Conversation, error: BaseException) -> Conversation:
    """Connecting failed with ``error`` once too often, or in a way no other
    connection can help: the conversation closes with ``error``."""
    new, got = step(conv, ConnectFailed(error))
    assert got == (*CLOSE_TIMERS, Emit(BidiConnectionCloseEvent("error", None)), Close("error"))
    close = got[-1]
    assert isinstance(close, Close)
    assert close.error is error  # raised to the caller of run()
    assert new.phase is Phase.CLOSED
    return new


def test_a_first_connection_that_keeps_failing_backs_off_longer_each_time_then_gives_up() -> None:
    conv = started()
    policy = conv.config.reconnect
    assert policy == ReconnectPolicy(max_attempts=5, initial_backoff_s=0.5, max_backoff_s=8.0, multiplier=2.0)
    for delay in (0.5, 1.0, 2.0, 4.0):
        conv = _failed(conv, BidiConnectionError("refused"), delay)
        assert conv.phase is Phase.CONNECTING
        # The wait is over: the next attempt.
        conv = expect(conv, TimerFired(BACKOFF_TIMER), conv, (OpenConnection(None),))
    last = BidiConnectionError("refused again")
    new = _gave_up(conv, last)
    assert new == evolve(conv, phase=Phase.CLOSED, failures=5)
    # Stragglers of the shutdown are ignored.
    for late in (TimerFired(BACKOFF_TIMER), ConnectFailed(last), Connected("c1", "m")):
        new = expect(new, late, new)


def test_the_backoff_is_capped_and_the_attempts_are_counted_as_configured() -> None:
    policy = ReconnectPolicy(max_attempts=4, initial_backoff_s=1.0, max_backoff_s=3.0, multiplier=3.0)
    conv = started(ConversationConfig(reconnect=policy))
    for delay in (1.0, 3.0, 3.0):
        conv = _failed(conv, BidiProtocolError("garbled handshake"), delay)  # worth another connection
        conv = expect(conv, TimerFired(BACKOFF_TIMER), conv, (OpenConnection(None),))
    error = BidiConnectionError("refused")
    _gave_up(conv, error)


def test_a_connection_that_ends_before_the_provider_said_anything_counts_as_a_failed_attempt() -> None:
    """A provider that accepts and drops at once must not be reconnected in a tight loop."""
    conv = started()
    for n in range(1, 5):
        conv = connected(conv=conv, connection_id=f"c{n}")
        closed = "going away"
        conv = expect(
            conv,
            ConnectionEnded(f"c{n}", BidiConnectionError(closed)),
            evolve(conv, phase=Phase.RESTARTING, connection_id=None, failures=n),
            (*left("connection_lost", closed), StartTimer(BACKOFF_TIMER, conv.config.reconnect.delay(n))),
        )
        conv = expect(conv, TimerFired(BACKOFF_TIMER), conv, (OpenConnection(None),))
    conv = connected(conv=conv, connection_id="c5")
    new, effects = step(conv, ConnectionEnded("c5", RESET))
    assert effects[:-1] == (
        *left("connection_lost", "reset"),
        *CLOSE_TIMERS,
        Emit(BidiConnectionCloseEvent("error", None)),
    )
    close = effects[-1]
    assert close == Close("error")
    assert isinstance(close, Close)
    assert isinstance(close.error, BidiConnectionError)
    assert str(close.error) == "the connection failed 5 times in a row: reset"
    assert new == evolve(conv, phase=Phase.CLOSED, connection_id=None, failures=5)


def test_the_service_ending_the_session_ends_the_conversation_and_its_last_words_play_out() -> None:
    """``receive()`` raised ``EndOfStream``: the adapter says the service will not continue
    this session (OpenAI's close 1000). No reconnect; a response in flight is completed, and
    what the outputs hold is not silenced (the close is the service's graceful end)."""
    conv = responding(connected())
    new, effects = step(conv, ConnectionEnded(conv.connection_id or ""))
    assert effects == (
        Emit(BidiResponseCompleteEvent("r1", "interrupted")),
        *CLOSE_TIMERS,
        Emit(BidiConnectionCloseEvent("provider_closed", conv.connection_id)),
        Close("provider_closed"),
    )
    assert not any(isinstance(e, (ClearPlayback, OpenConnection)) for e in effects)
    assert new.phase is Phase.CLOSED


def test_failed_connects_and_connections_lost_unproven_count_together() -> None:
    conv = _failed(started(), BidiConnectionError("refused"), 0.5)
    conv = expect(conv, TimerFired(BACKOFF_TIMER), conv, (OpenConnection(None),))
    conv = connected(conv=conv)
    conv = expect(
        conv,
        lost(),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None, failures=2),
        (*left("connection_lost", "reset"), StartTimer(BACKOFF_TIMER, 1.0)),
    )
    conv = _failed(conv, BidiConnectionError("refused"), 2.0)
    assert conv.failures == 3


@pytest.mark.parametrize("proof", ["model-event", "stable-timer"])
def test_a_proven_connection_starts_the_count_again_and_is_reconnected_at_once(proof: str) -> None:
    """The provider said something, or the connection lasted ``stable_after_s``
    (a quiet provider that ends an idle stream after minutes is healthy)."""
    conv = _failed(started(), BidiConnectionError("refused"), 0.5)
    conv, _ = step(conv, TimerFired(BACKOFF_TIMER))
    conv = _failed(conv, BidiConnectionError("refused"), 1.0)
    conv, _ = step(conv, TimerFired(BACKOFF_TIMER))
    conv = connected(conv=conv)
    assert (conv.failures, conv.connection_proven) == (2, False)
    if proof == "model-event":
        conv = responding(conv)
        conv = expect(
            conv,
            lost(),
            _restarted_mid_response(conv),
            (*cut_off("r1", "error", "connection_lost", "reset"), OpenConnection(None)),
        )
    else:
        conv = expect(conv, TimerFired(STABLE_TIMER), evolve(conv, connection_proven=True, failures=0))
        conv = expect(
            conv,
            ConnectionEnded("c1", BidiConnectionError("idle stream ended")),
            evolve(conv, phase=Phase.RESTARTING, connection_id=None),
            (*left("connection_lost", "idle stream ended"), OpenConnection(None)),
        )
    assert conv.failures == 0
    # The next failure is the first again.
    _failed(conv, BidiConnectionError("refused"), 0.5)


def test_a_backoff_timer_firing_on_an_open_connection_is_ignored() -> None:
    conv = connected()
    expect(conv, TimerFired(BACKOFF_TIMER), conv)


@pytest.mark.parametrize(
    "error",
    [
        BidiProviderError("invalid api key", code="401"),
        BidiConnectionError("TLS certificate rejected", retryable=False),
        RuntimeError("a bug in an adapter"),
        BidiUsageError("provider_config: unknown key 'voicee'"),  # a BidiError that says nothing of retrying
    ],
    ids=["provider-refusal", "not-retryable", "not-a-bidi-error", "usage-error"],
)
def test_a_failure_no_connection_can_help_closes_at_once(error: BaseException) -> None:
    conv = expect(
        started(),
        text("hello?"),
        evolve(
            started(),
            outbox=Outbox((Entry(0, BidiTextInputEvent("hello?"), TextMessage("user", "hello?")),), next_seq=1),
        ),
    )
    new = _gave_up(conv, error)
    # The waiting input had no connection to go to.
    assert new == evolve(conv, phase=Phase.CLOSED, outbox=Outbox(next_seq=1))


def test_a_rejected_resumption_starts_a_fresh_session_at_once_and_says_so() -> None:
    """A stale handle: the next connection, at once, is a fresh session seeded
    with the history; it is no failed attempt; the application learns why its
    session was not resumed."""
    conv = connected()
    conv = expect(conv, BidiResumptionUpdateEvent("h1"), evolve(heard(conv), resume_handle="h1"))
    conv = expect(
        conv,
        lost(),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*left("connection_lost", "reset"), OpenConnection("h1")),
    )
    details = "[resumption_rejected] handle expired; starting a fresh session seeded with the history"
    conv = expect(
        conv,
        ConnectFailed(BidiResumptionRejectedError("handle expired")),
        evolve(conv, resume_handle=None),
        (Emit(BidiConnectionRestartEvent("resumption_rejected", details)), OpenConnection(None)),
    )
    assert (conv.phase, conv.failures) == (Phase.RESTARTING, 0)
    connected(conv=conv, connection_id="c2")


@pytest.mark.parametrize(
    ("retry_after_s", "expected"),
    [(None, 0.5), (0.1, 0.5), (3.0, 3.0), (600.0, 60.0)],
    ids=["none", "shorter-than-the-backoff", "honoured", "capped"],
)
def test_a_refusal_that_says_when_to_come_back_is_waited_for(retry_after_s: float | None, expected: float) -> None:
    """429 or 503 with ``Retry-After``: the next attempt waits at least that long (never less than the
    backoff; at most ``max_retry_after_s``, so a header cannot park the conversation for hours)."""
    for error in (
        BidiProviderError("busy", code="rate_limited", retryable=True, retry_after_s=retry_after_s),
        BidiConnectionError("HTTP 503", retry_after_s=retry_after_s),
    ):
        _failed(started(), error, expected)
