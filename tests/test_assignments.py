"""The assignment pipeline, proved end to end with nbgrader in a temporary copy.

For every assignment in exercises/source, in a copy of exercises/ (the
repository is never touched):

1. the student release is generated, and contains no solution and no hidden test;
2. the source notebook, submitted as a student's, is graded to full marks;
3. the untouched release executes to its end, fails only with
   NotImplementedError, and scores zero on every task;
4. a submission with one task wrong gets exactly the points of the others, and
   its feedback names the failing task.

For the first assignment, which proves the pipeline itself:

5. a submission that hangs, or kills its kernel (once or twice), scores zero on
   that task only, and the other submissions are still graded;
6. a class of 30 generated submissions of mixed quality is collected and
   graded in one command each; the time is printed.

The wrong-but-plausible answers of each assignment are in
tests/assignment_cases/aNN_slug.py. The instructor's commands are the
README's: generate_assignment, zip_collect, autograde, export,
generate_feedback, each run in the course folder.
"""

import csv
import importlib
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
SOURCES = sorted(p.name for p in (ROOT / "exercises" / "source").iterdir() if p.is_dir())
PIPELINE = "01_finite_differences"  # the assignment whose class of 30 proves the pipeline
TIMEOUT = 20  # seconds per cell while grading here (the course's config says 60)
CLASS_SIZE = 30

pytestmark = pytest.mark.slow


def cases(assignment):
    return importlib.import_module(f"assignment_cases.a{assignment}")


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


def make_submission(source, release, choices: dict, wrong: dict):
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
            cell.source = wrong[grade_id][2].strip()
        elif choice != "stub":
            cell.source = choice.strip()
    return notebook


def expected_score(choices: dict, wrong: dict) -> int:
    return sum(points for grade_id, (_, points, _) in wrong.items() if choices.get(grade_id, "right") == "right")


def class_for(assignment):
    """The students of an assignment: full, untouched, one wrong task each; for the pipeline, 30 in all."""
    case = cases(assignment)
    students = {"full": {}, "untouched": {grade_id: "stub" for grade_id in case.WRONG}}
    for grade_id in case.WRONG:
        students[f"wrong-{grade_id.split('_')[0]}"] = {grade_id: "wrong"}
    if assignment == PIPELINE:
        students.update({
            "hangs": {"task5_count": case.HANGS},
            "kills": {"task4_complex_step": case.KILLS_KERNEL},
            "kills-twice": case.KILLS_KERNEL_TWICE,
            "delegates": {"task1_forward_gradient": case.DELEGATES},
        })
        rng = random.Random(2026)
        while len(students) < CLASS_SIZE:
            students[f"s{len(students):02d}"] = {g: rng.choice(["right", "right", "wrong", "stub"]) for g in case.WRONG}
    return students


