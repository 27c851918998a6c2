"""The observer port: what an observer is told, and that it can never hurt the conversation."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from adapters.testing.scripted import Expect, ScriptedModel, Step
from bidi_core import BidiAgent, BidiResponseCompleteEvent, BidiUsageError
from ports.events import BidiAudioStreamEvent, BidiEvent, BidiSpeechStoppedEvent, BidiTextInputEvent
from ports.io import PlaybackReport
from ports.observer import ConversationInfo, ConversationObserver
from tests.support import audio, response


class Recorder:
    def __init__(self, *, observes_audio: bool = True, fail_on: type | None = None) -> None:
        self.observes_audio = observes_audio
        self.fail_on = fail_on
        self.calls: list[Any] = []

    def on_start(self, info: ConversationInfo) -> None:
        self.calls.append(info)

    def on_event(self, event: BidiEvent) -> None:
        if self.fail_on is not None and isinstance(event, self.fail_on):
            raise RuntimeError("observer bug")
        self.calls.append(type(event).__name__)

    def on_playback(self, report: PlaybackReport) -> None:
        self.calls.append(report)

    def on_end(self) -> None:
        self.calls.append("end")


def spoken() -> ScriptedModel:
    return ScriptedModel(
        [
            Step(
                expect=Expect(BidiTextInputEvent, text="Hi"),
                emit=[BidiSpeechStoppedEvent(), *response("r1", audio("r1"), audio("r1"))],
            )
        ]
    )


async def converse(*observers: Any) -> list[BidiEvent]:
    agent = BidiAgent(model=spoken(), observers=observers)
    seen = []
    with anyio.fail_after(10):
        async with agent:
            await agent.send("Hi")
            async for event in agent.receive():
                seen.append(event)
                if isinstance(event, BidiAudioStreamEvent) and event.response_id:
                    agent.report_playback(PlaybackReport(event.response_id, 20))
                if isinstance(event, BidiResponseCompleteEvent):
                    break
    return seen


async def test_an_observer_sees_input_signals_outputs_playback_and_the_end() -> None:
    everything, no_audio = Recorder(), Recorder(observes_audio=False)
    assert isinstance(everything, ConversationObserver)
    await converse(everything, no_audio)
    info = ConversationInfo("scripted", "scripted", ())
    assert everything.calls[0] == info
    # The text may be taken before the connection opens (it waits in the outbox); the signal comes after both.
    assert set(everything.calls[1:3]) == {"BidiConnectionStartEvent", "BidiTextInputEvent"}
    assert everything.calls[3] == "BidiSpeechStoppedEvent"
    assert everything.calls.count("BidiAudioStreamEvent") == 2
    assert no_audio.calls.count("BidiAudioStreamEvent") == 0  # spared the hottest path
    assert [c for c in no_audio.calls if c != "BidiAudioStreamEvent"] == [
        c for c in everything.calls if c != "BidiAudioStreamEvent"
    ]
    assert PlaybackReport("r1", 20) in everything.calls
    assert everything.calls[-2:] == ["BidiConnectionCloseEvent", "end"]


async def test_an_observer_that_raises_is_dropped_and_the_conversation_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, fine = Recorder(fail_on=BidiAudioStreamEvent), Recorder()
    with caplog.at_level(logging.ERROR, logger="bidi_core.agent"):
        seen = await converse(broken, fine)
    assert isinstance(seen[-1], BidiResponseCompleteEvent)
    assert "BidiResponseCompleteEvent" not in broken.calls and "BidiResponseCompleteEvent" in fine.calls
    assert [r.getMessage() for r in caplog.records] == ["observer Recorder failed in on_event; it is dropped"]


def test_an_observer_without_the_methods_is_refused() -> None:
    with pytest.raises(BidiUsageError, match="on_playback"):
        BidiAgent(model=spoken(), observers=[object()])  # type: ignore[list-item]


async def test_the_completion_carries_the_turns_timing() -> None:
    seen = await converse()
    completion = seen[-1]
    assert isinstance(completion, BidiResponseCompleteEvent) and completion.timing is not None
    timing = completion.timing
    assert timing.user_turn == "speech" and not timing.interrupted
    assert timing.first_audio_s is not None and timing.since_user_s is not None
    assert 0 <= timing.first_audio_s <= timing.duration_s
    assert timing.since_user_s >= timing.first_audio_s  # the turn ended before the response started
