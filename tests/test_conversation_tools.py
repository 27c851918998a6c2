"""Tool calls, step by step: running them, their results reaching the model
exactly once (through the outbox, recorded in the history when handed to the
connection), failing tools (the core's ``tool_error`` event), calls the
provider withdraws, ``stop_conversation`` (a graceful end that lets the
goodbye play out), and the result of a call issued on a connection that is
gone (the model reads it as the user's text; a cancelled one is only recorded).

Every step compares the whole :class:`Conversation` and the exact effects
(:func:`tests.conversation_support.expect`).
"""

from __future__ import annotations

import pytest

from bidi_core.conversation import (
    STABLE_TIMER,
    Conversation,
    IllegalTransition,
    Phase,
    ToolCall,
    orphaned_result_text,
    step,
)
from bidi_core.effects import (
    AppendHistory,
    CancelTool,
    ClearPlayback,
    Close,
    Emit,
    OpenConnection,
    RetractHistory,
    SendToModel,
    StartTimer,
)
from bidi_core.outbox import Entry, Outbox
from bidi_core.shell_events import (
    Connected,
    ConnectionEnded,
    PlaybackProgress,
    StopRequested,
    ToolCancelled,
    ToolFinished,
    UserInput,
    Written,
)
from ports.errors import BidiConnectionError
from ports.events import (
    BidiAudioInputEvent,
    BidiConnectionCloseEvent,
    BidiConnectionStartEvent,
    BidiErrorEvent,
    BidiResponseCompleteEvent,
    BidiTextInputEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
)
from ports.io import PlaybackReport
from ports.messages import ToolResultMessage
from ports.model import ModelCapabilities
from tests.conversation_support import (
    CLOSE_TIMERS,
    connected,
    cut_off,
    evolve,
    expect,
    left,
    responding,
    result,
    say,
    text,
    tool_use,
    with_audio,
)


def recorded(r: BidiToolResultEvent) -> ToolResultMessage:
    return ToolResultMessage(r.tool_use_id, r.name, r.status, r.content)


def test_parallel_tool_calls_in_one_response_then_results() -> None:
    conv = responding(connected())
    conv = tool_use(conv, "t1", "weather", city="Paris")
    conv = tool_use(conv, "t2", "time")
    # The same id again is a provider bug: reported, not run twice.
    conv = expect(
        conv,
        BidiToolUseEvent("t1", "weather"),
        conv,
        (Emit(BidiErrorEvent("duplicate tool call id 't1'", code="protocol_error")),),
    )
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "tool_use"),
        evolve(conv, phase=Phase.TOOL_CALLING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "tool_use")),),
    )
    r2 = result("t2", "time", "12:00")
    e2 = Entry(0, r2, recorded(r2), "c1")
    conv = expect(
        conv,
        ToolFinished(r2),
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "weather", "c1")}), outbox=Outbox((), (e2,), next_seq=1)),
        (Emit(r2), AppendHistory(recorded(r2)), SendToModel(r2, 0)),
    )
    r1 = result("t1", "weather", {"sky": "sunny"})
    e1 = Entry(1, r1, recorded(r1), "c1")
    conv = expect(
        conv,
        ToolFinished(r1),
        evolve(conv, phase=Phase.LISTENING, pending_tools=frozenset(), outbox=Outbox((), (e2, e1), next_seq=2)),
        (Emit(r1), AppendHistory(recorded(r1)), SendToModel(r1, 1)),
    )
    conv = expect(conv, Written(0), evolve(conv, outbox=Outbox((), (e1,), next_seq=2, written=1)))
    conv = expect(conv, Written(1), evolve(conv, outbox=Outbox(next_seq=2, written=2)))
    assert conv == Conversation(
        phase=Phase.LISTENING, connection_id="c1", connection_proven=True, outbox=Outbox(next_seq=2, written=2)
    )
    # A second result for a settled call is dropped: the model got exactly one.
    conv = expect(conv, ToolFinished(r1), conv)
    conv = expect(conv, ToolCancelled("t1"), conv)
    # A report of a write the core never asked for changes nothing either.
    conv = expect(conv, Written(7), conv)
    # The model answers with the results.
    conv = responding(conv, "r2")


def test_tool_call_while_listening_then_a_response_while_it_runs() -> None:
    conv = tool_use(connected(), "t1", "lookup")
    assert conv.phase is Phase.TOOL_CALLING
    conv = responding(conv)
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.TOOL_CALLING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )


