"""The README and docs/: short enough to read first, and every relative link and every `make`
target they name exists (a page moved or a target renamed fails here, not on a reader)."""

import re

import pytest
from helpers import ROOT, make

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
LINKED = PAGES + [p for p in sorted((ROOT / "bench").glob("*.md")) if p.name != "README.md"]  # + tables, records
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# make, its options and VAR=value words, then a target; a code span's closing backtick ends it
MAKE = re.compile(r"(?<![\w/.-])make((?:[ \t]+(?:-j[ \t]*\d+|-[^\s`]+|[A-Z_]+=[^\s`]+))*)[ \t]+([a-z][a-z-]*)")


def targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_the_readme_is_a_five_minute_read():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_that_exists(page):
    for link in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue  # a web address or an anchor on the page itself
        assert (page.parent / link.split("#")[0]).exists(), f"{page.name}: link to {link}: no such file"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_make_target_named_exists(page):
    known = targets()
    named = {m.group(2) for m in MAKE.finditer(page.read_text())}
    assert named, f"{page.name} names no make target"  # the pattern still reads the pages
    assert named <= known, f"{page.name}: make {', '.join(sorted(named - known))}: no such target"


def test_make_help_names_every_docs_page():
    out = make("help").stdout
    pages = [p for p in (ROOT / "docs").glob("*.md") if p.name != "README.md"]
    assert pages and all(f"docs/{p.name}" in out for p in pages) and "docs/README.md" in out
