"""What :class:`~adapters.testing.agent_machine.AgentMachine` knows of one conversation, and its checks.

A :class:`Conversation` is one run of the user's agent in an example: the
scripted model, the user, the speaker, the watched outputs and everything
they saw. The functions below are the library's guarantees, checked between
steps (``unsettled`` says what the harness still waits for).
"""

from __future__ import annotations

import threading
from typing import Any

import anyio

from adapters.testing.harness import ScriptedUser, Speaker, WatchedOutput
from adapters.testing.scripted import ScriptedModel, ScriptedSession
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiOutputEvent,
    BidiTextInputEvent,
    BidiToolResultEvent,
)
from ports.model import ModelCapabilities

__all__ = [
    "Conversation",
    "Observer",
    "SlowOutput",
    "check_delivery",
    "check_outputs",
    "check_tools",
    "key",
    "unsettled",
]


class Conversation:
    """One conversation of an example: the model, the agent, the people, what was seen."""

    def __init__(self, caps: ModelCapabilities, number: int) -> None:
        self.number = number
        self.model = ScriptedModel(capabilities=caps, match=(), open_ended=True, model_id="harness")
        self.user = ScriptedUser()
        self.speaker = Speaker(caps.output_audio.sample_rate, caps.output_audio.channels)
        self.outputs: list[WatchedOutput] = []
        self.user_outputs: list[WatchedOutput] = []
        self.events: list[BidiOutputEvent] = []
        self.agent: Any = None
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.error: BaseException | None = None
        self.expected_error: type[BaseException] | None = None
        self.ending: str | None = None  # why the harness ended it
        self.cancelled = False
        self.tasks_before: dict[int, str] = {}
        self.threads_before: list[threading.Thread] = []
        self.responses = 0
        self.open_response: str | None = None
        self.calls: dict[str, tuple[str, ScriptedSession | None]] = {}  # id -> (tool, connection)
        self.withdrawn: dict[str, int] = {}  # id -> len(model.sent) when withdrawn
        self.audio_blocks = 0
        self.network_up = True
        self.expiring: ScriptedSession | None = None  # the connection that said it expires
        self.failures = 0  # connections lost in a row before they said anything
        self.slow_budget_ms = 0.0
        self.free_running = False
        self.budget_changed = anyio.Event()
        self.seen = anyio.Event()


class Observer:
    """The harness's own output: every event, as fast as they come."""

    def __init__(self, conv: Conversation) -> None:
        self._conv = conv

    async def __call__(self, event: BidiOutputEvent) -> None:
        self._conv.events.append(event)
        seen, self._conv.seen = self._conv.seen, anyio.Event()
        seen.set()


class SlowOutput:
    """An output that takes as long as real time to play audio: it waits for ``time_passes``."""

    def __init__(self, conv: Conversation) -> None:
        self._conv = conv

    async def __call__(self, event: BidiOutputEvent) -> None:
        if not isinstance(event, BidiAudioStreamEvent):
            return
        conv = self._conv
        while not conv.free_running and conv.slow_budget_ms < event.duration_ms:
            conv.budget_changed = anyio.Event()
            await conv.budget_changed.wait()
        conv.slow_budget_ms = max(0.0, conv.slow_budget_ms - event.duration_ms)


def unsettled(conv: Conversation) -> str | None:
    """What the harness still waits for after a step, or None once the conversation has settled."""
    if conv.done.is_set():
        return None
    session = conv.model.session
    if conv.network_up and session is None:
        return "no connection is open (reconnecting)"
    if session is not None and not session.idle:
        return f"the agent has not read everything connection {session.connection_id} sent"
    if conv.user.unread:
        return f"the inputs have not read {conv.user.unread} thing(s) the user did"
    results = {e.tool_use_id for e in conv.events if isinstance(e, BidiToolResultEvent)}
    for call_id, (name, _) in conv.calls.items():
        if call_id not in results and call_id not in conv.withdrawn:
            return f"tool call {call_id} ({name}) has no result"
    return None


def key(item: object) -> tuple[str, Any]:
    """What the user did, as the delivery check compares it: a text, or the tag of an audio block."""
    if isinstance(item, str):
        return ("text", item)
    if isinstance(item, BidiTextInputEvent):
        return ("text", item.text)
    if isinstance(item, BidiAudioInputEvent) and len(item.audio) >= 2:
        return ("audio", int.from_bytes(item.audio[:2], "little", signed=True))
    return ("other", id(item))


def check_outputs(conv: Conversation) -> None:
    """No audio of a response after its interruption, at any output or at the speaker."""
    for output in conv.outputs:
        assert not output.violations, output.violations[0]
    assert not conv.speaker.violations, conv.speaker.violations[0]


def check_delivery(conv: Conversation) -> None:
    """What the user did reached the model once, in order, and all of it while the network is up."""
    typed = [key(item) for item in conv.user.typed]
    wanted = set(typed)
    sent = [k for item in conv.model.sent if (k := key(item)) in wanted]
    dropped_audio = getattr(conv.agent, "dropped_audio", 0)
    if dropped_audio:
        typed = [k for k in typed if k[0] == "text"]
        sent = [k for k in sent if k[0] == "text"]
    assert len(sent) == len(set(sent)) or len(typed) != len(set(typed)), f"input reached the model twice: {sent}"
    assert sent == typed[: len(sent)], f"input reached the model out of order or not at all: {sent} of {typed}"
    if conv.network_up:
        missing = typed[len(sent) :]
        assert not missing, f"input never reached the model: {missing} (it got {sent})"


def check_tools(conv: Conversation) -> None:
    """One result event per call; at most one result reaches the model, none after a withdrawal."""
    results: dict[str, int] = {}
    for event in conv.events:
        if isinstance(event, BidiToolResultEvent):
            results[event.tool_use_id] = results.get(event.tool_use_id, 0) + 1
    for call_id, count in results.items():
        assert count == 1, f"tool call {call_id} got {count} result events"
    sent: dict[str, list[int]] = {}
    for index, item in enumerate(conv.model.sent):
        if isinstance(item, BidiToolResultEvent):
            sent.setdefault(item.tool_use_id, []).append(index)
    for call_id, indexes in sent.items():
        assert len(indexes) == 1, f"the result of tool call {call_id} reached the model {len(indexes)} times"
        if call_id in conv.withdrawn:
            assert indexes[0] < conv.withdrawn[call_id], f"a result for withdrawn call {call_id} was sent"
