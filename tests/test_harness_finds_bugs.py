"""The property-test harness finds bugs users write, and shrinks each to a short script.

Three planted bugs, each a plausible mistake in code built on bidi-core:

* a phone-line output that forgets to tell the line to drop its buffered audio
  when the user barges in (the user keeps hearing the old answer);
* a tool that saves in the background with a fire-and-forget task (it
  outlives the conversation);
* a browser input that throws away what the user types while the connection
  is being replaced ("the model is not there").

:class:`AgentMachine`, with the settings it ships, must fail on each, on
asyncio and on Trio, and shrink the failure to a few steps; the correct
versions (all three in one agent) must pass.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import anyio
import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from adapters.testing.agent_machine import AgentMachine
from adapters.testing.harness import ScriptedUser, Speaker
from adapters.testing.scripted import ScriptedModel
from bidi_core import (
    BidiAgent,
    BidiAudioStreamEvent,
    BidiConnectionRestartEvent,
    BidiConnectionStartEvent,
    BidiInterruptionEvent,
    BidiOutputEvent,
    ReconnectPolicy,
    tool,
)

FAST = ReconnectPolicy(initial_backoff_s=0.001, max_backoff_s=0.002, stable_after_s=3600)
"""Reconnects at once; a dropped connection that said nothing always counts as a failure. With
the default ``stable_after_s`` (10 s of wall clock) whether it counts would depend on how fast the
machine runs the steps, and hypothesis, replaying a script to shrink it, would see a different
conversation each time on a loaded machine and give up shrinking early."""

# ---------------------------------------------------------------- a phone line that keeps talking


class PhoneLine:
    """Sends the assistant's audio down a phone line, which buffers it and plays it in real time."""

    def __init__(self, line: Speaker, *, clears_on_interruption: bool) -> None:
        self.line = line
        self.clears_on_interruption = clears_on_interruption

    async def start(self, agent: Any) -> None:
        return None

    async def __call__(self, event: BidiOutputEvent) -> None:
        if isinstance(event, BidiAudioStreamEvent):
            self.line.write(event.audio)
        elif isinstance(event, BidiInterruptionEvent) and self.clears_on_interruption:
            self.line.clear()  # the line's "clear" message: drop what it has not played yet

    async def stop(self) -> None:
        return None


# ---------------------------------------------------------------- a tool that leaks a task

notes: list[str] = []


async def sync_to_the_cloud(note: str) -> None:
    """The cloud is down today: this waits until it is back (it never is)."""
    await anyio.Event().wait()


