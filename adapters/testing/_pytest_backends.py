"""The ``anyio_backend`` fixture of bidi-core's pytest plugin (registered by it, last, so it wins).

Every async test runs on asyncio and on Trio; ``bidi_core_backends`` in the
pytest configuration deselects a backend (see :mod:`adapters.testing.pytest_plugin`).
"""

from __future__ import annotations

import pytest

__all__ = ["anyio_backend"]


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
