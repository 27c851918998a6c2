"""One Realtime session: the GA protocol's state and semantics, with no socket in sight.

The transport (:mod:`.server`) hands every client message to
:meth:`RealtimeSession.handle` and sends what the session gives to
:class:`Link`. What the session does follows docs/protocols/openai.md and the openai
types named in each docstring:

* every client message passes the strict oracle first (:mod:`.oracle`); a
  refusal is the service's ``error`` event and the connection stays open;
* ``session.update`` merges into the effective session and answers
  ``session.updated`` with all of it (docs/protocols/openai.md#session-configuration);
* ``conversation.item.*``: :mod:`.items`;
* ``input_audio_buffer.*`` and ``server_vad`` on energy: :mod:`.input_audio`;
* ``response.*`` and the events of every response: :mod:`.responses`.

This module is the session's lifecycle (``session.created``, the beta refusal,
the session limit), the dispatch of each client event to its job's handler, and
``session.update``; the state the jobs share is :mod:`.state`'s.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from adapters.testing.openai_simulator.errors import ServiceError
from adapters.testing.openai_simulator.input_audio import InputAudio
from adapters.testing.openai_simulator.items import ConversationItems
from adapters.testing.openai_simulator.oracle import check_client_event
from adapters.testing.openai_simulator.responses import Responses
from adapters.testing.openai_simulator.state import (
    SEMANTIC_VAD_DEFAULTS,
    SERVER_VAD_DEFAULTS,
    Ids,
    Link,
    SessionContext,
    merge,
)

__all__ = ["Ids", "Link", "RealtimeSession", "SessionContext"]


class RealtimeSession(InputAudio, ConversationItems, Responses):
    """One connection's session: its lifecycle, the dispatch of client events, and ``session.update``."""

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
        merged = merge(self.session, update)
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
