"""Conversations step by step, asserting the whole state and the exact effects.

Like h11's ``tests/test_state.py``: after every event the complete
:class:`Conversation` value is compared with the expected one (built with
``attrs.evolve`` from the previous expectation), and the effects tuple is
compared in full, order included.
"""

from __future__ import annotations

import math

import attrs
import pytest

from bidi_core.conversation import (
    CONNECTION_AGE_TIMER,
    ROTATION_TIMER,
    CancelTimer,
    CancelTool,
    ClearPlayback,
    Close,
    ConfirmDelivery,
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
    ResumptionRejected,
    RunTool,
    SendToModel,
    StartTimer,
    StopRequested,
    TimerFired,
    ToolCall,
    ToolCancelled,
    ToolFinished,
    UserInput,
    step,
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
    BidiResponseStartEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
)
from ports.io import PlaybackReport
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage
from ports.model import CancelResponse, ModelCapabilities, TruncateResponse
from tests.conversation_samples import audio_out

evolve = attrs.evolve
CAPS = ModelCapabilities()
TIMERS_OFF = (CancelTimer(ROTATION_TIMER), CancelTimer(CONNECTION_AGE_TIMER))


def expect(conv: Conversation, event: object, state: Conversation, effects: tuple[Effect, ...] = ()) -> Conversation:
    """Step and compare everything; return the new state for the next step."""
    new, got = step(conv, event)
    assert got == effects
    assert new == state
    return new


def text(s: str) -> UserInput:
    return UserInput(BidiTextInputEvent(s))


def result(tool_use_id: str, name: str, content: object = "ok") -> BidiToolResultEvent:
    return BidiToolResultEvent(tool_use_id=tool_use_id, name=name, status="success", content=content)


def connected(caps: ModelCapabilities = CAPS, conv: Conversation | None = None) -> Conversation:
    """A fresh conversation (or ``conv``) after ``Connected("c1")``, checked in full."""
    conv = Conversation() if conv is None else conv
    return expect(
        conv,
        Connected("c1", "m", caps),
        evolve(conv, phase=Phase.LISTENING, capabilities=caps, connection_id="c1"),
        (Emit(BidiConnectionStartEvent("c1", "m")),),
    )


def responding(conv: Conversation, rid: str = "r1") -> Conversation:
    return expect(
        conv,
        BidiResponseStartEvent(rid),
        evolve(
            conv,
            phase=Phase.RESPONDING,
            response_id=rid,
            audible_id=rid,
            audible_elsewhere=False,
            received_ms=0.0,
            played_ms=0.0,
        ),
        (Emit(BidiResponseStartEvent(rid)),),
    )


def with_audio(conv: Conversation, rid: str, ms: int) -> Conversation:
    chunk = audio_out(rid, ms)
    return expect(conv, chunk, evolve(conv, received_ms=conv.received_ms + ms), (Emit(chunk),))


def cut_off(rid: str, stop_reason: str, reason: str, details: str) -> tuple[Effect, ...]:
    """The effects of leaving a connection while ``rid`` is in flight."""
    return (
        ClearPlayback(rid),
        Emit(BidiResponseCompleteEvent(rid, stop_reason)),  # type: ignore[arg-type]
        *TIMERS_OFF,
        Emit(BidiConnectionRestartEvent(reason, details)),
        Reconnect(reason),
    )


# --------------------------------------------------------------------------- a plain turn


def test_connect_text_turn_audio_response_complete() -> None:
    conv = connected()
    assert conv == Conversation(phase=Phase.LISTENING, connection_id="c1")

    conv = expect(conv, text("hi"), conv, (SendToModel(BidiTextInputEvent("hi")),))
    conv = responding(conv)
    assert conv == Conversation(
        phase=Phase.RESPONDING, connection_id="c1", response_id="r1", audible_id="r1", received_ms=0.0
    )
    conv = with_audio(conv, "r1", 20)

    # Audio without a response id belongs to the current response.
    bare = audio_out(None, 20)
    conv = expect(conv, bare, evolve(conv, received_ms=40.0), (Emit(evolve(bare, response_id="r1")),))

    partial = BidiTranscriptStreamEvent("Hel", "Hel", "assistant", False, "r1")
    conv = expect(conv, partial, conv, (Emit(partial),))
    final = BidiTranscriptStreamEvent("lo.", "Hello.", "assistant", True, "r1")
    conv = expect(conv, final, conv, (Emit(final), Record(TextMessage("assistant", "Hello."))))

    done = BidiResponseCompleteEvent("r1", "complete")
    # Nobody reports playback: nothing is assumed still audible.
    conv = expect(conv, done, evolve(conv, phase=Phase.LISTENING, response_id=None, audible_id=None), (Emit(done),))
    assert conv == Conversation(phase=Phase.LISTENING, connection_id="c1", received_ms=40.0)

    # A late or duplicate completion, and late audio, change nothing.
    conv = expect(conv, done, conv)
    conv = expect(conv, audio_out("r1"), conv)


def test_input_while_connecting_is_flushed_in_order_on_connect() -> None:
    conv = Conversation(max_pending_audio_chunks=2)
    a1, a2, a3 = (BidiAudioInputEvent(bytes([n, 0]) * 8) for n in (1, 2, 3))
    conv = expect(conv, text("one"), evolve(conv, pending_input=(BidiTextInputEvent("one"),)))
    conv = expect(conv, UserInput(a1), evolve(conv, pending_input=(*conv.pending_input, a1)))
    conv = expect(conv, UserInput(a2), evolve(conv, pending_input=(*conv.pending_input, a2)))
    conv = expect(conv, text("two"), evolve(conv, pending_input=(*conv.pending_input, BidiTextInputEvent("two"))))
    # The third audio chunk is over the bound: the oldest audio goes, text stays.
    conv = expect(
        conv,
        UserInput(a3),
        evolve(
            conv,
            pending_input=(BidiTextInputEvent("one"), a2, BidiTextInputEvent("two"), a3),
            dropped_audio_chunks=1,
        ),
    )
    conv = expect(
        conv,
        Connected("c1", "m"),
        evolve(conv, phase=Phase.LISTENING, connection_id="c1", pending_input=()),
        (
            Emit(BidiConnectionStartEvent("c1", "m")),
            SendToModel(BidiTextInputEvent("one")),
            SendToModel(a2),
            SendToModel(BidiTextInputEvent("two")),
            SendToModel(a3),
        ),
    )
    assert conv.dropped_audio_chunks == 1


