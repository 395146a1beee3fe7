"""Every relative link in the project's documentation leads to a file that exists, and to a
heading there when it names one."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    {
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        ROOT / "policies" / "README.md",
        ROOT / "app" / "worker" / "README.md",
    }
)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def _prose(text: str) -> str:
    """The page without its code blocks, where brackets and parentheses are code, not links."""
    return FENCE.sub("", text)


def links(text: str) -> list[str]:
    """Every relative link target in a Markdown page (inline and reference style)."""
    prose = CODE_SPAN.sub("", _prose(text))
    found = INLINE_LINK.findall(prose) + REFERENCE.findall(prose)
    return [target for target in found if not EXTERNAL.match(target)]


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lowercased, punctuation dropped, spaces as
    hyphens, and -1, -2... on repeats."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in HEADING.findall(_prose(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        found.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return found


def broken(page: Path, root: Path = ROOT) -> list[str]:
    """The links of `page` that lead nowhere, each with the reason."""
    problems = []
    for target in links(page.read_text()):
        path, _, fragment = target.partition("#")
        if not path:
            destination = page
        elif path.startswith("/"):
            destination = root / path.lstrip("/")
        else:
            destination = page.parent / path
        if not destination.exists():
            problems.append(f"{target}: no such file {os.path.relpath(destination, root)}")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination.read_text()):
            problems.append(f"{target}: no heading #{fragment} in {destination.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.exists()
    assert broken(page) == []


def test_the_readme_links_every_guide():
    targets = {target.partition("#")[0] for target in links((ROOT / "README.md").read_text())}
    guides = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert guides | {"policies/README.md", "app/worker/README.md"} <= targets


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Jobs: the `worker`\n\n## Jobs: the `worker`\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#jobs-the-worker) [repeat](other.md#jobs-the-worker-1) [self](#page)\n"
        "[root](/docs/other.md) [web](https://example.com/missing.md) `[code](missing.md)`\n"
        "[gone](missing.md) [bad anchor](other.md#nothing) [up](../absent/README.md)\n\n"
        "```sh\n[in a block](missing.md)\n```\n\n"
        "[ref]: nowhere.md\n"
    )
    assert broken(page, tmp_path) == [
        "missing.md: no such file docs/missing.md",
        "other.md#nothing: no heading #nothing in other.md",
        "../absent/README.md: no such file absent/README.md",
        "nowhere.md: no such file docs/nowhere.md",
    ]
