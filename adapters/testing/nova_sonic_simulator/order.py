"""The order of input events in one stream (docs/protocols/nova_sonic.md#input-events), as a pure state machine.

    sessionStart → promptStart → SYSTEM text content → [history contents] →
    interactive contents (audio, typed text, tool results) → promptEnd → sessionEnd →
    the signed empty frame → END_STREAM

Rules, from AWS's "Input events" pages and samples (where they are silent, the
choice is the strict one and says so):

* every event names the prompt of ``promptStart``; a content is used only while open;
* the system prompt is the first content; history (non-interactive USER/ASSISTANT
  text, the first one USER) follows it and ends when the first interactive or
  tool content starts;
* the audio content stays open across turns, and other contents (typed text,
  tool results) are sent while it is open; at most one audio content and one
  other content are open at a time (*strict choice*);
* a content name is used once per prompt (*strict choice*);
* a tool result answers a ``toolUseId`` this stream issued and has not had a result for;
* ``promptEnd`` needs every content closed; nothing but ``sessionEnd`` follows it;
* a history ``textInput`` holds at most 1 KB, the whole history at most 40 KB
  (Nova 2 Sonic user guide, "Managing chat history",
  docs.aws.amazon.com/nova/latest/nova2-userguide/sonic-chat-history.html:
  "One textInput cannot be larger than 1KB. If so, split into multiple
  textInputs in the same content block"; "Overall chat history cannot be
  larger than 40KB"). KB is read as 1024 bytes of UTF-8.

No I/O: :meth:`InputOrder.accept` returns what happened (:class:`Accepted`) or raises
:class:`OrderError`.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import attrs

from adapters.testing.nova_sonic_simulator.schema import (
    AudioInput,
    ContentEnd,
    ContentStart,
    PromptEnd,
    PromptStart,
    SessionEnd,
    SessionStart,
    TextInput,
    ToolResult,
)

__all__ = ["HISTORY_MAX", "HISTORY_TEXT_INPUT_MAX", "Accepted", "InputOrder", "OrderError", "Phase"]

HISTORY_TEXT_INPUT_MAX = 1024
HISTORY_MAX = 40 * 1024

Phase = Literal["session", "prompt", "system", "history", "live", "prompt_ended", "session_ended", "closed"]


class OrderError(ValueError):
    """An event the service would refuse at this point of the stream."""


@attrs.define
class _Content:
    name: str
    type: str
    role: str
    interactive: bool
    tool_use_id: str | None
    parts: list[str] = attrs.field(factory=list)


@attrs.frozen
class Accepted:
    """What an accepted event means.

    ``kind``: ``session_start``, ``prompt_start``, ``content_start``, ``system``, ``history``,
    ``text`` (a typed user turn, complete), ``audio`` (``pcm``), ``audio_start``, ``audio_end``,
    ``tool_result`` (complete), ``prompt_end``, ``session_end``, ``text_part`` (text of a content
    still open).
    """

    kind: str
    text: str = ""
    role: str = ""
    pcm: bytes = b""
    tool_use_id: str = ""
    event: Any = None


class InputOrder:
    """Tracks one stream's input; :meth:`accept` each schema-valid event, :meth:`end_marker`, :meth:`end_stream`."""

    def __init__(self) -> None:
        self.phase: Phase = "session"
        self.prompt_name: str | None = None
        self.session_start: SessionStart | None = None
        self.prompt_start: PromptStart | None = None
        self.open: dict[str, _Content] = {}
        self.used_names: set[str] = set()
        self.pending_tools: dict[str, str] = {}
        """toolUseId -> tool name, issued by the model and not yet answered."""
        self.history_count = 0
        self.history_bytes = 0

    # ------------------------------------------------------------------ the model's side

    def tool_issued(self, tool_use_id: str, name: str) -> None:
        self.pending_tools[tool_use_id] = name

    @property
    def declared_tools(self) -> set[str]:
        config = self.prompt_start.toolConfiguration if self.prompt_start else None
        return {tool.toolSpec.name for tool in config.tools} if config else set()

    # ------------------------------------------------------------------ the client's side

    def accept(self, name: str, event: Any) -> Accepted:
        if self.phase in ("session_ended", "closed"):
            raise OrderError(f"{name} after sessionEnd: only the signed empty frame may follow.")
        if isinstance(event, SessionStart):
            if self.phase != "session":
                raise OrderError("sessionStart must be the first event, and only once.")
            self.session_start = event
            self.phase = "prompt"
            return Accepted("session_start", event=event)
        if self.phase == "session":
            raise OrderError(f"{name} before sessionStart.")
        if isinstance(event, PromptStart):
            if self.phase != "prompt":
                raise OrderError("promptStart must follow sessionStart, once per session.")
            self.prompt_name = event.promptName
            self.prompt_start = event
            self.phase = "system"
            return Accepted("prompt_start", event=event)
        if self.phase == "prompt":
            raise OrderError(f"{name} before promptStart.")
        if isinstance(event, SessionEnd):
            if self.phase != "prompt_ended":
                raise OrderError("sessionEnd before promptEnd.")
            self.phase = "session_ended"
            return Accepted("session_end")
        if self.phase == "prompt_ended":
            raise OrderError(f"{name} after promptEnd: only sessionEnd may follow.")
        if event.promptName != self.prompt_name:
            raise OrderError(f"{name} names prompt {event.promptName!r}, the session's prompt is {self.prompt_name!r}.")
        if isinstance(event, PromptEnd):
            if self.phase == "system":
                raise OrderError("promptEnd before the system prompt.")
            if self.open:
                raise OrderError(f"promptEnd while content {sorted(self.open)[0]!r} is open: end it first.")
            self.phase = "prompt_ended"
            return Accepted("prompt_end")
        if isinstance(event, ContentStart):
            return self._content_start(event)
        content = self.open.get(event.contentName)
        if content is None:
            raise OrderError(f"{name} for content {event.contentName!r}, which is not open.")
        if isinstance(event, ContentEnd):
            return self._content_end(content)
        expected = {"TEXT": TextInput, "AUDIO": AudioInput, "TOOL": ToolResult}[content.type]
        if not isinstance(event, expected):
            raise OrderError(f"{name} in a {content.type} content.")
        if isinstance(event, AudioInput):
            return Accepted("audio", pcm=base64.b64decode(event.content))
        assert isinstance(event, TextInput | ToolResult)  # the only other content events
        if content.type == "TEXT" and not content.interactive and content.role in ("USER", "ASSISTANT"):
            size = len(event.content.encode("utf-8"))
            if size > HISTORY_TEXT_INPUT_MAX:
                raise OrderError(f"A history textInput holds {size} bytes; at most 1KB: split it.")
            self.history_bytes += size
            if self.history_bytes > HISTORY_MAX:
                raise OrderError(f"The chat history exceeds 40KB ({self.history_bytes} bytes): trim it.")
        content.parts.append(event.content)
        return Accepted("text_part", text=event.content, role=content.role)

    def _content_start(self, event: ContentStart) -> Accepted:
        if event.contentName in self.used_names:
            raise OrderError(f"contentName {event.contentName!r} was already used in this prompt.")
        if self.phase == "system":
            if event.role != "SYSTEM":
                raise OrderError("The first content must be the SYSTEM text content.")
        elif event.role == "SYSTEM":
            raise OrderError("A SYSTEM content may only come first.")
        history = event.type == "TEXT" and not event.interactive and event.role in ("USER", "ASSISTANT")
        if history:
            if self.phase == "live":
                raise OrderError("History contents must come before any interactive content.")
            if self.history_count == 0 and event.role != "USER":
                raise OrderError("The first history message must have role USER.")
        if event.type == "AUDIO" and any(c.type == "AUDIO" for c in self.open.values()):
            raise OrderError("Another AUDIO content is open: only one at a time.")
        if event.type != "AUDIO" and any(c.type != "AUDIO" for c in self.open.values()):
            raise OrderError("Another TEXT or TOOL content is open: end it first.")
        tool_use_id = None
        if event.type == "TOOL":
            assert event.toolResultInputConfiguration is not None  # the schema requires it
            tool_use_id = event.toolResultInputConfiguration.toolUseId
            if tool_use_id not in self.pending_tools:
                raise OrderError(f"toolUseId {tool_use_id!r} does not match a tool use awaiting its result.")
        self.used_names.add(event.contentName)
        self.open[event.contentName] = _Content(
            event.contentName, event.type, event.role, event.interactive, tool_use_id
        )
        if history:
            self.history_count += 1
            self.phase = "history"
        elif event.role != "SYSTEM":
            self.phase = "live"
        return Accepted("audio_start" if event.type == "AUDIO" else "content_start", role=event.role, event=event)

    def _content_end(self, content: _Content) -> Accepted:
        if content.type != "AUDIO" and not content.parts:
            raise OrderError(f"Content {content.name!r} ended without any input.")
        del self.open[content.name]
        text = "".join(content.parts)
        if content.type == "AUDIO":
            return Accepted("audio_end")
        if content.type == "TOOL":
            assert content.tool_use_id is not None
            name = self.pending_tools.pop(content.tool_use_id)
            return Accepted("tool_result", text=text, tool_use_id=content.tool_use_id, role=name)
        if content.role == "SYSTEM":
            self.phase = "history"
            return Accepted("system", text=text, role="SYSTEM")
        if not content.interactive:
            return Accepted("history", text=text, role=content.role)
        return Accepted("text", text=text, role=content.role)

    def end_marker(self) -> None:
        """The signed message with an empty payload."""
        if self.phase != "session_ended":
            raise OrderError("The signed empty frame may only follow sessionEnd.")
        self.phase = "closed"

    def end_stream(self) -> None:
        """HTTP/2 END_STREAM from the client."""
        if self.phase != "closed":
            raise OrderError("The request stream ended before sessionEnd and the signed empty frame.")
