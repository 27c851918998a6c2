"""The OpenAI Realtime simulator tests' fixtures: a simulator playing ``SCENARIO`` (its events all checked by the
server oracle when the test ends) and raw clients closed after each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.testing.openai_simulator import OpenAIRealtimeSimulator
from tests.openai_simulator.client import (
    SCENARIO,
    RawClient,
    assert_oracle_clean,
)


@pytest.fixture
async def client_factory() -> AsyncIterator[list[RawClient]]:
    clients: list[RawClient] = []
    yield clients
    for c in clients:
        await c.aclose()


@pytest.fixture
async def sim() -> AsyncIterator[OpenAIRealtimeSimulator]:
    async with OpenAIRealtimeSimulator(api_key="sk-test", scenario=SCENARIO) as s:
        yield s
        assert_oracle_clean(s)
