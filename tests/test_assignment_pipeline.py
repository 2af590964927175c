"""The assignment pipeline, proved end to end on the first assignment with a class of 30.

1-4 as for every assignment (test_assignments.py), and
5. a submission that hangs (even ignoring the interrupt), or kills its kernel
   (once or twice), scores zero on that task only (each test cell's score, from
   the gradebook), and the other submissions are still graded; a right answer
   that delegates to a forbidden library is caught;
6. a class of 30 generated submissions of mixed quality is collected and
   graded in one command each, with the expected scores (one student hands in
   a zip file); the times are shown in pytest's terminal summary.

This course is configured as the course is (exercises/nbgrader_config.py), but
for a shorter timeout (assignment_harness.TIMEOUT), and releases only this
assignment: test_assignments.py runs the README's command that releases them all.
"""

import json

import pytest
from assignment_harness import PIPELINE, autograded, grade_a_class, wrong_score

pytestmark = pytest.mark.slow

from test_assignments import (  # noqa: E402,F401  (the same proofs 1-4 and 6, on the pipeline's assignment)
    cell_scores,
    task_points,
    test_1_the_release_has_no_solution_and_no_hidden_test,
    test_2_the_source_as_a_submission_scores_full_marks,
    test_3_the_untouched_release_runs_to_the_end_and_scores_zero,
    test_4_each_wrong_task_costs_exactly_its_points_and_the_feedback_names_it,
    test_6_a_class_is_graded_in_one_command_with_the_expected_scores,
)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    return grade_a_class(PIPELINE, tmp_path_factory)


def test_5_a_hang_or_a_dead_kernel_costs_only_that_task(course):
    total = course["total"]
    assert course["scores"]["hangs"] == total - 2  # task 5 interrupted after the timeout
    assert course["scores"]["kills"] == total - 2  # task 4 killed its kernel; the rest was graded
    assert course["scores"]["kills-twice"] == total - 2 - 2  # two crashes, two tasks lost, the rest graded
    hang = {c.metadata["nbgrader"]["grade_id"]: c for c in autograded(course, "hangs").cells if "nbgrader" in c.metadata}
    assert any("CellTimeoutError" in json.dumps(o) or "KeyboardInterrupt" in json.dumps(o) for o in hang["task5_tests"].outputs)
    assert course["scores"]["hangs-hard"] == total - 2  # task 6 ignored the interrupt: the kernel was restarted
    hard = {c.metadata["nbgrader"]["grade_id"]: c for c in autograded(course, "hangs-hard").cells if "nbgrader" in c.metadata}
    # (a test cell's error is reported in its text: the grader scores it, nothing is raised)
    assert any("CellTimeoutError" in o.get("text", "") for o in hard["task6_tests"].outputs)
    assert all(not any(o.output_type == "error" for o in c.outputs) for g, c in hard.items()
               if c.cell_type == "code" and c.metadata["nbgrader"].get("grade") and g != "task6_tests")
    killed = {c.metadata["nbgrader"]["grade_id"]: c for c in autograded(course, "kills").cells if "nbgrader" in c.metadata}
    assert any("DeadKernelError" in o.get("text", "") for o in killed["task4_tests"].outputs)
    # only the task that hung or killed the kernel scores zero, test cell by test cell
    tests = task_points(course)
    for student, lost in {"hangs": {"task5_tests"}, "hangs-hard": {"task6_tests"}, "kills": {"task4_tests"},
                          "kills-twice": {"task4_tests", "task6_tests"}}.items():
        assert cell_scores(course, student) == {t: (0 if t in lost else p) for t, p in tests.items()}, student
    # right answers that delegate tasks 1, 4 and 5 to ad_lib score zero there (graded in a Python without it)
    delegated = {course["wrong"][g][0] for g in course["students"]["delegates"]}
    assert delegated == {"task1_tests", "task4_tests", "task5_tests"}
    assert course["scores"]["delegates"] == total - sum(tests[t] for t in delegated)
    # handed in as a zip file (with task 2 wrong), collected and graded: task 2 scores the parts it gets right
    zipped = course["wrong"]["task2_central_gradient"]
    assert course["scores"]["zipped"] == pytest.approx(total - zipped[1] + wrong_score(zipped))
    assert course["grading"].returncode == 0, "grading the class went through"
