"""Synthetic speech out, energy-based voice activity detection in, at any PCM16 rate.

Gemini Live takes PCM16 little-endian mono input at the rate its MIME type names
(``audio/pcm;rate=16000``, 16 kHz being the native rate) and speaks PCM16 at
24 kHz (docs/protocols/gemini.md#audio-formats). We cannot synthesize or recognise words, so a reply
is a tone whose length grows with its text, and speech in is anything louder
than an RMS threshold; a turn ends after ``silence_duration_ms`` of quiet (the
``automaticActivityDetection`` knobs of the setup). The approach is every
simulator's (``adapters.testing._simulator_kit.audio``); this module holds
Gemini's rates, threshold, chunk sizes and MIME types.

Pure Python (``array``), so the ``simulators`` extra needs no numpy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from adapters.testing._simulator_kit import audio as kit
from adapters.testing._simulator_kit.audio import VadEvent, rms, speech_ms, split_words

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
SPEECH_RMS = 0.02
"""RMS (of full scale) that counts as speech: about -34 dBFS; ``loud()`` is far above, ``silence()`` is 0."""

_RATE = re.compile(r"(?:^|;)\s*rate\s*=\s*(\d+)\s*(?:;|$)")


def pcm_rate(mime_type: str) -> int | None:
    """The sample rate of an ``audio/pcm[;rate=N]`` MIME type (16 kHz when absent); None if not PCM."""
    base, _, params = mime_type.partition(";")
    if base.strip().lower() not in ("audio/pcm", "audio/l16"):
        return None
    match = _RATE.search(";" + params)
    return int(match.group(1)) if match else INPUT_RATE


def tone(ms: int, *, rate: int = OUTPUT_RATE, amplitude: float = 0.25, hz: int = 400) -> bytes:
    """``ms`` of a sine tone, PCM16 LE mono at ``rate``: the simulator's voice (24 kHz by default)."""
    return kit.tone(ms, rate=rate, amplitude=amplitude, hz=hz)


def loud(ms: int, *, rate: int = INPUT_RATE, amplitude: float = 0.3) -> bytes:
    """``ms`` of audio the simulator's VAD takes for speech, PCM16 at ``rate`` (16 kHz: Gemini's input)."""
    return tone(ms, rate=rate, amplitude=amplitude, hz=200)


def silence(ms: int, *, rate: int = INPUT_RATE) -> bytes:
    """``ms`` of digital silence, PCM16 at ``rate`` (16 kHz by default)."""
    return kit.silence(ms, rate=rate)


def chunk_plan(total_ms: int, pattern: Sequence[int] = (100, 40, 160, 80, 120)) -> list[int]:
    """Split ``total_ms`` into chunk lengths of 20-200 ms (undocumented: docs/protocols/gemini.md#chunk-sizes)."""
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


class EnergyVAD(kit.EnergyVAD):
    """Activity detection on energy: the kit's detector with Gemini's threshold, starts at the loud frame's start.

    The rate may change between chunks (each carries its MIME type); frames are cut per rate.
    """

    def __init__(self, *, silence_duration_ms: int = 500) -> None:
        super().__init__(rms_threshold=SPEECH_RMS, silence_ms=silence_duration_ms, rate=INPUT_RATE)
