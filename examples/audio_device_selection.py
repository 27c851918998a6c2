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

import anyio.to_thread
from _runner import run
from _scripted_voice import ScriptedUser, exit_on_audio_error, scripted_model, speakers_or_wav, wav_option

from adapters.audio import BidiAudioIO, format_devices
from bidi_core import BidiAgent, stop_conversation


def device(value: str | None) -> int | str | None:
    """An index if it is a number, else (part of) a name."""
    return int(value) if value is not None and value.isdigit() else value


def options(parser: argparse.ArgumentParser) -> None:
    """This example's own options; --backend and --debug are _runner's."""
    parser.add_argument("--input-device", help="an index or (part of) a name; default: the system's")
    parser.add_argument("--output-device", help="an index or (part of) a name; default: the system's")
    wav_option(parser)


async def main(args: argparse.Namespace) -> None:
    # Specify the devices explicitly: by index (input_device_index=1) or by name (output_device="USB")
    audio_io = BidiAudioIO(
        input_device=device(args.input_device),
        output_device=device(args.output_device),
        backend=speakers_or_wav(args.wav),
    )
    model = scripted_model("Testing, testing: can you hear me on this device?", 0.5, 523)
    agent = BidiAgent(model=model, tools=[stop_conversation])

    with exit_on_audio_error():
        devices = await anyio.to_thread.run_sync(audio_io.devices)  # listing may block: not on the event loop
        if devices:
            print(format_devices(devices))
        await agent.run(inputs=[audio_io.input(), ScriptedUser(audio_io.output())], outputs=[audio_io.output()])

    by_index = {d.index: d.name for d in devices}
    mic, speakers = audio_io.input().stream_config, audio_io.output().stream_config
    if mic is not None and speakers is not None:
        print(f"Recorded from {mic.device}: {by_index[mic.device]!r}.")
        print(f"Played to {speakers.device}: {by_index[speakers.device]!r}.")


if __name__ == "__main__":
    run(main, __doc__ or "", options)
