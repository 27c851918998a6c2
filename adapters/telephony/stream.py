"""One Twilio Media Stream (a phone call's audio over an ASGI WebSocket) as a conversation input and output.

    async with TwilioMediaStream(websocket) as stream:   # accepted already
        await stream.wait_started()
        await agent.run(inputs=[stream.input()], outputs=[stream.output()])

The stream owns two tasks, in its own task group: a **reader** that handles
every carrier message as it arrives (caller audio is queued for the input;
``mark`` echoes move the played position; ``dtmf`` becomes input; ``stop``
ends the call) and a **pacer** that sends the model's audio to the carrier at
the pace it plays. The messages are docs/protocols/twilio.md#messages-from-twilio.

**Pacing and the played position.** The model's audio arrives faster than
real time. Sending it as it comes would leave seconds of speech in Twilio's
buffer that a barge-in cannot take back. The output cuts it into ``chunk_ms``
mu-law chunks; the pacer sends a chunk, then a ``mark``, only while what was
sent and not yet confirmed played is at most ``lead_ms``: Twilio echoes a mark
once the audio before it has played (docs/protocols/twilio.md#marks-and-clear),
so the carrier never holds more than ``lead_ms + chunk_ms``, and the echoes
pace the sending, whatever the clocks on either side do. The echoed marks are
the output's playback report (``reports_playback``): a barge-in truncates the
model's memory at what the caller heard. ``lead_ms`` must cover the network
round trip to Twilio's media edge, or the caller hears gaps.

**Interruption.** ``BidiInterruptionEvent`` drops every unsent chunk and sends
``clear`` at once (Twilio empties its buffer). Twilio then echoes the marks
still pending; they are of an older *epoch* and are not counted as played.

**The end.** ``stop`` or a closed socket from the carrier (the caller hung up)
ends the input (:class:`CallEnded`, an ``EOFError``) and asks the agent to stop;
closing the WebSocket from our side ends the ``<Connect>``, and with it the
call (docs/protocols/twilio.md#ending-the-stream).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
import attrs
from starlette.websockets import WebSocket, WebSocketState

from adapters.telephony import twilio_wire as wire
from adapters.telephony.codec import MULAW_BYTES_PER_MS, CallerAudio, ReplyAudio
from adapters.web.io import ClientGone, WebObserver
from ports.audio import AudioFormat
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiInputEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiTextInputEvent,
)
from ports.io import AgentView, PlaybackReport

__all__ = [
    "DEFAULT_DTMF_TEXT",
    "CallEnded",
    "DtmfDigit",
    "TwilioMediaStream",
    "TwilioStreamInput",
    "TwilioStreamOutput",
]

logger = logging.getLogger("bidi_core.adapters.telephony")

DEFAULT_DTMF_TEXT = "The caller pressed {digit} on the keypad."
_PLAYS_OUT = frozenset({"user_request", "complete", "provider_closed"})
"""Close reasons after which what is queued still plays (the conversation's graceful ends, docs/design.md);
after any other the line is cleared."""
_CALLER_BUFFER = 250
"""Caller frames (20 ms each: 5 s) kept for an input that is not read; beyond it the oldest go."""


class CallEnded(ClientGone):
    """The caller hung up or the carrier closed the stream: the input has simply ended."""


@attrs.frozen
class DtmfDigit:
    """A key the caller pressed, and when (``anyio.current_time()``)."""

    digit: str
    at: float


@attrs.define
class _Chunk:
    response_id: str | None
    mulaw: bytes
    epoch: int

    @property
    def ms(self) -> float:
        return len(self.mulaw) / MULAW_BYTES_PER_MS


@attrs.define
class _Track:
    """One response's audio: received from the model, confirmed played, and whether it is complete."""

    received_ms: float = 0.0
    played_ms: float = 0.0
    in_flight: int = 0  # chunks queued or sent and not yet confirmed
    complete: bool = False
    finished_told: bool = False


class TwilioMediaStream:
    """A Twilio Media Stream on an accepted Starlette ``WebSocket``: :meth:`input`, :meth:`output`.

    ``lead_ms``: how far ahead of what the caller hears the pacer may send
    (default 100 ms); ``chunk_ms``: the size of each chunk (and the
    granularity of the played position). ``max_buffered_ms``: model audio the
    output holds before ``__call__`` waits (backpressure, never a drop).
    ``dtmf_text``: each key press becomes this text input for the model
    (``{digit}`` replaced; None: keys reach only ``on_dtmf`` and
    :attr:`digits`). ``observer`` (the app's metrics) hears about audio in,
    events out and carrier errors; ``on_end(reason)`` is called once when the
    stream decides the conversation must end.
    """

    def __init__(
        self,
        websocket: WebSocket,
        *,
        lead_ms: float = 100.0,
        chunk_ms: int = 20,
        max_buffered_ms: float = 120_000.0,
        dtmf_text: str | None = DEFAULT_DTMF_TEXT,
        on_dtmf: Callable[[DtmfDigit], None] | None = None,
        observer: WebObserver | None = None,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        if not lead_ms >= 0 or not chunk_ms > 0 or not max_buffered_ms > 0:
            raise ValueError("lead_ms must be >= 0, chunk_ms and max_buffered_ms > 0")
        self.websocket = websocket
        self.lead_ms = float(lead_ms)
        self.chunk_ms = int(chunk_ms)
        self.max_buffered_ms = float(max_buffered_ms)
        self.dtmf_text = dtmf_text
        self._on_dtmf = on_dtmf
        self._observer = observer
        self._on_end = on_end
        self.start: wire.Start | None = None
        self.digits: list[DtmfDigit] = []
        self.protocol_errors = 0
        self.gone = False  # nothing more is sent: the carrier ended the stream, or it broke, or we closed it
        self._closed = False  # the socket is closed: not even a close frame can go
        self.end_reason: str | None = None
        self.last_activity = anyio.current_time()
        self._agent: AgentView | None = None
        self._send_lock = anyio.Lock()
        self._task_group: anyio.abc.TaskGroup | None = None
        # caller -> model
        self._caller: deque[bytes | str] = deque(maxlen=_CALLER_BUFFER)  # mu-law frames, or DTMF text
        self._caller_ended = False
        self._caller_changed = anyio.Event()
        self._decoder: CallerAudio | None = None
        # model -> caller
        self._encoder = ReplyAudio(self.chunk_ms)
        self._encoding: str | None = None  # the response whose audio the encoder holds
        self._queue: deque[_Chunk] = deque()
        self._queued_ms = 0.0
        self._sent: deque[tuple[str, _Chunk]] = deque()  # (mark name, chunk), sent and not yet confirmed
        self._sent_ms = 0.0  # sent and not yet confirmed, this epoch
        self._epoch = 0
        self._marks = 0
        self._tracks: dict[str, _Track] = {}
        self._changed = anyio.Event()  # the doorbell of the pacer, the drain, room and the start (see _notify)
        self.played_ms_total = 0.0
        self.cleared = 0
        self._input = TwilioStreamInput(self)
        self._output = TwilioStreamOutput(self)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._read_loop, name="bidi twilio reader")
        self._task_group.start_soon(self._pace, name="bidi twilio pacer")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._task_group = None

    def input(self) -> TwilioStreamInput:
        """The caller's audio and key presses, as a conversation input."""
        return self._input

    def output(self) -> TwilioStreamOutput:
        """The conversation's audio, to the caller, paced; it reports what was played."""
        return self._output

    @property
    def call_sid(self) -> str | None:
        return self.start.call_sid if self.start is not None else None

    @property
    def stream_sid(self) -> str | None:
        return self.start.stream_sid if self.start is not None else None

    async def wait_started(self) -> wire.Start:
        """Wait for the carrier's ``start``; raises :class:`CallEnded` if the stream ends first."""
        while self.start is None:
            if self._caller_ended:
                raise CallEnded("the stream ended before its 'start'")
            await self._wait_changed()
        return self.start

    @property
    def buffered_ms(self) -> float:
        """Audio sent to the carrier and not yet confirmed played (at most ``lead_ms + chunk_ms``)."""
        return self._sent_ms

    # ------------------------------------------------------------------ what the web app uses (ServedIO)

    def end(self, reason: str) -> None:
        """Ask the conversation to end (once); ``reason`` is kept in :attr:`end_reason`."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        logger.info("call ending: %s", reason)
        if self._on_end is not None:
            self._on_end(reason)
        if self._agent is not None:
            self._agent.request_stop("client_disconnect" if reason in ("caller_hung_up", "client_gone") else "timeout")

    async def tell_draining(self, seconds: float) -> None:
        """A caller cannot be told in band; the call goes on until the deadline."""

    async def tell_closing(self, reason: str) -> None:
        """Nothing to tell: closing the stream ends the call."""

    async def tell_failure(self) -> None:
        """Nothing to tell: closing the stream ends the call."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket: Twilio leaves the ``<Connect>`` and the call hangs up."""
        with anyio.CancelScope(shield=True):
            self.gone = True
            self._notify()
            if self._closed or self.websocket.application_state != WebSocketState.CONNECTED:
                return
            self._closed = True
            try:
                await self.websocket.send({"type": "websocket.close", "code": code, "reason": reason})
            except Exception as exc:  # already gone
                logger.debug("close failed, the carrier is gone: %r", exc)

    def _attach(self, agent: AgentView) -> None:
        if self._agent is None:
            self._agent = agent
            if self.end_reason is not None:  # the caller hung up before the agent started
                agent.request_stop("client_disconnect")

    # ------------------------------------------------------------------ the reader

    async def _read_loop(self) -> None:
        while not self.gone:
            try:
                message = await self.websocket.receive()
            except RuntimeError:  # Starlette: receive after a disconnect
                message = {"type": "websocket.disconnect"}
            if message["type"] == "websocket.disconnect":
                self._closed = True  # nothing more can be sent, a close frame included
                break
            text = message.get("text")
            if text is None:
                self._protocol_error("a binary frame (Twilio sends JSON text)")
                continue
            try:
                parsed = wire.parse(text)
            except wire.CarrierProtocolError as exc:
                self._protocol_error(str(exc))
                continue
            if isinstance(parsed, wire.Stop):
                logger.info("call %s: the carrier stopped the stream", self.call_sid)
                break
            self._handle(parsed)
        # The caller hung up (stop, or the socket closed). Not reached when cancelled: our own end is not a hang-up.
        self.gone = True
        self._caller_ended = True
        self._caller_changed.set()
        self._notify()
        self.end("caller_hung_up")

    def _protocol_error(self, detail: str) -> None:
        self.protocol_errors += 1
        logger.warning("a carrier message was refused: %s", detail)
        if self._observer is not None:
            self._observer.client_error("carrier_protocol")

    def _handle(self, message: wire.CarrierMessage | None) -> None:
        if isinstance(message, wire.Media):
            if self.start is None:
                self._protocol_error("media before 'start'")
                return
            if message.track not in (None, "inbound"):
                return
            self.last_activity = anyio.current_time()
            self._caller.append(message.payload)
            self._caller_changed.set()
            if self._observer is not None:
                self._observer.audio_in(len(message.payload) / MULAW_BYTES_PER_MS)
        elif isinstance(message, wire.Mark):
            self._confirmed(message.name)
        elif isinstance(message, wire.Dtmf):
            self._dtmf(message.digit)
        elif isinstance(message, wire.Start):
            if self.start is not None:
                self._protocol_error("a second 'start'")
                return
            if message.encoding != "audio/x-mulaw" or message.sample_rate != 8000 or message.channels != 1:
                self._protocol_error(f"unsupported media format {message.encoding} {message.sample_rate} Hz")
                self.end("bad_media_format")
                return
            self.start = message
            logger.info("call %s: stream %s started", message.call_sid, message.stream_sid)
            self._notify()
        # connected carries nothing we need; an unknown event (None) is ignored

    def _dtmf(self, digit: str) -> None:
        pressed = DtmfDigit(digit, anyio.current_time())
        self.digits.append(pressed)
        self.last_activity = pressed.at
        if self._on_dtmf is not None:
            self._on_dtmf(pressed)
        if self.dtmf_text is not None:
            self._caller.append(self.dtmf_text.replace("{digit}", digit))
            self._caller_changed.set()

    def _confirmed(self, name: str) -> None:
        """A mark came back: the chunks sent up to it have played, unless a clear made them void."""
        if not any(sent_name == name for sent_name, _ in self._sent):
            return  # a mark of an earlier epoch, echoed by a clear: nothing of it counts as played
        moved: set[str] = set()
        while self._sent:
            sent_name, chunk = self._sent.popleft()
            self._sent_ms -= chunk.ms
            self.played_ms_total += chunk.ms
            if chunk.response_id is not None:
                track = self._tracks.get(chunk.response_id)
                if track is not None:
                    track.in_flight -= 1
                    track.played_ms = min(track.received_ms, track.played_ms + chunk.ms)
                    moved.add(chunk.response_id)
            if sent_name == name:
                break
        self._sent_ms = max(0.0, self._sent_ms)
        self._notify()
        for rid in moved:
            self._report(rid)

    def _report(self, rid: str) -> None:
        track = self._tracks.get(rid)
        if track is None or self._agent is None or track.finished_told:
            return
        finished = track.complete and track.in_flight == 0
        track.finished_told = finished
        self._agent.report_playback(PlaybackReport(rid, track.played_ms, finished))

    # ------------------------------------------------------------------ the input side

    async def _next_input(self) -> BidiInputEvent:
        while True:
            while self._caller:
                item = self._caller.popleft()
                if isinstance(item, str):
                    return BidiTextInputEvent(text=item)
                assert self._decoder is not None
                pcm = self._decoder.decode(item)
                if pcm:
                    fmt = self._decoder.model
                    return BidiAudioInputEvent(audio=pcm, sample_rate=fmt.sample_rate, channels=fmt.channels)
            if self._caller_ended:
                raise CallEnded("the caller hung up")
            self._caller_changed = anyio.Event()  # one reader (the input's task): no wake-up is missed
            await self._caller_changed.wait()

    # ------------------------------------------------------------------ the output side

    def _track(self, rid: str) -> _Track:
        track = self._tracks.get(rid)
        if track is None:
            if len(self._tracks) >= 64:
                del self._tracks[next(iter(self._tracks))]
            track = self._tracks[rid] = _Track()
        return track

    def _enqueue(self, rid: str | None, chunks: list[bytes]) -> None:
        for mulaw in chunks:
            chunk = _Chunk(rid, mulaw, self._epoch)
            self._queue.append(chunk)
            self._queued_ms += chunk.ms
            if rid is not None:
                self._track(rid).in_flight += 1
        if chunks:
            self._notify()

    def _audio(self, event: BidiAudioStreamEvent) -> None:
        rid = event.response_id
        if rid != self._encoding:
            self._enqueue(self._encoding, self._encoder.flush())
            self._encoding = rid
        if rid is not None:
            self._track(rid).received_ms += event.duration_ms
        self._enqueue(rid, self._encoder.feed(event.audio, AudioFormat(event.sample_rate, event.channels)))

    def _complete(self, rid: str) -> None:
        if rid == self._encoding:
            self._enqueue(rid, self._encoder.flush())
            self._encoding = None
        track = self._tracks.get(rid)
        if track is not None:
            track.complete = True
            self._report(rid)

    async def _clear(self) -> None:
        """Barge-in: drop what was not sent, tell Twilio to drop what it holds, void the pending marks."""
        self._epoch += 1
        affected = {c.response_id for c in self._queue} | {c.response_id for _, c in self._sent}
        if self._encoding is not None:
            affected.add(self._encoding)
        self._queue.clear()
        self._queued_ms = 0.0
        had_audio = bool(self._sent)
        self._sent.clear()
        self._sent_ms = 0.0
        self._encoder.reset()
        self._encoding = None
        for rid in affected:
            if rid is None:
                continue
            track = self._track(rid)
            track.in_flight = 0
            track.complete = True  # what was dropped will not play: the response is over for the caller
            self._report(rid)
        self._notify()
        if had_audio and self.start is not None:
            self.cleared += 1
            await self._send(wire.clear_message(self.start.stream_sid))

    def _drained(self) -> bool:
        return self.gone or (not self._queue and not self._sent and self._encoding is None)

    async def _wait_drained(self) -> None:
        if self._encoding is not None:
            self._enqueue(self._encoding, self._encoder.flush())
            self._encoding = None
        while not self._drained():
            await self._wait_changed()

    async def _wait_room(self) -> None:
        while self._queued_ms > self.max_buffered_ms and not self.gone:
            await self._wait_changed()

    # ------------------------------------------------------------------ the pacer

    async def _pace(self) -> None:
        while True:
            while not self._may_send():
                await self._wait_changed()
            chunk = self._queue.popleft()
            self._queued_ms -= chunk.ms
            self._notify()  # room for a waiting __call__
            assert self.start is not None
            sid = self.start.stream_sid
            async with self._send_lock:
                if chunk.epoch != self._epoch or self.gone:
                    continue  # a clear came while this chunk waited for the lock
                self._marks += 1
                name = f"{self._epoch}.{self._marks}"
                self._sent.append((name, chunk))
                self._sent_ms += chunk.ms
                # One media message and its mark, never split by a clear (they hold the lock together).
                if not await self._send_locked(wire.media_message(sid, chunk.mulaw)):
                    continue
                await self._send_locked(wire.mark_message(sid, name))

    def _may_send(self) -> bool:
        return bool(self._queue) and self.start is not None and not self.gone and self._sent_ms <= self.lead_ms

    def _notify(self) -> None:
        """Ring the doorbell: every task waiting in :meth:`_wait_changed` looks again."""
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_changed(self) -> None:
        await self._changed.wait()

    # ------------------------------------------------------------------ writing

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            await self._send_locked(text)

    async def _send_locked(self, text: str) -> bool:
        if self.gone:
            return False
        try:
            await self.websocket.send({"type": "websocket.send", "text": text})
        except Exception as exc:  # the carrier went away mid-send
            logger.debug("send failed, the carrier is gone: %r", exc)
            self.gone = True
            self._notify()
            self.end("client_gone")
            return False
        return True


class TwilioStreamInput:
    """The caller's audio in the model's input format, and key presses as text (``dtmf_text``)."""

    def __init__(self, stream: TwilioMediaStream) -> None:
        self._stream = stream

    async def start(self, agent: AgentView) -> None:
        stream = self._stream
        stream._decoder = CallerAudio(agent.capabilities.input_audio)
        stream._attach(agent)

    async def __call__(self) -> BidiInputEvent:
        """The next input; raises :class:`CallEnded` (an ``EOFError``) once the caller hung up."""
        return await self._stream._next_input()

    async def stop(self) -> None:
        return None


class TwilioStreamOutput:
    """The model's audio to the caller at play pace (see the module); reports what the caller heard."""

    reports_playback = True

    def __init__(self, stream: TwilioMediaStream) -> None:
        self._stream = stream

    async def start(self, agent: AgentView) -> None:
        self._stream._attach(agent)

    def offer(self, event: BidiOutputEvent) -> bool:
        """Take an event on the spot (``ports.io.BidiInlineOutput``) when that needs no wait: audio while the
        queue has room, a completion, anything else we only pass by. An interruption (it sends ``clear``), a
        close and a cut-off completion go to :meth:`__call__`."""
        stream = self._stream
        if isinstance(event, BidiAudioStreamEvent):
            if stream._queued_ms > stream.max_buffered_ms and not stream.gone:
                return False
            stream._audio(event)
        elif isinstance(event, BidiResponseCompleteEvent) and event.stop_reason != "error":
            stream._complete(event.response_id)
        elif isinstance(event, BidiInterruptionEvent | BidiConnectionCloseEvent | BidiResponseCompleteEvent):
            return False
        if stream._observer is not None:
            stream._observer.event_sent(event)
        return True

    async def __call__(self, event: BidiOutputEvent) -> None:
        stream = self._stream
        if isinstance(event, BidiAudioStreamEvent):
            await stream._wait_room()
            stream._audio(event)
        elif isinstance(event, BidiInterruptionEvent):
            await stream._clear()
        elif isinstance(event, BidiResponseCompleteEvent):
            if event.stop_reason == "error":  # cut off by a lost connection: its audio is discarded
                await stream._clear()
            else:
                stream._complete(event.response_id)
        elif isinstance(event, BidiConnectionCloseEvent):
            if event.reason in _PLAYS_OUT:
                await stream._wait_drained()  # the goodbye plays out (the agent bounds the wait)
            else:
                await stream._clear()
        if stream._observer is not None:
            stream._observer.event_sent(event)

    async def stop(self) -> None:
        return None
