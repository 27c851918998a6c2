"""The scenario language every simulator speaks: what the simulated model says is data, not code.

A :class:`Scenario` is an ordered list of :class:`Rule`. When the user's turn
ends (typed text, a spoken turn found by turn detection, or the tool results
the model waited for), the simulator plays the :class:`Reply` of the first rule
that matches and has not used up its ``times``, else a default. A spoken turn
has no words a simulator can recognise, so the scenario supplies them:
``transcripts[n]`` is what the user "said" in the n-th spoken turn (0-based,
counted across connections).

    Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])),
            Rule(tool_result_for="get_weather", reply=Reply(say="It is {result}.")),
            Rule(spoken_turn=1, reply=Reply(say="A long answer to interrupt.", audio_ms=3000)),
        ],
        transcripts=["what's the weather", "tell me a story"],
    )

The services differ in how a turn ends, how a reply goes over the wire and how
they fail, not in this language: each simulator re-exports these names and
subclasses :class:`Reply` (its own faults: OpenAI's ``error``, Gemini's
``close``...) and :class:`Scenario` (its defaults, OpenAI's ``error_on``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs

__all__ = ["Reply", "Rule", "Scenario", "ScenarioState", "ToolCall", "ToolResult", "TurnInput", "spoken_words"]


@attrs.frozen
class ToolCall:
    """A function the model calls with ``arguments``; ``call_id`` defaults to a fresh id of the service's shape.

    The tool must be declared to the session: a real model cannot call a tool it
    was not given, so an undeclared one is spoken about instead of called.
    """

    name: str
    arguments: Mapping[str, Any] = attrs.field(factory=dict)
    call_id: str | None = None


@attrs.frozen(kw_only=True)
class Reply:
    """What the model does for one turn: speak ``say``, then make the ``tool_calls``.

    * ``say``: spoken text (audio and its transcript; text only when the session asks for text).
      ``{text}`` is replaced by the user's words, ``{result}`` by the tool results.
    * ``audio_ms``: length of the spoken audio instead of the text-proportional default.
    * ``tool_calls``: function calls after the spoken part; the model then waits for every result.

    Each simulator's ``Reply`` adds its service's faults.
    """

    say: str | None = None
    audio_ms: int | None = None
    tool_calls: Sequence[ToolCall] = ()


@attrs.frozen
class ToolResult:
    """A tool result the client sent: the call it answers, the tool's name when known, and its output as text."""

    call_id: str
    name: str | None
    output: str


@attrs.frozen
class TurnInput:
    """What the user gave for this turn: the input a rule matches on."""

    text: str = ""
    spoken_turn: int | None = None
    tool_results: Sequence[ToolResult] = ()


R = TypeVar("R", bound=Reply)


@attrs.frozen(kw_only=True)
class Rule(Generic[R]):
    """``reply`` when every given condition holds (a rule with no condition matches anything).

    * ``text_contains`` / ``text_equals``: the user's words, case-insensitive (typed, or a spoken turn's transcript).
    * ``spoken_turn``: the n-th spoken turn (0-based, across connections).
    * ``tool_result_for``: a tool result for this function name or call id.
    * ``times``: fire at most this many times (None: always).
    """

    reply: R
    text_contains: str | None = None
    text_equals: str | None = None
    spoken_turn: int | None = None
    tool_result_for: str | None = None
    times: int | None = None

    def matches(self, turn: TurnInput) -> bool:
        words = turn.text.strip().casefold()
        if self.text_contains is not None and self.text_contains.casefold() not in words:
            return False
        if self.text_equals is not None and self.text_equals.strip().casefold() != words:
            return False
        if self.spoken_turn is not None and self.spoken_turn != turn.spoken_turn:
            return False
        return self.tool_result_for is None or any(
            self.tool_result_for in (result.name, result.call_id) for result in turn.tool_results
        )


@attrs.frozen(kw_only=True)
class Scenario(Generic[R]):
    """The simulated model: rules, default replies and the words of spoken turns.

    A simulator's ``Scenario`` gives ``default`` ("You said: {text}") and
    ``default_after_tool`` ("The result is {result}.") as its own ``Reply``;
    every reply must be of that class, since the simulator reads its faults.
    """

    rules: Sequence[Rule[R]] = ()
    default: R
    default_after_tool: R
    transcripts: Sequence[str] = ()

    def __attrs_post_init__(self) -> None:
        kind = type(self.default)
        for rule in self.rules:
            if not isinstance(rule.reply, kind):
                raise TypeError(
                    f"{type(self).__module__}.{type(self).__qualname__} plays {kind.__module__}.{kind.__qualname__}"
                    f" replies, not {type(rule.reply).__module__}.{type(rule.reply).__qualname__}"
                )

    def transcript(self, spoken_turn: int) -> str:
        """What the user said in spoken turn ``spoken_turn``; a placeholder past the list."""
        if spoken_turn < len(self.transcripts):
            return self.transcripts[spoken_turn]
        return f"(spoken turn {spoken_turn})"


class ScenarioState(Generic[R]):
    """The mutable side of a scenario (rules fired, spoken turns counted), shared by every connection."""

    def __init__(self, scenario: Scenario[R]) -> None:
        self.scenario = scenario
        self.fired: dict[int, int] = {}
        self.spoken_turns = 0

    def next_spoken_turn(self) -> int:
        turn = self.spoken_turns
        self.spoken_turns += 1
        return turn

    def choose(self, turn: TurnInput) -> R:
        """The first matching rule that still may fire (counted now); else a default."""
        for index, rule in enumerate(self.scenario.rules):
            if rule.times is not None and self.fired.get(index, 0) >= rule.times:
                continue
            if rule.matches(turn):
                self.fired[index] = self.fired.get(index, 0) + 1
                return rule.reply
        if turn.tool_results and not turn.text:
            return self.scenario.default_after_tool
        return self.scenario.default


def spoken_words(
    reply: Reply, turn: TurnInput, declared: Collection[str], *, results: str | None = None
) -> tuple[str, list[ToolCall]]:
    """What the model says for ``reply`` and the calls it makes: the calls of undeclared tools become words.

    ``{text}`` becomes the user's words and ``{result}`` ``results`` (by default
    the tool results' outputs joined by "; "). The text is stripped; empty means
    nothing is spoken.
    """
    if results is None:
        results = "; ".join(result.output for result in turn.tool_results)
    say = (reply.say or "").replace("{text}", turn.text).replace("{result}", results)
    calls = [call for call in reply.tool_calls if call.name in declared]
    for missing in (call for call in reply.tool_calls if call.name not in declared):
        say += f" (I would call {missing.name}, but no such tool is declared.)"
    return say.strip(), calls