# --------------------------------------------------------------------------- barge-in


@pytest.mark.parametrize("cancels_on_speech", [True, False], ids=["provider-cancels", "core-cancels"])
@pytest.mark.parametrize("can_truncate", [True, False], ids=["truncates", "no-truncate"])
@pytest.mark.parametrize("played", [None, 60.0, 150.0], ids=["untracked", "played-60", "played-past-received"])
def test_barge_in_while_responding(cancels_on_speech: bool, can_truncate: bool, played: float | None) -> None:
    caps = ModelCapabilities(can_truncate=can_truncate, cancels_on_speech=cancels_on_speech)
    conv = responding(connected(caps))
    conv = with_audio(conv, "r1", 50)
    conv = with_audio(conv, "r1", 50)
    if played is not None:
        conv = expect(
            conv,
            PlaybackProgress(PlaybackReport("r1", played)),
            evolve(conv, tracks_playback=True, played_ms=played),
        )

    effects: list[Effect] = [ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1"))]
    if not cancels_on_speech:
        effects.append(SendToModel(CancelResponse("r1")))
    if can_truncate and played is not None:
        # What the user heard: never more than what was received.
        effects.append(SendToModel(TruncateResponse("r1", int(min(played, 100.0)))))
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(
            conv,
            phase=Phase.INTERRUPTED,
            audible_id=None,
            interrupted_ids=("r1",),
            played_ms=0.0,
            received_ms=0.0,
        ),
        tuple(effects),
    )
    assert conv.response_id == "r1"

    # Late audio of the interrupted response is dropped, with or without its id.
    conv = expect(conv, audio_out("r1"), conv)
    conv = expect(conv, audio_out(None), conv)
    # More speech while interrupted changes nothing.
    conv = expect(conv, BidiSpeechStartedEvent(), conv)
    # Its transcript still reaches the user.
    late = BidiTranscriptStreamEvent("so", "so", "assistant", False, "r1")
    conv = expect(conv, late, conv, (Emit(late),))

    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "interrupted")),),
    )
    assert conv == Conversation(
        phase=Phase.LISTENING,
        capabilities=caps,
        connection_id="c1",
        tracks_playback=played is not None,
        interrupted_ids=("r1",),
    )
    conv = expect(conv, audio_out("r1"), conv)


def test_barge_in_cancels_interruptible_tools_which_then_answer_cancelled() -> None:
    conv = connected(conv=Conversation(interruptible_tools=frozenset({"search"})))
    conv = responding(conv)
    search, note = BidiToolUseEvent("t1", "search", {"q": "x"}), BidiToolUseEvent("t2", "note")
    for call in (search, note):
        conv = expect(
            conv,
            call,
            evolve(conv, pending_tools=conv.pending_tools | {ToolCall(call.tool_use_id, call.name)}),
            (Emit(call), Record(ToolCallMessage(call.tool_use_id, call.name, dict(call.input))), RunTool(call)),
        )
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(conv, phase=Phase.INTERRUPTED, audible_id=None, interrupted_ids=("r1",)),
        (ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1")), CancelTool("t1")),
    )
    cancelled = BidiToolResultEvent("t1", "search", "cancelled", "The tool call was cancelled.")
    conv = expect(
        conv,
        ToolCancelled("t1"),
        evolve(conv, pending_tools=frozenset({ToolCall("t2", "note")})),
        (Emit(cancelled), SendToModel(cancelled)),
    )


def test_new_response_after_interruption_closes_the_interrupted_one() -> None:
    conv = responding(connected())
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(conv, phase=Phase.INTERRUPTED, audible_id=None, interrupted_ids=("r1",)),
        (ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1"))),
    )
    conv = expect(
        conv,
        BidiResponseStartEvent("r2"),
        evolve(conv, phase=Phase.RESPONDING, response_id="r2", audible_id="r2"),
        (Emit(BidiResponseCompleteEvent("r1", "interrupted")), Emit(BidiResponseStartEvent("r2"))),
    )
    conv = expect(conv, audio_out("r1"), conv)  # still fenced
    conv = expect(conv, BidiResponseCompleteEvent("r1", "interrupted"), conv)  # already closed locally
    conv = with_audio(conv, "r2", 20)


def test_speech_while_listening_with_nothing_playing_is_a_no_op() -> None:
    conv = connected(ModelCapabilities(can_truncate=True, cancels_on_speech=False))
    conv = expect(conv, BidiSpeechStartedEvent(), conv)
    # Also after a response whose audio nobody reports playing.
    conv = with_audio(responding(conv), "r1", 40)
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )
    conv = expect(conv, BidiSpeechStartedEvent(), conv)


def test_speech_while_the_last_response_is_still_playing_interrupts_without_cancel() -> None:
    caps = ModelCapabilities(can_truncate=True, cancels_on_speech=False)
    conv = with_audio(responding(connected(caps)), "r1", 100)
    conv = expect(
        conv, PlaybackProgress(PlaybackReport("r1", 40.0)), evolve(conv, tracks_playback=True, played_ms=40.0)
    )
    # Generation is over but the speaker is still playing r1.
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )
    assert conv.audible_id == "r1"
    conv = expect(conv, PlaybackProgress(PlaybackReport("r1", 60.0)), evolve(conv, played_ms=60.0))
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(conv, audible_id=None, interrupted_ids=("r1",), played_ms=0.0, received_ms=0.0),
        (
            ClearPlayback("r1"),
            Emit(BidiInterruptionEvent("user_speech", "r1")),
            # No CancelResponse: nothing is being generated.
            SendToModel(TruncateResponse("r1", 60)),
        ),
    )
    assert conv.phase is Phase.LISTENING
    conv = expect(conv, BidiSpeechStartedEvent(), conv)


