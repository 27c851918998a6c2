"""What the simulated model says: a scenario is data, not code.

A :class:`Scenario` is an ordered list of :class:`Rule`. When a turn ends (a
spoken turn detected by the VAD, ``realtimeInput.text``, ``clientContent`` with
``turnComplete``, or the last ``toolResponse`` the model waits for), the simulator
plays the :class:`Reply` of the first matching rule, else a default. A spoken
turn has no words we can recognise, so the scenario supplies them:
``transcripts[n]`` is what the user "said" in the n-th spoken turn (0-based,
counted over the turns the session contains: across connections, and rolled
back on resumption to the count as of the handle).

    Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])),
            Rule(tool_response_for="get_weather", reply=Reply(say="It is sunny.")),
            Rule(spoken_turn=1, reply=Reply(say="A long answer", audio_ms=3000)),
            Rule(text_equals="crash", reply=Reply(close=(1011, "Internal error occurred."))),
        ],
        transcripts=["what's the weather", "tell me a story"],
    )
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from adapters.testing._simulator_kit.rules import first_to_fire, spoken_transcript, words_match

__all__ = ["Reply", "Rule", "Scenario", "ScenarioState", "ToolCall", "ToolResult", "TurnInput"]


@attrs.frozen
class ToolCall:
    """One ``functionCalls`` entry; ``id`` defaults to a fresh ``function-call-…`` id.

    The function must be declared in ``setup.tools``: a real model cannot call a tool it was
    not given, so an undeclared one is spoken about instead.
    """

    name: str
    args: Mapping[str, Any] = attrs.field(factory=dict)
    id: str | None = None


@attrs.frozen(kw_only=True)
class Reply:
    """What the model does for one turn. ``drop``, ``close`` and ``go_away`` act first; then ``say``, then
    ``tool_calls``.

    * ``say``: spoken text: audio chunks at 24 kHz in ``modelTurn`` (text parts when the setup asks for
      ``TEXT``) and ``outputTranscription``. ``{text}`` is replaced by the user's words, ``{output}`` by the
      tool responses (JSON).
    * ``audio_ms``: the audio's length instead of the text-proportional default.
    * ``tool_calls``: one ``toolCall`` message with all these ``functionCalls``; the model then waits for
      every response before it answers (rule ``tool_response_for``).
    * ``drop``: close the TCP connection without a close frame instead of replying.
    * ``close``: ``(code, reason)``: send that close frame instead of replying (e.g. 1011).
    * ``go_away``: send ``goAway`` (``timeLeft`` = the simulator's ``go_away_lead_s``) and end the connection
      that long after; the reply itself still plays.
    * ``after_chunks``: ``drop`` or ``close`` mid-reply instead, after this many ``modelTurn`` chunks
      (a fault in the middle of a turn; at the end of the speech if it has fewer chunks).
    """

    say: str | None = None
    audio_ms: int | None = None
    tool_calls: Sequence[ToolCall] = ()
    drop: bool = False
    close: tuple[int, str] | None = None
    go_away: bool = False
    after_chunks: int | None = None


@attrs.frozen
class ToolResult:
    """A ``functionResponses`` entry the model received."""

    id: str
    name: str
    response: Mapping[str, Any]


@attrs.frozen
class TurnInput:
    """What the user gave for this turn: the input a rule matches on."""

    text: str = ""
    spoken_turn: int | None = None
    tool_results: Sequence[ToolResult] = ()


@attrs.frozen(kw_only=True)
class Rule:
    """``reply`` when every given condition holds (a rule with no condition matches anything).

    * ``text_contains`` / ``text_equals``: the user's words, case-insensitive (typed, or a spoken turn's transcript).
    * ``spoken_turn``: the n-th spoken turn (0-based).
    * ``tool_response_for``: a function response for this function name or call id.
    * ``times``: fire at most this many times (None: always).
    """

    reply: Reply
    text_contains: str | None = None
    text_equals: str | None = None
    spoken_turn: int | None = None
    tool_response_for: str | None = None
    times: int | None = None

    def matches(self, turn: TurnInput) -> bool:
        if not words_match(self, turn):
            return False
        if self.tool_response_for is not None:
            return any(self.tool_response_for in (r.name, r.id) for r in turn.tool_results)
        return True


@attrs.frozen(kw_only=True)
class Scenario:
    """The simulated model: rules, default replies and the words of spoken turns."""

    rules: Sequence[Rule] = ()
    default: Reply = Reply(say="You said: {text}")
    default_after_tool: Reply = Reply(say="The result is {output}.")
    transcripts: Sequence[str] = ()

    def transcript(self, spoken_turn: int) -> str:
        """What the user said in spoken turn ``spoken_turn``; a placeholder past the list."""
        return spoken_transcript(self.transcripts, spoken_turn)


class ScenarioState:
    """How often each rule fired, shared by every connection of one simulator."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.fired: dict[int, int] = {}

    def choose(self, turn: TurnInput) -> Reply:
        """The first matching rule that still may fire; else a default."""
        rule = first_to_fire(self.scenario.rules, self.fired, lambda rule: rule.matches(turn))
        if rule is not None:
            return rule.reply
        if turn.tool_results:
            return self.scenario.default_after_tool
        return self.scenario.default
