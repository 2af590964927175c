"""The grader of assignment 10 (learning as optimization and the building blocks): hidden checks.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/10_layers/.

Every task is graded in one Python without ad_lib (ad_lib.layers has these layers), NumPy, SciPy and
scikit-learn, whose set-up (NO_CONVOLUTIONS) also replaces torch's convolutions, under every Python name
they have in Python (torch.conv2d, torch.convolution, torch.nn.functional.conv2d, torch._VF.conv2d,
torch.nn.grad.conv2d_input, ...), by an object that raises when called: torch.nn.Conv2d and its relatives
fail there. (torch.ops.aten's operators are left as they are: torch's own modules, imported lazily, index
tables by them; their kernels, for CPU and CUDA, are replaced by one that raises, through torch.library, in
every thread.) No thread or process may start there (ONE_THREAD): a dispatch mode sees only its own thread,
and a fresh Python has torch whole. The probes of tasks 2
to 4 also run the student's code under a TorchDispatchMode (`grading.operation_meter`) that records every aten
operator whose name is a convolution's (convolution, _convolution, conv2d, convolution_backward, the
cudnn / mkldnn / slow / depthwise kernels): whatever name reached it, a convolution operator that ran
costs the part. Task 4 also runs while the probe watches torch's automatic differentiation.

Truths, computed here with torch's own operators: task 1 from torch.nn.functional.conv1d's output length
and the windows it reads (a gradient of ones); tasks 2 and 3 by torch.nn.functional.conv1d / conv2d;
task 4 by torch.autograd.grad of torch.nn.functional.conv2d in its input (the adjoint); task 5 by
Newton's method on the strongly convex loss (to 1e-15), on load_digits split per student.
"""

import torch
from grading import ONE_THREAD, Part, Restricted, Task, Wrong, close, operation_meter, watching_autodiff

F64 = torch.float64

NO_CONVOLUTIONS = """import sys

sys.modules["numpy"] = None  # absent: this assignment is written with torch
import math
import re
import torch
import torch.nn.functional as F
import torch._VF
F64 = torch.float64
torch.set_num_threads(1)  # as the notebook's set-up: small tensors, steadier times


class _NoConvolution:  # stands in for a convolution of torch: calling it, or an overload (.default), raises

    def __call__(self, *args, **kwargs):
        raise RuntimeError("torch's convolutions are not available here: this task asks you to write the convolution")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self


_no_convolution = _NoConvolution()


_CONV = re.compile(r"conv(olution|_tbc|_transpose|_depthwise|[123]d)|slow_conv|thnn_conv")
for _where in (torch, F, torch._VF, torch.nn.grad):
    for _name in [n for n in dir(_where) if _CONV.search(n)] + ["conv1d", "conv2d", "conv_transpose2d"]:
        if _where is not torch.nn.grad or not _name.startswith("_"):
            setattr(_where, _name, _no_convolution)
del _where, _name

# torch's kernels of every aten convolution operator are replaced too, by one that raises, for every thread:
# the probes' operator records (a TorchDispatchMode) see only the thread they run in
import warnings


def _refuse(*args, **kwargs):
    _no_convolution()


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
    _NoConvolution.kernels = torch.library.Library("aten", "IMPL")
    for _op in sorted(torch._C._dispatch_get_all_op_names()):
        if _op.startswith("aten::") and _CONV.search(_op):
            for _key in ("CPU", "CUDA"):
                _NoConvolution.kernels.impl(_op[len("aten::"):], _refuse, _key)
del _op, _key
""" + ONE_THREAD
WITHOUT = {"setup": NO_CONVOLUTIONS, "without": ["ad_lib", "numpy", "scipy", "sklearn"],
           "why": "every task is written with torch and graded in a Python without ad_lib, NumPy, SciPy and "
                  "scikit-learn, where torch's convolutions are not available"}


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


# ---------------------------------------------------------------------------------------------
# Task 1: output sizes and the inputs no window reads
# ---------------------------------------------------------------------------------------------

def sizes_probe(cases, which):
    function = conv_output_size if which == "size" else unreached_inputs
    return [function(n, k, s, p) for n, k, s, p in cases]


def _truth_size(n, k, s, p):
    return torch.nn.functional.conv1d(torch.ones(1, 1, n, dtype=F64), torch.ones(1, 1, k, dtype=F64),
                                      stride=s, padding=p).shape[-1]


def _truth_unreached(n, k, s, p):
    leaf = torch.ones(1, 1, n, dtype=F64, requires_grad=True)
    out = torch.nn.functional.conv1d(leaf, torch.ones(1, 1, k, dtype=F64), stride=s, padding=p)
    (reads,) = torch.autograd.grad(out.sum(), leaf)
    return int((reads == 0).sum())


