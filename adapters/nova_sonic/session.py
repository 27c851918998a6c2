"""One Nova Sonic stream: port items out as signed events, the model's events in.

Translation with only the bookkeeping the wire needs, no policy:

* **Out.** The setup (``sessionStart``, ``promptStart`` with the tools,
  the SYSTEM text, the history), then one interactive AUDIO content opened
  at the first audio block and kept open, a TEXT content per typed line, a
  TOOL content per tool result. Every event is signed in a chain, so events
  are signed and written one at a time under a lock; an event cut off
  half-way breaks the chain, and the stream is then only closed, never
  written again.
* **In.** Nova wraps everything in content blocks (ASR text, speculative
  text, audio, final text, tool use). Adapters of other libraries report one
  response per block; we report one :class:`BidiResponseStartEvent` /
  :class:`BidiResponseCompleteEvent` per assistant turn: the turn starts at
  the first ASSISTANT speculative text, audio or TOOL block and completes at the
  first ASSISTANT block that ends with ``END_TURN`` (``complete``), at a
  TOOL block (``tool_use``), at an ``INTERRUPTED`` block (``interrupted``,
  after a :class:`BidiSpeechStartedEvent`), or at ``completionEnd``. The
  FINAL assistant text, which Nova sends after the audio it transcribes
  (sometimes after the block that ended the turn), is reported as a final
  transcript of the turn it belongs to.
* **Close.** ``contentEnd`` of the open audio, ``promptEnd``, ``sessionEnd``,
  the signed empty frame, END_STREAM, then the rest of the server's events
  are read and dropped until it ends the stream (bounded in time).

``CancelResponse`` and ``TruncateResponse`` are no-ops: Nova stops speaking
by itself on barge-in and has no way to forget unplayed audio.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

import anyio
import attrs

from adapters.nova_sonic import wire
from adapters.nova_sonic.config import NovaSonicConfig
from adapters.nova_sonic.errors import error_for_message
from adapters.nova_sonic.eventstream import EventStreamDecoder, Message
from adapters.nova_sonic.h2transport import RequestStream
from adapters.nova_sonic.history import history_turns, split_utf8
from adapters.nova_sonic.signing import EventSigner
from adapters.nova_sonic.wire import tool_result_content
from adapters.responses import ResponseTracker
from ports.errors import BidiConnectionError, BidiError, BidiProtocolError, BidiProviderError, BidiUsageError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiErrorEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ModalityUsage,
    ModelEvent,
    StopReason,
)
from ports.model import CancelResponse, ConnectRequest, ModelCapabilities, ModelInput, TruncateResponse

__all__ = ["NovaSonicSession"]

logger = logging.getLogger("bidi_core.adapters.nova_sonic")

FRAME_MS = 32
"""AWS recommends audio frames of about 32 ms, streamed in real time."""


# --------------------------------------------------------------------------- the session


@attrs.define
class _Content:
    """An output content block between its contentStart and contentEnd."""

    type: str
    role: str
    stage: str | None
    response_id: str | None
    text: list[str] = attrs.field(factory=list)
    tool: wire.ToolUse | None = None


class NovaSonicSession:
    """A :class:`ports.model.BidiModelSession` over one bidirectional stream."""

    send_timeout_s = 5.0
    """How long one item may wait for flow-control credit (it is written under a shield)."""

    def __init__(
        self,
        stream: RequestStream,
        signer: EventSigner,
        *,
        connection_id: str,
        capabilities: ModelCapabilities,
        config: NovaSonicConfig,
        secrets: tuple[str, ...] = (),
        close_timeout_s: float = 3.0,
    ) -> None:
        self._stream = stream
        self._signer = signer
        self._connection_id = connection_id
        self._capabilities = capabilities
        self._config = config
        self._secrets = secrets
        self._close_timeout_s = close_timeout_s
        self._prompt = str(uuid.uuid4())
        self._audio_content: str | None = None
        self._frame_bytes = config.input_rate * 2 * FRAME_MS // 1000
        self._send_lock = anyio.Lock()
        self._chain_broken = False
        self._closed = False
        self.events_sent = 0
        # receiving
        self._decoder = EventStreamDecoder()
        self._contents: dict[str, _Content] = {}
        self._last_content: _Content | None = None
        self._pending: deque[ModelEvent] = deque()  # decoded, not yet returned by receive()
        self._responses = ResponseTracker(connection_id)
        self._speculative = ""
        self._speech_reported = False
        self._usage_seen = (0, 0, 0)
        self._issued_tools: set[str] = set()

    @property
    def connection_id(self) -> str:
        return self._connection_id

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._capabilities

    @property
    def request_id(self) -> str | None:
        return self._stream.response_headers.get("x-amzn-requestid")

    # ------------------------------------------------------------------ out

    async def _send_event(self, event_json: bytes) -> None:
        """Sign and write one event; the chain's order is the wire's order."""
        async with self._send_lock:
            if self._chain_broken:
                raise BidiConnectionError("an earlier event was cut off; this stream cannot be written to")
            message = self._signer.sign(wire.encode_chunk(event_json))
            try:
                await self._stream.send(message)
            except BaseException:
                self._chain_broken = True
                raise
            self.events_sent += 1

    async def _send(self, event: wire.InputEvent) -> None:
        await self._send_event(wire.encode_event(event))

    async def _text_content(self, role: str, text: str, *, interactive: bool, split: bool = False) -> None:
        pieces = split_utf8(text) if split else [text]
        for event in wire.text_content(self._prompt, role, pieces, interactive=interactive):
            await self._send(event)

    async def open(self, request: ConnectRequest) -> None:
        """Start the session (``wire.build_setup``: settings, voice, tools, system prompt), then the history
        (``history.py``)."""
        for event in wire.build_setup(self._config, request, self._prompt):
            await self._send(event)
        turns = history_turns(request.history)
        for role, text in turns:
            await self._text_content(role, text, interactive=False, split=True)
        logger.debug(
            "%s: session started (%d history turns, %d tools)", self._connection_id, len(turns), len(request.tools)
        )

    async def send(self, item: ModelInput) -> None:
        """Send one item, all of its events or none.

        An item takes several events (a text content is three; a long audio
        block several frames). Cancelling half-way would leave the service a
        torn content and the agent an item to send again on the next stream,
        part of which this one already got. So the item is written under a
        shield, bounded by ``send_timeout_s``; a cancellation takes effect
        right after it.
        """
        if self._closed:
            raise BidiConnectionError("the Nova Sonic stream is closed")
        if isinstance(item, CancelResponse | TruncateResponse):
            # Nova stops generating by itself on barge-in and cannot forget unplayed audio.
            logger.debug("%s: %s is a no-op on Nova Sonic", self._connection_id, type(item).__name__)
            return
        if not isinstance(item, BidiAudioInputEvent | BidiTextInputEvent | BidiToolResultEvent):
            raise BidiUsageError(f"Nova Sonic cannot take {type(item).__name__} (it has no image input)")
        if isinstance(item, BidiAudioInputEvent):
            self._check_audio(item)
        if isinstance(item, BidiTextInputEvent) and not item.text.strip():
            logger.debug("%s: not sending empty text", self._connection_id)  # Nova refuses an empty content
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.send_timeout_s) as scope:
            if isinstance(item, BidiAudioInputEvent):
                await self._send_audio(item)
            elif isinstance(item, BidiTextInputEvent):
                await self._text_content("USER", item.text, interactive=True)
            else:
                await self._send_tool_result(item)
        if scope.cancelled_caught:
            self._chain_broken = True
            raise BidiConnectionError(f"sending took longer than {self.send_timeout_s:g} s (no flow-control credit)")

    def _check_audio(self, item: BidiAudioInputEvent) -> None:
        rate = self._config.input_rate
        if item.sample_rate != rate or item.channels != 1 or item.format != "pcm":
            raise BidiUsageError(
                f"Nova Sonic is configured for {rate} Hz mono PCM input; got {item.sample_rate} Hz x "
                f"{item.channels} ({item.format}) (open the microphone at the model's capabilities.input_audio, "
                "as BidiAudioIO does, or set provider_config['audio']['input_rate'])"
            )
        if len(item.audio) % 2:
            raise BidiUsageError("audio blocks must hold whole 16-bit samples (an even number of bytes)")

    async def _send_audio(self, item: BidiAudioInputEvent) -> None:
        rate = self._config.input_rate
        if not item.audio:
            return
        if self._audio_content is None:
            name = str(uuid.uuid4())
            await self._send(
                wire.ContentStart(
                    prompt_name=self._prompt,
                    content_name=name,
                    type="AUDIO",
                    interactive=True,
                    role="USER",
                    audio_input_configuration={
                        "mediaType": "audio/lpcm",
                        "sampleRateHertz": rate,
                        "sampleSizeBits": 16,
                        "channelCount": 1,
                        "audioType": "SPEECH",
                        "encoding": "base64",
                    },
                )
            )
            self._audio_content = name
        audio = item.audio
        step = self._frame_bytes
        for start in range(0, len(audio), step):
            await self._send_event(
                wire.audio_input_json(self._prompt, self._audio_content, audio[start : start + step])
            )

    async def _send_tool_result(self, result: BidiToolResultEvent) -> None:
        if result.tool_use_id not in self._issued_tools:
            # Nova refuses a TOOL content for a toolUseId this stream never issued; the
            # core sends the outcome of a call of an earlier stream as the user's text.
            raise BidiUsageError(f"Nova Sonic did not issue tool use {result.tool_use_id!r} on this stream")
        self._issued_tools.discard(result.tool_use_id)
        name = str(uuid.uuid4())
        await self._send(
            wire.ContentStart(
                prompt_name=self._prompt,
                content_name=name,
                type="TOOL",
                interactive=False,
                role="TOOL",
                tool_result_input_configuration={
                    "toolUseId": result.tool_use_id,
                    "type": "TEXT",
                    "textInputConfiguration": {"mediaType": "text/plain"},
                },
            )
        )
        await self._send(
            wire.ToolResult(prompt_name=self._prompt, content_name=name, content=tool_result_content(result))
        )
        await self._send(wire.ContentEnd(prompt_name=self._prompt, content_name=name))

    async def close(self) -> None:
        """End the input politely and drain the output (bounded; shielded).

        Not when the caller is being cancelled: the stream's reader was cancelled
        with it, so the server's end of the stream could never be read and the
        goodbye would only hold the cancellation for the whole close timeout.
        Closing the connection ends the stream for the service too.
        """
        if self._closed:
            return
        self._closed = True
        if anyio.current_effective_deadline() == -math.inf:
            logger.debug("%s: cancelled; closing without the polite goodbye", self._connection_id)
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout_s) as scope:
            if not self._stream.usable or self._chain_broken:
                return
            try:
                if self._audio_content is not None:
                    await self._send(wire.ContentEnd(prompt_name=self._prompt, content_name=self._audio_content))
                await self._send(wire.PromptEnd(prompt_name=self._prompt))
                await self._send(wire.SessionEnd())
                async with self._send_lock:
                    await self._stream.send(self._signer.sign(b""))  # the signed end of input
                await self._stream.end()
                while (data := await self._stream.receive()) is not None:
                    self._drain(data)
            except BidiError as exc:
                logger.debug("%s: closing: %s", self._connection_id, exc)
        if scope.cancelled_caught:
            logger.debug(
                "%s: the server did not end the stream within %g s", self._connection_id, self._close_timeout_s
            )

    def _drain(self, data: bytes) -> None:
        try:
            for message in self._decoder.feed(data):
                kind = message.headers.get(":message-type")
                if kind != "event":
                    logger.debug(
                        "%s: while closing: %s %s", self._connection_id, kind, message.headers.get(":exception-type")
                    )
        except BidiProtocolError:
            pass

    async def explain(self, error: BidiError) -> BidiError:
        """The service's own reason for a stream that failed under us, if it sent one.

        A service that refuses an event sends an exception message and ends
        the stream; our next write then fails with a bare transport error.
        Reading what already arrived (briefly) recovers AWS's message.
        """
        with anyio.move_on_after(1.0):
            try:
                while True:
                    await self.receive()
            except (BidiProviderError, BidiProtocolError) as reason:
                return reason
            except (BidiError, anyio.EndOfStream):
                pass
        return error

    # ------------------------------------------------------------------ in

    async def receive(self) -> ModelEvent:
        pending = self._pending
        while not pending:
            data = await self._stream.receive()
            if data is None:
                if self._decoder.pending_bytes:
                    raise BidiProtocolError("the server ended the stream in the middle of a message")
                logger.debug("%s: the server ended the stream", self._connection_id)
                raise anyio.EndOfStream
            for message in self._decoder.feed(data):
                pending.extend(self._on_message(message))
        return pending.popleft()

    def _on_message(self, message: Message) -> list[ModelEvent]:
        headers = message.headers
        kind = headers.get(":message-type")
        if kind == "event":
            if headers.get(":event-type") != "chunk":
                logger.info("ignoring event-stream event %r", headers.get(":event-type"))
                return []
            try:
                data = wire.decode_chunk(message.payload)
                event = wire.parse_output_event(data)
            except (ValueError, UnicodeDecodeError) as exc:
                logger.warning("%s: malformed server event: %s", self._connection_id, exc)
                return [BidiErrorEvent(message=f"malformed server event: {exc}"[:300], code="protocol_error")]
            return self._translate(event)
        # No local for the error: its traceback holds this frame, which would hold it (a reference cycle,
        # and this session, its stream and socket would wait for the garbage collector's rare full pass).
        raise error_for_message(headers, message.payload, self.request_id, self._secrets) or BidiProtocolError(
            f"unknown event-stream message type {kind!r}", raw=message.payload[:200]
        )

    # ------------------------------------------------------------------ translation

    def _start_response(self) -> list[ModelEvent]:
        """Open a response for this assistant turn unless one is open (``adapters/responses.py``)."""
        if self._responses.current is not None:
            return []
        self._speculative = ""
        self._speech_reported = False
        return [self._responses.start()]

    def _complete(self, reason: StopReason) -> list[ModelEvent]:
        done = self._responses.complete(reason)
        return [] if done is None else [done]

    def _speech_started(self) -> list[ModelEvent]:
        if self._speech_reported:
            return []
        self._speech_reported = True
        return [BidiSpeechStartedEvent()]

    def _content(self, content_id: str | None) -> _Content | None:
        if content_id is not None and content_id in self._contents:
            return self._contents[content_id]
        return self._last_content

    def _translate(self, event: wire.OutputEvent) -> list[ModelEvent]:
        if isinstance(event, wire.AudioOutput):
            return self._audio(event)
        if isinstance(event, wire.OutputContentStart):
            return self._content_start(event)
        if isinstance(event, wire.TextOutput):
            return self._text(event)
        if isinstance(event, wire.OutputContentEnd):
            return self._content_end(event)
        if isinstance(event, wire.ToolUse):
            content = self._content(event.content_id)
            if content is None:
                return [
                    BidiErrorEvent(
                        message=f"toolUse {event.tool_use_id!r} outside a content block", code="protocol_error"
                    )
                ]
            content.tool = event
            return []
        if isinstance(event, wire.UsageEvent):
            return self._usage(event)
        if isinstance(event, wire.CompletionEnd):
            return self._complete("complete")
        if isinstance(event, wire.CompletionStart):
            logger.debug("%s: completion %s started", self._connection_id, event.completion_id)
            return []
        logger.info("ignoring unknown Nova Sonic event %r", getattr(event, "event_name", event))
        return []

    def _content_start(self, event: wire.OutputContentStart) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        stage = event.generation_stage
        role = event.role.upper()
        kind = event.type.upper()
        if role == "USER" and kind == "TEXT" and stage is None:
            stage = "FINAL"  # the user's transcript is final unless Nova says otherwise
        if role == "ASSISTANT" and (kind == "AUDIO" or (kind == "TEXT" and stage != "FINAL")):
            out += self._start_response()
            rid = self._responses.current
        elif role == "ASSISTANT":
            rid = self._responses.last  # FINAL text trails the turn it transcribes
        elif kind == "TOOL":
            # A tool call is a response of its own when no words came first (as OpenAI reports a
            # function-call-only turn: response start, the call, completion with ``tool_use``).
            out += self._start_response()
            rid = self._responses.current
        else:
            rid = self._responses.current
        content = _Content(type=kind, role=role, stage=stage, response_id=rid)
        self._contents[event.content_id] = content
        self._last_content = content
        return out

    def _text(self, event: wire.TextOutput) -> list[ModelEvent]:
        content = self._content(event.content_id)
        if wire.is_interruption(event.content):
            return self._speech_started()
        if content is None:
            return [BidiErrorEvent(message="textOutput outside a content block", code="protocol_error")]
        if content.stage == "FINAL":
            content.text.append(event.content)  # reported whole at its contentEnd
            return []
        if content.role == "ASSISTANT":
            self._speculative += event.content
            return [
                BidiTranscriptStreamEvent(event.content, self._speculative, "assistant", False, content.response_id)
            ]
        if content.role == "USER":
            content.text.append(event.content)
            return [BidiTranscriptStreamEvent(event.content, "".join(content.text), "user", False)]
        return []

    def _content_end(self, event: wire.OutputContentEnd) -> list[ModelEvent]:
        content = self._contents.pop(event.content_id, None)
        if content is None:
            return [
                BidiErrorEvent(message=f"contentEnd for unknown content {event.content_id!r}", code="protocol_error")
            ]
        if self._last_content is content:
            self._last_content = None
        stop = (event.stop_reason or "").upper()
        out: list[ModelEvent] = []
        current = content.response_id is not None and content.response_id == self._responses.current
        if content.tool is not None or content.type == "TOOL":
            out += self._tool_use(content)
            if stop == "INTERRUPTED":
                out += self._speech_started() + self._complete("interrupted")
            else:
                out += self._complete("tool_use")
            return out
        if content.type == "TEXT" and content.stage == "FINAL" and stop != "INTERRUPTED":
            text = "".join(content.text).strip()
            if text:
                role = "assistant" if content.role == "ASSISTANT" else "user"
                rid = content.response_id if role == "assistant" else None
                out.append(BidiTranscriptStreamEvent("", text, role, True, rid))  # type: ignore[arg-type]
        if stop == "INTERRUPTED":
            out += self._speech_started()
            if current:
                out += self._complete("interrupted")
        elif stop == "END_TURN" and content.role == "ASSISTANT" and current:
            out += self._complete("complete")
        return out

    def _tool_use(self, content: _Content) -> list[ModelEvent]:
        use = content.tool
        if use is None:
            return [BidiErrorEvent(message="a TOOL content block ended without a toolUse", code="protocol_error")]
        out: list[ModelEvent] = []
        try:
            arguments: Any = json.loads(use.content) if use.content.strip() else {}
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            # The tool then reports its missing arguments to the model, which usually retries.
            arguments = {}
            out.append(
                BidiErrorEvent(message=f"{use.tool_name}: arguments are not a JSON object", code="protocol_error")
            )
        self._issued_tools.add(use.tool_use_id)
        out.append(BidiToolUseEvent(use.tool_use_id, use.tool_name, arguments))
        return out

    def _audio(self, event: wire.AudioOutput) -> list[ModelEvent]:
        try:
            pcm = base64.b64decode(event.content, validate=True)
        except (binascii.Error, ValueError):
            return [BidiErrorEvent(message="audioOutput is not valid base64", code="protocol_error")]
        content = self._content(event.content_id)
        out: list[ModelEvent] = []
        if content is not None:
            rid = content.response_id
        else:
            out += self._start_response()
            rid = self._responses.current
        if rid is None:
            out += self._start_response()
            rid = self._responses.current
            if content is not None:
                content.response_id = rid
        out.append(BidiAudioStreamEvent(audio=pcm, sample_rate=self._config.output_rate, response_id=rid))
        return out

    def _usage(self, event: wire.UsageEvent) -> list[ModelEvent]:
        """Nova reports running totals; we report what each usage event adds, so the
        sum of our usage events is the stream's total (as for the other providers)."""
        seen = self._usage_seen
        totals = (event.total_input_tokens, event.total_output_tokens, event.total_tokens)
        delta = tuple(max(0, now - before) for now, before in zip(totals, seen, strict=True))
        self._usage_seen = tuple(max(a, b) for a, b in zip(totals, seen, strict=True))  # type: ignore[assignment]
        if not any(delta):
            return []
        return [
            BidiUsageEvent(
                input_tokens=delta[0],
                output_tokens=delta[1],
                total_tokens=delta[2],
                modality_details=_modalities(event.details),
            )
        ]


def _modalities(details: Mapping[str, Any] | None) -> tuple[ModalityUsage, ...]:
    delta = (details or {}).get("delta") if isinstance(details, Mapping) else None
    if not isinstance(delta, Mapping):
        return ()

    def count(direction: str, key: str) -> int:
        side = delta.get(direction)
        value = side.get(key) if isinstance(side, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    out = []
    for modality, key in (("audio", "speechTokens"), ("text", "textTokens")):
        i, o = count("input", key), count("output", key)
        if i or o:
            out.append(ModalityUsage(modality, i, o))
    return tuple(out)
