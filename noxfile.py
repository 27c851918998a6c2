"""Thin sessions over pyproject.toml: check, tests, lint, typecheck, bench.

``nox -s check`` is a newcomer's path (the README's test command): the suite
on the Python running nox, then ruff, the import contracts and mypy, all in
one virtualenv. ``nox -s tests`` runs the suite on every Python from 3.11 to
3.13 found on the machine and skips the missing ones (CI runs it beside
``check``: ``.ci/run``, with ``faults``, the whole fault matrix). The long
runs (``sweep``, ``fuzz``, ``stress-suite``, ``mutate``...) are not in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nox

PYTHONS = ["3.11", "3.12", "3.13"]
SUITE_WORKERS = ["-n", "2"]
"""The suite on two pytest-xdist workers: 3.5 instead of 6.5-7 minutes on this 2-core machine, where the
README's test command has an 8-minute budget. Every test already passes beside two CPU hogs (``stress-suite``,
which stays on one worker), and each worker is a process of its own: ports, temporary files and the
task, thread and descriptor counts the tests check are per process. ``-- -n 0`` runs on one."""

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = False
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"


def _expose_pyenv_versions() -> None:
    """Let pyenv's shims answer for every installed 3.11-3.13, not only the global one."""
    if shutil.which("pyenv") is None or os.environ.get("PYENV_VERSION"):
        return
    try:
        out = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return
    wanted = [v for v in out.split() if any(v == p or v.startswith(p + ".") for p in PYTHONS)]
    if wanted:
        os.environ["PYENV_VERSION"] = ":".join(wanted)


_expose_pyenv_versions()


@nox.session(python=None)
def check(session: nox.Session) -> None:
    """The suite on this Python, then ruff, the dependency rule and mypy: one virtualenv, one install."""
    session.install("-e", ".[dev]")
    session.run("pytest", *SUITE_WORKERS, *session.posargs)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")
    session.run("mypy", "--strict", "-p", "bidi_core", "-p", "ports", "-p", "adapters")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, on asyncio and Trio."""
    session.install("-e", ".[dev]")
    session.run("pytest", *SUITE_WORKERS, *session.posargs)


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff and the dependency rule (import-linter)."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session(python=PYTHONS[0])
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the domain, the ports and the adapters."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict", "-p", "bidi_core", "-p", "ports", "-p", "adapters")


@nox.session(python=PYTHONS[0])
def bench(session: nox.Session) -> None:
    """The benchmarks (benchmarks/README.md): bidi-core beside a raw client and the reference.

    Installs only what a user of the OpenAI adapter installs (plus Trio,
    matplotlib for the picture, and ``websockets`` for the second raw floor,
    never a dependency of the library), so import time and memory are those
    of a clean install; the reference gets a virtualenv of its own. Arguments
    go to ``python -m benchmarks`` (``nox -s bench -- --quick``).
    """
    session.install("-e", ".[trio,openai]", "matplotlib", "websockets>=15")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHONS[0])
def soak(session: nox.Session) -> None:
    """Not on CI: 100 real-time conversations for 10 minutes on asyncio, then on Trio, with barge-ins,
    tool calls and forced reconnects, against the load server (benchmarks/soak.py; about 21 minutes).

    Fails if memory grows after the warm-up, descriptors, tasks or threads are left over, or any audio
    is lost or reordered. Arguments go to the script (``nox -s soak -- --minutes 10 --sessions 100
    --backend trio``; ``--update-readme`` pastes the result into benchmarks/README.md).
    """
    session.install("-e", ".[trio,openai]", "matplotlib")
    session.run("python", "-m", "benchmarks.soak", *session.posargs)


@nox.session(name="sdk-crosscheck", python="3.12")
def sdk_crosscheck(session: nox.Session) -> None:
    """Optional, not on CI: the official AWS SDK (Python 3.12+, asyncio only) drives the
    Nova Sonic simulator, proving every signature its signer makes verifies there and
    every event it sends passes the simulator's schema (docs/protocols/nova_sonic.md#official-sdk)."""
    session.install("aws-sdk-bedrock-runtime[awscrt]==0.12.0", "anyio", "h2", "botocore", "trustme", "cattrs", "attrs")
    session.run("python", "scripts/nova_sdk_crosscheck.py", env={"PYTHONPATH": "."})


