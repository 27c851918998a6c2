"""The soak: many real-time conversations for a long time, with barge-ins, tool calls and forced reconnects.

    python -m benchmarks.soak                                   # 100 conversations, 10 minutes, asyncio then Trio
    python -m benchmarks.soak --minutes 1 --sessions 20 --backend trio
    nox -s soak -- --minutes 10 --sessions 100 --backend asyncio

The soak's load server (:mod:`benchmarks.soak_server`) runs in a process of
its own; the conversations (:mod:`benchmarks.soak_client`) run in this one
(one process per backend when several are asked for), which measures itself
every ``--sample`` seconds: resident memory (``VmRSS``), open file
descriptors (``/proc/self/fd``), running tasks (``anyio.get_running_tasks``:
asyncio's tasks, Trio's task tree), threads (``/proc/self/task``). It fails
(exit status 1) unless:

* resident memory grows by less than ``--max-growth`` MB (5) from the end of
  the warm-up to the end of the load;
* once every conversation has stopped, file descriptors, tasks and threads are
  back to their count before the first one started;
* no output audio chunk was lost, repeated or reordered (the stamp's turn and
  chunk number) except where a barge-in or a lost connection cut a turn, and
  none of an interrupted response came after the interruption;
* the server received every microphone block the agent accepted, once and in
  order across all the reconnects, except what ``agent.dropped_audio``
  counts (which must be 0 unless the outbox's cap was hit) and what a TCP
  reset destroyed on the wire (counted apart, see :mod:`benchmarks.soak_server`);
* every conversation ran to the end, was reconnected, and the workload
  happened: barge-ins, tool calls, reconnects of each kind asked for.

It prints the curve (memory, descriptors, tasks, threads over time) and the
figures, writes ``benchmarks/results/soak-<backend>-<time>.json`` (and a PNG
if matplotlib is installed); ``--update-readme`` pastes the result into
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from benchmarks.soak_client import LatencyHistogram, SoakConversation
from benchmarks.soak_report import checks, print_result, update_readme, write_png
from benchmarks.soak_workload import ENDINGS, SOAK
from benchmarks.workload import raise_fd_limit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
_SETTLE_S = 15.0
"""After the last conversation stopped, how long counts may take to come back (threads that idle out)."""


@dataclass
class Settings:
    minutes: float = 10.0
    sessions: int = 100
    backend: str = "asyncio"
    warmup: float = 120.0
    sample: float = 10.0
    drop_every: float = 60.0
    drops: str = ",".join(ENDINGS)
    history: int = 50
    max_growth: float = 5.0
    stagger: float = 5.0
    stop_timeout: float = 60.0


def counts() -> dict[str, Any]:
    """This process now: resident memory (MB), descriptors, tasks, threads, CPU seconds."""
    rss = 0.0
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
                break
    try:
        with open("/proc/self/schedstat", encoding="ascii") as fh:
            waited = int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        waited = 0.0
    return {
        "waited_s": waited,
        "rss_mb": rss,
        "fds": len(os.listdir("/proc/self/fd")),
        "tasks": len(anyio.get_running_tasks()),
        "threads": len(os.listdir("/proc/self/task")),
        "cpu_s": time.process_time(),
    }


async def http_json(port: int, path: str) -> Any:
    """``GET path`` from the soak server, over anyio as the conversations connect (no thread of its own)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        try:
            while True:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    return json.loads(bytes(data).split(b"\r\n\r\n", 1)[1])


