"""The course download: one archive with everything a reader needs to run the book offline.

At the start of each build (the preface's link needs the file, whatever the
builder) this extension writes
``_generated/ad-course.zip`` (ignored by git), which the preface links with
the ``{download}`` role, so that the built book carries it. The archive holds

- the chapter notebooks (``chapters/``, with their ``matplotlibrc``),
- the companion library (``ad_lib/``) with ``pyproject.toml``, ``requirements.txt``
  and the README, so that ``pip install -r requirements.txt`` installs it,
- the student release of every graded assignment (``assignments/NN_slug.ipynb``),
  made by nbgrader from ``exercises/source`` in a temporary copy of the course
  folder: solutions replaced by stubs (the hidden checks are in ``exercises/graders``).

Nothing of ``exercises/source`` (the model solutions) or ``exercises/graders`` goes
into the archive; the book's tests check that.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from sphinx.errors import ExtensionError

ARCHIVE = pathlib.Path("_generated") / "ad-course.zip"
TOP = "ad-course"  # the folder the archive unpacks into

# nbgrader's Python API, run in the course folder's copy: one process for all the releases
_RELEASE_ALL = """
import os, sys
from nbgrader.apps import NbGraderAPI
from traitlets.config.loader import PyFileConfigLoader
api = NbGraderAPI(config=PyFileConfigLoader("nbgrader_config.py", path=os.getcwd()).load_config())
for name in sys.argv[1:]:
    result = api.generate_assignment(name, force=True)
    if not result["success"]:
        sys.exit(f"nbgrader could not release {name}:\\n{result['log'][-3000:]}{result.get('error', '')[-3000:]}")
"""


def _student_releases(course: pathlib.Path, workdir: pathlib.Path) -> list:
    """The release notebooks of every assignment in ``course/source``, made in a copy of the course."""
    copy = workdir / "exercises"
    shutil.copytree(course, copy, ignore=shutil.ignore_patterns(
        "release", "submitted", "autograded", "feedback", "downloaded", "gradebook.db", "*.csv", "__pycache__"))
    names = sorted(p.name for p in (copy / "source").iterdir() if p.is_dir())
    if not names:
        return []
    # nbgrader runs tools installed beside it (alembic): this Python's scripts first on PATH
    env = {**os.environ, "PATH": os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run([sys.executable, "-c", _RELEASE_ALL, *names], cwd=copy, env=env,
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise ExtensionError(f"course download: the student releases failed\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return [copy / "release" / name / f"{name}.ipynb" for name in names]


def build_archive(root: pathlib.Path, destination: pathlib.Path) -> pathlib.Path:
    """Write the course download of the book at ``root`` to ``destination`` (a .zip file)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    files = {}  # path in the archive -> file on disk
    for name in ("README.md", "requirements.txt", "pyproject.toml"):
        files[name] = root / name
    for path in sorted((root / "ad_lib").rglob("*.py")):
        files[path.relative_to(root).as_posix()] = path
    for path in sorted((root / "chapters").glob("*.ipynb")) + sorted((root / "chapters").glob("matplotlibrc")):
        files[path.relative_to(root).as_posix()] = path
    with tempfile.TemporaryDirectory() as workdir:
        for release in _student_releases(root / "exercises", pathlib.Path(workdir)):
            files[f"assignments/{release.name}"] = release
        partial = destination.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, path in files.items():
                archive.write(path, f"{TOP}/{name}")
        partial.replace(destination)
    return destination


def _build(app):
    root = pathlib.Path(app.srcdir)
    if not (root / "ad_lib").is_dir():  # a book without the course (the tests' small books): nothing to download
        return
    build_archive(root, root / ARCHIVE)


def setup(app):
    app.connect("builder-inited", _build)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
