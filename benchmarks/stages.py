"""Where bidi-core's time per audio chunk goes, stage by stage, without a network.

The suite says how much CPU a chunk costs; this says which stage costs it, on
one 20 ms ``response.output_audio.delta`` frame, with no socket, no other
process and no scheduler noise (each figure is the best of several runs of
thousands of calls):

* **floor**: what the raw client does with a frame (wsproto parse,
  ``json.loads``, ``b64decode``);
* **adapter**: ``WebSocketConnection.receive`` from a stream that always has the
  next frame (its own split of a whole single-frame message, the hand-off;
  wsproto's parse, which it skips for such frames, is the row above it),
  ``wire.decode_server_event`` (JSON, and cattrs for every event but audio
  deltas), ``OpenAIRealtimeSession.receive`` from a socket that always has the
  next frame (JSON, base64, the event, bookkeeping);
* **core**: ``conversation.step`` for an audio event, then
  ``BidiAgent._dispatch`` (step and effects: the event into an output queue);
* **pipeline**: ``BidiAgent.run()`` with an in-memory model session that
  yields ready-made audio events and a counting output: the reader task, the
  state machine, the output queue and the output task, per event, when events
  come in batches and when each one arrives on its own (a checkpoint between
  events, as at real time, where every chunk wakes the loop);

The socket read itself (anyio's socket stream) is not here: it needs a peer
in another process, and the suite's real-time scenarios measure it.

    python -m benchmarks stages          # or: python benchmarks/stages.py
"""

from __future__ import annotations

import base64
import gc
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import anyio
import attrs
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from adapters.openai import wire
from adapters.openai.config import OpenAIConfig
from adapters.openai.session import OpenAIRealtimeSession
from adapters.websocket import WebSocketConnection
from benchmarks.workload import STAMP
from bidi_core import BidiAgent, BidiAudioStreamEvent, BidiResponseStartEvent
from bidi_core.conversation import Conversation, Phase, step
from ports.model import ModelCapabilities

CHUNK = 960  # 20 ms at 24 kHz
PCM = STAMP.pack(0, 1, 0) + b"\0\0" + bytes(CHUNK - 18)
DELTA = json.dumps(
    {
        "type": "response.output_audio.delta",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(PCM).decode(),
        "event_id": "event_123",
    },
    separators=(",", ":"),
)


def best_us(fn: Callable[[], object], n: int = 20000, repeats: int = 5) -> float:
    """Best of ``repeats`` runs of ``n`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


def _open_connection() -> Any:
    """wsproto's client connection (frames only) after a handshake, as ``open_websocket`` has it."""
    client, _ = open_pair()
    return client.connection


