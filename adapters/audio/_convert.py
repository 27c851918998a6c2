"""Streaming conversion of 16-bit PCM between sample rates and channel counts.

Used when a device refuses the model's format: the stream opens at a rate and
channel count the device accepts, and every block is converted on the event
loop (never in the device's callback). Rates are changed with soxr (the SoX
resampler, "HQ" quality), one stream per run of audio so the filter's state
carries over block boundaries: no clicks, and the speed never changes.
Channels are mixed down by averaging, up by copying.
"""

from __future__ import annotations

import logging
from typing import Any

from adapters.audio._errors import AudioUnavailableError
from ports.audio import AudioFormat

__all__ = ["PcmConverter"]

logger = logging.getLogger("bidi_core.adapters.audio")


def _numpy_and_soxr() -> tuple[Any, Any]:
    try:
        import numpy
        import soxr  # type: ignore[import-untyped]
    except ImportError as exc:
        raise AudioUnavailableError(
            f"converting audio between formats needs numpy and soxr ({exc.name} is missing): "
            "pip install 'bidi-core[audio]'"
        ) from exc
    return numpy, soxr


class PcmConverter:
    """Converts a stream of ``source`` PCM into ``target`` PCM, block by block.

    :meth:`convert` may return less audio than it was given (the resampler
    holds back a few milliseconds); :meth:`flush` returns the rest at the end
    of a run of audio and makes the converter ready for the next one.
    """

    def __init__(self, source: AudioFormat, target: AudioFormat) -> None:
        self.source = source
        self.target = target
        self._np, soxr = _numpy_and_soxr()
        self._resampler: Any = None
        if source.sample_rate != target.sample_rate:
            # Differing channel counts are mixed to mono first, so the resampler sees one channel.
            channels = source.channels if source.channels == target.channels else 1
            self._resampler = soxr.ResampleStream(
                source.sample_rate, target.sample_rate, channels, dtype="int16", quality="HQ"
            )
        self._tail = b""  # an incomplete frame left over from the last block

    @property
    def identity(self) -> bool:
        return self.source == self.target

    def convert(self, data: bytes) -> bytes:
        """Convert one block; returns what is ready (possibly nothing yet)."""
        return self._run(data, last=False)

    def flush(self) -> bytes:
        """The audio still held back, then a fresh start for the next run."""
        out = self._run(b"", last=True)
        if self._resampler is not None:
            self._resampler.clear()
        return out

    def reset(self) -> None:
        """Forget what is held back (an interruption discards it anyway)."""
        self._tail = b""
        if self._resampler is not None:
            self._resampler.clear()

    def _run(self, data: bytes, *, last: bool) -> bytes:
        np = self._np
        frame = self.source.bytes_per_frame
        if self._tail:
            data = self._tail + data
        usable = len(data) - len(data) % frame
        self._tail = data[usable:]
        samples = np.frombuffer(data, dtype="<i2", count=usable // 2).reshape(-1, self.source.channels)
        src_ch, dst_ch = self.source.channels, self.target.channels
        if src_ch != dst_ch and src_ch > 1:
            # Mix down to mono (the average, so a stereo microphone is not twice as loud).
            samples = (samples.astype(np.int32).sum(axis=1) // src_ch).astype("<i2").reshape(-1, 1)
        if self._resampler is not None and (len(samples) or last):
            channels = samples.shape[1]
            block = samples[:, 0] if channels == 1 else samples
            resampled = self._resampler.resample_chunk(np.ascontiguousarray(block), last=last)
            samples = np.asarray(resampled, dtype="<i2").reshape(-1, channels)
        if samples.shape[1] != dst_ch:
            samples = np.repeat(samples, dst_ch, axis=1)  # mono, copied to every channel
        return bytes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
