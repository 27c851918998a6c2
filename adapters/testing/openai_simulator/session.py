"""One Realtime session: the GA protocol's state and semantics, with no socket in sight.

The transport (:mod:`.server`) hands every client message to
:meth:`RealtimeSession.handle` and sends what the session gives to
:class:`Link`. What the session does follows docs/protocols/openai.md and the openai
types named in each docstring:

* every client message passes the strict oracle first (:mod:`.oracle`); a
  refusal is the service's ``error`` event and the connection stays open;
* ``session.update`` merges into the effective session and answers
  ``session.updated`` with all of it (docs/protocols/openai.md#session-configuration);
* ``conversation.item.create`` answers ``conversation.item.added`` then
  ``conversation.item.done`` (the GA names; docs/protocols/openai.md#retired-beta);
* responses run in their own task, in the order of docs/protocols/openai.md#responses, and are cancelled by
  ``response.cancel`` (``client_cancelled``) or by speech when
  ``interrupt_response`` is on (``turn_detected``): the open parts are closed
  (``incomplete``) and ``response.done`` says ``cancelled``;
* ``server_vad`` runs on energy (:mod:`.audio`); a spoken turn is committed into
  a user item, transcribed from the scenario when transcription is configured,
  and answered when ``create_response`` is on.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import anyio
import attrs

from adapters.testing._simulator_kit.scenario import ToolResult, TurnInput, spoken_words
from adapters.testing.openai_simulator.audio import (
    EnergyVAD,
    VadEvent,
    chunk_plan,
    pcm_ms,
    speech_ms,
    split_words,
    tone,
)
from adapters.testing.openai_simulator.errors import ServiceError
from adapters.testing.openai_simulator.oracle import check_client_event
from adapters.testing.openai_simulator.scenario import Reply, ScenarioState

__all__ = ["Ids", "Link", "RealtimeSession", "SessionContext"]

PCM_FORMAT: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
SERVER_VAD_DEFAULTS: dict[str, Any] = {
    # openai.types.realtime.realtime_audio_input_turn_detection_param.ServerVad docstrings;
    # docs/protocols/openai.md#turn-detection
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
MAX_APPEND_BYTES = 15 * 1024 * 1024  # docs/protocols/openai.md#input-audio
MIN_COMMIT_MS = 100


class Link(Protocol):
    """What the session needs from its connection."""

    index: int

    async def send(
        self,
        event: dict[str, Any],
        *,
        skip_if: Callable[[], bool] | None = None,
        then: Callable[[], None] | None = None,
    ) -> bool:
        """Stamp ``event_id``, check with the server oracle, record and write one event.

        Under the write lock, ``skip_if()`` can still withdraw the event and ``then()``
        runs right after it is written, so no other event can slip in between.
        False if nothing was written (withdrawn, or the connection is closing).
        """

    async def drop(self) -> None:
        """Close the TCP connection without a close frame (a network fault)."""

    async def close(self, code: int, reason: str, why: str) -> None:
        """Send a close frame and end the connection."""

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn`` in the connection's task group."""

    def record_client_error(self, message: Any, error_event: dict[str, Any]) -> None: ...

    def record_truncation(self, item_id: str, content_index: int, audio_end_ms: int, audio_ms: int) -> None: ...


