"""Property-test a custom output under barge-in: a phone line that buffers what it is sent."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis.stateful import invariant

from adapters.testing.agent_machine import DEFAULT_SETTINGS, AgentMachine
from adapters.testing.harness import Speaker
from bidi_core import BidiAgent, BidiAudioStreamEvent, BidiInterruptionEvent, BidiOutputEvent, ReconnectPolicy


class PhoneLine:
    """Sends the assistant's audio down a phone line, which plays it in real time."""

    def __init__(self, line: Speaker) -> None:
        self.line = line

    async def start(self, agent: Any) -> None:
        return None

    async def __call__(self, event: BidiOutputEvent) -> None:
        if isinstance(event, BidiAudioStreamEvent):
            self.line.write(event.audio)
        elif isinstance(event, BidiInterruptionEvent):
            self.line.clear()  # the user talks: the line drops what it has not played

    async def stop(self) -> None:
        return None


@settings(DEFAULT_SETTINGS, max_examples=10)  # while you iterate; DEFAULT_SETTINGS in CI
class PhoneLineMachine(AgentMachine):
    def make_agent(self, model: Any) -> BidiAgent:
        quick = ReconnectPolicy(initial_backoff_s=0.001, max_backoff_s=0.002)
        return BidiAgent(model=model, reconnect=quick, drain_timeout_s=0.5)

    def make_outputs(self, speaker: Speaker) -> list[Any]:
        return [PhoneLine(speaker)]

    @invariant()
    def the_line_is_cleared_at_every_interruption(self) -> None:
        interruptions = [e for e in self.events if isinstance(e, BidiInterruptionEvent)]
        assert self.speaker.clears >= len(interruptions)


class PhoneLineMachineOnTrio(PhoneLineMachine):  # the same settings
    backend = "trio"


TestPhoneLine = PhoneLineMachine.TestCase
TestPhoneLineOnTrio = PhoneLineMachineOnTrio.TestCase
