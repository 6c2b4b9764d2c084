"""Relative links in README.md and docs/*.md must name files that exist.

MkDocs (``make docs-check``) checks links between the docs pages, anchors included, but not
the README, which is not part of the site; this test covers both, by file (anchors stripped).
Links inside fenced code blocks and inline code are not links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//|#)")


def relative_links(markdown: str) -> list[str]:
    """The link targets of ``markdown`` that point into the repository (no scheme, not a
    bare ``#anchor``), outside code."""
    text = _CODE.sub("", _FENCE.sub("", markdown))
    return [t for t in _LINK.findall(text) if not _EXTERNAL.match(t)]


def broken_links(markdown: str, base: Path) -> list[str]:
    """The relative links of ``markdown`` (read from a file in ``base``) whose file, anchor
    and query stripped, does not exist."""
    missing = []
    for target in relative_links(markdown):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (base / path).exists():
            missing.append(target)
    return missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(page: Path) -> None:
    assert broken_links(page.read_text(encoding="utf-8"), page.parent) == []


def test_readme_links_into_docs() -> None:
    links = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert any(t.startswith("docs/") for t in links)


def test_checker_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "cache.md").write_text("# cache\n")
    text = (
        "See [the cache](docs/cache.md#scope), [gone](docs/nope.md) and "
        "[web](https://example.com), [here](#top).\n"
        "```\n[not a link](docs/also-nope.md)\n```\n"
        "`[code](docs/code-nope.md)` ![img](docs/missing.png)\n"
    )
    assert relative_links(text) == ["docs/cache.md#scope", "docs/nope.md", "docs/missing.png"]
    assert broken_links(text, tmp_path) == ["docs/nope.md", "docs/missing.png"]
