"""The grader of assignment 3 (forward mode and dual numbers): hidden checks, run outside the student's kernel.

Each probe runs in the student's sandboxed kernel and returns plain values; each check runs
here, in the grader. See exercises/grading.py for the vocabulary (Task, Part, Restricted).
Never released: nbgrader releases only what is in source/03_forward_mode/.
"""

import math

import torch
from grading import Part, Restricted, Task, Wrong, close, verdict_check

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# Task 1: a dual-number class of one's own, run in a Python without torch and ad_lib
# ---------------------------------------------------------------------------------------------

def dual_arithmetic(op, a, b, k):
    import operator

    apply = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op]
    results = []
    for left, right in [(Dual(*a), Dual(*b)), (Dual(*a), k), (k, Dual(*a))]:
        out = apply(left, right)
        results.append([out.value, out.tangent] if isinstance(out, Dual) else None)
    return results


def _dual_op(op, x, y):
    (u, du), (v, dv) = x, y
    if op == "+":
        return u + v, du + dv
    if op == "-":
        return u - v, du - dv
    if op == "*":
        return u * v, u * dv + du * v
    return u / v, (du * v - u * dv) / v**2


def _arithmetic_check(op):
    def check(result, op, a, b, k):
        if not isinstance(result, list) or len(result) != 3:
            raise Wrong("the probe's result has the wrong form")
        cases = [("two dual numbers", a, b), ("a dual number and a plain number", a, (k, 0.0)),
                 ("a plain number and a dual number", (k, 0.0), a)]
        for got, (words, x, y) in zip(result, cases):
            if got is None:
                raise Wrong(f"{op} between {words} does not return a Dual")
            value, tangent = _dual_op(op, x, y)
            close(got[0], value, what=f"the value of {op} between {words}")
            close(got[1], tangent, what=f"the tangent of {op} between {words}")
    return check


def _two_duals(rng):
    return {"a": (round(rng.uniform(0.5, 2.0), 3), round(rng.uniform(-1.0, 1.0), 3)),
            "b": (round(rng.uniform(-2.5, -0.5), 3), round(rng.uniform(-1.0, 1.0), 3)),
            "k": rng.choice([2, 3, -2, 2.5, 0.5])}


def _arithmetic_part(op, words):
    return Part(0.5, f"{words} ({op}) of two dual numbers, and with a plain number on either side",
                dual_arithmetic, _arithmetic_check(op), lambda rng, op=op: {"op": op, **_two_duals(rng)})


def elementary(x, tangent, plain):
    d = Dual(x, tangent)
    results = []
    for function in (sin, exp):
        out = function(d)
        results.append([out.value, out.tangent] if isinstance(out, Dual) else None)
    results.append([sin(plain), exp(plain)])
    return results


def check_elementary(result, x, tangent, plain):
    for got, name, f, df in zip(result, ("sin", "exp"), (math.sin, math.exp), (math.cos, math.exp)):
        if got is None:
            raise Wrong(f"{name} of a dual number does not return a Dual")
        close(got[0], f(x), what=f"the value of {name}")
        close(got[1], df(x) * tangent, what=f"the tangent of {name}")
    close(result[2][0], math.sin(plain), what="sin of a plain number")
    close(result[2][1], math.exp(plain), what="exp of a plain number")


def derivatives(x):
    return [dual_derivative(lambda t: sin(exp(t)), x), dual_derivative(lambda t: t, x),
            dual_derivative(lambda t: 5.0, x)]


def check_derivatives(result, x):
    if not isinstance(result, list) or len(result) != 3:
        raise Wrong("the probe's result has the wrong form")
    if any(type(r) is not float for r in result):
        raise Wrong("dual_derivative should return a Python float")
    close(result[0], math.cos(math.exp(x)) * math.exp(x), what="the derivative of sin(exp(x)) (the chain rule)")
    close(result[1], 1.0, what="the derivative of x")
    close(result[2], 0.0, what="the derivative of a constant function")


TASK1 = Task(
    restricted=Restricted(cells=["task1_dual"], setup="import math", without=["torch", "ad_lib", "numpy"],
                          why="task 1 is written with Python floats and math, and graded in a Python "
                              "without torch, numpy and ad_lib"),
    parts=[
        _arithmetic_part("+", "addition"), _arithmetic_part("-", "subtraction"),
        _arithmetic_part("*", "multiplication (the product rule)"), _arithmetic_part("/", "division (the quotient rule)"),
        Part(0.5, "sin and exp of a dual number, and of a plain number", elementary, check_elementary,
             lambda rng: {"x": round(rng.uniform(-1.5, 1.5), 3), "tangent": round(rng.uniform(0.5, 2.0), 3),
                          "plain": round(rng.uniform(-1.0, 1.0), 3)}),
        Part(0.5, "dual_derivative: the chain rule, the identity, a constant function, a Python float",
             derivatives, check_derivatives, lambda rng: {"x": round(rng.uniform(-1.0, 1.0), 3)}),
    ])


# ---------------------------------------------------------------------------------------------
# Tasks 2 and 3: Jacobians and gradients from jvp. The probes replace jvp by an instrumented one
# whose tangents are those of a matrix M (task 2) or a vector g (task 3) that only the results of
# jvp reveal: an answer that gets its derivatives elsewhere (jacfwd under another name, torch.func,
# torch.autograd, a copy of ad_lib.forward), with or without dummy calls of jvp, returns the true
# derivative of f instead, and fails.
# ---------------------------------------------------------------------------------------------

