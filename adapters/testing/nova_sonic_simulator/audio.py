"""Audio for the simulated model: 16 kHz PCM16 in (turn detection on energy), 24 kHz PCM16 out (a tone).

The model cannot hear words, so a spoken turn is "anything louder than a
threshold"; it ends after a pause whose length follows the session's
``endpointingSensitivity`` (Nova 2: HIGH ends turns soonest). The pause lengths
are our choice: AWS documents the setting's order, not milliseconds.
Pure Python (``array``), no numpy.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterator
from typing import Literal

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
VAD_FRAME_MS = 20
VAD_RMS = 0.02
"""RMS (fraction of full scale) that counts as speech: about -34 dBFS."""
ENDPOINTING_SILENCE_MS = {"HIGH": 300, "MEDIUM": 500, "LOW": 800}
"""Quiet that ends a spoken turn, per ``endpointingSensitivity`` (MEDIUM when the session does not say)."""

_LITTLE_ENDIAN = sys.byteorder == "little"


def _bytes_per_ms(rate: int) -> int:
    return rate * 2 // 1000


def pcm_ms(pcm: bytes | int, rate: int = INPUT_RATE) -> float:
    """Duration in milliseconds of mono PCM16 at ``rate`` (bytes or a byte count)."""
    n = pcm if isinstance(pcm, int) else len(pcm)
    return n / _bytes_per_ms(rate)


def tone(ms: int, *, rate: int = OUTPUT_RATE, hz: int = 400, amplitude: float = 0.25) -> bytes:
    """``ms`` of a sine tone, PCM16 LE mono: the simulator's voice (and, louder, a test's "speech")."""
    n = ms * rate // 1000
    samples = array("h", (round(amplitude * 32767 * math.sin(2 * math.pi * hz * i / rate)) for i in range(n)))
    if not _LITTLE_ENDIAN:
        samples.byteswap()
    return samples.tobytes()


def loud(ms: int, *, rate: int = INPUT_RATE) -> bytes:
    """``ms`` of 16 kHz audio the simulator's turn detection takes for speech."""
    return tone(ms, rate=rate, hz=200, amplitude=0.3)


def silence(ms: int, *, rate: int = INPUT_RATE) -> bytes:
    """``ms`` of 16 kHz digital silence."""
    return bytes(ms * _bytes_per_ms(rate))


def rms(pcm: bytes) -> float:
    """Root mean square of PCM16 LE, as a fraction of full scale (0..1)."""
    usable = len(pcm) - len(pcm) % 2
    if usable == 0:
        return 0.0
    samples = array("h", pcm[:usable])
    if not _LITTLE_ENDIAN:
        samples.byteswap()
    return math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768


class EnergyVAD:
    """Speech starts at the first loud 20 ms frame and stops after ``silence_ms`` of quiet."""

    def __init__(self, silence_ms: int) -> None:
        self.silence_ms = silence_ms
        self.speaking = False
        self.clock_ms = 0
        self._quiet_ms = 0
        self._pending = b""

    def feed(self, pcm: bytes) -> Iterator[Literal["started", "stopped"]]:
        """Advance by ``pcm`` (16 kHz) and yield the turn boundaries it contains."""
        data = self._pending + pcm
        frame = VAD_FRAME_MS * _bytes_per_ms(INPUT_RATE)
        whole = len(data) - len(data) % frame
        self._pending = data[whole:]
        for offset in range(0, whole, frame):
            self.clock_ms += VAD_FRAME_MS
            is_loud = rms(data[offset : offset + frame]) >= VAD_RMS
            if is_loud:
                self._quiet_ms = 0
                if not self.speaking:
                    self.speaking = True
                    yield "started"
            elif self.speaking:
                self._quiet_ms += VAD_FRAME_MS
                if self._quiet_ms >= self.silence_ms:
                    self.speaking = False
                    self._quiet_ms = 0
                    yield "stopped"
