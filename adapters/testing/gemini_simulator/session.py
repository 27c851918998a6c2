"""One connection's side of the Gemini Live protocol (docs/protocols/gemini.md): setup, input, turns, resumption.

The server (``server.py``) hands every client message that passed the oracle to
:meth:`LiveSession.handle`, in order, from the connection's reader task. Replies
run in their own task (:mod:`.turns`) so the reader keeps listening: user speech
during a reply interrupts it, as the service does.

Resumability: when the setup asked for ``sessionResumption``, a
``sessionResumptionUpdate`` with a fresh handle follows setupComplete, every
text / clientContent / toolResponse consumed while idle, every turnComplete, and
audio consumed while idle at most every ``audio_handle_every_ms`` of audio (a
handle per 20 ms chunk would flood the client). While the model is generating or
waiting for tool responses the session is not resumable, and an input consumed
then gets an update with no handle and ``resumable`` false (proto3 JSON omits
default values, so that message is ``{"sessionResumptionUpdate": {}}``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio
import attrs
from google.ai import generativelanguage_v1beta as glm

from adapters.testing._simulator_kit.scenario import ScenarioState, TurnInput
from adapters.testing.gemini_simulator.audio import EnergyVAD, pcm_rate
from adapters.testing.gemini_simulator.oracle import decode_bytes, field, has
from adapters.testing.gemini_simulator.records import ConnectionRecord, UserInput
from adapters.testing.gemini_simulator.scenario import Reply
from adapters.testing.gemini_simulator.state import Handles, SessionState
from adapters.testing.gemini_simulator.turns import Turns

__all__ = ["Context", "Link", "LiveSession"]

logger = logging.getLogger("adapters.testing.gemini_simulator")

INVALID_ARGUMENT = 1007
POLICY = 1008


class Link(Protocol):
    """What a session needs from its connection (``server._Connection``)."""

    index: int
    record: ConnectionRecord

    async def send(self, message: dict[str, Any], *, unless: Callable[[], bool] | None = None) -> bool: ...
    async def close(self, code: int, reason: str) -> None: ...
    async def drop(self) -> None: ...
    async def reset(self) -> None: ...
    def silence(self) -> None: ...
    def deafen(self) -> None: ...
    async def send_frame(self, data: str | bytes) -> bool: ...
    async def send_raw(self, data: bytes) -> bool: ...
    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None: ...


@attrs.define
class Context:
    """What every connection of one simulator shares."""

    scenario: ScenarioState[Reply]
    handles: Handles
    speedup: float | None
    go_away_lead_s: float
    connection_lifetime_s: float | None
    lifetime_close: tuple[int, str]
    audio_handle_every_ms: int
    transparent_ok: bool
    on_state: Callable[[ConnectionRecord, SessionState], None]


def _enum_name(value: Any, enum: Any) -> str:
    """A proto3 JSON enum value (its name, or its number) as its name."""
    if isinstance(value, int):
        try:
            return str(enum(value).name)
        except ValueError:
            return str(value)
    return str(value)


def _duration(seconds: float) -> str:
    """``google.protobuf.Duration`` in proto3 JSON: ``"50s"``, ``"0.250s"``."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:.3f}s"


def _text_of(content: dict[str, Any]) -> str:
    return "".join(str(field(part, "text") or "") for part in field(content, "parts") or [])


