"""The grader of assignment 4 (reverse mode and back-propagation): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/04_reverse_mode/.
"""

import math

import torch
from grading import (COURSE_LIBRARY, Part, Restricted, Sandbox, Task, Wrong, close, verdict_check,
                     watching_autodiff)

F64 = torch.float64


def _number(rng, low, high, digits=3):
    return round(rng.uniform(low, high), digits)


# ---------------------------------------------------------------------------------------------
# Tasks 1 and 2: one node of the scalar engine. The probes look at what the node is (its data, its
# parents), call its _backward themselves with adjoints they chose, and back-propagate through
# expressions that use it; an answer made of other Value operations has other parents, and its
# last node sends the adjoint to them. While the rule runs, the probe watches torch's gradient
# engine (reverse and forward mode) and ad_lib's levels (one per jvp, vjp, grad or trace).
# ---------------------------------------------------------------------------------------------

def sin_node(x0):
    a = Value(x0)
    out = value_sin(a)
    if not isinstance(out, Value):
        return None
    parents = list(out._parents) if isinstance(out._parents, (tuple, list)) else []
    return [out.data, len(parents), len(parents) > 0 and parents[0] is a]


def check_sin_node(result, x0):
    if result is None:
        raise Wrong("value_sin should return a Value")
    close(result[0], math.sin(x0), what="out.data")
    if result[1] != 1 or not result[2]:
        raise Wrong("out._parents should hold exactly a: one new node whose parent is the input")


def sin_rule(x0, before, upstream):
    def run():
        a = Value(x0)
        out = value_sin(a)
        adjoints = []
        a.grad = before
        for g in upstream:
            out.grad = g
            out._backward()
            adjoints.append(a.grad)
        return adjoints

    return watching_autodiff(run)


def _check_watched(result, task):
    if result[1]:
        raise Wrong(f"the {task} ran torch's automatic differentiation: derive the rule and write it yourself")
    if result[2]:
        raise Wrong(f"the {task} ran ad_lib's automatic differentiation: derive the rule and write it yourself")


def check_sin_rule(result, x0, before, upstream):
    _check_watched(result, "node or its backward rule")
    expected = before
    for got, g in zip(result[0], upstream):
        expected += math.cos(x0) * g
        close(got, expected, what="a.grad after out._backward() (it adds cos(a) times out.grad to what a.grad held)")
    if len(result[0]) != len(upstream):
        raise Wrong("the probe's result has the wrong form")


def sin_expressions(x0, a0, b0):
    x = Value(x0)
    y = value_sin(x) + value_sin(x) * x + value_sin(value_sin(x))
    y.backward()
    a, b = Value(a0), Value(b0)
    z = value_sin(a * b) * a
    z.backward()
    once = [a.grad, b.grad]
    z.backward()
    return [y.data, x.grad, once, [a.grad, b.grad]]


def check_sin_expressions(result, x0, a0, b0):
    s, c = math.sin(x0), math.cos(x0)
    close(result[0], s * (1 + x0) + math.sin(s), rtol=1e-12, what="the value of an expression that uses value_sin")
    close(result[1], c + s + x0 * c + math.cos(s) * c, rtol=1e-12, atol=1e-12,
          what="the derivative of an expression that uses value_sin three times on one leaf")
    ab = a0 * b0
    da, db = math.cos(ab) * b0 * a0 + math.sin(ab), math.cos(ab) * a0 * a0
    for got, times in ((result[2], 1), (result[3], 2)):
        close(got[0], times * da, rtol=1e-12, atol=1e-12, what="the derivative with respect to a of sin(a b) a")
        close(got[1], times * db, rtol=1e-12, atol=1e-12, what="the derivative with respect to b of sin(a b) a")


TASK1 = Task(parts=[
    Part(0.5, "out.data is sin(a), and out is one new node whose only parent is a", sin_node, check_sin_node,
         lambda rng: {"x0": _number(rng, -3.0, 3.0)}),
    Part(1, "out._backward, called by the grader, adds cos(a) times out.grad to a.grad (it accumulates), "
            "with no automatic differentiation", sin_rule, check_sin_rule,
         lambda rng: {"x0": _number(rng, -3.0, 3.0), "before": _number(rng, -2.0, 2.0),
                      "upstream": [_number(rng, 0.5, 2.0), _number(rng, -2.0, -0.5)]}),
    Part(0.5, "backward() through expressions that use value_sin: a leaf with several children, two leaves, "
              "and a second backward() that adds the same again", sin_expressions, check_sin_expressions,
         lambda rng: {"x0": _number(rng, -2.5, 2.5), "a0": _number(rng, -1.5, 1.5), "b0": _number(rng, -1.5, 1.5)}),
])


