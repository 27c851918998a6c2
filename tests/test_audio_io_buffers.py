"""BidiAudioIO against FakeAudioDevice: the input and output buffers (drop-oldest, underruns, backpressure).

Clocked block by block (``stream.step``): the tests assert on the samples played.
"""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.audio import BidiAudioIO
from adapters.testing import FakeAudioDevice
from ports.events import (
    BidiAudioInputEvent,
    BidiConnectionCloseEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
)
from ports.io import PlaybackReport
from tests.audio_io_support import (
    View,
    audio,
    const,
    samples,
    started_output,
)

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


async def test_offer_takes_audio_while_the_buffer_has_room_and_declines_what_would_wait() -> None:
    """On the spot (ports.io.BidiInlineOutput): audio while there is room, an
    interruption, a completion; declined: audio for a full buffer and the end
    (which plays the buffer out), both left to ``__call__``."""
    dev = FakeAudioDevice()
    out, _ = await started_output(dev, output_buffer_size=2, output_frames_per_buffer=480)
    try:
        speaker = dev.output_stream
        assert out.offer(audio("r1", const(1, 480)))
        assert out.offer(audio("r1", const(2, 480)))
        assert not out.offer(audio("r1", const(3, 480)))  # full: nothing taken
        assert out.stats.backpressure_waits == 0
        assert [samples(b)[0] for b in speaker.step(1)] == [1]
        assert out.offer(audio("r1", const(3, 480)))  # room again
        assert out.offer(BidiInterruptionEvent("user_speech", "r1"))
        assert [samples(b)[0] for b in speaker.step(1)] == [0]  # the interruption emptied the buffer at once
        assert out.offer(audio("r1", const(4, 480)))  # late audio of r1: taken and dropped
        assert out.offer(BidiResponseCompleteEvent("r1", "interrupted"))
        assert [samples(b)[0] for b in speaker.step(1)] == [0]
        assert not out.offer(BidiConnectionCloseEvent(reason="complete"))
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
