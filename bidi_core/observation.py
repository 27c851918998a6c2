"""What watches a conversation from the shell: the turn timer and the observers.

The agent hands this everything worth watching (the events it emits, the
user's input the core took, the provider's signals, playback reports); it
stamps each response's completion with its timing and tells the observers
(:class:`~ports.observer.ConversationObserver`). It decides nothing and never
changes what the conversation does: an observer that raises is logged and
dropped. With no observer, an event costs the timer's one type check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from bidi_core.timing import TurnTimer
from ports.errors import BidiUsageError
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionExpiringEvent,
    BidiEvent,
    BidiInputEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResumptionUpdateEvent,
    BidiSpeechStartedEvent,
    BidiSpeechStoppedEvent,
    BidiToolCancelEvent,
)
from ports.io import PlaybackReport
from ports.observer import ConversationInfo, ConversationObserver

__all__ = ["SIGNALS", "Observation"]

logger = logging.getLogger("bidi_core.agent")

SIGNALS = frozenset(
    {
        BidiSpeechStartedEvent,
        BidiSpeechStoppedEvent,
        BidiToolCancelEvent,
        BidiConnectionExpiringEvent,
        BidiResumptionUpdateEvent,
    }
)
"""Model events the core reads but never emits: observers see them as they arrive."""

_METHODS = ("on_start", "on_event", "on_playback", "on_end")

_Bound: TypeAlias = tuple[ConversationObserver, Callable[[BidiEvent], None]]


class Observation:
    """The turn timer and the observers of one agent."""

    def __init__(self, observers: Iterable[ConversationObserver]) -> None:
        self.turns = TurnTimer()
        self.awaiting_audio = self.turns.awaiting_audio
        """Responses whose first audio the timer waits for (the same set): while it is
        empty and no observer listens, an audio chunk needs no look here at all."""
        self.observers: tuple[ConversationObserver, ...] = tuple(observers)
        for observer in self.observers:
            if not all(callable(getattr(observer, m, None)) for m in _METHODS):
                raise BidiUsageError(f"an observer needs {', '.join(_METHODS)}; got {type(observer).__name__}")
        self._bind()

    def _bind(self) -> None:
        self._on_event: list[_Bound] = [(o, o.on_event) for o in self.observers]
        self._on_audio: list[_Bound] = [(o, f) for o, f in self._on_event if getattr(o, "observes_audio", True)]
        self.audio_observers = bool(self._on_audio)
        """Some observer wants audio chunks (one that sets ``observes_audio = False`` is spared them)."""

    def start(self, info: ConversationInfo) -> None:
        if self.observers:
            self._tell("on_start", info)

    def emitted(self, event: BidiOutputEvent) -> BidiOutputEvent:
        """``event`` as the outputs get it (a completion with its timing)."""
        if type(event) is BidiResponseCompleteEvent:
            event = self.turns.complete(event)
        else:
            self.turns.emitted(event)
        if type(event) is BidiAudioStreamEvent:
            if self.audio_observers:
                self._tell_event(event, self._on_audio)
        elif self.observers:
            self._tell_event(event, self._on_event)
        return event

    def took(self, event: BidiInputEvent | BidiEvent) -> None:
        """The core took the user's input, or a provider's signal."""
        self.turns.user_said(event)
        if self.observers:
            self._tell_event(event, self._on_event)

    def played(self, report: PlaybackReport) -> None:
        self.turns.played(report)
        if self.observers:
            self._tell("on_playback", report)

    def end(self) -> None:
        if self.observers:
            self._tell("on_end")

    def _tell_event(
        self, event: BidiEvent, bound: list[tuple[ConversationObserver, Callable[[BidiEvent], None]]]
    ) -> None:
        """``on_event`` of each observer (bound once: this runs for every audio chunk)."""
        for observer, on_event in bound:
            try:
                on_event(event)
            except Exception:
                self._drop(observer, "on_event")

    def _tell(self, method: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception:
                self._drop(observer, method)

    def _drop(self, observer: ConversationObserver, method: str) -> None:
        logger.exception("observer %s failed in %s; it is dropped", type(observer).__name__, method)
        self.observers = tuple(o for o in self.observers if o is not observer)
        self._bind()
