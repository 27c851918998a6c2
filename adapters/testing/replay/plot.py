"""The timeline drawn as a PNG with matplotlib (the ``plot`` extra; nothing else imports it).

One row per kind of fact: the user's audio as bars (from its first block to
its last), typed lines and tool results as marks, the model's audio per
response as bars (from its first to its last chunk received; an interrupted
one in red), its tool calls, and the barge-ins as vertical lines. Labels carry
the words, shortened.
"""

from __future__ import annotations

import os
from typing import Any

from adapters.testing.replay.timeline import Timeline

__all__ = ["MatplotlibMissing", "draw_timeline"]


class MatplotlibMissing(ImportError):
    """Drawing needs matplotlib: ``pip install bidi-core[plot]``."""


_ROWS = ["user audio", "user text", "tools", "model text", "model audio"]


def _label(text: str, limit: int = 28) -> str:
    text = text.removeprefix("says ").strip('"')
    return text if len(text) <= limit else text[: limit - 1] + "…"


def draw_timeline(timeline: Timeline, path: str | os.PathLike[str], *, title: str | None = None) -> None:
    """Draw ``timeline`` into ``path`` (a PNG, 1000 px wide)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MatplotlibMissing("drawing the timeline needs matplotlib: pip install 'bidi-core[plot]'") from None
    row = {name: index for index, name in enumerate(_ROWS)}
    fig, ax = plt.subplots(figsize=(10, 3.4), dpi=100)
    span = max(timeline.duration_s, 0.001)
    interrupted = {e.response_id for e in timeline.entries if e.kind == "response_end" and "interrupted" in e.text}
    first_audio = {e.response_id: e.t for e in timeline.entries if e.kind == "first_audio"}
    for e in timeline.entries:
        if e.kind == "audio" and e.end is not None:
            ax.broken_barh([(e.t, max(e.end - e.t, span / 300))], (row["user audio"] - 0.3, 0.6), color="#4c78a8")
        elif e.kind in ("text", "tool_result"):
            y = row["user text"] if e.kind == "text" else row["tools"]
            ax.plot([e.t], [y], marker="o", color="#4c78a8" if e.kind == "text" else "#54a24b")
            _annotate(ax, e.t, y, _label(e.text.removeprefix("tool result ")), below=e.kind == "tool_result")
        elif e.kind == "tool_call":
            ax.plot([e.t], [row["tools"]], marker="D", color="#f58518")
            _annotate(ax, e.t, row["tools"], _label(e.text.removeprefix("calls ")))
        elif e.kind == "says":
            ax.plot([e.t], [row["model text"]], marker="s", color="#f58518")
            _annotate(ax, e.t, row["model text"], _label(e.text))
        elif e.kind == "response_end" and e.response_id in first_audio and e.end is not None:
            start = first_audio[e.response_id]
            color = "#e45756" if e.response_id in interrupted else "#f58518"
            ax.broken_barh([(start, max(e.end - start, span / 300))], (row["model audio"] - 0.3, 0.6), color=color)
        elif e.kind == "speech_started":
            ax.axvline(e.t, color="#e45756", linestyle="--", linewidth=1)
        elif e.kind == "open" and e.connection > 1:
            ax.axvline(e.t, color="#888888", linestyle=":", linewidth=1)
    ax.set_yticks(range(len(_ROWS)), _ROWS)
    ax.set_ylim(-0.7, len(_ROWS) - 0.3)
    ax.set_xlim(-span * 0.01, span * 1.02)
    ax.set_xlabel("seconds since the recording started  (red dashes: the user barged in; red bar: interrupted audio)")
    h = timeline.header
    ax.set_title(title or f"{h.get('provider')} {h.get('model_id')}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
    plt.close(fig)


def _annotate(ax: Any, t: float, y: float, text: str, *, below: bool = False) -> None:
    ax.annotate(text, (t, y), xytext=(4, -12 if below else 6), textcoords="offset points", fontsize=7)
