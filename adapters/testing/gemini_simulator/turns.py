"""The model's side of a turn: speaking, calling tools, being interrupted (docs/protocols/gemini.md#turn-order).

A turn that completes goes ``modelTurn`` chunks (with ``outputTranscription``)
→ ``generationComplete`` → ``turnComplete`` (+ ``usageMetadata``). A turn with
tool calls sends one ``toolCall`` with all its ``functionCalls`` and waits until
every call has its ``functionResponse``; then the model answers in the same turn.
An interrupted turn goes ``interrupted`` (+ ``toolCallCancellation`` for calls
still waiting) → ``turnComplete``, with no ``generationComplete`` and no further
audio. A response to a cancelled call is ignored (the client cannot avoid that
race); a response to an id the model is not waiting for, or without ``id`` or
``name``, closes the connection 1007.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any

import anyio

from adapters.testing._simulator_kit.scenario import ToolResult, TurnInput, spoken_words
from adapters.testing.gemini_simulator.audio import OUTPUT_RATE, chunk_plan, speech_ms, split_words, tone
from adapters.testing.gemini_simulator.oracle import field
from adapters.testing.gemini_simulator.scenario import Reply

if TYPE_CHECKING:
    from adapters.testing.gemini_simulator.session import LiveSession

__all__ = ["Turns"]

logger = logging.getLogger("adapters.testing.gemini_simulator")

INVALID_ARGUMENT = 1007
AUDIO_MIME = f"audio/pcm;rate={OUTPUT_RATE}"


class _Generation:
    """One model turn in progress."""

    def __init__(self, turn: TurnInput) -> None:
        self.turn = turn
        self.scope = anyio.CancelScope()
        self.cancelled = False
        self.waiting = False
        self.pending: dict[str, str] = {}
        self.results: list[ToolResult] = []
        self.audio_ms = 0
        self.text_chars = 0


class Turns:
    """The reply engine of one connection."""

    def __init__(self, session: LiveSession) -> None:
        self.s = session
        self.active: _Generation | None = None
        self.cancelled_ids: set[str] = set()
        self.queue: list[tuple[TurnInput, int]] = []
        self.cached_text = 0  # prompt text tokens an earlier turn of this connection already read

    @property
    def busy(self) -> bool:
        """Generating or waiting for tool responses: not resumable."""
        return self.active is not None

    async def start(self, turn: TurnInput, index: int) -> None:
        """The user's turn ``turn`` ended with client message ``index``: reply (or queue it while busy)."""
        if self.active is not None:  # NO_INTERRUPTION: the model answers after its current turn
            self.queue.append((turn, index))
            await self.s.resumable_point(index)
            return
        reply = self.s.ctx.scenario.choose(turn)
        gen = _Generation(turn)
        if await self._act_first(reply):
            return
        self.active = gen
        await self.s.resumable_point(index)
        self.s.link.spawn(lambda: self._run(gen, reply, turn))

    async def interrupt(self) -> None:
        """User activity during a turn: stop it now and say so."""
        gen = self.active
        if gen is None:
            return
        self.active = None
        gen.cancelled = True
        gen.scope.cancel()
        link = self.s.link
        await link.send({"serverContent": {"interrupted": True}})
        if gen.pending:
            ids = list(gen.pending)
            self.cancelled_ids.update(ids)
            gen.pending.clear()
            await link.send({"toolCallCancellation": {"ids": ids}})
        await link.send({"serverContent": {"turnComplete": True}, "usageMetadata": self._usage(gen)})

    async def on_tool_response(self, message: dict[str, Any], index: int) -> None:
        gen = self.active
        link = self.s.link
        for response in field(message, "functionResponses") or []:
            call_id = str(field(response, "id") or "")
            name = str(field(response, "name") or "")
            if not call_id:
                await link.close(INVALID_ARGUMENT, "function_response.id is required.")
                return
            if not name:
                await link.close(INVALID_ARGUMENT, "function_response.name is required.")
                return
            if call_id in self.cancelled_ids:
                logger.info("connection %d: ignored the response to cancelled call %s", link.index, call_id)
                continue
            if gen is None or call_id not in gen.pending:
                await link.close(INVALID_ARGUMENT, f"Function response id {call_id!r} matches no pending call.")
                return
            if gen.pending[call_id] != name:
                await link.close(INVALID_ARGUMENT, f"Function response name {name!r} does not match call {call_id!r}.")
                return
            del gen.pending[call_id]
            self.s.consume(("tool_response", call_id))
            gen.results.append(ToolResult(call_id, name, json.dumps(dict(field(response, "response") or {}))))
        if gen is not None and gen.waiting and not gen.pending and self.active is gen:
            gen.waiting = False
            turn = TurnInput(tool_results=tuple(gen.results))
            gen.results = []
            reply = self.s.ctx.scenario.choose(turn)
            if await self._act_first(reply):
                return
            await self.s.resumable_point(index)
            gen.scope = anyio.CancelScope()
            link.spawn(lambda: self._run(gen, reply, turn))
        else:
            await self.s.resumable_point(index)

    # ------------------------------------------------------------------ internals

    async def _act_first(self, reply: Reply) -> bool:
        """The parts of a reply that act before speaking; True if the connection ends instead."""
        link = self.s.link
        for frame in reply.raw:
            await link.send_frame(frame)
        if reply.garble is not None:
            await link.send_raw(reply.garble)
            link.silence()
            return True
        if reply.after_chunks is None and await self.fault(reply):
            return True
        if reply.go_away and reply.after_chunks is None:
            await self.s.go_away()
        return False

    async def fault(self, reply: Reply) -> bool:
        """Drop, reset, close, silence or deafen the connection as ``reply`` says; True if it did."""
        link = self.s.link
        if reply.drop:
            await link.drop()
        elif reply.reset:
            await link.reset()
        elif reply.close is not None:
            await link.close(*reply.close)
        elif reply.deaf:
            link.deafen()
        elif reply.silence:
            link.silence()
        else:
            return False
        return True

    async def _run(self, gen: _Generation, reply: Reply, turn: TurnInput) -> None:
        with gen.scope:
            await self._play(gen, reply, turn)

    async def _play(self, gen: _Generation, reply: Reply, turn: TurnInput) -> None:
        results = "[" + ", ".join(r.output for r in turn.tool_results) + "]" if turn.tool_results else ""
        say, calls = spoken_words(reply, turn, self.s.declared_tools, results=results)
        if say:
            await self._speak(gen, say, reply)
        if reply.after_chunks is not None:
            if reply.go_away:  # the limit announced in the middle of the answer
                await self.s.go_away()
            if await self.fault(reply):
                return
        if calls:
            function_calls: list[dict[str, Any]] = [
                {
                    "id": c.call_id or f"function-call-{secrets.token_hex(8)}",
                    "name": c.name,
                    "args": dict(c.arguments),
                }
                for c in calls
            ]
            gen.pending = {c["id"]: c["name"] for c in function_calls}
            gen.waiting = True
            message = {"toolCall": {"functionCalls": function_calls}}
            if not await self.s.link.send(message, unless=lambda: gen.cancelled):
                gen.pending.clear()
            return
        await self._finish(gen)

    async def _speak(self, gen: _Generation, say: str, reply: Reply) -> None:
        sizes = chunk_plan(reply.audio_ms if reply.audio_ms is not None else speech_ms(say))
        pieces = split_words(say, len(sizes))
        audio = "AUDIO" in self.s.modalities or "TEXT" not in self.s.modalities
        for number, (size, piece) in enumerate(zip(sizes, pieces, strict=True)):
            if number == reply.after_chunks:
                return  # _play plays the fault
            if audio:
                data = base64.b64encode(tone(size)).decode("ascii")
                part: dict[str, Any] = {"inlineData": {"mimeType": AUDIO_MIME, "data": data}}
            elif piece:
                part = {"text": piece}
            else:
                continue
            chunk = {"serverContent": {"modelTurn": {"parts": [part]}}}
            if not await self.s.link.send(chunk, unless=lambda: gen.cancelled):
                return
            if audio:
                gen.audio_ms += size
            gen.text_chars += len(piece)
            if audio and piece and self.s.output_transcription:
                message = {"serverContent": {"outputTranscription": {"text": piece}}}
                if not await self.s.link.send(message, unless=lambda: gen.cancelled):
                    return
            await self._pace(size)

    async def _pace(self, ms: int) -> None:
        """Faster than real time (the proto: "as quickly as possible"): a checkpoint, or ``ms / speedup``."""
        if self.s.ctx.speedup is None:
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.sleep(ms / 1000 / self.s.ctx.speedup)

    async def _finish(self, gen: _Generation) -> None:
        if self.active is not gen:
            return
        self.active = None  # idle before the writes: a client answering turnComplete at once finds it so
        link = self.s.link
        await link.send({"serverContent": {"generationComplete": True}})
        await link.send({"serverContent": {"turnComplete": True}, "usageMetadata": self._usage(gen)})
        await self.s.resumable_point(None)
        if self.queue:
            turn, index = self.queue.pop(0)
            await self.start(turn, index)

    def _usage(self, gen: _Generation) -> dict[str, Any]:
        """Synthetic but consistent ``UsageMetadata``: 32 tokens per second of audio, 4 characters per text
        token; the text an earlier turn already read counts as cached (implicit caching of a repeated prefix)."""
        state = self.s.state
        text_chars = 0
        audio_bytes = 0
        for kind, value in state.inputs if state is not None else ():
            if kind == "text":
                text_chars += len(value)
            elif kind == "audio":
                audio_bytes += len(value)
            elif kind == "history":
                text_chars += sum(len(t) for _, t in value)
        prompt_text = math.ceil(text_chars / 4)
        prompt_audio = math.ceil(audio_bytes / 32_000 * 32)  # 16 kHz PCM16
        if gen.audio_ms:
            response = math.ceil(gen.audio_ms / 1000 * 32)
            modality = "AUDIO"
        else:
            response = math.ceil(gen.text_chars / 4)
            modality = "TEXT"
        prompt = prompt_text + prompt_audio
        cached = min(self.cached_text, prompt_text)
        self.cached_text = prompt_text
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "responseTokenCount": response,
            "totalTokenCount": prompt + response,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": prompt_text},
                {"modality": "AUDIO", "tokenCount": prompt_audio},
            ],
            "responseTokensDetails": [{"modality": modality, "tokenCount": response}],
        }
        if cached:
            usage["cachedContentTokenCount"] = cached
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        return usage
