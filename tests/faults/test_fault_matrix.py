"""The fault matrix: every scenario of ``matrix_rows.py`` against each provider's simulator, on asyncio and Trio.

The default suite plays a sample (:data:`SAMPLE`: a few cheap scenarios per
provider); ``nox -s faults`` plays them all (``BIDI_FAULTS=all``) and prints
the table (``conftest.py``), which the README's "Reliability" section shows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.matrix_engine import Case, play
from tests.faults.matrix_rows import PROVIDER_NAMES, cases
from tests.test_providers_common import PROVIDERS

SAMPLE = frozenset(
    {
        "TCP reset mid-tool",
        "close 1000 (session ended) mid-response",
        "HTTP/2 RST_STREAM mid-response",
        "handshake refused 403",
        "non-JSON message",
        "tool raises",
    }
)
"""What the default suite plays: one disconnect, one ending, a refusal, a bad message, a failing tool."""
EVERYTHING = os.environ.get("BIDI_FAULTS") == "all"

_BY_NAME = {p.name: p for p in PROVIDERS}


def _params() -> list[Any]:
    params: list[Any] = []
    for name in PROVIDER_NAMES:
        for case in cases(name):
            if EVERYTHING or case.scenario in SAMPLE:
                params.append(pytest.param(name, case, id=f"{name}: {case.scenario}"))
    return params


@pytest.mark.parametrize(("provider_name", "case"), _params())
async def test_fault(provider_name: str, case: Case, record_property: Callable[[str, object], None]) -> None:
    record_property("fault_matrix", (case.scenario, case.group, provider_name, case.outcome.label))
    played = await play(_BY_NAME[provider_name], case)
    case.outcome.check(played)
