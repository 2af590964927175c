"""The machinery shared by the assignment tests: release, a class of submissions, grading.

tests/test_assignment_pipeline.py proves the whole cycle on the first
assignment with a class of 30; tests/test_assignments.py checks every other
assignment with a small class, all of them in one course. Two files, so that
pytest-xdist grades them on two workers at once. Release, collection, grading,
export and feedback run the README's instructor commands verbatim, from a
temporary copy of the course.

Where the time goes (pytest's summary at the end gives each step's time), and
how it is kept down:
- each nbgrader command is a new Python process that imports nbgrader (2-5 s
  here, 2 s of it jsonschema's IRI grammar), whatever it then does: the
  other assignments share one course, released by one command (the README's
  "release all") and exported once; the grading by hand comes before that
  export instead of needing one of its own;
- autograde starts a kernel per submission, which imports torch (3-5 s with
  its start and shutdown): a small class is four submissions (full marks, the
  untouched release, the odd tasks wrong, the even tasks wrong; a fifth where
  the test cases have right answers that delegate to a forbidden library),
  and each task's score is read per test cell from the gradebook, instead of
  one submission per wrong task;
- the release does not run the notebook: it costs about what any command does.
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
from nbgrader.api import Gradebook

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(p.name for p in (ROOT / "exercises" / "source").iterdir() if p.is_dir())
PIPELINE = "01_finite_differences"  # the assignment whose class of 30 proves the pipeline
TIMEOUT = 10  # seconds per cell while grading the pipeline (the course's config says 60): the hanging students wait it out
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
         "collect": "collect the submissions", "autograde": "grade them", "hand grading": "grade the explanations by hand",
         "export": "export the grades", "feedback": "write the feedback"}  # in the table's order


def readme_commands() -> dict:
    """The instructor's commands, as the README's table gives them: {step: command}."""
    section = (ROOT / "README.md").read_text().split("## For instructors", 1)[1].split("\n## ", 1)[0]
    commands = dict(re.findall(r"^\| ([^|`]+?) \| `([^`]+)` \|$", section, flags=re.M))
    assert list(commands) == list(STEPS.values()), f"the README's instructor commands changed: {list(commands)}"
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


def wrong_halves(wrong: dict) -> dict:
    """The two submissions that hold every wrong answer: tasks 1, 3, 5, ... wrong, and tasks 2, 4, 6, ... wrong.

    Each wrong answer sits between right ones (its neighbours are in the other half), so the scores
    of the test cells show that it costs its own task's points and no point of the tasks around it.
    """
    grade_ids = list(wrong)  # in the order of the notebook
    return {"wrong-odd": grade_ids[0::2], "wrong-even": grade_ids[1::2]}


def class_for(assignment):
    """The students of an assignment: full, untouched, the odd and the even tasks wrong, one who delegates;
    for the pipeline, 30 in all."""
    case = cases(assignment)
    students = {"full": {}, "untouched": {"*": "stub"}}
    for student, grade_ids in wrong_halves(case.WRONG).items():
        students[student] = {grade_id: "wrong" for grade_id in grade_ids}
    if getattr(case, "DELEGATING", None):  # right answers, with a forbidden library: all in one submission
        students["delegates"] = dict(case.DELEGATING)
    for i, submission in enumerate(gaming_submissions(case)):  # answers that try to score without the work
        students[f"gaming-{i}"] = {grade_id: code for grade_id, (_, code, _) in submission.items()}
    if assignment == PIPELINE:
        students.update({
            "hangs": {"task5_count": case.HANGS},
            "hangs-hard": {"task6_verdicts": HANGS_HARD},
            ZIPPED: {"task2_central_gradient": "wrong"},
            "kills": {"task4_complex_step": case.KILLS_KERNEL},
            "kills-twice": case.KILLS_KERNEL_TWICE,
        })
        rng = random.Random(2026)
        while len(students) < CLASS_SIZE:
            students[f"s{len(students):02d}"] = {g: rng.choice(["right", "right", "wrong", "stub"]) for g in case.WRONG}
    return students


def gaming_submissions(case) -> list:
    """A case's GAMING answers, {name: (solution grade_id, test grade_id, code, score)}, packed into as few
    submissions as hold each solution cell once: [{solution grade_id: (test grade_id, code, score)}, ...]."""
    submissions = []
    for grade_id, test_id, code, score in getattr(case, "GAMING", {}).values():
        free = next((s for s in submissions if grade_id not in s), None)
        if free is None:
            submissions.append(free := {})
        free[grade_id] = (test_id, code, score)
    return submissions


def wrong_score(entry) -> float:
    """What a wrong answer still earns on its test cell: the points of the parts it gets right
    (a fourth element of its WRONG entry; 0 where the task is not graded in parts)."""
    return entry[3] if len(entry) > 3 else 0


def expected_cells(choices: dict, wrong: dict) -> dict:
    """Each test cell's score for a submission made of these choices: its points if the answer is right,
    what the wrong answer earns if it is wrong, 0 if it is left as released."""
    scores = {}
    for grade_id, entry in wrong.items():
        choice = choices.get(grade_id, choices.get("*", "right"))
        scores[entry[0]] = entry[1] if choice == "right" else wrong_score(entry) if choice == "wrong" else 0
    return scores


def expected_score(choices: dict, wrong: dict) -> int:
    return sum(expected_cells(choices, wrong).values())


HAND_GRADED = "full"  # the student whose explanations the instructor grades by hand (as formgrader does)


def new_course(tmp_path_factory, name: str, pipeline: bool) -> pathlib.Path:
    """A copy of the course folder, without releases, submissions or gradebook.

    Both are configured as the course is; the pipeline's course, where students hang, has a
    shorter timeout (TIMEOUT), to keep the hanging students short.
    """
    course = tmp_path_factory.mktemp(name) / "exercises"
    shutil.copytree(ROOT / "exercises", course, ignore=shutil.ignore_patterns(
        "release", "submitted", "autograded", "feedback", "downloaded", "gradebook.db", "__pycache__"))
    with open(course / "nbgrader_config.py", "a") as config:
        if pipeline:
            config.write(f"\nc.Execute.timeout = {TIMEOUT}  # set by tests/assignment_harness.py\n")
        if not sandboxed():
            config.write('\nc.GradedExecute.sandbox = "off"  # no bubblewrap here: set by tests/assignment_harness.py\n')
    return course


def sandboxed() -> bool:
    """Whether the assignments are graded in the sandbox here: always where it can be made, and
    in CI (AD_REQUIRE_SANDBOX=1) a missing sandbox is a failure, not a reason to grade without."""
    sys.path.insert(0, str(ROOT / "exercises"))
    try:
        import grading
    finally:
        sys.path.remove(str(ROOT / "exercises"))
    problem = grading.sandbox_problem()
    if problem and os.environ.get("AD_REQUIRE_SANDBOX") == "1":
        raise AssertionError(f"AD_REQUIRE_SANDBOX=1, but the grading sandbox cannot be made: {problem}")
    return problem is None


def timed(timings: dict, step: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    timings[step] = timings.get(step, 0.0) + time.perf_counter() - start
    return result


def hand_grade(course: pathlib.Path, assignment: str, student: str, grade_ids) -> dict:
    """Give full marks to a student's explanations, as the instructor does in formgrader.

    Returns each explanation's grade as the autograder left it: (needs_manual_grade, auto_score, max_score).
    """
    before = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for grade_id in grade_ids:
            grade = gradebook.find_grade(grade_id, assignment, assignment, student)
            before[grade_id] = (grade.needs_manual_grade, grade.auto_score, grade.max_score)
            grade.manual_score, grade.needs_manual_grade = grade.max_score, False
        gradebook.db.commit()
    return before


def gradebook_cells(course: pathlib.Path, assignment: str, students) -> dict:
    """Each student's grades, per graded cell, as the gradebook holds them: {student: {grade_id: grade}}."""
    cells = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in students:
            notebook = gradebook.find_submission_notebook(assignment, assignment, student)
            cells[student] = {grade.name: {"score": grade.score, "max_score": grade.max_score, "auto_score": grade.auto_score,
                                           "needs_manual_grade": grade.needs_manual_grade} for grade in notebook.grades}
    return cells


