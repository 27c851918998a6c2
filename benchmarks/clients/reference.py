"""The reference: Strands Agents' ``BidiAgent`` with its OpenAI Realtime model.

Runs in the reference's own virtualenv (:mod:`benchmarks.reference_env`), so
it imports nothing from bidi-core. The model's endpoint is the module
constant ``OPENAI_REALTIME_URL`` (there is no base-URL option); it is
overwritten with the load server's URL before connecting. In strands-agents
1.62.0 the model lives in ``strands.bidi.models.openai.realtime``
(``strands.experimental.bidi`` is a deprecated alias of ``strands.bidi``);
older releases had ``strands.experimental.bidi.models.openai_realtime``.

The same workload as the other clients, through ``BidiAgent.run()``: an
output that hands each audio delta to the counting sink (decoding the base64
the reference leaves in its events, as its own audio output does), an input
that asks for the next turn or streams the microphone, an instant ``async``
tool. The reference's ``run()`` has no way to end a conversation from an
output, so the run task is cancelled when the scenario is over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import os
import sys
import warnings
from typing import Any

from benchmarks.clients import parse_args, server_load
from benchmarks.scheduler_counts import COUNTS
from benchmarks.workload import (
    API_KEY,
    PROFILES,
    RAMPS,
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

warnings.simplefilter("ignore", DeprecationWarning)

from strands import tool  # noqa: E402
from strands.bidi import BidiAgent  # noqa: E402
from strands.bidi.types.events import BidiAudioDeltaEvent, BidiBargeInEvent, BidiResponseStopEvent  # noqa: E402
from strands.bidi.types.media import AudioDelta  # noqa: E402

MODEL_MODULES = ("strands.bidi.models.openai.realtime", "strands.experimental.bidi.models.openai_realtime")


def realtime_module() -> Any:
    for name in MODEL_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "OPENAI_REALTIME_URL"):
            return module
    raise ImportError(f"none of {MODEL_MODULES} has OPENAI_REALTIME_URL")


@tool
async def get_time(zone: str = "UTC") -> str:
    """The current time.

    Args:
        zone: A time zone name.
    """
    return TOOL_RESULT


class CountingOutput:
    def __init__(self, rec: Recorder, turn_ready: asyncio.Event, finished: asyncio.Event) -> None:
        self.rec = rec
        self.turn_ready = turn_ready
        self.finished = finished

    async def start(self, agent: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def __call__(self, event: Any) -> None:
        kind = type(event)
        if kind is BidiAudioDeltaEvent:
            self.rec.audio(base64.b64decode(event["audio"]))
        elif kind is BidiBargeInEvent:
            self.rec.interrupted()
        elif kind is BidiResponseStopEvent:
            if self.rec.response_ended():
                self.finished.set()
            elif self.rec.scenario.kind == "text":
                self.turn_ready.set()


class TextTurns:
    def __init__(self, gate: asyncio.Event, turns: int, rec: Recorder) -> None:
        self.gate = gate
        self.left = turns
        self.rec = rec

    async def start(self, agent: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def __call__(self) -> str:
        if self.left == 0:
            await asyncio.Event().wait()  # the reference's run() fails when an input ends; wait to be cancelled
        await self.gate.wait()
        self.gate.clear()
        self.left -= 1
        self.rec.text_sent()  # handed to the agent on return: time to first audio starts
        return "next"


class Microphone:
    def __init__(self, rec: Recorder, scenario: Scenario) -> None:
        self.rec = rec
        self.size = scenario.chunk_bytes
        self.period = scenario.chunk_ms / 1000
        self.silence = AudioDelta(format="pcm", source={"bytes": silence_pcm(self.size)})
        self.next_at = 0.0

    async def start(self, agent: Any) -> None:
        self.next_at = asyncio.get_running_loop().time()

    async def stop(self) -> None:
        return None

    async def __call__(self) -> AudioDelta:
        loop = asyncio.get_running_loop()
        self.next_at += self.period
        await asyncio.sleep(max(0.0, self.next_at - loop.time()))
        turn = self.rec.take_barge()
        if turn is None:
            return self.silence
        return AudioDelta(format="pcm", source={"bytes": barge_pcm(turn, self.size)})


def make_agent(scenario: Scenario, key: str) -> Any:
    module = realtime_module()
    model = module.OpenAIRealtimeModel(
        transcription_model_id=None, api_key=API_KEY, model_id=model_id(scenario.name, key)
    )
    return BidiAgent(model=model, tools=[get_time])


async def run_one(
    scenario: Scenario, key: str, rec: Recorder, finished: asyncio.Event | None = None, mic: bool = False
) -> None:
    gate = asyncio.Event()
    gate.set()
    finished = finished or asyncio.Event()
    agent = make_agent(scenario, key)
    inputs: list[Any]
    if scenario.kind == "duplex":
        inputs = [Microphone(rec, scenario)]
    else:
        inputs = [TextTurns(gate, len(scenario.turns_ms) if scenario.kind == "text" else 1, rec)]
        if mic:
            inputs.append(Microphone(rec, scenario))  # the duplex ramp
    run = asyncio.get_running_loop().create_task(
        agent.run(inputs=inputs, outputs=[CountingOutput(rec, gate, finished)])
    )
    done = asyncio.get_running_loop().create_task(finished.wait())
    await asyncio.wait({run, done}, return_when=asyncio.FIRST_COMPLETED)
    done.cancel()
    if not run.done():
        run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run  # a failure of the run itself is raised here


async def run_scenarios(args: Any) -> dict[str, Any]:
    realtime_module().OPENAI_REALTIME_URL = args.url + "/realtime"
    results = {}
    for name in args.scenarios.split(","):
        scenario = PROFILES[args.profile][name]
        rec = Recorder(scenario)
        await asyncio.wait_for(run_one(scenario, f"{args.key}.{name}", rec), 600)
        results[name] = rec.summary()
    return {"client": "reference", "scenarios": results}


async def run_sessions_ramp(args: Any) -> dict[str, Any]:
    realtime_module().OPENAI_REALTIME_URL = args.url + "/realtime"
    scenario = PROFILES[args.profile]["sessions"]
    latencies: list[int] = []
    recorders: list[Recorder] = []
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()

    def add(n: int) -> None:
        for _ in range(n):
            rec = Recorder(scenario, latencies_ns=latencies)
            recorders.append(rec)
            key = f"{args.key}.s{len(tasks)}"
            tasks.append(asyncio.get_running_loop().create_task(run_one(scenario, key, rec, stop, args.mic)))

    result = await run_ramp(
        RAMPS[args.profile],
        add,
        lambda: sum(1 for r in recorders if r.chunks),
        latencies,
        asyncio.sleep,
        lambda: server_load(args.url),
    )
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=5)
    document = {"client": "reference", "ramp": result, "sessions_still_closing_after_5_s": len(pending)}
    if pending:
        # Hundreds of sessions closing on a loop that still serves the others take long
        # (165 of 300 were still closing after 5 s when this was written), and the ramp
        # does not measure tear-down: leave without waiting for asyncio.run's cleanup.
        write_result(args.out, document)
        sys.stderr.flush()
        os._exit(0)
    return document


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
