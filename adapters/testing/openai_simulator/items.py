"""Conversation items: create, delete, retrieve, truncate (docs/protocols/openai.md#conversation-items).

``conversation.item.create`` answers ``conversation.item.added`` then
``conversation.item.done`` (the GA names); a user message or a
``function_call_output`` is remembered as what the user gave for the next
response. Truncation applies only to an assistant audio part, never past what
was sent. Its own module because items are the conversation's memory, which
neither the input buffer nor the response generator owns.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from adapters.testing._simulator_kit.scenario import ToolResult
from adapters.testing.openai_simulator.audio import pcm_ms
from adapters.testing.openai_simulator.errors import ServiceError
from adapters.testing.openai_simulator.state import SessionState, user_text

__all__ = ["ConversationItems"]


class ConversationItems(SessionState):
    """``conversation.item.*`` and the refusal of ``output_audio_buffer.clear``."""

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
            text = user_text(item)
            if text:
                self.pending_texts.append(text)
        elif kind == "function_call_output":
            call_id = item["call_id"]
            self.pending_tools.append(ToolResult(call_id, self.calls.get(call_id), item["output"]))
        self.context_chars += len(user_text(item) or item.get("output") or item.get("arguments") or "")
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
