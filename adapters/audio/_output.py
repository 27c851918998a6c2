"""BidiAudioOutput: the model's audio to the speakers, cut off at once on barge-in."""

from __future__ import annotations

import logging
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
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
)
from ports.io import AgentView, PlaybackReport

__all__ = ["BidiAudioOutput", "OutputStats"]

logger = logging.getLogger("bidi_core.adapters.audio")

DEFAULT_OUTPUT_BUFFER_S = 120.0
"""Without ``output_buffer_size``, the output holds at most this much audio before it waits."""

_FENCE = 16
"""How many interrupted response ids the output remembers, to drop their late audio."""


@attrs.frozen
class OutputStats:
    """Counters of a speaker stream, since it was started.

    ``callbacks``: blocks the device asked for. ``played_ms``: audio of the
    model's played (handed to the device). ``silence_ms``: silence played
    because there was nothing to play. ``underruns``: blocks that ran out of
    audio while a response's audio was still coming (a gap the user hears;
    silence between responses is not an underrun). ``device_underflows``:
    blocks before which the device itself reported running dry.
    ``interruptions``: barge-ins handled; ``discarded_ms``: audio they threw
    away unplayed; ``late_chunks_dropped``: audio of an interrupted response
    that arrived afterwards. ``buffered_ms``: waiting to be played now.
    ``backpressure_waits``: times the buffer was full and the output waited.
    ``reports``: playback reports sent to the conversation.
    """

    callbacks: int = 0
    played_ms: float = 0.0
    silence_ms: float = 0.0
    underruns: int = 0
    device_underflows: int = 0
    interruptions: int = 0
    discarded_ms: float = 0.0
    late_chunks_dropped: int = 0
    buffered_ms: float = 0.0
    backpressure_waits: int = 0
    reports: int = 0
    wakeups: int = 0


class _Track:
    """One response's audio: how much was queued (loop) and played (device thread), in bytes."""

    __slots__ = ("complete", "played", "queued", "reported_ms", "response_id")

    def __init__(self, response_id: str | None) -> None:
        self.response_id = response_id
        self.queued = 0
        self.played = 0
        self.complete = False
        self.reported_ms = -1.0


class _Chunk:
    __slots__ = ("data", "track")

    def __init__(self, data: memoryview, track: _Track) -> None:
        self.data = data
        self.track = track


