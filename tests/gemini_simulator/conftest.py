"""The Gemini Live simulator tests' fixtures: a simulator playing ``SCENARIO`` over TLS and plain WebSocket
(every message it sent checked by the server oracle when the test ends), and raw clients closed after each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.testing.gemini_simulator import GeminiLiveSimulator
from tests.gemini_simulator.client import (
    KEY,
    SCENARIO,
    RawClient,
    assert_oracle_clean,
)


@pytest.fixture
async def clients() -> AsyncIterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for c in opened:
        await c.aclose()


@pytest.fixture(params=[True, False], ids=["tls", "plain"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[GeminiLiveSimulator]:
    async with GeminiLiveSimulator(api_key=KEY, scenario=SCENARIO, tls=request.param) as s:
        yield s
        assert_oracle_clean(s)
