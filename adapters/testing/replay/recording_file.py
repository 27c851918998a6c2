"""Reading a recording (``docs/recording.md``): the header, then each connection's records in order."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import attrs

from adapters.recording import FORMAT, VERSION
from ports.errors import BidiUsageError

__all__ = ["ConnectionScript", "RecordingFile", "load_recording"]


@attrs.frozen
class ConnectionScript:
    """One recorded connection: its ``open`` record's facts, its frames both ways and its ``end``, in order."""

    number: int
    connection_id: str
    url: str
    t_open: float
    frames: tuple[Mapping[str, Any], ...]
    end: Mapping[str, Any] | None

    @property
    def client_frames(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(f for f in self.frames if f["dir"] == "out")

    @property
    def refused(self) -> bool:
        """Nothing was exchanged and it ended in an error: the connection never opened."""
        return not self.frames and self.end is not None and self.end.get("by") == "error"


@attrs.frozen
class RecordingFile:
    """A whole recording: the header (provider, model, settings) and its connections in the order they opened."""

    path: str
    header: Mapping[str, Any]
    connections: tuple[ConnectionScript, ...]

    @property
    def provider(self) -> str:
        return str(self.header["provider"])

    @property
    def model_id(self) -> str:
        return str(self.header["model_id"])

    @property
    def duration_s(self) -> float:
        times = [c.end["t"] for c in self.connections if c.end] + [
            c.frames[-1]["t"] for c in self.connections if c.frames
        ]
        return max(times, default=0.0)


def load_recording(path: str | os.PathLike[str]) -> RecordingFile:
    """Read a recording; a file that is not one is a :class:`BidiUsageError` naming the line."""
    path = os.fspath(path)
    header: dict[str, Any] | None = None
    opened: dict[int, dict[str, Any]] = {}
    frames: dict[int, list[Mapping[str, Any]]] = {}
    ends: dict[int, Mapping[str, Any]] = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                kind = record["record"]
            except (ValueError, KeyError, TypeError):
                if header is None:
                    raise BidiUsageError(f"{path}: not a bidi-core recording (no header line)") from None
                if line.endswith("\n"):
                    raise BidiUsageError(f"{path}:{number}: not a recording line") from None
                break  # the last line, cut off by a crash: the rest is readable
            if header is None:
                if kind != "recording" or record.get("format") != FORMAT:
                    raise BidiUsageError(f"{path}: not a bidi-core recording (no header line)")
                if record.get("version") != VERSION:
                    raise BidiUsageError(f"{path}: recording format version {record.get('version')}, not {VERSION}")
                header = record
            elif kind == "open":
                opened[record["connection"]] = record
                frames[record["connection"]] = []
            elif kind == "frame":
                frames.setdefault(record["connection"], []).append(record)
            elif kind == "end":
                ends[record["connection"]] = record
    if header is None:
        raise BidiUsageError(f"{path}: an empty recording")
    connections = tuple(
        ConnectionScript(
            number=n,
            connection_id=str(opened[n].get("connection_id", f"replay-{n}")),
            url=str(opened[n].get("url", "")),
            t_open=float(opened[n]["t"]),
            frames=tuple(frames.get(n, ())),
            end=ends.get(n),
        )
        for n in sorted(opened)
    )
    return RecordingFile(path=path, header=header, connections=connections)
