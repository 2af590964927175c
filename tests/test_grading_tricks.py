"""A class where some students try to get marks without the work, or to change other students' marks.

Each trick of issue 12's table is handed in on assignment 3 (the one with a grader outside the
kernel, exercises/graders/03_forward_mode.py), beside honest students, and the class is graded
with the README's commands. Asserted:

- every trick scores exactly what the untouched release scores, on every task (zero);
- the honest students' scores are what they are in a class without tricksters;
- nothing outside the graded output changed: the course's files (sources, graders, the other
  submissions, the configuration) hash the same before and after, no file appeared that a trick
  wrote, the gradebook holds no score that the grader did not write, and a detached process a
  trick started did not outlive the grading;
- no feedback contains a line of the grader, of the solutions or of the hidden tests.

Runs only where the sandbox can be made (bubblewrap); CI installs it (AD_REQUIRE_SANDBOX=1).
"""

import hashlib
import html
import re
import shutil
import sqlite3
import time

import nbformat
import pytest
from assignment_harness import (ROOT, cases, gradebook_cells, instructor, make_submission, new_course, sandboxed,
                                solution_cells)

pytestmark = pytest.mark.slow

A = "03_forward_mode"
FIND = '''
import glob, os
def _find(*names):
    found = []
    for depth in range(1, 6):
        for name in names:
            found += glob.glob("/" + "*/" * depth + name) + glob.glob(os.path.join(os.getcwd(), "../" * depth, name))
    return sorted(set(found))
'''

# Full marks for oneself, zero for a classmate, and every stored test replaced by `pass` with its
# checksum recomputed, so that nbgrader would restore the blanked tests into later submissions
TAMPER_GRADEBOOK = '''
import sqlite3
def tamper_with(path):
    from nbformat.v4 import new_code_cell
    from nbgrader.utils import compute_checksum
    db = sqlite3.connect(path)
    db.execute("update grade set manual_score = (select max_score from grade_cells where grade_cells.id = grade.cell_id)")
    db.execute("update grade set manual_score = 0 where notebook_id in (select notebook.id from "
               "submitted_notebook as notebook join submitted_assignment as handed on "
               "notebook.assignment_id = handed.id where handed.student_id = 'honest')")
    for name, points in db.execute("select base_cell.name, grade_cells.max_score from grade_cells "
                                   "join base_cell on grade_cells.id = base_cell.id").fetchall():
        blank = new_code_cell("pass", metadata={"nbgrader": {"grade": True, "grade_id": name, "locked": True,
                                                             "points": points, "solution": False}})
        db.execute("update source_cell set source = 'pass', checksum = ? where name = ?", (compute_checksum(blank), name))
    db.commit()
'''

