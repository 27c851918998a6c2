"""What the simulated model says, and the faults it injects: data, not code.

A :class:`Scenario` is an ordered list of :class:`Rule`. At the end of a user
turn (a typed text content, a spoken turn found by turn detection, or the tool
results of a tool use) the first rule that matches picks the :class:`Reply`.
Spoken turns have no words the simulator can recognise, so ``transcripts[n]``
is what the user "said" in the n-th spoken turn (0-based, across streams); it
is also the USER transcript the service sends back (its ASR).

    Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_uses=[ToolUse("get_weather", {"city": "Paris"})])),
            Rule(tool_result_for="get_weather", reply=Reply(say="It is sunny in Paris.")),
            Rule(spoken_turn=1, reply=Reply(say="A long story.", audio_ms=20_000)),
        ],
        transcripts=["what's the weather", "tell me a story"],
    )

Faults (:class:`Fault`) are given to the simulator, not the scenario, because
they are about the service rather than the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import attrs

from adapters.testing._simulator_kit.rules import first_to_fire, spoken_transcript, words_match
from adapters.testing.nova_sonic_simulator.errors import ServiceException

__all__ = ["Fault", "FaultKind", "Reply", "Rule", "Scenario", "ToolResultInput", "ToolUse", "TurnInput"]


@attrs.frozen
class ToolUse:
    """A tool the model calls: a TOOL content with ``toolUse`` then ``contentEnd`` stopReason ``TOOL_USE``.

    ``tool_use_id`` defaults to a fresh id. The tool must be declared in the
    ``promptStart`` tool configuration: a real model cannot call a tool it was
    not given, so an undeclared one is spoken about instead of called.
    """

    name: str
    input: Mapping[str, Any] = attrs.field(factory=dict)
    tool_use_id: str | None = None


@attrs.frozen(kw_only=True)
class Reply:
    """What the model does at the end of a user turn.

    * ``say``: the assistant's words: SPECULATIVE text, then AUDIO, then FINAL text.
      ``{text}`` is replaced by the user's words, ``{result}`` by the tool results.
    * ``audio_ms``: length of the spoken audio instead of the text-proportional default (60 ms a character).
    * ``tool_uses``: tools called after the spoken part; the turn goes on when the client has sent every result.
    """

    say: str | None = None
    audio_ms: int | None = None
    tool_uses: Sequence[ToolUse] = ()


@attrs.frozen
class ToolResultInput:
    """A tool result the client sent, with the name of the tool it answers."""

    tool_use_id: str
    name: str
    content: str


@attrs.frozen
class TurnInput:
    """What a rule matches on: the user's words, which spoken turn it was, the tool results it carries."""

    text: str = ""
    spoken_turn: int | None = None
    tool_results: Sequence[ToolResultInput] = ()


@attrs.frozen(kw_only=True)
class Rule:
    """``reply`` when every given condition holds (no condition: always).

    * ``text_contains`` / ``text_equals``: the user's words, case-insensitive (typed, or a spoken turn's transcript).
    * ``spoken_turn``: the n-th spoken turn (0-based, across streams).
    * ``tool_result_for``: a tool result for this tool name or tool use id.
    * ``times``: fire at most this many times (None: always).
    """

    reply: Reply
    text_contains: str | None = None
    text_equals: str | None = None
    spoken_turn: int | None = None
    tool_result_for: str | None = None
    times: int | None = None

    def matches(self, turn: TurnInput) -> bool:
        if not words_match(self, turn):
            return False
        return self.tool_result_for is None or any(
            self.tool_result_for in (result.name, result.tool_use_id) for result in turn.tool_results
        )


@attrs.frozen(kw_only=True)
class Scenario:
    """The simulated model: rules, default replies and the words of spoken turns."""

    rules: Sequence[Rule] = ()
    default: Reply = Reply(say="You said: {text}")
    default_after_tool: Reply = Reply(say="The result is {result}.")
    transcripts: Sequence[str] = ()

    def transcript(self, spoken_turn: int) -> str:
        """What the user said in spoken turn ``spoken_turn``; a placeholder past the list."""
        return spoken_transcript(self.transcripts, spoken_turn)


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


class ScenarioState:
    """The mutable side of a scenario and the faults, shared by every stream of one simulator."""

    def __init__(self, scenario: Scenario, faults: Sequence[Fault]) -> None:
        self.scenario = scenario
        self.faults = list(faults)
        self.fired: dict[int, int] = {}
        self.fault_hits: dict[int, int] = {}
        self.spoken_turns = 0

    def next_spoken_turn(self) -> int:
        turn = self.spoken_turns
        self.spoken_turns += 1
        return turn

    def choose(self, turn: TurnInput) -> Reply:
        """The first matching rule that still may fire; else a default."""
        rule = first_to_fire(self.scenario.rules, self.fired, lambda rule: rule.matches(turn))
        if rule is not None:
            return rule.reply
        if turn.tool_results and not turn.text:
            return self.scenario.default_after_tool
        return self.scenario.default

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
