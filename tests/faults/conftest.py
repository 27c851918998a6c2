"""The fault matrix's table: each case's outcome, printed after the run (scenario x provider x backend).

``test_fault`` records its row (``record_property("fault_matrix", ...)``);
:func:`pytest_runtest_logreport` collects whether each case passed, and
:func:`pytest_terminal_summary` prints the table (Markdown, as the README
shows it) and the counts per provider and backend. ``BIDI_FAULTS_TABLE=path``
also writes the table to ``path``. A case counts as passed only if its setup,
call and teardown all passed. The default suite's sample prints nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

import pytest

from tests.faults.matrix_rows import PROVIDER_NAMES, ROWS

BACKENDS = ("asyncio", "trio")
TITLES = {"openai": "OpenAI Realtime", "gemini": "Gemini Live", "nova_sonic": "Nova Sonic"}

_results: dict[tuple[str, str, str], bool] = {}  # (scenario, provider, backend) -> passed
_labels: dict[tuple[str, str], str] = {}  # (scenario, provider) -> the expected outcome


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    row = dict(report.user_properties).get("fault_matrix")
    if row is None:
        return
    scenario, _group, provider, label = cast(tuple[str, str, str, str], row)
    backend = next((b for b in BACKENDS if f"[{b}-" in report.nodeid), "?")
    key = (scenario, provider, backend)
    _labels[(scenario, provider)] = label
    _results[key] = _results.get(key, True) and report.passed


def table() -> Iterator[str]:
    """The matrix as Markdown: a row per scenario, a column per provider; "n/a" where a provider cannot
    have the fault; each cell the outcome checked and, per backend (asyncio, Trio), pass or FAIL."""
    yield "| group | scenario | " + " | ".join(TITLES[p] for p in PROVIDER_NAMES) + " |"
    yield "|---|---|" + "---|" * len(PROVIDER_NAMES)
    for row in ROWS:
        if not any((row.scenario, p) in _labels for p in PROVIDER_NAMES):
            continue
        cells = []
        for provider in PROVIDER_NAMES:
            if provider not in row.cells:
                cells.append("n/a")
                continue
            label = _labels.get((row.scenario, provider))
            if label is None:
                cells.append("(not run)")
                continue
            marks = " ".join(_mark(row.scenario, provider, backend) for backend in BACKENDS)
            cells.append(f"{label} {marks}")
        yield f"| {row.group} | {row.scenario} | " + " | ".join(cells) + " |"


def _mark(scenario: str, provider: str, backend: str) -> str:
    passed = _results.get((scenario, provider, backend))
    return "·" if passed is None else ("✓" if passed else "FAIL")


def counts() -> Iterator[str]:
    """Passed and failed cases per provider and backend."""
    yield "| provider | asyncio passed | asyncio failed | Trio passed | Trio failed |"
    yield "|---|---|---|---|---|"
    for provider in PROVIDER_NAMES:
        cells = []
        for backend in BACKENDS:
            outcomes = [ok for (_s, p, b), ok in _results.items() if p == provider and b == backend]
            cells += [str(sum(outcomes)), str(len(outcomes) - sum(outcomes))]
        yield f"| {TITLES[provider]} | " + " | ".join(cells) + " |"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    path = os.environ.get("BIDI_FAULTS_TABLE")
    if not _results or not (path or os.environ.get("BIDI_FAULTS") == "all"):
        return  # the default suite's sample: no table
    lines = [
        "The fault matrix (each cell: the outcome checked; ✓ passed, FAIL failed, on asyncio then Trio):",
        "",
        *table(),
        "",
        *counts(),
    ]
    terminalreporter.section("fault matrix")
    for line in lines:
        terminalreporter.write_line(line)
    if path:
        with open(path, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