TRICKS = {
    # blanks every later cell, the grader's included
    "transformer": {"task1_dual": 'get_ipython().input_transformers_cleanup.append(lambda lines: ["pass\\n"])'},
    # reads the model solution from the source notebook and runs it
    "reads-source": {"task5_modes": FIND + '''
import json
def cheaper_mode():
    for path in _find("source/*/*.ipynb"):
        for cell in json.load(open(path))["cells"]:
            code = "".join(cell["source"])
            if "def cheaper_mode" in code:
                namespace = {}
                exec(code, namespace)
                return namespace["cheaper_mode"]()
    raise RuntimeError("no source found")
'''},
    # prints the sources of every assignment and the graders where the feedback would show them
    "prints-source": {"task4_confusion": FIND + '''
def perturbation_confusion():
    for path in _find("source/*/*.ipynb", "graders/*.py", "exercises/graders/*.py"):
        print(open(path).read())
    return {"correct": 0.0, "untagged": 0.0}
'''},
    # gives itself marks in the gradebook, rewrites the stored tests, zeroes a classmate, and
    # leaves a detached process to do it again after grading; copies the release over a classmate
    "gradebook": {"task3_gradient": FIND + TAMPER_GRADEBOOK + '''
import shutil, subprocess, sys
for path in _find("gradebook.db"):
    try:
        tamper_with(path)
    except Exception:
        pass
for path in _find("submitted/honest/*/*.ipynb"):
    for release in _find("release/*/*.ipynb"):
        shutil.copy(release, path)
subprocess.Popen([sys.executable, "-c", "import time, pathlib; time.sleep(3); "
                  "[pathlib.Path(p).write_text('pwned') for p in ('../../../pwned', '/tmp/pwned', '/work/pwned')]"],
                 start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
with open("../../../pwned-now", "w") as f:
    f.write("pwned")
'''},
    # the comparisons patched to pass; wrong answers
    "patches-checks": {"task5_modes": '''
import builtins, math, torch
torch.testing.assert_close = lambda *args, **kwargs: None
math.isclose = lambda *args, **kwargs: True
builtins.abs = lambda x: 0.0
def cheaper_mode():
    return {"a": "forward", "b": "reverse", "c": "reverse", "d": "forward", "e": "reverse"}
'''},
    # answers that compare equal to everything
    "always-equal": {"task4_confusion": '''
class Anything(float):
    def __sub__(self, other):
        return 0.0
    __rsub__ = __sub__
    def __eq__(self, other):
        return True
    __hash__ = float.__hash__
class Agrees(dict):
    def __eq__(self, other):
        return True
    __hash__ = None
def perturbation_confusion():
    return Agrees(correct=Anything(0.0), untagged=Anything(0.0))
''', "task5_modes": '''
class Agrees(dict):
    def __eq__(self, other):
        return True
    __hash__ = None
def cheaper_mode():
    return Agrees(a="reverse")
'''},
    # forbidden libraries under other names
    "renamed-jacfwd": {"task2_jacobian": '''
from ad_lib.forward import jacfwd as h
def jacobian_by_columns(f, x):
    return h(f)(x)
'''},
    "dummy-jvp-calls": {"task2_jacobian": '''
from torch.func import jacfwd as _jf
def jacobian_by_columns(f, x):
    for j in range(x.numel()):
        jvp(f, (x,), (torch.zeros_like(x),))
    return _jf(f)(x)
''', "task3_gradient": '''
def forward_mode_gradient(f, x):
    calls = 0
    def counted(v):
        nonlocal calls
        calls += 1
        return f(v)
    for i in range(x.numel()):
        jvp(counted, (x,), (torch.zeros_like(x),))
    leaf = x.detach().requires_grad_(True)
    gradient, = torch.autograd.grad(f(leaf), leaf)
    return gradient, calls
'''},
    "copied-module": {"task2_jacobian": '''
import importlib.util, os
import ad_lib
_spec = importlib.util.spec_from_file_location("my_forward", os.path.join(os.path.dirname(ad_lib.__file__), "forward.py"))
_copy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_copy)
def jacobian_by_columns(f, x):
    return _copy.jacfwd(f)(x)
''', "task1_dual": '''
from ad_lib.forward import jvp as _jvp
import torch as _torch
class Dual:
    def __init__(self, value, tangent=0.0):
        self.value, self.tangent = float(value), float(tangent)
    @staticmethod
    def lift(other):
        return other if isinstance(other, Dual) else Dual(other, 0.0)
    def _apply(self, other, op, swap=False):
        a, b = (Dual.lift(other), self) if swap else (self, Dual.lift(other))
        t = lambda v: _torch.tensor(v, dtype=_torch.float64)
        value, tangent = _jvp(op, (t(a.value), t(b.value)), (t(a.tangent), t(b.tangent)))
        return Dual(float(value), float(tangent))
    def __add__(self, o): return self._apply(o, lambda a, b: a + b)
    def __radd__(self, o): return self._apply(o, lambda a, b: a + b, True)
    def __sub__(self, o): return self._apply(o, lambda a, b: a - b)
    def __rsub__(self, o): return self._apply(o, lambda a, b: a - b, True)
    def __mul__(self, o): return self._apply(o, lambda a, b: a * b)
    def __rmul__(self, o): return self._apply(o, lambda a, b: a * b, True)
    def __truediv__(self, o): return self._apply(o, lambda a, b: a / b)
    def __rtruediv__(self, o): return self._apply(o, lambda a, b: a / b, True)
    def __neg__(self): return Dual(-self.value, -self.tangent)
def sin(d):
    return d._apply(0.0, lambda a, b: _torch.sin(a)) if isinstance(d, Dual) else math.sin(d)
def exp(d):
    return d._apply(0.0, lambda a, b: _torch.exp(a)) if isinstance(d, Dual) else math.exp(d)
def dual_derivative(f, x):
    out = f(Dual(x, 1.0))
    return out.tangent if isinstance(out, Dual) else 0.0
'''},
}

