"""The shell (BidiAgent over a scripted model) under random steps, with exact expectations.

:class:`~adapters.testing.agent_machine.AgentMachine` (the users' harness)
plays the random script: the model speaks, finishes, calls a tool, withdraws
a call, reports usage and in-band errors; the user types, talks and barges
in; connections drop, the network goes down, time passes, the conversation
ends or is cancelled at a random checkpoint. It checks the library's
guarantees (no audio after an interruption, tool calls settled, input
delivered once, nothing left running: tasks, timers, threads, connections).

This machine adds what it cannot know in general, from a model of its own
(:class:`Lane`: what one output has been handed, what waits in its queue and
what it is in the middle of), fed only with what the script did and what the
conversation emitted, never with the agent's state:

* each output received exactly the events the model predicts, in order, after
  every step: a slow queued output (the harness's), an inline output whose
  device buffer fills (``offer`` declines audio, which then waits in the
  queue), and an inline output that takes everything on the spot; and the
  agent's queue for each holds exactly what the model says still waits;
* a barge-in, or a connection lost mid-response, purges exactly the audio
  queued for each output at that moment, and nothing else (not the chunk an
  output is playing, never an event that is not audio);
* the audio, transcripts, usage and in-band errors the provider sent reach the
  outputs exactly once, in order, except the audio of an interrupted response
  sent after the interruption; ``agent.usage`` is the sum of the usage sent;
* when a conversation ends (hang-up, a fatal provider error, a clean provider
  close, a random cancellation), each output's events are what the model
  predicted at the last quiet point followed by a subsequence of what was
  emitted since: nothing duplicated, reordered or invented at the end.

Time passes only in the ``time_passes`` step (``step_ms = 0``), so what each
output has played is exactly known. The default suite runs a few short
examples per backend; ``nox -s shell-machine`` runs many long ones
(``BIDI_SHELL_EXAMPLES``, ``BIDI_SHELL_STEPS``).
"""

from __future__ import annotations

import os
import typing
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

from adapters.testing._conversation import Conversation, SlowOutput
from adapters.testing.agent_machine import AgentMachine
from adapters.testing.harness import Speaker, WatchedOutput
from adapters.testing.scripted import End, ScriptedModel
from bidi_core import BidiAgent, ReconnectPolicy, tool
from ports.events import (
    BidiAudioStreamEvent,
    BidiConnectionCloseEvent,
    BidiErrorEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiSpeechStartedEvent,
    BidiTranscriptStreamEvent,
    BidiUsageEvent,
)

EXAMPLES = int(os.environ.get("BIDI_SHELL_EXAMPLES", "10"))
STEPS = int(os.environ.get("BIDI_SHELL_STEPS", "25"))

FAST = ReconnectPolicy(initial_backoff_s=0.001, max_backoff_s=0.002, stable_after_s=3600)
"""Reconnect at once; a connection counts as proven only once it said something (no wall clock)."""

OUTPUT_EVENTS = typing.get_args(BidiOutputEvent)
"""What an observer sees besides them (the user's input, the provider's signals) is left out."""

LINE_CAPACITY_MS = 20.0
"""The phone line's buffer: one 20 ms chunk; the next waits until time passes."""


@tool
async def lookup(city: str) -> str:
    """Look up the weather.

    Args:
        city: Where.
    """
    await anyio.lowlevel.checkpoint()
    return f"sunny in {city}"


# ---------------------------------------------------------------- the outputs under test


