"""Cancel a whole conversation anywhere, over each simulator, and nothing of ours is left.

One scripted conversation per provider (its simulator on 127.0.0.1): a tool
call and its answer, a long spoken story the user talks over (barge-in), a
line that makes the service drop the connection (a reconnect), then "bye",
answered with ``stop_conversation``. Hypothesis picks the point of the cut:
the N-th output event the agent delivers, then K more scheduler checkpoints
of a task of the test's own (no wall time), so the cut also falls between
output events: inside a write, a tool, a reconnect's handshake. There the test
cancels the scope around ``run()``; afterwards

* the cancellation propagated unchanged: the scope caught it, nothing else was raised;
* no task of ours (``our_tasks()``: the agent's, its outputs', inputs', tools', timers');
* no thread beyond those before (pooled worker threads the event loop keeps
  idle, AnyIO's, Trio's and asyncio's, are not ours and are left out);
* no file descriptor beyond those before (``/proc/self/fd``, counted before
  the simulator starts and after it stopped: its listener is the test's own).

A small sample runs in the default suite; ``nox -s sweep`` sets
``BIDI_SWEEP_EXAMPLES`` (points per provider and backend) for the long run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bidi_core import BidiAgent, BidiConnectionRestartEvent, stop_conversation, tool
from ports.events import (
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    BidiResponseCompleteEvent,
)
from tests.support import after_checkpoints, our_tasks
from tests.test_providers_common import FAST_RETRY, PROVIDERS, Provider, _at

EXAMPLES = int(os.environ.get("BIDI_SWEEP_EXAMPLES", "5"))
MAX_POINT = 90  # a few more output events than the whole conversation delivers (67-81): the last ones end by itself
MAX_STEPS = 24
"""Checkpoints after the output event: 90 x 25 = 2,250 distinct points per provider, so the long run's
340 per provider and backend are all different."""

_POOLED_THREADS = ("AnyIO worker thread", "Trio thread", "asyncio_", "ThreadPoolExecutor")


@pytest.fixture(params=PROVIDERS, ids=[p.name for p in PROVIDERS])
def provider(request: pytest.FixtureRequest) -> Provider:
    return request.param  # type: ignore[no-any-return]


@tool
async def get_weather(location: str) -> str:
    """Weather for a place.

    Args:
        location: A city.
    """
    return f"sunny in {location}"


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _our_threads() -> set[int]:
    return {t.ident or 0 for t in threading.enumerate() if not t.name.startswith(_POOLED_THREADS)}


class User:
    """The user of the script: one input (typed lines and the microphone) that moves on as the answers come,
    and one output that sees them. ``cut_at``: the output event at which ``cancel`` is called."""

    def __init__(self, provider: Provider, cut_at: int, cancel: Any) -> None:
        self.send, self.next = anyio.create_memory_object_stream[Any](16)
        self.seen = 0
        self.cut_at = cut_at
        self.cancel = cancel
        self.stage = "weather"
        self.story_ms = 0
        rate = provider.input_rate
        s = provider.sim
        self.speech = BidiAudioInputEvent(
            s.loud(400, **_at(provider)) + s.silence(700, **_at(provider)), sample_rate=rate
        )
        self.send.send_nowait("what's the weather in Paris")

    async def __call__(self) -> Any:
        return await self.next.receive()

    def close(self) -> None:
        self.send.close()
        self.next.close()

    def _say(self, item: Any) -> None:
        with contextlib.suppress(anyio.ClosedResourceError):  # the conversation was cut before this line
            self.send.send_nowait(item)

    async def output(self, event: BidiOutputEvent) -> None:
        self.seen += 1
        if self.seen == self.cut_at:
            self.cancel()
        if self.stage == "weather" and isinstance(event, BidiResponseCompleteEvent):
            if event.stop_reason == "complete":
                self.stage = "story"
                self._say("tell me a story")
        elif self.stage == "story" and isinstance(event, BidiAudioStreamEvent):
            self.story_ms += event.duration_ms
            if self.story_ms >= 200:
                self.stage = "barge"
                self._say(self.speech)
        elif self.stage == "barge" and isinstance(event, BidiInterruptionEvent):
            self.stage = "answered"
        elif self.stage == "answered" and isinstance(event, BidiResponseCompleteEvent):
            if event.stop_reason == "complete":  # the answer to what the user said over the story
                self.stage = "drop"
                self._say("please drop")
        elif self.stage == "drop" and isinstance(event, BidiConnectionRestartEvent):
            self.stage = "bye"
            self._say("bye now")


def _scenario(provider: Provider) -> Any:
    s = provider.sim
    return s.Scenario(
        rules=[
            # First: after the reconnect, a service may take the seeded history in with "bye".
            s.Rule(text_contains="bye", reply=s.Reply(tool_calls=[s.ToolCall("stop_conversation", {}, "call-2")])),
            s.Rule(
                text_contains="weather",
                reply=s.Reply(tool_calls=[s.ToolCall("get_weather", {"location": "Paris"}, "call-1")]),
            ),
            s.Rule(tool_result_for="get_weather", reply=s.Reply(say="It is {result}.")),
            s.Rule(text_contains="story", reply=s.Reply(say="Once upon a time", audio_ms=6000)),
            s.Rule(text_contains="drop", times=1, reply=s.Reply(drop=True)),
        ]
    )


async def _one_point(provider: Provider, cut_at: int, steps: int) -> str:
    """One cut; how it fell."""
    fds, threads = _open_fds(), _our_threads()
    async with provider.start(scenario=_scenario(provider), speedup=4.0) as sim:
        agent = BidiAgent(model=provider.model(sim), tools=[get_weather, stop_conversation], reconnect=FAST_RETRY)
        returned = fired = False
        with anyio.CancelScope() as scope:

            def cancel() -> None:
                nonlocal fired
                fired = True
                scope.cancel()

            async with anyio.create_task_group() as cutter:
                user = User(
                    provider,
                    cut_at,
                    cancel if steps == 0 else lambda: cutter.start_soon(after_checkpoints, steps, cancel),
                )
                with anyio.fail_after(30):  # a hang is a failure, not a stuck suite; never reached when all is well
                    await agent.run([user], [user.output])
                returned = True
                cutter.cancel_scope.cancel()  # run() ended by itself before the cut came
        user.close()
        # Nothing but the cut cancelled the scope, and nothing else was raised (it would have escaped here).
        assert scope.cancel_called == fired
        if steps == 0:
            # Cut inside an output: run() cannot end without a checkpoint, so the cancellation ended it and the
            # scope caught it. Not cut (the point lies past the end): run() ended by itself.
            assert fired == (user.seen >= cut_at)
            assert scope.cancelled_caught != returned, (fired, returned)
        elif fired:
            # Cut between two checkpoints of anything: run() raised the cancellation, or had just finished.
            assert scope.cancelled_caught or returned
        else:
            assert returned and not scope.cancelled_caught
        assert our_tasks() == set()
        assert agent.phase.value == "closed"
    assert _our_threads() <= threads
    assert _open_fds() <= fds
    if fired:
        return "cut: run() raised the cancellation" if not returned else "cut: as run() ended"
    return "not cut: past the end"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts file descriptors in /proc/self/fd")
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut_at=st.integers(min_value=1, max_value=MAX_POINT), steps=st.integers(min_value=0, max_value=MAX_STEPS))
async def test_cancelling_a_whole_conversation_anywhere_leaves_nothing(
    provider: Provider, cut_at: int, steps: int
) -> None:
    # How the points fell: ``--hypothesis-show-statistics``, as ``nox -s sweep`` runs it.
    event(await _one_point(provider, cut_at, steps))


async def test_the_uncut_conversation_runs_every_stage_and_ends_by_itself(provider: Provider) -> None:
    """The script does what the sweep relies on: a tool call, a barge-in, a reconnect, and the end by
    ``stop_conversation``, in fewer than ``MAX_POINT`` output events."""
    async with provider.start(scenario=_scenario(provider), speedup=4.0) as sim:
        agent = BidiAgent(model=provider.model(sim), tools=[get_weather, stop_conversation], reconnect=FAST_RETRY)
        user = User(provider, MAX_POINT + 1, lambda: None)
        with anyio.fail_after(30):
            await agent.run([user], [user.output])
        user.close()
    assert user.stage == "bye"
    assert user.seen < MAX_POINT
