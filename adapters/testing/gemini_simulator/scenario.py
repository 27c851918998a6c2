"""What the simulated model says: the kit's scenario language plus Gemini's faults.

The rules, the tool calls and the way a rule is chosen are every simulator's
(:mod:`adapters.testing._simulator_kit.scenario`). A turn ends with a spoken
turn detected by the VAD, ``realtimeInput.text``, ``clientContent`` with
``turnComplete``, or the last ``toolResponse`` the model waits for. Spoken
turns are counted over the turns the session contains: across connections, and
rolled back on resumption to the count as of the handle. A tool result's output
is its ``response`` object as JSON, and ``{result}`` is the JSON list of them.
What is Gemini's is here: the faults a :class:`Reply` can play (drops, close
frames, ``goAway``, a fault mid-reply).

    Scenario(
        rules=[
            Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])),
            Rule(tool_result_for="get_weather", reply=Reply(say="It is sunny.")),
            Rule(spoken_turn=1, reply=Reply(say="A long answer", audio_ms=3000)),
            Rule(text_equals="crash", reply=Reply(close=(1011, "Internal error occurred."))),
        ],
        transcripts=["what's the weather", "tell me a story"],
    )
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from adapters.testing._simulator_kit import scenario as kit
from adapters.testing._simulator_kit.scenario import Rule, ToolCall, ToolResult, TurnInput

__all__ = ["Reply", "Rule", "Scenario", "ScenarioState", "ToolCall", "ToolResult", "TurnInput"]


@attrs.frozen(kw_only=True)
class Reply(kit.Reply):
    """What the model does for one turn: the kit's ``say``, ``audio_ms`` and ``tool_calls``, and Gemini's faults.

    ``raw`` and ``garble`` go first; then ``drop``, ``reset``, ``close``, ``silence``, ``deaf`` and
    ``go_away`` act; then ``say`` (audio chunks at 24 kHz in ``modelTurn``, text parts when the
    setup asks for ``TEXT``, and ``outputTranscription``), then one ``toolCall`` message with all
    the ``tool_calls``.

    * ``drop``: close the TCP connection without a close frame instead of replying.
    * ``reset``: reset the TCP connection (RST) instead of replying.
    * ``close``: ``(code, reason)``: send that close frame instead of replying (e.g. 1011).
    * ``silence``: fall silent instead of replying: read on, answer nothing, pings included.
    * ``deaf``: stop reading the socket and answer nothing (the client's writes block once the
      TCP buffers are full).
    * ``go_away``: send ``goAway`` (``timeLeft`` = the simulator's ``go_away_lead_s``) and end the connection
      that long after; the reply itself still plays.
    * ``after_chunks``: ``go_away``, ``drop``, ``reset``, ``close`` or ``silence`` mid-reply instead, after
      this many ``modelTurn`` chunks (a fault in the middle of a turn; at the end of the speech if it has
      fewer chunks): ``go_away=True, close=(1000, "")`` is the connection limit announced and reached
      while the model speaks.
    * ``raw``: frames sent as they are, unchecked, before anything else (faults: not JSON, a wrong
      shape): ``str`` as text frames, ``bytes`` as binary frames.
    * ``garble``: bytes written on the connection as they are, outside any frame (a frame header
      claiming a huge length, say), after which the service falls silent.
    """

    drop: bool = False
    reset: bool = False
    close: tuple[int, str] | None = None
    silence: bool = False
    deaf: bool = False
    go_away: bool = False
    after_chunks: int | None = None
    raw: Sequence[str | bytes] = ()
    garble: bytes | None = None


@attrs.frozen(kw_only=True)
class Scenario(kit.Scenario[Reply]):
    """The simulated model: the kit's rules and transcripts, with Gemini's replies as defaults."""

    default: Reply = Reply(say="You said: {text}")
    default_after_tool: Reply = Reply(say="The result is {result}.")


ScenarioState = kit.ScenarioState
