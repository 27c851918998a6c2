"""What one Realtime session holds, and the helpers every part of it uses.

A session's work is split by job: :mod:`.session` (lifecycle, dispatch,
``session.update``), :mod:`.input_audio` (the input buffer and turn detection),
:mod:`.items` (conversation items) and :mod:`.responses` (generating responses,
tool calls included). Each is a mixin over :class:`SessionState`, which holds
the state they share (the effective session, the items, what the user gave
since the last response, the response in progress), the link to the
connection, and the service's ``error`` event for a client event.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

import anyio
import attrs

from adapters.testing._simulator_kit.scenario import ToolResult, TurnInput
from adapters.testing.openai_simulator.audio import EnergyVAD
from adapters.testing.openai_simulator.errors import ServiceError
from adapters.testing.openai_simulator.scenario import Reply, ScenarioState

__all__ = [
    "MAX_APPEND_BYTES",
    "MIN_COMMIT_MS",
    "PCM_FORMAT",
    "SEMANTIC_VAD_DEFAULTS",
    "SERVER_VAD_DEFAULTS",
    "ActiveResponse",
    "Ids",
    "Link",
    "SessionContext",
    "SessionState",
    "merge",
    "tokens",
    "user_text",
]

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

    async def reset(self) -> None:
        """Reset the TCP connection (RST)."""

    def silence(self) -> None:
        """Write and answer nothing from now on (pings included); keep reading."""

    def deafen(self) -> None:
        """Stop reading the socket; write nothing more."""

    async def send_frame(self, data: str | bytes) -> bool:
        """Write one frame as it is, unchecked (text for ``str``, binary for ``bytes``)."""

    async def send_raw(self, data: bytes) -> bool:
        """Write bytes as they are, outside any frame."""

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
class ActiveResponse:
    """The response in progress: what it plays, and how it is cancelled."""

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


def merge(current: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``session.update`` semantics: objects merge key by key, anything else (lists, null) replaces."""
    out = dict(current)
    for key, value in update.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            if "type" in value and value.get("type") != old.get("type"):
                out[key] = copy.deepcopy(dict(value))  # a different kind of thing: start afresh
            else:
                out[key] = merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def user_text(item: Mapping[str, Any]) -> str:
    parts = []
    for part in item.get("content") or ():
        if part.get("type") == "input_text" and part.get("text"):
            parts.append(str(part["text"]))
        elif part.get("type") == "input_audio" and part.get("transcript"):
            parts.append(str(part["transcript"]))
    return " ".join(parts)


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)


class SessionState:
    """The protocol state of one connection (docs/protocols/openai.md), shared by the session's jobs."""

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
        self.active: ActiveResponse | None = None
        self.counts: Counter[str] = Counter()
        self.assistant_audio_sent = False
        self.context_chars = 0
        self.context_audio_ms = 0.0
        self.cached_text_tokens = 0  # the text prefix an earlier response of this session already read
        self.closing = False

    async def client_error(self, message: Any, error: ServiceError) -> None:
        """The service's in-band ``error`` for a client event; ``event_id`` echoes the client's."""
        event_id = message.get("event_id") if isinstance(message, dict) else None
        event = {"type": "error", "error": error.to_event_error(event_id if isinstance(event_id, str) else None)}
        self.link.record_client_error(message, event)  # recorded before the client can see it; send stamps event_id
        await self.link.send(event)

    def _turn_detection(self) -> dict[str, Any] | None:
        td = self.session["audio"]["input"].get("turn_detection")
        return td if isinstance(td, dict) else None

    async def _add_item(self, item: dict[str, Any], previous_item_id: str | None = None) -> None:
        """Store ``item`` and announce it: ``conversation.item.added`` then ``.done``."""
        previous = previous_item_id if previous_item_id is not None else self.last_item_id
        self.items[item["id"]] = item
        self.last_item_id = item["id"]
        await self.link.send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await self.link.send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    # ------------------------------------------------------------------ one job calls another

    def _configure_vad(self) -> None:
        raise NotImplementedError  # input_audio.InputAudio

    async def _start_response(self, params: Mapping[str, Any]) -> None:
        raise NotImplementedError  # responses.Responses

    async def play_fault(self, reply: Reply) -> bool:
        raise NotImplementedError  # responses.Responses

    async def expire(self) -> None:
        raise NotImplementedError  # session.RealtimeSession