# What already held before the grader (nbgrader restores the test cells from the gradebook) and
# must keep holding: tampering with the test cells of an untouched release earns nothing.
def _edit_tests(cell):
    cell.source = 'print("all tests passed")\n1.0'


def _retype_tests(cell):
    cell.cell_type = "markdown"
    cell.pop("outputs", None)
    cell.pop("execution_count", None)


def _more_points(cell):
    cell.metadata.nbgrader["points"] = 100


TAMPER = {"edits-tests": _edit_tests, "deletes-tests": None, "retypes-tests": _retype_tests, "more-points": _more_points}

# A student whose answer holds the text of nbgrader's hidden-test markers (stock feedback crashed on it)
MARKERS = {"task5_modes": "# ### BEGIN HIDDEN TESTS\n# ### END HIDDEN TESTS\nraise NotImplementedError()"}


def tampered(notebook, change):
    """The notebook with each test cell changed by `change` (removed where it is None)."""
    kept = []
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade") and cell.cell_type == "code":
            if change is None:
                continue
            change(cell)
        kept.append(cell)
    notebook.cells = kept
    return notebook


# An honest answer that calls jvp under another name: the instrumented jvp must reach it too
ALIASED_JVP = '''
from ad_lib.forward import jvp as push_forward


def jacobian_by_columns(f, x):
    columns = []
    for j in range(x.numel()):
        e = torch.zeros_like(x)
        e[j] = 1.0
        columns.append(push_forward(f, (x,), (e,))[1])
    return torch.stack(columns, dim=1)
'''

HONEST = {"honest": {}, "honest-alias": {"task2_jacobian": ALIASED_JVP}, "honest-partial": {"task1_dual": "wrong", "task3_gradient": "wrong"}, "untouched": {"*": "stub"}}


