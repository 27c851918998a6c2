"""``python -m benchmarks``: the side-by-side benchmark, or one of the others.

    python -m benchmarks                     # the suite: raw floors, bidi-core (asyncio, Trio), reference
    python -m benchmarks --quick             # the same in about a minute
    python -m benchmarks --list              # the benchmarks there are
    python -m benchmarks stages              # CPU per chunk stage by stage (benchmarks/stages.py)
    python -m benchmarks uplink [...]        # the up path per microphone block (benchmarks/uplink.py)
    python -m benchmarks audio_handoff [...] # benchmarks/audio_handoff.py, arguments passed on
    python -m benchmarks telemetry           # what observing costs per chunk (benchmarks/telemetry.py)
    python -m benchmarks phone_barge_in      # benchmarks/phone_barge_in.py (the phone bridge at the caller)

The suite starts the load server in a process of its own (pinned to the
second core), then runs each client in a fresh process (pinned to the first)
through the single-session scenarios, interleaved: raw (wsproto), raw
(websockets), raw (Trio), bidi asyncio, bidi Trio, reference, raw, ... for each
repetition, so slow drifts of the machine hit every client alike. Then each
client's sessions-per-core ramps (output audio only, then duplex), the
import times, one table on stdout, ``benchmarks/results/<timestamp>.json``
and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import reference_env, report
from benchmarks.workload import PROFILES, SINGLE_SESSION

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CLIENTS = ("raw", "raw-websockets", "raw-trio", "bidi-asyncio", "bidi-trio", "reference")
RAMPS = ("output", "duplex")
"""The sessions ramps: output audio only, or with every session streaming the microphone (``--mic``)."""
OTHERS = {
    "stages": "bidi-core's CPU per audio chunk, stage by stage, in one process (benchmarks/stages.py)",
    "uplink": "the duplex up path per microphone block, bidi-core beside the raw floor (benchmarks/uplink.py)",
    "audio_handoff": "device thread <-> event loop handoff of BidiAudioIO (benchmarks/audio_handoff.py)",
    "telemetry": "CPU per chunk with no observer, the otel observer without and with an SDK (benchmarks/telemetry.py)",
    "phone_barge_in": "the Twilio bridge's barge-in and lead at the simulated caller (benchmarks/phone_barge_in.py)",
    "tool_trace": "many tool round trips in one session, optionally stamped step by step (benchmarks/tool_trace.py)",
}
IMPORTS = {
    "raw": "import asyncio, json, base64, wsproto",
    "raw-websockets": "import asyncio, json, base64, websockets.asyncio.client",
    "raw-trio": "import trio, json, base64, wsproto",
    "bidi-asyncio": "import bidi_core, adapters.openai",
    "bidi-trio": "import bidi_core, adapters.openai, trio",
    "reference": (
        "import warnings; warnings.simplefilter('ignore'); "
        "import strands.bidi; import strands.bidi.models.openai.realtime"
    ),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("anyio", "trio", "httpx", "httpx-ws", "wsproto", "websockets", "attrs", "cattrs"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
    }


def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / tick, sum(fields) / tick


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LoadServer:
    """The load server process, for the duration of a ``with`` block."""

    def __init__(self, profile: str, cpu: int) -> None:
        self.profile = profile
        self.cpu = cpu
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> LoadServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.loadserver",
                "--profile",
                self.profile,
                "--port",
                "0",
                "--cpu",
                f"{self.cpu}",
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the load server did not start: {line!r}")
        self.url = f"ws://127.0.0.1:{int(line.split()[1])}/v1"
        return self

    def stats(self, key: str) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"http{self.url[2:-3]}/stats?key={key}", timeout=10) as response:
            data: dict[str, Any] = json.load(response)
            return data

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the server leaves when its stdin closes
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def client_command(client: str, reference_python: str | None, prototype: str) -> list[str]:
    if client == "raw":
        return [sys.executable, "-m", "benchmarks.clients.raw"]
    if client == "raw-websockets":
        return [sys.executable, "-m", "benchmarks.clients.raw_websockets"]
    if client == "raw-trio":
        return [sys.executable, "-m", "benchmarks.clients.raw_trio"]
    if client.startswith("bidi-"):
        backend = client.split("@", 1)[0].split("-", 1)[1].rstrip("*")
        extra = ["--prototype", prototype] if client.endswith("*") else []
        return [sys.executable, "-m", "benchmarks.clients.bidi", "--backend", backend, *extra]
    assert reference_python is not None
    return [reference_python, "-m", "benchmarks.clients.reference"]


def baseline_tree(ref: str, files: list[str]) -> tuple[str, Path]:
    """The library (``bidi_core``, ``adapters``, ``ports``) at ``ref`` beside a symlink to the
    current ``benchmarks/``, for the ``@ref`` columns: the same workload, the same run, the
    library before a change. With ``files``, the working tree's library with only those
    files taken from ``ref`` (one change measured apart from everything else that moved
    since). Returns (short commit, directory)."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix=f"bidi-baseline-{short}-"))
    if files:
        for package in ("bidi_core", "adapters", "ports"):
            shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
        for name in files:
            old = subprocess.run(["git", "show", f"{ref}:{name}"], cwd=REPO, capture_output=True, check=True).stdout
            (tree / name).write_bytes(old)
    else:
        archive = subprocess.run(
            ["git", "archive", ref, "bidi_core", "adapters", "ports"], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / "benchmarks").symlink_to(BENCH)
    return short, tree


