"""The fault matrix's engine: one conversation per case, played against a provider's simulator, then judged.

A case is a scenario (a row of the table, ``matrix_rows_*.py``), a provider
and a backend. Every case plays the same user: three typed lines, each typed
once the previous one's turn is over (its answer completed, or the connection
was replaced, or the service reported an error). What the simulator does is
the case's :class:`Setup`; what the user must see is its :class:`Outcome`,
checked from the user's side (events, the error ``run()`` raised) and the
service's (what the simulator received: every line exactly once, in order).
After every case nothing of ours is left: no task, no file descriptor.

Scripts (how the fault meets the conversation):

* ``response``: the second line's reply plays the fault (instead of the reply,
  or in the middle of it: ``mid_response``).
* ``tool``: the second line makes the model call a tool; while the tool runs
  the test plays the fault on the open connection (``Setup.inject``), then lets
  the tool finish once the conversation has moved on (a new connection, or its end).
* ``handshake``: the fault is in the simulator's options (refusals, a silent
  first connection) or the model (an address that does not answer); the
  lines come after.
* ``slow_output``, ``output_raises``, ``input_raises``, ``tool_hangs``,
  ``tool_raises``: faults of the application's own parts, not the service's.

Waiting is on conditions (an output took an event, the run ended), never on
time; the only clocks are hang guards and the short timeouts a case
configures on purpose (a read timeout that notices a silent service).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import anyio
import attrs

from bidi_core import (
    BidiAgent,
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiConnectionRestartEvent,
    BidiErrorEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiToolUseEvent,
    ReconnectPolicy,
    tool,
)
from ports.events import BidiOutputEvent
from tests.support import RecordingOutput, finals, our_tasks
from tests.test_providers_common import Provider

__all__ = ["LINES", "TRIGGER", "Case", "Outcome", "Played", "Setup", "play"]

TRIGGER = "now break"
"""The second line: the rule that plays the fault matches it (once)."""
WEATHER = "weather in Paris"
"""The second line of a ``tool`` script: the model calls ``get_weather``."""
LINES = ("first", TRIGGER, "the last line")
RETRY = ReconnectPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)
HANG_GUARD_S = 30.0
"""A bound for a whole case on a busy machine: a case that needs it has hung."""

Script = Literal[
    "response", "tool", "handshake", "slow_output", "output_raises", "input_raises", "tool_hangs", "tool_raises"
]


@attrs.frozen(kw_only=True)
class Setup:
    """How one provider's simulator (and model) plays one scenario.

    * ``reply``: the simulator's ``Reply`` for the trigger line (``response`` scripts);
    * ``inject``: what ``sim.inject`` plays while the tool runs (``tool`` scripts);
    * ``sim``: more simulator options (``refusals=``, ``tls=``, ``silent_connections=``, ``faults=``...);
    * ``model``: ``(sim) -> options`` for the provider's model (``connection=``, ``ssl_context=``...);
    * ``endpoint``: ``(provider, sim) -> model`` for a model the simulator does not serve
      (an unknown host, a closed port, an untrusted certificate);
    * ``mid_response``: the fault cuts the trigger's answer after some of its audio arrived.
    """

    reply: Any = None
    inject: Any = None
    sim: Mapping[str, Any] = attrs.field(factory=dict)
    model: Callable[[Any], Mapping[str, Any]] | None = None
    endpoint: Callable[[Provider, Any], Any] | None = None
    mid_response: bool = False


@attrs.frozen
class Case:
    """A row of the matrix for one provider: the scenario, how its simulator plays it, what the user sees."""

    scenario: str
    group: str
    script: Script
    setup: Setup
    outcome: Outcome


class Outcome:
    """What the user must see; :meth:`check` asserts it on a played case."""

    label = ""
    """Short text for the table."""
    ends_by_itself = False
    """The conversation ends without the test asking (an error, the service's end)."""

    def check(self, played: Played) -> None:
        raise NotImplementedError


@attrs.define
class Played:
    """What happened in one case: the user's events, the error ``run()`` raised, the simulator's records."""

    provider: Provider
    case: Case
    sim: Any
    out: RecordingOutput
    lines: tuple[str, ...]
    error: BaseException | None = None
    ended_by_itself: bool = False
    tool_runs: int = 0
    extra: dict[str, Any] = attrs.field(factory=dict)

    def restarts(self) -> list[str]:
        return [e.reason for e in self.out.of(BidiConnectionRestartEvent)]

    def closes(self) -> list[str]:
        return [e.reason for e in self.out.of(BidiConnectionCloseEvent)]

    def error_codes(self) -> list[str | None]:
        return [e.code for e in self.out.of(BidiErrorEvent)]

    def delivered(self) -> list[str]:
        """What the user said that the service's session holds, in order.

        OpenAI and Nova: every line the service took as new input, on any connection (a history
        seeded into a new connection replays them, and is not counted again). Gemini resumes
        sessions, so its simulator keeps the session's state: the lines of the session the last
        connection continued, a fresh session's seeded history included.
        """
        if self.provider.name != "gemini":
            return list(self.provider.typed_texts(self.sim))
        lines: list[str] = []
        for kind, value in self.sim.user_inputs:
            if kind == "text":
                lines.append(value)
            elif kind == "history":
                lines += [text for role, text in value if role == "user" and text]
        return lines

    def typed(self) -> list[str]:
        """:meth:`delivered` without the results of tools that outlived their connection, which go in as
        the user's text (:meth:`orphaned_results`)."""
        return [t for t in self.delivered() if not t.startswith("(The tool ")]

    def orphaned_results(self) -> list[str]:
        return [t for t in self.delivered() if t.startswith("(The tool ")]

    def answered(self, line: str) -> bool:
        return any(line in f for f in finals(self.out, "assistant"))


# ---------------------------------------------------------------- the user


class User:
    """Types ``lines``, each once the previous turn is over; ``observe`` (an output) sees the turns end.

    A turn is over when its answer completed, or (``after_restart``) the connection was replaced or
    the service reported an error: the turn the fault broke never completes, and the user goes on.
    """

    def __init__(self, lines: Sequence[str], *, after_restart: bool) -> None:
        self.lines = list(lines)
        self.after_restart = after_restart
        self.ready = anyio.Event()
        self.ready.set()

    async def __call__(self) -> str:
        if not self.lines:
            await anyio.sleep_forever()
        await self.ready.wait()
        self.ready = anyio.Event()
        return self.lines.pop(0)

    async def observe(self, event: BidiOutputEvent) -> None:
        answered = isinstance(event, BidiResponseCompleteEvent) and event.stop_reason == "complete"
        broken = self.after_restart and isinstance(event, BidiConnectionRestartEvent | BidiErrorEvent)
        if answered or broken:
            self.ready.set()


class _Raising:
    """An input that types the first line, then raises (the application's own bug)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls == 1:
            return LINES[0]
        raise InputBroke("the microphone's driver failed")


class InputBroke(RuntimeError):
    """What the raising input raises."""


class OutputBroke(RuntimeError):
    """What the raising output raises."""


# ---------------------------------------------------------------- playing a case


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def play(provider: Provider, case: Case) -> Played:
    """Play ``case`` against ``provider``'s simulator; check what must hold whatever the outcome
    (nothing left running, the service refused nothing we sent) and return what happened."""
    fds_before = _open_fds()
    setup = case.setup
    scenario = _scenario(provider, case)
    async with provider.start(scenario=scenario, **setup.sim) as sim:
        played = await _converse(provider, case, sim)
        if setup.endpoint is None and case.script != "handshake":
            provider.clean(sim)
    assert our_tasks() == set(), our_tasks()
    assert _open_fds() <= fds_before, "file descriptors left open"
    return played


def _scenario(provider: Provider, case: Case) -> Any:
    s = provider.sim
    rules = []
    if case.script == "response" and case.setup.reply is not None:
        rules.append(s.Rule(text_equals=TRIGGER, times=1, reply=case.setup.reply))
    rules.append(s.Rule(text_contains="weather", times=1, reply=s.Reply(tool_calls=[s.ToolCall(*_WEATHER_CALL)])))
    return s.Scenario(rules=rules)


_WEATHER_CALL = ("get_weather", {"location": "Paris"}, "call-1")


async def _converse(provider: Provider, case: Case, sim: Any) -> Played:
    setup = case.setup
    script = case.script
    tool_started, tool_release = anyio.Event(), anyio.Event()
    runs = 0

    @tool(timeout=0.2 if script == "tool_hangs" else None)
    async def get_weather(location: str) -> str:
        """Weather for a place.

        Args:
            location: A city.
        """
        nonlocal runs
        runs += 1
        tool_started.set()
        if script == "tool_raises":
            raise LookupError(f"no weather station in {location}")
        if script in ("tool", "tool_hangs"):
            await tool_release.wait()  # a hung tool: only its timeout ends it
        return f"sunny in {location}"

    if setup.endpoint is not None:
        model = setup.endpoint(provider, sim)
    else:
        model = provider.model(sim, **(setup.model(sim) if setup.model is not None else {}))
    agent = BidiAgent(model=model, tools=[get_weather], reconnect=RETRY)
    lines: tuple[str, ...] = (LINES[0], WEATHER, LINES[2]) if script.startswith("tool") else LINES
    if script == "handshake":
        lines = (LINES[0], LINES[2])
    played = Played(provider, case, sim, RecordingOutput(), lines)
    user = User(lines, after_restart=script in ("response", "handshake"))
    inputs: list[Any] = [_Raising()] if script == "input_raises" else [user]
    changed = anyio.Event()

    def notify() -> None:
        nonlocal changed
        changed.set()
        changed = anyio.Event()

    async def watch(event: BidiOutputEvent) -> None:
        await played.out(event)
        notify()

    outputs: list[Any] = [watch, user.observe]
    slow = _Slow()
    if script == "slow_output":
        outputs.append(slow)
    if script == "output_raises":
        outputs.append(_raise_at_first_audio)

    stop_asked = ended = False

    async def run() -> None:
        nonlocal ended
        try:
            await agent.run(inputs, outputs)
        except Exception as exc:
            played.error = exc
        played.ended_by_itself = not stop_asked
        ended = True
        notify()

    async def director() -> None:
        """``tool``: the fault while the tool runs; the tool finishes once the conversation moved on."""
        await tool_started.wait()
        await sim.inject(setup.inject)
        while not (played.restarts() or played.closes()):
            await changed.wait()
        tool_release.set()

    done = _done_condition(case, played)
    with anyio.fail_after(HANG_GUARD_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            if script == "tool":
                tg.start_soon(director)
            while not ended and not done():
                await changed.wait()
            if script == "slow_output":
                played.extra["slow_seen_when_fast_done"] = len(slow.events)
                played.extra["fast_seen"] = len(played.out.events)
                slow.gate.set()
                while len(slow.events) < played.extra["fast_seen"] and not ended:
                    await slow.changed.wait()
                played.extra["slow_events"] = list(slow.events)
            if not ended:
                stop_asked = True
                agent.request_stop()
    played.tool_runs = runs
    return played


def _done_condition(case: Case, played: Played) -> Callable[[], bool]:
    if case.outcome.ends_by_itself:
        return lambda: False  # the run ends by itself, or the hang guard fails the case
    return lambda: played.answered(played.lines[-1])


class _Slow:
    """An output that takes its first event, then waits at ``gate`` (a speaker stuck on a slow device)."""

    def __init__(self) -> None:
        self.events: list[BidiOutputEvent] = []
        self.gate = anyio.Event()
        self.changed = anyio.Event()

    async def __call__(self, event: BidiOutputEvent) -> None:
        self.events.append(event)
        self.changed.set()
        self.changed = anyio.Event()
        await self.gate.wait()


async def _raise_at_first_audio(event: BidiOutputEvent) -> None:
    if isinstance(event, BidiAudioStreamEvent):
        raise OutputBroke("the speaker was unplugged")


# ---------------------------------------------------------------- shared checks


def assert_the_fault_cut_a_response(played: Played) -> None:
    """The trigger's answer had begun (some of its audio arrived) and did not complete."""
    starts = played.out.of(BidiResponseStartEvent)
    cut = [
        s.response_id
        for s in starts
        if any(isinstance(a, BidiAudioStreamEvent) and a.response_id == s.response_id for a in played.out.events)
        and not any(
            c.response_id == s.response_id and c.stop_reason == "complete"
            for c in played.out.of(BidiResponseCompleteEvent)
        )
    ]
    assert cut, "no response was cut in the middle"


def assert_the_tool_result_arrived_once(played: Played) -> None:
    """The tool ran once and its result reached the service once: as a result, or as the user's text
    on a connection that never made the call."""
    assert played.tool_runs == 1
    assert [u.tool_use_id for u in played.out.of(BidiToolUseEvent)] == ["call-1"]
    as_results = [r for r in played.provider.tool_results(played.sim).values() if "sunny in Paris" in r]
    as_text = [t for t in played.orphaned_results() if "sunny in Paris" in t]
    assert len(as_results) + len(as_text) == 1, (as_results, as_text)
