"""The library reference: every mention of a chapter in a docstring links to it.

``ad_lib``'s docstrings say where the book explains them, in plain words that
read well in ``help()`` too::

    One pass of forward mode (chapter 3, section "The forward recursion").

While autodoc renders a docstring for the library reference (``reference/``),
each ``chapter N`` becomes a link to that chapter's page, and ``chapter N,
section "Title"`` a link to that section. A chapter that does not exist, or a
section title that the chapter does not have, is a warning, which the book's
build (warnings as errors) turns into a failure: a docstring cannot point a
reader to a place that is not there. Equations are cited with Sphinx's own
role, :eq:`label`, which the build checks the same way.
"""

import json
import pathlib
import re

from docutils import nodes
from sphinx.util import logging

logger = logging.getLogger(__name__)

# "chapter 4", "chapter 4, section "The tensor tape"", "chapter 1, same section",
# possibly broken over two lines of the docstring
MENTION = re.compile(r'\b([Cc]hapter\s+)(\d+)(,\s+(?:same\s+section|section\s+"([^"]+)"))?')


def _plain(title: str) -> str:
    """A heading's text as the page shows it: without MyST/LaTeX markup."""
    return re.sub(r"[`*$\\]", "", title).strip()


def _chapters(srcdir: pathlib.Path) -> dict:
    """{chapter number: (page without suffix, {section title: anchor})} from the notebooks."""
    chapters = {}
    for path in sorted((srcdir / "chapters").glob("[0-9][0-9]_*.ipynb")):
        sections = {}
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            for line in "".join(cell["source"]).splitlines():
                match = re.match(r"#{2,4} +(.+?)\s*$", line)
                if match:
                    title = _plain(match.group(1))
                    sections.setdefault(title, nodes.make_id(title))
        chapters[int(path.name[:2])] = (f"chapters/{path.stem}", sections)
    return chapters


def _link_mentions(app, what, name, obj, options, lines):
    chapters = app.env.ad_lib_chapters
    depth = app.env.docname.count("/")  # the reference page's depth below the book's root
    up = "../" * depth
    last_section = {}

    def replace(match):
        word, number, tail, title = match.group(1), int(match.group(2)), match.group(3), match.group(4)
        if number not in chapters:
            logger.warning(f"{name}: its docstring cites chapter {number}, which the book does not have",
                           location=app.env.docname)
            return match.group(0)
        page, sections = chapters[number]
        anchor = ""
        if tail and title is None:  # "same section": the one cited just before
            title = last_section.get(number)
        if title is not None:
            title = re.sub(r"\s+", " ", title)
            if _plain(title) not in sections:
                logger.warning(f'{name}: its docstring cites chapter {number}, section "{title}", '
                               f"which that chapter does not have (its sections: {sorted(sections)})",
                               location=app.env.docname)
                return match.group(0)
            last_section[number] = title
            anchor = "#" + sections[_plain(title)]
        text = re.sub(r"\s+", " ", match.group(0)).replace("`", "")
        return f"`{text} <{up}{page}.html{anchor}>`__"

    def link(text):  # outside inline literals (``...``) only
        parts = re.split(r"(``.*?``)", text, flags=re.S)
        return "".join(p if k % 2 else MENTION.sub(replace, p) for k, p in enumerate(parts))

    # paragraphs are linked whole (a mention may be broken over two lines); literal blocks are left alone
    out, run, in_literal = [], [], False
    for line in lines:
        if in_literal and line.strip() and not line.startswith((" ", "\t")):
            in_literal = False
        if in_literal:
            out.append(line)
            continue
        if not line.strip():
            out.extend(link("\n".join(run)).split("\n") if run else [])
            run = []
            out.append(line)
        else:
            run.append(line)
        if line.strip().endswith("::"):
            out.extend(link("\n".join(run)).split("\n"))
            run, in_literal = [], True
    if run:
        out.extend(link("\n".join(run)).split("\n"))
    lines[:] = out


def _read_chapters(app, env, docnames):
    env.ad_lib_chapters = _chapters(pathlib.Path(app.srcdir))


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("env-before-read-docs", _read_chapters)
    app.connect("autodoc-process-docstring", _link_mentions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