def open_pair() -> tuple[WSConnection, bytes]:
    """A client WSConnection in the OPEN state and one server frame carrying DELTA."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="x", target="/")))
    for event in server.events():
        if isinstance(event, Request):
            client.receive_data(server.send(AcceptConnection()))
    list(client.events())
    return client, server.send(TextMessage(data=DELTA))


def sync_stages() -> dict[str, float]:
    client, frame = open_pair()

    def ws_parse() -> object:
        client.receive_data(frame)
        return list(client.events())

    def minimal_frame(frame: bytes) -> str:
        """What parsing one complete, unmasked, unfragmented server text frame takes."""
        length = frame[1] & 0x7F
        if length == 126:
            return frame[4 : 4 + int.from_bytes(frame[2:4], "big")].decode()
        return frame[2 : 2 + length].decode()

    def floor_minimal() -> object:
        return base64.b64decode(json.loads(minimal_frame(frame))["delta"])

    def floor() -> object:
        client.receive_data(frame)
        for event in client.events():
            message = json.loads(event.data)
            return base64.b64decode(message["delta"])
        return None

    class _Stream:
        """A byte stream that always has the next frame."""

        async def receive(self, max_bytes: int = 65536) -> bytes:
            return frame

    ws = WebSocketConnection(_Stream(), _open_connection())  # type: ignore[arg-type]

    def ws_receive() -> object:
        step = ws.receive()
        try:
            step.send(None)
        except StopIteration as stop:
            return stop.value
        raise RuntimeError("the fake stream never waits")

    class _Frames:
        """A socket that always has the next audio delta ready."""

        async def receive(self) -> str:
            return DELTA

    caps = ModelCapabilities()
    session = OpenAIRealtimeSession(_Frames(), "c", caps, OpenAIConfig())  # type: ignore[arg-type]

    def receive() -> object:
        step = session.receive()
        try:
            step.send(None)
        except StopIteration as stop:
            return stop.value
        raise RuntimeError("the fake socket never waits")

    audio = BidiAudioStreamEvent(audio=PCM, sample_rate=24000, response_id="resp_1")
    conv = Conversation(
        phase=Phase.RESPONDING, response_id="resp_1", audible_id="resp_1", connection_id="c", connection_proven=True
    )

    agent = BidiAgent(model=_FakeModel([]))
    agent._conv = conv
    agent._lifecycle = "running"
    from bidi_core.queues import OutputQueue

    queue = OutputQueue(1 << 30, "sink")
    agent._outputs = [queue]

    def dispatch() -> None:
        agent._dispatch(audio)
        if len(queue) > 10000:
            queue._items.clear()

    return {
        "floor: wsproto parse + json.loads + b64decode": best_us(floor),
        "  the same with a minimal frame parser, no wsproto": best_us(floor_minimal),
        "adapter: wsproto parse (one frame)": best_us(ws_parse),
        "adapter: WebSocketConnection.receive (split + hand-off)": best_us(ws_receive),
        "adapter: wire.decode_server_event (json + event)": best_us(lambda: wire.decode_server_event(DELTA)),
        "  of which json.loads": best_us(lambda: json.loads(DELTA)),
        "adapter: session.receive (json + b64decode + event)": best_us(receive),
        "  of which BidiAudioStreamEvent(...)": best_us(
            lambda: BidiAudioStreamEvent(audio=PCM, sample_rate=24000, response_id="resp_1")
        ),
        "core: conversation.step (audio event)": best_us(lambda: step(conv, audio)),
        "  of which attrs.evolve(conv, received_ms=...)": best_us(lambda: attrs.evolve(conv, received_ms=1.0)),
        "core: BidiAgent._dispatch (step + Emit -> queue)": best_us(dispatch),
    }


# --------------------------------------------------------------------------- the agent with an in-memory model


class _FakeSession:
    def __init__(self, events: list[Any], yield_each: bool) -> None:
        self.events = events
        self.position = 0
        self.yield_each = yield_each
        self.connection_id = "fake"
        self.capabilities = ModelCapabilities()

    async def send(self, item: Any) -> None:
        return None

    async def receive(self) -> Any:
        if self.position < len(self.events):
            if self.yield_each:
                await anyio.lowlevel.checkpoint()
            self.position += 1
            return self.events[self.position - 1]
        await anyio.sleep_forever()


class _FakeModel:
    model_id = "fake"
    capabilities = ModelCapabilities()

    def __init__(self, events: list[Any], yield_each: bool = False) -> None:
        self.events = events
        self.yield_each = yield_each

    @asynccontextmanager
    async def connect(self, request: Any) -> AsyncIterator[_FakeSession]:
        yield _FakeSession(self.events, self.yield_each)


async def pipeline(n: int, yield_each: bool) -> float:
    """CPU microseconds per audio event through ``BidiAgent.run()``."""
    events: list[Any] = [BidiResponseStartEvent("resp_1")]
    events += [BidiAudioStreamEvent(audio=PCM, sample_rate=24000, response_id="resp_1") for _ in range(n)]
    agent = BidiAgent(model=_FakeModel(events, yield_each))
    seen = 0
    started = 0.0

    async def output(event: Any) -> None:
        nonlocal seen, started
        if type(event) is BidiAudioStreamEvent:
            seen += 1
            if seen == 1:
                started = time.process_time()
            elif seen == n:
                agent.request_stop()

    await agent.run(outputs=[output])
    return (time.process_time() - started) / (n - 1) * 1e6


def main() -> None:
    print(f"per 20 ms output audio chunk ({len(DELTA)} bytes of JSON), microseconds, best of 5\n")
    for name, us in sync_stages().items():
        print(f"  {name:<52} {us:7.2f}")
    print()
    for backend in ("asyncio", "trio"):
        batched = min(anyio.run(pipeline, 20000, False, backend=backend) for _ in range(3))
        each = min(anyio.run(pipeline, 20000, True, backend=backend) for _ in range(3))
        for label, us in (("events in batches", batched), ("one event per wake", each)):
            print(f"  {f'pipeline ({backend}): agent.run(), {label}':<52} {us:7.2f}")


if __name__ == "__main__":
    main()
