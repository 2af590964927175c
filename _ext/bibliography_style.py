"""The bibliography's labels in the form the text cites: author and year.

The chapters cite with sphinxcontrib-bibtex's author-year style ("Peyré,
2020"); with pybtex's plain style the bibliography page listed the same works
as [1]-[14], so that a reader could not match a citation to its entry by eye.
This registers a pybtex style, ``author_year``, whose labels are the citation's
own text: one author's last name, two joined by "and", three or more as the
first "et al.", then the year.
"""

import codecs

import latexcodec  # noqa: F401  (registers the "ulatex" codec; a dependency of pybtex)
from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            # "Brug{\\`e}re" -> "Brugère"; "and others" in the .bib file -> "et al."
            names = [codecs.decode(" ".join(p.last_names), "ulatex").replace("{", "").replace("}", "") for p in people]
            if names and names[-1] == "others":
                names = names[:1] + ["", ""]
            if not names:
                who = entry.fields.get("title", entry.key)
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            yield f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(PlainStyle):
    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