class Ids:
    """Service-shaped ids (``item_…``, ``resp_…``), unique per simulator and predictable in logs."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        return f"{prefix}_sim{next(self._counter):017d}"


@attrs.define
class SessionContext:
    """What all sessions of one simulator share."""

    state: ScenarioState
    ids: Ids
    speedup: float | None = None
    limit_minutes_text: int = 60
    expires_in_s: float = 3600.0


@attrs.define
class _Response:
    id: str
    reply: Reply
    turn: TurnInput
    params: Mapping[str, Any]
    cancel_reason: str | None = None
    finished: bool = False
    cancelled: anyio.Event = attrs.field(factory=anyio.Event)
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)

    def cancel(self, reason: str) -> bool:
        """Ask the generator to stop at its next step; False if there is nothing left to cancel."""
        if self.finished or self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        self.cancelled.set()
        return True


def _merge(current: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``session.update`` semantics: objects merge key by key, anything else (lists, null) replaces."""
    out = dict(current)
    for key, value in update.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            if "type" in value and value.get("type") != old.get("type"):
                out[key] = copy.deepcopy(dict(value))  # a different kind of thing: start afresh
            else:
                out[key] = _merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _user_text(item: Mapping[str, Any]) -> str:
    parts = []
    for part in item.get("content") or ():
        if part.get("type") == "input_text" and part.get("text"):
            parts.append(str(part["text"]))
        elif part.get("type") == "input_audio" and part.get("transcript"):
            parts.append(str(part["transcript"]))
    return " ".join(parts)


def _tokens(chars: int) -> int:
    return math.ceil(chars / 4)


