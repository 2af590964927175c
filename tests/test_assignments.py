"""Every assignment but the first, proved with nbgrader in a temporary copy of the course
(one course for them all, a small class each).

1. the release contains no solution and no hidden test, and the feedback no hidden test;
2. the source, submitted as a student's, scores full marks on every autograded task, and
   its written explanations wait for the instructor, who grades them by hand (then the
   export counts them);
3. the untouched release runs to its end, fails only with NotImplementedError, scores
   zero, and its blank explanations score zero without waiting for the instructor;
4. each wrong task costs exactly its points, and no point of another task, and the
   feedback names it: two submissions hold every wrong answer (the odd tasks wrong,
   the even tasks wrong, so that each wrong task sits between right ones), and each
   test cell's score is read from the gradebook;
6. the class is graded in one command with the expected scores, test cell by test
   cell (a right answer that calls a forbidden library scores zero on its task).

The first assignment, with the whole pipeline (hangs, dead kernels, a class of
30), is in test_assignment_pipeline.py. See assignment_harness.py.
"""

import ast
import html
import re

import pytest
from assignment_harness import (CLASS_SIZE, PIPELINE, SOURCES, autograded, expected_cells, expected_score,
                                grade_assignments, manual_cells, solution_cells, wrong_halves, wrong_score)

pytestmark = pytest.mark.slow

OTHERS = [a for a in SOURCES if a != PIPELINE]


@pytest.fixture(scope="module")
def graded(request, tmp_path_factory):
    """One course for every assignment whose tests were selected, released, graded and exported together."""
    selected = {item.callspec.params["course"] for item in request.session.items
                if item.path == request.path and "course" in getattr(getattr(item, "callspec", None), "params", {})}
    return grade_assignments([a for a in OTHERS if a in selected] or OTHERS, tmp_path_factory)


@pytest.fixture(scope="module", params=OTHERS)
def course(request, graded):
    return graded[request.param]


def task_points(course) -> dict:
    """The autograded test cells and their points: {test grade_id: points}."""
    return {entry[0]: entry[1] for entry in course["wrong"].values()}


def cell_scores(course, student) -> dict:
    """A student's score on each autograded test cell, from the gradebook."""
    return {test_id: course["cells"][student][test_id]["score"] for test_id in task_points(course)}


def toc_scores(feedback: str) -> dict:
    """The feedback's table of contents: each test cell's own score, {grade_id: (score, out of)}."""
    return {g: (round(float(got), 6), float(out_of)) for g, got, out_of in re.findall(
        r'<li><a href="#([^"]+)">Test cell</a> \(Score: ([\d.]+) / ([\d.]+)\)</li>', feedback)}


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
    # Every assignment has a grader (exercises/graders/NN_slug.py) that holds its hidden checks, and
    # none is in the notebook: the grader's lines must not reach the release or the feedback either.
    grader = course["path"] / "graders" / f"{a}.py"
    assert grader.exists(), f"assignment {a} has no grader module"
    assert not hidden_lines, "an assignment with a grader keeps no hidden test in its notebook"
    hidden_lines = {line.strip() for line in grader.read_text().splitlines() if len(line.strip()) > 12}
    assert not hidden_lines & release_lines - {line.strip() for c in course["source"].cells for line in c.source.splitlines()}
    assert not any(p.name == grader.name for p in (course["path"] / "release").rglob("*"))
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
    assert cell_scores(course, "full") == task_points(course)  # every point the autograder gives, task by task
    # the explanations waited for the instructor (as the autograder left them: explained); graded by hand
    # (as formgrader does) before the export, they count in it
    assert course["hand_graded"] == "full"
    explanations = manual_cells(course["source"])
    assert set(course["explained"]) == set(explanations)
    for grade_id, cell in explanations.items():
        needs_manual_grade, auto_score, max_score = course["explained"][grade_id]
        assert needs_manual_grade and auto_score is None, grade_id
        assert max_score == cell.metadata["nbgrader"]["points"], grade_id
        assert course["cells"]["full"][grade_id]["score"] == max_score, grade_id
    by_hand = sum(c.metadata["nbgrader"]["points"] for c in explanations.values())
    assert by_hand == course["by_hand"]
    row = course["rows"]["full"]
    assert float(row["score"]) == float(row["max_score"]) == course["total"] + by_hand


def test_3_the_untouched_release_runs_to_the_end_and_scores_zero(course):
    assert course["scores"]["untouched"] == 0
    assert set(cell_scores(course, "untouched").values()) == {0}
    notebook = autograded(course, "untouched")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every code cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    # scored by the grader: a test cell's visible checks that stopped are reported, not raised
    assert not errors
    for cell in code:
        if cell.metadata["nbgrader"].get("grade"):
            text = "".join(o.get("text", "") for o in cell.outputs)
            assert "Your visible checks stopped here" in text and "NotImplementedError" in text, cell.metadata
    # an explanation left as released scores zero at once, with nothing left to grade by hand
    for grade_id in manual_cells(course["source"]):
        grade = course["cells"]["untouched"][grade_id]
        assert grade["auto_score"] == 0 and not grade["needs_manual_grade"], grade_id


def top_level_names(code: str) -> tuple:
    """The names a cell's code binds in the notebook's namespace, and whether it also runs other statements there."""
    names, runs = set(), False
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        else:
            names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            runs = True  # a statement that runs could change what other tasks see
    return names, runs