@pytest.fixture(scope="module", params=SOURCES)
def course(request, tmp_path_factory):
    """A copy of the course folder with one assignment released, its class submitted and graded."""
    assignment = request.param
    case = cases(assignment)
    course = tmp_path_factory.mktemp(f"course-{assignment}") / "exercises"
    shutil.copytree(ROOT / "exercises", course, ignore=shutil.ignore_patterns(
        "release", "submitted", "autograded", "feedback", "downloaded", "gradebook.db", "__pycache__"))
    timings = {}

    start = time.perf_counter()
    nbgrader(course, "generate_assignment", assignment, "--force")
    timings["release"] = time.perf_counter() - start
    source = nbformat.read(course / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    release = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)

    # Students hand in files named STUDENT__NOTEBOOK.ipynb, as from a learning-management system.
    students = class_for(assignment)
    archive = course / "downloaded" / assignment / "archive"
    archive.mkdir(parents=True)
    for student, choices in students.items():
        nbformat.write(make_submission(source, release, choices, case.WRONG), archive / f"{student}__{assignment}.ipynb")

    start = time.perf_counter()
    nbgrader(course, "zip_collect", assignment, "--force")
    timings["collect"] = time.perf_counter() - start
    start = time.perf_counter()
    grading = nbgrader(course, "autograde", assignment, "--force", f"--Execute.timeout={TIMEOUT}", check=False)
    timings["autograde"] = time.perf_counter() - start
    start = time.perf_counter()
    nbgrader(course, "generate_feedback", assignment, "--force")
    timings["feedback"] = time.perf_counter() - start
    nbgrader(course, "export", "--to", str(course / "grades.csv"))

    with open(course / "grades.csv") as f:
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    print(f"\nassignment {assignment}, {len(students)} submissions: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    total = sum(points for _, points, _ in case.WRONG.values())
    return {"assignment": assignment, "path": course, "source": source, "release": release, "students": students,
            "scores": scores, "grading": grading, "timings": timings, "wrong": case.WRONG, "total": total}


def autograded(course, student):
    a = course["assignment"]
    return nbformat.read(course["path"] / "autograded" / student / a / f"{a}.ipynb", as_version=4)


def test_1_the_release_has_no_solution_and_no_hidden_test(course):
    a = course["assignment"]
    text = (course["path"] / "release" / a / f"{a}.ipynb").read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    secret_lines = set()
    for cell in course["source"].cells:
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
            for block in re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), cell.source, flags=re.S):
                secret_lines |= {line.strip() for line in block.splitlines() if len(line.strip()) > 12}
    assert len(secret_lines) > 10  # the scan has something to look for
    release_lines = {line.strip() for cell in course["release"].cells for line in cell.source.splitlines()}
    leaked = secret_lines & release_lines
    assert not leaked, f"solution or hidden-test lines in the release: {sorted(leaked)[:5]}"
    stubs = [c for c in course["release"].cells if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
    assert len(stubs) == len(course["wrong"])


def test_2_the_source_as_a_submission_scores_full_marks(course):
    assert course["scores"]["full"] == course["total"]


def test_3_the_untouched_release_runs_to_the_end_and_scores_zero(course):
    assert course["scores"]["untouched"] == 0
    notebook = autograded(course, "untouched")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors and {o.ename for o in errors} == {"NotImplementedError"}
    graded = [c for c in code if c.metadata["nbgrader"].get("grade")]
    failed = {c.metadata["nbgrader"]["grade_id"] for c in graded if any(o.output_type == "error" for o in c.outputs)}
    assert failed == {test_id for test_id, _, _ in course["wrong"].values()}


def test_4_one_task_wrong_costs_exactly_its_points_and_the_feedback_names_it(course):
    a = course["assignment"]
    for grade_id, (test_id, points, _) in course["wrong"].items():
        student = f"wrong-{grade_id.split('_')[0]}"
        assert course["scores"][student] == course["total"] - points, student
        feedback = (course["path"] / "feedback" / student / a / f"{a}.html").read_text()
        task = grade_id.split("_")[0].replace("task", "Task ")
        assert task in feedback and test_id in feedback
        assert re.search(rf"{re.escape(test_id)}.*?Score:\s*0(\.0)?\s*/\s*{points}", feedback, flags=re.S), student


def test_5_a_hang_or_a_dead_kernel_costs_only_that_task(course):
    if course["assignment"] != PIPELINE:
        pytest.skip("proved once, on the pipeline's assignment")
    total = course["total"]
    assert course["scores"]["hangs"] == total - 2  # task 5 interrupted after the timeout
    assert course["scores"]["kills"] == total - 2  # task 4 killed its kernel; the rest was graded
    assert course["scores"]["kills-twice"] == total - 2 - 2  # two crashes, two tasks lost, the rest graded
    hang = {c.metadata["nbgrader"]["grade_id"]: c for c in autograded(course, "hangs").cells if "nbgrader" in c.metadata}
    assert any("CellTimeoutError" in json.dumps(o) or "KeyboardInterrupt" in json.dumps(o) for o in hang["task5_tests"].outputs)
    killed = {c.metadata["nbgrader"]["grade_id"]: c for c in autograded(course, "kills").cells if "nbgrader" in c.metadata}
    assert any(o.get("ename") == "DeadKernelError" for o in killed["task4_tests"].outputs)
    assert course["scores"]["delegates"] == total - 3  # delegating task 1 to ad_lib is caught by a hidden test
    assert course["grading"].returncode == 0, "grading the class went through"


def test_6_a_class_is_graded_in_one_command_with_the_expected_scores(course):
    assert set(course["scores"]) == set(course["students"])
    if course["assignment"] == PIPELINE:
        assert len(course["students"]) == CLASS_SIZE
    special = {"hangs", "kills", "kills-twice", "delegates"}
    mismatches = {
        student: (course["scores"][student], expected_score(choices, course["wrong"]))
        for student, choices in course["students"].items()
        if student not in special and course["scores"][student] != expected_score(choices, course["wrong"])
    }
    assert not mismatches, mismatches
