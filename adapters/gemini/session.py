"""One Gemini Live connection: port items out, port events in.

Translation only, no policy. Gemini's turn signals differ from OpenAI's, so
the session derives the same event sequence an app sees on OpenAI
(``adapters/openai/session.py``):

* there is no "response created": a response starts with its first output
  (audio, text, an output transcription or a tool call) and gets a response
  id of ours;
* ``generationComplete`` ends the assistant's transcript (a final transcript
  event); ``turnComplete`` ends the response (usage riding on the same
  message comes first, then ``BidiResponseCompleteEvent("complete")``);
* Gemini sends the user's input transcription in pieces, with no final one
  and no ordering guarantee: the user's transcript so far is made final when
  the model starts answering (the user's turn is over) and, for pieces that
  arrive late, at ``turnComplete``;
* ``toolCall`` ends the response with ``stop_reason="tool_use"``: the service
  says nothing more until every call is answered, and the answer starts a new
  response;
* ``interrupted`` is the provider's barge-in: :class:`BidiSpeechStartedEvent`
  (the core decides it interrupts), then the response completes with
  ``stop_reason="interrupted"``. The ``turnComplete`` that follows has no
  response left to end.

Gemini has no cancel or truncate message (the service stops generating by
itself when the user speaks and keeps what it generated), so
:class:`CancelResponse` and :class:`TruncateResponse` are accepted and
dropped: ``capabilities`` says ``cancels_on_speech=True, can_truncate=False``,
so the core sends neither anyway.

Resumption bookkeeping. Each ``send()`` item is remembered with the index of
the last wire message it produced (``setup`` is message 0, the history seed
message 1). With transparent resumption (Vertex AI) the service reports
``lastConsumedClientMessageIndex``; the number of leading items whose
messages all have an index at most that is ``inputs_included`` of
:class:`BidiResumptionUpdateEvent`, so the core replays exactly the rest on
the next connection. Items that produce no message (cancel, truncate) count
as included as soon as everything before them is. Without transparent mode
the service does not say, and ``inputs_included`` is None.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import logging
import math
import sys
from array import array
from collections import deque
from collections.abc import Iterable
from functools import partial

import anyio
import attrs

from adapters.gemini import wire
from adapters.gemini.config import OUTPUT_RATE, GeminiConfig
from adapters.gemini.errors import close_error
from adapters.gemini.history import history_turns
from adapters.gemini.wire import tool_response_body
from adapters.message_socket import MessageSocket
from adapters.responses import ResponseTracker
from adapters.websocket import WebSocketClosed
from ports.errors import BidiConnectionError, BidiUsageError
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiConnectionExpiringEvent,
    BidiErrorEvent,
    BidiImageInputEvent,
    BidiResponseCompleteEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiTextInputEvent,
    BidiToolCancelEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
    ModalityUsage,
    ModelEvent,
    StopReason,
)
from ports.model import CancelResponse, ConnectRequest, ModelCapabilities, ModelInput, TruncateResponse

__all__ = ["GeminiLiveSession"]

logger = logging.getLogger("bidi_core.adapters.gemini")


# --------------------------------------------------------------------------- the session


class GeminiLiveSession:
    """A :class:`ports.model.BidiModelSession` over one ``BidiGenerateContent`` WebSocket."""

    def __init__(
        self,
        ws: MessageSocket,
        connection_id: str,
        capabilities: ModelCapabilities,
        config: GeminiConfig,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._ws = ws
        self._connection_id = connection_id
        self._capabilities = capabilities
        self._config = config
        self._secrets = secrets
        self._text_out = config.response_modalities == ("TEXT",)
        self._pending: deque[ModelEvent] = deque()  # decoded, not yet returned by receive()
        # Wire bookkeeping for transparent resumption (see the module docstring).
        self._next_index = 0
        self._track = config.transparent  # only transparent updates say what a handle holds
        self._guessing_holds = config.resumption and not config.transparent
        self._item_last_index: list[int] = []  # for items not yet known to be held
        self._items_held = 0  # items known to be held, dropped from the list above
        # Translation state.
        self._responses = ResponseTracker(connection_id)
        self._assistant_text = ""
        self._assistant_final_sent = False
        self._user_text = ""
        # Loud microphone audio since the model's last response began: what tells a new user
        # turn's first transcription from a late piece of the previous one (see _server_content).
        self._heard_speech = False
        self._synthetic_calls: set[str] = set()
        self._issued_calls: set[str] = set()  # calls of this connection still unanswered
        self._withdrawn_calls: set[str] = set()  # calls the service cancelled: nothing waits for them
        self._going_away = False  # the service announced the end of this connection (goAway)
        self._rate_of_mime: dict[str, int] = {}
        self.session_id: str | None = None
        self._set_up = False  # setupComplete read

    @property
    def connection_id(self) -> str:
        return self._connection_id

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._capabilities

    # ------------------------------------------------------------------ opening

    async def open(self, model_path: str, request: ConnectRequest, *, timeout_s: float) -> None:
        """Send the ``setup`` (``wire.build_setup``), wait for ``setupComplete``, then seed the history.

        With ``request.resume_handle`` (and resumption enabled) the handle is
        sent and the history is not (the session behind the handle has it);
        otherwise the history goes in as one ``clientContent`` (``history.py``).
        Raises :class:`BidiResumptionRejectedError` when the setup carried a
        handle and the service closed with 1007 before accepting it.
        """
        wire.warm_up()
        handle = request.resume_handle if self._config.resumption else None
        setup = wire.build_setup(model_path, self._config, request, handle)
        history = [] if handle else history_turns(request.history)
        logger.debug("%s setup: %s", self._connection_id, wire.describe_setup(setup))
        resuming = bool(handle)
        await self._write(wire.encode_client_message(setup), resuming_before_setup=resuming)
        try:
            with anyio.fail_after(timeout_s):
                while True:
                    frame = await self._receive_frame(resuming_before_setup=resuming)
                    try:
                        message = wire.decode_server_message(frame)
                    except (wire.MalformedServerMessage, wire.NotJSON) as exc:
                        self._pending.append(self._malformed(exc))
                        continue
                    if isinstance(message, wire.AudioChunks):
                        self._pending.extend(self._audio(message.chunks))
                        continue
                    self._pending.extend(self._translate(attrs.evolve(message, setup_complete=None)))
                    if message.setup_complete is not None:
                        self.session_id = message.setup_complete.session_id
                        self._set_up = True
                        break
        except TimeoutError:
            raise BidiConnectionError(f"Gemini did not complete the setup within {timeout_s:g} s") from None
        except WebSocketClosed as exc:
            if exc.code == 1000:
                raise BidiConnectionError("Gemini closed the connection before completing the setup") from None
            raise close_error(exc, self._secrets, resuming_before_setup=resuming) from None
        if history:
            await self._write(wire.encode_client_message(wire.ClientContent(turns=history)))
        logger.debug(
            "%s set up (%s)",
            self._connection_id,
            "resumed" if resuming else f"{len(history)} history turns",
        )

    async def _receive_frame(self, *, resuming_before_setup: bool = False) -> str | bytes:
        try:
            return await self._ws.receive()
        except WebSocketClosed as exc:
            if exc.code == 1000:
                raise
            raise close_error(exc, self._secrets, resuming_before_setup=resuming_before_setup) from None

    # ------------------------------------------------------------------ out

    async def _write(self, text: str, *, resuming_before_setup: bool = False) -> int:
        index = self._next_index
        self._next_index += 1
        try:
            await self._ws.send_text(text)
        except WebSocketClosed as exc:
            if exc.code == 1000 and self._set_up and not self._going_away:
                # The service ended the session (1000, no goAway): the reader read it and reports it
                # too. Said the same way here, so a writer that hits the closed socket first tells no
                # other story.
                raise anyio.EndOfStream from None
            raise close_error(exc, self._secrets, resuming_before_setup=resuming_before_setup) from None
        return index

    async def send(self, item: ModelInput) -> None:
        for text in self._messages(item):
            await self._write(text)

    def send_nowait(self, item: ModelInput) -> bool:
        """Write ``item`` at once if the socket takes it without waiting (``ports.model.BidiSendNowait``).

        Not with resumption the service does not track (not transparent): the core then takes an
        update to hold everything written before it was read, and only the writer's hop, which
        lets the reader take what had already arrived first, keeps a write made just as an update
        was on its way from counting as held by it (the goAway rotation test of
        ``tests/test_gemini_adapter.py`` loses its second line without the hop)."""
        if self._guessing_holds:
            return False
        return self._ws.send_now(partial(self._messages_written_now, item))

    def _messages_written_now(self, item: ModelInput) -> list[str]:
        texts = self._messages(item)
        self._next_index += len(texts)  # what _write counts for each message it writes
        return texts

    def _messages(self, item: ModelInput) -> list[str]:
        """The wire messages that send ``item`` (none or one), its wire index remembered first.

        The index is remembered *before* the message is written: a resumption update that names
        it may be read by the receiving task before the sending one resumes."""
        text: str | None
        if isinstance(item, BidiAudioInputEvent):
            if item.channels != 1 or item.format != "pcm":
                raise BidiUsageError(
                    f"Gemini Live takes mono 16-bit PCM; got {item.format} x {item.channels} channels "
                    "(open the microphone at the model's capabilities.input_audio, as BidiAudioIO does)"
                )
            if not self._heard_speech and self._responses.current is None and _sounds_like_speech(item.audio):
                self._heard_speech = True
            text = wire.audio_input(base64.b64encode(item.audio).decode("ascii"), item.sample_rate)
        elif isinstance(item, BidiTextInputEvent):
            # Empty text says nothing, and Gemini refuses empty text parts: nothing to send.
            text = wire.encode_client_message(wire.RealtimeInput(text=item.text)) if item.text.strip() else None
        elif isinstance(item, BidiImageInputEvent):
            blob = {"mimeType": item.mime_type, "data": base64.b64encode(item.image).decode("ascii")}
            text = wire.encode_client_message(wire.RealtimeInput(video=blob))
        elif isinstance(item, BidiToolResultEvent):
            text = self._tool_result(item)
        elif isinstance(item, CancelResponse | TruncateResponse):
            # Gemini has neither message: it stops by itself on speech and cannot forget audio.
            text = None
        else:
            raise BidiUsageError(f"Gemini Live cannot send {type(item).__name__}")
        if self._track:
            self._item_last_index.append(self._next_index - 1 if text is None else self._next_index)
        return [] if text is None else [text]

    def _tool_result(self, item: BidiToolResultEvent) -> str | None:
        """``toolResponse`` for a call this connection issued.

        A result for a call of an earlier connection never reaches a session: the
        service refuses a ``toolResponse`` naming an id it did not issue (close 1007),
        so the core sends such an outcome as the user's text instead. A result that
        crossed the service's cancellation of its call (it was already on its way
        when the cancellation arrived) is dropped: nothing waits for it.
        """
        if item.tool_use_id in self._withdrawn_calls:
            self._withdrawn_calls.discard(item.tool_use_id)
            logger.debug(
                "%s: dropping the result of %s, cancelled by the service", self._connection_id, item.tool_use_id
            )
            return None
        if item.tool_use_id not in self._issued_calls:
            raise BidiUsageError(f"Gemini Live did not issue tool call {item.tool_use_id!r} on this connection")
        self._issued_calls.discard(item.tool_use_id)
        call_id = None if item.tool_use_id in self._synthetic_calls else item.tool_use_id
        response = wire.FunctionResponse(call_id, item.name, tool_response_body(item.status, item.content))
        return wire.encode_client_message(wire.ToolResponse([response]))

    def items_included(self, last_consumed_index: int) -> int:
        """How many ``send()`` items had every wire message consumed by ``last_consumed_index``.

        The service's index only grows, so items counted here are forgotten (a connection sends
        fifty audio chunks a second; the list stays as long as what is in flight).
        """
        newly = bisect.bisect_right(self._item_last_index, last_consumed_index)
        del self._item_last_index[:newly]
        self._items_held += newly
        return self._items_held

    # ------------------------------------------------------------------ in

    async def receive(self) -> ModelEvent:
        pending = self._pending
        while not pending:
            try:
                frame = await self._receive_frame()
            except WebSocketClosed:  # 1000: a normal end
                if self._going_away:
                    # The connection limit it announced: the session goes on over a new connection
                    # (docs/protocols/gemini.md#session-limits).
                    raise BidiConnectionError("Gemini closed the connection at its limit, after goAway") from None
                logger.debug("%s: the service ended the session", self._connection_id)
                raise anyio.EndOfStream from None
            try:
                decoded = wire.decode_server_message(frame)
            except (wire.MalformedServerMessage, wire.NotJSON) as exc:
                return self._malformed(exc)
            if isinstance(decoded, wire.AudioChunks):
                pending.extend(self._audio(decoded.chunks))
            else:
                pending.extend(self._translate(decoded))
        return pending.popleft()

    @staticmethod
    def _malformed(exc: wire.MalformedServerMessage | wire.NotJSON) -> BidiErrorEvent:
        """One bad message (a wrong shape, or not a JSON object at all) in a stream whose framing is intact:
        reported, and the connection goes on (a reconnect would cost the response in progress)."""
        logger.warning("malformed Gemini message: %s", exc)
        return BidiErrorEvent(message=f"malformed server message: {exc}", code="protocol_error")

    def _start(self, out: list[ModelEvent]) -> str:
        """The open response's id; the first output of a turn opens one (``adapters/responses.py``)."""
        rid = self._responses.current
        if rid is None:
            self._heard_speech = False
            self._final_user_transcript(out)
            self._assistant_text = ""
            self._assistant_final_sent = False
            start = self._responses.start()
            out.append(start)
            rid = start.response_id
        return rid

    def _finish(self, out: list[ModelEvent], stop_reason: StopReason) -> None:
        if self._responses.current is None:
            return
        self._final_assistant_transcript(out)
        if (done := self._responses.complete(stop_reason)) is not None:
            out.append(done)

    def _final_assistant_transcript(self, out: list[ModelEvent]) -> None:
        rid = self._responses.current
        if rid is not None and self._assistant_text and not self._assistant_final_sent:
            out.append(BidiTranscriptStreamEvent("", self._assistant_text, "assistant", True, rid))
            self._assistant_final_sent = True

    def _audio(self, chunks: Iterable[wire.Blob], out: list[ModelEvent] | None = None) -> list[ModelEvent]:
        out = [] if out is None else out
        for blob in chunks:
            rate = self._rate_of_mime.get(blob.mime_type)
            if rate is None:
                rate = _pcm_rate(blob.mime_type)
                if rate is None:
                    logger.info("ignoring inline data of type %r", blob.mime_type[:100])
                    continue
                self._rate_of_mime[blob.mime_type] = rate
            try:
                pcm = base64.b64decode(blob.data, validate=True)
            except (binascii.Error, ValueError):
                out.append(BidiErrorEvent(message="audio data is not valid base64", code="protocol_error"))
                continue
            if not pcm:
                continue
            rid = self._start(out)
            out.append(BidiAudioStreamEvent(audio=pcm, sample_rate=rate, response_id=rid))
        return out

    def _translate(self, message: wire.ServerMessage) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        if message.unknown:
            logger.info("ignoring unknown Gemini message field(s) %s", ", ".join(k[:50] for k in message.unknown))
        if message.server_content is not None:
            self._server_content(message.server_content, out)
        if message.tool_call is not None:
            self._tool_call(message.tool_call, out)
        if message.tool_call_cancellation is not None and message.tool_call_cancellation.ids:
            withdrawn = set(message.tool_call_cancellation.ids) & self._issued_calls
            self._issued_calls -= withdrawn  # nothing is sent for them
            self._withdrawn_calls |= withdrawn
            out.append(BidiToolCancelEvent(tuple(message.tool_call_cancellation.ids)))
        if message.go_away is not None:
            left = wire.parse_duration(message.go_away.time_left)
            if left is None:
                logger.warning("goAway with an unreadable timeLeft %r; assuming 0 s", message.go_away.time_left)
            logger.debug("%s: goAway, %s s left", self._connection_id, left)
            self._going_away = True
            out.append(BidiConnectionExpiringEvent(time_left_s=max(0.0, left or 0.0)))
        if message.session_resumption_update is not None:
            update = message.session_resumption_update
            if update.new_handle:
                included = None
                if self._config.transparent and update.last_consumed_client_message_index is not None:
                    included = self.items_included(update.last_consumed_client_message_index)
                out.append(BidiResumptionUpdateEvent(handle=update.new_handle, inputs_included=included))
        if message.usage_metadata is not None:
            usage = _usage(message.usage_metadata)
            if out and isinstance(out[-1], BidiResponseCompleteEvent):
                out.insert(len(out) - 1, usage)  # as on OpenAI: usage, then the response's end
            else:
                out.append(usage)
        return out

    def _server_content(self, content: wire.ServerContent, out: list[ModelEvent]) -> None:
        if content.input_transcription is not None and content.input_transcription.text:
            delta = content.input_transcription.text
            if (
                not self._user_text
                and self._responses.current is None
                and self._heard_speech
                and self._config.speech_interrupts
            ):
                # Gemini signals barge-in (``interrupted``) only while it is generating; it
                # generates faster than real time, so the user often talks over an answer
                # that is complete but still playing. The first words of a new user turn
                # are the only sign of that: report them as speech, and the core silences
                # the audio still playing (the provider has nothing to cancel). Input
                # transcriptions come in no guaranteed order, so a late piece of the user's
                # previous turn looks the same; it is a new turn only if the microphone
                # sent something loud since the last response began.
                self._heard_speech = False
                out.append(BidiSpeechStartedEvent())
            self._user_text += delta
            out.append(BidiTranscriptStreamEvent(delta, self._user_text, "user", False))
        if content.model_turn is not None:
            for part in content.model_turn.parts:
                if part.inline_data is not None:
                    self._audio((part.inline_data,), out)
                elif part.text and not part.thought and self._text_out:
                    self._assistant_delta(part.text, out)
        if content.output_transcription is not None and content.output_transcription.text:
            self._assistant_delta(content.output_transcription.text, out)
        if content.interrupted:
            out.append(BidiSpeechStartedEvent())
            self._finish(out, "interrupted")
        if content.generation_complete:
            self._final_assistant_transcript(out)
        if content.turn_complete:
            self._final_user_transcript(out)
            self._finish(out, "complete")

    def _final_user_transcript(self, out: list[ModelEvent]) -> None:
        if self._user_text:
            out.append(BidiTranscriptStreamEvent("", self._user_text, "user", True))
            self._user_text = ""

    def _assistant_delta(self, delta: str, out: list[ModelEvent]) -> None:
        rid = self._start(out)
        if self._assistant_final_sent:
            # Text after generationComplete (late transcription): a new transcript segment.
            self._assistant_text, self._assistant_final_sent = "", False
        self._assistant_text += delta
        out.append(BidiTranscriptStreamEvent(delta, self._assistant_text, "assistant", False, rid))

    def _tool_call(self, call: wire.ToolCall, out: list[ModelEvent]) -> None:
        if not call.function_calls:
            return
        self._start(out)
        for fc in call.function_calls:
            call_id = fc.id
            if not call_id:
                call_id = f"{self._connection_id}-call-{len(self._synthetic_calls) + 1}"
                self._synthetic_calls.add(call_id)
            self._issued_calls.add(call_id)
            out.append(BidiToolUseEvent(call_id, fc.name, dict(fc.args or {})))
        self._finish(out, "tool_use")


