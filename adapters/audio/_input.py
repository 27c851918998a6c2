"""BidiAudioInput: the microphone, as user audio events."""

from __future__ import annotations

import logging
import math
import threading
from collections import deque

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from adapters.audio._convert import PcmConverter
from adapters.audio._devices import DeviceSpec, negotiate, select_device
from adapters.audio._errors import AudioDeviceError
from adapters.audio._handoff import Doorbell, Waiter, current_loop_caller
from ports.audio import AudioDevice, AudioFormat, AudioStream, StreamConfig
from ports.errors import BidiUsageError
from ports.events import BidiAudioInputEvent
from ports.io import AgentView

__all__ = ["BidiAudioInput", "InputStats"]

logger = logging.getLogger("bidi_core.adapters.audio")

DEFAULT_INPUT_BUFFER_S = 5.0
"""Without ``input_buffer_size``, the input keeps at most this much audio waiting."""


@attrs.frozen
class InputStats:
    """Counters of a microphone stream, since it was started.

    ``blocks``: blocks the device captured. ``delivered``: events handed to the
    conversation. ``dropped_blocks`` / ``dropped_ms``: audio thrown away, oldest
    first, because the conversation did not take it fast enough and the buffer
    was full. ``device_overflows``: blocks before which the device itself
    reported lost input. ``buffered_blocks``: waiting now. ``wakeups``: times the
    device's thread woke the event loop.
    """

    blocks: int = 0
    delivered: int = 0
    dropped_blocks: int = 0
    dropped_ms: float = 0.0
    device_overflows: int = 0
    buffered_blocks: int = 0
    wakeups: int = 0