def digest(course):
    """A hash of every file of the course folder that grading must not change."""
    changing = ("autograded", "feedback", "gradebook.db", "__pycache__")
    files = {}
    for path in sorted(course.rglob("*")):
        relative = path.relative_to(course)
        if path.is_file() and not any(part in changing for part in relative.parts):
            files[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def stored_cells(course):
    """The gradebook's copy of the release's cells (nbgrader restores locked cells and tests from it)."""
    with sqlite3.connect(course / "gradebook.db") as db:
        return sorted(db.execute("select name, source, checksum from source_cell").fetchall())


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    if not sandboxed():
        pytest.skip("the grading sandbox cannot be made here (install bubblewrap); CI requires it")
    course = new_course(tmp_path_factory, "course-tricks", pipeline=False)
    instructor(course, "release", A)
    case = cases(A)
    source = nbformat.read(course / "source" / A / f"{A}.ipynb", as_version=4)
    release = nbformat.read(course / "release" / A / f"{A}.ipynb", as_version=4)
    students = {**HONEST, **{name: {"*": "stub", **choices} for name, choices in TRICKS.items()},
                **{name: {"*": "stub"} for name in TAMPER}, "markers": {"*": "stub", **MARKERS}}
    for student, choices in students.items():
        folder = course / "submitted" / student / A
        folder.mkdir(parents=True)
        notebook = make_submission(source, release, choices, case.WRONG)
        if student in TAMPER:
            notebook = tampered(notebook, TAMPER[student])
        nbformat.write(notebook, folder / f"{A}.ipynb")
    broken = course / "submitted" / "broken" / A  # a file that is not a notebook: it alone is not graded
    broken.mkdir(parents=True)
    (broken / f"{A}.ipynb").write_text('{"cells": [')
    before, stored_before = digest(course), stored_cells(course)
    grading = instructor(course, "autograde", A, check=False)
    time.sleep(5)  # what a detached process would do after grading, it would have done by now
    instructor(course, "feedback", A)
    return {"course": course, "students": students, "before": before, "after": digest(course), "grading": grading,
            "stored": (stored_before, stored_cells(course)),
            "cells": gradebook_cells(course, A, students), "source": source, "case": case}


def scores(graded, student):
    return {g: grade["score"] for g, grade in graded["cells"][student].items() if g.endswith("_tests")}


def test_every_trick_scores_what_the_untouched_release_scores(graded, record_property):
    # the broken submission is named, the others graded, and autograde's exit status says that one failed
    log = graded["grading"].stdout + graded["grading"].stderr
    assert graded["grading"].returncode == 1, log[-3000:]
    assert set(re.findall(r"error processing assignment '[^']+' for student '([^']+)'", log)) == {"broken"}
    assert set(graded["cells"]) == set(graded["students"])
    blank = scores(graded, "untouched")
    assert set(blank.values()) == {0}
    tricks = list(TRICKS) + list(TAMPER) + ["markers"]
    got = {trick: scores(graded, trick) for trick in tricks}
    maxima = {g: grade["max_score"] for g, grade in graded["cells"]["honest"].items() if g.endswith("_tests")}
    for student in ["untouched"] + tricks + [s for s in HONEST if s != "untouched"]:
        cells = scores(graded, student)
        record_property("grading tricks", f"{student:>16}: " + "  ".join(
            f"{g.removesuffix('_tests')} {cells[g]:g}/{maxima[g]:g}" for g in sorted(maxima))
            + f"  | total {sum(cells.values()):g}/{sum(maxima.values()):g}")
    assert got == {trick: blank for trick in tricks}


def warnings_by_student(log: str) -> dict:
    """autograde's warnings that a submission's cells changed, for each student."""
    found, student = {}, None
    for line in log.splitlines():
        named = re.search(r"Creating/updating student with ID '([^']+)'", line)
        if named:
            student = named.group(1)
        elif "has changed!" in line or "does not exist in the database" in line:
            found.setdefault(student, []).append(line)
    return found


def test_autograde_warns_of_tampering_and_of_nothing_else(graded):
    """Only a submission whose locked cells were changed makes autograde warn (it restores them)."""
    log = graded["grading"].stdout + graded["grading"].stderr
    warned = warnings_by_student(log)
    assert set(warned) == {"edits-tests", "more-points", "retypes-tests"}, {s: w[:2] for s, w in warned.items()}
    assert all("'checksum' for cell task" in line for line in warned["edits-tests"])
    assert any("'points' for cell task" in line for line in warned["more-points"])
    assert any("'cell_type' for cell task" in line for line in warned["retypes-tests"])


def test_no_honest_score_changes(graded):
    case = graded["case"]
    full = {entry[0]: entry[1] for entry in case.WRONG.values()}
    assert scores(graded, "honest") == full
    assert scores(graded, "honest-alias") == full
    partial = dict(full, task1_tests=case.WRONG["task1_dual"][3], task3_tests=case.WRONG["task3_gradient"][3])
    assert scores(graded, "honest-partial") == pytest.approx(partial)
    # no score the grader did not give: no manual score anywhere
    assert all(grade["score"] <= grade["max_score"] for cells in graded["cells"].values() for grade in cells.values())


def test_nothing_outside_the_sandbox_changed(graded):
    course = graded["course"]
    assert graded["before"] == graded["after"]
    before, after = graded["stored"]
    assert before == after and any(name.endswith("_tests") for name, _, _ in before)
    for name in ("pwned", "pwned-now"):
        assert not list(course.parent.rglob(name)), name
    assert not (ROOT / "pwned").exists()


def test_the_gradebook_trick_works_where_it_can_reach_the_gradebook(graded, tmp_path):
    """A control: run outside the sandbox on a copy of the gradebook, the trick does what it meant to."""
    copy = tmp_path / "gradebook.db"
    shutil.copy(graded["course"] / "gradebook.db", copy)
    namespace = {}
    exec(TAMPER_GRADEBOOK, namespace)
    namespace["tamper_with"](str(copy))
    with sqlite3.connect(copy) as db:
        manual = dict(db.execute("select submitted_assignment.student_id, sum(grade.manual_score) from grade "
                                 "join submitted_notebook on grade.notebook_id = submitted_notebook.id "
                                 "join submitted_assignment on submitted_notebook.assignment_id = submitted_assignment.id "
                                 "group by submitted_assignment.student_id").fetchall())
        stored = {source for source, in db.execute("select source from source_cell where name like '%_tests'")}
    total = sum(scores(graded, "honest").values())
    assert manual["gradebook"] >= total > 0 and manual["honest"] == 0
    assert stored == {"pass"}


def test_no_feedback_shows_the_grader_or_the_solutions(graded):
    course = graded["course"]
    secret = {line.strip() for line in (course / "graders" / f"{A}.py").read_text().splitlines() if len(line.strip()) > 15}
    for cell in solution_cells(graded["source"]).values():
        for block in re.findall(r"### BEGIN SOLUTION(.*?)### END SOLUTION", cell.source, flags=re.S):
            secret |= {line.strip() for line in block.splitlines() if len(line.strip()) > 15}
    # lines that a trick itself wrote, or the release shows, are not secrets
    shown = {line.strip() for choices in TRICKS.values() for code in choices.values() for line in code.splitlines()}
    release = nbformat.read(course / "release" / A / f"{A}.ipynb", as_version=4)
    shown |= {line.strip() for cell in release.cells for line in cell.source.splitlines()}
    secret -= shown
    assert len(secret) > 30
    grader_lines = {line.strip() for line in (course / "graders" / f"{A}.py").read_text().splitlines()} & secret
    for student in graded["students"]:
        page = (course / "feedback" / student / A / f"{A}.html").read_text()
        text = html.unescape(re.sub(r"<[^>]+>", "", page))
        # an honest student's feedback shows the solution they wrote; nobody's shows the grader
        leaked = (grader_lines if student.startswith("honest") else secret) & {line.strip() for line in text.splitlines()}
        assert not leaked, (student, sorted(leaked)[:3])
        assert str(ROOT) not in text and str(course) not in text, student


def _grading():
    """exercises/grading.py, imported as the graders import it (its folder put on the path once)."""
    import sys

    folder = str(ROOT / "exercises")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import grading

    return grading


def test_an_answer_that_reaches_for_the_instruments_loses_its_own_task():
    """The scan of grading.tampering: a name through which code can blind the grader's instruments costs
    the task of the cell that writes it (every task, for a cell added outside any task); comments and
    honest code (torch.stack, nn.Module.modules) cost nothing."""
    grading = _grading()

    def cell(source, grade_id=None, locked=False):
        made = nbformat.v4.new_code_cell(source)
        if grade_id:
            made.metadata["nbgrader"] = {"grade_id": grade_id, "solution": not locked, "locked": locked}
        return made

    tests = ["task1_tests", "task2_tests"]
    honest = [cell("# torch._C would blind the grader: not used\ny = torch.stack([x, x]).sum()", "task1_a"),
              cell("layers = list(model.modules())", "task2_b"),
              cell("engine = Variable._execution_engine", "task2_tests", locked=True)]  # the instructor's
    assert grading.tampering(nbformat.v4.new_notebook(cells=honest), tests) == {}
    swap = cell("own = torch._C._ImperativeEngine()", "task2_b")
    assert grading.tampering(nbformat.v4.new_notebook(cells=honest + [swap]), tests) == {"task2_tests": "torch._C"}
    added = cell("for box in h.__closure__: box.cell_contents[0] = 1")
    assert grading.tampering(nbformat.v4.new_notebook(cells=honest + [added]), tests) == {
        "task1_tests": "__closure__", "task2_tests": "__closure__"}
    # work done in another thread or process is out of the meters' sight
    threaded = cell("from concurrent.futures import ThreadPoolExecutor\nThreadPoolExecutor(1).submit(f).result()", "task1_a")
    assert grading.tampering(nbformat.v4.new_notebook(cells=[threaded]), tests) == {"task1_tests": "ThreadPoolExecutor"}
    # the frames (and through them the probes' locals) reached another way than by sys._getframe
    framed = cell("import inspect\nseen = getattr(inspect.stack()[1].frame, 'f_' + 'locals')", "task1_a")
    assert grading.tampering(nbformat.v4.new_notebook(cells=[framed]), tests) == {"task1_tests": "import inspect"}
    worded = cell("print('inspect the plan: its rows sum to a')", "task1_a")  # the word, not the module
    assert grading.tampering(nbformat.v4.new_notebook(cells=[worded]), tests) == {}
    raised = cell("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    up = e.__traceback__", "task2_b")
    assert grading.tampering(nbformat.v4.new_notebook(cells=[raised]), tests) == {"task2_tests": "__traceback__"}
    assert grading.tampering(nbformat.v4.new_notebook(cells=[cell("os.system('python -c 1')", "task2_b")]), tests) == {
        "task2_tests": "os.system"}


# Reaching the instruments without writing their names (review of assignment 14): each answer cell's
# code, and the name the scan reports. The first is the review's: torch._C by a name made at run time,
# the operation meter popped off torch's dispatch stack, uncounted work, the meter pushed back.
DYNAMIC = {
    'core = getattr(torch, "_" + "C")\nmode = core._pop_torch_dispatch_stack(None)\nx = torch.ones(1000) * 2\n'
    "core._push_on_torch_dispatch_stack(mode)": "getattr",
    "core = getattr(torch, name)": "getattr",
    "get = getattr": "getattr",  # handed on, to be called with any name
    "seen = getattr(inspect, f'stack')": "getattr",
    'core = vars(torch)["_" + "C"]': "vars(",
    'core = torch.__dict__["_" + "C"]': "__dict__",
    "import __main__ as top": "import __main__",
    'setattr(torch, "logsumexp", f)': "setattr",
    'delattr(torch.Tensor, "unsqueeze")': "delattr",
    'core = __import__("torch._" + "C")': "__import__",
    'core = importlib.import_module("torch." + "_C")': "importlib",
    "from importlib import import_module as im\ncore = im(name)": "importlib",
    'core = pkgutil.resolve_name("torch:_" + "C")': "pkgutil",
    'core = attrgetter("_" + "C")(torch)': "attrgetter",
    "core = torch.is_grad_enabled.__self__": "__self__",  # a builtin function's module: torch._C
    'core = eval("torch." + "_" + "C")': "eval(",
    "exec (code, {})": "exec (",
    "program = compile(text, '<answer>', 'exec')": "compile(",
    "run = eval\nrun(text)": "eval",
    "tools = [exec, print]": "exec",
    "core = builtins.eval(text)": "builtins",
    "get_ipython().run_cell(text)": "get_ipython",
    "state = pickle.loads(blob)": "pickle",
    # the probe's namespace (the notebook's globals hold it while a probe runs): its encoder replaced
    'space = __ad_namespace\nspace["__ad_encode"] = forged': "__ad_namespace",
    'space = globals()["__ad_" + "namespace"]': "globals(",
    # torch changed in place, for the grader's own code to do the work uncounted
    "torch.logsumexp = my_logsumexp": "torch.logsumexp =",
    "torch . logsumexp=my_logsumexp": "torch . logsumexp=",
    "torch.Tensor.unsqueeze = lambda self, d: self": "torch.Tensor.unsqueeze =",
    "torch.nn.functional.softmax += 0": "torch.nn.functional.softmax +=",
    "torch.exp: object = f": "torch.exp: object =",
    "for torch.exp in [f]:\n    pass": "for torch.",
    "x.__class__ = Other": "__class__ =",
    "import torch.utils._pytree as tree": "torch.utils._pytree",
    "from torch import _VF": "from torch import _VF",
    # sys.modules under another name (the probes' encoder and helpers find torch there)
    "from sys import modules\nmodules['torch'] = fake": "from sys import modules",
    "from sys import (argv,\n                 modules)": "from sys import (argv,\n                 modules",
    "import sys as s\ns.modules['torch'] = fake": "import sys as",
}

# ... and honest code that writes the same words: methods (model.eval(), re.compile, torch.compile),
# getattr with a plain name, torch's attributes read or compared, attributes of other objects assigned
NOT_DYNAMIC = [
    "%timeit f(x)", "%%timeit\nf(x)", 'if __name__ == "__main__":\n    main()', "torch._foreach_mul_(ps, 0.9)",
    "model.eval()", "net.train()\nloss = net.eval()", 'pattern = re.compile(r"\\d+")', "fast = torch.compile(f)",
    'n = getattr(x, "shape")', 'w = getattr(self.model, "weight", None)', 'g = getattr(f(a, b), "grad")',
    "assert x == torch.pi", "same = torch.float64 == x.dtype", "ok = torch.pi <= y and torch.e != y",
    "def f(x: torch.Tensor = None, dtype: torch.dtype = torch.float64):\n    return x",
    "x.grad = torch.zeros(3)", "ctx.saved = torch.ones(2)", "print('put the model in eval mode')",
    "score = evaluate(x) + my_eval(x)", "exec_time = 3", "y = torch.nn.functional.softmax(x, dim=0)",
    "kwargs = dict(dtype=torch.float64)", "z = torch.Tensor.__add__(a, b)", 'named = x.__class__.__name__ == "Tensor"',
    "tol = {torch.float32: 1e-5, torch.float64: 1e-12}[x.dtype]", "y = f(x,\n      torch.float64, eps=1)",
    "# getattr(torch, '_' + 'C') and torch.exp = f, in a comment\ny = torch.exp(x)",
    "from sys import argv\nmodules = 3", "import sys\nprint(sys.argv)",
]


@pytest.mark.parametrize("source", list(DYNAMIC))
def test_an_answer_that_names_the_instruments_at_run_time_loses_its_own_task(source):
    """grading.TAMPERING catches the dynamic ways to an attribute, a module or code (getattr with a name
    that is not a plain literal, vars, __import__, importlib, eval, exec, compile, ...), the probe's
    namespace, and assignments to torch's attributes: the cell's task scores nothing."""
    grading = _grading()

    made = nbformat.v4.new_code_cell(source)
    made.metadata["nbgrader"] = {"grade_id": "task2_b", "solution": True, "locked": False}
    assert grading.tampering(nbformat.v4.new_notebook(cells=[made]), ["task1_tests", "task2_tests"]) == {
        "task2_tests": DYNAMIC[source]}


@pytest.mark.parametrize("source", NOT_DYNAMIC)
def test_honest_code_with_the_same_words_costs_nothing(source):
    grading = _grading()

    made = nbformat.v4.new_code_cell(source)
    made.metadata["nbgrader"] = {"grade_id": "task1_a", "solution": True, "locked": False}
    assert grading.tampering(nbformat.v4.new_notebook(cells=[made]), ["task1_tests", "task2_tests"]) == {}


def _run_probe(notebook: str, probe, helpers=()):
    """Run a probe's cell as the kernel would, in a namespace where the notebook's code ran first; return the
    decoded result and the namespace."""
    import builtins
    import contextlib
    import io
    import json

    grading = _grading()

    namespace = {"__builtins__": builtins, "__name__": "__main__"}
    exec(compile(notebook, "<notebook>", "exec"), namespace)
    part = grading.Part(1, "a probe", probe, lambda result: None, helpers=helpers)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(grading.probe_code(part, {}, "n0nce"), "<probe>", "exec"), namespace)
    line = [row for row in printed.getvalue().splitlines() if row.startswith(grading.MARKER + "n0nce:")]
    assert len(line) == 1, printed.getvalue()
    return grading.decode_result(json.loads(line[0].split(":", 1)[1])), namespace