class LiveSession:
    """The protocol state of one connection; the model's memory is :attr:`state` (shared with resumptions)."""

    def __init__(self, link: Link, ctx: Context, *, refusal: tuple[int, str] | None = None) -> None:
        self.link = link
        self.ctx = ctx
        self.refusal = refusal
        self.state: SessionState | None = None
        self.model = ""
        self.resumption = False
        self.transparent = False
        self.modalities: tuple[str, ...] = ("AUDIO",)
        self.input_transcription = False
        self.output_transcription = False
        self.declared_tools: frozenset[str] = frozenset()
        self.auto_vad = True
        self.interrupts = True
        self.vad = EnergyVAD()
        self.manual_speaking = False
        self.messages = 0
        self.last_consumed = 0
        self.audio_since_handle_ms = 0.0
        self.turns = Turns(self)

    # ------------------------------------------------------------------ entry points

    @property
    def speaking(self) -> bool:
        return self.vad.speaking if self.auto_vad else self.manual_speaking

    async def handle(self, message: dict[str, Any]) -> None:
        """One client message that passed the schema oracle."""
        index = self.messages
        self.messages += 1
        if self.refusal is not None:
            await self.link.close(*self.refusal)
            return
        if self.state is None:
            if not has(message, "setup"):
                await self.link.close(INVALID_ARGUMENT, "The first message must be setup.")
                return
            await self._on_setup(field(message, "setup"))
            return
        if has(message, "setup"):
            await self.link.close(INVALID_ARGUMENT, "setup must be the first and only setup message.")
        elif has(message, "clientContent"):
            await self._on_client_content(field(message, "clientContent"), index)
        elif has(message, "realtimeInput"):
            await self._on_realtime_input(field(message, "realtimeInput"), index)
        elif has(message, "toolResponse"):
            await self.turns.on_tool_response(field(message, "toolResponse"), index)

    async def start_lifetime(self) -> None:
        """``goAway`` at ``lifetime - go_away_lead_s``, then the cut (docs/protocols/gemini.md#session-limits)."""
        lifetime = self.ctx.connection_lifetime_s
        if lifetime is None:
            return
        await anyio.sleep(max(0.0, lifetime - self.ctx.go_away_lead_s))
        lead = min(self.ctx.go_away_lead_s, lifetime)
        await self.link.send({"goAway": {"timeLeft": _duration(lead)}})
        await self._cut_after(lead)

    async def go_away(self) -> None:
        """Send ``goAway`` now; the connection ends ``go_away_lead_s`` later with the lifetime close."""
        lead = self.ctx.go_away_lead_s
        await self.link.send({"goAway": {"timeLeft": _duration(lead)}})
        self.link.spawn(lambda: self._cut_after(lead))

    async def _cut_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        await self.link.close(*self.ctx.lifetime_close)

    # ------------------------------------------------------------------ setup

    async def _on_setup(self, setup: dict[str, Any]) -> None:
        self.link.record.setup = setup
        model = str(field(setup, "model") or "")
        if not model:
            await self.link.close(INVALID_ARGUMENT, "setup.model is required.")
            return
        resumption = field(setup, "sessionResumption")
        handle = str(field(resumption, "handle") or "") if resumption is not None else ""
        if resumption is not None:
            self.resumption = True
            self.transparent = bool(field(resumption, "transparent", False)) and self.ctx.transparent_ok
        if handle:
            self.link.record.resumed_handle = handle
            snapshot = self.ctx.handles.resolve(handle)
            if snapshot is None:
                await self.link.close(INVALID_ARGUMENT, "Session resumption handle is invalid or expired.")
                return
            if snapshot.state.model != model:
                await self.link.close(INVALID_ARGUMENT, "The model of a resumed session cannot change.")
                return
            state = snapshot.restore(handle)
        else:
            state = self.ctx.handles.new_session(model)
        self.model = model
        config = field(setup, "generationConfig") or {}
        names = [_enum_name(m, glm.GenerationConfig.Modality) for m in field(config, "responseModalities") or []]
        self.modalities = tuple(names) or ("AUDIO",)
        self.input_transcription = has(setup, "inputAudioTranscription")
        self.output_transcription = has(setup, "outputAudioTranscription")
        self.declared_tools = frozenset(
            str(field(decl, "name"))
            for tool in field(setup, "tools") or []
            for decl in field(tool, "functionDeclarations") or []
        )
        realtime = field(setup, "realtimeInputConfig") or {}
        detection = field(realtime, "automaticActivityDetection") or {}
        self.auto_vad = not field(detection, "disabled", False)
        silence_ms = field(detection, "silenceDurationMs")
        self.vad = EnergyVAD(silence_duration_ms=int(silence_ms) if silence_ms else 500)
        handling = _enum_name(field(realtime, "activityHandling", ""), glm.RealtimeInputConfig.ActivityHandling)
        self.interrupts = handling != "NO_INTERRUPTION"
        self.state = state
        self.link.record.session_id = state.session_id
        self.ctx.on_state(self.link.record, state)
        await self.link.send({"setupComplete": {}})
        await self.resumable_point(0)

    # ------------------------------------------------------------------ input

    def consume(self, item: UserInput) -> None:
        """``item`` is now in the model's memory."""
        assert self.state is not None
        self.state.inputs.append(item)
        self.ctx.on_state(self.link.record, self.state)

    async def resumable_point(self, index: int | None) -> None:
        """After a consumed input (``index``) or a turnComplete (None): tell the client what it may resume from."""
        if index is not None:
            self.last_consumed = index
        if not self.resumption or self.state is None:
            return
        if self.turns.busy or self.speaking:
            await self.link.send({"sessionResumptionUpdate": {}})
            return
        self.audio_since_handle_ms = 0.0
        update: dict[str, Any] = {"newHandle": self.ctx.handles.issue(self.state), "resumable": True}
        if self.transparent:
            update["lastConsumedClientMessageIndex"] = str(self.last_consumed)
        await self.link.send({"sessionResumptionUpdate": update})

    async def _on_client_content(self, content: dict[str, Any], index: int) -> None:
        turns = field(content, "turns") or []
        history = tuple((str(field(turn, "role") or "user"), _text_of(turn)) for turn in turns)
        await self.turns.interrupt()  # "A message from the client content will interrupt any current model generation."
        self.consume(("history", history))
        if field(content, "turnComplete", False):
            text = " ".join(t for role, t in history if role == "user" and t)
            await self.turns.start(TurnInput(text=text), index)
        else:
            await self.resumable_point(index)

    async def _on_realtime_input(self, realtime: dict[str, Any], index: int) -> None:
        audio = field(realtime, "audio")
        if audio is not None:
            await self._on_audio(audio, index)
        if has(realtime, "video"):
            await self.resumable_point(index)  # consumed and forgotten: the simulator has no eyes
        if has(realtime, "activityStart"):
            if self.auto_vad:
                await self.link.close(
                    INVALID_ARGUMENT, "activity_start is only allowed when automatic activity detection is disabled."
                )
                return
            self.manual_speaking = True
            await self._speech_started()
        if has(realtime, "activityEnd"):
            if self.auto_vad:
                await self.link.close(
                    INVALID_ARGUMENT, "activity_end is only allowed when automatic activity detection is disabled."
                )
                return
            if self.manual_speaking:
                self.manual_speaking = False
                await self._speech_stopped(index)
        if field(realtime, "audioStreamEnd", False) and self.auto_vad and self.vad.speaking:
            self.vad.reset(drop_pending=True)
            await self._speech_stopped(index)
        text = field(realtime, "text")
        if text:
            await self.turns.interrupt()
            self.consume(("text", str(text)))
            await self.turns.start(TurnInput(text=str(text)), index)

    async def _on_audio(self, blob: dict[str, Any], index: int) -> None:
        mime = str(field(blob, "mimeType") or "")
        rate = pcm_rate(mime)
        if rate is None:
            await self.link.close(INVALID_ARGUMENT, f"Unsupported audio mime type: {mime!r}; use audio/pcm;rate=16000.")
            return
        pcm = decode_bytes(field(blob, "data", "")) or b""
        self.consume(("audio", pcm))
        boundaries = list(self.vad.feed(pcm, rate)) if self.auto_vad else []
        for boundary in boundaries:
            if boundary.kind == "started":
                await self._speech_started()
            else:
                await self._speech_stopped(index)
        if not boundaries and not self.speaking and not self.turns.busy and self.resumption:
            self.audio_since_handle_ms += len(pcm) / 2 / rate * 1000
            if self.audio_since_handle_ms >= self.ctx.audio_handle_every_ms:
                await self.resumable_point(index)

    async def _speech_started(self) -> None:
        if self.interrupts:
            await self.turns.interrupt()

    async def _speech_stopped(self, index: int) -> None:
        assert self.state is not None
        spoken = self.state.spoken_turns
        self.state.spoken_turns += 1
        transcript = self.ctx.scenario.scenario.transcript(spoken)
        if self.input_transcription:
            await self.link.send({"serverContent": {"inputTranscription": {"text": transcript}}})
        await self.turns.start(TurnInput(text=transcript, spoken_turn=spoken), index)
