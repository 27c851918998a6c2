"""Phone audio: G.711 mu-law at 8 kHz on the carrier's side, the model's PCM16 on ours.

Twilio's Media Streams carry mu-law, 8000 Hz, mono, headerless
(docs/protocols/twilio.md#audio-format). Mu-law is the standard library's
``audioop`` up to Python 3.12 and the ``audioop-lts`` package, its maintained
continuation with the same C code and API, from 3.13 (where ``audioop`` is gone);
the ``telephony`` extra installs the one the interpreter needs. Rates change
with soxr through the audio adapter's streaming converter (one filter state per
run of audio, so block edges make no clicks).
"""

from __future__ import annotations

import sys
import warnings

from adapters.audio._convert import PcmConverter
from ports.audio import AudioFormat

if sys.version_info >= (3, 13):  # pragma: no cover - the CI's interpreter decides
    import audioop  # the audioop-lts package
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in 3.11 and 3.12, kept there
        import audioop

__all__ = ["CARRIER_FORMAT", "MULAW_BYTES_PER_MS", "CallerAudio", "ReplyAudio", "mulaw_to_pcm16", "pcm16_to_mulaw"]

CARRIER_FORMAT = AudioFormat(8000, 1)
"""PCM16 at the carrier's rate: what mu-law decodes to."""

MULAW_BYTES_PER_MS = 8
"""One byte per sample at 8 kHz."""


def mulaw_to_pcm16(mulaw: bytes) -> bytes:
    """G.711 mu-law bytes to PCM16 little-endian, sample for sample."""
    return audioop.ulaw2lin(mulaw, 2)


def pcm16_to_mulaw(pcm: bytes) -> bytes:
    """PCM16 little-endian to G.711 mu-law (an odd trailing byte is ignored)."""
    return audioop.lin2ulaw(pcm[: len(pcm) - len(pcm) % 2], 2)


class CallerAudio:
    """The caller's mu-law frames, as PCM16 in the model's input format."""

    def __init__(self, model: AudioFormat) -> None:
        self.model = model
        self._converter = PcmConverter(CARRIER_FORMAT, model)

    def decode(self, mulaw: bytes) -> bytes:
        """One frame; the resampler may hold back a few milliseconds (they come with the next frames)."""
        return self._converter.convert(mulaw_to_pcm16(mulaw))


class ReplyAudio:
    """The model's PCM16 (any rate, mono or stereo), as mu-law cut into ``chunk_ms`` chunks.

    One run of audio (a response) at a time: :meth:`feed` returns the whole
    chunks that are ready and keeps the rest; :meth:`flush` ends the run and
    returns what was held back, the last chunk possibly shorter.
    """

    def __init__(self, chunk_ms: int) -> None:
        self.chunk_bytes = chunk_ms * MULAW_BYTES_PER_MS
        self._converter: PcmConverter | None = None
        self._pending = b""

    def feed(self, pcm: bytes, fmt: AudioFormat) -> list[bytes]:
        chunks = []
        if self._converter is None or self._converter.source != fmt:
            chunks = self.flush()
            self._converter = PcmConverter(fmt, CARRIER_FORMAT)
        self._pending += pcm16_to_mulaw(self._converter.convert(pcm))
        return chunks + self._whole_chunks()

    def flush(self) -> list[bytes]:
        if self._converter is not None:
            self._pending += pcm16_to_mulaw(self._converter.flush())
            self._converter = None
        chunks = self._whole_chunks()
        if self._pending:
            chunks.append(self._pending)
            self._pending = b""
        return chunks

    def reset(self) -> None:
        """Forget the run (an interruption discards it)."""
        self._converter = None
        self._pending = b""

    def _whole_chunks(self) -> list[bytes]:
        size = self.chunk_bytes
        whole = len(self._pending) - len(self._pending) % size
        chunks = [self._pending[i : i + size] for i in range(0, whole, size)]
        self._pending = self._pending[whole:]
        return chunks
