"""``python -m adapters.testing.openai_simulator``: a demo Realtime service on your machine.

Point any GA Realtime client at it, e.g. the official one::

    AsyncOpenAI(api_key="sk-test", websocket_base_url="ws://127.0.0.1:8765/v1").realtime.connect(model="gpt-realtime")

It serves :data:`DEMO` until Ctrl+C: it greets, calls ``get_weather`` when asked
about the weather (declare that tool in ``session.update``), answers with the
tool's result, and otherwise echoes what it was told.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from adapters.testing._simulator_kit.cli import demo_parser, run_demo
from adapters.testing.openai_simulator.scenario import Reply, Rule, Scenario, ToolCall
from adapters.testing.openai_simulator.server import OpenAIRealtimeSimulator

DEMO = Scenario(
    rules=[
        Rule(text_contains="hello", reply=Reply(say="Hello! I am the bidi-core Realtime simulator.")),
        Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])),
        Rule(tool_result_for="get_weather", reply=Reply(say="Here is the weather: {result}")),
        Rule(text_contains="story", reply=Reply(say="Once upon a time, a long story began.", audio_ms=8000)),
    ],
    transcripts=["hello", "what's the weather in Paris", "tell me a story"],
)


def main(argv: list[str] | None = None) -> int:
    parser = demo_parser("python -m adapters.testing.openai_simulator", __doc__, port=8765)
    parser.add_argument("--api-key", default="sk-test", help="the Bearer key clients must send (default: sk-test)")
    parser.add_argument("--any-key", action="store_true", help="accept any API key")
    parser.add_argument("--speedup", type=float, default=1.0, help="output pace, x real time (default: 1.0)")
    parser.add_argument("--session-limit-s", type=float, default=None, help="expire sessions after this many seconds")

    def start(args: argparse.Namespace) -> OpenAIRealtimeSimulator:
        return OpenAIRealtimeSimulator(
            api_key=None if args.any_key else args.api_key,
            scenario=DEMO,
            session_limit_s=args.session_limit_s,
            speedup=args.speedup,
            host=args.host,
            port=args.port,
            strict=False,
        )

    def announce(sim: OpenAIRealtimeSimulator, args: argparse.Namespace) -> Iterator[str]:
        yield f"OpenAI Realtime simulator: {sim.base_url}  (websocket_base_url; Ctrl+C to stop)"

    return run_demo(parser, argv, verbose_help="log every connection and client error", start=start, announce=announce)


if __name__ == "__main__":
    sys.exit(main())