class RealtimeSession:
    """The protocol state of one connection (docs/protocols/openai.md)."""

    def __init__(self, link: Link, ctx: SessionContext, *, model: str) -> None:
        self.link = link
        self.ctx = ctx
        self.scenario = ctx.state.scenario
        self.session: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": ctx.ids.new("sess"),
            "model": model,
            "output_modalities": ["audio"],
            "instructions": self.scenario.instructions,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": int(time.time() + ctx.expires_in_s),
            "audio": {
                "input": {
                    "format": dict(PCM_FORMAT),
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": dict(SERVER_VAD_DEFAULTS),
                },
                "output": {"format": dict(PCM_FORMAT), "voice": self.scenario.voice, "speed": 1.0},
            },
            "include": None,
        }
        self.conversation_id = ctx.ids.new("conv")
        self.items: dict[str, dict[str, Any]] = {}
        self.item_audio_ms: dict[str, int] = {}
        self.last_item_id: str | None = None
        self.calls: dict[str, str] = {}
        self.pending_texts: list[str] = []
        self.pending_spoken: int | None = None
        self.pending_tools: list[ToolResult] = []
        self.buffer = bytearray()
        self.vad = EnergyVAD()
        self._configure_vad()
        self.speech_item_id: str | None = None
        self.active: _Response | None = None
        self.counts: Counter[str] = Counter()
        self.assistant_audio_sent = False
        self.context_chars = 0
        self.context_audio_ms = 0.0
        self.closing = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """``session.created`` comes first, with the default session (docs/protocols/openai.md#connection)."""
        await self.link.send({"type": "session.created", "session": copy.deepcopy(self.session)})

    async def refuse_beta(self) -> None:
        """The retired beta shape: ``error`` then close 4000 (docs/protocols/openai.md#retired-beta)."""
        await self.link.send({"type": "error", "error": ServiceError.beta_disabled().to_event_error(None)})
        self.stop()
        await self.link.close(4000, "invalid_request_error.beta_api_shape_disabled", why="beta")

    async def expire(self) -> None:
        """The session limit: ``error`` (``session_expired``) then a close (docs/protocols/openai.md#session-limits)."""
        if self.closing:
            return
        error = ServiceError.session_expired(self.ctx.limit_minutes_text)
        await self.link.send({"type": "error", "error": error.to_event_error(None)})
        self.stop()
        await self.link.close(1000, "", why="session_limit")

    def stop(self) -> None:
        """No more output: the response in progress stops where it is."""
        self.closing = True
        if self.active is not None:
            self.active.scope.cancel()

    # ------------------------------------------------------------------ dispatch

    async def handle(self, message: Any) -> None:
        """One client message: validate with the strict oracle, apply faults, then act."""
        if self.closing:
            return
        event_id = message.get("event_id") if isinstance(message, dict) else None
        error = check_client_event(message)
        if error is not None:
            await self.client_error(message, error)
            return
        event_type: str = message["type"]
        self.counts[event_type] += 1
        fault = self.ctx.state.error_for(event_type, self.counts[event_type], self.link.index)
        if fault is not None:
            await self.client_error(message, fault.error)
            if fault.drop:
                await self.link.drop()
            return
        handler = getattr(self, "_on_" + event_type.replace(".", "_"))
        await handler(message, event_id if isinstance(event_id, str) else None)

    async def client_error(self, message: Any, error: ServiceError) -> None:
        """The service's in-band ``error`` for a client event; ``event_id`` echoes the client's."""
        event_id = message.get("event_id") if isinstance(message, dict) else None
        event = {"type": "error", "error": error.to_event_error(event_id if isinstance(event_id, str) else None)}
        self.link.record_client_error(message, event)  # recorded before the client can see it; send stamps event_id
        await self.link.send(event)

    # ------------------------------------------------------------------ session.update

    async def _on_session_update(self, message: dict[str, Any], event_id: str | None) -> None:
        """Merge, check what the schema cannot, answer ``session.updated`` with the effective session."""
        update = message["session"]
        if update.get("type") != "realtime":
            await self.client_error(
                message,
                ServiceError(
                    f"Invalid value: '{update.get('type')}'. This is a 'realtime' session; its type cannot change.",
                    "invalid_value",
                    param="session.type",
                ),
            )
            return
        merged = _merge(self.session, update)
        problem = self._check_session(merged)
        if problem is not None:
            await self.client_error(message, problem)
            return
        audio_in = merged["audio"]["input"]
        for direction in ("input", "output"):
            fmt = merged["audio"][direction].get("format")
            if isinstance(fmt, dict) and fmt.get("type") == "audio/pcm":
                fmt.setdefault("rate", 24000)
        td = audio_in.get("turn_detection")
        if isinstance(td, dict):
            defaults = SERVER_VAD_DEFAULTS if td.get("type") == "server_vad" else SEMANTIC_VAD_DEFAULTS
            audio_in["turn_detection"] = {**defaults, **td}
        self.session = merged
        self._configure_vad()
        await self.link.send({"type": "session.updated", "session": copy.deepcopy(self.session)})

    def _check_session(self, merged: Mapping[str, Any]) -> ServiceError | None:
        modalities = merged.get("output_modalities") or ["audio"]
        if len(set(modalities)) != 1:
            # ["audio"] or ["text"], never both (docs/protocols/openai.md#session-configuration; our wording).
            return ServiceError(
                f"Invalid modalities: {list(modalities)}. Supported combinations are: ['text'] and ['audio'].",
                "invalid_value",
                param="session.output_modalities",
            )
        for direction in ("input", "output"):
            fmt = merged["audio"][direction].get("format") or {}
            if fmt.get("type", "audio/pcm") != "audio/pcm":
                return ServiceError(
                    f"The simulator speaks only audio/pcm at 24000 Hz, not {fmt.get('type')}.",
                    "unsupported_by_simulator",
                    param=f"session.audio.{direction}.format.type",
                )
        voice = merged["audio"]["output"].get("voice")
        if self.assistant_audio_sent and voice != self.session["audio"]["output"].get("voice"):
            return ServiceError(
                "Cannot update a conversation's voice if assistant audio is present.",
                "cannot_update_voice",
                param="session.audio.output.voice",
            )
        return None

    def _turn_detection(self) -> dict[str, Any] | None:
        td = self.session["audio"]["input"].get("turn_detection")
        return td if isinstance(td, dict) else None

    def _configure_vad(self) -> None:
        td = self._turn_detection() or {}
        clock = self.vad.clock_ms
        self.vad = EnergyVAD(
            threshold=float(td.get("threshold") or 0.5),
            prefix_padding_ms=int(td.get("prefix_padding_ms") or 300),
            # semantic_vad has no silence setting; 500 ms stands in for its "auto" eagerness.
            silence_duration_ms=int(td.get("silence_duration_ms") or 500),
        )
        self.vad.clock_ms = clock
        self.vad.reset()

    # ------------------------------------------------------------------ input audio

    async def _on_input_audio_buffer_append(self, message: dict[str, Any], event_id: str | None) -> None:
        """Base64 PCM16 24 kHz in; no ack (docs/protocols/openai.md#input-audio). VAD turns run here."""
        try:
            pcm = base64.b64decode(message["audio"], validate=True)
        except (binascii.Error, ValueError):
            await self.client_error(
                message,
                ServiceError(
                    "Invalid value for 'audio': expected base64-encoded audio.", "invalid_value", param="audio"
                ),
            )
            return
        if len(pcm) > MAX_APPEND_BYTES:
            await self.client_error(
                message,
                ServiceError("Audio chunk too large: at most 15 MiB per event.", "invalid_value", param="audio"),
            )
            return
        self.buffer.extend(pcm)
        for boundary in list(self.vad.feed(pcm)):
            if self._turn_detection() is not None and not self.closing:
                await self._on_vad(boundary)

    async def _on_vad(self, boundary: VadEvent) -> None:
        if boundary.kind == "started":
            self.speech_item_id = self.ctx.ids.new("item")
            td = self._turn_detection() or {}
            active = self.active if td.get("interrupt_response", True) else None

            def interrupt() -> None:
                if active is not None:
                    active.cancel("turn_detected")

            # Cancelled right after speech_started is written: no delta of the response can follow it.
            await self.link.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": boundary.at_ms,
                    "item_id": self.speech_item_id,
                },
                then=interrupt,
            )
            return
        item_id = self.speech_item_id or self.ctx.ids.new("item")
        self.speech_item_id = None
        await self.link.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": boundary.at_ms, "item_id": item_id}
        )
        await self._commit(item_id)
        td = self._turn_detection() or {}
        if td.get("create_response", True) and self.active is None:
            # With a response still running the service "may fail to create a response": we skip it.
            await self._start_response({})

    async def _on_input_audio_buffer_commit(self, message: dict[str, Any], event_id: str | None) -> None:
        buffered = pcm_ms(len(self.buffer))
        if buffered < MIN_COMMIT_MS:
            await self.client_error(message, ServiceError.commit_empty(buffered))
            return
        item_id = self.speech_item_id or self.ctx.ids.new("item")
        self.speech_item_id = None
        self.vad.reset()
        await self._commit(item_id)

    async def _on_input_audio_buffer_clear(self, message: dict[str, Any], event_id: str | None) -> None:
        self.buffer.clear()
        self.vad.reset()
        self.speech_item_id = None
        await self.link.send({"type": "input_audio_buffer.cleared"})

    async def _commit(self, item_id: str) -> None:
        """The buffer becomes a user audio item: committed, added/done, transcription if configured."""
        audio_ms = pcm_ms(len(self.buffer))
        self.buffer.clear()
        self.vad.floor_ms = self.vad.clock_ms
        await self.link.send(
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": self.last_item_id}
        )
        spoken_turn = self.ctx.state.next_spoken_turn()
        transcript = self.scenario.transcript(spoken_turn)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self._add_item(item)
        self.context_audio_ms += audio_ms
        transcription = self.session["audio"]["input"].get("transcription")
        if isinstance(transcription, dict):
            if transcription.get("model") != "whisper-1":
                for piece in split_words(transcript, 3):
                    if piece:
                        await self.link.send(
                            {
                                "type": "conversation.item.input_audio_transcription.delta",
                                "item_id": item_id,
                                "content_index": 0,
                                "delta": piece,
                            }
                        )
            audio_tokens = math.ceil(audio_ms / 100)
            text_tokens = _tokens(len(transcript))
            await self.link.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                    "usage": {
                        "type": "tokens",
                        "input_tokens": audio_tokens,
                        "output_tokens": text_tokens,
                        "total_tokens": audio_tokens + text_tokens,
                        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    },
                }
            )
            self.items[item_id]["content"][0]["transcript"] = transcript
        self.pending_texts.append(transcript)
        self.pending_spoken = spoken_turn

    # ------------------------------------------------------------------ conversation items

    async def _add_item(self, item: dict[str, Any], previous_item_id: str | None = None) -> None:
        """Store ``item`` and announce it: ``conversation.item.added`` then ``.done``."""
        previous = previous_item_id if previous_item_id is not None else self.last_item_id
        self.items[item["id"]] = item
        self.last_item_id = item["id"]
        await self.link.send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await self.link.send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    async def _on_conversation_item_create(self, message: dict[str, Any], event_id: str | None) -> None:
        item = copy.deepcopy(message["item"])
        previous = message.get("previous_item_id")
        if previous not in (None, "root") and previous not in self.items:
            await self.client_error(message, ServiceError.item_not_found(str(previous), "previous_item_id"))
            return
        if item.get("id") in self.items:
            # The text and code are our inference.
            await self.client_error(
                message,
                ServiceError(f"Item with id '{item['id']}' already exists.", "invalid_value", param="item.id"),
            )
            return
        kind = item["type"]
        if kind == "function_call_output" and item["call_id"] not in self.calls:
            # A result must answer a call in this conversation (text from the Responses API; our inference here).
            await self.client_error(
                message,
                ServiceError(
                    f"No tool call found for function call output with call_id {item['call_id']}.",
                    "invalid_value",
                    param="item.call_id",
                ),
            )
            return
        item.setdefault("id", self.ctx.ids.new("item"))
        item["object"] = "realtime.item"
        item["status"] = "completed"
        for part in item.get("content") or ():
            if part.get("type") == "input_audio":
                pcm = base64.b64decode(part.pop("audio", "") or "")
                self.context_audio_ms += pcm_ms(len(pcm))
                part.setdefault("transcript", None)
        if kind == "function_call" and item.get("call_id"):
            self.calls[item["call_id"]] = item["name"]
        elif kind == "message" and item.get("role") == "user":
            text = _user_text(item)
            if text:
                self.pending_texts.append(text)
        elif kind == "function_call_output":
            call_id = item["call_id"]
            self.pending_tools.append(ToolResult(call_id, self.calls.get(call_id), item["output"]))
        self.context_chars += len(_user_text(item) or item.get("output") or item.get("arguments") or "")
        await self._add_item(item, previous_item_id=previous)

    async def _on_conversation_item_delete(self, message: dict[str, Any], event_id: str | None) -> None:
        item_id = message["item_id"]
        if self.items.pop(item_id, None) is None:
            await self.client_error(message, ServiceError.item_not_found(item_id, "item_id"))
            return
        await self.link.send({"type": "conversation.item.deleted", "item_id": item_id})

    async def _on_conversation_item_retrieve(self, message: dict[str, Any], event_id: str | None) -> None:
        item = self.items.get(message["item_id"])
        if item is None:
            await self.client_error(message, ServiceError.item_not_found(message["item_id"], "item_id"))
            return
        await self.link.send({"type": "conversation.item.retrieved", "item": item})

    async def _on_conversation_item_truncate(self, message: dict[str, Any], event_id: str | None) -> None:
        """Only assistant audio, never past its length; the transcript goes (docs/protocols/openai.md#truncation)."""
        item_id, content_index, end_ms = message["item_id"], message["content_index"], message["audio_end_ms"]
        item = self.items.get(item_id)
        if item is None:
            await self.client_error(message, ServiceError.item_not_found(item_id, "item_id"))
            return
        content = item.get("content") or []
        audio_ms = self.item_audio_ms.get(item_id, 0)
        is_audio = (
            item.get("role") == "assistant"
            and 0 <= content_index < len(content)
            and content[content_index].get("type") == "output_audio"
            and audio_ms > 0
        )
        if not is_audio:
            await self.client_error(message, ServiceError.truncate_not_audio())
            return
        if end_ms > audio_ms:
            await self.client_error(message, ServiceError.truncate_too_long(audio_ms, end_ms))
            return
        self.link.record_truncation(item_id, content_index, end_ms, audio_ms)
        self.item_audio_ms[item_id] = end_ms
        content[content_index]["transcript"] = ""
        await self.link.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": end_ms,
            }
        )

    async def _on_output_audio_buffer_clear(self, message: dict[str, Any], event_id: str | None) -> None:
        # OutputAudioBufferClearEventParam: "WebRTC/SIP Only"; the refusal's wording is our inference.
        await self.client_error(
            message,
            ServiceError(
                "output_audio_buffer.clear is only supported for WebRTC and SIP connections.",
                "invalid_value",
                param="type",
            ),
        )

    # ------------------------------------------------------------------ responses

    async def _on_response_create(self, message: dict[str, Any], event_id: str | None) -> None:
        if self.active is not None:
            await self.client_error(message, ServiceError.active_response(self.active.id))
            return
        await self._start_response(message.get("response") or {})

    async def _on_response_cancel(self, message: dict[str, Any], event_id: str | None) -> None:
        wanted = message.get("response_id")
        active = self.active
        if active is None or (wanted is not None and wanted != active.id) or not active.cancel("client_cancelled"):
            await self.client_error(message, ServiceError.cancel_not_active())

    def _take_turn(self, params: Mapping[str, Any]) -> TurnInput:
        """The input a rule sees: ``response.input`` for an out-of-band response, else what came since the last one."""
        if params.get("input") is not None:
            items = list(params["input"])
            texts = [_user_text(i) for i in items if i.get("type") == "message" and i.get("role") == "user"]
            tools = [
                ToolResult(i["call_id"], self.calls.get(i["call_id"]), i["output"])
                for i in items
                if i.get("type") == "function_call_output"
            ]
            return TurnInput(" ".join(t for t in texts if t), None, tuple(tools))
        turn = TurnInput(" ".join(self.pending_texts), self.pending_spoken, tuple(self.pending_tools))
        if params.get("conversation", "auto") == "auto":
            self.pending_texts.clear()
            self.pending_spoken = None
            self.pending_tools.clear()
        return turn

    async def _start_response(self, params: Mapping[str, Any]) -> None:
        turn = self._take_turn(params)
        reply = self.ctx.state.choose(turn)
        if reply.drop:
            await self.link.drop()
            return
        if reply.session_limit:
            await self.expire()
            return
        if reply.error is not None:
            await self.link.send({"type": "error", "error": reply.error.to_event_error(None)})
            return
        response = _Response(self.ctx.ids.new("resp"), reply, turn, params)
        self.active = response
        self.link.spawn(lambda: self._run_response(response))

    async def _run_response(self, response: _Response) -> None:
        try:
            with response.scope:
                await self._generate(response)
        finally:
            if self.active is response:
                self.active = None

    def _response_object(self, response: _Response, status: str) -> dict[str, Any]:
        """``openai.types.realtime.RealtimeResponse``."""
        params = response.params
        out_audio = self.session["audio"]["output"]
        return {
            "object": "realtime.response",
            "id": response.id,
            "status": status,
            "status_details": None,
            "output": [],
            "conversation_id": self.conversation_id if params.get("conversation", "auto") == "auto" else None,
            "output_modalities": list(params.get("output_modalities") or self.session["output_modalities"]),
            "max_output_tokens": params.get("max_output_tokens", self.session["max_output_tokens"]),
            "audio": {"output": {"format": out_audio["format"], "voice": out_audio["voice"]}},
            "usage": None,
            "metadata": params.get("metadata"),
        }

    def _declared_tools(self, params: Mapping[str, Any]) -> set[str]:
        tools = list(params.get("tools") or self.session.get("tools") or [])
        return {str(t.get("name")) for t in tools if t.get("type", "function") == "function"}

    async def _generate(self, response: _Response) -> None:
        """The response events of docs/protocols/openai.md#responses, item by item; stops early when cancelled."""
        reply, turn = response.reply, response.turn
        await self.link.send({"type": "response.created", "response": self._response_object(response, "in_progress")})
        if reply.drop_after_deltas == 0:
            await self.link.drop()
            return
        outputs: list[dict[str, Any]] = []
        stats = {"text_chars": 0, "audio_ms": 0}
        if reply.fail is None:
            say, calls = spoken_words(reply, turn, self._declared_tools(response.params))
            if say:
                await self._speak(response, say, len(outputs), outputs, stats)
            for call in calls:
                if response.cancel_reason is not None:
                    break
                await self._call(response, call.name, call.arguments, call.call_id, len(outputs), outputs, stats)
        done = self._response_object(response, "completed")
        if reply.fail is not None:
            done["status"] = "failed"
            done["status_details"] = {
                "type": "failed",
                "error": {"type": reply.fail.type, "code": reply.fail.code, "message": reply.fail.message},
            }
        elif response.cancel_reason is not None:
            done["status"] = "cancelled"
            done["status_details"] = {"type": "cancelled", "reason": response.cancel_reason}
        done["output"] = outputs
        done["usage"] = self._usage(stats)
        # Finished before the write: a client answering response.done at once must find no active response.
        response.finished = True
        if self.active is response:
            self.active = None
        await self.link.send({"type": "response.done", "response": done})

    def _usage(self, stats: Mapping[str, int]) -> dict[str, Any]:
        """``RealtimeResponseUsage``: synthetic but consistent (details add up, total = input + output)."""
        in_text = _tokens(self.context_chars + len(self.session.get("instructions") or ""))
        in_audio = math.ceil(self.context_audio_ms / 100)
        out_text = _tokens(stats["text_chars"])
        out_audio = math.ceil(stats["audio_ms"] / 50)
        return {
            "total_tokens": in_text + in_audio + out_text + out_audio,
            "input_tokens": in_text + in_audio,
            "output_tokens": out_text + out_audio,
            "input_token_details": {
                "text_tokens": in_text,
                "audio_tokens": in_audio,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }

    async def _pace(self, response: _Response, ms: int) -> None:
        """Faster than real time (docs/protocols/openai.md#responses): a checkpoint, or ms/speedup unless cancelled."""
        if self.ctx.speedup is None:
            await anyio.lowlevel.checkpoint()
            return
        with anyio.move_on_after(ms / 1000 / self.ctx.speedup):
            await response.cancelled.wait()

    async def _open_item(self, response: _Response, item: dict[str, Any], output_index: int) -> str | None:
        """``response.output_item.added`` then ``conversation.item.added``; returns the previous item's id."""
        await self.link.send(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": output_index,
                "item": item,
            }
        )
        previous = self.last_item_id
        self.items[item["id"]] = copy.deepcopy(item)
        self.last_item_id = item["id"]
        await self.link.send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        return previous

    async def _close_item(
        self, response: _Response, item: dict[str, Any], output_index: int, previous: str | None
    ) -> dict[str, Any]:
        """``response.output_item.done`` then ``conversation.item.done``; returns the finished item."""
        self.items[item["id"]] = copy.deepcopy(item)
        await self.link.send(
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": output_index,
                "item": item,
            }
        )
        await self.link.send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        return item

    async def _speak(
        self,
        response: _Response,
        text: str,
        output_index: int,
        outputs: list[dict[str, Any]],
        stats: dict[str, int],
    ) -> None:
        """An assistant message: audio deltas of 50-150 ms interleaved with transcript deltas (or text only)."""
        audio = "audio" in (response.params.get("output_modalities") or self.session["output_modalities"])
        item_id = self.ctx.ids.new("item")
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        previous = await self._open_item(response, item, output_index)
        where = {"response_id": response.id, "item_id": item_id, "output_index": output_index, "content_index": 0}
        part_kind = "audio" if audio else "text"
        await self.link.send(
            {
                "type": "response.content_part.added",
                **where,
                "part": {"type": part_kind, ("transcript" if audio else "text"): ""},
            }
        )
        said = ""
        if audio:
            self.item_audio_ms[item_id] = 0
            self.items[item_id]["content"] = [{"type": "output_audio", "transcript": ""}]
            total_ms = response.reply.audio_ms or speech_ms(text)
            plan = chunk_plan(total_ms)
            words = split_words(text, len(plan))
            pcm = tone(total_ms)
            offset = 0
            for n, (size, piece) in enumerate(zip(plan, words, strict=True), start=1):
                if response.cancel_reason is not None:
                    break
                chunk = pcm[offset : offset + size * 48]
                offset += len(chunk)
                written = await self.link.send(
                    {"type": "response.output_audio.delta", **where, "delta": base64.b64encode(chunk).decode("ascii")},
                    skip_if=lambda: response.cancel_reason is not None,
                )
                if not written:
                    break
                self.assistant_audio_sent = True
                self.item_audio_ms[item_id] += size
                stats["audio_ms"] += size
                if piece and await self.link.send(
                    {"type": "response.output_audio_transcript.delta", **where, "delta": piece},
                    skip_if=lambda: response.cancel_reason is not None,
                ):
                    said += piece
                if response.reply.drop_after_deltas == n:
                    await self.link.drop()
                await self._pace(response, size)
            await self.link.send({"type": "response.output_audio.done", **where})
            await self.link.send({"type": "response.output_audio_transcript.done", **where, "transcript": said})
            await self.link.send(
                {"type": "response.content_part.done", **where, "part": {"type": "audio", "transcript": said}}
            )
            item["content"] = [{"type": "output_audio", "transcript": said}]
        else:
            for piece in split_words(text, max(1, len(text) // 12)):
                if response.cancel_reason is not None:
                    break
                if piece and await self.link.send(
                    {"type": "response.output_text.delta", **where, "delta": piece},
                    skip_if=lambda: response.cancel_reason is not None,
                ):
                    said += piece
                await self._pace(response, 50)
            await self.link.send({"type": "response.output_text.done", **where, "text": said})
            await self.link.send(
                {"type": "response.content_part.done", **where, "part": {"type": "text", "text": said}}
            )
            item["content"] = [{"type": "output_text", "text": said}]
        stats["text_chars"] += len(said)
        self.context_chars += len(said)
        item["status"] = "incomplete" if response.cancel_reason is not None else "completed"
        outputs.append(await self._close_item(response, item, output_index, previous))

    async def _call(
        self,
        response: _Response,
        name: str,
        arguments: Mapping[str, Any],
        call_id: str | None,
        output_index: int,
        outputs: list[dict[str, Any]],
        stats: dict[str, int],
    ) -> None:
        """A function call item: arguments streamed as deltas, then ``.done`` with name and the whole JSON."""
        call_id = call_id or self.ctx.ids.new("call")
        args = json.dumps(dict(arguments))
        item: dict[str, Any] = {
            "id": self.ctx.ids.new("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        previous = await self._open_item(response, item, output_index)
        where = {"response_id": response.id, "item_id": item["id"], "output_index": output_index, "call_id": call_id}
        for start in range(0, len(args), 24):
            await self.link.send(
                {"type": "response.function_call_arguments.delta", **where, "delta": args[start : start + 24]}
            )
            await self._pace(response, 10)
        await self.link.send(
            {"type": "response.function_call_arguments.done", **where, "name": name, "arguments": args}
        )
        item["arguments"] = args
        item["status"] = "completed"
        self.calls[call_id] = name
        stats["text_chars"] += len(args)
        outputs.append(await self._close_item(response, item, output_index, previous))
