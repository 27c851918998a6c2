"""Turns on one connection, step by step: a response and its audio, barge-in
(cancel, truncate, interruptible tools, the fence of interrupted ids), what is
still audible after a response completes and what playback reports change,
outputs that report playback without declaring it, and the error events the
core emits itself (invalid input, provider events while no connection is open).

Every step compares the whole :class:`Conversation` and the exact effects
(:func:`tests.conversation_support.expect`).
"""

from __future__ import annotations

import math

import attrs
import pytest

from bidi_core.conversation import Conversation, ConversationConfig, Phase, ToolCall, step
from bidi_core.effects import AppendHistory, CancelTool, ClearPlayback, Emit, SendToModel
from bidi_core.outbox import Entry, Outbox
from bidi_core.shell_events import InvalidInput, PlaybackProgress, ToolCancelled
from bidi_core.usage import Usage
from ports.events import (
    BidiConnectionExpiringEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)
from ports.io import PlaybackReport
from ports.messages import TextMessage, ToolResultMessage
from ports.model import CancelResponse, ModelCapabilities, TruncateResponse
from tests.conversation_support import (
    audio_out,
    connected,
    evolve,
    expect,
    heard,
    responding,
    say,
    started,
    tool_use,
    with_audio,
)

# --------------------------------------------------------------------------- a plain turn


def test_connect_text_turn_audio_response_complete() -> None:
    conv = connected()
    assert conv == Conversation(phase=Phase.LISTENING, connection_id="c1")

    conv = say(conv, "hi")
    conv = responding(conv)
    written_once = Outbox(next_seq=1, written=1)
    assert conv == Conversation(
        phase=Phase.RESPONDING,
        connection_id="c1",
        response_id="r1",
        audible_id="r1",
        received_ms=0.0,
        outbox=written_once,
        connection_proven=True,
    )
    conv = with_audio(conv, "r1", 20)

    # Audio without a response id belongs to the current response.
    bare = audio_out(None, 20)
    conv = expect(conv, bare, evolve(conv, received_ms=40.0), (Emit(evolve(bare, response_id="r1")),))

    partial = BidiTranscriptStreamEvent("Hel", "Hel", "assistant", False, "r1")
    conv = expect(conv, partial, conv, (Emit(partial),))
    final = BidiTranscriptStreamEvent("lo.", "Hello.", "assistant", True, "r1")
    conv = expect(conv, final, conv, (Emit(final), AppendHistory(TextMessage("assistant", "Hello."))))
    # An empty final transcript records nothing.
    empty = BidiTranscriptStreamEvent("", "", "user", True, None)
    conv = expect(conv, empty, conv, (Emit(empty),))

    done = BidiResponseCompleteEvent("r1", "complete")
    # Nobody reports playback: nothing is assumed still audible.
    conv = expect(conv, done, evolve(conv, phase=Phase.LISTENING, response_id=None, audible_id=None), (Emit(done),))
    assert conv == Conversation(
        phase=Phase.LISTENING, connection_id="c1", received_ms=40.0, outbox=written_once, connection_proven=True
    )

    # A late or duplicate completion, and late audio, change nothing.
    conv = expect(conv, done, conv)
    conv = expect(conv, audio_out("r1"), conv)


def test_usage_and_provider_errors_reach_the_user_and_prove_the_connection() -> None:
    conv = connected()
    usage = BidiUsageEvent(input_tokens=3, output_tokens=4, total_tokens=7)
    summed = attrs.evolve(heard(conv), usage=Usage(input_tokens=3, output_tokens=4, total_tokens=7, reports=1))
    conv = expect(conv, usage, summed, (Emit(usage),))
    assert conv.connection_proven
    conv = responding(conv)
    error = BidiErrorEvent("rate limited", code="rate_limit")
    # Not fatal: the turn goes on.
    conv = expect(conv, error, conv, (Emit(error),))
    assert conv.phase is Phase.RESPONDING


def test_invalid_input_is_reported_and_the_conversation_goes_on() -> None:
    conv = started()
    bad = BidiErrorEvent("not JSON: '{'", code="invalid_input")
    # Before the first connection, on one, and between connections alike.
    conv = expect(conv, InvalidInput("not JSON: '{'"), conv, (Emit(bad),))
    conv = connected(conv=conv)
    conv = expect(conv, InvalidInput("not JSON: '{'"), conv, (Emit(bad),))
    conv = responding(conv)
    conv = expect(conv, InvalidInput("not JSON: '{'"), conv, (Emit(bad),))
    assert conv.phase is Phase.RESPONDING


