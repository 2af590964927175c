"""The HTML book: it builds, it works offline in a real browser, on a desktop and on a phone.

The book is built once, as the README's build command builds it (every
notebook executed, warnings as errors), into a temporary folder. Then:

- its pages are checked as files: the table of contents, cross-references,
  exercises with folded solutions, citations, the library reference (one page
  per module of ad_lib), the course download, and no page that loads anything
  from the network;
- a headless Chromium with the network switched off (tests/browser.py) opens
  every page from ``file://`` and asserts that the mathematics is typeset by
  the book's own MathJax with no error and no raw LaTeX left, that every
  internal link and anchor resolves, that the solutions open, that no widget
  is shown dead, that the console has no error, that every figure has alt
  text and is shown at its natural size (so its text stays as large as the
  body's), and that the menu and the page contents open at 400 px and the
  sidebar collapses at 1280 px; and served over HTTP (from the loopback
  address) a chapter reads the same. Screenshots of a chapter at both widths
  are kept in ``_build/test-artifacts/``. Without a browser these tests skip
  with the command that installs one; ``.ci/run`` installs it, so CI runs them.

To rerun these checks on a book built before, set ``AD_BOOK_HTML`` to its
``_build/html`` folder.

Small books of their own, under the book's configuration and extensions, check
that a cell that raises fails the build, and that a docstring citing a section
the book does not have fails it too (and one that exists becomes a link).
"""

import functools
import http.server
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
import zipfile

import pytest
import yaml

import browser

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "_build" / "test-artifacts"
# the jupyter-book command installed next to this Python
JUPYTER_BOOK = [shutil.which("jupyter-book", path=str(pathlib.Path(sys.executable).parent)) or "jupyter-book"]

pytestmark = pytest.mark.slow


def _build(source: pathlib.Path, output: pathlib.Path, extra_env: dict = None) -> subprocess.CompletedProcess:
    """The README's build command, writing into ``output``, in a reader's environment.

    conftest.py sets MPLBACKEND=Agg for the notebooks that nbval runs; a kernel
    that inherited it would draw no figure into the notebook (plt.show() on Agg
    shows nothing), and the book would have none: the build gets the
    environment without it, as a reader's has.
    """
    command = [*JUPYTER_BOOK, "build", str(source), "--path-output", str(output), "--warningiserror", "--keep-going"]
    env = {**{k: v for k, v in os.environ.items() if k != "MPLBACKEND"}, **(extra_env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=3000, env=env)


def _problems(result: subprocess.CompletedProcess) -> str:
    """The lines of a build's log that say what went wrong."""
    lines = (result.stdout + result.stderr).splitlines()
    wrong = [line for line in lines if re.search(r"WARNING|ERROR|Error|Traceback|failed", line)
             and "Kernel is running over TCP" not in line]
    return "\n".join(wrong[-60:]) or "\n".join(lines[-60:])


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> pathlib.Path:
    if os.environ.get("AD_BOOK_HTML"):  # while working on the tests: a book built before, _build/html
        return pathlib.Path(os.environ["AD_BOOK_HTML"]).resolve()
    out = tmp_path_factory.mktemp("book")
    start = time.perf_counter()
    result = _build(ROOT, out)
    assert result.returncode == 0, _problems(result)
    print(f"\nthe book built in {time.perf_counter() - start:.0f} s")
    return out / "_build" / "html"


REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.I)


def _pages(html: pathlib.Path) -> list:
    """The book's pages, without the redirects (index.html sends the reader to the preface)."""
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    return [p for p in pages if not REDIRECT.search(p.read_text())]


def test_the_front_page_leads_to_the_preface(book):
    target = REDIRECT.search((book / "index.html").read_text())
    assert target and (book / target.group(1)).resolve() == (book / "intro.html").resolve()


def test_the_configuration_executes_every_notebook_and_stops_on_errors():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "force"
    assert config["execute"]["allow_errors"] is False
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True


def test_the_book_builds_with_warnings_as_errors(book):
    chapter = (book / "chapters" / "01_finite_differences.html").read_text()
    assert (book / "intro.html").exists() and (book / "bibliography.html").exists()
    for page in sorted((book / "chapters").glob("*.html")):
        text = page.read_text()
        assert "math notranslate" in text, page.name  # equations rendered for MathJax
        assert text.count('class="exercise admonition"') >= 3, page.name  # sphinx-exercise blocks...
        assert text.count('class="solution dropdown admonition"') >= 3, page.name  # ...with folded solutions
        assert 'href="../bibliography.html#id' in text, page.name  # citations resolved to entries
        assert 'href="../assignments.html#assignment-' in text, page.name  # the link to its assignment
        assert "<figcaption>" in text, page.name  # numbered figures with captions
        assert "mybinder.org/v2/gh/" in text, page.name  # a launch button
    assert 'class="proof proposition admonition"' in chapter  # a sphinx-proof proposition
    assert "prop-fd-error" in chapter


