"""The grader of assignment 4 (reverse mode): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/04_reverse_mode/.
"""

import math

import torch
from grading import Part, Restricted, Task, Wrong, close

F64 = torch.float64


def _point(rng, low=-2.0, high=2.0):
    return round(rng.uniform(low, high), 3)


# ---------------------------------------------------------------------------------------------
# Tasks 1 and 2: backward rules for the scalar engine, checked by what the node does, not by
# the name of what built it: one node with the right parents, and a _backward that adds the
# reverse partials to what the parents' grad already holds.
# ---------------------------------------------------------------------------------------------

def sin_node(x):
    from ad_lib.reverse import Value

    a = Value(x)
    out = value_sin(a)
    parents = tuple(getattr(out, "_parents", ()))
    return [float(out.data), len(parents), bool(parents) and parents[0] is a]


def check_sin_node(result, x):
    close(result[0], math.sin(x), what="out.data")
    if result[1] != 1 or result[2] is not True:
        raise Wrong("out._parents should be (a,): one node, whose parent is a")


def sin_rule(x, g, before):
    from ad_lib.reverse import Value

    a = Value(x)
    out = value_sin(a)
    a.grad, out.grad = before, g
    out._backward()
    return a.grad


def check_sin_rule(result, x, g, before):
    close(result, before + math.cos(x) * g, what="a.grad after out._backward() (it should add cos(a) out.grad to it)")


def _rule_inputs(rng):
    return {"x": _point(rng), "g": _point(rng, 0.5, 3.0), "before": _point(rng, 0.5, 2.0)}


def sin_expression(x0):
    from ad_lib.reverse import Value

    x = Value(x0)
    y = value_sin(x) + value_sin(x) * x + value_sin(value_sin(x))
    y.backward()
    return [float(y.data), x.grad]


def check_sin_expression(result, x0):
    s, c = math.sin(x0), math.cos(x0)
    close(result[0], s * (1 + x0) + math.sin(s), rtol=1e-12, atol=1e-13, what="the value of the expression")
    close(result[1], c + s + x0 * c + math.cos(s) * c, rtol=1e-12, atol=1e-13,
          what="the derivative of an expression that uses x several times")


TASK1 = Task(parts=[
    Part(0.5, "one node: out.data is sin(a) and out._parents is (a,)", sin_node, check_sin_node,
         lambda rng: {"x": _point(rng)}),
    Part(1, "out._backward() adds cos(a) out.grad to what a.grad already holds", sin_rule, check_sin_rule,
         _rule_inputs),
    Part(0.5, "backward() through an expression that uses value_sin several times, x with several children",
         sin_expression, check_sin_expression, lambda rng: {"x0": _point(rng, -3.0, 3.0)}),
])


def div_node(u, v):
    from ad_lib.reverse import Value

    a, b = Value(u), Value(v)
    out = value_div(a, b)
    parents = tuple(getattr(out, "_parents", ()))
    return [float(out.data), len(parents), len(parents) == 2 and parents[0] is a and parents[1] is b]


def check_div_node(result, u, v):
    close(result[0], u / v, what="out.data")
    if result[1] != 2 or result[2] is not True:
        raise Wrong("out._parents should be (a, b): one node, whose parents are a and b")


def div_rule(u, v, g, before_a, before_b):
    from ad_lib.reverse import Value

    a, b = Value(u), Value(v)
    out = value_div(a, b)
    a.grad, b.grad, out.grad = before_a, before_b, g
    out._backward()
    return [a.grad, b.grad]


def check_div_rule(result, u, v, g, before_a, before_b):
    close(result[0], before_a + g / v, what="a.grad after out._backward() (it should add out.grad / b to it)")
    close(result[1], before_b - g * u / v**2, what="b.grad after out._backward() (the partial with respect to b)")


def _div_inputs(rng):
    return {"u": _point(rng), "v": rng.choice([-1, 1]) * _point(rng, 0.5, 2.5), "g": _point(rng, 0.5, 3.0),
            "before_a": _point(rng, 0.5, 2.0), "before_b": _point(rng, 0.5, 2.0)}


