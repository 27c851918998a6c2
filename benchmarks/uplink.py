"""The duplex up path, per microphone block, in one process: bidi-core beside the raw floor.

The suite's duplex rows measure a whole client against a load server, which
on a shared machine drifts more than the differences being looked for. This
takes the network away and keeps everything else real: a microphone input
that returns one 20 ms block per wake-up (a checkpoint before each, as at
real time), ``BidiAgent.run()`` with its input task, the state machine, the
send FIFO and the writer task, and the OpenAI adapter's real
``OpenAIRealtimeSession.send`` over a real ``WebSocketConnection`` whose byte
stream only counts what it is given (no system call: the floor skips it too).
Beside it the raw floor's per-block work, as ``clients/raw.py`` does it:
base64, the JSON text, wsproto's frame, the write, a checkpoint.

It also times the pieces one by one (``--pieces``): the core's two steps per
block (the block accepted, then written), the adapter's ``send``, and the
frame alone, wsproto's and ``adapters/_ws_frames.py``'s.

Each figure is the best of several runs (CPU time), the runs of the two
columns interleaved; ``--baseline DIR`` also runs the same measurement with
the library from another checkout (``git worktree add DIR REF``), in a
process of its own, interleaved with this one, so a change is measured
against its parent in one run.

    python -m benchmarks uplink [--blocks 20000] [--runs 5] [--baseline DIR] [--pieces]
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.getcwd())  # the checkout to measure: run from its root (see --baseline)

import anyio
import anyio.lowlevel
import sniffio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from adapters.openai.config import OpenAIConfig
from adapters.openai.session import OpenAIRealtimeSession
from adapters.websocket import WebSocketConnection
from bidi_core import BidiAgent, BidiAudioInputEvent
from ports.model import ModelCapabilities

BLOCK = bytes(960)  # 20 ms of 24 kHz mono PCM


def opened() -> WSConnection:
    """A client WSConnection after the handshake."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    list(client.events())
    return client


class _CountingStream(anyio.abc.ByteStream):
    """Takes every write at once; never has anything to read."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, item: bytes) -> None:
        self.sent += len(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError

    async def send_eof(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class _CountingAsyncioStream(_CountingStream):
    """The same, with the asyncio stream's write without waiting (``AsyncioStream.write_now``)."""

    def writable_now(self) -> bool:
        return True

    def write_now(self, data: bytes) -> None:
        self.sent += len(data)


class _Model:
    """A model whose session is the OpenAI adapter's, over a WebSocket to nowhere."""

    model_id = "uplink"
    capabilities = ModelCapabilities(resumable=False)

    def __init__(self) -> None:
        # On asyncio the real stream writes without waiting when it can; anyio's (Trio's) cannot.
        self.stream = _CountingAsyncioStream() if sniffio.current_async_library() == "asyncio" else _CountingStream()

    @asynccontextmanager
    async def connect(self, request: Any) -> AsyncIterator[OpenAIRealtimeSession]:
        connection = opened().connection
        assert connection is not None
        ws = WebSocketConnection(self.stream, connection)
        yield OpenAIRealtimeSession(ws, "uplink", self.capabilities, OpenAIConfig())


