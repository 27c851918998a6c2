"""The workload every client runs, and the counting sink they all share.

Standard library only: the reference client imports this module from its own
virtualenv, where bidi-core is not installed.

**The stamp.** The load server writes the first 18 bytes of every output
audio chunk's PCM as ``<QII`` (``time.monotonic_ns()`` at the moment the frame
is written to the socket, the turn number, the chunk number) plus two zero
bytes. CLOCK_MONOTONIC is one clock for every process on a Linux machine, so
a sink in another process subtracts it from its own ``monotonic_ns()`` to get
the output latency. 18 is a multiple of 3, so the server re-encodes only those
18 bytes into base64 and appends the pre-encoded rest of the chunk.

**The marker.** A client asks the server for a barge-in by sending a
microphone chunk whose PCM begins with ``b"BARG"`` and the turn number
(``<H``): the server treats it as the voice activity detector firing.

**Turns.** Turn 0 of every scenario is a warm-up (connections, first-use
costs) and is not measured; CPU is counted from the end of turn 0 to the end
of the last turn, over the chunks of turns 1 and later.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.scheduler_counts import COUNTS

SAMPLE_RATE = 24000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
STAMP = struct.Struct("<QII")
STAMP_BYTES = 18
BARGE_MARKER = b"BARG"
MARKER = struct.Struct("<4sH")
API_KEY = "sk-bench-not-a-secret"
TOOL_NAME = "get_time"
TOOL_RESULT = "12:00"
LATENCY_TARGET_MS = 20.0
"""The sessions-per-core ramp stops at the first level whose output-latency p99 passes this."""


@dataclass(frozen=True)
class Scenario:
    """One workload. ``kind``: ``text`` (the client asks for each turn with a
    text message and ``response.create``), ``duplex`` (the server starts each
    turn as if its VAD heard the user; the client streams microphone audio all
    along) or ``endless`` (one response that lasts until the client leaves).
    ``turns_ms`` is the audio of each turn, turn 0 being the warm-up.
    Barge-in on turns ``k % barge_every == 0`` (k > 0), after the client heard
    ``barge_after_chunks`` chunks; a tool call before the audio of turns
    ``k % tool_every == 0``. ``first_chunk_at_once``: a paced response's first
    chunk is written at once, not in its pacer slot (0-20 ms later), so the
    time to first audio is the client's and the loopback's alone."""

    name: str
    kind: str
    chunk_ms: int
    paced: bool
    turns_ms: tuple[int, ...]
    barge_every: int = 0
    tool_every: int = 0
    barge_after_chunks: int = 8
    transcript_every: int = 5
    first_chunk_at_once: bool = False
    describe: str = ""

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_ms * BYTES_PER_MS

    def chunks_in_turn(self, turn: int) -> int:
        return -(-self.turns_ms[turn] // self.chunk_ms)

    @property
    def last_turn(self) -> int:
        return len(self.turns_ms) - 1

    def is_barge_turn(self, turn: int) -> bool:
        return self.barge_every > 0 and turn > 0 and turn % self.barge_every == 0

    def is_tool_turn(self, turn: int) -> bool:
        return self.tool_every > 0 and turn > 0 and turn % self.tool_every == 0


def _profile(quick: bool) -> dict[str, Scenario]:
    long_ms = 5_000 if quick else 60_000
    rt_ms = 2_000 if quick else 4_000
    duplex_ms = 600 if quick else 700
    scenarios = [
        Scenario(
            "thr20",
            "text",
            20,
            False,
            (1_000,) + (long_ms,) * 10,
            describe=f"unpaced, 10 turns x {long_ms // 1000} s of audio in 20 ms deltas",
        ),
        Scenario(
            "thr100",
            "text",
            100,
            False,
            (1_000,) + (long_ms,) * 10,
            describe=f"unpaced, 10 turns x {long_ms // 1000} s of audio in 100 ms deltas",
        ),
        Scenario("rt20", "text", 20, True, (400, rt_ms), describe=f"real time, {rt_ms / 1000:g} s of 20 ms deltas"),
        Scenario(
            "turns20",
            "text",
            20,
            True,
            (400,) + (200,) * 10,
            first_chunk_at_once=True,
            describe="real time, 10 short text turns of 200 ms, each turn's first chunk written at once",
        ),
        Scenario(
            "duplex",
            "duplex",
            20,
            True,
            (400,) + (duplex_ms,) * 6,
            barge_every=2,
            tool_every=3,
            describe=f"real time, microphone up, 6 turns of {duplex_ms} ms, barge-in every 2nd, tool every 3rd",
        ),
        Scenario("sessions", "endless", 20, True, (3_600_000,), describe="N real-time sessions in one process"),
    ]
    return {s.name: s for s in scenarios}


PROFILES = {"full": _profile(quick=False), "quick": _profile(quick=True)}
SINGLE_SESSION = ("thr20", "thr100", "rt20", "turns20", "duplex")


@dataclass(frozen=True)
class Ramp:
    """The sessions-per-core ramp: levels tried in order, time per level."""

    levels: tuple[int, ...]
    settle_s: float
    window_s: float


RAMPS = {
    "full": Ramp((50, 100, 150, 200, 250, 300, 400, 500, 600, 800), settle_s=0.5, window_s=1.2),
    "quick": Ramp((50, 100, 200, 300), settle_s=0.4, window_s=0.8),
}


def model_id(scenario: str, key: str) -> str:
    """What the clients put in ``?model=``: the server reads the scenario and
    the key its records are filed under from it (the reference offers no other
    way to put something in the URL)."""
    return f"bench-{scenario}-{key}"


def parse_model_id(value: str) -> tuple[str, str]:
    _, scenario, key = value.split("-", 2)
    return scenario, key


def barge_pcm(turn: int, chunk_bytes: int) -> bytes:
    return MARKER.pack(BARGE_MARKER, turn) + bytes(chunk_bytes - MARKER.size)


def silence_pcm(chunk_bytes: int) -> bytes:
    return bytes(chunk_bytes)


# --------------------------------------------------------------------------- the sink


@dataclass
class Recorder:
    """The counting sink: what an audio output would do with each chunk,
    reduced to reading the stamp. Every client hands it the same things (PCM
    bytes, "interrupted", "response ended"), so its cost is the same for all.

    ``on_turn_end`` is called when a response ends and the client should move
    on (ask for the next turn, or stop).
    """

    scenario: Scenario
    latencies_ns: list[int] = field(default_factory=list)
    chunks: int = 0
    measured_chunks: int = 0
    turn: int = -1
    turn_chunks: int = 0
    responses_done: int = 0
    barge_request: int | None = None
    barge_sent: set[int] = field(default_factory=set)
    interrupted_ns: dict[int, int] = field(default_factory=dict)
    last_audio_ns: dict[int, int] = field(default_factory=dict)
    late_chunks: int = 0
    cpu_start: float | None = None
    wall_start: int | None = None
    cpu_end: float | None = None
    wall_end: int | None = None
    sched_start: tuple[int, int] = (0, 0)
    sched_end: tuple[int, int] = (0, 0)
    done: bool = False
    record: bool = True
    text_sent_ns: int | None = None
    first_audio_ns: dict[int, int] = field(default_factory=dict)

    def audio(self, pcm: bytes) -> None:
        now = time.monotonic_ns()
        stamp, turn, _seq = STAMP.unpack_from(pcm)
        self.chunks += 1
        if self.record:
            self.latencies_ns.append(now - stamp)
        if turn != self.turn:
            self.turn = turn
            self.turn_chunks = 0
            if self.text_sent_ns is not None:
                self.first_audio_ns[turn] = now - self.text_sent_ns
                self.text_sent_ns = None
        self.turn_chunks += 1
        if turn > 0:
            self.measured_chunks += 1
        if turn in self.interrupted_ns:
            self.late_chunks += 1  # audio of an interrupted response reached the output after the interruption
        self.last_audio_ns[turn] = now
        sc = self.scenario
        if sc.is_barge_turn(turn) and self.turn_chunks == sc.barge_after_chunks and turn not in self.barge_sent:
            self.barge_request = turn

    def text_sent(self) -> None:
        """The client is about to send a text turn (the message and
        ``response.create``): time to first audio runs from here to the first
        chunk of the next turn reaching :meth:`audio`."""
        self.text_sent_ns = time.monotonic_ns()

    def take_barge(self) -> int | None:
        """The microphone asks this before each chunk: a turn to barge into, once."""
        turn = self.barge_request
        if turn is not None:
            self.barge_request = None
            self.barge_sent.add(turn)
        return turn

    def interrupted(self) -> None:
        if self.turn >= 0 and self.turn not in self.interrupted_ns:
            self.interrupted_ns[self.turn] = time.monotonic_ns()

    def response_ended(self) -> bool:
        """A response ended (completed, interrupted or a tool call's). Returns
        True when the scenario is over. Starts the CPU window after turn 0."""
        self.responses_done += 1
        sc = self.scenario
        if self.turn < 0:
            return False  # a response with no audio yet (a tool call's)
        if self.cpu_start is None and self.turn >= 0:
            self.cpu_start = time.process_time()
            self.wall_start = time.monotonic_ns()
            self.sched_start = COUNTS.snapshot()
        if self.turn >= sc.last_turn and self.turn_chunks > 0:
            complete = sc.is_barge_turn(self.turn) or self.turn_chunks >= sc.chunks_in_turn(self.turn)
            if complete and not self.done:
                self.cpu_end = time.process_time()
                self.wall_end = time.monotonic_ns()
                self.sched_end = COUNTS.snapshot()
                self.done = True
        return self.done

    def summary(self) -> dict[str, Any]:
        sc = self.scenario
        cpu = (self.cpu_end or 0.0) - (self.cpu_start or 0.0)
        wall = ((self.wall_end or 0) - (self.wall_start or 0)) / 1e9
        measured = self.latencies_ns if sc.paced else []
        return {
            "scenario": sc.name,
            "kind": sc.kind,
            "paced": sc.paced,
            "first_chunk_at_once": sc.first_chunk_at_once,
            "chunks": self.chunks,
            "measured_chunks": self.measured_chunks,
            "cpu_s": cpu,
            "wall_s": wall,
            "cpu_us_per_chunk": cpu / self.measured_chunks * 1e6 if self.measured_chunks else None,
            "steps_per_chunk": self._per_chunk(0),
            "wakeups_per_chunk": self._per_chunk(1),
            "latency_ms": latency_summary(measured),
            "latency_samples_us": [round(v / 1000) for v in measured],
            "interrupted_ns": {str(k): v for k, v in self.interrupted_ns.items()},
            "last_audio_ns": {str(k): v for k, v in self.last_audio_ns.items() if sc.is_barge_turn(k)},
            "late_chunks": self.late_chunks,
            "first_audio_ms": [v / 1e6 for k, v in sorted(self.first_audio_ns.items()) if k > 0],
            "complete": self.done,
        }

    def _per_chunk(self, which: int) -> float | None:
        """Task steps (0) or loop wake-ups (1) in the CPU window, per measured chunk
        (:mod:`benchmarks.scheduler_counts`); None when nothing counted them."""
        if not COUNTS.installed or not self.measured_chunks or not self.done:
            return None
        return (self.sched_end[which] - self.sched_start[which]) / self.measured_chunks


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


def latency_summary(latencies_ns: list[int]) -> dict[str, float] | None:
    if not latencies_ns:
        return None
    ms = [v / 1e6 for v in latencies_ns]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms),
    }


# --------------------------------------------------------------------------- helpers for client processes


def pin_to_cpu(cpu: int) -> None:
    """Keep a process on one core when there are two or more, so the client
    and the load server never share one and "per core" means one core."""
    if cpu >= 0 and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def peak_rss_mb() -> float:
    """This process's peak resident set. ``VmHWM`` belongs to the process
    image; ``ru_maxrss`` does not: Linux carries it across ``execve``, so a
    child started by a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class RampLevel:
    sessions: int
    p50_ms: float
    p99_ms: float
    cpu_fraction: float
    delivered: float
    server_cpu_fraction: float | None
    passed: bool
    window: int = 1


async def run_ramp(
    ramp: Ramp,
    add_sessions: Callable[[int], Any],
    live_sessions: Callable[[], int],
    latencies: list[int],
    sleep: Callable[[float], Any],
    server_load: Callable[[], float | None],
    max_wait_s: float = 30.0,
) -> dict[str, Any]:
    """Raise the number of concurrent real-time sessions level by level until
    the output-latency p99 passes :data:`LATENCY_TARGET_MS` or the sessions no
    longer get their audio in time (less than 95 % of the chunks due in the
    window). A level that fails is measured once more, because the machine
    may be shared: it passes if either window does (both are recorded).
    Framework-neutral: the client supplies ``add_sessions(n)`` (start n more,
    returning at once), ``live_sessions()`` (how many have received audio),
    the shared latency list and its ``sleep``.
    """
    levels: list[RampLevel] = []
    started = 0
    for level in ramp.levels:
        add_sessions(level - started)
        started = level
        deadline = time.monotonic() + max_wait_s
        while live_sessions() < level and time.monotonic() < deadline:
            await sleep(0.05)
        if live_sessions() < level:
            levels.append(RampLevel(level, float("nan"), float("nan"), 1.0, 0.0, None, False))
            break
        passed = False
        for window in (1, 2):
            await sleep(ramp.settle_s)
            server_load()
            latencies.clear()
            cpu0, wall0 = time.process_time(), time.monotonic()
            await sleep(ramp.window_s)
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            sample = list(latencies)
            server_cpu = server_load()
            ms = [v / 1e6 for v in sample]
            expected = level * wall * 1000 / 20
            delivered = len(sample) / expected if expected else 0.0
            p50 = percentile(ms, 50) if ms else float("inf")
            p99 = percentile(ms, 99) if ms else float("inf")
            passed = p99 <= LATENCY_TARGET_MS and delivered >= 0.95
            levels.append(RampLevel(level, p50, p99, cpu / wall, delivered, server_cpu, passed, window))
            print(
                f"    {level:5d} sessions{'' if window == 1 else ' (again)'}: p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                f"client cpu {cpu / wall:4.0%}  delivered {delivered:4.0%}"
                + (f"  server cpu {server_cpu:4.0%}" if server_cpu is not None else ""),
                file=sys.stderr,
                flush=True,
            )
            if passed:
                break
        if not passed:
            break
    best = max((lv.sessions for lv in levels if lv.passed), default=0)
    capped = bool(levels) and levels[-1].passed and levels[-1].sessions == ramp.levels[-1]
    return {"sessions_per_core": best, "capped": capped, "levels": [asdict(lv) for lv in levels]}


def write_result(path: str, result: dict[str, Any]) -> None:
    result["peak_rss_mb"] = peak_rss_mb()
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
