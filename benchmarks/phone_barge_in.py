"""Phone barge-in and pacing, measured at the caller: the Twilio bridge against the carrier simulator.

Serves the bridge on hypercorn in this process with the OpenAI Realtime
simulator as the model, and places ``--calls`` calls per backend with the
carrier simulator. In each, the caller asks a question, hears part of a long
answer, then talks over it. On the carrier's clock it reports:

* **barge-in to silence**: from the caller's first frame of speech over the
  answer to the moment the carrier's buffer was emptied by ``clear``. It
  includes the model's turn detection (the simulator's energy detector: one
  20 ms frame), the network hops and the bridge;
* **heard after speaking up**: how much of the answer the caller heard in
  that time;
* **largest lead**: the most audio ever waiting at the carrier (the bridge
  keeps it at most ``lead_ms`` plus one 20 ms chunk);
* **truncation error**: what the caller had heard at the clear minus what
  the model was told it heard (the played position's lag: at most the mark
  still on its way).

    python benchmarks/phone_barge_in.py [--calls 10] [--lead-ms 100] [--backend asyncio trio]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import anyio

from adapters.openai import BidiOpenAIRealtimeModel
from adapters.telephony import PhoneCall, TwilioBridge
from adapters.testing.openai_simulator import OpenAIRealtimeSimulator, Reply, Rule, Scenario
from adapters.testing.twilio_simulator import TwilioCarrierSimulator, tone_8k
from adapters.web import WebApp
from adapters.web.server import serving
from bidi_core import BidiAgent

TOKEN = "benchmark-auth-token"
PUBLIC = "https://phone.example.test"


async def measure(calls: int, lead_ms: float) -> dict[str, list[float]]:
    scenario = Scenario(rules=[Rule(reply=Reply(say="A long answer to talk over.", audio_ms=4000))])
    figures: dict[str, list[float]] = {"silence": [], "heard_after": [], "lead": [], "truncation_error": []}
    async with OpenAIRealtimeSimulator(api_key="sk-bench", scenario=scenario) as sim:

        async def run_call(call: PhoneCall) -> None:
            model = BidiOpenAIRealtimeModel(
                api_key="sk-bench",
                base_url=sim.base_url,
                provider_config={"transcription": {"model": "gpt-4o-mini-transcribe"}},
            )
            await BidiAgent(model=model).run(inputs=[call.input()], outputs=[call.output()])

        async def no_browser(conversation: Any) -> None:
            return None

        app = WebApp(no_browser, demo_page=False)
        TwilioBridge(app, run_call, public_url=PUBLIC, auth_token=TOKEN, lead_ms=lead_ms)
        async with serving(app) as port:
            carrier = TwilioCarrierSimulator(
                auth_token=TOKEN, voice_url=f"{PUBLIC}/twilio/voice", connect=("127.0.0.1", port)
            )
            for _ in range(calls):
                before = len(sim.truncations)
                with anyio.fail_after(60):
                    async with carrier.call() as call:
                        call.say(tone_8k(400))
                        await call.wait_heard(600)
                        barge_in = call.say(tone_8k(400))
                        await call.wait_clear()
                        await sim.wait_until(lambda: len(sim.truncations) > before)  # noqa: B023
                record = call.record
                clear = record.clears[0]
                assert barge_in.started_at is not None and barge_in.heard_ms_at_start is not None
                figures["silence"].append((clear.at - barge_in.started_at) * 1000)
                figures["heard_after"].append(clear.heard_ms - barge_in.heard_ms_at_start)
                figures["lead"].append(record.max_buffered_ms)
                figures["truncation_error"].append(clear.heard_ms - sim.truncations[-1].audio_end_ms)
    return figures


def line(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"  {name:<28} p50 {statistics.median(values):6.1f}  p90 {p90:6.1f}  max {max(values):6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--lead-ms", type=float, default=100.0)
    parser.add_argument("--backend", nargs="+", default=["asyncio", "trio"], choices=["asyncio", "trio"])
    args = parser.parse_args()
    for backend in args.backend:
        figures = anyio.run(measure, args.calls, args.lead_ms, backend=backend)
        print(f"{backend}: {args.calls} calls, lead {args.lead_ms:g} ms")
        print(line("barge-in to silence", figures["silence"]))
        print(line("heard after speaking up", figures["heard_after"]))
        print(line("largest lead at the carrier", figures["lead"]))
        print(line("truncation error", figures["truncation_error"]))


if __name__ == "__main__":
    main()