def div_expressions(x0, u0, v0):
    from ad_lib.reverse import Value

    x = Value(x0)
    r = value_div(x, x)
    r.backward()
    u, v = Value(u0), Value(v0)
    y = value_div(u * u + v, v * u + 2.5) + value_div(Value(1.0), v)
    y.backward()
    return [float(r.data), x.grad, u.grad, v.grad]


def check_div_expressions(result, x0, u0, v0):
    close(result[0], 1.0, what="x / x")
    close(result[1], 0.0, atol=1e-13, what="the derivative of x / x (the same Value on both sides)")
    p, q = u0 * u0 + v0, v0 * u0 + 2.5
    close(result[2], (2 * u0 * q - p * v0) / q**2, rtol=1e-11, atol=1e-12, what="the derivative in u of a composite expression")
    close(result[3], (q - p * u0) / q**2 - 1 / v0**2, rtol=1e-11, atol=1e-12,
          what="the derivative in v of a composite expression")


def _expression_inputs(rng):
    return {"x0": _point(rng, 0.5, 3.0), "u0": _point(rng, 0.2, 2.0), "v0": _point(rng, 0.5, 2.0)}


TASK2 = Task(parts=[
    Part(0.5, "one node: out.data is a / b and out._parents is (a, b)", div_node, check_div_node,
         lambda rng: {"u": _point(rng), "v": _point(rng, 0.5, 2.5)}),
    Part(1, "out._backward() adds both reverse partials to what a.grad and b.grad already hold", div_rule,
         check_div_rule, _div_inputs),
    Part(0.5, "the same Value on both sides (x / x), and backward() through a composite expression",
         div_expressions, check_div_expressions, _expression_inputs),
])


# ---------------------------------------------------------------------------------------------
# Task 3: back-propagation by hand, run in a Python without torch, numpy and ad_lib
# ---------------------------------------------------------------------------------------------

def by_hand(points):
    return [hand_backprop(x, y) for x, y in points]


def _expected(x, y):
    b = math.exp(x * y)
    return {"f": x * b, "b_bar": x, "a_bar": x * b, "y_bar": x * x * b, "x_bar": b * (1 + x * y)}


def _key_check(key, words):
    def check(result, points):
        if type(result) is not list or len(result) != len(points):
            raise Wrong("the probe's result has the wrong form")
        for got, (x, y) in zip(result, points):
            if type(got) is not dict or key not in got:
                raise Wrong(f"hand_backprop should return a dict with the key {key!r}")
            if type(got[key]) is not float:
                raise Wrong(f"{key} should be a Python float")
            close(got[key], _expected(x, y)[key], rtol=1e-12, atol=1e-12, what=words)
    return check


def _hand_inputs(rng):
    return {"points": [(_point(rng, -1.5, 1.5), _point(rng, -1.5, 1.5)) for _ in range(3)]}


TASK3 = Task(
    restricted=Restricted(cells=["task3_hand_backprop"], setup="import math", without=["torch", "ad_lib", "numpy"],
                          why="task 3 is done by hand with math, and graded in a Python without torch, numpy "
                              "and ad_lib"),
    parts=[Part(points, f"{key}: {words}", by_hand, _key_check(key, words), _hand_inputs) for key, points, words in [
        ("f", 0.5, "the value of f"),
        ("b_bar", 0.5, "the adjoint of b"),
        ("a_bar", 0.5, "the adjoint of a"),
        ("y_bar", 0.5, "the adjoint of y"),
        ("x_bar", 1, "the adjoint of x, which has two children"),
    ]])


# ---------------------------------------------------------------------------------------------
# Task 4: gradient descent with ad_lib.reverse.grad. The probe replaces grad (under any name the
# notebook gives it) by one whose gradient is A theta - c, for A and c only the grader knows: an
# answer that gets its gradient elsewhere (torch.autograd, torch.func) follows another path.
# ---------------------------------------------------------------------------------------------

