"""Small real I/O implementations the agent tests plug in (fakes, not mocks)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import anyio

from ports.events import (
    BidiAudioStreamEvent,
    BidiInputEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTranscriptStreamEvent,
)
from ports.io import AgentView, PlaybackReport


def transcript(text: str, role: str = "assistant", rid: str = "r1", *, final: bool = True) -> BidiTranscriptStreamEvent:
    return BidiTranscriptStreamEvent(delta=text, text=text, role=role, is_final=final, response_id=rid)  # type: ignore[arg-type]


def audio(rid: str, ms: int = 20, rate: int = 24000, fill: int = 1) -> BidiAudioStreamEvent:
    frames = rate * ms // 1000
    return BidiAudioStreamEvent(audio=fill.to_bytes(2, "little") * frames, sample_rate=rate, response_id=rid)


def response(rid: str, *events: Any, stop: str = "complete") -> list[Any]:
    return [BidiResponseStartEvent(rid), *events, BidiResponseCompleteEvent(rid, stop)]  # type: ignore[arg-type]


class RecordingOutput:
    """An output that keeps every event and can signal when one arrives."""

    def __init__(self, until: Callable[[BidiOutputEvent], bool] | None = None) -> None:
        self.events: list[BidiOutputEvent] = []
        self.started = False
        self.stopped = False
        self.agent: AgentView | None = None
        self._until = until
        self.seen = anyio.Event()

    async def start(self, agent: AgentView) -> None:
        self.started = True
        self.agent = agent

    async def __call__(self, event: BidiOutputEvent) -> None:
        self.events.append(event)
        if self._until is not None and self._until(event):
            self.seen.set()

    async def stop(self) -> None:
        self.stopped = True

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class PlayingOutput(RecordingOutput):
    """An output that "plays" audio instantly and reports it, like a speaker would."""

    reports_playback = True

    def __init__(self, play_ms: float | None = None) -> None:
        super().__init__()
        self.played: list[BidiAudioStreamEvent] = []
        self._play_ms = play_ms

    async def __call__(self, event: BidiOutputEvent) -> None:
        await super().__call__(event)
        if isinstance(event, BidiAudioStreamEvent) and event.response_id is not None:
            self.played.append(event)
            ms = sum(e.duration_ms for e in self.played if e.response_id == event.response_id)
            assert self.agent is not None
            self.agent.report_playback(PlaybackReport(event.response_id, ms))
        if isinstance(event, BidiInterruptionEvent):
            pass


class ScriptedInput:
    """An input that yields given items, then waits for ``release`` (or ends with EOF)."""

    def __init__(self, items: Iterable[BidiInputEvent | str | dict[str, Any]], *, eof: bool = False) -> None:
        self._items = list(items)
        self._eof = eof
        self.release = anyio.Event()
        self.stopped = False

    async def start(self, agent: AgentView) -> None:
        return None

    async def __call__(self) -> Any:
        if self._items:
            await anyio.lowlevel.checkpoint()
            return self._items.pop(0)
        if self._eof:
            raise EOFError
        await self.release.wait()
        raise EOFError

    async def stop(self) -> None:
        self.stopped = True


def our_tasks() -> set[str]:
    """Names of running tasks that belong to bidi-core."""
    names = set()
    for task in anyio.get_running_tasks():
        name = task.name or ""
        if name.startswith(("bidi_core", "tool ", "timer ", "output ", "input ")):
            names.add(name)
    return names


def thread_count() -> int:
    return threading.active_count()
