"""The I/O port: inputs that produce user events and outputs that consume
conversation events.

The protocols are the reference's (``start(agent)``, ``__call__``, ``stop()``),
so custom I/O written for it ports over. Plain async callables are accepted
too: an input is anything awaitable that returns an input event (or its dict
form, or a string), an output anything awaitable that takes an event, e.g.
``websocket.receive_json`` / ``websocket.send_json``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

from ports.events import BidiInputEvent, BidiOutputEvent
from ports.model import ModelCapabilities

__all__ = ["AgentView", "BidiInlineOutput", "BidiInput", "BidiOutput", "PlaybackReport"]


@attrs.frozen
class PlaybackReport:
    """How much of a response's audio an output has actually played.

    ``played_ms`` counts from the start of the response's audio. ``finished``
    is True once every sample received for the response has been played
    (or discarded by an interruption). The core uses the figure to tell the
    model what the user heard.
    """

    response_id: str
    played_ms: float
    finished: bool = False


@runtime_checkable
class AgentView(Protocol):
    """What an input or output may use of the agent that runs it."""

    @property
    def capabilities(self) -> ModelCapabilities:
        """The model's audio formats and abilities."""
        ...

    def report_playback(self, report: PlaybackReport) -> None:
        """Tell the conversation how far a response's audio has played.

        Never blocks; call it from the event loop (not from an audio thread).
        """
        ...

    def request_stop(self, reason: str = "client_disconnect") -> None:
        """Ask the conversation to end (a browser that left, a caller who hung
        up, a time limit). Never blocks; ``reason`` reaches the close event."""
        ...


@runtime_checkable
class BidiInput(Protocol):
    """A source of user input: a microphone, a keyboard, a socket."""

    async def start(self, agent: AgentView) -> None:
        """Open the source. Called once before the first ``__call__``."""
        ...

    async def __call__(self) -> BidiInputEvent | dict[str, Any] | str:
        """Wait for and return the next input.

        Raising ends the conversation with that error; a clean end of input
        is :class:`EOFError` or ``StopAsyncIteration``, which stops this input
        only.
        """
        ...

    async def stop(self) -> None:
        """Close the source. Called once, also after a failure or cancellation."""
        ...


@runtime_checkable
class BidiOutput(Protocol):
    """A sink of conversation events: speakers, a terminal, a socket.

    An output that tells the agent how much audio it played
    (:meth:`AgentView.report_playback`) says so with a class attribute
    ``reports_playback = True``, as ``BidiAudioIO``'s output does: the
    conversation then counts the audio it receives, to know what is still
    audible and what to truncate to. Without one, it does not count.
    """

    reports_playback: bool
    """Whether this output calls :meth:`AgentView.report_playback` (read once,
    when ``run()`` starts; an output written for the reference, without the
    attribute, does not)."""

    async def start(self, agent: AgentView) -> None:
        """Open the sink. Called once before the first ``__call__``."""
        ...

    async def __call__(self, event: BidiOutputEvent) -> None:
        """Handle one event. Raising ends the conversation with that error."""
        ...

    async def stop(self) -> None:
        """Close the sink. Called once, also after a failure or cancellation."""
        ...


@runtime_checkable
class BidiInlineOutput(BidiOutput, Protocol):
    """An output that can take most events without waiting, on the spot.

    At real time every event that waits in an output's queue costs a task
    switch: the event loop wakes the output's task for each one. An output
    whose usual work is quick and never waits (it hands audio to a device
    buffer, prints a line) adds :meth:`offer`, and the agent calls it at once,
    in the task that produced the event, while nothing is queued for this
    output. When it answers False the event, and every one after it until the
    queue is empty again, goes the usual way: queued, then ``__call__`` from
    the output's own task. Order is kept either way, a slow output still never
    stalls another, and an interruption still empties the queue.
    """

    def offer(self, event: BidiOutputEvent) -> bool:
        """Handle ``event`` now and return True, or return False at once to have
        it passed to ``__call__`` instead (when handling it would wait: the
        buffer is full, the end of the conversation must be played out).

        Never blocks and never awaits: it runs inside the agent's step. Raising
        ends the conversation with that error, as ``__call__`` raising does.
        """
        ...