def test_playback_finished_after_completion_ends_audibility() -> None:
    conv = with_audio(responding(connected(ModelCapabilities(can_truncate=True))), "r1", 100)
    conv = expect(
        conv, PlaybackProgress(PlaybackReport("r1", 20.0)), evolve(conv, tracks_playback=True, played_ms=20.0)
    )
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )
    # A report of another response is ignored; the finished report of r1 ends it.
    conv = expect(conv, PlaybackProgress(PlaybackReport("r0", 500.0, finished=True)), conv)
    conv = expect(
        conv,
        PlaybackProgress(PlaybackReport("r1", 100.0, finished=True)),
        evolve(conv, played_ms=100.0, audible_id=None),
    )
    conv = expect(conv, BidiSpeechStartedEvent(), conv)


def test_response_played_to_the_end_before_it_completes_is_not_audible_after() -> None:
    conv = with_audio(responding(connected(ModelCapabilities(can_truncate=True))), "r1", 40)
    # The speaker drained r1 while the model was still generating: r1 stays audible...
    conv = expect(
        conv,
        PlaybackProgress(PlaybackReport("r1", 40.0, finished=True)),
        evolve(conv, tracks_playback=True, played_ms=40.0),
    )
    assert conv.audible_id == "r1"
    # ... but once it completes with nothing more received, nothing of it is left to hear.
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )
    conv = expect(conv, BidiSpeechStartedEvent(), conv)


def test_speech_during_a_tool_call_of_a_response_without_audio_interrupts_nothing() -> None:
    caps = ModelCapabilities(can_truncate=True)
    conv = connected(caps, Conversation(interruptible_tools=frozenset({"search"})))
    conv = expect(conv, PlaybackProgress(PlaybackReport("r0", 0.0)), evolve(conv, tracks_playback=True))
    conv = responding(conv)
    call = BidiToolUseEvent("t1", "search")
    conv = expect(
        conv,
        call,
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "search")})),
        (Emit(call), Record(ToolCallMessage("t1", "search", {})), RunTool(call)),
    )
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "tool_use"),
        evolve(conv, phase=Phase.TOOL_CALLING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "tool_use")),),
    )
    # r1 had no audio: no interruption, no truncation, the tool keeps running.
    conv = expect(conv, BidiSpeechStartedEvent(), conv)


# --------------------------------------------------------------------------- tools


def test_parallel_tool_calls_in_one_response_then_results() -> None:
    conv = responding(connected())
    weather = BidiToolUseEvent("t1", "weather", {"city": "Paris"})
    clock = BidiToolUseEvent("t2", "time", {})
    conv = expect(
        conv,
        weather,
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "weather")})),
        (Emit(weather), Record(ToolCallMessage("t1", "weather", {"city": "Paris"})), RunTool(weather)),
    )
    conv = expect(
        conv,
        clock,
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "weather"), ToolCall("t2", "time")})),
        (Emit(clock), Record(ToolCallMessage("t2", "time", {})), RunTool(clock)),
    )
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
    conv = expect(
        conv,
        ToolFinished(r2),
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "weather")})),
        (Emit(r2), SendToModel(r2)),
    )
    r1 = result("t1", "weather", {"sky": "sunny"})
    conv = expect(
        conv,
        ToolFinished(r1),
        evolve(conv, phase=Phase.LISTENING, pending_tools=frozenset()),
        (Emit(r1), SendToModel(r1)),
    )
    assert conv == Conversation(phase=Phase.LISTENING, connection_id="c1")
    # A second result for a settled call is dropped: the model got exactly one.
    conv = expect(conv, ToolFinished(r1), conv)
    conv = expect(conv, ToolCancelled("t1"), conv)
    # The model answers with the results.
    conv = responding(conv, "r2")


def test_tool_call_while_listening_then_a_response_while_it_runs() -> None:
    conv = connected()
    call = BidiToolUseEvent("t1", "lookup")
    conv = expect(
        conv,
        call,
        evolve(conv, phase=Phase.TOOL_CALLING, pending_tools=frozenset({ToolCall("t1", "lookup")})),
        (Emit(call), Record(ToolCallMessage("t1", "lookup", {})), RunTool(call)),
    )
    conv = responding(conv)
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.TOOL_CALLING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )


def test_stop_conversation_tool_closes_with_user_request_and_sends_no_result() -> None:
    conv = connected()
    stop_call, other = BidiToolUseEvent("t1", "stop_conversation"), BidiToolUseEvent("t2", "slow")
    conv = expect(
        conv,
        stop_call,
        evolve(conv, phase=Phase.TOOL_CALLING, pending_tools=frozenset({ToolCall("t1", "stop_conversation")})),
        (Emit(stop_call), Record(ToolCallMessage("t1", "stop_conversation", {})), RunTool(stop_call)),
    )
    conv = expect(
        conv,
        other,
        evolve(conv, pending_tools=conv.pending_tools | {ToolCall("t2", "slow")}),
        (Emit(other), Record(ToolCallMessage("t2", "slow", {})), RunTool(other)),
    )
    bye = result("t1", "stop_conversation", "Goodbye.")
    conv = expect(
        conv,
        ToolFinished(bye, ends_conversation=True),
        evolve(conv, phase=Phase.CLOSED, pending_tools=frozenset()),
        (
            Emit(bye),
            Record(ToolResultMessage("t1", "stop_conversation", "success", "Goodbye.")),
            CancelTool("t2"),
            *TIMERS_OFF,
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


def test_provider_tool_cancellation_withdraws_the_call() -> None:
    conv = connected()
    a, b = BidiToolUseEvent("t1", "lookup"), BidiToolUseEvent("t2", "lookup")
    conv = expect(
        conv,
        a,
        evolve(conv, phase=Phase.TOOL_CALLING, pending_tools=frozenset({ToolCall("t1", "lookup")})),
        (Emit(a), Record(ToolCallMessage("t1", "lookup", {})), RunTool(a)),
    )
    conv = expect(
        conv,
        b,
        evolve(conv, pending_tools=conv.pending_tools | {ToolCall("t2", "lookup")}),
        (Emit(b), Record(ToolCallMessage("t2", "lookup", {})), RunTool(b)),
    )
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
        evolve(conv, pending_tools=frozenset({ToolCall("t2", "lookup")}), withdrawn_tools=frozenset({"t2"})),
        (Emit(cancelled), Record(ToolResultMessage("t1", "lookup", "cancelled", withdrawn))),
    )
    # t2 finished before the cancellation reached it: still no result for the model.
    done = result("t2", "lookup")
    conv = expect(
        conv,
        ToolFinished(done),
        evolve(conv, phase=Phase.LISTENING, pending_tools=frozenset(), withdrawn_tools=frozenset()),
        (Emit(done), Record(ToolResultMessage("t2", "lookup", "cancelled", withdrawn))),
    )
    assert conv == Conversation(phase=Phase.LISTENING, connection_id="c1")


# --------------------------------------------------------------------------- connection loss


def _mid_response_with_a_tool() -> Conversation:
    conv = connected(conv=Conversation(max_pending_audio_chunks=1))
    conv = with_audio(responding(conv), "r1", 20)
    call = BidiToolUseEvent("t1", "lookup")
    return expect(
        conv,
        call,
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "lookup")})),
        (Emit(call), Record(ToolCallMessage("t1", "lookup", {})), RunTool(call)),
    )


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
        rotate_pending=False,
    )


