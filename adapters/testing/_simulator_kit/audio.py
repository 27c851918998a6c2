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
    "EnergyVAD",
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
    groups: list[list[str]] = [[] for _ in range(max(parts, 1))]
    for i, word in enumerate(words):
        groups[i * len(groups) // max(len(words), 1)].append(word)
    return ["".join(group) for group in groups]  # joined once: += per word is quadratic in a long text


@attrs.frozen
class VadEvent:
    """A turn boundary at ``at_ms`` of input audio since the connection opened (Nova reads only the kind)."""

    kind: Literal["started", "stopped"]
    at_ms: int


class EnergyVAD:
    """Turn detection on energy: speech starts at the first loud frame, stops after ``silence_ms`` of quiet.

    Every simulator's detector is this one with its service's numbers (each
    ``audio`` module's ``EnergyVAD`` only sets them). A start is reported at the
    loud frame's start minus ``prefix_padding_ms`` (OpenAI's ``audio_start_ms``;
    0 elsewhere), never before :attr:`floor_ms` (audio already cleared or
    committed); a stop at the end of the frame that completed the silence. Times
    are ms of input since the start (:attr:`clock_ms`, which a session may carry
    over to a new detector). A partial frame waits for the next chunk; if the
    rate changes, it is dropped, since its samples belong to no frame at the new rate.
    """

    def __init__(self, *, rms_threshold: float, silence_ms: int, rate: int, prefix_padding_ms: int = 0) -> None:
        self.rms_threshold = rms_threshold
        self.silence_ms = silence_ms
        self.prefix_padding_ms = prefix_padding_ms
        self.clock_ms = 0.0
        self.floor_ms = 0.0
        self.speaking = False
        self._quiet_ms = 0.0
        self._pending = b""
        self._rate = rate

    def reset(self, *, floor_ms: float | None = None, drop_pending: bool = False) -> None:
        """Forget any speech in progress; the next start is reported no earlier than ``floor_ms`` (default: now).

        With ``drop_pending``, the partial frame goes too.
        """
        self.speaking = False
        self._quiet_ms = 0.0
        self.floor_ms = self.clock_ms if floor_ms is None else floor_ms
        if drop_pending:
            self._pending = b""

    def feed(self, pcm: bytes, rate: int | None = None) -> Iterator[VadEvent]:
        """Advance the clock by ``pcm`` (PCM16 at ``rate``, by default the last one) and yield its turn boundaries."""
        if rate is None:
            rate = self._rate
        elif rate != self._rate:
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
                    start = self.clock_ms - VAD_FRAME_MS - self.prefix_padding_ms
                    yield VadEvent("started", int(max(self.floor_ms, start)))
            elif self.speaking:
                self._quiet_ms += VAD_FRAME_MS
                if self._quiet_ms >= self.silence_ms:
                    self.speaking = False
                    self._quiet_ms = 0.0
                    yield VadEvent("stopped", int(self.clock_ms))