@pytest.mark.parametrize(
    "event",
    [
        BidiResponseStartEvent("r1"),
        audio_out("r1"),
        BidiTranscriptStreamEvent("hi", "hi", "assistant", True, "r1"),
        BidiResponseCompleteEvent("r1", "complete"),
        BidiUsageEvent(input_tokens=1, output_tokens=1, total_tokens=2),
        BidiErrorEvent("boom"),
        BidiToolUseEvent("t1", "lookup"),
        BidiSpeechStartedEvent(),
        BidiToolCancelEvent(("t1",)),
        BidiConnectionExpiringEvent(10.0),
        BidiResumptionUpdateEvent("h1"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("phase", [Phase.CONNECTING, Phase.RESTARTING])
def test_a_provider_event_with_no_connection_open_is_a_protocol_error(event: object, phase: Phase) -> None:
    """No connection is open: the event is reported and otherwise ignored (no
    tool runs, no handle is kept, nothing is proven)."""
    conv = started()
    if phase is Phase.RESTARTING:
        conv = connected(conv=conv)
        conv, _ = step(conv, BidiConnectionExpiringEvent(10.0))  # rotates at once: listening
    assert conv.phase is phase
    message = f"unexpected provider event: {type(event).__name__} is not allowed while {phase.value}"
    expect(conv, event, conv, (Emit(BidiErrorEvent(message, code="protocol_error")),))


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

    effects: list[object] = [ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1"))]
    if not cancels_on_speech:
        # Control items belong to the connection: no outbox number.
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
        tuple(effects),  # type: ignore[arg-type]
    )
    assert conv.response_id == "r1"
    assert conv.outbox == Outbox()  # control items never enter the outbox

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
        connection_proven=True,
    )
    conv = expect(conv, audio_out("r1"), conv)


def test_barge_in_cancels_interruptible_tools_which_then_answer_cancelled() -> None:
    conv = connected(conv=started(ConversationConfig(interruptible_tools=frozenset({"search"}))))
    conv = responding(conv)
    conv = tool_use(conv, "t1", "search", q="x")
    conv = tool_use(conv, "t2", "note")
    conv = expect(
        conv,
        BidiSpeechStartedEvent(),
        evolve(conv, phase=Phase.INTERRUPTED, audible_id=None, interrupted_ids=("r1",)),
        (ClearPlayback("r1"), Emit(BidiInterruptionEvent("user_speech", "r1")), CancelTool("t1")),
    )
    cancelled = BidiToolResultEvent("t1", "search", "cancelled", "The tool call was cancelled.")
    recorded = ToolResultMessage("t1", "search", "cancelled", "The tool call was cancelled.")
    conv = expect(
        conv,
        ToolCancelled("t1"),
        evolve(
            conv,
            pending_tools=frozenset({ToolCall("t2", "note", "c1")}),
            outbox=Outbox(in_flight=(Entry(0, cancelled, recorded, "c1"),), next_seq=1),
        ),
        (Emit(cancelled), AppendHistory(recorded), SendToModel(cancelled, 0)),
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
    conv = expect(conv, BidiSpeechStartedEvent(), heard(conv))
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
    conv = connected(caps, started(ConversationConfig(interruptible_tools=frozenset({"search"}))))
    conv = expect(conv, PlaybackProgress(PlaybackReport("r0", 0.0)), evolve(conv, tracks_playback=True))
    conv = tool_use(responding(conv), "t1", "search")
    conv = expect(
        conv,
        BidiResponseCompleteEvent("r1", "tool_use"),
        evolve(conv, phase=Phase.TOOL_CALLING, response_id=None, audible_id=None),
        (Emit(BidiResponseCompleteEvent("r1", "tool_use")),),
    )
    # r1 had no audio: no interruption, no truncation, the tool keeps running.
    conv = expect(conv, BidiSpeechStartedEvent(), conv)


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


# --------------------------------------------------------------------------- outputs that report playback


def test_audio_nobody_observes_is_not_counted() -> None:
    """No output declared that it reports playback: received audio goes uncounted
    (nothing reads the count), and the rest of the turn is as usual."""
    conv = responding(connected(conv=started(reports_playback=False)))
    assert conv.audio_unobserved
    chunk = audio_out("r1", 20)
    conv = expect(conv, chunk, conv, (Emit(chunk),))
    done = BidiResponseCompleteEvent("r1", "complete")
    conv = expect(conv, done, evolve(conv, phase=Phase.LISTENING, response_id=None, audible_id=None), (Emit(done),))
    assert conv.received_ms == 0.0


def test_outputs_that_declare_playback_reports_are_tracked_from_the_start() -> None:
    """An output declared it reports playback: a response completing with audio
    not yet played stays audible even before the first report."""
    conv = with_audio(responding(connected(conv=started(reports_playback=True))), "r1", 40)
    assert conv.tracks_playback
    done = BidiResponseCompleteEvent("r1", "complete")
    conv = expect(conv, done, evolve(conv, phase=Phase.LISTENING, response_id=None), (Emit(done),))
    assert conv.audible_id == "r1"


def test_an_undeclared_output_reporting_mid_response_never_has_its_audio_assumed_played() -> None:
    """An output reports playback without having declared it: what the response
    received went uncounted, so it stays audible until the output says it
    finished, and a barge-in truncates to what was played."""
    caps = ModelCapabilities(can_truncate=True, cancels_on_speech=True)
    conv = responding(connected(caps, conv=started(reports_playback=False)))
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
    conv = connected(conv=started(reports_playback=False))
    conv = expect(
        conv,
        PlaybackProgress(PlaybackReport("r0", 5.0, finished=True)),
        evolve(conv, audio_unobserved=False, tracks_playback=True),
    )
    conv = with_audio(responding(conv), "r1", 40)
    assert conv.received_ms == 40.0
