"""Replacing a healthy connection before its limit, step by step. The
provider's warning (``BidiConnectionExpiringEvent``) or the connection-age
timer sets ``rotation_due`` and starts the ``ROTATION_TIMER``; a settling rule
rotates at the next turn boundary (listening, never while a tool runs); the
timer cuts a turn that runs past the deadline. The age timer keeps a margin of
at most a tenth of the limit.

Every step compares the whole :class:`Conversation` and the exact effects
(:func:`tests.conversation_support.expect`).
"""

from __future__ import annotations

from bidi_core.conversation import (
    CONNECTION_AGE_TIMER,
    ROTATION_TIMER,
    SETTLING_RULES,
    STABLE_TIMER,
    Conversation,
    ConversationConfig,
    Phase,
    ToolCall,
    orphaned_result_text,
    step,
)
from bidi_core.effects import AppendHistory, Emit, OpenConnection, RetractHistory, SendToModel, StartTimer
from bidi_core.outbox import Entry, Outbox
from bidi_core.shell_events import Connected, PlaybackProgress, TimerFired, ToolFinished
from ports.events import (
    BidiConnectionExpiringEvent,
    BidiConnectionStartEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
)
from ports.io import PlaybackReport
from ports.messages import ToolResultMessage
from ports.model import ModelCapabilities
from tests.conversation_support import (
    CAPS,
    connected,
    cut_off,
    evolve,
    expect,
    heard,
    left,
    responding,
    result,
    say,
    started,
    tool_use,
    with_audio,
)

AT_THE_BOUNDARY = "; rotating at a turn boundary"


def warned(conv: Conversation, time_left: float, grace: float) -> Conversation:
    """The provider warns mid-turn: the rotation waits for the turn boundary,
    at most ``grace`` seconds."""
    return expect(
        conv,
        BidiConnectionExpiringEvent(time_left),
        evolve(heard(conv), rotation_due=f"provider closes in {time_left:g}s"),
        (StartTimer(ROTATION_TIMER, grace),),
    )


def test_the_rotation_waits_in_one_settling_rule() -> None:
    rule = SETTLING_RULES[-1]
    assert (rule.name, rule.phase, rule.target) == (
        "rotation due at a turn boundary",
        Phase.LISTENING,
        Phase.RESTARTING,
    )


def test_expiring_while_responding_rotates_at_the_next_turn_boundary() -> None:
    conv = warned(with_audio(responding(connected()), "r1", 20), 10.0, 9.0)
    # The turn goes on undisturbed: audio arrives, the user's text goes out.
    conv = with_audio(conv, "r1", 20)
    conv = say(conv, "more")
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        # Nobody reports playback: nothing of r1 is audible after its completion,
        # so nothing is cleared nor remembered as audible from an old connection.
        evolve(
            conv,
            phase=Phase.RESTARTING,
            connection_id=None,
            response_id=None,
            audible_id=None,
            rotation_due=None,
        ),
        (
            Emit(BidiResponseCompleteEvent("r1", "complete")),
            *left("expiring", "provider closes in 10s" + AT_THE_BOUNDARY),
            OpenConnection(None),
        ),
    )
    connected(conv=conv, connection_id="c2")


def test_rotation_at_a_turn_boundary_keeps_the_answer_playing() -> None:
    conv = with_audio(responding(connected(ModelCapabilities(can_truncate=True))), "r1", 100)
    conv = expect(
        conv, PlaybackProgress(PlaybackReport("r1", 40.0)), evolve(conv, tracks_playback=True, played_ms=40.0)
    )
    conv = warned(conv, 10.0, 9.0)
    # r1 completes with 60 ms of it still to play: the rotation lets it play on.
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(
            conv,
            phase=Phase.RESTARTING,
            connection_id=None,
            response_id=None,
            audible_from_old_connection=True,
            rotation_due=None,
        ),
        (
            Emit(BidiResponseCompleteEvent("r1", "complete")),
            *left("expiring", "provider closes in 10s" + AT_THE_BOUNDARY),
            OpenConnection(None),
        ),
    )
    assert (conv.audible_id, conv.played_ms, conv.received_ms) == ("r1", 40.0, 100.0)
    conv = connected(CAPS, conv, "c2")
    # c2's first response takes over: r1 is no longer the audible one, nor from an old connection.
    conv = expect(
        conv,
        BidiResponseStartEvent("r2"),
        evolve(
            heard(conv),
            phase=Phase.RESPONDING,
            response_id="r2",
            audible_id="r2",
            audible_from_old_connection=False,
            played_ms=0.0,
            received_ms=0.0,
        ),
        (Emit(BidiResponseStartEvent("r2")),),
    )


