"""BidiAudioIO against FakeAudioDevice: formats, buffers, interruption, playback
reports, device choice, lifecycle. The fake is a port implementation whose
callbacks run on real threads; most tests clock it block by block
(``stream.step``), so they know exactly what was played before and after each
thing they do, and assert on those samples."""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.audio import (
    AudioDeviceError,
    AudioUnavailableError,
    BidiAudioIO,
    BidiAudioOutput,
    WavFileDevice,
    format_devices,
    list_devices,
)
from adapters.testing import Expect, FakeAudioDevice, ScriptedModel, Step
from bidi_core import BidiAgent, stop_conversation
from ports.audio import AudioDevice, AudioFormat, StreamConfig
from ports.errors import BidiUsageError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolUseEvent,
)
from ports.io import PlaybackReport
from ports.model import CancelResponse, ModelCapabilities, TruncateResponse
from tests.support import RecordingOutput, our_tasks

CAPS = ModelCapabilities(input_audio=AudioFormat(16000), output_audio=AudioFormat(24000))


# ---------------------------------------------------------------- helpers


class View:
    """The AgentView an input or output gets, for driving them directly."""

    def __init__(self, capabilities: ModelCapabilities = CAPS) -> None:
        self.capabilities = capabilities
        self.reports: list[PlaybackReport] = []

    def report_playback(self, report: PlaybackReport) -> None:
        self.reports.append(report)

    def last(self, rid: str) -> PlaybackReport | None:
        return next((r for r in reversed(self.reports) if r.response_id == rid), None)


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition`` holds: something another thread or task does, not a guessed delay.

    Polls, because some of the conditions are made true by a device's thread,
    which has no way to set an anyio event (that is the point of the code under test).
    """
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.0005)


def const(value: int, frames: int, channels: int = 1) -> bytes:
    return struct.pack("<h", value) * (frames * channels)


def samples(pcm: bytes) -> np.ndarray[Any, Any]:
    return np.frombuffer(pcm, dtype="<i2")


def tone(freq: float, ms: float, rate: int, amplitude: int = 8000) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def dominant_frequency(pcm: bytes, rate: int, channels: int = 1) -> float:
    x = samples(pcm).reshape(-1, channels)[:, 0].astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def audio(rid: str | None, pcm: bytes, rate: int = 24000, channels: int = 1) -> BidiAudioStreamEvent:
    return BidiAudioStreamEvent(audio=pcm, sample_rate=rate, channels=channels, response_id=rid)


async def started_output(dev: AudioDevice, view: View | None = None, **kwargs: Any) -> tuple[BidiAudioOutput, View]:
    view = view or View()
    out = BidiAudioIO(backend=dev, **kwargs).output()
    await out.start(view)
    return out, view


# ---------------------------------------------------------------- formats


async def test_streams_open_at_the_model_formats_when_the_device_takes_them() -> None:
    dev = FakeAudioDevice()
    io = BidiAudioIO(backend=dev, input_frames_per_buffer=320, output_frames_per_buffer=480)
    view = View()
    await io.output().start(view)
    await io.input().start(view)
    try:
        assert dev.output_stream.config == StreamConfig("output", 1, 24000, 1, 480)
        assert dev.input_stream.config == StreamConfig("input", 0, 16000, 1, 320)
        assert dev.refused == []
    finally:
        await io.input().stop()
        await io.output().stop()


async def test_a_refused_input_rate_is_resampled_never_sped_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bidi_core.adapters.audio")
    dev = FakeAudioDevice(sample_rates={48000})
    inp = BidiAudioIO(backend=dev, input_frames_per_buffer=320).input()
    await inp.start(View())
    try:
        mic = dev.input_stream
        # The model wants 16 kHz; the device only does 48 kHz, with blocks of the same 20 ms.
        assert (mic.config.sample_rate, mic.config.frames_per_buffer) == (48000, 960)
        assert "refuses 16000 Hz" in caplog.text
        mic.feed(tone(440, 1000, 48000))
        mic.step(50)  # one second
        received = b""
        while inp.stats.buffered_blocks or not received:
            event = await inp()
            assert (event.sample_rate, event.channels) == (16000, 1)
            received += event.audio
    finally:
        await inp.stop()
    # Same pitch, same duration (the resampler holds back a few ms): same speed.
    assert dominant_frequency(received, 16000) == pytest.approx(440, abs=2)
    assert len(received) / 2 / 16000 == pytest.approx(1.0, abs=0.03)


async def test_a_refused_output_rate_is_resampled_never_sped_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bidi_core.adapters.audio")
    dev = FakeAudioDevice(sample_rates={44100})
    out, view = await started_output(dev, output_frames_per_buffer=480)
    try:
        speaker = dev.output_stream
        assert (speaker.config.sample_rate, speaker.config.frames_per_buffer) == (44100, 882)
        assert "refuses 24000 Hz" in caplog.text
        sound = tone(300, 500, 24000)
        for i in range(0, len(sound), 960):
            await out(audio("r1", sound[i : i + 960]))
        await out(BidiResponseCompleteEvent("r1", "complete"))
        speaker.step(30)
        await eventually(lambda: view.last("r1") is not None and view.last("r1").finished)  # type: ignore[union-attr]
    finally:
        await out.stop()
    played = samples(speaker.played)
    audible = played[np.nonzero(played)[0][0] : np.nonzero(played)[0][-1] + 1].tobytes()
    assert dominant_frequency(audible, 44100) == pytest.approx(300, abs=2)
    assert len(audible) / 2 / 44100 == pytest.approx(0.5, abs=0.005)
    # Reports are in the model's time: half a second, within a frame.
    assert view.last("r1") == PlaybackReport("r1", pytest.approx(500, abs=0.1), True)  # type: ignore[arg-type]


async def test_channels_are_mixed_when_the_device_refuses_mono() -> None:
    dev = FakeAudioDevice(channels={2})
    io = BidiAudioIO(backend=dev, input_frames_per_buffer=320, output_frames_per_buffer=480)
    view = View()
    out, inp = io.output(), io.input()
    await out.start(view)
    await inp.start(view)
    try:
        speaker, mic = dev.output_stream, dev.input_stream
        assert speaker.config.channels == mic.config.channels == 2
        await out(audio("r1", const(1000, 480)))
        assert samples(speaker.step()[0]).tolist() == [1000] * 960  # mono copied to both channels
        mic.feed(struct.pack("<hh", 100, 300) * 320)
        mic.step()
        event = await inp()
        assert event.channels == 1
        assert samples(event.audio).tolist() == [200] * 320  # stereo averaged
    finally:
        await inp.stop()
        await out.stop()


async def test_the_input_follows_a_connection_that_changes_the_input_format() -> None:
    dev = FakeAudioDevice()
    view = View()
    inp = BidiAudioIO(backend=dev, input_frames_per_buffer=320).input()
    await inp.start(view)
    try:
        mic = dev.input_stream
        mic.feed(tone(500, 200, 16000))
        mic.step()
        assert (await inp()).sample_rate == 16000
        view.capabilities = attrs.evolve(CAPS, input_audio=AudioFormat(24000))
        mic.step(9)
        later = [await inp() for _ in range(3)]
        assert {e.sample_rate for e in later} == {24000}
    finally:
        await inp.stop()


# ---------------------------------------------------------------- buffers


async def test_a_full_input_buffer_drops_the_oldest_blocks_and_counts_them() -> None:
    dev = FakeAudioDevice()
    inp = BidiAudioIO(backend=dev, input_buffer_size=3, input_frames_per_buffer=160).input()
    await inp.start(View())
    try:
        mic = dev.input_stream
        for value in range(1, 6):
            mic.feed(const(value, 160))
        mic.step(5)  # nobody reads: blocks 1 and 2 are pushed out by 4 and 5
        got = [samples((await inp()).audio)[0] for _ in range(3)]
        stats = inp.stats
    finally:
        await inp.stop()
    assert got == [3, 4, 5]
    assert (stats.blocks, stats.delivered, stats.dropped_blocks, stats.dropped_ms) == (5, 3, 2, 20.0)


async def test_input_wakes_the_loop_only_when_someone_waits() -> None:
    dev = FakeAudioDevice()
    inp = BidiAudioIO(backend=dev, input_frames_per_buffer=160).input()
    await inp.start(View())
    try:
        mic = dev.input_stream
        mic.step(10)
        assert inp.stats.wakeups == 0  # nobody waiting: the callback only buffered
        for _ in range(10):
            await inp()
        async with anyio.create_task_group() as tg:
            got: list[BidiAudioInputEvent] = []

            async def read() -> None:
                got.append(await inp())

            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            mic.step()
        assert len(got) == 1
        assert inp.stats.wakeups == 1
    finally:
        await inp.stop()


async def test_a_backlog_of_microphone_blocks_does_not_starve_other_tasks() -> None:
    dev = FakeAudioDevice()
    inp = BidiAudioIO(backend=dev, input_frames_per_buffer=160).input()
    await inp.start(View())
    try:
        dev.input_stream.step(40)  # e.g. the loop was busy for a while
        turns = 0

        async def other_task() -> None:
            nonlocal turns
            while True:
                turns += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            for _ in range(40):
                await inp()  # every block is ready: no waiting, but still a checkpoint
            tg.cancel_scope.cancel()
        assert turns >= 20
    finally:
        await inp.stop()


async def test_callbacks_hand_off_without_waiting_for_the_event_loop() -> None:
    """The test steps the devices from the event loop's own thread: a callback that
    waited for the loop (``from_thread.run_sync``) could never return, and step() would fail."""
    dev = FakeAudioDevice()
    io = BidiAudioIO(backend=dev, input_frames_per_buffer=160, output_frames_per_buffer=240)
    view = View()
    out, inp = io.output(), io.input()
    await out.start(view)
    await inp.start(view)
    try:
        async with anyio.create_task_group() as tg:
            got: list[BidiAudioInputEvent] = []

            async def read() -> None:
                got.append(await inp())

            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            await out(audio("r1", const(5, 480)))
            dev.input_stream.step(timeout=1)  # rings the loop, returns without it
            dev.output_stream.step(2, timeout=1)  # plays and rings the loop for a report
            assert not got and not view.reports  # the loop has not run yet: nobody waited for it
        assert len(got) == 1
        assert view.reports[-1] == PlaybackReport("r1", 20.0, False)
    finally:
        await inp.stop()
        await out.stop()


async def test_an_empty_output_plays_silence_and_counts_underruns() -> None:
    dev = FakeAudioDevice()
    out, _ = await started_output(dev, output_frames_per_buffer=480)
    try:
        speaker = dev.output_stream
        assert speaker.step(2) == [bytes(960)] * 2  # idle: silence, not an underrun
        assert out.stats.underruns == 0
        await out(audio("r1", const(9, 720)))  # 30 ms of a response still coming
        first, second = speaker.step(2)
        assert samples(first).tolist() == [9] * 480
        assert samples(second).tolist() == [9] * 240 + [0] * 240  # ran dry mid-response
        assert out.stats.underruns == 1
        await out(BidiResponseCompleteEvent("r1", "complete"))
        assert speaker.step() == [bytes(960)]  # the response is over: silence is no underrun
        stats = out.stats
        assert (stats.underruns, stats.played_ms, stats.silence_ms) == (1, 30.0, 40.0 + 10.0 + 20.0)
    finally:
        await out.stop()


async def test_a_full_output_buffer_waits_for_the_device_instead_of_dropping() -> None:
    dev = FakeAudioDevice()
    out, _ = await started_output(dev, output_buffer_size=2, output_frames_per_buffer=480)
    try:
        speaker = dev.output_stream
        await out(audio("r1", const(1, 480)))
        await out(audio("r1", const(2, 480)))
        done = anyio.Event()

        async def third() -> None:
            await out(audio("r1", const(3, 480)))
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(third)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()  # waiting for room, holding the chunk
            speaker.step()
            with anyio.fail_after(5):
                await done.wait()
        assert [samples(b)[0] for b in speaker.step(3)] == [2, 3, 0]
        assert out.stats.backpressure_waits == 1
    finally:
        await out.stop()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=30, deadline=None)
@given(
    chunks=st.lists(st.tuples(st.integers(1, 1500), st.integers(0, 3)), min_size=1, max_size=8),
    frames=st.integers(1, 700),
)
def test_the_speaker_plays_every_sample_in_order_whatever_the_chunk_and_block_sizes(
    backend: str, chunks: list[tuple[int, int]], frames: int
) -> None:
    async def scenario() -> None:
        dev = FakeAudioDevice()
        out, _ = await started_output(dev, output_frames_per_buffer=frames)
        speaker = dev.output_stream
        expected = b""
        counter = 1
        try:
            for size, steps_after in chunks:
                pcm = np.arange(counter, counter + size, dtype="<i2").tobytes()  # never 0: silence is 0
                counter += size
                expected += pcm
                await out(audio("r1", pcm))
                if steps_after:
                    speaker.step(steps_after)
            speaker.step(math.ceil(len(expected) / 2 / frames) + 1)
        finally:
            await out.stop()
        played = samples(speaker.played)
        # Silence where the test let the buffer run dry; otherwise every sample, once, in order.
        assert played[played != 0].tobytes() == expected
        assert played[-frames:].tolist() == [0] * frames

    anyio.run(scenario, backend=backend)


# ---------------------------------------------------------------- interruption


async def test_interruption_discards_the_queue_and_the_block_in_flight() -> None:
    dev = FakeAudioDevice()
    out, view = await started_output(dev, output_frames_per_buffer=480)
    try:
        speaker = dev.output_stream
        for _ in range(10):
            await out(audio("r1", const(7, 720)))  # 30 ms chunks: blocks end mid-chunk
        played = speaker.step(3)
        assert all(set(samples(b)) == {7} for b in played)
        await out(BidiInterruptionEvent("user_speech", "r1"))
        after = speaker.step(3)
        assert after == [bytes(960)] * 3  # the very next block is silent; not one sample of r1
        stats = out.stats
        assert (stats.interruptions, stats.played_ms, stats.discarded_ms, stats.buffered_ms) == (1, 60.0, 240.0, 0.0)
        assert view.reports[-1] == PlaybackReport("r1", 60.0, finished=True)
        # Late audio of the interrupted response is dropped; the next response plays at once.
        await out(audio("r1", const(7, 480)))
        await out(audio("r2", const(8, 480)))
        assert [set(samples(b)) for b in speaker.step(2)] == [{8}, {0}]
        assert out.stats.late_chunks_dropped == 1
    finally:
        await out.stop()


async def test_interruption_silences_audio_of_every_response_still_queued() -> None:
    dev = FakeAudioDevice()
    out, view = await started_output(dev, output_frames_per_buffer=480)
    try:
        await out(audio("r1", const(1, 960)))
        await out(BidiResponseCompleteEvent("r1", "complete"))
        await out(audio("r2", const(2, 960)))
        dev.output_stream.step()
        await out(BidiInterruptionEvent("user_speech", "r2"))
        assert dev.output_stream.step(4) == [bytes(960)] * 4
        await eventually(lambda: {r.response_id for r in view.reports if r.finished} == {"r1", "r2"})
        assert view.last("r1") == PlaybackReport("r1", 20.0, True)
        assert view.last("r2") == PlaybackReport("r2", 0.0, True)
    finally:
        await out.stop()


async def test_no_sample_of_an_interrupted_response_follows_the_interruption_on_a_running_device() -> None:
    """The device runs by itself (20x real time) while the loop interrupts at arbitrary moments.

    A block whose callback started after the interruption event was handled
    must hold no sample of the interrupted response. A block already being
    filled at that moment was handed to the device before it: it may."""
    dev = FakeAudioDevice(pace=20.0)
    out, _ = await started_output(dev, output_frames_per_buffer=480)
    speaker = dev.output_stream
    try:
        for round_ in range(1, 16):
            value = round_
            for _ in range(20):
                await out(audio(f"r{round_}", const(value, 720)))
            # Let it play a varying number of blocks of this response first.
            mark = speaker.callbacks + round_ % 4
            await eventually(lambda mark=mark: speaker.callbacks > mark)  # type: ignore[misc]
            await out(BidiInterruptionEvent("user_speech", f"r{round_}"))
            handled = time.perf_counter_ns()
            await eventually(
                lambda handled=handled: sum(start > handled for start, _, _ in speaker.history()) >= 3  # type: ignore[misc]
            )
            late = [b for start, _, b in speaker.history() if start > handled and value in samples(b)]
            assert late == []
    finally:
        await out.stop()
    assert out.stats.interruptions == 15


async def test_a_response_that_ends_in_error_takes_its_audio_with_it() -> None:
    dev = FakeAudioDevice()
    out, view = await started_output(dev, output_frames_per_buffer=480)
    try:
        await out(audio("r1", const(3, 1440)))
        dev.output_stream.step()
        await out(BidiResponseCompleteEvent("r1", "error"))  # e.g. the connection was lost mid-response
        assert dev.output_stream.step(2) == [bytes(960)] * 2
        assert view.last("r1") == PlaybackReport("r1", 20.0, True)
    finally:
        await out.stop()


# ---------------------------------------------------------------- playback reports


async def test_playback_reports_count_what_the_device_played() -> None:
    dev = FakeAudioDevice()
    out, view = await started_output(dev, output_frames_per_buffer=480)
    try:
        speaker = dev.output_stream
        for _ in range(5):
            await out(audio("r1", const(4, 480)))  # 100 ms in all
        assert view.reports == []  # received is not played
        for played_ms in (20.0, 40.0, 60.0):
            speaker.step()
            await eventually(lambda: bool(view.reports) and view.reports[-1].played_ms == played_ms)  # noqa: B023
            assert view.reports[-1] == PlaybackReport("r1", played_ms, False)
        await out(BidiResponseCompleteEvent("r1", "complete"))
        assert not view.reports[-1].finished  # 40 ms still to play
        speaker.step(2)
        await eventually(lambda: view.reports[-1].finished)
        assert view.reports[-1] == PlaybackReport("r1", 100.0, True)
        assert out.stats.reports == len(view.reports)
    finally:
        await out.stop()


async def test_the_close_event_plays_out_the_buffer_before_returning() -> None:
    dev = FakeAudioDevice()
    out, _ = await started_output(dev, output_frames_per_buffer=480)
    try:
        await out(audio("r1", const(6, 960)))
        closed = anyio.Event()

        async def close() -> None:
            await out(BidiConnectionCloseEvent("user_request"))
            closed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(close)
            await anyio.wait_all_tasks_blocked()
            dev.output_stream.step()
            await anyio.wait_all_tasks_blocked()
            assert not closed.is_set()  # 20 ms still buffered
            dev.output_stream.step()
            with anyio.fail_after(5):
                await closed.wait()
        assert out.stats.played_ms == 40.0
    finally:
        await out.stop()


async def test_wait_played_returns_once_the_response_has_been_heard() -> None:
    dev = FakeAudioDevice()
    out, _ = await started_output(dev, output_frames_per_buffer=480)
    try:
        await out(audio("r1", const(1, 960)))
        await out(BidiResponseCompleteEvent("r1", "complete"))
        heard = anyio.Event()

        async def wait() -> None:
            await out.wait_played("r1")
            heard.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            dev.output_stream.step()
            await eventually(lambda: out.stats.played_ms == 20.0)
            await anyio.wait_all_tasks_blocked()
            assert not heard.is_set()
            dev.output_stream.step()
            with anyio.fail_after(5):
                await heard.wait()
        await out(BidiResponseCompleteEvent("r2", "complete"))  # a response without audio
        with anyio.fail_after(5):
            await out.wait_played("r2")
            await out.wait_played()
    finally:
        await out.stop()


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


# ---------------------------------------------------------------- choosing devices


async def test_devices_are_chosen_by_index_or_by_name() -> None:
    dev = FakeAudioDevice(
        inputs=("Built-in Microphone", "USB Headset Mic"), outputs=("Built-in Speakers", "USB Headset")
    )

    async def opened(**kwargs: Any) -> tuple[int, int]:
        io = BidiAudioIO(backend=dev, **kwargs)
        view = View()
        await io.output().start(view)
        await io.input().start(view)
        await io.input().stop()
        await io.output().stop()
        return dev.input_stream.config.device, dev.output_stream.config.device

    assert await opened() == (0, 2)  # the defaults
    assert await opened(input_device_index=1, output_device_index=3) == (1, 3)
    assert await opened(input_device="usb", output_device="built-in speakers") == (1, 2)
    assert await opened(input_device="1", output_device="USB Headset") == (1, 3)  # exact name wins


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"output_device": "headset"}, AudioDeviceError, r"ambiguous: it matches 2: 'USB Headset', 3: 'BT Headset'"),
        ({"output_device": "hdmi"}, AudioDeviceError, r"no output device is called 'hdmi'; output devices: 2: 'USB"),
        ({"output_device_index": 7}, AudioDeviceError, "no audio device has index 7"),
        ({"output_device_index": 0}, AudioDeviceError, r"device 0 \('Mic'\) cannot do output"),
        ({"output_device": 2, "output_device_index": 2}, BidiUsageError, "not both"),
        ({"output_buffer_size": 0}, BidiUsageError, "output_buffer_size must be a positive int"),
        ({"input_frames_per_buffer": None}, BidiUsageError, "input_frames_per_buffer must be a positive int"),
    ],
)
async def test_bad_device_choices_say_what_there_is(kwargs: dict[str, Any], error: type, message: str) -> None:
    dev = FakeAudioDevice(inputs=("Mic", "Mic 2"), outputs=("USB Headset", "BT Headset"))
    with pytest.raises(error, match=message):
        await BidiAudioIO(backend=dev, **kwargs).output().start(View())
    assert dev.open_streams() == []


async def test_a_device_that_accepts_no_format_is_named() -> None:
    dev = FakeAudioDevice(channels={6})
    with pytest.raises(AudioDeviceError, match=r"output device 1 \('Fake Speaker'\) accepts none of these formats"):
        await BidiAudioIO(backend=dev).output().start(View())


def test_listing_devices() -> None:
    dev = FakeAudioDevice(inputs=("Mic",), outputs=("Speakers", "Headphones"), default_sample_rate=44100)
    devices = list_devices(dev)
    assert [(d.index, d.name) for d in devices] == [(0, "Mic"), (1, "Speakers"), (2, "Headphones")]
    table = format_devices(devices)
    assert table.splitlines() == [
        "Input devices:",
        "    index  name  channels  default rate  host API",
        "  *     0  Mic          2      44100 Hz  Fake",
        "Output devices:",
        "    index  name        channels  default rate  host API",
        "  *     1  Speakers           2      44100 Hz  Fake",
        "        2  Headphones         2      44100 Hz  Fake",
        "* = the system's default device",
    ]


# ---------------------------------------------------------------- the WAV backend


async def test_the_wav_backend_records_what_the_speaker_played(tmp_path: Any) -> None:
    import wave

    path = tmp_path / "out.wav"
    view = View()
    out = BidiAudioIO(backend=WavFileDevice(path, speed=20.0), output_frames_per_buffer=480).output()
    await out.start(view)
    try:
        sound = tone(440, 300, 24000)
        await out(audio("r1", sound))
        await out(BidiResponseCompleteEvent("r1", "complete"))
        with anyio.fail_after(5):
            await out(BidiConnectionCloseEvent("complete"))  # plays it out
    finally:
        await out.stop()
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24000, 1, 2)
        recorded = wav.readframes(wav.getnframes())
    assert sound in recorded
    assert view.last("r1") == PlaybackReport("r1", 300.0, True)


async def test_the_wav_backend_reads_the_microphone_from_a_file(tmp_path: Any) -> None:
    import wave

    path = tmp_path / "mic.wav"
    sound = tone(300, 200, 48000)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48000)
        wav.writeframes(sound)
    inp = BidiAudioIO(backend=WavFileDevice(input=path, speed=20.0), input_frames_per_buffer=320).input()
    await inp.start(View())
    try:
        received = b""
        while len(received) < 2 * 16000 * 0.2:
            event = await inp()
            assert event.sample_rate == 16000  # the file is 48 kHz: resampled
            received += event.audio
    finally:
        await inp.stop()
    assert dominant_frequency(received[: 2 * 3200], 16000) == pytest.approx(300, abs=5)


async def test_threads_of_a_closed_wav_device_are_gone(tmp_path: Any) -> None:
    before = set(threading.enumerate())
    io = BidiAudioIO(backend=WavFileDevice(tmp_path / "x.wav", speed=10.0))
    view = View()
    await io.output().start(view)
    await io.input().start(view)
    assert {t.name for t in set(threading.enumerate()) - before} >= {"bidi-core WAV input", "bidi-core WAV output"}
    await io.input().stop()
    await io.output().stop()
    left = [t for t in set(threading.enumerate()) - before if t.name.startswith("bidi-core")]
    assert left == []
