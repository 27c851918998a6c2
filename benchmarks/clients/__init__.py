"""The clients, one module each, each run as its own process.

Every client module is a script: ``python -m benchmarks.clients.<name> --url
ws://127.0.0.1:<port>/v1 --profile full --key K --out result.json
[--scenarios thr20,rt20 | --ramp [--mic]]``. It runs the scenarios one after the
other in one process (so a slow import is paid once), measures its own CPU
with ``time.process_time()`` around each, and writes one JSON document
(:func:`benchmarks.workload.write_result`).
"""

from __future__ import annotations

import argparse


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:<port>/v1")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--key", required=True, help="prefix of the keys the server files its records under")
    parser.add_argument("--out", required=True)
    parser.add_argument("--scenarios", default="thr20,thr100,rt20,turns20,duplex")
    parser.add_argument("--ramp", action="store_true", help="the sessions-per-core ramp instead of the scenarios")
    parser.add_argument("--mic", action="store_true", help="ramp: every session also streams the microphone (duplex)")
    parser.add_argument("--backend", default="asyncio", help="bidi-core only: asyncio or trio")
    parser.add_argument("--cpu", type=int, default=-1, help="core to pin this process to (default: none)")
    parser.add_argument("--prototype", default="", help="bidi-core only: benchmarks/prototype_fixes.py patches")
    return parser.parse_args()


def server_load(url: str) -> float | None:
    """The load server's CPU share since the last call (``GET /load``);
    blocking, called only between measurement windows."""
    import json
    import urllib.request

    http = "http" + url[2:].split("/v1")[0] + "/load"
    try:
        with urllib.request.urlopen(http, timeout=2) as response:
            return float(json.load(response)["cpu_fraction"])
    except OSError:
        return None
