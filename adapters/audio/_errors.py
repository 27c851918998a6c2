"""The audio adapter's errors: both say what to install or change."""

from __future__ import annotations

from ports.errors import BidiUsageError

__all__ = ["INSTALL_HINT", "NO_DEVICE_HINT", "AudioDeviceError", "AudioUnavailableError"]

INSTALL_HINT = (
    "install PortAudio: `sudo apt-get install libportaudio2` on Debian/Ubuntu, "
    "`sudo dnf install portaudio` on Fedora, `brew install portaudio` on macOS "
    "(the sounddevice wheels for macOS and Windows bundle it already)"
)

NO_DEVICE_HINT = (
    "plug one in, or check that your user may use it (on Linux: the 'audio' group; with PulseAudio or "
    "PipeWire, the ALSA plugins package `libasound2-plugins`). On a machine without audio hardware, "
    "write to a file instead: BidiAudioIO(backend=WavFileDevice('out.wav'))"
)


class AudioUnavailableError(BidiUsageError):
    """There is no audio to be had: PortAudio or sounddevice is not installed,
    or the system has no device of the kind needed.

    The message says what to install. Nothing is wrong with the calling code,
    but retrying will not help either: fix the machine, or pass another
    backend (``BidiAudioIO(backend=WavFileDevice(...))``).
    """


class AudioDeviceError(BidiUsageError):
    """A device could not be used: no device has that index or name, the name
    matches several, it cannot do the format needed, or opening it failed.

    The message names the devices there are (``python -m adapters.audio``
    lists them too).
    """