@nox.session(name="stress-suite", python=PYTHONS[0])
def stress_suite(session: nox.Session) -> None:
    """The suite 5 times in a row while CPU hogs keep every core busy (not in CI: about an hour on 2 cores).

    A test that passes only on an idle machine is a bug; this is how one is found. Arguments go to
    pytest; ``--runs N`` (first) changes the count.
    """
    args = list(session.posargs)
    runs = 5
    if args[:1] == ["--runs"]:
        runs, args = int(args[1]), args[2:]
    session.install("-e", ".[dev]")
    hog = "import itertools\nfor _ in itertools.count(): pass\n"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(os.cpu_count() or 2)]
    try:
        for run in range(1, runs + 1):
            session.log(f"stress run {run}/{runs} with {len(hogs)} CPU hogs")
            session.run("pytest", "-q", "-p", "no:cacheprovider", *args)
    finally:
        for hog_process in hogs:
            hog_process.kill()
            hog_process.wait()


@nox.session(python=PYTHONS[0])
def sweep(session: nox.Session) -> None:
    """The cancellation sweep at length (not in CI): 340 distinct cut points per provider and backend, so
    1,020 per backend, over the three simulators (tests/test_cancellation_sweep.py; the default suite runs 5).
    Hypothesis's statistics say how many points ran and how each fell (cut, or past the end)."""
    session.install("-e", ".[dev]")
    examples = os.environ.get("BIDI_SWEEP_EXAMPLES", "340")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout",
        "0",
        "--hypothesis-show-statistics",
        "tests/test_cancellation_sweep.py",
        *session.posargs,
        env={"BIDI_SWEEP_EXAMPLES": examples},
    )


@nox.session(python=PYTHONS[0])
def fuzz(session: nox.Session) -> None:
    """The decoder fuzzing at length (not in CI): 10,000 mutated provider messages per adapter and backend
    through each session's receive() (tests/test_decoder_fuzz.py; the default suite runs 50)."""
    session.install("-e", ".[dev]")
    examples = os.environ.get("BIDI_FUZZ_EXAMPLES", "10000")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout",
        "0",
        "tests/test_decoder_fuzz.py",
        *session.posargs,
        env={"BIDI_FUZZ_EXAMPLES": examples},
    )


@nox.session(name="harness-search", python=PYTHONS[0])
def harness_search(session: nox.Session) -> None:
    """Not on CI: the harness's search for planted bugs on asyncio as well as Trio (the default suite
    searches on Trio only; tests/test_harness_finds_bugs.py says why)."""
    session.install("-e", ".[dev]")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_harness_finds_bugs.py",
        *session.posargs,
        env={"BIDI_HARNESS_SEARCH_BACKENDS": "asyncio,trio"},
    )


@nox.session(python=None)
def faults(session: nox.Session) -> None:
    """The fault matrix (tests/faults/): every scenario against each provider's simulator, on asyncio and
    Trio, then the table (scenario x provider x backend) and the counts; in CI (.ci/run). The default
    suite plays a sample. ``BIDI_FAULTS_TABLE=path`` also writes the table to a file; arguments go to
    pytest (``nox -s faults -- -k nova``)."""
    session.install("-e", ".[dev]")
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/faults/test_fault_matrix.py",
        *session.posargs,
        env={"BIDI_FAULTS": "all"},
    )


@nox.session(name="shell-machine", python=PYTHONS[0])
def shell_machine(session: nox.Session) -> None:
    """The shell's stateful test at length (not in CI): 500 examples of up to 60 steps per backend
    (tests/test_agent_machine.py; the default suite runs 10 of 25)."""
    session.install("-e", ".[dev]")
    env = {
        "BIDI_SHELL_EXAMPLES": os.environ.get("BIDI_SHELL_EXAMPLES", "500"),
        "BIDI_SHELL_STEPS": os.environ.get("BIDI_SHELL_STEPS", "60"),
    }
    session.run("pytest", "-q", "-p", "no:cacheprovider", "--timeout", "0", "tests/test_agent_machine.py", env=env)


@nox.session(name="serve-load", python=PYTHONS[0])
def serve_load(session: nox.Session) -> None:
    """Not on CI: ``python -m adapters.web`` with 2 workers in front of the benchmark load server, ramped
    with simulated browsers until admission control refuses (benchmarks/serve_load.py; the table is in
    docs/web-load.md). Arguments go to the script (``nox -s serve-load -- --worker-class trio``)."""
    session.install("-e", ".[web,openai,trio]")
    session.run("python", "-m", "benchmarks.serve_load", *session.posargs)


@nox.session(python=PYTHONS[0])
def mutate(session: nox.Session) -> None:
    """Optional, not on CI: mutation testing of the core (scripts/mutate.py, tests/README.md).

    The state machine, the outbox, the queues and the tools, each module's
    mutants run against that module's tests. Fails below the kill-rate targets
    or on a survivor not listed as equivalent in tests/README.md. Arguments go
    to the script (``nox -s mutate -- queues tools``, ``-- --max-children 1``).
    """
    session.install("-e", ".[dev]", "mutmut==3.8.1")
    session.run("python", "scripts/mutate.py", *session.posargs)
