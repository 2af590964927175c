"""The assignment pipeline, proved end to end with nbgrader in a temporary copy.

For every assignment in exercises/source, in a copy of exercises/ (the
repository is never touched):

1. the student release is generated, and contains no solution and no hidden test;
2. the source notebook, submitted as a student's, is graded to full marks;
3. the untouched release executes to its end, fails only with
   NotImplementedError, and scores zero on every task;
4. a submission with one task wrong gets exactly the points of the others, and
   its feedback names the failing task;
5. a submission that hangs, or kills its kernel, scores zero on that task only,
   and the other submissions are still graded;
6. a class of 30 generated submissions of mixed quality is collected and
   graded in one command each; the time is printed.

The instructor's commands are the README's: generate_assignment, zip_collect,
autograde, export, generate_feedback, each run in the course folder.
"""

import csv
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import time

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_finite_differences"
TIMEOUT = 20  # seconds per cell while grading here (the course's config says 60)
CLASS_SIZE = 30

pytestmark = pytest.mark.slow

# Wrong but plausible answers, one per task: the solution cell's grade_id, the points of
# the task's test cell, and the code a student might hand in.
WRONG = {
    "task1_forward_gradient": ("task1_tests", 3, '''
def forward_gradient(f, x, h=1e-7):
    fx = f(x)
    flat = x.reshape(-1)
    grad = torch.empty_like(flat)
    for i in range(flat.numel()):
        moved = flat.clone()
        moved[i] += h
        grad[i] = (f(moved.reshape(x.shape)) - fx) / (2 * h)
    return grad.reshape(x.shape)
'''),
    "task2_central_gradient": ("task2_tests", 2, '''
def central_gradient(f, x, h=1e-5):
    flat = x.reshape(-1)
    grad = torch.empty_like(flat)
    for i in range(flat.numel()):
        plus = flat.clone()
        plus[i] += h
        grad[i] = (f(plus.reshape(x.shape)) - f(x)) / h
    return grad.reshape(x.shape)
'''),
    "task3_best_step": ("task3_tests", 3, '''
def median_relative_error(f, df, points, h):
    quotient = (f(points + h) - f(points)) / h
    return float(((quotient - df(points)).abs() / df(points).abs()).median())


def best_step(f, df, points, steps):
    errors = [median_relative_error(f, df, points, h) for h in steps]
    return steps[errors.index(min(errors))]


def predicted_best_step(eps, f_value, second_derivative):
    return math.sqrt(eps)
'''),
    "task4_complex_step": ("task4_tests", 2, '''
def complex_step_derivative(f, x, h=1e-20):
    h = max(h, 1e-8)
    return float((f(torch.tensor(x + h, dtype=torch.float64)) - f(torch.tensor(x, dtype=torch.float64))) / h)
'''),
    "task5_count": ("task5_tests", 2, '''
def count_evaluations(method, f, x):
    return x.numel() + 1
'''),
    "task6_verdicts": ("task6_tests", 2, '''
def complex_step_verdicts():
    return {"a": True, "b": True, "c": True, "d": True}
'''),
}
TOTAL = sum(points for _, points, _ in WRONG.values())

HANGS = '''
def count_evaluations(method, f, x):
    while True:  # an endless loop
        pass
'''
KILLS_KERNEL = '''
def complex_step_derivative(f, x, h=1e-20):
    import os
    os._exit(1)  # the kernel dies
'''
KILLS_KERNEL_TWICE = {
    "task4_complex_step": KILLS_KERNEL,
    "task6_verdicts": '''
def complex_step_verdicts():
    import os
    os._exit(1)
''',
}
DELEGATES = '''
def forward_gradient(f, x, h=1e-7):
    from ad_lib.finite_diff import forward_difference
    return forward_difference(f, x, h)
'''


