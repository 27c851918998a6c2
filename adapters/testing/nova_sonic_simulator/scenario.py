"""What the simulated model says, and the faults it injects: data, not code.

The rules, the tool calls and the way a rule is chosen are every simulator's
(:mod:`adapters.testing._simulator_kit.scenario`). A user turn ends with a
typed text content, a spoken turn found by turn detection, or the tool results
of a tool use. ``transcripts[n]``, what the user "said" in the n-th spoken turn,
is also the USER transcript the service sends back (its ASR). A reply's
``say`` goes out as SPECULATIVE text, then AUDIO, then FINAL text, and its
``tool_calls`` as TOOL contents (Nova's tool uses: ``ToolUse`` is the same class).

    Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolUse("get_weather", {"city": "Paris"})])),
            Rule(tool_result_for="get_weather", reply=Reply(say="It is sunny in Paris.")),
            Rule(spoken_turn=1, reply=Reply(say="A long story.", audio_ms=20_000)),
        ],
        transcripts=["what's the weather", "tell me a story"],
    )

Faults (:class:`Fault`) are given to the simulator, not the scenario, because
they are about the service rather than the model; a reply can ``drop`` the
connection, as the other simulators' can, and play a :class:`Fault` at a point of
the turn (``Reply(fault=..., after_chunks=...)``), so a test can put a service
fault in the middle of an answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import attrs

from adapters.testing._simulator_kit import scenario as kit
from adapters.testing._simulator_kit.scenario import Rule, ToolCall, ToolResult, TurnInput
from adapters.testing.nova_sonic_simulator.errors import ServiceException

__all__ = [
    "TRANSPORT_KINDS",
    "Fault",
    "FaultKind",
    "Reply",
    "Rule",
    "Scenario",
    "ScenarioState",
    "ToolCall",
    "ToolResult",
    "ToolUse",
    "TurnInput",
]

ToolUse = ToolCall
"""Nova's name for a tool call: a TOOL content with ``toolUse`` then ``contentEnd`` stopReason ``TOOL_USE``."""


@attrs.frozen(kw_only=True)
class Reply(kit.Reply):
    """What the model does at the end of a user turn: the kit's ``say``, ``audio_ms`` (default: 60 ms a
    character) and ``tool_calls``; the turn goes on when the client has sent every tool result.

    * ``drop``: close the TCP connection without GOAWAY instead of replying (a network fault; the
      service's own faults are :class:`Fault` objects given to the simulator).
    * ``fault``: play this :class:`Fault` (its kind, error code and message; its triggers are
      ignored) instead of replying, or, with ``after_chunks``, after that many ``audioOutput``
      events of the reply (in the middle of the answer).
    * ``raw``: bytes written into the response body as they are, before the reply: malformed
      event-stream messages, or good messages carrying malformed events.
    """

    drop: bool = False
    fault: Fault | None = None
    after_chunks: int | None = None
    raw: Sequence[bytes] = ()


@attrs.frozen(kw_only=True)
class Scenario(kit.Scenario[Reply]):
    """The simulated model: the kit's rules and transcripts, with Nova's replies as defaults."""

    default: Reply = Reply(say="You said: {text}")
    default_after_tool: Reply = Reply(say="The result is {result}.")


FaultKind = Literal[
    "throttling",
    "validation",
    "model_timeout",
    "internal",
    "unavailable",
    "model_stream_error",
    "access_denied",
    "rst",
    "goaway",
    "reset",
    "drop",
    "end_stream",
    "silence",
    "deaf",
]

TRANSPORT_KINDS = frozenset({"rst", "goaway", "reset", "drop", "end_stream", "silence", "deaf"})
"""Fault kinds that are no modeled exception."""

_EXCEPTIONS = {
    "throttling": ServiceException.throttling,
    "model_timeout": ServiceException.model_timeout,
    "internal": ServiceException.internal,
    "unavailable": ServiceException.unavailable,
    "model_stream_error": ServiceException.model_stream_error,
    "access_denied": ServiceException.access_denied,
}


@attrs.frozen
class Fault:
    """Something going wrong at the service: ``Fault("throttling", times=2)``, ``Fault("rst", after_events=5)``.

    * ``kind``: an exception (``throttling``, ``validation``, ``model_timeout``, ``internal``,
      ``unavailable``, ``model_stream_error``, ``access_denied``), ``rst`` (RST_STREAM with ``error_code``),
      ``goaway`` (GOAWAY with ``error_code``, then the TCP connection closes), ``reset`` (the
      TCP connection reset: RST, no GOAWAY), ``drop`` (the TCP connection closed, no GOAWAY, no
      TLS ``close_notify``), ``end_stream`` (the response ends with END_STREAM and no exception:
      the service ending the session), ``silence`` (the service writes and answers nothing any
      more, PING acks and WINDOW_UPDATEs included, and keeps the connection open) or ``deaf``
      (it also stops reading the socket).
    * ``after_events``: fire after the stream's n-th input event (1-based). None: an exception
      refuses the request itself (an HTTP error response: ``throttling`` is HTTP 429, with
      ``retry_after`` as its ``Retry-After``), ``silence``/``deaf`` never answer it (not even
      its headers), and the other kinds fire as soon as the request arrives.
    * ``times``: how many streams (requests) it hits; ``stream``: only the stream (request) with
      this index (0-based, counting every request, refused ones included).
    * ``message``: replaces the canned text of an exception.
    """

    kind: FaultKind = attrs.field(validator=attrs.validators.in_(get_args(FaultKind)))
    after_events: int | None = attrs.field(default=None, kw_only=True)
    times: int = attrs.field(default=1, kw_only=True)
    stream: int | None = attrs.field(default=None, kw_only=True)
    message: str | None = attrs.field(default=None, kw_only=True)
    error_code: int = attrs.field(default=2, kw_only=True)
    """HTTP/2 error code for ``rst``/``goaway``: 2 is INTERNAL_ERROR, 0 NO_ERROR."""
    retry_after: str | None = attrs.field(default=None, kw_only=True)
    """The ``Retry-After`` header of an HTTP refusal (delay-seconds or an HTTP-date)."""

    @property
    def is_exception(self) -> bool:
        """A modeled exception (an HTTP error before the stream, an exception message in it)."""
        return self.kind not in TRANSPORT_KINDS

    def exception(self) -> ServiceException:
        """The modeled exception of an exception kind."""
        if self.kind == "validation":
            return ServiceException.validation(self.message or "Injected validation failure.")
        base = _EXCEPTIONS[self.kind]()
        return base if self.message is None else attrs.evolve(base, message=self.message)


class ScenarioState(kit.ScenarioState[Reply]):
    """The mutable side of a scenario and the faults, shared by every stream of one simulator."""

    def __init__(self, scenario: Scenario, faults: Sequence[Fault]) -> None:
        super().__init__(scenario)
        self.faults = list(faults)
        self.fault_hits: dict[int, int] = {}

    def faults_for(self, request_index: int) -> list[Fault]:
        """The faults that will hit the request with this index (each counted once, now)."""
        chosen: list[Fault] = []
        for index, fault in enumerate(self.faults):
            if fault.stream is not None and fault.stream != request_index:
                continue
            if self.fault_hits.get(index, 0) >= fault.times:
                continue
            self.fault_hits[index] = self.fault_hits.get(index, 0) + 1
            chosen.append(fault)
        return chosen