BASELINE_TREES: dict[str, Path] = {}
"""Where each ``bidi-...@ref`` client runs from (set by ``--baseline``)."""


def client_cwd(client: str) -> Path:
    return BASELINE_TREES.get(client.split("@", 1)[1], REPO) if "@" in client else REPO


def run_client(command: list[str], extra: list[str], timeout_s: float, cpu: int, cwd: Path = REPO) -> dict[str, Any]:
    """Run one client process; ``{"ok": True, "result": ...}`` or ``{"ok": False, "error": ...}``."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    try:
        done = subprocess.run(
            [*command, *extra, "--out", out, "--cpu", str(cpu)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if done.stderr.strip():
            for line in done.stderr.rstrip().splitlines():
                if line.startswith("    "):
                    log(line)  # the ramp's progress lines
        if done.returncode != 0:
            tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-3:]
            return {"ok": False, "error": f"exit {done.returncode}: {' | '.join(tail)[-400:]}"}
        with open(out, encoding="utf-8") as fh:
            return {"ok": True, "result": json.load(fh)}
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s:g} s"}
    finally:
        os.unlink(out)


def import_times(clients: list[str], reference_python: str | None, runs: int) -> dict[str, dict[str, Any]]:
    """Wall time of the imports alone, in a fresh interpreter, median of ``runs``
    (after one unmeasured round that writes the bytecode caches). The clients take
    turns, one import each per round, so a burst of load from other processes
    falls on all of them rather than on whichever was being measured.

    ``PYTHONDONTWRITEBYTECODE`` is dropped for these runs: with it set (as in some
    containers) bidi-core's sources were compiled on every import while the floors'
    modules, installed with their bytecode, were not, which added ~30-50 ms to the
    bidi columns alone. An installed library has its bytecode; so does the one measured."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    commands: dict[str, tuple[str, str]] = {}
    for client in clients:
        python = reference_python if client == "reference" else sys.executable
        if client.endswith("*") or python is None:
            continue
        code = f"import time; t = time.perf_counter(); {IMPORTS[client.split('@')[0]]}; print(time.perf_counter() - t)"
        commands[client] = (python, code)
    samples: dict[str, list[float]] = {client: [] for client in commands}
    for round_ in range(runs + 1):
        for client, (python, code) in commands.items():
            done = subprocess.run(
                [python, "-c", code], cwd=client_cwd(client), capture_output=True, text=True, timeout=120, env=env
            )
            if done.returncode == 0 and round_ > 0:
                samples[client].append(float(done.stdout.strip().splitlines()[-1]))
    return {c: {"median_s": statistics.median(got) if got else None, "samples_s": got} for c, got in samples.items()}


def strip_samples(run: dict[str, Any]) -> dict[str, Any]:
    """A run without its latency samples (the JSON file stays small)."""
    if not run.get("ok"):
        return run
    result = json.loads(json.dumps(run["result"]))
    for scenario in result.get("scenarios", {}).values():
        scenario.pop("latency_samples_us", None)
    return {**run, "result": result}


