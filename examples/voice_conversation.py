"""Your first voice conversation (the reference quickstart's "Your First Voice
Conversation"): the microphone goes to the model, the model's voice to the
speakers.

The provider is played by the in-memory ScriptedModel: it greets you with a
short synthetic voice (a tone, with its transcript). Once the greeting has
been heard, a scripted user says goodbye and the model ends the conversation
with stop_conversation, so this ends by itself. Swap in a real model (and
drop the scripted user) and nothing else changes.

    python examples/voice_conversation.py [--wav OUT.wav] [--backend trio] [--debug]

--wav OUT.wav writes what the speakers would play to a WAV file instead (for
machines without speakers); the microphone then hears silence.
"""

from __future__ import annotations

import argparse
import sys

import anyio
import numpy as np
from _runner import run

from adapters.audio import AudioDeviceError, AudioUnavailableError, BidiAudioIO, BidiAudioOutput, WavFileDevice
from adapters.testing import Expect, ScriptedModel, Step
from bidi_core import (
    BidiAgent,
    BidiAudioStreamEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
    stop_conversation,
)
from ports.events import BidiAudioInputEvent
from ports.io import AgentView
from ports.messages import TextMessage


def speak(rid: str, text: str, seconds: float, pitch_hz: float, rate: int = 24000) -> list[object]:
    """What a provider sends for one spoken sentence: audio in 40 ms chunks, then the transcript."""
    t = np.arange(int(rate * seconds)) / rate
    fade = np.minimum(1.0, np.minimum(t, seconds - t) * 20)  # no click at either end
    pcm = (6000 * fade * np.sin(2 * np.pi * pitch_hz * t)).astype("<i2").tobytes()
    size = rate * 2 * 40 // 1000
    audio = [
        BidiAudioStreamEvent(audio=pcm[i : i + size], sample_rate=rate, response_id=rid)
        for i in range(0, len(pcm), size)
    ]
    return [*audio, BidiTranscriptStreamEvent(delta=text, text=text, role="assistant", is_final=True, response_id=rid)]


def scripted_model() -> ScriptedModel:
    return ScriptedModel(
        [
            Step(
                emit=[
                    BidiResponseStartEvent("r1"),
                    *speak("r1", "Hello! This is what a voice conversation sounds like.", 0.8, 440),
                    BidiResponseCompleteEvent("r1", "complete"),
                ]
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="Goodbye"),
                emit=[BidiToolUseEvent("call-1", "stop_conversation", {})],
            ),
        ],
        model_id="scripted-voice",
    )


class ScriptedUser:
    """The user's part: says goodbye once the greeting has been heard (a real user would speak)."""

    def __init__(self, speakers: BidiAudioOutput) -> None:
        self._speakers = speakers
        self._said = False

    async def start(self, agent: AgentView) -> None:
        return None

    async def __call__(self) -> str:
        if self._said:
            await anyio.sleep_forever()
        await self._speakers.wait_played("r1")
        self._said = True
        return "Goodbye"

    async def stop(self) -> None:
        return None


def options() -> argparse.Namespace:
    """This example's own options; the rest (--backend, --debug) go to _runner."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--wav", metavar="OUT.wav")
    known, sys.argv[1:] = parser.parse_known_args()
    return known


OPTIONS = options()


async def main() -> None:
    model = scripted_model()
    agent = BidiAgent(
        model=model,
        tools=[stop_conversation],
        system_prompt="You are a helpful voice assistant. Keep responses concise and natural.",
    )

    # Setup audio I/O for microphone and speakers
    audio_io = BidiAudioIO(backend=WavFileDevice(OPTIONS.wav) if OPTIONS.wav else None)

    try:
        await agent.run(
            inputs=[audio_io.input(), ScriptedUser(audio_io.output())],
            outputs=[audio_io.output()],
        )
    except (AudioUnavailableError, AudioDeviceError) as exc:
        print(f"error: {exc}\n(run with --wav out.wav to write the audio to a file)", file=sys.stderr)
        raise SystemExit(1) from None

    said = " ".join(m.text for m in agent.messages if isinstance(m, TextMessage) and m.role == "assistant")
    mic = sum(1 for e in model.sent if isinstance(e, BidiAudioInputEvent))
    played = audio_io.output().stats
    print(f"Assistant said: {said}")
    print(
        f"Played {played.played_ms / 1000:.1f} s of the assistant's voice ({played.underruns} underruns); "
        f"sent {mic} blocks of microphone audio to the model." + (f" Wrote {OPTIONS.wav}." if OPTIONS.wav else "")
    )


if __name__ == "__main__":
    run(main, __doc__ or "")