class Sampler:
    """The curve: a row every ``period`` seconds while the soak runs."""

    def __init__(self, convs: list[SoakConversation], latency: LatencyHistogram, period: float) -> None:
        self.convs = convs
        self.latency = latency
        self.period = period
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.phase = "start"
        self._last = (time.monotonic(), time.process_time(), counts()["waited_s"])
        self._mic_sent = 0

    def take(self) -> dict[str, Any]:
        row = counts()
        now = time.monotonic()
        wall0, cpu0, waited0 = self._last
        self._last = (now, row["cpu_s"], row["waited_s"])
        wall = max(now - wall0, 1e-9)
        window = self.latency.take_window()
        mic_sent = sum(c.rec.mic_sent for c in self.convs)
        live = sum(1 for c in self.convs if not c.done)
        due = live * wall / (SOAK.chunk_ms / 1000)
        mic_pace = (mic_sent - self._mic_sent) / due if due and wall > self.period / 4 else None
        self._mic_sent = mic_sent
        row.update(
            t=now - self.t0,
            phase=self.phase,
            cpu=(row["cpu_s"] - cpu0) / wall,
            starved=(row["waited_s"] - waited0) / wall,
            p50_ms=window.get("p50_ms"),
            p99_ms=window.get("p99_ms"),
            live=live,
            mic_sent=mic_sent,
            mic_pace=mic_pace,
            backlog=sum(c.agent.conversation.outbox.audio for c in self.convs if not c.done),
            reconnects=sum(sum(c.rec.restarts.values()) for c in self.convs),
            chunks=sum(c.rec.chunks for c in self.convs),
            loadavg=os.getloadavg()[0],
        )
        self.rows.append(row)
        print(
            f"  {row['t']:7.1f} s  {row['phase']:8s} rss {row['rss_mb']:6.1f} MB  fds {row['fds']:4d}  "
            f"tasks {row['tasks']:5d}  threads {row['threads']:3d}  live {row['live']:4d}  "
            f"reconnects {row['reconnects']:5d}  cpu {row['cpu']:4.0%}  waiting for a CPU {row['starved']:4.0%}"
            f"  latency p50/p99 {_ms(row['p50_ms'])}/{_ms(row['p99_ms'])} ms  microphone pace "
            f"{'-' if mic_pace is None else f'{mic_pace:.0%}'}  unsent blocks {row['backlog']}",
            file=sys.stderr,
            flush=True,
        )
        return row

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await anyio.sleep(self.period - (time.monotonic() - self.t0) % self.period)
            self.take()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


async def soak(settings: Settings, port: int) -> dict[str, Any]:
    """Run the conversations against the server on ``port``; every figure the report needs."""
    url = f"ws://127.0.0.1:{port}/v1?drop_every={settings.drop_every:g}&drops={settings.drops}"
    latency = LatencyHistogram()
    convs: list[SoakConversation] = []
    sampler = Sampler(convs, latency, settings.sample)
    result: dict[str, Any] = {"settings": asdict(settings)}
    async with anyio.create_task_group() as outer:
        await outer.start(sampler.run)
        result["before"] = sampler.take()
        result["before"]["fd_targets"] = fd_targets()
        sampler.phase = "warm-up"
        start = anyio.current_time()
        all_done = anyio.Event()

        async def run(conv: SoakConversation) -> None:
            await conv.run()
            if all(c.done for c in convs):
                all_done.set()

        async with anyio.create_task_group() as tg:
            for i in range(settings.sessions):
                conv = SoakConversation(url, f"{settings.backend}.{os.getpid()}.{i}", latency, settings.history)
                convs.append(conv)
                tg.start_soon(run, conv, name=f"soak conversation {i}")
                await anyio.sleep_until(start + settings.stagger * (i + 1) / settings.sessions)
            await anyio.sleep_until(start + min(settings.warmup, settings.minutes * 60))
            sampler.phase = "load"
            result["after_warmup"] = sampler.take()
            traced = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
            await anyio.sleep_until(start + settings.minutes * 60)
            result["end_of_load"] = sampler.take()
            if traced is not None:
                result["memory_growth_by_line"] = _growth(traced, tracemalloc.take_snapshot())
            sampler.phase = "ending"
            result["ending"] = await _end(convs, all_done, port, settings, tg)
        sampler.phase = "stopped"
        result["after_stop"] = await _settled(sampler, result["before"])
        outer.cancel_scope.cancel()
    result["rows"] = sampler.rows
    result["latency"] = latency.summary()
    result["conversations"] = [c.rec.summary() for c in convs]
    bulky = {"speech_started_ns", "tool_rtt_ns", "tool_calls_ns"}  # the benchmark's per-event records
    records = await http_json(port, "/stats")
    result["server"] = {key: {k: v for k, v in rec.items() if k not in bulky} for key, rec in records.items()}
    return result


