"""How the course grades a submission: in a sandbox, with verdicts that the student's code cannot forge.

Stock nbgrader runs a submission's code as the instructor's user, inside the
course folder, in the same kernel as the tests, and scores a test cell by
whether it raised. A student's code can then read the hidden tests and the
model solutions, write to the gradebook, patch ``assert_close``, or hand in
an object that compares equal to everything. This module changes three things,
and keeps nbgrader for the rest (release, collect, gradebook, formgrader,
feedback); ``nbgrader_config.py`` puts it in place.

1. **A sandbox per submission** (``Sandbox``, ``SandboxedKernelManager``).
   The kernel runs under bubblewrap (``bwrap``, Debian's package
   ``bubblewrap``): a file system that holds only the operating system, the
   Python environment, the companion library ``ad_lib`` (read-only, at
   ``/opt/course``) and a fresh copy of the submission's folder
   (``/submission``, the only place it can write, besides a private
   ``/tmp``); no network; its own process tree, ended with the kernel, so
   that nothing it starts outlives its grading; run as the unprivileged
   user ``nobody`` when the grader runs as root, with limits on CPU time,
   memory, processes, file size and open files (``prlimit``). It talks to the
   grader through Unix sockets in a folder of its own.

2. **Verdicts decided by the grader.** The tests of each task are in
   ``graders/NN_slug.py``, next to this file, never released. Each task has
   parts, each with its points: a *probe*, whose source is sent to the
   student's kernel, calls the student's functions on inputs the grader
   chose (varied from one submission to the next) and returns plain values
   (Python numbers, strings, lists, dicts, tensors of a numeric dtype); the
   grader, in its own process, decodes them and runs the part's *check*.
   Anything that is not a plain value (a ``float`` subclass, a ``dict`` that
   claims to equal everything) fails the part. The visible checks of a test
   cell still run in the kernel, for the student's benefit, and score
   nothing by themselves. The probes run after the whole notebook, and what
   they print is thrown away, so no student cell's output can quote them. A
   test cell scores the points of the parts that passed (nbgrader's partial
   credit); its output says, in words, what each part checked.

3. **Forbidden libraries, by behaviour.** A task that asks students to write
   something themselves can be run in a second sandbox from which the
   forbidden packages are absent (``Restricted``): renaming the import or
   copying the module's file cannot bring them back. Other tasks check
   behaviour the forbidden route cannot have (an instrumented ``jvp`` whose
   results only the student's own assembly can return; see the graders).

4. **Instruments out of reach.** The probes' meters (torch's engine watched,
   the tensors' sizes recorded, the applications of a map counted) run in
   the student's kernel, where code could switch them off. An answer cell
   that writes a name that reaches them (``TAMPERING``: ``torch._C``, the
   dispatch-mode stacks, ``__closure__``, frames, ``gc``, ``ctypes``), or
   that starts a thread or a process, which the meters do not see, is not
   graded: its task scores nothing (see ``tampering``).

``ResilientExecute`` (a cell that kills or hangs its kernel fails alone; the
kernel is restarted and the cells before it replayed) is the base of
``GradedExecute``. Where the sandbox cannot be made (not Linux, no
bubblewrap, no user namespaces), autograding refuses to run and says why,
unless the instructor passes ``--GradedExecute.sandbox=off``.
"""

import builtins
import copy
import dataclasses
import importlib.util
import io
import json
import math
import os
import pathlib
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import tokenize
import typing as t
import zlib

from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionComplete, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode, v4
from nbgrader.preprocessors import Execute
from traitlets import Enum, Integer

HERE = pathlib.Path(__file__).resolve().parent
GRADERS = HERE / "graders"

# ---------------------------------------------------------------------------------------------
# 1. The sandbox
# ---------------------------------------------------------------------------------------------

SANDBOX_USER = 65534  # nobody: the kernel's user when the grader runs as root
COURSE_LIBRARY = "/opt/course"  # where ad_lib is seen inside the sandbox
SUBMISSION = "/submission"  # the sandbox's working folder, a copy of the submission's


@dataclasses.dataclass
class Limits:
    """Resource limits of a sandboxed kernel (``prlimit``); each restart of the kernel gets them afresh."""

    cpu_seconds: int = 900
    memory_bytes: int = 8 * 2**30  # address space: torch reserves much more than it uses
    processes: int = 1024  # processes and threads of the sandbox's user
    file_bytes: int = 256 * 2**20  # the largest file it may write
    open_files: int = 1024
    tmp_bytes: int = 512 * 2**20  # its private /tmp

    def prlimit(self) -> list:
        return ["prlimit", f"--cpu={self.cpu_seconds}", f"--as={self.memory_bytes}", f"--nproc={self.processes}",
                f"--fsize={self.file_bytes}", f"--nofile={self.open_files}", "--core=0", "--"]


class SandboxUnavailable(RuntimeError):
    pass


def _module_location(name: str) -> t.Optional[pathlib.Path]:
    """The folder (package) or file (module) from which the grader's Python imports `name`."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return pathlib.Path(list(spec.submodule_search_locations)[0]).resolve()
    return pathlib.Path(spec.origin).resolve() if spec.origin else None


def _python_trees() -> list:
    """The folders the kernel's Python needs: the environment and the installation it was made from."""
    trees = {pathlib.Path(sys.prefix).resolve(), pathlib.Path(sys.base_prefix).resolve(),
             pathlib.Path(sys.executable).resolve().parent.parent}
    return sorted(trees)


def _outermost(paths) -> list:
    """The paths that are not inside another of them."""
    paths = sorted({pathlib.Path(p) for p in paths}, key=lambda p: len(p.parts))
    kept = []
    for path in paths:
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def _inside(path: pathlib.Path, tree: pathlib.Path) -> bool:
    return path == tree or tree in path.parents