def test_connection_lost_mid_response_restarts_buffers_and_flushes_in_order() -> None:
    conv = _mid_response_with_a_tool()
    conv = expect(
        conv,
        ConnectionLost("socket closed"),
        _restarted_mid_response(conv),
        cut_off("r1", "error", "connection_lost", "socket closed"),
    )
    # No model traffic without a connection.
    with pytest.raises(IllegalTransition):
        step(conv, audio_out("r1"))

    a1, a2 = BidiAudioInputEvent(b"\x01\x00" * 8), BidiAudioInputEvent(b"\x02\x00" * 8)
    conv = expect(conv, text("first"), evolve(conv, pending_input=(BidiTextInputEvent("first"),)))
    conv = expect(conv, UserInput(a1), evolve(conv, pending_input=(*conv.pending_input, a1)))
    # The tool ends meanwhile: its result waits for the new connection, in step order.
    r = result("t1", "lookup")
    conv = expect(
        conv,
        ToolFinished(r),
        evolve(conv, pending_tools=frozenset(), pending_input=(*conv.pending_input, r)),
        (Emit(r),),
    )
    assert conv.phase is Phase.RESTARTING
    # Over the audio bound (1): a1 is dropped, a2 kept.
    conv = expect(
        conv,
        UserInput(a2),
        evolve(conv, pending_input=(BidiTextInputEvent("first"), r, a2), dropped_audio_chunks=1),
    )
    conv = expect(conv, text("second"), evolve(conv, pending_input=(*conv.pending_input, BidiTextInputEvent("second"))))
    # The new connection starts with an empty fence: response ids belong to a connection.
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(conv, phase=Phase.LISTENING, connection_id="c2", interrupted_ids=(), pending_input=()),
        (
            Emit(BidiConnectionStartEvent("c2", "m")),
            SendToModel(BidiTextInputEvent("first")),
            SendToModel(r),
            SendToModel(a2),
            SendToModel(BidiTextInputEvent("second")),
        ),
    )
    assert conv == Conversation(
        phase=Phase.LISTENING,
        connection_id="c2",
        dropped_audio_chunks=1,
        max_pending_audio_chunks=1,
    )


def _interrupted() -> Conversation:
    conv = with_audio(responding(connected()), "r1", 20)
    return expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(conv, phase=Phase.INTERRUPTED, audible_id=None, interrupted_ids=("r1",), received_ms=0.0),
        (ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1"))),
    )


def test_restart_from_interrupted_completes_the_response_as_interrupted() -> None:
    conv = _interrupted()
    expect(
        conv,
        ConnectionLost("reset"),
        _restarted_mid_response(conv),
        cut_off("r1", "interrupted", "connection_lost", "reset"),
    )


@pytest.mark.parametrize("interrupted", [False, True], ids=["responding", "interrupted"])
@pytest.mark.parametrize("trigger", ["connection-lost", "rotation-timer"])
def test_a_response_cut_off_by_a_restart_completes_before_the_restart(interrupted: bool, trigger: str) -> None:
    conv = _interrupted() if interrupted else with_audio(responding(connected()), "r1", 20)
    if trigger == "connection-lost":
        event: object = ConnectionLost("reset")
        reason, details = "connection_lost", "reset"
    else:
        conv = expect(
            conv,
            BidiConnectionExpiringEvent(5.0),
            evolve(conv, rotate_pending=True),
            (StartTimer(ROTATION_TIMER, 4.0),),
        )
        event = TimerFired(ROTATION_TIMER)
        reason, details = "expiring", "connection limit reached mid-turn"
    # A response cut short by the user is "interrupted"; one cut off by the connection is an "error".
    stop_reason = "interrupted" if interrupted else "error"
    conv = expect(conv, event, _restarted_mid_response(conv), cut_off("r1", stop_reason, reason, details))
    # Timers of the old connection firing now are ignored.
    conv = expect(conv, TimerFired(ROTATION_TIMER), conv)
    conv = expect(conv, TimerFired(CONNECTION_AGE_TIMER), conv)
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(conv, phase=Phase.LISTENING, connection_id="c2", interrupted_ids=()),
        (Emit(BidiConnectionStartEvent("c2", "m")),),
    )


