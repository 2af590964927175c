"""The grader of assignment 11 (optimizers and normalization): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/11_optim/.

Every task is written with torch and graded in a Python without ad_lib (its optim and normalization
modules have these rules), without NumPy, and without torch.optim (the set-up removes it from torch
and from the import system, as NumPy's entry is removed in assignment 9): one sandbox and kernel for
the five. The probes also run the student's functions under a TorchDispatchMode (`_op_meter`) that
records every torch operation: an operation of torch's own normalization layers (batch, group, layer
or instance norm), of its fused optimizers, of dropout (bernoulli), or the profiler's record_function
that torch.optim's `step` opens (an optimizer class found another way) scores nothing on its task.
The set-up also replaces the kernels of those aten operations by one that raises (torch.library), and
stops threads and processes from starting: the meter sees only the thread it was entered in.
Task 4 (batch normalization's backward pass, by hand) also runs while the probe watches torch's
automatic differentiation (watching_autodiff), with complex numbers forbidden (the complex step) and
the number of torch operations and the largest tensor limited, on batches large enough that finite
differences (one forward pass per entry, or all of them at once in one large tensor) exceed both.

Truths, all computed here: tasks 1 and 2 by the grader's own update rules (torch.optim.SGD's and
torch.optim.Adam's arithmetic: the notebook's visible tests hold the model answers to torch.optim, and
the test suite holds them to these rules, so the two agree); task 3 by
the change of variables derived in the notebook's model answer; task 4 by torch.autograd through
torch.nn.functional.batch_norm in training mode; task 5 by the grader's draws of the same generator.
"""

import torch
from grading import ONE_THREAD, Part, Restricted, Task, Wrong, close, operation_meter, watching_autodiff

F64 = torch.float64

# torch.optim is imported by torch itself: its entries in sys.modules are replaced by None (an import of
# it, under any name, then raises ModuleNotFoundError) and the attribute is deleted, after torch._dynamo
# (which entering a TorchDispatchMode imports) has been imported with it. Its classes stay reachable
# (torch.profiler.Optimizer, and its subclasses): the meter counts their construction and their steps. NumPy is absent too,
# so that no computation runs outside the operation meter's view.
SETUP = """import sys

sys.modules["numpy"] = None  # absent: this assignment is written with torch
import math
import torch
import torch._dynamo  # what torch's dispatch modes import, which needs torch.optim

for _entry in [key for key in sys.modules if key == "torch.optim" or key.startswith("torch.optim.")]:
    sys.modules[_entry] = None  # absent: the update rules are written by hand
del torch.optim, _entry
F64 = torch.float64
torch.set_num_threads(1)  # small tensors: one thread is faster, and steadier, than several

# torch's kernels of the operations the meter forbids (normalization layers, fused optimizers, dropout,
# bernoulli) raise, in every thread: the meter, a TorchDispatchMode, sees only the thread it was entered in
import warnings


def _refuse(*args, **kwargs):
    raise RuntimeError("torch's normalization layers, fused optimizers and dropout are not available here: "
                       "write the rule yourself")


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
    _refuse.kernels = torch.library.Library("aten", "IMPL")
    for _op in sorted(torch._C._dispatch_get_all_op_names()):
        if _op.startswith("aten::") and any(word in _op for word in ("batch_norm", "group_norm", "layer_norm",
                                                                   "instance_norm", "_fused_", "dropout", "bernoulli")):
            for _key in ("CPU", "CUDA"):
                _refuse.kernels.impl(_op[len("aten::"):], _refuse, _key)
del _op, _key

""" + ONE_THREAD
WITHOUT = {"setup": SETUP, "without": ["ad_lib", "numpy"],
           "why": "every task is written with torch and graded in a Python without ad_lib, NumPy and torch.optim "
                  "(no library optimizer or normalization layer does the work)"}


def _gen(rng):
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _op_meter():
    """The probes' meter (grading.operation_meter, sent with every probe) with the operators this assignment
    forbids as `banned` (their names), and the construction of any of torch.optim's classes counted as one."""
    import torch

    class OpMeter(operation_meter()):
        def __init__(self):
            super().__init__(watch="batch_norm|group_norm|layer_norm|instance_norm|_fused_|dropout|bernoulli|profiler")
            self.banned = self.matched
            self.restore = None

        def __enter__(self):
            # torch.optim's classes, however they were found, construct an Optimizer: count them
            base = getattr(getattr(torch, "profiler", None), "Optimizer", None)
            if isinstance(base, type):
                original, meter = base.__init__, self

                def counted(optimizer, *args, **kwargs):
                    if "torch.optim.Optimizer" not in meter.banned:
                        meter.banned.append("torch.optim.Optimizer")
                    return original(optimizer, *args, **kwargs)

                base.__init__, self.restore = counted, (base, original)
            return super().__enter__()

        def __exit__(self, *exc):
            try:
                return super().__exit__(*exc)
            finally:
                if self.restore is not None:
                    self.restore[0].__init__ = self.restore[1]

    return OpMeter


