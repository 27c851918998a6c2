"""The installed `ports` and `adapters` are ours, not another distribution's."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import adapters
import bidi_core
import ports


def test_ports_and_adapters_come_from_the_same_tree_as_bidi_core() -> None:
    root = Path(bidi_core.__file__).resolve().parent.parent
    assert Path(ports.__file__).resolve().parent == root / "ports"
    assert Path(adapters.__file__).resolve().parent == root / "adapters"
    assert adapters.DISTRIBUTION == "bidi-core"
    # Our ports define the error tree the core raises.
    assert ports.BidiError is bidi_core.BidiError


def test_the_distribution_is_installed_and_typed() -> None:
    dist = importlib.metadata.distribution("bidi-core")
    assert dist.metadata["Name"] == "bidi-core"
    for package in (bidi_core, ports, adapters):
        assert (Path(package.__file__).parent / "py.typed").exists()