class Sandbox:
    """A fresh folder for one submission, and the bubblewrap command that runs a kernel on it.

    ``without`` names packages that must be absent from this sandbox (a task's
    forbidden libraries): their folders are hidden, and a stub that raises
    ImportError with the reason comes first on the kernel's path.
    """

    def __init__(self, submission_dir: pathlib.Path, *, without=(), why: str = "", limits: Limits = None,
                 protected=()):
        self.limits = limits or Limits()
        self.without = list(without)
        self.why = why or "this task is graded without it"
        self.as_root = os.geteuid() == 0
        base = "/tmp" if os.path.isdir("/tmp") else None  # short paths: Unix sockets allow about 100 bytes
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="ad-grading-", dir=base))
        self.work = self.root / "submission"
        self.stubs = self.root / "stubs"
        self.kernels = 0
        # what the release ships and the student handed in: the files of this submission's folder
        shutil.copytree(submission_dir, self.work, symlinks=True,
                        ignore=lambda folder, names: [n for n in names if os.path.islink(os.path.join(folder, n))])
        self.stubs.mkdir()
        for name in self.without:
            package = self.stubs / name.split(".")[0]
            package.mkdir(exist_ok=True)
            (package / "__init__.py").write_text(
                f"raise ImportError({f'{name} is not available here: {self.why}'!r})\n")
        self._check_protected(protected)
        self._own(self.root)

    def _check_protected(self, protected):
        """Refuse a layout where what the sandbox shows would include the course folder or the gradebook."""
        shown = _python_trees() + [p for p in [self.library()] if p]
        for secret in protected:
            secret = pathlib.Path(secret).resolve()
            for tree in shown:
                if _inside(secret, tree):
                    raise SandboxUnavailable(
                        f"the sandbox would show {secret} to the students' code, since it lies inside {tree}, "
                        "which the kernel needs: keep the course folder outside the Python environment")

    def _own(self, path: pathlib.Path):
        if not self.as_root:
            return
        for folder, dirs, files in os.walk(path):
            for name in [folder] + [os.path.join(folder, n) for n in dirs + files]:
                os.lchown(name, SANDBOX_USER, SANDBOX_USER)

    @staticmethod
    def library() -> t.Optional[pathlib.Path]:
        return _module_location("ad_lib")

    def runtime_dir(self) -> pathlib.Path:
        """A folder for one kernel's connection file and sockets."""
        self.kernels += 1
        folder = self.root / f"k{self.kernels}"
        folder.mkdir()
        self._own(folder)
        return folder

    def own(self, path):
        self._own(pathlib.Path(path))

    def command(self, argv: list, runtime: pathlib.Path) -> list:
        """Bubblewrap's command line that runs `argv` (a kernel) in this sandbox."""
        cmd = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
               "--hostname", "grading", "--die-with-parent", "--new-session",
               # jupyter_client's parent process id means nothing in the sandbox's own process tree
               "--unsetenv", "JPY_PARENT_PID"]
        if not self.as_root:
            cmd += ["--unshare-user", "--uid", str(SANDBOX_USER), "--gid", str(SANDBOX_USER)]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                cmd += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                cmd += ["--ro-bind", top, top]
        cmd += ["--ro-bind", "/usr", "/usr"]
        for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf", "passwd", "group",
                     "alternatives", "ssl", "fonts", "matplotlibrc"):
            cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(self.limits.tmp_bytes), "--tmpfs", "/tmp"]
        binds = [p for p in _outermost(_python_trees()) if not _inside(p, pathlib.Path("/usr"))]
        made = set()
        for path in binds + [runtime, pathlib.Path(COURSE_LIBRARY) / "ad_lib"]:
            for parent in reversed(path.parents):
                if str(parent) in ("/", "/tmp") or parent in made or any(_inside(parent, b) for b in binds):
                    continue
                made.add(parent)
                cmd += ["--perms", "0755", "--dir", str(parent)]
        for path in binds:
            cmd += ["--ro-bind", str(path), str(path)]
        hidden = [loc for loc in (_module_location(n) for n in self.without) if loc is not None]
        for location in hidden:
            if not any(_inside(location, tree) for tree in binds + [pathlib.Path("/usr")]):
                continue  # not shown in the sandbox anyway (ad_lib's editable source, say): nothing to hide
            if location.is_dir():
                cmd += ["--tmpfs", str(location)]
            else:
                cmd += ["--ro-bind", "/dev/null", str(location)]
        library = self.library()
        if library is not None and not any(_inside(library, h) or _inside(h, library) for h in hidden):
            cmd += ["--ro-bind", str(library), f"{COURSE_LIBRARY}/{library.name}"]
        cmd += ["--ro-bind", str(self.stubs), "/opt/stubs"]
        cmd += ["--bind", str(self.work), SUBMISSION, "--bind", str(runtime), str(runtime), "--chdir", SUBMISSION]
        cmd += ["--"] + self.limits.prlimit()
        if self.as_root:
            cmd += ["setpriv", f"--reuid={SANDBOX_USER}", f"--regid={SANDBOX_USER}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--"]
        return cmd + list(argv)

    def environment(self) -> dict:
        path = [os.path.join(sys.prefix, "bin"), "/usr/local/bin", "/usr/bin", "/bin"]
        return {"PATH": ":".join(path), "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1",
                "PYTHONPATH": f"/opt/stubs:{COURSE_LIBRARY}", "PYTHONDONTWRITEBYTECODE": "1",
                "MPLCONFIGDIR": "/tmp/matplotlib", "IPYTHONDIR": "/tmp/ipython", "JUPYTER_PLATFORM_DIRS": "1",
                "OMP_NUM_THREADS": str(min(4, os.cpu_count() or 1))}

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


_SANDBOX_CHECKED: dict = {}


def sandbox_problem() -> t.Optional[str]:
    """Why the sandbox cannot be made on this machine, or None when it can (checked once per process)."""
    if "answer" in _SANDBOX_CHECKED:
        return _SANDBOX_CHECKED["answer"]
    answer = None
    if not sys.platform.startswith("linux"):
        answer = f"the sandbox needs Linux (bubblewrap and its namespaces); this is {sys.platform}"
    elif shutil.which("bwrap") is None:
        answer = "bubblewrap is not installed: `sudo apt-get install bubblewrap` (Debian, Ubuntu) or your system's package"
    elif shutil.which("prlimit") is None or (os.geteuid() == 0 and shutil.which("setpriv") is None):
        answer = "prlimit and setpriv (util-linux) are needed"
    else:
        probe = tempfile.mkdtemp(prefix="ad-grading-check-")
        try:
            sandbox = Sandbox(pathlib.Path(probe))
            try:
                runtime = sandbox.runtime_dir()
                result = subprocess.run(sandbox.command([sys.executable, "-c", "print('ok')"], runtime),
                                        env=sandbox.environment(), capture_output=True, text=True, timeout=60)
                if result.returncode != 0 or result.stdout.strip() != "ok":
                    answer = ("bubblewrap could not start a sandbox here (are user namespaces allowed? "
                              f"`sysctl kernel.unprivileged_userns_clone`): {result.stderr.strip()[-400:]}")
            finally:
                sandbox.close()
        except SandboxUnavailable as error:
            answer = str(error)
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    _SANDBOX_CHECKED["answer"] = answer
    return answer


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel that runs in a ``Sandbox`` and speaks to the grader through Unix sockets in its own folder."""

    sandbox: t.Optional[Sandbox] = None

    def use(self, sandbox: Sandbox):
        self.sandbox = sandbox
        runtime = sandbox.runtime_dir()
        self.transport = "ipc"
        self.ip = str(runtime / "kernel")
        self.connection_file = str(runtime / "connection.json")
        self._runtime = runtime
        return self

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        if self.sandbox is None:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        self.sandbox.own(self._runtime)  # the connection file, written by now, readable by the sandbox's user
        kw.pop("cwd", None)
        kw["env"] = self.sandbox.environment()
        return await super()._async_launch_kernel(self.sandbox.command(kernel_cmd, self._runtime), **kw)


# ---------------------------------------------------------------------------------------------
# 2. The graders' vocabulary: tasks, parts, checks
# ---------------------------------------------------------------------------------------------


class Wrong(AssertionError):
    """Raised by a check: the part fails, and the message (in words, no code) goes to the feedback."""


@dataclasses.dataclass
class Part:
    """One separately scored requirement of a task.

    probe(**inputs) runs in the student's kernel (only its source is sent; it may use the
    notebook's names, and ``__student__``, the notebook's namespace) and returns plain values.
    check(result, **inputs) runs in the grader: it returns nothing, or raises Wrong (or
    AssertionError) with a message in words. inputs(rng) makes the inputs in the grader,
    from a random.Random seeded by the submission, so that they differ between students.
    """

    points: float
    what: str
    probe: t.Callable
    check: t.Callable
    inputs: t.Optional[t.Callable] = None
    helpers: tuple = ()  # functions of the grader module whose source is sent with the probe's


@dataclasses.dataclass
class Restricted:
    """Run a task's answer cells alone, in a sandbox without the packages it forbids."""

    cells: list  # grade_ids of the answer cells to run, in order
    setup: str  # the code run before them (instead of the notebook's set-up cell)
    without: list  # packages absent from this sandbox
    why: str  # in words: the rule, shown in the feedback


