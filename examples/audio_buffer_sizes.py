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

from _runner import run
from _scripted_voice import ScriptedUser, exit_on_audio_error, scripted_model, speakers_or_wav, wav_option

from adapters.audio import BidiAudioIO
from bidi_core import BidiAgent, stop_conversation
from ports.audio import AudioFormat
from ports.model import ModelCapabilities


async def main(args: argparse.Namespace) -> None:
    # Configure model audio settings: 48 kHz in (higher quality input), 24 kHz out (standard output).
    capabilities = ModelCapabilities(input_audio=AudioFormat(48000), output_audio=AudioFormat(24000))
    model = scripted_model(
        "Every chunk of this answer waits its turn in the speaker buffer.", 1.2, 392, capabilities=capabilities
    )
    agent = BidiAgent(model=model, tools=[stop_conversation])

    # Configure I/O buffer settings
    audio_io = BidiAudioIO(
        input_buffer_size=10,  # Max input queue size (blocks)
        output_buffer_size=20,  # Max output queue size (chunks)
        input_frames_per_buffer=512,  # Input chunk size (frames at the model's input rate)
        output_frames_per_buffer=512,  # Output chunk size (frames at the model's output rate)
        backend=speakers_or_wav(args.wav),
    )

    with exit_on_audio_error():
        await agent.run(inputs=[audio_io.input(), ScriptedUser(audio_io.output())], outputs=[audio_io.output()])

    mic, speakers = audio_io.input(), audio_io.output()
    for name, config in (("microphone", mic.stream_config), ("speakers", speakers.stream_config)):
        if config is not None:
            print(f"{name}: {config.sample_rate} Hz x {config.channels}, {config.frames_per_buffer} frames per block")
    i, o = mic.stats, speakers.stats
    print(f"microphone: {i.blocks} blocks, {i.dropped_blocks} dropped ({i.dropped_ms:.0f} ms), {i.wakeups} wakeups")
    print(
        f"speakers: played {o.played_ms:.0f} ms, {o.underruns} underruns, "
        f"waited for room {o.backpressure_waits} times" + (f"; wrote {args.wav}" if args.wav else "")
    )


if __name__ == "__main__":
    run(main, __doc__ or "", wav_option)
