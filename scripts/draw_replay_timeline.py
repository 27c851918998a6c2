"""Record a conversation against the OpenAI simulator and draw its timeline: docs/images/replay-timeline.png.

The conversation of tests/test_replay.py (a tool call, the spoken answer, a story the user interrupts),
recorded with ``ConnectionOptions(record_to=...)`` and drawn by ``python -m adapters.testing.replay --png``.
Run from the repository root: ``python scripts/draw_replay_timeline.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.testing.replay.__main__ import main  # noqa: E402
from tests.test_providers_common import OPENAI  # noqa: E402
from tests.test_replay import _record  # noqa: E402


def run() -> int:
    with tempfile.TemporaryDirectory() as folder:
        recording = Path(folder) / "call.jsonl"
        anyio.run(_record, OPENAI, recording)
        out = ROOT / "docs" / "images" / "replay-timeline.png"
        title = "A recorded call (OpenAI simulator): a tool call, then a barge-in"
        return main([str(recording), "--png", str(out), "--title", title])


if __name__ == "__main__":
    sys.exit(run())
