"""BidiAudioIO against FakeAudioDevice: format negotiation and conversion, choosing devices, the WAV backend.

The fake is a port implementation whose callbacks run on real threads; most tests
clock it block by block (``stream.step``), so they know exactly what was played
before and after each thing they do, and assert on those samples.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import numpy as np
import pytest

from adapters.audio import (
    AudioDeviceError,
    BidiAudioIO,
    WavFileDevice,
    format_devices,
    list_devices,
)
from adapters.testing import FakeAudioDevice
from ports.audio import AudioFormat, StreamConfig
from ports.errors import BidiUsageError
from ports.events import (
    BidiConnectionCloseEvent,
    BidiResponseCompleteEvent,
)
from ports.io import PlaybackReport
from tests.audio_io_support import (
    CAPS,
    View,
    audio,
    const,
    dominant_frequency,
    eventually,
    samples,
    started_output,
    tone,
)

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
