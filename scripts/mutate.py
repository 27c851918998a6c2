"""Mutation testing of the core with mutmut (``nox -s mutate``; not on CI).

Each target is one module and the tests that cover it. Its run happens in a
work directory of its own (``build/mutate/<target>/``: links to the sources
and tests, and a ``pyproject.toml`` whose ``[tool.mutmut]`` section names the
module and those tests), so every mutant of the module is run against the
tests of that module only: mutmut narrows that to the tests that executed
the mutated function, and whatever it finds surviving is run again against
every test of the module in a fresh process (see
``_killed_by_the_whole_selection``). Every run starts fresh: results of
earlier runs are never reused.

A mutant that survives must either be killed by a new test or be listed in
``tests/README.md`` (section "Equivalent mutants") with the reason it cannot
change behaviour. The run fails when a target's kill rate is below its
target, or when a survivor is not listed, or when a listed mutant is killed
now or no longer exists (the list is kept exact).

Usage::

    python scripts/mutate.py                  # every target
    python scripts/mutate.py queues tools     # some of them
    python scripts/mutate.py --max-children 1 queues
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutate"
README = ROOT / "tests" / "README.md"

LINKED = ("bidi_core", "ports", "adapters", "tests", "scripts", "docs")
"""What each work directory links to: the sources, the tests and what the tests read."""

PYTEST_ARGS = ("-p", "no:cacheprovider", "--hypothesis-seed=0", "--timeout=180")
"""No cache; the same hypothesis examples every run (a rate that moves between
runs measures nothing); a mutant that hangs fails its test within 180 s (the
state machine's property test is one test of about 35 s on a busy machine:
a tighter bound fails the clean run)."""

KILLED = {"killed", "timeout"}

PYTEST_FAILED = {1, 2, 3}
"""pytest's exit codes for a test that failed, a collection that failed (a
mutant that breaks an import) and an internal error; a usage error or no
test collected is the script's problem, not a kill."""


@dataclass(frozen=True)
class Target:
    module: str
    tests: tuple[str, ...]
    """Globs, relative to the project root."""
    target_percent: float


STATE_MACHINE_TESTS = ("tests/test_conversation_*.py",)
"""The state machine's tests: step by step, the exhaustive table, and the stateful property test."""

TARGETS: dict[str, Target] = {
    # The state machine (docs/design.md): the table and its settling rules, the state, the handlers.
    "state": Target("bidi_core/state.py", STATE_MACHINE_TESTS, 99.0),
    "outbox_rules": Target("bidi_core/outbox_rules.py", STATE_MACHINE_TESTS, 99.0),
    "connection_rules": Target("bidi_core/connection_rules.py", STATE_MACHINE_TESTS, 99.0),
    "turn_rules": Target("bidi_core/turn_rules.py", STATE_MACHINE_TESTS, 99.0),
    "conversation": Target("bidi_core/conversation.py", STATE_MACHINE_TESTS, 99.0),
    # What the machine leans on and the shell's queues and tools.
    # The outbox is pure and the state machine is its one user: most of what it must get right
    # (a tool result keeping the connection of its call, say) is checked by the machine's tests.
    "outbox": Target("bidi_core/outbox.py", ("tests/test_outbox.py", *STATE_MACHINE_TESTS), 90.0),
    "queues": Target(
        "bidi_core/queues.py", ("tests/test_queues.py", "tests/test_agent*.py", "tests/test_inline_outputs.py"), 90.0
    ),
    "tools": Target("bidi_core/tools.py", ("tests/test_tools_*.py",), 90.0),
}