def instrumented_fit(A, c, features, targets, theta0, runs):
    import sys

    import ad_lib.reverse

    real = ad_lib.reverse.grad
    start = theta0.clone()
    true_gradients = []

    def grad(f, argnums=0):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("ad_lib"):
            return real(f, argnums)  # ad_lib's own use of grad
        true = real(f, argnums)

        def gradient(theta, *rest):
            if not true_gradients:
                true_gradients.append(true(start.clone(), *rest))  # the loss handed to grad, at theta0
            return A @ theta - c

        return gradient

    aliases = [name for name, value in list(__student__.items()) if value is real]
    ad_lib.reverse.grad = grad
    __student__.update({name: grad for name in aliases})
    try:
        thetas = [fit(features, targets, theta0, lr=lr, steps=steps) for lr, steps in runs]
    finally:
        ad_lib.reverse.grad = real
        __student__.update({name: real for name in aliases})
    return [thetas, theta0, true_gradients[0] if true_gradients else None]


def _fit_inputs(rng):
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    k, n = rng.randint(3, 5), rng.randint(8, 16)
    q, _ = torch.linalg.qr(torch.randn(k, k, generator=generator, dtype=F64))
    A = q @ torch.diag(torch.rand(k, generator=generator, dtype=F64) * 1.5 + 0.5) @ q.T
    return {"A": A, "c": torch.randn(k, generator=generator, dtype=F64),
            "features": torch.randn(k, n, generator=generator, dtype=F64),
            "targets": torch.randn(n, generator=generator, dtype=F64),
            "theta0": torch.randn(k, generator=generator, dtype=F64),
            "runs": [(0.1, 0), (round(rng.uniform(0.05, 0.2), 3), rng.randint(1, 4)), (0.1, rng.randint(10, 25))]}


def check_trajectory(result, A, c, features, targets, theta0, runs):
    thetas, after = result[0], result[1]
    if type(thetas) is not list or len(thetas) != len(runs):
        raise Wrong("the probe's result has the wrong form")
    close(after, theta0, what="theta0 after fit (it should not be changed in place)")
    for got, (lr, steps) in zip(thetas, runs):
        theta = theta0.clone()
        for _ in range(steps):
            theta = theta - lr * (A @ theta - c)
        close(got, theta, rtol=1e-10, atol=1e-12,
              what=f"theta after {steps} step{'s' * (steps != 1)} of gradient descent with the gradient that grad returns")


def check_loss(result, A, c, features, targets, theta0, runs):
    if result[2] is None:
        raise Wrong("fit does not compute its gradient with ad_lib.reverse.grad")
    residual = theta0 @ features - targets
    close(result[2], 2 * features @ residual / targets.numel(), rtol=1e-10, atol=1e-12,
          what="the gradient of the loss handed to grad (the mean squared error)")


TASK4 = Task(parts=[
    Part(1.5, "gradient descent with the gradient that ad_lib.reverse.grad returns (checked with an instrumented "
              "grad), for several step sizes and numbers of steps, 0 included, theta0 left unchanged",
         instrumented_fit, check_trajectory, _fit_inputs),
    Part(1.5, "the function handed to ad_lib.reverse.grad is the mean squared error", instrumented_fit, check_loss,
         _fit_inputs),
])


# ---------------------------------------------------------------------------------------------
# Task 5: verdicts
# ---------------------------------------------------------------------------------------------

def verdicts():
    return mode_verdicts()


def _verdict_check(key, expected):
    def check(result):
        if type(result) is not dict or key not in result:
            raise Wrong(f"the answer should be a dict with the key {key!r}")
        if result[key] not in ("forward", "reverse"):
            raise Wrong(f'the verdict ({key}) should be "forward" or "reverse"')
        if result[key] != expected:
            raise Wrong(f"the verdict ({key}) is wrong")
    return check


_MODES = {"a": "reverse", "b": "forward", "c": "reverse", "d": "forward", "e": "reverse"}
_CASES = {"a": "p = 1000, m = 1", "b": "p = 3, m = 500", "c": "p = 100, m = 40", "d": "p = 100, m = 60",
          "e": "the memory of a program of t steps"}

TASK5 = Task(parts=[Part(0.4, f"verdict ({key}): {_CASES[key]}", verdicts, _verdict_check(key, mode))
                    for key, mode in _MODES.items()])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4, "task5_tests": TASK5}
