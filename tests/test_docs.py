"""The README and docs/ pages keep the shape a newcomer reads: short, in order, each page
saying what it is for, no heading hidden in a transcript, no link to a missing file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_readme import DOCUMENTS

# Issue 25: what a newcomer reads in ten minutes; the rest goes to a page under docs/.
README_SECTIONS = [
    "Quick start",
    "Layout",
    "A short tour",
    "Add your own model or data set",
    "The dashboard",
    "Read next",
]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_headings_lie_outside_code_blocks(path: Path) -> None:
    """A ``## `` line a transcript prints would end a section for every reader of headings."""
    in_fence = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        in_fence ^= line.startswith("```")
        assert not (in_fence and line.startswith("## ")), f"{path.name}:{number}: {line}"


def test_relative_links_point_at_files() -> None:
    links = [
        (path, target)
        for path in DOCUMENTS
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text())
    ]
    missing = [
        f"{path.name}: {target}" for path, target in links if not (path.parent / target).exists()
    ]
    assert links and not missing, f"links to missing files: {missing}"


def test_the_readme_is_short_and_in_the_newcomers_order() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 350
    assert re.findall(r"^## (.*)$", text, flags=re.M) == README_SECTIONS


@pytest.mark.parametrize("path", DOCUMENTS[1:], ids=lambda path: path.name)
def test_each_page_starts_with_its_title_and_what_it_is_for(path: Path) -> None:
    title, blank, purpose, *_ = path.read_text().splitlines()
    assert title.startswith("# ") and blank == ""
    assert purpose[:1].isalpha(), f"{path.name} opens with {purpose!r}, not a sentence"
    assert str(path.relative_to(ROOT)) in (ROOT / "README.md").read_text()
