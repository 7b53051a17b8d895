"""Paper-to-code maps resolve and cover the papers' equations; every notebook carries the teaching layer
(lesson header, measured run times, glossary links, its paper map)."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from nbhelpers import papermap
from nbhelpers.papermap import MapEntry, paper_map, references, verify
from nbhelpers.runner import discover

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = discover(ROOT / "notebooks")
GLOSSARY = ROOT / "docs" / "GLOSSARY.md"

#: Equations each method's docstrings must map (issue 9).
REQUIRED_EQUATIONS = {"thfr": range(1, 6), "pouta": range(2, 9), "prn": range(1, 6), "fod": range(1, 13)}
#: Notebook prefix -> paper whose map it shows.
MAP_NOTEBOOKS = {"02": "thfr", "03": "thfr", "04": "pouta", "05": "prn", "06": "fod"}


def test_references_are_normalised_and_ranges_expanded():
    text = "Eq. 4-5, Eq. 2–3 and Eq. 12. Fig. 4a, Tables 4-5, Table VI; Sec. III-B, §3.2, supp. §1.1 (Sec. 3.2)."
    assert references(text) == ["Eq. 4", "Eq. 5", "Eq. 2", "Eq. 3", "Eq. 12", "Fig. 4a", "Table 4", "Table 5",
                                "Table VI", "§III-B", "§3.2", "supp. §1.1"]
    assert references("no citation, e.g. a 3x3 conv") == []


@pytest.mark.parametrize("paper", sorted(papermap.papers()))
def test_every_entry_resolves_to_its_definition(paper):
    entries = paper_map(paper)
    assert entries and verify(entries) == []
    for e in entries:
        line = (ROOT / e.path).read_text().splitlines()[e.line - 1]
        assert re.match(rf"\s*(def|class) {e.name}\b", line), (e, line)


@pytest.mark.parametrize("paper, numbers", REQUIRED_EQUATIONS.items())
def test_maps_cover_the_papers_equations(paper, numbers):
    mapped = {e.reference for e in paper_map(paper)}
    missing = [f"Eq. {n}" for n in numbers if f"Eq. {n}" not in mapped]
    assert not missing, f"{paper}: no docstring cites {missing}"


def test_a_vanished_or_moved_name_fails_the_check():
    entry = paper_map("thfr", refs=["Eq. 1"])[0]
    assert verify([entry]) == []
    gone = verify([replace(entry, qualname="image_nns_renamed")])
    assert gone and "does not resolve" in gone[0]
    moved = verify([replace(entry, line=entry.line + 1)])
    assert moved and "is not the definition" in moved[0]
    assert verify([MapEntry("Eq. 9", "nbhelpers.methods.no_such_module", "f", "", "x.py", 1)])


def test_refs_filter_and_markdown_links_point_into_the_repository():
    entries = paper_map("fod", refs=["Eq. 5"])
    assert {e.reference for e in entries} == {"Eq. 5"} and any(e.qualname == "rbf_target" for e in entries)
    table = papermap.markdown_table("fod", refs=["Eq. 5"])
    links = re.findall(r"\]\((\.\./[^)#]+)#L(\d+)\)", table)
    assert len(links) == len(entries)
    for target, line in links:
        assert (ROOT / "notebooks" / target).resolve().is_file() and int(line) > 0


def _cells(path: Path) -> list:
    return nbformat.read(str(path), as_version=4).cells


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem[:2] in MAP_NOTEBOOKS], ids=lambda p: p.stem)
def test_method_notebooks_show_their_generated_map(path):
    code = "\n".join(c.source for c in _cells(path) if c.cell_type == "code")
    assert f'papermap.markdown_table("{MAP_NOTEBOOKS[path.stem[:2]]}"' in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_the_lesson_header(path):
    header = _cells(path)[0].source
    assert header.startswith("# ")
    for part in ("Learning objectives", "Prerequisites", "Run time", "`cpu` preset", "GPU",
                 "](../docs/GLOSSARY.md)", "](../docs/COURSE.md)"):
        assert part in header, f"{path.name}: the first cell lacks {part!r}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_glossary_anchors_used_by_notebooks_and_course_exist():
    anchors = {_slug(h) for h in re.findall(r"^#{2,4} (.+)$", GLOSSARY.read_text(), re.M)}
    sources = {p.name: "\n".join(c.source for c in _cells(p) if c.cell_type == "markdown") for p in NOTEBOOKS}
    sources["COURSE.md"] = (ROOT / "docs" / "COURSE.md").read_text()
    used = {(name, a) for name, text in sources.items() for a in re.findall(r"GLOSSARY\.md#([\w-]+)", text)}
    assert {name for name, _ in used} >= {p.name for p in NOTEBOOKS}, "every notebook links glossary terms"
    unknown = sorted((name, a) for name, a in used if a not in anchors)
    assert not unknown, unknown


def test_course_guide_covers_every_notebook_and_is_linked_from_the_readme():
    course = (ROOT / "docs" / "COURSE.md").read_text()
    assert all(p.name in course for p in NOTEBOOKS)
    assert "docs/COURSE.md" in (ROOT / "README.md").read_text()


def test_run_times_have_been_measured():
    """Every header states its run times as measured (or says they are not measured yet): no template placeholder."""
    left = [p.name for p in NOTEBOOKS if "MEASURED_" in p.read_text()]
    assert not left, f"run-time placeholders still in {left}"
