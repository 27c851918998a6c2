"""Per-response timing: how long the user waited, how long the answer took, what was heard.

A measurement, never a decision: the agent's shell feeds it the events it
emits anyway and the playback reports outputs send, and it stamps each
response's completion with a :class:`~ports.events.ResponseTiming` before the
outputs get it. It reads the clock (``time.monotonic``), which is why it
lives beside the shell and not in the state machine, and it holds no task.

On the hottest path (an audio chunk) it does one set lookup, and only until
the response's first chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import attrs

from ports.events import (
    BidiAudioStreamEvent,
    BidiEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStoppedEvent,
    BidiTextInputEvent,
    ResponseTiming,
)
from ports.io import PlaybackReport

__all__ = ["TurnTimer"]

_PLAYED_MEMORY = 16
"""Responses whose playback is remembered (audio plays on after a response completes)."""


@attrs.define
class _Open:
    started: float
    first_audio: float | None = None
    user_end: tuple[float, Literal["speech", "text"]] | None = None
    interrupted: bool = False
    played_at_interruption: float | None = None


class TurnTimer:
    """Times each response from its start to its completion."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._open: dict[str, _Open] = {}
        self.awaiting_audio: set[str] = set()
        self._user_end: tuple[float, Literal["speech", "text"]] | None = None
        self._played: dict[str, float] = {}
        self._reports_playback = False

    def user_said(self, event: BidiEvent) -> None:
        """The user's text was sent, or the provider heard the user stop speaking."""
        if type(event) is BidiTextInputEvent:
            self._user_end = (self._clock(), "text")
        elif type(event) is BidiSpeechStoppedEvent:
            self._user_end = (self._clock(), "speech")

    def emitted(self, event: BidiEvent) -> None:
        """An output event on its way to the outputs."""
        if type(event) is BidiAudioStreamEvent:  # the hot path: one check, then one set lookup
            if self.awaiting_audio and event.response_id in self.awaiting_audio:
                self._first_audio(event.response_id)
        elif isinstance(event, BidiResponseStartEvent):
            self._open[event.response_id] = _Open(self._clock())
            self.awaiting_audio.add(event.response_id)
        elif isinstance(event, BidiInterruptionEvent) and event.response_id is not None:
            opened = self._open.get(event.response_id)
            if opened is not None:
                opened.interrupted = True
                opened.played_at_interruption = self._played.get(event.response_id)

    def _first_audio(self, rid: str) -> None:
        self.awaiting_audio.discard(rid)
        opened = self._open[rid]
        opened.first_audio = self._clock()
        # The user's turn ends with the first response that speaks (not a silent tool call before it).
        opened.user_end, self._user_end = self._user_end, None

    def played(self, report: PlaybackReport) -> None:
        self._reports_playback = True
        rid = report.response_id
        self._played[rid] = max(self._played.pop(rid, 0.0), report.played_ms)
        while len(self._played) > _PLAYED_MEMORY:
            del self._played[next(iter(self._played))]

    def complete(self, event: BidiResponseCompleteEvent) -> BidiResponseCompleteEvent:
        """``event`` with its timing (unchanged if its start was never seen)."""
        opened = self._open.pop(event.response_id, None)
        if opened is None:
            return event
        self.awaiting_audio.discard(event.response_id)
        now = self._clock()
        first = opened.first_audio
        user_end = opened.user_end
        interrupted = opened.interrupted or event.stop_reason == "interrupted"
        played: float | None = None
        if self._reports_playback:
            played = opened.played_at_interruption if opened.interrupted else None
            if played is None:
                played = self._played.get(event.response_id, 0.0)
        timing = ResponseTiming(
            duration_s=now - opened.started,
            first_audio_s=None if first is None else first - opened.started,
            since_user_s=None if first is None or user_end is None else first - user_end[0],
            user_turn=None if first is None or user_end is None else user_end[1],
            played_ms=played,
            interrupted=interrupted,
        )
        return attrs.evolve(event, timing=timing)
