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
# A cell that kills its kernel fails alone too: see grading.py.
sys.path.insert(0, HERE)
from grading import ResilientExecute  # noqa: E402

_preprocessors = []
for _preprocessor in Autograde.class_traits()["autograde_preprocessors"].default():
    _preprocessors.append(ResilientExecute if _preprocessor is Execute else _preprocessor)
c.Autograde.autograde_preprocessors = _preprocessors

# Submissions downloaded from a learning-management system, as files named
# STUDENTID__anything.ipynb in downloaded/ASSIGNMENT/archive/, are put in place
# by `nbgrader zip_collect ASSIGNMENT`.
c.ZipCollectApp.collector_plugin = "nbgrader.plugins.FileNameCollectorPlugin"
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[^/]+?)__(?P<file_id>[^/]+)$"  # matched against the full path