def _no_banned(banned, words):
    if banned:
        raise Wrong(f"{words} ran an operation of torch's own optimizers, normalization layers or dropout "
                    f"({', '.join(str(b) for b in banned[:3])}): write the rule yourself")


def _quadratic(generator, n):
    """A positive definite quadratic 1/2 x^T A x - b^T x: (A, b)."""
    Q = torch.randn(n, n, generator=generator, dtype=F64)
    return Q @ Q.T / n + 0.5 * torch.eye(n, dtype=F64), torch.randn(n, generator=generator, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Task 1: one step of SGD with momentum, as torch.optim.SGD takes it (dampening 0)
# ---------------------------------------------------------------------------------------------

def momentum_probe(runs):
    import torch

    meter = _op_meter()
    answers = []
    for A, b, x, buf, lr, mu, nesterov, steps in runs:
        watch, states, unchanged = meter(), [], True
        with watch:
            for _ in range(steps):
                g = A @ x - b
                arguments = [x, g, buf]
                kept = [None if t is None else t.clone() for t in arguments]
                x, buf = momentum_step(x, g, buf, lr, mu, nesterov=nesterov)
                unchanged = unchanged and all(k is None or torch.equal(k, t) for k, t in zip(kept, arguments))
                states.append([x, buf])
        answers.append([states, unchanged, watch.banned])
    return answers


def _momentum_truth(A, b, x, buf, lr, mu, nesterov, steps):
    states = []
    for _ in range(steps):
        g = A @ x - b
        buf = g.clone() if buf is None else mu * buf + g
        x = x - lr * (g + mu * buf if nesterov else buf)
        states.append((x, buf))
    return states


def _momentum_check(words):
    def check(result, runs):
        if not isinstance(result, list) or len(result) != len(runs):
            raise Wrong("the probe's result has the wrong form")
        for (states, unchanged, banned), run in zip(result, runs):
            _no_banned(banned, "momentum_step")
            truth = _momentum_truth(*run)
            if not isinstance(states, list) or len(states) != len(truth):
                raise Wrong("the probe's result has the wrong form")
            for k, (got, (x, buf)) in enumerate(zip(states, truth), start=1):
                if not isinstance(got, list) or len(got) != 2:
                    raise Wrong("momentum_step should return a pair (new_param, new_buf)")
                close(got[1], buf, rtol=1e-10, atol=1e-12, what=f"the buffer after step {k} ({words})")
                close(got[0], x, rtol=1e-10, atol=1e-12, what=f"the parameters after step {k} ({words})")
            if not unchanged:
                raise Wrong("momentum_step changed its arguments in place: return new tensors")
    return check


def _momentum_inputs(kind):
    def make(rng):
        generator, runs = _gen(rng), []
        for nesterov in ((False, True) if kind == "first" else (kind == "nesterov",) * 2):
            n = rng.randint(2, 6)
            A, b = _quadratic(generator, n)
            x = torch.randn(n, generator=generator, dtype=F64)
            buf = None if kind == "first" else torch.randn(n, generator=generator, dtype=F64)
            steps = 1 if kind == "first" else rng.randint(4, 7)
            runs.append((A, b, x, buf, round(rng.uniform(0.02, 0.3), 4), round(rng.uniform(0.5, 0.95), 4),
                         nesterov, steps))
        return {"runs": runs}
    return make


TASK1 = Task(
    restricted=Restricted(cells=["task1_momentum"], **WITHOUT),
    parts=[
        Part(0.5, "the first step (buf None): the buffer starts as the gradient, as torch.optim.SGD's does, with "
                  "plain and Nesterov momentum", momentum_probe, _momentum_check("the first step"),
             _momentum_inputs("first")),
        Part(1, "heavy-ball momentum over several steps from a given buffer, on a quadratic (the arguments "
                "left unchanged)", momentum_probe,
             _momentum_check("heavy-ball momentum"), _momentum_inputs("heavy-ball")),
        Part(1, "Nesterov momentum over several steps from a given buffer, on a quadratic", momentum_probe,
             _momentum_check("Nesterov momentum"), _momentum_inputs("nesterov")),
    ])
for _part in TASK1.parts:
    _part.helpers = (operation_meter, _op_meter)


# ---------------------------------------------------------------------------------------------
# Task 2: one step of Adam with bias correction, as torch.optim.Adam takes it
# ---------------------------------------------------------------------------------------------

def adam_probe(runs):
    import torch

    meter = _op_meter()
    answers = []
    for x, m, v, t, lr, betas, eps, grads in runs:
        watch, states, unchanged = meter(), [], True
        with watch:
            for g in grads:
                arguments = [x, g, m, v]
                kept = [a.clone() for a in arguments]
                x, m, v = adam_step(x, g, m, v, t, lr, betas, eps)
                unchanged = unchanged and all(torch.equal(k, a) for k, a in zip(kept, arguments))
                states.append([x, m, v])
                t += 1
        answers.append([states, unchanged, watch.banned])
    return answers


def _adam_truth(x, m, v, t, lr, betas, eps, grads):
    """torch.optim.Adam's arithmetic: step size lr / (1 - b1^t), denominator sqrt(v) / sqrt(1 - b2^t) + eps."""
    b1, b2 = betas
    states = []
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr / (1 - b1**t) * m / (v.sqrt() / (1 - b2**t) ** 0.5 + eps)
        states.append((x, m, v))
        t += 1
    return states


def _adam_check(words, which):
    def check(result, runs):
        if not isinstance(result, list) or len(result) != len(runs):
            raise Wrong("the probe's result has the wrong form")
        for (states, unchanged, banned), run in zip(result, runs):
            _no_banned(banned, "adam_step")
            truth = _adam_truth(*run)
            if not isinstance(states, list) or len(states) != len(truth):
                raise Wrong("the probe's result has the wrong form")
            for k, (got, want) in enumerate(zip(states, truth), start=1):
                if not isinstance(got, list) or len(got) != 3:
                    raise Wrong("adam_step should return a triple (new_param, new_m, new_v)")
                if which == "moments":
                    close(got[1], want[1], rtol=1e-10, atol=1e-13, what=f"m after step {k} ({words})")
                    close(got[2], want[2], rtol=1e-10, atol=1e-15, what=f"v after step {k} ({words})")
                else:
                    close(got[0], want[0], rtol=1e-10, atol=1e-12, what=f"the parameters after step {k} ({words})")
            if not unchanged:
                raise Wrong("adam_step changed its arguments in place: return new tensors")
    return check


def _adam_inputs(kind):
    def make(rng):
        generator, runs = _gen(rng), []
        for resumed in (False, True) if kind == "bias" else (False, False):
            n = rng.randint(2, 6)
            betas = (round(rng.uniform(0.8, 0.95), 3), round(rng.uniform(0.95, 0.999), 4))
            scale, eps = 1.0, 10 ** -rng.uniform(13, 14)  # too small to matter at this scale
            if kind == "eps":  # gradients of the size of eps: where it stands matters
                eps = 10 ** -rng.uniform(2, 4)
                scale = eps * rng.uniform(0.3, 3)
            x = torch.randn(n, generator=generator, dtype=F64)
            if resumed:  # a run resumed at step t, from moments of earlier steps
                t = rng.randint(3, 40)
                m = 0.3 * torch.randn(n, generator=generator, dtype=F64)
                v = 0.5 + torch.rand(n, generator=generator, dtype=F64)
            else:
                t, m, v = 1, torch.zeros(n, dtype=F64), torch.zeros(n, dtype=F64)
            grads = [scale * torch.randn(n, generator=generator, dtype=F64) for _ in range(rng.randint(3, 6))]
            runs.append((x, m, v, t, round(rng.uniform(0.01, 0.2), 4), betas, eps, grads))
        return {"runs": runs}
    return make


TASK2 = Task(
    restricted=Restricted(cells=["task2_adam"], **WITHOUT),
    parts=[
        Part(1, "the moments m and v over several steps from zero (the arguments left unchanged)", adam_probe,
             _adam_check("the moments", "moments"), _adam_inputs("moments")),
        Part(1, "the parameters with bias correction: the first steps from t = 1, and a run resumed at a later t",
             adam_probe, _adam_check("bias correction", "param"), _adam_inputs("bias")),
        Part(0.5, "eps where torch.optim.Adam puts it, added to sqrt(v_hat), on gradients of the size of eps",
             adam_probe, _adam_check("gradients of the size of eps", "param"), _adam_inputs("eps")),
    ])
for _part in TASK2.parts:
    _part.helpers = (operation_meter, _op_meter)


# ---------------------------------------------------------------------------------------------
# Task 3: the slides' momentum from PyTorch's, by a change of variables
# ---------------------------------------------------------------------------------------------

def slides_probe(lr, mu, nesterov, states):
    import torch

    meter = _op_meter()
    watch, answers, unchanged = meter(), [], True
    with watch:
        for p, buf in states:
            kept = [p.clone(), buf.clone()]
            got = to_slides(p, buf, lr, mu, nesterov=nesterov)
            unchanged = unchanged and torch.equal(kept[0], p) and torch.equal(kept[1], buf)
            answers.append(list(got) if type(got) in (tuple, list) else got)
    return [answers, unchanged, watch.banned]


def _torch_trajectory(A, b, p, buf, lr, mu, nesterov, steps):
    """PyTorch's states (param, buf) along steps of SGD with momentum from (p, buf), p included first."""
    states = [(p, buf)]
    for x, buf in _momentum_truth(A, b, p, buf, lr, mu, nesterov, steps):
        states.append((x, buf))
    return states


def _slides_check(words):
    def check(result, lr, mu, nesterov, states):
        answers, unchanged, banned = result
        _no_banned(banned, "to_slides")
        if not isinstance(answers, list) or len(answers) != len(states):
            raise Wrong("the probe's result has the wrong form")
        for k, (got, (p, buf)) in enumerate(zip(answers, states)):
            if not isinstance(got, list) or len(got) != 2:
                raise Wrong("to_slides should return a pair (theta, v)")
            v = lr * buf
            theta = p + mu * v if nesterov else p
            close(got[1], v, rtol=1e-10, atol=1e-13, what=f"the slides' v at step {k} ({words})")
            close(got[0], theta, rtol=1e-10, atol=1e-12, what=f"the slides' theta at step {k} ({words})")
        if not unchanged:
            raise Wrong("to_slides changed its arguments in place: return new tensors")
    return check


def _slides_inputs(nesterov):
    def make(rng):
        generator = _gen(rng)
        n = rng.randint(2, 6)
        A, b = _quadratic(generator, n)
        lr, mu = round(rng.uniform(0.02, 0.3), 4), round(rng.uniform(0.5, 0.95), 4)
        states = _torch_trajectory(A, b, torch.randn(n, generator=generator, dtype=F64),
                                   torch.randn(n, generator=generator, dtype=F64), lr, mu, nesterov, rng.randint(3, 6))
        return {"lr": lr, "mu": mu, "nesterov": nesterov, "states": states}
    return make


TASK3 = Task(
    restricted=Restricted(cells=["task3_to_slides"], **WITHOUT),
    parts=[
        Part(0.5, "heavy-ball momentum: the slides' state (theta, v) of the states along a run of PyTorch's SGD",
             slides_probe, _slides_check("heavy-ball momentum"), _slides_inputs(False)),
        Part(1, "Nesterov momentum: the slides' state (theta, v), whose gradient is taken at theta - gamma v, of "
                "the states along a run of PyTorch's SGD with nesterov=True", slides_probe,
             _slides_check("Nesterov momentum"), _slides_inputs(True)),
    ])
for _part in TASK3.parts:
    _part.helpers = (operation_meter, _op_meter)


# ---------------------------------------------------------------------------------------------
# Task 4: batch normalization's backward pass in training mode, by hand
# ---------------------------------------------------------------------------------------------

MAX_OPS = 1000  # torch operations allowed in one call of batch_norm_backward


def batch_norm_probe(cases):
    import torch

    meter = _op_meter()

    def run():
        answers = []
        for x, weight, grad_out, eps in cases:
            watch = meter()
            kept = [x.clone(), weight.clone(), grad_out.clone()]
            with watch:
                got = batch_norm_backward(x, weight, grad_out, eps)
            unchanged = all(torch.equal(k, a) for k, a in zip(kept, (x, weight, grad_out)))
            answers.append([list(got) if type(got) in (tuple, list) else got, unchanged, watch.banned, watch.ops,
                            watch.largest, watch.complex])
        return answers

    return watching_autodiff(run)


def _batch_norm_truth(x, weight, grad_out, eps):
    """torch.autograd through torch.nn.functional.batch_norm in training mode (no running statistics)."""
    leaves = [x.clone().requires_grad_(True), weight.clone().requires_grad_(True),
              torch.zeros_like(weight).requires_grad_(True)]
    out = torch.nn.functional.batch_norm(leaves[0], None, None, leaves[1], leaves[2], training=True, eps=eps)
    return torch.autograd.grad(out, leaves, grad_outputs=grad_out)


def _batch_norm_check(words, which):
    def check(result, cases):
        answers, torch_ran, _ = result
        if torch_ran:
            raise Wrong("batch_norm_backward ran torch's automatic differentiation: derive the backward pass by hand")
        if not isinstance(answers, list) or len(answers) != len(cases):
            raise Wrong("the probe's result has the wrong form")
        for (got, unchanged, banned, ops, largest, complex_seen), (x, weight, grad_out, eps) in zip(answers, cases):
            _no_banned(banned, "batch_norm_backward")
            if complex_seen:
                raise Wrong("batch_norm_backward computed with complex numbers (the complex step): derive the "
                            "backward pass by hand")
            shape = "x".join(str(s) for s in x.shape)
            batch = x.numel() // x.shape[1]
            allowance = 2 * batch * batch + 8 * x.numel()
            if ops > MAX_OPS or largest > allowance:
                raise Wrong(f"batch_norm_backward ran {ops} torch operations and made a tensor of {largest} elements "
                            f"for an input of shape {shape}, over the allowance ({MAX_OPS} operations, {allowance} "
                            "elements): finite differences are not a derivation; use the closed form")
            if type(got) is not list or len(got) != 3:
                raise Wrong("batch_norm_backward should return a triple (grad_x, grad_weight, grad_bias)")
            grad_x, grad_weight, grad_bias = _batch_norm_truth(x, weight, grad_out, eps)
            if which in ("affine", "all"):
                close(got[2], grad_bias, rtol=1e-10, atol=1e-12, what=f"grad_bias ({words}, shape {shape})")
                close(got[1], grad_weight, rtol=1e-10, atol=1e-12, what=f"grad_weight ({words}, shape {shape})")
            if which in ("x", "all"):
                close(got[0], grad_x, rtol=1e-9, atol=1e-12, what=f"grad_x ({words}, shape {shape})")
            if not unchanged:
                raise Wrong("batch_norm_backward changed its arguments in place")
    return check


def _batch_norm_inputs(kind):
    def make(rng):
        generator, cases = _gen(rng), []
        for _ in range(2):
            if kind == "3d":
                shape = (rng.randint(8, 12), rng.randint(2, 4), rng.randint(10, 16))
            else:
                shape = (rng.randint(40, 64), rng.randint(3, 6))
            C = shape[1]
            spread = 0.2 + 3 * torch.rand(C, generator=generator, dtype=F64)
            centre = 4 * torch.randn(C, generator=generator, dtype=F64)
            view = (1, C) + (1,) * (len(shape) - 2)
            x = centre.view(view) + spread.view(view) * torch.randn(*shape, generator=generator, dtype=F64)
            weight = 0.5 + torch.rand(C, generator=generator, dtype=F64)
            grad_out = torch.randn(*shape, generator=generator, dtype=F64)
            cases.append((x, weight, grad_out, 10 ** -rng.uniform(3, 5)))
        return {"cases": cases}
    return make


TASK4 = Task(
    restricted=Restricted(cells=["task4_batch_norm_backward"], **WITHOUT),
    parts=[
        Part(1, "grad_weight and grad_bias of an (N, C) batch", batch_norm_probe,
             _batch_norm_check("an (N, C) batch", "affine"), _batch_norm_inputs("2d")),
        Part(1.5, "grad_x of an (N, C) batch, through the batch mean and variance", batch_norm_probe,
             _batch_norm_check("an (N, C) batch", "x"), _batch_norm_inputs("2d")),
        Part(0.5, "an (N, C, L) batch: statistics over N and L, all three gradients", batch_norm_probe,
             _batch_norm_check("an (N, C, L) batch", "all"), _batch_norm_inputs("3d")),
    ])
for _part in TASK4.parts:
    _part.helpers = (watching_autodiff, operation_meter, _op_meter)


# ---------------------------------------------------------------------------------------------
# Task 5: dropout, with its 1 / (1 - p) scaling, from a given generator
# ---------------------------------------------------------------------------------------------

def dropout_probe(cases):
    import torch

    meter = _op_meter()
    watch, answers = meter(), []
    with watch:
        for x, p, seed in cases:
            answers.append(dropout(x, p, True, torch.Generator().manual_seed(seed)))
    return [answers, watch.banned]


def _dropout_truth(x, p, seed):
    keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype) >= p
    return torch.where(keep, x / (1 - p), torch.zeros_like(x)) if p < 1 else torch.zeros_like(x)


