"""Voice and text together (the reference quickstart's "Adding Text I/O"):
audio in and out, and the transcripts printed as the model speaks.

The provider is played by the in-memory ScriptedModel (a synthetic voice: a
tone with its transcript); a scripted user says goodbye once the answer has
been heard, and the model ends the conversation with stop_conversation.

    python examples/voice_and_text.py [--wav OUT.wav] [--backend trio] [--debug]

--wav OUT.wav writes what the speakers would play to a WAV file instead.
"""

from __future__ import annotations

import argparse
import sys

import anyio
import numpy as np
from _runner import run

from adapters.audio import AudioDeviceError, AudioUnavailableError, BidiAudioIO, BidiAudioOutput, WavFileDevice
from adapters.testing import Expect, ScriptedModel, Step
from adapters.text import BidiTextIO
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
from ports.io import AgentView


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
                    *speak("r1", "Hi! You can hear me and read me at the same time.", 0.6, 330),
                    BidiResponseCompleteEvent("r1", "complete"),
                ]
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="Goodbye"),
                emit=[
                    BidiResponseStartEvent("r2"),
                    BidiTranscriptStreamEvent(
                        delta="Bye!", text="Bye!", role="assistant", is_final=True, response_id="r2"
                    ),
                    BidiResponseCompleteEvent("r2", "complete"),
                    BidiToolUseEvent("call-1", "stop_conversation", {}),
                ],
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
        print("You: Goodbye")
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
    agent = BidiAgent(model=scripted_model(), tools=[stop_conversation], system_prompt="You are a helpful assistant.")

    # Setup both audio and text I/O
    audio_io = BidiAudioIO(backend=WavFileDevice(OPTIONS.wav) if OPTIONS.wav else None)
    text_io = BidiTextIO()

    try:
        await agent.run(
            inputs=[audio_io.input(), ScriptedUser(audio_io.output())],
            outputs=[audio_io.output(), text_io.output()],  # Both audio and text
        )
    except (AudioUnavailableError, AudioDeviceError) as exc:
        print(f"error: {exc}\n(run with --wav out.wav to write the audio to a file)", file=sys.stderr)
        raise SystemExit(1) from None
    played = audio_io.output().stats.played_ms
    print(f"Played {played / 1000:.1f} s of audio." + (f" Wrote {OPTIONS.wav}." if OPTIONS.wav else ""))


if __name__ == "__main__":
    run(main, __doc__ or "")
