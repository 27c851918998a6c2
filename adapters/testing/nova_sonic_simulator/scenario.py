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
they are about the service rather than the model; a reply can only ``drop``
the connection, as the other simulators' can.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import attrs

from adapters.testing._simulator_kit import scenario as kit
from adapters.testing._simulator_kit.scenario import Rule, ToolCall, ToolResult, TurnInput
from adapters.testing.nova_sonic_simulator.errors import ServiceException

__all__ = [
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
    """

    drop: bool = False


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
    "rst",
    "goaway",
]

_EXCEPTIONS = {
    "throttling": ServiceException.throttling,
    "model_timeout": ServiceException.model_timeout,
    "internal": ServiceException.internal,
    "unavailable": ServiceException.unavailable,
    "model_stream_error": ServiceException.model_stream_error,
}


@attrs.frozen
class Fault:
    """Something going wrong at the service: ``Fault("throttling", times=2)``, ``Fault("rst", after_events=5)``.

    * ``kind``: an exception (``throttling``, ``validation``, ``model_timeout``, ``internal``,
      ``unavailable``, ``model_stream_error``), ``rst`` (RST_STREAM with ``error_code``) or
      ``goaway`` (GOAWAY with ``error_code``, then the TCP connection closes).
    * ``after_events``: fire after the stream's n-th input event (1-based). None: an exception
      refuses the request itself (an HTTP error response: ``throttling`` is HTTP 429), and
      ``rst``/``goaway`` fire as soon as the request arrives.
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
