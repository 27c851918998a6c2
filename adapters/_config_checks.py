"""The checks every provider's ``provider_config`` validation starts with.

Each adapter validates its own settings (the values differ by provider); the
shape checks are the same everywhere, and so are their messages, so a user
sees one style of error whichever provider they misconfigure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ports.errors import BidiUsageError

__all__ = ["check_keys", "check_mono_pcm"]


def check_keys(where: str, given: Any, allowed: set[str]) -> None:
    """``given`` must be a mapping whose keys are all in ``allowed``; ``where``
    names it in the error (``provider_config['audio']``)."""
    if not isinstance(given, Mapping):
        raise BidiUsageError(f"{where} must be a dict, got {type(given).__name__}")
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise BidiUsageError(f"unknown {where} key(s) {unknown}; allowed: {sorted(allowed)}")


def check_mono_pcm(audio: Mapping[str, Any], provider: str) -> None:
    """Every provider we speak takes and gives mono 16-bit PCM: refuse anything else by name."""
    if audio.get("channels", 1) != 1:
        raise BidiUsageError(f"provider_config['audio']['channels'] must be 1: {provider} audio is mono")
    if audio.get("format", "pcm") != "pcm":
        raise BidiUsageError("provider_config['audio']['format'] must be 'pcm' (16-bit PCM)")
