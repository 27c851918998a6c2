"""The messages a new connection is seeded with.

A plain list of :class:`ports.messages.Message` that the application may read,
persist and edit between conversations (``agent.messages``). Seeds may be our
message objects or dicts in the Converse shape the reference uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ports.errors import BidiUsageError
from ports.messages import Message, TextMessage, ToolCallMessage, ToolResultMessage, message_from_dict

__all__ = ["coerce_messages"]

_MESSAGE_TYPES = (TextMessage, ToolCallMessage, ToolResultMessage)


def coerce_messages(messages: Iterable[Message | Mapping[str, Any]] | None) -> list[Message]:
    """Turn a user-supplied history into a list of message objects.

    Raises :class:`BidiUsageError` naming the first entry that is neither a
    message nor a Converse-shaped dict.
    """
    if messages is None:
        return []
    if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
        raise BidiUsageError(f"messages must be a list of messages, not a single value ({type(messages).__name__})")
    out: list[Message] = []
    for i, item in enumerate(messages):
        if isinstance(item, _MESSAGE_TYPES):
            out.append(item)
        elif isinstance(item, Mapping):
            try:
                out.append(message_from_dict(item))
            except BidiUsageError as exc:
                raise BidiUsageError(f"messages[{i}]: {exc}") from None
        else:
            raise BidiUsageError(f"messages[{i}] is a {type(item).__name__}, expected a message or a dict")
    return out
