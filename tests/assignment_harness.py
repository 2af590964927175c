"""The machinery shared by the assignment tests: release, a class of submissions, grading.

tests/test_assignment_pipeline.py proves the whole cycle on the first
assignment with a class of 30; tests/test_assignments.py checks every other
assignment with a small class. Two files, so that pytest-xdist grades them on
two workers at once.
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


def grade_a_class(assignment, tmp_path_factory):
    """A copy of the course folder with one assignment released, its class submitted and graded."""
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


