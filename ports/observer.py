"""The observer port: what a conversation lets telemetry see, and nothing more.

The agent's shell notifies each observer it was given of the conversation's
events as the core takes them in and sends them out; an observer watches and
measures, it never decides (its return value is ignored, and it cannot
change an event). OpenTelemetry (``adapters.otel``) is one such observer; a
log, a metrics registry or a test recorder are others.

An observer that sets ``observes_audio = False`` is not called for audio
chunks (the OpenTelemetry observer does: the completion's timing says what
it needs), so on the hottest path it costs nothing at all.

An observer is called on the agent's event loop, synchronously, from inside
the step that produced the event: it must be quick and must not block (no
I/O; hand work to a queue if it needs any). An exception it raises is logged
and the observer is dropped; the conversation goes on. With no observer the
agent pays one ``if`` per event.

What an observer sees, by :meth:`ConversationObserver.on_event`:

- what the user said (input events, audio blocks included: an observer must
  never keep or export their content);
- the provider's signals the core reads (``BidiSpeechStartedEvent``,
  ``BidiSpeechStoppedEvent``, ...);
- every output event the core emits, in order, as outputs get it: connection
  start/restart/close, responses (the completion with its
  :class:`~ports.events.ResponseTiming`), audio, transcripts, interruptions,
  tool use and results, usage, errors.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs

from ports.events import BidiEvent
from ports.io import PlaybackReport

__all__ = ["ConversationInfo", "ConversationObserver"]


@attrs.frozen
class ConversationInfo:
    """What an observer is told when a conversation starts.

    ``provider``: the service's name in OpenTelemetry's GenAI vocabulary
    (``"openai"``, ``"gcp.gemini"``, ``"gcp.vertex_ai"``, ``"aws.bedrock"``;
    a model that does not say gives its class name). ``model``: the model id.
    ``tools``: the names of the tools the model may call.
    """

    provider: str
    model: str
    tools: tuple[str, ...] = ()


@runtime_checkable
class ConversationObserver(Protocol):
    """Watches one conversation at a time (give each agent its own, or one that
    keeps its state per conversation)."""

    def on_start(self, info: ConversationInfo) -> None:
        """The agent started; events follow."""

    def on_event(self, event: BidiEvent) -> None:
        """An event the core took in or sent out (see the module's docstring)."""

    def on_playback(self, report: PlaybackReport) -> None:
        """An output reported how much of a response it played."""

    def on_end(self) -> None:
        """The agent stopped: nothing more will come (also after a cancellation)."""