def test_expiring_while_listening_rotates_now() -> None:
    conv = connected()
    conv = expect(
        conv,
        BidiConnectionExpiringEvent(10.0),
        evolve(heard(conv), phase=Phase.RESTARTING, connection_id=None),
        (
            StartTimer(ROTATION_TIMER, 9.0),
            *left("expiring", "provider closes in 10s" + AT_THE_BOUNDARY),
            OpenConnection(None),
        ),
    )


def test_expiring_during_tool_calls_rotates_when_the_last_tool_ends() -> None:
    conv = tool_use(connected(), "t1", "lookup")
    conv = tool_use(conv, "t2", "lookup")
    conv = warned(conv, 0.5, 0.0)
    # A response that completes while tools run is no turn boundary.
    conv = responding(conv)
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "tool_use"),
        evolve(conv, phase=Phase.TOOL_CALLING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "tool_use")),),
    )
    # Nor is one tool of two ending.
    r1, r2 = result("t1", "lookup"), result("t2", "lookup", "fine")
    m1, m2 = (ToolResultMessage(r.tool_use_id, "lookup", "success", r.content) for r in (r1, r2))
    e1, e2 = Entry(0, r1, m1, "c1"), Entry(1, r2, m2, "c1")
    conv = expect(
        conv,
        ToolFinished(r1),
        evolve(
            conv,
            pending_tools=frozenset({ToolCall("t2", "lookup", "c1")}),
            outbox=Outbox((), (e1,), next_seq=1),
        ),
        (Emit(r1), AppendHistory(m1), SendToModel(r1, 0)),
    )
    assert conv.phase is Phase.TOOL_CALLING
    # The last one: its result is handed to the connection, which is left at
    # once (the tool results were handed to it but not written: they go to the
    # next connection, as text, since it never issued those calls).
    conv = expect(
        conv,
        ToolFinished(r2),
        evolve(
            conv,
            phase=Phase.RESTARTING,
            connection_id=None,
            pending_tools=frozenset(),
            rotation_due=None,
            outbox=Outbox((e1, e2), next_seq=2),
        ),
        (
            Emit(r2),
            AppendHistory(m2),
            SendToModel(r2, 1),
            *left("expiring", "provider closes in 0.5s" + AT_THE_BOUNDARY),
            RetractHistory(m2),
            RetractHistory(m1),
            OpenConnection(None),
        ),
    )
    _, effects = step(conv, Connected("c2", "m"))
    assert effects == (
        Emit(BidiConnectionStartEvent("c2", "m")),
        StartTimer(STABLE_TIMER, 10.0),
        AppendHistory(m1),
        SendToModel(BidiTextInputEvent(orphaned_result_text(r1)), 0),
        AppendHistory(m2),
        SendToModel(BidiTextInputEvent(orphaned_result_text(r2)), 1),
    )


def test_rotation_timer_cuts_a_turn_that_runs_past_the_deadline() -> None:
    conv = warned(with_audio(responding(connected()), "r1", 20), 5.0, 4.0)
    conv = expect(
        conv,
        TimerFired(ROTATION_TIMER),
        evolve(
            conv,
            phase=Phase.RESTARTING,
            connection_id=None,
            response_id=None,
            audible_id=None,
            interrupted_ids=("r1",),
            received_ms=0.0,
            rotation_due=None,
        ),
        (*cut_off("r1", "error", "expiring", "connection limit reached mid-turn"), OpenConnection(None)),
    )
    # A timer of the old connection firing now is ignored.
    conv = expect(conv, TimerFired(ROTATION_TIMER), conv)
    conv = expect(conv, TimerFired(CONNECTION_AGE_TIMER), conv)


