"""``python -m adapters.testing.gemini_simulator``: a demo Gemini Live service on your machine.

Point any Gemini Live client at it. The official one needs TLS (it rewrites the
base URL to ``wss://``) and must trust the CA whose path is printed at start-up::

    ctx = ssl.create_default_context(cafile="<printed CA path>")
    client = genai.Client(api_key="test-key",
                          http_options={"base_url": "https://127.0.0.1:8766", "async_client_args": {"ssl": ctx}})

It serves :data:`DEMO` until Ctrl+C: it greets, calls ``get_weather`` when asked
about the weather (declare that function in the setup's tools), answers with the
function's response, and otherwise echoes what it was told.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from adapters.testing._simulator_kit.cli import demo_parser, run_demo
from adapters.testing.gemini_simulator.scenario import Reply, Rule, Scenario, ToolCall
from adapters.testing.gemini_simulator.server import GeminiLiveSimulator

DEMO = Scenario(
    rules=[
        Rule(text_contains="hello", reply=Reply(say="Hello! I am the bidi-core Gemini Live simulator.")),
        Rule(text_contains="weather", reply=Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])),
        Rule(tool_result_for="get_weather", reply=Reply(say="Here is the weather: {result}")),
        Rule(text_contains="story", reply=Reply(say="Once upon a time, a long story began.", audio_ms=8000)),
    ],
    transcripts=["hello", "what's the weather in Paris", "tell me a story"],
)


def main(argv: list[str] | None = None) -> int:
    parser = demo_parser("python -m adapters.testing.gemini_simulator", __doc__, port=8766)
    parser.add_argument(
        "--api-key", default="test-key", help="the x-goog-api-key clients must send (default: test-key)"
    )
    parser.add_argument("--any-key", action="store_true", help="accept any API key")
    parser.add_argument("--plain", action="store_true", help="serve ws:// instead of wss://")
    parser.add_argument("--speedup", type=float, default=1.0, help="output pace, x real time (default: 1.0)")
    parser.add_argument("--lifetime-s", type=float, default=None, help="goAway and close connections after this long")

    def start(args: argparse.Namespace) -> GeminiLiveSimulator:
        return GeminiLiveSimulator(
            api_key=None if args.any_key else args.api_key,
            scenario=DEMO,
            tls=not args.plain,
            connection_lifetime_s=args.lifetime_s,
            go_away_lead_s=min(60.0, args.lifetime_s / 10) if args.lifetime_s else 1.0,
            speedup=args.speedup,
            host=args.host,
            port=args.port,
            strict=False,
        )

    def announce(sim: GeminiLiveSimulator, args: argparse.Namespace) -> Iterator[str]:
        yield f"Gemini Live simulator: {sim.url()}"
        if sim.tls:
            yield f"CA certificate to trust: {sim.ca_cert_pem_path}"
        yield "Ctrl+C to stop"

    return run_demo(
        parser, argv, verbose_help="log every connection and refused message", start=start, announce=announce
    )


if __name__ == "__main__":
    sys.exit(main())
