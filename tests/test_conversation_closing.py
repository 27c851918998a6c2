"""How a conversation ends, step by step: the application stops it, a failure
no connection can help ends it; a response in flight gets its completion, the
audio still playing is silenced (unless the end is graceful), running tools
are cancelled, every timer is cancelled; ``CLOSED`` is absorbing (stragglers
are ignored, new input is illegal and changes nothing).

Every step compares the whole :class:`Conversation` and the exact effects
(:func:`tests.conversation_support.expect`).
"""

from __future__ import annotations

import pytest

from bidi_core.conversation import ROTATION_TIMER, Conversation, IllegalTransition, Phase, step
from bidi_core.effects import CancelTool, ClearPlayback, Close, Effect, Emit
from bidi_core.outbox import Outbox
from bidi_core.shell_events import (
    Connected,
    ConnectFailed,
    ConnectionEnded,
    InvalidInput,
    PlaybackProgress,
    Started,
    StopRequested,
    TimerFired,
    ToolFinished,
    UserInput,
    Written,
)
from ports.errors import BidiConnectionError, BidiProviderError
from ports.events import (
    BidiAudioInputEvent,
    BidiConnectionCloseEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiSpeechStartedEvent,
)
from ports.io import PlaybackReport
from ports.model import ModelCapabilities
from tests.conversation_support import (
    CLOSE_TIMERS,
    audio_out,
    connected,
    evolve,
    expect,
    responding,
    result,
    started,
    text,
    tool_use,
    with_audio,
)


def _interrupted() -> Conversation:
    conv = with_audio(responding(connected()), "r1", 20)
    return expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(conv, phase=Phase.INTERRUPTED, audible_id=None, interrupted_ids=("r1",), received_ms=0.0),
        (ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1"))),
    )


def _answer_still_playing() -> Conversation:
    conv = with_audio(responding(connected(ModelCapabilities(can_truncate=True))), "r1", 100)
    conv = expect(
        conv, PlaybackProgress(PlaybackReport("r1", 40.0)), evolve(conv, tracks_playback=True, played_ms=40.0)
    )
    return expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )


def closing(reason: str, connection_id: str | None = "c1") -> tuple[Effect, ...]:
    """The last effects of every end: timers off, the close event, the close."""
    return (*CLOSE_TIMERS, Emit(BidiConnectionCloseEvent(reason, connection_id)), Close(reason))  # type: ignore[arg-type]


def test_a_fatal_loss_closes_with_the_error_and_everything_after_is_ignored() -> None:
    conv = with_audio(responding(connected()), "r1", 20)
    error = BidiProviderError("bad credentials", code="401")
    new, effects = step(conv, ConnectionEnded("c1", error))
    assert effects == (
        ClearPlayback("r1"),
        Emit(BidiResponseCompleteEvent("r1", "interrupted")),
        *closing("error"),
    )
    close = effects[-1]
    assert isinstance(close, Close)
    assert close.error is error
    assert new == evolve(conv, phase=Phase.CLOSED, response_id=None, audible_id=None)
    # Stragglers of the shutdown are accepted and ignored, a connection that opened meanwhile too.
    stragglers = (
        ConnectionEnded("c1", BidiConnectionError("again")),
        ConnectFailed(BidiConnectionError("refused")),
        TimerFired(ROTATION_TIMER),
        StopRequested(),
        Connected("c2", "m"),
        Written(0),
        InvalidInput("bad"),
        PlaybackProgress(PlaybackReport("r1", 20.0, finished=True)),
        ToolFinished(result("t9", "lookup")),
        audio_out("r1"),
        BidiResponseCompleteEvent("r1", "complete"),
    )
    for late in stragglers:
        new = expect(new, late, new)


def test_input_after_the_end_is_illegal_and_changes_nothing() -> None:
    conv, _ = step(connected(), StopRequested())
    for event in (text("still there?"), UserInput(BidiAudioInputEvent(b"\x00\x00")), Started()):
        with pytest.raises(IllegalTransition) as raised:
            step(conv, event)
        assert (raised.value.phase, raised.value.event) == (Phase.CLOSED, event)
    # Started only begins a conversation.
    with pytest.raises(IllegalTransition):
        step(connected(), Started())


def test_stop_while_connecting_then_the_connection_opens_is_ignored() -> None:
    conv = started()
    conv = expect(conv, StopRequested(), evolve(conv, phase=Phase.CLOSED), closing("client_disconnect", None))
    # The shell's connection attempt was already under way: no start event, no timer, no flush.
    conv = expect(conv, Connected("c1", "m", ModelCapabilities(max_connection_s=600.0)), conv)
    assert conv == Conversation(phase=Phase.CLOSED)


def test_stop_between_connections_drops_what_waits_for_the_next() -> None:
    conv = responding(connected())
    conv, _ = step(conv, ConnectionEnded("c1", BidiConnectionError("reset")))
    conv, _ = step(conv, text("hello?"))
    conv, _ = step(conv, UserInput(BidiAudioInputEvent(b"\x01\x00" * 8)))
    assert len(conv.outbox.waiting) == 2
    conv = expect(
        conv,
        StopRequested(),
        evolve(conv, phase=Phase.CLOSED, outbox=Outbox(next_seq=2)),
        closing("client_disconnect", None),
    )


def test_stop_requested_while_responding_clears_playback_completes_the_response_and_cancels_tools() -> None:
    conv = tool_use(responding(connected()), "t1", "lookup")
    conv = expect(
        conv,
        StopRequested(),
        evolve(conv, phase=Phase.CLOSED, response_id=None, audible_id=None, pending_tools=frozenset()),
        (
            ClearPlayback("r1"),
            Emit(BidiResponseCompleteEvent("r1", "interrupted")),
            CancelTool("t1"),
            *closing("client_disconnect"),
        ),
    )


@pytest.mark.parametrize("interrupted", [False, True], ids=["responding", "interrupted"])
@pytest.mark.parametrize(
    ("close", "reason"),
    [
        (StopRequested(), "client_disconnect"),
        (ConnectionEnded("c1", BidiProviderError("auth")), "error"),
    ],
    ids=["stop", "fatal-loss"],
)
def test_closing_mid_response_completes_the_response(interrupted: bool, close: object, reason: str) -> None:
    conv = _interrupted() if interrupted else with_audio(responding(connected()), "r1", 20)
    # Every response start gets its completion. Interrupted: the barge-in already silenced r1.
    clear = () if interrupted else (ClearPlayback("r1"),)
    conv = expect(
        conv,
        close,
        evolve(conv, phase=Phase.CLOSED, response_id=None, audible_id=None),
        (*clear, Emit(BidiResponseCompleteEvent("r1", "interrupted")), *closing(reason)),
    )
    # Nothing completes it a second time.
    conv = expect(conv, StopRequested(), conv)
    conv = expect(conv, BidiResponseCompleteEvent("r1", "complete"), conv)


def test_closing_with_the_last_response_still_playing_completes_nothing() -> None:
    conv = _answer_still_playing()
    # r1 already completed: only its audio is discarded.
    conv = expect(
        conv,
        StopRequested(),
        evolve(conv, phase=Phase.CLOSED, audible_id=None),
        (ClearPlayback("r1"), *closing("client_disconnect")),
    )


@pytest.mark.parametrize("reason", ["complete", "user_request"])
def test_a_graceful_stop_lets_the_last_answer_play_out(reason: str) -> None:
    conv = _answer_still_playing()
    conv = expect(conv, StopRequested(reason), evolve(conv, phase=Phase.CLOSED, audible_id=None), closing(reason))
