"""List the audio devices (the reference quickstart's PyAudio loop under "No
Audio Output"), with what BidiAudioIO needs to pick one: index, name,
channels and default rate, and which ones are the system's defaults.

    python examples/list_audio_devices.py [--backend trio]

The same listing as ``python -m adapters.audio``. Without PortAudio, or with
no device at all, it says what to install or check instead.
"""

from __future__ import annotations

import sys

import anyio.to_thread
from _runner import run

from adapters.audio import AudioUnavailableError, format_devices, list_devices


async def main() -> None:
    try:
        devices = await anyio.to_thread.run_sync(list_devices)  # PortAudio may block: not on the event loop
    except AudioUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if not devices:
        print("No audio devices found: PortAudio is installed but sees none (see the README's 'Audio devices').")
        raise SystemExit(1)
    print(format_devices(devices))
    print()
    print("Pick one by index or by name:")
    print("    BidiAudioIO(input_device_index=1, output_device_index=2)")
    print('    BidiAudioIO(input_device="USB", output_device="Speakers")')


if __name__ == "__main__":
    run(main, __doc__ or "")
