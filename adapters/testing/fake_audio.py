"""FakeAudioDevice: the audio-device port with no hardware, for tests.

It is a real implementation of :class:`ports.audio.AudioDevice`, not a mock:
every stream has a thread of its own that calls the stream's callback, as a
sound card's driver thread would. What differs from hardware is the clock.
With ``pace=None`` (the default) a test moves it: ``stream.step(3)`` runs
three callbacks on the stream's thread and returns when they are done, so a
test knows exactly which blocks were played before and after anything it
does. With ``pace=1.0`` the thread runs by itself in real time (``2.0``:
twice as fast).

What the device "played" is recorded block by block (``stream.blocks``,
``stream.played``), with the time each callback started and ended, and the
blocks handed to the callback are pre-filled with a non-zero pattern, so a
callback that leaves part of a block unwritten is caught. A callback that
raises stops the stream, as PortAudio does, and the error is raised again
from the next :meth:`FakeStream.step`. A callback that waits for the event
loop while the test steps the device from it is caught too: ``step`` gives
up after ``timeout`` seconds and says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence

from ports.audio import AudioDeviceInfo, AudioStream, InputCallback, OutputCallback, StreamConfig, StreamKind

__all__ = ["FakeAudioDevice", "FakeStream"]

_UNWRITTEN = 0xA5
"""What an output block holds before the callback writes it."""


class FakeStream:
    """One open stream of a :class:`FakeAudioDevice`, with its own thread."""

    def __init__(
        self,
        device: FakeAudioDevice,
        config: StreamConfig,
        callback: Callable[[memoryview, int, bool], None],
        *,
        pace: float | None,
        latency_s: float,
        number: int,
    ) -> None:
        self.device = device
        self.config = config
        self.kind: StreamKind = config.kind
        self._callback = callback
        self._pace = pace
        self._latency_s = latency_s
        self.block_bytes = config.frames_per_buffer * config.format.bytes_per_frame
        self.blocks: list[bytes] = []
        """Output: what each callback wrote. Input: what each callback was given."""
        self.block_times: list[tuple[int, int]] = []
        """``time.perf_counter_ns()`` when each callback started and returned."""
        self.errors: list[BaseException] = []
        self._mic = bytearray()
        self._xrun = False
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._closed = False
        self._aborted = False
        self._reported_errors = 0
        self.thread = threading.Thread(target=self._run, name=f"FakeAudioDevice {config.kind} {number}", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ AudioStream

    @property
    def latency_s(self) -> float:
        return self._latency_s

    def close(self) -> None:
        """Stop the thread; when this returns no callback runs and none will."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=10)
            if self.thread.is_alive():
                raise AssertionError(f"the {self.kind} callback has not returned for 10 s: it must never wait")

    # ------------------------------------------------------------------ what tests do

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def callbacks(self) -> int:
        """How many callbacks have returned."""
        return len(self.block_times)

    @property
    def played(self) -> bytes:
        """Output: everything the callback wrote, in order."""
        return b"".join(self.blocks)

    def history(self) -> list[tuple[int, int, bytes]]:
        """Every callback so far, consistently: (started ns, returned ns, block)."""
        with self._cond:
            return [(start, end, block) for (start, end), block in zip(self.block_times, self.blocks, strict=True)]

    def feed(self, audio: bytes) -> None:
        """Input: audio the microphone will "hear", in the stream's format (then silence)."""
        with self._cond:
            self._mic += audio

    def simulate_xrun(self) -> None:
        """The next callback is told the device overflowed (input) or underflowed (output)."""
        self._xrun = True

    def step(self, blocks: int = 1, *, timeout: float = 5.0) -> list[bytes]:
        """Run ``blocks`` callbacks on the stream's thread; return the blocks they played or got.

        Only with ``pace=None``. Blocks the caller until the callbacks are done.
        """
        if self._pace is not None:
            raise RuntimeError("step() is for a manually clocked device (pace=None)")
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the fake {self.kind} stream is closed")
            first = self._done
            self._requested += blocks
            self._cond.notify_all()
            target = self._requested
            if not self._cond.wait_for(lambda: self._done >= target or self._aborted, timeout):
                raise AssertionError(
                    f"the {self.kind} callback did not return within {timeout} s: "
                    "a device callback must never wait (for the event loop or anything else)"
                )
            self._raise_errors()
            return self.blocks[first : self._done]

    def _raise_errors(self) -> None:
        if len(self.errors) > self._reported_errors:
            error = self.errors[self._reported_errors]
            self._reported_errors = len(self.errors)
            raise AssertionError(f"the {self.kind} callback raised {error!r}; the stream was stopped") from error

    # ------------------------------------------------------------------ the stream's thread

    def _run(self) -> None:
        period = self.config.frames_per_buffer / self.config.sample_rate / (self._pace or 1.0)
        started = time.monotonic()
        while True:
            with self._cond:
                if self._pace is None:
                    self._cond.wait_for(lambda: self._closed or self._requested > self._done)
                if self._closed or self._aborted:
                    return
            self._one_block()
            with self._cond:
                self._done += 1
                self._cond.notify_all()
                if self._pace is not None:
                    delay = started + self._done * period - time.monotonic()
                    if delay > 0:
                        self._cond.wait_for(lambda: self._closed, delay)

    def _one_block(self) -> None:
        frames = self.config.frames_per_buffer
        size = self.block_bytes
        if self.kind == "input":
            with self._cond:
                data = bytes(self._mic[:size])
                del self._mic[:size]
            block = bytearray(data + bytes(size - len(data)))
        else:
            block = bytearray([_UNWRITTEN]) * size
        xrun, self._xrun = self._xrun, False
        start = time.perf_counter_ns()
        try:
            self._callback(memoryview(block), frames, xrun)
        except BaseException as exc:  # PortAudio stops a stream whose callback fails
            self.errors.append(exc)
            with self._cond:
                self._aborted = True
        end = time.perf_counter_ns()
        with self._cond:
            self.blocks.append(bytes(block))
            self.block_times.append((start, end))