# A notebook that shadows the builtins the probes' code uses, and an answer that returns a lazy object dressed as
# torch's Tensor (its __module__ and __name__ say so; its metaclass makes it equal to every class) whose methods
# would do the work -- torch's automatic differentiation, say -- while the grader encodes the result, after its
# meters have stopped. The scan refuses the word metaclass, but not the rest: the dressed-up class without its
# metaclass and the shadowed builtins pass it (asserted below), so the probe's code must hold on its own.
LAZY = """
import torch
ran = []
class Equal(type):
    def __eq__(cls, other):
        return True
    __hash__ = type.__hash__
class Tensor(metaclass=Equal):
    __module__ = "torch"
    def is_complex(self):
        ran.append("is_complex")
        return False
    @property
    def layout(self):
        ran.append("layout")
        return torch.strided
    def detach(self):  # where the work would be done: the encoder calls it after the meters
        ran.append("detach")
        return self
    def tolist(self):
        ran.append("tolist")
        return [1.0, 2.0]
    def __iter__(self):
        ran.append("__iter__")
        return iter([1.0, 2.0])
    def __float__(self):
        ran.append("__float__")
        return 1.0
_type, _len = type, len
type = lambda value: list if _type(value) is Tensor else _type(value)
len = lambda value: 0
isinstance = lambda value, kind: True
def answer(x):
    return Tensor()
"""