def test_the_repository_address_is_set_in_one_place(book):
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert url.startswith("https://")
    page = (book / "chapters" / "02_computational_graphs.html").read_text()
    assert f'href="{url}"' in page  # the repository button
    assert f'href="{url}"' in (book / "intro.html").read_text()  # the preface's link, from the same setting
    sources = [ROOT / "intro.md", ROOT / "assignments.md", *(ROOT / "chapters").glob("*.ipynb")]
    assert not [p.name for p in sources if url in p.read_text()], "the address is written only in _config.yml"
    assert url.split("github.com/", 1)[1] in page.split("mybinder.org/v2/gh/", 1)[1][:200]  # Binder builds it
    assert "`repository: url:` in `_config.yml`" in (ROOT / "README.md").read_text()  # where a course changes it


def test_no_page_loads_anything_from_the_network(book):
    assert (book / "_static" / "mathjax" / "tex-chtml.js").exists()  # the book's own MathJax
    for page in _pages(book):
        text = page.read_text()
        # scripts, style sheets, images and frames (links to other sites are fine: a reader follows them or not)
        loads = re.findall(r'<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)="((?:https?:)?//[^"]+)"', text)
        assert not loads, f"{page.relative_to(book)} loads {loads[:3]}"


def test_the_library_reference_has_a_page_per_module(book):
    modules = sorted(p.stem for p in (ROOT / "ad_lib").glob("*.py") if not p.stem.startswith("_"))
    toc = (ROOT / "_toc.yml").read_text()
    for module in modules:
        assert f"file: reference/{module}" in toc, f"ad_lib.{module} has no page in the library reference"
        page = (book / "reference" / f"{module}.html").read_text()
        assert f'id="module-ad_lib.{module}"' in page, module  # generated by autodoc
    # every primitive of ad_lib.ops has its entry (they are objects, which autodoc lists only when told)
    from ad_lib.ops import PRIMITIVES

    ops_page = (book / "reference" / "ops.html").read_text()
    assert not [n for n in PRIMITIVES if f'id="ad_lib.ops.{n}"' not in ops_page], "primitives missing from the reference"
    # every public function of ad_lib.reverse is documented, and its chapter is a link
    reverse = (book / "reference" / "reverse.html").read_text()
    for name in ("vjp", "grad", "jacrev", "hvp", "Value"):
        assert f'id="ad_lib.reverse.{name}"' in reverse, name
    assert re.search(r'<a class="reference external" href="\.\./chapters/04_reverse_mode\.html#[a-z-]+">chapter 4, section',
                     reverse), "the docstrings' citations of a section are links to it"


def test_the_course_download_holds_what_a_reader_needs_offline(book, tmp_path):
    preface = (book / "intro.html").read_text()
    link = re.search(r'href="(_downloads/[^"]+/ad-course\.zip)"', preface)
    assert link, "the preface links the course download"
    archive = book / link.group(1)
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        z.extractall(tmp_path)
    top = tmp_path / "ad-course"
    chapters = sorted(p.name for p in (ROOT / "chapters").glob("*.ipynb"))
    assignments = sorted(p.name for p in (ROOT / "exercises" / "source").glob("*/*.ipynb"))
    for name in ["README.md", "requirements.txt", "pyproject.toml", "chapters/matplotlibrc",
                 *(f"chapters/{c}" for c in chapters), *(f"assignments/{a}" for a in assignments),
                 *(f"ad_lib/{p.name}" for p in (ROOT / "ad_lib").glob("*.py"))]:
        assert f"ad-course/{name}" in names, name
    assert "-e ." in (top / "requirements.txt").read_text()  # pip install -r requirements.txt installs ad_lib
    # the student releases: no solution, no hidden test, no model answer
    for a in assignments:
        text = (top / "assignments" / a).read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in text, (a, marker)
        assert "raise NotImplementedError()" in text, a
    assert not any("graders" in n or n.endswith("grading.py") for n in names), "the graders stay with the instructor"
    # the library imports from the download alone, and every module a chapter imports is in it
    probe = ("import ad_lib, json, sys; print(json.dumps([ad_lib.__file__, sorted(m for m in sys.modules "
             "if m.startswith('ad_lib'))]))")
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(top)!r}); {probe}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    where, loaded = json.loads(result.stdout)
    assert pathlib.Path(where).is_relative_to(top)
    for chapter in chapters:
        source = (ROOT / "chapters" / chapter).read_text()
        for module in set(re.findall(r"ad_lib\.(\w+)", source)):
            if (ROOT / "ad_lib" / f"{module}.py").exists():
                assert f"ad_lib.{module}" in loaded, (chapter, module)


