"""nbgrader configuration of the course's assignments.

Run every nbgrader command from this folder (``cd exercises``); see the
README's "For instructors" section and exercises/README.md.
"""

import os
import sys

from nbgrader.converters.autograde import Autograde
from nbgrader.preprocessors import Execute

c = get_config()  # noqa: F821 (provided by traitlets when it reads this file)

HERE = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.course_id = "automatic-differentiation"
c.CourseDirectory.root = HERE
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(HERE, "gradebook.db")

# What the student release puts in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grading: each cell gets at most this many seconds; a cell that runs longer
# (an endless loop) is interrupted and fails, and grading goes on.
c.Execute.timeout = 60
# A graded notebook's kernel is stopped at once when its last cell has run, not asked
# to shut down (which waits about a second and a half per submission for nothing).
c.Execute.shutdown_kernel = "immediate"
# Grading (see grading.py): each submission runs in a sandbox (bubblewrap), a cell that
# kills or hangs its kernel fails alone, and each test cell is scored, part by part, by the
# grader of graders/ASSIGNMENT.py, outside the student's kernel.
sys.path.insert(0, HERE)
from grading import GradedExecute  # noqa: E402

_preprocessors = []
for _preprocessor in Autograde.class_traits()["autograde_preprocessors"].default():
    _preprocessors.append(GradedExecute if _preprocessor is Execute else _preprocessor)
c.Autograde.autograde_preprocessors = _preprocessors

# Feedback: nbgrader's own. No notebook holds a hidden test (they are in graders/), and each
# test cell's output is what GradedExecute wrote: the visible checks and the parts' verdicts.

# Submissions downloaded from a learning-management system, as files named
# STUDENTID__NOTEBOOK.ipynb in downloaded/ASSIGNMENT/archive/, or zip files
# STUDENTID__anything.zip holding NOTEBOOK.ipynb, are put in place by
# `nbgrader zip_collect ASSIGNMENT`. nbgrader extracts each zip file into a
# folder named after it, so the student id is taken from the file's name or,
# failing that, from the name of the folder just above it.
c.ZipCollectApp.collector_plugin = "nbgrader.plugins.FileNameCollectorPlugin"
c.FileNameCollectorPlugin.named_regexp = (  # matched against the full path
    r".*/(?P<student_id>[^/]+?)__(?:[^/]*/)?(?P<file_id>[^/]+)$"
)
