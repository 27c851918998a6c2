"""A conversation's input and output over one ASGI WebSocket (Starlette's ``WebSocket``).

Mount a conversation in your own Starlette or FastAPI app::

    @app.websocket_route("/talk")
    async def talk(websocket: WebSocket) -> None:
        await websocket.accept()
        io = WebSocketIO(websocket)
        agent = BidiAgent(model=model, tools=[...])
        await agent.run(inputs=[io.input()], outputs=[io.output()])
        await io.close()

The wire protocol is docs/web-protocol.md: on start the server says the audio
formats (``session``) and waits for the client's ``start``; then audio goes as
binary PCM16 frames both ways and everything else as JSON text frames. Bad
client input gets an ``error`` message and is dropped; it never ends the
conversation (a client that keeps flooding is disconnected). A client that
goes away ends the conversation cleanly: the agent is asked to stop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import anyio
from starlette.websockets import WebSocket, WebSocketState

from adapters.web import protocol as p
from adapters.web.limits import WebLimits
from ports.audio import AudioFormat
from ports.errors import BidiUsageError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiInputEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiTextInputEvent,
    event_from_dict,
)
from ports.io import AgentView, PlaybackReport

__all__ = ["ClientGone", "WebObserver", "WebSocketIO", "WebSocketInput", "WebSocketOutput"]

logger = logging.getLogger("bidi_core.adapters.web")

_INPUT_EVENTS = ("bidi_text_input", "bidi_image_input")
_REPORTED_RESPONSES = 64
"""How many responses' sent audio the output remembers, to check the client's playback reports."""


class ClientGone(EOFError):
    """The client closed the WebSocket or vanished. An ``EOFError``: the input has simply ended."""


class WebObserver(Protocol):
    """What the I/O tells whoever counts (the app's metrics). Every method is called on the event loop."""

    def client_error(self, code: str) -> None: ...

    def audio_in(self, ms: float) -> None: ...

    def event_sent(self, event: BidiOutputEvent) -> None: ...


class WebSocketIO:
    """One browser's WebSocket as a conversation input (:meth:`input`) and output (:meth:`output`).

    The socket must be accepted already. ``limits`` bounds what the client may
    send (frame size, message and audio rates, time to ``start``).
    ``observer`` hears about client errors, audio in and events out.
    ``on_end(reason)`` is called once when the I/O decides the conversation
    must end (``"client_gone"``, ``"client_stop"``, ``"flood"``); the agent
    is asked to stop (``request_stop``) as well.
    """

    def __init__(
        self,
        websocket: WebSocket,
        *,
        limits: WebLimits | None = None,
        observer: WebObserver | None = None,
        on_end: Callable[[str], None] | None = None,
    ) -> None:
        self.websocket = websocket
        self.limits = limits or WebLimits()
        self._observer = observer
        self._on_end = on_end
        self._agent: AgentView | None = None
        self._send_lock = anyio.Lock()
        self._input_format = AudioFormat(24000)
        self._output_format = AudioFormat(24000)
        self._started = False
        self._start_done = anyio.Event()
        self.reports_playback = False
        self.gone = False
        self.end_reason: str | None = None
        self.last_activity = anyio.current_time()
        now = self.last_activity
        self._messages = p.TokenBucket(self.limits.max_messages_per_s, self.limits.message_burst, now)
        self._audio = p.TokenBucket(self.limits.max_audio_speed * 1000.0, self.limits.audio_burst_ms, now)
        # Each dropped message costs a strike; strikes come back at the message rate. A client that runs
        # out (it sends more than twice the rate for about flood_close_s) is disconnected.
        strikes = max(1.0, self.limits.max_messages_per_s * self.limits.flood_close_s)
        self._strikes = p.TokenBucket(self.limits.max_messages_per_s, strikes, now)
        self._limited_told = -1.0
        self._dropped = 0
        self._input = WebSocketInput(self)
        self._output = WebSocketOutput(self)

    def input(self) -> WebSocketInput:
        """The client's audio and text, as a conversation input."""
        return self._input

    def output(self) -> WebSocketOutput:
        """The conversation's events and audio, to the client."""
        return self._output

    @property
    def started(self) -> bool:
        """Whether the client's ``start`` was accepted."""
        return self._started

    @property
    def dropped_messages(self) -> int:
        """Client messages dropped for exceeding a rate limit."""
        return self._dropped

    # ------------------------------------------------------------------ what the app uses

    def end(self, reason: str) -> None:
        """Ask the conversation to end (once); ``reason`` is kept in :attr:`end_reason`."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        logger.debug("conversation ending: %s", reason)
        if self._on_end is not None:
            self._on_end(reason)
        if self._agent is not None:
            self._agent.request_stop("client_disconnect" if reason in ("client_gone", "client_stop") else "timeout")

    async def send_json(self, message: dict[str, Any]) -> None:
        """Send one JSON text frame; nothing happens once the client is gone."""
        await self._send({"type": "websocket.send", "text": json.dumps(message, separators=(",", ":"))})

    async def tell_draining(self, seconds: float) -> None:
        """``draining``: the server is shutting down, ``seconds`` left."""
        await self.send_json(p.draining_message(seconds))

    async def tell_closing(self, reason: str) -> None:
        """``closing``: why the server ends the conversation."""
        await self.send_json(p.closing_message(reason))

    async def tell_failure(self) -> None:
        """An ``error`` (``server_error``): the conversation failed on the server."""
        await self.send_json(p.error_message("server_error", "the conversation failed"))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the WebSocket (a no-op when the client is gone or it is closed already)."""
        with anyio.CancelScope(shield=True):
            if self.gone or self.websocket.application_state != WebSocketState.CONNECTED:
                return
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
            self.gone = True

    # ------------------------------------------------------------------ the start exchange

    async def _begin(self, agent: AgentView) -> None:
        """Say the formats, then wait for the client's ``start`` (the first of input and output to start does)."""
        if self._agent is not None:
            await self._start_done.wait()
            return
        self._agent = agent
        caps = agent.capabilities
        self._input_format, self._output_format = caps.input_audio, caps.output_audio
        await self.send_json(p.session_message(caps.input_audio, caps.output_audio, self.limits.for_client()))
        try:
            with anyio.fail_after(self.limits.start_timeout_s):
                while not self._started:
                    item = await self._next()
                    if item is not None:
                        await self._error(p.NOT_STARTED, "send 'start' before audio or text")
        except TimeoutError:
            self.end("no_start")
            raise ClientGone("the client sent no 'start' in time") from None
        finally:
            self._start_done.set()

    # ------------------------------------------------------------------ reading the client

    async def _read(self) -> BidiInputEvent:
        while True:
            item = await self._next()
            if item is not None:
                return item

    async def _next(self) -> BidiInputEvent | None:
        """Read one frame: an input event, or None for a control message (or a refused frame)."""
        if self.gone:
            raise ClientGone("the client is gone")
        try:
            message = await self.websocket.receive()
        except RuntimeError:  # Starlette: receive after a disconnect
            message = {"type": "websocket.disconnect"}
        if message["type"] == "websocket.disconnect":
            self.gone = True
            self.end("client_gone")
            raise ClientGone("the client closed the connection")
        data: bytes | None = message.get("bytes")
        text: str | None = message.get("text")
        size = len(data) if data is not None else len(text.encode()) if text is not None else 0
        try:
            self._admit(size)
            if data is not None:
                return self._audio_frame(data)
            if text is not None:
                return await self._text_frame(text)
        except p.ClientError as exc:
            await self._error(exc.code, exc.message)
        return None

    def _admit(self, size: int) -> None:
        """The frame size and the message rate limit: a ClientError drops the message (the client is told)."""
        now = anyio.current_time()
        if size > self.limits.max_frame_bytes:
            raise p.ClientError(
                p.FRAME_TOO_LARGE, f"a frame may hold at most {self.limits.max_frame_bytes} bytes, not {size}"
            )
        if self._messages.take(now):
            return
        self._dropped += 1
        if not self._strikes.take(now):
            self.end("flood")
            raise ClientGone("the client kept flooding")
        raise p.ClientError(p.RATE_LIMITED, f"more than {self.limits.max_messages_per_s:g} messages a second")

    def _audio_frame(self, data: bytes) -> BidiAudioInputEvent | None:
        if not self._started:
            raise p.ClientError(p.NOT_STARTED, "send 'start' before audio")
        fmt = self._input_format
        if len(data) % fmt.bytes_per_frame:
            raise p.ClientError(p.ODD_LENGTH, f"audio frames hold whole {fmt.bytes_per_frame}-byte samples")
        ms = fmt.duration_ms(data)
        if not self._audio.take(anyio.current_time(), ms):
            self._dropped += 1
            raise p.ClientError(p.RATE_LIMITED, f"audio faster than {self.limits.max_audio_speed}x real time")
        self.last_activity = anyio.current_time()
        if self._observer is not None:
            self._observer.audio_in(ms)
        return BidiAudioInputEvent(audio=data, sample_rate=fmt.sample_rate, channels=fmt.channels)

    async def _text_frame(self, text: str) -> BidiInputEvent | None:
        message = p.parse_json_object(text)
        kind = message["type"]
        if kind == "start":
            if self._started:
                raise p.ClientError(p.ALREADY_STARTED, "'start' was already accepted")
            start = p.parse_start(message, self._input_format)
            self.reports_playback = start.reports_playback
            self._started = True
            return None
        if not self._started:
            raise p.ClientError(p.NOT_STARTED, "send 'start' first")
        if kind == "playback":
            self._output._report(p.parse_playback(message))
            return None
        if kind == "stop":
            self.end("client_stop")
            return None
        if kind == "bidi_audio_input":
            raise p.ClientError(p.AUDIO_MUST_BE_BINARY, "audio goes in binary frames, not as JSON")
        if kind not in _INPUT_EVENTS:
            raise p.ClientError(p.UNKNOWN_MESSAGE, f"unknown message type {kind!r}")
        try:
            event = event_from_dict(message)
        except BidiUsageError as exc:
            raise p.ClientError(p.INVALID_INPUT, str(exc)) from None
        self.last_activity = anyio.current_time()
        assert isinstance(event, BidiTextInputEvent) or event.type == "bidi_image_input"
        return event  # type: ignore[return-value]

    async def _error(self, code: str, message: str) -> None:
        """Tell the client what was wrong; repeated rate-limit errors at most once a second."""
        if code == p.RATE_LIMITED:
            now = anyio.current_time()
            if now - self._limited_told < 1.0:
                return
            self._limited_told = now
        if self._observer is not None:
            self._observer.client_error(code)
        logger.info("refused a client message: %s", code)
        await self.send_json(p.error_message(code, message))

    # ------------------------------------------------------------------ writing

    def _is_gone(self) -> bool:
        return self.gone

    async def _send(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        async with self._send_lock:
            if self._is_gone():  # it may have gone while this send waited for the lock
                return
            try:
                await self.websocket.send(message)
            except Exception as exc:  # the client went away mid-send: what is left to say goes nowhere
                logger.debug("send failed, the client is gone: %r", exc)
                self.gone = True
                self.end("client_gone")


class WebSocketInput:
    """The client's audio (binary frames) and text (``bidi_text_input``) as input events.

    Control messages (``start``, ``playback``, ``stop``) are handled here and
    never reach the conversation. Made by :meth:`WebSocketIO.input`.
    """

    def __init__(self, io: WebSocketIO) -> None:
        self._io = io

    async def start(self, agent: AgentView) -> None:
        await self._io._begin(agent)

    async def __call__(self) -> BidiInputEvent:
        """The next input; raises :class:`ClientGone` (an ``EOFError``) when the client has gone."""
        return await self._io._read()

    async def stop(self) -> None:
        return None


class _Sent:
    """What was sent of one response's audio (ms) and what the client said it played."""

    __slots__ = ("played_ms", "sent_ms")

    def __init__(self) -> None:
        self.sent_ms = 0.0
        self.played_ms = 0.0


class WebSocketOutput:
    """Every output event to the client: audio as binary frames, the rest as JSON.

    Reports playback when the client's ``start`` said it does
    (``reports_playback``): the client's ``playback`` messages become
    :class:`~ports.io.PlaybackReport`\\ s, clamped to what was sent, so a
    barge-in truncates the model's memory where the listener stopped hearing.
    On an interruption the client is told (``bidi_interruption``) and clears
    its buffer at once. Made by :meth:`WebSocketIO.output`.
    """

    def __init__(self, io: WebSocketIO) -> None:
        self._io = io
        self._header: tuple[str | None, AudioFormat] | None = None
        self._responses: dict[str, _Sent] = {}

    @property
    def reports_playback(self) -> bool:  # read by run() after start(), so the client's answer counts
        return self._io.reports_playback

    async def start(self, agent: AgentView) -> None:
        await self._io._begin(agent)

    async def __call__(self, event: BidiOutputEvent) -> None:
        io = self._io
        if isinstance(event, BidiAudioStreamEvent):
            await self._audio(event)
        else:
            if isinstance(event, BidiInterruptionEvent | BidiResponseCompleteEvent | BidiConnectionCloseEvent):
                self._header = None
            await io.send_json(event.to_dict())
        if io._observer is not None:
            io._observer.event_sent(event)

    async def stop(self) -> None:
        return None

    async def _audio(self, event: BidiAudioStreamEvent) -> None:
        io = self._io
        fmt = AudioFormat(event.sample_rate, event.channels)
        rid = event.response_id
        if self._header != (rid, fmt):
            self._header = (rid, fmt)
            await io.send_json(p.audio_header(rid, fmt))
        if rid is not None:
            sent = self._responses.get(rid)
            if sent is None:
                if len(self._responses) >= _REPORTED_RESPONSES:
                    del self._responses[next(iter(self._responses))]
                sent = self._responses[rid] = _Sent()
            sent.sent_ms += fmt.duration_ms(event.audio)
        await io._send({"type": "websocket.send", "bytes": event.audio})

    def _report(self, report: p.PlaybackMessage) -> None:
        """A client's ``playback``: passed on as a PlaybackReport, never beyond what was sent."""
        io = self._io
        sent = self._responses.get(report.response_id)
        if sent is None:
            raise p.ClientError(p.BAD_MESSAGE, f"playback: no audio was sent for {report.response_id!r}")
        played = min(report.played_ms, sent.sent_ms)
        sent.played_ms = max(sent.played_ms, played)
        if io.reports_playback and io._agent is not None:
            io._agent.report_playback(PlaybackReport(report.response_id, sent.played_ms, report.finished))
