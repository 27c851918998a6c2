"""The raw floor: what any Python client of this protocol must do, and no more.

A socket from asyncio's streams, WebSocket framing by wsproto (the library
bidi-core's own WebSocket uses, so the floor is the same protocol code
without a framework around it), ``json.loads``, ``base64.b64decode`` and the
counting sink. It still plays the whole workload correctly: it asks for the
turns, drops audio of a response cut short by ``speech_started``, answers
tool calls at once, and streams the microphone in duplex.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from benchmarks.clients import parse_args, server_load
from benchmarks.scheduler_counts import COUNTS
from benchmarks.workload import (
    API_KEY,
    PROFILES,
    RAMPS,
    TOOL_NAME,
    TOOL_RESULT,
    Recorder,
    Scenario,
    barge_pcm,
    model_id,
    pin_to_cpu,
    raise_fd_limit,
    run_ramp,
    silence_pcm,
    write_result,
)

SESSION_UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
            },
            "tools": [{"type": "function", "name": TOOL_NAME, "description": "The time.", "parameters": {}}],
        },
    }
)


class RawWorkload:
    """One conversation's protocol and workload, without I/O (as wsproto itself):
    what arrives is handed to :meth:`received`, what goes out is passed to
    ``self.write`` (bytes). A transport subclass connects, reads, sets
    ``write`` and starts :meth:`start_microphone`'s task; the asyncio floor
    (:class:`RawSession`) and the Trio floor (``raw_trio.py``) share this.
    ``mic``: stream the microphone also outside the duplex scenario (the
    duplex sessions ramp)."""

    write: Callable[[bytes], object]
    """Sends bytes, or queues them for the transport to send; an attribute, not
    a method, so that it costs what a call of the transport's own write does."""

    def __init__(self, url: str, scenario: Scenario, key: str, recorder: Recorder, mic: bool = False) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = f"{parts.path}/realtime?model={model_id(scenario.name, key)}"
        self.scenario = scenario
        self.rec = recorder
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.active: str | None = None
        self.cut: set[str] = set()
        self.turn_requests = 0
        self.closing = False
        self.connected = False
        self.mic = mic or scenario.kind == "duplex"
        self.parts: list[str] = []
        self.silence = base64.b64encode(silence_pcm(scenario.chunk_bytes)).decode()

    def handshake(self) -> bytes:
        request = Request(
            host=f"{self.host}:{self.port}", target=self.path, extra_headers=[("Authorization", f"Bearer {API_KEY}")]
        )
        return self.ws.send(request)

    def send(self, text: str) -> None:
        self.write(self.ws.send(TextMessage(data=text)))

    def request_turn(self) -> None:
        self.rec.text_sent()
        self.turn_requests += 1
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "next"}]}
        self.send(json.dumps({"type": "conversation.item.create", "item": item}))
        self.send('{"type":"response.create"}')

    def received(self, data: bytes) -> None:
        """Bytes from the socket: every whole message they complete, handled."""
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                if not event.message_finished:
                    self.parts.append(event.data)
                    continue
                parts = self.parts
                text = "".join((*parts, event.data)) if parts else event.data
                parts.clear()
                self.on_message(json.loads(text))
            elif isinstance(event, AcceptConnection):
                self.connected = True
                self.send(SESSION_UPDATE)
                if self.mic:
                    self.start_microphone()
                if self.scenario.kind != "duplex":
                    self.request_turn()
            elif isinstance(event, Ping):
                self.write(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.closing = True

    def on_message(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "response.output_audio.delta":
            if msg["response_id"] not in self.cut:
                self.rec.audio(base64.b64decode(msg["delta"]))
        elif kind == "response.created":
            self.active = msg["response"]["id"]
        elif kind == "input_audio_buffer.speech_started":
            if self.active is not None:
                self.cut.add(self.active)
                self.rec.interrupted()
        elif kind == "response.function_call_arguments.done":
            output = {"type": "function_call_output", "call_id": msg["call_id"], "output": TOOL_RESULT}
            self.send(json.dumps({"type": "conversation.item.create", "item": output}))
            self.send('{"type":"response.create"}')
        elif kind == "response.done":
            self.active = None
            if self.rec.response_ended():
                self.close()
            elif self.scenario.kind == "text":
                self.request_turn()

    def close(self) -> None:
        if self.connected and not self.closing:
            self.closing = True
            self.write(self.ws.send(CloseConnection(code=1000)))

    def start_microphone(self) -> None:
        """Start a task that sends :meth:`microphone_block` every 20 ms while not ``closing``."""
        raise NotImplementedError

    def microphone_block(self) -> str:
        """The next 20 ms of microphone audio: silence, or a marker chunk when the user barges in."""
        turn = self.rec.take_barge()
        audio = self.silence if turn is None else base64.b64encode(barge_pcm(turn, self.scenario.chunk_bytes)).decode()
        return '{"type":"input_audio_buffer.append","audio":"' + audio + '"}'


class RawSession(RawWorkload):
    """The workload on asyncio streams: ``write`` is the stream writer's own."""

    mic_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.write = writer.write
        writer.write(self.handshake())
        try:
            while not self.closing:
                data = await reader.read(65536)
                if not data:
                    break
                self.received(data)
        finally:
            if self.mic_task is not None:
                self.mic_task.cancel()
            writer.close()

    def start_microphone(self) -> None:
        self.mic_task = asyncio.get_running_loop().create_task(self.microphone())

    async def microphone(self) -> None:
        """20 ms of microphone audio every 20 ms, paced from the start."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self.closing:
            self.send(self.microphone_block())
            n += 1
            await asyncio.sleep(max(0.0, start + n * self.scenario.chunk_ms / 1000 - loop.time()))


class Session(Protocol):
    """What :func:`run_scenarios` and :func:`run_sessions_ramp` need of a raw client's session."""

    async def run(self) -> None: ...

    def close(self) -> None: ...


SessionFactory = Callable[[str, Scenario, str, Recorder, bool], Session]
"""``(url, scenario, key, recorder, mic) -> session``: a raw client's session class."""


async def run_scenarios(args: Any, make: SessionFactory = RawSession, client: str = "raw") -> dict[str, Any]:
    results = {}
    for name in args.scenarios.split(","):
        scenario = PROFILES[args.profile][name]
        rec = Recorder(scenario)
        await make(args.url, scenario, f"{args.key}.{name}", rec, False).run()
        results[name] = rec.summary()
    return {"client": client, "scenarios": results}


async def ramp_sessions(
    args: Any,
    make: SessionFactory,
    client: str,
    spawn: Callable[[Callable[[], Awaitable[None]]], object],
    sleep: Callable[[float], Awaitable[None]],
) -> dict[str, Any]:
    """The sessions ramp on any event loop: ``spawn(session.run)`` starts a
    session's task, ``sleep`` is the loop's. With ``--mic`` every session also
    streams the microphone. At the end every session is asked to close and
    given 0.2 s; the caller cancels what is left."""
    scenario = PROFILES[args.profile]["sessions"]
    latencies: list[int] = []
    recorders: list[Recorder] = []
    sessions: list[Session] = []

    def add(n: int) -> None:
        for _ in range(n):
            rec = Recorder(scenario, latencies_ns=latencies)
            session = make(args.url, scenario, f"{args.key}.s{len(sessions)}", rec, args.mic)
            recorders.append(rec)
            sessions.append(session)
            spawn(session.run)

    result = await run_ramp(
        RAMPS[args.profile],
        add,
        lambda: sum(1 for r in recorders if r.chunks),
        latencies,
        sleep,
        lambda: server_load(args.url),
    )
    for session in sessions:
        session.close()
    await sleep(0.2)
    return {"client": client, "ramp": result}


async def run_sessions_ramp(args: Any, make: SessionFactory = RawSession, client: str = "raw") -> dict[str, Any]:
    """The sessions ramp on asyncio, every session a task."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(run: Callable[[], Awaitable[None]]) -> None:
        task: asyncio.Task[None] = loop.create_task(run())  # type: ignore[arg-type]
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        return await ramp_sessions(args, make, client, spawn, asyncio.sleep)
    finally:
        for task in list(tasks):
            task.cancel()


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    pin_to_cpu(args.cpu)
    raise_fd_limit()
    if not args.ramp:
        COUNTS.install("asyncio")  # the scenarios report task steps and wake-ups per chunk
    result = asyncio.run(run_sessions_ramp(args) if args.ramp else run_scenarios(args))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
