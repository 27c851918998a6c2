"""Audio formats as the ports speak of them, and the audio-device port.

Inside the library audio is raw little-endian PCM in ``bytes``; a format says
how to read it. Adapters convert from and to the wire's encodings.

:class:`AudioDevice` is what the audio adapter needs from an audio system
(PortAudio, a WAV file, a fake in tests): its devices, and streams whose
callbacks run on the device's own thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import attrs

__all__ = [
    "AudioDevice",
    "AudioDeviceInfo",
    "AudioFormat",
    "AudioStream",
    "InputCallback",
    "OutputCallback",
    "StreamConfig",
    "StreamKind",
]


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


# --------------------------------------------------------------------------- devices and streams

StreamKind: TypeAlias = Literal["input", "output"]
"""Which way a stream carries audio: from a microphone, or to speakers."""


@attrs.frozen
class AudioDeviceInfo:
    """One device an :class:`AudioDevice` can open streams on.

    ``index`` is what :class:`StreamConfig` names it by. A device may do both
    directions (``max_input_channels`` and ``max_output_channels`` both
    non-zero). ``default_input`` / ``default_output`` mark the system's
    default device of each direction.
    """

    index: int
    name: str
    host_api: str = ""
    max_input_channels: int = 0
    max_output_channels: int = 0
    default_sample_rate: float = 48000.0
    default_input: bool = False
    default_output: bool = False

    def max_channels(self, kind: StreamKind) -> int:
        """How many channels a stream of ``kind`` can have on this device (0: none)."""
        return self.max_input_channels if kind == "input" else self.max_output_channels


@attrs.frozen
class StreamConfig:
    """What to open: a direction, a device, a rate, a channel count and a block size.

    Samples are always 16-bit signed little-endian PCM (``pcm16``), frames
    interleaved. ``frames_per_buffer`` is how many frames each callback
    carries. ``device`` is an :attr:`AudioDeviceInfo.index`.
    """

    kind: StreamKind
    device: int
    sample_rate: int
    channels: int
    frames_per_buffer: int

    @property
    def format(self) -> AudioFormat:
        return AudioFormat(self.sample_rate, self.channels)


InputCallback: TypeAlias = Callable[[memoryview, int, bool], None]
"""Called on the device's thread with each captured block: ``(data, frames, overflowed)``.

``data`` is only valid during the call (copy what you keep). ``overflowed``
is True when the device dropped input before this block. The callback must
return quickly and must not block, wait for an event loop or raise.
"""

OutputCallback: TypeAlias = Callable[[memoryview, int, bool], None]
"""Called on the device's thread to fill each block: ``(out, frames, underflowed)``.

``out`` is writable and exactly ``frames`` frames long; whatever it holds
when the callback returns is played. ``underflowed`` is True when the device
ran dry before this block. Same rules as :data:`InputCallback`.
"""


@runtime_checkable
class AudioStream(Protocol):
    """An open, running stream. Its callback runs on a thread of the device's."""

    @property
    def config(self) -> StreamConfig:
        """What the stream was opened with."""
        ...

    @property
    def latency_s(self) -> float:
        """How long a block takes from the callback to the speaker (or from the microphone)."""
        ...

    def close(self) -> None:
        """Stop the stream and release the device, discarding what it still holds.

        Blocks until no callback is running and none will run again. Safe to
        call twice.
        """
        ...


@runtime_checkable
class AudioDevice(Protocol):
    """An audio system: the devices it has and how to open streams on them.

    PortAudio (``adapters.audio.PortAudioDevice``) in production, a WAV file
    or a fake in tests. Every method may block (device enumeration and
    opening a stream take milliseconds); the audio adapter calls them in a
    worker thread, never on the event loop.
    """

    def devices(self) -> Sequence[AudioDeviceInfo]:
        """Every device, inputs and outputs alike."""
        ...

    def default_device(self, kind: StreamKind) -> int | None:
        """The system's default device of ``kind``, or None if there is none."""
        ...

    def is_supported(self, config: StreamConfig) -> bool:
        """Whether :meth:`open` would accept ``config`` (rate, channels, device)."""
        ...

    def open_input(self, config: StreamConfig, callback: InputCallback) -> AudioStream:
        """Open and start a capture stream; ``callback`` gets every block."""
        ...

    def open_output(self, config: StreamConfig, callback: OutputCallback) -> AudioStream:
        """Open and start a playback stream; ``callback`` fills every block."""
        ...