def test_a_probe_sees_the_genuine_builtins_and_a_dressed_up_object_stays_unplain():
    """probe_code runs the grader's code with the genuine builtins (not the notebook's `type = ...`, `len =
    ...`), and its encoder compares classes by identity: an object of the student's that calls itself a
    Tensor, or whose metaclass makes it equal to int, comes back as an Unplain value without any of its
    methods having run, so that no work can hide in the encoding, after the meters."""
    grading = _grading()

    def probe():
        return [answer(1.0), len([1, 2, 3]), type(1.5) is float, isinstance(3, str)]

    def watched():
        return watching_autodiff(lambda: answer(1.0))

    plain = LAZY.replace("(metaclass=Equal)", "")
    scanned = {source: grading.tampering(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]),
                                         ["task1_tests"]) for source in (LAZY, plain)}
    assert scanned == {LAZY: {"task1_tests": "metaclass"}, plain: {}}
    # the encoder the grader had before called the plain Tensor's is_complex(), layout and detach(), after the meters
    for notebook in (LAZY, plain):
        result, namespace = _run_probe(notebook, probe)
        assert isinstance(result[0], grading.Unplain) and result[1:] == [3, True, False]
        assert namespace["ran"] == []                 # nothing of the dressed-up object ran in the encoder
        assert namespace["len"]([1]) == 0             # the notebook's own names are left as they were
        result, namespace = _run_probe(notebook, watched, helpers=(grading.watching_autodiff,))
        assert isinstance(result[0], grading.Unplain) and result[1:] == [False, False] and namespace["ran"] == []


def test_a_genuine_result_still_crosses_the_boundary_from_a_notebook_that_shadows_builtins():
    """The same notebook's honest results (a tensor, a float, nested containers) are encoded as before."""
    import torch

    def probe():
        x = torch.arange(3, dtype=torch.float64)
        return {"t": x * 2, "pair": (1, 2.5), "dtype": x.dtype, "nested": [[True, None, "s"]]}

    result, _ = _run_probe(LAZY, probe)
    torch.testing.assert_close(result["t"], torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64))
    assert result["pair"] == (1, 2.5) and result["dtype"] == "torch.float64" and result["nested"] == [[True, None, "s"]]
