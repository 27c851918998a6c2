"""One OpenAI Realtime connection: port items out, port events in.

Translation only, no policy: whether a speech start interrupts, what to
truncate and when to reconnect are the core's decisions. The session keeps
just the bookkeeping the wire needs: the transcript text so far per item (the
service sends deltas), which item of a response carries its audio and how
much audio it received (``conversation.item.truncate`` names an item and
must not exceed its audio), and which function calls of a response still wait
for their outputs (several calls in one response get one ``response.create``
after the last output, sent only once that response is done).

Writes come from two tasks: the core's writer (``send``) and the reader,
which sends that deferred ``response.create`` when ``response.done`` arrives.
A ``response.create`` is deferred so too while one sent is not yet answered by
``response.created``: the service refuses a second, and the input that asked
for it would go unanswered.
Every message is one WebSocket frame, and :class:`WebSocketConnection` writes
each frame whole under its write lock (and refuses every write after one
that was cut off), so the two never interleave inside a message; that lock
is the session's serialisation of its writes.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections import deque
from functools import partial
from typing import Any

import anyio

from adapters.message_socket import MessageSocket
from adapters.openai import wire
from adapters.openai.config import SAMPLE_RATE, OpenAIConfig
from adapters.openai.errors import close_error, in_band_error
from adapters.openai.history import history_items
from adapters.websocket import WebSocketClosed
from ports.errors import BidiConnectionError, BidiUsageError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiErrorEvent,
    BidiImageInputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiSpeechStoppedEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ModalityUsage,
    ModelEvent,
)
from ports.model import CancelResponse, ConnectRequest, ModelCapabilities, ModelInput, TruncateResponse

__all__ = ["OpenAIRealtimeSession"]

logger = logging.getLogger("bidi_core.adapters.openai")

_BYTES_PER_MS = SAMPLE_RATE * 2 / 1000


class OpenAIRealtimeSession:
    """A :class:`ports.model.BidiModelSession` over one Realtime WebSocket."""

    def __init__(
        self, ws: MessageSocket, connection_id: str, capabilities: ModelCapabilities, config: OpenAIConfig
    ) -> None:
        self._ws = ws
        self._connection_id = connection_id
        self._capabilities = capabilities
        self._config = config
        self._transcripts: dict[str, str] = {}  # item id -> text so far
        self._audio_item: dict[str, str] = {}  # response id -> the item carrying its audio
        self._audio_bytes: dict[str, int] = {}  # item id -> audio bytes received
        self._last_audio_item: str | None = None  # of the last audio delta: _audio_item is up to date for it
        self._last_audio_response: str | None = None
        self._active_response: str | None = None
        self._response_requested = False  # a response.create sent, its response.created not read yet
        self._calls_by_response: dict[str, set[str]] = {}
        self._unanswered: set[str] = set()
        self._create_when_done = False
        self._pending: deque[ModelEvent] = deque()  # decoded, not yet returned by receive()
        self._created = False  # the service said session.created: the session is open
        self.rate_limits: list[wire.RateLimit] = []

    @property
    def connection_id(self) -> str:
        return self._connection_id

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._capabilities

    # ------------------------------------------------------------------ out

    async def _send(self, event: wire.ClientEvent) -> None:
        await self._write(wire.encode_client_event(event))

    async def _write(self, text: str) -> None:
        try:
            await self._ws.send_text(text)
        except WebSocketClosed as exc:
            if close_error(exc) is None:
                # The service ended the session (1000): the reader read it and reports it too. Said
                # the same way here, so a writer that hits the closed socket first tells no other story.
                raise anyio.EndOfStream from None
            raise

    async def open(self, model_id: str, request: ConnectRequest, timeout_s: float) -> None:
        """Configure the session (``wire.build_setup``), seed it with the history (``history.py``), and wait
        up to ``timeout_s`` for the service's ``session.created``.

        The service says ``session.created`` first on every connection
        (docs/protocols/openai.md#connection). A service that accepted the upgrade but never says it
        is stuck: what the core would send it is lost as a question (a new session gets it only as
        history, unanswered), so the connection fails to open and the input waits for the next one.
        Events read meanwhile are kept for :meth:`receive`.
        """
        wire.warm_up()
        await self._send(wire.build_setup(model_id, self._config, request))
        for item in history_items(request.history):
            await self._send(item)
        early: list[ModelEvent] = []
        with anyio.move_on_after(timeout_s):
            while not self._created:
                try:
                    frame = await self._ws.receive()
                except WebSocketClosed as exc:
                    # No local for the error: its traceback holds this frame (a reference cycle).
                    raise close_error(exc) or BidiConnectionError(
                        "OpenAI closed the connection before opening the session"
                    ) from None
                try:
                    event = wire.event_from_dict(wire.loads_server_event(frame))
                except wire.MalformedServerEvent as exc:
                    early.append(BidiErrorEvent(message=f"malformed server message: {exc}", code="protocol_error"))
                    continue
                early.extend(await self._translate(event))
        if not self._created:
            raise BidiConnectionError(f"OpenAI did not open the session (no session.created) within {timeout_s:g} s")
        self._pending.extendleft(reversed(early))

    async def send(self, item: ModelInput) -> None:
        for text in self._messages(item):
            await self._write(text)

    def send_nowait(self, item: ModelInput) -> bool:
        """Write ``item`` at once if the socket takes it without waiting (``ports.model.BidiSendNowait``)."""
        return self._ws.send_now(partial(self._messages, item))

    def _messages(self, item: ModelInput) -> list[str]:
        """The wire messages that send ``item``, in order; the session's bookkeeping assumes they go out."""
        encode = wire.encode_client_event
        if isinstance(item, BidiAudioInputEvent):
            if item.sample_rate != SAMPLE_RATE or item.channels != 1:
                raise BidiUsageError(
                    f"OpenAI Realtime takes 24000 Hz mono PCM; got {item.sample_rate} Hz x {item.channels} "
                    "(open the microphone at the model's capabilities.input_audio, as BidiAudioIO does)"
                )
            return [wire.audio_append(base64.b64encode(item.audio).decode("ascii"))]
        if isinstance(item, BidiTextInputEvent):
            message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": item.text}]}
            return [encode(wire.ConversationItemCreate(item=message)), *self._response_request()]
        if isinstance(item, BidiImageInputEvent):
            url = f"data:{item.mime_type};base64,{base64.b64encode(item.image).decode('ascii')}"
            message = {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": url}]}
            return [encode(wire.ConversationItemCreate(item=message))]
        if isinstance(item, BidiToolResultEvent):
            return self._tool_output(item)
        if isinstance(item, CancelResponse):
            return [encode(wire.ResponseCancel(response_id=item.response_id))]
        if isinstance(item, TruncateResponse):
            return self._truncation(item)
        raise BidiUsageError(f"OpenAI Realtime cannot send {type(item).__name__}")

    def _response_request(self) -> list[str]:
        # One response at a time: the service refuses a response.create while one is in progress, also one
        # it has not announced yet (response.created still on its way), and the input would go unanswered.
        if self._active_response is None and not self._response_requested:
            self._response_requested = True
            return [wire.encode_client_event(wire.ResponseCreate())]
        self._create_when_done = True
        return []

    def _tool_output(self, result: BidiToolResultEvent) -> list[str]:
        output = result.content if isinstance(result.content, str) else json.dumps(result.content)
        if result.status == "error":
            output = json.dumps({"error": output})
        elif result.status == "cancelled":
            output = json.dumps({"cancelled": True, "message": output})
        item = {"type": "function_call_output", "call_id": result.tool_use_id, "output": output}
        messages = [wire.encode_client_event(wire.ConversationItemCreate(item=item))]
        self._unanswered.discard(result.tool_use_id)
        if not self._unanswered:
            # Every call of the response is answered: one response.create for all of them.
            messages += self._response_request()
        return messages

    def _truncation(self, item: TruncateResponse) -> list[str]:
        item_id = self._audio_item.get(item.response_id)
        if item_id is None:
            logger.debug("truncate %s: no audio item, nothing to truncate", item.response_id)
            return []
        received_ms = int(self._audio_bytes.get(item_id, 0) / _BYTES_PER_MS)
        end = max(0, min(item.audio_end_ms, received_ms))
        return [wire.encode_client_event(wire.ConversationItemTruncate(item_id=item_id, audio_end_ms=end))]

    # ------------------------------------------------------------------ in

    async def receive(self) -> ModelEvent:
        # The hot path (fifty audio deltas a second per session) is inline: no coroutine,
        # list or event object per chunk beyond the port event itself; the rest goes to _translate.
        pending = self._pending
        if pending:
            return pending.popleft()
        ws_receive = self._ws.receive
        loads = wire.loads_server_event
        b64decode = base64.b64decode
        audio_bytes = self._audio_bytes
        while True:
            try:
                frame = await ws_receive()
            except WebSocketClosed as exc:
                # No local for the error: its traceback holds this frame (a reference cycle).
                raise close_error(exc) or anyio.EndOfStream() from None
            try:
                data = loads(frame)
                if data["type"] == wire.AUDIO_DELTA:
                    rid, item, delta = wire.audio_delta_fields(data)
                    try:
                        pcm = b64decode(delta, validate=True)
                    except (binascii.Error, ValueError):
                        return BidiErrorEvent(message="audio delta is not valid base64", code="protocol_error")
                    if item != self._last_audio_item or rid != self._last_audio_response:
                        self._last_audio_item, self._last_audio_response = item, rid
                        self._audio_item.setdefault(rid, item)
                    audio_bytes[item] = audio_bytes.get(item, 0) + len(pcm)
                    return BidiAudioStreamEvent(pcm, "pcm", SAMPLE_RATE, 1, rid)
                event = wire.event_from_dict(data)
            except wire.MalformedServerEvent as exc:
                logger.warning("malformed server message: %s", exc)
                return BidiErrorEvent(message=f"malformed server message: {exc}", code="protocol_error")
            events = await self._translate(event)
            if events:
                pending.extend(events)
                return pending.popleft()

    async def _translate(self, event: wire.ServerEvent) -> list[ModelEvent]:
        """Every event but audio deltas (handled in :meth:`receive`); several events, one or none."""
        if isinstance(event, wire.OutputTranscriptDelta | wire.OutputTextDelta):
            text = self._transcripts.get(event.item_id, "") + event.delta
            self._transcripts[event.item_id] = text
            return [BidiTranscriptStreamEvent(event.delta, text, "assistant", False, event.response_id)]
        if isinstance(event, wire.OutputTranscriptDone | wire.OutputTextDone):
            text = event.transcript if isinstance(event, wire.OutputTranscriptDone) else event.text
            self._transcripts.pop(event.item_id, None)
            return [BidiTranscriptStreamEvent("", text, "assistant", True, event.response_id)]
        if isinstance(event, wire.ResponseCreated):
            self._active_response = event.response.id
            self._response_requested = False
            return [BidiResponseStartEvent(event.response.id)]
        if isinstance(event, wire.ResponseDone):
            return await self._response_done(event.response)
        if isinstance(event, wire.FunctionCallArgumentsDone):
            return self._function_call(event)
        if isinstance(event, wire.SpeechStarted):
            return [BidiSpeechStartedEvent()]
        if isinstance(event, wire.SpeechStopped):
            return [BidiSpeechStoppedEvent()]
        if isinstance(event, wire.InputTranscriptionDelta):
            text = self._transcripts.get(event.item_id, "") + event.delta
            self._transcripts[event.item_id] = text
            return [BidiTranscriptStreamEvent(event.delta, text, "user", False)]
        if isinstance(event, wire.InputTranscriptionCompleted):
            self._transcripts.pop(event.item_id, None)
            return [BidiTranscriptStreamEvent("", event.transcript, "user", True)]
        if isinstance(event, wire.InputTranscriptionFailed):
            message = str(event.error.get("message", "input transcription failed"))
            return [BidiErrorEvent(message=message, code="transcription_failed")]
        if isinstance(event, wire.ErrorEvent):
            return self._error(event.error)
        if isinstance(event, wire.RateLimitsUpdated):
            self.rate_limits = list(event.rate_limits)
            logger.debug("rate limits: %s", event.rate_limits)
            return []
        if isinstance(event, wire.SessionCreated | wire.SessionUpdated):
            logger.debug("%s", event.type)
            self._created = True
            return []
        if isinstance(event, wire.UnknownServerEvent):
            if event.type not in _ACKNOWLEDGED:
                logger.info("ignoring unknown server event %r", event.type)
            return []
        return []  # audio done, speech stopped: nothing for the core

    def _function_call(self, event: wire.FunctionCallArgumentsDone) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        try:
            arguments: Any = json.loads(event.arguments) if event.arguments.strip() else {}
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            # The tool then reports its missing arguments to the model, which usually retries.
            arguments = {}
            out.append(BidiErrorEvent(message=f"{event.name}: arguments are not a JSON object", code="protocol_error"))
        self._calls_by_response.setdefault(event.response_id, set()).add(event.call_id)
        self._unanswered.add(event.call_id)
        out.append(BidiToolUseEvent(event.call_id, event.name, arguments))
        return out

    async def _response_done(self, response: wire.ResponseInfo) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        if response.usage:
            out.append(_usage(response.usage))
        calls = self._calls_by_response.pop(response.id, set())
        status = response.status or "completed"
        if status == "completed":
            reason = "tool_use" if calls else "complete"
        elif status == "cancelled":
            reason = "interrupted"
        else:
            reason = "error"
            details = response.status_details or {}
            error = details.get("error") or {}
            message = error.get("message") or f"response {status}: {details.get('reason', 'unknown reason')}"
            out.append(BidiErrorEvent(message=str(message), code=str(error.get("code") or f"response_{status}")))
        out.append(BidiResponseCompleteEvent(response.id, reason))  # type: ignore[arg-type]
        if self._active_response == response.id:
            self._active_response = None
        if self._create_when_done and not self._unanswered:
            self._create_when_done = False
            self._response_requested = True
            await self._send(wire.ResponseCreate())
        return out

    def _error(self, error: wire.ErrorDetail) -> list[ModelEvent]:
        fatal = in_band_error(error)
        if fatal is not None:
            raise fatal
        code = error.code or error.type or "error"
        # It may be the answer to our response.create (the service names no request): not waiting for a
        # response.created any more costs at worst a second response.create, refused as the one below.
        self._response_requested = False
        if code == "conversation_already_has_active_response":
            # Ours raced a response the service started by itself (its turn detection): ask again
            # once that one is done, so the input that asked is answered.
            logger.debug("response.create raced an active response: %s", error.message)
            self._create_when_done = True
        return [BidiErrorEvent(message=error.message, code=code, details=error.param)]


_ACKNOWLEDGED = frozenset(
    {
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.created",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.timeout_triggered",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
    }
)
"""Known server events that carry nothing the core needs."""


def _usage(usage: dict[str, Any]) -> BidiUsageEvent:
    """``response.done``'s usage, every count kept: totals, then each modality's input,
    output and cached input (``cached_tokens_details``, a part of the input)."""

    def num(d: Any, key: str) -> int:
        value = d.get(key) if isinstance(d, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    inp = usage.get("input_token_details") or {}
    outp = usage.get("output_token_details") or {}
    cached_by = inp.get("cached_tokens_details") if isinstance(inp, dict) else None
    details = []
    for m in ("text", "audio", "image"):
        counts = (num(inp, f"{m}_tokens"), num(outp, f"{m}_tokens"), num(cached_by, f"{m}_tokens"))
        if any(counts):
            details.append(ModalityUsage(m, *counts))
    cached = num(inp, "cached_tokens")
    return BidiUsageEvent(
        input_tokens=num(usage, "input_tokens"),
        output_tokens=num(usage, "output_tokens"),
        total_tokens=num(usage, "total_tokens"),
        modality_details=tuple(details),
        cache_read_input_tokens=cached or None,
    )
