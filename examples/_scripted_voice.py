"""What the voice examples share besides what they demonstrate: the scripted
provider (a greeting in a synthetic voice, then stop_conversation once the
user says goodbye), the scripted user, and the ``--wav`` option with the
audio errors it is the way around.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import numpy as np

from adapters.audio import AudioDeviceError, AudioUnavailableError, BidiAudioOutput, WavFileDevice
from adapters.testing import Expect, ScriptedModel, Step
from bidi_core import (
    BidiAudioStreamEvent,
    BidiResponseCompleteEvent,
    BidiResponseStartEvent,
    BidiTextInputEvent,
    BidiToolUseEvent,
    BidiTranscriptStreamEvent,
)
from ports.events import ModelEvent
from ports.io import AgentView
from ports.model import ModelCapabilities


def speak(rid: str, text: str, seconds: float, pitch_hz: float, rate: int = 24000) -> list[ModelEvent]:
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


def scripted_model(
    greeting: str,
    seconds: float,
    pitch_hz: float,
    *,
    farewell: str | None = None,
    capabilities: ModelCapabilities | None = None,
) -> ScriptedModel:
    """The provider: says ``greeting`` (a tone of ``pitch_hz`` lasting ``seconds``) as response "r1";
    once the user says "Goodbye", answers ``farewell`` in text (response "r2") if given, and calls
    stop_conversation.
    """
    goodbye: list[ModelEvent] = []
    if farewell is not None:
        goodbye = [
            BidiResponseStartEvent("r2"),
            BidiTranscriptStreamEvent(delta=farewell, text=farewell, role="assistant", is_final=True, response_id="r2"),
            BidiResponseCompleteEvent("r2", "complete"),
        ]
    return ScriptedModel(
        [
            Step(
                emit=[
                    BidiResponseStartEvent("r1"),
                    *speak("r1", greeting, seconds, pitch_hz),
                    BidiResponseCompleteEvent("r1", "complete"),
                ]
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="Goodbye"),
                emit=[*goodbye, BidiToolUseEvent("call-1", "stop_conversation", {})],
            ),
        ],
        model_id="scripted-voice",
        capabilities=capabilities,
    )


class ScriptedUser:
    """The user's part: says goodbye once the greeting has been heard (a real user would speak).

    With ``echo``, prints what it says as ``You: ...``, like a text input would show it.
    """

    def __init__(self, speakers: BidiAudioOutput, *, echo: bool = False) -> None:
        self._speakers = speakers
        self._echo = echo
        self._said = False

    async def start(self, agent: AgentView) -> None:
        return None

    async def __call__(self) -> str:
        if self._said:
            await anyio.sleep_forever()
        await self._speakers.wait_played("r1")
        self._said = True
        if self._echo:
            print("You: Goodbye")
        return "Goodbye"

    async def stop(self) -> None:
        return None


def wav_option(parser: argparse.ArgumentParser) -> None:
    """``--wav OUT.wav``: write what the speakers would play to a WAV file instead."""
    parser.add_argument("--wav", metavar="OUT.wav", help="write what the speakers would play to this WAV file")


def speakers_or_wav(wav: str | None) -> WavFileDevice | None:
    """The ``backend`` for BidiAudioIO: a WAV file with ``--wav``, else None (the real devices)."""
    return WavFileDevice(wav) if wav else None


@contextmanager
def exit_on_audio_error() -> Iterator[None]:
    """No device, or the wrong one: say so (and what --wav is for) and exit with 1, no traceback."""
    try:
        yield
    except (AudioUnavailableError, AudioDeviceError) as exc:
        print(f"error: {exc}\n(run with --wav out.wav to write the audio to a file)", file=sys.stderr)
        raise SystemExit(1) from None