@pytest.mark.parametrize("content", ["ValueError: bad city", {"error": "bad city"}], ids=["text", "json"])
def test_a_failing_tool_is_reported_and_its_error_result_sent(content: object) -> None:
    """The core turns a tool's exception into an error event for the user; the
    model gets the error result like any other."""
    conv = tool_use(connected(), "t1", "weather", city="?")
    failed = BidiToolResultEvent("t1", "weather", "error", content)
    conv = expect(
        conv,
        ToolFinished(failed, error_type="ValueError"),
        evolve(
            conv,
            phase=Phase.LISTENING,
            pending_tools=frozenset(),
            outbox=Outbox((), (Entry(0, failed, recorded(failed), "c1"),), next_seq=1),
        ),
        (
            Emit(BidiErrorEvent(str(content), code="tool_error", details="ValueError")),
            Emit(failed),
            AppendHistory(recorded(failed)),
            SendToModel(failed, 0),
        ),
    )
    # A tool that returned an error result without raising is no error event.
    conv = tool_use(conv, "t2", "weather")
    plain = BidiToolResultEvent("t2", "weather", "error", "no such city")
    _, effects = step(conv, ToolFinished(plain))
    assert effects == (Emit(plain), AppendHistory(recorded(plain)), SendToModel(plain, 1))


def test_stop_conversation_tool_closes_with_user_request_and_sends_no_result() -> None:
    conv = tool_use(connected(), "t1", "stop_conversation")
    conv = tool_use(conv, "t2", "slow")
    bye = result("t1", "stop_conversation", "Goodbye.")
    conv = expect(
        conv,
        ToolFinished(bye, ends_conversation=True),
        evolve(conv, phase=Phase.CLOSED, pending_tools=frozenset()),
        (
            Emit(bye),
            AppendHistory(ToolResultMessage("t1", "stop_conversation", "success", "Goodbye.")),
            CancelTool("t2"),
            *CLOSE_TIMERS,
            Emit(BidiConnectionCloseEvent("user_request", "c1")),
            Close("user_request"),
        ),
    )
    # The cancelled tool reports back after the close: ignored, nothing sent.
    conv = expect(conv, ToolCancelled("t2"), conv)
    conv = expect(conv, ToolFinished(result("t2", "slow")), conv)
    conv = expect(conv, StopRequested(), conv)
    with pytest.raises(IllegalTransition):
        step(conv, text("still there?"))


def test_a_failing_stop_conversation_still_ends_the_conversation_and_the_user_hears_why() -> None:
    """The model meant to end the call (say it got the arguments wrong): the conversation ends all the
    same, as asked, and the failure is reported before the close, like any tool's."""
    conv = tool_use(connected(), "t1", "stop_conversation", why="bye")
    failed = BidiToolResultEvent("t1", "stop_conversation", "error", "unexpected argument 'why'")
    expect(
        conv,
        ToolFinished(failed, ends_conversation=True, error_type="BidiToolError"),
        evolve(conv, phase=Phase.CLOSED, pending_tools=frozenset()),
        (
            Emit(BidiErrorEvent("unexpected argument 'why'", code="tool_error", details="BidiToolError")),
            Emit(failed),
            AppendHistory(recorded(failed)),
            *CLOSE_TIMERS,
            Emit(BidiConnectionCloseEvent("user_request", "c1")),
            Close("user_request"),
        ),
    )


def test_provider_tool_cancellation_withdraws_the_call() -> None:
    conv = tool_use(connected(), "t1", "lookup")
    conv = tool_use(conv, "t2", "lookup")
    # Unknown ids in the cancellation are ignored.
    conv = expect(
        conv,
        BidiToolCancelEvent(("t2", "t1", "t-unknown")),
        evolve(conv, withdrawn_tools=frozenset({"t1", "t2"})),
        (CancelTool("t1"), CancelTool("t2")),
    )
    # t1 stops on cancellation: the user sees it, the model is not told; the
    # history pairs the call with a "withdrawn" outcome so a replay stays valid.
    cancelled = BidiToolResultEvent("t1", "lookup", "cancelled", "The tool call was cancelled.")
    withdrawn = "The model withdrew this call."
    conv = expect(
        conv,
        ToolCancelled("t1"),
        evolve(conv, pending_tools=frozenset({ToolCall("t2", "lookup", "c1")}), withdrawn_tools=frozenset({"t2"})),
        (Emit(cancelled), AppendHistory(ToolResultMessage("t1", "lookup", "cancelled", withdrawn))),
    )
    # t2 finished before the cancellation reached it: still no result for the model.
    done = result("t2", "lookup")
    conv = expect(
        conv,
        ToolFinished(done),
        evolve(conv, phase=Phase.LISTENING, pending_tools=frozenset(), withdrawn_tools=frozenset()),
        (Emit(done), AppendHistory(ToolResultMessage("t2", "lookup", "cancelled", withdrawn))),
    )
    assert conv == Conversation(phase=Phase.LISTENING, connection_id="c1", connection_proven=True)