@pytest.mark.parametrize(
    ("event", "reason", "details"),
    [
        (ConnectionLost("reset"), "connection_lost", "reset"),
        (BidiConnectionExpiringEvent(10.0), "expiring", "provider closes in 10s"),
    ],
    ids=["connection-lost", "expiring"],
)
def test_restart_from_listening_keeps_the_last_answer_playing(event: object, reason: str, details: str) -> None:
    caps = ModelCapabilities(can_truncate=True, cancels_on_speech=False)
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
    # Leaving the connection does not cut off the answer the user is hearing:
    # r1 stays audible (and measured), now from an earlier connection. Not fenced.
    conv = expect(
        conv,
        event,
        evolve(conv, phase=Phase.RESTARTING, connection_id=None, audible_elsewhere=True),
        (*TIMERS_OFF, Emit(BidiConnectionRestartEvent(reason, details)), Reconnect(reason)),
    )
    assert (conv.audible_id, conv.played_ms, conv.received_ms) == ("r1", 40.0, 100.0)
    assert conv.interrupted_ids == ()
    # r1 plays on while the next connection opens: its reports still count.
    conv = expect(conv, PlaybackProgress(PlaybackReport("r1", 60.0)), evolve(conv, played_ms=60.0))
    conv = expect(
        conv,
        Connected("c2", "m", caps),
        evolve(conv, phase=Phase.LISTENING, connection_id="c2"),
        (Emit(BidiConnectionStartEvent("c2", "m")),),
    )
    # r1 played to the end: nothing is audible any more, speech interrupts nothing, truncates nothing.
    conv = expect(
        conv,
        PlaybackProgress(PlaybackReport("r1", 100.0, finished=True)),
        evolve(conv, played_ms=100.0, audible_id=None),
    )
    conv = expect(conv, BidiSpeechStartedEvent(), conv)


@pytest.mark.parametrize("cancels_on_speech", [True, False], ids=["provider-cancels", "core-cancels"])
@pytest.mark.parametrize("trigger", ["connection-lost", "expiring"])
def test_barge_in_on_an_answer_from_the_previous_connection_silences_it_without_truncating(
    trigger: str, cancels_on_speech: bool
) -> None:
    caps = ModelCapabilities(can_truncate=True, cancels_on_speech=cancels_on_speech)
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
    event: object = ConnectionLost("reset") if trigger == "connection-lost" else BidiConnectionExpiringEvent(10.0)
    conv, _ = step(conv, event)
    assert (conv.phase, conv.audible_id, conv.audible_elsewhere) == (Phase.RESTARTING, "r1", True)
    conv = expect(
        conv,
        Connected("c2", "m", caps),
        evolve(conv, phase=Phase.LISTENING, connection_id="c2"),
        (Emit(BidiConnectionStartEvent("c2", "m")),),
    )
    conv = expect(conv, PlaybackProgress(PlaybackReport("r1", 60.0)), evolve(conv, played_ms=60.0))
    # The user talks over r1: it is silenced and the interruption reported, but
    # c2 never saw r1, so it is neither cancelled nor truncated (even though
    # the provider truncates and playback is tracked), nor fenced (c2 may
    # number a response of its own r1).
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(
            conv,
            audible_id=None,
            audible_elsewhere=False,
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
    conv, _ = step(conv, ConnectionLost("reset"))
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
    # Nothing audible: nothing to clear, and nothing "elsewhere" to remember.
    conv = expect(
        conv,
        ConnectionLost("reset"),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*TIMERS_OFF, Emit(BidiConnectionRestartEvent("connection_lost", "reset")), Reconnect("connection_lost")),
    )
    assert (conv.audible_id, conv.audible_elsewhere, conv.received_ms) == (None, False, 20.0)


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
        ConnectionLost("reset"),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*TIMERS_OFF, Emit(BidiConnectionRestartEvent("connection_lost", "reset")), Reconnect("connection_lost")),
    )
    assert conv.interrupted_ids == ("r1",)
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(conv, phase=Phase.LISTENING, connection_id="c2", interrupted_ids=()),
        (Emit(BidiConnectionStartEvent("c2", "m")),),
    )
    # The new connection numbers its responses afresh: its r1 is another response, and its audio is heard.
    conv = responding(conv, "r1")
    conv = with_audio(conv, "r1", 20)
    conv = expect(conv, audio_out(None, 20), evolve(conv, received_ms=40.0), (Emit(audio_out("r1", 20)),))


def test_interrupted_ids_keep_the_most_recent_sixteen_in_order() -> None:
    conv = connected()
    for n in range(1, 19):
        rid = f"r{n}"
        conv, _ = step(conv, BidiResponseStartEvent(rid))
        conv, _ = step(conv, BidiSpeechStartedEvent())
        assert conv.interrupted_ids[-1] == rid
        conv, _ = step(conv, BidiResponseCompleteEvent(rid, "interrupted"))
        assert conv.interrupted_ids == tuple(f"r{i}" for i in range(max(1, n - 15), n + 1))
    assert len(conv.interrupted_ids) == 16
    assert conv.phase is Phase.LISTENING
    # The oldest ones fell out of the fence: the provider may reuse their ids.
    conv = responding(conv, "r1")
    conv = with_audio(conv, "r1", 20)


def test_reconnect_with_a_tool_still_running_resumes_tool_calling() -> None:
    conv = connected()
    call = BidiToolUseEvent("t1", "lookup")
    conv = expect(
        conv,
        call,
        evolve(conv, phase=Phase.TOOL_CALLING, pending_tools=frozenset({ToolCall("t1", "lookup")})),
        (Emit(call), Record(ToolCallMessage("t1", "lookup", {})), RunTool(call)),
    )
    conv = expect(
        conv,
        BidiResumptionUpdateEvent("h1"),
        evolve(conv, resume_handle="h1"),
        (ConfirmDelivery(None),),
    )
    conv = expect(
        conv,
        ConnectionLost("reset"),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*TIMERS_OFF, Emit(BidiConnectionRestartEvent("connection_lost", "reset")), Reconnect("connection_lost")),
    )
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(conv, phase=Phase.TOOL_CALLING, connection_id="c2"),
        (Emit(BidiConnectionStartEvent("c2", "m")),),
    )
    assert conv.resume_handle == "h1"
    r = result("t1", "lookup")
    conv = expect(
        conv,
        ToolFinished(r),
        evolve(conv, phase=Phase.LISTENING, pending_tools=frozenset()),
        (Emit(r), SendToModel(r)),
    )