class BidiAudioInput:
    """Each call returns the next block of microphone audio in the model's input format.

    The device's callback copies each block into a bounded buffer and, when
    the conversation is waiting, wakes the event loop without waiting for it.
    When the buffer is full the oldest block is dropped and counted
    (:attr:`stats`). Converting to the model's rate and channels, when the
    device refuses them, happens here, on the event loop.

    Made by :meth:`BidiAudioIO.input`.
    """

    def __init__(
        self, backend: AudioDevice, *, device: DeviceSpec, buffer_size: int | None, frames_per_buffer: int
    ) -> None:
        self._backend = backend
        self._device_spec = device
        self._buffer_size = buffer_size
        self._frames_per_buffer = frames_per_buffer
        self._lock = threading.Lock()
        self._waiter = Waiter()
        self._reset()

    def _reset(self) -> None:
        self._agent: AgentView | None = None
        self._stream: AudioStream | None = None
        self._config: StreamConfig | None = None
        self._target = AudioFormat()
        self._converter: PcmConverter | None = None
        self._doorbell: Doorbell | None = None
        self._blocks: deque[bytes] = deque()
        self._capacity = 1
        self._closed = False
        self._failure: Exception | None = None
        self._captured = 0
        self._delivered = 0
        self._dropped = 0
        self._dropped_frames = 0
        self._overflows = 0

    # ------------------------------------------------------------------ what apps see

    @property
    def stats(self) -> InputStats:
        """A snapshot of the counters."""
        rate = self._config.sample_rate if self._config is not None else 1
        with self._lock:
            return InputStats(
                blocks=self._captured,
                delivered=self._delivered,
                dropped_blocks=self._dropped,
                dropped_ms=self._dropped_frames * 1000.0 / rate,
                device_overflows=self._overflows,
                buffered_blocks=len(self._blocks),
                wakeups=self._doorbell.rings if self._doorbell is not None else 0,
            )

    @property
    def stream_config(self) -> StreamConfig | None:
        """What the device was opened with (None before start)."""
        return self._config

    @property
    def format(self) -> AudioFormat:
        """The format of the events this input produces (the model's input format)."""
        return self._target

    # ------------------------------------------------------------------ BidiInput

    async def start(self, agent: AgentView) -> None:
        """Open the microphone at the model's input format (or one the device accepts)."""
        if self._stream is not None:
            raise BidiUsageError("this audio input is already started")
        self._reset()
        self._agent = agent
        self._target = agent.capabilities.input_audio
        self._doorbell = Doorbell(current_loop_caller(), self._waiter.wake)
        try:
            await anyio.to_thread.run_sync(self._open)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close()
            raise

    async def __call__(self) -> BidiAudioInputEvent:
        """The next block, waiting for the device if none is ready."""
        if self._agent is None:
            raise BidiUsageError("start() the audio input before reading from it")
        while True:
            # A checkpoint even when a block is ready: a backlog (or a device that keeps
            # no time) must not let the conversation's input task starve the others.
            await anyio.lowlevel.checkpoint()
            if self._closed:
                raise EOFError("the audio input was stopped")
            with self._lock:
                block = self._blocks.popleft() if self._blocks else None
            if block is None:
                if self._failure is not None:
                    raise AudioDeviceError(f"the microphone stream failed: {self._failure!r}") from self._failure
                await self._waiter.wait_until(self._ready)
                continue
            audio = self._convert(block)
            if audio:
                self._delivered += 1
                target = self._target
                return BidiAudioInputEvent(audio=audio, sample_rate=target.sample_rate, channels=target.channels)

    async def stop(self) -> None:
        """Close the microphone. Waits (shielded) until the device's thread is done with us."""
        with anyio.CancelScope(shield=True):
            await self._close()

    # ------------------------------------------------------------------ the device's thread

    def _on_block(self, data: memoryview, frames: int, overflowed: bool) -> None:
        """Runs on the device's thread: copy the block, maybe ring. Never waits, never raises."""
        try:
            block = bytes(data)
            with self._lock:
                self._captured += 1
                if overflowed:
                    self._overflows += 1
                if len(self._blocks) >= self._capacity:
                    self._blocks.popleft()
                    self._dropped += 1
                    self._dropped_frames += frames
                self._blocks.append(block)
            if self._waiter.armed and self._doorbell is not None:
                self._doorbell.ring()
        except Exception as exc:  # an exception here would abort PortAudio's stream silently
            self._failure = self._failure or exc
            if self._doorbell is not None:
                self._doorbell.ring()

    # ------------------------------------------------------------------ helpers

    def _ready(self) -> bool:
        return bool(self._blocks) or self._closed or self._failure is not None

    def _open(self) -> None:
        """In a worker thread: choose the device and format, open the stream."""
        backend = self._backend
        device = select_device(backend.devices(), backend.default_device("input"), "input", self._device_spec)
        config = negotiate(backend, "input", device, self._target, self._frames_per_buffer)
        block_s = config.frames_per_buffer / config.sample_rate
        self._capacity = self._buffer_size or max(1, math.ceil(DEFAULT_INPUT_BUFFER_S / block_s))
        self._config = config
        if config.format != self._target:
            self._converter = PcmConverter(config.format, self._target)
        self._stream = backend.open_input(config, self._on_block)
        logger.debug(
            "microphone: %r at %d Hz x %d, %d frames per block, buffer of %d blocks; events at %d Hz x %d",
            device.name,
            config.sample_rate,
            config.channels,
            config.frames_per_buffer,
            self._capacity,
            self._target.sample_rate,
            self._target.channels,
        )

    def _convert(self, block: bytes) -> bytes:
        assert self._config is not None and self._agent is not None
        wanted = self._agent.capabilities.input_audio
        if wanted != self._target:
            # A connection declared another input format than the model did: follow it.
            logger.debug("model input format changed from %s to %s; converting", self._target, wanted)
            self._target = wanted
            self._converter = None if wanted == self._config.format else PcmConverter(self._config.format, wanted)
        if self._converter is None:
            return block
        return self._converter.convert(block)

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        self._closed = True
        self._waiter.wake()
        if stream is not None:
            await anyio.to_thread.run_sync(stream.close)
            stats = self.stats
            logger.debug(
                "microphone closed: %d blocks, %d delivered, %d dropped (%.0f ms), %d device overflows",
                stats.blocks,
                stats.delivered,
                stats.dropped_blocks,
                stats.dropped_ms,
                stats.device_overflows,
            )