def _pcm_rate(mime: str) -> int | None:
    """``audio/pcm;rate=24000`` -> 24000; ``audio/pcm`` -> 24000 (the documented output rate)."""
    kind, _, params = mime.partition(";")
    if kind.strip().lower() not in ("audio/pcm", "audio/l16"):
        return None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "rate":
            try:
                rate = int(value.strip())
            except ValueError:
                return None
            return rate if 1000 <= rate <= 192000 else None
    return OUTPUT_RATE


def _usage(usage: wire.UsageMetadata) -> BidiUsageEvent:
    """``usageMetadata``, every count kept (docs/protocols/gemini.md#usage): the prompt and
    the tool-use prompt are input, the response and the thoughts output (thoughts are
    text); the cached part of the prompt is input too, split by modality where given."""
    details: dict[str, list[int]] = {}

    def add(entries: list[wire.ModalityTokenCount], slot: int) -> None:
        for entry in entries:
            details.setdefault(entry.modality.lower(), [0, 0, 0])[slot] += entry.token_count

    add(usage.prompt_tokens_details, 0)
    add(usage.tool_use_prompt_tokens_details, 0)
    add(usage.response_tokens_details, 1)
    add(usage.cache_tokens_details, 2)
    if usage.thoughts_token_count:
        details.setdefault("text", [0, 0, 0])[1] += usage.thoughts_token_count
    inputs = usage.prompt_token_count + usage.tool_use_prompt_token_count
    outputs = usage.response_token_count + usage.thoughts_token_count
    return BidiUsageEvent(
        input_tokens=inputs,
        output_tokens=outputs,
        total_tokens=usage.total_token_count or inputs + outputs,
        modality_details=tuple(ModalityUsage(m, i, o, c) for m, (i, o, c) in details.items()),
        cache_read_input_tokens=usage.cached_content_token_count or None,
    )


_SPEECH_RMS = 0.02 * 32768
"""About -34 dBFS: quieter than any voice close to a microphone, louder than a quiet room."""


def _sounds_like_speech(pcm: bytes) -> bool:
    """Whether a block of 16-bit PCM is loud enough to be someone talking (its RMS).

    Only computed while waiting for the user's next turn, until it says yes."""
    samples = array("h")
    samples.frombytes(pcm[: len(pcm) & ~1])
    if sys.byteorder == "big":
        samples.byteswap()
    if not samples:
        return False
    return math.sqrt(sum(x * x for x in samples) / len(samples)) >= _SPEECH_RMS