def div_node(u0, v0):
    a, b = Value(u0), Value(v0)
    out = value_div(a, b)
    if not isinstance(out, Value):
        return None
    parents = list(out._parents) if isinstance(out._parents, (tuple, list)) else []
    return [out.data, len(parents), len(parents) == 2 and parents[0] is a and parents[1] is b]


def check_div_node(result, u0, v0):
    if result is None:
        raise Wrong("value_div should return a Value")
    close(result[0], u0 / v0, what="out.data")
    if result[1] != 2 or not result[2]:
        raise Wrong("out._parents should be a and b, in that order: one new node whose parents are the inputs")


def div_rule(u0, v0, before, upstream):
    def run():
        a, b = Value(u0), Value(v0)
        out = value_div(a, b)
        adjoints = []
        a.grad, b.grad = before
        for g in upstream:
            out.grad = g
            out._backward()
            adjoints.append([a.grad, b.grad])
        return adjoints

    return watching_autodiff(run)


def check_div_rule(result, u0, v0, before, upstream):
    _check_watched(result, "node or its backward rule")
    if len(result[0]) != len(upstream):
        raise Wrong("the probe's result has the wrong form")
    ga, gb = before
    for got, g in zip(result[0], upstream):
        ga, gb = ga + g / v0, gb - g * u0 / v0**2
        close(got[0], ga, what="a.grad after out._backward() (it adds out.grad times d(a/b)/da to what a.grad held)")
        close(got[1], gb, what="b.grad after out._backward() (it adds out.grad times d(a/b)/db to what b.grad held)")


def div_expressions(w0, u0, v0):
    x = Value(w0)
    r = value_div(x, x)
    r.backward()
    u, v = Value(u0), Value(v0)
    y = value_div(u * u + v, v * u + 2.5) + value_div(Value(1.0), v)
    y.backward()
    return [r.data, x.grad, y.data, u.grad, v.grad]


def check_div_expressions(result, w0, u0, v0):
    close(result[0], 1.0, rtol=1e-12, what="the value of x / x (the same Value on both sides)")
    close(result[1], 0.0, atol=1e-12, what="the derivative of x / x (the same Value on both sides)")
    n, d = u0 * u0 + v0, v0 * u0 + 2.5
    close(result[2], n / d + 1 / v0, rtol=1e-12, what="the value of a composite expression that uses value_div")
    close(result[3], (2 * u0 * d - n * v0) / d**2, rtol=1e-12, atol=1e-12,
          what="the derivative of a composite expression with respect to its first leaf")
    close(result[4], (d - n * u0) / d**2 - 1 / v0**2, rtol=1e-12, atol=1e-12,
          what="the derivative of a composite expression with respect to its second leaf")


def _quotient(rng):
    return {"u0": _number(rng, -3.0, 3.0), "v0": rng.choice([-1, 1]) * _number(rng, 0.5, 2.5)}


TASK2 = Task(parts=[
    Part(0.5, "out.data is a / b, and out is one new node whose parents are a and b", div_node, check_div_node,
         _quotient),
    Part(1, "out._backward, called by the grader, adds both reverse partials, to a.grad and to b.grad "
            "(it accumulates), with no automatic differentiation", div_rule, check_div_rule,
         lambda rng: {**_quotient(rng), "before": [_number(rng, -2.0, 2.0), _number(rng, -2.0, 2.0)],
                      "upstream": [_number(rng, 0.5, 2.0), _number(rng, -2.0, -0.5)]}),
    Part(0.5, "backward() through x / x (the same Value on both sides) and a composite expression",
         div_expressions, check_div_expressions,
         lambda rng: {"w0": rng.choice([-1, 1]) * _number(rng, 0.5, 3.0), "u0": _number(rng, 0.2, 2.0),
                      "v0": rng.choice([-1, 1]) * _number(rng, 0.5, 1.0)}),
])

for _part in TASK1.parts + TASK2.parts:
    if _part.probe in (sin_rule, div_rule):
        _part.helpers = (watching_autodiff,)


# ---------------------------------------------------------------------------------------------
# Task 3: back-propagation by hand, run in a Python without torch, numpy and ad_lib
# ---------------------------------------------------------------------------------------------

def hand_values(points):
    return [hand_backprop(x, y) for x, y in points]


def _adjoints(x, y):
    e = math.exp(x * y)
    return {"f": x * e, "b_bar": x, "a_bar": x * e, "y_bar": x * x * e, "x_bar": e * (1 + x * y)}


