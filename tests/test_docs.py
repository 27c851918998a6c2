"""The docs that ship stay true: protocol facts are cited from ``docs/protocols``, and every citation resolves.

Wire facts used to be cited from a reference note that lives outside the
repository; nothing we ship may point there. A citation of a protocol page
(``docs/protocols/openai.md#session-limits``, or a relative Markdown link to
one) must name a page that exists and a heading of it, by its GitHub anchor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_DOCS = ROOT / "docs" / "protocols"

SCANNED = ["bidi_core", "ports", "adapters", "tests", "scripts", "benchmarks", "examples", "docs"]
SCANNED_FILES = ["README.md", "noxfile.py", "pyproject.toml"]
SUFFIXES = {".py", ".md", ".toml", ".cfg", ".txt", ".yml", ".yaml", ".rst"}

# Spelled in pieces so that this file does not cite what it forbids.
FORBIDDEN = re.compile("|".join([r"\b" + "PROTO" + r"COLS\b", "shared" + "/reference"]))
CITATION = re.compile(r"docs/protocols/([A-Za-z0-9_.-]+\.md)(?:#([A-Za-z0-9_-]*))?")
MD_LINK = re.compile(r"\]\(([^)\s#]*\.md)?(?:#([^)\s]*))?\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


def source_files(root: Path = ROOT) -> Iterator[Path]:
    """The files we ship or run, as text: code, tests, scripts, docs."""
    for name in SCANNED:
        base = root / name
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                    yield path
    for name in SCANNED_FILES:
        if (root / name).is_file():
            yield root / name


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text, not its target
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeated headings get ``-1``, ``-2``, ... as on GitHub)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def forbidden_citations(files: Iterable[Path]) -> list[str]:
    """``path:line: text`` for every line that cites the out-of-tree reference note."""
    hits = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{path}:{number}: {line.strip()}")
    return hits


def citations(path: Path, root: Path = ROOT) -> Iterator[tuple[int, Path, str | None]]:
    """``(line, page, anchor)`` for each citation of a protocol page in ``path``."""
    protocols = root / "docs" / "protocols"
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        for match in CITATION.finditer(line):
            yield number, protocols / match.group(1), match.group(2)
        if path.suffix == ".md":  # relative links, e.g. ../protocols/gemini.md#tools or #tools in the page itself
            for match in MD_LINK.finditer(line):
                target, anchor = match.group(1), match.group(2)
                if target and (target.startswith(("http:", "https:")) or "docs/protocols/" in target):
                    continue  # a URL, or a repository path the pattern above checked
                page = (path.parent / target).resolve() if target else path.resolve()
                if page.parent == protocols.resolve():
                    yield number, page, anchor


def broken_citations(files: Iterable[Path], root: Path = ROOT) -> list[str]:
    """``path:line: why`` for every citation of a missing protocol page or heading."""
    problems = []
    cache: dict[Path, set[str]] = {}
    for path in files:
        for number, page, anchor in citations(path, root):
            if not page.is_file():
                problems.append(f"{path}:{number}: no page {page.relative_to(root)}")
                continue
            if anchor is None:
                continue
            known = cache.setdefault(page, anchors(page))
            if anchor not in known:
                problems.append(f"{path}:{number}: no heading #{anchor} in {page.relative_to(root)}")
    return problems


def test_nothing_cites_the_out_of_tree_reference() -> None:
    hits = forbidden_citations(source_files())
    assert not hits, "cite docs/protocols/<page>.md#<anchor> instead:\n" + "\n".join(hits)


def test_every_protocol_citation_names_an_existing_page_and_heading() -> None:
    problems = broken_citations(source_files())
    assert not problems, "\n".join(problems)


def test_the_protocol_pages_are_there_and_cited() -> None:
    pages = {p.name for p in PROTOCOL_DOCS.glob("*.md")}
    assert {"README.md", "openai.md", "gemini.md", "nova_sonic.md", "websocket.md", "twilio.md"} <= pages
    cited = {page.name for path in source_files() for _, page, _ in citations(path) if path.suffix == ".py"}
    assert {"openai.md", "gemini.md", "nova_sonic.md", "twilio.md"} <= cited


def test_slugs_follow_github() -> None:
    assert slug("Session limits") == "session-limits"
    assert slug("Errors and close codes") == "errors-and-close-codes"
    assert slug("HTTP/2 transport") == "http2-transport"
    assert slug("`session.update` (GA)") == "sessionupdate-ga"
    assert slug("Event-stream framing") == "event-stream-framing"


def test_the_checks_catch_a_planted_citation(tmp_path: Path) -> None:
    """The checks can fail: a stale citation, a missing page and a missing heading are all reported."""
    (tmp_path / "docs" / "protocols").mkdir(parents=True)
    page = "# OpenAI\n\n## Session limits\n\n```\n## Not a heading\n```\n"
    (tmp_path / "docs" / "protocols" / "openai.md").write_text(page)
    planted = tmp_path / "adapters" / "x.py"
    planted.parent.mkdir()
    cite = "# docs/" + "protocols/"  # in pieces, so that the checks of this repository skip these lines
    planted.write_text(
        '"""Sixty minutes (' + "PROTO" + 'COLS.md section 1.1)."""\n'
        f"{cite}openai.md#session-limits\n{cite}openai.md#not-a-heading\n{cite}nova.md#signing\n"
    )
    doc = tmp_path / "docs" / "guide.md"
    doc.write_text("See [limits](protocols/openai.md#session-limit) and [ok](protocols/openai.md#session-limits).\n")
    files = list(source_files(tmp_path))
    assert len(forbidden_citations(files)) == 1
    problems = broken_citations(files, tmp_path)
    assert len(problems) == 3, problems
    assert any("#not-a-heading" in p for p in problems)
    assert any("no page" in p and p.endswith("nova.md") for p in problems)
    assert any("#session-limit " in p + " " for p in problems)
