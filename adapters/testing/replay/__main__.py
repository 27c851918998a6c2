"""``python -m adapters.testing.replay FILE [--png OUT]``: a recording's timeline (``docs/recording.md``)."""

from __future__ import annotations

import argparse
import sys

import anyio

from adapters.testing.replay.recording_file import load_recording
from adapters.testing.replay.timeline import build_timeline, format_timeline
from ports.errors import BidiUsageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.testing.replay",
        description="Print a recorded session's timeline: who said what, when, tool calls, interruptions, latencies.",
    )
    parser.add_argument("recording", help="a JSON Lines recording (ConnectionOptions(record_to=...))")
    parser.add_argument("--png", metavar="OUT", help="also draw the timeline into this PNG (needs matplotlib)")
    parser.add_argument("--title", help="the picture's title (default: the provider and model)")
    args = parser.parse_args(argv)
    try:
        recording = load_recording(args.recording)
        timeline = anyio.run(build_timeline, recording)
    except (OSError, BidiUsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(format_timeline(timeline))
    if args.png:
        from adapters.testing.replay.plot import MatplotlibMissing, draw_timeline

        try:
            draw_timeline(timeline, args.png, title=args.title)
        except MatplotlibMissing as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"drew {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