def _hand_check(key, words):
    def check(result, points):
        if not isinstance(result, list) or len(result) != len(points):
            raise Wrong("the probe's result has the wrong form")
        for got, (x, y) in zip(result, points):
            if type(got) is not dict or key not in got:
                raise Wrong(f"hand_backprop should return a dict with the key {key!r}")
            if type(got[key]) is not float:
                raise Wrong(f"{key} should be a Python float")
            close(got[key], _adjoints(x, y)[key], rtol=1e-12, atol=1e-12, what=f"{words} at one of the points")
    return check


def _points(rng):
    return {"points": [(_number(rng, -1.5, 1.5), _number(rng, -1.5, 1.5)) for _ in range(3)]}


_KEYS = [("f", 0.5, "the value f"), ("b_bar", 0.5, "the adjoint of b"), ("a_bar", 0.5, "the adjoint of a"),
         ("y_bar", 0.5, "the adjoint of y"), ("x_bar", 1, "the adjoint of x (the sum over its two children)")]

TASK3 = Task(
    restricted=Restricted(cells=["task3_hand_backprop"], setup="import math", without=["torch", "ad_lib", "numpy"],
                          why="task 3 is done by hand with math: it is graded in a Python without torch, numpy "
                              "and ad_lib"),
    parts=[Part(points, f"{words}, a Python float, at three points", hand_values, _hand_check(key, words), _points)
           for key, points, words in _KEYS])


# ---------------------------------------------------------------------------------------------
# Task 4: gradient descent with ad_lib.reverse.grad. The probe replaces ad_lib.reverse.grad, and
# every name of the notebook bound to it (however it was imported), by a grad whose gradient
# functions return A theta - c, for a matrix A and a vector c that the grader chose: only a descent
# that steps with what ad_lib.reverse.grad returns follows it (one that gets its gradient from
# torch.autograd or torch.func follows the true gradient). It also records the loss handed to it,
# whose value and gradient it evaluates with a copy of ad_lib.reverse read afresh from the course's
# library, which no code of the notebook has changed.
# ---------------------------------------------------------------------------------------------

def instrumented_fit(features, targets, theta0, A, c, runs, records, library):
    import importlib.util
    import os
    import sys

    import torch

    genuine = None
    if records:
        path = next(p for p in library if os.path.exists(p))
        spec = importlib.util.spec_from_file_location("ad_lib._grading_reverse", path)
        genuine = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(genuine)

    modules = []
    for module in (sys.modules.get("ad_lib.reverse"), getattr(sys.modules.get("ad_lib"), "reverse", None)):
        if module is not None and not any(module is m for m in modules):
            modules.append(module)
    originals = [(m, m.__dict__.get("grad")) for m in modules]
    real = next((g for _, g in originals if g is not None), None)
    bound = [name for name, value in list(__student__.items())
             if any(value is g for _, g in originals if g is not None)]
    state = {"made": 0, "calls": 0, "records": []}

    def record(f, argnums, args, kwargs):
        def of_theta(t):
            full = list(args)
            full[argnums] = t
            return f(*full, **kwargs)

        try:
            out, pullback = genuine.vjp(of_theta, args[argnums])
            one = torch.ones_like(out) if isinstance(out, torch.Tensor) else 1.0
            return [args[argnums].detach().clone(), float(out), pullback(one)[0]]
        except Exception as error:
            return type(error).__name__

    def grad(f, argnums=0, *more, **options):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("ad_lib"):
            return real(f, argnums, *more, **options)  # ad_lib's own use of grad (hvp): not the descent's
        if not isinstance(argnums, int) or isinstance(argnums, bool) or more or options:
            return real(f, argnums, *more, **options)
        state["made"] += 1

        def gradient(*args, **kwargs):
            state["calls"] += 1
            if len(state["records"]) < records:
                state["records"].append(record(f, argnums, args, kwargs))
            theta = args[argnums]
            return A.to(theta.dtype) @ theta - c.to(theta.dtype)

        return gradient

    saved = {name: __student__[name] for name in bound}
    try:
        for module, _ in originals:
            module.grad = grad
        for name in bound:
            __student__[name] = grad
        results = []
        for lr, steps in runs:
            start = theta0.clone()
            calls = state["calls"]
            theta = fit(features.clone(), targets.clone(), start, lr=lr, steps=steps)
            results.append([theta, bool(torch.equal(start, theta0)), state["calls"] - calls])
    finally:
        for module, original in originals:
            module.grad = original
        __student__.update(saved)
    return {"runs": results, "made": state["made"], "records": state["records"]}


