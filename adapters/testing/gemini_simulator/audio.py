"""Synthetic speech out, energy-based voice activity detection in, at any PCM16 rate.

Gemini Live takes PCM16 little-endian mono input at the rate its MIME type names
(``audio/pcm;rate=16000``, 16 kHz being the native rate) and speaks PCM16 at
24 kHz (PROTOCOLS.md §2.2). We cannot synthesize or recognise words, so a reply
is a tone whose length grows with its text, and speech in is anything louder
than an RMS threshold; a turn ends after ``silence_duration_ms`` of quiet (the
``automaticActivityDetection`` knobs of the setup). The approach is the OpenAI
simulator's (``adapters/testing/openai_simulator/audio.py``), made
rate-parametric; it is copied, not imported, so the two simulators evolve apart.

Pure Python (``array``), so the ``simulators`` extra needs no numpy.
"""

from __future__ import annotations

import math
import re
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Literal

import attrs

__all__ = [
    "INPUT_RATE",
    "OUTPUT_RATE",
    "EnergyVAD",
    "VadEvent",
    "chunk_plan",
    "loud",
    "pcm_rate",
    "rms",
    "silence",
    "speech_ms",
    "split_words",
    "tone",
]

INPUT_RATE = 16_000
OUTPUT_RATE = 24_000
VAD_FRAME_MS = 20
SPEECH_RMS = 0.02
"""RMS (of full scale) that counts as speech: about -34 dBFS; ``loud()`` is far above, ``silence()`` is 0."""

_LITTLE_ENDIAN = sys.byteorder == "little"
_RATE = re.compile(r"(?:^|;)\s*rate\s*=\s*(\d+)\s*(?:;|$)")


def pcm_rate(mime_type: str) -> int | None:
    """The sample rate of an ``audio/pcm[;rate=N]`` MIME type (16 kHz when absent); None if not PCM."""
    base, _, params = mime_type.partition(";")
    if base.strip().lower() not in ("audio/pcm", "audio/l16"):
        return None
    match = _RATE.search(";" + params)
    return int(match.group(1)) if match else INPUT_RATE


def _to_bytes(samples: array[int]) -> bytes:
    if not _LITTLE_ENDIAN:
        samples.byteswap()
    return samples.tobytes()


def tone(ms: int, *, rate: int = OUTPUT_RATE, amplitude: float = 0.25, hz: int = 400) -> bytes:
    """``ms`` of a sine tone, PCM16 LE mono at ``rate``: the simulator's voice (24 kHz by default)."""
    n = ms * rate // 1000
    scale = amplitude * 32767
    step = 2 * math.pi * hz / rate
    if rate % hz:
        return _to_bytes(array("h", (round(scale * math.sin(step * i)) for i in range(n))))
    period = rate // hz  # the period tiles exactly: build one and repeat it
    one = array("h", (round(scale * math.sin(step * i)) for i in range(period)))
    reps, rest = divmod(n, period)
    return _to_bytes(one * reps + one[:rest])


def loud(ms: int, *, rate: int = INPUT_RATE, amplitude: float = 0.3) -> bytes:
    """``ms`` of audio the simulator's VAD takes for speech, PCM16 at ``rate`` (16 kHz: Gemini's input)."""
    return tone(ms, rate=rate, amplitude=amplitude, hz=200)


def silence(ms: int, *, rate: int = INPUT_RATE) -> bytes:
    """``ms`` of digital silence, PCM16 at ``rate`` (16 kHz by default)."""
    return bytes(ms * rate // 1000 * 2)


def rms(pcm: bytes) -> float:
    """Root mean square of PCM16 LE, as a fraction of full scale (0..1)."""
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


def chunk_plan(total_ms: int, pattern: Sequence[int] = (100, 40, 160, 80, 120)) -> list[int]:
    """Split ``total_ms`` into chunk lengths of 20-200 ms (PROTOCOLS.md §6: the output chunk size is undocumented)."""
    sizes: list[int] = []
    remaining = total_ms
    i = 0
    while remaining > 0:
        size = min(pattern[i % len(pattern)], remaining)
        i += 1
        if 0 < remaining - size < 20:
            size = remaining
        sizes.append(size)
        remaining -= size
    return sizes


def split_words(text: str, parts: int) -> list[str]:
    """Cut ``text`` into ``parts`` pieces on word boundaries; the pieces join back to ``text`` (some may be empty)."""
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
    """A turn boundary, at ``at_ms`` of input audio since the connection opened."""

    kind: Literal["started", "stopped"]
    at_ms: int


class EnergyVAD:
    """Activity detection on energy: speech starts at the first loud frame, stops after ``silence_duration_ms`` quiet.

    The rate may change between chunks (each carries its MIME type); frames are cut per rate.
    """

    def __init__(self, *, silence_duration_ms: int = 500) -> None:
        self.silence_duration_ms = silence_duration_ms
        self.clock_ms = 0.0
        self.speaking = False
        self._quiet_ms = 0.0
        self._pending = b""
        self._rate = INPUT_RATE

    def reset(self) -> None:
        """Forget any speech in progress."""
        self.speaking = False
        self._quiet_ms = 0.0
        self._pending = b""

    def feed(self, pcm: bytes, rate: int) -> Iterator[VadEvent]:
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
            is_loud = rms(data[offset : offset + frame]) >= SPEECH_RMS
            if not self.speaking and is_loud:
                self.speaking = True
                self._quiet_ms = 0.0
                yield VadEvent("started", int(self.clock_ms - VAD_FRAME_MS))
            elif self.speaking and is_loud:
                self._quiet_ms = 0.0
            elif self.speaking:
                self._quiet_ms += VAD_FRAME_MS
                if self._quiet_ms >= self.silence_duration_ms:
                    self.speaking = False
                    self._quiet_ms = 0.0
                    yield VadEvent("stopped", int(self.clock_ms))
