"""G.711 mu-law, written from the ITU-T G.711 recommendation's segment table, in pure Python.

The carrier simulator encodes the caller's voice and decodes what it plays
with this, not with the library the bridge uses: a mistake in either shows up
as a difference. Encoding takes the 14-bit sample (the 16-bit one shifted right
by two, rounding down), its magnitude clipped at 8159 and biased by 33, finds
the segment (eight, each twice as wide as the one before), keeps four mantissa
bits and inverts the byte (the sign bit stays 0 for negative samples).
Decoding inverts it, in 16-bit units (bias 0x84).
"""

from __future__ import annotations

import sys
from array import array

__all__ = ["SILENCE", "decode", "encode"]

SILENCE = 0xFF
"""Mu-law's zero (a positive zero)."""

_BIAS = 0x84
_BIAS14 = 33
_CLIP14 = 8159
_LITTLE = sys.byteorder == "little"


def _encode_sample(sample: int) -> int:
    value = sample >> 2
    mask = 0x7F if value < 0 else 0xFF
    magnitude = min(-value if value < 0 else value, _CLIP14) + _BIAS14
    segment = max(magnitude.bit_length() - 6, 0)
    if segment > 7:  # beyond the last segment: its loudest code
        return 0x7F ^ mask
    mantissa = (magnitude >> (segment + 1)) & 0x0F
    return ((segment << 4) | mantissa) ^ mask


def _decode_byte(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -magnitude if sign else magnitude


_DECODE = array("h", (_decode_byte(b) for b in range(256)))


def encode(pcm: bytes) -> bytes:
    """PCM16 little-endian to mu-law (an odd trailing byte is ignored)."""
    samples = array("h", pcm[: len(pcm) - len(pcm) % 2])
    if not _LITTLE:
        samples.byteswap()
    return bytes(_encode_sample(s) for s in samples)


def decode(mulaw: bytes) -> bytes:
    """Mu-law to PCM16 little-endian."""
    samples = array("h", (_DECODE[b] for b in mulaw))
    if not _LITTLE:
        samples.byteswap()
    return samples.tobytes()
