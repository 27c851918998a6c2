"""The conversation history as a new Nova Sonic stream can take it.

Nova's history is text only (``contentStart``/``textInput``/``contentEnd``,
USER or ASSISTANT, ``interactive: false``), sent once after the system
prompt, at most 40 KB in all and 1 KB per ``textInput``, USER first (AWS's
Nova 2 Sonic user guide, "Managing chat history").
"""

from __future__ import annotations

import json

from ports.messages import Message as HistoryMessage
from ports.messages import TextMessage, ToolCallMessage, ToolResultMessage

__all__ = ["HISTORY_MAX_BYTES", "TEXT_INPUT_MAX_BYTES", "history_turns", "split_utf8"]

HISTORY_MAX_BYTES = 40 * 1024
"""The whole history must stay under 40 KB (Nova 2 Sonic user guide, "Managing chat history")."""
TEXT_INPUT_MAX_BYTES = 1024
"""One history ``textInput`` may carry at most 1 KB; longer messages take several."""


def _summarize_call(message: ToolCallMessage) -> str:
    return f"(I called the tool {message.name} with {json.dumps(dict(message.input), ensure_ascii=False)})"


def _summarize_result(message: ToolResultMessage) -> str:
    return f"(The tool {message.name or message.tool_use_id} returned {message.status}: {message.content_text()})"


def history_turns(history: tuple[HistoryMessage, ...], max_bytes: int = HISTORY_MAX_BYTES) -> list[tuple[str, str]]:
    """The history as Nova takes it: ``(role, text)`` turns, USER first, roles alternating.

    Nova's history is text only, in USER and ASSISTANT roles. Tool calls and
    results become short ASSISTANT notes (the assistant did this and learned
    that), so the model knows what it already looked up without a replayed
    TOOL block, which a new stream cannot take because it never issued that
    call. Consecutive messages of one role are joined; the oldest turns are
    dropped until the whole fits ``max_bytes`` (the oldest one kept is cut to
    its end if need be, so one long message does not empty the history);
    leading ASSISTANT turns are dropped (the first must be USER).
    """
    turns: list[list[str]] = []
    for message in history:
        if isinstance(message, TextMessage):
            role, text = message.role.upper(), message.text
        elif isinstance(message, ToolCallMessage):
            role, text = "ASSISTANT", _summarize_call(message)
        else:
            role, text = "ASSISTANT", _summarize_result(message)
        if not text.strip():
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1] += "\n" + text
        else:
            turns.append([role, text])
    # The newest turns that fit; the oldest of them cut to its end if it alone overflows (what
    # a long message says last is what the model needs most). One pass from the newest: linear.
    sizes = [len(text.encode("utf-8")) for _, text in turns]
    start, room = len(turns), max_bytes
    while start > 0 and room > 0:
        start -= 1
        room -= sizes[start]
    result = [(role, text) for role, text in turns[start:]]
    if result and room < 0:
        keep = sizes[start] + room
        result[0] = (result[0][0], result[0][1].encode("utf-8")[-keep:].decode("utf-8", "ignore"))
    while result and result[0][0] != "USER":
        result.pop(0)
    return result


def split_utf8(text: str, limit: int = TEXT_INPUT_MAX_BYTES) -> list[str]:
    """``text`` in pieces of at most ``limit`` UTF-8 bytes, never splitting a character."""
    raw = text.encode("utf-8")
    pieces: list[str] = []
    start = 0
    while start < len(raw):
        end = min(start + limit, len(raw))
        while end < len(raw) and (raw[end] & 0xC0) == 0x80:  # inside a multi-byte character
            end -= 1
        pieces.append(raw[start:end].decode("utf-8"))
        start = end
    return pieces or [""]
