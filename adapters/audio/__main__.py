"""``python -m adapters.audio``: list the audio devices PortAudio sees."""

from __future__ import annotations

import sys

from adapters.audio import AudioUnavailableError, format_devices, list_devices
from adapters.audio._errors import NO_DEVICE_HINT


def main() -> int:
    try:
        devices = list_devices()
    except AudioUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not devices:
        print(f"No audio devices found: PortAudio is installed but sees none; {NO_DEVICE_HINT}", file=sys.stderr)
        return 1
    print(format_devices(devices))
    print('Choose one with BidiAudioIO(input_device=<index>) or by name: BidiAudioIO(output_device="<part of name>").')
    return 0


if __name__ == "__main__":
    sys.exit(main())
