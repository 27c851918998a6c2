"""Responses: choosing the reply, generating its events, tool calls, cancellation and usage.

Responses run in their own task, in the order of docs/protocols/openai.md#responses: spoken
text as 50-150 ms audio deltas interleaved with transcript deltas (or text
deltas), then function calls with their arguments streamed; faster than real
time. ``response.cancel`` (``client_cancelled``) or speech when
``interrupt_response`` is on (``turn_detected``) stops one: the open parts are
closed (``incomplete``) and ``response.done`` says ``cancelled``. Its own module
because it is the only writer of a response's events.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from collections.abc import Mapping
from typing import Any

import anyio

from adapters.testing._simulator_kit.scenario import ToolResult, TurnInput, spoken_words
from adapters.testing.openai_simulator.audio import chunk_plan, speech_ms, split_words, tone
from adapters.testing.openai_simulator.errors import ServiceError
from adapters.testing.openai_simulator.scenario import Reply
from adapters.testing.openai_simulator.state import ActiveResponse, SessionState, tokens, user_text

__all__ = ["Responses"]


class Responses(SessionState):
    """``response.create`` / ``response.cancel`` and the events of every response."""

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
            texts = [user_text(i) for i in items if i.get("type") == "message" and i.get("role") == "user"]
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

    async def play_fault(self, reply: Reply) -> bool:
        """The connection fault ``reply`` names (drop, reset, close, session limit, silence, deafness),
        played now; False if it names none."""
        if reply.drop:
            await self.link.drop()
        elif reply.reset:
            await self.link.reset()
        elif reply.close is not None:
            await self.link.close(*reply.close, why="server")
        elif reply.session_limit:
            await self.expire()
        elif reply.deaf:
            self.link.deafen()
        elif reply.silence:
            self.link.silence()
        else:
            return False
        return True

    async def _start_response(self, params: Mapping[str, Any]) -> None:
        turn = self._take_turn(params)
        reply = self.ctx.state.choose(turn)
        for frame in reply.raw:
            await self.link.send_frame(frame)
        if reply.garble is not None:
            await self.link.send_raw(reply.garble)
            self.link.silence()
            return
        if reply.after_deltas is None and await self.play_fault(reply):
            return
        if reply.error is not None:
            await self.link.send({"type": "error", "error": reply.error.to_event_error(None)})
            return
        response = ActiveResponse(self.ctx.ids.new("resp"), reply, turn, params)
        self.active = response
        self.link.spawn(lambda: self._run_response(response))

    async def _run_response(self, response: ActiveResponse) -> None:
        try:
            with response.scope:
                await self._generate(response)
        finally:
            if self.active is response:
                self.active = None

    def _response_object(self, response: ActiveResponse, status: str) -> dict[str, Any]:
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

    async def _generate(self, response: ActiveResponse) -> None:
        """The response events of docs/protocols/openai.md#responses, item by item; stops early when cancelled."""
        reply, turn = response.reply, response.turn
        await self.link.send({"type": "response.created", "response": self._response_object(response, "in_progress")})
        if reply.drop_after_deltas == 0:
            await self.link.drop()
            return
        if reply.after_deltas == 0 and await self.play_fault(reply):
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
        """``RealtimeResponseUsage``: synthetic but consistent (details add up, total = input + output).
        The text an earlier response of the session already read counts as cached (prompt caching
        reuses a repeated prefix), part of the input tokens as the service reports it."""
        in_text = tokens(self.context_chars + len(self.session.get("instructions") or ""))
        in_audio = math.ceil(self.context_audio_ms / 100)
        out_text = tokens(stats["text_chars"])
        out_audio = math.ceil(stats["audio_ms"] / 50)
        cached_text = min(self.cached_text_tokens, in_text)
        self.cached_text_tokens = in_text
        return {
            "total_tokens": in_text + in_audio + out_text + out_audio,
            "input_tokens": in_text + in_audio,
            "output_tokens": out_text + out_audio,
            "input_token_details": {
                "text_tokens": in_text,
                "audio_tokens": in_audio,
                "image_tokens": 0,
                "cached_tokens": cached_text,
                "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }

    async def _pace(self, response: ActiveResponse, ms: int) -> None:
        """Faster than real time (docs/protocols/openai.md#responses): a checkpoint, or ms/speedup unless cancelled."""
        if self.ctx.speedup is None:
            await anyio.lowlevel.checkpoint()
            return
        with anyio.move_on_after(ms / 1000 / self.ctx.speedup):
            await response.cancelled.wait()

    async def _open_item(self, response: ActiveResponse, item: dict[str, Any], output_index: int) -> str | None:
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
        self, response: ActiveResponse, item: dict[str, Any], output_index: int, previous: str | None
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
        response: ActiveResponse,
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
                if response.reply.after_deltas == n and await self.play_fault(response.reply):
                    return
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
        response: ActiveResponse,
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
