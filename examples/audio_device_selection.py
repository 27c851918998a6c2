"""Choosing the microphone and the speakers (the reference quickstart's "No
Audio Output" and "Microphone Not Working" fixes).

Devices are picked by index, as in the reference
(``BidiAudioIO(input_device_index=1, output_device_index=2)``), or by name:
``BidiAudioIO(output_device="USB")`` takes the one device whose name contains
"USB" (ignoring case), and says which ones match if several do. The example
prints the devices first, then has a short scripted conversation on the ones
chosen.

    python examples/audio_device_selection.py [--input-device IN] [--output-device OUT]
                                              [--wav OUT.wav] [--backend trio] [--debug]

IN and OUT are an index or (part of) a name, as listed; without them the
system's defaults are used. --wav OUT.wav writes to a WAV file instead of
speakers (its devices are then "WAV input (silence)" and "WAV output (...)").
"""

from __future__ import annotations

import argparse
import sys

import anyio
import anyio.to_thread
import numpy as np
from _runner import run

from adapters.audio import (
    AudioDeviceError,
    AudioUnavailableError,
    BidiAudioIO,
    BidiAudioOutput,
    WavFileDevice,
    format_devices,
)
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
                    *speak("r1", "Testing, testing: can you hear me on this device?", 0.5, 523),
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


def device(value: str | None) -> int | str | None:
    """An index if it is a number, else (part of) a name."""
    return int(value) if value is not None and value.isdigit() else value


def options() -> argparse.Namespace:
    """This example's own options; the rest (--backend, --debug) go to _runner."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--input-device")
    parser.add_argument("--output-device")
    parser.add_argument("--wav", metavar="OUT.wav")
    known, sys.argv[1:] = parser.parse_known_args()
    return known


OPTIONS = options()


async def main() -> None:
    # Specify the devices explicitly: by index (input_device_index=1) or by name (output_device="USB")
    audio_io = BidiAudioIO(
        input_device=device(OPTIONS.input_device),
        output_device=device(OPTIONS.output_device),
        backend=WavFileDevice(OPTIONS.wav) if OPTIONS.wav else None,
    )
    agent = BidiAgent(model=scripted_model(), tools=[stop_conversation])

    try:
        devices = await anyio.to_thread.run_sync(audio_io.devices)  # listing may block: not on the event loop
        if devices:
            print(format_devices(devices))
        await agent.run(inputs=[audio_io.input(), ScriptedUser(audio_io.output())], outputs=[audio_io.output()])
    except (AudioUnavailableError, AudioDeviceError) as exc:
        print(f"error: {exc}\n(run with --wav out.wav to write the audio to a file)", file=sys.stderr)
        raise SystemExit(1) from None

    by_index = {d.index: d.name for d in devices}
    mic, speakers = audio_io.input().stream_config, audio_io.output().stream_config
    if mic is not None and speakers is not None:
        print(f"Recorded from {mic.device}: {by_index[mic.device]!r}.")
        print(f"Played to {speakers.device}: {by_index[speakers.device]!r}.")


if __name__ == "__main__":
    run(main, __doc__ or "")