def test_a_failing_cell_fails_the_build(tmp_path):
    book = tmp_path / "book"
    _small_book(book, ["broken"])
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
    result = _build(book, tmp_path / "out")
    assert result.returncode != 0
    assert "this cell fails" in result.stdout + result.stderr


def _small_book(book: pathlib.Path, toc_files: list):
    """A book of its own under ``book``, with the repository's configuration and extensions."""
    book.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "references.bib", book)
    shutil.copytree(ROOT / "_static", book / "_static")
    (book / "intro.md").write_text("# A small book\n")
    chapters = "".join(f"  - file: {f}\n" for f in toc_files)
    (book / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n{chapters}")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in config["sphinx"]["local_extensions"].items()}
    (book / "_config.yml").write_text(yaml.safe_dump(config))


def test_a_docstring_that_cites_a_section_the_book_lacks_fails_the_build(tmp_path):
    book = tmp_path / "book"
    _small_book(book, ["chapters/01_one", "reference"])
    (book / "chapters").mkdir()
    notebook = {"cells": [{"cell_type": "markdown", "id": "c0", "metadata": {}, "source": ["# One\n\n## A real section\n"]}],
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (book / "chapters" / "01_one.ipynb").write_text(json.dumps(notebook))
    (book / "reference.md").write_text("# Reference\n\n```{eval-rst}\n.. automodule:: cited\n   :members:\n```\n")
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "cited.py").write_text('"""A module."""\n\n\ndef good():\n    """See chapter 1, section "A real section"."""\n')
    result = _build(book, tmp_path / "good", {"PYTHONPATH": str(modules)})
    assert result.returncode == 0, _problems(result)
    page = (tmp_path / "good" / "_build" / "html" / "reference.html").read_text()
    assert 'href="chapters/01_one.html#a-real-section"' in page  # the citation became a link to the section
    (modules / "cited.py").write_text('"""A module."""\n\n\ndef bad():\n    """See chapter 1, section "No such section"."""\n')
    result = _build(book, tmp_path / "bad", {"PYTHONPATH": str(modules)})
    assert result.returncode != 0
    assert 'cites chapter 1, section "No such section", which that chapter does not have' in result.stdout + result.stderr


# ---------------------------------------------------------------------------
# In a real browser, offline
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    found = browser.find_browser()
    if found is None:
        if os.environ.get("AD_REQUIRE_BROWSER"):  # set by .ci/run, which installs the browser
            pytest.fail(browser.INSTALL_HINT)
        pytest.skip(browser.INSTALL_HINT)
    session = browser.start(*found)
    yield session
    session.quit()


def _open(session, page: pathlib.Path, width: int):
    state = browser.go(session, page.as_uri(), width)
    assert state in ("typeset", "absent"), f"{page.name}: MathJax {state}"
    return state


def _finish_page(session, name: str, found: list, problems: dict, screenshot: str):
    """Add the console's errors to what was found on a page, record it, and keep a screenshot of chapter 2."""
    errors = browser.console_errors(session)
    if errors:
        found.append(f"console errors: {errors[:3]}")
    if found:
        problems[name] = found
    if name == "chapters/02_computational_graphs.html":
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        session.save_screenshot(str(ARTIFACTS / screenshot))


def test_every_page_reads_offline(book, chromium):
    problems = {}
    formulas = 0
    for page in _pages(book):
        name = str(page.relative_to(book))
        state = _open(chromium, page, 1280)
        report = chromium.execute_script(browser.PAGE_REPORT)
        found = []
        formulas += report["maths"]
        if report["maths"] and state != "typeset":
            found.append("formulas but no MathJax")
        if report["untypeset"]:
            found.append(f"{len(report['untypeset'])} formulas not typeset: {report['untypeset'][:2]}")
        if report["mathErrors"]:
            found.append(f"MathJax errors: {report['mathErrors']}")
        if report["raw"]:
            found.append(f"raw LaTeX in the text: {report['raw'][:2]}")
        if report["widgets"] or report["widgetErrors"]:
            found.append(f"a dead widget: {report['widgets'][:2]}")
        if report["external"]:
            found.append(f"loads from the network: {report['external'][:3]}")
        broken = browser.broken_links(report["links"], book)
        if broken:
            found.append(f"{len(broken)} broken internal links: {broken[:3]}")
        for image in report["images"]:
            if not image["loaded"]:
                found.append(f"image not loaded: {image['src']}")
            elif not image["alt"].strip():
                found.append(f"image without alt text: {image['src']}")
            elif image["shown"] < 0.95 * image["natural"]:  # shrunk: its text would be smaller than the body's
                found.append(f"figure shrunk from {image['natural']} to {image['shown']:.0f} px: {image['src']}")
        if report["dropdowns"]:
            stuck = chromium.execute_script(browser.OPEN_DROPDOWNS)
            if stuck:
                found.append(f"dropdowns that do not open: {stuck[:3]}")
        _finish_page(chromium, name, found, problems, "chapter-02-1280.png")
    assert not problems, json.dumps(problems, indent=1)[:6000]
    assert formulas > 500, f"only {formulas} formulas in the whole book: is the mathematics still there?"


def test_the_menu_and_the_page_contents_open_on_a_phone(book, chromium):
    problems = {}
    for page in _pages(book):
        name = str(page.relative_to(book))
        _open(chromium, page, 400)
        found = []
        toc_link = 'nav.bd-links a[href$="intro.html"], nav.bd-links a[href="#"]'
        if browser.in_view(chromium, toc_link, False):
            found.append("the menu is open before it is asked for")
        buttons = browser.visible_buttons(chromium, ".primary-toggle")
        if len(buttons) != 1:
            found.append(f"{len(buttons)} visible menu buttons")
        else:
            buttons[0].click()
            if not browser.in_view(chromium, toc_link, True):
                found.append("the menu button does not open the menu")
            browser.press_escape(chromium)
            if browser.in_view(chromium, toc_link, False):
                found.append("the menu does not close")
        if chromium.find_elements("css selector", ".bd-sidebar-secondary .bd-toc-nav a"):  # a page with sections
            secondary = browser.visible_buttons(chromium, ".secondary-toggle")
            if len(secondary) != 1:
                found.append(f"{len(secondary)} visible page-contents buttons")
            else:
                secondary[0].click()
                if not browser.in_view(chromium, ".bd-sidebar-secondary .bd-toc-nav a", True):
                    found.append("the page-contents button does not open them")
                browser.press_escape(chromium)
                if browser.in_view(chromium, ".bd-sidebar-secondary .bd-toc-nav a", False):
                    found.append("the page contents do not close")
        _finish_page(chromium, name, found, problems, "chapter-02-400.png")
    assert not problems, json.dumps(problems, indent=1)[:6000]


def test_the_book_served_over_http_reads_the_same(book, chromium):
    """Served by a plain web server (here Python's, on the loopback address) rather than opened as files."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(book))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            assert browser.go(chromium, f"{base}/chapters/03_forward_mode.html", 1280) == "typeset"
            report = chromium.execute_script(browser.PAGE_REPORT)
            assert report["maths"] > 50 and not report["untypeset"] and not report["mathErrors"], report["untypeset"][:3]
            assert not report["external"], report["external"][:3]  # nothing from another origin
            assert all(image["loaded"] for image in report["images"])
            assert not browser.console_errors(chromium)
        finally:
            chromium.get("about:blank")  # nothing may still be asking this server when it goes
            chromium.get_log("browser")
            server.shutdown()


def test_the_sidebar_collapses_on_a_desktop(book, chromium):
    page = book / "chapters" / "03_forward_mode.html"
    _open(chromium, page, 1280)
    toc_link = 'nav.bd-links a[href$="intro.html"]'
    assert browser.in_view(chromium, toc_link, True), "the sidebar is shown at 1280 px"
    button, = browser.visible_buttons(chromium, ".primary-toggle")
    button.click()
    assert not browser.in_view(chromium, toc_link, False), "the menu button collapses the sidebar"
    button.click()
    assert browser.in_view(chromium, toc_link, True), "and brings it back"
    assert not browser.console_errors(chromium)