def test_non_retryable_loss_closes_with_the_error() -> None:
    conv = with_audio(responding(connected()), "r1", 20)
    error = RuntimeError("bad credentials")
    new, effects = step(conv, ConnectionLost("auth", retryable=False, error=error))
    assert effects == (
        ClearPlayback("r1"),
        Emit(BidiResponseCompleteEvent("r1", "interrupted")),
        *TIMERS_OFF,
        Emit(BidiConnectionCloseEvent("error", "c1")),
        Close("error"),
    )
    close = effects[-1]
    assert isinstance(close, Close)
    assert close.error is error
    assert new == evolve(conv, phase=Phase.CLOSED, response_id=None, audible_id=None)
    # Stragglers of the shutdown are accepted and ignored, a connection that opened meanwhile too.
    for late in (ConnectionLost("again"), TimerFired(ROTATION_TIMER), StopRequested(), Connected("c2", "m")):
        new = expect(new, late, new)


def test_failure_to_connect_at_all_closes_with_the_error() -> None:
    conv = expect(Conversation(), text("hello?"), Conversation(pending_input=(BidiTextInputEvent("hello?"),)))
    error = OSError("unreachable")
    new, effects = step(conv, ConnectionLost("unreachable", retryable=False, error=error))
    assert effects == (*TIMERS_OFF, Emit(BidiConnectionCloseEvent("error", None)), Close("error"))
    close = effects[-1]
    assert isinstance(close, Close)
    assert close.error is error
    # The buffered input had no connection to go to.
    assert new == Conversation(phase=Phase.CLOSED)


def test_stop_while_connecting_then_the_connection_opens_is_ignored() -> None:
    conv = expect(
        Conversation(),
        StopRequested(),
        Conversation(phase=Phase.CLOSED),
        (*TIMERS_OFF, Emit(BidiConnectionCloseEvent("client_disconnect", None)), Close("client_disconnect")),
    )
    # The shell's connection attempt was already under way: no start event, no timer, no flush.
    conv = expect(conv, Connected("c1", "m", ModelCapabilities(max_connection_s=600.0)), conv)
    assert conv == Conversation(phase=Phase.CLOSED)


def test_stop_requested_while_responding_clears_playback_completes_the_response_and_cancels_tools() -> None:
    conv = responding(connected())
    call = BidiToolUseEvent("t1", "lookup")
    conv = expect(
        conv,
        call,
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "lookup")})),
        (Emit(call), Record(ToolCallMessage("t1", "lookup", {})), RunTool(call)),
    )
    conv = expect(
        conv,
        StopRequested(),
        evolve(conv, phase=Phase.CLOSED, response_id=None, audible_id=None, pending_tools=frozenset()),
        (
            ClearPlayback("r1"),
            Emit(BidiResponseCompleteEvent("r1", "interrupted")),
            CancelTool("t1"),
            *TIMERS_OFF,
            Emit(BidiConnectionCloseEvent("client_disconnect", "c1")),
            Close("client_disconnect"),
        ),
    )


@pytest.mark.parametrize("interrupted", [False, True], ids=["responding", "interrupted"])
@pytest.mark.parametrize(
    ("close", "reason"),
    [(StopRequested(), "client_disconnect"), (ConnectionLost("auth", retryable=False), "error")],
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
        (
            *clear,
            Emit(BidiResponseCompleteEvent("r1", "interrupted")),
            *TIMERS_OFF,
            Emit(BidiConnectionCloseEvent(reason, "c1")),  # type: ignore[arg-type]
            Close(reason),
        ),
    )
    # Nothing completes it a second time.
    conv = expect(conv, StopRequested(), conv)
    with pytest.raises(IllegalTransition):
        step(conv, BidiResponseCompleteEvent("r1", "complete"))


def test_closing_with_the_last_response_still_playing_completes_nothing() -> None:
    conv = with_audio(responding(connected(ModelCapabilities(can_truncate=True))), "r1", 100)
    conv = expect(
        conv, PlaybackProgress(PlaybackReport("r1", 40.0)), evolve(conv, tracks_playback=True, played_ms=40.0)
    )
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(conv, phase=Phase.LISTENING, response_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "complete")),),
    )
    # r1 already completed: only its audio is discarded.
    conv = expect(
        conv,
        StopRequested(),
        evolve(conv, phase=Phase.CLOSED, audible_id=None),
        (
            ClearPlayback("r1"),
            *TIMERS_OFF,
            Emit(BidiConnectionCloseEvent("client_disconnect", "c1")),
            Close("client_disconnect"),
        ),
    )


def _goodbye_still_playing() -> Conversation:
    """The model said goodbye (r1, 100 ms, 40 ms of it played) and called stop_conversation."""
    conv = with_audio(responding(connected(ModelCapabilities(can_truncate=True))), "r1", 100)
    stop_call = BidiToolUseEvent("t1", "stop_conversation")
    conv = expect(
        conv,
        stop_call,
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "stop_conversation")})),
        (Emit(stop_call), Record(ToolCallMessage("t1", "stop_conversation", {})), RunTool(stop_call)),
    )
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
            Record(ToolResultMessage("t1", "stop_conversation", "success", "Goodbye.")),
            *TIMERS_OFF,
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
            *TIMERS_OFF,
            Emit(BidiConnectionCloseEvent("client_disconnect", "c1")),
            Close("client_disconnect"),
        ),
    )


def test_stop_conversation_while_the_goodbye_is_generating_completes_it_without_silencing() -> None:
    conv = with_audio(responding(connected()), "r1", 20)
    stop_call = BidiToolUseEvent("t1", "stop_conversation")
    conv = expect(
        conv,
        stop_call,
        evolve(conv, pending_tools=frozenset({ToolCall("t1", "stop_conversation")})),
        (Emit(stop_call), Record(ToolCallMessage("t1", "stop_conversation", {})), RunTool(stop_call)),
    )
    bye = result("t1", "stop_conversation", "Goodbye.")
    conv = expect(
        conv,
        ToolFinished(bye, ends_conversation=True),
        evolve(conv, phase=Phase.CLOSED, response_id=None, audible_id=None, pending_tools=frozenset()),
        (
            Emit(bye),
            Record(ToolResultMessage("t1", "stop_conversation", "success", "Goodbye.")),
            Emit(BidiResponseCompleteEvent("r1", "interrupted")),
            *TIMERS_OFF,
            Emit(BidiConnectionCloseEvent("user_request", "c1")),
            Close("user_request"),
        ),
    )