@dataclasses.dataclass
class Task:
    parts: list
    restricted: t.Optional[Restricted] = None

    @property
    def points(self) -> float:
        return sum(p.points for p in self.parts)


def load_grader(assignment: str, folder: pathlib.Path = GRADERS) -> dict:
    """The tasks of an assignment's grader, graders/ASSIGNMENT.py: {test cell's grade_id: Task}."""
    path = folder / f"{assignment}.py"
    if not path.exists():
        raise FileNotFoundError(f"no grader for assignment {assignment!r}: expected {path}")
    spec = importlib.util.spec_from_file_location(f"_grader_{assignment}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.TASKS)


def close(got, expected, *, rtol=1e-12, atol=1e-12, what="the result", dtype=True):
    """Check, in the grader, that `got` (decoded from the student's kernel) is `expected` up to the tolerances."""
    import torch

    if isinstance(expected, torch.Tensor):
        if type(got) is not torch.Tensor:
            raise Wrong(f"{what} should be a tensor, not {_kind(got)}")
        if tuple(got.shape) != tuple(expected.shape):
            raise Wrong(f"{what} should have shape {tuple(expected.shape)}, not {tuple(got.shape)}")
        if dtype and got.dtype != expected.dtype:
            raise Wrong(f"{what} should have dtype {expected.dtype}, not {got.dtype}")
        if not torch.allclose(got.to(torch.float64), expected.to(torch.float64), rtol=rtol, atol=atol):
            raise Wrong(f"{what} has wrong values")
        return
    if type(got) not in (int, float) or isinstance(got, bool):
        raise Wrong(f"{what} should be a number, not {_kind(got)}")
    if not math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
        raise Wrong(f"{what} is wrong")


# The set-up of a restricted task written with torch alone (``Restricted(setup=TORCH_ONLY, ...)``, with
# ``without`` naming NumPy and the libraries that would do the work): NumPy's entry in sys.modules is None, so
# that an import of it, under any name, raises (and with it those of SciPy, POT and GeomLoss, which need it).
TORCH_ONLY = """import sys

sys.modules["numpy"] = None  # absent: this assignment is written with torch (SciPy, POT and GeomLoss need NumPy)
import math
import torch

F64 = torch.float64
torch.set_num_threads(1)  # small tensors: one thread is faster, and steadier, than several
"""


# A restricted task's set-up may end with this (``Restricted(setup=... + ONE_THREAD)``): the answers then run
# in the kernel's one thread and process, where the probes' dispatch-mode meters record the operators torch
# runs; starting a thread or a process (which would run torch unrecorded) raises. An audit hook (it cannot be
# removed) stops fork, exec, spawn, system and subprocess; threads and multiprocessing's spawn (which
# sys.audit does not report in Python 3.11) are stopped at their source. The kernel's own threads may start.
ONE_THREAD = """
import _posixsubprocess
import _thread
import threading


def _guard(start):
    def one_thread(function=None, *args, **kwargs):
        # the kernel's own threads (pyzmq's garbage collector starts when a large message is sent) may start
        owner = type(getattr(function, "__self__", None)).__module__.split(".")[0]
        if owner in ("zmq", "ipykernel", "jupyter_client", "tornado", "IPython"):
            return start(function, *args, **kwargs)
        raise RuntimeError("no other thread or process may run here: the grader records what your code runs")
    return one_thread


_one_thread = _guard(_thread.start_new_thread)


def _audit(event, args):
    if event in ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "subprocess.Popen"):
        _one_thread()


sys.addaudithook(_audit)
_thread.start_new_thread = _thread.start_new = threading._start_new_thread = _one_thread
_posixsubprocess.fork_exec = _one_thread
"""


def watching_autodiff(run):
    """``[run(), torch's automatic differentiation ran, ad_lib's ran]``, for a probe that forbids both.

    Sent with a probe (``Part(..., helpers=(watching_autodiff,))``), it runs in the student's
    kernel: while ``run()`` runs, it counts the calls of torch's reverse-mode engine (``backward``,
    ``autograd.grad``, ``torch.func.grad``, ``vjp``, ``jacrev``) and the dual levels of its forward
    mode (``forward_ad``, ``torch.func.jvp``, ``jacfwd``), and whether ad_lib opened a level of its
    own (a ``jvp``, ``vjp``, ``grad`` or trace). In a Python without ad_lib, the third entry is False.
    """
    import torch.autograd.forward_ad as forward_ad
    from torch.autograd.variable import Variable

    try:
        from ad_lib import ops

        def levels():
            return repr(ops._levels)
    except ImportError:
        def levels():
            return ""

    seen = {"torch": 0}
    engine, enter = Variable._execution_engine, forward_ad.enter_dual_level

    class Watched:  # torch's reverse-mode engine
        def run_backward(self, *args, **kwargs):
            seen["torch"] += 1
            return engine.run_backward(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(engine, name)

    def enter_dual_level():  # torch's forward mode
        seen["torch"] += 1
        return enter()

    before = levels()
    watched = Watched()
    Variable._execution_engine, forward_ad.enter_dual_level = watched, enter_dual_level
    try:
        result = run()
    finally:
        # an answer that put an engine of its own in the watcher's place, or took the watcher away, ran
        # torch's automatic differentiation unseen: it counts as having run it
        if Variable._execution_engine is not watched or forward_ad.enter_dual_level is not enter_dual_level:
            seen["torch"] += 1
        Variable._execution_engine, forward_ad.enter_dual_level = engine, enter
    return [result, seen["torch"] > 0, levels() != before]


def operation_meter():
    """A TorchDispatchMode class, the probes' meter of torch's operators (sent with a probe:
    ``Part(..., helpers=(operation_meter,))``; a probe makes the class with ``operation_meter()``).

    An instance, ``with meter(watch=None, budget=inf, stop_on_complex=False):``, records the aten
    operators that torch runs under it, in this thread (``ONE_THREAD`` keeps the answers there):
    ``ops``, how many ran; ``hits`` and ``matched``, how many matched the regular expression
    ``watch`` and their names (each once, in order); ``largest``, the elements of the largest
    tensor made; ``complex``, whether any read or wrote a complex tensor; ``work``, the
    multiply-adds of the matrix products plus the elements each other operator writes (views
    write none). Past its ``budget`` of work, or at the first complex tensor if
    ``stop_on_complex``, it stops the code it meters (that operator and every later one raise)
    and the ``with`` block ends there, with ``stopped`` set. Entering it does not import
    torch._dynamo (1.3 s), by torch's documented opt-out.
    """
    import re

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    products = {aten.mm.default, aten.mv.default, aten.bmm.default, aten.addmm.default, aten.addmv.default,
                aten.dot.default, aten.vdot.default, aten.baddbmm.default, aten.addbmm.default}

    def tensors(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from tensors(item)
        elif isinstance(value, dict):
            for item in value.values():
                yield from tensors(item)

    class Stopped(Exception):
        pass

    class OperationMeter(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls):
            return False

        def __init__(self, watch=None, budget=float("inf"), stop_on_complex=False):
            super().__init__()
            self.pattern = re.compile(watch) if watch else None
            self.budget, self.stop_on_complex = budget, stop_on_complex
            self.ops = self.hits = self.largest = self.work = 0
            self.matched, self.complex, self.stopped = [], False, False

        def __exit__(self, kind, value, traceback):
            super().__exit__(kind, value, traceback)
            return self.stopped  # the stop is not an error of the student's code: swallowed here

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if self.stopped:  # code that caught the stop cannot go on computing
                raise Stopped("stopped by the grader")
            out = func(*args, **(kwargs or {}))
            name = str(func)
            self.ops += 1
            if self.pattern is not None and self.pattern.search(name):
                self.hits += 1
                if name not in self.matched:
                    self.matched.append(name)
            made = list(tensors(out))
            for tensor in made:
                self.largest = max(self.largest, tensor.numel())
            if not self.complex:
                self.complex = any(t.is_complex() for t in [*made, *tensors([args, kwargs])])
            if func in products:
                a, b = list(tensors(args))[-2:]
                self.work += a.numel() * (b.shape[-1] if b.dim() > 1 else 1)
            elif not getattr(func, "is_view", False):
                self.work += sum(t.numel() for t in made)
            if (self.complex and self.stop_on_complex) or self.work > self.budget:
                self.stopped = True
                raise Stopped("stopped by the grader")
            return out

    return OperationMeter


def verdict_check(key: str, expected, choices: tuple):
    """A check of one answer of a dict of verdicts: `result[key]` is one of `choices` (exactly: True is not 1)
    and is `expected`. For the parts of a task whose answers are given as {"a": ..., "b": ...}."""
    def check(result):
        if type(result) is not dict or key not in result:
            raise Wrong(f"the answer should be a dict with the key {key!r}")
        if not any(type(result[key]) is type(c) and result[key] == c for c in choices):
            shown = " or ".join(f'"{c}"' if isinstance(c, str) else repr(c) for c in choices)
            raise Wrong(f"the verdict ({key}) should be {shown}")
        if result[key] != expected:
            raise Wrong(f"the verdict ({key}) is wrong")
    return check


def _kind(value) -> str:
    if isinstance(value, Unplain):
        return f"a {value.type_name}"
    return {type(None): "None", bool: "a bool", int: "an int", float: "a float", str: "a string", list: "a list",
            tuple: "a tuple", dict: "a dict"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# 3. Plain values across the boundary
# ---------------------------------------------------------------------------------------------

MARKER = "@@ad-grading-result@@"
MAX_RESULT = 2 * 2**20  # bytes of one encoded result
MAX_CELL_OUTPUT = 2 * 2**20  # bytes of output kept from one cell of a student's notebook
TRUNCATED = "[more output than the grader keeps: the rest was dropped]\n"

# Runs in the student's kernel: encodes a probe's result as JSON of plain values, and decodes its inputs.
# It cannot make a wrong answer right: the grader, not this code, compares the values.
KERNEL_SIDE = r'''
def __ad_encode(value, depth=0):
    # classes are compared by identity: a class of the student's that calls itself torch's Tensor (a
    # __module__ and a __name__ are free to write), or whose metaclass makes it equal to int, is not a
    # plain value, and none of its methods runs here, after the probe's meters have stopped
    import sys
    if depth > 50:
        return {"__unplain__": "nested structure too deep"}
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else {"__float__": repr(value)}
    if kind is list:
        return [__ad_encode(v, depth + 1) for v in value]
    if kind is tuple:
        return {"__tuple__": [__ad_encode(v, depth + 1) for v in value]}
    if kind is dict:
        if not all(type(k) is str for k in value):
            return {"__unplain__": "dict with keys that are not strings"}
        return {"__dict__": [[k, __ad_encode(v, depth + 1)] for k, v in value.items()]}
    torch, numpy = sys.modules.get("torch"), sys.modules.get("numpy")
    if torch is not None and (kind is torch.dtype or kind is torch.device):
        return {"__" + kind.__name__ + "__": str(value)}
    if torch is not None and kind is torch.Tensor:
        if value.is_complex() or value.layout != torch.strided:
            return {"__unplain__": "complex or sparse tensor"}
        data = value.detach().to("cpu")
        return {"__tensor__": {"dtype": str(value.dtype), "shape": list(value.shape), "device": value.device.type,
                               "requires_grad": bool(value.requires_grad),
                               "data": [__ad_encode(float(v)) for v in data.reshape(-1).double().tolist()]}}
    if numpy is not None and kind is numpy.ndarray:
        if value.dtype.kind not in "biuf":
            return {"__unplain__": "array of dtype " + str(value.dtype)}
        return {"__ndarray__": {"dtype": str(value.dtype), "shape": list(value.shape),
                                "data": [__ad_encode(float(v)) for v in value.astype("float64").reshape(-1).tolist()]}}
    return {"__unplain__": kind.__name__}


def __ad_decode(value):
    if isinstance(value, list):
        return [__ad_decode(v) for v in value]
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(__ad_decode(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: __ad_decode(v) for k, v in value["__dict__"]}
        if "__float__" in value:
            return float(value["__float__"])
        if "__tensor__" in value:
            import torch
            spec = value["__tensor__"]
            return torch.tensor(spec["data"], dtype=torch.float64).to(getattr(torch, spec["dtype"].split(".")[-1])).reshape(spec["shape"])
    return value


def __ad_emit(nonce, value):
    import json
    text = json.dumps(__ad_encode(value))
    print("\n" + "@@ad-grading-result@@" + nonce + ":" + text, flush=True)
'''


@dataclasses.dataclass
class Unplain:
    type_name: str


def encode_input(value):
    """Encode an input made in the grader (numbers, strings, containers, tensors) for the kernel."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"__tensor__": {"dtype": str(value.dtype), "shape": list(value.shape),
                               "data": value.detach().double().reshape(-1).tolist()}}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode_input(v) for v in value]}
    if isinstance(value, list):
        return [encode_input(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[k, encode_input(v)] for k, v in value.items()]}
    return value


def decode_result(value):
    """Decode, in the grader, what a probe returned; what was not a plain value becomes Unplain."""
    if isinstance(value, list):
        return [decode_result(v) for v in value]
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError("malformed result")
        (key, inner), = value.items()
        if key == "__tuple__":
            return tuple(decode_result(v) for v in inner)
        if key == "__dict__":
            return {str(k): decode_result(v) for k, v in inner}
        if key == "__float__":
            return float(inner)
        if key == "__unplain__":
            return Unplain(str(inner)[:60])
        if key in ("__dtype__", "__device__"):
            return str(inner)
        if key in ("__tensor__", "__ndarray__"):
            import numpy
            import torch

            data = [float(v["__float__"]) if isinstance(v, dict) else float(v) for v in inner["data"]]
            shape = [int(n) for n in inner["shape"]]
            dtype_name = str(inner["dtype"]).split(".")[-1]
            if key == "__ndarray__":
                return numpy.array(data, dtype=numpy.dtype(dtype_name)).reshape(shape)
            tensor = torch.tensor(data, dtype=torch.float64).reshape(shape)
            return tensor.to(getattr(torch, dtype_name))
        raise ValueError("malformed result")
    if value is None or type(value) in (bool, int, float, str):
        return value
    raise ValueError("malformed result")


def contains_unplain(value) -> t.Optional[Unplain]:
    if isinstance(value, Unplain):
        return value
    if isinstance(value, (list, tuple)):
        return next((u for u in map(contains_unplain, value) if u), None)
    if isinstance(value, dict):
        return next((u for u in map(contains_unplain, value.values()) if u), None)
    return None


def probe_code(part: Part, inputs: dict, nonce: str) -> str:
    """The code of one probe cell: the probe's source and the call that reports its result."""
    source = "\n".join(textwrap.dedent(_function_source(f)) for f in (*part.helpers, part.probe))
    encoded = json.dumps(json.dumps(encode_input(inputs)))  # a Python literal of the JSON text
    program = (KERNEL_SIDE + "\n" + source + "\n"
               + f"__ad_emit({nonce!r}, {part.probe.__name__}(**__ad_decode(__import__('json').loads({encoded}))))\n")
    # The program runs in a copy of the notebook's namespace without the names of builtins (a notebook's
    # `type = ...` or `len = ...` would otherwise stand in for them in the encoder and the meters) and with
    # the genuine builtins, which this cell reaches through a function's __builtins__ (the notebook's own
    # `__builtins__` is out of an answer's reach), not through names an answer could rebind.
    return ("__ad_builtins = (lambda: 0).__builtins__\n"
            "__ad_namespace = {k: v for k, v in __ad_builtins['globals']().items()\n"
            "                  if k.startswith('__') or k not in __ad_builtins}\n"
            "__ad_namespace['__builtins__'] = __ad_builtins\n"
            "__ad_namespace['__student__'] = __ad_builtins['globals']()\n"
            f"__ad_builtins['exec'](__ad_builtins['compile']({program!r}, '<grader>', 'exec'), __ad_namespace)\n")


def _function_source(function) -> str:
    import inspect

    return inspect.getsource(function)


# Exceptions whose names the feedback may show (a student's own exception class could carry any text).
_SHOWN_ERRORS = {name for name, value in vars(builtins).items()
                 if isinstance(value, type) and issubclass(value, BaseException)} | {"DeadKernelError", "CellTimeoutError"}


@dataclasses.dataclass
class Verdict:
    part: Part
    passed: bool
    message: str = ""


def judge(part: Part, outcome: dict, inputs: dict, log=None) -> Verdict:
    """Decide a part from what its probe reported: {"result": json text} or {"error": exception name}."""
    if "error" in outcome:
        name = outcome["error"]
        shown = name if name in _SHOWN_ERRORS else "an exception of its own"
        reason = {"DeadKernelError": "your code stopped the kernel", "CellTimeoutError": "your code ran past the time limit",
                  "NoResult": "no result came back from your code",
                  "KeyboardInterrupt": "your code was stopped at the time limit"}.get(name, f"your code raised {shown}")
        return Verdict(part, False, reason)
    try:
        result = decode_result(json.loads(outcome["result"]))
    except (ValueError, TypeError, RecursionError, KeyError):
        return Verdict(part, False, "your code did not return plain values")
    unplain = contains_unplain(result)
    if unplain is not None:
        return Verdict(part, False, f"your code returned a {unplain.type_name}, where plain values were expected")
    try:
        part.check(result, **inputs)
    except AssertionError as failure:
        message = str(failure.args[0]) if failure.args and isinstance(failure.args[0], str) else ""
        return Verdict(part, False, message or "the result is wrong")
    except Exception as error:  # the result had the wrong form for the check (a list where a number was due)
        if log:
            log.debug("check of %r failed with %r", part.what, error)
        return Verdict(part, False, "the result does not have the expected form")
    return Verdict(part, True)


# Names that an answer has no reason to write, through which code in the kernel can reach the grader's
# instruments: torch's engine and dispatch modes that the probes watch (torch._C, the mode stacks), a
# counter kept in a probe's closure, the probe's frame and objects (frames, found by sys._getframe, inspect
# or an exception's traceback; gc, ctypes, sys.modules), the probe's namespace (``__ad_namespace``, which
# the notebook's globals hold while a probe runs, and ``globals()``),
# tracing hooks, the classes and functions behind a decorated or forbidden one (__subclasses__,
# __wrapped__), and other threads and processes, which the probes' meters do not see. An answer cell
# that writes one of them (outside a comment) scores nothing on its task; a cell the student added, which
# belongs to no task, on every task. The probes also check what they can while they run
# (watching_autodiff notices an engine put in its place), but code in the same process can always undo a
# check it can reach: this scan makes reaching it cost the marks.
# Reaching them without writing their names costs the same: an attribute or a module named at run time
# (getattr with a name that is not a plain string literal, vars, __dict__, importlib, __import__,
# pkgutil.resolve_name, attrgetter, a builtin function's __self__ (torch._C for torch's)), code built
# from a string (eval, exec, compile, builtins, IPython's run_cell, pickle's loads) and torch changed in
# place (torch.logsumexp = ..., torch.Tensor.unsqueeze = ..., torch's private modules): work done by a
# replaced torch function inside the grader's own code would go uncounted. Method calls keep their
# names free (model.eval(), re.compile, torch.compile): the builtins are matched where no dot precedes.
_DYNAMIC = r"setattr|delattr|vars|eval|exec|compile|__import__|globals"
TAMPERING = re.compile(
    r"\b(_C|_execution_engine|_ImperativeEngine|_python_dispatch|_disable_current_modes|_pop_mode|_push_mode"
    r"|_pop_torch_dispatch_mode|_pop_torch_dispatch_stack|_push_on_torch_dispatch_stack|_len_torch_dispatch_stack"
    r"|_get_dispatch_stack_at|TorchDispatchMode"
    r"|TorchFunctionMode|__closure__|cell_contents|__code__|__globals__|__builtins__|_getframe|f_back|f_locals"
    r"|f_globals|currentframe|__traceback__|tb_frame|gi_frame|cr_frame|ag_frame|get_referrers|get_referents"
    r"|get_objects|ctypes|_ctypes|cffi|setprofile|settrace"
    r"|__subclasses__|__wrapped__|threading|_thread|ThreadPoolExecutor|ProcessPoolExecutor|multiprocessing"
    r"|subprocess|Popen"
    # the probe's namespace, and attributes and modules reached by a name made at run time
    r"|__ad_\w*|__student__|__self__|__dict__|__getattribute__|__getattr__|__setattr__|__delattr__"
    r"|setattr|delattr|__import__|importlib|import_module|pkgutil|resolve_name|runpy|zipimport|__loader__|__spec__"
    r"|attrgetter|methodcaller|builtins|metaclass|__del__|weakref"
    # code run from a string, or from bytes
    r"|get_ipython|run_cell|run_line_magic|run_cell_magic|InteractiveConsole|InteractiveInterpreter|doctest"
    r"|CodeType|FunctionType|pickle|_pickle|cPickle|dill|cloudpickle|marshal|shelve|copyreg|joblib"
    r"|weights_only|allow_pickle|safe_globals|add_safe_globals|sympify|parse_expr)\b"
    r"|\bsys\s*\.\s*(modules|addaudithook|monitoring)\b|\bimport\s+sys\s+as\b"
    r"|\bfrom\s+sys\s+import\s+(?:\([\w\s,]*?|[\w \t,]*?)\b(modules|addaudithook|monitoring)\b"  # sys.modules by another name
    r"|\bos\s*\.\s*(fork|system|exec\w*|spawn\w*|popen)\b"
    r"|\bgc\s*\.\s*callbacks\b|\bpdb\s*\.\s*run|\bc?[Pp]rofile\s*\.\s*run\b|\bTimer\s*\("
    r"|\b(?:import|from)\s+__main__\b|\b__main__\s*\."  # the notebook's module (not if __name__ == "__main__")
    r"|(?<!%)\btimeit\b"  # the module, which runs strings (not the %timeit magic, whose code is in the cell)
    r"|\binspect\s*\.|\bfrom\s+inspect\b|\bimport\s+(\w+\s*,\s*)*inspect\b"  # the module, not the word in a sentence
    r"|\b(?:from\s+code\s+import|import\s+(\w+\s*,\s*)*code)\b"  # the standard library's interactive interpreter
    # getattr, but for a call with a plain string literal: getattr(obj, "name") and getattr(obj, "name", default)
    r"|\bgetattr\b(?!\s*\((?:[^,()]|\([^()]*\))+,\s*[\"'][A-Za-z]\w*[\"']\s*[,)])"
    # the builtins that run code or reach attributes, called or handed on (not model.eval(), re.compile)
    rf"|(?<![\w.])({_DYNAMIC})\s*\(|(?<![\w.])({_DYNAMIC})(?=[ \t]*(?:[,)\]}};\n]|\Z))"
    # torch changed in place: an assignment (augmented, annotated, in a loop or a with) to an attribute
    # chain from torch (not torch.x == y, nor the default of an argument annotated x: torch.Tensor = None),
    # and torch's private attributes and modules
    r"|(?<!:)(?<!:\s)(?<!:\s\s)\btorch(\s*\.\s*\w+)+(\s*\[[^\]\n]*\])*\s*(?::\s*[\w.]+\s*)?"
    r"(?:[-+*/@%&|^]|//|\*\*|<<|>>)?=(?!=)"
    r"|\b(?:for|as)\s+torch\s*\.|\b__class__\s*(?:\.\s*\w+\s*)*=(?!=)"
    r"|\btorch(\s*\.\s*\w+)*?\s*\.\s*_(?!_|foreach_)\w*"  # (torch._foreach_* are public in all but name)
    r"|\bfrom\s+torch[\w.]*\s+import\s+\(?\s*(?:\w+(?:\s+as\s+\w+)?\s*,\s*)*_(?!_)\w*")


def _without_comments(source: str) -> str:
    """The code of a cell with its comments removed (the source itself when it does not tokenize)."""
    try:
        tokens = [tok for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type != tokenize.COMMENT]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source


def tampering(nb, test_ids) -> dict:
    """{test cell grade_id: the name it was tampered with} for the tasks whose answers reach for the instruments.

    A cell belongs to the task whose test cells share its grade_id's prefix (``task3_ridge`` and
    ``task3_tests``); the locked cells are the instructor's (nbgrader restores them) and are not read.
    """
    found = {}
    for cell in nb.cells:
        info = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or info.get("locked"):
            continue
        match = TAMPERING.search(_without_comments(cell.source))
        if match is None:
            continue
        prefix = str(info.get("grade_id", "")).split("_")[0] + "_"
        mine = [t for t in test_ids if t.startswith(prefix)] if info.get("grade_id") else []
        for test_id in mine or test_ids:
            found.setdefault(test_id, match.group(0))
    return found


def seed_for(student: str, assignment: str, grade_id: str, index: int) -> int:
    return zlib.crc32(f"{assignment}/{student}/{grade_id}/{index}".encode())


def format_points(points: float) -> str:
    return f"{points:g} point" + ("" if points == 1 else "s")


def verdict_text(task: Task, verdicts: list, restricted: t.Optional[Restricted]) -> str:
    lines = ["Graded outside your notebook's kernel, in parts:"]
    if restricted is not None:
        lines.append(f"(your answer to this task was run on its own: {restricted.why})")
    for v in verdicts:
        mark = "passed" if v.passed else "failed"
        got = v.part.points if v.passed else 0
        lines.append(f"- {mark} ({got:g} of {format_points(v.part.points)}): {v.part.what}"
                     + ("" if v.passed else f": {v.message}"))
    score = sum(v.part.points for v in verdicts if v.passed)
    lines.append(f"Score of this task: {score:g} of {task.points:g}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# 4. The autograder's execution
# ---------------------------------------------------------------------------------------------


class ResilientExecute(Execute):
    """nbgrader's Execute, restarting the kernel when a cell kills it or ignores the timeout's interrupt.

    nbgrader already interrupts a cell that runs past ``Execute.timeout``. But when a
    cell kills the kernel (``os._exit``, a crash, running out of memory), or runs past
    the timeout and ignores the interrupt, stock nbgrader gives up on the whole
    submission. Here that cell records a ``DeadKernelError`` (or ``CellTimeoutError``),
    a fresh kernel is started, the code cells before it are replayed silently (skipping
    those that failed that way), and grading goes on with the next cell.
    """

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

    def _run_aside(self, cell, resources, index):
        """Execute a cell that is not the notebook's (a replay, a probe) without nbclient putting it in its place."""
        kept = self.nb.cells[index]
        try:
            return Execute.preprocess_cell(self, cell, resources, index)
        finally:
            self.nb.cells[index] = kept

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
                self._run_aside(copy.deepcopy(earlier), resources, earlier_index)
            except (DeadKernelError, CellTimeoutError):
                self.log.warning("The kernel died or hung again while replaying cell %d; skipping it", earlier_index)
                self._restart_kernel()


FATAL = {"DeadKernelError", "CellTimeoutError"}


def _failed_fatally(cell) -> bool:
    """Whether a cell killed its kernel or ran out of time when it was graded."""
    return any(output.get("output_type") == "error" and output.get("ename") in FATAL for output in cell.get("outputs", []))


def _is_autograded_test(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and meta.get("grade") and not meta.get("solution")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class GradedExecute(ResilientExecute):
    """Execute a submission in a sandbox; score its test cells with the grader's parts (see the module's docstring)."""

    sandbox = Enum(["required", "off"], default_value="required",
                   help="'required': grade only in a sandbox, refuse if it cannot be made; 'off': grade without "
                        "one (the students' code can then read and change anything the grader's user can)").tag(config=True)
    max_cell_output = Integer(MAX_CELL_OUTPUT, help="bytes of output kept from one cell").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs["kernel_manager_class"] = SandboxedKernelManager
        super().__init__(*args, **kwargs)
        self._box = None
        self._probing = None

    # -- the kernels ---------------------------------------------------------------------------

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if self._box is not None:
            km.use(self._box)
        return km

    def _new_sandbox(self, path, **kwargs):
        if self.sandbox == "off":
            return None
        problem = sandbox_problem()
        if problem:
            raise SandboxUnavailable(
                f"refusing to grade without a sandbox: {problem}. A submission's code would run as your user, "
                "able to read the hidden tests and change the gradebook. To grade anyway (your own code only), "
                "pass --GradedExecute.sandbox=off")
        course = HERE
        return Sandbox(pathlib.Path(path), protected=[course, course / "gradebook.db"], **kwargs)

    # -- the whole submission ------------------------------------------------------------------

    def preprocess(self, nb, resources=None, km=None):
        info = (resources or {}).get("nbgrader", {})
        self._assignment = info.get("assignment") or pathlib.Path((resources or {}).get("metadata", {}).get("path", ".")).name
        self._student = str(info.get("student", ""))
        self._tasks = load_grader(self._assignment)  # graders/ASSIGNMENT.py: every assignment has one
        for cell in nb.cells:
            if _is_autograded_test(cell):
                grade_id = cell.metadata.nbgrader["grade_id"]
                if grade_id not in self._tasks:
                    raise KeyError(f"graders/{self._assignment}.py has no task for the test cell {grade_id!r}")
                points = float(cell.metadata.nbgrader.get("points", 0))
                if abs(self._tasks[grade_id].points - points) > 1e-9:
                    raise ValueError(f"the parts of {grade_id} in graders/{self._assignment}.py add up to "
                                     f"{self._tasks[grade_id].points:g} points, the cell has {points:g}")
        self._tampered = tampering(nb, [c.metadata.nbgrader["grade_id"] for c in nb.cells if _is_autograded_test(c)])
        path = (resources or {}).get("metadata", {}).get("path") or "."
        self._path = path
        self._box = self._new_sandbox(path)
        try:
            self._restricted_outcomes = self._run_restricted(nb)
            return super().preprocess(nb, resources, km)
        finally:
            if self._box is not None:
                self._box.close()
            self._box = None

    def set_widgets_metadata(self):
        # widget state is written by the student's code, possibly during the probes: keep none of it
        self.nb.metadata.pop("widgets", None)

    def preprocess_cell(self, cell, resources, index):
        cell, resources = super().preprocess_cell(cell, resources, index)
        if index == len(self.nb.cells) - 1:
            self._grade(resources)
        return cell, resources

    # -- kernel messages -----------------------------------------------------------------------

    def process_message(self, msg, cell, cell_index):
        if self._probing is None:
            return super().process_message(msg, cell, cell_index)
        # a probe: keep only its result line and whether it raised; nothing it prints or
        # displays reaches the notebook (no display updates, no widgets, no outputs)
        msg_type, content = msg["msg_type"], msg["content"]
        if msg_type == "status" and content.get("execution_state") == "idle":
            raise CellExecutionComplete()
        if msg_type == "stream" and content.get("name") == "stdout":
            buffer = self._probing.setdefault("buffer", "") + content.get("text", "")
            lines = buffer.split("\n")
            self._probing["buffer"] = lines.pop()[-(MAX_RESULT + 200):]
            for line in lines:
                if line.startswith(MARKER + self._probing["nonce"] + ":") and len(line) < MAX_RESULT:
                    self._probing["result"] = line.split(":", 1)[1]
        elif msg_type == "error":
            self._probing["error"] = str(content.get("ename", "Exception"))
        return None

    def output(self, outs, msg, display_id, cell_index):
        out = super().output(outs, msg, display_id, cell_index)
        if out is not None and sum(len(json.dumps(o)) for o in outs) > self.max_cell_output:
            outs.pop()  # a cell that floods its output keeps what came first
            if not outs or outs[-1].get("text") != TRUNCATED:
                outs.append(v4.new_output("stream", name="stdout", text=TRUNCATED))
        return out

    # -- probes -------------------------------------------------------------------------------

    def _inputs(self, grade_id, index, part):
        if part.inputs is None:
            return {}
        rng = random.Random(seed_for(self._student, self._assignment, grade_id, index))
        return part.inputs(rng)

    def _probe(self, part, inputs, resources, index):
        """Run one probe in the main kernel; returns {"result": text} or {"error": name}."""
        nonce = secrets.token_hex(8)
        cell = v4.new_code_cell(probe_code(part, inputs, nonce))
        self._probing = {"nonce": nonce}
        try:
            self._run_aside(cell, resources, index)
        except (DeadKernelError, CellTimeoutError) as error:
            self._probing = None
            self._restart_kernel_and_replay(resources, len(self.nb.cells))
            return {"error": type(error).__name__}
        finally:
            outcome, self._probing = self._probing, None
        return _outcome(outcome)

    def _grade(self, resources):
        for index, cell in enumerate(self.nb.cells):
            if not _is_autograded_test(cell):
                continue
            grade_id = cell.metadata.nbgrader["grade_id"]
            task = self._tasks[grade_id]
            verdicts, fatal = [], None
            if grade_id in self._tampered:
                reason = (f"not graded: your code writes `{self._tampered[grade_id]}`, which answers may not use "
                          "(torch's internals, the grader's instruments, other threads or processes)")
                self._write_verdicts(cell, task, [Verdict(part, False, reason) for part in task.parts])
                continue
            for number, part in enumerate(task.parts):
                inputs = self._inputs(grade_id, number, part)
                if task.restricted is not None:
                    outcome = self._restricted_outcomes[grade_id][number]
                elif fatal is not None:
                    outcome = fatal  # the task's code hung or killed its kernel: its other parts would too
                else:
                    outcome = self._probe(part, inputs, resources, index)
                    if outcome.get("error") in FATAL:
                        fatal = outcome
                verdicts.append(judge(part, outcome, inputs, self.log))
            self._write_verdicts(cell, task, verdicts)
        for cell in self.nb.cells:
            if cell.cell_type == "code":
                for output in cell.get("outputs", []):
                    _scrub_output(output)

    def _write_verdicts(self, cell, task, verdicts):
        """The test cell's outputs: what its visible checks printed (never an error that scores), then the parts."""
        kept = []
        for output in cell.outputs:
            if output.output_type == "error":
                text = _ANSI.sub("", "\n".join(output.get("traceback", [])) or f"{output.ename}: {output.evalue}")
                kept.append(v4.new_output("stream", name="stdout",
                                          text=f"Your visible checks stopped here:\n{text}\n"))
            elif output.output_type == "stream":
                kept.append(v4.new_output("stream", name="stdout", text=output.text))
            elif output.output_type == "execute_result":
                kept.append(v4.new_output("display_data", data=output.data, metadata=output.get("metadata", {})))
            else:
                kept.append(output)
        restricted = task.restricted
        kept.append(v4.new_output("stream", name="stdout", text=verdict_text(task, verdicts, restricted)))
        score = sum(v.part.points for v in verdicts if v.passed)
        # nbgrader's partial credit: the first execute_result of a graded cell is its score
        kept.append(v4.new_output("execute_result", data={"text/plain": repr(float(score))},
                                  execution_count=cell.get("execution_count")))
        cell.outputs = kept

    # -- restricted tasks: their own sandbox --------------------------------------------------

    def _run_restricted(self, nb) -> dict:
        """The outcomes of the restricted tasks' probes: {grade_id: [outcome of each part]}.

        Tasks with the same rule (set-up, absent packages, reason) share one sandbox and kernel;
        if that run dies or hangs, each of its tasks is run again alone, so that an answer that
        kills its kernel costs only its own task.
        """
        present = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells}
        groups = {}
        for grade_id, task in (self._tasks or {}).items():
            if task.restricted is not None and grade_id in present and grade_id not in self._tampered:
                rule = task.restricted
                groups.setdefault((rule.setup, tuple(rule.without), rule.why), []).append(grade_id)
        outcomes = {}
        for grade_ids in groups.values():
            got, stopped = self._run_restricted_group(nb, grade_ids)
            if stopped and len(grade_ids) > 1:
                for grade_id in grade_ids:
                    got.update(self._run_restricted_group(nb, [grade_id])[0])
            outcomes.update(got)
        return outcomes

    def _run_restricted_group(self, nb, grade_ids) -> tuple:
        """Run the answer cells of these tasks, then their probes, in one sandbox; (outcomes, whether it stopped)."""
        rule = self._tasks[grade_ids[0]].restricted
        wanted = {g for grade_id in grade_ids for g in self._tasks[grade_id].restricted.cells}
        cells = [v4.new_code_cell(rule.setup)]
        cells += [v4.new_code_cell(c.source) for c in nb.cells  # the answer cells, in the notebook's order
                  if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade_id") in wanted]
        nonces, probes = {}, {}
        for grade_id in grade_ids:
            for number, part in enumerate(self._tasks[grade_id].parts):
                nonce = secrets.token_hex(8)
                nonces[len(cells)] = nonce
                probes.setdefault(grade_id, []).append(len(cells))
                cells.append(v4.new_code_cell(probe_code(part, self._inputs(grade_id, number, part), nonce)))
        mini = v4.new_notebook(cells=cells, metadata=copy.deepcopy(nb.metadata))
        box = self._new_sandbox(self._path, without=rule.without, why=rule.why)
        client = _RestrictedClient(mini, timeout=self.timeout, allow_errors=True, interrupt_on_timeout=True,
                                   kernel_name=self.kernel_name or "python3", resources={"metadata": {"path": self._path}},
                                   kernel_manager_class=SandboxedKernelManager, box=box, nonces=nonces,
                                   extra_arguments=self.extra_arguments)
        stopped = False
        try:
            client.execute()
        except Exception as error:  # the kernel died, hung past the interrupt, or could not start
            self.log.warning("the restricted run of %s stopped: %r", ", ".join(grade_ids), error)
            stopped = True
        finally:
            if box is not None:
                box.close()
        return {g: [_outcome(client.outcomes.get(i, {})) for i in indices] for g, indices in probes.items()}, stopped


def _outcome(raw: dict) -> dict:
    if raw.get("result") is not None:
        return {"result": raw["result"]}
    return {"error": raw.get("error", "NoResult")}


class _RestrictedClient:
    """Runs a small notebook (set-up, answers, probes) in its own sandbox; keeps only the probes' results."""

    def __new__(cls, nb, *, box, nonces, **kwargs):
        from nbclient import NotebookClient

        class Client(NotebookClient):
            def create_kernel_manager(self):
                km = super().create_kernel_manager()
                if box is not None:
                    km.use(box)
                return km

            def process_message(self, msg, cell, cell_index):
                if cell_index not in nonces:
                    if msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle":
                        raise CellExecutionComplete()
                    return None  # nothing of this run is kept
                state = self.outcomes.setdefault(cell_index, {})
                msg_type, content = msg["msg_type"], msg["content"]
                if msg_type == "status" and content.get("execution_state") == "idle":
                    raise CellExecutionComplete()
                if msg_type == "stream" and content.get("name") == "stdout":
                    lines = (state.pop("buffer", "") + content.get("text", "")).split("\n")
                    state["buffer"] = lines.pop()[-(MAX_RESULT + 200):]  # a line may come in several messages
                    for line in lines:
                        if line.startswith(MARKER + nonces[cell_index] + ":") and len(line) < MAX_RESULT:
                            state["result"] = line.split(":", 1)[1]
                elif msg_type == "error":
                    state["error"] = str(content.get("ename", "Exception"))
                return None

        client = Client(nb, **kwargs)
        client.outcomes = {}
        return client


def _course_paths() -> list:
    """Paths of the grader's machine that the feedback must not show, longest first, with what replaces them."""
    pairs = [(str(pathlib.Path(p).resolve()), "<python>") for p in {sys.prefix, sys.base_prefix}]
    pairs += [(p, "<python>") for p in {sys.prefix, sys.base_prefix}]
    pairs += [(COURSE_LIBRARY + "/", ""), (str(HERE), "<course>"), (str(HERE.parent), "<course>")]
    library = Sandbox.library()
    if library is not None:
        pairs.append((str(library.parent) + "/", ""))
    return sorted(set(pairs), key=lambda pair: -len(pair[0]))


def _scrub(text: str) -> str:
    for path, replacement in _course_paths():
        text = text.replace(path, replacement)
    return text


def _scrub_output(output):
    """Remove the machine's paths (the Python environment, the course folder) from an output's text."""
    if "text" in output:
        output["text"] = _scrub(output["text"] if isinstance(output["text"], str) else "".join(output["text"]))
    if "traceback" in output:
        output["traceback"] = [_scrub(line) for line in output["traceback"]]
    if "evalue" in output:
        output["evalue"] = _scrub(output["evalue"])
    for key, value in list(output.get("data", {}).items()):
        if key.startswith("text/") and isinstance(value, (str, list)):
            output["data"][key] = _scrub(value if isinstance(value, str) else "".join(value))
