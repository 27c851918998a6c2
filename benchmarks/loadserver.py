"""A lean OpenAI Realtime (GA) load server for the benchmarks.

Why not the simulator (``adapters.testing.openai_simulator``)? It validates
every message with pydantic and runs a task per response, which would cost
more than the clients being measured. This server speaks just enough of the
GA protocol for all three clients (the shapes follow the simulator's, which
follow ``docs/protocols/openai.md``; ``--self-check`` passes
one of each through the simulator's schema oracle when it is installed), in
three modules, one job each:

* :mod:`benchmarks.loadserver_wire`: the HTTP request and WebSocket framing,
  hand-written on a plain asyncio ``Protocol``;
* :mod:`benchmarks.loadserver_conversation`: what the server answers and
  when (the scenarios' turns, pacing, barge-ins, tool calls, the stats);
* this module: the process (listening, leaving, ``--self-check``).

It runs in its own process (pinned to the second core), so its CPU never
counts as a client's. ``GET /stats?key=K`` returns what the server measured
for the client runs filed under key K (speech_started times, tool round
trips); ``GET /load`` the server's CPU share since the previous ``/load``.

    python -m benchmarks.loadserver --profile full --port 0      # prints "PORT <n>"
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import stat
import sys
from collections.abc import Callable

from benchmarks.loadserver_conversation import Connection, Pacer, Response, Stats, _tone
from benchmarks.workload import BARGE_MARKER, MARKER, PROFILES, pin_to_cpu, raise_fd_limit

__all__ = ["Connection", "LoadServer", "Pacer", "Response", "Stats", "serve"]


class LoadServer:
    def __init__(self, profile: str, api_key: str) -> None:
        self.scenarios = PROFILES[profile]
        self.api_key = api_key
        self.stats = Stats()
        self.pacer = Pacer()
        self.event_ids = itertools.count(1)
        self.tone = _tone(max(s.chunk_bytes for s in self.scenarios.values()))


async def serve(profile: str, port: int, api_key: str, ready: Callable[[int], None]) -> None:
    server = LoadServer(profile, api_key)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Connection(server), "127.0.0.1", port, backlog=4096)
    ready(listener.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        # Started by the driver with a pipe for stdin: leave when the driver goes, however it goes.
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    async with listener:
        await stop.wait()


def self_check() -> int:
    """Pass one of every event the server sends through the simulator's server
    oracle (the official ``openai`` types); needs the ``simulators`` extra."""
    try:
        from adapters.testing.openai_simulator import check_server_event
    except ImportError as exc:
        print(f"self-check skipped: {exc}")
        return 0
    sent: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> None:
            sent.append(data)

        def close(self) -> None:
            pass

    async def run() -> None:
        server = LoadServer("quick", "k")
        failures = 0
        for name in ("rt20", "duplex"):
            conn = Connection(server)
            conn.transport = Sink()  # type: ignore[assignment]
            conn.websocket = True
            conn.scenario = server.scenarios[name]
            conn.stats = server.stats.for_key(name)
            conn._on_session_update({"type": "session.update", "session": {"type": "realtime"}})
            text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
            conn._on_conversation_item_create({"type": "conversation.item.create", "item": text})
            output = {"type": "function_call_output", "call_id": "call_1", "output": "12:00"}
            conn._on_conversation_item_create({"type": "conversation.item.create", "item": output})
            if name == "duplex":
                conn._mic(b"\0" * 6)  # the mic starts: turn 0
                conn.active and conn.active.tick()  # type: ignore[func-returns-value]
                conn._tool_call(3)
                conn._on_response_create({"type": "response.create"})
                assert conn.active is not None
                conn._mic(MARKER.pack(BARGE_MARKER, 3))
            else:
                conn._on_response_create({"type": "response.create"})
                r = conn.active
                assert r is not None
                while r.tick():
                    pass
        seen: set[str] = set()
        for data in sent:
            n = data[1] & 0x7F
            body = data[2 + (2 if n == 126 else 8 if n == 127 else 0) :]
            event = json.loads(body)
            if event["type"] in seen:
                continue
            seen.add(event["type"])
            problem = check_server_event(event)
            if problem:
                failures += 1
                print(f"{event['type']}: {problem}")
        print(f"self-check: {len(seen)} event types, {failures} rejected by the official types")
        if failures:
            raise SystemExit(1)

    asyncio.run(run())
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="sk-bench-not-a-secret")
    parser.add_argument("--cpu", type=int, default=-1, help="core to pin the server to (default: none)")
    parser.add_argument("--self-check", action="store_true", help="validate the events against the openai types")
    args = parser.parse_args()
    if args.self_check:
        raise SystemExit(self_check())
    pin_to_cpu(args.cpu)
    raise_fd_limit()

    def ready(port: int) -> None:
        print(f"PORT {port}", flush=True)

    asyncio.run(serve(args.profile, args.port, args.api_key, ready))


if __name__ == "__main__":
    main()