# --------------------------------------------------------------------------- a call of a connection that is gone


def _tool_running_then_lost(name: str = "lookup") -> Conversation:
    """``t1`` runs, called on c1, when c1 (proven) is lost."""
    conv = tool_use(connected(), "t1", name)
    return expect(
        conv,
        ConnectionEnded("c1", BidiConnectionError("reset")),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*left("connection_lost", "reset"), OpenConnection(None)),
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [("ok", "(The tool lookup returned success: ok)"), ({"n": "é"}, '(The tool lookup returned success: {"n": "é"})')],
    ids=["text", "json"],
)
def test_a_result_for_a_call_of_an_earlier_connection_reaches_the_model_as_user_text(
    content: object, words: str
) -> None:
    """The new connection never issued t1 and would refuse a result naming it:
    the model reads the outcome as the user's text; the history keeps the
    call and its result as a pair."""
    conv = _tool_running_then_lost()
    r = result("t1", "lookup", content)
    waiting = Entry(0, r, recorded(r), "c1")
    conv = expect(
        conv,
        ToolFinished(r),
        evolve(conv, pending_tools=frozenset(), outbox=Outbox((waiting,), next_seq=1)),
        (Emit(r),),
    )
    assert orphaned_result_text(r) == words
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(
            conv,
            phase=Phase.LISTENING,
            connection_id="c2",
            connection_proven=False,
            outbox=Outbox((), (waiting,), next_seq=1),
        ),
        (
            Emit(BidiConnectionStartEvent("c2", "m")),
            StartTimer(STABLE_TIMER, 10.0),
            AppendHistory(recorded(r)),
            SendToModel(BidiTextInputEvent(words), 0),
        ),
    )
    conv = expect(conv, Written(0), evolve(conv, outbox=Outbox(next_seq=1, written=1)))


def test_a_result_handed_to_the_connection_that_called_it_and_lost_unwritten_goes_as_text_to_the_next() -> None:
    conv = tool_use(responding(connected()), "t1", "lookup")
    r = result("t1", "lookup")
    entry = Entry(0, r, recorded(r), "c1")
    conv = expect(
        conv,
        ToolFinished(r),
        evolve(conv, pending_tools=frozenset(), outbox=Outbox((), (entry,), next_seq=1)),
        (Emit(r), AppendHistory(recorded(r)), SendToModel(r, 0)),
    )
    # Lost before the writer wrote it: its record is taken back; it waits, first.
    conv = expect(
        conv,
        ConnectionEnded("c1", BidiConnectionError("reset")),
        evolve(
            conv,
            phase=Phase.RESTARTING,
            connection_id=None,
            response_id=None,
            audible_id=None,
            interrupted_ids=("r1",),
            outbox=Outbox((entry,), next_seq=1),
        ),
        (
            *cut_off("r1", "error", "connection_lost", "reset"),
            RetractHistory(recorded(r)),
            OpenConnection(None),
        ),
    )
    words = orphaned_result_text(r)
    _, effects = step(conv, Connected("c2", "m"))
    assert effects[-2:] == (AppendHistory(recorded(r)), SendToModel(BidiTextInputEvent(words), 0))


def test_a_cancelled_call_of_an_earlier_connection_is_only_recorded() -> None:
    """Nobody on the new connection waits for it: the history keeps the pair,
    nothing is sent, and the entry leaves the outbox without counting as written."""
    conv = _tool_running_then_lost("slow")
    cancelled = BidiToolResultEvent("t1", "slow", "cancelled", "The tool call was cancelled.")
    waiting = Entry(0, cancelled, recorded(cancelled), "c1")
    conv = expect(
        conv,
        ToolCancelled("t1"),
        evolve(conv, pending_tools=frozenset(), outbox=Outbox((waiting,), next_seq=1)),
        (Emit(cancelled),),
    )
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(
            conv,
            phase=Phase.LISTENING,
            connection_id="c2",
            connection_proven=False,
            outbox=Outbox(next_seq=1),
        ),
        (Emit(BidiConnectionStartEvent("c2", "m")), StartTimer(STABLE_TIMER, 10.0), AppendHistory(recorded(cancelled))),
    )
    # What the user says next goes as usual.
    say(conv, "anyone?")


