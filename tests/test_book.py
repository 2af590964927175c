"""The HTML book builds with warnings as errors, and a failing cell fails the build.

The notebooks are executed once in the test suite, by nbval (see
pyproject.toml). Building the book executes them again, so here the book is
built with execution switched off: this checks the table of contents, the
cross-references, the equations, the citations and the exercise and proof
blocks, everything except the outputs. The README's build command executes
every notebook. A separate small book checks that a notebook cell that raises
makes the build fail under the book's own configuration.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the jupyter-book command installed next to this Python
JUPYTER_BOOK = [shutil.which("jupyter-book", path=str(pathlib.Path(sys.executable).parent)) or "jupyter-book"]

pytestmark = pytest.mark.slow


def _build(source: pathlib.Path, output: pathlib.Path, config: pathlib.Path) -> subprocess.CompletedProcess:
    command = [*JUPYTER_BOOK, "build", str(source), "--path-output", str(output), "--config", str(config),
               "--warningiserror", "--keep-going"]
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def _config_with(tmp_path: pathlib.Path, execute_notebooks: str) -> pathlib.Path:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = execute_notebooks
    path = tmp_path / "_config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_configuration_executes_every_notebook_and_stops_on_errors():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True


def test_the_book_builds_with_warnings_as_errors(tmp_path):
    result = _build(ROOT, tmp_path / "out", _config_with(tmp_path, "off"))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    html = tmp_path / "out" / "_build" / "html"
    chapter = (html / "chapters" / "01_finite_differences.html").read_text()
    assert (html / "intro.html").exists() and (html / "bibliography.html").exists()
    for page in sorted((html / "chapters").glob("*.html")):
        text = page.read_text()
        assert "math notranslate" in text, page.name  # equations rendered for MathJax
        assert text.count('class="exercise admonition"') >= 3, page.name  # sphinx-exercise blocks...
        assert text.count('class="solution dropdown admonition"') >= 3, page.name  # ...with folded solutions
        assert 'href="../bibliography.html#id' in text, page.name  # citations resolved to entries
        assert 'href="../assignments.html#assignment-' in text, page.name  # the link to its assignment
    assert 'class="proof proposition admonition"' in chapter  # a sphinx-proof proposition
    assert "prop-fd-error" in chapter


def test_a_failing_cell_fails_the_build(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    shutil.copy(ROOT / "references.bib", book)
    (book / "intro.md").write_text("# A book with a broken chapter\n")
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: broken\n")
    notebook = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Broken"]},
            {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
             "source": ["raise RuntimeError('this cell fails')"]},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (book / "broken.ipynb").write_text(json.dumps(notebook))
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    result = _build(book, tmp_path / "out", book / "_config.yml")
    assert result.returncode != 0
    assert "this cell fails" in result.stdout + result.stderr
