"""Synthetic speech out, energy-based voice activity detection in.

The service's only audio format that the simulator speaks is ``audio/pcm``:
PCM16 little-endian, mono, 24 kHz (PROTOCOLS.md §1.2; the openai param type
``AudioPCM.rate`` is ``Literal[24000]``). We cannot synthesize words or
recognise them, so:

* a reply is a tone whose length grows with its text (``ms_per_char``, capped),
  cut into deltas of 50-150 ms like the real service's (PROTOCOLS.md §6: a
  capture shows 100 and 150 ms deltas);
* speech in is anything louder than an RMS threshold, turns end after
  ``silence_duration_ms`` of quiet, as ``server_vad`` does on energy
  (``openai.types.realtime.realtime_audio_input_turn_detection_param.ServerVad``).

Pure Python (``array``), so the ``simulators`` extra needs no numpy.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator, Sequence
from typing import Literal

import attrs

__all__ = [
    "BYTES_PER_MS",
    "SAMPLE_RATE",
    "EnergyVAD",
    "VadEvent",
    "chunk_plan",
    "loud",
    "pcm_ms",
    "rms",
    "silence",
    "speech_ms",
    "tone",
]

SAMPLE_RATE = 24_000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # 48: PCM16 mono
VAD_FRAME_MS = 20
VAD_RMS_PER_THRESHOLD = 0.04
"""``turn_detection.threshold`` (0..1, default 0.5) times this is the RMS (of full scale) that counts as speech:
0.02 by default, about -34 dBFS."""

_TONE_HZ = 400  # 60 samples per period at 24 kHz: the period tiles exactly.
_LITTLE_ENDIAN = sys.byteorder == "little"


def pcm_ms(pcm: bytes | int) -> float:
    """Duration in milliseconds of PCM16 24 kHz mono (bytes or a byte count)."""
    n = pcm if isinstance(pcm, int) else len(pcm)
    return n / BYTES_PER_MS


def _to_bytes(samples: array[int]) -> bytes:
    if not _LITTLE_ENDIAN:
        samples.byteswap()
    return samples.tobytes()


def tone(ms: int, *, amplitude: float = 0.25, hz: int = _TONE_HZ) -> bytes:
    """``ms`` of a sine tone, PCM16 LE 24 kHz: the simulator's voice."""
    period = SAMPLE_RATE // hz
    one = array("h", (round(amplitude * 32767 * math.sin(2 * math.pi * i / period)) for i in range(period)))
    n = ms * SAMPLE_RATE // 1000
    reps, rest = divmod(n, period)
    return _to_bytes(one * reps + one[:rest])


def loud(ms: int, *, amplitude: float = 0.3) -> bytes:
    """``ms`` of audio that ``server_vad`` takes for speech (for tests driving the simulator)."""
    return tone(ms, amplitude=amplitude, hz=200)


def silence(ms: int) -> bytes:
    """``ms`` of digital silence."""
    return bytes(ms * BYTES_PER_MS)


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


def chunk_plan(total_ms: int, pattern: Sequence[int] = (100, 150, 50, 125, 75)) -> list[int]:
    """Split ``total_ms`` into delta lengths, each 50-150 ms (only a total under 50 ms gives a shorter one)."""
    sizes: list[int] = []
    remaining = total_ms
    i = 0
    while remaining > 0:
        size = pattern[i % len(pattern)]
        i += 1
        if remaining <= 150:
            size = remaining
        elif remaining - size < 50:
            size = remaining - 50
        sizes.append(size)
        remaining -= size
    return sizes


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
    """A turn boundary on the session's audio clock (ms of audio appended since the connection opened)."""

    kind: Literal["started", "stopped"]
    at_ms: int


class EnergyVAD:
    """``server_vad`` on energy: speech starts at the first loud frame, stops after ``silence_duration_ms`` of quiet.

    ``audio_start_ms`` includes ``prefix_padding_ms`` and ``audio_end_ms`` includes
    the silence, as the service documents (``InputAudioBufferSpeechStartedEvent``,
    ``InputAudioBufferSpeechStoppedEvent`` docstrings).
    """

    def __init__(self, *, threshold: float = 0.5, prefix_padding_ms: int = 300, silence_duration_ms: int = 500) -> None:
        self.rms_threshold = threshold * VAD_RMS_PER_THRESHOLD
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.clock_ms = 0.0
        self.floor_ms = 0.0
        self.speaking = False
        self._quiet_ms = 0.0
        self._pending = b""

    def reset(self, floor_ms: float | None = None) -> None:
        """Forget any speech in progress (buffer cleared or committed); ``floor_ms`` bounds the next start."""
        self.speaking = False
        self._quiet_ms = 0.0
        self.floor_ms = self.clock_ms if floor_ms is None else floor_ms

    def feed(self, pcm: bytes) -> Iterator[VadEvent]:
        """Advance the clock by ``pcm`` and yield the turn boundaries it contains."""
        data = self._pending + pcm
        frame = VAD_FRAME_MS * BYTES_PER_MS
        whole = len(data) - len(data) % frame
        self._pending = data[whole:]
        for offset in range(0, whole, frame):
            start = self.clock_ms
            self.clock_ms += VAD_FRAME_MS
            is_loud = rms(data[offset : offset + frame]) >= self.rms_threshold
            if not self.speaking and is_loud:
                self.speaking = True
                self._quiet_ms = 0.0
                yield VadEvent("started", int(max(self.floor_ms, start - self.prefix_padding_ms)))
            elif self.speaking and is_loud:
                self._quiet_ms = 0.0
            elif self.speaking:
                self._quiet_ms += VAD_FRAME_MS
                if self._quiet_ms >= self.silence_duration_ms:
                    self.speaking = False
                    self._quiet_ms = 0.0
                    yield VadEvent("stopped", int(self.clock_ms))
