"""``python -m adapters.testing.nova_sonic_simulator``: a demo Nova Sonic service on your machine.

It prints the endpoint, the CA certificate to trust and the credentials to sign
with, then serves :data:`DEMO` until Ctrl+C: it greets, calls ``get_weather``
when asked about the weather (declare that tool in ``promptStart``), answers
with the tool's result, tells a long story to interrupt, and otherwise echoes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from adapters.testing._simulator_kit.cli import demo_parser, run_demo
from adapters.testing.nova_sonic_simulator.scenario import Reply, Rule, Scenario, ToolUse
from adapters.testing.nova_sonic_simulator.server import NovaSonicSimulator

DEMO = Scenario(
    rules=[
        Rule(text_contains="hello", reply=Reply(say="Hello! I am the bidi-core Nova Sonic simulator.")),
        Rule(text_contains="weather", reply=Reply(tool_calls=[ToolUse("get_weather", {"location": "Paris"})])),
        Rule(tool_result_for="get_weather", reply=Reply(say="Here is the weather: {result}")),
        Rule(text_contains="story", reply=Reply(say="Once upon a time, a long story began.", audio_ms=8000)),
    ],
    transcripts=["hello", "what's the weather in Paris", "tell me a story"],
)


def main(argv: list[str] | None = None) -> int:
    parser = demo_parser("python -m adapters.testing.nova_sonic_simulator", __doc__, port=8443)
    parser.add_argument("--access-key-id", default="AKIDTEST", help="the access key id to sign with")
    parser.add_argument("--secret-access-key", default="secret-key", help="the secret key to sign with")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--speedup", type=float, default=1.0, help="audio output pace, x real time (default: 1.0)")
    parser.add_argument("--stream-lifetime-s", type=float, default=480.0, help="end streams after this long")

    def start(args: argparse.Namespace) -> NovaSonicSimulator:
        return NovaSonicSimulator(
            credentials={args.access_key_id: args.secret_access_key},
            region=args.region,
            scenario=DEMO,
            speedup=args.speedup,
            stream_lifetime_s=args.stream_lifetime_s,
            host=args.host,
            port=args.port,
        )

    def announce(sim: NovaSonicSimulator, args: argparse.Namespace) -> Iterator[str]:
        yield f"Nova Sonic simulator: {sim.endpoint_url}  (Ctrl+C to stop)"
        yield f"CA certificate: {sim.ca_cert_pem_path}"
        yield f"credentials: {args.access_key_id} / {args.secret_access_key}  region {args.region}"

    return run_demo(parser, argv, verbose_help="log every stream and refused input", start=start, announce=announce)


if __name__ == "__main__":
    sys.exit(main())
