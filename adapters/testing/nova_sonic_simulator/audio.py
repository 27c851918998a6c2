"""Audio for the simulated model: 16 kHz PCM16 in (turn detection on energy), 24 kHz PCM16 out (a tone).

The model cannot hear words, so a spoken turn is "anything louder than a
threshold"; it ends after a pause whose length follows the session's
``endpointingSensitivity`` (Nova 2: HIGH ends turns soonest). The pause lengths
are our choice: AWS documents the setting's order, not milliseconds. The tone,
the energy measure and the frame-by-frame turn logic are every simulator's
(``adapters.testing._simulator_kit.audio``); this module holds Nova's rates,
threshold and pause lengths.
"""

from __future__ import annotations

from adapters.testing._simulator_kit import audio as kit
from adapters.testing._simulator_kit.audio import rms

__all__ = [
    "INPUT_RATE",
    "OUTPUT_RATE",
    "ENDPOINTING_SILENCE_MS",
    "EnergyVAD",
    "loud",
    "pcm_ms",
    "rms",
    "silence",
    "tone",
]

INPUT_RATE = 16_000
OUTPUT_RATE = 24_000
VAD_RMS = 0.02
"""RMS (fraction of full scale) that counts as speech: about -34 dBFS."""
ENDPOINTING_SILENCE_MS = {"HIGH": 300, "MEDIUM": 500, "LOW": 800}
"""Quiet that ends a spoken turn, per ``endpointingSensitivity`` (MEDIUM when the session does not say)."""


def pcm_ms(pcm: bytes | int, rate: int = INPUT_RATE) -> float:
    """Duration in milliseconds of mono PCM16 at ``rate`` (bytes or a byte count)."""
    return kit.pcm_ms(pcm, rate)


def tone(ms: int, *, rate: int = OUTPUT_RATE, hz: int = 400, amplitude: float = 0.25) -> bytes:
    """``ms`` of a sine tone, PCM16 LE mono: the simulator's voice (and, louder, a test's "speech")."""
    return kit.tone(ms, rate=rate, amplitude=amplitude, hz=hz)


def loud(ms: int, *, rate: int = INPUT_RATE) -> bytes:
    """``ms`` of 16 kHz audio the simulator's turn detection takes for speech."""
    return tone(ms, rate=rate, hz=200, amplitude=0.3)


def silence(ms: int, *, rate: int = INPUT_RATE) -> bytes:
    """``ms`` of 16 kHz digital silence."""
    return kit.silence(ms, rate=rate)


class EnergyVAD(kit.EnergyVAD):
    """The kit's detector at 16 kHz with Nova's threshold; Nova's events carry no audio offsets, only the kind."""

    def __init__(self, silence_ms: int) -> None:
        super().__init__(rms_threshold=VAD_RMS, silence_ms=silence_ms, rate=INPUT_RATE)
