"""The docs' layout holds: a short README whose first commands reach a result, an index that
lists every page (lab notes included), links and anchors that resolve, lab notes kept apart
from the user pages (issue 30)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
LAB = DOCS / "lab"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _text(page: Path) -> str:
    """The page without its fenced code blocks."""
    return _FENCE.sub("", page.read_text(encoding="utf-8"))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation and symbols dropped (letters,
    marks, digits, ``-`` and ``_`` kept), spaces as ``-``."""
    kept = "".join(
        c
        for c in heading.strip().lower()
        if c in "-_ " or unicodedata.category(c)[0] in "LM" or unicodedata.category(c) == "Nd"
    )
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.*)$", _text(page), flags=re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_the_readme_is_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move details to docs/"


def test_the_readmes_first_commands_reach_a_result_and_the_quick_report_comes_first():
    commands = [
        line.split("#")[0].strip()
        for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.S | re.M)
        for line in block.splitlines()
        if line.split("#")[0].strip()
    ]
    assert any(c.split()[:2] in (["make", "demo"], ["vafa", "demo"]) for c in commands[:3])
    reports = [c for c in commands if c.startswith("vafa report")]
    assert reports and "--quick" in reports[0], reports


def test_the_index_lists_every_page_lab_notes_included():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    listed = {(DOCS / target).resolve() for target in _LINK.findall(index)}
    pages = {p.resolve() for p in [*DOCS.rglob("*.md"), *DOCS.rglob("*.ipynb")]}
    missing = sorted(str(p.relative_to(ROOT)) for p in pages - listed - {DOCS / "README.md"})
    assert not missing, f"docs/README.md does not list {missing}"


def test_every_link_to_a_page_and_its_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in _LINK.findall(_text(page)):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_lab_notes_are_linked_from_the_user_pages_and_hold_no_examples():
    assert "lab/results-history.md" in (DOCS / "results.md").read_text(encoding="utf-8")
    assert "lab/performance-log.md" in (DOCS / "performance.md").read_text(encoding="utf-8")
    for page in LAB.glob("*.md"):  # tests/library/test_docs_examples.py runs docs/*.md only
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"^```(bash|python|sh)\b", text, re.M), page.name


def test_the_user_pages_carry_no_measurement_dates():
    """Dates of runs belong to the lab notes; the user pages give the results."""
    for page in (README, DOCS / "results.md", DOCS / "performance.md"):
        dates = re.findall(r"\b20\d\d-\d\d-\d\d\b", page.read_text(encoding="utf-8"))
        assert not dates, f"{page.name}: {dates} (move the history to docs/lab/)"