class FakeAudioDevice:
    """An :class:`~ports.audio.AudioDevice` with fake devices and test-driven clocks.

    ``inputs`` / ``outputs`` name the devices (indices: inputs first, then
    outputs; the first of each kind is the default). ``sample_rates`` is what
    every device accepts (None: any rate); ``channels`` the channel counts it
    accepts (None: 1 up to ``max_channels``). ``pace=None`` clocks every
    stream by :meth:`FakeStream.step`; a number runs them by themselves at
    that many times real time.
    """

    def __init__(
        self,
        *,
        inputs: Sequence[str] = ("Fake Microphone",),
        outputs: Sequence[str] = ("Fake Speaker",),
        sample_rates: Collection[int] | None = None,
        channels: Collection[int] | None = None,
        max_channels: int = 2,
        default_sample_rate: int = 48000,
        pace: float | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self.sample_rates = frozenset(sample_rates) if sample_rates is not None else None
        self.channels = frozenset(channels) if channels is not None else frozenset(range(1, max_channels + 1))
        self.pace = pace
        self.latency_s = latency_s
        self._devices = [
            AudioDeviceInfo(
                index=i,
                name=name,
                host_api="Fake",
                max_input_channels=max_channels,
                default_sample_rate=float(default_sample_rate),
                default_input=i == 0,
            )
            for i, name in enumerate(inputs)
        ] + [
            AudioDeviceInfo(
                index=len(inputs) + i,
                name=name,
                host_api="Fake",
                max_output_channels=max_channels,
                default_sample_rate=float(default_sample_rate),
                default_output=i == 0,
            )
            for i, name in enumerate(outputs)
        ]
        self.streams: list[FakeStream] = []
        """Every stream ever opened, in order."""
        self.refused: list[StreamConfig] = []
        """Every configuration :meth:`is_supported` said no to."""

    # ------------------------------------------------------------------ AudioDevice

    def devices(self) -> Sequence[AudioDeviceInfo]:
        return list(self._devices)

    def default_device(self, kind: StreamKind) -> int | None:
        flag = "default_input" if kind == "input" else "default_output"
        return next((d.index for d in self._devices if getattr(d, flag)), None)

    def is_supported(self, config: StreamConfig) -> bool:
        device = next((d for d in self._devices if d.index == config.device), None)
        ok = (
            device is not None
            and 0 < config.channels <= device.max_channels(config.kind)
            and config.channels in self.channels
            and (self.sample_rates is None or config.sample_rate in self.sample_rates)
        )
        if not ok:
            self.refused.append(config)
        return ok

    def open_input(self, config: StreamConfig, callback: InputCallback) -> AudioStream:
        return self._open(config, callback)

    def open_output(self, config: StreamConfig, callback: OutputCallback) -> AudioStream:
        return self._open(config, callback)

    def _open(self, config: StreamConfig, callback: Callable[[memoryview, int, bool], None]) -> FakeStream:
        if not self.is_supported(config):
            raise ValueError(f"FakeAudioDevice cannot open {config}")
        stream = FakeStream(
            self, config, callback, pace=self.pace, latency_s=self.latency_s, number=len(self.streams) + 1
        )
        self.streams.append(stream)
        return stream

    # ------------------------------------------------------------------ what tests look at

    def stream(self, kind: StreamKind) -> FakeStream:
        """The last stream of ``kind`` opened (AssertionError if none was)."""
        for stream in reversed(self.streams):
            if stream.kind == kind:
                return stream
        raise AssertionError(f"no {kind} stream was opened")

    @property
    def input_stream(self) -> FakeStream:
        return self.stream("input")

    @property
    def output_stream(self) -> FakeStream:
        return self.stream("output")

    def open_streams(self) -> list[FakeStream]:
        """Streams not closed yet."""
        return [s for s in self.streams if not s.closed]

    def running_threads(self) -> list[threading.Thread]:
        """Stream threads still alive (none, once every stream is closed)."""
        return [s.thread for s in self.streams if s.thread.is_alive()]