def submit_and_grade(course: pathlib.Path, assignment: str) -> dict:
    """Hand in an assignment's class (released in `course`), collect it, grade it with the README's commands,
    grade HAND_GRADED's explanations by hand, and write the feedback. The export comes after (see finish)."""
    case = cases(assignment)
    timings = {}
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
    timed(timings, "collect", instructor, course, "collect", assignment)
    grading = timed(timings, "autograde", instructor, course, "autograde", assignment, check=False)
    # the explanations wait for the instructor; grade one student's by hand before the export, which counts them
    explained = timed(timings, "hand grading", hand_grade, course, assignment, HAND_GRADED, manual_cells(source))
    timed(timings, "feedback", instructor, course, "feedback", assignment)
    total = sum(entry[1] for entry in case.WRONG.values())
    return {"assignment": assignment, "path": course, "source": source, "release": release, "students": students,
            "gaming": gaming_submissions(case), "grading": grading, "timings": timings, "wrong": case.WRONG, "total": total,
            "by_hand": sum(c.metadata["nbgrader"]["points"] for c in manual_cells(source).values()),
            "explained": explained, "hand_graded": HAND_GRADED}


def finish(course: pathlib.Path, graded: list, shared: dict) -> None:
    """Export the grades of every assignment graded in `course` with one README command, and read them back.

    `shared` holds the times of the course's steps that serve every assignment (its releases):
    each assignment's summary counts its share of them.
    """
    shared = dict(shared)
    timed(shared, "export", instructor, course, "export", graded[0]["assignment"])
    with open(course / "grades.csv") as f:
        rows = list(csv.DictReader(f))  # one row per student and assignment of the gradebook
    for result in graded:
        a, timings = result["assignment"], result["timings"]
        # the gradebook lists every student it knows under every assignment: a zero row for
        # a student of another class, who handed in nothing for this one (kept in "absent")
        rows_of_a = {row["student_id"]: row for row in rows if row["assignment"] == a}
        result["rows"] = {student: row for student, row in rows_of_a.items() if student in result["students"]}
        result["absent"] = {student: float(row["score"]) for student, row in rows_of_a.items() if student not in result["students"]}
        result["scores"] = {student: float(row["score"]) for student, row in result["rows"].items()}
        result["cells"] = timed(timings, "reading the gradebook", gradebook_cells, course, a, result["students"])
        for step, seconds in shared.items():
            timings[step] = seconds / len(graded)
        n = len(result["students"])
        steps = ", ".join(f"{step} {seconds:.1f} s" + (f" ({seconds / n:.1f} s each)" if step == "autograde" else "")
                          + (f" (1/{len(graded)} of {shared[step]:.1f} s)" if step in shared and len(graded) > 1 else "")
                          for step, seconds in timings.items())
        result["summary"] = f"assignment {a}, {n} submissions: {sum(timings.values()):.1f} s in all: {steps}"
        print("\n" + result["summary"])


def grade_a_class(assignment, tmp_path_factory):
    """The pipeline: a copy of the course folder with one assignment released, its class submitted,
    graded, given feedback and exported."""
    course = new_course(tmp_path_factory, f"course-{assignment}", pipeline=True)
    shared = {}
    timed(shared, "release", instructor, course, "release", assignment)
    result = submit_and_grade(course, assignment)
    finish(course, [result], shared)
    return result


def grade_assignments(assignments, tmp_path_factory) -> dict:
    """One course for the given assignments: all released with one README command, each class submitted,
    graded and given feedback, then the grades of all exported with one command. {assignment: result}"""
    course = new_course(tmp_path_factory, "course-assignments", pipeline=False)
    shared = {}
    timed(shared, "release all", instructor, course, "release all", assignments[0])
    assert sorted(p.name for p in (course / "release").iterdir()) == SOURCES
    graded = [submit_and_grade(course, a) for a in assignments]
    finish(course, graded, shared)
    return {result["assignment"]: result for result in graded}


def autograded(course, student):
    a = course["assignment"]
    return nbformat.read(course["path"] / "autograded" / student / a / f"{a}.ipynb", as_version=4)