def fire_and_forget(note: str) -> None:
    """Start syncing and return at once (the bug: nothing waits for the task, nothing stops it)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio

        trio.lowlevel.spawn_system_task(sync_to_the_cloud, note)
    else:
        task = loop.create_task(sync_to_the_cloud(note))
        background.add(task)
        task.add_done_callback(background.discard)


background: set[Any] = set()


@tool
async def remember(note: str) -> str:
    """Remember a note for later.

    Args:
        note: What to remember.
    """
    notes.append(note)
    fire_and_forget(note)
    return "Noted."


@tool(name="remember")
async def remember_fixed(note: str) -> str:
    """Remember a note for later.

    Args:
        note: What to remember.
    """
    notes.append(note)
    with anyio.move_on_after(0.001):  # try to sync now, briefly; nothing outlives the call
        await sync_to_the_cloud(note)
    return "Noted."


# ---------------------------------------------------------------- a browser input that drops text


class BrowserInput:
    """Text the user types in a browser page. It also watches the conversation (as an output) to
    show whether the assistant is connected; the bug: text typed while it is not is thrown away."""

    def __init__(self, user: ScriptedUser, *, drops_while_reconnecting: bool) -> None:
        self.user = user
        self.drops = drops_while_reconnecting
        self.connected = True

    async def start(self, agent: Any) -> None:
        return None

    async def __call__(self) -> Any:
        while True:
            typed = await self.user.next()
            if self.connected or not self.drops:
                return typed

    async def stop(self) -> None:
        return None

    async def watch(self, event: BidiOutputEvent) -> None:
        if isinstance(event, BidiConnectionRestartEvent):
            self.connected = False
        elif isinstance(event, BidiConnectionStartEvent):
            self.connected = True


# ---------------------------------------------------------------- the machines


def machine(backend: str, *, phone_bug: bool = False, tool_bug: bool = False, input_bug: bool = False) -> type:
    class PlantedBugs(AgentMachine):
        tools = (remember if tool_bug else remember_fixed,)

        def make_agent(self, model: ScriptedModel) -> BidiAgent:
            return BidiAgent(model=model, tools=self.tools, reconnect=FAST, drain_timeout_s=0.5)

        def make_inputs(self, user: ScriptedUser) -> list[Any]:
            self.browser = BrowserInput(user, drops_while_reconnecting=input_bug)
            return [self.browser]

        def make_outputs(self, speaker: Speaker) -> list[Any]:
            return [PhoneLine(speaker, clears_on_interruption=not phone_bug), self.browser.watch]

    PlantedBugs.backend = backend
    PlantedBugs.__name__ = PlantedBugs.__qualname__ = f"PlantedBugs_{backend}"
    return PlantedBugs


def shipped_settings(machine_class: type) -> settings:
    """The settings the harness ships, without the example database (each run finds the bug afresh)."""
    return settings(machine_class.TestCase.settings, database=None)


def falsifying_steps(error: BaseException) -> list[str]:
    """The shrunk script hypothesis printed: its ``state.<step>(...)`` lines, teardown excluded."""
    text = "\n".join(getattr(error, "__notes__", []))
    return re.findall(r"^state\.(?!teardown\b)\w+\(.*$", text, flags=re.MULTILINE)


BUGS = {
    "phone_bug": "the speaker played audio of r1 after its interruption",
    "tool_bug": "tasks left running after the conversation ended",
    "input_bug": "input never reached the model",
}


SEARCH_BACKENDS = os.environ.get("BIDI_HARNESS_SEARCH_BACKENDS", "trio").split(",")
"""Where the planted bugs are searched for. The search is the suite's longest test (10-90 s a bug, asyncio's
three times Trio's: the harness's quiet-wait polls there), so the default suite searches on Trio and
``nox -s harness-search`` on both; on asyncio the harness runs in the default suite through
``test_the_correct_versions_pass`` and tests/test_harness_examples.py."""


SEARCH_FIXED = "BIDI_HARNESS_SEARCH_BACKENDS" not in os.environ
"""The default suite searches from a fixed seed (hypothesis's ``derandomize``): a fresh search took 10 to
90 s a bug, a spread the suite's time budget cannot hold. ``nox -s harness-search`` searches afresh."""


# A hang guard: a hundred scripted conversations and the shrinking take 10-90 s, more on a busy machine.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("anyio_backend", SEARCH_BACKENDS)
@pytest.mark.parametrize("bug", list(BUGS))
def test_the_harness_finds_a_planted_bug_and_shrinks_it(bug: str, anyio_backend: str) -> None:
    planted = machine(anyio_backend, **{bug: True})
    chosen = shipped_settings(planted)
    if SEARCH_FIXED:
        chosen = settings(chosen, derandomize=True)
    with pytest.raises(AssertionError, match=BUGS[bug]) as caught:
        run_state_machine_as_test(planted, settings=chosen)
    steps = falsifying_steps(caught.value)
    # Typically 1 to 4 steps. Hypothesis's shrinking is a search, not a guarantee: for the input bug it
    # sometimes settles on a 9-step script that starts with four dropped connections (seen under load).
    # The point is a script a person reads at a glance, not the shortest one.
    assert 1 <= len(steps) <= 12, steps


@pytest.mark.timeout(300)  # a hang guard, as above
def test_the_correct_versions_pass(anyio_backend: str) -> None:
    """All three fixed, in one agent (fewer examples than the default: the bug runs above use those)."""
    correct = machine(anyio_backend)
    run_state_machine_as_test(correct, settings=settings(shipped_settings(correct), max_examples=25))