def _sizes_check(result, cases, which):
    truth = _truth_size if which == "size" else _truth_unreached
    if type(result) is not list or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for got, (n, k, s, p) in zip(result, cases):
        words = "the number of outputs" if which == "size" else "the number of inputs no window reads"
        if type(got) is not int:
            raise Wrong(f"{words} should be a Python int")
        if got != truth(n, k, s, p):
            raise Wrong(f"{words} is wrong for n = {n}, k = {k}, stride {s}, padding {p}")


def _sizes_inputs(which, strided):
    def make(rng):
        cases = []
        while len(cases) < 8:
            n, k = rng.randint(1, 40), rng.randint(1, 9)
            s, p = (rng.randint(2, 7), rng.randint(0, 3)) if strided else (1, rng.choice([0, 0, 1, 2]))
            if k > n + 2 * p or (strided and len(cases) < 5 and (n + 2 * p - k) % s == 0):
                continue  # most strided cases have a stride that skips inputs at the end
            cases.append((n, k, s, p))
        if which == "unreached":
            cases.append((rng.randint(12, 30), 2, rng.randint(4, 6), rng.randint(0, 1)))  # gaps between windows
        return {"cases": cases, "which": which}
    return make


TASK1 = Task(
    restricted=Restricted(cells=["task1_sizes"], **WITHOUT),
    parts=[Part(0.5, "the number of outputs with stride 1 (padding or not)", sizes_probe, _sizes_check,
                _sizes_inputs("size", False)),
           Part(0.5, "the number of outputs with strides and paddings, most of them where the stride skips inputs",
                sizes_probe, _sizes_check, _sizes_inputs("size", True)),
           Part(0.5, "the number of inputs that no window reads (at the end, and between windows when the "
                     "stride exceeds the kernel)", sizes_probe, _sizes_check, _sizes_inputs("unreached", True))])


# ---------------------------------------------------------------------------------------------
# Tasks 2 and 3: conv1d and conv2d
# ---------------------------------------------------------------------------------------------

def conv_probe(name, cases):
    meter = operation_meter()
    function = conv1d if name == "conv1d" else conv2d
    answers = []
    for x, w, s, p in cases:
        ran = meter(watch=r"conv(olution|_tbc|_transpose|_depthwise|[123]d)|slow_conv|thnn_conv")  # torch's convolutions
        with ran:
            got = function(x.clone(), w.clone(), stride=s, padding=p)
        answers.append([got, sorted(ran.matched)])
    return answers


def _conv_check(result, name, cases):
    reference = torch.nn.functional.conv1d if name == "conv1d" else torch.nn.functional.conv2d
    if type(result) is not list or len(result) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, ran), (x, w, s, p) in zip(result, cases):
        if ran:
            raise Wrong(f"{name} ran a convolution operator of torch: build the convolution yourself")
        close(got, reference(x, w, stride=s, padding=p), rtol=1e-10, atol=1e-12,
              what=f"{name} of an input of shape {tuple(x.shape)} with a weight of shape {tuple(w.shape)}, "
                   f"stride {s} and padding {p}")


def _conv1d_inputs(kind):
    def make(rng):
        generator, cases = _gen(rng), []
        for _ in range(3):
            b, c_in, c_out = (rng.randint(2, 3), rng.randint(2, 4), rng.randint(2, 4)) if kind == "channels" else (1, 1, 1)
            k, length = rng.randint(1, 5), rng.randint(6, 14)
            s, p = (rng.randint(2, 4), rng.randint(0, 2)) if kind == "strided" else (1, 0)
            cases.append((torch.randn(b, c_in, length, generator=generator, dtype=F64),
                          torch.randn(c_out, c_in, k, generator=generator, dtype=F64), s, p))
        return {"name": "conv1d", "cases": cases}
    return make


def _conv2d_inputs(kind):
    def make(rng):
        generator, cases = _gen(rng), []
        for number in range(3):
            b, c_in, c_out = (rng.randint(2, 3), rng.randint(2, 3), rng.randint(2, 4)) if kind == "channels" else (1, 1, 1)
            kh, kw, h, w = rng.randint(1, 4), rng.randint(1, 4), rng.randint(5, 10), rng.randint(5, 10)
            if kind == "one channel":
                s, p = 1, 0
            elif kind == "channels":
                s, p = rng.randint(1, 2), rng.randint(0, 1)
            elif number == 0:  # the same in both dimensions, as an int
                s, p = rng.randint(2, 3), rng.randint(1, 2)
            else:  # a pair, different per dimension
                s, p = (rng.randint(1, 3), rng.randint(2, 4)), (rng.randint(0, 2), rng.randint(0, 2))
                s, p = (s, p) if number == 1 else (s[::-1], p[::-1])
            cases.append((torch.randn(b, c_in, h, w, generator=generator, dtype=F64),
                          torch.randn(c_out, c_in, kh, kw, generator=generator, dtype=F64), s, p))
        return {"name": "conv2d", "cases": cases}
    return make