def _library():
    here = Sandbox.library()
    return [f"{COURSE_LIBRARY}/ad_lib/reverse.py"] + ([str(here / "reverse.py")] if here is not None else [])


def _fit_inputs(rng, runs, records=0):
    k, n = rng.randint(3, 5), rng.randint(8, 15)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    M = torch.randn(k, k, generator=generator, dtype=F64)
    return {"features": torch.randn(k, n, generator=generator, dtype=F64),
            "targets": torch.randn(n, generator=generator, dtype=F64),
            "theta0": torch.randn(k, generator=generator, dtype=F64),
            "A": M @ M.T / k + 0.5 * torch.eye(k, dtype=F64), "c": torch.randn(k, generator=generator, dtype=F64),
            "runs": runs, "records": records, "library": _library()}


NOT_USED = "fit did not compute its gradient with ad_lib.reverse.grad"


def check_descent(result, A, c, theta0, runs, **_):
    if result["made"] == 0:
        raise Wrong(NOT_USED)
    for (theta, _, _), (lr, steps) in zip(result["runs"], runs):
        expected = theta0.clone()
        for _ in range(steps):
            expected = expected - lr * (A @ expected - c)
        close(theta, expected, rtol=1e-10, atol=1e-12,
              what="theta after gradient descent with the gradient that ad_lib.reverse.grad returned")


def check_loss(result, features, targets, **_):
    if not result["records"]:
        raise Wrong(NOT_USED)
    n = targets.numel()
    for entry in result["records"]:
        if isinstance(entry, str):
            raise Wrong("the loss handed to ad_lib.reverse.grad is not a scalar that ad_lib's reverse mode can "
                        "differentiate (write it with ad_lib.ops and Python's operators)")
        theta, value, gradient = entry
        if type(theta) is not torch.Tensor or tuple(theta.shape) != (features.shape[0],):
            raise Wrong("the loss should be differentiated with respect to theta, a tensor of shape (k,)")
        residual = theta.to(F64) @ features - targets
        close(value, float((residual**2).mean()), rtol=1e-10, atol=1e-12,
              what="the value of the loss handed to ad_lib.reverse.grad (the mean squared error)")
        close(gradient, 2 / n * features @ residual, rtol=1e-10, atol=1e-12,
              what="the gradient of the loss handed to ad_lib.reverse.grad, by ad_lib's reverse mode")


def check_edges(result, theta0, **_):
    (still, kept_zero, _), (_, kept, calls) = result["runs"]
    close(still, theta0, rtol=0, atol=0, what="theta after 0 steps (theta0 as it is)")
    if calls == 0:
        raise Wrong(NOT_USED)
    if not (kept_zero and kept):
        raise Wrong("fit changed theta0 in place: start from a copy")


def _descents(rng):
    return [(_number(rng, 0.05, 0.3, 2), steps) for steps in (1, rng.randint(2, 6), rng.randint(10, 25))]


TASK4 = Task(parts=[
    Part(1.5, "gradient descent steps with the gradient that ad_lib.reverse.grad returns, for several learning "
              "rates and numbers of steps (checked with an instrumented ad_lib.reverse.grad whose gradient the "
              "grader chose)", instrumented_fit, check_descent, lambda rng: _fit_inputs(rng, _descents(rng))),
    Part(1, "the loss handed to ad_lib.reverse.grad is the mean squared error: its value, and its gradient by "
            "ad_lib's reverse mode", instrumented_fit, check_loss,
         lambda rng: _fit_inputs(rng, [(_number(rng, 0.05, 0.3, 2), 2)], records=2)),
    Part(0.5, "0 steps return theta0 as it is (shape (k,)), and a descent with ad_lib.reverse.grad leaves theta0 "
              "unchanged", instrumented_fit, check_edges,
         lambda rng: _fit_inputs(rng, [(0.1, 0), (_number(rng, 0.05, 0.3, 2), rng.randint(1, 4))])),
])


# ---------------------------------------------------------------------------------------------
# Task 5: verdicts, one part per case
# ---------------------------------------------------------------------------------------------

def verdicts():
    return mode_verdicts()


_MODES = {"a": "reverse", "b": "forward", "c": "reverse", "d": "forward", "e": "reverse"}
_CASES = {"a": "p = 1000, m = 1", "b": "p = 3, m = 500", "c": "p = 100, m = 40", "d": "p = 100, m = 60",
          "e": "the memory of a program of t steps"}

TASK5 = Task(parts=[Part(0.4, f"verdict ({key}): {_CASES[key]}", verdicts, verdict_check(key, mode, ("forward", "reverse")))
                    for key, mode in _MODES.items()])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4, "task5_tests": TASK5}
