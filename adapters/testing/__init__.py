"""Test doubles that implement the ports for real: a scripted model today,
provider simulators that speak the wire protocols on 127.0.0.1 as they land."""

from adapters.testing.fake_audio import FakeAudioDevice, FakeStream
from adapters.testing.scripted import End, Expect, ScriptedModel, ScriptedSession, Step, UnconsumedSteps, UnexpectedSend

__all__ = [
    "End",
    "Expect",
    "ScriptedModel",
    "ScriptedSession",
    "Step",
    "UnconsumedSteps",
    "UnexpectedSend",
    "FakeAudioDevice",
    "FakeStream",
]
