"""BidiAudioIO in a whole conversation: a scripted model, barge-in with truncation, lifecycle."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from adapters.audio import (
    AudioDeviceError,
    AudioUnavailableError,
    BidiAudioIO,
)
from adapters.testing import Expect, FakeAudioDevice, ScriptedModel, Step
from bidi_core import BidiAgent, stop_conversation
from ports.audio import StreamConfig
from ports.events import (
    BidiAudioInputEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolUseEvent,
)
from ports.model import CancelResponse, TruncateResponse
from tests.audio_io_support import (
    CAPS,
    View,
    audio,
    const,
    eventually,
    samples,
    started_output,
)
from tests.support import RecordingOutput, our_tasks

# ---------------------------------------------------------------- the whole conversation


class TextChannel:
    """An input the test types into."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[str](10)

    async def start(self, agent: Any) -> None:
        return None

    async def __call__(self) -> BidiTextInputEvent:
        return BidiTextInputEvent(await self._receive.receive())

    async def stop(self) -> None:
        self._send.close()
        self._receive.close()

    async def say(self, text: str) -> None:
        await self._send.send(text)


def sent_audio(model: ScriptedModel) -> list[BidiAudioInputEvent]:
    return [item for item in model.sent if isinstance(item, BidiAudioInputEvent)]


async def test_a_voice_conversation_with_barge_in_end_to_end() -> None:
    caps = attrs.evolve(CAPS, can_truncate=True, cancels_on_speech=False)
    r1 = [audio("r1", const(1000, 720)) for _ in range(10)]  # 300 ms
    r2 = [audio("r2", const(2000, 480)) for _ in range(2)]
    model = ScriptedModel(
        [
            Step(expect=Expect(BidiTextInputEvent, text="hello"), emit=[BidiResponseStartEvent("r1"), *r1]),
            Step(expect=Expect(BidiTextInputEvent, text="wait"), emit=[BidiSpeechStartedEvent()]),
            Step(
                expect=[Expect(CancelResponse, response_id="r1"), Expect(TruncateResponse, response_id="r1")],
                emit=[
                    BidiResponseCompleteEvent("r1", "interrupted"),
                    BidiResponseStartEvent("r2"),
                    *r2,
                    BidiResponseCompleteEvent("r2", "complete"),
                ],
            ),
            Step(expect=Expect(BidiTextInputEvent, text="bye"), emit=[BidiToolUseEvent("t1", "stop_conversation", {})]),
        ],
        capabilities=caps,
    )
    dev = FakeAudioDevice()
    io = BidiAudioIO(backend=dev, input_frames_per_buffer=320, output_frames_per_buffer=480)
    agent = BidiAgent(model=model, tools=[stop_conversation])
    text = TextChannel()
    seen = RecordingOutput(until=lambda e: isinstance(e, BidiConnectionStartEvent))
    out = io.output()
    async with anyio.create_task_group() as tg:
        tg.start_soon(agent.run, [io.input(), text], [out, seen])
        with anyio.fail_after(5):
            await seen.seen.wait()
        speaker, mic = dev.output_stream, dev.input_stream

        mic.feed(const(7, 320 * 3))
        mic.step(3)
        await eventually(lambda: len(sent_audio(model)) == 3)

        await text.say("hello")
        await eventually(lambda: out.stats.buffered_ms == 300.0)
        speaker.step(3)  # the user hears 60 ms of r1
        await eventually(lambda: agent.conversation.played_ms == 60.0)

        await text.say("wait")  # the provider hears the user start speaking
        await eventually(lambda: out.stats.interruptions == 1)
        await eventually(lambda: out.stats.buffered_ms == 40.0)  # r2 arrived after cancel + truncate
        speaker.step(3)
        await eventually(lambda: out.stats.buffered_ms == 0.0)
        await text.say("bye")
    model.assert_done()

    played = [set(samples(b).tolist()) for b in speaker.blocks]
    assert played == [{1000}] * 3 + [{2000}] * 2 + [{0}]
    assert TruncateResponse("r1", 60) in model.sent
    assert [(e.audio, e.sample_rate, e.channels) for e in sent_audio(model)] == [(const(7, 320), 16000, 1)] * 3
    assert seen.of(BidiInterruptionEvent) == [BidiInterruptionEvent("user_speech", "r1")]
    # Nothing of ours is left: no stream, no device thread, no task.
    assert dev.open_streams() == []
    assert dev.running_threads() == []
    assert our_tasks() == set()


async def test_run_fails_with_a_clear_error_and_leaves_nothing_open_when_there_is_no_microphone() -> None:
    dev = FakeAudioDevice(inputs=())
    io = BidiAudioIO(backend=dev)
    agent = BidiAgent(model=ScriptedModel([]))
    with pytest.raises(AudioUnavailableError, match="no audio input device found") as caught:
        await agent.run(inputs=[io.input()], outputs=[io.output()])
    assert "WavFileDevice" in str(caught.value)
    assert [s.kind for s in dev.streams] == ["output"]  # the output had opened, and was closed again
    assert dev.open_streams() == []
    assert dev.running_threads() == []


async def test_a_failing_callback_is_reported_instead_of_silencing_the_stream() -> None:
    class ReadOnlyBuffers(FakeAudioDevice):
        """A broken device that hands out a buffer nobody can write."""

        def open_output(self, config: StreamConfig, callback: Any) -> Any:
            return super().open_output(config, lambda out, frames, xrun: callback(out.toreadonly(), frames, xrun))

    dev = ReadOnlyBuffers()
    out, _ = await started_output(dev)
    try:
        await out(audio("r1", const(1, 512)))
        dev.output_stream.step()  # our callback caught the error: the stream was not aborted
        with pytest.raises(AudioDeviceError, match="speaker stream failed"):
            await out(audio("r1", const(1, 512)))
    finally:
        await out.stop()


async def test_stop_closes_the_streams_and_their_threads_and_is_safe_twice() -> None:
    dev = FakeAudioDevice(pace=1.0)
    io = BidiAudioIO(backend=dev)
    view = View()
    await io.output().start(view)
    await io.input().start(view)
    assert len(dev.running_threads()) == 2
    await io.input().stop()
    await io.output().stop()
    await io.output().stop()
    assert dev.open_streams() == []
    assert dev.running_threads() == []
    with pytest.raises(EOFError):
        await io.input()()


async def test_the_device_reports_xruns_are_counted() -> None:
    dev = FakeAudioDevice()
    io = BidiAudioIO(backend=dev)
    view = View()
    out, inp = io.output(), io.input()
    await out.start(view)
    await inp.start(view)
    try:
        dev.output_stream.simulate_xrun()
        dev.input_stream.simulate_xrun()
        dev.output_stream.step(2)
        dev.input_stream.step(2)
        assert out.stats.device_underflows == 1
        assert inp.stats.device_overflows == 1
    finally:
        await inp.stop()
        await out.stop()
