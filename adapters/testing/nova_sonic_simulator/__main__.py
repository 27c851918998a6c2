"""``python -m adapters.testing.nova_sonic_simulator``: a demo Nova Sonic service on your machine.

It prints the endpoint, the CA certificate to trust and the credentials to sign
with, then serves :data:`DEMO` until Ctrl+C: it greets, calls ``get_weather``
when asked about the weather (declare that tool in ``promptStart``), answers
with the tool's result, tells a long story to interrupt, and otherwise echoes.
"""

from __future__ import annotations

import argparse
import logging
import sys

import anyio

from adapters.testing.nova_sonic_simulator.scenario import Reply, Rule, Scenario, ToolUse
from adapters.testing.nova_sonic_simulator.server import NovaSonicSimulator

DEMO = Scenario(
    rules=[
        Rule(text_contains="hello", reply=Reply(say="Hello! I am the bidi-core Nova Sonic simulator.")),
        Rule(text_contains="weather", reply=Reply(tool_uses=[ToolUse("get_weather", {"location": "Paris"})])),
        Rule(tool_result_for="get_weather", reply=Reply(say="Here is the weather: {result}")),
        Rule(text_contains="story", reply=Reply(say="Once upon a time, a long story began.", audio_ms=8000)),
    ],
    transcripts=["hello", "what's the weather in Paris", "tell me a story"],
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.testing.nova_sonic_simulator", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443, help="port (default: 8443; 0 picks a free one)")
    parser.add_argument("--access-key-id", default="AKIDTEST", help="the access key id to sign with")
    parser.add_argument("--secret-access-key", default="secret-key", help="the secret key to sign with")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--speedup", type=float, default=1.0, help="audio output pace, x real time (default: 1.0)")
    parser.add_argument("--stream-lifetime-s", type=float, default=480.0, help="end streams after this long")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every stream and refused input")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")

    async def serve() -> None:
        sim = NovaSonicSimulator(
            credentials={args.access_key_id: args.secret_access_key},
            region=args.region,
            scenario=DEMO,
            speedup=args.speedup,
            stream_lifetime_s=args.stream_lifetime_s,
            host=args.host,
            port=args.port,
        )
        async with sim:
            print(f"Nova Sonic simulator: {sim.endpoint_url}  (Ctrl+C to stop)", flush=True)
            print(f"CA certificate: {sim.ca_cert_pem_path}", flush=True)
            print(f"credentials: {args.access_key_id} / {args.secret_access_key}  region {args.region}", flush=True)
            await anyio.sleep_forever()

    try:
        anyio.run(serve, backend=args.backend)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
