"""What the BidiAudioIO tests share: the model's capabilities, an agent view that records playback reports,
and helpers that make and analyse PCM (constant blocks, tones, their dominant frequency).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np

from adapters.audio import (
    BidiAudioIO,
    BidiAudioOutput,
)
from ports.audio import AudioDevice, AudioFormat
from ports.events import BidiAudioStreamEvent
from ports.io import PlaybackReport
from ports.model import ModelCapabilities

CAPS = ModelCapabilities(input_audio=AudioFormat(16000), output_audio=AudioFormat(24000))


# ---------------------------------------------------------------- helpers


class View:
    """The AgentView an input or output gets, for driving them directly."""

    def __init__(self, capabilities: ModelCapabilities = CAPS) -> None:
        self.capabilities = capabilities
        self.reports: list[PlaybackReport] = []
        self.stop_reason: str | None = None

    def report_playback(self, report: PlaybackReport) -> None:
        self.reports.append(report)

    def request_stop(self, reason: str = "client_disconnect") -> None:
        self.stop_reason = reason

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