def test_what_the_user_says_behind_a_cancelled_result_still_being_written_goes_out_behind_it() -> None:
    """A call we cancelled on its own connection is answered (``cancelled``) so the model is not left
    waiting; while the writer still holds that answer, the user's microphone goes on: its audio is
    handed to the same connection right behind it, in order."""
    conv = tool_use(connected(), "t1", "lookup")
    cancelled = BidiToolResultEvent("t1", "lookup", "cancelled", "The tool call was cancelled.")
    answer = Entry(0, cancelled, recorded(cancelled), "c1")
    conv = expect(
        conv,
        ToolCancelled("t1"),
        evolve(conv, phase=Phase.LISTENING, pending_tools=frozenset(), outbox=Outbox(in_flight=(answer,), next_seq=1)),
        (Emit(cancelled), AppendHistory(recorded(cancelled)), SendToModel(cancelled, 0)),
    )
    block = BidiAudioInputEvent(b"\x00\x00" * 320, sample_rate=16000)
    conv = expect(
        conv,
        UserInput(block),
        evolve(conv, outbox=Outbox(in_flight=(answer, Entry(1, block, None)), next_seq=2, audio=1)),
        (SendToModel(block, 1),),
    )


def test_a_tool_outliving_its_connection_keeps_the_next_one_tool_calling_then_answers_as_text() -> None:
    """The tool outlives the connection: the next one opens in tool calling,
    and the result it gets is user text."""
    conv = _tool_running_then_lost()
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(conv, phase=Phase.TOOL_CALLING, connection_id="c2", connection_proven=False),
        (Emit(BidiConnectionStartEvent("c2", "m")), StartTimer(STABLE_TIMER, 10.0)),
    )
    r = result("t1", "lookup")
    words = BidiTextInputEvent(orphaned_result_text(r))
    conv = expect(
        conv,
        ToolFinished(r),
        evolve(
            conv,
            phase=Phase.LISTENING,
            pending_tools=frozenset(),
            outbox=Outbox((), (Entry(0, r, recorded(r), "c1"),), next_seq=1),
        ),
        (Emit(r), AppendHistory(recorded(r)), SendToModel(words, 0)),
    )


# --------------------------------------------------------------------------- the goodbye


def _goodbye_still_playing() -> Conversation:
    """The model said goodbye (r1, 100 ms, 40 ms of it played) and called stop_conversation."""
    conv = with_audio(responding(connected(ModelCapabilities(can_truncate=True))), "r1", 100)
    conv = tool_use(conv, "t1", "stop_conversation")
    conv = expect(
        conv, PlaybackProgress(PlaybackReport("r1", 40.0)), evolve(conv, tracks_playback=True, played_ms=40.0)
    )
    return expect(
        conv,
        BidiResponseCompleteEvent("r1", "tool_use"),
        evolve(conv, phase=Phase.TOOL_CALLING, response_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "tool_use")),),
    )


def test_stop_conversation_lets_the_goodbye_still_playing_play_out() -> None:
    conv = _goodbye_still_playing()
    assert conv.audible_id == "r1"
    bye = result("t1", "stop_conversation", "Goodbye.")
    # A graceful end: no ClearPlayback, the outputs play out what they hold.
    conv = expect(
        conv,
        ToolFinished(bye, ends_conversation=True),
        evolve(conv, phase=Phase.CLOSED, audible_id=None, pending_tools=frozenset()),
        (
            Emit(bye),
            AppendHistory(ToolResultMessage("t1", "stop_conversation", "success", "Goodbye.")),
            *CLOSE_TIMERS,
            Emit(BidiConnectionCloseEvent("user_request", "c1")),
            Close("user_request"),
        ),
    )
    conv = expect(conv, PlaybackProgress(PlaybackReport("r1", 100.0, finished=True)), conv)


def test_stop_requested_while_the_goodbye_is_still_playing_silences_it() -> None:
    conv = _goodbye_still_playing()
    # The application hung up: not graceful, the outputs are silenced.
    conv = expect(
        conv,
        StopRequested(),
        evolve(conv, phase=Phase.CLOSED, audible_id=None, pending_tools=frozenset()),
        (
            ClearPlayback("r1"),
            CancelTool("t1"),
            *CLOSE_TIMERS,
            Emit(BidiConnectionCloseEvent("client_disconnect", "c1")),
            Close("client_disconnect"),
        ),
    )


def test_stop_conversation_while_the_goodbye_is_generating_completes_it_without_silencing() -> None:
    conv = tool_use(with_audio(responding(connected()), "r1", 20), "t1", "stop_conversation")
    bye = result("t1", "stop_conversation", "Goodbye.")
    conv = expect(
        conv,
        ToolFinished(bye, ends_conversation=True),
        evolve(conv, phase=Phase.CLOSED, response_id=None, audible_id=None, pending_tools=frozenset()),
        (
            Emit(bye),
            AppendHistory(ToolResultMessage("t1", "stop_conversation", "success", "Goodbye.")),
            Emit(BidiResponseCompleteEvent("r1", "interrupted")),
            *CLOSE_TIMERS,
            Emit(BidiConnectionCloseEvent("user_request", "c1")),
            Close("user_request"),
        ),
    )