class BidiAudioOutput:
    """Plays the model's audio; reports what was heard; goes silent on barge-in.

    Audio events go into a buffer that the device's callback drains block by
    block (silence when it is empty). A :class:`~ports.events.BidiInterruptionEvent`
    discards the whole buffer, the block half played included, so the very
    next callback plays silence; later audio of the interrupted response is
    dropped. What each response has actually played is reported to the
    conversation (:class:`~ports.io.PlaybackReport`), which tells a provider
    that can truncate how much the user heard. At the end of the conversation
    the buffer is played out before the stream closes (within the agent's
    ``drain_timeout_s``).

    When the buffer holds ``buffer_size`` chunks (or, by default, two minutes
    of audio), the output waits for the device to play some: the provider is
    slowed down, nothing is dropped.

    Made by :meth:`BidiAudioIO.output`.
    """

    reports_playback = True

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
        self._format = AudioFormat(24000)
        self._bytes_per_ms = 48.0
        self._max_bytes = 0
        self._doorbell: Doorbell | None = None
        self._closed = False
        self._failure: Exception | None = None
        # Shared with the device's thread, under self._lock:
        self._chunks: deque[_Chunk] = deque()
        self._current: _Chunk | None = None
        self._offset = 0
        self._buffered = 0
        self._last_track: _Track | None = None
        self._silence = memoryview(b"")
        self._callbacks = 0
        self._played_bytes = 0
        self._silence_bytes = 0
        self._underruns = 0
        self._underflows = 0
        # The event loop's own:
        self._tracks: dict[str | None, _Track] = {}
        self._fence: deque[str] = deque(maxlen=_FENCE)
        self._finished: deque[str] = deque(maxlen=_FENCE)
        self._converter: PcmConverter | None = None
        self._converter_key: tuple[str | None, AudioFormat] | None = None
        self._interruptions = 0
        self._discarded_bytes = 0
        self._late = 0
        self._waits = 0
        self._reports = 0

    # ------------------------------------------------------------------ what apps see

    @property
    def stats(self) -> OutputStats:
        """A snapshot of the counters."""
        per_ms = self._bytes_per_ms
        with self._lock:
            return OutputStats(
                callbacks=self._callbacks,
                played_ms=self._played_bytes / per_ms,
                silence_ms=self._silence_bytes / per_ms,
                underruns=self._underruns,
                device_underflows=self._underflows,
                interruptions=self._interruptions,
                discarded_ms=self._discarded_bytes / per_ms,
                late_chunks_dropped=self._late,
                buffered_ms=self._buffered / per_ms,
                backpressure_waits=self._waits,
                reports=self._reports,
                wakeups=self._doorbell.rings if self._doorbell is not None else 0,
            )

    @property
    def stream_config(self) -> StreamConfig | None:
        """What the device was opened with (None before start)."""
        return self._config

    @property
    def latency_ms(self) -> float:
        """How long a block takes from the callback to the speaker, as the device says."""
        stream = self._stream
        return stream.latency_s * 1000.0 if stream is not None else 0.0

    async def wait_played(self, response_id: str | None = None) -> None:
        """Wait until the audio this output was given has been played.

        With a ``response_id``: until that response is complete here and all
        its audio was played (or discarded by an interruption); a response
        without audio counts once its completion arrives. Without: until the
        buffer is empty. For apps that want the user to hear something out,
        say a goodbye, before they stop the conversation.
        """
        if response_id is None:
            await self._waiter.wait_until(self._drained_or_done)
        else:
            await self._waiter.wait_until(lambda: response_id in self._finished or self._closed)

    # ------------------------------------------------------------------ BidiOutput

    async def start(self, agent: AgentView) -> None:
        """Open the speakers at the model's output format (or one the device accepts)."""
        if self._stream is not None:
            raise BidiUsageError("this audio output is already started")
        self._reset()
        self._agent = agent
        self._doorbell = Doorbell(current_loop_caller(), self._on_ring)
        wanted = agent.capabilities.output_audio
        try:
            await anyio.to_thread.run_sync(self._open, wanted)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close()
            raise

    async def __call__(self, event: BidiOutputEvent) -> None:
        """Play audio, cut it on interruption, play out what is left at the end."""
        await anyio.lowlevel.checkpoint()  # yield even when nothing makes this call wait
        self._check_usable()
        if isinstance(event, BidiAudioStreamEvent):
            await self._play(event)
        elif isinstance(event, BidiConnectionCloseEvent):
            await self._drain()
        else:
            self._handle_now(event)

    def offer(self, event: BidiOutputEvent) -> bool:
        """The same without waiting (:class:`ports.io.BidiInlineOutput`): audio
        while the buffer has room, interruptions and completions; False for
        audio that would have to wait for room and for the end, which plays
        the buffer out."""
        self._check_usable()
        if isinstance(event, BidiAudioStreamEvent):
            if self._fenced(event):
                return True
            if not self._has_room():
                return False
            self._take(event)
            return True
        if isinstance(event, BidiConnectionCloseEvent):
            return False
        self._handle_now(event)
        return True

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise AudioDeviceError(f"the speaker stream failed: {self._failure!r}") from self._failure
        if self._agent is None:
            raise BidiUsageError("start() the audio output before sending it events")

    def _handle_now(self, event: BidiOutputEvent) -> None:
        if isinstance(event, BidiInterruptionEvent):
            self._interrupt(event.response_id)
        elif isinstance(event, BidiResponseCompleteEvent):
            self._complete(event.response_id, discard=event.stop_reason == "error")

    async def stop(self) -> None:
        """Close the speakers at once (what is still buffered is not played)."""
        with anyio.CancelScope(shield=True):
            await self._close()

    # ------------------------------------------------------------------ the event loop's side

    async def _play(self, event: BidiAudioStreamEvent) -> None:
        if self._fenced(event):
            return
        if not self._has_room():
            self._waits += 1
            await self._waiter.wait_until(self._room_or_done)
            if self._closed:
                return
        self._take(event)

    def _fenced(self, event: BidiAudioStreamEvent) -> bool:
        """Audio of a response that was interrupted here: dropped (and counted)."""
        if event.response_id is not None and event.response_id in self._fence:
            self._late += 1
            return True
        return False

    def _take(self, event: BidiAudioStreamEvent) -> None:
        rid = event.response_id
        source = AudioFormat(event.sample_rate, event.channels)
        key = (rid, source)
        if key != self._converter_key:
            self._flush_converter()
            self._converter_key = key
            self._converter = None if source == self._format else PcmConverter(source, self._format)
        audio = event.audio if self._converter is None else self._converter.convert(event.audio)
        self._push(rid, audio)

    def _push(self, rid: str | None, audio: bytes) -> None:
        usable = len(audio) - len(audio) % self._format.bytes_per_frame
        if usable <= 0:
            return
        track = self._tracks.get(rid)
        if track is None:
            track = self._tracks[rid] = _Track(rid)
        chunk = _Chunk(memoryview(audio)[:usable], track)
        with self._lock:
            track.queued += usable
            self._buffered += usable
            self._chunks.append(chunk)

    def _flush_converter(self) -> None:
        converter, key = self._converter, self._converter_key
        self._converter = self._converter_key = None
        if converter is not None and key is not None:
            self._push(key[0], converter.flush())

    def _interrupt(self, rid: str | None) -> None:
        """Discard everything queued and the block being played: the next callback is silent."""
        with self._lock:
            chunks, self._chunks = self._chunks, deque()
            self._current = None
            self._offset = 0
            discarded, self._buffered = self._buffered, 0
        # From here the device's thread cannot reach the discarded audio, nor count it as played.
        self._interruptions += 1
        self._discarded_bytes += discarded
        if rid is not None:
            self._fence.append(rid)
        if self._converter is not None:
            self._converter.reset()
        self._converter = self._converter_key = None
        for track in self._tracks.values():
            track.queued = track.played
            track.complete = True
        logger.debug(
            "interrupted %s: discarded %.0f ms of audio in %d chunks", rid, discarded / self._bytes_per_ms, len(chunks)
        )
        self._report()

    def _complete(self, rid: str, *, discard: bool) -> None:
        if self._converter_key is not None and self._converter_key[0] == rid:
            self._flush_converter()
        track = self._tracks.get(rid)
        if track is None:
            self._finished.append(rid)  # nothing of it to play
            self._waiter.wake()
            return
        if discard:
            # The response broke off (e.g. the connection was lost): its audio goes, as the core's does.
            with self._lock:
                kept = deque(c for c in self._chunks if c.track is not track)
                dropped = sum(len(c.data) for c in self._chunks if c.track is track)
                if self._current is not None and self._current.track is track:
                    dropped += len(self._current.data) - self._offset
                    self._current = None
                    self._offset = 0
                self._chunks = kept
                self._buffered -= dropped
                track.queued = track.played
            self._discarded_bytes += dropped
        track.complete = True
        self._report()

    async def _drain(self) -> None:
        """The conversation is over: let the device play what is buffered."""
        self._flush_converter()
        await self._waiter.wait_until(self._drained_or_done)
        self._report()

    def _report(self) -> None:
        """Tell the conversation how much of each response has played (on the loop only)."""
        agent = self._agent
        finished: list[str | None] = []
        for key, track in self._tracks.items():
            played = track.played
            done = track.complete and played >= track.queued
            ms = played / self._bytes_per_ms
            if key is not None and agent is not None and (ms != track.reported_ms or done):
                track.reported_ms = ms
                self._reports += 1
                agent.report_playback(PlaybackReport(key, ms, done))
            if done:
                finished.append(key)
        for key in finished:
            del self._tracks[key]
            if key is not None:
                self._finished.append(key)
        if finished:
            self._waiter.wake()

    def _on_ring(self) -> None:
        """Runs on the loop, outside any task, after the device's thread rang."""
        try:
            self._report()
        except Exception as exc:  # e.g. a custom AgentView that raises: surface it at the next event
            self._failure = self._failure or exc
        self._waiter.wake()

    def _has_room(self) -> bool:
        if self._buffer_size is not None:
            return len(self._chunks) < self._buffer_size
        return self._buffered < self._max_bytes

    def _room_or_done(self) -> bool:
        return self._has_room() or self._closed or self._failure is not None

    def _drained_or_done(self) -> bool:
        return (not self._chunks and self._current is None) or self._closed or self._failure is not None

    # ------------------------------------------------------------------ the device's thread

    def _fill(self, out: memoryview, frames: int, underflowed: bool) -> None:
        """Runs on the device's thread: copy queued audio into ``out``, pad with silence.

        Holds the lock for the copy only; never waits for the event loop, never raises.
        """
        try:
            need = out.nbytes
            pos = 0
            with self._lock:
                self._callbacks += 1
                if underflowed:
                    self._underflows += 1
                chunk = self._current
                offset = self._offset
                while pos < need:
                    if chunk is None:
                        if not self._chunks:
                            break
                        chunk = self._chunks.popleft()
                        offset = 0
                    data = chunk.data
                    n = min(len(data) - offset, need - pos)
                    out[pos : pos + n] = data[offset : offset + n]
                    pos += n
                    offset += n
                    chunk.track.played += n
                    self._last_track = chunk.track
                    if offset >= len(data):
                        chunk = None
                self._current = chunk
                self._offset = offset
                self._buffered -= pos
                self._played_bytes += pos
                if pos < need:
                    if len(self._silence) < need:
                        self._silence = memoryview(bytes(need))  # only if the device changed its block size
                    out[pos:need] = self._silence[: need - pos]
                    self._silence_bytes += need - pos
                    last = self._last_track
                    if last is not None and not last.complete:
                        self._underruns += 1
            if pos and self._doorbell is not None:
                self._doorbell.ring()
        except Exception as exc:  # an exception here would abort PortAudio's stream silently
            self._failure = self._failure or exc
            if self._doorbell is not None:
                self._doorbell.ring()

    # ------------------------------------------------------------------ opening and closing

    def _open(self, wanted: AudioFormat) -> None:
        """In a worker thread: choose the device and format, open the stream."""
        backend = self._backend
        device = select_device(backend.devices(), backend.default_device("output"), "output", self._device_spec)
        config = negotiate(backend, "output", device, wanted, self._frames_per_buffer)
        self._config = config
        self._format = config.format
        self._bytes_per_ms = config.sample_rate * config.format.bytes_per_frame / 1000.0
        self._max_bytes = int(DEFAULT_OUTPUT_BUFFER_S * 1000 * self._bytes_per_ms)
        self._silence = memoryview(bytes(config.frames_per_buffer * config.format.bytes_per_frame))
        self._stream = backend.open_output(config, self._fill)
        logger.debug(
            "speakers: %r at %d Hz x %d, %d frames per block; model audio at %d Hz x %d",
            device.name,
            config.sample_rate,
            config.channels,
            config.frames_per_buffer,
            wanted.sample_rate,
            wanted.channels,
        )

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        self._closed = True
        self._waiter.wake()
        if stream is not None:
            await anyio.to_thread.run_sync(stream.close)
            stats = self.stats
            logger.debug(
                "speakers closed: played %.0f ms, %.0f ms of silence, %d underruns, %d interruptions",
                stats.played_ms,
                stats.silence_ms,
                stats.underruns,
                stats.interruptions,
            )
