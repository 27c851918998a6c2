"""Audio formats as the ports speak of them.

Inside the library audio is raw little-endian PCM in ``bytes``; a format says
how to read it. Adapters convert from and to the wire's encodings.
"""

from __future__ import annotations

from typing import Literal

import attrs

__all__ = ["AudioFormat"]


@attrs.frozen
class AudioFormat:
    """Sample rate, channel count and encoding of a PCM stream."""

    sample_rate: int = 16000
    channels: int = 1
    encoding: Literal["pcm16"] = "pcm16"

    @property
    def bytes_per_frame(self) -> int:
        return 2 * self.channels

    def duration_ms(self, audio: bytes) -> float:
        """How long ``audio`` lasts in this format."""
        return (len(audio) // self.bytes_per_frame) * 1000.0 / self.sample_rate

    def bytes_for_ms(self, ms: float) -> int:
        """Size in bytes of ``ms`` milliseconds, rounded down to whole frames."""
        return int(ms * self.sample_rate / 1000.0) * self.bytes_per_frame
