"""The tool round trip, step by step: one session, a tool call on every turn.

The suite's duplex scenario has two tool calls per process, one after the
first: too few to compare two versions of the library on a busy machine. Here
the load server plays the duplex scenario's tool turn on each of ``--calls``
turns (the same burst of frames: the VAD turn, ``response.created``, the
call's item and arguments, then ``arguments.done``, ``output_item.done``,
``item.done`` and ``response.done`` with usage) for the benchmark's bidi-core
client, and prints the round trips the server measured (its write of the call
to its read of the ``function_call_output``), the first call apart.

With ``--steps`` the client also stamps each step of the path
(``time.monotonic_ns()``, the server's clock, and the thread's CPU time) by
wrapping the functions on it, and prints the median offset of each step from
the server's write and the CPU the client spent from the read carrying the
call to the result's ``send_text``: the critical path, which the load of other
processes does not inflate the way it does wall time. The wrappers cost a few
microseconds per step; compare like with like.

    python -m benchmarks tool_trace --backend asyncio --calls 30 [--steps] [--json]

Run it from two trees in turn (``git worktree``) for an A/B.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import anyio

from benchmarks.scheduler_counts import COUNTS
from benchmarks.workload import Recorder, Scenario

_SERVER = (
    "import sys; from benchmarks import workload; from benchmarks.workload import Scenario; "
    "workload.PROFILES['tool_trace'] = {{'duplex': Scenario('duplex', 'duplex', 20, True, (400,) + (200,) * {calls}, "
    "tool_every=1)}}; sys.argv = ['loadserver', '--profile', 'tool_trace', '--port', '0']; "
    "from benchmarks.loadserver import main; main()"
)

Mark = tuple[int, str, int]  # monotonic ns, step, thread CPU ns


def install_steps(marks: list[Mark]) -> None:
    """Wrap the functions on a tool call's path so each stamps ``marks``."""
    import adapters.openai.session as session_mod
    import adapters.websocket as ws_mod
    import bidi_core.agent as agent_mod
    import bidi_core.queues as queues_mod
    from ports.events import BidiToolResultEvent

    now, cpu = time.monotonic_ns, time.thread_time_ns

    def mark(step: str) -> None:
        marks.append((now(), step, cpu()))

    read = ws_mod.WebSocketConnection._read

    async def _read(self: Any) -> bytes:
        data = await read(self)
        mark("read")
        return data

    function_call = session_mod.OpenAIRealtimeSession._function_call

    def _function_call(self: Any, event: Any) -> Any:
        mark("adapter: arguments.done")
        return function_call(self, event)

    start_tool = agent_mod.BidiAgent._start_tool

    def _start_tool(self: Any, call: Any) -> None:
        mark("shell: spawn the tool's task")
        start_tool(self, call)

    dispatch = agent_mod.BidiAgent._dispatch

    def _dispatch(self: Any, event: Any) -> None:
        name = type(event).__name__
        if name in ("BidiToolUseEvent", "ToolFinished", "BidiResponseCompleteEvent"):
            mark(f"core: step {name}")
        dispatch(self, event)

    put = queues_mod.SendFifo.put

    def _put(self: Any, item: Any, seq: int | None) -> None:
        if isinstance(item, BidiToolResultEvent):
            mark("shell: result to the send FIFO")
        put(self, item, seq)

    send = session_mod.OpenAIRealtimeSession.send

    async def _send(self: Any, item: Any) -> None:
        if isinstance(item, BidiToolResultEvent):
            mark("writer: session.send(result)")
        await send(self, item)

    send_text = ws_mod.WebSocketConnection.send_text

    async def _send_text(self: Any, text: str) -> None:
        if "function_call_output" in text:
            mark("ws: send_text(result)")
        await send_text(self, text)

    ws_mod.WebSocketConnection._read = _read  # type: ignore[method-assign]
    session_mod.OpenAIRealtimeSession._function_call = _function_call  # type: ignore[method-assign]
    agent_mod.BidiAgent._start_tool = _start_tool  # type: ignore[method-assign]
    agent_mod.BidiAgent._dispatch = _dispatch  # type: ignore[method-assign]
    queues_mod.SendFifo.put = _put  # type: ignore[method-assign]
    session_mod.OpenAIRealtimeSession.send = _send  # type: ignore[method-assign]
    ws_mod.WebSocketConnection.send_text = _send_text  # type: ignore[method-assign]

    from benchmarks.clients import bidi

    func = bidi.get_time.func

    async def stamped(zone: str = "UTC") -> str:
        mark("tool: body")
        return str(await func(zone))

    import attrs

    bidi.get_time = attrs.evolve(bidi.get_time, func=stamped)


def steps_report(marks: list[Mark], calls: list[list[Any]]) -> dict[str, Any]:
    """Median offset of each step from the server's write, and the critical path's CPU."""
    offsets: dict[str, list[float]] = defaultdict(list)
    critical: list[tuple[float, float]] = []
    for _call_id, sent, got in calls[1:]:
        window = [m for m in marks if sent <= m[0] <= got + 5_000_000]
        seen: dict[str, Mark] = {}
        for m in window:
            seen.setdefault(m[1], m)
        for step, m in seen.items():
            offsets[step].append((m[0] - sent) / 1e3)
        reads = [m for m in window if m[1] == "read" and m[0] <= seen.get("adapter: arguments.done", m)[0]]
        end = seen.get("ws: send_text(result)")
        if reads and end is not None:
            critical.append(((end[2] - reads[-1][2]) / 1e3, (end[0] - reads[-1][0]) / 1e3))
    table = sorted(((statistics.median(v), k, len(v)) for k, v in offsets.items()), key=lambda row: row[0])
    return {
        "steps_us": [{"step": k, "median_us": round(t, 1), "n": n} for t, k, n in table],
        "critical_path_cpu_us": round(statistics.median(c for c, _ in critical), 1) if critical else None,
        "critical_path_wall_us": round(statistics.median(w for _, w in critical), 1) if critical else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--steps", action="store_true", help="stamp each step of the path (see the docstring)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    scenario = Scenario("duplex", "duplex", 20, True, (400,) + (200,) * args.calls, tool_every=1)
    marks: list[Mark] = []
    if args.steps:
        install_steps(marks)
    from benchmarks.clients import bidi

    COUNTS.install(args.backend)  # as the suite's client does
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER.format(calls=args.calls)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        key = f"tool_trace{time.time_ns()}.duplex"
        url = f"ws://127.0.0.1:{port}/v1"
        anyio.run(bidi.run_one, url, scenario, key, Recorder(scenario), backend=args.backend)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats?key={key}", timeout=10) as response:
            stats = json.load(response)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=10)
    calls = stats["tool_calls_ns"]
    rtts = [(got - sent) / 1e3 for _, sent, got in calls]
    result: dict[str, Any] = {"backend": args.backend, "first_us": rtts[0], "after_first_us": rtts[1:]}
    if args.steps:
        result.update(steps_report(marks, calls))
    if args.json:
        print(json.dumps(result))
        return 0
    rest = rtts[1:]
    print(
        f"{args.backend}: tool round trip, median after the first {statistics.median(rest):.0f} us "
        f"(n={len(rest)}, max {max(rest):.0f}); first call {rtts[0]:.0f} us"
    )
    if args.steps:
        print("median offset of each step from the server's write of the call, calls after the first:")
        for row in result["steps_us"]:
            print(f"  {row['median_us']:8.1f} us  {row['step']}")
        print(
            f"critical path (read carrying the call -> the result's send_text): "
            f"CPU {result['critical_path_cpu_us']} us, wall {result['critical_path_wall_us']} us"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
