"""The caller's voice: a tone (what an energy detector takes for speech), or a WAV file at 8 kHz."""

from __future__ import annotations

import math
import sys
import wave
from array import array
from pathlib import Path

__all__ = ["read_wav_8k", "tone_8k"]


def tone_8k(ms: int, *, hz: int = 200, amplitude: float = 0.3) -> bytes:
    """``ms`` of a sine tone, PCM16 LE mono at 8 kHz."""
    n = ms * 8
    samples = array("h", (round(amplitude * 32767 * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n)))
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


def read_wav_8k(path: str | Path) -> bytes:
    """A mono 16-bit 8 kHz WAV file's samples (what the caller says); anything else is a ValueError."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2 or wav.getframerate() != 8000:
            raise ValueError(f"{path}: the caller's WAV must be mono, 16-bit, 8000 Hz")
        return wav.readframes(wav.getnframes())
