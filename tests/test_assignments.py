"""Every assignment but the first, proved with nbgrader in a temporary copy (a small class each).

1. the release contains no solution and no hidden test;
2. the source, submitted as a student's, scores full marks;
3. the untouched release runs to its end, fails only with NotImplementedError, scores zero;
4. one wrong task costs exactly its points, and the feedback names it;
6. the class is graded in one command with the expected scores.

The first assignment, with the whole pipeline (hangs, dead kernels, a class of
30), is in test_assignment_pipeline.py. See assignment_harness.py.
"""

import re

import pytest
from assignment_harness import CLASS_SIZE, PIPELINE, SOURCES, autograded, expected_score, grade_a_class

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[a for a in SOURCES if a != PIPELINE])
def course(request, tmp_path_factory):
    return grade_a_class(request.param, tmp_path_factory)


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