def _conv_task(cell, inputs, words):
    task = Task(restricted=Restricted(cells=[cell], **WITHOUT),
                parts=[Part(1, what, conv_probe, _conv_check, inputs(kind)) for kind, what in words])
    for part in task.parts:
        part.helpers = (operation_meter,)
    return task


TASK2 = _conv_task("task2_conv1d", _conv1d_inputs, [
    ("one channel", "one channel, stride 1, no padding, against torch's conv1d (run by the grader)"),
    ("strided", "one channel, with strides and paddings (some skipping inputs at the end)"),
    ("channels", "several channels in and out, a batch, stride 1, no padding")])
TASK3 = _conv_task("task3_conv2d", _conv2d_inputs, [
    ("one channel", "one channel, stride 1, no padding, without a convolution operator, against torch's conv2d "
                    "(run by the grader)"),
    ("strided", "one channel, strides and paddings as ints and as pairs that differ per dimension"),
    ("channels", "several channels in and out, a batch, with stride and padding")])


# ---------------------------------------------------------------------------------------------
# Task 4: the transposed convolution, the adjoint of conv2d
# ---------------------------------------------------------------------------------------------

def transpose_probe(cases):
    meter = operation_meter()

    def run():
        answers = []
        for y, w, size, s, p in cases:
            ran = meter(watch=r"conv(olution|_tbc|_transpose|_depthwise|[123]d)|slow_conv|thnn_conv")  # torch's convolutions
            with ran:
                got = conv_transpose2d(y.clone(), w.clone(), tuple(size), stride=s, padding=p)
            answers.append([got, sorted(ran.matched)])
        return answers

    return watching_autodiff(run)


def _adjoint(y, w, size, s, p):
    leaf = torch.zeros(y.shape[0], w.shape[1], *size, dtype=F64, requires_grad=True)
    (back,) = torch.autograd.grad(torch.nn.functional.conv2d(leaf, w, stride=s, padding=p), leaf, grad_outputs=y)
    return back


def _transpose_check(result, cases):
    answers, torch_ran, _ = result
    if torch_ran:
        raise Wrong("conv_transpose2d ran torch's automatic differentiation: write the adjoint by hand, with fold")
    if type(answers) is not list or len(answers) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for (got, ran), (y, w, size, s, p) in zip(answers, cases):
        if ran:
            raise Wrong("conv_transpose2d ran a convolution operator of torch: build the adjoint yourself")
        close(got, _adjoint(y, w, size, s, p), rtol=1e-10, atol=1e-12,
              what=f"the adjoint for inputs of size {tuple(size)}, a weight of shape {tuple(w.shape)}, stride {s} "
                   f"and padding {p}")


def _transpose_inputs(strided):
    def make(rng):
        generator, cases = _gen(rng), []
        while len(cases) < 3:
            b, c_in, c_out = rng.randint(1, 2), rng.randint(1, 3), rng.randint(1, 3)
            kh, kw, h, w = rng.randint(1, 4), rng.randint(1, 4), rng.randint(5, 10), rng.randint(5, 10)
            if strided:
                s, p = (rng.randint(2, 3), rng.randint(2, 3)), (rng.randint(0, 1), rng.randint(0, 1))
                if len(cases) == 0:
                    s, p = s[0], p[0]
            else:
                s, p = 1, rng.randint(0, 1)
            sh, sw = (s, s) if isinstance(s, int) else s
            ph, pw = (p, p) if isinstance(p, int) else p
            if kh > h + 2 * ph or kw > w + 2 * pw or (strided and (h + 2 * ph - kh) % sh == 0):
                continue  # strided: the rows skip inputs at the end, so the size is not read from y
            shape = ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
            cases.append((torch.randn(b, c_out, *shape, generator=generator, dtype=F64),
                          torch.randn(c_out, c_in, kh, kw, generator=generator, dtype=F64), [h, w], s, p))
        return {"cases": cases}
    return make


