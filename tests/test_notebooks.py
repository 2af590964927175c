"""The notebooks as files: committed without outputs, and all in the table of contents.

(Running them is nbval's job: `python -m pytest` collects chapters/*.ipynb.)
"""

import json
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
ASSIGNMENTS = sorted((ROOT / "exercises" / "source").glob("*/*.ipynb"))


def _toc_files(entries):
    for entry in entries:
        if "file" in entry:
            yield entry["file"]
        for key in ("chapters", "sections", "parts"):
            yield from _toc_files(entry.get(key, []))


def test_there_are_chapters():
    assert CHAPTERS, "no notebook under chapters/"


@pytest.mark.parametrize("path", CHAPTERS + ASSIGNMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [
        i
        for i, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them (Kernel > Restart & Clear Output) before committing"


def test_every_chapter_is_in_the_table_of_contents_and_back():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = set(_toc_files([{"file": toc["root"]}, *toc.get("parts", []), *toc.get("chapters", [])]))
    chapters = {f"chapters/{p.stem}" for p in CHAPTERS}
    assert chapters <= listed, f"chapters missing from _toc.yml: {sorted(chapters - listed)}"
    for entry in listed:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml lists {entry}, which does not exist"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_imports_its_library_and_picks_a_device(path):
    source = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert "ad_lib" in source and "ad_lib.device(" in source


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_has_an_assignment_and_links_to_it(path):
    number, slug = path.stem.split("_", 1)
    assert (ROOT / "exercises" / "source" / path.stem / f"{path.stem}.ipynb").exists(), f"no assignment for {path.name}"
    assert f"{{ref}}`assignment-{number}`" in path.read_text(), f"{path.name} does not link to its assignment"
    assert f"(assignment-{number})=" in (ROOT / "assignments.md").read_text()


def test_every_assignment_belongs_to_a_chapter():
    for notebook in ASSIGNMENTS:
        assert (ROOT / "chapters" / f"{notebook.stem}.ipynb").exists(), f"{notebook} has no chapter"
