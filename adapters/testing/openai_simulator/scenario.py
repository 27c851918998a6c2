"""What the simulated model says: the kit's scenario language plus OpenAI's faults.

The rules, the tool calls and the way a rule is chosen are every simulator's
(:mod:`adapters.testing._simulator_kit.scenario`). A response is due on
``response.create``, or at the end of a spoken turn with ``create_response``;
the rule sees what the user gave since the previous response (typed text, the
transcript of a spoken turn, ``function_call_output`` items). What is OpenAI's
is here: the faults a :class:`Reply` can play (in-band ``error`` events, failed
responses, drops, the session limit), :class:`ErrorOn` faults on client events,
and the session's voice and instructions.

Examples::

    Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])),
            Rule(tool_result_for="get_weather", reply=Reply(say="It is sunny in Paris.")),
            Rule(spoken_turn=1, reply=Reply(say="A long answer to interrupt.", audio_ms=3000)),
            Rule(text_equals="crash", reply=Reply(drop=True)),
            Rule(text_equals="boom", times=1, reply=Reply(error=ServiceError("Boom.", "server_error", "server_error"))),
        ],
        transcripts=["what's the weather", "tell me a story"],
        error_on=[ErrorOn("session.update", nth=2, error=ServiceError("No.", "invalid_value"))],
    )
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from adapters.testing._simulator_kit import scenario as kit
from adapters.testing._simulator_kit.scenario import Rule, ToolCall, ToolResult, TurnInput
from adapters.testing.openai_simulator.errors import ServiceError

__all__ = ["ErrorOn", "Reply", "Rule", "Scenario", "ScenarioState", "ToolCall", "ToolOutput", "ToolResult", "TurnInput"]

ToolOutput = ToolResult
"""The old name of a ``function_call_output`` the client sent (``name`` is known when the call was ours)."""


@attrs.frozen(kw_only=True)
class Reply(kit.Reply):
    """What one response does: the kit's ``say``, ``audio_ms`` and ``tool_calls``, and OpenAI's faults.

    Fields combine in this order: ``raw`` and ``garble`` first, then the connection faults
    (``drop``, ``reset``, ``close``, ``session_limit``, ``silence``, ``deaf``), ``error``, then a
    response (``fail``, or ``say`` followed by ``tool_calls``); ``say`` is text only
    when the output modality is ``text``.

    * ``error``: send this ``error`` event instead of responding (the connection stays open).
    * ``fail``: respond, but end with ``response.done`` status ``failed`` carrying this error.
    * ``drop``: close the TCP connection without a close frame instead of responding.
    * ``reset``: reset the TCP connection (RST) instead of responding.
    * ``close``: ``(code, reason)``: send that close frame instead of responding (1000: the
      service ends the session; 1001, 1011, 1012: it goes away or fails).
    * ``session_limit``: end the session as the service does at its time limit (``error`` + close).
    * ``silence``: fall silent instead of responding: read on, answer nothing, pings included.
    * ``deaf``: stop reading the socket and answer nothing (the client's writes block once the
      TCP buffers are full).
    * ``after_deltas``: play the connection fault above mid-response instead, after this many
      audio deltas (0: right after ``response.created``).
    * ``drop_after_deltas``: respond, then drop the connection after that many audio deltas
      (the same as ``drop`` with ``after_deltas``).
    * ``raw``: frames sent as they are before anything else, unchecked (faults: not JSON, a wrong
      shape): ``str`` as text frames, ``bytes`` as binary frames.
    * ``garble``: bytes written on the connection as they are, outside any frame (a frame header
      claiming a huge length, say), after which the service falls silent: nothing it could
      write would be read as frames any more.
    """

    error: ServiceError | None = None
    fail: ServiceError | None = None
    drop: bool = False
    reset: bool = False
    close: tuple[int, str] | None = None
    drop_after_deltas: int | None = None
    session_limit: bool = False
    silence: bool = False
    deaf: bool = False
    after_deltas: int | None = None
    raw: Sequence[str | bytes] = ()
    garble: bytes | None = None


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
class Scenario(kit.Scenario[Reply]):
    """The simulated model: the kit's rules and transcripts, OpenAI's defaults, event faults, voice and instructions."""

    default: Reply = Reply(say="You said: {text}")
    default_after_tool: Reply = Reply(say="The result is {result}.")
    error_on: Sequence[ErrorOn] = ()
    voice: str = "marin"
    instructions: str = "You are a helpful assistant (simulated)."


class ScenarioState(kit.ScenarioState[Reply]):
    """The mutable side of a scenario, shared by all connections of one simulator; also finds event faults."""

    scenario: Scenario

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self.scenario = scenario

    def error_for(self, event_type: str, nth: int, connection: int) -> ErrorOn | None:
        for fault in self.scenario.error_on:
            if fault.event_type != event_type:
                continue
            if fault.connection is not None and fault.connection != connection:
                continue
            if fault.nth is None or fault.nth == nth:
                return fault
        return None