# --------------------------------------------------------------------------- rotation


def test_expiring_while_responding_rotates_at_the_next_turn_boundary() -> None:
    conv = with_audio(responding(connected()), "r1", 20)
    conv = expect(
        conv,
        BidiConnectionExpiringEvent(10.0),
        evolve(conv, rotate_pending=True),
        (StartTimer(ROTATION_TIMER, 9.0),),
    )
    # The turn goes on undisturbed.
    conv = with_audio(conv, "r1", 20)
    conv = expect(conv, text("more"), conv, (SendToModel(BidiTextInputEvent("more")),))
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        # Nobody reports playback: nothing of r1 is audible after its completion,
        # so nothing is cleared nor remembered as audible elsewhere.
        evolve(
            conv,
            phase=Phase.RESTARTING,
            connection_id=None,
            response_id=None,
            audible_id=None,
            rotate_pending=False,
        ),
        (
            Emit(BidiResponseCompleteEvent("r1", "complete")),
            *TIMERS_OFF,
            Emit(BidiConnectionRestartEvent("expiring", "rotating at a turn boundary")),
            Reconnect("expiring"),
        ),
    )
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(conv, phase=Phase.LISTENING, connection_id="c2"),
        (Emit(BidiConnectionStartEvent("c2", "m")),),
    )


def test_rotation_at_a_turn_boundary_keeps_the_answer_playing() -> None:
    conv = with_audio(responding(connected(ModelCapabilities(can_truncate=True))), "r1", 100)
    conv = expect(
        conv, PlaybackProgress(PlaybackReport("r1", 40.0)), evolve(conv, tracks_playback=True, played_ms=40.0)
    )
    conv = expect(
        conv,
        BidiConnectionExpiringEvent(10.0),
        evolve(conv, rotate_pending=True),
        (StartTimer(ROTATION_TIMER, 9.0),),
    )
    # r1 completes with 60 ms of it still to play: the rotation lets it play on.
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "complete"),
        evolve(
            conv,
            phase=Phase.RESTARTING,
            connection_id=None,
            response_id=None,
            audible_elsewhere=True,
            rotate_pending=False,
        ),
        (
            Emit(BidiResponseCompleteEvent("r1", "complete")),
            *TIMERS_OFF,
            Emit(BidiConnectionRestartEvent("expiring", "rotating at a turn boundary")),
            Reconnect("expiring"),
        ),
    )
    assert (conv.audible_id, conv.played_ms, conv.received_ms) == ("r1", 40.0, 100.0)
    conv = expect(
        conv,
        Connected("c2", "m"),
        evolve(conv, phase=Phase.LISTENING, capabilities=CAPS, connection_id="c2"),
        (Emit(BidiConnectionStartEvent("c2", "m")),),
    )
    # c2's first response takes over: r1 is no longer the audible one, nor elsewhere.
    conv = expect(
        conv,
        BidiResponseStartEvent("r2"),
        evolve(
            conv,
            phase=Phase.RESPONDING,
            response_id="r2",
            audible_id="r2",
            audible_elsewhere=False,
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
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*TIMERS_OFF, Emit(BidiConnectionRestartEvent("expiring", "provider closes in 10s")), Reconnect("expiring")),
    )


def test_expiring_during_tool_calls_rotates_when_the_last_tool_ends() -> None:
    conv = connected()
    call = BidiToolUseEvent("t1", "lookup")
    conv = expect(
        conv,
        call,
        evolve(conv, phase=Phase.TOOL_CALLING, pending_tools=frozenset({ToolCall("t1", "lookup")})),
        (Emit(call), Record(ToolCallMessage("t1", "lookup", {})), RunTool(call)),
    )
    conv = expect(
        conv,
        BidiConnectionExpiringEvent(0.5),
        evolve(conv, rotate_pending=True),
        (StartTimer(ROTATION_TIMER, 0.0),),
    )
    r = result("t1", "lookup")
    conv = expect(
        conv,
        ToolFinished(r),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None, pending_tools=frozenset(), rotate_pending=False),
        (
            Emit(r),
            SendToModel(r),
            *TIMERS_OFF,
            Emit(BidiConnectionRestartEvent("expiring", "rotating at a turn boundary")),
            Reconnect("expiring"),
        ),
    )


def test_rotation_timer_cuts_a_turn_that_runs_past_the_deadline() -> None:
    conv = with_audio(responding(connected()), "r1", 20)
    conv = expect(
        conv, BidiConnectionExpiringEvent(5.0), evolve(conv, rotate_pending=True), (StartTimer(ROTATION_TIMER, 4.0),)
    )
    conv = expect(
        conv,
        TimerFired(ROTATION_TIMER),
        _restarted_mid_response(conv),
        cut_off("r1", "error", "expiring", "connection limit reached mid-turn"),
    )
    # A timer of the old connection firing now is ignored.
    conv = expect(conv, TimerFired(ROTATION_TIMER), conv)
    conv = expect(conv, TimerFired(CONNECTION_AGE_TIMER), conv)


def test_connection_age_timer_from_capabilities() -> None:
    caps = ModelCapabilities(max_connection_s=600.0)
    conv = expect(
        Conversation(),
        Connected("c1", "m", caps),
        Conversation(phase=Phase.LISTENING, capabilities=caps, connection_id="c1"),
        (Emit(BidiConnectionStartEvent("c1", "m")), StartTimer(CONNECTION_AGE_TIMER, 570.0)),
    )
    # An unknown timer is ignored.
    conv = expect(conv, TimerFired("other"), conv)
    # Mid-turn: the age limit acts like the provider's warning, rotation_margin_s ahead.
    turn = expect(
        responding(conv),
        TimerFired(CONNECTION_AGE_TIMER),
        evolve(responding(conv), rotate_pending=True),
        (StartTimer(ROTATION_TIMER, 29.0),),
    )
    assert turn.phase is Phase.RESPONDING
    # Between turns: rotate now; the new connection starts a new age timer.
    conv = expect(
        conv,
        TimerFired(CONNECTION_AGE_TIMER),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*TIMERS_OFF, Emit(BidiConnectionRestartEvent("expiring", "provider closes in 30s")), Reconnect("expiring")),
    )
    conv = expect(
        conv,
        Connected("c2", "m", caps),
        evolve(conv, phase=Phase.LISTENING, connection_id="c2"),
        (Emit(BidiConnectionStartEvent("c2", "m")), StartTimer(CONNECTION_AGE_TIMER, 570.0)),
    )


