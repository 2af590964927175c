"""One addition to nbgrader's autograder: a cell that kills or hangs its kernel fails alone.

nbgrader already interrupts a cell that runs past ``Execute.timeout`` (an
endless loop) and goes on with the next cell, so that only the task of that
cell scores zero. But when a cell kills the kernel itself (``os._exit``,
``os.kill``, a crash in compiled code, the kernel running out of memory),
nbgrader gives up on the whole submission: every task scores zero and the
autograde command exits with an error. The same happens when a cell runs
past the timeout and ignores the interrupt (an endless loop that catches
``KeyboardInterrupt``): nbclient then raises ``CellTimeoutError``.

``ResilientExecute`` replaces nbgrader's ``Execute`` preprocessor (see
``nbgrader_config.py``). When the kernel dies during a cell, it records a
``DeadKernelError`` in that cell's output, starts a fresh kernel, silently
re-runs the code cells before it to rebuild the state, and goes on with the
next cell. A cell that ignores the interrupt after the timeout is handled the
same way, with a ``CellTimeoutError`` in its output. Cells that already
failed by killing the kernel or by running out of time are not re-run, and a
cell that kills the kernel (or hangs) again during the replay is skipped
after another restart. The cell that failed, and any test that depends on
it, score zero; every other task is graded as usual.

``ClearHiddenTracebacks`` is for the feedback: see its docstring.
"""

import copy
import re

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute, NbGraderPreprocessor


class ResilientExecute(Execute):
    """nbgrader's Execute, restarting the kernel when a cell kills it or ignores the timeout's interrupt."""

    def preprocess_cell(self, cell, resources, index):
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            error, message = "DeadKernelError", "the kernel died while running this cell"
            cause = "a crash, os._exit or running out of memory"
        except CellTimeoutError:  # the cell ran past the timeout and went on running after the interrupt
            error, message = "CellTimeoutError", f"this cell was stopped after the timeout ({self.timeout} s)"
            cause = "it ignored the interrupt"
        self.log.warning("%s in cell %d; restarting the kernel and replaying the cells before", error, index)
        cell.outputs = [NotebookNode(output_type="error", ename=error, evalue=message,
                                     traceback=[f"{error}: {message} ({cause})"])]
        self._restart_kernel_and_replay(resources, index)
        return cell, self.resources

    def _restart_kernel(self):
        self._cleanup_kernel()  # forgets the dead kernel's manager and client
        self.km = self.create_kernel_manager()
        self.start_new_kernel()
        self.start_new_kernel_client()

    def _restart_kernel_and_replay(self, resources, index):
        self._restart_kernel()
        for earlier_index, earlier in enumerate(self.nb.cells[:index]):
            if earlier.cell_type != "code" or _failed_fatally(earlier):
                continue
            try:
                # run a copy: the outputs recorded the first time stay as they were
                super().preprocess_cell(copy.deepcopy(earlier), resources, earlier_index)
            except (DeadKernelError, CellTimeoutError):
                self.log.warning("The kernel died or hung again while replaying cell %d; skipping it", earlier_index)
                self._restart_kernel()


FATAL = {"DeadKernelError", "CellTimeoutError"}


def _failed_fatally(cell) -> bool:
    """Whether a cell killed its kernel or ran out of time when it was graded."""
    return any(output.get("output_type") == "error" and output.get("ename") in FATAL for output in cell.get("outputs", []))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NUMBERED = re.compile(r"^\s*(?:-*>)?\s*\d+\s")  # "----> 4 code" or "      6 code" in IPython's tracebacks


class ClearHiddenTracebacks(NbGraderPreprocessor):
    """For the feedback: remove from error tracebacks the lines of the cell's hidden tests.

    nbgrader's ClearHiddenTests clears the hidden tests from a cell's source,
    but IPython's traceback of a failing test cell quotes the lines around the
    failure, hidden ones included. This preprocessor, run before
    ClearHiddenTests (see nbgrader_config.py), drops those quoted lines; the
    error's type and message stay.
    """

    begin = "BEGIN HIDDEN TESTS"
    end = "END HIDDEN TESTS"

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or self.begin not in cell.source:
            return cell, resources
        hidden, inside = set(), False
        for line in cell.source.splitlines():
            if self.begin in line:
                inside = True
            elif self.end in line:
                inside = False
            elif inside and line.strip():
                hidden.add(line.strip())
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output.traceback = [self._clean(entry, hidden) for entry in output.get("traceback", [])]
        return cell, resources

    def _clean(self, entry, hidden):
        kept = []
        for line in entry.split("\n"):
            text = _ANSI.sub("", line)
            code = _NUMBERED.sub("", text, count=1).strip()
            if self.begin in text or self.end in text or (_NUMBERED.match(text) and code in hidden):
                continue
            kept.append(line)
        return "\n".join(kept)