class PhoneLine:
    """An inline output in front of a line that buffers ``LINE_CAPACITY_MS`` of audio and plays it in
    real time (the harness's :class:`Speaker`): ``offer`` takes audio while it fits and declines it
    when the line is full; ``__call__`` then waits until time has made room. An interruption clears
    the line."""

    def __init__(self, line: Speaker) -> None:
        self.line = line
        self.conv: Conversation | None = None
        self.handled: list[BidiOutputEvent] = []
        """Every event it finished with, in order (an event ``__call__`` waits with is not handled yet)."""
        self._room = anyio.Event()

    async def start(self, agent: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    def time_passed(self) -> None:
        self._room.set()
        self._room = anyio.Event()

    def _fits(self, event: BidiOutputEvent) -> bool:
        if not isinstance(event, BidiAudioStreamEvent):
            return True
        free = self.conv is not None and self.conv.free_running
        return free or self.line.buffered_ms + event.duration_ms <= LINE_CAPACITY_MS

    def _take(self, event: BidiOutputEvent) -> None:
        self.handled.append(event)
        if isinstance(event, BidiAudioStreamEvent):
            self.line.write(event.audio)
        elif isinstance(event, BidiInterruptionEvent):
            self.line.clear()

    def offer(self, event: BidiOutputEvent) -> bool:
        if not self._fits(event):
            return False
        self._take(event)
        return True

    async def __call__(self, event: BidiOutputEvent) -> None:
        while not self._fits(event):
            await self._room.wait()
        self._take(event)


class Printer:
    """An inline output that takes everything on the spot (a transcript printer)."""

    def __init__(self) -> None:
        self.printed = 0

    async def start(self, agent: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    def offer(self, event: BidiOutputEvent) -> bool:
        self.printed += 1
        return True

    async def __call__(self, event: BidiOutputEvent) -> None:
        self.printed += 1


# ---------------------------------------------------------------- the test's model of an output


def is_audio(event: object) -> bool:
    return isinstance(event, BidiAudioStreamEvent)


class Lane:
    """What one output should have received: its queue, the event it is in the middle of, its clock.

    ``offers``: the output is inline (an event is offered while nothing is queued and it is not in the
    middle of one). ``fits(event, self)`` says whether the output can finish ``event`` now;
    ``take(event, self)`` books it; ``tick(ms, self)`` lets time pass for it.
    """

    def __init__(
        self,
        offers: bool,
        fits: Callable[[BidiOutputEvent, Lane], bool],
        take: Callable[[BidiOutputEvent, Lane], None],
        tick: Callable[[float, Lane], None],
    ) -> None:
        self.offers = offers
        self._fits, self._take, self._tick = fits, take, tick
        self.level = 0.0  # the slow output's banked time, or what the phone line holds
        self.queue: deque[BidiOutputEvent] = deque()
        self.current: BidiOutputEvent | None = None
        self.received: list[BidiOutputEvent] = []
        self.handled: list[BidiOutputEvent] = []

    def arrive(self, event: BidiOutputEvent) -> None:
        if self.offers and not self.queue and self.current is None and self._fits(event, self):
            self._take(event, self)
            self.received.append(event)
            self.handled.append(event)
            return
        self.queue.append(event)
        self._pump()

    def purge(self) -> None:
        """A barge-in's purge: every queued audio chunk goes; the one being played stays."""
        self.queue = deque(e for e in self.queue if not is_audio(e))

    def time(self, ms: float) -> None:
        self._tick(ms, self)
        self._pump()

    def _pump(self) -> None:
        while True:
            if self.current is not None:
                if not self._fits(self.current, self):
                    return
                self._take(self.current, self)
                self.handled.append(self.current)
                self.current = None
            if not self.queue:
                return
            self.current = self.queue.popleft()
            self.received.append(self.current)


def slow_lane() -> Lane:
    """The harness's :class:`SlowOutput`: an audio chunk takes its duration of time, banked while idle."""

    def fits(event: BidiOutputEvent, lane: Lane) -> bool:
        return not isinstance(event, BidiAudioStreamEvent) or lane.level >= event.duration_ms

    def take(event: BidiOutputEvent, lane: Lane) -> None:
        if isinstance(event, BidiAudioStreamEvent):
            lane.level = max(0.0, lane.level - event.duration_ms)

    def tick(ms: float, lane: Lane) -> None:
        lane.level += ms

    return Lane(False, fits, take, tick)


def line_lane() -> Lane:
    """:class:`PhoneLine`: audio fits while the line holds at most ``LINE_CAPACITY_MS``."""

    def fits(event: BidiOutputEvent, lane: Lane) -> bool:
        return not isinstance(event, BidiAudioStreamEvent) or lane.level + event.duration_ms <= LINE_CAPACITY_MS

    def take(event: BidiOutputEvent, lane: Lane) -> None:
        if isinstance(event, BidiAudioStreamEvent):
            lane.level += event.duration_ms
        elif isinstance(event, BidiInterruptionEvent):
            lane.level = 0.0

    def tick(ms: float, lane: Lane) -> None:
        lane.level = max(0.0, lane.level - ms)

    return Lane(True, fits, take, tick)


def printer_lane() -> Lane:
    return Lane(True, lambda e, lane: True, lambda e, lane: None, lambda ms, lane: None)


def purges_before(event: BidiOutputEvent) -> bool:
    """The events a purge of queued audio comes right before (docs/design.md): an interruption, and
    the completion the core gives a response cut off by a lost connection (``error``; the scripted
    provider never sends that reason itself)."""
    return isinstance(event, BidiInterruptionEvent) or (
        isinstance(event, BidiResponseCompleteEvent) and event.stop_reason == "error"
    )


def is_subsequence(items: Sequence[object], of: Sequence[object]) -> bool:
    it = iter(of)
    return all(any(x is y for y in it) for x in items)


# ---------------------------------------------------------------- what the provider sent


class Script:
    """What the scripted provider sent that must reach the outputs as it is, in order: audio (but
    not a response's audio sent after the user interrupted it), transcripts, usage, in-band errors."""

    def __init__(self) -> None:
        self.expected: list[BidiOutputEvent] = []
        self.usage = [0, 0, 0]
        self.open: str | None = None
        self.interrupted: set[str] = set()

    def pushed(self, events: Sequence[Any], end: End | None) -> None:
        for event in events:
            if isinstance(event, BidiResponseStartEvent):
                self.open = event.response_id
            elif isinstance(event, BidiResponseCompleteEvent):
                self.open = None
            elif isinstance(event, BidiSpeechStartedEvent) and self.open is not None:
                self.interrupted.add(self.open)
                self.open = None
            elif isinstance(event, BidiAudioStreamEvent):
                if event.response_id not in self.interrupted:
                    self.expected.append(event)
            elif isinstance(event, BidiTranscriptStreamEvent | BidiErrorEvent):
                self.expected.append(event)
            elif isinstance(event, BidiUsageEvent):
                self.expected.append(event)
                self.usage = [
                    self.usage[0] + event.input_tokens,
                    self.usage[1] + event.output_tokens,
                    self.usage[2] + event.total_tokens,
                ]
        if end is not None:
            self.open = None


def from_provider(event: object) -> bool:
    if isinstance(event, BidiErrorEvent):
        return event.code == "rate_limited"  # the script's in-band error; the core's own have other codes
    return isinstance(event, BidiAudioStreamEvent | BidiTranscriptStreamEvent | BidiUsageEvent)


class Emitted:
    """A conversation observer (``BidiAgent(observers=...)``): every output event the agent emits, in
    the order it emits them, called in the emitting step itself (no queue, no task to cancel)."""

    observes_audio = True

    def __init__(self) -> None:
        self.events: list[BidiOutputEvent] = []

    def on_start(self, info: Any) -> None:
        return None

    def on_event(self, event: Any) -> None:
        if isinstance(event, OUTPUT_EVENTS):
            self.events.append(event)

    def on_playback(self, report: Any) -> None:
        return None

    def on_end(self) -> None:
        return None


# ---------------------------------------------------------------- the machine


class Expected:
    """The test's model of one conversation: what the script sent, what the agent emitted (the
    observer's record) and how far the lanes have seen it, the time they have not seen yet."""

    def __init__(self, script: Script, emitted: Emitted) -> None:
        self.script = script
        self.emitted = emitted.events
        self.lanes: list[tuple[WatchedOutput, Lane]] = []
        self.fed = 0
        self.time_ms = 0.0


class ShellMachine(AgentMachine):
    tools = (lookup,)
    step_ms = 0.0
    invalid_tool_arguments = False

    def __init__(self) -> None:
        self._expected: dict[int, Expected] = {}
        """The test's model of each conversation still running, by its number."""
        super().__init__()

    def make_agent(self, model: ScriptedModel) -> Any:
        script = Script()
        push = model.push

        def recording_push(*events: Any, end: End | None = None) -> None:
            push(*events, end=end)
            script.pushed(events, end)

        model.push = recording_push  # type: ignore[method-assign]
        emitted = Emitted()
        self._next = Expected(script, emitted)
        return BidiAgent(model=model, tools=self.tools, reconnect=FAST, drain_timeout_s=0.2, observers=[emitted])

    @precondition(AgentMachine._connected)
    @rule(chunks=st.integers(1, 3))
    def model_sends_audio(self, chunks: int) -> None:
        """Audio alone (no transcript behind it): a step can end with an output in the middle of a chunk
        and nothing queued behind it, so what comes next is offered to an output that is busy."""

        def act(conv: Conversation) -> None:
            rid = conv.open_response or self._new_response(conv)
            conv.model.push(*self._audio(conv, rid, chunks))

        self._step(act)

    def make_outputs(self, speaker: Speaker) -> Sequence[Any]:
        return [PhoneLine(speaker), Printer()]

    async def _prepare(self) -> tuple[Conversation, list[Any], list[Any]]:
        conv, inputs, outputs = await super()._prepare()
        expected = self._expected[conv.number] = self._next
        lanes = expected.lanes
        for watched in conv.outputs:
            inner = watched.inner
            if isinstance(inner, PhoneLine):
                inner.conv = conv
                lanes.append((watched, line_lane()))
            elif isinstance(inner, Printer):
                lanes.append((watched, printer_lane()))
            else:
                assert isinstance(inner, SlowOutput)
                lanes.append((watched, slow_lane()))
        return conv, inputs, outputs

    def _tick(self, conv: Conversation, ms: float) -> None:
        super()._tick(conv, ms)
        for watched in conv.user_outputs:
            if isinstance(watched.inner, PhoneLine):
                watched.inner.time_passed()
        self._expected[conv.number].time_ms += ms

    def _feed(self, expected: Expected) -> None:
        """Play what the conversation emitted since the last quiet point, then the time that passed,
        through each lane (events first: no audio is emitted in a step where time passes)."""
        new = expected.emitted[expected.fed :]
        expected.fed = len(expected.emitted)
        for _, lane in expected.lanes:
            for event in new:
                if purges_before(event):
                    lane.purge()
                lane.arrive(event)
            lane.time(expected.time_ms)
        expected.time_ms = 0.0

    def _check(self, conv: Conversation) -> None:
        super()._check(conv)
        expected = self._expected[conv.number]
        if not conv.free_running:  # else the conversation is being ended: checked in _finished
            self._check_lanes(conv, expected)
        assert conv.events == expected.emitted, "the harness's plain output missed or reordered events"
        sent = [e for e in expected.emitted if from_provider(e)]
        script = expected.script
        assert sent == script.expected, f"the outputs got {_story(sent)}\nthe provider sent {_story(script.expected)}"
        usage = conv.agent.usage
        assert [usage.input_tokens, usage.output_tokens, usage.total_tokens] == script.usage

    def _check_lanes(self, conv: Conversation, expected: Expected) -> None:
        self._feed(expected)
        # The agent's queue of each output, in run()'s order: ours, the harness's slow one, its observer.
        queues = conv.agent._outputs
        assert len(queues) == len(expected.lanes) + 1
        for (watched, lane), queue in zip(expected.lanes, queues, strict=False):
            waiting = list(queue._items)
            assert waiting == list(lane.queue), (
                f"{watched.name}'s queue holds {_story(waiting)}\nthe model expected {_story(lane.queue)}"
            )
        for watched, lane in expected.lanes:
            assert watched.events == lane.received, (
                f"{watched.name} received {_story(watched.events)}\nthe model expected {_story(lane.received)}"
            )
            if isinstance(watched.inner, PhoneLine):
                handled = watched.inner.handled
                assert handled == lane.handled, f"the line played {_story(handled)}, not {_story(lane.handled)}"

    async def _finished(self, conv: Conversation) -> None:
        await super()._finished(conv)
        expected = self._expected.pop(conv.number)
        emitted = expected.emitted[expected.fed :]
        for watched, lane in expected.lanes:
            before = lane.received
            assert watched.events[: len(before)] == before, f"{watched.name}: what it received changed"
            rest = watched.events[len(before) :]
            waiting = [*lane.queue, *emitted]
            assert is_subsequence(rest, waiting), (
                f"{watched.name} received at the end {_story(rest)}, not a subsequence of {_story(waiting)}"
            )
        if not conv.cancelled:
            closes = [e for e in expected.emitted if isinstance(e, BidiConnectionCloseEvent)]
            assert len(closes) == 1, f"{len(closes)} close events"


def _story(events: Sequence[object]) -> str:
    def one(e: object) -> str:
        rid = getattr(e, "response_id", None)
        return type(e).__name__.removeprefix("Bidi").removesuffix("Event") + (f"({rid})" if rid else "")

    return "[" + ", ".join(one(e) for e in events) + "]"


SHELL_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@SHELL_SETTINGS
class ShellOnAsyncio(ShellMachine):
    backend = "asyncio"


@SHELL_SETTINGS
class ShellOnTrio(ShellMachine):
    backend = "trio"


TestShellOnAsyncio = ShellOnAsyncio.TestCase
TestShellOnTrio = ShellOnTrio.TestCase