def instrumented_jacobian(M, x):
    import sys

    import ad_lib.forward
    from ad_lib import ops

    real = ad_lib.forward.jvp
    calls = []

    def jvp(f, primals, tangents):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("ad_lib"):
            return real(f, primals, tangents)  # ad_lib's own jacfwd calling jvp: not the student's assembly
        calls.append(1)
        value, _ = real(f, primals, tangents)
        return value, M @ tangents[0]

    aliases = [name for name, value in list(__student__.items()) if value is real]  # jvp under any name
    ad_lib.forward.jvp = jvp
    __student__.update({name: jvp for name in aliases})
    try:
        J = jacobian_by_columns(lambda v: ops.tanh(v[: M.shape[0]] * 2.0) + ops.sum(v), x)
    finally:
        ad_lib.forward.jvp = real
        __student__.update({name: real for name in aliases})
    return [J, len(calls)]


def _jacobian_inputs(rng):
    n, m = rng.randint(3, 6), rng.randint(2, 3)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    return {"M": torch.randn(m, n, generator=generator, dtype=F64), "x": torch.randn(n, generator=generator, dtype=F64)}


def check_assembled(result, M, x):
    close(result[0], M, what="the Jacobian")


def check_calls(result, M, x):
    check_assembled(result, M, x)  # the calls that count are those whose results make the Jacobian
    if result[1] != x.numel():
        raise Wrong(f"a function of {x.numel()} inputs needs {x.numel()} calls of jvp; yours made {result[1]}")


def check_float32(result, M, x):
    close(result[0], M.to(torch.float32), rtol=1e-6, atol=1e-6, what="the Jacobian of a float32 input")


def _float32_inputs(rng):
    return {name: value.to(torch.float32) for name, value in _jacobian_inputs(rng).items()}


TASK2 = Task(parts=[
    Part(1, "the m x n Jacobian is assembled from what the n calls of jvp return, one column per input "
            "(checked with an instrumented jvp)", instrumented_jacobian, check_assembled, _jacobian_inputs),
    Part(0.5, "exactly n calls of jvp", instrumented_jacobian, check_calls, _jacobian_inputs),
    Part(0.5, "the Jacobian has the dtype of x (float32), assembled from jvp", instrumented_jacobian, check_float32,
         _float32_inputs),
])


def instrumented_gradient(g, x, evaluations):
    import sys

    import ad_lib.forward
    from ad_lib import ops

    real = ad_lib.forward.jvp

    def jvp(f, primals, tangents):
        if sys._getframe(1).f_globals.get("__name__", "").startswith("ad_lib"):
            return real(f, primals, tangents)
        value, _ = real(f, primals, tangents)
        for _ in range(evaluations - 1):  # a jvp that evaluates f more than once: the count must be measured
            f(*primals)
        return value, (g * tangents[0]).sum()

    aliases = [name for name, value in list(__student__.items()) if value is real]
    ad_lib.forward.jvp = jvp
    __student__.update({name: jvp for name in aliases})
    try:
        gradient, passes = forward_mode_gradient(lambda v: ops.sum(ops.log(1 + v * v)), x)
    finally:
        ad_lib.forward.jvp = real
        __student__.update({name: real for name in aliases})
    return [gradient, passes]


def _gradient_inputs(rng):
    n = rng.randint(3, 7)
    generator = torch.Generator().manual_seed(rng.randrange(2**31))
    return {"g": torch.randn(n, generator=generator, dtype=F64), "x": torch.randn(n, generator=generator, dtype=F64),
            "evaluations": rng.randint(2, 3)}


def check_gradient(result, g, x, evaluations):
    close(result[0], g, what="the gradient")


def check_passes(result, g, x, evaluations):
    check_gradient(result, g, x, evaluations)  # the count is that of the forward-mode gradient's evaluations
    expected = evaluations * x.numel()
    if type(result[1]) is not int or result[1] != expected:
        raise Wrong("passes should be the number of evaluations of f that you counted, measured with a "
                    "wrapper of f (checked with a jvp that evaluates f more than once per call)")


TASK3 = Task(parts=[
    Part(1, "the gradient is assembled from what the calls of jvp return (checked with an instrumented jvp)",
         instrumented_gradient, check_gradient, _gradient_inputs),
    Part(1, "passes is measured: the evaluations of f counted by a wrapper, whatever jvp does",
         instrumented_gradient, check_passes, _gradient_inputs),
])


# ---------------------------------------------------------------------------------------------
# Tasks 4 and 5: answers given as dictionaries; one part per answer
# ---------------------------------------------------------------------------------------------

def confusion():
    return perturbation_confusion()


def _answer_check(key, expected):
    def check(result):
        if type(result) is not dict or key not in result:
            raise Wrong(f"the answer should be a dict with the key {key!r}")
        close(result[key], expected, what=f"the {key} value")
    return check


TASK4 = Task(parts=[
    Part(1, "the correct value of E", confusion, _answer_check("correct", 8.0)),
    Part(1, "the value an untagged implementation computes", confusion, _answer_check("untagged", 5.0)),
])


def verdicts():
    return cheaper_mode()


_MODES = {"a": "reverse", "b": "forward", "c": "forward", "d": "reverse", "e": "forward"}
_JOBS = {"a": "the gradient of a loss in 10^6 weights", "b": "1000 states in one parameter",
         "c": "the Jacobian of R^10 -> R^2000", "d": "the Jacobian of R^2000 -> R^10", "e": "one product J v"}

TASK5 = Task(parts=[Part(0.4, f"verdict ({key}): {_JOBS[key]}", verdicts, verdict_check(key, mode, ("forward", "reverse")))
                    for key, mode in _MODES.items()])

TASKS = {"task1_tests": TASK1, "task2_tests": TASK2, "task3_tests": TASK3, "task4_tests": TASK4, "task5_tests": TASK5}
