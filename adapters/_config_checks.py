"""The checks every provider's ``provider_config`` validation starts with.

Each adapter validates its own settings (the values differ by provider); the
shape checks are the same everywhere, and so are their messages, so a user
sees one style of error whichever provider they misconfigure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ports.errors import BidiUsageError

__all__ = ["check_keys"]


def check_keys(where: str, given: Any, allowed: set[str]) -> None:
    """``given`` must be a mapping whose keys are all in ``allowed``; ``where``
    names it in the error (``provider_config['audio']``)."""
    if not isinstance(given, Mapping):
        raise BidiUsageError(f"{where} must be a dict, got {type(given).__name__}")
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise BidiUsageError(f"unknown {where} key(s) {unknown}; allowed: {sorted(allowed)}")