async def bidi_per_block(blocks: int) -> float:
    """CPU microseconds per microphone block through ``BidiAgent.run()`` and the adapter's send."""
    model = _Model()
    agent = BidiAgent(model=model)  # type: ignore[arg-type]
    event = BidiAudioInputEvent(audio=BLOCK, sample_rate=24000)
    count = 0
    started = 0.0

    async def microphone() -> BidiAudioInputEvent:
        nonlocal count, started
        await anyio.lowlevel.checkpoint()  # one block per wake-up, as at real time
        count += 1
        if count == 100:  # connected long since (the model connects at once): measure from here
            started = time.process_time()
        elif count == blocks + 100:
            elapsed = time.process_time() - started
            agent.request_stop()
            results.append(elapsed / blocks * 1e6)
            raise EOFError
        return event

    results: list[float] = []
    await agent.run(inputs=[microphone])
    expected = (blocks + 99) * (len(BLOCK) * 4 // 3 + 50)
    assert model.stream.sent >= expected, "the blocks did not reach the socket"
    return results[0]


async def raw_per_block(blocks: int) -> float:
    """The raw floor's work per block (``clients/raw.py``'s microphone), with the same null write."""
    ws = opened()
    stream = _CountingStream()

    def write(data: bytes) -> None:  # asyncio's transport.write: synchronous
        stream.sent += len(data)

    started = time.process_time()
    for _ in range(blocks):
        audio = base64.b64encode(BLOCK).decode()
        write(ws.send(TextMessage(data='{"type":"input_audio_buffer.append","audio":"' + audio + '"}')))
        await anyio.lowlevel.checkpoint()
    return (time.process_time() - started) / blocks * 1e6


async def pieces(n: int = 20000) -> dict[str, float]:
    """The per-block pieces, each timed alone (best of 5 runs of ``n``), on asyncio."""
    from bidi_core.conversation import Conversation, Phase, step
    from bidi_core.shell_events import UserInput, Written

    def best(fn: Callable[[], object]) -> float:
        result = float("inf")
        for _ in range(5):
            gc.collect()
            t = time.process_time()
            for _ in range(n):
                fn()
            result = min(result, (time.process_time() - t) / n * 1e6)
        return result

    event = BidiAudioInputEvent(audio=BLOCK, sample_rate=24000)
    conv = Conversation(phase=Phase.RESPONDING, connection_id="c", connection_proven=True)

    def core() -> None:
        after, effects = step(conv, UserInput(event))
        step(after, Written(effects[0].seq))  # type: ignore[attr-defined]

    text = '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(BLOCK).decode() + '"}'
    ws = opened()
    stream = _CountingStream()
    connection = opened().connection
    assert connection is not None
    session = OpenAIRealtimeSession(WebSocketConnection(stream, connection), "c", ModelCapabilities(), OpenAIConfig())

    def send() -> None:
        step_ = session.send(event)
        try:
            step_.send(None)
        except StopIteration:
            return
        raise RuntimeError("the null stream never waits")

    figures = {
        "core: step(UserInput) + step(Written)": best(core),
        "adapter: session.send (base64, JSON, frame, write)": best(send),
        "frame: wsproto": best(lambda: ws.send(TextMessage(data=text))),
    }
    try:
        from adapters._ws_frames import masked_frame  # not in every baseline
    except ImportError:
        return figures
    figures["frame: adapters/_ws_frames.py"] = best(lambda: masked_frame(1, text.encode()))
    return figures


def measure(blocks: int) -> dict[str, float]:
    """One run of each column, on each backend."""
    out: dict[str, float] = {}
    for backend in ("asyncio", "trio"):
        out[f"raw floor ({backend})"] = anyio.run(raw_per_block, blocks, backend=backend)
        out[f"bidi-core ({backend})"] = anyio.run(bidi_per_block, blocks, backend=backend)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", help="a checkout of the library to measure beside this one")
    parser.add_argument("--pieces", action="store_true", help="also time the per-block pieces alone")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one run, JSON out
    args = parser.parse_args()
    if args.once:
        result = measure(args.blocks)
        if args.pieces:
            result.update(anyio.run(pieces, backend="asyncio"))
        print(json.dumps(result))
        return
    trees = {"this": os.getcwd()}
    if args.baseline:
        trees["baseline"] = os.path.abspath(args.baseline)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    here = os.path.abspath(__file__)
    for _ in range(args.runs):
        for name, tree in trees.items():
            command = [sys.executable, here, "--once", "--blocks", str(args.blocks)]
            done = subprocess.run(
                command + (["--pieces"] if args.pieces else []),
                cwd=tree,
                env={**os.environ, "PYTHONPATH": tree},
                capture_output=True,
                text=True,
                check=True,
            )
            runs[name].append(json.loads(done.stdout))
    print(f"CPU microseconds per microphone block, best of {args.runs} runs of {args.blocks} blocks\n")
    names = list(runs["this"][0])
    header = f"  {'':<52}" + "".join(f"{name:>12}" for name in trees)
    print(header)
    for key in names:
        row = f"  {key:<52}"
        for name in trees:
            values = [run[key] for run in runs[name] if key in run]
            row += f"{min(values):12.2f}" if values else f"{'-':>12}"
        print(row)


if __name__ == "__main__":
    main()