def update_readme(text: str) -> None:
    readme = BENCH / "README.md"
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    content = readme.read_text()
    if start in content and end in content:
        head, rest = content.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def suite(args: argparse.Namespace) -> int:
    began = time.monotonic()
    profile = "quick" if args.quick else "full"
    reps = args.reps or (1 if args.quick else 3)
    clients = [c for c in args.clients.split(",") if c]
    if args.prototype:
        from benchmarks import prototype_fixes

        prototype_fixes.validate(args.prototype)  # the patched clients apply them themselves
        clients += [f"{c}*" for c in clients if c.startswith("bidi-")]
    if args.baseline:
        short, tree = baseline_tree(args.baseline, [f for f in args.baseline_files.split(",") if f])
        BASELINE_TREES[short] = tree
        clients += [f"{c}@{short}" for c in clients if c.startswith("bidi-") and not c.endswith("*")]
    client_cpu, server_cpu = (0, 1) if args.pin else (-1, -1)
    scenarios = [s for s in args.scenarios.split(",") if s]
    for name in scenarios:
        if name not in SINGLE_SESSION:
            raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(SINGLE_SESSION)}")
    for mode in [m for m in args.ramps.split(",") if m]:
        if mode not in RAMPS:
            raise SystemExit(f"unknown ramp {mode!r}; choose from {', '.join(RAMPS)}")
    unavailable: dict[str, str] = {}
    reference_python = None
    reference_versions = None
    if "reference" in clients:
        log("reference environment:")
        reference_python, info = reference_env.ensure(log)
        if reference_python is None:
            unavailable["reference"] = info
            log(f"  unavailable: {info}")
        else:
            reference_versions = info
            log(f"  {info}")
    runnable = [c for c in clients if c not in unavailable]
    runs: list[dict[str, Any]] = []
    ramps: dict[str, dict[str, dict[str, Any]]] = {mode: {} for mode in RAMPS}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    busy0, total0 = cpu_times()
    ours0 = children_cpu()
    load0 = os.getloadavg()[0]
    with LoadServer(profile, server_cpu) as server:
        log(f"load server at {server.url} (profile {profile}, {reps} repetition(s))")
        for rep in range(reps):
            for client in runnable:
                key = f"{stamp}.r{rep}.{client}"
                t0 = time.monotonic()
                run = run_client(
                    client_command(client, reference_python, args.prototype),
                    ["--url", server.url, "--profile", profile, "--key", key, "--scenarios", ",".join(scenarios)],
                    timeout_s=args.timeout,
                    cpu=client_cpu,
                    cwd=client_cwd(client),
                )
                run.update(rep=rep, client=client)
                if run["ok"]:
                    run["server"] = {name: server.stats(f"{key}.{name}") for name in scenarios}
                    cpu = run["result"]["scenarios"].get("thr20", {}).get("cpu_us_per_chunk")
                    detail = f"thr20 {cpu:.1f} us/chunk" if cpu else "ok"
                else:
                    detail = run["error"]
                log(f"  repetition {rep + 1}/{reps}  {client:<15} {time.monotonic() - t0:5.1f} s  {detail}")
                runs.append(run)
        modes = [] if args.no_ramp else [m for m in args.ramps.split(",") if m]
        for mode in modes:
            for client in runnable:
                log(f"  sessions per core, {mode}: {client}")
                key = f"{stamp}.ramp-{mode}.{client}"
                mic = ["--mic"] if mode == "duplex" else []
                ramps[mode][client] = run_client(
                    client_command(client, reference_python, args.prototype),
                    ["--url", server.url, "--profile", profile, "--key", key, "--ramp", *mic],
                    timeout_s=args.timeout,
                    cpu=client_cpu,
                    cwd=client_cwd(client),
                )
                if not ramps[mode][client]["ok"]:
                    log(f"    failed: {ramps[mode][client]['error']}")
    busy1, total1 = cpu_times()
    others = max(0.0, (busy1 - busy0) - (children_cpu() - ours0))
    ncpu = os.cpu_count() or 1
    load = {
        "loadavg_1min_start": load0,
        "loadavg_1min_end": os.getloadavg()[0],
        "other_processes_cpu_share": others / (total1 - total0) if total1 > total0 else None,
    }
    log("import times ...")
    imports = import_times(runnable, reference_python, runs=2 if args.quick else 5)
    for tree in BASELINE_TREES.values():
        shutil.rmtree(tree, ignore_errors=True)
    figures = report.aggregate(clients, runs, ramps, imports, unavailable)
    verdicts = report.targets(figures, chunk_ms=PROFILES[profile]["duplex"].chunk_ms)
    info = machine()
    elapsed = time.monotonic() - began
    share = load["other_processes_cpu_share"]
    header = (
        f"bidi-core benchmarks, profile {profile}, {reps} repetition(s), {elapsed:.0f} s; "
        f"{info['cpus']} x {info['cpu_model']}, Python {info['python']}; "
        f"reference: {reference_versions or unavailable.get('reference', 'not run')}"
    )
    if share is not None:
        header += f"\nother processes used {share:.0%} of the machine's {ncpu} CPUs during the run"
    if args.prototype:
        header += f"\n* = bidi-core with benchmarks/prototype_fixes.py applied: {args.prototype}"
    if args.baseline:
        what = f"with {args.baseline_files} as at" if args.baseline_files else "as it was at"
        header += f"\n@{short} = bidi-core {what} {args.baseline} ({short}), same run, same benchmarks"
    text = f"{header}\n\n{report.table(clients, figures)}\n\ntargets (bidi-core):\n{report.targets_text(verdicts)}"
    print(text)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    png = report.plot(str(results / f"{stamp}.png"), clients, runs, figures)
    document = {
        "timestamp": stamp,
        "profile": profile,
        "repetitions": reps,
        "duration_s": elapsed,
        "machine": info,
        "load": load,
        "prototype": args.prototype or None,
        "baseline": args.baseline or None,
        "baseline_files": args.baseline_files or None,
        "reference": {"requirement": reference_env.REQUIREMENT, "versions": reference_versions, **unavailable},
        "scenarios": {name: PROFILES[profile][name].describe for name in (*scenarios, "sessions")},
        "clients": clients,
        "figures": figures,
        "targets": verdicts,
        "imports": imports,
        "runs": [strip_samples(run) for run in runs],
        "table": text,
    }
    path = results / f"{stamp}.json"
    path.write_text(json.dumps(document, indent=1, default=str))
    print(f"\nwrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}; {png}")
    if args.update_readme:
        update_readme(f"```\n{text}\n```")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("benchmark", nargs="?", default="suite", help="suite (default) or one of --list")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for another benchmark")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    parser.add_argument("--quick", action="store_true", help="shorter workloads, one repetition (about a minute)")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 3, or 1 with --quick)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help=f"default: {','.join(CLIENTS)}")
    parser.add_argument("--scenarios", default=",".join(SINGLE_SESSION), help=f"default: {','.join(SINGLE_SESSION)}")
    parser.add_argument("--no-ramp", action="store_true", help="skip the sessions-per-core ramps")
    parser.add_argument(
        "--ramps",
        default=",".join(RAMPS),
        help="which sessions ramps: output (model audio down only), duplex (every session also streams the mic)",
    )
    parser.add_argument("--pin", action="store_true", help="pin clients to CPU 0 and the server to CPU 1")
    parser.add_argument(
        "--prototype",
        default="",
        help="also run bidi-core with these benchmarks/prototype_fixes.py patches (columns marked *)",
    )
    parser.add_argument(
        "--baseline",
        default="",
        help="also run bidi-core as it was at this git commit (columns marked @commit): before/after in one run",
    )
    parser.add_argument(
        "--baseline-files",
        default="",
        help="with --baseline: only these files (comma-separated) from that commit, the rest from the working tree",
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed to one client process")
    parser.add_argument("--results-dir", default=str(BENCH / "results"))
    parser.add_argument("--update-readme", action="store_true", help="paste the table into benchmarks/README.md")
    args = parser.parse_args()
    if args.list:
        print("suite          the side-by-side suite (default): raw floors, bidi-core on asyncio and Trio, reference")
        for name, what in OTHERS.items():
            print(f"{name:<14} {what}")
        return 0
    if args.benchmark == "suite":
        return suite(args)
    if args.benchmark in OTHERS:
        return subprocess.call([sys.executable, str(BENCH / f"{args.benchmark}.py"), *args.rest], cwd=REPO)
    parser.error(f"unknown benchmark {args.benchmark!r}; see --list")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
