"""Response ids and start/complete events for providers that have none (Gemini, Nova Sonic).

The core follows responses by id: audio, transcripts and interruptions name
the response they belong to, and a response starts and completes exactly once.
OpenAI says all of this itself; Gemini and Nova Sonic send outputs and turn
signals only. Their sessions report a response as starting with its first
output and completing at the provider's end-of-turn signal (a tool call, an
interruption), and take the ids from one :class:`ResponseTracker` per
connection: ``<connection id>-r1``, ``-r2``, ... (response ids belong to a
connection; the core forgets them when a connection ends).

What opens or ends a turn is each provider's own and stays in its session;
this only numbers responses and builds the two events.
"""

from __future__ import annotations

from ports.events import BidiResponseCompleteEvent, BidiResponseStartEvent, StopReason

__all__ = ["ResponseTracker"]


class ResponseTracker:
    """The response open on one connection, if any, and the ids handed out so far."""

    __slots__ = ("_connection_id", "_count", "current", "last")

    def __init__(self, connection_id: str) -> None:
        self._connection_id = connection_id
        self._count = 0
        self.current: str | None = None
        """The open response's id, or None between responses."""
        self.last: str | None = None
        """The open response's id, else the one that completed last (text that trails a turn belongs to it)."""

    def start(self) -> BidiResponseStartEvent:
        """Open a new response; there must be none open (check :attr:`current`)."""
        if self.current is not None:
            raise RuntimeError(f"response {self.current} is still open")
        self._count += 1
        self.current = self.last = f"{self._connection_id}-r{self._count}"
        return BidiResponseStartEvent(self.current)

    def complete(self, stop_reason: StopReason) -> BidiResponseCompleteEvent | None:
        """Complete the open response with ``stop_reason``; None if there is none."""
        rid, self.current = self.current, None
        if rid is None:
            return None
        return BidiResponseCompleteEvent(rid, stop_reason)
