"""Audio settings and buffer sizes (the reference quickstart's "Configuring
Audio Settings").

The model states its audio formats: a provider adapter reads them from
``provider_config={"audio": {"input_rate": 48000, "output_rate": 24000}}`` and
declares them in its capabilities, which BidiAudioIO opens the devices at
(resampling with soxr if a device refuses a rate). The buffers are sized here
explicitly; at the end the example prints what the devices were opened with
and what the buffers did: microphone blocks dropped because the conversation
fell behind, and the times the speaker buffer was full and the output waited
for it (the 1.2 s answer arrives at once, in 30 chunks, into a buffer of 20).

    python examples/audio_buffer_sizes.py [--wav OUT.wav] [--backend trio] [--debug]

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
from ports.audio import AudioFormat
from ports.io import AgentView
from ports.model import ModelCapabilities


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
    # Configure model audio settings: 48 kHz in (higher quality input), 24 kHz out (standard output).
    capabilities = ModelCapabilities(input_audio=AudioFormat(48000), output_audio=AudioFormat(24000))
    return ScriptedModel(
        [
            Step(
                emit=[
                    BidiResponseStartEvent("r1"),
                    *speak("r1", "Every chunk of this answer waits its turn in the speaker buffer.", 1.2, 392),
                    BidiResponseCompleteEvent("r1", "complete"),
                ]
            ),
            Step(
                expect=Expect(BidiTextInputEvent, text="Goodbye"),
                emit=[BidiToolUseEvent("call-1", "stop_conversation", {})],
            ),
        ],
        model_id="scripted-voice",
        capabilities=capabilities,
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
    agent = BidiAgent(model=scripted_model(), tools=[stop_conversation])

    # Configure I/O buffer settings
    audio_io = BidiAudioIO(
        input_buffer_size=10,  # Max input queue size (blocks)
        output_buffer_size=20,  # Max output queue size (chunks)
        input_frames_per_buffer=512,  # Input chunk size (frames at the model's input rate)
        output_frames_per_buffer=512,  # Output chunk size (frames at the model's output rate)
        backend=WavFileDevice(OPTIONS.wav) if OPTIONS.wav else None,
    )

    try:
        await agent.run(inputs=[audio_io.input(), ScriptedUser(audio_io.output())], outputs=[audio_io.output()])
    except (AudioUnavailableError, AudioDeviceError) as exc:
        print(f"error: {exc}\n(run with --wav out.wav to write the audio to a file)", file=sys.stderr)
        raise SystemExit(1) from None

    mic, speakers = audio_io.input(), audio_io.output()
    for name, config in (("microphone", mic.stream_config), ("speakers", speakers.stream_config)):
        if config is not None:
            print(f"{name}: {config.sample_rate} Hz x {config.channels}, {config.frames_per_buffer} frames per block")
    i, o = mic.stats, speakers.stats
    print(f"microphone: {i.blocks} blocks, {i.dropped_blocks} dropped ({i.dropped_ms:.0f} ms), {i.wakeups} wakeups")
    print(
        f"speakers: played {o.played_ms:.0f} ms, {o.underruns} underruns, "
        f"waited for room {o.backpressure_waits} times" + (f"; wrote {OPTIONS.wav}" if OPTIONS.wav else "")
    )


if __name__ == "__main__":
    run(main, __doc__ or "")