TASK4 = Task(
    restricted=Restricted(cells=["task4_conv_transpose2d"], **WITHOUT),
    parts=[Part(1, "the adjoint of conv2d with stride 1 (padding or not), with channels, against torch.autograd's "
                   "backward pass of torch's conv2d (run by the grader)", transpose_probe, _transpose_check,
                _transpose_inputs(False)),
           Part(1, "strides of 2 and 3 (ints and pairs) where the stride skips inputs, so that the size given "
                   "decides the shape", transpose_probe, _transpose_check, _transpose_inputs(True))])
for _part in TASK4.parts:
    _part.helpers = (watching_autodiff, operation_meter)


# ---------------------------------------------------------------------------------------------
# Task 5: logistic regression by gradient descent
# ---------------------------------------------------------------------------------------------

_DIGITS = {}


def _digits():
    """scikit-learn's 8-by-8 digits (what load_digits returns), read from the file it ships: importing
    scikit-learn would take a second of every autograde."""
    if not _DIGITS:
        import gzip
        import importlib.util
        import pathlib

        folder = pathlib.Path(importlib.util.find_spec("sklearn").origin).parent
        with gzip.open(folder / "datasets" / "data" / "digits.csv.gz", "rt") as file:
            table = torch.tensor([float(v) for v in file.read().replace(",", " ").split()], dtype=F64).reshape(-1, 65)
        _DIGITS["x"], _DIGITS["y"] = table[:, :64] / 16, table[:, 64].long()
    return _DIGITS["x"], _DIGITS["y"]


def logistic_probe(X, y, X_test, y_test, lam):
    w, b = fit_logistic(X.clone(), y.clone(), lam)
    return [w, b]


def _risk(w, b, X, y, lam):
    return float(torch.nn.functional.softplus(-(2 * y - 1) * (X @ w + b)).mean() + lam / 2 * ((w * w).sum() + b * b))


def _optimum(X, y, lam):
    """The minimum of the regularized logistic loss, by Newton's method."""
    n, d = X.shape
    Z = torch.cat([X, torch.ones(n, 1, dtype=F64)], dim=1)
    theta = torch.zeros(d + 1, dtype=F64)
    for _ in range(50):
        prob = torch.sigmoid(Z @ theta)
        slope = Z.T @ (prob - y) / n + lam * theta
        if float(slope.norm()) < 1e-14:
            break
        theta = theta - torch.linalg.solve((Z * (prob * (1 - prob))[:, None]).T @ Z / n + lam * torch.eye(d + 1, dtype=F64),
                                           slope)
    return _risk(theta[:d], theta[d], X, y, lam)


def _weights(result, X):
    if type(result) is not list or len(result) != 2:
        raise Wrong("fit_logistic should return a pair (w, b)")
    w, b = result
    if type(w) is not torch.Tensor or tuple(w.shape) != (X.shape[1],) or w.dtype != F64:
        raise Wrong(f"w should be a float64 tensor of shape ({X.shape[1]},)")
    if type(b) is torch.Tensor and b.numel() == 1 and b.dim() == 0:
        b = float(b)
    if type(b) not in (int, float):
        raise Wrong("b should be a float or a 0-dimensional tensor")
    return w, float(b)


def _loss_check(result, X, y, X_test, y_test, lam):
    w, b = _weights(result, X)
    if not _risk(w, b, X, y, lam) <= _optimum(X, y, lam) + 1e-7:
        raise Wrong("the training loss L(w, b) is not within 1e-7 of its minimum")


def _accuracy_check(result, X, y, X_test, y_test, lam):
    w, b = _weights(result, X)
    accuracy = float(((X_test @ w + b > 0).to(F64) == y_test).to(F64).mean())
    if not accuracy >= 0.9:
        raise Wrong(f"the test accuracy is {accuracy:.3f}, below 0.9")


def _logistic_inputs(rng):
    images, labels = _digits()
    first, second = rng.sample(range(10), 2)
    keep = (labels == first) | (labels == second)
    X, y = images[keep], (labels[keep] == second).to(F64)
    order = torch.randperm(len(y), generator=_gen(rng))
    train, test = order[:rng.randint(150, 200)], order[200:]
    return {"X": X[train], "y": y[train], "X_test": X[test], "y_test": y[test], "lam": round(rng.uniform(0.05, 0.2), 4)}


TASK5 = Task(
    restricted=Restricted(cells=["task5_fit_logistic"], **WITHOUT),
    parts=[Part(1, "the training loss within 1e-7 of the minimum the grader finds by Newton's method, on a binary "
                   "split of the digits", logistic_probe, _loss_check, _logistic_inputs),
           Part(0.5, "the test accuracy of the classifier, at least 90% on the held-out digits", logistic_probe,
                _accuracy_check, _logistic_inputs)])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4, "task5_tests": TASK5}
