"""The web server under load: ``nox -s serve-load`` (not in CI).

Starts the benchmark load server (:mod:`benchmarks.loadserver`, the OpenAI
Realtime provider: one endless real-time answer per conversation, each 20 ms
chunk stamped with the monotonic time it was written) and ``python -m
adapters.web --workers 2`` in front of it, then ramps simulated browsers:
each speaks the web protocol (docs/web-protocol.md) at real time, duplex (20
ms of microphone every 20 ms while the answer streams in), and reports what
it played. Clients are added in steps until admission control refuses; then
all are held for a while and ended. It prints accepted, refused, output
latency (provider write to client read, through the web server) p50 and p99,
and errors. An accepted conversation that fails or stalls (no audio for 2 s)
is an error; so is a refusal that is not a clean 503 with ``Retry-After``.

    python -m benchmarks.serve_load [--step 10] [--per-worker 40] [--hold 10] [--worker-class trio]

Everything runs on 127.0.0.1 and stops by itself (bounded steps, bounded time).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    RejectConnection,
    Request,
    TextMessage,
)

from benchmarks.workload import API_KEY, STAMP, latency_summary, model_id

ROOT = Path(__file__).resolve().parent.parent
BLOCK = bytes(960)  # 20 ms of silence at 24 kHz
STALL_S = 2.0


class Client:
    """One simulated browser."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.latencies_ns: list[int] = []
        self.error: str | None = None
        self.refused: str | None = None
        self.accepted = False
        self.closed_code: int | None = None
        self.stop = anyio.Event()

    async def run(self, port: int) -> None:
        try:
            await self._run(port)
        except Exception as exc:  # a failure of an accepted conversation is a result, not a crash
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]  # type: ignore[assignment]
            if self.accepted and self.error is None:
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished = True

    async def _run(self, port: int) -> None:
        stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            ws = WSConnection(ConnectionType.CLIENT)
            await self._write(stream, ws.send(Request(host=f"127.0.0.1:{port}", target="/ws")))
            answer: AcceptConnection | RejectConnection | None = None
            while answer is None:
                ws.receive_data(await stream.receive())
                for event in ws.events():  # stop at the answer: what came with it (the session) stays queued
                    if isinstance(event, AcceptConnection | RejectConnection):
                        answer = event
                        break
            if isinstance(answer, RejectConnection):
                headers = {k.decode().lower(): v.decode() for k, v in answer.headers}
                ok = answer.status_code == 503 and "retry-after" in headers
                self.refused = "503" if ok else f"unclean refusal {answer.status_code}"
                return
            self.accepted = True
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, stream, ws, tg.cancel_scope)
                await self._send(stream, ws)
                tg.cancel_scope.cancel()
            if self.closed_code not in (None, 1000) and self.error is None:
                self.error = f"closed with {self.closed_code}"

    async def _send(self, stream: anyio.abc.ByteStream, ws: WSConnection) -> None:
        with anyio.move_on_after(20):
            await self.started.wait()
        if not self.started.is_set():
            self.error = "no session message"
            return
        start = {"type": "start", "input_audio": {"sample_rate": 24000, "channels": 1}, "reports_playback": True}
        await self._write(stream, ws.send(TextMessage(json.dumps(start))))
        await self._write(stream, ws.send(TextMessage(json.dumps({"type": "bidi_text_input", "text": "go"}))))
        next_at = anyio.current_time()
        while not self.stop.is_set():
            await self._write(stream, ws.send(BytesMessage(BLOCK)))
            next_at += 0.02
            await anyio.sleep(max(0.0, next_at - anyio.current_time()))
            if anyio.current_time() - self.last_audio > STALL_S and self.error is None:
                self.error = "stalled: no audio for 2 s"
        await self._write(stream, ws.send(TextMessage(json.dumps({"type": "stop"}))))
        with anyio.move_on_after(10):
            await self.done.wait()
        if not self.done.is_set() and self.error is None:
            self.error = "no close after stop"

    async def _read(self, stream: anyio.abc.ByteStream, ws: WSConnection, scope: anyio.CancelScope) -> None:
        played = 0.0
        rid: str | None = None
        parts: list[Any] = []
        frames = 0
        while True:
            for event in ws.events():  # first what the handshake's read brought along (the session)
                if isinstance(event, Message):
                    parts.append(event.data)
                    if not event.message_finished:
                        continue  # a message may arrive in pieces: act on the whole of it
                    whole: Any = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                    parts.clear()
                if isinstance(event, BytesMessage):
                    now = time.monotonic_ns()
                    self.last_audio = anyio.current_time()
                    if len(whole) >= STAMP.size and self.measuring:
                        self.latencies_ns.append(now - STAMP.unpack_from(whole)[0])
                    played += len(whole) / 48
                    frames += 1
                    if rid is not None and frames % 10 == 0:  # a report every 200 ms of audio
                        report = {"type": "playback", "response_id": rid, "played_ms": played, "finished": False}
                        await self._write(stream, ws.send(TextMessage(json.dumps(report))))
                elif isinstance(event, TextMessage):
                    message = json.loads(whole)
                    if message["type"] == "session":
                        self.started.set()
                    elif message["type"] == "audio":
                        rid, played = message["response_id"], 0.0
                    elif message["type"] in ("error", "closing") and self.error is None:
                        self.error = f"{message['type']}: {message.get('code') or message.get('reason')}"
                elif isinstance(event, CloseConnection):
                    self.closed_code = event.code
                    self.done.set()
                    await self._write(stream, ws.send(event.response()))
                    if not self.stop.is_set():
                        scope.cancel()  # the server ended the conversation: the sender stops too
                    return
            try:
                data = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                if not self.done.is_set() and not self.stop.is_set() and self.error is None:
                    self.error = "dropped"
                self.done.set()
                scope.cancel()
                return
            ws.receive_data(data)

    finished = False

    async def _write(self, stream: anyio.abc.ByteStream, data: bytes) -> None:
        async with self.lock:  # the reader (playback reports, close replies) and the sender share the socket
            await stream.send(data)

    def arm(self) -> None:
        self.lock = anyio.Lock()
        self.started = anyio.Event()
        self.done = anyio.Event()
        self.last_audio = anyio.current_time() + 5.0  # the first audio may take a moment
        self.measuring = False


