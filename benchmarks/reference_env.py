"""The reference's own virtualenv (Strands Agents with its OpenAI extra).

It lives in ``benchmarks/.venv-reference`` (gitignored) and is kept between
runs: a marker file records the requirement it was built for, so a new pin
rebuilds it. ``BIDI_BENCH_REFERENCE_PYTHON`` points the benchmarks at an
interpreter that already has the reference instead. If it cannot be
installed, the caller gets the reason and the reference's column says
"unavailable: <reason>" rather than disappearing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REFERENCE_VERSION = "1.62.0"
REQUIREMENT = f"strands-agents[bidi-openai]=={REFERENCE_VERSION}"
"""The version these benchmarks were written and checked against."""
VENV = Path(__file__).resolve().parent / ".venv-reference"
CHECK = (
    "import importlib.metadata as m, warnings; warnings.simplefilter('ignore'); "
    "import strands.bidi, websockets; print(m.version('strands-agents'), m.version('websockets'))"
)


def _python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def ensure(log: object = print) -> tuple[str | None, str]:
    """``(python, versions)`` of a working reference environment, or ``(None, reason)``."""
    override = os.environ.get("BIDI_BENCH_REFERENCE_PYTHON")
    candidate = Path(override) if override else _python()
    marker = VENV / ".installed"
    fresh = override is None and not (marker.exists() and marker.read_text() == REQUIREMENT)
    if fresh:
        log(f"  installing the reference into {VENV} ({REQUIREMENT}) ...")  # type: ignore[operator]
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(VENV)],
            [str(_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REQUIREMENT],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                return None, f"{' '.join(step[-2:])} failed: {_tail(done.stderr or done.stdout)}"
    try:
        done = subprocess.run([str(candidate), "-c", CHECK], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot run {candidate}: {exc}"
    if done.returncode != 0:
        return None, f"import failed: {_tail(done.stderr)}"
    if fresh:
        marker.write_text(REQUIREMENT)
    strands, websockets = done.stdout.split()
    return str(candidate), f"strands-agents {strands}, websockets {websockets}"