def check_dropout(result, cases):
    answers, banned = result
    _no_banned(banned, "dropout")
    if not isinstance(answers, list) or len(answers) != len(cases):
        raise Wrong("the probe's result has the wrong form")
    for got, (x, p, seed) in zip(answers, cases):
        close(got, _dropout_truth(x, p, seed), rtol=1e-12, atol=1e-14,
              what=f"dropout in training mode with p = {p} (the mask of torch.rand(x.shape, generator=generator) >= p)")


def dropout_modes_probe(x, p, seed, big):
    import torch

    meter = _op_meter()
    watch = meter()
    with watch:
        kept = x.clone()
        evaluated = dropout(x, p, False, torch.Generator().manual_seed(seed))
        same = type(evaluated) is torch.Tensor and evaluated.shape == x.shape and torch.equal(evaluated, kept)
        everything = dropout(x, 1.0, True, torch.Generator().manual_seed(seed))
        trained = dropout(big, p, True, torch.Generator().manual_seed(seed + 1))
        unchanged = torch.equal(x, kept)
    return [same, everything, trained, unchanged, watch.banned]


def check_dropout_modes(result, x, p, seed, big):
    same, everything, trained, unchanged, banned = result
    _no_banned(banned, "dropout")
    if same is not True:
        raise Wrong("in evaluation mode (training=False) dropout should return x unchanged")
    close(everything, torch.zeros_like(x), rtol=0, atol=0, what="dropout with p = 1 (every entry dropped, no NaN)")
    if type(trained) is not torch.Tensor or tuple(trained.shape) != tuple(big.shape):
        raise Wrong("dropout in training mode should return a tensor of the shape of x")
    dropped = trained == 0
    if not torch.allclose(trained[~dropped], big[~dropped] / (1 - p), rtol=1e-12, atol=0):
        raise Wrong("in training mode, each entry kept should be x / (1 - p)")
    fraction = float(dropped.double().mean())
    if abs(fraction - p) > 4 * (p * (1 - p) / big.numel()) ** 0.5 + 1e-3:
        raise Wrong(f"in training mode, about a fraction p = {p} of the entries should be dropped")
    if unchanged is not True:
        raise Wrong("dropout changed x in place")