def _start(cmd: list[str], env: dict[str, str], marker: str) -> tuple[subprocess.Popen[bytes], str]:
    err = open(os.environ.get("SERVE_LOAD_LOG", os.devnull), "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if marker not in line:
        proc.kill()
        raise SystemExit(f"{cmd[2]} did not start: {line!r}")
    return proc, line


async def ramp(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": API_KEY}
    load, line = _start([sys.executable, "-m", "benchmarks.loadserver", "--port", "0"], env, "PORT")
    load_port = int(line.split()[1])
    web_cmd = [
        sys.executable, "-m", "adapters.web", "--port", "0", "--workers", "2", "--worker-class", args.worker_class,
        "--provider", "openai", "--base-url", f"ws://127.0.0.1:{load_port}/v1",
        "--model", model_id("sessions", "serve-load"), "--max-conversations", str(args.per_worker),
        "--log-level", "warning", "--drain", "5",
    ]  # fmt: skip
    web, line = _start(web_cmd, env, "listening on")
    port = int(line.split("listening on http://", 1)[1].split()[0].rsplit(":", 1)[1])
    clients: list[Client] = []
    try:
        await anyio.sleep(3)  # the workers start (each imports the adapters)
        async with anyio.create_task_group() as tg:
            refused_steps = 0
            for _ in range(args.max_steps):
                batch = [Client(len(clients) + i) for i in range(args.step)]
                for c in batch:
                    c.arm()
                    tg.start_soon(c.run, port)
                clients += batch
                await anyio.sleep(args.step_s)
                if any(c.refused for c in batch):
                    refused_steps += 1
                    if refused_steps >= 2:
                        break
            for c in clients:
                c.measuring = True
            await anyio.sleep(args.hold)
            for c in clients:
                c.stop.set()
    finally:
        web.send_signal(signal.SIGTERM)
        code = await anyio.to_thread.run_sync(lambda: web.wait(timeout=60))
        load.terminate()
        load.wait()
    accepted = [c for c in clients if c.accepted]
    latencies = [ns for c in accepted for ns in c.latencies_ns]
    return {
        "worker_class": args.worker_class,
        "workers": 2,
        "max_per_worker": args.per_worker,
        "attempted": len(clients),
        "accepted": len(accepted),
        "refused_clean_503": sum(1 for c in clients if c.refused == "503"),
        "refused_unclean": sum(1 for c in clients if c.refused not in (None, "503")),
        "errors": sorted({c.error for c in accepted if c.error}),
        "failed_or_stalled": sum(1 for c in accepted if c.error),
        "output_latency_ms": latency_summary(latencies),
        "server_exit_code": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker-class", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--per-worker", type=int, default=40, help="--max-conversations of each worker")
    parser.add_argument("--step", type=int, default=10, help="clients added per step")
    parser.add_argument("--step-s", type=float, default=2.0, help="seconds between steps")
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds all clients run after the ramp")
    args = parser.parse_args()
    result = anyio.run(ramp, args)
    print(json.dumps(result, indent=2))
    lat = result["output_latency_ms"] or {}
    print(
        "\n| worker class | accepted | refused (clean 503) | unclean refusals | p50 ms | p99 ms | failed or stalled |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {result['worker_class']} | {result['accepted']} | {result['refused_clean_503']} | "
        f"{result['refused_unclean']} | {lat.get('p50', float('nan')):.1f} | {lat.get('p99', float('nan')):.1f} | "
        f"{result['failed_or_stalled']} |"
    )
    ok = result["refused_unclean"] == 0 and result["failed_or_stalled"] == 0 and result["server_exit_code"] == 0
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
