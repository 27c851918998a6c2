"""BidiAudioIO against FakeAudioDevice: interruption (exact samples) and the accuracy of playback reports.

Clocked block by block (``stream.step``), and once free-running: the tests assert on the samples played.
"""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel

from adapters.testing import FakeAudioDevice
from ports.events import (
    BidiConnectionCloseEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
)
from ports.io import PlaybackReport
from tests.audio_io_support import (
    audio,
    const,
    eventually,
    samples,
    started_output,
)

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
