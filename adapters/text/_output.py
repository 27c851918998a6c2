"""BidiTextOutput: conversation events as readable lines in a plain terminal."""

from __future__ import annotations

import json
import logging
from typing import Any

from adapters.text._console import Console
from ports.events import (
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiToolResultEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
)
from ports.io import AgentView

__all__ = ["BidiTextOutput"]

logger = logging.getLogger("bidi_core.adapters.text")

_LABELS = {"user": "You", "assistant": "Assistant"}
_MAX_SUMMARY = 200


class BidiTextOutput:
    """Prints transcripts, tool calls, interruptions and errors as lines.

    On a terminal a transcript that is still growing is rewritten in place, so
    the user watches the assistant speak; elsewhere (a pipe, a log file) only
    finished transcripts are printed, because a stream of ever-longer partial
    lines would bury them. Audio, usage and response boundaries print nothing:
    they mean nothing as text. Made by :meth:`BidiTextIO.output`, which shares
    the terminal with the matching input so prompt and lines never mix.
    """

    reports_playback = False

    def __init__(self, console: Console) -> None:
        self._console = console

    async def start(self, agent: AgentView) -> None:
        """Nothing to open: stdout is already there."""
        logger.debug("text output started")

    async def __call__(self, event: BidiOutputEvent) -> None:
        """Render one event."""
        self._render(event)

    def offer(self, event: BidiOutputEvent) -> bool:
        """Render it on the spot (:class:`ports.io.BidiInlineOutput`): writes are
        synchronous and flushed, a terminal keeps up."""
        self._render(event)
        return True

    def _render(self, event: BidiOutputEvent) -> None:
        console = self._console
        match event:
            case BidiTranscriptStreamEvent():
                self._transcript(event)
            case BidiInterruptionEvent():
                console.line("[interrupted]")
            case BidiToolUseEvent():
                console.line(f"[tool] {event.name}({_summary(dict(event.input))})")
            case BidiToolResultEvent():
                content = "" if event.content is None else f": {_summary(event.content)}"
                console.line(f"[tool] {event.name} -> {event.status}{content}")
            case BidiErrorEvent():
                code = f" ({event.code})" if event.code else ""
                console.line(f"[error] {event.message}{code}")
            case BidiConnectionRestartEvent():
                console.line(f"[reconnecting: {event.reason}]")
            case BidiConnectionCloseEvent():
                # The last event: no prompt after it, the conversation is over.
                console.withdraw_prompt()
                console.line(f"[conversation ended: {event.reason}]", reprompt=False)
            case _:
                pass  # audio, usage, response start/complete, connection start

    async def stop(self) -> None:
        """End a partial line in progress so the shell's prompt starts on its own line."""
        self._console.finish()
        logger.debug("text output stopped")

    def _transcript(self, event: BidiTranscriptStreamEvent) -> None:
        prefix = f"{_LABELS.get(event.role, event.role)}: "
        key = (event.role, event.response_id)
        if event.is_final:
            text = event.text.strip()
            if text:  # an empty final transcript (nothing was heard) is not worth a line
                self._console.final(key, prefix + text)
        elif self._console.is_tty():
            self._console.partial(key, prefix, event.text)


def _summary(value: Any) -> str:
    """One line of at most about 200 characters: tool payloads can be whole documents."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # circular or otherwise unserialisable
            text = repr(value)
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    if len(text) > _MAX_SUMMARY:
        text = text[: _MAX_SUMMARY - 3] + "..."
    return text
