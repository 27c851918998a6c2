"""bidi-core: ``BidiAgent.run()`` with the OpenAI adapter, on asyncio or Trio.

Everything goes through the public API a voice application uses: the
adapter's WebSocket, the agent's reader, the state machine, the output queue
and an output task. The output is the counting sink; the input asks for the
next turn (text scenarios) or streams the microphone (duplex); the tool is an
instant ``async def`` (a sync tool would run in a worker thread).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import sniffio

from adapters.openai import BidiOpenAIRealtimeModel
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
from bidi_core import (
    BidiAgent,
    BidiAudioInputEvent,
    BidiAudioStreamEvent,
    BidiInterruptionEvent,
    BidiResponseCompleteEvent,
    tool,
)


@tool
async def get_time(zone: str = "UTC") -> str:
    """The current time.

    Args:
        zone: A time zone name.
    """
    return TOOL_RESULT


class CountingOutput:
    """A ``BidiOutput`` that hands each audio block to the counting sink, on the spot."""

    def __init__(self, rec: Recorder, turn_ready: TurnGate) -> None:
        self.rec = rec
        self.turn_ready = turn_ready
        self.agent: BidiAgent | None = None

    async def start(self, agent: Any) -> None:
        self.agent = agent

    async def stop(self) -> None:
        return None

    async def __call__(self, event: Any) -> None:
        self.offer(event)

    def offer(self, event: Any) -> bool:
        """Everything it does is quick: taken on the spot (``ports.io.BidiInlineOutput``)."""
        kind = type(event)
        if kind is BidiAudioStreamEvent:
            self.rec.audio(event.audio)
        elif kind is BidiInterruptionEvent:
            self.rec.interrupted()
        elif kind is BidiResponseCompleteEvent:
            if self.rec.response_ended():
                assert self.agent is not None
                self.agent.request_stop()
            elif self.rec.scenario.kind == "text":
                self.turn_ready.open()
        return True


class TurnGate:
    """An event that can be set again: the output opens it when a turn ends."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._event.set()

    def open(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


class TextTurns:
    """A ``BidiInput`` that asks for the next turn each time the last one ended."""

    def __init__(self, gate: TurnGate, turns: int, rec: Recorder) -> None:
        self.gate = gate
        self.left = turns
        self.rec = rec

    async def start(self, agent: Any) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def __call__(self) -> str:
        if self.left == 0:
            raise EOFError
        await self.gate.wait()
        self.left -= 1
        self.rec.text_sent()  # handed to the agent on return: time to first audio starts
        return "next"


class Microphone:
    """A ``BidiInput``: one chunk every 20 ms, a marker chunk to barge in.

    Paced as the floors' microphones are: the monotonic clock read directly and the event
    loop's own sleep (``asyncio.sleep`` or ``trio.sleep``, chosen once). ``anyio.current_time()``
    and ``anyio.sleep()`` look the backend up on every call; in the duplex ramp that lookup was
    5 % of this client's CPU (py-spy), a cost of this fixture, not of bidi-core."""

    def __init__(self, rec: Recorder, scenario: Scenario) -> None:
        self.rec = rec
        self.size = scenario.chunk_bytes
        self.period = scenario.chunk_ms / 1000
        self.silence = BidiAudioInputEvent(audio=silence_pcm(self.size), sample_rate=24000)
        self.next_at = 0.0
        self.sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    async def start(self, agent: Any) -> None:
        self.next_at = time.monotonic()
        if sniffio.current_async_library() == "trio":
            import trio

            self.sleep = trio.sleep
        else:
            self.sleep = asyncio.sleep

    async def stop(self) -> None:
        return None

    async def __call__(self) -> BidiAudioInputEvent:
        self.next_at += self.period
        await self.sleep(max(0.0, self.next_at - time.monotonic()))
        turn = self.rec.take_barge()
        if turn is None:
            return self.silence
        return BidiAudioInputEvent(audio=barge_pcm(turn, self.size), sample_rate=24000)


def make_agent(url: str, scenario: Scenario, key: str) -> BidiAgent:
    model = BidiOpenAIRealtimeModel(model_id(scenario.name, key), api_key=API_KEY, base_url=url)
    return BidiAgent(model=model, tools=[get_time])


async def run_one(url: str, scenario: Scenario, key: str, rec: Recorder) -> None:
    gate = TurnGate()
    agent = make_agent(url, scenario, key)
    inputs: list[Any]
    if scenario.kind == "duplex":
        inputs = [Microphone(rec, scenario)]
    else:
        inputs = [TextTurns(gate, len(scenario.turns_ms) if scenario.kind == "text" else 1, rec)]
    await agent.run(inputs=inputs, outputs=[CountingOutput(rec, gate)])


async def run_scenarios(args: Any) -> dict[str, Any]:
    results = {}
    for name in args.scenarios.split(","):
        scenario = PROFILES[args.profile][name]
        rec = Recorder(scenario)
        with anyio.fail_after(600):
            await run_one(args.url, scenario, f"{args.key}.{name}", rec)
        results[name] = rec.summary()
    return {"client": f"bidi-{args.backend}", "prototype": args.prototype, "scenarios": results}


async def run_sessions_ramp(args: Any) -> dict[str, Any]:
    scenario = PROFILES[args.profile]["sessions"]
    latencies: list[int] = []
    recorders: list[Recorder] = []
    agents: list[BidiAgent] = []
    result: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:

        async def session(agent: BidiAgent, rec: Recorder) -> None:
            inputs: list[Any] = [TextTurns(TurnGate(), 1, rec)]
            if args.mic:
                inputs.append(Microphone(rec, scenario))  # the duplex ramp
            await agent.run(inputs=inputs, outputs=[CountingOutput(rec, TurnGate())])

        def add(n: int) -> None:
            for _ in range(n):
                rec = Recorder(scenario, latencies_ns=latencies)
                agent = make_agent(args.url, scenario, f"{args.key}.s{len(agents)}")
                recorders.append(rec)
                agents.append(agent)
                tg.start_soon(session, agent, rec)

        result = await run_ramp(
            RAMPS[args.profile],
            add,
            lambda: sum(1 for r in recorders if r.chunks),
            latencies,
            anyio.sleep,
            lambda: server_load(args.url),
        )
        for agent in agents:
            agent.request_stop()
        # Each run() returns once its agent has closed; leave 20 s for 1000 polite goodbyes.
        tg.cancel_scope.deadline = anyio.current_time() + 20
    return {"client": f"bidi-{args.backend}", "ramp": result}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    applied: list[str] = []
    if args.prototype:
        from benchmarks import prototype_fixes

        applied = prototype_fixes.apply(args.prototype)
    pin_to_cpu(args.cpu)
    raise_fd_limit()
    if not args.ramp:
        COUNTS.install(args.backend)  # the scenarios report task steps and wake-ups per chunk
    fn = run_sessions_ramp if args.ramp else run_scenarios
    result = anyio.run(fn, args, backend=args.backend)
    result["prototypes_applied"] = applied
    write_result(args.out, result)


if __name__ == "__main__":
    main()
