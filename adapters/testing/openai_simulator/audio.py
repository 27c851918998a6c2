"""Synthetic speech out, energy-based voice activity detection in.

The service's only audio format that the simulator speaks is ``audio/pcm``:
PCM16 little-endian, mono, 24 kHz (docs/protocols/openai.md#audio-formats; the openai param type
``AudioPCM.rate`` is ``Literal[24000]``). We cannot synthesize words or
recognise them, so:

* a reply is a tone whose length grows with its text (``ms_per_char``, capped),
  cut into deltas of 50-150 ms like the real service's (docs/protocols/openai.md#output-chunk-sizes: a
  capture shows 100 and 150 ms deltas);
* speech in is anything louder than an RMS threshold, turns end after
  ``silence_duration_ms`` of quiet, as ``server_vad`` does on energy
  (``openai.types.realtime.realtime_audio_input_turn_detection_param.ServerVad``).

The tone, the energy measure and the frame-by-frame turn logic are the other
simulators' too (``adapters.testing._simulator_kit.audio``); this module holds
what is OpenAI's: the 24 kHz rate, the threshold scale, the delta sizes, and
boundaries reported with ``prefix_padding_ms`` and a floor.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.testing._simulator_kit import audio as kit
from adapters.testing._simulator_kit.audio import VadEvent, rms, speech_ms
from adapters.testing._simulator_kit.audio import split_words as split_words  # the session imports it from here

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
VAD_RMS_PER_THRESHOLD = 0.04
"""``turn_detection.threshold`` (0..1, default 0.5) times this is the RMS (of full scale) that counts as speech:
0.02 by default, about -34 dBFS."""

_TONE_HZ = 400  # 60 samples per period at 24 kHz: the period tiles exactly.


def pcm_ms(pcm: bytes | int) -> float:
    """Duration in milliseconds of PCM16 24 kHz mono (bytes or a byte count)."""
    return kit.pcm_ms(pcm, SAMPLE_RATE)


def tone(ms: int, *, amplitude: float = 0.25, hz: int = _TONE_HZ) -> bytes:
    """``ms`` of a sine tone, PCM16 LE 24 kHz: the simulator's voice."""
    return kit.tone(ms, rate=SAMPLE_RATE, amplitude=amplitude, hz=hz)


def loud(ms: int, *, amplitude: float = 0.3) -> bytes:
    """``ms`` of audio that ``server_vad`` takes for speech (for tests driving the simulator)."""
    return tone(ms, amplitude=amplitude, hz=200)


def silence(ms: int) -> bytes:
    """``ms`` of digital silence."""
    return kit.silence(ms, rate=SAMPLE_RATE)


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


class EnergyVAD(kit.EnergyVAD):
    """``server_vad`` on energy, with the service's knobs: the kit's detector at 24 kHz.

    ``audio_start_ms`` includes ``prefix_padding_ms`` and ``audio_end_ms`` includes
    the silence, as the service documents (``InputAudioBufferSpeechStartedEvent``,
    ``InputAudioBufferSpeechStoppedEvent`` docstrings); ``threshold`` (0..1) scales
    to an RMS by :data:`VAD_RMS_PER_THRESHOLD`.
    """

    def __init__(self, *, threshold: float = 0.5, prefix_padding_ms: int = 300, silence_duration_ms: int = 500) -> None:
        super().__init__(
            rms_threshold=threshold * VAD_RMS_PER_THRESHOLD,
            silence_ms=silence_duration_ms,
            rate=SAMPLE_RATE,
            prefix_padding_ms=prefix_padding_ms,
        )
