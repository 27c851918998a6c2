"""Microphone and speakers: ``BidiAudioIO().input()`` and ``.output()``.

The same shape as the reference's ``BidiAudioIO``, on PortAudio through
sounddevice (``pip install 'bidi-core[audio]'``; PortAudio itself is
``libportaudio2`` on Debian/Ubuntu, ``brew install portaudio`` on macOS)::

    audio = BidiAudioIO()
    await agent.run(inputs=[audio.input()], outputs=[audio.output()])

The streams open at the model's audio formats (``agent.capabilities``);
when a device refuses a rate, the audio is resampled (soxr), never played at
the wrong speed. The device's callbacks never wait for the event loop: the
microphone's blocks are handed over through a bounded buffer (the oldest
dropped and counted when it is full), the speaker's are taken from one
(silence when it is empty). An interruption silences the speaker from the
very next block, and the output tells the conversation how much of each
response was actually played.

Devices are chosen by index or by name (``BidiAudioIO(output_device="USB")``);
``python -m adapters.audio`` lists them. Everything that touches hardware goes
through the :class:`ports.audio.AudioDevice` port: :class:`PortAudioDevice`
by default, :class:`WavFileDevice` to play into a file, and
``adapters.testing.FakeAudioDevice`` in tests.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.audio._devices import DeviceSpec, format_devices, negotiate, select_device
from adapters.audio._errors import AudioDeviceError, AudioUnavailableError
from adapters.audio._handoff import current_loop_caller
from adapters.audio._input import BidiAudioInput, InputStats
from adapters.audio._output import BidiAudioOutput, OutputStats
from adapters.audio._portaudio import PortAudioDevice
from adapters.audio._wav import WavFileDevice
from ports.audio import AudioDevice, AudioDeviceInfo
from ports.errors import BidiUsageError

__all__ = [
    "AudioDeviceError",
    "AudioDeviceInfo",
    "AudioUnavailableError",
    "BidiAudioIO",
    "BidiAudioInput",
    "BidiAudioOutput",
    "DeviceSpec",
    "InputStats",
    "OutputStats",
    "PortAudioDevice",
    "WavFileDevice",
    "current_loop_caller",
    "format_devices",
    "list_devices",
    "negotiate",
    "select_device",
]


def list_devices(backend: AudioDevice | None = None) -> list[AudioDeviceInfo]:
    """Every audio device (PortAudio's unless ``backend`` is given), inputs and outputs.

    Raises :class:`AudioUnavailableError` (saying what to install) when
    PortAudio is missing. Print them with :func:`format_devices`, or run
    ``python -m adapters.audio``.
    """
    return list((backend or PortAudioDevice()).devices())


def _choose(kind: str, device: DeviceSpec, index: DeviceSpec) -> DeviceSpec:
    if device is not None and index is not None:
        raise BidiUsageError(f"give {kind}_device or {kind}_device_index, not both")
    return device if device is not None else index


def _check_size(name: str, value: int | None, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BidiUsageError(f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}")


class BidiAudioIO:
    """A microphone (:meth:`input`) and speakers (:meth:`output`) for a conversation.

    ``input_buffer_size``: blocks of microphone audio that may wait for the
    conversation; when full, the oldest is dropped (and counted). Default:
    five seconds' worth. ``output_buffer_size``: chunks of the model's audio
    that may wait for the speaker; when full, the output waits (the provider
    is slowed, nothing is dropped). Default: two minutes of audio.
    ``*_frames_per_buffer``: frames per device block, counted at the model's
    rate (512 at 16 kHz is 32 ms).

    Devices: ``input_device`` / ``output_device`` take an index or (part of) a
    name; ``input_device_index`` / ``output_device_index`` are the
    reference's names for the same thing. None is the system's default.
    ``backend`` is the :class:`ports.audio.AudioDevice` to use
    (:class:`PortAudioDevice` by default).

    :meth:`input` and :meth:`output` return the same objects on every call.
    """

    def __init__(
        self,
        input_buffer_size: int | None = None,
        output_buffer_size: int | None = None,
        input_frames_per_buffer: int = 512,
        output_frames_per_buffer: int = 512,
        input_device_index: DeviceSpec = None,
        output_device_index: DeviceSpec = None,
        *,
        input_device: DeviceSpec = None,
        output_device: DeviceSpec = None,
        backend: AudioDevice | None = None,
    ) -> None:
        _check_size("input_buffer_size", input_buffer_size, optional=True)
        _check_size("output_buffer_size", output_buffer_size, optional=True)
        _check_size("input_frames_per_buffer", input_frames_per_buffer, optional=False)
        _check_size("output_frames_per_buffer", output_frames_per_buffer, optional=False)
        self.backend: AudioDevice = backend if backend is not None else PortAudioDevice()
        self._input = BidiAudioInput(
            self.backend,
            device=_choose("input", input_device, input_device_index),
            buffer_size=input_buffer_size,
            frames_per_buffer=input_frames_per_buffer,
        )
        self._output = BidiAudioOutput(
            self.backend,
            device=_choose("output", output_device, output_device_index),
            buffer_size=output_buffer_size,
            frames_per_buffer=output_frames_per_buffer,
        )

    def input(self) -> BidiAudioInput:
        """The microphone: each call returns the next block as a ``BidiAudioInputEvent``."""
        return self._input

    def output(self) -> BidiAudioOutput:
        """The speakers: plays audio events, goes silent on interruption, reports playback."""
        return self._output

    def devices(self) -> Sequence[AudioDeviceInfo]:
        """The backend's devices (blocks briefly: call it before the conversation, or in a thread)."""
        return self.backend.devices()
