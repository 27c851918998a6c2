"""The audio-device port on PortAudio, through sounddevice.

sounddevice is imported on first use, not when ``adapters.audio`` is: a
machine without PortAudio can still import the package, list its API, and
use another backend. When PortAudio is missing, sounddevice raises an
``OSError`` from ctypes at import; that becomes an
:class:`AudioUnavailableError` that says what to install.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Literal

from adapters.audio._errors import INSTALL_HINT, AudioDeviceError, AudioUnavailableError
from ports.audio import AudioDeviceInfo, AudioStream, InputCallback, OutputCallback, StreamConfig, StreamKind

__all__ = ["PortAudioDevice", "load_sounddevice"]

logger = logging.getLogger("bidi_core.adapters.audio")


def load_sounddevice() -> Any:
    """The sounddevice module, or an :class:`AudioUnavailableError` saying what to install."""
    try:
        import sounddevice  # type: ignore[import-untyped]
    except ImportError as exc:
        raise AudioUnavailableError(
            f"audio I/O needs the sounddevice package ({exc}): pip install 'bidi-core[audio]'"
        ) from exc
    except OSError as exc:  # sounddevice found no PortAudio library (ctypes)
        raise AudioUnavailableError(f"PortAudio is not installed ({exc}); {INSTALL_HINT}") from exc
    return sounddevice


class _PortAudioStream:
    """A running sounddevice raw stream, as the port's :class:`AudioStream`."""

    def __init__(self, stream: Any, config: StreamConfig) -> None:
        self._stream = stream
        self._config = config
        self._lock = threading.Lock()
        self._closed = False

    @property
    def config(self) -> StreamConfig:
        return self._config

    @property
    def latency_s(self) -> float:
        return float(self._stream.latency)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # abort(), not stop(): stop() plays out what the device still holds, and an
            # interrupted or cancelled conversation must fall silent at once.
            self._stream.abort(ignore_errors=True)
            self._stream.close(ignore_errors=True)
        logger.debug("closed %s stream on device %d", self._config.kind, self._config.device)


class PortAudioDevice:
    """Microphones and speakers through PortAudio (``sounddevice``).

    ``latency`` is PortAudio's suggested latency: ``"low"`` (the default, the
    device's low-latency figure, as PyAudio uses) so that an interruption is
    heard at once, ``"high"`` for a machine too busy to keep up, or seconds.
    """

    def __init__(self, *, latency: float | Literal["low", "high"] = "low") -> None:
        self.latency = latency

    def _sd(self) -> Any:
        return load_sounddevice()

    def devices(self) -> Sequence[AudioDeviceInfo]:
        sd = self._sd()
        try:
            raw = list(sd.query_devices())
            apis = [api["name"] for api in sd.query_hostapis()]
            default_in, default_out = (int(x) for x in sd.default.device)
        except sd.PortAudioError as exc:
            raise AudioUnavailableError(f"PortAudio cannot list devices ({exc}); {INSTALL_HINT}") from exc
        return [
            AudioDeviceInfo(
                index=int(d["index"]),
                name=str(d["name"]),
                host_api=apis[d["hostapi"]] if 0 <= d["hostapi"] < len(apis) else "",
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_sample_rate=float(d["default_samplerate"]),
                default_input=int(d["index"]) == default_in,
                default_output=int(d["index"]) == default_out,
            )
            for d in raw
        ]

    def default_device(self, kind: StreamKind) -> int | None:
        sd = self._sd()
        index = int(sd.default.device[0 if kind == "input" else 1])
        return index if index >= 0 else None

    def is_supported(self, config: StreamConfig) -> bool:
        sd = self._sd()
        check = sd.check_input_settings if config.kind == "input" else sd.check_output_settings
        try:
            check(device=config.device, channels=config.channels, dtype="int16", samplerate=config.sample_rate)
        except (sd.PortAudioError, ValueError):
            return False
        return True

    def open_input(self, config: StreamConfig, callback: InputCallback) -> AudioStream:
        sd = self._sd()

        def on_block(data: Any, frames: int, time: Any, status: Any) -> None:
            callback(memoryview(data), frames, bool(status))

        return self._open(sd.RawInputStream, config, on_block)

    def open_output(self, config: StreamConfig, callback: OutputCallback) -> AudioStream:
        sd = self._sd()

        def on_block(out: Any, frames: int, time: Any, status: Any) -> None:
            callback(memoryview(out), frames, bool(status))

        return self._open(sd.RawOutputStream, config, on_block)

    def _open(self, stream_class: Any, config: StreamConfig, on_block: Any) -> AudioStream:
        sd = self._sd()
        try:
            stream = stream_class(
                samplerate=config.sample_rate,
                blocksize=config.frames_per_buffer,
                device=config.device,
                channels=config.channels,
                dtype="int16",
                latency=self.latency,
                callback=on_block,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioDeviceError(
                f"cannot open the {config.kind} device {config.device} at {config.sample_rate} Hz x "
                f"{config.channels}: {exc}"
            ) from exc
        try:
            stream.start()
        except sd.PortAudioError as exc:
            stream.close(ignore_errors=True)
            raise AudioDeviceError(f"cannot start the {config.kind} device {config.device}: {exc}") from exc
        logger.debug(
            "opened %s stream on device %d: %d Hz x %d, %d frames per block, latency %.1f ms",
            config.kind,
            config.device,
            config.sample_rate,
            config.channels,
            config.frames_per_buffer,
            stream.latency * 1000,
        )
        return _PortAudioStream(stream, config)
