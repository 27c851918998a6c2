"""PCM16 mono audio for simulated models: a tone for a voice, energy for hearing.

No simulated model can synthesize or recognise words, so every one speaks a sine
tone whose length follows its text and hears "speech" wherever the input is
louder than an RMS threshold, a turn ending after some quiet. The providers
differ in rates, thresholds and how they report a turn boundary, not in that
logic: each simulator's ``audio`` module keeps its service's numbers and passes
them here. Pure Python (``array``), so the ``simulators`` extra needs no numpy.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator
from typing import Literal

import attrs

__all__ = [
    "VAD_FRAME_MS",
    "EnergyTurns",
    "VadEvent",
    "pcm_ms",
    "rms",
    "silence",
    "speech_ms",
    "split_words",
    "tone",
]

VAD_FRAME_MS = 20
"""Turn detection judges the input 20 ms at a time."""

_LITTLE_ENDIAN = sys.byteorder == "little"


def _to_bytes(samples: array[int]) -> bytes:
    if not _LITTLE_ENDIAN:
        samples.byteswap()
    return samples.tobytes()


def pcm_ms(pcm: bytes | int, rate: int) -> float:
    """Duration in milliseconds of PCM16 mono at ``rate`` (bytes or a byte count)."""
    n = pcm if isinstance(pcm, int) else len(pcm)
    return n / (rate * 2 // 1000)


def tone(ms: int, *, rate: int, amplitude: float, hz: int) -> bytes:
    """``ms`` of a sine tone, PCM16 LE mono at ``rate``.

    When ``hz`` divides ``rate`` one period is computed and repeated: the tone
    is exactly periodic and a long reply costs one period of ``math.sin``.
    """
    n = ms * rate // 1000
    scale = amplitude * 32767
    if rate % hz:
        return _to_bytes(array("h", (round(scale * math.sin(2 * math.pi * hz * i / rate)) for i in range(n))))
    period = rate // hz
    one = array("h", (round(scale * math.sin(2 * math.pi * i / period)) for i in range(period)))
    reps, rest = divmod(n, period)
    return _to_bytes(one * reps + one[:rest])


def silence(ms: int, *, rate: int) -> bytes:
    """``ms`` of digital silence, PCM16 at ``rate``: as many samples as :func:`tone` makes."""
    return bytes(ms * rate // 1000 * 2)


def rms(pcm: bytes) -> float:
    """Root mean square of PCM16 LE, as a fraction of full scale (0..1); a trailing odd byte is ignored."""
    usable = len(pcm) - len(pcm) % 2
    if usable == 0:
        return 0.0
    samples = array("h", pcm[:usable])
    if not _LITTLE_ENDIAN:
        samples.byteswap()
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768


def speech_ms(text: str, *, ms_per_char: int = 60, min_ms: int = 200, max_ms: int = 10_000) -> int:
    """How long the simulator "speaks" ``text``: proportional to its length, bounded."""
    return max(min_ms, min(max_ms, ms_per_char * len(text)))


def split_words(text: str, parts: int) -> list[str]:
    """Cut ``text`` into ``parts`` pieces on word boundaries; the pieces join back to ``text``.

    Pieces may be empty when there are fewer words than parts.
    """
    words: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if ch.isspace() and i + 1 < len(text) and not text[i + 1].isspace():
            words.append(text[start : i + 1])
            start = i + 1
    if start < len(text):
        words.append(text[start:])
    pieces = [""] * max(parts, 1)
    for i, word in enumerate(words):
        pieces[i * len(pieces) // max(len(words), 1)] += word
    return pieces


@attrs.frozen
class VadEvent:
    """A turn boundary at ``at_ms`` of input audio since the connection opened, for services that report when."""

    kind: Literal["started", "stopped"]
    at_ms: int


class EnergyTurns:
    """Turn detection on energy: speech starts at the first loud frame, stops after ``silence_ms`` of quiet.

    It only says *that* a boundary happened, at the end of which frame
    (:attr:`clock_ms`, in ms of input since the start, when the boundary is
    yielded): each service reports boundaries its own way (OpenAI with padding
    and a floor, Gemini at the frame's start, Nova with no time at all), so each
    simulator's detector wraps this one. A partial frame waits for the next
    chunk; if the rate changes, it is dropped, since its samples belong to no
    frame at the new rate.
    """

    def __init__(self, *, rms_threshold: float, silence_ms: int, rate: int) -> None:
        self.rms_threshold = rms_threshold
        self.silence_ms = silence_ms
        self.clock_ms = 0.0
        self.speaking = False
        self._quiet_ms = 0.0
        self._pending = b""
        self._rate = rate

    def reset(self, *, drop_pending: bool = False) -> None:
        """Forget any speech in progress; with ``drop_pending``, the partial frame too."""
        self.speaking = False
        self._quiet_ms = 0.0
        if drop_pending:
            self._pending = b""

    def feed(self, pcm: bytes, rate: int) -> Iterator[Literal["started", "stopped"]]:
        """Advance the clock by ``pcm`` (PCM16 at ``rate``) and yield the turn boundaries it contains."""
        if rate != self._rate:
            self._pending = b""
            self._rate = rate
        data = self._pending + pcm
        frame = max(2, VAD_FRAME_MS * rate // 1000 * 2)
        whole = len(data) - len(data) % frame
        self._pending = data[whole:]
        for offset in range(0, whole, frame):
            self.clock_ms += VAD_FRAME_MS
            is_loud = rms(data[offset : offset + frame]) >= self.rms_threshold
            if is_loud:
                self._quiet_ms = 0.0
                if not self.speaking:
                    self.speaking = True
                    yield "started"
            elif self.speaking:
                self._quiet_ms += VAD_FRAME_MS
                if self._quiet_ms >= self.silence_ms:
                    self.speaking = False
                    self._quiet_ms = 0.0
                    yield "stopped"