def test_rotation_timer_cuts_tool_calling_that_runs_past_the_deadline() -> None:
    conv = warned(tool_use(connected(), "t1", "slow"), 5.0, 4.0)
    conv = expect(
        conv,
        TimerFired(ROTATION_TIMER),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None, rotation_due=None),
        (*left("expiring", "connection limit reached mid-turn"), OpenConnection(None)),
    )
    # The tool still runs; the next connection opens in tool calling.
    assert conv.tool_ids() == {"t1"}
    _, effects = step(conv, Connected("c2", "m"))
    assert effects == (Emit(BidiConnectionStartEvent("c2", "m")), StartTimer(STABLE_TIMER, 10.0))


def test_a_rotation_timer_with_no_rotation_due_is_ignored() -> None:
    conv = responding(connected())
    expect(conv, TimerFired(ROTATION_TIMER), conv)


def test_connection_age_timer_from_capabilities() -> None:
    caps = ModelCapabilities(max_connection_s=600.0)
    conv = started()
    conv = expect(
        conv,
        Connected("c1", "m", caps),
        evolve(conv, phase=Phase.LISTENING, capabilities=caps, connection_id="c1"),
        (
            Emit(BidiConnectionStartEvent("c1", "m")),
            StartTimer(CONNECTION_AGE_TIMER, 570.0),
            StartTimer(STABLE_TIMER, 10.0),
        ),
    )
    # An unknown timer is ignored.
    conv = expect(conv, TimerFired("other"), conv)
    # Mid-turn: the age limit acts like the provider's warning, rotation_margin_s ahead.
    turn = responding(conv)
    turn = expect(
        turn,
        TimerFired(CONNECTION_AGE_TIMER),
        evolve(turn, rotation_due="provider closes in 30s"),
        (StartTimer(ROTATION_TIMER, 29.0),),
    )
    assert turn.phase is Phase.RESPONDING
    # Between turns: rotate now; the new connection starts a new age timer.
    conv = expect(
        conv,
        TimerFired(CONNECTION_AGE_TIMER),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (
            StartTimer(ROTATION_TIMER, 29.0),
            *left("expiring", "provider closes in 30s" + AT_THE_BOUNDARY),
            OpenConnection(None),
        ),
    )
    conv = expect(
        conv,
        Connected("c2", "m", caps),
        evolve(conv, phase=Phase.LISTENING, connection_id="c2"),
        (
            Emit(BidiConnectionStartEvent("c2", "m")),
            StartTimer(CONNECTION_AGE_TIMER, 570.0),
            StartTimer(STABLE_TIMER, 10.0),
        ),
    )


def test_connection_age_limit_shorter_than_the_margin_rotates_a_tenth_before_it() -> None:
    # A 30 s margin on a 20 s limit would rotate the moment each connection opens, forever.
    caps = ModelCapabilities(max_connection_s=20.0)
    conv = started(ConversationConfig(rotation_margin_s=30.0))
    conv = expect(
        conv,
        Connected("c1", "m", caps),
        evolve(conv, phase=Phase.LISTENING, capabilities=caps, connection_id="c1"),
        (
            Emit(BidiConnectionStartEvent("c1", "m")),
            StartTimer(CONNECTION_AGE_TIMER, 18.0),
            StartTimer(STABLE_TIMER, 10.0),
        ),
    )
    # When it fires, 2 s (a tenth of the limit) are left, not the 30 s margin.
    turn = responding(conv)
    turn = expect(
        turn,
        TimerFired(CONNECTION_AGE_TIMER),
        evolve(turn, rotation_due="provider closes in 2s"),
        (StartTimer(ROTATION_TIMER, 1.0),),
    )
    assert turn.phase is Phase.RESPONDING
    expect(
        conv,
        TimerFired(CONNECTION_AGE_TIMER),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (
            StartTimer(ROTATION_TIMER, 1.0),
            *left("expiring", "provider closes in 2s" + AT_THE_BOUNDARY),
            OpenConnection(None),
        ),
    )


def test_connection_age_limit_longer_than_ten_margins_keeps_the_margin() -> None:
    caps = ModelCapabilities(max_connection_s=300.0)
    conv = started(ConversationConfig(rotation_margin_s=30.0))
    expect(
        conv,
        Connected("c1", "m", caps),
        evolve(conv, phase=Phase.LISTENING, capabilities=caps, connection_id="c1"),
        (
            Emit(BidiConnectionStartEvent("c1", "m")),
            StartTimer(CONNECTION_AGE_TIMER, 270.0),
            StartTimer(STABLE_TIMER, 10.0),
        ),
    )