def nbgrader(course: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "nbgrader", *args]
    # nbgrader runs tools installed beside it (alembic): put this Python's scripts first on PATH
    env = {**os.environ, "PATH": os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run(command, cwd=course, env=env, capture_output=True, text=True, timeout=1800)
    log = result.stdout + result.stderr
    assert "Exception while loading config" not in log, log[-4000:]
    if check:
        assert result.returncode == 0, log[-4000:]
    return result


def solution_cells(notebook) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")}


def make_submission(source, release, choices: dict):
    """A notebook where each task is 'right' (source), 'stub' (release), 'wrong', or custom code."""
    notebook = nbformat.from_dict(json.loads(json.dumps(release)))
    right, stubs = solution_cells(source), solution_cells(release)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in stubs:
            continue
        choice = choices.get(grade_id, "right")
        if choice == "right":
            cell.source = re.sub(r"\s*### (BEGIN|END) SOLUTION", "", right[grade_id].source)
        elif choice == "wrong":
            cell.source = WRONG[grade_id][2].strip()
        elif choice != "stub":
            cell.source = choice.strip()
    return notebook


def expected_score(choices: dict) -> int:
    return sum(points for grade_id, (_, points, _) in WRONG.items() if choices.get(grade_id, "right") == "right")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A copy of the course folder with the release generated, a class submitted and graded."""
    course = tmp_path_factory.mktemp("course") / "exercises"
    shutil.copytree(ROOT / "exercises", course, ignore=shutil.ignore_patterns(
        "release", "submitted", "autograded", "feedback", "downloaded", "gradebook.db", "__pycache__"))
    timings = {}

    start = time.perf_counter()
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    timings["release"] = time.perf_counter() - start

    source = nbformat.read(course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    release = nbformat.read(course / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)

    # The class: the proofs' special cases, then random mixes of right, wrong and stub.
    students = {
        "full": {},
        "untouched": {grade_id: "stub" for grade_id in WRONG},
        "hangs": {"task5_count": HANGS},
        "kills": {"task4_complex_step": KILLS_KERNEL},
        "kills-twice": KILLS_KERNEL_TWICE,
        "delegates": {"task1_forward_gradient": DELEGATES},
    }
    for grade_id in WRONG:
        students[f"wrong-{grade_id.split('_')[0]}"] = {grade_id: "wrong"}
    rng = random.Random(2026)
    while len(students) < CLASS_SIZE:
        students[f"s{len(students):02d}"] = {g: rng.choice(["right", "right", "wrong", "stub"]) for g in WRONG}

    # Students hand in files named STUDENT__NOTEBOOK.ipynb, as from a learning-management system.
    archive = course / "downloaded" / ASSIGNMENT / "archive"
    archive.mkdir(parents=True)
    for student, choices in students.items():
        nbformat.write(make_submission(source, release, choices), archive / f"{student}__{ASSIGNMENT}.ipynb")

    start = time.perf_counter()
    nbgrader(course, "zip_collect", ASSIGNMENT, "--force")
    timings["collect"] = time.perf_counter() - start
    start = time.perf_counter()
    grading = nbgrader(course, "autograde", ASSIGNMENT, "--force", f"--Execute.timeout={TIMEOUT}", check=False)
    timings["autograde"] = time.perf_counter() - start
    start = time.perf_counter()
    nbgrader(course, "generate_feedback", ASSIGNMENT, "--force")
    timings["feedback"] = time.perf_counter() - start
    nbgrader(course, "export", "--to", str(course / "grades.csv"))

    with open(course / "grades.csv") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    print(f"\nassignment {ASSIGNMENT}, {len(students)} submissions: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return {"path": course, "source": source, "release": release, "students": students,
            "scores": scores, "grading": grading, "timings": timings}


def autograded(course, student):
    return nbformat.read(course["path"] / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)


def test_1_the_release_has_no_solution_and_no_hidden_test(course):
    text = (course["path"] / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    secret_lines = set()
    for cell in course["source"].cells:
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
            for block in re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), cell.source, flags=re.S):
                secret_lines |= {line.strip() for line in block.splitlines() if len(line.strip()) > 12}
    assert len(secret_lines) > 30  # the scan has something to look for
    release_lines = {line.strip() for cell in course["release"].cells for line in cell.source.splitlines()}
    leaked = secret_lines & release_lines
    assert not leaked, f"solution or hidden-test lines in the release: {sorted(leaked)[:5]}"
    stubs = [c for c in course["release"].cells if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
    assert len(stubs) == len(WRONG)


def test_2_the_source_as_a_submission_scores_full_marks(course):
    assert course["scores"]["full"] == TOTAL == 14


def test_3_the_untouched_release_runs_to_the_end_and_scores_zero(course):
    assert course["scores"]["untouched"] == 0
    notebook = autograded(course, "untouched")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors and {o.ename for o in errors} == {"NotImplementedError"}
    graded = [c for c in code if c.metadata["nbgrader"].get("grade")]
    failed = {c.metadata["nbgrader"]["grade_id"] for c in graded if any(o.output_type == "error" for o in c.outputs)}
    assert failed == {test_id for test_id, _, _ in WRONG.values()}


@pytest.mark.parametrize("grade_id", list(WRONG))
def test_4_one_task_wrong_costs_exactly_its_points_and_the_feedback_names_it(course, grade_id):
    student = f"wrong-{grade_id.split('_')[0]}"
    test_id, points, _ = WRONG[grade_id]
    assert course["scores"][student] == TOTAL - points
    feedback = (course["path"] / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    task = grade_id.split("_")[0].replace("task", "Task ")
    assert task in feedback and test_id in feedback
    assert re.search(rf"{re.escape(test_id)}.*?Score:\s*0(\.0)?\s*/\s*{points}", feedback, flags=re.S), "the failing test shows 0 points"


def test_5_a_hang_or_a_dead_kernel_costs_only_that_task(course):
    assert course["scores"]["hangs"] == TOTAL - 2  # task 5 interrupted after the timeout
    assert course["scores"]["kills"] == TOTAL - 2  # task 4 killed its kernel; the rest was graded
    hang = {c.metadata["nbgrader"]["grade_id"]: c for c in autograded(course, "hangs").cells if "nbgrader" in c.metadata}
    assert any("CellTimeoutError" in json.dumps(o) or "KeyboardInterrupt" in json.dumps(o) for o in hang["task5_tests"].outputs)
    killed = {c.metadata["nbgrader"]["grade_id"]: c for c in autograded(course, "kills").cells if "nbgrader" in c.metadata}
    assert any(o.get("ename") == "DeadKernelError" for o in killed["task4_tests"].outputs)
    assert course["scores"]["kills-twice"] == TOTAL - 2 - 2  # two crashes, two tasks lost, the rest graded
    # Delegating task 1 to ad_lib is caught by a hidden test.
    assert course["scores"]["delegates"] == TOTAL - 3
    assert course["grading"].returncode == 0, "grading the class went through"


def test_6_a_class_of_30_is_graded_in_one_command(course):
    assert len(course["students"]) == CLASS_SIZE and set(course["scores"]) == set(course["students"])
    mismatches = {}
    for student, choices in course["students"].items():
        if student in ("hangs", "kills", "kills-twice", "delegates"):
            continue
        if course["scores"][student] != expected_score(choices):
            mismatches[student] = (course["scores"][student], expected_score(choices), choices)
    assert not mismatches, mismatches
