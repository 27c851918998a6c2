"""The worked examples of docs/testing-your-agent.md are tests of ours: each code block of the page is,
character for character, a module of tests/harness_examples/ (which pytest runs)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "testing-your-agent.md"
EXAMPLES = ROOT / "tests" / "harness_examples"
BLOCK = re.compile(r"<!-- example: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```", re.DOTALL)


def test_every_example_on_the_page_is_a_test_module_unchanged() -> None:
    blocks = {m["name"]: m["code"] for m in BLOCK.finditer(PAGE.read_text(encoding="utf-8"))}
    modules = sorted(p.name for p in EXAMPLES.glob("test_*.py"))
    assert sorted(blocks) == modules
    for name, code in blocks.items():
        assert code == (EXAMPLES / name).read_text(encoding="utf-8"), f"{name} differs from its block on the page"