def test_connection_age_limit_shorter_than_the_margin_rotates_a_tenth_before_it() -> None:
    # A 30 s margin on a 20 s limit would rotate the moment each connection opens, forever.
    caps = ModelCapabilities(max_connection_s=20.0)
    conv = expect(
        Conversation(rotation_margin_s=30.0),
        Connected("c1", "m", caps),
        Conversation(phase=Phase.LISTENING, capabilities=caps, connection_id="c1"),
        (Emit(BidiConnectionStartEvent("c1", "m")), StartTimer(CONNECTION_AGE_TIMER, 18.0)),
    )
    # When it fires, 2 s (a tenth of the limit) are left, not the 30 s margin.
    turn = expect(
        responding(conv),
        TimerFired(CONNECTION_AGE_TIMER),
        evolve(responding(conv), rotate_pending=True),
        (StartTimer(ROTATION_TIMER, 1.0),),
    )
    assert turn.phase is Phase.RESPONDING
    expect(
        conv,
        TimerFired(CONNECTION_AGE_TIMER),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*TIMERS_OFF, Emit(BidiConnectionRestartEvent("expiring", "provider closes in 2s")), Reconnect("expiring")),
    )


def test_connection_age_limit_longer_than_ten_margins_keeps_the_margin() -> None:
    caps = ModelCapabilities(max_connection_s=300.0)
    expect(
        Conversation(rotation_margin_s=30.0),
        Connected("c1", "m", caps),
        Conversation(phase=Phase.LISTENING, capabilities=caps, connection_id="c1"),
        (Emit(BidiConnectionStartEvent("c1", "m")), StartTimer(CONNECTION_AGE_TIMER, 270.0)),
    )


def test_a_resumption_update_keeps_the_handle_and_confirms_delivery() -> None:
    """The provider's count of what its session holds reaches the shell's ledger unchanged."""
    conv = connected()
    conv = expect(
        conv,
        BidiResumptionUpdateEvent("h7", inputs_included=4),
        evolve(conv, resume_handle="h7"),
        (ConfirmDelivery(4),),
    )


def test_a_rejected_resumption_forgets_the_handle_and_says_so() -> None:
    """A stale handle: the next connection is a fresh session seeded with the
    history, and the application learns why its session was not resumed."""
    conv = connected()
    conv = expect(conv, BidiResumptionUpdateEvent("h1"), evolve(conv, resume_handle="h1"), (ConfirmDelivery(None),))
    conv = expect(
        conv,
        ConnectionLost("reset"),
        evolve(conv, phase=Phase.RESTARTING, connection_id=None),
        (*TIMERS_OFF, Emit(BidiConnectionRestartEvent("connection_lost", "reset")), Reconnect("connection_lost")),
    )
    conv = expect(
        conv,
        ResumptionRejected("[resumption_rejected] handle expired"),
        evolve(conv, resume_handle=None),
        (
            Emit(
                BidiConnectionRestartEvent(
                    "resumption_rejected",
                    "[resumption_rejected] handle expired; starting a fresh session seeded with the history",
                )
            ),
        ),
    )
    assert conv.phase is Phase.RESTARTING


def test_audio_nobody_observes_is_not_counted() -> None:
    """No output declared that it reports playback: received audio goes uncounted
    (nothing reads the count), and the rest of the turn is as usual."""
    conv = responding(connected(conv=Conversation(audio_unobserved=True)))
    chunk = audio_out("r1", 20)
    conv = expect(conv, chunk, conv, (Emit(chunk),))
    done = BidiResponseCompleteEvent("r1", "complete")
    conv = expect(conv, done, evolve(conv, phase=Phase.LISTENING, response_id=None, audible_id=None), (Emit(done),))
    assert conv.received_ms == 0.0


def test_an_undeclared_output_reporting_mid_response_never_has_its_audio_assumed_played() -> None:
    """An output reports playback without having declared it: what the response
    received went uncounted, so it stays audible until the output says it
    finished, and a barge-in truncates to what was played."""
    caps = ModelCapabilities(can_truncate=True, cancels_on_speech=True)
    conv = responding(connected(caps, conv=Conversation(audio_unobserved=True)))
    chunk = audio_out("r1", 100)
    conv = expect(conv, chunk, conv, (Emit(chunk),))
    conv = expect(
        conv,
        PlaybackProgress(PlaybackReport("r1", 30.0)),
        evolve(conv, audio_unobserved=False, tracks_playback=True, received_ms=math.inf, played_ms=30.0),
    )
    conv = with_audio(conv, "r1", 20)  # counted from now on
    done = BidiResponseCompleteEvent("r1", "complete")
    conv = expect(conv, done, evolve(conv, phase=Phase.LISTENING, response_id=None), (Emit(done),))
    assert conv.audible_id == "r1"  # 30 ms played of an unknown amount: still audible
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(conv, audible_id=None, interrupted_ids=("r1",), played_ms=0.0, received_ms=0.0),
        (
            ClearPlayback("r1"),
            Emit(BidiInterruptionEvent("user_speech", "r1")),
            SendToModel(TruncateResponse("r1", 30)),
        ),
    )


def test_an_undeclared_output_reporting_between_responses_starts_counting_exactly() -> None:
    conv = connected(conv=Conversation(audio_unobserved=True))
    conv = expect(
        conv,
        PlaybackProgress(PlaybackReport("r0", 5.0, finished=True)),
        evolve(conv, audio_unobserved=False, tracks_playback=True),
    )
    conv = with_audio(responding(conv), "r1", 40)
    assert conv.received_ms == 40.0
