"""What watching a conversation costs: CPU per audio chunk through ``BidiAgent.run()``.

The pipeline of ``benchmarks/stages.py`` (an in-memory model session yielding
ready-made events, one counting output), with responses of 50 chunks (one
second of audio: a response start, 50 chunks, a completion), three ways:

* **no observer**: the default agent (its turn timer included);
* **otel, no SDK**: ``BidiTelemetry()`` over the API's default providers, as in
  an application that installed the extra but configured nothing;
* **otel + SDK**: a ``TracerProvider`` with a batch span processor and a
  ``MeterProvider`` with an in-memory reader (the export itself, a network
  call in a real deployment, happens on the SDK's own thread and is not
  counted here).

Each figure is CPU microseconds per chunk (``time.process_time``), the best of
several runs, the three configurations interleaved so drifts of the machine
hit them alike.

    python -m benchmarks telemetry [--chunks 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import anyio

from adapters.otel import BidiTelemetry
from benchmarks.stages import PCM, _FakeModel
from bidi_core import BidiAgent, BidiAudioStreamEvent, BidiResponseCompleteEvent, BidiResponseStartEvent

PER_RESPONSE = 50  # 1 s of 20 ms chunks


def events(chunks: int) -> list[Any]:
    out: list[Any] = []
    for r in range(chunks // PER_RESPONSE):
        rid = f"resp_{r}"
        out.append(BidiResponseStartEvent(rid))
        out += [BidiAudioStreamEvent(audio=PCM, sample_rate=24000, response_id=rid) for _ in range(PER_RESPONSE)]
        out.append(BidiResponseCompleteEvent(rid, "complete"))
    return out


async def per_chunk(chunks: int, observers: Callable[[], list[Any]]) -> float:
    """CPU microseconds per audio chunk, from the first chunk to the last."""
    agent = BidiAgent(model=_FakeModel(events(chunks), yield_each=True), observers=observers())
    total = chunks // PER_RESPONSE * PER_RESPONSE
    seen = 0
    started = 0.0

    async def output(event: Any) -> None:
        nonlocal seen, started
        if type(event) is BidiAudioStreamEvent:
            seen += 1
            if seen == 1:
                started = time.process_time()
            elif seen == total:
                agent.request_stop()

    await agent.run(outputs=[output])
    return (time.process_time() - started) / (total - 1) * 1e6


def configurations() -> dict[str, Callable[[], list[Any]]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    no_sdk = BidiTelemetry()
    with_sdk = BidiTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return {
        "no observer": list,
        "otel observer, no SDK configured": lambda: [no_sdk.observer()],
        "otel observer, SDK configured": lambda: [with_sdk.observer()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks telemetry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=20000, help="audio chunks per run (default 20000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per configuration and backend (best kept)")
    args = parser.parse_args()
    configs = configurations()
    print(f"CPU microseconds per 20 ms audio chunk through agent.run(), best of {args.runs} runs")
    print(f"of {args.chunks} chunks (responses of {PER_RESPONSE} chunks), one event per wake\n")
    print(f"  {'configuration':<36} {'asyncio':>16} {'trio':>16}")
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.runs):
        for backend in ("asyncio", "trio"):
            for name, observers in configs.items():
                us = anyio.run(per_chunk, args.chunks, observers, backend=backend)
                key = (name, backend)
                best[key] = min(best.get(key, float("inf")), us)
    base = {b: best[("no observer", b)] for b in ("asyncio", "trio")}
    for name in configs:
        cells = []
        for backend in ("asyncio", "trio"):
            us = best[(name, backend)]
            delta = "" if name == "no observer" else f" ({us - base[backend]:+.2f})"
            cells.append(f"{us:6.2f}{delta}")
        print(f"  {name:<36} {cells[0]:>16} {cells[1]:>16}")


if __name__ == "__main__":
    main()
