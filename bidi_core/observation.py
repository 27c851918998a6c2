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
from collections.abc import Iterable
from typing import Any

from bidi_core.timing import TurnTimer
from ports.errors import BidiUsageError
from ports.events import (
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


class Observation:
    """The turn timer and the observers of one agent."""

    def __init__(self, observers: Iterable[ConversationObserver]) -> None:
        self.turns = TurnTimer()
        self.observers: tuple[ConversationObserver, ...] = tuple(observers)
        for observer in self.observers:
            if not all(callable(getattr(observer, m, None)) for m in _METHODS):
                raise BidiUsageError(f"an observer needs {', '.join(_METHODS)}; got {type(observer).__name__}")

    def start(self, info: ConversationInfo) -> None:
        if self.observers:
            self._tell("on_start", info)

    def emitted(self, event: BidiOutputEvent) -> BidiOutputEvent:
        """``event`` as the outputs get it (a completion with its timing)."""
        if type(event) is BidiResponseCompleteEvent:
            event = self.turns.complete(event)
        else:
            self.turns.emitted(event)
        if self.observers:
            self._tell("on_event", event)
        return event

    def took(self, event: BidiInputEvent | BidiEvent) -> None:
        """The core took the user's input, or a provider's signal."""
        self.turns.user_said(event)
        if self.observers:
            self._tell("on_event", event)

    def played(self, report: PlaybackReport) -> None:
        self.turns.played(report)
        if self.observers:
            self._tell("on_playback", report)

    def end(self) -> None:
        if self.observers:
            self._tell("on_end")

    def _tell(self, method: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception:
                logger.exception("observer %s failed in %s; it is dropped", type(observer).__name__, method)
                self.observers = tuple(o for o in self.observers if o is not observer)
