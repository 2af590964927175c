"""Small fixes to the HTML pages of the book, applied while Sphinx writes them.

- The repository's address, set once in ``_config.yml`` (``repository: url:``),
  is also the substitution ``{{ repository }}`` of the pages' Markdown (a link
  to it), so that the text never spells it a second time.
- Each inline script is included once. With Sphinx 7, the scripts that
  sphinx-thebe and sphinx-togglebutton add after the builder has started are
  included twice in every page; the second ``const THEBE_JS_URL = ...`` is a
  SyntaxError in the browser's console.
"""


def _key(script):
    # an inline script has no file: Sphinx records it as None or as ''
    return (getattr(script, "filename", None) or None, tuple(sorted((getattr(script, "attributes", None) or {}).items())))


def _include_each_script_once(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _repository_substitution(app, config):
    url = (config.html_theme_options or {}).get("repository_url")
    if url:
        config.myst_substitutions = {**(config.myst_substitutions or {}), "repository": f"[repository]({url})"}


def setup(app):
    app.connect("config-inited", _repository_substitution)
    app.connect("html-page-context", _include_each_script_once, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