def _growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int = 25) -> list[str]:
    """Where memory grew during the load, by the allocating stack (``python -X tracemalloc=20 -m benchmarks.soak``)."""
    lines = []
    for stat in after.compare_to(before, "traceback")[:top]:
        frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(list(stat.traceback)[-8:]))
        lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {frames}")
        print("  " + lines[-1], file=sys.stderr)
    return lines


async def _end(
    convs: list[SoakConversation], all_done: anyio.Event, port: int, settings: Settings, tg: anyio.abc.TaskGroup
) -> dict[str, Any]:
    """Stop the microphones, wait until the server has every block they sent, then stop the conversations."""
    out: dict[str, Any] = {}
    t0 = anyio.current_time()
    for conv in convs:
        conv.mic.end()
    with anyio.move_on_after(10):
        for conv in convs:
            await conv.mic.ended.wait()
    out["mics_ended"] = sum(1 for c in convs if c.mic.ended.is_set())
    waiting = list(convs)
    with anyio.move_on_after(30):
        while waiting:
            records = await http_json(port, "/stats")
            waiting = [c for c in waiting if records.get(c.rec.key, {}).get("mic_next", -1) < c.rec.mic_sent]
            if waiting:
                await anyio.sleep(0.2)
    out["mic_unreceived_conversations"] = [c.rec.key for c in waiting]
    out["mic_wait_s"] = anyio.current_time() - t0
    for conv in convs:
        conv.stop()
    t1 = anyio.current_time()
    with anyio.move_on_after(settings.stop_timeout) as scope:
        await all_done.wait()
    out["stop_s"] = anyio.current_time() - t1
    out["stop_timed_out"] = scope.cancelled_caught
    if scope.cancelled_caught:
        tg.cancel_scope.cancel()
    return out


async def _settled(sampler: Sampler, before: dict[str, Any]) -> dict[str, Any]:
    """Counts once every conversation has stopped: at once if they match ``before``, else after threads
    that idle out had the time to (``_SETTLE_S``), whichever comes first. What is left over is named
    (descriptors, tasks), then named again after a garbage collection: left to the collector, or held."""
    deadline = anyio.current_time() + _SETTLE_S
    while True:
        row = sampler.take()
        if all(row[k] == before[k] for k in ("fds", "tasks", "threads")) or anyio.current_time() >= deadline:
            break
        await anyio.sleep(0.5)
    if row["fds"] != before["fds"] or row["tasks"] != before["tasks"]:
        row["leftovers"] = leftovers(before)
        gc.collect()
        row["leftovers_after_gc"] = leftovers(before)
    return row


def fd_targets() -> dict[str, str]:
    """Each open descriptor's target; sockets with their TCP ends and state from ``/proc/net/tcp``."""
    tcp: dict[str, str] = {}
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "0A": "LISTEN"}
    with contextlib.suppress(OSError), open("/proc/net/tcp", encoding="ascii") as fh:
        for line in list(fh)[1:]:
            f = line.split()
            ends = [f"{int(a, 16) & 0xFF}...:{int(p, 16)}" for a, p in (x.split(":") for x in f[1:3])]
            tcp[f[9]] = f"{ends[0]} -> {ends[1]} {states.get(f[3], f[3])}"
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            inode = target[8:-1] if target.startswith("socket:[") else ""
            out[fd] = f"{target} {tcp.get(inode, '')}".strip()
    return out


def leftovers(before: dict[str, Any]) -> dict[str, Any]:
    fds = fd_targets()
    return {
        "fds": {fd: t for fd, t in fds.items() if fd not in before["fd_targets"]},
        "tasks": [t.name for t in anyio.get_running_tasks()],
    }


