"""The second floor: the raw client most Python users would write, on ``websockets``.

The same workload as :mod:`benchmarks.clients.raw` (the turns asked for with
text, audio of a response cut short by ``speech_started`` dropped, tool calls
answered at once, the microphone streamed in duplex and, with ``--mic``, in
the sessions ramp), but the WebSocket is the ``websockets`` library's asyncio
client (``websockets.asyncio.client.connect``, its defaults but the proxy
lookup, which a loopback benchmark does not want), read with ``async for``
and written with ``await send()``, as its documentation shows. No framework,
``json`` and ``base64`` and the counting sink. The wsproto floor stays the
one ratios are taken to (it is the WebSocket code bidi-core itself uses); this
column answers "was the floor made slow?": ``websockets`` parses frames in a
``Protocol`` callback (C-accelerated unmasking) and hands whole messages to
the reader, which is what most applications on OpenAI Realtime run.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from benchmarks.clients import parse_args
from benchmarks.clients.raw import SESSION_UPDATE, run_scenarios, run_sessions_ramp
from benchmarks.scheduler_counts import COUNTS
from benchmarks.workload import (
    API_KEY,
    TOOL_RESULT,
    Recorder,
    Scenario,
    barge_pcm,
    model_id,
    pin_to_cpu,
    raise_fd_limit,
    silence_pcm,
    write_result,
)

CLIENT = "raw-websockets"
TEXT_TURN = json.dumps(
    {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "next"}]},
    }
)


class WebsocketsSession:
    """One conversation. ``mic``: stream the microphone also outside the duplex scenario."""

    def __init__(self, url: str, scenario: Scenario, key: str, recorder: Recorder, mic: bool = False) -> None:
        self.uri = f"{url}/realtime?model={model_id(scenario.name, key)}"
        self.scenario = scenario
        self.rec = recorder
        self.mic = mic or scenario.kind == "duplex"
        self.ws: ClientConnection | None = None
        self.active: str | None = None
        self.cut: set[str] = set()
        self.closing = False
        self.closer: asyncio.Task[None] | None = None

    async def request_turn(self, ws: ClientConnection) -> None:
        self.rec.text_sent()
        await ws.send(TEXT_TURN)
        await ws.send('{"type":"response.create"}')

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with connect(self.uri, additional_headers=headers, proxy=None) as ws:
            self.ws = ws
            await ws.send(SESSION_UPDATE)
            mic = asyncio.get_running_loop().create_task(self.microphone(ws)) if self.mic else None
            if self.scenario.kind != "duplex":
                await self.request_turn(ws)
            try:
                async for message in ws:
                    if await self.on_message(ws, json.loads(message)):
                        break
            finally:
                self.closing = True
                if mic is not None:
                    mic.cancel()

    async def on_message(self, ws: ClientConnection, msg: dict[str, Any]) -> bool:
        """Handle one server event; True when the scenario is over."""
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
            await ws.send(json.dumps({"type": "conversation.item.create", "item": output}))
            await ws.send('{"type":"response.create"}')
        elif kind == "response.done":
            self.active = None
            if self.rec.response_ended():
                return True
            if self.scenario.kind == "text":
                await self.request_turn(ws)
        return False

    def close(self) -> None:
        """Leave (the ramp's end): the closing handshake, in a task of its own."""
        if self.ws is not None and not self.closing:
            self.closing = True
            self.closer = asyncio.get_running_loop().create_task(self.ws.close())

    async def microphone(self, ws: ClientConnection) -> None:
        """20 ms of microphone audio every 20 ms; a marker chunk when the user barges in."""
        loop = asyncio.get_running_loop()
        size = self.scenario.chunk_bytes
        silence = base64.b64encode(silence_pcm(size)).decode()
        start = loop.time()
        n = 0
        while not self.closing:
            turn = self.rec.take_barge()
            audio = silence if turn is None else base64.b64encode(barge_pcm(turn, size)).decode()
            await ws.send('{"type":"input_audio_buffer.append","audio":"' + audio + '"}')
            n += 1
            await asyncio.sleep(max(0.0, start + n * self.scenario.chunk_ms / 1000 - loop.time()))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    pin_to_cpu(args.cpu)
    raise_fd_limit()
    if not args.ramp:
        COUNTS.install("asyncio")  # the scenarios report task steps and wake-ups per chunk
    run = run_sessions_ramp if args.ramp else run_scenarios
    result = asyncio.run(run(args, WebsocketsSession, CLIENT))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
