"""What the simulated model says: a scenario is data, not code.

A :class:`Scenario` is an ordered list of :class:`Rule`. When a response is due
(``response.create``, or the end of a spoken turn with ``create_response``), the
simulator looks at what the user gave since the previous response (typed text,
the transcript of a spoken turn, tool results) and plays the :class:`Reply` of
the first rule that matches, else the default. A spoken turn has no words we can
recognise, so the scenario supplies them: ``transcripts[n]`` is what the user
"said" in the n-th spoken turn (0-based, counted across connections).

Examples::

    Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])),
            Rule(tool_output_for="get_weather", reply=Reply(say="It is sunny in Paris.")),
            Rule(spoken_turn=1, reply=Reply(say="A long answer to interrupt.", audio_ms=3000)),
            Rule(text_equals="crash", reply=Reply(drop=True)),
            Rule(text_equals="boom", times=1, reply=Reply(error=ServiceError("Boom.", "server_error", "server_error"))),
        ],
        transcripts=["what's the weather", "tell me a story"],
        error_on=[ErrorOn("session.update", nth=2, error=ServiceError("No.", "invalid_value"))],
    )
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from adapters.testing._simulator_kit.rules import first_to_fire, spoken_transcript, words_match
from adapters.testing.openai_simulator.errors import ServiceError

__all__ = ["ErrorOn", "Reply", "Rule", "Scenario", "ToolCall", "ToolOutput", "TurnInput"]


@attrs.frozen
class ToolCall:
    """A function call the model makes: ``response.function_call_arguments.*`` then a ``function_call`` item.

    ``call_id`` defaults to a fresh ``call_…`` id. The tool must be declared in the
    session (or the ``response.create``): a real model cannot call a tool it was
    not given, so an undeclared one is spoken about instead of called.
    """

    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)
    call_id: str | None = None


@attrs.frozen(kw_only=True)
class Reply:
    """What one response does. Fields combine in this order: ``drop``, ``session_limit``, ``error``,
    then a response (``fail``, or ``say`` followed by ``tool_calls``).

    * ``say``: spoken text (audio + transcript; text only when the output modality is ``text``).
      ``{text}`` is replaced by the user's words, ``{output}`` by the tool results.
    * ``audio_ms``: length of the spoken audio instead of the text-proportional default.
    * ``tool_calls``: function calls after the spoken part.
    * ``error``: send this ``error`` event instead of responding (the connection stays open).
    * ``fail``: respond, but end with ``response.done`` status ``failed`` carrying this error.
    * ``drop``: close the TCP connection without a close frame instead of responding.
    * ``drop_after_deltas``: respond, then drop the connection after that many audio deltas
      (0: right after ``response.created``).
    * ``session_limit``: end the session as the service does at its time limit (``error`` + close).
    """

    say: str | None = None
    audio_ms: int | None = None
    tool_calls: Sequence[ToolCall] = ()
    error: ServiceError | None = None
    fail: ServiceError | None = None
    drop: bool = False
    drop_after_deltas: int | None = None
    session_limit: bool = False


@attrs.frozen
class ToolOutput:
    """A ``function_call_output`` the client sent (``name`` is known when the call was ours)."""

    call_id: str
    output: str
    name: str | None = None


@attrs.frozen
class TurnInput:
    """What the user gave since the previous response: the input a rule matches on."""

    text: str = ""
    spoken_turn: int | None = None
    tool_outputs: Sequence[ToolOutput] = ()


@attrs.frozen(kw_only=True)
class Rule:
    """``reply`` when every given condition holds (a rule with no condition matches anything).

    * ``text_contains`` / ``text_equals``: the user's words, case-insensitive (typed, or a spoken turn's transcript).
    * ``spoken_turn``: the n-th spoken turn (0-based, across connections).
    * ``tool_output_for``: a ``function_call_output`` for this function name or call id.
    * ``times``: fire at most this many times (None: always).
    """

    reply: Reply
    text_contains: str | None = None
    text_equals: str | None = None
    spoken_turn: int | None = None
    tool_output_for: str | None = None
    times: int | None = None

    def matches(self, turn: TurnInput) -> bool:
        if not words_match(self, turn):
            return False
        return self.tool_output_for is None or any(
            self.tool_output_for in (out.name, out.call_id) for out in turn.tool_outputs
        )


@attrs.frozen(kw_only=True)
class ErrorOn:
    """A fault on a client event: instead of handling the ``nth`` (1-based, per connection; None: every)
    ``event_type`` event, send ``error`` (and close the connection abruptly if ``drop``).
    ``connection`` limits it to one connection index."""

    event_type: str
    error: ServiceError
    nth: int | None = None
    connection: int | None = None
    drop: bool = False


@attrs.frozen(kw_only=True)
class Scenario:
    """The simulated model: rules, default replies, the words of spoken turns and event faults."""

    rules: Sequence[Rule] = ()
    default: Reply = Reply(say="You said: {text}")
    default_after_tool: Reply = Reply(say="The result is {output}.")
    transcripts: Sequence[str] = ()
    error_on: Sequence[ErrorOn] = ()
    voice: str = "marin"
    instructions: str = "You are a helpful assistant (simulated)."

    def transcript(self, spoken_turn: int) -> str:
        """What the user said in spoken turn ``spoken_turn``; a placeholder past the list."""
        return spoken_transcript(self.transcripts, spoken_turn)


class ScenarioState:
    """The mutable side of a scenario, shared by all connections of one simulator."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.fired: dict[int, int] = {}
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
        if turn.tool_outputs and not turn.text:
            return self.scenario.default_after_tool
        return self.scenario.default

    def error_for(self, event_type: str, nth: int, connection: int) -> ErrorOn | None:
        for fault in self.scenario.error_on:
            if fault.event_type != event_type:
                continue
            if fault.connection is not None and fault.connection != connection:
                continue
            if fault.nth is None or fault.nth == nth:
                return fault
        return None
