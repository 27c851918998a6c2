"""The conversation history as turns that seed a fresh Gemini Live session.

A fresh session (no resumption handle, or a refused one) gets the history as
one ``clientContent`` message right after ``setupComplete``. A resumed session
gets none: the session behind the handle has it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from adapters.gemini.wire import tool_response_body
from ports.messages import Message, TextMessage, ToolCallMessage, ToolResultMessage

__all__ = ["history_turns"]


def history_turns(history: Iterable[Message]) -> list[dict[str, Any]]:
    """``clientContent.turns`` seeding a fresh session.

    Gemini refuses contents where a function call turn is not followed by a
    turn with as many function responses (400 "the number of function response
    parts is equal to the number of function call parts of the function call
    turn"). The history records a result when it was sent, possibly after other
    turns (the user spoke while the tool ran), and a call whose tool still runs
    has none yet. So each answered call goes in with its response right after
    it; a call without a result is left out (its result, when the tool ends,
    goes to the new session as text, see ``GeminiLiveSession._tool_result``),
    and so is a result whose call is not in the history. Empty texts are left
    out too: Gemini refuses an empty text part (google-gemini/deprecated-generative-ai-js#361).
    """
    messages = list(history)
    results = {m.tool_use_id: m for m in messages if isinstance(m, ToolResultMessage)}
    turns: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, TextMessage):
            if not message.text.strip():
                continue  # Gemini refuses an empty text part ("has an empty text parameter")
            role = "user" if message.role == "user" else "model"
            turns.append({"role": role, "parts": [{"text": message.text}]})
        elif isinstance(message, ToolCallMessage) and message.tool_use_id in results:
            result = results.pop(message.tool_use_id)
            call = {"id": message.tool_use_id, "name": message.name, "args": dict(message.input)}
            response = {
                "id": message.tool_use_id,
                "name": message.name,
                "response": tool_response_body(result.status, result.content),
            }
            turns.append({"role": "model", "parts": [{"functionCall": call}]})
            turns.append({"role": "user", "parts": [{"functionResponse": response}]})
    return turns