@dataclass
class Outcome:
    name: str
    target: Target
    counts: dict[str, int]
    survivors: list[str]
    seconds: float
    second_pass: int
    """Mutants mutmut let through that the whole selection killed."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def killed(self) -> int:
        return sum(n for status, n in self.counts.items() if status in KILLED)

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def _tests_of(target: Target, root: Path = ROOT) -> list[str]:
    found = sorted({p for pattern in target.tests for p in glob.glob(pattern, root_dir=root)})
    if not found:
        raise SystemExit(f"no test file matches {target.tests}")
    return found


def _config(target: Target) -> str:
    def toml_list(items: list[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        f'source_paths = ["bidi_core"]\n'
        f"only_mutate = {toml_list([target.module])}\n"
        f"also_copy = {toml_list(['ports', 'adapters', 'scripts', 'docs'])}\n"
        f"pytest_add_cli_args = {toml_list(PYTEST_ARGS)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(_tests_of(target))}\n"
        "use_git_change_detection = false\n"
    )


def _prepare(name: str, target: Target) -> Path:
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for entry in LINKED:
        (work / entry).symlink_to(ROOT / entry, target_is_directory=True)
    pyproject = (ROOT / "pyproject.toml").read_text()
    if "[tool.mutmut]" in pyproject:
        raise SystemExit("pyproject.toml has a [tool.mutmut] section: the targets are configured in scripts/mutate.py")
    (work / "pyproject.toml").write_text(pyproject + _config(target))
    return work


def _statuses(work: Path, target: Target) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code  # the names mutmut itself reports

    meta = json.loads((work / "mutants" / (target.module + ".meta")).read_text())
    return {key: status_by_exit_code[code] for key, code in meta["exit_code_by_key"].items()}


def _mutmut() -> str:
    """The mutmut of this Python's environment (nox's session, a virtualenv), else the one on PATH."""
    beside = Path(sys.executable).parent / "mutmut"
    return str(beside) if beside.exists() else "mutmut"


def _cheapest_first(tests: list[str]) -> list[str]:
    """The stateful hypothesis tests (``*_properties.py``, ``*_machine.py``; by far the slowest files) last:
    with ``-x`` a mutant stops at its first failing test, and most fail a cheaper one first."""
    return sorted(tests, key=lambda path: Path(path).stem.endswith(("_properties", "_machine")))


def _killed_by_the_whole_selection(work: Path, target: Target, mutant: str) -> bool:
    """Run ``mutant`` against every test of its module, in a fresh process.

    mutmut runs a mutant only against the tests that called the mutated
    function while it collected its statistics, and a function called while
    the modules are imported (``conversation._build_table``, which builds the
    transition table) is credited to whichever test happened to import them
    first: its mutants would go against that one test, and in a process that
    imported the original already. Here the mutant is active from the first
    import and every test of the module runs.
    """
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant, "PYTHONDONTWRITEBYTECODE": "1"}
    copy = work / "mutants"
    command = [sys.executable, "-m", "pytest", "-x", "-q", *PYTEST_ARGS, *_cheapest_first(_tests_of(target, copy))]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        return True  # a hang is a failure the suite notices (pytest-timeout), only slower
    if done.returncode in PYTEST_FAILED:
        return True
    if done.returncode != 0:
        raise SystemExit(f"pytest could not run {mutant} (exit {done.returncode}):\n{done.stdout[-2000:]}")
    return False


def run(name: str, max_children: int) -> Outcome:
    target = TARGETS[name]
    work = _prepare(name, target)
    started = time.monotonic()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    log = work / "mutmut.log"
    with log.open("w") as out:
        command = [_mutmut(), "run", "--max-children", str(max_children)]
        done = subprocess.run(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mutmut failed for {name} (exit {done.returncode}); see {log}")
    statuses = _statuses(work, target)
    unkilled = sorted(k for k, s in statuses.items() if s not in KILLED)
    second_pass = 0
    with ThreadPoolExecutor(max_workers=max_children) as pool:
        verdicts = pool.map(lambda m: _killed_by_the_whole_selection(work, target, m), unkilled)
        for mutant, killed in zip(unkilled, verdicts, strict=True):
            if killed:
                statuses[mutant] = "killed"
                second_pass += 1
    seconds = time.monotonic() - started
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    survivors = sorted(k for k, s in statuses.items() if s not in KILLED)
    return Outcome(name, target, counts, survivors, seconds, second_pass)


def listed_equivalents() -> set[str]:
    """The mutant names ``tests/README.md`` lists as equivalent (a backquoted name per table row)."""
    text = README.read_text() if README.exists() else ""
    section = text.partition("## Equivalent mutants")[2].split("\n## ")[0]
    return set(re.findall(r"^\|\s*`([^`]+__mutmut_\d+)`", section, flags=re.MULTILINE))


def report(outcomes: list[Outcome]) -> bool:
    listed = listed_equivalents()
    ok = True
    print(f"\n{'target':<14}{'mutants':>8}{'killed':>8}{'2nd pass':>9}{'rate':>9}{'target':>9}{'time':>8}")
    for o in outcomes:
        print(
            f"{o.name:<14}{o.total:>8}{o.killed:>8}{o.second_pass:>9}{o.percent:>8.1f}%"
            f"{o.target.target_percent:>8.0f}%{o.seconds / 60:>7.1f}m"
        )
    for o in outcomes:
        prefix = o.target.module.removesuffix(".py").replace("/", ".") + "."
        unlisted = [s for s in o.survivors if s not in listed]
        stale = sorted(m for m in listed if m.startswith(prefix) and m not in o.survivors)
        if o.percent < o.target.target_percent:
            ok = False
            print(f"\n{o.name}: {o.percent:.1f}% killed, below the target of {o.target.target_percent:.0f}%")
        if unlisted:
            ok = False
            print(f"\n{o.name}: survivors not listed in tests/README.md (kill them or list why they cannot matter):")
            for s in unlisted:
                print(f"    {s}    (build/mutate/{o.name}: mutmut show {s})")
        if stale:
            ok = False
            print(f"\n{o.name}: listed in tests/README.md but not surviving (remove them from the list):")
            for s in stale:
                print(f"    {s}")
        if o.counts.keys() - KILLED - {"survived"}:
            print(f"\n{o.name}: {o.counts}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="target", help="any of: " + ", ".join(TARGETS))
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    unknown = set(args.targets) - TARGETS.keys()
    if unknown:
        parser.error(f"unknown target(s) {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    names = args.targets or list(TARGETS)
    outcomes = [run(name, args.max_children) for name in names]
    return 0 if report(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
