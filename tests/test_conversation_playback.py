"""Playback reports (the core): what an output says it played only ever moves
forward, whatever order the reports arrive in, and it is what a barge-in
truncates to."""

from __future__ import annotations

from bidi_core.conversation import Conversation, Phase, step
from bidi_core.effects import ClearPlayback, Emit, SendToModel
from bidi_core.shell_events import PlaybackProgress
from ports.events import BidiInterruptionEvent, BidiResponseCompleteEvent, BidiSpeechStartedEvent
from ports.io import PlaybackReport
from ports.model import CancelResponse, ModelCapabilities, TruncateResponse
from tests.conversation_support import connected, evolve, expect, responding, started, with_audio

TRUNCATING = ModelCapabilities(can_truncate=True, cancels_on_speech=False)


def playing(ms_received: int) -> Conversation:
    """Responding r1 with ``ms_received`` of audio, to an output that reports playback."""
    conv = connected(TRUNCATING, started(reports_playback=True))
    conv = responding(conv)
    return with_audio(conv, "r1", ms_received)


def report(rid: str, ms: float, *, finished: bool = False) -> PlaybackProgress:
    return PlaybackProgress(PlaybackReport(rid, ms, finished=finished))


def barge_in(conv: Conversation, heard_ms: int) -> None:
    """Speech now interrupts r1 and truncates it to ``heard_ms``."""
    expect(
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
        (
            ClearPlayback("r1"),
            Emit(BidiInterruptionEvent("user_speech", "r1")),
            SendToModel(CancelResponse("r1")),
            SendToModel(TruncateResponse("r1", heard_ms)),
        ),
    )


def test_an_older_report_arriving_after_a_newer_one_changes_nothing() -> None:
    conv = playing(300)
    conv = expect(conv, report("r1", 200.0), evolve(conv, played_ms=200.0))
    conv = expect(conv, report("r1", 120.0), conv)  # late, from before the newer one
    barge_in(conv, 200)


def test_a_report_of_as_much_as_before_changes_nothing() -> None:
    conv = playing(300)
    conv = expect(conv, report("r1", 200.0), evolve(conv, played_ms=200.0))
    conv = expect(conv, report("r1", 200.0), conv)
    conv = expect(conv, report("r1", 250.0), evolve(conv, played_ms=250.0))
    barge_in(conv, 250)


def test_what_was_played_is_truncated_to_at_most_what_was_received() -> None:
    conv = playing(100)
    conv = expect(conv, report("r1", 180.0), evolve(conv, played_ms=180.0))  # an output ahead of our count
    barge_in(conv, 100)


def test_a_report_for_another_response_is_ignored_and_an_old_finished_one_does_not_silence_the_new() -> None:
    conv = playing(300)
    conv = expect(conv, report("r1", 150.0), evolve(conv, played_ms=150.0))
    conv = expect(conv, report("r0", 900.0, finished=True), conv)  # the previous answer's last report, late
    assert conv.audible_id == "r1"
    barge_in(conv, 150)


def test_out_of_order_reports_after_the_response_completed_keep_it_audible_until_it_finished() -> None:
    conv = playing(300)
    conv, _ = step(conv, report("r1", 100.0))
    conv, _ = step(conv, BidiResponseCompleteEvent("r1", "complete"))
    assert (conv.phase, conv.audible_id) == (Phase.LISTENING, "r1")
    conv = expect(conv, report("r1", 250.0), evolve(conv, played_ms=250.0))
    conv = expect(conv, report("r1", 200.0), conv)  # older, late
    assert conv.audible_id == "r1"
    # Speech now still interrupts what is playing: truncated to the newest report.
    new, effects = step(conv, BidiSpeechStartedEvent())
    assert effects == (
        ClearPlayback("r1"),
        Emit(BidiInterruptionEvent("user_speech", "r1")),
        SendToModel(TruncateResponse("r1", 250)),
    )
    assert new.audible_id is None
