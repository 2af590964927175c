"""The machinery shared by the assignment tests: release, a class of submissions, grading.

tests/test_assignment_pipeline.py proves the whole cycle on the first
assignment with a class of 30; tests/test_assignments.py checks every other
assignment with a small class. Two files, so that pytest-xdist grades them on
two workers at once. Release, collection, grading, export and feedback run the
README's instructor commands verbatim, from a temporary copy of the course.
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
import zipfile

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(p.name for p in (ROOT / "exercises" / "source").iterdir() if p.is_dir())
PIPELINE = "01_finite_differences"  # the assignment whose class of 30 proves the pipeline
TIMEOUT = 20  # seconds per cell while grading here (the course's config says 60)
CLASS_SIZE = 30

# An endless loop that swallows the interrupt: nbclient gives up on the cell (see exercises/grading.py).
HANGS_HARD = '''
def complex_step_verdicts():
    import time
    while True:
        try:
            time.sleep(0.01)
        except BaseException:
            pass
'''
ZIPPED = "zipped"  # the pipeline's student who hands in a zip file STUDENT__ASSIGNMENT.zip


def cases(assignment):
    return importlib.import_module(f"assignment_cases.a{assignment}")


def run(command: list, cwd: pathlib.Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command as an instructor would, in this environment (as if it were activated)."""
    # nbgrader runs tools installed beside it (alembic): put this Python's scripts first on PATH
    env = {**os.environ, "PATH": os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    log = result.stdout + result.stderr
    assert "Exception while loading config" not in log, log[-4000:]
    if check:
        assert result.returncode == 0, f"{command}\n{log[-4000:]}"
    return result


def nbgrader(course: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "nbgrader", *args], course, check)


# the steps of the cycle, as the README's table names them
STEPS = {"release": "make the student release of one assignment", "release all": "make the releases of all assignments",
         "collect": "collect the submissions", "autograde": "grade them", "export": "export the grades",
         "feedback": "write the feedback"}


def readme_commands() -> dict:
    """The instructor's commands, as the README's table gives them: {step: command}."""
    section = (ROOT / "README.md").read_text().split("## For instructors", 1)[1].split("\n## ", 1)[0]
    commands = dict(re.findall(r"^\| ([^|`]+?) \| `([^`]+)` \|$", section, flags=re.M))
    assert set(commands) == set(STEPS.values()), f"the README's instructor commands changed: {sorted(commands)}"
    return commands


def instructor(course: pathlib.Path, step: str, assignment: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the README's command for a step verbatim (for another assignment, renamed as the README says),
    from the root of the copy of the repository that holds the course folder, with this environment active."""
    command = readme_commands()[STEPS[step]].replace("01_finite_differences", assignment)
    return run(["bash", "-c", command], course.parent, check)


def solution_cells(notebook) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")}


def manual_cells(notebook) -> dict:
    """The written explanations: markdown answer cells that the instructor grades by hand."""
    return {c.metadata["nbgrader"]["grade_id"]: c for c in notebook.cells
            if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")}


def make_submission(source, release, choices: dict, wrong: dict):
    """A notebook where each answer cell is 'right' (source), 'stub' (release), 'wrong', or custom code.

    `choices` maps answer cells' grade_ids to a choice; the key "*" gives the choice
    of the cells it does not name (by default "right"), the written explanations included.
    """
    notebook = nbformat.from_dict(json.loads(json.dumps(release)))
    right, stubs = solution_cells(source), solution_cells(release)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in stubs:
            continue
        choice = choices.get(grade_id, choices.get("*", "right"))
        if choice == "right":
            cell.source = re.sub(r"\s*### (BEGIN|END) SOLUTION", "", right[grade_id].source)
        elif choice == "wrong":
            cell.source = wrong[grade_id][2].strip()
        elif choice != "stub":
            cell.source = choice.strip()
    return notebook


def expected_score(choices: dict, wrong: dict) -> int:
    return sum(points for grade_id, (_, points, _) in wrong.items() if choices.get(grade_id, choices.get("*", "right")) == "right")


def class_for(assignment):
    """The students of an assignment: full, untouched, one wrong task each; for the pipeline, 30 in all."""
    case = cases(assignment)
    students = {"full": {}, "untouched": {"*": "stub"}}
    for grade_id in case.WRONG:
        students[f"wrong-{grade_id.split('_')[0]}"] = {grade_id: "wrong"}
    for grade_id, code in getattr(case, "DELEGATING", {}).items():  # right, but with a forbidden library
        students[f"delegates-{grade_id.split('_')[0]}"] = {grade_id: code}
    if assignment == PIPELINE:
        students.update({
            "hangs": {"task5_count": case.HANGS},
            "hangs-hard": {"task6_verdicts": HANGS_HARD},
            ZIPPED: {"task2_central_gradient": "wrong"},
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
    # this course's cells time out after TIMEOUT seconds, to keep the hanging students short
    with open(course / "nbgrader_config.py", "a") as config:
        config.write(f"\nc.Execute.timeout = {TIMEOUT}  # set by tests/assignment_harness.py\n")
    timings = {}

    start = time.perf_counter()
    instructor(course, "release", assignment)
    timings["release"] = time.perf_counter() - start
    if assignment == PIPELINE:  # the release of every assignment, in one command
        instructor(course, "release all", assignment)
        assert sorted(p.name for p in (course / "release").iterdir()) == SOURCES
    source = nbformat.read(course / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    release = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)

    # Students hand in files named STUDENT__NOTEBOOK.ipynb, as from a learning-management system.
    students = class_for(assignment)
    archive = course / "downloaded" / assignment / "archive"
    archive.mkdir(parents=True)
    for student, choices in students.items():
        notebook = make_submission(source, release, choices, case.WRONG)
        if student == ZIPPED:  # a zip file STUDENT__ASSIGNMENT.zip holding ASSIGNMENT.ipynb
            with zipfile.ZipFile(archive / f"{student}__{assignment}.zip", "w") as z:
                z.writestr(f"{assignment}.ipynb", nbformat.writes(notebook))
        else:
            nbformat.write(notebook, archive / f"{student}__{assignment}.ipynb")

    # the README's commands, verbatim
    start = time.perf_counter()
    instructor(course, "collect", assignment)
    timings["collect"] = time.perf_counter() - start
    start = time.perf_counter()
    grading = instructor(course, "autograde", assignment, check=False)
    timings["autograde"] = time.perf_counter() - start
    start = time.perf_counter()
    instructor(course, "feedback", assignment)
    timings["feedback"] = time.perf_counter() - start
    instructor(course, "export", assignment)

    with open(course / "grades.csv") as f:
        # one row per student and assignment of the gradebook (the pipeline's course has released them all)
        scores = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f) if row["assignment"] == assignment}
    summary = (f"assignment {assignment}: release {timings['release']:.1f} s, collect {len(students)} submissions "
               f"{timings['collect']:.1f} s, autograde {len(students)} submissions {timings['autograde']:.1f} s, "
               f"feedback {timings['feedback']:.1f} s")
    print("\n" + summary)
    total = sum(points for _, points, _ in case.WRONG.values())
    return {"assignment": assignment, "path": course, "source": source, "release": release, "students": students,
            "scores": scores, "grading": grading, "timings": timings, "summary": summary, "wrong": case.WRONG, "total": total}


def autograded(course, student):
    a = course["assignment"]
    return nbformat.read(course["path"] / "autograded" / student / a / f"{a}.ipynb", as_version=4)


