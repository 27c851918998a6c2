"""The conversation history as items that seed a new OpenAI Realtime connection.

A Realtime session starts empty; the history goes in as
``conversation.item.create`` messages right after the setup, in order: user
and assistant text as messages, tool calls and their outputs as
``function_call`` / ``function_call_output`` items.
"""

from __future__ import annotations

import json
from typing import Any

from adapters.openai import wire
from ports.messages import Message, TextMessage, ToolCallMessage

__all__ = ["history_items"]


def history_items(history: tuple[Message, ...]) -> list[wire.ConversationItemCreate]:
    """Seed items for a new connection. Tool results whose call is not in the
    history are skipped (the service rejects an output without its call)."""
    calls = {m.tool_use_id for m in history if isinstance(m, ToolCallMessage)}
    items: list[wire.ConversationItemCreate] = []
    for message in history:
        item: dict[str, Any]
        if isinstance(message, TextMessage):
            kind = "input_text" if message.role == "user" else "output_text"
            item = {"type": "message", "role": message.role, "content": [{"type": kind, "text": message.text}]}
        elif isinstance(message, ToolCallMessage):
            item = {
                "type": "function_call",
                "call_id": message.tool_use_id,
                "name": message.name,
                "arguments": json.dumps(dict(message.input)),
            }
        else:
            if message.tool_use_id not in calls:
                continue
            item = {"type": "function_call_output", "call_id": message.tool_use_id, "output": message.content_text()}
        items.append(wire.ConversationItemCreate(item=item))
    return items