class ServerProcess:
    """:mod:`benchmarks.soak_server` in a process of its own, for the duration of a ``with`` block."""

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.soak_server", "--port", "0"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.__exit__()
            raise RuntimeError(f"the soak server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()  # the server leaves when its stdin closes
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def run_one(settings: Settings) -> dict[str, Any]:
    """One backend in this process: the server, the soak, the checks."""
    raise_fd_limit()
    with ServerProcess() as server:
        result = anyio.run(soak, settings, server.port, backend=settings.backend)
    result["backend"] = settings.backend
    result["checks"] = checks(result)
    result["passed"] = all(c["passed"] for c in result["checks"])
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    return result


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Settings()
    parser.add_argument("--minutes", type=float, default=d.minutes)
    parser.add_argument("--sessions", type=int, default=d.sessions, help="concurrent conversations")
    parser.add_argument("--backend", default="asyncio,trio", help="asyncio, trio, or both (one process each)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default: 2 min, or 1/5 of the run)")
    parser.add_argument("--sample", type=float, default=None, help="seconds between rows (default: 10, or 1/60)")
    parser.add_argument("--drop-every", type=float, default=d.drop_every, help="seconds per connection (x0.5-1.5)")
    parser.add_argument("--drops", default=d.drops, help=f"endings to cycle through, of {','.join(ENDINGS)}")
    parser.add_argument("--history", type=int, default=d.history, help="messages each conversation keeps (0: all)")
    parser.add_argument("--max-growth", type=float, default=d.max_growth, help="MB of RSS growth allowed")
    parser.add_argument("--json", help="write the result here (default: benchmarks/results/soak-...)")
    parser.add_argument("--update-readme", action="store_true", help="paste the result into benchmarks/README.md")
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument("--report", help="no soak: judge and print saved results (a.json,b.json) again")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    settings = Settings(
        minutes=args.minutes,
        sessions=args.sessions,
        backend=args.backend,
        warmup=args.warmup if args.warmup is not None else min(120.0, seconds / 5),
        sample=args.sample if args.sample is not None else min(10.0, max(seconds / 60, 0.25)),
        drop_every=args.drop_every,
        drops=args.drops,
        history=args.history,
        max_growth=args.max_growth,
        stagger=min(5.0, seconds / 10),
    )
    unknown = set(settings.drops.split(",")) - set(ENDINGS)
    if unknown:
        parser.error(f"--drops: unknown endings {sorted(unknown)}")
    return settings, args


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    if args.report:
        saved = [json.loads(Path(p).read_text()) for p in args.report.split(",")]
        for result in saved:
            result["checks"] = checks(result)
            result["passed"] = all(c["passed"] for c in result["checks"])
            print_result(result)
        if args.update_readme:
            update_readme(BENCH / "README.md", saved)
        return 0 if all(r["passed"] for r in saved) else 1
    backends = settings.backend.split(",")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: list[dict[str, Any]] = []
    for backend in backends:
        default = BENCH / "results" / f"soak-{backend}-{stamp}.json"
        path = Path(args.json) if args.json and len(backends) == 1 else default
        if len(backends) > 1:  # each backend in a fresh process: its memory and counts are its own
            command = [sys.executable, "-m", "benchmarks.soak", *(sys.argv[1:] if argv is None else argv)]
            command += ["--backend", backend, "--json", str(path), "--no-png"]
            command = [c for c in command if c != "--update-readme"]
            subprocess.run(command, cwd=REPO, check=False)
            if not path.exists():
                print(f"soak on {backend}: no result", file=sys.stderr)
                return 1
            result = json.loads(path.read_text())
        else:
            result = run_one(Settings(**{**asdict(settings), "backend": backend}))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
            print_result(result)
        results.append(result)
        if not args.no_png:
            write_png(result, path.with_suffix(".png"))
    if args.update_readme:
        update_readme(BENCH / "README.md", results)
    failed = [r["backend"] for r in results if not r["passed"]]
    if failed:
        print(f"soak FAILED on {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