def test_4_each_wrong_task_costs_exactly_its_points_and_the_feedback_names_it(course):
    a, wrong, tests = course["assignment"], course["wrong"], task_points(course)
    # A wrong answer (or a delegating one) only defines, as the right one does, its task's functions,
    # and runs nothing else at the notebook's top level.
    right = {g: re.sub(r"\s*### (BEGIN|END) SOLUTION", "", c.source) for g, c in solution_cells(course["source"]).items()}
    for grade_id, code in [(g, w[2]) for g, w in wrong.items()] + list(course["students"].get("delegates", {}).items()):
        names, runs = top_level_names(code)
        assert not runs and names <= top_level_names(right[grade_id])[0], (grade_id, names)

    halves, order = wrong_halves(wrong), list(wrong)
    assert sorted(g for half in halves.values() for g in half) == sorted(wrong)  # every task is wrong once
    # A task whose cells read what another task's answer defines would hide that dependency if both
    # were wrong in the same submission: every such pair must sit in different halves (where the
    # right task's score shows the wrong one's effect).
    task_of = lambda grade_id: grade_id.split("_")[0]  # noqa: E731
    imported = lambda code: {a.asname or a.name.split(".")[0] for n in ast.parse(code).body  # noqa: E731
                             if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    defines = {task_of(g): top_level_names(code)[0] - imported(code) for g, code in right.items() if g in wrong}
    reads = {}
    for cell in course["source"].cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if cell.cell_type == "code" and grade_id.startswith("task"):
            loaded = {n.id for n in ast.walk(ast.parse(re.sub(r"^\s*[%!].*$", "", cell.source, flags=re.M)))
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            reads.setdefault(task_of(grade_id), set()).update(loaded)
    half_of = {task_of(g): student for student, ids in halves.items() for g in ids}
    for task, names in defines.items():
        for other, loaded in reads.items():
            if other != task and names & loaded and other in half_of:
                assert half_of[other] != half_of[task], (task, other, sorted(names & loaded))
    for student, wrong_ids in halves.items():
        # each wrong answer sits between right ones
        for i, grade_id in enumerate(order):
            if grade_id in wrong_ids:
                assert not {order[j] for j in (i - 1, i + 1) if 0 <= j < len(order)} & set(wrong_ids), student
        failing = {wrong[g][0] for g in wrong_ids}
        earned = {wrong[g][0]: wrong_score(wrong[g]) for g in wrong_ids}  # the parts a wrong answer gets right
        expected = {t: (earned[t] if t in failing else p) for t, p in tests.items()}
        # each test cell: the wrong tasks lose the points of the parts they get wrong, the others
        # score full marks, in the gradebook ...
        assert cell_scores(course, student) == pytest.approx(expected), student
        assert course["scores"][student] == pytest.approx(sum(expected.values())), student
        # ... and in the feedback's table of contents, which names each wrong task
        feedback = (course["path"] / "feedback" / student / a / f"{a}.html").read_text()
        assert toc_scores(feedback) == {t: (round(got, 6), float(tests[t])) for t, got in expected.items()}, student
        for grade_id in wrong_ids:
            task = grade_id.split("_")[0].replace("task", "Task ")
            assert task in feedback and wrong[grade_id][0] in feedback, (student, grade_id)
    # so each task loses points in exactly one of the two, and nowhere else
    assert all(sum(cell_scores(course, s)[t] < tests[t] for s in halves) == 1 for t in tests)


def test_6_a_class_is_graded_in_one_command_with_the_expected_scores(course, record_property):
    record_property("assignment timings", course["summary"])  # shown at the end of the run (conftest.py)
    assert course["grading"].returncode == 0, "grading the class went through"
    assert set(course["scores"]) == set(course["students"])  # every student has a row in the export
    assert set(course["absent"].values()) <= {0.0}  # and a student who handed nothing in scores zero
    if course["assignment"] == PIPELINE:
        assert len(course["students"]) == CLASS_SIZE
    special = {"hangs", "hangs-hard", "kills", "kills-twice"}  # the pipeline's: see its test 5
    special |= {f"gaming-{i}" for i in range(len(course["gaming"]))}  # checked below
    mismatches = {}
    for student, choices in course["students"].items():
        if student in special:
            continue
        expected = expected_score(choices, course["wrong"]) + (course["by_hand"] if student == course["hand_graded"] else 0)
        if (course["scores"][student] != pytest.approx(expected)
                or cell_scores(course, student) != pytest.approx(expected_cells(choices, course["wrong"]))):
            mismatches[student] = (course["scores"][student], expected, cell_scores(course, student))
    assert not mismatches, mismatches
    # an answer that tries to score without the work (the case file's GAMING) earns what the case says,
    # and the tasks answered right beside it their full points
    full = {entry[0]: entry[1] for entry in course["wrong"].values()}
    for i, submission in enumerate(course["gaming"]):
        expected = {**full, **{test_id: score for test_id, _, score in submission.values()}}
        assert cell_scores(course, f"gaming-{i}") == pytest.approx(expected), (f"gaming-{i}", sorted(submission))
    # a right answer that delegates to a forbidden library is caught by a hidden test: it costs its task only
    if "delegates" in course["students"]:
        delegated = {course["wrong"][g][0] for g in course["students"]["delegates"]}
        assert delegated and all(cell_scores(course, "delegates")[t] == 0 for t in delegated)