def _dropout_inputs(rng):
    generator = _gen(rng)
    cases = []
    for _ in range(3):
        shape = (rng.randint(2, 6), rng.randint(3, 9))
        cases.append((torch.randn(*shape, generator=generator, dtype=F64), round(rng.uniform(0.1, 0.8), 3),
                      rng.randrange(2**31)))
    cases.append((torch.randn(4, generator=generator, dtype=F64), 0.0, rng.randrange(2**31)))
    return {"cases": cases}


def _dropout_modes_inputs(rng):
    generator = _gen(rng)
    p = round(rng.choice([rng.uniform(0.1, 0.4), rng.uniform(0.6, 0.85)]), 3)  # never near 1/2
    return {"x": torch.randn(rng.randint(2, 5), rng.randint(2, 6), generator=generator, dtype=F64), "p": p,
            "seed": rng.randrange(2**30), "big": 0.5 + torch.rand(40, 50, generator=generator, dtype=F64)}


TASK5 = Task(
    restricted=Restricted(cells=["task5_dropout"], **WITHOUT),
    parts=[
        Part(1, "training mode: the mask torch.rand(x.shape, generator=generator) >= p, the kept entries scaled "
                "by 1 / (1 - p) (the grader draws the same numbers); p = 0 keeps x", dropout_probe, check_dropout,
             _dropout_inputs),
        Part(0.5, "evaluation mode returns x; p = 1 gives zeros; in training mode each entry is 0 or x / (1 - p), "
                  "about a fraction p of them 0", dropout_modes_probe, check_dropout_modes, _dropout_modes_inputs),
    ])
for _part in TASK5.parts:
    _part.helpers = (operation_meter, _op_meter)

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4,
         "task5_tests": TASK5}
