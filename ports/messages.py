"""Conversation history as it crosses the boundary.

The history is what a new connection is seeded with: user text, final
transcripts of both roles, tool calls and their results, never audio.
Each message has a dict form in the Bedrock Converse shape that the reference
(Strands) uses for ``agent.messages``, so stored histories port over.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

import attrs

from ports.errors import BidiUsageError

__all__ = ["Message", "TextMessage", "ToolCallMessage", "ToolResultMessage", "message_from_dict"]


@attrs.frozen
class TextMessage:
    """Something said or typed, by the user or the model."""

    role: Literal["user", "assistant"]
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": [{"text": self.text}]}


@attrs.frozen
class ToolCallMessage:
    """The model's request to call a tool."""

    tool_use_id: str
    name: str
    input: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    role: Literal["assistant"] = attrs.field(default="assistant", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": [{"toolUse": {"toolUseId": self.tool_use_id, "name": self.name, "input": dict(self.input)}}],
        }


@attrs.frozen
class ToolResultMessage:
    """The outcome of a tool call, as the model was told it."""

    tool_use_id: str
    name: str
    status: Literal["success", "error", "cancelled"]
    content: Any = attrs.field(default=None, hash=False)

    role: Literal["user"] = attrs.field(default="user", init=False)

    def content_text(self) -> str:
        """The result as the text a provider's history item carries."""
        return self.content if isinstance(self.content, str) else json.dumps(self.content)

    def to_dict(self) -> dict[str, Any]:
        block = {"text": self.content} if isinstance(self.content, str) else {"json": self.content}
        return {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": self.tool_use_id,
                        "name": self.name,
                        "status": self.status,
                        "content": [block],
                    }
                }
            ],
        }


Message: TypeAlias = TextMessage | ToolCallMessage | ToolResultMessage


def _part(block: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = block[key]
    if not isinstance(value, Mapping):
        raise BidiUsageError(f"'{key}' must be a dict, got {value!r:.200}")
    return value


def _text_field(part: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = part.get(key, default)
    if not isinstance(value, str):
        raise BidiUsageError(f"{what} needs '{key}' (a str), got {value!r:.200}")
    return value


def message_from_dict(data: Mapping[str, Any]) -> Message:
    """Read one message in the Converse shape (``{"role", "content": [block]}``).

    Accepts exactly one content block per message: ``text``, ``toolUse`` or
    ``toolResult``. Raises :class:`BidiUsageError` for anything else (audio
    and images are never part of the history), and for a block that lacks
    what its kind needs (a tool call's ``toolUseId`` and ``name``, a result's
    ``toolUseId``).
    """
    try:
        role = data["role"]
        (block,) = data["content"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BidiUsageError(f"a message needs 'role' and exactly one 'content' block, got {data!r:.200}") from exc
    if not isinstance(block, Mapping):
        raise BidiUsageError(f"a content block must be a dict, got {block!r:.200}")
    if "text" in block and role in ("user", "assistant"):
        return TextMessage(role=role, text=str(block["text"]))
    if "toolUse" in block and role == "assistant":
        use = _part(block, "toolUse")
        arguments = use.get("input") or {}
        if not isinstance(arguments, Mapping):
            raise BidiUsageError(f"a toolUse's 'input' must be a dict, got {arguments!r:.200}")
        return ToolCallMessage(
            tool_use_id=_text_field(use, "toolUseId", "a toolUse"),
            name=_text_field(use, "name", "a toolUse"),
            input=dict(arguments),
        )
    if "toolResult" in block and role == "user":
        res = _part(block, "toolResult")
        parts = res.get("content") or []
        content: Any = None
        if parts:
            first = parts[0] if isinstance(parts, list | tuple) else None
            if not isinstance(first, Mapping):
                raise BidiUsageError(f"a toolResult's 'content' must be a list of dicts, got {parts!r:.200}")
            content = first.get("text") if "text" in first else first.get("json")
        status = res.get("status", "success")
        if status not in ("success", "error", "cancelled"):
            raise BidiUsageError(f"unknown tool result status {status!r}")
        return ToolResultMessage(
            tool_use_id=_text_field(res, "toolUseId", "a toolResult"),
            name=_text_field(res, "name", "a toolResult", default=""),
            status=status,
            content=content,
        )
    raise BidiUsageError(f"unsupported message: {data!r:.200}")
