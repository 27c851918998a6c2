"""WavFileDevice: the audio-device port on WAV files, for machines without speakers.

The output "speaker" writes what it plays into a WAV file, the input
"microphone" reads a WAV file (or hears silence); both run their callbacks on
a thread of their own at the pace of real time (or ``speed`` times faster),
exactly as a sound card would. Examples use it with ``--wav out.wav``; apps
can use it to record what the assistant said.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import wave
from collections.abc import Callable, Sequence

from adapters.audio._errors import AudioDeviceError
from ports.audio import AudioDeviceInfo, AudioStream, InputCallback, OutputCallback, StreamConfig, StreamKind

__all__ = ["WavFileDevice"]

logger = logging.getLogger("bidi_core.adapters.audio")

_INPUT, _OUTPUT = 0, 1


class _ClockedStream:
    """A stream whose thread calls ``tick`` once per block, at the pace of the block's duration."""

    def __init__(self, config: StreamConfig, tick: Callable[[], None], speed: float, on_close: Callable[[], None]):
        self._config = config
        self._tick = tick
        self._period = config.frames_per_buffer / config.sample_rate / speed
        self._on_close = on_close
        self._stop = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"bidi-core WAV {config.kind}", daemon=True)
        self._thread.start()

    @property
    def config(self) -> StreamConfig:
        return self._config

    @property
    def latency_s(self) -> float:
        return 0.0

    def _run(self) -> None:
        started = time.monotonic()
        blocks = 0
        while not self._stop.is_set():
            self._tick()
            blocks += 1
            delay = started + blocks * self._period - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._thread is not threading.current_thread():
                self._thread.join()
            self._on_close()


class WavFileDevice:
    """Plays into ``output`` (a WAV file path) and records from ``input``.

    ``input=None`` gives a microphone that hears silence; a WAV file as input
    is read at its own rate and channels (16-bit PCM only), then silence once
    it ends (or from the start again with ``loop_input=True``). The output
    file is written at whatever rate and channels the stream opens with.
    ``speed`` runs both clocks faster than real time (for tests).
    """

    def __init__(
        self,
        output: str | os.PathLike[str] | None = None,
        input: str | os.PathLike[str] | None = None,
        *,
        speed: float = 1.0,
        loop_input: bool = False,
    ) -> None:
        if speed <= 0:
            raise AudioDeviceError(f"speed must be positive, got {speed}")
        self.output_path = os.fspath(output) if output is not None else None
        self.input_path = os.fspath(input) if input is not None else None
        self.speed = speed
        self.loop_input = loop_input
        self._input_rate = 16000
        self._input_channels = 1
        if self.input_path is not None:
            with wave.open(self.input_path, "rb") as wav:
                if wav.getsampwidth() != 2:
                    raise AudioDeviceError(f"{self.input_path}: only 16-bit PCM WAV files can be read")
                self._input_rate = wav.getframerate()
                self._input_channels = wav.getnchannels()

    def devices(self) -> Sequence[AudioDeviceInfo]:
        source = os.path.basename(self.input_path) if self.input_path else "silence"
        found = [
            AudioDeviceInfo(
                index=_INPUT,
                name=f"WAV input ({source})",
                host_api="WAV file",
                max_input_channels=self._input_channels if self.input_path else 2,
                default_sample_rate=float(self._input_rate),
                default_input=True,
            )
        ]
        if self.output_path is not None:
            found.append(
                AudioDeviceInfo(
                    index=_OUTPUT,
                    name=f"WAV output ({os.path.basename(self.output_path)})",
                    host_api="WAV file",
                    max_output_channels=2,
                    default_sample_rate=24000.0,
                    default_output=True,
                )
            )
        return found

    def default_device(self, kind: StreamKind) -> int | None:
        if kind == "input":
            return _INPUT
        return _OUTPUT if self.output_path is not None else None

    def is_supported(self, config: StreamConfig) -> bool:
        if config.kind == "input":
            if config.device != _INPUT:
                return False
            if self.input_path is None:
                return 1 <= config.channels <= 2
            return config.sample_rate == self._input_rate and config.channels == self._input_channels
        return config.device == _OUTPUT and self.output_path is not None and 1 <= config.channels <= 2

    def open_input(self, config: StreamConfig, callback: InputCallback) -> AudioStream:
        if not self.is_supported(config):
            raise AudioDeviceError(f"the WAV input cannot record {config}")
        size = config.frames_per_buffer * config.format.bytes_per_frame
        # Open for as long as the stream is: closed by on_close.
        reader = wave.open(self.input_path, "rb") if self.input_path is not None else None  # noqa: SIM115
        block = bytearray(size)
        view = memoryview(block)

        def tick() -> None:
            data = reader.readframes(config.frames_per_buffer) if reader is not None else b""
            if reader is not None and len(data) < size and self.loop_input:
                reader.rewind()
                data += reader.readframes(config.frames_per_buffer - len(data) // config.format.bytes_per_frame)
            block[: len(data)] = data
            block[len(data) :] = bytes(size - len(data))
            callback(view, config.frames_per_buffer, False)

        def on_close() -> None:
            if reader is not None:
                reader.close()

        return _ClockedStream(config, tick, self.speed, on_close)

    def open_output(self, config: StreamConfig, callback: OutputCallback) -> AudioStream:
        if not self.is_supported(config) or self.output_path is None:
            raise AudioDeviceError(f"the WAV output cannot play {config}")
        writer = wave.open(self.output_path, "wb")  # noqa: SIM115 (closed by on_close, with the stream)
        writer.setnchannels(config.channels)
        writer.setsampwidth(2)
        writer.setframerate(config.sample_rate)
        block = bytearray(config.frames_per_buffer * config.format.bytes_per_frame)
        view = memoryview(block)

        def tick() -> None:
            callback(view, config.frames_per_buffer, False)
            writer.writeframesraw(view)

        def on_close() -> None:
            writer.close()
            logger.debug("wrote %s", self.output_path)

        return _ClockedStream(config, tick, self.speed, on_close)
