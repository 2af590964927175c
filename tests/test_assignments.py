"""Every assignment but the first, proved with nbgrader in a temporary copy (a small class each).

1. the release contains no solution and no hidden test, and the feedback no hidden test;
2. the source, submitted as a student's, scores full marks on every autograded task, and
   its written explanations wait for the instructor, who grades them by hand (then the
   export counts them);
3. the untouched release runs to its end, fails only with NotImplementedError, scores
   zero, and its blank explanations score zero without waiting for the instructor;
4. one wrong task costs exactly its points, and the feedback names it;
6. the class is graded in one command with the expected scores.

The first assignment, with the whole pipeline (hangs, dead kernels, a class of
30), is in test_assignment_pipeline.py. See assignment_harness.py.
"""

import csv
import html
import re

import pytest
from assignment_harness import (CLASS_SIZE, PIPELINE, SOURCES, autograded, expected_score, grade_a_class,
                                manual_cells, nbgrader)
from nbgrader.api import Gradebook

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[a for a in SOURCES if a != PIPELINE])
def course(request, tmp_path_factory):
    return grade_a_class(request.param, tmp_path_factory)


def test_1_the_release_has_no_solution_and_no_hidden_test(course):
    a = course["assignment"]
    hidden_lines = set()
    text = (course["path"] / "release" / a / f"{a}.ipynb").read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    secret_lines = set()
    for cell in course["source"].cells:
        for begin, end in (("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")):
            for block in re.findall(re.escape(begin) + r"(.*?)" + re.escape(end), cell.source, flags=re.S):
                lines = {line.strip() for line in block.splitlines() if len(line.strip()) > 12}
                secret_lines |= lines
                if "HIDDEN" in begin:
                    hidden_lines |= lines
    # the model answers of the written explanations (markdown cells graded by hand) are replaced whole
    explanations = manual_cells(course["source"])
    assert explanations, "every assignment asks for at least one explanation graded by hand"
    released = {c.metadata["nbgrader"]["grade_id"]: c for c in course["release"].cells if "nbgrader" in c.metadata}
    for grade_id, cell in explanations.items():
        assert released[grade_id].source.strip() == "YOUR ANSWER HERE", grade_id
        secret_lines |= {line.strip() for line in cell.source.splitlines() if len(line.strip()) > 12}
    assert len(secret_lines) > 10  # the scan has something to look for
    release_lines = {line.strip() for cell in course["release"].cells for line in cell.source.splitlines()}
    leaked = secret_lines & release_lines
    assert not leaked, f"solution or hidden-test lines in the release: {sorted(leaked)[:5]}"
    stubs = [c for c in course["release"].cells if c.cell_type == "code" and "raise NotImplementedError()" in c.source]
    assert len(stubs) == len(course["wrong"])

    # The feedback shows each student's notebook: the hidden tests are removed from it again.
    # (A hidden line that is also written outside the hidden tests, such as `for _ in range(steps):`
    # in a solution, may show.)
    hidden = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", flags=re.S)
    hidden_lines -= {line.strip() for cell in course["source"].cells for line in hidden.sub("", cell.source).splitlines()}
    assert len(hidden_lines) > 5
    feedback = sorted((course["path"] / "feedback").glob(f"*/{a}/{a}.html"))
    assert {f.parts[-3] for f in feedback} == set(course["students"])
    for path in feedback:
        page = path.read_text()
        for marker in ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
            assert marker not in page, path
        # the code of the cells (highlighted inputs) is there, and no hidden line anywhere (tracebacks included)
        code = "\n".join(html.unescape(re.sub(r"<[^>]+>", "", block))
                         for block in re.findall(r'<div class="highlight[^"]*"><pre>(.*?)</pre>', page, flags=re.S))
        assert "raise NotImplementedError" in code or path.parts[-3] != "untouched"  # the scan sees the code
        text = html.unescape(re.sub(r"<[^>]+>", "", page))
        leaked = hidden_lines & {line.strip() for line in text.splitlines()}
        assert not leaked, f"hidden-test lines in the feedback {path}: {sorted(leaked)[:5]}"


def test_2_the_source_as_a_submission_scores_full_marks(course):
    assert course["scores"]["full"] == course["total"]  # every point the autograder gives
    # the explanations wait for the instructor; once graded (as formgrader does), the export counts them
    a, explanations = course["assignment"], manual_cells(course["source"])
    with Gradebook(f"sqlite:///{course['path'] / 'gradebook.db'}") as gradebook:
        for grade_id, cell in explanations.items():
            grade = gradebook.find_grade(grade_id, a, a, "full")
            assert grade.needs_manual_grade and grade.auto_score is None, grade_id
            assert grade.max_score == cell.metadata["nbgrader"]["points"], grade_id
            grade.manual_score, grade.needs_manual_grade = grade.max_score, False
        gradebook.db.commit()
    nbgrader(course["path"], "export", "--to", "graded-by-hand.csv")
    with open(course["path"] / "graded-by-hand.csv") as f:
        row = next(row for row in csv.DictReader(f) if row["student_id"] == "full" and row["assignment"] == a)
    by_hand = sum(c.metadata["nbgrader"]["points"] for c in explanations.values())
    assert float(row["score"]) == float(row["max_score"]) == course["total"] + by_hand


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
    # an explanation left as released scores zero at once, with nothing left to grade by hand
    a = course["assignment"]
    with Gradebook(f"sqlite:///{course['path'] / 'gradebook.db'}") as gradebook:
        for grade_id in manual_cells(course["source"]):
            grade = gradebook.find_grade(grade_id, a, a, "untouched")
            assert grade.auto_score == 0 and not grade.needs_manual_grade, grade_id


def test_4_one_task_wrong_costs_exactly_its_points_and_the_feedback_names_it(course):
    a = course["assignment"]
    for grade_id, (test_id, points, _) in course["wrong"].items():
        student = f"wrong-{grade_id.split('_')[0]}"
        assert course["scores"][student] == course["total"] - points, student
        feedback = (course["path"] / "feedback" / student / a / f"{a}.html").read_text()
        task = grade_id.split("_")[0].replace("task", "Task ")
        assert task in feedback and test_id in feedback
        # the feedback's table of contents: each test cell's own score
        scores = {g: (float(got), float(out_of)) for g, got, out_of in re.findall(
            r'<li><a href="#([^"]+)">Test cell</a> \(Score: ([\d.]+) / ([\d.]+)\)</li>', feedback)}
        tests = {t: p for t, p, _ in course["wrong"].values()}
        assert set(scores) == set(tests), student
        assert scores[test_id] == (0.0, float(points)), student
        assert all(scores[t] == (float(p), float(p)) for t, p in tests.items() if t != test_id), (student, scores)
        # and the graded notebook: only that test cell failed
        graded = [c for c in autograded(course, student).cells
                  if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")]
        failed = {c.metadata["nbgrader"]["grade_id"] for c in graded if any(o.output_type == "error" for o in c.outputs)}
        assert failed == {test_id}, student


def test_6_a_class_is_graded_in_one_command_with_the_expected_scores(course, record_property):
    record_property("assignment timings", course["summary"])  # shown at the end of the run (conftest.py)
    assert set(course["scores"]) == set(course["students"])
    if course["assignment"] == PIPELINE:
        assert len(course["students"]) == CLASS_SIZE
    special = {"hangs", "hangs-hard", "kills", "kills-twice", "delegates"}
    mismatches = {
        student: (course["scores"][student], expected_score(choices, course["wrong"]))
        for student, choices in course["students"].items()
        if student not in special and course["scores"][student] != expected_score(choices, course["wrong"])
    }
    assert not mismatches, mismatches
