"""One addition to nbgrader's autograder: a cell that kills its kernel fails alone.

nbgrader already interrupts a cell that runs past ``Execute.timeout`` (an
endless loop) and goes on with the next cell, so that only the task of that
cell scores zero. But when a cell kills the kernel itself (``os._exit``,
``os.kill``, a crash in compiled code, the kernel running out of memory),
nbgrader gives up on the whole submission: every task scores zero and the
autograde command exits with an error.

``ResilientExecute`` replaces nbgrader's ``Execute`` preprocessor (see
``nbgrader_config.py``). When the kernel dies during a cell, it records a
``DeadKernelError`` in that cell's output, starts a fresh kernel, silently
re-runs the code cells before it to rebuild the state, and goes on with the
next cell. Cells that already failed by killing the kernel or by running out
of time are not re-run, and a cell that kills the kernel again during the
replay is skipped after another restart. The cell that killed the kernel, and
any test that depends on it, score zero; every other task is graded as usual.
"""

import copy

from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute


class ResilientExecute(Execute):
    """nbgrader's Execute, restarting the kernel when a cell kills it."""

    def preprocess_cell(self, cell, resources, index):
        try:
            return super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self.log.warning("The kernel died while running cell %d; restarting it and replaying the cells before", index)
            cell.outputs = [
                NotebookNode(
                    output_type="error",
                    ename="DeadKernelError",
                    evalue="the kernel died while running this cell",
                    traceback=["DeadKernelError: the kernel died while running this cell (crash, os._exit or out of memory)"],
                )
            ]
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
            except DeadKernelError:
                self.log.warning("The kernel died again while replaying cell %d; skipping it", earlier_index)
                self._restart_kernel()


FATAL = {"DeadKernelError", "CellTimeoutError"}


def _failed_fatally(cell) -> bool:
    """Whether a cell killed its kernel or ran out of time when it was graded."""
    return any(output.get("output_type") == "error" and output.get("ename") in FATAL for output in cell.get("outputs", []))
